"""Classification heads as Keras layers that own the class-centre weights.

``head(embeddings [B, D], labels [B] int) -> logits [B, C] float32`` is the training forward pass
(heads with state, e.g. SphereFace's λ schedule, update it there); ``head.class_scores(embeddings)``
is the margin-free score inference and training accuracy use, and never touches that state. All
logit math runs in float32 (the layer's dtype is pinned), also when the backbone runs in mixed
precision: the margins subtract small numbers from values scaled by s = 30..64, which float16
cannot resolve. The class-centre weight is named ``kernel`` so training's weight-decay rule finds it.
The heads, their options and published defaults are listed once, in ``losses.registry.HEADS``.
"""

import keras
from keras import ops

from losses import margins
from losses.registry import HEADS, check_head_options


@keras.saving.register_keras_serializable(package="faceid")
class SoftmaxHead(keras.layers.Layer):
    """Plain softmax baseline: unnormalised ``x·W + b`` (the reference's "softmax" loss)."""

    def __init__(self, num_classes, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def build(self, embeddings_shape, labels_shape=None):
        dim = embeddings_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes),
            initializer=keras.initializers.GlorotUniform())
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")

    def class_scores(self, embeddings):
        """Logits without any margin [B, C]: what inference and training accuracy use."""
        return ops.matmul(ops.cast(embeddings, "float32"), self.kernel) + self.bias

    def call(self, embeddings, labels=None, margin_weight=None):
        # No margin to weigh: margin_weight is accepted so every head takes the same call.
        return self.class_scores(embeddings)

    def auxiliary_loss(self, embeddings):
        """A loss term the head adds to the cross-entropy (MagFace's regulariser); 0 here."""
        return ops.zeros((), "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def l2_normalize_with_norm(x, axis=-1):
    """(x / ‖x‖, ‖x‖ with keepdims): the norm is what AdaFace and MagFace read as feature quality."""
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-24))
    return x / norm, norm


@keras.saving.register_keras_serializable(package="faceid")
class NormalizedMarginHead(keras.layers.Layer):
    """cos θ between L2-normalised embeddings and class centres, then a margin on the true class.

    ``margin`` names a head of the registry; ``margin_args`` are its options (s, m, ...), complete
    (``check_head_options`` fills in the defaults). Subclasses with state or norm-dependent margins
    override ``margin_logits``.
    """

    def __init__(self, num_classes, margin, margin_args=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if margin not in HEADS or HEADS[margin].layer == "SoftmaxHead":
            valid = sorted(n for n, e in HEADS.items() if e.layer != "SoftmaxHead")
            raise ValueError(f"unknown margin {margin!r}; valid: {valid}")
        self.num_classes = int(num_classes)
        self.margin = margin
        self.margin_args = check_head_options(margin, dict(margin_args or {}))
        self.scale = float(self.margin_args.get("s", 1.0))

    def build(self, embeddings_shape, labels_shape=None):
        dim = embeddings_shape[-1]
        # arcface_torch initialises class centres with N(0, 0.01); only their direction matters.
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes * self.centres_per_class),
            initializer=keras.initializers.RandomNormal(stddev=0.01))

    centres_per_class = 1   # sub-center ArcFace: K

    def cosine_and_norm(self, embeddings):
        """(cos θ [B, C] between each embedding and each class centre, the embedding's L2 norm [B, 1])."""
        x, norm = l2_normalize_with_norm(ops.cast(embeddings, "float32"))
        w, _ = l2_normalize_with_norm(self.kernel, axis=0)
        return ops.matmul(x, w), norm

    def cosine(self, embeddings):
        """cos θ [B, C] between each embedding and each class centre."""
        return self.cosine_and_norm(embeddings)[0]

    def class_scores(self, embeddings):
        """``s·cos θ`` without the margin [B, C]: what inference and training accuracy use."""
        return self.scale * self.cosine(embeddings)

    def margin_logits(self, cos, norm, one_hot):
        """Logits [B, C] with the margin on the true class (``norm`` [B, 1]: the embeddings' norms)."""
        margin_fn = getattr(margins, HEADS[self.margin].margin)
        return margin_fn(cos, one_hot, **self.margin_args)

    def call(self, embeddings, labels, margin_weight=None):
        """Margin logits [B, C]; ``margin_weight`` w (a float32 scalar in [0, 1], default 1) blends
        them with the plain scores, ``s·cos θ + w·(margin logits − s·cos θ)``: only the true class
        changes, and for am_softmax/cosface that is exactly the margin m scaled by w (a margin warm-up)."""
        cos, norm = self.cosine_and_norm(embeddings)
        return self.blended_logits(cos, norm, labels, margin_weight)

    def blended_logits(self, cos, norm, labels, margin_weight=None):
        """``call``'s logits from cos θ [B, K] and the norms [B, 1]; ``labels`` [B] index the K columns
        (K = C for the full head, the sampled centres for Partial FC)."""
        one_hot = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), ops.shape(cos)[-1],
                              dtype="float32")
        logits = self.margin_logits(cos, norm, one_hot)
        if margin_weight is None:
            return logits
        plain = self.scale * cos
        return plain + ops.cast(margin_weight, "float32") * (logits - plain)

    def auxiliary_loss(self, embeddings):
        """A loss term the head adds to the cross-entropy (MagFace's regulariser); 0 for most heads."""
        return ops.zeros((), "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "margin": self.margin, "margin_args": self.margin_args}


def sphereface_lambda(iteration, base, gamma, power, lambda_min):
    """The reference's annealed λ at forward pass ``iteration`` (1 for the first):
    ``max(λ_min, base·(1 + γ·iteration)^(−power))`` (MarginInnerProductLayer, sphereface_model.prototxt).
    No defaults here: the published ones are the registry's (``HEADS["sphereface"]``: lambda_base, ...)."""
    return ops.maximum(lambda_min, base * ops.power(1.0 + gamma * ops.cast(iteration, "float32"), -power))


@keras.saving.register_keras_serializable(package="faceid")
class SphereFaceHead(NormalizedMarginHead):
    """SphereFace with the reference's λ annealing: target ``s·(λ·cos θ + ψ(θ)) / (1 + λ)``.

    As in the Caffe layer, each training forward pass first counts itself (``iteration``, a
    non-trainable variable, so it checkpoints with the head) and then sets λ from the schedule;
    ``sphereface_lambda`` = a number keeps λ constant instead (0: the pure ψ margin).
    """

    def build(self, embeddings_shape, labels_shape=None):
        super().build(embeddings_shape, labels_shape)
        # float32 counts exactly to 2^24 steps; ONLY_FIRST_REPLICA: one count per step, not per replica.
        self.iteration = self.add_weight(name="iteration", shape=(), initializer="zeros", trainable=False,
                                         aggregation="only_first_replica")

    def current_lambda(self):
        """λ the last forward pass used (the schedule at ``iteration``, or the constant)."""
        a = self.margin_args
        if a["sphereface_lambda"] is not None:
            return ops.convert_to_tensor(float(a["sphereface_lambda"]), "float32")
        return sphereface_lambda(self.iteration, a["lambda_base"], a["lambda_gamma"], a["lambda_power"],
                                 a["lambda_min"])

    def margin_logits(self, cos, norm, one_hot):
        self.iteration.assign_add(1.0)
        return margins.sphereface_logits(cos, one_hot, s=self.margin_args["s"], m=self.margin_args["m"],
                                         sphereface_lambda=self.current_lambda())


def _moving_average(variable, value, alpha):
    """variable ← α·value + (1 − α)·variable; returns the new value (the reference heads use it at once)."""
    updated = alpha * ops.stop_gradient(value) + (1.0 - alpha) * variable
    variable.assign(updated)
    return updated


def _state(layer, name, value):
    """A non-trainable float32 scalar of the head (checkpointed with it). Replicas average their updates."""
    return layer.add_weight(name=name, shape=(), initializer=keras.initializers.Constant(value), trainable=False,
                            aggregation="mean")


@keras.saving.register_keras_serializable(package="faceid")
class CurricularFaceHead(NormalizedMarginHead):
    """CurricularFace: ``t`` (state, start 0) follows the batch-mean target cosine with momentum
    ``t_alpha`` = 0.01, updated before use as in the reference; see ``margins.curricularface_logits``."""

    def build(self, embeddings_shape, labels_shape=None):
        super().build(embeddings_shape, labels_shape)
        self.t = _state(self, "t", 0.0)

    def margin_logits(self, cos, norm, one_hot):
        a = self.margin_args
        t = _moving_average(self.t, ops.mean(ops.sum(cos * one_hot, axis=-1)), a["t_alpha"])
        return margins.curricularface_logits(cos, one_hot, s=a["s"], m=a["m"], t=t)


@keras.saving.register_keras_serializable(package="faceid")
class AdaFaceHead(NormalizedMarginHead):
    """AdaFace: the batch mean and standard deviation of the feature norms (state, start 20 and 100 as
    in the reference) move with momentum ``t_alpha`` = 0.01, updated before use; the norm comes from
    ``cosine_and_norm``. See ``margins.adaface_logits``."""

    def build(self, embeddings_shape, labels_shape=None):
        super().build(embeddings_shape, labels_shape)
        self.batch_mean = _state(self, "batch_mean", 20.0)
        self.batch_std = _state(self, "batch_std", 100.0)

    def margin_logits(self, cos, norm, one_hot):
        a = self.margin_args
        safe = ops.clip(norm, 0.001, 100.0)
        n = ops.cast(ops.shape(safe)[0], "float32")
        mean = ops.mean(safe)
        # torch.std: the unbiased estimate (n − 1); one example has none, so its spread counts as 0.
        std = ops.sqrt(ops.sum(ops.square(safe - mean)) / ops.maximum(n - 1.0, 1.0))
        batch_mean = _moving_average(self.batch_mean, mean, a["t_alpha"])
        batch_std = _moving_average(self.batch_std, std, a["t_alpha"])
        return margins.adaface_logits(cos, one_hot, norm, s=a["s"], m=a["m"], h=a["h"], batch_mean=batch_mean,
                                      batch_std=batch_std)


@keras.saving.register_keras_serializable(package="faceid")
class MagFaceHead(NormalizedMarginHead):
    """MagFace: margin m(a) of the feature magnitude, plus ``auxiliary_loss`` = λ_g·g(a) (the trainer
    adds it to the cross-entropy). No state."""

    def margin_logits(self, cos, norm, one_hot):
        a = self.margin_args
        return margins.magface_logits(cos, one_hot, norm, s=a["s"], l_a=a["l_a"], u_a=a["u_a"], l_m=a["l_m"],
                                      u_m=a["u_m"], easy_margin=a["easy_margin"])

    def auxiliary_loss(self, embeddings):
        _, norm = l2_normalize_with_norm(ops.cast(embeddings, "float32"))
        a = self.margin_args
        return a["lambda_g"] * margins.magface_regularizer(norm, l_a=a["l_a"], u_a=a["u_a"])


@keras.saving.register_keras_serializable(package="faceid")
class SubCenterArcFaceHead(NormalizedMarginHead):
    """Sub-center ArcFace: ``k`` centres per class (kernel [D, C·k], class c's at columns c·k … c·k + k − 1),
    cos θ of a class = the max over its sub-centres, then the ArcFace margin.

    State: how many training examples each sub-centre won (``counts`` [C, k]) and the pass count. With
    ``drop_step`` N > 0, from pass N on each class keeps only its dominant sub-centre (the one that won
    most examples before N), for training and for the scores: the non-dominant ones gather the noisy
    images (Deng et al., ECCV 2020, section 3.2). 0: never drop.
    """

    @property
    def centres_per_class(self):
        return int(self.margin_args["k"])

    def build(self, embeddings_shape, labels_shape=None):
        super().build(embeddings_shape, labels_shape)
        k = self.centres_per_class
        self.counts = self.add_weight(name="counts", shape=(self.num_classes, k), initializer="zeros",
                                      trainable=False, aggregation="sum")
        self.iteration = self.add_weight(name="iteration", shape=(), initializer="zeros", trainable=False,
                                         aggregation="only_first_replica")

    def _dropping(self, passes):
        """True (a bool scalar) when pass number ``passes`` (1 = the first) drops the non-dominant sub-centres."""
        step = self.margin_args["drop_step"]
        return passes >= step if step else ops.convert_to_tensor(False)

    def sub_center_cosines(self, embeddings, dropping=None):
        """cos θ [B, C, k] to every sub-centre, the non-dominant ones at −2 when dropped (``dropping``,
        default: as the passes made so far say)."""
        cos, _ = super().cosine_and_norm(embeddings)
        k = self.centres_per_class
        cos = ops.reshape(cos, (-1, self.num_classes, k))
        dominant = ops.one_hot(ops.argmax(self.counts, axis=-1), k, dtype="float32")   # [C, k]
        dropping = self._dropping(self.iteration) if dropping is None else dropping
        keep = ops.where(dropping, dominant, ops.ones_like(dominant))
        return ops.where(keep > 0, cos, -2.0)

    def cosine_and_norm(self, embeddings):
        _, norm = l2_normalize_with_norm(ops.cast(embeddings, "float32"))
        return ops.max(self.sub_center_cosines(embeddings), axis=-1), norm

    def call(self, embeddings, labels, margin_weight=None):
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        # This pass reads the state as it was before it, then updates it: no read after a write, which
        # replicas of a tf.distribute run could see in different orders.
        dropping = self._dropping(self.iteration + 1.0)
        sub = self.sub_center_cosines(embeddings, dropping)                        # [B, C, k]
        _, norm = l2_normalize_with_norm(ops.cast(embeddings, "float32"))
        logits = self.blended_logits(ops.max(sub, axis=-1), norm, labels, margin_weight)
        # Count which sub-centre of its own class each example is nearest, until the drop.
        one_hot = ops.one_hot(labels, self.num_classes, dtype="float32")
        own = ops.sum(sub * one_hot[:, :, None], axis=1)                          # [B, k]
        winner = ops.one_hot(ops.argmax(own, axis=-1), self.centres_per_class, dtype="float32")
        won = ops.matmul(ops.transpose(one_hot), winner)                           # [C, k]
        self.counts.assign_add((1.0 - ops.cast(dropping, "float32")) * won)
        self.iteration.assign_add(1.0)
        return logits

    def margin_logits(self, cos, norm, one_hot):
        return margins.arcface_logits(cos, one_hot, s=self.margin_args["s"], m=self.margin_args["m"])


@keras.saving.register_keras_serializable(package="faceid")
class ElasticFaceHead(NormalizedMarginHead):
    """ElasticFace: each example's margin drawn from N(m, std) at every training pass (the seed
    generator's state is head state, so a resumed run draws what the uninterrupted one would have).

    The "plus" heads (elasticface_arc_plus, elasticface_cos_plus) sort the draws and give the largest
    to the example with the lowest target cosine (the hardest), the smallest to the easiest.
    """

    def __init__(self, num_classes, margin, margin_args=None, seed=None, **kwargs):
        super().__init__(num_classes, margin, margin_args, **kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed, name="margin_seed")
        # tf.train.Checkpoint follows variable attributes, not a SeedGenerator: name its state here.
        self.seed_state = self.seed_generator.state

    def draw_margins(self, cos, one_hot):
        """Margins [B, 1] for this pass (plus: rank-matched to the target cosines)."""
        a = self.margin_args
        batch = ops.shape(cos)[0]
        drawn = keras.random.normal((batch,), mean=a["m"], stddev=a["std"], seed=self.seed_generator)
        if self.margin.endswith("_plus"):
            target = ops.stop_gradient(ops.sum(cos * one_hot, axis=-1))
            # rank r of each example by descending target cosine gets the r-th smallest draw
            rank = ops.argsort(ops.argsort(-target))
            drawn = ops.take(ops.sort(drawn), rank)
        return ops.reshape(drawn, (-1, 1))

    def margin_logits(self, cos, norm, one_hot):
        fn = margins.elastic_arc_logits if HEADS[self.margin].margin == "elastic_arc_logits" else \
            margins.elastic_cos_logits
        return fn(cos, one_hot, self.draw_margins(cos, one_hot), s=self.margin_args["s"])


_LAYERS = {"SoftmaxHead": SoftmaxHead, "NormalizedMarginHead": NormalizedMarginHead,
           "SphereFaceHead": SphereFaceHead, "CurricularFaceHead": CurricularFaceHead, "AdaFaceHead": AdaFaceHead,
           "MagFaceHead": MagFaceHead, "SubCenterArcFaceHead": SubCenterArcFaceHead,
           "ElasticFaceHead": ElasticFaceHead}


def build_head(name, num_classes, **options):
    """Build head ``name``: (embeddings [B, D], labels [B]) -> float32 logits [B, C].

    ``options`` are its options (``losses.registry.HEADS[name].options``: s, m, ...); an option given
    as None, or not given, takes the published default. Raises ValueError (``check_head_options``)
    for an unknown name, an option the head does not take, or a value outside its range.
    """
    margin_args = check_head_options(name, options)
    layer = _LAYERS[HEADS[name].layer]
    if layer is SoftmaxHead:
        return SoftmaxHead(num_classes, name="softmax_head")
    return layer(num_classes, name, margin_args, name=f"{name}_head")
