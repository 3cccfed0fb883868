"""Compile otlabel's Triton kernels for a GPU architecture, without a GPU.

The CPU interpreter runs the kernels' Python, which accepts code the compiler rejects (types
that differ between loop iterations, for instance). This script runs the real compiler down
to a cubin for ``--arch`` (default sm_90, the H100) with the ptxas that ships with triton.
It must run in a process where ``TRITON_INTERPRET`` is unset.

    python -m tests.otlabel.compile_kernels [--all] [--arch 90]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from otlabel.backends import _triton_kernels as k  # noqa: E402
from otlabel.backends.triton_backend import _OPTIONS  # noqa: E402  (what the backend launches with)

FLOAT_ARGS = ("inv_eps", "tol", "lo")
MASS_POINTERS = ("rm_ptr", "cm_ptr", "total_ptr")
POINTER_TYPES = {"counter_ptr": "*i32", "ok_ptr": "*u8"}


def source(fn, constants: dict, scores: str, plan: str = "*fp32") -> ASTSource:
    """The kernel as the launcher would specialise it: pointers and K divisible by 16."""
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            continue
        if name == "x_ptr":
            signature[name] = scores
        elif name == "plan_ptr":
            signature[name] = plan
        elif name in MASS_POINTERS:
            signature[name] = "*fp64" if scores == "*fp64" else "*fp32"
        elif name in POINTER_TYPES:
            signature[name] = POINTER_TYPES[name]
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        else:
            signature[name] = "fp32" if name in FLOAT_ARGS else "i32"
        if name.endswith("_ptr") or name == "K":
            attrs[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)


def _solve(tol_mode, kind, block_n, block_k, poison=False, row_mass=True):
    return {
        "TOL_MODE": tol_mode,
        "KIND": kind,
        "HAS_ROW_MASS": row_mass,
        "POISON": poison,
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
    }


def _pass(kind, fused, poison=False, block_n=32, block_k=128, row_mass=True):
    blocks = {"BLOCK_N": block_n, "BLOCK_K": block_k, "BLOCK_P": 32, "BLOCK_KC": 128}
    return {"KIND": kind, "HAS_ROW_MASS": row_mass, "FUSED": fused, "POISON": poison, **blocks}


def _tiled_col(kind, fused, poison=False):
    blocks = {"BLOCK_N": 4, "BLOCK_K": 1024, "BLOCK_P": 32, "BLOCK_KC": 128}
    return {"KIND": kind, "FUSED": fused, "POISON": poison, **blocks}


def _tiled_row(first, row_mass=True):
    return {"FIRST": first, "HAS_ROW_MASS": row_mass, "BLOCK_N": 4, "BLOCK_K": 1024}


def _combine(kind, update):
    return {"KIND": kind, "UPDATE": update, "BLOCK_P": 128, "BLOCK_KC": 32}


def jobs(everything: bool) -> list[tuple]:
    """(kernel, constexprs, num_warps, scores pointer type, plan pointer type)."""
    if not everything:  # every kernel, every pass kind, both modes, poison, fusion and half precision once
        return [
            (k.solve_kernel, _solve(True, k.SAFE, 512, 16), 16, "*fp16", "*fp32"),
            (k.solve_kernel, _solve(False, k.SAFE, 512, 16, poison=True, row_mass=False), 16, "*bf16", "*bf16"),
            (k.pass_kernel, _pass(k.FAST, True), 8, "*fp32", "*fp32"),
            (k.pass_kernel, _pass(k.FINAL, False, poison=True), 8, "*bf16", "*bf16"),
            (k.combine_kernel, _combine(k.SAFE, False), 4, "*fp32", "*fp32"),
            (k.tiled_row_kernel, _tiled_row(True), 8, "*bf16", "*fp32"),
            (k.tiled_col_kernel, _tiled_col(k.SAFE, True), 8, "*fp32", "*fp32"),
            (k.tiled_col_kernel, _tiled_col(k.FINAL, False, poison=True), 8, "*fp16", "*fp16"),
        ]
    out = []
    for tol_mode in (False, True):
        for kind in (k.FAST, k.SAFE):
            for block_n, block_k, warps in ((512, 16, 16), (2, 4096, 16), (1, 8192, 16), (4096, 2, 8)):
                out.append((k.solve_kernel, _solve(tol_mode, kind, block_n, block_k), warps, "*fp32", "*fp32"))
    for scores in ("*fp16", "*bf16", "*fp64"):
        plan = "*fp32" if scores == "*fp64" else scores
        out.append((k.solve_kernel, _solve(False, k.FAST, 512, 16, row_mass=False), 16, scores, plan))
    out.append((k.solve_kernel, _solve(False, k.SAFE, 512, 16, poison=True), 16, "*fp32", "*fp32"))
    for kind in (k.COLSTATS, k.FAST, k.SAFE, k.FINAL):
        for fused in (False, True):
            for block_n, block_k, warps in ((32, 128, 8), (1, 4096, 8)):
                constants = _pass(kind, fused, block_n=block_n, block_k=block_k)
                out.append((k.pass_kernel, constants, warps, "*fp32", "*fp32"))
        for update in (False, True):
            out.append((k.combine_kernel, _combine(kind, update), 4, "*fp32", "*fp32"))
        if kind != k.FINAL:
            for fused in (False, True):
                out.append((k.tiled_col_kernel, _tiled_col(kind, fused), 8, "*fp32", "*fp32"))
    for scores in ("*fp32", "*fp16", "*bf16"):
        out.append((k.pass_kernel, _pass(k.FINAL, True, poison=True, row_mass=False), 8, scores, scores))
        out.append((k.tiled_col_kernel, _tiled_col(k.FINAL, False, poison=True), 8, scores, scores))
        out.append((k.tiled_col_kernel, _tiled_col(k.FINAL, False), 8, scores, "*fp32"))
        for first in (False, True):
            out.append((k.tiled_row_kernel, _tiled_row(first, row_mass=scores != "*fp32"), 8, scores, "*fp32"))
    return out


def resources(cubin: bytes) -> str:
    """Registers and stack bytes (register spills) per thread, from the cuobjdump that ships with
    triton (empty where it is missing)."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return ""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        listing = subprocess.run([str(tool), "--dump-resource-usage", file.name], capture_output=True, text=True)
    found = re.search(r"REG:(\d+) STACK:(\d+)", listing.stdout)
    return f", {found.group(1)} registers, {found.group(2)} stack bytes" if found else ""


def compile_all(variants: list[tuple[str, Callable[[], ASTSource], dict]], arch: int) -> int:
    """Compile every (description, source factory, options) variant for sm_``arch``; print one line
    per variant (every failure, not only the first) and a summary; return the exit code."""
    target = GPUTarget("cuda", arch, 32)
    failed = 0
    for what, make_source, options in variants:
        start = time.perf_counter()
        try:
            compiled = triton.compile(make_source(), target=target, options=options)
            assert compiled.asm["cubin"], "no cubin"
            print(f"ok   {what} ({time.perf_counter() - start:.1f} s{resources(compiled.asm['cubin'])})", flush=True)
        except Exception as exc:  # report every failing variant, not only the first
            failed += 1
            print(f"FAIL {what}: {type(exc).__name__}: {exc}", flush=True)
    print(f"triton {triton.__version__}, sm_{arch}: {len(variants)} variants, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every kernel variant the backend can launch")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (default 90)")
    args = parser.parse_args(argv)
    variants = [
        (
            f"{fn.__name__} {constants} scores {scores} plan {plan}",
            functools.partial(source, fn, constants, scores, plan),
            {"num_warps": warps, **_OPTIONS},
        )
        for fn, constants, warps, scores, plan in jobs(args.all)
    ]
    return compile_all(variants, args.arch)


if __name__ == "__main__":
    raise SystemExit(main())
