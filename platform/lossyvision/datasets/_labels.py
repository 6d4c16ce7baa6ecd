"""Class labels and splits for list-style sources: CSV/JSONL rows, Hugging Face columns, WebDataset members.

These sources give a label per image as a value (``3``, ``"3"``, ``"cat"``), not as a folder. The
rules, the same for every such kind:

- with a ``classes`` option (a list of names), a value is a name in it or an index into it;
- without it, if every value is a whole number (``3`` or ``"3"``), it is the label itself and the
  classes are ``"0" .. "<max>"``; if none is, the values are class names, sorted; a mix of the two
  is an error that asks for ``classes``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

_WHOLE = re.compile(r"\d+")


def parse_classes(kind: str, value: Any) -> list[str] | None:
    """Validate a ``classes`` option: None, or a non-empty list of unique non-empty names."""
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(c, (str, int)) and not isinstance(c, bool) and str(c) for c in value)):
        raise ValueError(f"{kind}: option classes must be a non-empty list of class names, got {value!r}")
    names = [str(c) for c in value]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ValueError(f"{kind}: option classes lists {dupes} more than once")
    return names


def _whole(value: Any) -> int | None:
    """The whole number a label value stands for, or None (names, fractions, booleans)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value.strip())
    return None


def resolve_labels(kind: str, values: Sequence[Any], wheres: Sequence[str],
                   classes: Sequence[str] | None = None) -> tuple[list[str], list[int]]:
    """``(class names, one label index per value)``; ``wheres[i]`` names value i in errors."""
    for value, where in zip(values, wheres):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"{kind}: {where}: no label")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{kind}: {where}: label {value!r} is neither a class name nor a class index")
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        labels = []
        for value, where in zip(values, wheres):
            name = str(value).strip()
            number = _whole(value)
            if name in index:
                labels.append(index[name])
            elif number is not None and number < len(classes):
                labels.append(number)
            else:
                raise ValueError(f"{kind}: {where}: label {value!r} is not one of the {len(classes)} classes "
                                 f"(option classes) nor an index into them")
        return list(classes), labels
    numbers = [_whole(v) for v in values]
    if values and all(n is not None for n in numbers):
        return [str(i) for i in range(max(numbers) + 1)], [int(n) for n in numbers]  # type: ignore[arg-type]
    mixed = [(v, w) for v, w, n in zip(values, wheres, numbers) if n is not None]
    if mixed:
        name = next(v for v, n in zip(values, numbers) if n is None)
        raise ValueError(f"{kind}: labels mix class indices ({mixed[0][1]}: {mixed[0][0]!r}) and class names "
                         f"({name!r}); give option classes (the names in index order)")
    names = sorted({str(v).strip() for v in values})
    index = {c: i for i, c in enumerate(names)}
    return names, [index[str(v).strip()] for v in values]


def hash_split(items: list[tuple[str, Any, str]], fraction: float) -> list[tuple[str, Any, str]]:
    """Move a deterministic ``fraction`` of each class to split "test".

    ``items`` are ``(split, class, relpath)``. Within each class, relpaths are ordered by their
    SHA-1 and the first ``fraction * n`` (rounded half up) become "test": the same files on every
    run and machine, balanced per class.
    """
    by_class: dict[Any, list[str]] = {}
    for _, c, rel in items:
        by_class.setdefault(c, []).append(rel)
    out = []
    for c, rels in by_class.items():
        ordered = sorted(rels, key=lambda r: (hashlib.sha1(r.encode("utf-8")).hexdigest(), r))
        n_test = int(fraction * len(ordered) + 0.5)  # rounded half up
        out += [("test" if i < n_test else "train", c, rel) for i, rel in enumerate(ordered)]
    return out


def parse_test_fraction(kind: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{kind}: test_fraction must be between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def check_options(kind: str, options: dict[str, Any], known: Sequence[str]) -> None:
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"{kind}: unknown option(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")


def check_column(kind: str, option: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind}: option {option} must be a column name, got {value!r}")
    return value
