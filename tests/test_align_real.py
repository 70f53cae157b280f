"""Real LFW faces: the fast detector agrees with the `mtcnn` package, and aligned crops put the face on
the template (checked by detecting the face again on the crop)."""

import cv2
import numpy as np
import pytest

from align import FaceDetector, align_face, align_folder, pick_face, read_image_rgb, reference_landmarks

pytestmark = pytest.mark.real_data

SAMPLES = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "George_W_Bush/George_W_Bush_0010.jpg",
           "Serena_Williams/Serena_Williams_0003.jpg", "Colin_Powell/Colin_Powell_0100.jpg"]
PAD = 40  # border around a crop before re-detection: MTCNN needs context around a face filling the frame


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def images(lfw_dir):
    return {name: read_image_rgb(lfw_dir / "images" / name) for name in SAMPLES}


def _plain_mtcnn_landmarks(image):
    """Landmarks [5, 2] of the face our rule picks, from the mtcnn package's own detect_faces."""
    from mtcnn import MTCNN

    rows = MTCNN().detect_faces(image, output_type="numpy", box_format="xyxy", min_face_size=20,
                                threshold_pnet=0.6, threshold_rnet=0.7, threshold_onet=0.7)
    faces = [(row[1:5], row[5], np.stack([row[6:11], row[11:16]], axis=1)) for row in rows]
    return faces[pick_face(faces, image.shape)][2]


@pytest.mark.parametrize("image_size", [(112, 96), (112, 112)])
def test_redetected_landmarks_sit_on_the_template(detector, images, image_size):
    template = reference_landmarks(image_size)
    for name, image in images.items():
        faces = detector.detect(image)
        assert faces, f"no face in {name}"
        crop = align_face(image, faces[pick_face(faces, image.shape)].landmarks, image_size)
        padded = cv2.copyMakeBorder(crop, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
        again = detector.detect(padded)
        assert again, f"no face found again on the aligned crop of {name}"
        landmarks = again[pick_face(again, padded.shape)].landmarks - PAD
        error = np.linalg.norm(landmarks - template, axis=1).mean()
        assert error < 5.0, f"{name}: re-detected landmarks {error:.2f} px from the template on average"


def test_fast_detector_matches_mtcnn_package(detector, images):
    for name, image in images.items():
        faces = detector.detect(image)
        np.testing.assert_allclose(faces[pick_face(faces, image.shape)].landmarks, _plain_mtcnn_landmarks(image),
                                   atol=0.01, err_msg=name)


def test_written_crop_matches_crop_from_mtcnn_landmarks(lfw_dir, images, tmp_path):
    raw = tmp_path / "raw"
    for name in SAMPLES[:2]:
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes((lfw_dir / "images" / name).read_bytes())
    summary = align_folder(raw, tmp_path / "out", workers=1, progress=False, image_format="png",
                           contact_sheet_size=0, log=lambda m: None)
    assert summary["aligned"] == 2
    for name in SAMPLES[:2]:
        written = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / name.replace(".jpg", ".png"))), cv2.COLOR_BGR2RGB)
        direct = align_face(images[name], _plain_mtcnn_landmarks(images[name]))
        assert written.shape == (112, 96, 3)
        # equal up to rounding at a few pixel edges (landmarks agree to ~1e-4 px)
        assert np.abs(written.astype(int) - direct).max() <= 1, name
