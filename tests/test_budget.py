"""Budget subsets: never over the budget, class-balanced, deterministic, nested, honest about running out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lossyvision.budget import (
    Subset,
    budget_candidates,
    bytes_per_image,
    images_available,
    select_subset,
    selection_order,
)


def random_candidates(rng: np.random.Generator, n_classes: int | None = None) -> pd.DataFrame:
    n_classes = n_classes or int(rng.integers(1, 8))
    per_class = rng.integers(0, 30, size=n_classes)
    rows = []
    for c, k in enumerate(per_class):
        for i in range(int(k)):
            rows.append({"relpath": f"train/c{c}/img{i:03d}.jpg", "label": c,
                         "compressed_bytes": int(rng.integers(0, 5000) if rng.random() < 0.9 else 50_000)})
    frame = pd.DataFrame(rows, columns=["relpath", "label", "compressed_bytes"])
    return frame.sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)


def class_counts(candidates: pd.DataFrame, subset: Subset) -> pd.Series:
    labels = candidates.set_index("relpath").loc[list(subset.relpaths), "label"]
    return labels.value_counts().reindex(sorted(candidates["label"].unique()), fill_value=0)


def test_subset_never_exceeds_budget_and_stops_within_one_image():
    rng = np.random.default_rng(1234)
    for _ in range(300):
        cands = random_candidates(rng)
        total = int(cands["compressed_bytes"].sum())
        budget = int(rng.integers(0, max(total, 1) * 1.3 + 1))
        seed = int(rng.integers(0, 5))
        sub = select_subset(cands, budget, seed=seed)
        sizes = cands.set_index("relpath")["compressed_bytes"]
        assert sub.bytes_used == int(sizes.loc[list(sub.relpaths)].sum())
        assert sub.bytes_used <= budget
        assert sub.n_images == len(sub.relpaths) == len(set(sub.relpaths))
        assert sub.budget == budget and sub.n_candidates == len(cands)
        assert sub.exhausted == (sub.n_images == len(cands))
        if not sub.exhausted:
            # It stopped at the next image of the order: that one does not fit.
            order = cands["relpath"].to_numpy()[selection_order(cands, seed)]
            assert tuple(order[: sub.n_images]) == sub.relpaths
            assert sub.bytes_used + int(sizes[order[sub.n_images]]) > budget


def test_class_counts_within_one_unless_a_class_ran_out():
    rng = np.random.default_rng(7)
    for _ in range(200):
        cands = random_candidates(rng)
        if cands.empty:
            continue
        budget = int(rng.integers(0, int(cands["compressed_bytes"].sum()) + 1))
        sub = select_subset(cands, budget, seed=3)
        counts = class_counts(cands, sub)
        available = cands["label"].value_counts().reindex(counts.index)
        not_out = counts[counts < available]  # classes that still had images left
        if len(not_out):
            assert counts.max() - not_out.min() <= 1, (counts.to_dict(), available.to_dict())
        assert (counts <= available).all()


def test_balanced_on_equal_classes_exact_counts():
    cands = pd.DataFrame({"relpath": [f"c{c}/{i}" for c in range(4) for i in range(10)],
                          "label": [c for c in range(4) for _ in range(10)],
                          "compressed_bytes": 100})
    sub = select_subset(cands, 2_050, seed=0)  # room for 20 images, not 21
    assert sub.n_images == 20 and sub.bytes_used == 2_000
    assert class_counts(cands, sub).tolist() == [5, 5, 5, 5]
    sub = select_subset(cands, 2_250, seed=0)  # 22 images: two classes get one more
    assert sorted(class_counts(cands, sub).tolist()) == [5, 5, 6, 6]


def test_deterministic_and_independent_of_row_order():
    rng = np.random.default_rng(5)
    cands = random_candidates(rng, n_classes=5)
    a = select_subset(cands, 40_000, seed=11)
    b = select_subset(cands.sample(frac=1.0, random_state=99).reset_index(drop=True), 40_000, seed=11)
    assert a == b
    c = select_subset(cands, 40_000, seed=12)
    assert c.relpaths != a.relpaths  # another seed (resample) draws another subset


def test_nested_across_budgets_and_levels():
    rng = np.random.default_rng(9)
    cands = random_candidates(rng, n_classes=6)
    total = int(cands["compressed_bytes"].sum())
    previous: tuple[str, ...] = ()
    for budget in sorted(rng.integers(0, total, size=25).tolist()):
        sub = select_subset(cands, budget, seed=2)
        assert sub.relpaths[: len(previous)] == previous
        previous = sub.relpaths
    # The same images at a more compressed level (every file smaller): the subset is at least as
    # long and starts with the less compressed level's subset.
    smaller = cands.assign(compressed_bytes=(cands["compressed_bytes"] * 0.6).astype(int))
    big, small = select_subset(cands, total // 3, seed=2), select_subset(smaller, total // 3, seed=2)
    assert small.n_images >= big.n_images and small.relpaths[: big.n_images] == big.relpaths


def test_dropping_one_image_keeps_the_others_order():
    rng = np.random.default_rng(3)
    cands = random_candidates(rng, n_classes=1)
    order = cands["relpath"].to_numpy()[selection_order(cands, 4)]
    fewer = cands[cands["relpath"] != order[3]]
    order2 = fewer["relpath"].to_numpy()[selection_order(fewer, 4)]
    assert [r for r in order if r != order[3]] == list(order2)


def test_exhausted_when_the_level_cannot_fill_the_budget():
    cands = pd.DataFrame({"relpath": ["a", "b", "c"], "label": [0, 1, 0], "compressed_bytes": [10, 20, 30]})
    sub = select_subset(cands, 1_000)
    assert sub.exhausted and sub.n_images == 3 and sub.bytes_used == 60
    empty = select_subset(cands, 5)
    assert empty.n_images == 0 and empty.bytes_used == 0 and not empty.exhausted
    none = select_subset(cands.iloc[:0], 100)
    assert none.n_images == 0 and none.exhausted


def test_missing_labels_form_one_group():
    cands = pd.DataFrame({"relpath": list("abcd"), "label": [None] * 4, "compressed_bytes": [1, 1, 1, 1]})
    assert select_subset(cands, 3).n_images == 3
    assert select_subset(cands.drop(columns="label"), 2, label_col=None).n_images == 2


@pytest.mark.parametrize("frame, budget, message", [
    (pd.DataFrame({"relpath": ["a"], "label": [0]}), 10, "lack column"),
    (pd.DataFrame({"relpath": ["a"], "label": [0], "compressed_bytes": [-1]}), 10, "sizes >= 0"),
    (pd.DataFrame({"relpath": ["a", "a"], "label": [0, 0], "compressed_bytes": [1, 1]}), 10, "repeat"),
    (pd.DataFrame({"relpath": ["a"], "label": [0], "compressed_bytes": [1]}), -5, "budget"),
    (pd.DataFrame({"relpath": ["a", "b"], "label": [0, 0], "compressed_bytes": [1, 1], "level": [1.0, 2.0]}),
     10, "several levels"),
    (pd.DataFrame({"relpath": ["a"], "label": [0], "compressed_bytes": [1], "status": ["failed"]}), 10, "status"),
])
def test_bad_candidates_raise_clear_errors(frame, budget, message):
    with pytest.raises(ValueError, match=message):
        select_subset(frame, budget)


def test_manifest_helpers():
    manifest = pd.DataFrame({
        "relpath": ["a", "b", "c", "a", "b", "c", "t"],
        "split": ["train"] * 6 + ["test"],
        "label": [0, 1, 1, 0, 1, 1, 0],
        "codec": ["jpegxl"] * 7,
        "level": [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0],
        "status": ["ok", "ok", "ok", "ok", "failed", "ok", "ok"],
        "compressed_bytes": [100, 200, 300, 10, 0, 30, 5],
    })
    cands = budget_candidates(manifest, 2, "train")
    assert cands["relpath"].tolist() == ["a", "c"]
    assert select_subset(cands, 100).n_images == 2
    table = bytes_per_image(manifest, "train", "jpegxl")
    assert table.to_dict() == {0.0: 200.0, 2.0: 20.0}
    assert images_available(manifest) == 3
    assert images_available(manifest.assign(status=["ok", "failed", "ok", "ok", "failed", "ok", "ok"])) == 2
    with pytest.raises(ValueError, match="no ok images"):
        bytes_per_image(manifest, "val")
