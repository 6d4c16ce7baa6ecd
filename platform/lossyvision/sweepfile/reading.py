"""From a sweep file's bytes to a validated :class:`Sweep`: YAML without repeated keys, ``${VAR}`` in string values,
and every problem as one ``field: problem`` line of a :class:`SpecError`."""

from __future__ import annotations

import os
import re
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lossyvision.store import read_bytes
from lossyvision.sweepfile.fields import MAX_FILE_BYTES, SpecError
from lossyvision.sweepfile.sweep import Sweep


def _did_you_mean(name: str) -> str:
    """``; did you mean train_levels?`` for a near miss of a field of any sweep-file section, else ""."""
    import difflib

    fields = {f for m in _section_models() for f in m.model_fields}
    close = difflib.get_close_matches(name, sorted(fields), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _section_models() -> list[type[BaseModel]]:
    """:class:`Sweep` and every section nested in it, however deep (``resources.trial``)."""
    found: list[type[BaseModel]] = []
    todo: list[Any] = [Sweep]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t not in found:
                found.append(t)
                todo += [f.annotation for f in t.model_fields.values()]
        else:
            todo += list(typing.get_args(t))
    return found


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One ``field.path: problem`` line per pydantic error."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"]
        for lead in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(lead)
        if e["type"] == "extra_forbidden":
            msg = "unknown field" + _did_you_mean(str(e["loc"][-1]))
        elif e["type"] == "missing":
            msg = "is required"
        elif e["type"] == "too_long":
            msg = msg.replace("List should have at most", "lists at most").replace("after validation, not", "; got")
        for line in msg.splitlines():  # a model-level check may report several fields, one per line
            lines.append(f"{prefix}{loc}: {line}" if loc else f"{prefix}{line}")
    return "\n".join(lines)


def parse_sweep(data: Any, source: str = "sweep") -> Sweep:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return Sweep.model_validate(data)
    except ValidationError as e:
        raise SpecError.of(source, format_validation_error(e).splitlines()) from None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_VALUES = 100_000


def expand_env(text: str, env: dict[str, str] | None = None, source: str = "sweep") -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in one string with environment values.

    Lets one sweep file name its bucket once, in the environment (a Kubernetes ConfigMap), and
    run unchanged on a laptop and a cluster. ``$NAME`` without braces is left alone. Applied to
    each parsed string value (:func:`substitute_env`), never to a file's text before parsing.
    """
    env = os.environ if env is None else env
    missing: list[str] = []

    def value(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return m.group(0)

    out = _ENV_REF.sub(value, text)
    if missing:
        raise SpecError(f"{source}: environment variable(s) not set: {', '.join(sorted(set(missing)))}")
    return out


def substitute_env(data: Any, env: dict[str, str] | None = None, source: str = "sweep") -> Any:
    """``data`` with ``${VAR}`` substituted in every string *value* (keys are left alone).

    The result of a substitution is a plain string: it is never parsed as YAML again, so a
    variable cannot add fields or change another one. An unset variable is an error naming the
    field and the variable (``dataset.root: environment variable FOOD101_ROOT is not set``).
    """
    problems: list[str] = []
    seen = [0]

    def walk(node: Any, path: str) -> Any:
        seen[0] += 1
        if seen[0] > _MAX_VALUES:
            raise SpecError(f"{source}: more than {_MAX_VALUES:,} values (YAML aliases that multiply?); "
                            "a sweep file is a page of settings")
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            try:
                return expand_env(node, env)
            except SpecError as e:
                names = str(e).split("not set: ", 1)[-1]
                plural = "s" if "," in names else ""
                problems.append(f"  {path}: environment variable{plural} {names} {'are' if plural else 'is'} not set "
                                f"(write ${{NAME:-default}} for a default)")
                return node
        return node

    out = walk(data, "")
    if problems:
        raise SpecError.of(source, problems)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}",
                                                    key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line: where, then what."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def _quote_hint(text: str, err: yaml.YAMLError) -> str:
    """A hint to quote ``${VAR}`` when the line the YAML error points at has one unquoted: inside a
    ``{...}`` mapping its braces are YAML syntax."""
    mark = getattr(err, "problem_mark", None)
    lines = text.splitlines()
    if mark is None or not 0 <= mark.line < len(lines):
        return ""
    ref = re.search(r"(?<![\"'])\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}", lines[mark.line])
    if ref is None:
        return ""
    return f' (quote values with ${{...}} inside {{...}}, e.g. "{ref.group(0)}")'


def parse_yaml_text(data: bytes, source: str) -> Any:
    """UTF-8 YAML bytes -> Python data, or :class:`SpecError` with one line saying why not."""
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(f"{source}: {len(data):,} bytes is too large for a sweep file "
                        f"(at most {MAX_FILE_BYTES:,}); is it the right file?")
    if b"\x00" in data:
        raise SpecError(f"{source}: a binary file, not a YAML sweep file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the sweep file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SpecError(f"{source}: not valid YAML: {_yaml_problem(e)}{_quote_hint(text, e)}") from None
    except RecursionError:
        raise SpecError(f"{source}: not valid YAML: nested too deeply") from None


def read_sweep_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a local sweep file: it must exist and be a regular file (a FIFO would block)."""
    path = str(path)
    if not os.path.exists(path):
        raise SpecError(f"{path}: sweep file does not exist")
    try:
        return read_bytes(path)
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep file: {e.strerror or e}") from None


def load_sweep(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Sweep:
    """Read and validate a sweep YAML file; ``${VAR}`` expands from ``env`` (default: the environment)
    inside string values. Raises :class:`SpecError`, one line per problem."""
    path = str(path)
    data = parse_yaml_text(read_sweep_file(path), path)
    return parse_sweep(substitute_env(data, env, source=path), source=path)
