"""The package's import graph: no cycle (function-local imports counted), few function-local imports of its own
modules, each one delaying a heavy dependency, and light entry points. The layer contracts themselves are
pyproject.toml's [tool.importlinter], run by `lint-imports` in .ci/run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "lossyvision"
HEAVY = ("torch", "ray", "mlflow", "timm", "transformers")
#: The issue 24 ceiling, the CLI included; there were 207 before the layers were written down.
MAX_LOCAL_IMPORTS = 30


def _local_own_imports() -> list[tuple[str, int, str]]:
    """(file, line, source line) of each import of a lossyvision module inside a function."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                own = (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0]
                       == "lossyvision") or (isinstance(node, ast.Import)
                                             and any(a.name.split(".")[0] == "lossyvision" for a in node.names))
                if own or (isinstance(node, ast.ImportFrom) and node.level):
                    found.append((str(path.relative_to(PACKAGE)), node.lineno, lines[node.end_lineno - 1]))
    return sorted(set(found))


def test_no_import_cycle_counting_function_local_imports():
    graph = grimp.build_graph("lossyvision")
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported != importer and graph.chain_exists(imported, importer):
                cycles.append(" -> ".join(graph.find_shortest_chain(imported, importer) + (imported,)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:10])


def test_function_local_imports_are_few_and_each_delays_a_heavy_dependency():
    """Fewer than 30 in the whole package, the CLI included. Below the command line each delays
    torch/ray/mlflow/timm/transformers. The CLI (the top layer: nothing imports it, so no cycle can hide in it)
    imports each command's body (lossyvision.commands) in the command and nothing else there, so that
    `lossyvision --help` loads no pandas nor pydantic; each of those says what it delays too."""
    local = _local_own_imports()
    assert len(local) < MAX_LOCAL_IMPORTS, (f"{len(local)} function-local imports of lossyvision modules:\n"
                                            + "\n".join(f"{f}:{n}: {line.strip()}" for f, n, line in local))
    below = [(f, n, line) for f, n, line in local if f != "cli.py"]
    unexplained = [f"{f}:{n}: {line.strip()}" for f, n, line in below
                   if "# lazy: loads " not in line or line.split("# lazy: loads ", 1)[1].split()[0] not in HEAVY]
    unexplained += [f"{f}:{n}: {line.strip()}" for f, n, line in local if f == "cli.py" and "# lazy: loads " not in line]
    assert not unexplained, ("a function-local import of a lossyvision module must say which heavy dependency "
                             "it delays (move it to the top otherwise):\n" + "\n".join(unexplained))


def test_each_cli_command_imports_only_its_body():
    """A command in cli.py is a signature: one function-local import, of its module in lossyvision.commands."""
    cli = PACKAGE / "cli.py"
    tree = ast.parse(cli.read_text())
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or not any(
                isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" for d in fn.decorator_list):
            continue
        imports = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert len(imports) == 1, f"cli.py:{fn.name} imports {len(imports)} modules, expected its body's one"
        assert isinstance(imports[0], ast.ImportFrom) and imports[0].module == "lossyvision.commands", (
            f"cli.py:{fn.name} imports {ast.unparse(imports[0])}, expected `from lossyvision.commands import ...`")


def _loaded(modules: str, watched: tuple[str, ...]) -> list[str]:
    code = f"import sys, {modules}; print(sorted(m for m in {watched!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())


def test_the_cli_starts_light_and_the_schema_and_the_report_load_no_heavy_dependency():
    assert _loaded("lossyvision.cli", HEAVY + ("pandas", "pyarrow", "scipy", "matplotlib", "pydantic")) == []
    assert _loaded("lossyvision.spec, lossyvision.output, lossyvision.report, lossyvision.sweep.status", HEAVY) == []
