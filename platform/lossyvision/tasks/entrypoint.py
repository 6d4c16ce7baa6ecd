"""Your own model: ``arch: "package.module:factory"``, and the offline check that ``arch`` exists.

The factory is imported and called with the task's arguments, as keywords, those its signature
takes (all of them if it takes ``**kwargs``):

- ``classes``: the dataset's class names; ``num_classes``: how many outputs the task expects
  (classification and segmentation: ``len(classes)``; detection: ``len(classes) + 1``, index 0
  being the background, as torchvision's detectors count);
- ``image_size``: the sweep's ``image_size``; ``pretrained``: the sweep's ``pretrained`` (false,
  true, or a path or URL your factory may read);
- every entry of ``options.model_kwargs``.

It returns a ``torch.nn.Module`` that meets the task's interface (``docs/tasks.md`` has one worked
example per task). The module must be importable wherever the sweep runs: installed, or on
``PYTHONPATH`` (a Ray cluster's workers too).

:func:`check_entry_point` is what the sweep file's validation calls (through
:func:`lossyvision.tasks.base.check_arch`): it imports the
module, finds the factory, builds the model with ``pretrained: false`` and runs one forward pass on
a tiny batch (the task's ``dry_run``), so a wrong output shape fails when the file is read, not
in a trial. For named architectures each task checks its own registries (timm, torchvision, the
Hugging Face hub), offline.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, Callable, Sequence

import torch

ENTRY_POINT = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")
FACTORY_ARGS = ("classes", "num_classes", "image_size", "pretrained")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one short line (torch's can run to a page)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[:limit] + "..."


def is_entry_point(arch: str) -> bool:
    """Whether ``arch`` names a factory (``pkg.module:factory``) rather than an architecture."""
    return bool(ENTRY_POINT.match(str(arch or "")))


def load_factory(arch: str) -> Callable[..., Any]:
    """The factory ``arch`` names; a ``ValueError`` says what is missing."""
    m = ENTRY_POINT.match(arch)
    if not m:
        raise ValueError(f"arch {arch!r} is not an entry point 'package.module:factory'")
    module_name, attr = m.groups()
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"arch {arch!r}: cannot import module {module_name!r} ({e}); install it or put its "
                         "folder on PYTHONPATH") from None
    except Exception as e:  # the user's module raised while importing
        raise ValueError(f"arch {arch!r}: importing {module_name!r} failed: {type(e).__name__}: {first_line(e)}") \
            from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"arch {arch!r}: module {module_name!r} has no {attr!r}")
    if not callable(factory):
        raise ValueError(f"arch {arch!r}: {module_name}.{attr} is not callable")
    return factory


def factory_kwargs(factory: Callable[..., Any], offered: dict[str, Any], arch: str) -> dict[str, Any]:
    """The offered keywords the factory's signature takes; a required one it is not offered is an error."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins, some C extensions: offer everything
        return dict(offered)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in offered
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        raise ValueError(f"arch {arch!r}: the factory requires {missing}, which the task does not give; "
                         f"it offers {sorted(offered)} (add others with options.model_kwargs)")
    return {k: v for k, v in offered.items() if k in params}


def build_entry_point(spec: Any, classes: Sequence[str], num_classes: int) -> Any:
    """Call the factory of ``spec.arch`` with the task's arguments; a ``torch.nn.Module`` or a ``ValueError``."""
    if getattr(spec, "checkpoint", None):
        raise ValueError(f"arch {spec.arch!r}: checkpoint (backbone weights) is for named architectures; "
                         "an entry point loads its own weights (it receives pretrained)")
    factory = load_factory(spec.arch)
    model_kwargs = dict((getattr(spec, "options", None) or {}).get("model_kwargs") or {})
    offered = {"classes": list(classes), "num_classes": int(num_classes), "image_size": int(spec.image_size),
               "pretrained": spec.pretrained, **model_kwargs}
    try:
        model = factory(**factory_kwargs(factory, offered, spec.arch))
    except Exception as e:
        raise ValueError(f"arch {spec.arch!r}: the factory failed: {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"arch {spec.arch!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


class SegmentationOutput:
    """What SegFormer's forward returns, as far as the segmentation task reads it: ``.logits``."""

    __slots__ = ("logits",)

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class PixelValuesAdapter(torch.nn.Module):
    """Calls a plain ``model(x) -> logits`` the way the segmentation task calls SegFormer:
    ``adapter(pixel_values=x).logits``. Its weights sit under ``model.`` in the state dict."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> SegmentationOutput:
        return SegmentationOutput(self.model(pixel_values))


def check_entry_point(task: Any) -> None:
    """Build the task's model offline (``pretrained: false``) and run the task's dry forward pass."""
    spec = task.spec.model_copy(update={"pretrained": False})
    offline = type(task)(spec, task.classes, device="cpu")
    model = offline.build_model()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            offline.dry_run(model.eval())
    except ValueError as e:
        raise ValueError(f"arch {spec.arch!r}: {e}") from None
    except Exception as e:  # the user's forward raised
        raise ValueError(f"arch {spec.arch!r}: a forward pass on a tiny batch failed: {type(e).__name__}: "
                         f"{first_line(e)}") from None
    finally:
        torch.random.set_rng_state(state)

