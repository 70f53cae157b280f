"""Alignment speed: the plain `mtcnn.MTCNN().detect_faces` loop vs align.FaceDetector vs the full
align_folder pipeline, side by side in one run, on LFW images; plus landmark agreement.

    flock /tmp/cpu-heavy.lock python -m benchmarks.align_speed [--lfw-dir ../shared/data/lfw]
        [--plain-images 100] [--pipeline-images 1000] [--workers 2]

1. plain loop: `detect_faces(image_rgb)` one image at a time, one process, TF default threads
   (what a user writes); the same thresholds as ours.
2. align.FaceDetector.detect on the same images, one process (same TF threads).
   Landmarks of every face are compared with (1): max |Δ| in px, and how many exceed 1 px.
3. align_folder on --pipeline-images files with --workers processes: everything the command does
   (decode, detect, warp, JPEG encode, atomic write, report), wall time including worker start-up;
   also the rate after the first result (start-up excluded), which a full LFW run converges to.
Goal (issue 3): all 13,233 LFW images in <= 10 min on 2 cores, i.e. >= 22 img/s end to end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fileio.quiet_tensorflow import quiet_tensorflow

quiet_tensorflow()   # before TensorFlow loads: its C++ start-up lines stay out of the output

import numpy as np

LFW_IMAGES = 13233


def lfw_files(lfw_dir: Path, count: int) -> list:
    files = sorted((lfw_dir / "images").glob("*/*.jpg"))
    if not files:
        sys.exit(f"no LFW images under {lfw_dir / 'images'} (set --lfw-dir)")
    picks = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).astype(int))
    return [files[i] for i in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/lfw")
    parser.add_argument("--plain-images", type=int, default=100, help="images for the plain loop vs detector")
    parser.add_argument("--pipeline-images", type=int, default=1000, help="images for the align_folder run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from mtcnn import MTCNN

    from align import FaceDetector, align_folder, read_image_rgb
    from align.detector import DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLDS

    files = lfw_files(args.lfw_dir, args.plain_images)
    images = [read_image_rgb(f) for f in files]
    t_p, t_r, t_o = DEFAULT_THRESHOLDS
    options = {"min_face_size": DEFAULT_MIN_FACE_SIZE, "threshold_pnet": t_p, "threshold_rnet": t_r, "threshold_onet": t_o}

    plain = MTCNN()
    ours = FaceDetector()
    plain.detect_faces(images[0], **options)  # warm-up both (first calls build/trace)
    ours.detect(images[0])

    start = time.perf_counter()
    plain_out = [plain.detect_faces(im, output_type="numpy", **options) for im in images]
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    ours_out = [ours.detect(im) for im in images]
    ours_s = time.perf_counter() - start

    worst, over_1px, faces, count_mismatch = 0.0, 0, 0, 0
    for ref, got in zip(plain_out, ours_out):
        if len(ref) != len(got):
            count_mismatch += 1
            continue
        ref = ref[np.argsort(-ref[:, 5], kind="stable")] if len(ref) else ref
        for row, face in zip(ref, sorted(got, key=lambda f: -f.score)):
            diff = np.abs(np.stack([row[6:11], row[11:16]], axis=1) - face.landmarks).max()
            worst = max(worst, float(diff))
            over_1px += int(diff > 1.0)
            faces += 1

    with tempfile.TemporaryDirectory(prefix="align_bench_") as tmp:
        raw = Path(tmp) / "raw"
        for f in lfw_files(args.lfw_dir, args.pipeline_images):
            (raw / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, raw / f.parent.name / f.name)
        summary = align_folder(raw, Path(tmp) / "aligned", workers=args.workers, progress=False,
                               contact_sheet_size=0, log=lambda m: None)

    n = len(images)
    plain_ips, ours_ips, pipe_ips = n / plain_s, n / ours_s, summary["images_per_s"]
    print(f"images: {n} LFW 250x250 for (1)-(2), {summary['files']} for (3); thresholds {DEFAULT_THRESHOLDS}, "
          f"min face {DEFAULT_MIN_FACE_SIZE}")
    print(f"{'':38s}{'img/s':>9s}{'ms/img':>9s}{'vs plain':>10s}")
    print(f"{'(1) plain mtcnn detect_faces, 1 proc':38s}{plain_ips:9.2f}{1000 / plain_ips:9.1f}{1.0:9.2f}x")
    print(f"{'(2) align.FaceDetector, 1 proc':38s}{ours_ips:9.2f}{1000 / ours_ips:9.1f}{ours_ips / plain_ips:9.2f}x")
    print(f"{f'(3) align_folder, {args.workers} workers, end to end':38s}{pipe_ips:9.2f}{1000 / pipe_ips:9.1f}"
          f"{pipe_ips / plain_ips:9.2f}x")
    print(f"    (3) without worker start-up ({summary['startup_s']} s: spawn, import TF, trace): "
          f"{summary['steady_images_per_s']} img/s")
    print(f"landmarks (2) vs (1): {faces} faces compared, max |diff| {worst:.4f} px, {over_1px} over 1 px; "
          f"{count_mismatch} images with a different number of faces")
    print(f"projected full LFW ({LFW_IMAGES} images): plain {LFW_IMAGES / plain_ips / 60:.1f} min, "
          f"align_folder {LFW_IMAGES / pipe_ips / 60:.1f} min (goal <= 10 min, >= 22 img/s)")


if __name__ == "__main__":
    main()
