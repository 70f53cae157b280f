"""The evaluation plots: a long title (a model path) is wrapped, never cut off at the figure's edge."""

import numpy as np
import pytest

from evaluation.metrics import squared_distances, verification_metrics
from evaluation.report import fit_title, roc_figure, similarity_figure

LONG = "/home/someone/experiments/face/data/view1_heads_300/runs/elasticface_cos_plus/model.keras on pairsDevTest.txt"


def test_fit_title_breaks_at_spaces_and_slashes_and_keeps_every_character():
    wrapped = fit_title(LONG, width=40)
    lines = wrapped.split("\n")
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)
    assert "".join(lines).replace(" ", "") == LONG.replace(" ", "")
    assert all(line.endswith("/") or " " in line or line == lines[-1] for line in lines)  # no path cut mid-name
    assert fit_title("short title") == "short title"
    assert fit_title("x" * 100, width=40).split("\n") == ["x" * 40, "x" * 40, "x" * 20]


def _inside(fig, artist):
    fig.canvas.draw()
    box, page = artist.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return box.x0 >= page.x0 - 0.5 and box.x1 <= page.x1 + 0.5 and box.y1 <= page.y1 + 0.5


@pytest.mark.parametrize("draw", [roc_figure, similarity_figure])
def test_plot_titles_fit_inside_the_figure(draw):
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(0)
    issame = np.arange(200) % 2 == 0
    emb_a = rng.normal(size=(200, 8))
    emb_b = np.where(issame[:, None], emb_a + 0.5 * rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
    result = verification_metrics(emb_a, emb_b, issame, np.arange(200) // 20)
    dist = squared_distances(emb_a, emb_b)
    values = dist if draw is roc_figure else 1.0 - dist / 2.0
    fig = draw(result, values, issame, LONG)
    try:
        assert "\n" in fig.axes[0].title.get_text()
        assert _inside(fig, fig.axes[0].title)
        fig.axes[0].set_title(LONG, fontsize=9)   # the unwrapped title would not fit: the check can fail
        assert not _inside(fig, fig.axes[0].title)
    finally:
        plt.close(fig)
