"""The adaptive search's policy: from finished trainings' results, the next (level, repeat) trainings, or the answer.

A pure function (:func:`decide`) of the ladder's length, the results so far and the settings; no
Ray, no torch. Run it again on the same results and it says the same thing, so a killed driver
resumes by replaying it on the trainings OUTPUT holds. Levels are indices into the ladder ordered
from the most faithful (index 0, the baseline) to the most compressed.

Two phases, with the data of one never reused as the other's evidence:

1. **Explore** on repeat 0: the baseline, then k-section over the rest of the ladder (``parallel``
   points per round, bisection with one) under the assumption that the metric falls as the level
   compresses more. A level *passes* when its one run keeps ``keep + margin`` of the baseline's run.
   The candidate is the last passing level before the first failing one; a passing level after a
   failing one contradicts the assumption and is reported (the search takes the first failure, the
   conservative side).
2. **Confirm** on fresh seeds: repeats ``1..repeats`` at the candidate *and* at the baseline. The
   interval about models trained at the candidate (:func:`lossyvision.seedspread.trained_interval`:
   test images plus the spread between runs, pooled over the fresh repeats) decides. Its test-image
   part is the report's: the cell's and the baseline's repeats on the same resampled test images
   (``test_interval``, a paired bootstrap in the sweep), so the same runs give the search and the
   grid the same interval; without it (the simulator's default) the two standard errors add as if
   independent, which errs wide. Exploration
   chose the level, so it is one hypothesis fixed before its data exist: no multiplicity. With
   ``fallbacks: f`` the sequence is fixed at the end of exploration, the candidate then up to f less
   compressed levels that passed, stopping at the first that keeps; since that is f + 1 chances, each
   is tested at the error ``(1 - confidence) / (f + 1)`` (Bonferroni). A level that keeps is advised;
   none keeping, nothing is.

The claim "models trained at the advised level keep >= keep of the baseline" holds its error rate
without the monotonicity assumption; the assumption only decides how far the search looks (a level
past the first failure is not tried). ``tests/test_search_sim.py`` measures the error rate and the
trainings on a synthetic trainer with a known curve, seed spread and test-image noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from lossyvision.seedspread import pooled_spread, trained_interval

Training = tuple[int, int]  # (ladder index, repeat)
#: ``(ladder index, repeats, confidence) -> (rel, low, high)``: the test images' interval (%) of the level's
#: mean over those repeats relative to the baseline's over the same repeats, or None where it cannot be had.
TestInterval = Callable[[int, Sequence[int], float], "tuple[float, float, float] | None"]
QUESTIONS = ("matched", "train", "test")
EXPLORE, CONFIRM = "explore", "confirm"


@dataclass(frozen=True)
class Obs:
    """One finished training's result on the question's test level: the metric and its test-image
    standard error (both in the metric's unit)."""

    value: float
    se: float


@dataclass(frozen=True)
class SearchConfig:
    question: str = "matched"
    keep: float = 0.99            # fraction of the baseline
    confidence: float = 0.95      # two-sided, as the report's intervals
    repeats: int = 3              # fresh repeats at the candidate and at the baseline
    parallel: int = 1             # levels explored per round (the cluster's trial slots)
    margin: float = 1.0           # points above the threshold a level's one run must keep to pass exploration
    fallbacks: int = 0            # less compressed levels confirmed after a failed candidate (Bonferroni)
    max_trainings: int | None = None

    @property
    def threshold(self) -> float:
        return 100.0 * self.keep


@dataclass
class Step:
    """One round of the search's path: what it trained and what it found."""

    phase: str
    trainings: list[Training]
    finding: str

    def as_dict(self) -> dict:
        return {"phase": self.phase, "trainings": [list(t) for t in self.trainings], "finding": self.finding}


@dataclass
class Decision:
    """``train``: start these now (neither done nor running); ``done``: the search is over (``advised``:
    the ladder index to store at, or None; ``outcome`` and ``reason`` say why it stopped)."""

    train: list[Training] = field(default_factory=list)
    done: bool = False
    advised: int | None = None
    outcome: str = ""            # advised | not confirmed | none passed | budget | failed
    reason: str = ""
    path: list[Step] = field(default_factory=list)
    claim: dict | None = None    # the advised (or last tested) level's rel, interval, spread
    contradictions: list[int] = field(default_factory=list)

    @property
    def waiting(self) -> bool:
        return not self.done and not self.train

    def as_dict(self) -> dict:
        d = asdict(self)
        d["path"] = [s.as_dict() for s in self.path]
        d["train"] = [list(t) for t in self.train]
        return d


class _Need(Exception):
    """Raised inside the replay when results are missing: these trainings come first."""

    def __init__(self, trainings: list[Training], phase: str, what: str) -> None:
        self.trainings, self.phase, self.what = trainings, phase, what


def decide(n_levels: int, obs: Mapping[Training, Obs], config: SearchConfig, *,
           running: Iterable[Training] = (), failed: Iterable[Training] = (),
           test_interval: TestInterval | None = None) -> Decision:
    """The next trainings of the search (or its end), replayed from ``obs``; ``running`` are started
    and not finished, ``failed`` gave no result (the search stops on them: no result, no decision);
    ``test_interval`` pairs the confirmation's test images (None: unpaired, from ``obs``' errors)."""
    running, failed = set(running), set(failed)
    path: list[Step] = []
    replay = _Replay(n_levels, obs, config, path, test_interval)
    try:
        return replay.run()
    except _Need as need:
        lost = [t for t in need.trainings if t in failed]
        if lost:
            return Decision(done=True, outcome="failed", path=path,
                            reason=f"training {_name(lost[0])} (or its evaluation) failed: the search cannot go on "
                                   "without it; rerun `sweep run` to retry it")
        todo = [t for t in need.trainings if t not in obs and t not in running]
        used = len(set(obs) | running)
        if config.max_trainings is not None and used + len(todo) > config.max_trainings:
            return Decision(done=True, outcome="budget", path=path, claim=replay.claim,
                            reason=f"max_trainings ({config.max_trainings}) reached before {need.what}")
        path.append(Step(need.phase, list(need.trainings), f"running: {need.what}"))
        return Decision(train=todo, path=path)


class _Replay:
    def __init__(self, n_levels: int, obs: Mapping[Training, Obs], config: SearchConfig, path: list[Step],
                 test_interval: TestInterval | None = None) -> None:
        if n_levels < 1:
            raise ValueError("the ladder needs at least one level")
        self.k, self.obs, self.c, self.path = n_levels, obs, config, path
        self.test_interval = test_interval
        self.claim: dict | None = None

    def need(self, trainings: list[Training], phase: str, what: str) -> None:
        missing = [t for t in trainings if t not in self.obs]
        if missing:
            raise _Need(missing, phase, what)

    def run(self) -> Decision:
        c = self.c
        if c.question == "test":  # about one trained model: the baseline's, tested at every level
            self.need([(0, 0)], EXPLORE, "the baseline (the test question trains nothing else)")
            self.path.append(Step(EXPLORE, [(0, 0)], "trained the baseline; it is tested at every test level"))
            return Decision(done=True, outcome="baseline only", path=self.path,
                            reason="the test question is about the model trained at the baseline: one training")
        self.need([(0, 0)], EXPLORE, "the baseline's exploration run")
        lo, hi, contradictions = self.explore()
        if lo == 0:
            first = self.explored_rel(1) if self.k > 1 else math.nan
            return Decision(done=True, outcome="none passed", path=self.path, contradictions=contradictions,
                            reason=(f"no level passed exploration (the least compressed kept {first:.1f}% on one "
                                    f"run, under {c.threshold + c.margin:g}%): nothing to confirm, no level advised"
                                    if self.k > 1 else "the ladder has only the baseline"))
        passing = [i for i in range(lo - 1, 0, -1) if self.passes(i)]
        sequence = [lo] + passing[: c.fallbacks]
        alpha = (1.0 - c.confidence) / len(sequence)
        fresh = range(1, c.repeats + 1)
        spread_data: dict[int, list[float]] = {}
        for n, level in enumerate(sequence):
            self.need([(0, r) for r in fresh] + [(level, r) for r in fresh], CONFIRM,
                      f"confirming level #{level} on {c.repeats} fresh seeds (and the baseline's)")
            claim = self.confirm(level, fresh, 1.0 - alpha, spread_data)
            self.claim = claim
            status = claim["status"]
            self.path.append(Step(CONFIRM, [(0, r) for r in fresh] + [(level, r) for r in fresh],
                                  f"level #{level}: {claim['rel']:.2f}% [{claim['low']:.2f}%, {claim['high']:.2f}%] "
                                  f"at {100 * (1 - alpha):.4g}% confidence: {status}"))
            if status == "keeps":
                more = (f"; then level #{hi} failed exploration" if hi < self.k else "; the ladder ends there")
                return Decision(done=True, advised=level, outcome="advised", path=self.path, claim=claim,
                                contradictions=contradictions,
                                reason=f"level #{level} keeps on fresh seeds{more}" +
                                       (f" (confirmation {n + 1} of {len(sequence)})" if len(sequence) > 1 else ""))
        return Decision(done=True, outcome="not confirmed", path=self.path, claim=self.claim,
                        contradictions=contradictions,
                        reason=f"confirmation on fresh seeds did not keep at level(s) "
                               f"{', '.join('#%d' % s for s in sequence)}: no level advised")

    # --- exploration -------------------------------------------------------------------------------
    def explored_rel(self, i: int) -> float:
        base = self.obs[(0, 0)].value
        return 100.0 * self.obs[(i, 0)].value / base if base > 0 else math.nan

    def passes(self, i: int) -> bool:
        return (i, 0) in self.obs and self.explored_rel(i) >= self.c.threshold + self.c.margin - 1e-9  # NaN fails

    def explore(self) -> tuple[int, int, list[int]]:
        """k-section on repeat 0: ``(lo, hi, contradictions)``, lo the last passing index (0: none), hi the first failing."""
        c = self.c
        lo, hi, contradictions = 0, self.k, []
        reserve = 2 * c.repeats  # confirmation must stay affordable
        while hi - lo > 1:
            points = _spaced(list(range(lo + 1, hi)), max(1, c.parallel))
            round_ = [(i, 0) for i in points]
            if c.max_trainings is not None:
                new = [t for t in round_ if t not in self.obs]
                if len(self.obs) + len(new) + reserve > c.max_trainings and new:
                    self.path.append(Step(EXPLORE, [], f"exploration stopped at [#{lo}, #{hi}): max_trainings "
                                                       f"({c.max_trainings}) keeps {reserve} for the confirmation"))
                    break
            self.need(round_, EXPLORE, "exploring level(s) " + ", ".join(f"#{i}" for i in points))
            fails = [i for i in points if not self.passes(i)]
            first_fail = fails[0] if fails else hi
            wrong = [i for i in points if i > first_fail and self.passes(i)]
            contradictions += wrong
            new_lo = max([i for i in points if i < first_fail] + [lo])
            finding = ", ".join(f"#{i} {self.explored_rel(i):.1f}% {'passes' if self.passes(i) else 'fails'}"
                                for i in points)
            if wrong:
                finding += (f"; #{', #'.join(map(str, wrong))} pass(es) after #{first_fail} failed: the data "
                            "contradict 'the metric falls with compression'; the search keeps the first failure")
            self.path.append(Step(EXPLORE, round_, finding))
            lo, hi = new_lo, first_fail
        return lo, hi, contradictions

    # --- confirmation ------------------------------------------------------------------------------
    def confirm(self, level: int, fresh: range, confidence: float, spread_data: dict[int, list[float]]) -> dict:
        from scipy.stats import norm

        c = self.c
        base = [self.obs[(0, r)] for r in fresh]
        cell = [self.obs[(level, r)] for r in fresh]
        base_mean = sum(o.value for o in base) / len(base)
        if not base_mean > 0:
            return {"level": level, "rel": math.nan, "low": math.nan, "high": math.nan, "status": "cannot tell",
                    "spread": "the baseline's metric is 0"}
        spread_data[0] = [100.0 * o.value / base_mean for o in base]
        spread_data[level] = [100.0 * o.value / base_mean for o in cell]
        rel = sum(spread_data[level]) / len(cell)
        paired = self.test_interval(level, list(fresh), confidence) if self.test_interval else None
        if paired is not None and all(math.isfinite(x) for x in paired):
            rel, test_low, test_high = (float(x) for x in paired)
            images = "paired"
        else:
            # the cell's and the baseline's standard errors, taken as independent (wide: the shared test
            # images' luck does not cancel); repeats on the same images share their test-image error, so
            # it does not shrink with them
            se_cell = sum(o.se for o in cell) / len(cell)
            se_base = sum(o.se for o in base) / len(base)
            se = 100.0 / base_mean * math.sqrt(se_cell ** 2 + (rel / 100.0) ** 2 * se_base ** 2)
            z = float(norm.ppf(0.5 + confidence / 2))
            test_low, test_high = rel - z * se, rel + z * se
            images = "unpaired"
        spread = pooled_spread({float(k): v for k, v in spread_data.items()})
        low, high = trained_interval(rel, test_low, test_high, spread, len(cell), len(base), confidence)
        if math.isfinite(low) and low >= c.threshold - 1e-9:
            status = "keeps"
        elif math.isfinite(high) and high < c.threshold - 1e-9:
            status = "loses"
        else:
            status = "cannot tell"
        return {"level": level, "rel": rel, "low": low, "high": high, "confidence": confidence, "status": status,
                "repeats": len(cell), "spread": spread.describe(lambda i: f"#{i:g}"), "spread_df": spread.df,
                "test_images": images}


def _spaced(interior: list[int], k: int) -> list[int]:
    """``k`` evenly spaced points of ``interior`` (all of it when shorter): bisection for k = 1."""
    if len(interior) <= k:
        return interior
    n = len(interior)
    return sorted({interior[min(n - 1, max(0, round((j + 1) * (n + 1) / (k + 1)) - 1))] for j in range(k)})


def _name(t: Training) -> str:
    return f"level #{t[0]} repeat {t[1]}"


# --- what a search costs ----------------------------------------------------------------------------
def trainings_bounds(n_levels: int, config: SearchConfig) -> tuple[float, int]:
    """``(expected, worst case)`` trainings of a search over ``n_levels`` (one model, one codec).

    Replays :func:`decide` against noiseless oracles: for every boundary b (levels up to b keep),
    confirmation succeeding (the expected cost averages over b) and every confirmation failing (the worst).
    """
    costs, worst = [], 0
    for b in range(n_levels):
        costs.append(_oracle_cost(n_levels, config, b, keeps=True))
        worst = max(worst, _oracle_cost(n_levels, config, b, keeps=False))
    return sum(costs) / len(costs), worst


def _oracle_cost(n_levels: int, config: SearchConfig, boundary: int, keeps: bool) -> int:
    hi_rel, lo_rel = 100.0, config.threshold - 10.0
    obs: dict[Training, Obs] = {}
    for _ in range(10 * n_levels + 10):
        d = decide(n_levels, obs, config)
        if d.done:
            return len(obs)
        for i, r in d.train:
            good = i == 0 or (i <= boundary and (keeps or r == 0))
            rel = hi_rel if good else lo_rel
            obs[(i, r)] = Obs(rel * (1 + 1e-4 * r), 1e-3)
    raise RuntimeError("the search did not end")
