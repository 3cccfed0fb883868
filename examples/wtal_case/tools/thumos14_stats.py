"""Recompute the THUMOS14 statistics recorded in ``case/data/constants.py``.

Usage::

    python examples/wtal_case/tools/thumos14_stats.py [--root ../shared/data/thumos14] [--json]

Reads ``gt.json`` (410 videos: 200 train, 210 test) and takes durations from W-TALC's
``wtalc-annotations/duration.npy`` (``gt.json`` has none); prints the ``THUMOS14_*``
constants as Python (default) or JSON. ``tests/wtal_case/test_data_constants.py`` checks
that the recorded constants equal what this computes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the `case` package when run as a script

from case.data.annotations import attach_durations, read_activitynet_gt, read_wtalc_annotations  # noqa: E402
from case.data.statistics import annotation_statistics, round_significant  # noqa: E402

#: Where the shared annotations live relative to the repository root (``../shared``).
DEFAULT_ROOT = HERE.parents[2].parent / "shared" / "data" / "thumos14"


def thumos14_statistics(root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """The statistics of :func:`case.data.statistics.annotation_statistics` for THUMOS14.

    Classes are the W-TALC class list (the 20 THUMOS14 names in alphabetical order, the
    label order of the official CASE code); every video of ``gt.json`` counts.
    """
    root = Path(root)
    records = read_activitynet_gt(root / "gt.json")
    class_names, wtalc = read_wtalc_annotations(root / "wtalc-annotations")
    attach_durations(records, {r.name: r.duration for r in wtalc})
    return round_significant(annotation_statistics(records.values(), class_names))


def _src(value: Any) -> str:
    # Class names never contain quotes, so swapping them gives double-quoted Python source.
    return repr(value).replace("'", '"')


def format_constant(name: str, value: Any) -> str:
    """``NAME = value`` as Python source, one item per line when it does not fit in 96 columns."""
    line = f"{name} = {_src(value)}"
    if len(line) <= 96 or not isinstance(value, (dict, tuple)):
        return line
    items = [f"{_src(k)}: {_src(v)}" for k, v in value.items()] if isinstance(value, dict) else [_src(v) for v in value]
    opening, closing = ("{", "}") if isinstance(value, dict) else ("(", ")")
    return f"{name} = {opening}\n" + "".join(f"    {item},\n" for item in items) + closing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="folder with gt.json and wtalc-annotations/")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Python constants")
    args = parser.parse_args(argv)
    stats = thumos14_statistics(args.root)
    if args.json:
        # JSON keys must be strings: tuple and integer keys are written with str().
        keyed = {k: {str(a): b for a, b in v.items()} if isinstance(v, dict) else v for k, v in stats.items()}
        print(json.dumps(keyed, indent=1))
        return
    for key, value in stats.items():
        print(format_constant(f"THUMOS14_{key}", value))


if __name__ == "__main__":
    main()
