"""Margin-softmax heads (softmax, AM-Softmax/CosFace, ArcFace, SphereFace, combined, ...) and the loss.

Pure Keras 3 (``keras.ops``), so heads run on the TensorFlow, JAX and PyTorch backends. Import from
the module that defines a name: ``losses.registry`` (``HEADS``: options, published defaults, valid
ranges; imports no Keras, so ``train.py --help`` builds its flags from it), ``losses.heads``
(``build_head`` and the layers), ``losses.loss`` (``margin_softmax_loss``), ``losses.margins``,
``losses.partial_fc``.
"""
