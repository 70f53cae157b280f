"""Align face photos with MTCNN 5-point landmarks to 112×96 (or 112×112) crops.

    python align/align_lfw.py --input-dir RAW --output-dir ALIGNED [--fallback center] [--workers N]
    python -m align.align_lfw ...      (the same)

RAW/<identity>/<file> (JPEG, PNG, BMP, ...; grey, RGBA, CMYK) -> ALIGNED/<identity>/<stem>.jpg, plus
ALIGNED/align_report.jsonl (one record per input file), align_summary.json and contact_sheet.png.
A rerun resumes where the last one stopped, re-aligns sources replaced since (size or modification
time changed) and removes the crops of sources that are gone. Exit status: 0 when the run completed
(even if some files failed: see the report), 2 for a fatal problem (bad paths or settings, a full
disk, a worker that cannot start).
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from align.detector import DEFAULT_MIN_FACE_SIZE, DEFAULT_SCALE_FACTOR, DEFAULT_THRESHOLDS
from align.folder import AlignError, align_folder, available_cores, format_summary
from align.geometry import SUPPORTED_SIZES
from fileio import add_max_megapixels_argument, image_size_type


def _thresholds(text: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3 or not all(0 <= v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected three probabilities in [0, 1) for P,R,O-Net, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-dir", required=True, help="RAW folder: one subfolder per identity")
    parser.add_argument("--output-dir", required=True, help="ALIGNED folder (created; a rerun resumes)")
    parser.add_argument("--image-size", type=image_size_type(trainable=False, sizes=SUPPORTED_SIZES),
                        default=SUPPORTED_SIZES[0],
                        help="HEIGHTxWIDTH of the crops: " + " or ".join(f"{h}x{w}" for h, w in SUPPORTED_SIZES)
                             + " (default the first)")
    parser.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg",
                        help="output format (default jpg)")
    parser.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    parser.add_argument("--min-face-size", type=int, default=DEFAULT_MIN_FACE_SIZE,
                        help=f"smallest face searched, pixels (default {DEFAULT_MIN_FACE_SIZE}, as MTCNN's authors)")
    parser.add_argument("--thresholds", type=_thresholds, default=list(DEFAULT_THRESHOLDS),
                        help="P,R,O-Net face probability thresholds (default {}: MTCNN's authors and facenet; "
                             "insightface uses 0.6,0.7,0.8/0.9)".format(",".join(map(str, DEFAULT_THRESHOLDS))))
    parser.add_argument("--scale-factor", type=float, default=DEFAULT_SCALE_FACTOR,
                        help=f"image pyramid step (default {DEFAULT_SCALE_FACTOR})")
    parser.add_argument("--fallback", choices=("none", "center"), default="none",
                        help="no face found: 'none' records a failure (default); 'center' writes a centred crop "
                             "marked 'fallback' in the report (for benchmark sets such as LFW)")
    parser.add_argument("--workers", type=int, default=0,
                        help=f"worker processes (default 0 = all cores: {available_cores()})")
    parser.add_argument("--min-images", type=int, default=0,
                        help="only align identities with at least this many files (default 0: all; others are "
                             "reported as 'excluded')")
    add_max_megapixels_argument(parser)
    parser.add_argument("--retry-failed", action="store_true", help="redo files a previous run recorded as failed")
    parser.add_argument("--overwrite", action="store_true",
                        help="forget the previous run's report and settings, redo every file")
    parser.add_argument("--contact-sheet", type=int, default=50, help="crops on the contact sheet (0: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()
    try:
        summary = align_folder(
            args.input_dir, args.output_dir, image_size=args.image_size, image_format=args.image_format,
            jpeg_quality=args.jpeg_quality, min_face_size=args.min_face_size, thresholds=args.thresholds,
            scale_factor=args.scale_factor, fallback=args.fallback, workers=args.workers,
            min_images=args.min_images, retry_failed=args.retry_failed, overwrite=args.overwrite,
            contact_sheet_size=args.contact_sheet, progress=not args.no_progress, max_megapixels=args.max_megapixels,
            log=lambda message: print(message, file=sys.stderr))
    except (AlignError, ValueError, OSError) as error:
        print(f"align: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("align: interrupted; the report holds every file finished so far, rerun the same command to resume",
              file=sys.stderr)
        return 130
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
