"""What a compress job reports: the per-level summary (``summary.csv`` and its table on screen), and the lines
about the files it did not read (``skipped.csv``) and the images it could not compress."""

from __future__ import annotations

import re
from typing import Any, Sequence

import pandas as pd

from lossyvision import manifest, store
from lossyvision.datasets._files import UNSUPPORTED, extension
from lossyvision.units import format_bytes


# --- the per-level summary ---------------------------------------------------------------------
SUMMARY_COLUMNS = ("codec", "level", "images_ok", "images_failed", "dcr_vs_source_mean",
                   "dcr_vs_source_median", "dcr_vs_raw_mean", "dcr_vs_raw_median", "source_bytes",
                   "raw_bytes", "compressed_bytes", "quality_mean", "quality_metric")


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (codec, level), plus the PNG baseline (``codec='png'``, level empty).

    DCR means/medians are over ``ok`` images; byte totals are sums over ``ok`` images.
    """
    rows = rows.reindex(columns=list(manifest.COLUMNS))
    out = []
    for (codec, level), g in rows.groupby(["codec", "level"], sort=True):
        ok = g[g["status"] == manifest.STATUS_OK]
        q = ok["quality"].dropna()
        out.append({
            "codec": codec, "level": float(level), "images_ok": len(ok), "images_failed": len(g) - len(ok),
            "dcr_vs_source_mean": ok["dcr_vs_source"].mean(), "dcr_vs_source_median": ok["dcr_vs_source"].median(),
            "dcr_vs_raw_mean": ok["dcr_vs_raw"].mean(), "dcr_vs_raw_median": ok["dcr_vs_raw"].median(),
            "source_bytes": int(ok["source_bytes"].sum()), "raw_bytes": int(ok["raw_bytes"].sum()),
            "compressed_bytes": int(ok["compressed_bytes"].sum()),
            "quality_mean": q.mean() if len(q) else float("nan"),
            "quality_metric": ok["quality_metric"].dropna().iloc[0] if len(q) else None,
        })
    png = rows.dropna(subset=["png_bytes"]).drop_duplicates("relpath")
    if len(png):
        src = png["source_bytes"].astype(float)
        raw = png["raw_bytes"].astype(float)
        pb = png["png_bytes"].astype(float)
        out.append({
            "codec": "png", "level": float("nan"), "images_ok": len(png), "images_failed": 0,
            "dcr_vs_source_mean": (1 - pb / src).mean(), "dcr_vs_source_median": (1 - pb / src).median(),
            "dcr_vs_raw_mean": (1 - pb / raw).mean(), "dcr_vs_raw_median": (1 - pb / raw).median(),
            "source_bytes": int(src.sum()), "raw_bytes": int(raw.sum()), "compressed_bytes": int(pb.sum()),
            "quality_mean": float("nan"), "quality_metric": None,
        })
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def write_summary(store_uri: str, table: pd.DataFrame) -> None:
    store.atomic_write_bytes(store.join(store_uri, store.SUMMARY_NAME), table.to_csv(index=False).encode())


def render_summary(table: pd.DataFrame, title: str | None = None):
    """The summary as a rich Table (printed by the CLI): DCR mean/median against source and raw."""
    from rich import box
    from rich.table import Table

    t = Table(title=title or "DCR per level (1 - compressed/source, 1 - compressed/raw)",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("level", "ok", "failed", "src mean", "src med", "raw mean", "raw med", "bytes",
                 "quality"):
        t.add_column(name, justify="left" if name == "level" else "right", no_wrap=True)

    def f(x: float) -> str:
        return "-" if pd.isna(x) else f"{x:.3f}"

    for r in table.to_dict("records"):
        level = r["codec"] if pd.isna(r["level"]) else f"{r['codec']} {store.format_level(r['level'])}"
        quality = "-" if pd.isna(r["quality_mean"]) else f"{r['quality_mean']:.1f}"
        t.add_row(level, str(r["images_ok"]), str(r["images_failed"]),
                  f(r["dcr_vs_source_mean"]), f(r["dcr_vs_source_median"]), f(r["dcr_vs_raw_mean"]),
                  f(r["dcr_vs_raw_median"]), format_bytes(r["compressed_bytes"]), quality)
    metrics = sorted(set(table["quality_metric"].dropna()))
    t.caption = "png: lossless PNG baseline of the same pixels"
    if metrics:
        t.caption += f"; quality: mean {', '.join(metrics)} on the sampled images"
    return t


# --- what was not done -----------------------------------------------------------------------
SKIPPED_NAME = "skipped.csv"


def describe_not_read(not_read: Sequence[Any], store_uri: str | None = None) -> list[str]:
    """Lines for the files a job did not read: counts per reason, unsupported types per extension."""
    if not not_read:
        return []
    kinds: dict[str, int] = {}
    exts: dict[str, int] = {}
    for s in not_read:
        if s.kind == UNSUPPORTED:
            exts[extension(s.relpath)] = exts.get(extension(s.relpath), 0) + 1
        else:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
    where = f" (each with its reason in {store.join(store_uri, SKIPPED_NAME)})" if store_uri else ""
    lines = []
    if kinds:
        lines.append(f"not read: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}{where}")
    if exts:
        lines.append("files of unsupported types, not compressed: "
                     + ", ".join(f"{e} {n}" for e, n in sorted(exts.items(), key=lambda t: (-t[1], t[0])))
                     + ("" if kinds else where))
    return lines


def describe_failures(rows: pd.DataFrame, store_uri: str | None = None, *, kinds: int = 5,
                      examples: int = 3) -> list[str]:
    """Lines for the images a job could not compress: how many, grouped by reason, with examples.

    The table's ``failed`` column says how many; these say why, without opening the manifest
    (where every failed row keeps its full reason). Reasons are grouped by their kind: the text
    before the first ``:``, numbers blanked (``too large to decode in memory: 9000x9000`` and
    ``...: 8000x8000`` are one kind).
    """
    failed = rows[rows["status"] == manifest.STATUS_FAILED] if len(rows) else rows
    if not len(failed):
        return []
    kind = failed["error"].fillna("no reason recorded").map(_failure_kind)
    images = failed["relpath"].nunique()
    lines = [f"failed: {images} image{'s' if images != 1 else ''} "
             f"({len(failed)} of {len(rows)} image x level pairs), by reason:"]
    groups = sorted(failed.groupby(kind, sort=False), key=lambda kv: (-kv[1]["relpath"].nunique(), kv[0]))
    for name, group in groups[:kinds]:
        paths = group["relpath"].drop_duplicates()
        shown = ", ".join(paths.head(examples)) + (", ..." if len(paths) > examples else "")
        lines.append(f"  {len(paths)} {name}: {shown}")
    if len(groups) > kinds:
        lines.append(f"  and {len(groups) - kinds} other reason(s)")
    where = store.join(store_uri, store.MANIFEST_NAME) if store_uri else "the manifest"
    lines.append(f"each failed row keeps its full reason in {where} (column 'error'); "
                 "rerunning the command retries them")
    return lines


def _failure_kind(reason: str) -> str:
    head = str(reason).split(":", 1)[0].strip() or str(reason)
    return re.sub(r"\d+", "N", head)


def write_not_read(store_uri: str, not_read: Sequence[Any]) -> None:
    table = pd.DataFrame([{"relpath": s.relpath, "kind": s.kind, "reason": s.reason} for s in not_read],
                         columns=["relpath", "kind", "reason"])
    store.atomic_write_bytes(store.join(store_uri, SKIPPED_NAME), table.to_csv(index=False).encode())
