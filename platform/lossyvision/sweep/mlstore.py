"""Where a sweep's MLflow store and artifacts live on disk: absolute SQLite URIs, the artifacts folder beside a
SQLite store, and re-pointing a copied or moved output's own SQLite store at its artifacts (raw SQL on
MLflow's schema, no mlflow import)."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from lossyvision.store import is_remote

log = logging.getLogger(__name__)

ARTIFACTS_DIR = "mlartifacts"
#: Columns of MLflow's SQL store that hold artifact URIs (MLflow 3: runs, logged models, registry).
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "source"),
                    ("model_versions", "storage_location"))


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///runs/x.db`` -> ``sqlite:////abs/runs/x.db``: trials run in other folders."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri


def default_artifact_location(tracking_uri: str, output: str) -> str | None:
    """Artifacts next to a SQLite store (MLflow would use ./mlruns); a server keeps its own."""
    if tracking_uri.startswith(("http://", "https://", "databricks")) or is_remote(str(output)):
        return None
    return Path(output).resolve().joinpath(ARTIFACTS_DIR).as_uri()


def relocate_artifacts(tracking_uri: str, output: str) -> int:
    """Point a copied or moved output's own SQLite store at the artifacts that moved with it.

    MLflow records absolute ``file://`` artifact URIs. An output copied elsewhere (``cp -r``, a sync
    to S3 and back) keeps them, so a run on the copy would write into the original's
    ``mlartifacts``. Only a database *inside* OUTPUT is touched: it belongs to this output. Returns
    how many URIs were rewritten (0 when nothing moved). MLflow has no API for this; the columns are
    those of its SQL schema (:data:`ARTIFACT_COLUMNS`), stable since MLflow 1, and a missing one is
    skipped.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or is_remote(str(output)):
        return 0
    db = Path(tracking_uri[len(prefix):])
    out = Path(output).resolve()
    if not db.exists() or out not in db.resolve().parents:
        return 0
    new = default_artifact_location(tracking_uri, str(out))
    changed = 0
    with sqlite3.connect(str(db)) as con:
        try:
            olds = {row[0] for row in con.execute("SELECT artifact_location FROM experiments")}
        except sqlite3.Error:
            return 0
        for old in olds:
            if not old or not old.endswith("/" + ARTIFACTS_DIR) or old == new:
                continue
            for table, column in ARTIFACT_COLUMNS:
                try:
                    cur = con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                      f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
                    changed += cur.rowcount
                except sqlite3.OperationalError:  # a table or column this MLflow version lacks
                    continue
    if changed:
        log.info("MLflow artifacts of %s now point at %s (the output was copied or moved)", db, new)
    return changed
