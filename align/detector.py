"""MTCNN face detector: the `mtcnn` package's bundled P/R/O-Net weights, driven without its per-call overhead.

`mtcnn.MTCNN().detect_faces` spends most of its ~200 ms per 250×250 image in eager Keras layer calls
(one Python-level `Layer.__call__` per layer, per pyramid scale: ~110 dispatches for PNet alone),
not in arithmetic. This driver keeps mtcnn's networks, weights and NumPy box logic (same pyramid,
same AREA resize, same crop_and_resize patches, same thresholds and NMS), and runs each network
inside a `tf.function` traced once per input signature:

- PNet: one graph for the whole pyramid (resize + PNet for every scale), traced once per number of
  scales (a handful of traces over any dataset, image sizes are dynamic inside it);
- RNet / ONet: crop_and_resize + network in one graph each, any number of boxes (one trace each).

Landmarks match the plain `detect_faces` loop to float rounding (see benchmarks/align_speed.py).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

# Default thresholds: those of the MTCNN authors' release and of facenet's align_dataset_mtcnn
# (and of the reference fork): PNet 0.6, RNet 0.7, ONet 0.7, min face 20 px, pyramid factor 0.709.
# Why not insightface's stricter ONet 0.9 (or mtcnn 1.0's 0.8): here every image is expected to hold
# a face and the largest-near-centre rule already rejects small off-centre false positives, so the
# looser ONet threshold buys recall on hard LFW faces (profiles, occlusion) at little cost.
DEFAULT_MIN_FACE_SIZE = 20
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
DEFAULT_SCALE_FACTOR = 0.709
PNET_MIN_SIZE = 12  # PNet's receptive field: the smallest pyramid level it can look at (pixels)


class Face(NamedTuple):
    """One detection in input-image pixel coordinates.

    box: float [4] = x1, y1, x2, y2 (clipped to the image); score: ONet face probability;
    landmarks: float [5, 2] (x, y) = left eye, right eye, nose, left mouth corner, right mouth corner
    (left/right as seen in the image).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray


def pick_face(faces: list, image_shape) -> int:
    """Index of the face to align: the largest near the centre, or -1 if `faces` is empty.

    The reference rule (facenet's align_dataset_mtcnn): maximise box area − 2 · squared distance
    between the box centre and the image centre (pixels²).
    """
    if not faces:
        return -1
    height, width = image_shape[:2]
    boxes = np.stack([np.asarray(f[0], dtype=np.float64) for f in faces])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    return int(np.argmax(area - 2.0 * (centre_x**2 + centre_y**2)))


def pyramid_scales(height: int, width: int, min_face_size: int, scale_factor: float) -> np.ndarray:
    """Scales of the image pyramid, exactly as mtcnn's `build_scale_pyramid` (float64 [K])."""
    min_dim = min(width, height)
    count = round(-((np.log(min_dim / PNET_MIN_SIZE) / np.log(scale_factor)) + 1))
    return (PNET_MIN_SIZE / min_face_size) * scale_factor ** np.arange(max(count, 0))


def configure_threads(intra_op: int, inter_op: int = 1) -> bool:
    """Pin TensorFlow's thread pools; False if TF already ran ops in this process (then it cannot)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:  # "cannot be modified after initialization"
        return False
    return True


class FaceDetector:
    """MTCNN detection with the `mtcnn` package's networks and weights (works offline).

    detect(image_rgb uint8 [H, W, 3]) -> list[Face], best ONet score first.
    """

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE_SIZE, thresholds=DEFAULT_THRESHOLDS,
                 scale_factor: float = DEFAULT_SCALE_FACTOR):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        from mtcnn.network.onet import ONet
        from mtcnn.network.pnet import PNet
        from mtcnn.network.rnet import RNet
        from mtcnn.utils.tensorflow import load_weights

        self.validate_settings(min_face_size, thresholds, scale_factor)
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)

        self._tf = tf
        self._pnet, self._rnet, self._onet = PNet(), RNet(), ONet()
        for net, weights in ((self._pnet, "pnet.lz4"), (self._rnet, "rnet.lz4"), (self._onet, "onet.lz4")):
            net.build()
            net.set_weights(load_weights(weights))

        image_spec = tf.TensorSpec([None, None, 3], tf.float32)
        self._pnet_fns = {}  # number of pyramid scales -> traced graph
        self._rnet_fn = tf.function(self._refine, input_signature=[
            image_spec, tf.TensorSpec([None, 4], tf.float32)], jit_compile=False)
        self._onet_fn = tf.function(self._output, input_signature=[
            image_spec, tf.TensorSpec([None, 4], tf.float32)], jit_compile=False)

    @staticmethod
    def validate_settings(min_face_size, thresholds, scale_factor) -> None:
        """Raise ValueError naming the bad setting."""
        if min_face_size < PNET_MIN_SIZE:
            raise ValueError(f"min_face_size must be >= {PNET_MIN_SIZE} px (PNet's window), got {min_face_size}")
        if len(thresholds) != 3 or not all(0.0 <= t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities in [0, 1), got {list(thresholds)}")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")

    # ---- graphs -------------------------------------------------------------------------------
    def _pnet_graph(self, num_scales: int):
        tf = self._tf
        if num_scales not in self._pnet_fns:
            def pyramid(image, sizes):
                batch = image[None]
                outputs = []
                for k in range(num_scales):  # unrolled: one graph holds the whole pyramid
                    scaled = tf.image.resize(batch, sizes[k], method=tf.image.ResizeMethod.AREA)
                    reg, prob = self._pnet(scaled)
                    outputs.append((reg[0], prob[0, :, :, 1]))
                return outputs

            self._pnet_fns[num_scales] = tf.function(pyramid, input_signature=[
                tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([num_scales, 2], tf.int32)])
        return self._pnet_fns[num_scales]

    def _crops(self, image, boxes_yxyx_norm, size):
        tf = self._tf
        return tf.image.crop_and_resize(image[None], boxes_yxyx_norm, tf.zeros(tf.shape(boxes_yxyx_norm)[:1], tf.int32),
                                        size)

    def _refine(self, image, boxes):
        reg, prob = self._rnet(self._crops(image, boxes, (24, 24)))
        return reg, prob[:, 1]

    def _output(self, image, boxes):
        reg, landmarks, prob = self._onet(self._crops(image, boxes, (48, 48)))
        return reg, landmarks, prob[:, 1]

    # ---- detection ----------------------------------------------------------------------------
    def detect(self, image_rgb: np.ndarray) -> list:
        """Faces in an RGB uint8 (or float 0–255) image [H, W, 3], best ONet score first."""
        from mtcnn.utils.bboxes import adjust_bboxes, pick_matches, resize_to_square, smart_nms_from_bboxes

        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image_rgb.shape}")
        height, width = image_rgb.shape[:2]
        scales = pyramid_scales(height, width, self.min_face_size, self.scale_factor)
        # mtcnn resizes to int(shape * scale) (tf.image.resize truncates float sizes)
        sizes = (np.asarray([height, width], np.float64)[None] * scales[:, None]).astype(np.int32)
        keep = (sizes >= PNET_MIN_SIZE).all(axis=1)
        scales, sizes = scales[keep], sizes[keep]
        if len(scales) == 0:
            return []
        image = ((image_rgb.astype(np.float32) - 127.5) / 128.0)
        t_pnet, t_rnet, t_onet = self.thresholds

        # Stage 1: PNet proposals per scale, NMS per scale (0.5) then across scales (0.7).
        per_scale = []
        for (reg, prob), scale in zip(self._pnet_graph(len(scales))(image, sizes), scales):
            boxes = _pnet_boxes(reg.numpy(), prob.numpy(), t_pnet, scale)
            if len(boxes):
                per_scale.append(smart_nms_from_bboxes(boxes, threshold=0.5, method="union", initial_sort=False))
        if not per_scale:
            return []
        boxes = smart_nms_from_bboxes(np.concatenate(per_scale), threshold=0.7, method="union", initial_sort=True)
        boxes = resize_to_square(boxes)

        # Stage 2: RNet refinement.
        reg, prob = self._rnet_fn(image, _normalised_yxyx(boxes, height, width))
        boxes[:, -1] = prob.numpy()
        boxes = adjust_bboxes(boxes, reg.numpy())
        boxes = pick_matches(boxes, score_threshold=t_rnet)
        if len(boxes) == 0:
            return []
        boxes = smart_nms_from_bboxes(boxes, threshold=0.7, method="union", initial_sort=True)
        boxes = resize_to_square(boxes)

        # Stage 3: ONet boxes, scores and landmarks.
        reg, landmarks, prob = self._onet_fn(image, _normalised_yxyx(boxes, height, width))
        landmarks = landmarks.numpy().astype(np.float64)
        w = boxes[:, 3:4] - boxes[:, 1:2] + 1
        h = boxes[:, 4:5] - boxes[:, 2:3] + 1
        landmarks[:, 0:5] = w * landmarks[:, 0:5] + boxes[:, 1:2] - 1
        landmarks[:, 5:10] = h * landmarks[:, 5:10] + boxes[:, 2:3] - 1
        boxes[:, -1] = prob.numpy()
        boxes = adjust_bboxes(boxes, reg.numpy())
        boxes = np.concatenate([boxes, landmarks], axis=-1)
        boxes = pick_matches(boxes, scores_column=5, score_threshold=t_onet)
        if len(boxes) == 0:
            return []
        boxes = smart_nms_from_bboxes(boxes, threshold=0.7, method="min", initial_sort=True)

        faces = []
        for row in boxes:  # mtcnn's fit_to_image: clip the box, leave the landmarks as predicted
            box = np.array([np.clip(row[1], 0, width - 1), np.clip(row[2], 0, height - 1),
                            np.clip(row[3], 0, width - 1), np.clip(row[4], 0, height - 1)])
            faces.append(Face(box=box, score=float(row[5]), landmarks=np.stack([row[6:11], row[11:16]], axis=1)))
        return faces


def _pnet_boxes(reg: np.ndarray, prob: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """PNet cells above threshold -> [N, 6] rows (image 0, x1, y1, x2, y2, score) in input pixels.

    Same arithmetic and order as mtcnn's generate_bounding_box + upscale_bboxes (stride 2, cell 12).
    """
    ys, xs = np.where(prob > threshold)
    if len(ys) == 0:
        return np.empty((0, 6))
    dx1, dy1, dx2, dy2 = reg[ys, xs].T
    x1 = xs * 2 + 1 + dx1 * 11
    y1 = ys * 2 + 1 + dy1 * 11
    x2 = xs * 2 + 12 + dx2 * 11
    y2 = ys * 2 + 12 + dy2 * 11
    rows = np.stack([np.zeros_like(x1, dtype=np.float64), x1, y1, x2, y2, prob[ys, xs]], axis=0).T
    rows = rows[np.argsort(rows[:, -1])[::-1]]
    rows[:, 1:5] = rows[:, 1:5] / scale
    return rows


def _normalised_yxyx(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """mtcnn's extract_patches coordinates: (y1/H, x1/W, y2/H, x2/W), float32 [N, 4]."""
    return (boxes[:, [2, 1, 4, 3]] / np.asarray([[height, width, height, width]])).astype(np.float32)
