"""The heatmap reads at page width: one unit (percent), measured cells apart from the faded
interpolation, the legend off the data, and a line under the DCR axis when a DCR is negative."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from lossyvision.report.heatmap import _as_percent, negative_dcr_note, plot_relative_heatmap


def _cells(train_dcr0: float = 0.2) -> pd.DataFrame:
    rows = []
    for tl, tdcr in ((0.0, train_dcr0), (1.0, 0.6), (3.0, 0.8)):
        for sl, sdcr in ((0.0, train_dcr0), (1.0, 0.6), (3.0, 0.8)):
            rel = 100.0 - 3 * tl - 2 * sl
            rows.append(dict(model="m", metric="top1", budget=-1, codec="jpegxl", test_codec="jpegxl",
                             train_level=tl, test_level=sl, train_dcr=tdcr, test_dcr=sdcr, n=3, rel=rel,
                             rel_low=rel - 2, rel_high=rel + 2, ci_low=0.75, ci_high=0.84, baseline=0.8,
                             baseline_train_level=0.0, baseline_test_level=0.0))
    return pd.DataFrame(rows)


def test_negative_dcr_gets_a_note_naming_its_levels():
    assert negative_dcr_note(_cells()) == ""
    note = negative_dcr_note(_cells(-0.03), "distance")
    assert note.startswith("DCR < 0 at train distance 0 and test distance 0: the compressed files are larger")


def test_the_baseline_is_in_percent_like_the_cells():
    assert _as_percent(0.7983) == "79.8 %" and _as_percent(12.5) == "12.5"


@pytest.mark.parametrize("dcr0", [0.2, -0.03])
def test_heatmap_renders_at_page_width(dcr0):
    from PIL import Image

    png = plot_relative_heatmap(_cells(dcr0), model="m", metric="top1", codec="jpegxl")
    image = Image.open(io.BytesIO(png))
    assert 900 <= image.width <= 1100  # the report's page is at most 1100 px wide: shown at 1:1
    rgb = np.asarray(image.convert("RGB"), dtype=float)
    below = rgb[int(0.9 * image.height):]  # the legend (and the note) lie under the axes
    assert (below < 128).any()
