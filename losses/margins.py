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
