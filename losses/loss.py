"""The training loss on top of any head: softmax cross-entropy, optionally focal."""

from keras import ops


def margin_softmax_loss(labels, logits, focal_gamma=0.0):
    """Mean cross-entropy of float32 ``logits`` [B, C] against int ``labels`` [B].

    With ``focal_gamma`` > 0 each example's cross-entropy CE is weighted by ``(1 − p)^γ``,
    p = exp(−CE) the true-class probability (Lin et al.; arcface-pytorch's FocalLoss, γ = 2).
    """
    logits = ops.cast(logits, "float32")
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    log_probs = ops.log_softmax(logits, axis=-1)
    one_hot = ops.one_hot(labels, ops.shape(logits)[-1], dtype="float32")
    ce = -ops.sum(one_hot * log_probs, axis=-1)
    if focal_gamma:
        ce = ops.power(1.0 - ops.exp(-ce), focal_gamma) * ce
    return ops.mean(ce)
