"""Where lossyvision may write, and whether what it wrote before still reads back.

Two checks run before anything is written:

* :func:`check_place` refuses an ``output`` or ``store`` that is ``/``, a system folder (``/etc``,
  ``/usr``, the home folder itself, ...), a file, or an existing non-empty folder that lossyvision
  did not make: a folder is a sweep output when it holds ``sweep.yaml`` or a writer lock, a
  compressed store when it holds ``manifest.parquet``, ``.manifest-parts/``, ``summary.csv`` or a
  writer lock (a store-only output, left by ``compress SWEEP_FILE``, counts as an output).
* :func:`check_output_files` and :func:`check_store_files` read back the small files a command
  relies on (``OUTPUT/sweep.yaml``, ``OUTPUT/state.json``, ``STORE/manifest.parquet``) and raise
  :class:`~lossyvision.store.DamagedFileError`, one line naming the file and the way back, when
  one is truncated or not its format. Nothing is overwritten.

Remote places (``s3://...``) are not listed here: those checks need the network; only local
folders are checked.
"""

from __future__ import annotations

import json
import os

from lossyvision.store import (
    MANIFEST_NAME, SUMMARY_NAME, DamagedFileError, exists, filesystem, join, local_path, read_bytes)

LOCK_NAME = ".lossyvision.lock"
MARKER_NAME = "lossyvision-output.json"  # a sweep output's marker (its format: lossyvision.output)
SWEEP_COPY = "sweep.yaml"
STATE_NAME = "state.json"
PARTS_DIR = ".manifest-parts"
DEFAULT_STORE = "store"

#: Never written into, themselves (their subfolders may be: /tmp/x, /home/me/runs).
SYSTEM_FOLDERS = ("/", "/home", "/Users", "/root", "/tmp", "/var", "/var/tmp", "/opt", "/mnt", "/media",
                  "/srv", "/run", "/snap", "/private", "/private/tmp", "/private/var", "/Volumes")
#: Never written into, nor anywhere below them.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
                "/sys", "/usr", "/System", "/Library", "/Applications", "/private/etc")

#: The fields of a sweep copy without which it cannot be a whole one.
_REQUIRED_SWEEP_FIELDS = ("name", "dataset", "models", "output")
#: Either a single codec's ladders, or a list of codecs each with its own.
_LEVEL_FIELDS = ("train_levels", "test_levels")


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def system_folder(path: str) -> str | None:
    """The system folder ``path`` is or lies in (after resolving links), or None."""
    real = _real(path)
    home = _real("~")
    if real in SYSTEM_FOLDERS or real == home:
        return real
    for tree in SYSTEM_TREES:
        if real == tree or real.startswith(tree + "/"):
            return tree
    return None


def _visible_entries(path: str) -> list[str]:
    return sorted(e for e in os.listdir(path) if not e.startswith(".tmp-"))


def is_store_folder(path: str) -> bool:
    """Whether an existing local folder is empty or a compressed store lossyvision made."""
    entries = _visible_entries(path)
    return not entries or bool({MANIFEST_NAME, PARTS_DIR, SUMMARY_NAME, LOCK_NAME} & set(entries))


def is_output_folder(path: str) -> bool:
    """Whether an existing local folder is empty or a sweep output lossyvision made."""
    entries = _visible_entries(path)
    if not entries or {SWEEP_COPY, LOCK_NAME, MARKER_NAME} & set(entries):
        return True
    store = os.path.join(path, DEFAULT_STORE)
    return entries == [DEFAULT_STORE] and os.path.isdir(store) and is_store_folder(store)


def check_place(uri: str, kind: str) -> None:
    """Raise ``ValueError`` unless lossyvision may write ``kind`` ('output' or 'store') at ``uri``."""
    path = local_path(uri)
    if path is None:
        return
    system = system_folder(path)
    if system is not None:
        where = "is" if _real(path) == system else f"lies inside {system}, which is"
        raise ValueError(f"{uri} {where} a system folder; choose a folder of your own")
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        raise ValueError(f"{uri} exists and is not a folder")
    try:
        ours = is_output_folder(path) if kind == "output" else is_store_folder(path)
    except OSError as exc:
        raise ValueError(f"{uri} cannot be listed: {exc.strerror or exc}") from None
    if not ours:
        marker = SWEEP_COPY if kind == "output" else f"{MANIFEST_NAME} or {PARTS_DIR}/"
        raise ValueError(f"{uri} is a non-empty folder that is not a lossyvision {kind} (it has no "
                         f"{marker}); choose a new or empty folder, so that nothing of yours is overwritten")


# --- reading back what was written -------------------------------------------------------------
def _damaged(path: str, problem: str, way_back: str) -> DamagedFileError:
    return DamagedFileError(f"{path} is damaged ({problem}); {way_back}")


def _read(path: str) -> bytes | None:
    if not exists(path):
        return None
    return read_bytes(path)


def check_output_files(output: str) -> None:
    """Raise :class:`DamagedFileError` if ``OUTPUT/sweep.yaml`` or ``OUTPUT/state.json`` is damaged,
    or the store's manifest is (the store the copy names, else ``OUTPUT/store``)."""
    import yaml

    copy = join(str(output), SWEEP_COPY)
    way_back = ("it is the copy of the sweep file that `sweep run` keeps: delete it, then rerun "
                "`lossyvision sweep run SWEEP_FILE` (it writes the copy again and redoes nothing done)")
    data = _read(copy)
    store_uri = join(str(output), DEFAULT_STORE)
    if data is not None:
        try:
            parsed = yaml.safe_load(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise _damaged(copy, "not UTF-8 text", way_back) from None
        except yaml.YAMLError as exc:
            raise _damaged(copy, f"not valid YAML: {_first_line(exc)}", way_back) from None
        if not isinstance(parsed, dict):
            raise _damaged(copy, "not a mapping of fields", way_back)
        missing = [k for k in _REQUIRED_SWEEP_FIELDS if k not in parsed]
        if "codecs" not in parsed:
            missing += [k for k in _LEVEL_FIELDS if k not in parsed]
        if missing:
            raise _damaged(copy, f"cut short: no {', '.join(missing)}", way_back)
        if isinstance(parsed.get("store"), str) and parsed["store"]:
            store_uri = parsed["store"]
    read_state(output)
    check_store_files(store_uri)


def read_state(output: str) -> dict | None:
    """``OUTPUT/state.json`` as a dict (None if absent); :class:`DamagedFileError` if it is not a JSON object."""
    state = join(str(output), STATE_NAME)
    raw = _read(state)
    if raw is None:
        return None
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _damaged(state, f"not valid JSON: {_first_line(exc)}",
                       "it only marks which trials and cells are running or failed: delete it and "
                       "rerun (finished trials and cells are kept elsewhere)") from None
    if not isinstance(parsed, dict):
        raise _damaged(state, "not a JSON object", "delete it and rerun")
    return parsed


def check_store_files(store_uri: str) -> None:
    """Raise :class:`DamagedFileError` if ``STORE/manifest.parquet`` cannot be read as parquet.

    Only its footer (schema, row groups) is read: a large manifest costs a few small reads.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = join(str(store_uri), MANIFEST_NAME)
    if not exists(uri):
        return
    path = local_path(uri)
    try:
        if path is not None:
            if not os.path.isfile(path):
                read_bytes(uri)  # raises the clear error for a FIFO, a folder, ...
            pq.read_metadata(path)
        else:
            fs, fs_path = filesystem(uri)
            with fs.open(fs_path, "rb") as f:
                pq.read_metadata(f)
    except (pa.ArrowException, ValueError) as exc:
        raise manifest_damaged(uri, _first_line(exc)) from None
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) or exc.filename:
            raise
        raise manifest_damaged(uri, _first_line(exc)) from None


def parquet_problem(data: bytes) -> str | None:
    """Why ``data`` is not a readable parquet file (footer and schema), or None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        return _first_line(exc)
    return None


def manifest_damaged(uri: str, problem: str) -> DamagedFileError:
    """The one-line error for a manifest that cannot be read."""
    return _damaged(uri, problem, "move it away and rerun `lossyvision compress` (or `sweep run`): "
                                  "images whose rows it held are compressed again")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
