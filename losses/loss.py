"""The training loss on top of any head: softmax cross-entropy, optionally focal, with optional
per-example weights and classes whose images train only as negatives."""

from keras import ops

# Added to the logits of classes that leave the softmax: exp() of it is exactly 0 in float32,
# and it stays finite (no inf − inf in log_softmax, no NaN gradients).
_ABSENT_LOGIT = -1e9


def drop_negative_classes(logits, negative_classes):
    """``logits`` [B, C] with the columns where ``negative_classes`` [C] is 1 pushed out of reach:
    no softmax gives them weight and no argmax picks them."""
    return ops.cast(logits, "float32") + _ABSENT_LOGIT * ops.cast(negative_classes, "float32")


def margin_softmax_loss(labels, logits, focal_gamma=0.0, class_weights=None, negative_classes=None):
    """Mean over the batch of ``w_i · ℓ_i``: float32 ``logits`` [B, C] against int ``labels`` [B].

    ℓ is the cross-entropy CE; with ``focal_gamma`` > 0 it is weighted by ``(1 − p)^γ``, p = exp(−CE)
    the true-class probability (Lin et al.; arcface-pytorch's FocalLoss, γ = 2). ``class_weights``
    [C] (default 1) scale the term of each example of that class; the mean still divides by B.

    ``negative_classes`` [C] (1.0 for a class whose images train only as negatives, else 0): those
    columns leave every example's softmax, and an example labelled with such a class has no class to
    hit: its ℓ is the entropic open-set loss (Dhamija et al., NeurIPS 2018), the mean over the other
    classes of −log softmax, lowest when it scores every class alike, i.e. resembles none of them.
    """
    logits = ops.cast(logits, "float32")
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    num_classes = ops.shape(logits)[-1]
    if negative_classes is not None:
        negative_classes = ops.cast(negative_classes, "float32")
        logits = drop_negative_classes(logits, negative_classes)
    log_probs = ops.log_softmax(logits, axis=-1)
    one_hot = ops.one_hot(labels, num_classes, dtype="float32")
    ce = -ops.sum(one_hot * log_probs, axis=-1)
    if focal_gamma:
        ce = ops.power(1.0 - ops.exp(-ce), focal_gamma) * ce
    if negative_classes is not None:
        present = 1.0 - negative_classes
        open_set = -ops.sum(log_probs * present, axis=-1) / ops.maximum(ops.sum(present), 1.0)
        is_negative = ops.take(negative_classes, labels)
        # ce of a negative example is ~1e9 (its own column is absent) but finite: where() drops it.
        ce = ops.where(is_negative > 0, open_set, ce)
    if class_weights is not None:
        ce = ce * ops.take(ops.cast(class_weights, "float32"), labels)
    return ops.mean(ce)
