"""Malformed sweep files, table-driven: each is refused when read, with one line naming the field
(or the file), and nothing is written anywhere. A subset goes through the real ``lossyvision``
command as a subprocess: seconds, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lossyvision.preflight import load_checked
from lossyvision.spec import GRID_CAP, SpecError, check_grid, load_sweep

PLATFORM = str(Path(__file__).resolve().parents[1] / "platform")
#: The installed console script (what a user types), else the module.
COMMAND = ([str(Path(sys.executable).parent / "lossyvision")] if (Path(sys.executable).parent / "lossyvision").exists()
           else [sys.executable, "-m", "lossyvision.cli"])
MODEL = {"name": "m", "task": "classification", "arch": "resnet10t", "epochs": 1, "batch_size": 4,
         "image_size": 32}


def base(tmp: Path) -> dict:
    return {"name": "t", "dataset": {"kind": "imagefolder", "root": str(tmp / "data")},
            "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0, 1], "test_levels": [0, 1],
            "models": [dict(MODEL)], "output": str(tmp / "out")}


def text_of(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def with_(path: str, value):
    """A mutation setting a dotted field (``models.0.lr``) to ``value``."""
    def mutate(d: dict, tmp: Path) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[int(last) if isinstance(node, list) else last] = value(tmp) if callable(value) else value
    return mutate


def raw(text: str | bytes):
    """A mutation replacing the whole file (text with ``{data}``/``{out}`` placeholders, or bytes)."""
    def mutate(d: dict, tmp: Path):
        if isinstance(text, bytes):
            return text
        return text.format(data=tmp / "data", out=tmp / "out")
    return mutate


def append(text: str):
    def mutate(d: dict, tmp: Path):
        return text_of(d) + text
    return mutate


def foreign_folder(tmp: Path) -> str:
    d = tmp / "someone-elses"
    d.mkdir(exist_ok=True)
    (d / "thesis.tex").write_text("precious\n")
    return str(d)


def a_file(tmp: Path) -> str:
    f = tmp / "a-file"
    f.write_text("x")
    return str(f)


def damaged_output(name: str, content: bytes):
    def make(tmp: Path) -> str:
        out = tmp / "old-out"
        out.mkdir(exist_ok=True)
        (out / "sweep.yaml").write_text(text_of(base(tmp)).replace(str(tmp / "out"), str(out)))
        (out / name).write_bytes(content)
        return str(out)
    return make


def damaged_store(tmp: Path) -> str:
    store = tmp / "old-store"
    store.mkdir(exist_ok=True)
    sink = tmp / "m.parquet"
    pd.DataFrame({"relpath": ["a.jpg"] * 50, "level": [1.0] * 50}).to_parquet(sink)
    (store / "manifest.parquet").write_bytes(sink.read_bytes()[:200])  # truncated: no footer
    sink.unlink()
    return str(store)


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefg", "bcdefgh")) + "name: [*h]\n"

#: (id, mutation, what the message must name, what it must say)
CASES = [
    # the file itself
    ("binary", raw(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "FILE", "a binary file, not a YAML sweep file"),
    ("latin1", raw("name: caf\xe9\n".encode("latin-1")), "FILE", "not UTF-8 text (byte 0xe9 at offset 9)"),
    ("empty", raw(""), "FILE", "expected a mapping of fields at the top level, got NoneType"),
    ("top-level-list", raw("- name: t\n"), "FILE", "expected a mapping of fields at the top level, got list"),
    ("bad-yaml", raw("name: [unclosed\n"), "FILE", "not valid YAML: line 2"),
    ("tabs", raw("name: t\n\tdataset: x\n"), "FILE", "not valid YAML: line 2, column 1"),
    ("duplicate-key", append("repeats: 1\nrepeats: 1000\n"), "FILE", "key 'repeats' is given twice"),
    ("too-large", raw("# " + "x" * (1 << 20) + "\n"), "FILE", "is too large for a sweep file"),
    ("billion-laughs", raw(LAUGHS), "FILE", "more than 100,000 values"),
    # fields
    ("unknown-field", with_("colour", "blue"), "colour", "unknown field"),
    ("missing-models", lambda d, t: d.pop("models") and None, "models", "is required"),
    ("bool-levels", with_("train_levels", [True, False]), "train_levels.0", "must be a number, got a boolean (true)"),
    ("nan-level", with_("test_levels", [float("nan")]), "test_levels", "levels must be finite numbers, got [nan]"),
    ("inf-level", with_("train_levels", [float("inf")]), "train_levels", "levels must be finite numbers, got [inf]"),
    ("huge-level", with_("train_levels", [1e300]), "train_levels", "must be in 0..25"),
    ("level-above-range", with_("test_levels", [0, 30]), "test_levels", "must be in 0..25"),
    ("negative-level", with_("test_levels", [1, -2]), "test_levels", "levels must be >= 0"),
    ("repeated-level", with_("test_levels", [1, 1]), "test_levels", "levels must be unique"),
    ("no-levels", with_("train_levels", []), "train_levels", "must list at least one level"),
    ("levels-not-a-list", with_("train_levels", "0,1"), "train_levels", "Input should be a valid list"),
    ("too-many-levels", with_("train_levels", list(range(65))), "train_levels", "lists at most 64"),
    ("jpeg-level-0", lambda d, t: d.update(codec={"name": "jpeg"}), "train_levels", "jpeg level is a quality"),
    ("webp-fraction", lambda d, t: d.update(codec={"name": "webp"}, train_levels=[50.5], test_levels=[50]),
     "train_levels", "a whole number in 0..100"),
    ("png-level-1", lambda d, t: d.update(codec={"name": "png"}), "train_levels", "png level must be a number in 0..0"),
    ("repeats-million", with_("repeats", 1_000_000), "repeats", "less than or equal to 100"),
    ("repeats-true", with_("repeats", True), "repeats", "got a boolean"),
    ("repeats-zero", with_("repeats", 0), "repeats", "greater than or equal to 1"),
    ("epochs-huge", with_("models.0.epochs", 10**9), "models.0.epochs", "less than or equal to 10000"),
    ("epochs-fraction", with_("models.0.epochs", 2.5), "models.0.epochs", "must be a whole number"),
    ("batch-zero", with_("models.0.batch_size", 0), "models.0.batch_size", "greater than or equal to 1"),
    ("batch-huge", with_("models.0.batch_size", 100_000), "models.0.batch_size", "less than or equal to 4096"),
    ("image-size-million", with_("models.0.image_size", 1_000_000), "models.0.image_size", "less than or equal to 8192"),
    ("image-size-tiny", with_("models.0.image_size", 4), "models.0.image_size", "greater than or equal to 8"),
    ("lr-nan", with_("models.0.lr", float("nan")), "models.0.lr", "finite number"),
    ("lr-zero", with_("models.0.lr", 0), "models.0.lr", "greater than 0"),
    ("lr-bool", with_("models.0.lr", True), "models.0.lr", "got a boolean"),
    ("weight-decay-inf", with_("models.0.weight_decay", float("inf")), "models.0.weight_decay", "finite number"),
    ("cpu-inf", with_("resources.trial.cpu", float("inf")), "resources.trial.cpu", "finite number"),
    ("gpu-1000", with_("resources.eval.gpu", 1000), "resources.eval.gpu", "less than or equal to 64"),
    ("cpu-negative", with_("resources.eval.cpu", -1), "resources.eval.cpu", "greater than or equal to 0"),
    ("root-is-a-file", with_("dataset.root", a_file), "dataset.root", "is not a folder"),
    ("root-missing", with_("dataset.root", "/no/such/folder"), "dataset.root", "/no/such/folder does not exist"),
    ("unset-variable", with_("dataset.root", "${LV_TEST_UNSET_ROOT}/x"), "dataset.root",
     "environment variable LV_TEST_UNSET_ROOT is not set"),
    ("variable-cannot-inject-keys", with_("name", "${LV_TEST_EVIL}"), "name", "must be letters, digits"),
    ("tracking-ftp", with_("tracking.uri", "ftp://x"), "tracking.uri", "unknown scheme 'ftp'"),
    ("tracking-file-store", with_("tracking.uri", "file:///tmp/mlruns"), "tracking.uri", "MLflow 3 has no file store"),
    ("tracking-plain-path", with_("tracking.uri", "./mlruns"), "tracking.uri", "MLflow 3 has no file store"),
    ("output-root", with_("output", "/"), "output", "/ is a system folder"),
    ("output-etc", with_("output", "/etc"), "output", "/etc is a system folder"),
    ("output-in-usr", with_("output", "/usr/local/runs"), "output", "lies inside /usr, which is a system folder"),
    ("output-home", with_("output", lambda t: os.path.expanduser("~")), "output", "is a system folder"),
    ("output-foreign", with_("output", foreign_folder), "output", "is a non-empty folder that is not a lossyvision output"),
    ("output-is-a-file", with_("output", a_file), "output", "exists and is not a folder"),
    ("store-root", with_("store", "/"), "store", "/ is a system folder"),
    ("store-proc", with_("store", "/proc/self"), "store", "lies inside /proc"),
    ("store-foreign", with_("store", foreign_folder), "store", "is a non-empty folder that is not a lossyvision store"),
    ("budget-parsecs", with_("budgets", ["12 parsecs"]), "budgets", "not a byte size: '12 parsecs'"),
    ("budget-zero", with_("budgets", [0]), "budgets", "budgets must be > 0 bytes"),
    ("budget-bool", with_("budgets", [True]), "budgets", "not a byte size: True"),
    ("limit-zero", with_("limit_per_split", 0), "limit_per_split", "greater than or equal to 1"),
    ("max-failures-huge", with_("max_failures", 1000), "max_failures", "less than or equal to 100"),
    ("seed-negative", with_("seed", -1), "seed", "greater than or equal to 0"),
    ("max-pixels-zero", with_("compress.max_pixels", 0), "compress.max_pixels", "greater than or equal to 1"),
    ("on-error-explode", with_("compress.on_error", "explode"), "compress.on_error", "Input should be 'skip' or 'fail'"),
    ("animated-second", with_("compress.animated", "second"), "compress.animated", "'refuse' or 'first'"),
    ("png-sample-negative", with_("compress.png_sample", -1), "compress.png_sample", "must be all or a count"),
    ("png-sample-bool", with_("compress.png_sample", True), "compress.png_sample", "must be all or a count"),
    ("quality-sample-bool", with_("compress.quality_sample", True), "compress.quality_sample", "must be all or a count"),
    ("png-sample-word", with_("compress.png_sample", "some"), "compress.png_sample", "must be all or a count"),
    ("eval-shard-zero", with_("evaluation.shard_images", 0), "evaluation.shard_images", "greater than or equal to 1"),
    ("eval-shard-bytes-word", with_("evaluation.shard_bytes", "lots"), "evaluation.shard_bytes", "not a byte size"),
    ("eval-shard-bytes-nan", with_("evaluation.shard_bytes", float("nan")), "evaluation.shard_bytes", "not a byte size"),
    ("eval-cache-huge", with_("evaluation.model_cache_bytes", "5TB"), "evaluation.model_cache_bytes", "must be between"),
    ("eval-unknown-key", with_("evaluation.shards", 3), "evaluation.shards", "unknown field"),
    ("stage-bytes-word", with_("resources.trial.stage_bytes", "a lot"), "resources.trial.stage_bytes", "not a byte size"),
    ("stage-bytes-negative", with_("resources.trial.stage_bytes", -5), "resources.trial.stage_bytes", "a size must be >= 0"),
    ("data-order-sideways", with_("models.0.data_order", "sideways"), "models.0.data_order",
     "Input should be 'random' or 'shards'"),
    ("data-order-shards-in-files-layout", with_("models.0.data_order", "shards"), "models.0.data_order",
     "needs compress.layout: shards (this sweep's is files)"),
    ("shuffle-buffer-without-shards", with_("models.0.shuffle_buffer", 500), "models.0.shuffle_buffer",
     "applies to data_order: shards only"),
    ("shuffle-buffer-zero", with_("models.0.shuffle_buffer", 0), "models.0.shuffle_buffer",
     "greater than or equal to 1"),
    ("shuffle-buffer-bool", with_("models.0.shuffle_buffer", True), "models.0.shuffle_buffer", "got a boolean"),
    ("read-block-tiny", with_("resources.trial.read_block_bytes", 100), "resources.trial.read_block_bytes",
     "must be between"),
    ("read-cache-word", with_("resources.trial.read_cache_bytes", "plenty"), "resources.trial.read_cache_bytes",
     "not a byte size"),
    ("name-too-long", with_("name", "n" * 150), "name", "at most 100 characters"),
    ("name-slash", with_("name", "../x"), "name", "must be letters"),
    ("too-many-models", lambda d, t: d.update(models=[dict(MODEL, name=f"m{i}") for i in range(40)]),
     "models", "lists at most 32"),
    ("task-unknown", with_("models.0.task", "nope"), "models.0.task", "unknown task 'nope'; known:"),
    ("kind-unknown", with_("dataset.kind", "nope"), "dataset.kind", "unknown dataset 'nope'; known:"),
    ("effort-11", with_("codec.effort", 11), "codec", "effort must be an integer in 1..10"),
    ("eval-levels-some", with_("eval_levels", "some"), "eval_levels", "Input should be 'all', 'same' or 'baseline'"),
    # what an earlier run left in the output, damaged
    ("damaged-sweep-copy", with_("output", damaged_output("sweep.yaml", b"name: t\ndataset: {kind: imag")),
     "output", "sweep.yaml is damaged (not valid YAML"),
    ("damaged-state", with_("output", damaged_output("state.json", b'{"driver": {"pid": 1')),
     "output", "state.json is damaged (not valid JSON"),
    ("damaged-manifest", with_("store", damaged_store), "store", "manifest.parquet is damaged"),
]


def snapshot(tmp: Path) -> dict[str, float]:
    return {str(p.relative_to(tmp)): p.lstat().st_mtime for p in tmp.rglob("*")}


def write_case(tmp: Path, mutate) -> Path:
    (tmp / "data").mkdir(exist_ok=True)
    data = base(tmp)
    content = mutate(data, tmp)
    path = tmp / "sweep.yaml"
    if content is None:
        content = text_of(data)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case, mutate, field, says", CASES, ids=[c[0] for c in CASES])
def test_malformed_sweep_file_is_refused_naming_the_field(tmp_path, monkeypatch, case, mutate, field, says):
    monkeypatch.setenv("LV_TEST_EVIL", "x\nrepeats: 1000\ndataset: {root: /etc}")
    monkeypatch.delenv("LV_TEST_UNSET_ROOT", raising=False)
    path = write_case(tmp_path, mutate)
    before = snapshot(tmp_path)
    start = time.monotonic()
    with pytest.raises(SpecError) as err:
        load_checked(path)  # the file, then the world it names (as sweep run, sweep plan, compress do)
    message = str(err.value)
    assert time.monotonic() - start < 10
    assert message.startswith(str(path)), message  # the file is named first
    lines = message.splitlines()
    if field == "FILE":
        assert len(lines) == 1 and says in lines[0], message
    else:  # one problem: "FILE: field: problem"; several: "FILE:" then "  field: problem" each
        problems = [lines[0].removeprefix(f"{path}: ")] if len(lines) == 1 else [x.strip() for x in lines[1:]]
        assert err.value.problems == problems
        assert any(p.startswith(f"{field}: ") and says in p for p in problems), message
    assert "Traceback" not in message
    assert snapshot(tmp_path) == before  # nothing written, nothing touched
    assert not (tmp_path / "out").exists()


def test_a_variable_is_substituted_in_its_value_only(tmp_path, monkeypatch):
    """A value holding YAML ("x\\nrepeats: 1000") stays one string; it cannot add or change fields."""
    monkeypatch.setenv("LV_TEST_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("LV_TEST_EXP", "e\nrepeats: 1000")
    data = base(tmp_path)
    data["dataset"]["root"] = "${LV_TEST_ROOT}"
    data["tracking"] = {"experiment": "${LV_TEST_EXP}", "uri": "${LV_TEST_UNSET:-}"}
    path = write_case(tmp_path, lambda d, t: text_of(data))
    sweep = load_sweep(path)
    assert sweep.dataset.root == str(tmp_path / "data") and sweep.repeats == 1
    assert sweep.tracking.experiment == "e\nrepeats: 1000" and not sweep.tracking.uri
    # a key is never substituted
    path.write_text(text_of(data).replace("name: t", "${LV_TEST_KEY}: t"))
    with pytest.raises(SpecError, match=r"\$\{LV_TEST_KEY\}: unknown field"):
        load_sweep(path)


def test_an_earlier_output_and_store_are_accepted(tmp_path):
    (tmp_path / "data").mkdir()
    out = tmp_path / "out"
    (out / "store" / ".manifest-parts").mkdir(parents=True)  # left by `compress SWEEP_FILE`
    path = tmp_path / "s.yaml"
    path.write_text(text_of(base(tmp_path)))
    assert load_checked(path).output == str(out)
    (out / "sweep.yaml").write_text(text_of(base(tmp_path)))
    (out / "results.parquet").write_bytes(b"")  # not ours to judge: the lead's file
    assert load_checked(path).output == str(out)


def test_grid_over_the_cap_needs_yes(tmp_path):
    data = base(tmp_path)
    data.update(repeats=100, train_levels=list(range(11)), test_levels=list(range(11)))
    path = write_case(tmp_path, lambda d, t: text_of(data))
    sweep = load_sweep(path)
    with pytest.raises(SpecError, match=r"grid: 1,100 trials and 12,100 evaluations is over the cap of 200"):
        check_grid(sweep, source=str(path))
    check_grid(sweep, yes=True)
    data.update(repeats=1)
    check_grid(load_sweep(write_case(tmp_path, lambda d, t: text_of(data))))  # 11 x 11: the study's size
    assert GRID_CAP["trials"] >= 11


def test_tracking_schemes_are_mlflows_own():
    """The schemes the spec accepts are the tracking stores MLflow registers, less the file store."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    from lossyvision.spec import TRACKING_SCHEMES

    registered = set(_tracking_store_registry._registry) - {"", "file"}
    assert registered == set(TRACKING_SCHEMES)


# --- the real command ----------------------------------------------------------------------------
CLI_CASES = {"sweep-run": ["binary", "bool-levels", "huge-level", "tracking-ftp", "output-foreign", "damaged-state"],
             "compress": ["root-is-a-file", "output-root", "unset-variable"]}


def lossyvision(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": PLATFORM}
    env.pop("LV_TEST_UNSET_ROOT", None)
    start = time.monotonic()
    r = subprocess.run([*COMMAND, *args], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=120)
    return r, time.monotonic() - start


@pytest.mark.parametrize("command, case", [(c, case) for c, cases in CLI_CASES.items() for case in cases])
def test_the_command_refuses_in_seconds_without_traceback_writing_nothing(tmp_path, case, command):
    mutate, field, says = next((m, f, s) for c, m, f, s in CASES if c == case)
    path = write_case(tmp_path, mutate)
    before = snapshot(tmp_path)
    r, took = lossyvision(*command.split("-"), str(path), cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert took < 30, took
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_the_command_refuses_a_big_grid_without_yes(tmp_path):
    data = base(tmp_path)
    data.update(repeats=100, train_levels=[0, 1, 2])
    path = write_case(tmp_path, lambda d, t: text_of(data))
    before = snapshot(tmp_path)
    r, took = lossyvision("sweep", "run", str(path), cwd=tmp_path)
    assert r.returncode == 2 and "over the cap" in r.stderr and "pass --yes" in r.stderr
    assert "Traceback" not in r.stderr and snapshot(tmp_path) == before
