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


# --------------------------------------------------------------------------- detection
def samples_from_reader(reader, split: str) -> ImageSamples:
    """The real path: a dataset reader's records and targets, decoded from files."""
    from lossyvision.store import join

    records = reader.select(split)
    return ImageSamples([join(reader.root, r.relpath) for r in records], [reader.load_target(r) for r in records])


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from datasets_fixtures import make_voc

    from lossyvision.datasets import create_dataset

    reader = create_dataset("voc", str(make_voc(tmp_path_factory.mktemp("voc"), n_train=4, n_val=2)))
    return reader, samples_from_reader(reader, "train"), samples_from_reader(reader, "val")


DET = dict(task="detection", arch="fasterrcnn_mobilenet_v3_large_320_fpn", batch_size=2, epochs=1,
           options={"min_size": 128, "max_size": 160, "warmup_iters": 1})


def test_detection_recipe_defaults_follow_mmdet_1x():
    task = create_task("detection", spec(task="detection", arch="fasterrcnn_resnet50_fpn"), ["cat"])
    assert (task.epochs, task.batch_size, task.lr, task.weight_decay, task.lr_steps) == (12, 16, 0.02, 1e-4, [8, 11])
    task = create_task("detection", spec(task="detection", arch="fasterrcnn_resnet50_fpn", batch_size=4), ["cat"])
    assert task.lr == pytest.approx(0.005)  # linear scaling: 0.02 per 16 images
    task = create_task("detection", spec(task="detection", arch="fasterrcnn_resnet50_fpn", epochs=24, lr=0.01), ["cat"])
    assert (task.epochs, task.lr, task.lr_steps) == (24, 0.01, [16, 22])
    with pytest.raises(ValueError, match="unknown detection backend"):
        create_task("detection", spec(task="detection", arch="x", options={"backend": "detectron"}), ["cat"])


def test_detection_r50_fpn_matches_the_recipe_structure(tmp_path):
    from torchvision.models import resnet50
    from torchvision.ops import FrozenBatchNorm2d

    # an "ImageNet" ResNet-50 checkpoint (random here), as mmdet's torchvision://resnet50
    ckpt = tmp_path / "r50.pth"
    r50 = resnet50()
    torch.save(r50.state_dict(), ckpt)
    s = spec(task="detection", arch="fasterrcnn_resnet50_fpn", checkpoint=str(ckpt), options={"min_size": 128, "max_size": 160})
    model = create_task("detection", s, ["cat", "dog"]).build_model()
    body = model.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, r50.layer3[0].conv1.weight)
    assert torch.equal(body.bn1.running_mean, r50.bn1.running_mean)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "layer1"} and trainable == {"layer2", "layer3", "layer4"}
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # 2 classes + background
    assert (model.transform.min_size, model.transform.max_size) == ((128,), 160)
    assert model.rpn._post_nms_top_n["training"] == 1000 and model.rpn._post_nms_top_n["testing"] == 1000


@pytest.mark.slow
def test_detection_trains_evaluates_and_resumes_on_voc_fixture(voc):
    reader, train, val = voc
    task = create_task("detection", spec(**{**DET, "epochs": 2}), reader.classes)
    torch.manual_seed(0)
    model = task.build_model()
    states = {}
    logged = []
    task.fit(model, train, on_epoch=lambda e, m, s: (states.__setitem__(e, s), logged.append(m)))
    assert sorted(states) == [1, 2]
    assert {"loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(logged[0])
    assert all(math.isfinite(m["loss"]) for m in logged)
    scores = task.evaluate(model, val)
    assert set(scores) == {"map50"}
    assert 0.0 <= scores["map50"] <= 1.0
    # resume from epoch 1 runs epoch 2 only
    resumed = task.build_model()
    seen = []
    task.fit(resumed, train, state=states[1], on_epoch=lambda e, m, s: seen.append(e))
    assert seen == [2]


def test_detection_collate_flips_boxes_and_drops_difficult():
    from lossyvision.tasks.detection import DetectionCollate

    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :5] = 255  # left stripe
    target = {"boxes": np.array([[0, 0, 5, 10], [10, 2, 12, 4]], np.float32), "labels": np.array([0, 1]),
              "difficult": np.array([False, True])}
    torch.manual_seed(0)
    flips = []
    for _ in range(20):
        (img,), (t,) = DetectionCollate(2, train=True)([(rgb, target)])
        assert t["labels"].tolist() == [1]  # difficult dropped, label + 1
        flipped = bool(img[0, 0, -1] == 255)
        flips.append(flipped)
        assert t["boxes"].tolist() == ([[15, 0, 20, 10]] if flipped else [[0, 0, 5, 10]])
    assert any(flips) and not all(flips)
    (_,), (t,) = DetectionCollate(2, train=False)([(rgb, target)])
    assert t["labels"].tolist() == [0, 1] and t["difficult"].tolist() == [False, True]
    with pytest.raises(ValueError, match="labels must lie"):
        DetectionCollate(1, train=False)([(rgb, target)])


# --------------------------------------------------------------------------- segmentation
@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    from datasets_fixtures import make_cityscapes

    from lossyvision.datasets import create_dataset

    reader = create_dataset("cityscapes", str(make_cityscapes(tmp_path_factory.mktemp("city"), n_train=2, n_val=2)))
    return reader, samples_from_reader(reader, "train"), samples_from_reader(reader, "val")


SEG = dict(task="segmentation", arch="segformer-tiny", batch_size=2, epochs=1, lr=1e-3,
           options={"crop_size": 64, "warmup_iters": 0, "eval_stride": 48})


def test_segformer_presets_and_config():
    from lossyvision.tasks.segmentation import preset_for

    assert preset_for("nvidia/mit-b5")["depths"] == [3, 6, 40, 3]
    assert preset_for("segformer-b0")["hidden_sizes"] == [32, 64, 160, 256]
    assert preset_for("nvidia/segformer-b2-finetuned-cityscapes-1024-1024")["depths"] == [3, 4, 6, 3]
    assert preset_for("resnet50") is None
    model = create_task("segmentation", spec(**SEG), [f"c{i}" for i in range(19)]).build_model()
    assert model.config.num_labels == 19 and model.config.hidden_sizes == [8, 16, 32, 64]
    assert model.config.semantic_loss_ignore_index == 255
    with pytest.raises(ValueError, match="names no size preset"):
        create_task("segmentation", spec(**{**SEG, "arch": "unet"}), ["a", "b"]).build_model()


def test_segmentation_collate_crops_pads_and_ignores():
    from lossyvision.tasks.segmentation import SegmentationCollate

    rgb = np.full((20, 30, 3), 7, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[:, 15:] = 1
    torch.manual_seed(0)
    x, y = SegmentationCollate(2, train=True, crop_size=64, ratio_range=(1.0, 1.0), hflip=False)([(rgb, lambda: mask)])
    assert x.shape == (1, 3, 64, 64) and y.shape == (1, 64, 64) and y.dtype == torch.int64
    assert (y[0, :20, :30].numpy() == mask).all()  # crop larger than the image: nothing cut
    assert (y[0, 20:] == 255).all() and (y[0, :, 30:] == 255).all()  # padding is ignored
    assert (x[0, :, 20:] == 0).all()
    images, masks = SegmentationCollate(2, train=False, crop_size=64)([(rgb, mask)])
    assert images[0].shape == (3, 20, 30) and masks[0] is mask
    with pytest.raises(ValueError, match="outside"):
        SegmentationCollate(2, train=False)([(rgb, np.full((20, 30), 5, np.uint8))])
    with pytest.raises(ValueError, match="does not match"):
        SegmentationCollate(2, train=False)([(rgb, np.zeros((3, 3), np.uint8))])


def test_segmentation_slide_inference_covers_every_pixel():
    task = create_task("segmentation", spec(**SEG), ["a", "b"])
    model = task.build_model().eval()
    img = torch.randint(0, 255, (1, 3, 100, 130), dtype=torch.uint8)
    with torch.no_grad():
        slide = task.logits(model, img)
        assert slide.shape == (1, 2, 100, 130) and torch.isfinite(slide).all()
        whole = create_task("segmentation", spec(**{**SEG, "options": {**SEG["options"], "eval_mode": "whole"}}),
                            ["a", "b"]).logits(model, img)
    assert whole.shape == slide.shape
    # an image no larger than the crop is one window: slide == whole
    small = img[:, :, :64, :64]
    with torch.no_grad():
        assert torch.allclose(task.logits(model, small),
                              create_task("segmentation", spec(**{**SEG, "options": {"eval_mode": "whole"}}),
                                          ["a", "b"]).logits(model, small), atol=1e-5)


def test_segmentation_trains_evaluates_and_resumes_on_cityscapes_fixture(cityscapes):
    reader, train, val = cityscapes
    assert len(reader.classes) == 19
    task = create_task("segmentation", spec(**{**SEG, "epochs": 2}), reader.classes)
    torch.manual_seed(0)
    model = task.build_model()
    states, logged = {}, []
    task.fit(model, train, on_epoch=lambda e, m, s: (states.__setitem__(e, s), logged.append(m)))
    assert sorted(states) == [1, 2]
    assert all(math.isfinite(m["loss"]) and 0 <= m["train_pixel_acc"] <= 1 for m in logged)
    scores = task.evaluate(model, val)
    assert set(scores) == {"miou", "macc"}
    assert 0.0 <= scores["miou"] <= 1.0 and 0.0 <= scores["macc"] <= 1.0
    seen = []
    task.fit(task.build_model(), train, state=states[1], on_epoch=lambda e, m, s: seen.append(e))
    assert seen == [2]


def test_segmentation_loss_ignores_255_and_survives_all_void_crops():
    from lossyvision.tasks.segmentation import SegmentationTask

    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    masks = torch.full((1, 8, 8), 255, dtype=torch.int64)
    loss = SegmentationTask.loss(logits, masks)
    assert loss.item() == 0.0
    loss.backward()
    masks[0, 0, 0] = 1
    assert SegmentationTask.loss(logits, masks).item() == pytest.approx(math.log(3))


# --------------------------------------------------------------------------- optional mmdet backend
def test_mmdet_backend_absent_gives_install_instructions():
    from lossyvision.tasks.mmdet_backend import mmdet_available

    if mmdet_available():
        pytest.skip("mmdet and mmcv ops are installed")
    task = create_task("detection", spec(**{**DET, "options": {"backend": "mmdet"}}), ["cat"])
    with pytest.raises(ImportError, match=r"pip install 'lossyvision\[mmdet\]'"):
        task.build_model()


@pytest.mark.slow
def test_mmdet_backend_trains_and_evaluates(voc):
    pytest.importorskip("mmdet")
    from lossyvision.tasks.mmdet_backend import mmdet_available

    if not mmdet_available():
        pytest.skip("mmcv's compiled ops are missing")
    reader, train, val = voc
    s = spec(task="detection", arch="faster-rcnn_r50_fpn_1x", batch_size=2, epochs=1,
             options={"backend": "mmdet", "min_size": 128, "max_size": 160, "warmup_iters": 1})
    task = create_task("detection", s, reader.classes)
    model = task.build_model()
    logged = []
    task.fit(model, train, on_epoch=lambda e, m, st: logged.append(m))
    assert logged and math.isfinite(logged[0]["loss"])
    assert 0.0 <= task.evaluate(model, val)["map50"] <= 1.0


# --------------------------------------------------------------------------- reloading trained weights
@pytest.mark.parametrize("kw", [
    {**CLS, "mode": "linear_probe"},
    {"task": "detection", "arch": "fasterrcnn_resnet50_fpn", "options": {"min_size": 64, "max_size": 64}},
    {**DET},
    {**SEG},
], ids=["classification", "detection-r50", "detection-mobilenet", "segmentation"])
def test_trained_state_loads_into_a_model_rebuilt_without_weights(tmp_path, kw):
    """The sweep rebuilds models with pretrained: false, checkpoint: none, then loads the trained state
    dict strictly: the architecture must not depend on where the initial weights came from."""
    classes = ["a", "b"]
    if kw["task"] == "classification":
        ckpt = tmp_path / "swav.pth"
        swav_style_checkpoint(ckpt)
        trained_spec = spec(**{**kw, "checkpoint": str(ckpt)})
    elif kw["arch"] == "fasterrcnn_resnet50_fpn":
        from torchvision.models import resnet50

        ckpt = tmp_path / "r50.pth"
        torch.save(resnet50().state_dict(), ckpt)
        trained_spec = spec(**{**kw, "checkpoint": str(ckpt)})
    else:
        trained_spec = spec(**kw)
    trained = create_task(kw["task"], trained_spec, classes).build_model()
    plain_spec = trained_spec.model_copy(update={"pretrained": False, "checkpoint": None})
    task = create_task(kw["task"], plain_spec, classes)
    rebuilt = task.build_model()
    rebuilt.load_state_dict(trained.state_dict())  # strict
    task.load_state(rebuilt, {"epoch": 1, "model": trained.state_dict()})


# --------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
def test_tasks_train_on_cuda_with_bf16_autocast(tmp_path, cityscapes):
    train = colour_split(tmp_path, 16, 0)
    task = create_task("classification", spec(**{**CLS, "options": {"amp": True}}), ["red", "blue"], device="cuda")
    model = task.build_model()
    states = []
    task.fit(model, train, on_epoch=lambda e, m, s: states.append(s))
    assert next(model.parameters()).is_cuda
    assert all(not v.is_cuda for v in states[-1]["model"].values())  # states are CPU copies
    assert 0.0 <= task.evaluate(model, train)["top1"] <= 1.0
    x01 = torch.rand(2, 3, 32, 32, device="cuda", requires_grad=True)
    task.probabilities(model.eval(), x01)[:, 1].sum().backward()
    assert x01.grad is not None
    reader, seg_train, seg_val = cityscapes
    seg = create_task("segmentation", spec(**{**SEG, "options": {**SEG["options"], "amp": True}}), reader.classes,
                      device="cuda")
    seg_model = seg.build_model()
    seg.fit(seg_model, seg_train)
    assert set(seg.evaluate(seg_model, seg_val)) == {"miou", "macc"}


# --------------------------------------------------------------------------- serving (MLflow's logged model)
@pytest.mark.parametrize("kw", [CLS, DET, SEG], ids=["classification", "detection", "segmentation"])
def test_serving_module_takes_uint8_images_and_gives_one_tensor(kw):
    classes = ["a", "b", "c"]
    task = create_task(kw["task"], spec(**kw), classes)
    model = task.build_model()
    serving = task.serving(model)
    x = torch.randint(0, 256, (2, 3, serving.size, serving.size), dtype=torch.uint8)
    with torch.no_grad():
        out = serving.module(x)
    assert isinstance(out, torch.Tensor) and out.shape[0] == 2
    if kw["task"] == "classification":
        assert out.shape == (2, 3) and torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
        assert serving.serialization == "pt2" and serving.size == kw.get("image_size", 224)
    elif kw["task"] == "segmentation":
        assert out.shape == (2, 3, serving.size, serving.size) and serving.serialization == "pt2"
    else:
        assert out.shape[1:] == (model.roi_heads.detections_per_img, 6) and serving.serialization == "pickle"
        padding = out[..., 4] == 0
        assert (out[..., 5][padding] == -1).all() and (out[..., 5][~padding] >= 0).all()
