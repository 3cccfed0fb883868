#!/usr/bin/env python
"""Count the CASE model's parameters and MACs for one video (paper Table 1).

    python examples/wtal_case/profile_model.py --config examples/wtal_case/configs/thumos14.yaml

prints one JSON line ``{"params": <int>, "macs": <int>}`` for a video of ``data.num_segments``
snippets (THUMOS14: T = 750 -> 2,137,130 parameters and 1.60 GMACs; the paper reports
2.13 M and 1.60 G). MACs are torch.utils.flop_counter's forward FLOPs / 2. No data is read:
the number of classes comes from ``model.num_classes`` (or ``--classes``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from case.config import CONFIG_DIR, ConfigError, load_config  # noqa: E402
from case.errors import fits_in_memory  # noqa: E402
from case.model import CASEModel, count_params_and_macs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=str(CONFIG_DIR / "thumos14.yaml"), help="YAML config (default: thumos14.yaml)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--classes", type=int, default=None, help="number of classes (sets model.num_classes)")
    parser.add_argument("--snippets", type=int, default=None, help="video length T (default: data.num_segments)")
    args = parser.parse_args(argv)
    overrides = list(args.set)
    if args.classes is not None:  # checked like the config value it stands for
        overrides.append(f"model.num_classes={args.classes}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        parser.error(str(err))
    if cfg.model.num_classes is None:
        parser.error(f"{args.config} does not set model.num_classes; pass --classes")
    snippets = args.snippets if args.snippets is not None else cfg.data.num_segments
    if snippets < 1:
        parser.error(f"--snippets must be >= 1, got {snippets}")
    model = f"the model (model.hidden_dim={cfg.model.hidden_dim}, {cfg.model.num_classes} classes)"
    try:
        with fits_in_memory(f"{model} on {snippets} snippets"):
            counted = count_params_and_macs(CASEModel(cfg.data.feature_dim, cfg.model.num_classes, cfg.model), snippets)
    except ConfigError as err:
        parser.error(str(err))
    print(json.dumps(counted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
