"""The recorded THUMOS14 constants are what the tool derives from the real annotation files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from case.data import constants
from case.data.annotations import Segment, foreground_mask, num_snippets

TOOL = Path(__file__).resolve().parents[2] / "examples" / "wtal_case" / "tools" / "thumos14_stats.py"


def _tool():
    spec = importlib.util.spec_from_file_location("thumos14_stats", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_snippet_timing() -> None:
    assert constants.FRAMES_PER_SNIPPET == 16
    assert constants.FEATURE_FPS == 25.0
    assert constants.SNIPPET_SECONDS == pytest.approx(0.64, abs=1e-15)


@pytest.mark.parametrize(
    ("duration", "expected"), [(0.0, 1), (0.639, 1), (0.64, 1), (1.28, 2), (1.2799, 1), (64.0, 100), (154.6, 241)]
)
def test_num_snippets_counts_whole_16_frame_windows(duration: float, expected: int) -> None:
    assert num_snippets(duration) == expected


def test_foreground_mask_uses_snippet_centres() -> None:
    # Centres at 0.32, 0.96, 1.60, 2.24, 2.88 s.
    mask = foreground_mask([Segment(0.9, 1.7, "a"), (2.8, 2.9)], 5)
    assert mask.tolist() == [False, True, True, False, True]
    assert not foreground_mask([], 3).any()


def test_constants_equal_what_the_tool_computes_from_the_real_files(thumos14_dir: Path) -> None:
    computed = _tool().thumos14_statistics(thumos14_dir)
    recorded = {name[len("THUMOS14_") :] for name in dir(constants) if name.startswith("THUMOS14_")}
    assert recorded == set(computed), "every THUMOS14_* constant must be derived by the tool, and vice versa"
    for key, value in computed.items():
        assert getattr(constants, f"THUMOS14_{key}") == value, key


def test_constants_agree_with_the_documented_facts() -> None:
    # ../shared/data/README.md: 200 + 210 videos, 20 classes, mean 15 instances (median 8-9,
    # max 218), instance median ~3 s, video median ~155 s, ~30% foreground, ~330 snippets.
    assert constants.THUMOS14_NUM_VIDEOS == {"train": 200, "test": 210}
    classes = list(constants.THUMOS14_CLASSES)
    assert len(classes) == 20 and classes == sorted(classes)
    ipv = constants.THUMOS14_INSTANCES_PER_VIDEO
    assert 14.5 < ipv["mean"] < 16 and 8 <= ipv["median"] <= 9 and ipv["max"] == 218
    assert constants.THUMOS14_INSTANCE_SECONDS["median"] == pytest.approx(3.0, abs=0.3)
    assert constants.THUMOS14_VIDEO_SECONDS["median"] == pytest.approx(155, abs=5)
    assert constants.THUMOS14_FOREGROUND_FRACTION["snippets"] == pytest.approx(0.30, abs=0.03)
    assert constants.THUMOS14_SNIPPETS_PER_VIDEO["mean"] == pytest.approx(330, abs=10)
    assert sum(constants.THUMOS14_CLASSES_PER_VIDEO.values()) == 410
    assert sum(constants.THUMOS14_CLASS_SET_VIDEOS.values()) == 410
    pairs = sorted(constants.THUMOS14_CLASS_PAIR_VIDEOS.items(), key=lambda kv: -kv[1])
    assert [p for p, _ in pairs[:2]] == [("CricketBowling", "CricketShot"), ("CliffDiving", "Diving")]


def test_tool_prints_the_constants_as_python(thumos14_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tool().main(["--root", str(thumos14_dir)])
    namespace: dict = {}
    exec(capsys.readouterr().out, namespace)  # the printed text is valid Python ...
    assert namespace["THUMOS14_CLASS_PAIR_VIDEOS"] == constants.THUMOS14_CLASS_PAIR_VIDEOS  # ... with the values
