"""The CASE-on-CUDA parity script (``examples/wtal_case/tools/cuda_parity.py``), dry-run on the CPU.

On a GPU machine ``benchmarks/gpu_check.sh`` runs it with ``--device cuda``: 50 smoke steps and 300
THUMOS-shaped steps against the CPU, and DDP as two processes on the one GPU. Here the whole
script runs with ``--device cpu`` (a few smoke steps, the CPU against itself, DDP over gloo
after the NCCL attempt fails), and its comparison is checked on made-up logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "wtal_case" / "tools" / "cuda_parity.py"


def _tool():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import cuda_parity
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return cuda_parity


def test_the_parity_script_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "parity"
    command = [sys.executable, str(SCRIPT), "all", "--out", str(out), "--device", "cpu", "--threads", "1"]
    command += ["--smoke-steps", "3", "--thumos-steps", "0"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "parity.json").read_text())
    assert report["reference_finished"] and report["ddp_backend"] == "gloo"  # NCCL needs CUDA: refused first
    comparisons = report["comparisons"]
    assert set(comparisons) == {"smoke-cpu vs smoke-reference-cpu", "ddp-cpu-gloo vs smoke-cpu"}
    for found in comparisons.values():
        assert found["ok"] and found["steps"] == 3 and found["test_complete"]
    assert comparisons["smoke-cpu vs smoke-reference-cpu"]["worst"]["rel"] == 0.0  # same device, same numbers
    assert "| ddp-cpu-gloo vs smoke-cpu | 3 |" in (out / "parity.md").read_text()


def test_compare_logs_over_the_steps_both_hold() -> None:
    tool = _tool()
    reference = {
        s: {"step": s, "loss": 1.0 + s, "video": 0.5, "attention": 0.2, "scc": 0.1, "ccc": 0.0} for s in (1, 2)
    }
    test = {s: dict(r) for s, r in reference.items()}
    test[3] = {"step": 3, "loss": 9.0}  # the reference was cut short at step 2
    found = tool.compare_logs(test, reference, rtol=1e-3)
    assert found["ok"] and found["steps"] == 2 and found["last_step"] == 2
    test[2]["scc"] = 0.1002  # 2e-3 relative
    found = tool.compare_logs(test, reference, rtol=1e-3)
    assert not found["ok"] and found["worst"]["step"] == 2 and found["worst"]["key"] == "scc"
    assert found["worst"]["rel"] == pytest.approx(2e-3)
    test[2]["scc"] = float("nan")
    assert not tool.compare_logs(test, reference, rtol=1e-3)["ok"]
    assert not tool.compare_logs({}, reference, rtol=1e-3)["ok"]  # nothing to compare is no pass
