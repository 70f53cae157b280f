"""Partial FC's training side: which class centres a step samples, and their sparse SGD update.

Sampling (as arcface_torch's partial_fc_v2): every class of the batch is in the sample; the other
K − |positives| centres are a uniformly random subset of the rest, drawn anew each step. The draw
is a pure function of (seed, step), so a resumed run samples exactly what the straight run did and
no random-number state needs a checkpoint.

Update: the sampled rows get exactly Keras SGD's momentum step with weight decay,
``g ← ∂L/∂w + wd·w; m ← μ·m − lr·g; w ← w + m``. Unsampled centres and their momentum are left
unchanged that step (no decay, no momentum drift), as in the Partial FC paper's memory-bank
version; arcface_torch's partial_fc_v2 instead keeps one dense parameter, so its optimizer also
decays every unsampled centre and moves it along its momentum. We chose the sparse rule because
a step then costs O(K·D) rather than O(C·D), which is what makes 10^6–10^7 classes trainable on
one machine; at RATE = 1 both rules are the full head's update.
"""

import tensorflow as tf


def sample_centres(labels, num_classes, num_sample, seed, step, shard=0):
    """(index [K] int32 ascending, local labels [B] int32 with index[local] == labels).

    The K sampled classes are the K smallest of C uniform keys drawn from (seed, step), with the
    positives' keys set to −1: a uniform K-subset of the negatives beside all positives. Only the
    classes whose key falls below a threshold a few standard deviations above K/C are sorted, so
    the draw costs O(C) plus a sort of about K (the whole C only in the ~1e-9 case that too few
    keys fall below it).

    For a shard of the centres (training/partial_fc_sharded.py), ``labels`` are relative to the
    shard's first class: those outside [0, num_classes) are another shard's, are not sampled here
    and get local label −1 (a zero one-hot row: no target, no margin in this shard). ``shard`` > 0
    folds the shard's number into the seed, so every shard draws its own negatives; shard 0 draws
    what one device draws.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    here = (labels >= 0) & (labels < num_classes)
    if num_sample >= num_classes:
        return tf.range(num_classes, dtype=tf.int32), tf.where(here, labels, -1)
    seeds = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    if shard:
        seeds = tf.random.experimental.stateless_fold_in(seeds, shard)
    keys = tf.random.stateless_uniform([num_classes], seed=seeds)
    # min(key, −1) marks a positive; min(key, 2) leaves a key (all in [0, 1)) as it is
    rows = tf.clip_by_value(labels, 0, num_classes - 1)[:, None]
    keys = tf.tensor_scatter_nd_min(keys, rows, tf.where(here, -1.0, 2.0))
    threshold = (num_sample + 6.0 * num_sample ** 0.5 + 64.0) / num_classes

    def smallest_of_candidates():
        candidates = tf.cast(tf.reshape(tf.where(keys < threshold), [-1]), tf.int32)
        _, order = tf.math.top_k(-tf.gather(keys, candidates), k=num_sample)
        return tf.gather(candidates, order)

    def smallest_of_all():
        return tf.math.top_k(-keys, k=num_sample).indices

    enough = tf.reduce_sum(tf.cast(keys < threshold, tf.int32)) >= num_sample
    index = tf.sort(tf.cond(enough, smallest_of_candidates, smallest_of_all))
    return index, tf.where(here, tf.searchsorted(index, labels, side="left", out_type=tf.int32), -1)


def fill_initial_centres(variable, head, start=0):
    """Write rows [start, start + n) of ``head``'s initial centres (``PartialFCHead.initial_centre_pieces``)
    into ``variable`` [n, D], one seeded block at a time: no [n, D] temporary beside the variable."""
    size, dim = (int(n) for n in variable.shape)
    for first, values in head.initial_centre_pieces(start, size, dim):
        variable.scatter_update(tf.IndexedSlices(values, tf.range(first, first + tf.shape(values)[0])))


def gather_centres(head, index):
    """The rows ``index`` [K] of ``head.kernel`` [C, D] -> [K, D], read row by row from the variable
    (a read of the whole variable beside row writes makes TensorFlow copy all of it each step)."""
    return tf.gather(head.kernel.value, index)


def sparse_sgd_update(head, index, grad_rows, lr, momentum, weight_decay):
    """Keras SGD's momentum step on the rows ``index`` [K] of ``head.kernel`` and ``head.momentum``
    ([C, D]), with ``grad_rows`` [K, D] the loss gradient of those rows; other rows untouched."""
    sparse_sgd_update_rows(head.kernel.value, head.momentum.value, index, grad_rows, lr, momentum, weight_decay)


def sparse_sgd_update_rows(kernel, slots, index, grad_rows, lr, momentum, weight_decay):
    """``sparse_sgd_update`` on tf.Variables: ``kernel`` and its momentum ``slots`` [C, D]."""
    rows = tf.gather(kernel, index)
    grad = tf.cast(grad_rows, tf.float32) + weight_decay * rows
    velocity = momentum * tf.gather(slots, index) - tf.cast(lr, tf.float32) * grad
    slots.scatter_update(tf.IndexedSlices(velocity, index))
    kernel.scatter_update(tf.IndexedSlices(rows + velocity, index))


def head_memory_line(num_classes, dim, batch_size, num_sample=None):
    """One start-up line: the head's memory (centres, momentum, logits per step) in GB, float32."""
    gb = 4 / 1e9
    centres = num_classes * dim * gb
    columns = num_sample or num_classes
    # logits, their softmax and their gradient: three [B, K] float32 tensors live in a step
    logits = 3 * batch_size * columns * gb
    what = (f"partial FC: {columns:,} of {num_classes:,} centres per step" if num_sample
            else f"full head: {num_classes:,} centres")
    gathered = f", sampled centres {2 * columns * dim * gb:.3g} GB" if num_sample else ""
    return (f"{what}; centres {centres:.3g} GB, momentum {centres:.3g} GB, logits per step "
            f"{logits:.3g} GB{gathered} (float32)")
