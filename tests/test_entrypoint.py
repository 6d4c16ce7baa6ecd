"""Your own model (``arch: "package.module:factory"``), Hugging Face classifiers, and the read-time arch check.

The worked examples of docs/tasks.md are extracted into ``my_models.py`` and trained here on tiny
real-photo data (no Ray), so the documentation stays correct.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from datasets_fixtures import write_image  # noqa: E402
from sources_fixtures import make_coco  # noqa: E402
from test_tasks import one_torch_thread, spec  # noqa: E402,F401  (one_torch_thread: an autouse fixture)

from lossyvision.data import ImageSamples  # noqa: E402
from lossyvision.preflight import check_model  # noqa: E402
from lossyvision.tasks import create_task  # noqa: E402
from lossyvision.tasks.base import _CHECKED  # noqa: E402
from lossyvision.tasks.entrypoint import is_entry_point  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"


def docs_models_source() -> str:
    """The ``# my_models.py (...)`` blocks of docs/tasks.md, in order: one module."""
    blocks = re.findall(r"```python\n(# my_models\.py \(\w+\)\n.*?)```", DOCS.read_text(), re.S)
    assert [b.splitlines()[0] for b in blocks] == [
        "# my_models.py (classification)", "# my_models.py (detection)", "# my_models.py (segmentation)"]
    return "\n\n".join(blocks)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """``my_models`` (the docs' examples) and ``lv_bad_models`` (broken factories) on sys.path."""
    d = tmp_path_factory.mktemp("user_models")
    (d / "my_models.py").write_text(docs_models_source())
    (d / "lv_bad_models.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        CALLS = []

        def wide(num_classes):
            CALLS.append(num_classes)
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1000))

        def counted(num_classes, pretrained):
            CALLS.append(pretrained)
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))

        def needs_depth(num_classes, depth):
            return nn.Linear(3, num_classes)

        def not_a_module(num_classes):
            return {"weights": 1}

        def crashes(num_classes):
            raise RuntimeError("no GPU here")

        class Broken(nn.Module):
            def forward(self, x):
                raise RuntimeError("shapes do not match" + chr(10) + "(a long second line)")

        def broken_forward():
            return Broken()

        class TensorDetector(nn.Module):
            def forward(self, images, targets=None):
                return torch.zeros(len(images), 4)

        def tensor_detector(num_classes):
            return TensorDetector()

        def flat_segmenter(num_classes):
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))

        def no_head(num_classes, **kwargs):
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))

        not_callable = 3
    '''))
    (d / "lv_import_fails.py").write_text("raise ImportError('needs a licence server')\n")
    sys.path.insert(0, str(d))
    _CHECKED.clear()
    yield d
    sys.path.remove(str(d))
    for name in ("my_models", "lv_bad_models", "lv_import_fails"):
        sys.modules.pop(name, None)


def colour_samples(tmp_path: Path, n: int, seed: int) -> ImageSamples:
    """An easy two-class split as PNG files: reddish vs bluish noise."""
    rng = np.random.default_rng(seed)
    uris, labels = [], []
    for i in range(n):
        img = rng.integers(0, 90, size=(20, 24, 3))
        img[..., 0 if i % 2 == 0 else 2] += 150
        uris.append(str(write_image(tmp_path / f"c{seed}_{i}.png", img.astype(np.uint8))))
        labels.append(i % 2)
    return ImageSamples(uris, labels)


# --- the docs' examples ------------------------------------------------------------------------------
def test_entry_point_syntax():
    assert is_entry_point("my_models:small_cnn") and is_entry_point("a.b_c.d:f2")
    for name in ("resnet50", "nvidia/mit-b5", "hf-hub:timm/resnet50.a1_in1k", "hf_hub:org/x", "a:b:c", "a.:f"):
        assert not is_entry_point(name), name


def test_docs_classification_example_trains_reloads_and_probes(models_dir, tmp_path):
    torch.manual_seed(0)
    s = spec(task="classification", arch="my_models:small_cnn", image_size=24, batch_size=8, lr=3e-3, epochs=3,
             options={"model_kwargs": {"width": 8}})
    task = create_task("classification", s, ["red", "blue"])
    model = task.build_model()
    assert type(model).__name__ == "SmallCNN" and model.head.out_features == 2 and model.head.in_features == 16
    task.fit(model, colour_samples(tmp_path, 32, 0))
    scores = task.evaluate(model, colour_samples(tmp_path, 16, 1))
    assert scores["top1"] > 0.75  # chance is 0.5
    # Reloading, as the sweep evaluates: rebuilt with pretrained false, the state dict loads strictly.
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    again = create_task("classification", s.model_copy(update={"pretrained": str(weights)}), ["red", "blue"])
    reloaded = again.build_model()  # the factory reads pretrained: PATH itself
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    # linear_probe trains only what get_classifier() returns
    probe = create_task("classification", s.model_copy(update={"mode": "linear_probe", "epochs": 1}), ["r", "b"])
    m = probe.build_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    probe.fit(m, colour_samples(tmp_path, 8, 2))
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.weight", "head.bias"}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp("coco") / "coco", n_train=4, n_val=2)


def coco_samples(root: Path, split: str, masks: bool = False) -> tuple[ImageSamples, list[str]]:
    from lossyvision.datasets import create_dataset

    reader = create_dataset("coco", str(root), masks=masks)
    records = reader.select(split)
    return ImageSamples([str(root / r.relpath) for r in records], [reader.load_target(r) for r in records]), \
        reader.classes


def test_docs_detection_example_trains_and_evaluates_on_coco(models_dir, coco_root):
    torch.manual_seed(0)
    train, classes = coco_samples(coco_root, "train")
    test, _ = coco_samples(coco_root, "val")
    s = spec(task="detection", arch="my_models:tiny_faster_rcnn", image_size=64, batch_size=2, epochs=1, lr=0.01,
             options={"warmup_iters": 1})
    task = create_task("detection", s, classes)
    model = task.build_model()
    assert model.roi_heads.box_predictor.cls_score.out_features == len(classes) + 1  # + background
    seen = []
    task.fit(model, train, on_epoch=lambda e, m, st: seen.append(m))
    assert seen and {"loss_classifier", "loss_box_reg", "loss_objectness"} <= set(seen[0])
    metrics = task.evaluate(model, test)
    assert set(metrics) == {"map50"} and 0.0 <= metrics["map50"] <= 1.0


def test_docs_segmentation_example_trains_and_evaluates_on_coco_masks(models_dir, coco_root):
    torch.manual_seed(0)
    train, classes = coco_samples(coco_root, "train", masks=True)
    test, _ = coco_samples(coco_root, "val", masks=True)
    s = spec(task="segmentation", arch="my_models:tiny_segmenter", batch_size=2, epochs=1, lr=1e-3,
             options={"crop_size": 32, "eval_mode": "whole"})
    task = create_task("segmentation", s, classes)
    model = task.build_model()
    assert all(k.startswith("model.") for k in model.state_dict())
    task.fit(model, train)
    metrics = task.evaluate(model, test)
    assert {"miou", "macc"} <= set(metrics) and all(0.0 <= v <= 1.0 for v in metrics.values())
    rebuilt = create_task("segmentation", s, classes).build_model()
    rebuilt.load_state_dict(model.state_dict())  # strict: same architecture without the weights


def test_docs_examples_pass_the_read_time_check(models_dir):
    check_model(spec(task="classification", arch="my_models:small_cnn", image_size=32))
    check_model(spec(task="detection", arch="my_models:tiny_faster_rcnn", image_size=64))
    check_model(spec(task="segmentation", arch="my_models:tiny_segmenter", options={"crop_size": 64}))


# --- what the read-time check catches ------------------------------------------------------------
@pytest.mark.parametrize("kw, message", [
    ({"arch": "no_such_module_x:f"}, r"cannot import module 'no_such_module_x' .*PYTHONPATH"),
    ({"arch": "lv_import_fails:f"}, r"cannot import module 'lv_import_fails' \(needs a licence server\)"),
    ({"arch": "lv_bad_models:nope"}, r"module 'lv_bad_models' has no 'nope'"),
    ({"arch": "lv_bad_models:not_callable"}, r"lv_bad_models.not_callable is not callable"),
    ({"arch": "lv_bad_models:wide", "image_size": 16},
     r"'lv_bad_models:wide': a batch of 2 images at 16x16 gave \(2, 1000\), not logits of shape \(2, 2\)"),
    ({"arch": "lv_bad_models:needs_depth"}, r"the factory requires \['depth'\].*model_kwargs"),
    ({"arch": "lv_bad_models:not_a_module"}, r"the factory returned dict, not a torch.nn.Module"),
    ({"arch": "lv_bad_models:crashes"}, r"the factory failed: RuntimeError: no GPU here"),
    ({"arch": "lv_bad_models:broken_forward", "image_size": 16},
     r"a forward pass on a tiny batch failed: RuntimeError: shapes do not match$"),  # the first line only
    ({"arch": "lv_bad_models:no_head", "mode": "linear_probe", "image_size": 16}, r"linear_probe mode needs"),
    ({"arch": "my_models:small_cnn", "checkpoint": "/x.pt"}, r"checkpoint \(backbone weights\) is for named"),
    ({"task": "detection", "arch": "lv_bad_models:tensor_detector"}, r"gave Tensor, not a list with one dict"),
    ({"task": "segmentation", "arch": "lv_bad_models:flat_segmenter"}, r"not logits of shape \(1, 2, h, w\)"),
])
def test_read_time_check_of_entry_points(models_dir, kw, message):
    kw = {"task": "classification", **kw}
    with pytest.raises(ValueError, match=message):
        check_model(spec(**kw))


def test_the_check_builds_once_per_process_and_without_pretrained_weights(models_dir):
    import lv_bad_models

    lv_bad_models.CALLS.clear()
    for _ in range(2):
        with pytest.raises(ValueError):
            check_model(spec(task="classification", arch="lv_bad_models:wide", image_size=12))
    assert lv_bad_models.CALLS == [2, 2]  # failures are not cached: a fixed module is seen at once
    lv_bad_models.CALLS.clear()
    for _ in range(3):
        check_model(spec(task="classification", arch="lv_bad_models:counted", image_size=12, pretrained=True))
    assert lv_bad_models.CALLS == [False]  # built once, and never asked for pretrained weights


@pytest.mark.parametrize("kw, message", [
    ({"task": "classification", "arch": "resnet_nope"}, r"unknown timm architecture 'resnet_nope'"),
    ({"task": "classification", "arch": "resnet10t", "pretrained": "/no/such/w.pth"}, r"/no/such/w.pth do not exist"),
    ({"task": "classification", "arch": "google/vit-base-patch16-224"},
     r"pretrained: false builds the model from its config, which is neither a local folder nor in the Hugging Face"),
    ({"task": "classification", "arch": "hf-hub:timm/not-cached-x"}, r"not in the local cache"),
    ({"task": "detection", "arch": "retinanet_resnet50_fpn"},
     r"unknown detection architecture 'retinanet_resnet50_fpn'"),
    ({"task": "segmentation", "arch": "org/segformer-custom"}, r"names no size preset for pretrained: false"),
    ({"task": "segmentation", "arch": "segformer-b0", "options": {"model_kwargs": {"a": 1}}}, r"model_kwargs is for"),
])
def test_read_time_check_of_named_architectures(kw, message):
    with pytest.raises(ValueError, match=message):
        check_model(spec(**kw))


def test_named_architectures_that_need_the_network_only_when_training_pass_offline():
    check_model(spec(task="classification", arch="resnet50.a1_in1k", pretrained=True))
    check_model(spec(task="classification", arch="google/vit-base-patch16-224", pretrained=True))
    check_model(spec(task="classification", arch="hf-hub:timm/resnet50.a1_in1k", pretrained=True))
    check_model(spec(task="segmentation", arch="nvidia/mit-b5", pretrained=True))
    check_model(spec(task="segmentation", arch="segformer-tiny"))
    check_model(spec(task="detection", arch="fasterrcnn_mobilenet_v3_large_320_fpn"))
    check_model(spec(task="detection", arch="faster-rcnn_r50_fpn_1x", options={"backend": "mmdet"}))  # mmdet's own names


# --- Hugging Face classifiers ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    """A tiny ViT image classifier saved with save_pretrained, with an image processor of mean/std 0.5."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    d = tmp_path_factory.mktemp("hf") / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=24, patch_size=8, num_labels=2)
    ViTForImageClassification(config).save_pretrained(d)
    ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3, size={"height": 24, "width": 24}).save_pretrained(d)
    return d


def test_hugging_face_classifier_from_a_local_folder(tiny_vit, tmp_path):
    torch.manual_seed(0)
    s = spec(task="classification", arch=str(tiny_vit), image_size=24, batch_size=8, lr=3e-3, epochs=2)
    task = create_task("classification", s, ["red", "blue"])
    model = task.build_model()
    assert type(model).__name__ == "HubClassifier" and model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    assert model(torch.zeros(1, 3, 24, 24)).shape == (1, 2)
    task.fit(model, colour_samples(tmp_path, 16, 0))
    assert 0.0 <= task.evaluate(model, colour_samples(tmp_path, 8, 1))["top1"] <= 1.0
    # pretrained: DIR loads the folder's weights; the head is new when the class count differs
    from transformers import ViTForImageClassification

    saved = ViTForImageClassification.from_pretrained(tiny_vit).state_dict()
    loaded = create_task("classification", s.model_copy(update={"pretrained": str(tiny_vit)}),
                         ["a", "b", "c"]).build_model()
    assert loaded.model.classifier.out_features == 3
    body = {k: v for k, v in saved.items() if not k.startswith("classifier.")}
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in body.items())
    # linear probe: the transformers head is the classifier
    probe = create_task("classification", s.model_copy(update={"mode": "linear_probe"}), ["a", "b"]).build_model()
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"model.classifier.weight",
                                                                           "model.classifier.bias"}
