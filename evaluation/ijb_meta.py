"""Reading and checking the IJB-B / IJB-C protocol files, in the layout the datasets are distributed in
(the one insightface's ``recognition/_evaluation_/ijb`` and ``arcface_torch/eval_ijbc.py`` read)::

    IJB_DIR/loose_crop/<image>                       the face crops (e.g. 1.jpg ... 469375.jpg for IJB-C)
    IJB_DIR/meta/ijbc_face_tid_mid.txt               "<image> <template id> <media id>", one image a line
    IJB_DIR/meta/ijbc_name_5pts_score.txt            "<image> x1 y1 ... x5 y5 <detector score>" (12 fields)
    IJB_DIR/meta/ijbc_template_pair_label.txt        "<template 1> <template 2> <1 same | 0 different>"
    IJB_DIR/meta/ijbc_1N_gallery_G1.csv, _G2.csv     1:N galleries: header line, then TEMPLATE_ID,SUBJECT_ID,...
    IJB_DIR/meta/ijbc_1N_probe_mixed.csv             1:N mixed-media probes, same columns

IJB-B uses the prefix ``ijbb_`` and names its galleries S1 and S2. Landmarks are (x, y) pixels of the
crop in the order left eye, right eye, nose, left and right mouth corner (the order of align/).

Every problem is a ValueError (FileNotFoundError for a missing file or image) of one line naming the
file and line: a missing image, a landmark line with the wrong number of fields, a pair naming a
template absent from the meta file, a 1:N template with no images.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TARGETS = ("IJBC", "IJBB")
GALLERY_NAMES = {"IJBC": ("G1", "G2"), "IJBB": ("S1", "S2")}
LANDMARK_FIELDS = 12  # image name, 5 × (x, y), detector score


def meta_files(ijb_dir, target) -> dict:
    """The protocol files of `target` ("IJBC" or "IJBB") under ijb_dir/meta, by role."""
    if target not in TARGETS:
        raise ValueError(f"--target must be one of {TARGETS}, got {target!r}")
    meta = Path(ijb_dir) / "meta"
    p = target.lower()
    g1, g2 = GALLERY_NAMES[target]
    return {
        "face_tid_mid": meta / f"{p}_face_tid_mid.txt",
        "landmarks": meta / f"{p}_name_5pts_score.txt",
        "pairs": meta / f"{p}_template_pair_label.txt",
        g1: meta / f"{p}_1N_gallery_{g1}.csv",
        g2: meta / f"{p}_1N_gallery_{g2}.csv",
        "probe": meta / f"{p}_1N_probe_mixed.csv",
    }


@dataclass
class Gallery:
    """One 1:N template list: templates int64 [T] (unique, in file order) and their subjects int64 [T];
    lines: the first line (1-based) naming each template, for messages."""

    name: str
    path: Path
    templates: np.ndarray
    subjects: np.ndarray
    lines: np.ndarray


@dataclass
class IJBMeta:
    """The parsed protocol of one IJB set.

    image_names [I]: the distinct crops to embed (file order of the landmark file); landmarks float64
    [I, 5, 2]; detector_scores float64 [I]. Per row of face_tid_mid: row_image int64 [N] (index into the
    images), row_template, row_media int64 [N]. Pairs: pair_t1, pair_t2 int64 [P], pair_label int8 [P].
    galleries: {"G1": Gallery, "G2": Gallery} (IJB-B: S1, S2) and probe: Gallery (empty when the 1:N
    files are absent and 1:N is not asked for).
    """

    target: str
    root: Path
    files: dict
    image_names: list
    landmarks: np.ndarray
    detector_scores: np.ndarray
    row_image: np.ndarray
    row_template: np.ndarray
    row_media: np.ndarray
    pair_t1: np.ndarray
    pair_t2: np.ndarray
    pair_label: np.ndarray
    galleries: dict = field(default_factory=dict)
    probe: Gallery | None = None

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found; an IJB folder holds meta/ and loose_crop/ as distributed "
                                "(see docs/ijb.md)")
    return path


def _lines(path: Path):
    """(1-based line number, stripped text) of each non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if text:
                yield number, text


def _int(text, path, number, what):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path} line {number}: {what} {text!r} is not an integer") from None


def read_face_tid_mid(path):
    """face_tid_mid file -> (names [N] str, templates int64 [N], medias int64 [N], lines int64 [N])."""
    path = _need(Path(path), "image/template/media list")
    names, templates, medias, lines = [], [], [], []
    for number, text in _lines(path):
        parts = text.split()
        if len(parts) != 3:
            raise ValueError(f"{path} line {number}: expected 3 fields '<image> <template id> <media id>', "
                             f"got {len(parts)}: {text[:80]!r}")
        names.append(parts[0])
        templates.append(_int(parts[1], path, number, "template id"))
        medias.append(_int(parts[2], path, number, "media id"))
        lines.append(number)
    if not names:
        raise ValueError(f"{path}: no images listed")
    return names, np.array(templates, np.int64), np.array(medias, np.int64), np.array(lines, np.int64)


def read_landmarks(path):
    """name_5pts_score file -> {name: (line, landmarks float64 [5, 2], detector score)} in file order."""
    path = _need(Path(path), "landmark file")
    found = {}
    for number, text in _lines(path):
        parts = text.split()
        if len(parts) != LANDMARK_FIELDS:
            raise ValueError(f"{path} line {number}: expected {LANDMARK_FIELDS} fields '<image> x1 y1 ... x5 y5 "
                             f"<detector score>', got {len(parts)}")
        try:
            values = np.array([float(v) for v in parts[1:]], np.float64)
        except ValueError:
            raise ValueError(f"{path} line {number}: landmarks and score must be numbers: {text[:80]!r}") from None
        if not np.isfinite(values).all():
            raise ValueError(f"{path} line {number}: landmarks and score must be finite: {text[:80]!r}")
        if parts[0] in found:
            raise ValueError(f"{path} line {number}: image {parts[0]} is listed twice (first on line "
                             f"{found[parts[0]][0]})")
        found[parts[0]] = (number, values[:10].reshape(5, 2), values[10])
    return found


def _find_bad_pair_line(path):
    for number, text in _lines(path):
        parts = text.split()
        if len(parts) != 3:
            return number, f"expected 3 fields '<template 1> <template 2> <label>', got {len(parts)}: {text[:80]!r}"
        for part, what in zip(parts, ("template 1", "template 2", "label")):
            _int(part, path, number, what)
    return None, "unreadable"


def read_template_pairs(path):
    """template_pair_label file -> (t1, t2 int64 [P], label int8 [P]). 15.7M lines (IJB-C) parse in C
    (np.fromstring); only when that fails is the file scanned line by line to name the bad line."""
    path = _need(Path(path), "template pair list")
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (does not raise) when it stops at a bad token
        try:
            values = np.fromstring(data, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            values = None
    line_count = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if values is None or len(values) != 3 * line_count:
        number, why = _find_bad_pair_line(path)
        if number is not None:
            raise ValueError(f"{path} line {number}: {why}")
        # only blank lines were off: the slow path parses what the fast one would not
        rows = [[int(v) for v in text.split()] for _, text in _lines(path)]
        values = np.array(rows, np.int64).reshape(-1)
    pairs = values.reshape(-1, 3)
    if not len(pairs):
        raise ValueError(f"{path}: no template pairs listed")
    bad = np.flatnonzero((pairs[:, 2] != 0) & (pairs[:, 2] != 1))
    if len(bad):
        raise ValueError(f"{path} line {_nth_data_line(path, bad[0])}: label must be 1 (same) or 0 (different), "
                         f"got {pairs[bad[0], 2]}")
    return pairs[:, 0].copy(), pairs[:, 1].copy(), pairs[:, 2].astype(np.int8)


def _nth_data_line(path, index):
    """1-based line number of the index-th non-blank line (for messages after a vectorised check)."""
    for k, (number, _) in enumerate(_lines(path)):
        if k == index:
            return number
    return "?"


def read_template_subjects(path, name):
    """1:N csv (header, then TEMPLATE_ID,SUBJECT_ID,...) -> Gallery of its distinct templates. A template
    listed with two subjects is an error."""
    path = _need(Path(path), f"1:N list {name}")
    subject_of, line_of = {}, {}
    for number, text in _lines(path):
        if number == 1:  # the header (TEMPLATE_ID,SUBJECT_ID,FILENAME,...), skipped as insightface does
            continue
        parts = text.split(",")
        if len(parts) < 2:
            raise ValueError(f"{path} line {number}: expected 'TEMPLATE_ID,SUBJECT_ID,...', got {text[:80]!r}")
        template = _int(parts[0].strip(), path, number, "template id")
        subject = _int(parts[1].strip(), path, number, "subject id")
        if subject_of.setdefault(template, subject) != subject:
            raise ValueError(f"{path} line {number}: template {template} has subject {subject} here but "
                             f"{subject_of[template]} on line {line_of[template]}")
        line_of.setdefault(template, number)
    if not subject_of:
        raise ValueError(f"{path}: no templates listed")
    templates = np.array(list(subject_of), np.int64)
    return Gallery(name, path, templates, np.array([subject_of[t] for t in templates], np.int64),
                   np.array([line_of[t] for t in templates], np.int64))


def _check_images_exist(image_dir: Path, names, landmark_lines, landmark_path):
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found; the IJB crops go in IJB_DIR/loose_crop/")
    present = set(os.listdir(image_dir))
    missing = [n for n in names if n not in present and not (image_dir / n).is_file()]  # names may hold subfolders
    if missing:
        more = f" (and {len(missing) - 1} more images)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{image_dir / missing[0]}: image missing (named by {landmark_path} line "
                                f"{landmark_lines[missing[0]]}){more}; restore it from the IJB distribution")


def _check_templates_known(t, known, path, label):
    absent = ~np.isin(t, known)
    if absent.any():
        index = int(np.flatnonzero(absent)[0])
        raise ValueError(f"{path} line {_nth_data_line(path, index)}: {label} {t[index]} has no image in the "
                         "meta file (face_tid_mid); the meta files are from different releases")


def _check_one_template_per_subject(gallery):
    seen = {}
    for template, subject, line in zip(gallery.templates, gallery.subjects, gallery.lines):
        if subject in seen:
            raise ValueError(f"{gallery.path} line {line}: subject {subject} has a second template ({template}, "
                             f"after {seen[subject]}); a 1:N gallery holds one template per subject")
        seen[subject] = template


def read_ijb(ijb_dir, target="IJBC", need_1n=True) -> IJBMeta:
    """Read and check all protocol files of one IJB set (see the module doc); raises one-line errors."""
    root = Path(ijb_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"IJB folder not found: {root}; pass --ijb pointing at the folder holding meta/ "
                                "and loose_crop/")
    files = meta_files(root, target)
    names, row_template, row_media, row_lines = read_face_tid_mid(files["face_tid_mid"])
    landmarks = read_landmarks(files["landmarks"])
    used = set(names)
    missing = [k for k, n in enumerate(names) if n not in landmarks]
    if missing:
        raise ValueError(f"{files['face_tid_mid']} line {row_lines[missing[0]]}: image {names[missing[0]]} has no "
                         f"landmarks in {files['landmarks']}")
    image_names = [n for n in landmarks if n in used]
    index = {n: i for i, n in enumerate(image_names)}
    _check_images_exist(root / "loose_crop", image_names, {n: landmarks[n][0] for n in image_names},
                        files["landmarks"])
    known = np.unique(row_template)
    t1, t2, label = read_template_pairs(files["pairs"])
    _check_templates_known(t1, known, files["pairs"], "template")
    _check_templates_known(t2, known, files["pairs"], "template")
    meta = IJBMeta(
        target=target, root=root, files=files, image_names=image_names,
        landmarks=np.stack([landmarks[n][1] for n in image_names]),
        detector_scores=np.array([landmarks[n][2] for n in image_names], np.float64),
        row_image=np.array([index[n] for n in names], np.int64), row_template=row_template, row_media=row_media,
        pair_t1=t1, pair_t2=t2, pair_label=label,
    )
    if need_1n:
        for name in (*GALLERY_NAMES[target], "probe"):
            gallery = read_template_subjects(files[name], name)
            empty = ~np.isin(gallery.templates, known)
            if empty.any():
                k = int(np.flatnonzero(empty)[0])
                raise ValueError(f"{gallery.path} line {gallery.lines[k]}: template {gallery.templates[k]} is empty "
                                 f"(no image of it in {files['face_tid_mid']})")
            if name == "probe":
                meta.probe = gallery
            else:
                _check_one_template_per_subject(gallery)
                meta.galleries[name] = gallery
    return meta
