"""Sweep-file validation: every error names the field and the problem."""

from __future__ import annotations

import textwrap

import pytest

from lossyvision.preflight import preflight
from lossyvision.spec import SpecError, load_sweep, parse_sweep


def _base(tmp_path) -> dict:
    (tmp_path / "data").mkdir(exist_ok=True)
    return {
        "name": "t",
        "dataset": {"kind": "imagefolder", "root": str(tmp_path / "data")},
        "codec": {"name": "jpegxl", "effort": 3},
        "train_levels": [0, 2, 1],
        "test_levels": [0, 1],
        "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}],
        "output": str(tmp_path / "out"),
    }


def _error(data, tmp_path) -> str:
    with pytest.raises(SpecError) as e:
        preflight(parse_sweep(data, source="s.yaml"), source="s.yaml")  # the file, then the world it names
    return str(e.value)


def test_valid_sweep_defaults_and_derived_paths(tmp_path):
    sweep = parse_sweep(_base(tmp_path))
    assert sweep.train_levels == [0.0, 1.0, 2.0]  # sorted
    assert sweep.codec.options == {"effort": 3}
    assert sweep.store_uri.endswith("out/store")
    assert sweep.tracking_uri.startswith("sqlite:////") and sweep.tracking_uri.endswith("out/mlflow.db")
    assert sweep.experiment == "t" and sweep.repeats == 1 and sweep.compress.on_error == "skip"


def test_missing_root_names_field(tmp_path):
    data = _base(tmp_path)
    data["dataset"]["root"] = "/x/does/not/exist"
    assert "dataset.root: /x/does/not/exist does not exist" in _error(data, tmp_path)


def test_s3_root_is_not_checked_locally(tmp_path):
    data = _base(tmp_path)
    data["dataset"]["root"] = "s3://bucket/food-101"
    assert parse_sweep(data).dataset.root == "s3://bucket/food-101"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.pop("models"), "models: is required"),
        (lambda d: d.update(models=[]), "models: must list at least one model"),
        (lambda d: d.update(train_levels=[]), "train_levels: must list at least one level"),
        (lambda d: d.update(test_levels=[1, -2]), "test_levels: levels must be >= 0"),
        (lambda d: d.update(test_levels=[1, 1]), "test_levels: levels must be unique"),
        (lambda d: d.update(repeats=0), "repeats: Input should be greater than or equal to 1"),
        (lambda d: d.update(colour="blue"), "colour: unknown field"),
        (lambda d: d["dataset"].update(kind="nope"), "dataset.kind: unknown dataset 'nope'; known:"),
        (lambda d: d.update(compress={"quality_metric": "ssim"}),
         "compress.quality_metric: unknown quality metric 'ssim'; known: butteraugli, ssimulacra2"),
        (lambda d: d["codec"].update(name="nope"), "codec: unknown codec 'nope'; known:"),
        (lambda d: d["codec"].update(speed=3), "codec: codec 'jpegxl' got unknown option(s) ['speed']"),
        (lambda d: d["models"][0].update(task="nope"), "models.0.task: unknown task 'nope'; known:"),
        (lambda d: d["models"][0].update(epochs=0), "models.0.epochs:"),
        (lambda d: d["models"].append(dict(d["models"][0])), "models: model names must be unique"),
        (lambda d: d["models"][0].update(options={"colour": 1}), "models.0: classification model 'm': unknown option(s) ['colour']"),
        (lambda d: d.update(budgets=["12 parsecs"]), "budgets: not a byte size: '12 parsecs'"),
        (lambda d: d["compress"].update(on_error="explode") if "compress" in d else d.update(
            compress={"on_error": "explode"}), "compress.on_error: Input should be 'skip' or 'fail'"),
        (lambda d: d.update(name="has space"), "name: 'has space' must be letters"),
    ],
)
def test_errors_name_field_and_problem(tmp_path, mutate, expected):
    data = _base(tmp_path)
    mutate(data)
    assert expected in _error(data, tmp_path)


def test_budgets_parse_units(tmp_path):
    data = _base(tmp_path)
    data["budgets"] = ["100MB", "50MB", "1KiB", 2000]
    assert parse_sweep(data).budgets == [1024, 2000, 50_000_000, 100_000_000]


def test_load_sweep_file_errors(tmp_path):
    with pytest.raises(SpecError, match="sweep file does not exist"):
        load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_sweep(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_sweep(scalar)


def test_repo_sweeps_validate(repo_root, tmp_path, monkeypatch):
    # Every shipped sweep file is valid once its dataset root exists (variables at their defaults).
    import yaml

    from lossyvision.spec import substitute_env

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for path in sorted((repo_root / "sweeps").glob("*.yaml")):
        data = substitute_env(yaml.safe_load(path.read_text()), env={})
        if "://" not in str(data["dataset"]["root"]):
            data["dataset"]["root"] = str(tmp_path / "data")
        preflight(parse_sweep(data, source=str(path)), source=str(path))


def test_yaml_text_round_trip(tmp_path):
    (tmp_path / "d").mkdir()
    f = tmp_path / "s.yaml"
    f.write_text(textwrap.dedent(f"""
        name: food101-vit
        dataset: {{kind: food101, root: {tmp_path / 'd'}}}
        codec: {{name: jpegxl, effort: 7}}
        train_levels: [0, 1, 2]
        test_levels: [0, 1, 2]
        models:
          - {{name: vit-b16, task: classification, arch: vit_base_patch16_224, pretrained: true,
              epochs: 3, lr: 1.0e-4, batch_size: 64}}
        resources: {{trial: {{gpu: 1, cpu: 8}}, eval: {{gpu: 0.25, cpu: 2}}}}
        tracking: {{uri: sqlite:///runs/x/mlflow.db, experiment: food101-vit}}
        output: runs/food101-vit
    """))
    sweep = load_sweep(f)
    assert sweep.models[0].pretrained is True and sweep.resources.eval.gpu == 0.25
    assert sweep.tracking_uri == "sqlite:///runs/x/mlflow.db"
