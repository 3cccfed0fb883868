"""Score temporal action detections by the ActivityNet protocol (mAP at several tIoU thresholds).

Usage::

    python examples/wtal_case/evaluate.py --gt GT.json --pred PRED.json --subset test \\
        --tiou 0.1 0.2 0.3 0.4 0.5 0.6 0.7 --json

prints ``{"tiou": [...], "mAP": [...], "average": ...}`` (fractions). Without ``--json`` it
prints a table in percent (``--per-class`` adds one row per class). ``--out FILE`` also writes
the JSON object atomically. Exit status 2 on a malformed or missing file. The protocol and the
file formats are documented in ``case.metrics`` and docs/wtal_evaluation.md.

A trained model instead of a predictions file::

    python examples/wtal_case/evaluate.py --checkpoint runs/x/checkpoints/final.pt \\
        [--config examples/wtal_case/configs/thumos14.yaml] [--set eval.split=test] [--gt GT.json]

runs the checkpoint on a data set — by default its own run's test split; ``--config`` and
``--set`` choose another data set or test-time settings (the ``data``, ``eval``,
``postprocess`` and ``train.device`` values; the model is the checkpoint's) — and writes
``predictions.json`` for every video, with or without ground truth, into ``--eval-dir``
(default ``<run>/eval-<checkpoint>-<config>-<split>/``). When the data set's videos carry
annotations (or ``--gt`` is given) it also writes ``metrics.json`` there and prints the
scores; otherwise it only writes the predictions. One forward pass per video scores the three
test-time foregrounds of clustering-assisted testing, P^A (attention), P^T (cluster) and P^M
(mixed): the table has a row for each, the JSON object (and ``metrics.json``) keeps the
configured mode's figures at the top and adds ``"foreground_mode"`` and ``"modes": {mode:
{tiou, mAP, average}}``; ``predictions.json`` holds the configured mode's detections.

``--pred`` goes through the same scoring step as ``--checkpoint`` (``case.scoring``: the same
checks; detections of labels that the ground truth does not know are dropped and counted) and
never imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `case` package beside this file

# NumPy only: --pred never imports torch (case.evaluation, which runs a checkpoint, is imported
# by run_checkpoint alone)
from case.atomic import atomic_write_json, write_through  # noqa: E402
from case.errors import SETUP_ERRORS, one_line_warnings  # noqa: E402
from case.metrics import (  # noqa: E402
    DEFAULT_TIOU_THRESHOLDS,
    DetectionMetrics,
    check_tiou_thresholds,
    format_metrics,
    metrics_json,
    write_metrics,
)
from case.runfolder import owning_run  # noqa: E402
from case.scoring import evaluate_predictions, format_modes, metrics_record, read_references  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        description="Detection mAP by the ActivityNet protocol (all-point interpolated AP), of a "
        "predictions file or of a trained checkpoint run on a data set."
    )
    parser.add_argument(
        "--gt",
        default=None,
        metavar="GT.json",
        help="ActivityNet-style ground truth: database -> video -> subset, "
        "annotations [{segment: [start, end], label}]; required with --pred, "
        "optional with --checkpoint (default: the data set's annotations)",
    )
    # Where the predictions come from: exactly one source.
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pred", metavar="PRED.json", help='predictions: {"results": {video: [{label, score, segment}]}}'
    )
    source.add_argument(
        "--checkpoint",
        metavar="CKPT.pt",
        help="run this trained model (train.py's checkpoints/*.pt) on a data set and "
        "write its predictions; see --config, --set, --eval-dir",
    )
    parser.add_argument(
        "--subset",
        default=None,
        help="ground-truth subset to evaluate on (default: test; with --checkpoint, the evaluated split)",
    )
    parser.add_argument(
        "--tiou",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="tIoU thresholds (default: 0.1 0.2 ... 0.7; with --checkpoint, eval.tiou)",
    )
    parser.add_argument(
        "--ambiguous",
        metavar="FILE",
        default=None,
        help="drop predictions overlapping these ambiguous segments (THUMOS14 Ambiguous_test.txt); off by default",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object {tiou, mAP, average} in fractions")
    parser.add_argument("--per-class", action="store_true", help="also report the AP of every class")
    parser.add_argument(
        "--out", metavar="FILE", default=None, help="also write {tiou, mAP, average} to this JSON file (atomically)"
    )
    model = parser.add_argument_group("with --checkpoint")
    model.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="data set and test-time settings (data, eval, postprocess, train.device); default: the checkpoint's own",
    )
    model.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a test-time value, e.g. eval.split=test or postprocess.foreground_mode=attention (repeatable)",
    )
    model.add_argument("--device", default=None, help="cpu or cuda (overrides train.device)")
    model.add_argument(
        "--eval-dir",
        default=None,
        metavar="DIR",
        help="where predictions.json and metrics.json go (default: <run>/eval-<checkpoint>-<config>-<split>)",
    )
    return parser


class Scores:
    """What one invocation scored: the figures of each foreground mode (one, from ``--pred``),
    and the one that the top-level figures are (the configured mode of ``--checkpoint``).

    A plain class: the tests load this script as a module that ``sys.modules`` does not hold,
    where a dataclass cannot resolve its annotations.
    """

    def __init__(self, metrics: dict[str, DetectionMetrics], mode: str | None = None) -> None:
        self.metrics, self.mode = metrics, mode

    @property
    def main(self) -> DetectionMetrics:
        return self.metrics[self.mode] if self.mode is not None else next(iter(self.metrics.values()))

    def record(self) -> dict[str, Any]:
        """The JSON object of ``--json``, ``--out`` and ``metrics.json``: ``{tiou, mAP, average}``,
        and with ``--checkpoint`` every mode's figures (:func:`case.scoring.metrics_record`)."""
        return metrics_record(self.metrics, self.mode) if self.mode is not None else self.main.to_dict()


def report(scores: Scores, args: argparse.Namespace) -> str:
    """What to print: the JSON object, or a summary line and a table in percent (one row per
    foreground mode with ``--checkpoint``)."""
    metrics = scores.main
    if args.json:
        out: dict[str, Any] = scores.record()
        if args.per_class:
            out["per_class_ap"] = metrics.per_class_ap
        return json.dumps(out)
    summary = (
        f"subset {args.subset!r}: {metrics.num_ground_truth} ground-truth instances of "
        f"{len(metrics.per_class_ap)} classes, {metrics.num_predictions} predictions"
    )
    notes = []
    if metrics.num_outside_subset:
        notes.append(f"{metrics.num_outside_subset} in videos outside the subset, counted as false positives")
    if metrics.num_ambiguous:
        notes.append(f"{metrics.num_ambiguous} removed as ambiguous")
    if metrics.num_unknown_labels:
        notes.append(f"{metrics.num_unknown_labels} of labels the ground truth does not know, dropped")
    if notes:
        summary += " (" + "; ".join(notes) + ")"
    if scores.mode is None:
        return summary + "\n" + format_metrics(metrics, per_class=args.per_class)
    table = format_modes(scores.metrics, scores.mode, per_class=args.per_class)
    note = "* the configured foreground (postprocess.foreground_mode): its predictions are written and counted above"
    return f"{summary}\n{table}\n{note}"


def score_file(args: argparse.Namespace) -> Scores:
    """``--pred``: the file scored by the evaluation path's own step (:mod:`case.scoring`), the
    same checks and unknown-label rule as ``--checkpoint``; NumPy only."""
    gt, ambiguous = read_references(args.gt, args.subset, args.ambiguous)
    return Scores({"pred": evaluate_predictions(gt, args.pred, args.tiou or DEFAULT_TIOU_THRESHOLDS, ambiguous)})


def default_eval_dir(checkpoint: Path, config: str | None, split: str) -> Path:
    """``<run>/eval-<checkpoint stem>-<config stem or "run">-<split>`` beside the checkpoint's run."""
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run / f"eval-{checkpoint.stem}-{Path(config).stem if config else 'run'}-{split}"


def run_checkpoint(args: argparse.Namespace) -> Scores | None:
    """``--checkpoint``: predict on the data set, write predictions (and metrics when there is ground truth).

    One call of the evaluation path that ``train.py`` and the ablation use
    (:func:`case.evaluation.evaluate_checkpoint`), which scores P^A, P^T and P^M from one
    forward pass. Returns the scores, or None when the data set has no annotation and no
    ``--gt`` is given. Progress notes go to stderr (stdout stays one JSON object with ``--json``).
    """
    from case.evaluation import evaluate_checkpoint  # torch: only where a checkpoint runs

    checkpoint = Path(args.checkpoint)
    overrides = list(args.set)
    # the flags as overrides (values as JSON, which YAML reads back exactly, paths included)
    for key, value in (("train.device", args.device), ("eval.tiou", args.tiou), ("eval.ambiguous", args.ambiguous)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.eval_dir:
        check_outputs_spare_runs(_eval_files(Path(args.eval_dir)))
        check_outputs_spare_inputs(_eval_files(Path(args.eval_dir)), args)
    result = evaluate_checkpoint(
        checkpoint, config=args.config, overrides=overrides, ground_truth=args.gt, subset=args.subset
    )
    split = result.config.eval.split
    out_dir = Path(args.eval_dir) if args.eval_dir else default_eval_dir(checkpoint, args.config, split)
    # what the configuration made it read (the data set's gt.json, features, ...) is an input too
    read = [("the data set", path) for path in result.dataset.files]
    if result.config.eval.ambiguous:
        read.append(("eval.ambiguous", result.config.eval.ambiguous))
    outputs = _eval_files(out_dir) + ([("--out", args.out)] if args.out else [])
    check_outputs_spare_runs(outputs)
    check_outputs_spare_inputs(outputs, args, read)
    if args.out and _same_file(args.out, out_dir / "predictions.json"):
        raise ValueError(f"--out {args.out} is where the predictions go; write the metrics to another file")
    with writing("--eval-dir", out_dir / "predictions.json"):
        atomic_write_json(out_dir / "predictions.json", result.predictions[result.mode])
    bare = sum(1 for e in result.dataset.ground_truth()["database"].values() if not e["annotations"])
    note = f"predictions for {len(result.dataset)} {split} videos ({bare} without ground truth)"
    note += f": {out_dir}/predictions.json"
    if not result.metrics:  # no annotation in the data set, and no --gt
        print(f"{note}; no annotation in the data set: nothing to evaluate", file=sys.stderr)
        return None
    args.subset = args.subset or split
    scores = Scores(result.metrics, result.mode)
    with writing("--eval-dir", out_dir / "metrics.json"):
        write_metrics(out_dir / "metrics.json", scores.record())
    print(f"{note}; metrics: {out_dir}/metrics.json", file=sys.stderr)
    return scores


def _eval_files(out_dir: Path) -> list[tuple[str, Path]]:
    """What ``--checkpoint`` writes, with the flag that chose where."""
    return [("--eval-dir", out_dir / "predictions.json"), ("--eval-dir", out_dir / "metrics.json")]


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links and ``..``; a missing file by its resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _file_id(path: str | Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def check_outputs_spare_inputs(
    outputs: Iterable[tuple[str, str | Path]],
    args: argparse.Namespace,
    read: Iterable[tuple[str, str | Path]] = (),
) -> None:
    """Refuse to write a file the run reads (``--out g.json`` would silently replace the ground truth).

    The inputs are the files the flags name and ``read``, (what, path) pairs of the files
    that the configuration made the evaluation read (with ``--checkpoint``: the data set's).
    """
    inputs = [
        (flag, getattr(args, name))
        for flag, name in (
            ("--gt", "gt"),
            ("--pred", "pred"),
            ("--ambiguous", "ambiguous"),
            ("--checkpoint", "checkpoint"),
            ("--config", "config"),
        )
        if getattr(args, name)
    ]
    read_ids = {}
    for what, path in read:  # thousands of feature files: compared by identity, not pairwise
        read_ids.setdefault(_file_id(path), (what, path))
    read_ids.pop(None, None)
    for out_flag, out_path in outputs:
        clash = [(flag, path) for flag, path in inputs if _same_file(out_path, path)]
        clash += [read_ids[key]] if (key := _file_id(out_path)) in read_ids else []
        if clash:
            in_flag, in_path = clash[0]
            raise ValueError(f"{out_flag} {out_path} is an input ({in_flag} {in_path}); write to another file")


def check_outputs_spare_runs(outputs: Iterable[tuple[str, str | Path]]) -> None:
    """Refuse to write a run folder's own files (``--eval-dir <run>`` would replace the
    predictions and metrics of its training with those of other settings).

    ``outputs`` are (flag, path) pairs; a run folder is one that :func:`case.runfolder.owning_run`
    recognises (its ``config.yaml``, or the lock of a run starting in it).
    """
    for flag, path in outputs:
        run = owning_run(path)
        if run is None:
            continue
        if flag == "--eval-dir":
            raise ValueError(
                f"--eval-dir {Path(path).parent} is a run folder of train.py, whose own {Path(path).name} it "
                "would replace; choose another folder (by default one inside the run)"
            )
        raise ValueError(f"{flag} {path} is a file of the run folder {run} (train.py's own); write to another file")


@contextlib.contextmanager
def writing(flag: str, path: str | Path) -> Iterator[None]:
    """Inside, a write that fails is one error naming the flag, the file and the reason.

    The OS error alone named the temporary file beside the target (a read-only folder), or
    nothing at all (``[Errno 28] No space left on device`` from ``--out /dev/full``).
    """
    try:
        yield
    except OSError as err:
        raise OSError(f"{flag} {path}: cannot write it ({err.strerror or err})") from err


def write_out(path: Path, record: dict[str, Any]) -> None:
    """``--out``: written atomically, or through a link the user gave (``--out /dev/stdout``, a
    link to ``/proc/self/fd/1``, which an atomic write would replace by a file)."""
    if path.is_symlink():
        write_through(path, metrics_json(record).encode("utf-8"))
    else:
        write_metrics(path, record)


#: The input files a flag names, and what each should be (for the message when it is a folder).
INPUT_FILES = (
    ("--gt", "gt", "a ground-truth JSON file"),
    ("--pred", "pred", "a predictions JSON file"),
    ("--ambiguous", "ambiguous", "an ambiguous-segment text file"),
)


def check_input_places(args: argparse.Namespace) -> None:
    """Refuse, before any work, an input file given as a folder: the OS's "cannot be read: Is a
    directory" named no flag."""
    for flag, name, expected in INPUT_FILES:
        path = getattr(args, name)
        if path and Path(path).is_dir():
            raise ValueError(f"{flag} {path} is a folder; {expected} is expected")


def check_output_places(args: argparse.Namespace) -> None:
    """Refuse, before any work, an ``--out`` that is a folder or an ``--eval-dir`` that is a file."""
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; name the JSON file to write")
    if args.eval_dir and Path(args.eval_dir).exists() and not Path(args.eval_dir).is_dir():
        raise ValueError(f"--eval-dir {args.eval_dir} is a file, not a folder")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pred is not None:
        if args.gt is None:
            parser.error("--gt is required with --pred")
        misplaced = [
            flag
            for flag, value in (
                ("--config", args.config),
                ("--set", args.set),
                ("--device", args.device),
                ("--eval-dir", args.eval_dir),
            )
            if value
        ]
        if misplaced:
            parser.error(f"{', '.join(misplaced)} only apply with --checkpoint")
    try:
        with one_line_warnings("evaluate.py"):
            check_input_places(args)
            check_output_places(args)
            if args.tiou is not None:
                check_tiou_thresholds(args.tiou, "--tiou")
            if args.out:
                check_outputs_spare_runs([("--out", args.out)])
                check_outputs_spare_inputs([("--out", args.out)], args)
            if args.checkpoint is not None:
                scores = run_checkpoint(args)
                if scores is None:
                    return 0
            else:
                args.subset = args.subset or "test"
                scores = score_file(args)
            if args.out:
                with writing("--out", args.out):
                    write_out(Path(args.out), scores.record())
    except (*SETUP_ERRORS, OSError, ValueError, RuntimeError) as exc:  # a missing or unreadable file too
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    print(report(scores, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
