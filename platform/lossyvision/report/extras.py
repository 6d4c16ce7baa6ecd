"""The report's optional sections, drawn when an output has their data: storage budgets (a budget sweep's figures,
scaling-law fit and advice) and DCT-frequency sensitivity maps (``lossyvision sensitivity``'s files)."""

from __future__ import annotations

import html
from typing import Any

from lossyvision import store
from lossyvision.advisor import advise_output, format_report
from lossyvision.output import OutputFolder
from lossyvision.report.budget import budget_figure_pngs
from lossyvision.report.html import Figure, Section, slug


def budget_sections(output: str, writer: Any, warnings: list[str]) -> list[Section]:
    """Storage-budget sweeps (#6): accuracy by level and by budget, the fitted scaling law, the advice."""
    if not OutputFolder(output).has_results():
        return []
    results, _ = OutputFolder(output).current_results()
    if "budget" not in results.columns or not (results["budget"] >= 0).any():
        return []
    section = Section("Storage budgets", text=(
        "Each trial trained on the largest class-balanced subset whose compressed bytes fit its budget. "
        "The fit is Err(n, L) = Err* + A·n^-α + B·L^-β (n images, L bytes per image) with 95% bootstrap "
        "intervals; iso-budget curves are drawn over the observed range only."))
    try:
        for name, png in budget_figure_pngs(results):
            section.figures.append(writer.figure(Figure(name, png, name[:-4])))
    except Exception as e:  # noqa: BLE001 - a failed fit must not sink the report
        warnings.append(f"budget figures: {type(e).__name__}: {e}")
    try:
        advice = advise_output(output, write=True)
        section.tables_html.append(f"<pre>{html.escape(format_report(advice))}</pre>")
        writer.tables.append(OutputFolder(output).scaling_fit)
    except Exception as e:  # noqa: BLE001 - too few points etc.: say so, keep the figures
        section.text += f"\n\nNo scaling-law advice: {e}"
    return [section] if section.figures or section.tables_html else []


def sensitivity_sections(output: str, writer: Any, warnings: list[str]) -> list[Section]:
    from lossyvision.sensitivity import SensitivityResult, plot_sensitivity_maps  # lazy: loads torch

    folder = OutputFolder(output).sensitivity_dir
    if not store.exists(folder):
        return []
    fs, path = store.filesystem(folder)
    files = sorted(fs.glob(path.rstrip("/") + "/*"))
    section = Section("DCT-frequency sensitivity", text=(
        "Δ[i, j]: mean absolute change of the predicted class probabilities per unit change of DCT coefficient (i, j) "
        "of one 8x8 block (JPEG's full-range BT.601 YCbCr, orthonormal DCT-II), averaged over blocks and images; "
        "one shared colour scale for Y, Cb and Cr. The basis illustrations add each frequency to every block."))
    for f in files:
        name = f.rsplit("/", 1)[-1]
        uri = store.join(folder, name)
        if name.endswith(".npz"):
            try:
                res = SensitivityResult.from_npz_bytes(store.read_bytes(uri))
                png = plot_sensitivity_maps(res)
            except Exception as e:  # noqa: BLE001 - one bad file must not sink the report
                warnings.append(f"{name}: {type(e).__name__}: {e}")
                continue
            fig = Figure(f"sensitivity-{slug(name[:-4])}.png", png, f"{name[:-4]}: {res.describe()}")
            section.figures.append(writer.figure(fig))
        elif name.endswith(".png") and "basis" in name:
            section.figures.append(writer.figure(Figure(f"sensitivity-{slug(name)}", store.read_bytes(uri),
                                                         name[:-4])))
    return [section] if section.figures else []
