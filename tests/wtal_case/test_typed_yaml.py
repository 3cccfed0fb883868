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
import typing
from collections import Counter
from dataclasses import dataclass, field, fields
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


def test_type_hints_are_computed_once_per_dataclass(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_dict and apply_overrides compiled every dataclass's type hints (typing.get_type_hints, string
    annotations evaluated) on every call: about 220 times per evaluation of a checkpoint, some 4 ms."""
    from case import typed_yaml
    from case.config import CONFIG_DIR, Config, load_config

    expected = load_config(CONFIG_DIR / "smoke.yaml", ["train.steps=5", "labeling.scc.sigma=0.2"])
    computed: list[type] = []
    real = typing.get_type_hints

    def counting(cls, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        computed.append(cls)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)
    typed_yaml._field_hints.cache_clear()
    for _ in range(3):
        loaded = load_config(CONFIG_DIR / "smoke.yaml", ["train.steps=5", "labeling.scc.sigma=0.2"])
        assert loaded == expected  # the same configuration as with the hints computed each time
        assert from_dict(Config, to_dict(loaded)) == loaded
    sections = {type(getattr(expected, f.name)) for f in fields(Config)}
    assert Counter(computed) == dict.fromkeys(computed, 1) and {Config, *sections} <= set(computed)
    # still checked from the hints: a value of the wrong type, an unknown key
    with pytest.raises(ConfigError, match="train.steps must be an integer"):
        load_config(CONFIG_DIR / "smoke.yaml", ["train.steps=x"])
    with pytest.raises(ConfigError, match="unknown key 'train.stepz'"):
        load_config(CONFIG_DIR / "smoke.yaml", ["train.stepz=5"])
    assert len(computed) == len(set(computed))
