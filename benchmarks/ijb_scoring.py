"""IJB-C-sized scoring on synthetic features: template-pair scores + ROC + TAR@FAR, 1:N, and media pooling.

    flock /tmp/cpu-heavy.lock /work/venv/bin/python -m benchmarks.ijb_scoring

Sizes are IJB-C's (1:1 mixed protocol): 3,531 gallery templates (G1 1,772 + G2 1,759 subjects), 19,593
probe templates, 15,658,489 template pairs of which 19,557 genuine, 469,375 images; 512-d embeddings.
Each probe is paired with its mate and ~798 random gallery templates (the real pair file pairs gallery
templates with probes). Goal: pair scoring + ROC < 30 s and < 4 GB on the 2-core CPU.

Phases run in this order so the peak RSS printed after each covers only what ran so far:
1. scoring: evaluation.ijb.score_pairs + ijb_metrics.verification_1to1 from template features [23124, 512];
2. 1:N: identification_1toN for G1 and G2 with the 19,593 probes;
3. pooling: evaluation.ijb.template_features from 469,375 raw image embeddings + flips (float32, as cached)
   with the default modes F1N1D1 (these arrays alone are 1.9 GB);
4. parsing: evaluation.ijb_meta.read_template_pairs on the 15.7M-line pair file written to a temporary
   folder in the real format ("<t1> <t2> <label>").
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation.ijb import image_features, score_pairs, template_features
from evaluation.ijb_meta import read_template_pairs
from evaluation.ijb_metrics import identification_1toN, verification_1to1


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=15_658_489)
    parser.add_argument("--genuine", type=int, default=19_557)
    parser.add_argument("--images", type=int, default=469_375)
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.images < 23_124:
        parser.error("--images must be at least the 23,124 templates (each template has an image)")
    rng = np.random.default_rng(0)
    n_g1, n_g2, n_probe = 1772, 1759, 19_593
    n_gallery = n_g1 + n_g2
    subject_centre = unit(rng.standard_normal((n_gallery, args.dim)))
    probe_subject = rng.integers(0, n_gallery, n_probe)
    gallery_ids = np.arange(1, n_gallery + 1)
    probe_ids = np.arange(n_gallery + 1, n_gallery + n_probe + 1)
    # templates near their subject's centre (same-subject cosine ~0.17), so the ROC is neither trivial nor chance
    gallery_feats = unit(subject_centre + 2.2 * unit(rng.standard_normal((n_gallery, args.dim))))
    probe_feats = unit(subject_centre[probe_subject] + 2.2 * unit(rng.standard_normal((n_probe, args.dim))))
    ids = np.r_[gallery_ids, probe_ids]
    feats = np.r_[gallery_feats, probe_feats]
    genuine_probe = rng.choice(n_probe, args.genuine, replace=False)
    impostor_probe = rng.integers(0, n_probe, args.pairs - args.genuine)
    impostor_gallery = (probe_subject[impostor_probe] + rng.integers(1, n_gallery, len(impostor_probe))) % n_gallery
    t1 = np.r_[gallery_ids[probe_subject[genuine_probe]], gallery_ids[impostor_gallery]]
    t2 = np.r_[probe_ids[genuine_probe], probe_ids[impostor_probe]]
    label = np.r_[np.ones(args.genuine, np.int8), np.zeros(len(impostor_probe), np.int8)]
    shuffle = rng.permutation(len(t1))
    t1, t2, label = t1[shuffle], t2[shuffle], label[shuffle]
    del shuffle, impostor_probe, impostor_gallery
    figures = {"dim": args.dim, "pairs": len(t1), "genuine": args.genuine, "templates": len(ids)}
    figures["rss_before_gib"] = peak_rss_gib()

    start = time.perf_counter()
    scores = score_pairs(ids, feats, t1, t2)
    scored = time.perf_counter()
    one, _ = verification_1to1(scores, label)
    figures.update(score_pairs_s=scored - start, roc_s=time.perf_counter() - scored,
                   scoring_total_s=time.perf_counter() - start, scoring_peak_rss_gib=peak_rss_gib(),
                   tar_at_1e_4=next(r["tar"] for r in one["tar_at_far"] if r["far_target"] == 1e-4), auc=one["auc"])
    print(f"1:1 {len(t1):,} pairs: scores {figures['score_pairs_s']:.1f} s + ROC {figures['roc_s']:.1f} s = "
          f"{figures['scoring_total_s']:.1f} s, peak RSS {figures['scoring_peak_rss_gib']:.2f} GiB "
          f"(TAR@1e-4 {figures['tar_at_1e_4']:.4f}, AUC {figures['auc']:.4f})", flush=True)
    del scores

    start = time.perf_counter()
    g1 = np.arange(n_g1)
    g2 = np.arange(n_g1, n_gallery)
    for g in (g1, g2):
        identification_1toN(probe_feats, probe_subject, gallery_feats[g], g)
    figures.update(identification_s=time.perf_counter() - start, identification_peak_rss_gib=peak_rss_gib())
    print(f"1:N G1+G2, {n_probe:,} probes: {figures['identification_s']:.1f} s, peak RSS "
          f"{figures['identification_peak_rss_gib']:.2f} GiB", flush=True)

    # images: ~20 per template, in media of 1-8 images
    row_template = np.sort(rng.integers(0, len(ids), args.images))
    row_template[: len(ids)] = np.arange(len(ids))  # every template has an image
    row_template = ids[np.sort(row_template)]
    row_media = row_template * 10 + rng.integers(0, 3, args.images)
    emb = rng.standard_normal((args.images, args.dim), dtype=np.float32)
    emb_flip = emb + 0.1 * rng.standard_normal((args.images, args.dim), dtype=np.float32)
    det = rng.uniform(0.5, 1.0, args.images)
    start = time.perf_counter()
    template_features(lambda rows: image_features(emb[rows], emb_flip[rows], det[rows]), row_template, row_media)
    figures.update(images=args.images, pooling_s=time.perf_counter() - start, final_peak_rss_gib=peak_rss_gib())
    print(f"pooling {args.images:,} images (F1N1D1): {figures['pooling_s']:.1f} s, peak RSS "
          f"{figures['final_peak_rss_gib']:.2f} GiB (the float32 embeddings + flips alone are "
          f"{2 * emb.nbytes / 2**30:.2f} GiB)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ijbc_template_pair_label.txt"
        step = 1_000_000
        with open(path, "w") as f:
            f.writelines("".join(f"{a} {b} {c}\n" for a, b, c in zip(
                t1[lo:lo + step].tolist(), t2[lo:lo + step].tolist(), label[lo:lo + step].tolist()))
                for lo in range(0, len(t1), step))
        start = time.perf_counter()
        r1, r2, rl = read_template_pairs(path)
        figures.update(pair_file_mib=path.stat().st_size / 2**20, parse_pairs_s=time.perf_counter() - start)
        assert (r1 == t1).all() and (r2 == t2).all() and (rl == label).all()
    print(f"parsing the {figures['pair_file_mib']:.0f} MiB pair file: {figures['parse_pairs_s']:.1f} s", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(figures, f, indent=1)
    return figures


if __name__ == "__main__":
    main()
