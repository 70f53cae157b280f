"""The alignment contact sheet names the person and file under every tile and explains its marks."""

import cv2
import numpy as np

from align.contact_sheet import GAP, LINE, legend_lines, tile_caption, write_contact_sheet
from align.geometry import reference_landmarks

H, W = 112, 96


def _records(folder, names, status=None):
    crop = np.full((H, W, 3), 128, np.uint8)   # the same grey crop for everyone: only the caption tells them apart
    records = []
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), crop)
        records.append({"status": (status or {}).get(name, "aligned"), "output": name})
    return records


def test_tile_caption_is_the_folder_and_the_file_stem():
    assert tile_caption("George_W_Bush/George_W_Bush_0001.jpg") == ("George_W_Bush", "George_W_Bush_0001")
    assert tile_caption("me.png") == ("", "me")
    assert tile_caption("a/b/c.jpg") == ("a/b", "c")


def test_every_tile_is_captioned_and_the_legend_explains_the_marks(tmp_path):
    names = ["Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg", "Cy/Cy_0003.jpg"]
    records = _records(tmp_path, names, status={"Cy/Cy_0003.jpg": "fallback"})
    sheet_path = write_contact_sheet(records, tmp_path, tmp_path / "sheet.png", reference_landmarks((H, W)), columns=10)
    sheet = cv2.imread(sheet_path)
    legend = legend_lines(3, 3)
    tile_h = H + 2 * LINE
    assert sheet.shape[1] == 3 * (W + GAP)
    assert sheet.shape[0] > tile_h + GAP + len(legend) * LINE   # the legend wraps to the sheet's width

    captions = [sheet[H:tile_h, i * (W + GAP):i * (W + GAP) + W] for i in range(3)]
    for caption in captions:
        assert (caption.min(axis=2) < 100).sum() > 30          # dark text under every tile
    assert not np.array_equal(captions[0], captions[1])        # identical crops, different names
    # the template's eye row is dotted green; the fallback tile (the third) has a red frame, the others none
    eye_row = round(reference_landmarks((H, W))[:2, 1].mean())
    assert (sheet[eye_row, 0:W:2] == (0, 255, 0)).all()
    red = lambda tile: ((tile[..., 2] > 200) & (tile[..., 0] < 50) & (tile[..., 1] < 50)).sum()
    assert red(sheet[:H, 2 * (W + GAP):2 * (W + GAP) + W]) > 2 * (H + W) and red(sheet[:H, :W]) == 0
    foot = sheet[tile_h + GAP:]
    assert ((foot[..., 1] > 100) & (foot[..., 0] < 80) & (foot[..., 2] < 80)).sum() > 50   # the green line's legend
    assert red(foot) > 50                                                                # the red frame's legend
    texts = " ".join(text for text, _ in legend)
    assert "eyes" in texts and "mouth" in texts and "fallback" in texts and "3 of 3" in texts


def test_long_and_non_ascii_names_stay_inside_their_tile(tmp_path):
    names = ["Abdullah_Ahmad_Badawi_the_Long/Abdullah_Ahmad_Badawi_the_Long_0123.jpg", "Zoë/Zoë_0001.jpg"]
    records = _records(tmp_path, names)
    sheet = cv2.imread(write_contact_sheet(records, tmp_path, tmp_path / "s.png", reference_landmarks((H, W))))
    for x in (0, W + GAP):
        caption = sheet[H:H + 2 * LINE, x:x + W]
        assert (caption[:, -1] == 255).all()                   # cut to fit ('..'), not clipped at the edge
        assert (caption.min(axis=2) < 100).sum() > 30
