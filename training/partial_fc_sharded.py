"""Partial FC with the class centres sharded across the replicas of a tf.distribute strategy.

Layout (arcface_torch's partial_fc_v2): replica r of N holds the classes [start_r, start_r + C_r),
C_r = C // N, plus one for the first C % N replicas, as one plain tf.Variable [C_r, D] (and one for
its momentum) on that replica's device. They are created outside ``strategy.scope()``, so the
strategy does not mirror them: the replicas' memory holds C·D centres in all, not N·C·D.

A step, on every replica: the embeddings [B, D] and labels [B] of all replicas are gathered
(``ReplicaContext.all_gather``, whose gradient sums the replicas' gradients and hands each replica
the rows of its own batch); the replica samples its shard's positives plus uniform negatives,
K_r = ceil(RATE·C_r) (at least the global batch, at most C_r); it computes the margin logits
[N·B, K_r] of its sampled centres with the head's own margin math (``PartialFCHead.sampled_logits``:
the margin goes on the target column of the one shard that holds it); and the softmax's normaliser
is combined across replicas: the per-row maximum (an all-gather of the replicas' maxima:
``tf.distribute.ReduceOp`` has only SUM and MEAN) and an all-reduce SUM of the sums of exp and of
the target logits. Each replica's objective is the loss of its own rows, so the replicas' sum is
the global batch's loss, and ``all_reduce``'s gradient (an all-reduce of the replicas' gradients)
makes every shard's centre gradient and every replica's embedding gradient that of the full head.
At RATE = 1 the loss and gradients equal the full head's on one device (tested to 1e-6).

Checkpoints: ``kernel`` and ``momentum`` are each one ShardedVariable over the shards, saved as
slices of one [C, D] tensor under the same keys as the one-device head's variables. The layout
is independent of the replica count: a resume with another count (or on one device, or from a
one-device run) reads the rows of its own shards from the same tensor.

Multi-worker: a worker holds only its own replicas' shards; the other workers' shards are
placeholders without memory (uninitialised variables). For a save, ``every_shard_here`` copies them
to this worker's host memory, a chunk of rows at a time, with the strategy's own ``all_gather``, so
that every worker's checkpoint holds all C rows, and drops them afterwards; a restore fills them
from the file and drops them too. So a multi-worker checkpoint resumes like any other: with another
replica count, on one machine, on one device.
"""

import contextlib

import numpy as np
import tensorflow as tf
from tensorflow.python.ops.resource_variable_ops import UninitializedVariable  # a placeholder without memory

from losses.loss import class_weighted, focal_weighted
from losses.partial_fc import partial_fc_num_sample
from training.partial_fc import fill_initial_centres, sample_centres, sparse_sgd_update_rows

ShardedVariable = tf.__internal__.distribute.ShardedVariable

# Bytes of centres (and as many of momentum) each replica contributes to one all_gather of a
# multi-worker save: bounds the gathered tensor at 2 · N · GATHER_BYTES per device.
GATHER_BYTES = 1 << 26


def uses_replicas(strategy):
    """True for a tf.distribute strategy of its own (mirrored, multi-worker, one-device), False for
    the default strategy: Partial FC shards its centres over the former's replicas."""
    with strategy.scope():
        return tf.distribute.has_strategy()


def shard_bounds(num_classes, num_shards):
    """[(start, size)] of each shard's classes: C // N each, one more for the first C % N."""
    base, extra = divmod(int(num_classes), int(num_shards))
    sizes = [base + (r < extra) for r in range(num_shards)]
    return list(zip(np.cumsum([0] + sizes[:-1]).tolist(), sizes))


def shard_num_sample(shard_size, sample_rate, global_batch):
    """A shard's centres per step K_r = ceil(rate · C_r), at least the global batch (all of whose
    classes may be this shard's), at most C_r."""
    return partial_fc_num_sample(shard_size, sample_rate, global_batch)


def sharded_memory_line(num_classes, dim, global_batch, sample_rate, replicas):
    """One start-up line: each replica's share of the head's memory (centres, momentum, logits per
    step) in GB, float32; the largest shard's (the first)."""
    gb = 4 / 1e9
    size = shard_bounds(num_classes, replicas)[0][1]
    columns = shard_num_sample(size, sample_rate, global_batch)
    centres = size * dim * gb
    logits = 3 * global_batch * columns * gb   # logits, their softmax and their gradient, [N·B, K_r]
    return (f"partial FC sharded over {replicas} replicas: {size:,} of {num_classes:,} centres per replica, "
            f"{columns:,} sampled per step; per replica: centres {centres:.3g} GB, momentum {centres:.3g} GB, "
            f"logits per step {logits:.3g} GB, sampled centres {2 * columns * dim * gb:.3g} GB (float32)")


class ShardedPartialFC(tf.Module):
    """The class centres of ``head`` (a ``PartialFCHead`` built with ``holds_centres=False``) sharded
    over ``strategy``'s replicas; ``kernel`` and ``momentum`` are ShardedVariables [C, D] whose
    pieces live on the replicas' devices (under multi-worker: this worker's replicas' pieces; the
    others are placeholders, filled only inside ``every_shard_here``). Build it outside
    ``strategy.scope()``.
    """

    def __init__(self, strategy, head, dim, global_batch):
        super().__init__(name="sharded_partial_fc")
        replicas = strategy.num_replicas_in_sync
        ids = strategy.experimental_local_results(
            strategy.experimental_distribute_values_from_function(lambda ctx: ctx.replica_id_in_sync_group))
        if head.num_classes < replicas:
            raise ValueError(f"--partial-fc: {head.num_classes} classes cannot be sharded over {replicas} replicas "
                             "(each needs at least one); train on fewer replicas or without --partial-fc")
        object.__setattr__(self, "margin_head", head)   # the margin math; no variables, not checkpointed
        object.__setattr__(self, "_strategy", strategy)
        self.num_classes, self.sample_rate, self.replicas = head.num_classes, head.sample_rate, replicas
        self.global_batch, self.dim = int(global_batch), int(dim)
        object.__setattr__(self, "bounds", shard_bounds(head.num_classes, replicas))   # not a checkpoint node
        shards = {}
        for replica, device in sorted(zip([int(i) for i in ids], strategy.extended.worker_devices)):
            start, size = self.bounds[replica]
            with tf.device(device):   # drawn there, block by block: no [C, D] tensor exists anywhere at start
                kernel = tf.Variable(tf.zeros((size, dim)), trainable=False, name=f"kernel_{replica}")
                fill_initial_centres(kernel, head, start)   # the rows one device starts from
                slots = tf.Variable(tf.zeros((size, dim)), trainable=False, name=f"momentum_{replica}")
            shards[replica] = (kernel, slots, start, size, shard_num_sample(size, self.sample_rate, global_batch))
        object.__setattr__(self, "_shards", shards)
        object.__setattr__(self, "_host", tf.DeviceSpec.from_string(strategy.extended.worker_devices[0]).replace(
            device_type="CPU", device_index=0).to_string())
        self._set_pieces(self._placeholders())

    def _placeholders(self):
        """{shard: (kernel, momentum)} for the shards of other workers: variables without memory."""
        pieces = {}
        with tf.device(self._host):
            for replica, (_, size) in enumerate(self.bounds):
                if replica not in self._shards:
                    pieces[replica] = tuple(UninitializedVariable(shape=(size, self.dim), dtype=tf.float32,
                                                                  trainable=False, name=f"{kind}_{replica}")
                                            for kind in ("kernel", "momentum"))
        return pieces

    def _set_pieces(self, others):
        pieces = [self._shards[r][:2] if r in self._shards else others[r] for r in range(self.replicas)]
        self.kernel = ShardedVariable([p[0] for p in pieces], name="kernel")
        self.momentum = ShardedVariable([p[1] for p in pieces], name="momentum")

    @contextlib.contextmanager
    def every_shard_here(self, saving):
        """Within it, ``kernel`` and ``momentum`` hold all C rows on this worker, so that a checkpoint
        written or read here holds or reads every shard. ``saving``: first copy the other workers'
        shards here (collective: every worker enters it at the same point); a restore fills them
        from the file instead. Afterwards the copies are dropped. Nothing to do on one worker."""
        if len(self._shards) == self.replicas:
            yield
            return
        if saving:
            with tf.device(self._host):
                for replica, (_, size) in enumerate(self.bounds):
                    if replica not in self._shards:
                        for piece in (self.kernel.variables[replica], self.momentum.variables[replica]):
                            piece.assign(tf.zeros((size, self.dim)))
                for replica, first, kernel_rows, momentum_rows in self.gathered_rows():
                    if replica not in self._shards:
                        rows = tf.range(first, first + tf.shape(kernel_rows)[0])
                        self.kernel.variables[replica].scatter_update(tf.IndexedSlices(kernel_rows, rows))
                        self.momentum.variables[replica].scatter_update(tf.IndexedSlices(momentum_rows, rows))
        try:
            yield
        finally:
            self._set_pieces(self._placeholders())

    def gathered_rows(self, chunk_rows=None):
        """Every shard's rows, gathered from all replicas (a collective: every worker calls it
        together): yields (shard, first row, centres [n, D], momentum [n, D]) on this worker's host,
        ``chunk_rows`` rows of each shard per all_gather (default: GATHER_BYTES of centres)."""
        chunk = int(chunk_rows or max(1, GATHER_BYTES // (4 * self.dim)))
        strategy, shards = self._strategy, self._shards

        @tf.function
        def gather(first):
            def contribute():
                ctx = tf.distribute.get_replica_context()
                kernel, slots, _, size, _ = shards[int(tf.get_static_value(ctx.replica_id_in_sync_group))]
                rows = first + tf.range(chunk)
                rows = tf.minimum(rows, size - 1)   # past the shard's end: padding, dropped below
                return ctx.all_gather(tf.stack([tf.gather(kernel, rows), tf.gather(slots, rows)]), axis=1)
            return strategy.run(contribute)

        for first in range(0, max(size for _, size in self.bounds), chunk):
            with tf.device(self._host):
                gathered = tf.identity(strategy.experimental_local_results(gather(tf.constant(first)))[0])
            for replica, (_, size) in enumerate(self.bounds):
                count = min(chunk, size - first)
                if count > 0:
                    part = gathered[:, replica * chunk:replica * chunk + count]
                    yield replica, first, part[0], part[1]

    @property
    def variables(self):
        """This worker's shards' centres and momentum (what the guard checks)."""
        return [v for r in sorted(self._shards) for v in self._shards[r][:2]]

    @property
    def trainable_variables(self):
        return []   # updated by the sparse step, not by the Keras optimizer

    def auxiliary_loss(self, embeddings):
        return self.margin_head.auxiliary_loss(embeddings)

    def forward_backward(self, model, variables, images, labels, margin_weight, step, seed,
                         focal_gamma=0.0, class_weights=None):
        """One replica's part of a step (in replica context). Returns (gradients of ``variables``,
        the shard's update (kernel, momentum, index [K_r], gradient rows [K_r, D]), the arguments of
        trainer.batch_stats for this replica's rows).

        ``class_weights`` [C] float32 or None weight each example's loss by its class.
        """
        ctx = tf.distribute.get_replica_context()
        replica = int(tf.get_static_value(ctx.replica_id_in_sync_group))
        kernel, slots, start, size, num_sample = self._shards[replica]
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        all_labels = ctx.all_gather(labels, axis=0)                            # [N·B]
        rows = own_rows(ctx, replica, tf.shape(labels)[0])
        index, local_labels = sample_centres(all_labels - start, size, num_sample, seed, step, shard=replica)
        centres = tf.gather(kernel, index)                                     # [K_r, D]
        with tf.GradientTape() as tape:
            tape.watch(centres)
            embeddings = model(images, training=True)
            all_embeddings = ctx.all_gather(tf.cast(embeddings, tf.float32), axis=0)   # [N·B, D]
            logits = self.margin_head.sampled_logits(all_embeddings, centres, local_labels,
                                                     margin_weight=margin_weight)
            ce = sharded_cross_entropy(ctx, logits, local_labels)              # [N·B], equal on every replica
            ce = class_weighted(focal_weighted(ce, focal_gamma), all_labels, class_weights)
            loss = tf.reduce_mean(tf.gather(ce, rows)) + self.margin_head.auxiliary_loss(embeddings)
            share = tf.cast(tf.shape(labels)[0], tf.float32) / self.global_batch
            objective = loss * share
        *grads, centre_grads = tape.gradient(objective, variables + [centres])
        scores = sharded_target_and_best_other(
            ctx, self.margin_head.sampled_scores(all_embeddings, centres), local_labels)
        stats = (loss * share, tf.gather(scores, rows), tf.zeros_like(labels), None, embeddings, labels)
        return grads, (kernel, slots, index, centre_grads), stats

    @staticmethod
    def apply_sparse_sgd(update, lr, momentum, weight_decay):
        """Keras SGD's step on the shard's sampled rows (training.partial_fc.sparse_sgd_update)."""
        kernel, slots, index, grad_rows = update
        sparse_sgd_update_rows(kernel, slots, index, grad_rows, lr, momentum, weight_decay)


def own_rows(ctx, replica, batch):
    """The rows [B] of the gathered batch that are this replica's (all_gather concatenates in
    replica order)."""
    sizes = ctx.all_gather(tf.reshape(batch, [1]), axis=0)
    start = tf.reduce_sum(sizes[:replica])
    return tf.range(start, start + batch)


def _all_replicas_max(ctx, values):
    """The element-wise maximum over replicas of ``values`` [G] (no gradient)."""
    gathered = ctx.all_gather(tf.stop_gradient(values)[None], axis=0)          # [N, G]
    return tf.stop_gradient(tf.reduce_max(gathered, axis=0))


def sharded_cross_entropy(ctx, logits, local_labels):
    """Softmax cross-entropy [G] of rows whose columns are spread over the replicas: this
    replica's ``logits`` [G, K_r] and ``local_labels`` [G] (−1 where another shard holds the
    target). log Σ exp is combined across replicas; the result is the same on every replica and
    its gradient (through ``all_reduce``) reaches every replica's logits."""
    row_max = _all_replicas_max(ctx, tf.reduce_max(logits, axis=1))
    target_here = tf.one_hot(local_labels, tf.shape(logits)[1], dtype=tf.float32)
    sum_exp, target = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [
        tf.reduce_sum(tf.exp(logits - row_max[:, None]), axis=1), tf.reduce_sum(target_here * logits, axis=1)])
    return tf.math.log(sum_exp) + row_max - target


def sharded_target_and_best_other(ctx, scores, local_labels):
    """[G, 2]: each row's margin-free target score and its best other score over all shards, so
    that argmax == 0 is a correct prediction (as the one-device argmax over all classes)."""
    target_here = tf.one_hot(local_labels, tf.shape(scores)[1], dtype=tf.float32)
    target = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(target_here * scores, axis=1))
    best_other = _all_replicas_max(ctx, tf.reduce_max(scores - 1e9 * target_here, axis=1))
    return tf.stack([target, best_other], axis=1)


def check_sharded_options(negative_classes):
    """ValueError for what the sharded head does not do (the negatives-only classes' open-set loss)."""
    if negative_classes is not None:
        raise ValueError("--partial-fc under a tf.distribute strategy does not support --singletons negatives; "
                         "use --singletons classes or train on one device")
