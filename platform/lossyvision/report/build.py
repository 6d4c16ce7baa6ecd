"""``lossyvision report OUTPUT``: every figure and table of a sweep's output in one HTML page.

The page states its answer first: one verdict per model and metric (:mod:`lossyvision.report.verdict`)
with its 95 % bound, or why the data cannot say. Then it draws what is there and skips what is
not: ``OUTPUT/results.parquet`` (heatmaps, cells, advice; only the rows of the configuration in
``OUTPUT/plan.json``, never an edited sweep's stale ones), the per-image outcomes in
``OUTPUT/predictions`` (the bootstrap intervals), the store's ``manifest.parquet`` (DCR curve,
visual samples), ``OUTPUT/sensitivity/*.npz`` and ``*basis*.png`` (sensitivity maps). Writes
``OUTPUT/report/index.html`` (self-contained), every figure as a PNG next to it, and
``advice.csv``/``cells.csv``/``verdict.csv``. All writes are atomic; works on local folders and
fsspec URIs. MLflow logging is the caller's: :class:`ReportResult` lists the files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lossyvision import store
from lossyvision.codecs import DEFAULT_CODEC, create_codec
from lossyvision.output import REPORT_DIR, RESULTS_NAME, SWEEP_COPY, OutputError, OutputFolder
from lossyvision.report.advice import advice_html, advice_table, cells_html
from lossyvision.report.cells import PredictionsCache, ReportError, cell_table, relative_cells
from lossyvision.report.curves import dcr_by_level, plot_dcr_curve
from lossyvision.report.searchpath import search_sections, with_search
from lossyvision.report.heatmap import heatmap_groups, plot_relative_heatmap
from lossyvision.report.extras import budget_sections, sensitivity_sections
from lossyvision.report.html import Figure, Section, render_html, slug
from lossyvision.report.rate import bd_table, describe_bd, plot_rate_accuracy, rate_points
from lossyvision.report.samples import plot_samples
from lossyvision.report.verdict import decisions, verdict_lines, verdict_records, verdicts
from lossyvision.seeding import bootstrap_seed
from lossyvision.store import DamagedFileError
from lossyvision.sweep.searchgrid import read_search
from lossyvision.spec import ReportSpec, Sweep
from lossyvision.sweep.plan import bits_per_pixel, ok_rows
from lossyvision.sweep.results import ResultsError

__all__ = ["REPORT_DIR", "Analysis", "ReportResult", "SweepInfo", "analyse", "build_report", "current_results",
           "read_sweep_info", "write_verdict_json"]  # REPORT_DIR: OutputFolder's, named here for sweep.run
INDEX_NAME = "index.html"


@dataclass
class ReportResult:
    """Where the report went: ``index_html`` and every file written (figures first)."""

    index_html: str
    figures: list[str] = field(default_factory=list)     # PNG paths/URIs under OUTPUT/report/
    tables: list[str] = field(default_factory=list)      # CSV paths/URIs under OUTPUT/report/
    warnings: list[str] = field(default_factory=list)    # parts that could not be drawn, and why
    verdict: list[str] = field(default_factory=list)     # the answer, as plain-text lines
    verdicts: list[Any] = field(default_factory=list)    # the same as Verdict objects (every metric)

    def __str__(self) -> str:
        return self.index_html

    @property
    def paths(self) -> list[str]:
        """Every file written, for logging as artifacts."""
        return [self.index_html, *self.figures, *self.tables]


@dataclass
class SweepInfo:
    """The few facts the report needs from ``OUTPUT/sweep.yaml``; where it has none, the schema's defaults
    (:class:`lossyvision.spec.ReportSpec`, :data:`lossyvision.codecs.DEFAULT_CODEC`)."""

    name: str
    store_uri: str
    codec: str                                  # the first codec (visual samples)
    test_split: str
    test_levels: list[float] | None             # the first codec's
    seed: int
    keep: float
    confidence: float
    resamples: int
    axis: str
    codecs: list[str]
    originals: tuple[str, float] | None         # the codec and level of the models "trained on the originals"

    @classmethod
    def of(cls, sweep: Sweep) -> "SweepInfo":
        arms, originals = sweep.arms, sweep.originals_arm
        return cls(name=sweep.name, store_uri=sweep.store_uri, codec=arms[0].name, test_split=sweep.test_split,
                   test_levels=list(arms[0].test_levels), seed=sweep.seed, keep=sweep.report.keep,
                   confidence=sweep.report.confidence, resamples=sweep.report.resamples, axis=sweep.report.axis,
                   codecs=[a.name for a in arms],
                   originals=(originals.name, float(originals.codec.lossless_level)) if originals else None)

    @classmethod
    def defaults(cls, folder: OutputFolder) -> "SweepInfo":
        """An output without a sweep copy: the schema's defaults."""
        report, fields = ReportSpec(), Sweep.model_fields
        return cls(name="sweep", store_uri=folder.default_store, codec=DEFAULT_CODEC,
                   test_split=fields["test_split"].default, test_levels=None, seed=fields["seed"].default,
                   keep=report.keep, confidence=report.confidence, resamples=report.resamples, axis=report.axis,
                   codecs=[DEFAULT_CODEC], originals=None)


def _read_parquet(uri: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(store.read_bytes(uri))).to_pandas()


def read_sweep_info(output: str) -> SweepInfo:
    """Facts from the sweep copy in OUTPUT (:meth:`OutputFolder.sweep`: parsing reads nothing but the copy,
    so the report is drawn where the dataset and the store are gone)."""
    folder = OutputFolder(output)
    return SweepInfo.of(folder.sweep(check_format=False)) if folder.has_sweep() else SweepInfo.defaults(folder)


class _Writer:
    """Writes the report's files atomically and remembers them."""

    def __init__(self, output: str) -> None:
        self.dir = OutputFolder(output).report_dir
        self.figures: list[str] = []
        self.tables: list[str] = []

    def figure(self, fig: Figure) -> Figure:
        uri = store.join(self.dir, fig.name)
        store.atomic_write_bytes(uri, fig.png)
        self.figures.append(uri)
        return fig

    def table(self, name: str, df: pd.DataFrame) -> None:
        uri = store.join(self.dir, name)
        store.atomic_write_bytes(uri, df.to_csv(index=False).encode("utf-8"))
        self.tables.append(uri)


def current_results(output: str) -> tuple[pd.DataFrame, int]:
    """The results rows of the configuration in ``plan.json`` and how many stale rows were left out."""
    try:
        return OutputFolder(output).current_results()
    except (ResultsError, OutputError) as e:
        if isinstance(e, DamagedFileError):  # exits 1, as every damaged file does
            raise
        raise ReportError(str(e)) from None


@dataclass
class Analysis:
    """The numbers behind the report: relative cells with their intervals, and the verdicts."""

    rel: pd.DataFrame
    verdicts: list[Any]
    keep: float
    notes: list[str] = field(default_factory=list)   # why something is missing or left out

    @property
    def lines(self) -> list[str]:
        return verdict_lines(self.verdicts)


def analyse(output: str, keep_fraction: float | None = None, info: SweepInfo | None = None) -> Analysis:
    """Cells, paired relative values and verdicts of the current configuration's results; writes nothing."""
    output = str(output)
    info = info or read_sweep_info(output)
    keep = info.keep if keep_fraction is None else keep_fraction
    notes: list[str] = []
    empty = Analysis(pd.DataFrame(), [], keep, notes)
    if not OutputFolder(output).has_results():
        notes.append(f"No results yet ({RESULTS_NAME} is absent).")
        return empty
    results, stale = current_results(output)
    if stale:
        notes.append(f"{stale} result row(s) of an earlier configuration of this sweep are stale: kept in "
                     f"{RESULTS_NAME}, left out of this report (`lossyvision sweep status` lists them).")
    source = PredictionsCache(output)
    missing: list[str] = []

    def seed_of(model: str) -> int:
        return bootstrap_seed(info.seed, model)

    stats = dict(confidence=info.confidence, resamples=info.resamples, seed_of=seed_of)
    cells = cell_table(results, source, missing=missing, **stats)
    if missing:
        notes.append(f"{len(missing)} cell(s) have no predictions file (e.g. {missing[0]}): their intervals are "
                     "t-intervals over repeats, not bootstrap intervals")
    if cells.empty:
        notes.append("The results table has no finite values yet.")
        return empty
    rel = relative_cells(cells, skipped=notes, outcomes=source, **stats)
    if rel.empty:
        notes.append("No group has a non-zero baseline value.")
        return empty
    found = verdicts(rel, keep, headline_only=False, order=info.codecs, confidence=info.confidence)
    return Analysis(rel, with_search(found, read_search(output), rel), keep, notes)


def _results_sections(output: str, writer: _Writer, info: SweepInfo, keep_fraction: float,
                      warnings: list[str]) -> tuple[list[Section], list[Section], Analysis]:
    """(verdict sections, result sections, the analysis)."""
    result = analyse(output, keep_fraction, info)
    warnings.extend(result.notes)
    rel, found = result.rel, result.verdicts
    if rel.empty:
        return [], [Section("Relative performance", text=result.notes[-1] if result.notes else "No results.")], result
    verdict_sections = []
    if found:
        writer.table("verdict.csv", pd.DataFrame([{k: v for k, v in x.__dict__.items() if k != "levels"}
                                                  for x in found]))
        write_verdict_json(output, found)
        writer.tables.append(OutputFolder(output).verdict)
        spreads = sorted({str(s) for s in rel.get("spread", pd.Series(dtype=str)).dropna() if s})
        verdict_sections.append(Section(
            "Verdict", text=(f"Keep threshold {100 * keep_fraction:g}% of the baseline; "
                             f"{100 * info.confidence:g}% intervals. Claims about models trained at a level "
                             "(store everything, store training data) add the spread between training runs to the "
                             "test images' paired bootstrap interval, with a t quantile; the model trained at the "
                             "baseline's level (serve compressed test data) is judged on its test images. "
                             + (f"Spread: {'; '.join(spreads)}." if spreads else "")),
            tables_html=[decisions_html(found), verdict_html(found)]))
    heat = Section("Relative performance", text=(
        "Each circle is an observed (train level, test level) cell of one codec: its value as a percentage of the "
        "codec's baseline cell (trained and tested at its most faithful levels: JPEG XL distance 0, a quality "
        "codec's highest quality; named in each title), averaged over repeats, "
        f"with its {100 * info.confidence:g}% interval (a bootstrap over the test images, paired with the baseline on "
        "the same resampled images; for models trained away from the baseline's level, widened by the spread "
        "between training runs). Pale dashed circles: the interval contains 100%, so the "
        "drop cannot be told from zero. The colour scale is symmetric around 100%. The faded background is a 2-D "
        "linear interpolation between the circles (scipy griddata, method 'linear'), never measured. Axes: mean DCR "
        "against the original files; "
        "the levels (distances) are marked on the top and right."))
    groups = heatmap_groups(rel)
    several = len({g[3] for g in groups}) > 1
    for model, metric, budget, codec in groups:
        name = (f"heatmap-{slug(model)}-{slug(metric)}" + (f"-{slug(codec)}" if several else "")
                + (f"-budget{budget}" if budget >= 0 else "") + ".png")
        try:
            png = plot_relative_heatmap(rel, model=model, metric=metric, budget=budget, codec=codec, axis=info.axis)
        except (ValueError, ReportError) as e:
            warnings.append(f"{name}: {e}")
            continue
        heat.figures.append(writer.figure(Figure(name, png, f"{model}: {metric} on {codec}, relative to the baseline")))
    advice = advice_table(rel, keep_fraction)
    writer.table("advice.csv", advice)
    writer.table("cells.csv", rel.drop(columns=["cell_ids"], errors="ignore"))
    adv = Section(f"Compression advice (keep ≥ {100 * keep_fraction:g}% of the baseline)", text=(
        "For each model, metric and test level: the largest train DCR whose cell keeps at least "
        f"{100 * keep_fraction:g}% of the baseline, judged on the lower end of the cell's 95% interval (paired with "
        "the baseline), not on the mean."), tables_html=[advice_html(advice, keep_fraction)])
    table = Section("All cells", text="Mean over repeats with its 95% interval, absolute and relative to the baseline.",
                    tables_html=[cells_html(rel)])
    return verdict_sections, [heat, adv, table], result


def _codec_sections(output: str, rel: pd.DataFrame, writer: _Writer, info: SweepInfo,
                    warnings: list[str]) -> list[Section]:
    """Several codecs: accuracy against bits per pixel, and the bytes each saves at equal accuracy."""
    if len(info.codecs) < 2:
        return []
    points = rate_points(rel, info.originals)
    if points.empty:
        return [Section("Codecs: accuracy against bits per pixel", text="No cells with bits per pixel yet.")]
    section = Section("Codecs: accuracy against bits per pixel", text=(
        "Left: models trained and tested at the same level of each codec (store everything at it). Right: the model "
        "trained on the originals (" + (f"{info.originals[0]} level {info.originals[1]:g}" if info.originals else
                                        "none in this sweep") + ") served each codec's test images. x: mean bits per "
        "pixel of the test images at the level (log scale); error bars: 95% intervals. The table compares each codec "
        f"with {info.codecs[0]}: the mean change in bits per pixel at equal accuracy over the accuracy range both "
        "reach (a Bjøntegaard delta, pchip), with a bootstrap interval over the test images (repeat 0)."))
    for model, metric in points[["model", "metric"]].drop_duplicates().itertuples(index=False):
        name = f"rate-{slug(model)}-{slug(metric)}.png"
        try:
            png = plot_rate_accuracy(points, model, metric)
        except (ValueError, KeyError) as e:
            warnings.append(f"{name}: {e}")
            continue
        section.figures.append(writer.figure(Figure(name, png, f"{model}: {metric} against bits per pixel")))
    manifest = _manifest_or_none(info)
    if manifest is None:
        warnings.append("bytes at equal accuracy: no store manifest to read the images' bits per pixel from")
        return [section]
    def bpp_of(codec: str, level: float) -> dict[str, float]:
        rows = ok_rows(manifest, info.test_split, level, codec)
        return dict(zip(rows["relpath"].astype(str), bits_per_pixel(rows).astype(float)))

    try:
        table = bd_table(points, PredictionsCache(output), bpp_of, confidence=info.confidence,
                         resamples=min(info.resamples, 1000), seed_of=lambda m: bootstrap_seed(info.seed, m),
                         order=info.codecs)
    except (KeyError, OSError, ValueError) as e:
        warnings.append(f"bytes at equal accuracy: {type(e).__name__}: {e}")
        return [section]
    if not table.empty:
        writer.table("bd_rate.csv", table)
        from html import escape

        body = "".join(f"<tr><td>{escape(r.model)}</td><td>{escape(r.metric)}</td><td>{escape(r.curve)}</td>"
                       f"<td>{escape(describe_bd(r))}</td></tr>" for r in table.itertuples(index=False))
        section.tables_html.append('<table class="bd"><tr><th>model</th><th>metric</th><th>curve</th>'
                                   f"<th>bytes at equal accuracy</th></tr>{body}</table>")
    return [section]


def _manifest_or_none(info: SweepInfo) -> pd.DataFrame | None:
    uri = store.join(info.store_uri or "", store.MANIFEST_NAME)
    if not info.store_uri or not store.exists(uri):
        return None
    try:
        return _read_parquet(uri)
    except Exception:  # noqa: BLE001 - a damaged manifest: the figures still draw
        return None


def write_verdict_json(output: str, found: list) -> str:
    """``OUTPUT/verdict.json`` (atomically): what ``lossyvision advise OUTPUT --json`` prints."""
    folder = OutputFolder(output)
    return folder.write_json(folder.verdict, verdict_records(found), indent=1)


def decisions_html(found: list) -> str:
    """One decision per model, above the table of questions."""
    from html import escape

    return "".join(f'<p class="decision"><strong>{escape(line)}</strong></p>' for line in decisions(found))


def verdict_html(found: list) -> str:
    """The verdicts as a table: one row per model, metric and question (escaped)."""
    from html import escape

    head = "<tr><th>model</th><th>metric</th><th>question</th><th>answer</th></tr>"
    body = "".join(
        f"<tr><td>{escape(v.model)}</td><td>{escape(v.metric)}</td><td>{escape(v.question)}</td>"
        f'<td class="verdict">{escape(v.text)}</td></tr>' for v in found)
    return f'<table class="verdict">{head}{body}</table>'


def _store_sections(info: SweepInfo, writer: _Writer, warnings: list[str], sample_levels: list[float] | None,
                    n_samples: int) -> list[Section]:
    if not info.store_uri:
        return []
    uri = store.join(info.store_uri, store.MANIFEST_NAME)
    if not store.exists(uri):
        return [Section("Data compression rate", text=f"No manifest found at {uri}.")]
    manifest = _read_parquet(uri)
    sections = []
    curve = Section("Data compression rate", text=(
        "DCR = 1 − compressed size / uncompressed size, per level: against the original files (left axis) and "
        "against raw 8-bit pixels (right axis); shaded bands are the quartiles across images; the dashed line is "
        "lossless PNG of the same pixels against raw pixels."))
    try:
        table = dcr_by_level(manifest)
        if len(table):
            curve.figures.append(writer.figure(Figure("dcr-curve.png", plot_dcr_curve(table, codec=info.codec),
                                                      "Mean DCR by level")))
            curve.tables_html.append(_dcr_table_html(table))
        else:
            curve.text += "\n\nNo compressed images in the manifest yet."
    except ValueError as e:
        warnings.append(f"dcr-curve.png: {e}")
    sections.append(curve)
    samples = Section("Visual samples", text="The same centre crop of each image at several levels.")
    try:
        codec = create_codec(info.codec)
        png = plot_samples(manifest, info.store_uri, codec.decode, levels=sample_levels, n_images=n_samples,
                           split=info.test_split, codec=info.codec)
        if png is not None:
            samples.figures.append(writer.figure(Figure("samples.png", png, "Crops at several levels")))
        else:
            samples.text += "\n\nNo image is available at every chosen level."
    except Exception as e:  # noqa: BLE001 - a missing codec or file must not sink the whole report
        warnings.append(f"samples.png: {type(e).__name__}: {e}")
        samples.text += f"\n\nCould not draw samples: {e}"
    sections.append(samples)
    return sections


def _dcr_table_html(table: pd.DataFrame) -> str:
    head = ("<tr><th>level</th><th>images</th><th>mean DCR vs original</th><th>quartiles</th>"
            "<th>mean DCR vs raw</th><th>quartiles</th></tr>")
    body = "".join(
        f"<tr><td>{r.level:g}</td><td>{r.images}</td><td>{r.dcr_vs_source_mean:.3f}</td>"
        f"<td>{r.dcr_vs_source_q25:.3f} – {r.dcr_vs_source_q75:.3f}</td><td>{r.dcr_vs_raw_mean:.3f}</td>"
        f"<td>{r.dcr_vs_raw_q25:.3f} – {r.dcr_vs_raw_q75:.3f}</td></tr>" for r in table.itertuples(index=False))
    png = table["png_dcr_vs_raw"].iloc[0]
    sampled = int(table["png_images"].iloc[0]) if "png_images" in table else ""
    foot = (f'<tr><td>PNG lossless</td><td>{sampled}</td><td>{table["png_dcr_vs_source"].iloc[0]:.3f}</td><td></td>'
            f"<td>{png:.3f}</td><td></td></tr>") if pd.notna(png) else ""
    return f'<table class="dcr">{head}{body}{foot}</table>'


def build_report(output: str, *, keep_fraction: float | None = None, sample_levels: list[float] | None = None,
                 n_samples: int = 2) -> ReportResult:
    """Draw every figure and table that ``output`` has data for and write ``OUTPUT/report/index.html``.

    ``keep_fraction`` defaults to the sweep's ``report.keep`` (0.99).
    """
    output = str(output)
    folder = OutputFolder(output)
    if not folder.exists():
        raise ReportError(f"{output} does not exist")
    if not folder.is_sweep_output():  # a dataset folder, a typo: write nothing into it
        raise ReportError(f"{output} is not the output folder of a sweep (no {SWEEP_COPY}); give the folder "
                          "`lossyvision sweep run` wrote")
    info = read_sweep_info(output)
    keep_fraction = info.keep if keep_fraction is None else keep_fraction
    if not 0 < keep_fraction <= 1.5:
        raise ReportError(f"keep fraction must be in (0, 1.5], e.g. 0.99; got {keep_fraction}")
    writer = _Writer(output)
    warnings: list[str] = []
    verdict_sections, result_sections, analysis = _results_sections(output, writer, info, keep_fraction, warnings)
    sections = search_sections(output) + verdict_sections  # a search's answer (on fresh seeds) comes first
    sections += _codec_sections(output, analysis.rel, writer, info, warnings) + result_sections
    sections += budget_sections(output, writer, warnings)
    sections += _store_sections(info, writer, warnings, sample_levels, n_samples)
    sections += sensitivity_sections(output, writer, warnings)
    if warnings:
        sections.append(Section("Warnings", text="\n\n".join(warnings)))
    html = render_html(f"lossyvision report: {info.name}", sections,
                       subtitle=f"Output {output}; codec{'s' if len(info.codecs) > 1 else ''} {', '.join(info.codecs)}; "
                                f"keep threshold {100 * keep_fraction:g}%.")
    index = store.join(writer.dir, INDEX_NAME)
    store.atomic_write_bytes(index, html.encode("utf-8"))
    return ReportResult(index_html=index, figures=writer.figures, tables=writer.tables, warnings=warnings,
                        verdict=analysis.lines, verdicts=list(analysis.verdicts))
