"""The storage scaling law ``Err(n, L) = Err* + A·n^-alpha + B·L^-beta`` and the advice it supports.

``n`` is the number of training images and ``L`` the bytes per image (Mentzer & Montanari,
"Scaling Training Data with Lossy Image Compression", KDD 2024). At a budget ``S`` and a level
with ``L`` bytes per image, ``n = min(images available, S / L)``: compressing harder buys more
images but each is worse, and the fitted law says where the optimum lies.

Fitting. :func:`fit_scaling_law` uses ``scipy.optimize.least_squares`` on the error itself
(not its log: R^2 is then the usual one, and small errors are not over-weighted), with bounds
``0 <= Err* <= 1``, ``A, B >= 0``, ``0 <= alpha, beta <= 5`` and a grid of starting exponents.
``n`` and ``L`` are divided by their geometric means first, so the amplitudes fitted are the
terms' sizes at a typical observed point (well scaled); ``A`` and ``B`` are reported in the
paper's units (``A = a·n_ref^alpha``). Uncertainty: a bootstrap over the observed points
(resampled with replacement and refitted); intervals are percentile intervals.

Refusing. :func:`check_fit` and :func:`optimal_level` raise :class:`AdviceRefused`, with the
reason, rather than print a number, when (defaults of :class:`AdvicePolicy`):

* there are fewer than 10 points (2 per parameter), or ``n`` or ``L`` varies by less than a
  factor 2 among them (their effects cannot be told apart);
* R^2 < 0.8, or more than half of the bootstrap refits failed;
* a level's ``n`` lies beyond 10x the largest observed ``n`` (or below a tenth of the smallest),
  or its ``L`` beyond 2x the observed range of bytes per image (quality does not extrapolate);
* the 95% interval of the predicted error at the best level is wider than 0.2.

The interval rule is on the prediction, not on the parameters: ``Err*`` and ``A`` trade off
against each other when ``alpha`` is small, so parameter intervals can be wide while the
predictions over the observed range are tight; the prediction is what the advice rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

PARAMS = ("err_star", "A", "alpha", "B", "beta")
EXPONENT_MAX = 5.0
_STARTS = (0.1, 0.5, 1.5)


class AdviceRefused(ValueError):
    """The fit cannot support the advice asked for; the message says why."""


@dataclass(frozen=True)
class AdvicePolicy:
    """When to refuse (see the module docstring)."""

    min_points: int = 2 * len(PARAMS)
    min_spread: float = 2.0
    min_r2: float = 0.8
    max_failed_bootstrap: float = 0.5
    max_n_factor: float = 10.0
    max_bytes_factor: float = 2.0
    max_interval_width: float = 0.2


# --- the model --------------------------------------------------------------------------------
def _model(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``theta = (err_star, a, alpha, b, beta)`` on normalised ``x = n/n_ref``, ``y = L/L_ref``."""
    e, a, alpha, b, beta = theta
    return e + a * x ** (-alpha) + b * y ** (-beta)


def _jacobian(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    _, a, alpha, b, beta = theta
    xa, yb = x ** (-alpha), y ** (-beta)
    return np.column_stack([np.ones_like(x), xa, -a * xa * np.log(x), yb, -b * yb * np.log(y)])


def _fit_once(x: np.ndarray, y: np.ndarray, err: np.ndarray, starts: list[np.ndarray]) -> np.ndarray | None:
    from scipy.optimize import least_squares  # scipy takes a second to load: only a fit needs it

    lower = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    upper = np.array([1.0, np.inf, EXPONENT_MAX, np.inf, EXPONENT_MAX])
    best, best_cost = None, np.inf
    for start in starts:
        try:
            res = least_squares(lambda t: _model(t, x, y) - err, np.clip(start, lower, upper),
                                jac=lambda t: _jacobian(t, x, y), bounds=(lower, upper),
                                method="trf", x_scale="jac", max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(res.x)) and res.cost < best_cost:
            best, best_cost = res.x, res.cost
    return best


def _default_starts(err: np.ndarray) -> list[np.ndarray]:
    e0 = max(0.0, float(err.min()) - 0.05)
    amp = max(1e-3, (float(err.mean()) - e0) / 2)
    return [np.array([e0, amp, al, amp, be]) for al in _STARTS for be in _STARTS]


# --- the fit ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ScalingFit:
    """A fitted law with its bootstrap; :meth:`predict` takes ``n`` images and ``L`` bytes/image."""

    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    r2: float
    rmse: float
    n_points: int
    n_range: tuple[float, float]
    bytes_range: tuple[float, float]
    n_ref: float
    bytes_ref: float
    theta: np.ndarray = field(repr=False)           # normalised (err_star, a, alpha, b, beta)
    bootstrap: np.ndarray = field(repr=False)       # successful bootstrap thetas, one per row
    n_bootstrap: int = 0
    confidence: float = 0.95
    points: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def failed_bootstrap_fraction(self) -> float:
        return 1.0 - len(self.bootstrap) / self.n_bootstrap if self.n_bootstrap else 0.0

    def _xy(self, n: Any, bytes_per_image: Any) -> tuple[np.ndarray, np.ndarray]:
        n = np.asarray(n, dtype=float)
        L = np.asarray(bytes_per_image, dtype=float)
        return n / self.n_ref, L / self.bytes_ref

    def predict(self, n: Any, bytes_per_image: Any) -> np.ndarray:
        """The fitted error at ``n`` images of ``bytes_per_image`` bytes each."""
        x, y = self._xy(n, bytes_per_image)
        return _model(self.theta, x, y)

    def predict_draws(self, n: Any, bytes_per_image: Any) -> np.ndarray:
        """The error under every bootstrap fit: shape ``(draws, *broadcast shape)``."""
        x, y = self._xy(n, bytes_per_image)
        t = self.bootstrap.reshape((len(self.bootstrap),) + (1,) * np.broadcast(x, y).ndim + (5,))
        return t[..., 0] + t[..., 1] * x ** (-t[..., 2]) + t[..., 3] * y ** (-t[..., 4])

    def predict_interval(self, n: Any, bytes_per_image: Any) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval (at ``confidence``) of the predicted error over the bootstrap."""
        draws = self.predict_draws(n, bytes_per_image)
        if not len(draws):
            nan = np.full(np.broadcast(*self._xy(n, bytes_per_image)).shape, np.nan)
            return nan, nan
        tail = 100 * (1 - self.confidence) / 2
        return np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": "err = err_star + A * n^-alpha + B * L^-beta (n images, L bytes per image)",
            "params": {k: float(v) for k, v in self.params.items()},
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "confidence": self.confidence,
            "r2": _finite_or_none(self.r2),
            "rmse": float(self.rmse),
            "n_points": self.n_points,
            "n_range": list(map(float, self.n_range)),
            "bytes_per_image_range": list(map(float, self.bytes_range)),
            "n_bootstrap": self.n_bootstrap,
            "failed_bootstrap_fraction": float(self.failed_bootstrap_fraction),
            "points": self.points.to_dict(orient="records"),
        }


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _to_paper_units(theta: np.ndarray, n_ref: float, bytes_ref: float) -> np.ndarray:
    """Normalised ``(e, a, alpha, b, beta)`` to ``(err_star, A, alpha, B, beta)`` in n and bytes."""
    theta = np.atleast_2d(theta)
    with np.errstate(over="ignore"):
        return np.column_stack([theta[:, 0], theta[:, 1] * n_ref ** theta[:, 2], theta[:, 2],
                                theta[:, 3] * bytes_ref ** theta[:, 4], theta[:, 4]])


def fit_scaling_law(points: pd.DataFrame, *, n_bootstrap: int = 300, seed: int = 0,
                    confidence: float = 0.95) -> ScalingFit:
    """Fit the law to ``points`` (columns ``n``, ``bytes_per_image``, ``error``; one row per point).

    Raises :class:`AdviceRefused` when there are fewer points than parameters (no fit at all);
    a fit that exists but is poor is returned, and :func:`check_fit` judges it.
    """
    missing = [c for c in ("n", "bytes_per_image", "error") if c not in points.columns]
    if missing:
        raise ValueError(f"scaling points lack column(s) {missing}")
    pts = points.reset_index(drop=True)
    n = pts["n"].to_numpy(dtype=float)
    L = pts["bytes_per_image"].to_numpy(dtype=float)
    err = pts["error"].to_numpy(dtype=float)
    if not (np.all(np.isfinite(n)) and np.all(n > 0) and np.all(np.isfinite(L)) and np.all(L > 0)):
        raise ValueError("scaling points need n > 0 images and bytes_per_image > 0")
    if not np.all((err >= 0) & (err <= 1)):
        raise ValueError("errors must lie in [0, 1] (error = 1 - an accuracy-like metric)")
    if len(pts) < len(PARAMS):
        raise AdviceRefused(f"only {len(pts)} observed point(s): the law has {len(PARAMS)} parameters, "
                            f"so it cannot be fitted; run a sweep with more budgets x train levels")
    n_ref, bytes_ref = float(np.exp(np.log(n).mean())), float(np.exp(np.log(L).mean()))
    x, y = n / n_ref, L / bytes_ref
    theta = _fit_once(x, y, err, _default_starts(err))
    if theta is None:
        raise AdviceRefused("the least-squares fit of the scaling law did not converge")
    resid = _model(theta, x, y) - err
    ss_tot = float(np.sum((err - err.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else float("nan")

    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(pts), size=len(pts))
        t = _fit_once(x[idx], y[idx], err[idx], [theta, *_default_starts(err[idx])[4:5]])
        if t is not None:
            draws.append(t)
    boot = np.array(draws).reshape(-1, 5)

    paper = _to_paper_units(theta, n_ref, bytes_ref)[0]
    tail = 100 * (1 - confidence) / 2
    if len(boot):
        boot_paper = _to_paper_units(boot, n_ref, bytes_ref)
        lo = np.nanpercentile(boot_paper, tail, axis=0)
        hi = np.nanpercentile(boot_paper, 100 - tail, axis=0)
    else:
        lo = hi = np.full(5, np.nan)
    return ScalingFit(
        params=dict(zip(PARAMS, map(float, paper))),
        intervals={p: (float(a), float(b)) for p, a, b in zip(PARAMS, lo, hi)},
        r2=r2, rmse=float(np.sqrt(np.mean(resid ** 2))), n_points=len(pts),
        n_range=(float(n.min()), float(n.max())), bytes_range=(float(L.min()), float(L.max())),
        n_ref=n_ref, bytes_ref=bytes_ref, theta=theta, bootstrap=boot, n_bootstrap=n_bootstrap,
        confidence=confidence, points=pts,
    )


def check_fit(fit: ScalingFit, policy: AdvicePolicy = AdvicePolicy()) -> None:
    """Raise :class:`AdviceRefused` if the fit is too poor to advise from at all."""
    if fit.n_points < policy.min_points:
        raise AdviceRefused(
            f"too few points: {fit.n_points} observed (budget, level) points for {len(PARAMS)} parameters; "
            f"advice needs at least {policy.min_points}. Add budgets or train levels to the sweep.")
    for name, (lo, hi) in (("the number of images n", fit.n_range), ("the bytes per image L", fit.bytes_range)):
        if hi / lo < policy.min_spread:
            raise AdviceRefused(
                f"{name} varies only from {lo:.4g} to {hi:.4g} across the points (less than "
                f"{policy.min_spread:g}x), so its effect cannot be fitted. Widen the sweep's budgets/levels.")
    if not math.isfinite(fit.r2):
        raise AdviceRefused("the observed errors do not vary at all: there is nothing to fit")
    if fit.r2 < policy.min_r2:
        raise AdviceRefused(
            f"poor fit: R^2 = {fit.r2:.3f} < {policy.min_r2:g} (residual RMSE {fit.rmse:.4f}); the law "
            f"does not describe these results well enough to extrapolate from them.")
    if fit.failed_bootstrap_fraction > policy.max_failed_bootstrap:
        raise AdviceRefused(f"{fit.failed_bootstrap_fraction:.0%} of the bootstrap refits failed: "
                            "the fit is unstable")


# --- advice -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LevelPrediction:
    level: float
    bytes_per_image: float
    n_images: int
    limited_by: str          # "budget" or "images" (all available images fit)
    error: float
    low: float
    high: float


@dataclass(frozen=True)
class LevelAdvice:
    """Predicted error per level at one budget, and the best level."""

    budget: int
    images_available: int
    predictions: tuple[LevelPrediction, ...]
    best_level: float
    best_agreement: float    # share of bootstrap fits that pick the same best level

    @property
    def best(self) -> LevelPrediction:
        return next(p for p in self.predictions if p.level == self.best_level)

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "images_available": self.images_available,
                "best_level": self.best_level, "best_agreement": self.best_agreement,
                "predictions": [p.__dict__.copy() for p in self.predictions]}


def _as_level_table(level_table: Mapping[float, float] | pd.Series) -> list[tuple[float, float]]:
    items = list(level_table.items())
    if not items:
        raise ValueError("the level table is empty: no bytes-per-image figures to advise on")
    rows = []
    for level, size in items:
        size = float(size)
        if not (math.isfinite(size) and size > 0):
            raise ValueError(f"level {level}: bytes per image must be > 0, got {size}")
        rows.append((float(level), size))
    return sorted(rows)


def _first_best(errors: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Per row, the first column within ``tol`` of the row's lowest error."""
    return np.argmax(errors <= errors.min(axis=1, keepdims=True) + tol, axis=1)


def optimal_level(fit: ScalingFit, budget_bytes: int, images_available: int,
                  level_table: Mapping[float, float] | pd.Series, *,
                  policy: AdvicePolicy = AdvicePolicy()) -> LevelAdvice:
    """Predict the error of each level at ``budget_bytes`` and pick the lowest.

    ``level_table`` maps level -> mean bytes per image. At each level ``n = min(images_available,
    budget // L)``; ties (within 1e-9) go to the level with the most bytes per image. Raises
    :class:`AdviceRefused` for a poor fit, for any level whose ``n`` or
    ``L`` lies outside the extrapolation limits, or when the best level's interval is too wide.
    """
    check_fit(fit, policy)
    if budget_bytes <= 0 or images_available <= 0:
        raise ValueError("the budget and the number of images available must be > 0")
    levels = _as_level_table(level_table)
    n_lo, n_hi = fit.n_range[0] / policy.max_n_factor, fit.n_range[1] * policy.max_n_factor
    b_lo, b_hi = fit.bytes_range[0] / policy.max_bytes_factor, fit.bytes_range[1] * policy.max_bytes_factor
    problems, ns = [], []
    for level, size in levels:
        n = min(int(images_available), int(budget_bytes // size))
        ns.append(n)
        if not b_lo <= size <= b_hi:
            problems.append(f"level {level:g}: {size:.4g} bytes/image is outside {b_lo:.4g}..{b_hi:.4g} "
                            f"({policy.max_bytes_factor:g}x the observed range {fit.bytes_range[0]:.4g}.."
                            f"{fit.bytes_range[1]:.4g})")
        if not n_lo <= n <= n_hi:
            problems.append(f"level {level:g}: n = {n:,} images is outside {math.ceil(n_lo):,}..{int(n_hi):,} "
                            f"({policy.max_n_factor:g}x the observed range {int(fit.n_range[0]):,}.."
                            f"{int(fit.n_range[1]):,})")
    if problems:
        raise AdviceRefused(f"refusing to extrapolate at a budget of {budget_bytes:,} bytes with "
                            f"{images_available:,} images available:\n  " + "\n  ".join(problems))
    sizes = np.array([s for _, s in levels])
    n_arr = np.array(ns, dtype=float)
    err = fit.predict(n_arr, sizes)
    lo, hi = fit.predict_interval(n_arr, sizes)
    by_size = np.argsort(-sizes, kind="stable")  # ties go to the level with the largest files
    best = int(by_size[_first_best(err[None, by_size])[0]])
    draws = fit.predict_draws(n_arr, sizes)
    agreement = (float(np.mean(by_size[_first_best(draws[:, by_size])] == best))
                 if len(draws) else float("nan"))
    width = float(hi[best] - lo[best])
    if not math.isfinite(width) or width > policy.max_interval_width:
        raise AdviceRefused(
            f"the predicted error at the best level ({levels[best][0]:g}) is too uncertain: its "
            f"{fit.confidence:.0%} interval {lo[best]:.3f}..{hi[best]:.3f} is wider than "
            f"{policy.max_interval_width:g}")
    preds = tuple(
        LevelPrediction(level=lv, bytes_per_image=s, n_images=int(n),
                        limited_by="images" if n >= images_available else "budget",
                        error=float(e), low=float(a), high=float(b))
        for (lv, s), n, e, a, b in zip(levels, ns, err, lo, hi))
    return LevelAdvice(budget=int(budget_bytes), images_available=int(images_available),
                       predictions=preds, best_level=levels[best][0], best_agreement=agreement)


# --- points from a results table ------------------------------------------------------------
def scaling_points(results: pd.DataFrame, *, metric: str | None = None, model: str | None = None,
                   test_level: float | str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One point per (train level, budget) from a results table: mean ``n``, ``L`` and error.

    ``error = 1 - value`` of ``metric`` (default ``top1``, or the only metric) for ``model``
    (default: the only one) on ``test_level`` (a number, ``"same"`` = the train level, or None:
    the smallest test level, or ``"same"`` when the sweep only tested each model on its own
    level). Repeats are averaged (``error_std`` is their spread, NaN for one repeat). Returns the
    points and the selection made.
    """
    df = results[(results["n_train_images"] > 0) & (results["train_bytes"] > 0)]
    if df.empty:
        raise ValueError("the results have no rows with n_train_images and train_bytes > 0")
    model = _pick(df, "model", model)
    df = df[df["model"] == model]
    if metric is None:
        metric = "top1" if "top1" in set(df["metric"]) else None
    metric = _pick(df, "metric", metric)
    df = df[df["metric"] == metric]
    if test_level is None:
        lowest = float(df["test_level"].min())
        covered = df.loc[np.isclose(df["test_level"], lowest), "train_level"].nunique()
        same_only = bool(np.isclose(df["test_level"], df["train_level"]).all())
        test_level = "same" if same_only and covered < df["train_level"].nunique() else lowest
    if test_level == "same":
        df = df[np.isclose(df["test_level"], df["train_level"])]
    else:
        test_level = float(test_level)
        df = df[np.isclose(df["test_level"], test_level)]
    if df.empty:
        raise ValueError(f"no results for model {model!r}, metric {metric!r} at test level {test_level}")
    values = df["value"].astype(float)
    if not values.between(0, 1).all():
        raise ValueError(f"metric {metric!r} has values outside [0, 1]; the law needs an accuracy-like "
                         "metric (error = 1 - value)")
    df = df.assign(error=1.0 - values, bytes_per_image=df["train_bytes"] / df["n_train_images"],
                   n=df["n_train_images"].astype(float))
    points = (df.groupby(["train_level", "budget"], as_index=False)
                .agg(n=("n", "mean"), bytes_per_image=("bytes_per_image", "mean"),
                     error=("error", "mean"), error_std=("error", "std"), repeats=("error", "size"))
                .sort_values(["budget", "train_level"]).reset_index(drop=True))
    return points, {"model": model, "metric": metric, "test_level": test_level}


def _pick(df: pd.DataFrame, column: str, wanted: str | None) -> str:
    present = sorted(set(df[column].dropna()))
    if wanted is None:
        if len(present) != 1:
            raise ValueError(f"the results hold several {column}s {present}; choose one with --{column}")
        return present[0]
    if wanted not in present:
        raise ValueError(f"unknown {column} {wanted!r}; the results hold {present}")
    return wanted
