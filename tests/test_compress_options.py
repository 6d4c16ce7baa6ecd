"""The compress options' one validator: the command line, the sweep file and run_job refuse the same values with the
same bound in the message (lossyvision.compress_options.BOUNDS; issue 24, "facts once")."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from lossyvision import compress_options
from lossyvision.cli import app
from lossyvision.compress_options import CompressError, CompressOptions, check_option, validate
from test_compress import small_dataset

#: (command-line flags, the sweep file's compress: {...}, the problem both must report, the option's field)
OUT_OF_BOUNDS = [
    (["--layout", "shards", "--shard-size", "100GB"], {"layout": "shards", "shard_size": "100GB"},
     "at most 64GB, got '100GB'", "shard_size"),
    (["--layout", "shards", "--shard-size", "12"], {"layout": "shards", "shard_size": "12"},
     "at least 1kB, got '12'", "shard_size"),
    (["--quality-sample", "2000000"], {"quality_sample": 2000000},
     "must be all or a count in 0..1000000, got 2000000", "quality_sample"),
    (["--png-sample", "2000000000"], {"png_sample": 2000000000},
     "must be all or a count in 0..1000000000, got 2000000000", "png_sample"),
    (["--max-pixels", "20000000000"], {"max_pixels": 20000000000},
     "must be less than or equal to 10000000000, got 20000000000", "max_pixels"),
]


@pytest.mark.parametrize("flags, in_file, problem, name", OUT_OF_BOUNDS, ids=[c[-1] + "-" + c[0][-1] for c in
                                                                               OUT_OF_BOUNDS])
def test_the_cli_and_the_sweep_file_refuse_the_same_value_with_the_same_bound(tmp_path, flags, in_file, problem,
                                                                              name):
    src = small_dataset(tmp_path / "src", n=1)
    runner = CliRunner()
    by_flags = runner.invoke(app, ["compress", "--source", str(src), "--out", str(tmp_path / "o"), *flags])
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "s", "dataset": {"root": str(src)}, "train_levels": [0], "test_levels": [0],
        "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}], "output": str(tmp_path / "run"),
        "compress": in_file}))
    by_file = runner.invoke(app, ["compress", str(sweep)])
    for result in (by_flags, by_file):
        assert result.exit_code == 2, result.output
        assert problem in result.output and "Traceback" not in result.output
    # the flag's name where the CLI parses the text itself; max_pixels is typer's int, checked by validate()
    label = name if name == "max_pixels" else "--" + name.replace("_", "-")
    assert f"{label}: {problem}" in " ".join(by_flags.output.split())  # rich may wrap the line
    assert f"compress.{name}: {problem}" in " ".join(by_file.output.split())
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()  # refused before anything is written


def test_run_job_refuses_what_the_cli_and_the_file_refuse():
    with pytest.raises(CompressError, match="shard_size: at most 64GB, got 100000000000"):
        validate(CompressOptions(shard_size=100 * 10**9))
    with pytest.raises(CompressError, match="max_pixels: must be less than or equal to 10000000000"):
        validate(CompressOptions(max_pixels=2 * 10**10))
    with pytest.raises(CompressError, match=r"quality_sample: must be all or a count in 0\.\.1000000"):
        validate(CompressOptions(quality_sample=-5))
    validate(CompressOptions(quality_sample=compress_options.EVERY_IMAGE, png_sample=None))  # "all": fine


def test_the_one_validator_takes_the_bounds_themselves_and_refuses_booleans_and_nan():
    low, high = compress_options.BOUNDS["shard_size"]
    assert check_option("shard_size", "1kB") == low and check_option("shard_size", "64GB") == high
    assert check_option("quality_sample", "all") == compress_options.EVERY_IMAGE
    assert check_option("png_sample", "all") is None and check_option("png_sample", 0) == 0
    for name, bad in [("shard_size", True), ("shard_size", float("nan")), ("max_pixels", True),
                      ("quality_sample", False), ("png_sample", 2.5)]:
        with pytest.raises(ValueError):
            check_option(name, bad)


def test_the_sweep_files_bounds_are_the_compress_options_bounds():
    from lossyvision.spec import BOUNDS

    assert {k: BOUNDS[k] for k in compress_options.BOUNDS} == compress_options.BOUNDS
