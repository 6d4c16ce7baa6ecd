"""DCT-frequency sensitivity: transforms, perturbations, and the two measurement modes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lossyvision import dct
from lossyvision.sensitivity import (
    SensitivityError,
    SensitivityResult,
    basis_mosaic,
    measure_sensitivity,
    plot_basis_illustration,
    plot_sensitivity_maps,
    sensitivity_finite_difference,
    sensitivity_gradient,
    spearman,
)


def _images(n=2, h=16, w=24, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g, dtype=dtype)


def test_ycbcr_matches_jpeg_constants_and_round_trips():
    x = _images(dtype=torch.float64)
    ycc = dct.rgb_to_ycbcr(x)
    r, g, b = (x[:, k] * 255 for k in range(3))
    assert torch.allclose(ycc[:, 0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-9)
    assert torch.allclose(ycc[:, 1], 128 - 0.168736 * r - 0.331264 * g + 0.5 * b, atol=1e-3)
    assert torch.allclose(ycc[:, 2], 128 + 0.5 * r - 0.418688 * g - 0.081312 * b, atol=1e-3)
    assert (dct.ycbcr_to_rgb(ycc) - x).abs().max() < 1e-5
    x32 = x.float()
    assert (dct.ycbcr_to_rgb(dct.rgb_to_ycbcr(x32)) - x32).abs().max() < 1e-5


def test_block_dct_is_orthonormal_and_round_trips():
    d = dct.dct_matrix()
    assert np.allclose(d @ d.T, np.eye(8), atol=1e-12)
    x = _images()
    coefs = dct.image_to_coefficients(x)
    assert coefs.shape == (2, 3, 2, 3, 8, 8)
    assert (dct.coefficients_to_image(coefs) - x).abs().max() < 1e-5
    # the DC coefficient of a block is 8 x its mean (orthonormal 2-D DCT-II)
    y = dct.rgb_to_ycbcr(x)[:, 0]
    assert torch.allclose(coefs[:, 0, 1, 2, 0, 0], 8 * y[:, 8:16, 16:24].mean(dim=(1, 2)))
    # and agrees with scipy's orthonormal DCT-II
    from scipy.fft import dctn

    ref = dctn(y[0, :8, :8].numpy(), type=2, norm="ortho")
    assert np.allclose(coefs[0, 0, 0, 0].numpy(), ref, atol=1e-9)


def test_perturbing_dc_of_one_block_changes_only_that_blocks_mean():
    x = _images(n=1)[0]
    eps = 8.0
    v = dct.perturbation(0, 0, 0, block=(1, 2), height=16, width=24, eps=eps, dtype=torch.float64)
    y_before = dct.rgb_to_ycbcr(x)[0]
    y_after = dct.rgb_to_ycbcr(x + v)[0]
    diff = (y_after - y_before).reshape(2, 8, 3, 8).transpose(1, 2)   # [hb, wb, 8, 8]
    assert torch.allclose(diff[1, 2], torch.full((8, 8), eps / 8, dtype=torch.float64))
    other = diff.clone()
    other[1, 2] = 0
    assert other.abs().max() < 1e-9
    # chroma untouched by a Y perturbation
    assert (dct.rgb_to_ycbcr(x + v)[1:] - dct.rgb_to_ycbcr(x)[1:]).abs().max() < 1e-9
    # coefficient space: exactly one coefficient moved by eps
    dc = dct.image_to_coefficients(x + v) - dct.image_to_coefficients(x)
    assert abs(dc[0, 1, 2, 0, 0].item() - eps) < 1e-9
    dc[0, 1, 2, 0, 0] = 0
    assert dc.abs().max() < 1e-9


class TinyNet(torch.nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, classes)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def _probs_fn(model):
    model.eval()
    return lambda x: torch.softmax(model(x.to(next(model.parameters()).dtype)), dim=1)


def test_gradient_and_finite_difference_agree_on_a_tiny_model():
    model = TinyNet().double()
    x = _images(n=2, h=16, w=16)
    fd = sensitivity_finite_difference(_probs_fn(model), x, eps=1e-4)
    gr = sensitivity_gradient(_probs_fn(model), x)
    assert fd.maps.shape == gr.maps.shape == (3, 8, 8)
    assert fd.blocks_per_image == gr.blocks_per_image == 4 == fd.blocks_total
    np.testing.assert_allclose(fd.maps, gr.maps, rtol=1e-3, atol=1e-9)
    assert spearman(fd.maps, gr.maps) > 0.999
    assert gr.n_classes == 4 and gr.n_images == 2 and gr.eps is None
    # equal coverage with sampled blocks: both modes average over the same blocks
    x3 = _images(n=3, h=32, w=24, seed=5)
    fd_s = sensitivity_finite_difference(_probs_fn(model), x3, eps=1e-4, blocks_per_image=2, seed=7)
    gr_s = sensitivity_gradient(_probs_fn(model), x3, blocks_per_image=2, seed=7, batch_size=2)
    np.testing.assert_allclose(fd_s.maps, gr_s.maps, rtol=1e-3, atol=1e-9)
    assert not np.allclose(gr_s.maps, sensitivity_gradient(_probs_fn(model), x3).maps, rtol=1e-3)


def test_finite_difference_block_sampling_states_coverage_and_is_deterministic():
    model = TinyNet().double()
    x = _images(n=1, h=32, w=32)
    a = measure_sensitivity(_probs_fn(model), x, mode="finite-difference", eps=1e-3, blocks_per_image=3, seed=1)
    b = measure_sensitivity(_probs_fn(model), x, mode="finite-difference", eps=1e-3, blocks_per_image=3, seed=1)
    assert a.blocks_per_image == 3 and a.blocks_total == 16 and a.coverage == pytest.approx(3 / 16)
    assert "3 of 16 blocks" in a.describe()
    np.testing.assert_array_equal(a.maps, b.maps)


def test_bad_inputs_raise_clear_errors():
    fn = _probs_fn(TinyNet().double())
    with pytest.raises(SensitivityError, match="multiple of 8"):
        sensitivity_gradient(fn, _images(h=12))
    with pytest.raises(SensitivityError, match=r"\[N, 3, H, W\]"):
        sensitivity_gradient(fn, torch.rand(3, 16, 16))
    with pytest.raises(SensitivityError, match="unknown mode"):
        measure_sensitivity(fn, _images(), mode="nope")
    with pytest.raises(SensitivityError, match="blocks_per_image"):
        sensitivity_finite_difference(fn, _images(), blocks_per_image=99)


def test_result_round_trips_through_npz_and_draws(tmp_path):
    fn = _probs_fn(TinyNet().double())
    res = sensitivity_gradient(fn, _images(n=1, h=16, w=16))
    back = SensitivityResult.from_npz_bytes(res.to_npz_bytes())
    np.testing.assert_array_equal(back.maps, res.maps)
    assert back.mode == "gradient" and back.image_size == (16, 16) and back.n_classes == 4
    png = plot_sensitivity_maps(res)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_basis_mosaic_adds_the_pattern_to_every_block():
    img = torch.full((3, 16, 16), 0.5, dtype=torch.float64)
    mosaic = basis_mosaic(img, 0, amplitude=80.0)
    assert mosaic.shape == (8 * 18, 8 * 18, 3)
    dc_tile = mosaic[:16, :16].astype(float)
    assert np.allclose(dc_tile, np.round((0.5 + 80 / 8 / 255) * 255), atol=1)   # DC: uniform shift of eps/8
    tile_77 = mosaic[7 * 18:7 * 18 + 16, 7 * 18:7 * 18 + 16].astype(float)
    assert np.allclose(tile_77[:8, :8], tile_77[8:, 8:])                          # same pattern in every block
    assert tile_77.std() > 5
    assert plot_basis_illustration(img.float(), 2)[:4] == b"\x89PNG"


def _sweep_output(tmp_path):
    """A sweep output with one finished classifier checkpoint and a store of test images."""
    import imagecodecs
    import io as _io
    import json

    from datasets_fixtures import make_imagefolder
    from lossyvision import store
    from lossyvision.spec import load_sweep
    from lossyvision.sweep.plan import TrialSpec
    from lossyvision.sweep.trials import checkpoint_dir
    from lossyvision.tasks import create_task
    from skimage import io as skio

    root = make_imagefolder(tmp_path / "data", per_class=2, size=(40, 36))
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.yaml").write_text(
        "name: sens-test\n"
        f"dataset: {{kind: imagefolder, root: {root}}}\n"
        "codec: {name: jpegxl, effort: 1}\n"
        "train_levels: [0, 2]\ntest_levels: [0]\n"
        "models: [{name: tiny, task: classification, arch: resnet10t, image_size: 32}]\n"
        f"output: {out}\n")
    sweep = load_sweep(out / "sweep.yaml")
    rows = []
    for p in sorted((root / "test").rglob("*.jpg")):
        rel = p.relative_to(root).as_posix()
        data = bytes(imagecodecs.jpegxl_encode(skio.imread(p), lossless=True, effort=1))
        op = store.join(store.level_dir("jpegxl", 0), store.output_relpath(rel, ".jxl"))
        store.atomic_write_bytes(str(out / "store" / op), data)
        rows.append(dict(relpath=rel, split="test", codec="jpegxl", level=0.0, status="ok", output_path=op))
    pd.DataFrame(rows).to_parquet(out / "store" / "manifest.parquet")
    spec = sweep.model("tiny")
    task = create_task("classification", spec, ["astronaut", "chelsea", "coffee"])
    net = task.build_model()
    from lossyvision import output as outdir
    from lossyvision.sweep.plan import CellSpec, Grid

    trials = [TrialSpec(model="tiny", train_level=level, config=f"c0ffee000{int(level)}") for level in (0.0, 2.0)]
    outdir.mark(str(out))
    outdir.write_plan(str(out), Grid(trials, [CellSpec(t, 0.0, "5eed000000") for t in trials]))
    key = trials[0].key
    ckpt = checkpoint_dir(str(out), key)
    buf = _io.BytesIO()
    torch.save(net.state_dict(), buf)
    store.atomic_write_bytes(store.join(ckpt, "model.pt"), buf.getvalue())
    store.atomic_write_bytes(store.join(ckpt, "trial.json"), json.dumps({"key": key}).encode())
    return out, key


@pytest.mark.slow
def test_cli_sensitivity_on_a_sweep_checkpoint_logs_to_mlflow(tmp_path):
    from typer.testing import CliRunner

    from lossyvision.cli import app
    from lossyvision.report.build import build_report
    from lossyvision.output import load_output_sweep, load_plan
    from lossyvision.sweep.tracking import tracker_for

    out, key = _sweep_output(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["sensitivity", str(out), "-n", "3"])
    assert res.exit_code == 0, res.output
    assert "3 image(s) of 32x32, 16 of 16 blocks" in res.output
    npz = out / "sensitivity" / f"{key}-gradient.npz"
    back = SensitivityResult.from_npz_bytes(npz.read_bytes())
    assert back.maps.shape == (3, 8, 8) and back.n_classes == 3 and back.extra["trial"] == key
    assert (out / "sensitivity" / f"{key}-basis-Cr.png").exists()
    tracker = tracker_for(load_output_sweep(str(out)), plan_digest=load_plan(str(out)).digest)
    logged = {a.path for a in tracker.client.list_artifacts(tracker.parent_run(), "sensitivity")}
    assert f"sensitivity/{key}-gradient.npz" in logged and f"sensitivity/{key}-basis-Y.png" in logged
    # the report picks the maps up
    report = build_report(str(out))
    assert any(p.endswith(f"sensitivity-{key}-gradient.png") for p in report.figures), report.warnings
    # user errors are clear, not tracebacks
    bad = runner.invoke(app, ["sensitivity", str(out), "--train-level", "2"])
    assert bad.exit_code == 2 and "no finished checkpoint" in bad.output
    bad = runner.invoke(app, ["sensitivity", str(out), "--mode", "nope", "--no-mlflow"])
    assert bad.exit_code == 2 and "nope" in bad.output and "gradient" in bad.output  # the allowed values
