"""Compile otlabel's Triton kernels for a GPU architecture, without a GPU.

The CPU interpreter runs the kernels' Python, which accepts code the compiler rejects (types
that differ between loop iterations, for instance). This script runs the real compiler down
to a cubin for ``--arch`` (default sm_90, the H100) with the ptxas that ships with triton.
It must run in a process where ``TRITON_INTERPRET`` is unset.

    python -m tests.otlabel.compile_kernels [--all] [--arch 90]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from otlabel.backends import _triton_kernels as k  # noqa: E402
from otlabel.backends.triton_backend import _OPTIONS  # noqa: E402  (what the backend launches with)

FLOAT_ARGS = ("inv_eps", "tol", "lo")
MASS_POINTERS = ("rm_ptr", "cm_ptr", "total_ptr")


def source(fn, constants: dict, scores: str) -> ASTSource:
    """The kernel as the launcher would specialise it: pointers and K divisible by 16."""
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            continue
        if name == "x_ptr":
            signature[name] = scores
        elif name in MASS_POINTERS:
            signature[name] = "*fp64" if scores == "*fp64" else "*fp32"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        else:
            signature[name] = "fp32" if name in FLOAT_ARGS else "i32"
        if name.endswith("_ptr") or name == "K":
            attrs[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)


def jobs(everything: bool) -> list[tuple]:
    """(kernel, constexprs, num_warps, scores pointer type)."""
    if not everything:  # every pass kind and both modes, once
        return [
            (k.solve_kernel, {"TOL_MODE": True, "KIND": k.SAFE, "BLOCK_N": 512, "BLOCK_K": 16}, 16, "*fp16"),
            (k.pass_kernel, {"KIND": k.FAST, "BLOCK_N": 32, "BLOCK_K": 128}, 8, "*fp32"),
            (k.combine_kernel, {"KIND": k.FAST, "BLOCK_P": 128, "BLOCK_K": 32}, 4, "*fp32"),
        ]
    out = []
    for tol_mode in (False, True):
        for kind in (k.FAST, k.SAFE):
            for block_n, block_k, warps in ((512, 16, 16), (2, 4096, 16), (1, 8192, 16), (4096, 2, 8)):
                constants = {"TOL_MODE": tol_mode, "KIND": kind, "BLOCK_N": block_n, "BLOCK_K": block_k}
                out.append((k.solve_kernel, constants, warps, "*fp32"))
    fixed = {"TOL_MODE": False, "KIND": k.FAST, "BLOCK_N": 512, "BLOCK_K": 16}
    out += [(k.solve_kernel, fixed, 16, t) for t in ("*fp16", "*bf16", "*fp64")]
    for kind in (k.COLSTATS, k.FAST, k.SAFE, k.FINAL):
        for block_n, block_k, warps in ((32, 128, 8), (1, 4096, 8)):
            out.append((k.pass_kernel, {"KIND": kind, "BLOCK_N": block_n, "BLOCK_K": block_k}, warps, "*fp32"))
        out.append((k.combine_kernel, {"KIND": kind, "BLOCK_P": 128, "BLOCK_K": 32}, 4, "*fp32"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every kernel variant the backend can launch")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (default 90)")
    args = parser.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    failed = 0
    for fn, constants, warps, scores in jobs(args.all):
        start = time.perf_counter()
        try:
            compiled = triton.compile(
                source(fn, constants, scores), target=target, options={"num_warps": warps, **_OPTIONS}
            )
            assert compiled.asm["cubin"], "no cubin"
            print(f"ok   {fn.__name__} {constants} {scores} ({time.perf_counter() - start:.1f} s)", flush=True)
        except Exception as exc:  # report every failing variant, not only the first
            failed += 1
            print(f"FAIL {fn.__name__} {constants} {scores}: {type(exc).__name__}: {exc}", flush=True)
    print(f"triton {triton.__version__}, sm_{args.arch}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
