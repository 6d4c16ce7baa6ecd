"""The README's sample verdict is the demo's real answer, as the current code states it.

``tests/fixtures/demo-output`` is the output of ``sweeps/demo.yaml`` as shipped (seed 0: the results
table, the plan, the per-image predictions and the sweep copy; no dataset, no store). The verdict is
recomputed from it by the current code and compared with the block the README shows, so a change of
wording or statistics that the README does not follow fails here.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lossyvision.cli import app

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "demo-output"


def readme_sample() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("For the demo it reads like:")
    block = text[text.index("```\n", start) + 4:]
    return block[: block.index("```")].splitlines()


def words(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


def test_the_readme_verdict_is_the_demo_output_s_verdict(tmp_path):
    import shutil

    output = tmp_path / "demo"
    shutil.copytree(FIXTURE, output)  # advise writes nothing, but a test never risks the fixture
    result = CliRunner().invoke(app, ["advise", str(output)])
    assert result.exit_code == 0, result.output
    real = result.output.rstrip("\n").splitlines()
    assert real[0].startswith("resnet10t: ") and "resnet10t (top1):" in real  # the decision, then the questions
    assert words(readme_sample()) == words(real)
    # same line structure: a new line in the README wherever the real output starts one
    starts = [ln for ln in readme_sample() if len(ln) - len(ln.lstrip()) <= 2]  # continuations indent 4 more
    assert [ln.split()[0] for ln in starts] == [ln.split()[0] for ln in real]
