"""What a sweep asks of the machines, checked before anything runs: CPUs and GPUs against a local Ray or the
cluster's nodes, and the decoded caches' disk."""

from __future__ import annotations

import os

import pandas as pd

from lossyvision.cache import cache_problems
from lossyvision.spec import SpecError, Sweep
from lossyvision.sweep.trials import read_manifest


def local_resources(num_cpus: int | None) -> dict[str, float]:
    """What a local Ray started here would have: its CPUs and this machine's CUDA devices."""
    try:
        import torch

        gpus = float(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no torch or no driver: no GPU
        gpus = 0.0
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": gpus}


def check_local_resources(sweep: Sweep, resources: dict[str, float]) -> None:
    """A local Ray never grows: a trial or cell asking for more than it has would wait forever."""
    have = {"cpu": resources.get("CPU", 0.0), "gpu": resources.get("GPU", 0.0)}
    custom = sorted(sweep.resources.trial.custom)
    if custom:
        raise SpecError(f"resources.trial.custom: {', '.join(custom)} exist only on a cluster whose nodes were "
                        "started with them; run on a cluster (RAY_ADDRESS or --address)")
    for what, res in (("trial", sweep.resources.trial), ("eval", sweep.resources.eval)):
        for kind in ("cpu", "gpu"):
            want = getattr(res, kind) * getattr(res, "workers", 1)  # data-parallel: per worker
            if want > have[kind]:
                raise SpecError(f"resources.{what}.{kind}: asks for {want:g} but the local Ray has "
                                f"{have[kind]:g}; lower it or run on a cluster (RAY_ADDRESS)")


def resource_needs(sweep: Sweep) -> list[tuple[str, dict[str, float]]]:
    """What one trial and one evaluation task ask of a single node, in Ray's resource names."""
    needs = []
    for what, res in (("trial", sweep.resources.trial), ("eval", sweep.resources.eval)):
        need = {"CPU": float(res.cpu), "GPU": float(res.gpu), **{k: float(v) for k, v in getattr(res, "custom", {}).items()}}
        needs.append((f"resources.{what}", {k: v for k, v in need.items() if v > 0}))
    return needs


def check_cluster_resources(sweep: Sweep, shapes: list[dict[str, float]], *, groups_known: bool,
                            wait_for_nodes: bool = False) -> list[str]:
    """Refuse a trial or evaluation that no node of the cluster can hold: it would wait forever.

    ``shapes``: the resources of each live node, plus each node group an autoscaler reports
    (``groups_known``; :func:`lossyvision.runners.cluster.node_shapes`). When the autoscaler does not
    report its groups, ``wait_for_nodes`` (``sweep run --wait-for-nodes``) turns the refusal into a
    warning line, returned: the nodes may come. Raises :class:`SpecError` otherwise.
    """
    warnings = []
    for setting, need in resource_needs(sweep):
        if any(all(shape.get(k, 0.0) >= v for k, v in need.items()) for shape in shapes):
            continue
        asked = ", ".join(f"{v:g} {k}" for k, v in need.items())
        line = f"{setting}: no node of the cluster offers {asked} (its nodes: {_describe_shapes(shapes)})"
        if wait_for_nodes and not groups_known:
            warnings.append(f"warning: {line}; waiting for an autoscaler to add one (--wait-for-nodes)")
            continue
        hint = "lower it or add such nodes" if groups_known else \
            "lower it, add such nodes (`ray start --resources`, KubeRay: a worker group), or pass " \
            "--wait-for-nodes when an autoscaler adds them"
        raise SpecError(f"{line}; {hint}")
    return warnings


#: Ray's bookkeeping resources, left out when a node is described.
_BOOKKEEPING = ("node:", "memory", "object_store_memory", "accelerator_type:")


def _describe_shapes(shapes: list[dict[str, float]]) -> str:
    """``2 CPU, 1 GPU; 4 CPU, 1 trainer``: each distinct node shape once (at most six)."""
    kinds = sorted({", ".join(f"{v:g} {k}" for k, v in sorted(shape.items()) if not k.startswith(_BOOKKEEPING))
                    or "no resources" for shape in shapes})
    return "; ".join(kinds[:6]) + ("; ..." if len(kinds) > 6 else "") if kinds else "none"


def check_cache_disk(sweep: Sweep, manifest: pd.DataFrame | None = None) -> None:
    """Refuse a model's ``cache:`` whose decoded images exceed ``resources.trial.cache_bytes``
    (:mod:`lossyvision.cache`); without ``manifest``, the store's when it exists (else checked after
    compression, still before any trial)."""
    if not any(getattr(m, "cache", None) for m in sweep.models):
        return
    if manifest is None:
        try:
            manifest = read_manifest(sweep)
        except Exception:  # noqa: BLE001 - no store yet
            return
    problems = cache_problems(sweep, manifest)
    if problems:
        raise SpecError.of("sweep", problems)
