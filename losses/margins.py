"""Margin functions: cos θ of the true class -> margin logits.

Each function takes ``cos`` [B, C] (cosine between L2-normalised embeddings and class
centres, float32) and ``one_hot`` [B, C] (1.0 at the true class) and returns logits [B, C]:
the true class gets the margin, every other class keeps ``s·cos θ``. Pure ``keras.ops``, so
they run on every Keras backend and can be tested against closed-form numpy. The published
defaults of their options live in one place, ``losses.registry.HEADS``.
"""

import math

from keras import ops

# cos θ is clipped this far inside [-1, 1] wherever θ itself (acos) or sin θ is needed:
# d acos(c)/dc and d sqrt(1 - c²)/dc are infinite at |c| = 1, and float32 rounding of
# a normalised dot product can land exactly there.
_COS_EPS = 1e-7


def _select(one_hot, target, other):
    """target where one_hot is 1, other elsewhere (one_hot is exactly 0/1)."""
    return one_hot * target + (1.0 - one_hot) * other


def am_softmax_logits(cos, one_hot, *, s, m):
    """AM-Softmax / CosFace: ``s·(cos θ − m)`` for the true class, ``s·cos θ`` otherwise."""
    return s * (cos - m * one_hot)


def arcface_logits(cos, one_hot, *, s, m, easy_margin=False):
    """ArcFace: ``s·cos(θ + m)`` for the true class, ``s·cos θ`` otherwise.

    ``cos(θ + m) = cos θ·cos m − sin θ·sin m``, computed without acos. cos(θ + m) is not
    monotonic in θ once θ + m > π, so, as in insightface and arcface-pytorch, the target
    falls back to ``cos θ − m·sin m`` when ``θ > π − m`` (i.e. ``cos θ ≤ cos(π − m)``);
    with ``easy_margin`` the margin is applied only where ``cos θ > 0``.
    """
    cos_m, sin_m = math.cos(m), math.sin(m)
    sin = ops.sqrt(ops.clip(1.0 - ops.square(cos), _COS_EPS, 1.0))
    phi = cos * cos_m - sin * sin_m
    if easy_margin:
        phi = ops.where(cos > 0.0, phi, cos)
    else:
        phi = ops.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
    return s * _select(one_hot, phi, cos)


def sphereface_psi(cos, m):
    """SphereFace's monotonic ψ(θ) = (−1)^k·cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m].

    ``m`` must be a positive integer: cos(mθ) is then the Chebyshev polynomial T_m(cos θ),
    exact and with finite gradients everywhere (no acos), as in the reference Caffe layer.
    """
    if int(m) != m or m < 1:
        raise ValueError(f"SphereFace margin m must be a positive integer, got {m}")
    m = int(m)
    # Chebyshev recurrence: T_0 = 1, T_1 = c, T_{n+1} = 2c·T_n − T_{n−1}.
    t_prev, t_cur = ops.ones_like(cos), cos
    for _ in range(m - 1):
        t_prev, t_cur = t_cur, 2.0 * cos * t_cur - t_prev
    # k = #{j in 1..m-1 : θ ≥ jπ/m} = #{j : cos θ ≤ cos(jπ/m)}.
    k = ops.zeros_like(cos)
    for j in range(1, m):
        k = k + ops.cast(cos <= math.cos(j * math.pi / m), cos.dtype)
    sign = 1.0 - 2.0 * ops.mod(k, 2.0)
    return sign * t_cur - 2.0 * k


def sphereface_logits(cos, one_hot, *, s, m, sphereface_lambda=0.0):
    """SphereFace (A-Softmax, normalised form): ``s·ψ(θ)`` for the true class, ``s·cos θ`` otherwise.

    ``sphereface_lambda`` (λ, a number or a float32 scalar tensor) blends in the plain cosine as the
    reference training did to converge, target = ``s·(λ·cos θ + ψ(θ)) / (1 + λ)``; λ = 0 is the pure
    margin. The head (``losses.heads.SphereFaceHead``) anneals λ as the reference did.
    """
    psi = sphereface_psi(cos, m)
    target = (sphereface_lambda * cos + psi) / (1.0 + sphereface_lambda)
    return s * _select(one_hot, target, cos)


def combined_margin_logits(cos, one_hot, *, s, m1, m2, m3):
    """insightface's combined margin: ``s·(cos(m1·θ + m2) − m3)`` for the true class.

    (m1, m2, m3) = (1, 0, m) is AM-Softmax/CosFace, (1, m, 0) is ArcFace without its
    θ + m > π fallback, (m, 0, 0) is SphereFace's cos(mθ) on [0, π/m]. As in insightface,
    no fallback is applied here: use ``arcface_logits`` for ArcFace proper.
    """
    if m1 == 1.0:
        # Exact identity avoids acos (and its infinite slope at θ = 0).
        sin = ops.sqrt(ops.clip(1.0 - ops.square(cos), _COS_EPS, 1.0))
        target = cos * math.cos(m2) - sin * math.sin(m2)
    else:
        theta = ops.arccos(ops.clip(cos, -1.0 + _COS_EPS, 1.0 - _COS_EPS))
        target = ops.cos(m1 * theta + m2)
    return s * _select(one_hot, target - m3, cos)


def _sin_from_cos(cos):
    return ops.sqrt(ops.clip(1.0 - ops.square(cos), _COS_EPS, 1.0))


def curricularface_logits(cos, one_hot, *, s, m, t):
    """CurricularFace (Huang et al., CVPR 2020): the ArcFace target (with its θ + m > π fallback) and
    every negative j harder than it, ``cos θ_j > cos(θ_y + m)``, re-weighted to ``cos θ_j·(t + cos θ_j)``.

    ``t`` (a float32 scalar) is the head's moving average of the target cosine: early in training t ≈ 0
    and hard negatives count less (cos² < cos), later more. Easy negatives keep ``s·cos θ_j``.
    """
    cos_m, sin_m = math.cos(m), math.sin(m)
    target_cos = ops.sum(cos * one_hot, axis=-1, keepdims=True)
    cos_theta_m = target_cos * cos_m - _sin_from_cos(target_cos) * sin_m
    target = ops.where(target_cos > math.cos(math.pi - m), cos_theta_m, target_cos - math.sin(math.pi - m) * m)
    hard = ops.cast(cos > cos_theta_m, "float32")
    negatives = hard * cos * (t + cos) + (1.0 - hard) * cos
    return s * _select(one_hot, target, negatives)


def adaface_logits(cos, one_hot, norm, *, s, m, h, batch_mean, batch_std):
    """AdaFace (Kim et al., CVPR 2022): the margin adapts to the feature norm ‖x‖ (``norm`` [B, 1]).

    ẑ = clip(h·(‖x‖ − μ) / (σ + 0.001), −1, 1) with μ, σ the moving batch statistics of the norms;
    target ``s·(cos(θ + g_angle) − g_add)``, g_angle = −m·ẑ, g_add = m·ẑ + m. ẑ = 0 is CosFace
    (s·(cos θ − m)), ẑ = −1 is ArcFace s·cos(θ + m) (no fallback: θ + g is clipped to [ε, π − ε]).
    As in the reference, every cosine is clipped to [−1 + ε, 1 − ε], ε = 0.001, and ‖x‖ to
    [0.001, 100] and taken without gradient.
    """
    eps = 1e-3
    safe_norm = ops.stop_gradient(ops.clip(norm, 0.001, 100.0))
    scaler = ops.clip(h * (safe_norm - batch_mean) / (batch_std + eps), -1.0, 1.0)
    cos = ops.clip(cos, -1.0 + eps, 1.0 - eps)
    theta = ops.arccos(cos)
    theta_m = ops.clip(theta + one_hot * (-m * scaler), eps, math.pi - eps)
    return s * (ops.cos(theta_m) - one_hot * (m + m * scaler))


def magface_margin(norm, *, l_a, u_a, l_m, u_m):
    """MagFace's margin m(a) = l_m + (u_m − l_m)·(a − l_a)/(u_a − l_a) of the magnitude a (clipped to
    [l_a, u_a], as in the reference code)."""
    a = ops.clip(norm, l_a, u_a)
    return (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m


def magface_logits(cos, one_hot, norm, *, s, l_a, u_a, l_m, u_m, easy_margin):
    """MagFace (Meng et al., CVPR 2021): ArcFace with the per-example margin m(a) of the feature
    magnitude a = ‖x‖ (``norm`` [B, 1]): target ``s·cos(θ + m(a))``; with ``easy_margin`` (the
    reference's MagLinear default) the margin only where cos θ > 0, else ArcFace's fallback
    ``cos θ − m·sin m`` where θ > π − m. The regulariser is ``magface_regularizer``."""
    margin = magface_margin(norm, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m)
    phi = cos * ops.cos(margin) - _sin_from_cos(cos) * ops.sin(margin)
    if easy_margin:
        phi = ops.where(cos > 0.0, phi, cos)
    else:
        phi = ops.where(cos > ops.cos(math.pi - margin), phi, cos - ops.sin(math.pi - margin) * margin)
    return s * _select(one_hot, phi, cos)


def magface_regularizer(norm, *, l_a, u_a):
    """MagFace's g(a) = a/u_a² + 1/a on a clipped to [l_a, u_a], averaged over the batch (a scalar):
    convex, so minimising CE + λ_g·g pushes easy (high-margin) examples to larger magnitudes."""
    a = ops.clip(norm, l_a, u_a)
    return ops.mean(a / (u_a * u_a) + 1.0 / a)


def elastic_arc_logits(cos, one_hot, margin, *, s):
    """ElasticFace-Arc (Boutros et al., CVPRW 2022): ``s·cos(θ + m_i)`` for the true class with the
    example's own margin ``margin`` [B, 1] (drawn from N(m, σ) by the head). As in the reference, no
    fallback where θ + m_i > π; cos(θ + m) = cos θ·cos m − sin θ·sin m needs no acos."""
    phi = cos * ops.cos(margin) - _sin_from_cos(cos) * ops.sin(margin)
    return s * _select(one_hot, phi, cos)


def elastic_cos_logits(cos, one_hot, margin, *, s):
    """ElasticFace-Cos: ``s·(cos θ − m_i)`` for the true class, ``margin`` [B, 1] per example."""
    return s * (cos - one_hot * margin)
