"""Speed of verification: 6,000-pair 10-fold metrics (target < 1 s) and a model's embedding throughput.

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.verification_speed
    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.verification_speed --backbone mobilefacenet --num-images 512

1. verification_metrics on 6,000 pairs laid out as LFW View 2 (10 folds x 300 same + 300 different),
   1,024-d features (512-d embeddings, flip-concatenated; noisy enough that accuracy is ~90 %): median
   of --repeats runs, beside one run of the reference procedure written as facenet does it (a Python
   loop over thresholds per fold), measured in the same process.
2. Embedding throughput: a backbone from models.build_backbone (random weights) behind the input
   scaling layer, as the exported model is, through evaluation.embed_images with flips (each image
   is two forward images).
"""

import argparse
import time

from fileio import image_size_type
from fileio.quiet_tensorflow import quiet_tensorflow

quiet_tensorflow()   # before TensorFlow loads: its C++ start-up lines stay out of the output

import numpy as np

from evaluation import embed_images, verification_metrics
from evaluation.pairs import contiguous_folds


def facenet_loop_metrics(emb_a, emb_b, issame, folds, far_target=1e-3):
    """The reference procedure (facenet lfw.py), one threshold at a time; for the side-by-side timing."""
    from scipy import interpolate

    def acc_far(t, d, s):
        p = d < t
        return (np.sum(p & s) + np.sum(~p & ~s)) / d.size, np.sum(p & ~s) / np.sum(~s), np.sum(p & s) / np.sum(s)

    a = emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
    b = emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)
    dist = np.sum(np.square(a - b), 1)
    accs, vals = [], []
    for f in range(10):
        tr, te = folds != f, folds == f
        t_acc = np.arange(0, 4, 0.01)
        best = np.argmax([acc_far(t, dist[tr], issame[tr])[0] for t in t_acc])
        accs.append(acc_far(t_acc[best], dist[te], issame[te])[0])
        for t in t_acc:  # facenet also computes the test fold's TPR/FPR at every threshold (for the ROC)
            acc_far(t, dist[te], issame[te])
        t_val = np.arange(0, 4, 0.001)
        far = np.array([acc_far(t, dist[tr], issame[tr])[1] for t in t_val])
        thr = float(interpolate.interp1d(far, t_val, kind="linear", assume_sorted=True)(far_target)) if far.max() >= far_target else 0.0
        vals.append(acc_far(thr, dist[te], issame[te])[2])
    return np.mean(accs), np.mean(vals)


def bench_metrics(repeats):
    rng = np.random.default_rng(0)
    issame = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    folds = contiguous_folds(6000, 10)
    emb_a = rng.normal(size=(6000, 1024)).astype(np.float32)
    emb_b = np.where(issame[:, None], emb_a + 20.0 * rng.normal(size=emb_a.shape), rng.normal(size=emb_a.shape)).astype(np.float32)
    verification_metrics(emb_a, emb_b, issame, folds)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = verification_metrics(emb_a, emb_b, issame, folds)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    ref_acc, ref_val = facenet_loop_metrics(emb_a, emb_b, issame, folds)
    ref_time = time.perf_counter() - start
    ours = float(np.median(times))
    print(f"verification_metrics, 6000 pairs x 1024-d, 10 folds, 400 + 4000 thresholds: "
          f"median {1000 * ours:.1f} ms (min {1000 * min(times):.1f} ms, {repeats} runs)  [target < 1000 ms]")
    print(f"  reference loop (facenet style), same data, one run: {1000 * ref_time:.0f} ms  -> {ref_time / ours:.0f}x faster")
    print(f"  accuracy {result['accuracy_mean']:.4f} (reference {ref_acc:.4f}), VAL {result['val']:.4f} (reference {ref_val:.4f})")


def bench_embedding(backbone, num_images, batch_size, image_size):
    import keras

    import models
    from engines.keras_engine import make_embed_fn
    from models.scaling import input_scaling_layer

    inputs = keras.Input((*image_size, 3))
    net = models.build_backbone(backbone, image_size=image_size, embedding_size=512)
    model = keras.Model(inputs, net(input_scaling_layer()(inputs)))
    embed_fn = make_embed_fn(model)
    images = np.random.default_rng(0).integers(0, 256, size=(num_images, *image_size, 3), dtype=np.uint8)
    embed_images(embed_fn, images[:batch_size // 2], batch_size=batch_size)  # trace / warm-up
    start = time.perf_counter()
    embed_images(embed_fn, images, batch_size=batch_size, flip="concat")
    seconds = time.perf_counter() - start
    print(f"embedding {backbone} {image_size[0]}x{image_size[1]}, {num_images} images + flips, batch {batch_size}, "
          f"{keras.backend.backend()} backend: {seconds:.2f} s = {num_images / seconds:.1f} images/s "
          f"({2 * num_images / seconds:.1f} forward images/s); LFW's 7,701 images would take {7701 / (num_images / seconds):.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of verification_metrics")
    parser.add_argument("--backbone", default="mobilefacenet", help="backbone for the throughput part ('' to skip)")
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256, help="forward images per call (flips included)")
    parser.add_argument("--image-size", type=image_size_type(), default="112x96")
    args = parser.parse_args()
    bench_metrics(args.repeats)
    if args.backbone:
        bench_embedding(args.backbone, args.num_images, args.batch_size, args.image_size)


if __name__ == "__main__":
    main()
