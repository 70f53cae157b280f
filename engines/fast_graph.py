"""The ``fast`` engine: the inference graph of an exported embedding model, batch norm folded into the convolutions.

Why: measured on MobileFaceNet (benchmarks/inference_speed.py --profile), the Keras graph spends
most of its CPU time outside the convolutions, in the element-wise ops that inference-mode
BatchNormalization (a multiply and an add over the whole activation) and PReLU (relu, negate,
relu, multiply, add: five passes) compile to. Every such pass streams an activation tensor through
memory. This module rewrites the model into one compiled TensorFlow function with

- every Conv2D / DepthwiseConv2D / Dense whose only consumer is a BatchNormalization merged with it:
  kernel × γ/√(σ² + ε) and a bias, so the BN costs nothing (the bias rides in the fused
  convolution);
- a BatchNormalization that follows no linear layer (LResNet's pre-activation BN) as one
  precomputed scale and shift;
- PReLU as ``max(x, 0) + α · min(x, 0)``, compiled by XLA into one pass: bitwise the values of
  Keras' ``relu(x) − α · relu(−x)`` (every product and sum in either is exact but the one rounding of
  α·x both share);
- micro-batches of FAST_MICRO_BATCH images, whatever batch it is handed, so activations stay in cache.

Layers it does not know (and layouts it does not write itself: grouped or channels-first
convolutions, Dense on more than two axes) are called as they are (``layer(x, training=False)``), so a
new layer type stays correct, only not faster. Nested functional models (the backbone inside the
exported model) are flattened into the one graph. Results differ from the Keras graph by float
rounding only (a folded kernel is rounded once more): on the trained MobileFaceNet, View 2 features
within 1.6e-7 and every metric identical (benchmarks/inference_speed.py); on random backbones with
batch statistics within 2e-6 (tests/test_inference_fast_graph.py). A model whose layers compute in
float16/bfloat16 (mixed precision) is run here in float32, as the ONNX export does.

The models' layer code (models/) is untouched: this reads weights from any built model.
"""

from __future__ import annotations

import numpy as np

from engines.base import micro_batched

LINEAR_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")
# Layers that compute nothing at inference (the final float32 cast of a float32 model included).
IDENTITY_LAYERS = ("InputLayer", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout")


class _Step:
    """One operation of the flattened graph: `fn(*args)` with args filled from computed tensors."""

    def __init__(self, layer, node, kind):
        self.layer = layer
        self.node = node
        self.kind = kind            # "linear", "batch_norm", "prelu", "add", ... or "layer" (called as is)
        self.params = {}            # its weights after folding (numpy; tf.Variables once compiled)
        self.folded_into = None     # a BatchNormalization merged into the linear step before it


def _class_name(layer) -> str:
    """The Keras class a layer computes as: models/layers.py's fused BN and one-select PReLU are
    subclasses of the stock layers with the same maths (a live training model holds them)."""
    for cls in type(layer).__mro__:
        if cls.__module__.startswith("keras"):
            return cls.__name__
    return type(layer).__name__


def _layer_kind(layer, node) -> str:
    name = _class_name(layer)
    if name in LINEAR_LAYERS and _activation_name(layer) == "linear" and _plain_linear(layer, node):
        return "linear"
    if name == "BatchNormalization" and _normalises_last_axis(layer, node) and not getattr(layer, "renorm", False):
        return "batch_norm"
    if name == "PReLU" and tuple(layer.shared_axes or ()) == (1, 2):
        return "prelu"
    if name == "Add":
        return "add"
    if name == "Flatten" and getattr(layer, "data_format", "channels_last") == "channels_last":
        return "flatten"
    if name == "Rescaling":
        return "rescaling"
    if name in IDENTITY_LAYERS or (name == "Activation" and _activation_name(layer) == "linear"):
        return "identity"
    return "layer"


def _plain_linear(layer, node) -> bool:
    """The cases _emit writes itself: channels-last 2-D convolutions without groups, Dense on [B, C]."""
    if type(layer).__name__ == "Dense":
        return len(node.input_tensors[0].shape) == 2
    return getattr(layer, "data_format", "channels_last") == "channels_last" and getattr(layer, "groups", 1) == 1 \
        and len(node.input_tensors[0].shape) == 4


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _normalises_last_axis(layer, node) -> bool:
    rank = len(node.input_tensors[0].shape)
    return layer.axis in (-1, rank - 1)


def _is_functional(operation) -> bool:
    return hasattr(operation, "_nodes_by_depth") and hasattr(operation, "inputs")


def _flatten_graph(model, steps, alias):
    """Append the model's operations in topological order; nested functional models are inlined.

    alias maps id(inner model input tensor) -> id(the outer tensor feeding it), so the inner graph
    reads the outer values.
    """
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            operation = node.operation
            if operation is None or node.is_input:
                continue
            if _is_functional(operation):
                outer_inputs = node.input_tensors
                for inner, outer in zip(operation.inputs, outer_inputs):
                    alias[id(inner)] = alias.get(id(outer), id(outer))
                _flatten_graph(operation, steps, alias)
                for inner, outer in zip(operation.outputs, node.outputs):
                    alias[id(outer)] = alias.get(id(inner), id(inner))
                continue
            steps.append(_Step(operation, node, _layer_kind(operation, node)))


def _key(tensor, alias) -> int:
    return alias.get(id(tensor), id(tensor))


def _bn_scale_shift(bn):
    """Inference BN as y = x · scale + shift (float64 [C] each)."""
    variance = np.asarray(bn.moving_variance, np.float64)
    mean = np.asarray(bn.moving_mean, np.float64)
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return scale, beta - mean * scale


def _linear_params(layer, bn=None):
    """Kernel and bias (float32) of a Conv2D / DepthwiseConv2D / Dense, with a following BN folded in."""
    name = type(layer).__name__
    kernel = np.asarray(layer.kernel, np.float64)  # DepthwiseConv2D: [kh, kw, C, multiplier]
    out_channels = kernel.shape[-2] * kernel.shape[-1] if name == "DepthwiseConv2D" else kernel.shape[-1]
    bias = np.asarray(layer.bias, np.float64) if getattr(layer, "use_bias", False) and layer.bias is not None \
        else np.zeros(out_channels)
    if bn is not None:
        scale, shift = _bn_scale_shift(bn)
        if name == "DepthwiseConv2D":  # output channel c·multiplier + j comes from input channel c
            kernel = (kernel.reshape(kernel.shape[:2] + (-1,)) * scale).reshape(kernel.shape)
        else:
            kernel = kernel * scale
        bias = bias * scale + shift
    return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32),
            "has_bias": bn is not None or bool(getattr(layer, "use_bias", False))}


def plan_inference_graph(model) -> dict:
    """The model's operations, BN folded where possible (numpy weights only, no TF ops):
    {"steps": [_Step in topological order], "alias": tensor id map, "inputs": [ids], "outputs": [ids]}."""
    steps, alias = [], {}
    _flatten_graph(model, steps, alias)
    consumers = {}
    for step in steps:
        for tensor in step.node.input_tensors:
            consumers.setdefault(_key(tensor, alias), []).append(step)
    outputs = {_key(t, alias) for t in model.outputs}
    for step in steps:
        if step.kind != "linear":
            continue
        out = _key(step.node.outputs[0], alias)
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].kind == "batch_norm" and out not in outputs:
            step.folded_into = users[0]
            users[0].kind = "folded"
        step.params = _linear_params(step.layer, step.folded_into.layer if step.folded_into else None)
    for step in steps:
        if step.kind == "batch_norm":
            scale, shift = _bn_scale_shift(step.layer)
            step.params = {"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)}
        elif step.kind == "prelu":
            step.params = {"alpha": np.asarray(step.layer.alpha, np.float32).reshape(-1)}
        elif step.kind == "rescaling":
            step.params = {"scale": np.float32(step.layer.scale), "offset": np.float32(step.layer.offset)}
    model_steps = {"steps": steps, "alias": alias, "inputs": [_key(t, alias) for t in model.inputs],
                   "outputs": [_key(t, alias) for t in model.outputs]}
    return model_steps


def summarize_plan(plan) -> dict:
    """Counts of what the plan does: {"folded_batch_norms": n, "affine_batch_norms": n, "layers_called": [...], ...}."""
    steps = plan["steps"]
    return {
        "folded_batch_norms": sum(s.kind == "folded" for s in steps),
        "affine_batch_norms": sum(s.kind == "batch_norm" for s in steps),
        "linear_layers": sum(s.kind == "linear" for s in steps),
        "prelu_layers": sum(s.kind == "prelu" for s in steps),
        "layers_called_as_is": sorted({type(s.layer).__name__ for s in steps if s.kind == "layer"}),
    }


def _elementwise_kernels(tf):
    """The element-wise parts, each compiled by XLA into one pass over memory.

    Why XLA here and not for the whole graph: XLA's CPU convolutions (depthwise above all) are several
    times slower than oneDNN's (the whole MobileFaceNet under XLA: 27 forward images/s against 323),
    while TensorFlow runs ``max(x, 0) + α·min(x, 0)`` as four separate passes. Measured while building
    this (MobileFaceNet, one thread, batch 32): those four ops took about half of the folded graph's op
    time, the XLA pass about 15 %; the graph went from 321 to 431 forward images/s. XLA may contract
    α·min(x, 0) + max(x, 0) into one fused multiply-add: one of the two terms is always 0, so the
    result is the same.
    """
    prelu = tf.function(lambda x, alpha: tf.maximum(x, 0.0) + alpha * tf.minimum(x, 0.0), jit_compile=True,
                        autograph=False)
    affine = tf.function(lambda x, scale, shift: x * scale + shift, jit_compile=True, autograph=False)
    return {"prelu": prelu, "affine": affine}


def _emit(step, args, tf, kernels):
    """TF ops of one step on its filled-in arguments."""
    kind, layer, p = step.kind, step.layer, step.params
    if kind == "linear":
        x = args[0]
        name = type(layer).__name__
        if name == "Dense":
            y = tf.matmul(x, p["kernel"])
        elif name == "DepthwiseConv2D":
            y = tf.nn.depthwise_conv2d(x, p["kernel"], strides=(1, *layer.strides, 1), padding=layer.padding.upper(),
                                       dilations=layer.dilation_rate)
        else:
            y = tf.nn.conv2d(x, p["kernel"], strides=(1, *layer.strides, 1), padding=layer.padding.upper(),
                             dilations=(1, *layer.dilation_rate, 1))
        # bias_add (not +) so that grappler fuses it into the convolution
        return tf.nn.bias_add(y, p["bias"]) if p["has_bias"] else y
    if kind == "folded":
        return args[0]  # the linear step before it already applied this BN
    if kind == "batch_norm":
        return kernels["affine"](args[0], p["scale"], p["shift"])
    if kind == "prelu":
        return kernels["prelu"](args[0], p["alpha"])
    if kind == "add":
        inputs = args[0]
        y = inputs[0]
        for other in inputs[1:]:
            y = y + other
        return y
    if kind == "flatten":  # the static width, so that layers after it (Dense, norms) see a known shape
        width = step.node.outputs[0].shape[1]
        return tf.reshape(args[0], (-1, width) if width is not None else (tf.shape(args[0])[0], -1))
    if kind == "rescaling":
        return args[0] * p["scale"] + p["offset"]
    if kind == "identity":
        return args[0]
    out = layer(*args, training=False) if "training" in _call_arguments(layer) else layer(*args)
    return tf.cast(out, tf.float32)  # a mixed-precision layer hands back float16/bfloat16


def _call_arguments(layer):
    import inspect

    try:
        return set(inspect.signature(layer.call).parameters)
    except (TypeError, ValueError):
        return set()


def make_fast_embed_fn(model, micro_batch=None):
    """float32 numpy [B, H, W, 3] in [0, 255] -> float32 numpy [B, D]: the folded graph, one tf.function
    (traced once for any batch size) run on micro-batches of ``micro_batch`` images (default
    FAST_MICRO_BATCH). Also returns the plan summary: (embed_fn, summary)."""
    import tensorflow as tf

    plan = plan_inference_graph(model)
    steps, alias = plan["steps"], plan["alias"]
    kernels = _elementwise_kernels(tf)
    # Weights as variables, not graph constants: a 100 MB GraphDef of constants (LResNet50E-IR) took
    # grappler 15 s to optimise on the first call; variables are read in place.
    for step in steps:
        step.params = {k: tf.Variable(v, trainable=False) if isinstance(v, np.ndarray) and v.ndim else v
                       for k, v in step.params.items()}

    class _Values(dict):
        """fill_in looks tensors up by id(KerasTensor); route aliased ids to the computed value."""

        def __getitem__(self, key):
            return dict.__getitem__(self, alias.get(key, key))

        def __contains__(self, key):
            return dict.__contains__(self, alias.get(key, key))

        def get(self, key, default=None):
            return dict.get(self, alias.get(key, key), default)

    def forward(images):
        values = _Values()
        values[plan["inputs"][0]] = images
        for step in steps:
            args, _ = step.node.arguments.fill_in(values)
            out = _emit(step, args, tf, kernels)
            values[_key(step.node.outputs[0], alias)] = out
        return tf.cast(values[plan["outputs"][0]], tf.float32)

    shape = (None,) + tuple(model.input_shape[1:])
    compiled = tf.function(forward, input_signature=[tf.TensorSpec(shape, tf.float32)], autograph=False)
    embed = micro_batched(lambda x: compiled(tf.convert_to_tensor(np.asarray(x, np.float32))).numpy(),
                          micro_batch or FAST_MICRO_BATCH)
    return embed, summarize_plan(plan)


# Images per forward pass inside the fast engine, whatever batch it is handed. Why: on a CPU the
# activations of a large batch do not fit in cache, and every pass over them (convolution, PReLU,
# residual add) goes to memory. Measured on MobileFaceNet 112x96, 2-core EPYC, forward images/s of
# the keras / fast graph: with other jobs on the CPU, batch 256: 112 / 224, 64: 172 / 317,
# 16: 270 / 452, 8: 215 / 415; idle (benchmarks/inference_speed.py --profile), batch 256: 272 / 551,
# 16: 327 / 552, 8: 293 / 450.
FAST_MICRO_BATCH = 16


def computes_in_float32(model) -> bool:
    """True when every layer of the model (nested models included) computes in float32."""
    layers, pending = [], [model]
    while pending:
        current = pending.pop()
        for layer in getattr(current, "layers", []):
            (pending if _is_functional(layer) else layers).append(layer)
    return all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in layers)
