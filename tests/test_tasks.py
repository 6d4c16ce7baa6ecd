"""The three tasks, trained for real on tiny data (CPU): classification, detection, segmentation."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lossyvision.data import ImageSamples
from lossyvision.spec import ModelSpec
from lossyvision.tasks import TASKS, create_task
from lossyvision.tasks.training import load_backbone_weights, lr_lambda, strip_prefixes

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run faster on one thread, and much faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spec(**kw) -> ModelSpec:
    kw.setdefault("name", "m")
    return ModelSpec(**kw)


def test_registry_has_the_three_tasks():
    assert {"classification", "detection", "segmentation"} <= set(TASKS.names())
    for name in ("classification", "detection", "segmentation"):
        assert TASKS.get(name).metric_names


# --------------------------------------------------------------------------- classification
def colour_split(tmp_path: Path, n: int, seed: int) -> ImageSamples:
    """An easy split as real PNG files: class 0 reddish, class 1 bluish, noisy."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    uris, labels = [], []
    for i in range(n):
        y = i % 2
        img = rng.integers(0, 90, size=(20, 24, 3))
        img[..., 0 if y == 0 else 2] += 150
        path = tmp_path / f"s{seed}_{i}.png"
        Image.fromarray(img.astype(np.uint8)).save(path)
        uris.append(str(path))
        labels.append(y)
    return ImageSamples(uris, labels)


CLS = dict(task="classification", arch="resnet10t", image_size=32, batch_size=8, lr=3e-3, epochs=2,
           options={"model_kwargs": {}})


def test_classification_fits_and_beats_chance(tmp_path):
    torch.manual_seed(0)
    train, test = colour_split(tmp_path, 32, 0), colour_split(tmp_path, 16, 1)
    task = create_task("classification", spec(**CLS), ["red", "blue"])
    model = task.build_model()
    seen = []
    task.fit(model, train, on_epoch=lambda e, m, s: seen.append((e, m, s["epoch"])))
    assert [e for e, _, _ in seen] == [1, 2] and [s for _, _, s in seen] == [1, 2]
    assert all(set(m) >= {"loss", "train_acc", "lr"} for _, m, _ in seen)
    assert seen[1][1]["loss"] < seen[0][1]["loss"]
    scores = task.evaluate(model, test)
    assert set(scores) == {"top1", "top5"}
    assert 0.0 <= scores["top1"] <= 1.0
    assert scores["top5"] == 1.0  # two classes: top-5 counts everything
    assert scores["top1"] > 0.75  # chance is 0.5


def test_probabilities_are_differentiable_and_match_evaluation(tmp_path):
    task = create_task("classification", spec(**CLS), ["red", "blue"])
    model = task.build_model().eval()
    x01 = torch.rand(2, 3, 20, 24, requires_grad=True)  # resized to 32 inside
    p = task.probabilities(model, x01)
    assert p.shape == (2, 2)
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)
    p[:, 0].sum().backward()
    assert x01.grad is not None and x01.grad.abs().sum() > 0
    # same numbers as the evaluation path on the same uint8 image at image size
    img = (torch.rand(1, 3, 32, 32) * 255).round().to(torch.uint8)
    with torch.no_grad():
        a = task.probabilities(model, img.float() / 255)
        b = torch.softmax(task._logits(model, img), 1)
    assert torch.allclose(a, b, atol=1e-5)


def swav_style_checkpoint(path: Path) -> dict:
    """A SwAV-like checkpoint from a random resnet: ``module.`` prefix, projection head, prototypes."""
    import timm

    backbone = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    sd = {f"module.{k}": v.clone() for k, v in backbone.state_dict().items()}
    feat = backbone.num_features
    sd["module.projection_head.0.weight"] = torch.randn(16, feat)
    sd["module.projection_head.0.bias"] = torch.randn(16)
    sd["module.prototypes.weight"] = torch.randn(8, 16)
    torch.save(sd, path)
    return {k.removeprefix("module."): v for k, v in sd.items()}


def test_linear_probe_loads_swav_checkpoint_and_freezes_backbone(tmp_path):
    ckpt = tmp_path / "swav.pth"
    expected = swav_style_checkpoint(ckpt)
    s = spec(**{**CLS, "mode": "linear_probe", "checkpoint": str(ckpt), "epochs": 1, "lr": 1e-2})
    task = create_task("classification", s, ["red", "blue"])
    model = task.build_model()
    before = copy.deepcopy(model.state_dict())
    for k, v in before.items():
        if not k.startswith("fc."):
            assert torch.equal(v, expected[k]), k  # the backbone is the checkpoint's
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    task.fit(model, colour_split(tmp_path, 16, 0))
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("fc."):
            assert not torch.equal(v, after[k]), f"head {k} did not train"
        else:
            assert torch.equal(v, after[k]), f"backbone {k} changed (weights or BatchNorm statistics)"


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    import timm

    path = tmp_path / "other.pth"
    torch.save({"module." + k: v for k, v in timm.create_model("resnet18", num_classes=0).state_dict().items()}, path)
    s = spec(**{**CLS, "mode": "linear_probe", "checkpoint": str(path)})
    with pytest.raises(ValueError, match="does not fit"):
        create_task("classification", s, ["a", "b"]).build_model()
    with pytest.raises(ValueError, match="does not exist"):
        create_task("classification", spec(**{**CLS, "checkpoint": str(tmp_path / "nope.pth")}), ["a"]).build_model()


def test_pretrained_path_loads_through_timm(tmp_path):
    import timm

    src = timm.create_model("resnet10t", num_classes=2)
    path = tmp_path / "weights.pth"
    torch.save(src.state_dict(), path)
    model = create_task("classification", spec(**{**CLS, "pretrained": str(path)}), ["a", "b"]).build_model()
    assert torch.equal(model.state_dict()["conv1.0.weight"], src.state_dict()["conv1.0.weight"])


def test_classification_resume_continues_after_the_saved_epoch(tmp_path):
    train = colour_split(tmp_path, 16, 0)
    s = spec(**{**CLS, "epochs": 3})
    task = create_task("classification", s, ["red", "blue"])
    torch.manual_seed(0)
    full = task.build_model()
    states, full_metrics = {}, {}

    def keep(e, m, st):
        states[e] = st
        full_metrics[e] = m

    task.fit(full, train, on_epoch=keep)
    # the state is a CPU copy: later training did not change what epoch 1 saved
    assert not torch.equal(states[1]["model"]["fc.weight"], states[3]["model"]["fc.weight"])
    resumed = task.build_model()
    epochs = []
    task.fit(resumed, train, state=states[1], on_epoch=lambda e, m, st: epochs.append((e, m)))
    assert [e for e, _ in epochs] == [2, 3]
    # same schedule position, same shuffle and augmentation: the same run as without the interruption
    assert epochs[-1][1]["lr"] == pytest.approx(full_metrics[3]["lr"])
    assert epochs[-1][1]["loss"] == pytest.approx(full_metrics[3]["loss"], rel=1e-4)
    for k, v in full.state_dict().items():
        assert torch.allclose(v.float(), resumed.state_dict()[k].float(), atol=1e-5), k
    # a state at the last epoch leaves nothing to do; load_state restores the weights for evaluation
    again = task.build_model()
    task.fit(again, train, state=states[3], on_epoch=lambda *a: pytest.fail("no epoch left"))
    fresh = task.load_state(task.build_model(), states[3])
    assert torch.equal(fresh.state_dict()["fc.weight"], states[3]["model"]["fc.weight"])


def test_classification_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        create_task("classification", spec(**{**CLS, "options": {"hflp": True}}), ["a"])
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_task("classification", spec(**{**CLS, "arch": "no_such_net"}), ["a"]).build_model()
    task = create_task("classification", spec(**CLS), ["a", "b"])
    model = task.build_model()
    bad = ImageSamples(colour_split(tmp_path, 2, 0).uris, [0, 5])
    with pytest.raises(ValueError, match=r"class index in \[0, 2\)"):
        task.fit(model, bad)


# --------------------------------------------------------------------------- shared pieces
def test_lr_schedules():
    step = lr_lambda(120, 10, schedule="step", lr_steps=[8, 11], warmup_iters=5, warmup_ratio=0.001)
    assert step(0) == pytest.approx(0.001)
    assert step(5) == 1.0 and step(79) == 1.0
    assert step(80) == pytest.approx(0.1) and step(110) == pytest.approx(0.01)
    cos = lr_lambda(100, 10, schedule="cosine")
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    poly = lr_lambda(100, 10, schedule="poly", poly_power=1.0)
    assert poly(25) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_lambda(10, 1, schedule="exp")


def test_strip_prefixes_and_backbone_loading():
    assert strip_prefixes({"module.backbone.x": 1}, ("module.", "backbone.")) == {"x": 1}
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    sd = {f"module.{k}": torch.zeros_like(v) for k, v in net.state_dict().items() if k.startswith("0.")}
    loaded = load_backbone_weights(net, sd, head_prefixes=("1.",))
    assert loaded == ["0.bias", "0.weight"] and net[0].weight.abs().sum() == 0
    with pytest.raises(ValueError, match="missing"):
        load_backbone_weights(net, {}, head_prefixes=("1.",))
