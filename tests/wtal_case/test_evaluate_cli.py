"""The ``evaluate.py --gt --pred`` command line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from example_scripts import load_evaluate_py  # tests/wtal_case is on sys.path

from case.evaluation import evaluate_predictions as checkpoint_scoring  # what --checkpoint scores with
from case.metrics import evaluate_detection, load_ground_truth

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "wtal_case" / "evaluate.py"
cli = load_evaluate_py()

GT = {
    "database": {
        "v": {
            "subset": "test",
            "annotations": [{"segment": ["0", "10"], "label": "A"}, {"segment": ["20", "30"], "label": "B"}],
        },
        "w": {"subset": "train", "annotations": [{"segment": [0, 5], "label": "A"}]},
    }
}
PRED = {
    "results": {
        "v": [{"label": "A", "score": 0.9, "segment": [0, 6]}, {"label": "B", "score": 0.8, "segment": [21, 30]}],
        "w": [{"label": "A", "score": 0.95, "segment": [0, 5]}],
    }
}


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PRED))
    return gt, pred


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_is_one_object_in_fractions(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = files
    code, out, err = run(
        capsys, "--gt", str(gt), "--pred", str(pred), "--subset", "test", "--tiou", "0.5", "0.7", "--json"
    )
    assert code == 0 and err == ""
    obj = json.loads(out)
    assert set(obj) == {"tiou", "mAP", "average"}
    expected = evaluate_detection(GT, PRED, tiou_thresholds=[0.5, 0.7])
    assert obj == expected.to_dict()
    # A: FP (video w is outside the subset) then TP at 0.5 (tIoU 0.6), miss at 0.7; B: TP.
    assert obj["mAP"] == [pytest.approx((0.5 + 1) / 2), pytest.approx(0.5)]


def test_table_in_percent_with_per_class_rows(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = files
    code, out, _ = run(capsys, "--gt", str(gt), "--pred", str(pred), "--tiou", "0.5", "--per-class")
    lines = out.splitlines()
    assert code == 0
    assert "2 ground-truth instances of 2 classes, 3 predictions" in lines[0]
    assert "1 in videos outside the subset" in lines[0]
    assert lines[1].split() == ["tIoU", "0.50", "avg"]
    assert lines[2].split() == ["mAP", "(%)", "75.00", "75.00"]
    assert lines[3].split()[:2] == ["A", "50.00"] and lines[4].split()[:2] == ["B", "100.00"]
    code, out, _ = run(capsys, "--gt", str(gt), "--pred", str(pred), "--json", "--per-class")
    assert json.loads(out)["per_class_ap"]["B"][0] == 1.0


def test_default_thresholds_and_out_file(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = files
    out_file = tmp_path / "metrics.json"
    code, out, _ = run(capsys, "--gt", str(gt), "--pred", str(pred), "--json", "--out", str(out_file))
    assert code == 0
    assert json.loads(out)["tiou"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert json.loads(out_file.read_text()) == json.loads(out)


def test_ambiguous_option(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = files
    amb = tmp_path / "amb.txt"
    amb.write_text("v 25 26\n")
    code, out, _ = run(capsys, "--gt", str(gt), "--pred", str(pred), "--tiou", "0.5", "--ambiguous", str(amb))
    assert code == 0 and "1 removed as ambiguous" in out
    code, out, _ = run(capsys, "--gt", str(gt), "--pred", str(pred), "--tiou", "0.5", "--ambiguous", str(amb), "--json")
    assert json.loads(out)["mAP"] == [pytest.approx(0.25)]  # B lost its only prediction


@pytest.mark.parametrize(
    ("pred", "subset", "message"),
    [
        ({"results": {"v": [{"label": "A", "score": 0.5, "segment": [3, 1]}]}}, "test", "end 1.0 < start 3.0"),
        # a label the ground truth does not know is dropped, but checked first, as any other
        ({"results": {"v": [{"label": "Q", "score": "garbage", "segment": [0, 1]}]}}, "test", "'score' must be a"),
        ({"results": {"v": [{"label": "A", "score": None, "segment": [0, 1]}]}}, "test", "'score'"),
        # B is in the database (video v) but not in the 'train' subset: still validated
        ({"results": {"w": [{"label": "B", "score": "garbage", "segment": [0, 1]}]}}, "train", "'score' must be a"),
        ({"results": {"w": [{"label": "B", "score": 0.5, "segment": "garbage"}]}}, "train", "must be [start, end]"),
        ({"results": {"w": [{"label": "B", "score": 0.5, "segment": [2, 1]}]}}, "train", "end 1.0 < start 2.0"),
        # a 400-digit integer is a real number that no float holds
        ({"results": {"v": [{"label": "A", "score": 10**400, "segment": [0, 1]}]}}, "train", "'score' must be a"),
        ({"results": {"v": [{"label": "A", "score": 0.5, "segment": [0, 10**400]}]}}, "train", "bounds must be finite"),
    ],
    ids=["reversed", "unknown-garbage-score", "no-score", "other-garbage-score", "other-garbage-segment",
         "other-reversed", "huge-score", "huge-bound"],
)  # fmt: skip
def test_bad_files_exit_with_status_2(
    files: tuple[Path, Path],
    tmp_path: Path,
    pred: dict,
    subset: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gt, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(pred))
    code, out, err = run(capsys, "--gt", str(gt), "--pred", str(bad), "--subset", subset)
    assert code == 2 and out == "" and message in err and "bad.json" in err, err
    assert err.count("\n") == 1  # one line, no traceback (a 400-digit score was an OverflowError)
    code, _, err = run(capsys, "--gt", str(gt), "--pred", str(tmp_path / "none.json"))
    assert code == 2 and "not found" in err


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("--gt", "a ground-truth JSON file"), ("--pred", "a predictions JSON file"),
     ("--ambiguous", "an ambiguous-segment text file")],
)  # fmt: skip
def test_a_folder_given_for_an_input_file_names_the_flag(
    files: tuple[Path, Path], tmp_path: Path, flag: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--gt <folder>` (or --pred, --ambiguous) was "a ground truth file <folder> cannot be read: Is a
    directory", the OS's words naming no flag."""
    gt, pred = files
    folder = tmp_path / "folder"
    folder.mkdir()
    given = {"--gt": str(gt), "--pred": str(pred), flag: str(folder)}
    code, out, err = run(capsys, *(item for pair in given.items() for item in pair))
    assert code == 2 and out == ""
    assert err == f"evaluate.py: error: {flag} {folder} is a folder; {expected} is expected\n", err
    if flag != "--pred":  # with --checkpoint too, before any work (the checkpoint is not even looked for)
        code, out, err = run(capsys, "--checkpoint", str(tmp_path / "none.pt"), flag, str(folder))
        assert code == 2 and err == f"evaluate.py: error: {flag} {folder} is a folder; {expected} is expected\n"


def test_bad_arguments(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = files
    with pytest.raises(SystemExit):
        cli.main(["--gt", str(gt)])  # no prediction source
    code, _, err = run(capsys, "--gt", str(gt), "--pred", str(pred), "--subset", "val")
    assert code == 2 and "no annotated instance in subset 'val'" in err


def test_script_on_real_thumos14(thumos14_dir: Path, tmp_path: Path) -> None:
    gt = json.loads((thumos14_dir / "gt.json").read_text())
    pred = {
        "results": {
            v: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in e["annotations"]]
            for v, e in gt["database"].items()
            if e["subset"] == "test"
        }
    }
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(pred))
    # Run as a script from another folder: it must find its `case` package by itself.
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--gt",
            str(thumos14_dir / "gt.json"),
            "--pred",
            str(pred_file),
            "--subset",
            "test",
            "--tiou",
            "0.1",
            "0.2",
            "0.3",
            "0.4",
            "0.5",
            "0.6",
            "0.7",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["mAP"] == pytest.approx([1.0] * 7, abs=1e-12) and obj["average"] == pytest.approx(1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # json keeps the last of two equal keys: v's first detections vanished and its mAP fell to 0
        (json.dumps(PRED)[:-2] + ', "v": []}}', "the key 'v' is written twice in one object"),
        ('{"results": {"v": [{"label": "A", "score": ' + "9" * 5000 + ', "segment": [0, 1]}]}}',
         "holds an integer of more than 4300 digits"),  # the ValueError named no file
    ],
    ids=["repeated-video", "5000-digits"],
)  # fmt: skip
@pytest.mark.parametrize("role", ["--pred", "--gt"])
def test_what_the_json_reader_would_misread_is_named(
    files: tuple[Path, Path], text: str, message: str, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = files
    bad = gt.with_name("bad.json")
    bad.write_text(text if role == "--pred" else text.replace('"results"', '"database"'))
    args = {"--gt": str(gt), "--pred": str(pred), role: str(bad)}
    code, out, err = run(capsys, *[a for pair in args.items() for a in pair])
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"evaluate.py: error: {bad}: {message}"), err


def test_a_deeply_nested_file_is_refused_naming_it(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = files
    deep = pred.with_name("deep.json")
    deep.write_text('{"results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, out, err = run(capsys, "--gt", str(gt), "--pred", str(deep))
    assert code == 2 and out == "" and "deep.json" in err and "nested" in err, err
    code, out, err = run(capsys, "--gt", str(deep), "--pred", str(pred))
    assert code == 2 and out == "" and "deep.json" in err and "nested" in err, err


def test_out_may_not_replace_an_input(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = files
    amb = tmp_path / "amb.txt"
    amb.write_text("v 25 26\n")
    for target in (gt, pred, amb, tmp_path / "." / "gt.json"):
        before = {p: p.read_bytes() for p in (gt, pred, amb)}
        code, out, err = run(
            capsys, "--gt", str(gt), "--pred", str(pred), "--ambiguous", str(amb), "--out", str(target)
        )
        assert code == 2 and out == "" and "--out" in err and "is an input" in err, err
        assert {p: p.read_bytes() for p in (gt, pred, amb)} == before


def test_out_through_a_link_keeps_the_link(files: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    """--out /dev/stdout is a link to /proc/self/fd/1: the atomic write replaced the link itself (run
    as root, /dev/stdout became a regular file). A link given as --out is written through."""
    gt, pred = files
    target = tmp_path / "results" / "metrics.json"
    target.parent.mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    code, out, err = run(capsys, "--gt", str(gt), "--pred", str(pred), "--out", str(link), "--json")
    assert code == 0, err
    assert link.is_symlink() and json.loads(target.read_text()) == json.loads(out)


@pytest.mark.parametrize("tiou", [["0"], ["0.5", "0"], ["1.5"], ["-0.1"], ["nan"]])
def test_tiou_thresholds_lie_in_0_1_and_the_error_names_the_flag(
    files: tuple[Path, Path], tiou: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """C-new-3: --tiou 0 scored a detection with no overlap as a hit (mAP 1.0), and --tiou 1.5 named
    the Python parameter ``tiou_thresholds``. One rule, (0, 1], for the flag, the config key and the API."""
    gt, pred = files
    code, out, err = run(capsys, "--gt", str(gt), "--pred", str(pred), "--tiou", *tiou)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("evaluate.py: error: --tiou must be a non-empty list of thresholds in (0, 1], got "), err
    with pytest.raises(ValueError, match=r"tiou_thresholds must be a non-empty list of thresholds in \(0, 1\]"):
        evaluate_detection(GT, PRED, tiou_thresholds=[float(t) for t in tiou])
    from case.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"eval\.tiou must be a non-empty list of thresholds in \(0, 1\]"):
        load_config(None, [f"eval.tiou=[{', '.join(tiou)}]".replace("nan", ".nan")])


def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` read-only; where permissions stop no one (root), refuse its temporary files as the
    kernel would (a write goes through a temporary file beside the target, :mod:`case.atomic`)."""
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return

    def refuse(prefix: str = "", suffix: str = "", dir: str | Path | None = None) -> tuple[int, str]:
        if Path(dir or ".").resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / f"{prefix}x1y2z3{suffix}"))
        return mkstemp(prefix=prefix, suffix=suffix, dir=dir)

    mkstemp = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_a_failed_write_names_the_flag_the_file_and_the_reason(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """C-new-10: ``--out /dev/full`` said only "[Errno 28] No space left on device", and --out in a
    read-only folder named the temporary file beside the target."""
    gt, pred = files
    if Path("/dev/full").exists():
        code, out, err = run(capsys, "--gt", str(gt), "--pred", str(pred), "--out", "/dev/full")
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err == "evaluate.py: error: --out /dev/full: cannot write it (No space left on device)\n", err
    locked = tmp_path / "locked"
    read_only(locked, monkeypatch)
    target = locked / "metrics.json"
    code, out, err = run(capsys, "--gt", str(gt), "--pred", str(pred), "--out", str(target))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err == f"evaluate.py: error: --out {target}: cannot write it (Permission denied)\n", err


def test_an_unknown_label_is_dropped_as_the_checkpoint_path_drops_it(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--pred scores through the step that --checkpoint scores with: a detection whose label the
    ground truth does not know (a class the model knows and the test set lacks) is dropped and
    counted, not an error; the figures are those of the file without it."""
    gt, _ = files
    extra = {"label": "Q", "score": 0.99, "segment": [0, 10]}  # would be the top-ranked detection
    with_unknown = {"results": {**PRED["results"], "v": [extra, *PRED["results"]["v"]]}}
    pred = tmp_path / "unknown.json"
    pred.write_text(json.dumps(with_unknown))
    code, out, err = run(capsys, "--gt", str(gt), "--pred", str(pred), "--tiou", "0.5", "0.7", "--json")
    assert code == 0, err
    expected = checkpoint_scoring(load_ground_truth(GT, "test"), with_unknown, (0.5, 0.7))
    assert expected.num_unknown_labels == 1
    assert json.loads(out) == expected.to_dict()
    assert json.loads(out) == evaluate_detection(GT, PRED, tiou_thresholds=(0.5, 0.7)).to_dict()
    code, out, _ = run(capsys, "--gt", str(gt), "--pred", str(pred))
    assert code == 0 and "1 of labels the ground truth does not know, dropped" in out.splitlines()[0]


def test_pred_never_imports_torch(files: tuple[Path, Path], tmp_path: Path) -> None:
    """--pred is a NumPy job: torch (a second of start-up) is imported only where a checkpoint runs."""
    gt, pred = files
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPT), "--gt", str(gt), "--pred", str(pred), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "case.metrics" in imported and "case.scoring" in imported  # the listing is the real one
    assert not [name for name in imported if name == "torch" or name.startswith("torch.")]
    assert json.loads(result.stdout) == evaluate_detection(GT, PRED).to_dict()
