"""The tutorial's code blocks run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def code_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_tutorial_runs(capsys):
    blocks = code_blocks(DOCS / "tutorial.md")
    assert len(blocks) >= 6
    namespace: dict = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"tutorial.md block {number}", "exec"), namespace)
    assert "converged" not in capsys.readouterr().err


def test_getting_started_runs():
    namespace: dict = {}
    for number, block in enumerate(code_blocks(DOCS / "getting_started.md")):
        exec(compile(block, f"getting_started.md block {number}", "exec"), namespace)
