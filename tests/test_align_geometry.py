"""align.geometry: the similarity onto the template, output size and orientation (no TensorFlow needed)."""

import numpy as np
import pytest

from align import REFERENCE_LANDMARKS, align_face, estimate_transform, fallback_landmarks, reference_landmarks
from align.detector import pick_face, pyramid_scales


def _similarity(scale, angle_deg, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty],
                     [0, 0, 1.0]])


def _apply(matrix, points):
    return points @ matrix[:2, :2].T + matrix[:2, 2]


@pytest.mark.parametrize("image_size", [(112, 96), (112, 112)])
def test_known_similarity_is_recovered_exactly(image_size):
    template = reference_landmarks(image_size)
    to_input = _similarity(2.7, 23.0, 140.0, 65.0)  # template -> input photo
    landmarks = _apply(to_input, template)
    matrix = estimate_transform(landmarks, image_size)
    np.testing.assert_allclose(matrix, np.linalg.inv(to_input)[:2], atol=1e-9)
    np.testing.assert_allclose(_apply(np.vstack([matrix, [0, 0, 1]]), landmarks), template, atol=1e-9)


# The published templates, typed from the references (not computed from ours): SphereFace's
# preprocess/code/face_align_demo.m (112x96) and insightface's arcface_dst (112x112, x + 8).
SPHEREFACE_112x96 = [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                     [33.5493, 92.3655], [62.7299, 92.2041]]
INSIGHTFACE_112x112 = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                       [41.5493, 92.3655], [70.7299, 92.2041]]


def test_template_values_and_112x112_shift():
    # all ten numbers of each template: moving any one point by 1 px (or 1e-3 px) fails
    np.testing.assert_allclose(reference_landmarks((112, 96)), SPHEREFACE_112x96, rtol=0, atol=1e-6)
    np.testing.assert_allclose(REFERENCE_LANDMARKS, SPHEREFACE_112x96, rtol=0, atol=1e-6)
    np.testing.assert_allclose(reference_landmarks((112, 112)), INSIGHTFACE_112x112, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="112"):
        reference_landmarks((128, 128))


def _blob_image(landmarks, shape=(400, 500)):
    """Black photo with one coloured 5×5 square per landmark, colour k = distinct RGB code."""
    image = np.zeros(shape + (3,), np.uint8)
    for k, (x, y) in enumerate(np.round(landmarks).astype(int)):
        image[y - 2:y + 3, x - 2:x + 3] = COLOURS[k]
    return image


COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], np.uint8)


@pytest.mark.parametrize("image_size", [(112, 96), (112, 112)])
def test_output_size_and_orientation(image_size):
    template = reference_landmarks(image_size)
    # rotated by -30°, enlarged 2×: landmark k must come out at template point k, upright, not mirrored
    landmarks = np.round(_apply(_similarity(2.0, -30.0, 180.0, 150.0), template))
    crop = align_face(_blob_image(landmarks), landmarks, image_size)
    assert crop.shape == (image_size[0], image_size[1], 3) and crop.dtype == np.uint8
    for k, colour in enumerate(COLOURS):
        match = np.all(np.abs(crop.astype(int) - colour) < 100, axis=2) & (crop.max(axis=2) > 100)
        ys, xs = np.nonzero(match)
        assert len(xs) > 0, f"landmark {k} missing from the crop"
        np.testing.assert_allclose([xs.mean(), ys.mean()], template[k], atol=1.0)


def test_align_face_rejects_bad_landmarks():
    with pytest.raises(ValueError, match="finite"):
        align_face(np.zeros((50, 50, 3), np.uint8), np.full((5, 2), np.nan))


def test_fallback_landmarks_give_a_centred_upright_crop():
    landmarks = fallback_landmarks((250, 250, 3), (112, 96))
    matrix = estimate_transform(landmarks, (112, 96))
    assert abs(matrix[0, 1]) < 1e-9 and abs(matrix[1, 0]) < 1e-9  # no rotation
    crop_width_in_input = 96 / matrix[0, 0]
    assert crop_width_in_input == pytest.approx(0.45 * 250)
    centre = np.linalg.solve(matrix[:, :2], np.array([48.0, 56.0]) - matrix[:, 2])
    np.testing.assert_allclose(centre, [125.0, 0.47 * 250], atol=1e-6)


def test_pick_face_prefers_large_central_face():
    shape = (200, 200, 3)
    central = (np.array([70, 70, 130, 130.0]), 0.9, None)  # 60×60 at the centre
    big_corner = (np.array([0, 0, 70, 70.0]), 0.99, None)  # 70×70, but 65 px off in x and y
    small_centre = (np.array([90, 90, 110, 110.0]), 0.99, None)
    assert pick_face([big_corner, central, small_centre], shape) == 1
    # area − 2·offset²: a much larger off-centre face still wins
    huge = (np.array([0, 0, 150, 150.0]), 0.8, None)
    assert pick_face([central, huge], shape) == 1
    assert pick_face([], shape) == -1


def test_pyramid_matches_mtcnn():
    from mtcnn.utils.images import build_scale_pyramid

    for height, width in [(250, 250), (480, 640), (37, 90), (13, 13)]:
        np.testing.assert_allclose(pyramid_scales(height, width, 20, 0.709),
                                   build_scale_pyramid(width, height, min_face_size=20, scale_factor=0.709))


def test_points_found_in_a_turned_image_map_back_to_the_same_pixels():
    """unrotate_points inverts rotate_image exactly, for every quarter turn, on a non-square image."""
    from align.geometry import rotate_image, unrotate_points

    image = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    for turns in range(4):
        turned = rotate_image(image, turns)
        ys, xs = np.mgrid[:turned.shape[0], :turned.shape[1]]
        points = np.stack([xs.ravel(), ys.ravel()], axis=1)
        back = unrotate_points(points, image.shape, turns).astype(int)
        assert (image[back[:, 1], back[:, 0]] == turned[points[:, 1], points[:, 0]]).all(), turns


def test_upright_is_a_turn_within_45_degrees_of_the_template():
    """The template is upright; the same points turned 30° still are, turned 90° or 180° are not."""
    from align.geometry import face_rotation_degrees, is_upright

    centre = REFERENCE_LANDMARKS.mean(axis=0)
    for degrees, upright in ((0, True), (30, True), (-30, True), (60, False), (90, False), (180, False)):
        angle = np.radians(degrees)
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = (REFERENCE_LANDMARKS - centre) @ turn.T + centre
        assert abs(abs(face_rotation_degrees(points)) - abs(degrees)) < 1e-6
        assert is_upright(points) is upright, degrees
