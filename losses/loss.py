"""The training loss on top of any head: softmax cross-entropy, optionally focal, with optional
per-example weights and classes whose images train only as negatives."""

from keras import ops

from losses.registry import check_focal_gamma

# Added to the logits of classes that leave the softmax: exp() of it is exactly 0 in float32,
# and it stays finite (no inf − inf in log_softmax, no NaN gradients).
_ABSENT_LOGIT = -1e9
# 1 − p below this is taken as this in the focal weight (float32's smallest normal is 1.2e-38).
_FOCAL_FLOOR = 1e-30


def drop_negative_classes(logits, negative_classes):
    """``logits`` [B, C] with the columns where ``negative_classes`` [C] is 1 pushed out of reach:
    no softmax gives them weight and no argmax picks them."""
    return ops.cast(logits, "float32") + _ABSENT_LOGIT * ops.cast(negative_classes, "float32")


def margin_softmax_loss(labels, logits, focal_gamma=0.0, class_weights=None, negative_classes=None):
    """Mean over the batch of ``w_i · ℓ_i``: float32 ``logits`` [B, C] against int ``labels`` [B].

    ℓ is the cross-entropy CE; with ``focal_gamma`` γ > 0 each example's CE is weighted by its own
    ``(1 − p)^γ``, p = exp(−CE) the true-class probability: Lin et al.'s focal loss, per example.
    (arcface-pytorch's FocalLoss, γ = 2, differs: it weights the batch-mean CE by one (1 − p)^γ computed
    from it.) γ < 0 is a ValueError. ``class_weights``
    [C] (default 1) scale the term of each example of that class; the mean still divides by B.

    ``negative_classes`` [C] (1.0 for a class whose images train only as negatives, else 0): those
    columns leave every example's softmax, and an example labelled with such a class has no class to
    hit: its ℓ is the entropic open-set loss (Dhamija et al., NeurIPS 2018), the mean over the other
    classes of −log softmax, lowest when it scores every class alike, i.e. resembles none of them.
    """
    check_focal_gamma(focal_gamma)
    logits = ops.cast(logits, "float32")
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    num_classes = ops.shape(logits)[-1]
    if negative_classes is not None:
        negative_classes = ops.cast(negative_classes, "float32")
        logits = drop_negative_classes(logits, negative_classes)
    log_probs = ops.log_softmax(logits, axis=-1)
    one_hot = ops.one_hot(labels, num_classes, dtype="float32")
    ce = -ops.sum(one_hot * log_probs, axis=-1)
    ce = focal_weighted(ce, focal_gamma)
    if negative_classes is not None:
        present = 1.0 - negative_classes
        open_set = -ops.sum(log_probs * present, axis=-1) / ops.maximum(ops.sum(present), 1.0)
        is_negative = ops.take(negative_classes, labels)
        # ce of a negative example is ~1e9 (its own column is absent) but finite: where() drops it.
        ce = ops.where(is_negative > 0, open_set, ce)
    return ops.mean(class_weighted(ce, labels, class_weights))


def focal_weighted(ce, focal_gamma):
    """Per-example cross-entropies ``ce`` [B] times ``(1 − p)^γ`` (p = exp(−ce)); ``ce`` itself for γ = 0."""
    if not focal_gamma:
        return ce
    # 1 − p = −expm1(−CE), exact for small CE. Where CE is 0 in float32 (easy at s = 64), d(1 − p)^γ
    # is infinite for γ < 1 and times CE = 0 gives NaN: the floor makes that factor's gradient 0
    # there, and (1 − p)^γ·CE is 0 with a zero gradient anyway.
    one_minus_p = ops.maximum(-ops.expm1(-ce), _FOCAL_FLOOR)
    return ops.power(one_minus_p, focal_gamma) * ce


def class_weighted(ce, labels, class_weights):
    """``ce`` [B] times the weight [C] of each example's class ``labels`` [B] (unchanged for None)."""
    if class_weights is None:
        return ce
    return ce * ops.take(ops.cast(class_weights, "float32"), labels)
