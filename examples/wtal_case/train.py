#!/usr/bin/env python
"""Train CASE and evaluate it; with no arguments, on the synthetic THUMOS14-like set on the CPU.

    python examples/wtal_case/train.py                                  # synthetic, ~3.5 min on 2 cores
    python examples/wtal_case/train.py --config examples/wtal_case/configs/thumos14.yaml --device cuda
    python examples/wtal_case/train.py --set labeling.scc.sigma=0.2 --set train.steps=500 --out runs/sigma
    python examples/wtal_case/train.py --out runs/x --resume             # continue a killed run
    torchrun --nproc_per_node=2 examples/wtal_case/train.py --config ... # DDP (gloo on the CPU)

The run folder (``--out``; default ``runs/<config>-seed<seed>``, numbered ``-2``, ``-3``, ...
when that one already holds a run or another run takes it first, and the unnumbered one with
``--resume``) receives config.yaml,
log.jsonl, checkpoints/, predictions.json, metrics.json and plots. The run ends with a table
of the test mAP with each test-time foreground (P^A, P^T, P^M: one forward pass scores all
three) and, as its last line, metrics.json's JSON.

Everything that can be wrong with the settings, the machine or the data is found before the
first step and before the run folder exists: one line on stderr, exit status 2, nothing to
clean up (``case.trainer.prepare_run``). Warnings (data oddities that real data has, a stale
lock taken over, a damaged checkpoint passed over) are one line each and do not stop the run.
A write that fails during the run (a full disk, a file-size limit, a read-only folder) is one
line naming the file, and so is Ctrl-C (exit status 130): the run folder keeps the checkpoints
written before, for ``--resume``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from case.config import CONFIG_DIR, load_config  # noqa: E402
from case.errors import SETUP_ERRORS, ConfigError, Interrupted, ctrl_c_is_never_lost, one_line_warnings  # noqa: E402
from case.postprocess import MODE_LABELS  # noqa: E402
from case.trainer import train  # noqa: E402

#: A disk (or quota) that is full: the run stops with one line, and --resume continues it later.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)

#: The exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=str(CONFIG_DIR / "synthetic.yaml"), help="YAML config (default: configs/synthetic.yaml)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.steps=100 (repeatable)",
    )
    parser.add_argument(
        "--out", default=None, help="run folder (default: runs/<config>-seed<seed>, or -2, -3, ... if taken)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides train.seed)")
    parser.add_argument("--device", default=None, help="cpu or cuda (overrides train.device)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    return parser.parse_args(argv)


def default_run_folder(config_name: str, seed: int, resume: bool) -> tuple[Path, bool]:
    """``runs/<config>-seed<seed>``, and whether the run may take the next free name instead.

    A new run never reuses a folder that holds a run: it takes the first free one of ``-2``,
    ``-3``, ..., chosen when the folder is locked (:meth:`case.runfolder.RunFolder.open_new`),
    so that two runs started together never take the same one.
    """
    base = Path("runs") / f"{config_name}-seed{seed}"
    # a resume continues the unnumbered run; DDP ranks must agree without talking: no numbering
    return base, not resume and int(os.environ.get("WORLD_SIZE", "1")) == 1


def main(argv: list[str] | None = None) -> int:
    # 1. Arguments and configuration
    args = parse_args(argv)
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    out, numbered = Path(args.out or "."), False
    if not args.out:
        out, numbered = default_run_folder(Path(args.config).stem, cfg.train.seed, args.resume)

    # 2. Train and evaluate (everything is checked before the first step)
    with one_line_warnings("train.py"), ctrl_c_is_never_lost():
        try:
            summary = train(cfg, out, resume=args.resume, numbered=numbered)
        except Interrupted as err:
            print(f"train.py: {err}", file=sys.stderr)
            return INTERRUPTED
        except KeyboardInterrupt:  # before the first step: nothing written, nothing to resume
            print("train.py: interrupted before training started", file=sys.stderr)
            return INTERRUPTED
        except SETUP_ERRORS as err:
            print(f"train.py: error: {err}", file=sys.stderr)
            return 2
        except FloatingPointError as err:  # diverged: the run folder keeps its checkpoints
            print(f"train.py: error: {err}", file=sys.stderr)
            return 1
        except OSError as err:
            if err.errno in FULL_DISK:
                print(
                    f"train.py: error: {err.filename or out}: {err.strerror}; the checkpoints written before are "
                    "whole: free some space and continue with --resume",
                    file=sys.stderr,
                )
                return 1
            # a file-size limit, a read-only or vanished folder, an I/O error: what failed, in one line
            code = errno.errorcode.get(err.errno, err.errno) if err.errno is not None else type(err).__name__
            print(
                f"train.py: error: {err.filename or out}: {err.strerror or err} ({code}); the checkpoints written "
                "before are whole: fix that and continue with --resume",
                file=sys.stderr,
            )
            return 2

    # 3. Report
    if summary is not None:
        metrics = summary["metrics"]
        tious = " | ".join(f"{t:.2f}" for t in metrics["tiou"])
        print(f"\nrun folder: {summary['folder']}  ({summary['steps']} steps, {summary['seconds']:.0f} s)")
        if summary.get("selected_step") is not None:
            print(f"model selection: best held-out step {summary['selected_step']} (training videos only)")
        print(f"| mAP (%), test-time foreground | {tious} | avg |\n|---|{'---|' * len(metrics['tiou'])}---|")
        for mode, figures in metrics["modes"].items():
            maps = " | ".join(f"{100 * m:.1f}" for m in figures["mAP"])
            configured = ", configured" if mode == metrics["foreground_mode"] else ""
            name = f"{MODE_LABELS.get(mode, mode)} ({mode}{configured})"
            print(f"| {name} | {maps} | {100 * figures['average']:.1f} |")
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
