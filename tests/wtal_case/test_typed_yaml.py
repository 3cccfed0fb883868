"""The generic typed-YAML loader (:mod:`case.typed_yaml`), apart from the example's sections.

``case/config.py`` held both the loader (strict YAML, typed mapping onto dataclasses, ``--set``
overrides) and the example's sections; the loader now lives in its own module, knows no section,
and :mod:`case.config` only gathers the sections and their rules (issue 21).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from case.errors import ConfigError
from case.typed_yaml import apply_overrides, config_differences, from_dict, load_typed, to_dict

CASE = Path(__file__).resolve().parents[2] / "examples" / "wtal_case" / "case"


@dataclass
class Inner:
    rate: float = 0.1
    mode: Literal["a", "b"] = "a"

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"inner.rate must be > 0, got {self.rate}")


@dataclass
class Outer:
    steps: int = 3
    sizes: tuple[int, int] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_any_dataclass_loads_typed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "outer.yaml"
    path.write_text("steps: 5\ninner:\n  rate: 1e-4\n")
    loaded = load_typed(Outer, path, ["inner.mode=b", "sizes=[3, 4]"])
    assert loaded == Outer(steps=5, sizes=(3, 4), inner=Inner(rate=1e-4, mode="b"))
    assert from_dict(Outer, to_dict(loaded)) == loaded  # plain data back and forth
    assert config_differences(to_dict(Outer()), to_dict(loaded))[0] == "steps: 3 -> 5"
    for overrides, message in [
        (["inner.mode=c"], "inner.mode must be one of 'a', 'b', got 'c'"),
        (["inner.rate=-1"], "inner.rate must be > 0, got -1.0"),
        (["steps=" + "9" * 400], "steps must be an integer within ±2**63, got an integer of 400 digits"),
        (["inner.rat=2"], "--set inner.rat: unknown key 'inner.rat'; valid keys of inner: rate, mode"),
        (["steps.x=2"], "--set steps.x: 'steps' is a value, not a section"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
            load_typed(Outer, path, overrides)
    with pytest.raises(ConfigError, match="key 'steps' is written twice"):
        path.write_text("steps: 1\nsteps: 2\n")
        load_typed(Outer, path)
    assert apply_overrides({}, ["steps=7"], Outer) == {"steps": 7}


def test_the_loader_knows_no_section_of_the_example() -> None:
    """typed_yaml imports nothing of the example's sections; config.py defines no loader machinery."""
    loader = ast.parse((CASE / "typed_yaml.py").read_text())
    imported = {node.module for node in ast.walk(loader) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "collections.abc", "pathlib", "typing", "errors", "messages"}, imported
    config = ast.parse((CASE / "config.py").read_text())
    defined = {node.name for node in config.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & {"_convert", "_StrictLoader", "parse_yaml", "from_dict", "_type_name"}, defined


@pytest.mark.parametrize("name", ["case.typed_yaml", "case.messages", "case.config"])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
