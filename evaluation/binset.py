"""insightface verification ``.bin`` sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...): safe reading and writing.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds 2P encoded images (JPEG bytes, or
uint8 numpy buffers), pair i being ``bins[2i], bins[2i+1]``; ``issame_list`` holds P bools. Pairs are
in protocol order, so the 10 folds are 10 contiguous blocks (sklearn ``KFold(10)``, as insightface;
fewer when one kind has fewer than 10 pairs). ``write_bin`` lists the pairs fold by fold, so a .bin
made from any pairs file (View 2, View 1 whose same and different pairs come in two blocks, or a
generic list) is read back with exactly the folds the pairs file has.

A pickle can run arbitrary code when loaded, so these files are read with a restricted unpickler that
only builds builtin containers, bytes, bools/ints/floats/strings and plain numpy arrays; anything
else (``os.system``, ``builtins.eval``, object arrays, ...) is refused with UnsafePickleError.

Write one from an aligned folder and a pairs file:
    python -m evaluation.binset --aligned-dir data/lfw_aligned --pairs pairs.txt --output lfw.bin
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

import numpy as np

from evaluation.images import decode_rgb, resolve_image_files
from evaluation.pairs import PairSet, contiguous_fold_count, contiguous_folds, fold_order, read_pairs
from fileio import atomic_output


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than plain data."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """Python 3 pickles bytes at protocol 2 as ``_codecs.encode(str, 'latin1')``; allow only that."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


def _plain_dtype(*args, **kwargs):
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise UnsafePickleError("refusing a numpy object array (it could hold arbitrary objects)")
    return dtype


def _allowed_globals():
    try:  # pickles name numpy.core.* (numpy 1) or numpy._core.* (numpy 2); both resolve to the same functions
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    allowed = {("_codecs", "encode"): _latin1_encode, ("numpy", "dtype"): _plain_dtype, ("numpy", "ndarray"): np.ndarray}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler admitting only builtin containers, bytes, scalars and non-object numpy arrays."""

    _allowed = None

    def find_class(self, module, name):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load {module}.{name}: only plain data is allowed in a .bin") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing persistent ids in a .bin")


def safe_load_pickle(data: bytes):
    """Unpickle plain data. Pickles of Python 2 ``str`` (old insightface bins) are retried with encoding='bytes'."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except UnicodeDecodeError:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def load_bin(path):
    """Read a .bin set -> (bins: list of bytes or uint8 arrays [2P], issame: bool ndarray [P]).

    Errors name the file: not a pickle, unsafe content, or not a (bins, issame_list) pair of the right lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f".bin file not found: {path}")
    try:
        obj = safe_load_pickle(path.read_bytes())
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise ValueError(f"{path}: not a readable insightface .bin pickle ({type(e).__name__}: {e})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not all(
        isinstance(b, (bytes, bytearray)) or (isinstance(b, np.ndarray) and b.dtype == np.uint8) for b in bins
    ):
        raise ValueError(f"{path}: bins must be a list of encoded images (bytes or uint8 arrays)")
    issame = np.asarray(issame)
    if issame.ndim != 1 or issame.dtype.kind not in "bi":
        raise ValueError(f"{path}: issame_list must be a list of bools, got {issame.dtype} {issame.shape}")
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs; expected {2 * len(issame)}")
    return list(bins), issame.astype(bool)


def bin_pairset(path, issame) -> PairSet:
    """PairSet over a .bin: image keys are the indices into bins as strings ("0", "1", ...); folds are
    contiguous blocks (10, fewer when a kind has fewer than 10 pairs)."""
    n = len(issame)
    count = contiguous_fold_count(issame)
    if count < 1:
        raise ValueError(f"{path}: needs same and different pairs; has {int(np.sum(issame))} same of {n}")
    return PairSet(
        [str(2 * i) for i in range(n)],
        [str(2 * i + 1) for i in range(n)],
        issame,
        contiguous_folds(n, count),
        kind="bin",
        source=str(path),
    )


def bin_image_loader(path, bins, image_size=None, center_crop=False):
    """Callable key -> RGB uint8 [H, W, 3] decoding bins[int(key)].

    center_crop: cut the width down to image_size's (published bins are 112x112; their template is ours
    shifted 8 px right, so the centre 112x96 of a 112x112 crop is exactly our 112x96 alignment).
    """

    def load(key):
        image = decode_rgb(bins[int(key)], f"image {key} of {path}")
        if center_crop and image_size is not None:
            h, w = image.shape[:2]
            th, tw = image_size
            if h != th or w < tw:
                raise ValueError(
                    f"{path}: image {key} is {h}x{w}; --center-crop can only narrow it to {th}x{tw}"
                )
            left = (w - tw) // 2
            image = image[:, left : left + tw]
        return image

    return load


def write_bin(aligned_dir, pairs_path, output, protocol=4) -> int:
    """Pack the encoded files of a pairs list into an insightface .bin (written to a temp file, then renamed).

    Pairs are written fold by fold (``fold_order``), so the .bin is read back with the pairs file's own
    folds. Returns the number of pairs. Every image must exist (the error lists the missing ones).
    """
    pairs = read_pairs(pairs_path)
    order = fold_order(pairs)  # fold by fold: the contiguous folds a .bin is read with are the file's folds
    files = resolve_image_files(aligned_dir, pairs.unique_paths())
    bins = []
    for i in order:
        bins.append(files[pairs.paths_a[i]].read_bytes())
        bins.append(files[pairs.paths_b[i]].read_bytes())
    with atomic_output(output) as tmp, open(tmp, "wb") as f:
        pickle.dump((bins, [bool(pairs.issame[i]) for i in order]), f, protocol=protocol)
    return len(pairs)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.binset",
        description="Write an insightface verification .bin (pickle of (encoded images, issame list)) from an "
        "aligned folder and a pairs file (LFW View 2/View 1 or generic list). Images are stored as their files' "
        "bytes. Reading .bin files (evaluate.py --bin) uses a restricted unpickler.",
    )
    parser.add_argument("--aligned-dir", required=True, help="aligned crops, <identity>/<stem>.jpg|.png")
    parser.add_argument("--pairs", required=True, help="pairs file (e.g. LFW pairs.txt)")
    parser.add_argument("--output", required=True, help="the .bin to write (e.g. lfw.bin)")
    args = parser.parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()
    try:
        n = write_bin(args.aligned_dir, args.pairs, args.output)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {n} pairs, {2 * n} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
