"""Achieved quality of a decoded image against its reference, by metric name.

The distance a codec is asked for is nominal (libjxl overshoots its target Butteraugli distance
on real photos), so the compress job can measure what it actually got::

    measure_quality("ssimulacra2", reference_rgb, decoded_rgb)   # higher is better, 100 = identical
    measure_quality("butteraugli", reference_rgb, decoded_rgb)   # lower is better, 0 = identical

Both take uint8 HxWx3 arrays of the same shape. A new metric is one function decorated with
``@quality_metric(name, higher_is_better=..., check=...)``, where ``check`` raises ``ValueError``
when the metric's tool is not installed (so a job can refuse to start instead of failing per image).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lossyvision.imageio import check_rgb8
from lossyvision.registry import Registry

QualityFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class QualityMetric:
    """A registered metric: its scoring function, its direction and its availability check."""

    name: str
    fn: QualityFn
    higher_is_better: bool
    check: Callable[[], None]


QUALITY_METRICS: Registry[QualityMetric] = Registry("quality metric")


def quality_metric(name: str, *, higher_is_better: bool, check: Callable[[], None] = lambda: None):
    """Register ``fn(reference, distorted) -> float`` as metric ``name``; returns ``fn`` unchanged."""

    def decorator(fn: QualityFn) -> QualityFn:
        QUALITY_METRICS.add(name, QualityMetric(name, fn, higher_is_better, check))
        return fn

    return decorator


#: Display brightness (nits) passed to ``butteraugli_main``; see :func:`butteraugli`.
BUTTERAUGLI_INTENSITY_TARGET = 80.0
#: SSIMULACRA2 blurs and downsamples; below this side length it has nothing to measure.
SSIMULACRA2_MIN_SIDE = 8


def measure_quality(metric: str, reference: np.ndarray, distorted: np.ndarray) -> float:
    """Score ``distorted`` against ``reference`` (both uint8 HxWx3, same shape) with ``metric``.

    Raises ``UnknownNameError`` (a ``KeyError``) for an unknown metric, ``ValueError`` for bad
    arrays or a missing tool.
    """
    entry = QUALITY_METRICS.get(metric)
    reference, distorted = check_rgb8(reference), check_rgb8(distorted)
    if reference.shape != distorted.shape:
        raise ValueError(f"{metric}: shapes differ: reference {reference.shape} vs distorted {distorted.shape}")
    return float(entry.fn(reference, distorted))


#: Short name used by the compress job.
measure = measure_quality


def check_available(metric: str) -> None:
    """Raise ``UnknownNameError`` (``KeyError``) or ``ValueError`` unless ``metric`` can run here."""
    QUALITY_METRICS.get(metric).check()


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: ``True`` for ssimulacra2, ``False`` for butteraugli."""
    return QUALITY_METRICS.get(metric).higher_is_better


def _png(rgb: np.ndarray) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.png_encode(rgb, level=1))


def _ssimulacra2_importable() -> None:
    try:
        import ssimulacra2  # noqa: F401
    except ImportError:
        raise ValueError("ssimulacra2 needs the 'ssimulacra2' package: pip install 'lossyvision[quality]'") from None


@quality_metric("ssimulacra2", higher_is_better=True, check=_ssimulacra2_importable)
def ssimulacra2(reference: np.ndarray, distorted: np.ndarray) -> float:
    """SSIMULACRA2 from the PyPI ``ssimulacra2`` package (pure numpy/scipy, ~2 s/MP).

    Higher is better: 100 for identical images, ~90 visually lossless, ~70 high quality, ~50
    medium. Images need both sides >= 8 pixels. The package only reads files, so both images
    are handed over as in-memory PNGs (lossless).
    """
    _ssimulacra2_importable()
    from ssimulacra2 import compute_ssimulacra2

    height, width = reference.shape[:2]
    if min(height, width) < SSIMULACRA2_MIN_SIDE:
        raise ValueError(f"ssimulacra2 needs images of at least {SSIMULACRA2_MIN_SIDE}x{SSIMULACRA2_MIN_SIDE} "
                         f"pixels, got {width}x{height}")
    return float(compute_ssimulacra2(io.BytesIO(_png(reference)), io.BytesIO(_png(distorted))))


def butteraugli_executable() -> str:
    """Path of libjxl's ``butteraugli_main``, or a ``ValueError`` saying how to install it."""
    path = shutil.which("butteraugli_main")
    if path is None:
        raise ValueError(
            "butteraugli needs libjxl's 'butteraugli_main' on PATH: on Debian/Ubuntu "
            "'apt-get install libjxl-devtools'; or build libjxl with -DJPEGXL_ENABLE_DEVTOOLS=ON"
        )
    return path


@quality_metric("butteraugli", higher_is_better=False, check=butteraugli_executable)
def butteraugli(reference: np.ndarray, distorted: np.ndarray, *,
                intensity_target: float = BUTTERAUGLI_INTENSITY_TARGET) -> float:
    """Butteraugli max-norm distance from libjxl's ``butteraugli_main`` (~0.5 s/MP).

    Lower is better: 0 for identical, ~1 "just noticeable". The intensity target (the display
    brightness the distance assumes) is passed explicitly: 80 nits, ``butteraugli_main``'s own
    default. libjxl assumes 255 nits for SDR images, which gives larger distances (about 1.4x
    on photos); values are only comparable at the same intensity target.
    """
    exe = butteraugli_executable()
    with tempfile.TemporaryDirectory(prefix="lossyvision-butteraugli-") as tmp:
        ref_path, dist_path = os.path.join(tmp, "reference.png"), os.path.join(tmp, "distorted.png")
        with open(ref_path, "wb") as f:
            f.write(_png(reference))
        with open(dist_path, "wb") as f:
            f.write(_png(distorted))
        result = subprocess.run(
            [exe, ref_path, dist_path, "--intensity_target", f"{intensity_target:g}"],
            capture_output=True, text=True, timeout=600,
        )
    if result.returncode != 0:
        raise RuntimeError(f"butteraugli_main failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    try:
        return float(result.stdout.split()[0])  # first line: the max-norm distance
    except (IndexError, ValueError):
        raise RuntimeError(f"unexpected butteraugli_main output: {result.stdout[:200]!r}") from None
