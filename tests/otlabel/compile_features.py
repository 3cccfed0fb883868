"""Compile the fused feature-pass kernel for a GPU architecture, without a GPU.

The CPU interpreter accepts code the compiler rejects (tl.dot operand layouts, types that change
between loop iterations, ...), and cannot run bfloat16 through ``tl.dot`` (the launcher upcasts
it there): this script runs the real compiler down to a cubin for ``--arch`` (default sm_90, the
H100) on the variants the launcher starts on a GPU, and prints each one's registers and stack
bytes (register spills). It must run in a process where ``TRITON_INTERPRET`` is unset.

    python -m tests.otlabel.compile_features [--arch 90]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")

import torch  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from otlabel.backends import _triton_features as f  # noqa: E402

from .compile_kernels import compile_all  # noqa: E402

#: How the launcher's arguments are typed: the operands in the features' dtype, the top-k
#: indices int64, every other pointer float32; ``coef`` a float, the sizes 32-bit integers.
POINTER_TYPES = {"top_i_ptr": "*i64"}
OPERANDS = ("x_ptr", "c_ptr")
f._multiprocessors = lambda device: 132  # no GPU to ask (an H100 SXM's count; the tiles do not use it)


def source(constants: dict, dtype: str) -> ASTSource:
    """The kernel as the launcher specialises it: pointers, K and d divisible by 16 (``n`` is not
    specialised)."""
    fn = f.feature_pass_kernel
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            continue
        if name in OPERANDS:
            signature[name] = dtype
        elif name.endswith("_ptr"):
            signature[name] = POINTER_TYPES.get(name, "*fp32")
        else:
            signature[name] = "fp32" if name == "coef" else "i32"
        if name.endswith("_ptr") or name in ("K", "d"):
            attrs[(index,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)


def _variant(
    dtype: str, d: int, col_sums: bool, top_k: int, row_mass: bool, precision: str, rows: bool = False
) -> tuple[dict, str]:
    """(constants, operand type) as the launcher picks them for a million rows of d dimensions and
    K = 65,536; ``rows``: with a row scale and a row bias (``sinkhorn_features`` with
    ``normalize=True`` and marginals)."""
    torch_dtype = {"*fp32": torch.float32, "*bf16": torch.bfloat16, "*fp16": torch.float16}[dtype]
    launch = f.launch_config(1 << 20, 1 << 16, d, torch_dtype, torch.device("cuda"), fma=precision == "ieee")
    constants = {
        "HAS_ROW_SCALE": rows,
        "HAS_ROW_MASS": row_mass,
        "HAS_ROW_BIAS": rows,
        "COL_SUMS": col_sums,
        "TOP_K": top_k,
        "TOP_PAD": 1 << max(0, top_k - 1).bit_length(),
        "RESIDENT": launch.resident,
        "PRECISION": precision,
        "UPCAST": False,
        "BLOCK_M": launch.block_m,
        "BLOCK_K": launch.block_k,
        "BLOCK_D": launch.block_d,
    }
    return constants, dtype


def jobs() -> list[tuple[dict, str]]:
    """The benchmark's passes (bfloat16 d = 256 and 128, float32 d = 128) and the other branches:
    the d loop (float16, d = 1024), top-k of 3 with row masses, TF32; and sinkhorn_features' passes
    with a row scale and bias (bfloat16 with column sums, float32 with top-1)."""
    return [
        _variant("*bf16", 256, True, 0, False, "tf32"),
        _variant("*bf16", 128, False, 1, False, "tf32"),
        _variant("*fp32", 128, True, 3, True, "ieee"),
        _variant("*fp32", 128, True, 0, False, "tf32"),
        _variant("*fp16", 1024, True, 3, True, "tf32"),
        _variant("*bf16", 256, True, 0, True, "tf32", rows=True),
        _variant("*fp32", 128, False, 1, True, "ieee", rows=True),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (default 90)")
    args = parser.parse_args(argv)
    options = {"num_warps": f.NUM_WARPS, "num_stages": f.NUM_STAGES, "enable_fp_fusion": True}
    variants = [
        (f"feature_pass_kernel {dtype} {constants}", functools.partial(source, constants, dtype), options)
        for constants, dtype in jobs()
    ]
    return compile_all(variants, args.arch)


if __name__ == "__main__":
    raise SystemExit(main())
