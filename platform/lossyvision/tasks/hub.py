"""Hugging Face image classifiers: ``arch: org/name`` (a hub id) or a local ``save_pretrained`` folder.

Any model ``transformers.AutoModelForImageClassification`` loads (ViT, ConvNeXt, Swin, ResNet,
...) becomes a classifier with ``len(classes)`` outputs:

- ``pretrained: true``: the hub's weights, with a new head when the class count differs
  (``ignore_mismatched_sizes``); ``pretrained: DIR``: the weights of a local folder;
- ``pretrained: false``: a random model built from the config, which must then be local (a folder,
  or a hub id already in the Hugging Face cache) -- also what a sweep does to reload a trained
  model, after the trial fetched the config.

The model is wrapped in :class:`HubClassifier` (``forward(x) -> logits``) with the processor's
mean/std as ``pretrained_cfg``, so the classification task normalises as the model was trained.
timm's own hub models keep timm's syntax (``hf-hub:timm/...``) and go through timm.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_local_model(arch: str) -> bool:
    return os.path.isdir(arch) and os.path.isfile(os.path.join(arch, "config.json"))


def is_hub_model(arch: str) -> bool:
    """An ``org/name`` hub id or a local ``save_pretrained`` folder (timm names have no slash)."""
    arch = str(arch or "")
    return is_local_model(arch) or (bool(_HUB_ID.match(arch)) and not arch.startswith(("hf-hub:", "hf_hub:")))


class HubClassifier(torch.nn.Module):
    """A ``transformers`` image classifier as ``forward(pixel tensor) -> logits``."""

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.pretrained_cfg = {"mean": tuple(mean), "std": tuple(std)}  # read by timm's resolve_model_data_config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits

    def get_classifier(self) -> torch.nn.Module:
        """The head (``classifier`` on most architectures), for ``mode: linear_probe``."""
        head = getattr(self.model, "classifier", None)
        if not isinstance(head, torch.nn.Module):
            raise ValueError(f"{type(self.model).__name__} has no 'classifier' head to train in linear_probe mode")
        return head


def _labels(classes: Sequence[str]) -> dict[str, Any]:
    return {"num_labels": len(classes), "id2label": dict(enumerate(classes)),
            "label2id": {c: i for i, c in enumerate(classes)}}


def _mean_std(source: str, local_only: bool) -> tuple[Sequence[float], Sequence[float]]:
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
        return tuple(processor.image_mean), tuple(processor.image_std)
    except (OSError, ValueError, AttributeError, TypeError):
        return IMAGENET_MEAN, IMAGENET_STD


def build_hub_classifier(arch: str, pretrained: bool | str, classes: Sequence[str]) -> HubClassifier:
    from transformers import AutoConfig, AutoModelForImageClassification

    labels = _labels(classes)
    if pretrained is True or (isinstance(pretrained, str) and pretrained.strip()):
        source = arch if pretrained is True else str(pretrained).strip()
        try:
            model = AutoModelForImageClassification.from_pretrained(source, ignore_mismatched_sizes=True, **labels)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the Hugging Face classifier {source!r}: {e}") from None
        return HubClassifier(model, *_mean_std(source, local_only=False))
    local_only = is_local_model(arch)
    try:
        config = AutoConfig.from_pretrained(arch, local_files_only=local_only, **labels)
        model = AutoModelForImageClassification.from_config(config)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot build the Hugging Face classifier {arch!r} from its config: {e}") from None
    return HubClassifier(model, *_mean_std(arch, local_only=True))


def check_hub_classifier(arch: str, pretrained: bool | str) -> None:
    """Offline: the id is well formed; without weights to fetch, the config must be local."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoConfig

    if not is_local_model(arch):
        try:
            validate_repo_id(arch)
        except HFValidationError as e:
            raise ValueError(f"arch {arch!r} is not a Hugging Face hub id: {e}") from None
    if isinstance(pretrained, str) and pretrained.strip():
        if not is_local_model(pretrained.strip()):
            raise ValueError(f"pretrained {pretrained!r}: not a local save_pretrained folder (with config.json)")
        return
    if pretrained is True and not is_local_model(arch):
        return  # weights and config come from the hub when the trial starts
    try:
        config = AutoConfig.from_pretrained(arch, local_files_only=True)
    except (OSError, ValueError):
        raise ValueError(f"arch {arch!r}: pretrained: false builds the model from its config, which is neither a "
                         "local folder nor in the Hugging Face cache; use pretrained: true (weights fetched when "
                         "training starts) or a local save_pretrained folder") from None
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    except ImportError:  # pragma: no cover - transformers moved it
        return
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(f"arch {arch!r}: a {config.model_type!r} model is no image classifier "
                         "(AutoModelForImageClassification does not know it)")
