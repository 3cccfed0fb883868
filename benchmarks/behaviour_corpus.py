"""Behaviour corpus: hashes of the outputs of a fixed corpus of otlabel calls, recorded before a
refactor and compared after it, so that a change meant to keep every output bit-identical can
prove it did.

Every case is a name and a call through the public API only (``import otlabel``), so the script
runs unchanged on any revision of the library; each case draws its inputs from a generator seeded
by its own name, and torch runs on one thread, so a run is reproducible. A case's record is the
SHA-256 of what the call gave back: the raw bytes of every tensor and array (with its dtype,
shape, device and whether it is numpy) and the repr of every Python scalar — every field of a
``SinkhornResult`` / ``RaggedSinkhornResult``; for ``OnlineLabeller``, the labels of several
successive calls and the ``state_dict()`` after them — or, for a call that raises, the exception's
type and message; the warnings a call raises (``otlabel.ConvergenceWarning``...) are recorded by
class and message too. The record file also keeps a short summary per case (shape, dtype, sum of
every array; scalars; the exception), which ``compare`` prints beside the new one for a case that
differs. One group of cases labels the rows of a global batch over a two-process gloo world
(``process_group=``), spawned once for all of them.

Record on the base revision, compare on the working tree (the library imported is the one on
``PYTHONPATH``; the record file says which it was)::

    git worktree add /tmp/otlabel-base HEAD        # or: git stash; ...record...; git stash pop
    PYTHONPATH=/tmp/otlabel-base python benchmarks/behaviour_corpus.py record /tmp/corpus.json
    PYTHONPATH=. python benchmarks/behaviour_corpus.py compare /tmp/corpus.json
    # exit status 0: "N cases identical"; 1: the cases that differ, with their summaries

    python benchmarks/behaviour_corpus.py --list [--only ragged/]
    PYTHONPATH=. python benchmarks/behaviour_corpus.py compare /tmp/corpus.json --only sinkhorn/f16

``--only SUBSTRING`` (repeatable) runs the cases whose name contains one of them. Keep this script
for every later refactor; add cases (new names) for new behaviour rather than changing old ones,
as a changed case needs a fresh record on the base revision. Record and compare with the same
torch and numpy (the file notes their versions and ``compare`` warns when they differ): another
build may round differently.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import otlabel

#: A case: its inputs come from ``Inputs(name)``; it returns what is hashed.
CaseFn = Callable[["Inputs"], Any]

WORLD = 2  # ranks of the distributed group
WORLD_TIMEOUT_S = 240.0  # the whole distributed group, start-up included
COLLECTIVE_TIMEOUT_S = 60  # gloo gives up on a missing rank after this

DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64}

#: The iteration settings of both modes, by the name used in case names.
MODES: dict[str, dict[str, Any]] = {
    "fixed": {},
    "n_iter=1": {"n_iter": 1},
    "n_iter=5": {"n_iter": 5},
    "tol1e-6": {"tol": 1e-6},
    "tol1e-9/check_every=1": {"tol": 1e-9, "check_every": 1},
    "tol1e-9/max_iter=3": {"tol": 1e-9, "max_iter": 3},  # warns: ConvergenceWarning
}

SINKHORN_FIELDS = (
    "labels",
    "n_iter",
    "converged",
    "row_error",
    "col_error",
    "backend",
    "log_domain",
    "log_row_scaling",
    "log_col_scaling",
)
RAGGED_FIELDS = (
    "labels",
    "n_iter",
    "converged",
    "row_error",
    "col_error",
    "log_domain",
    "segments",
    "log_row_scaling",
    "log_col_scaling",
)


# ---------------------------------------------------------------------------------------------- inputs


def seed_of(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little")


class Inputs:
    """Deterministic inputs of one case: a torch and a numpy generator seeded from its name.

    Values are drawn in float64 and then cast, so the draws do not depend on the dtype asked for."""

    def __init__(self, name: str):
        self.torch = torch.Generator().manual_seed(seed_of(name))
        self.numpy = np.random.default_rng(seed_of(name))

    def randn(self, *shape: int, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=self.torch, dtype=torch.float64)).to(dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.rand(*shape, generator=self.torch, dtype=torch.float64).to(dtype)

    def simplex(self, *shape: int) -> torch.Tensor:
        """Proportions (float64) along the last axis, none below about 0.2 / size."""
        values = self.rand(*shape) + 0.2
        return values / values.sum(-1, keepdim=True)

    def prior(self, *shape: int, dtype: torch.dtype = torch.float64, zeros: bool = False) -> torch.Tensor:
        """A positive prior, or one with hard zeros that keep every row and column reachable."""
        prior = self.rand(*shape) + 0.05
        if zeros:
            n, k = shape[-2], shape[-1]
            mask = self.rand(*shape) < 0.4
            mask[..., torch.arange(n), torch.arange(n) % k] = False
            prior[mask] = 0.0
        return prior.to(dtype)


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("x"))


# ---------------------------------------------------------------------------------------------- hashing


class Digest:
    """SHA-256 of a canonical encoding of an output, and a short readable summary of it."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.summary: list[str] = []

    def _put(self, header: str, payload: bytes = b"") -> None:
        self.sha.update(f"{header}|{len(payload)}\n".encode())
        self.sha.update(payload)

    def add(self, value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().resolve_conj().resolve_neg().cpu().contiguous()
            raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            self._put(f"tensor|{tensor.dtype}|{tuple(tensor.shape)}|{value.device}", raw)
            self.summary.append(f"{path}: {describe(tensor, str(tensor.dtype), tuple(tensor.shape))}")
        elif isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            self._put(f"ndarray|{array.dtype.str}|{array.shape}", array.tobytes())
            self.summary.append(
                f"{path}: numpy {describe(torch.from_numpy(array.copy()), str(array.dtype), array.shape)}"
            )
        elif value is None or isinstance(value, (bool, int, float, str, np.generic)):
            self._put(f"scalar|{type(value).__name__}|{value!r}")
            self.summary.append(f"{path}: {value!r}")
        elif isinstance(value, otlabel.SinkhornResult):
            self._put("SinkhornResult")
            for name in SINKHORN_FIELDS:
                self.add(getattr(value, name), f"{path}.{name}")
        elif isinstance(value, otlabel.RaggedSinkhornResult):
            self._put("RaggedSinkhornResult")
            for name in RAGGED_FIELDS:
                self.add(getattr(value, name), f"{path}.{name}")
        elif isinstance(value, dict):
            self._put(f"dict|{len(value)}")
            for key, item in value.items():
                self._put(f"key|{key!r}")
                self.add(item, f"{path}.{key}")
        elif isinstance(value, (list, tuple)):
            self._put(f"{type(value).__name__}|{len(value)}")
            for index, item in enumerate(value):
                self.add(item, f"{path}[{index}]")
        else:
            raise TypeError(f"{path}: cannot hash a {type(value).__name__}; return tensors, arrays or scalars")

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def describe(tensor: torch.Tensor, dtype: str, shape: tuple[int, ...]) -> str:
    text = f"{dtype.removeprefix('torch.')} {tuple(shape)}"
    if tensor.numel() and not tensor.is_complex():
        values = tensor.to(torch.float64)
        finite = torch.isfinite(values)
        text += f" sum={float(values[finite].sum()):.10g}"
        if not bool(finite.all()):
            text += f" nonfinite={int((~finite).sum())}"
    return text


def outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run a call: what it returned or raised, and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: dict[str, Any] = {"returned": fn()}
        except Exception as error:  # noqa: BLE001 - error behaviour is part of the record
            result = {"raised": {"type": type(error).__name__, "message": str(error)}}
    result["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
    return result


def digest(result: dict[str, Any]) -> dict[str, Any]:
    d = Digest()
    d.add(result, "out")
    return {"hash": d.hexdigest(), "summary": d.summary}


def run_case(name: str, fn: CaseFn) -> dict[str, Any]:
    inputs = Inputs(name)
    try:
        return digest(outcome(lambda: fn(inputs)))
    except TypeError as error:  # an output this script cannot hash: a bug of the case, not of the library
        return {"hash": "unhashable", "summary": [f"{error}"]}


# ---------------------------------------------------------------------------------------------- the corpus

CASES: dict[str, CaseFn] = {}


def case(name: str) -> Callable[[CaseFn], CaseFn]:
    def register(fn: CaseFn) -> CaseFn:
        if name in CASES:
            raise ValueError(f"duplicate case name {name}")
        CASES[name] = fn
        return fn

    return register


def add(name: str, fn: CaseFn) -> None:
    case(name)(fn)


def _sinkhorn_call(shape: tuple[int, ...], dtype: torch.dtype, eps: float, kwargs: dict[str, Any]) -> CaseFn:
    def run(inp: Inputs) -> Any:
        return otlabel.sinkhorn(inp.randn(*shape, dtype=dtype), eps, **kwargs)

    return run


def core_cases() -> None:
    """sinkhorn: every dtype x shape x mode, with and without return_info."""
    shapes = {"2x3": 0.5, "64x8": 0.5, "256x16": 0.25, "4x32x8": 0.5}
    for dname, dtype in DTYPES.items():
        for shape_name, eps in shapes.items():
            for mode, settings in MODES.items():
                infos = (True, False) if mode in ("fixed", "tol1e-6") else (True,)
                for info in infos:
                    name = f"sinkhorn/{dname}/{shape_name}/eps={eps}/{mode}/{'info' if info else 'labels'}"
                    kwargs = {**settings, "return_info": info}
                    add(name, _sinkhorn_call(parse_shape(shape_name), dtype, eps, kwargs))


def _option_kwargs(option: str, inp: Inputs, shape: tuple[int, ...], eps: float, dtype: torch.dtype) -> dict:
    """The keyword arguments of one named option for scores of ``shape``."""
    *batch, n, k = shape
    if option == "none":
        return {}
    if option == "col_marginal":
        return {"col_marginal": inp.simplex(k)}
    if option == "col_marginal=BxK":
        return {"col_marginal": inp.simplex(*batch, k)}
    if option == "col_marginal=list":
        return {"col_marginal": inp.simplex(k).tolist()}
    if option == "row_marginal":
        return {"row_marginal": inp.simplex(*batch, n)}
    if option == "col+row_marginal":
        return {"col_marginal": inp.simplex(k), "row_marginal": inp.simplex(*batch, n)}
    if option == "col_penalty=0.5":
        return {"col_penalty": 0.5}
    if option == "row_penalty=2":
        return {"row_penalty": 2.0}
    if option == "col_penalty=0.5+row_penalty=2":
        return {"col_penalty": 0.5, "row_penalty": 2.0}
    if option == "col_penalty=inf":
        return {"col_penalty": math.inf}
    if option == "mass=0.5":
        return {"mass": 0.5}
    if option == "mass=0.9":
        return {"mass": 0.9}
    if option == "mass=0.9+col_marginal":
        return {"mass": 0.9, "col_marginal": inp.simplex(k)}
    if option == "col_bounds=lower":
        return {"col_bounds": ([0.6 / k] * k, None)}
    if option == "col_bounds=upper":
        return {"col_bounds": (None, [1.5 / k] * k)}
    if option == "col_bounds=both":
        return {"col_bounds": (torch.full((k,), 0.7 / k, dtype=torch.float64), [1.3 / k] * k)}
    if option.startswith("init="):
        previous = otlabel.sinkhorn(inp.randn(*shape, dtype=dtype), eps, tol=1e-6, return_info=True)
        if option == "init=result":
            return {"init": previous}
        if option == "init=(f,g)":
            return {"init": (previous.log_row_scaling, previous.log_col_scaling)}
        if option == "init=(None,g)":
            return {"init": (None, previous.log_col_scaling)}
        if option == "init=g":
            return {"init": previous.log_col_scaling}
    if option == "anderson":
        return {"acceleration": "anderson"}
    if option == "anderson+col_penalty=0.5":
        return {"acceleration": "anderson", "col_penalty": 0.5}
    raise ValueError(option)


OPTIONS = (
    "col_marginal",
    "col_marginal=list",
    "row_marginal",
    "col+row_marginal",
    "col_penalty=0.5",
    "row_penalty=2",
    "col_penalty=0.5+row_penalty=2",
    "col_penalty=inf",
    "mass=0.5",
    "mass=0.9",
    "mass=0.9+col_marginal",
    "col_bounds=lower",
    "col_bounds=upper",
    "col_bounds=both",
    "init=result",
    "init=(f,g)",
    "init=(None,g)",
    "init=g",
    "anderson",
    "anderson+col_penalty=0.5",
)


def _option_call(
    shape: tuple[int, ...], dtype: torch.dtype, eps: float, mode: str, option: str, info: bool = True
) -> CaseFn:
    def run(inp: Inputs) -> Any:
        kwargs = _option_kwargs(option, inp, shape, eps, dtype)
        return otlabel.sinkhorn(inp.randn(*shape, dtype=dtype), eps, **MODES[mode], return_info=info, **kwargs)

    return run


def option_cases() -> None:
    """sinkhorn: every option, in both modes, on a single and a batched problem."""
    plan = [
        ("f64", "64x8", ("n_iter=5", "tol1e-6", "tol1e-9/check_every=1")),
        ("f64", "3x24x6", ("n_iter=5", "tol1e-6")),
        ("f32", "64x8", ("n_iter=5", "tol1e-6")),
    ]
    for dname, shape_name, modes in plan:
        shape = parse_shape(shape_name)
        options = OPTIONS + (("col_marginal=BxK",) if len(shape) == 3 else ())
        for mode in modes:
            for option in options:
                name = f"sinkhorn/{dname}/{shape_name}/eps=0.5/{mode}/{option}/info"
                add(name, _option_call(shape, DTYPES[dname], 0.5, mode, option))
    for dname in ("f16", "bf16"):
        for option in ("col_marginal", "col_penalty=0.5", "mass=0.9", "col_bounds=both", "init=result"):
            add(
                f"sinkhorn/{dname}/64x8/eps=0.5/tol1e-6/{option}/info",
                _option_call((64, 8), DTYPES[dname], 0.5, "tol1e-6", option),
            )
    for option in ("col_penalty=0.5", "mass=0.9", "init=g"):
        add(
            f"sinkhorn/f64/64x8/eps=0.5/fixed/{option}/labels",
            _option_call((64, 8), torch.float64, 0.5, "fixed", option, info=False),
        )


def _prior_tensor(kind: str, inp: Inputs, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Any, bool]:
    """A prior of a named kind for scores of ``shape``, and whether it is a log prior."""
    if kind == "prior":
        return inp.prior(*shape, dtype=dtype), False
    if kind == "zeros":
        return inp.prior(*shape, dtype=dtype, zeros=True), False
    if kind == "log_prior":
        return inp.prior(*shape).log().to(dtype), True
    if kind == "log_zeros":
        return inp.prior(*shape, zeros=True).log().to(dtype), True
    if kind in ("gaussian", "gaussian_log"):
        *batch, n, k = shape
        fg = inp.rand(*batch, n, dtype=dtype)
        levels = torch.linspace(0, 1, k, dtype=dtype)
        log = kind == "gaussian_log"
        return otlabel.gaussian_rank_prior(fg, levels, sigma=0.3, log=log), log
    raise ValueError(kind)


def _prior_call(
    shape: tuple[int, ...], dtype: torch.dtype, eps: float, mode: str, kind: str, option: str, info: bool = True
) -> CaseFn:
    def run(inp: Inputs) -> Any:
        prior, log = _prior_tensor(kind, inp, shape, dtype)
        kwargs = _option_kwargs(option, inp, shape, eps, dtype)
        scores = inp.randn(*shape, dtype=dtype)
        return otlabel.sinkhorn_with_prior(scores, prior, eps, log_prior=log, **MODES[mode], return_info=info, **kwargs)

    return run


def prior_cases() -> None:
    """sinkhorn_with_prior: priors and log priors (hard zeros included) in both modes, with the options."""
    kinds = ("prior", "zeros", "log_prior", "log_zeros", "gaussian", "gaussian_log")
    for kind in kinds:
        for mode in ("fixed", "tol1e-6", "tol1e-9/check_every=1", "tol1e-9/max_iter=3"):
            add(
                f"with_prior/f64/64x8/eps=0.5/{mode}/{kind}/info",
                _prior_call((64, 8), torch.float64, 0.5, mode, kind, "none"),
            )
        for mode in ("fixed", "tol1e-6"):
            add(
                f"with_prior/f32/3x24x6/eps=0.5/{mode}/{kind}/info",
                _prior_call((3, 24, 6), torch.float32, 0.5, mode, kind, "none"),
            )
        add(
            f"with_prior/f64/64x8/eps=0.5/fixed/{kind}/labels",
            _prior_call((64, 8), torch.float64, 0.5, "fixed", kind, "none", info=False),
        )
    options = (
        "col_marginal",
        "row_marginal",
        "col+row_marginal",
        "col_penalty=0.5",
        "col_penalty=0.5+row_penalty=2",
        "mass=0.9",
        "col_bounds=both",
        "init=result",
        "init=g",
        "anderson",
    )
    for kind in ("zeros", "log_prior"):
        for mode in ("n_iter=5", "tol1e-6"):
            for option in options:
                add(
                    f"with_prior/f64/64x8/eps=0.5/{mode}/{kind}/{option}/info",
                    _prior_call((64, 8), torch.float64, 0.5, mode, kind, option),
                )
    for option in ("col_marginal=BxK", "row_marginal", "col_bounds=lower"):
        add(
            f"with_prior/f64/3x24x6/eps=0.5/tol1e-6/zeros/{option}/info",
            _prior_call((3, 24, 6), torch.float64, 0.5, "tol1e-6", "zeros", option),
        )
    for dname in ("f16", "bf16"):
        for mode in ("fixed", "tol1e-6"):
            add(
                f"with_prior/{dname}/64x8/eps=0.5/{mode}/prior/info",
                _prior_call((64, 8), DTYPES[dname], 0.5, mode, "prior", "none"),
            )
            add(
                f"with_prior/{dname}/64x8/eps=0.5/{mode}/log_prior/info",
                _prior_call((64, 8), DTYPES[dname], 0.5, mode, "log_prior", "none"),
            )


# ragged: groups of unequal sizes, equal sizes (the dense path in fixed mode), and tiny groups
PTRS = {
    "unequal": [0, 5, 12, 20, 32],
    "equal": [0, 8, 16, 24, 32],
    "single_rows": [0, 1, 3, 4],
}


def _ragged_option_kwargs(option: str, inp: Inputs, ptr: list[int], k: int, eps: float, dtype: torch.dtype) -> dict:
    n, groups = ptr[-1], len(ptr) - 1
    if option == "none":
        return {}
    if option == "col_marginal":
        return {"col_marginal": inp.simplex(k)}
    if option == "col_marginal=GxK":
        return {"col_marginal": inp.simplex(groups, k)}
    if option == "row_marginal":
        row = inp.rand(n) + 0.1
        sizes = torch.tensor(ptr).diff()
        totals = torch.repeat_interleave(torch.stack([row[a:b].sum() for a, b in zip(ptr[:-1], ptr[1:])]), sizes)
        return {"row_marginal": row / totals}
    if option.startswith("init="):
        ptr_tensor = torch.tensor(ptr)
        previous = otlabel.sinkhorn_ragged(inp.randn(n, k, dtype=dtype), ptr_tensor, eps, tol=1e-6, return_info=True)
        if option == "init=result":
            return {"init": previous}
        if option == "init=(f,g)":
            return {"init": (previous.log_row_scaling, previous.log_col_scaling)}
        if option == "init=g[0]":
            return {"init": previous.log_col_scaling[0]}
    return _option_kwargs(option, inp, (n, k), eps, dtype)


def _ragged_call(
    ptr_name: str,
    dtype: torch.dtype,
    eps: float,
    mode: str,
    prior: str = "none",
    segments: str = "auto",
    option: str = "none",
    info: bool = True,
    ptr_as: str = "tensor",
    k: int = 6,
    scale: float = 1.0,
) -> CaseFn:
    def run(inp: Inputs) -> Any:
        ptr = PTRS[ptr_name]
        n = ptr[-1]
        kwargs = _ragged_option_kwargs(option, inp, ptr, k, eps, dtype)
        if prior != "none":
            kwargs["prior"], kwargs["log_prior"] = _prior_tensor(prior, inp, (n, k), dtype)
        ptr_value: Any = {
            "tensor": torch.tensor(ptr),
            "numpy_scores": torch.tensor(ptr),
            "list": list(ptr),
            "int32": torch.tensor(ptr, dtype=torch.int32),
            "numpy": np.array(ptr, dtype=np.int64),
        }[ptr_as]
        scores = inp.randn(n, k, dtype=dtype, scale=scale)
        if ptr_as == "numpy_scores":
            scores = scores.numpy()
        return otlabel.sinkhorn_ragged(
            scores, ptr_value, eps, segments=segments, **MODES[mode], return_info=info, **kwargs
        )

    return run


def ragged_cases() -> None:
    """sinkhorn_ragged: group layouts x modes x segments, with and without a prior, and the options."""
    modes = ("fixed", "n_iter=5", "tol1e-6", "tol1e-9/check_every=1", "tol1e-9/max_iter=3")
    for ptr_name in ("unequal", "equal"):
        for mode in modes:
            for segments in ("auto", "torch"):
                for prior in ("none", "prior"):
                    name = f"ragged/f64/{ptr_name}/eps=0.5/{mode}/segments={segments}/{prior}/info"
                    add(name, _ragged_call(ptr_name, torch.float64, 0.5, mode, prior, segments))
        for mode in ("fixed", "tol1e-6"):
            add(
                f"ragged/f64/{ptr_name}/eps=0.5/{mode}/labels",
                _ragged_call(ptr_name, torch.float64, 0.5, mode, info=False),
            )
            add(
                f"ragged/f64/{ptr_name}/eps=0.5/{mode}/log_zeros/labels",
                _ragged_call(ptr_name, torch.float64, 0.5, mode, "log_zeros", info=False),
            )
    options = (
        "col_marginal",
        "col_marginal=GxK",
        "row_marginal",
        "col_penalty=0.5",
        "row_penalty=2",
        "mass=0.5",
        "col_bounds=both",
        "init=result",
        "init=(f,g)",
        "init=g[0]",
        "anderson",
    )
    for ptr_name, ptr_modes in (("unequal", ("n_iter=5", "tol1e-6")), ("equal", ("n_iter=5",))):
        for mode in ptr_modes:
            for option in options:
                add(
                    f"ragged/f64/{ptr_name}/eps=0.5/{mode}/{option}/info",
                    _ragged_call(ptr_name, torch.float64, 0.5, mode, option=option),
                )
    for prior in ("zeros", "log_zeros"):
        for option in ("none", "col_marginal", "row_marginal"):
            add(
                f"ragged/f64/unequal/eps=0.5/tol1e-6/{prior}/{option}/info",
                _ragged_call("unequal", torch.float64, 0.5, "tol1e-6", prior, option=option),
            )
    for dname in ("f16", "bf16", "f32"):
        for ptr_name in ("unequal", "equal"):
            for mode in ("fixed", "tol1e-6"):
                add(f"ragged/{dname}/{ptr_name}/eps=0.5/{mode}/info", _ragged_call(ptr_name, DTYPES[dname], 0.5, mode))
    for ptr_as in ("list", "int32", "numpy", "numpy_scores"):
        add(
            f"ragged/f64/unequal/eps=0.5/tol1e-6/ptr={ptr_as}/info",
            _ragged_call("unequal", torch.float64, 0.5, "tol1e-6", ptr_as=ptr_as),
        )
    for mode in ("fixed", "tol1e-6"):
        add(f"ragged/f64/single_rows/eps=0.5/{mode}/info", _ragged_call("single_rows", torch.float64, 0.5, mode, k=3))


def wide_cases() -> None:
    """Wide scores: sharp labels, and scores / epsilon ~ 1e3 that push float32 to the log domain."""
    for dname in ("f32", "f64", "bf16", "f16"):
        for mode in ("fixed", "tol1e-6"):
            add(
                f"wide/sinkhorn/{dname}/64x8/3randn/eps=0.05/{mode}/info",
                lambda inp, d=DTYPES[dname], m=mode: otlabel.sinkhorn(
                    inp.randn(64, 8, dtype=d, scale=3.0), 0.05, **MODES[m], return_info=True
                ),
            )
    wide = {
        "n_iter=3": {"n_iter": 3},
        "n_iter=50": {"n_iter": 50},
        "tol1e-6/max_iter=200": {"tol": 1e-6, "max_iter": 200},
    }
    for mode, settings in wide.items():
        for dname in ("f32", "f64"):
            add(
                f"wide/sinkhorn/{dname}/64x8/50randn/eps=0.01/{mode}/info",
                lambda inp, d=DTYPES[dname], s=settings: otlabel.sinkhorn(
                    inp.randn(64, 8, dtype=d, scale=50.0), 0.01, **s, return_info=True
                ),
            )
        add(
            f"wide/sinkhorn/f32/3x24x6/50randn/eps=0.01/{mode}/info",
            lambda inp, s=settings: otlabel.sinkhorn(
                inp.randn(3, 24, 6, dtype=torch.float32, scale=50.0), 0.01, **s, return_info=True
            ),
        )
        add(
            f"wide/with_prior/f32/64x8/50randn/eps=0.01/{mode}/zeros/info",
            lambda inp, s=settings: otlabel.sinkhorn_with_prior(
                inp.randn(64, 8, dtype=torch.float32, scale=50.0),
                inp.prior(64, 8, dtype=torch.float32, zeros=True),
                0.01,
                **s,
                return_info=True,
            ),
        )
        add(
            f"wide/ragged/f32/unequal/50randn/eps=0.01/{mode}/info",
            lambda inp, s=settings: otlabel.sinkhorn_ragged(
                inp.randn(32, 6, dtype=torch.float32, scale=50.0),
                torch.tensor(PTRS["unequal"]),
                0.01,
                **s,
                return_info=True,
            ),
        )
    for option in ("col_penalty=0.5", "mass=0.9", "col_bounds=both", "anderson"):
        add(
            f"wide/sinkhorn/f32/64x8/50randn/eps=0.01/tol1e-6/{option}/info",
            lambda inp, o=option: otlabel.sinkhorn(
                inp.randn(64, 8, dtype=torch.float32, scale=50.0),
                0.01,
                tol=1e-6,
                max_iter=200,
                return_info=True,
                **_option_kwargs(o, inp, (64, 8), 0.01, torch.float32),
            ),
        )
    for dname in ("bf16", "f16"):
        add(
            f"wide/sinkhorn/{dname}/64x8/50randn/eps=0.01/fixed/info",
            lambda inp, d=DTYPES[dname]: otlabel.sinkhorn(
                inp.randn(64, 8, dtype=d, scale=50.0), 0.01, return_info=True
            ),
        )


def numpy_cases() -> None:
    """numpy in, numpy out."""
    for dname, np_dtype in (("f32", np.float32), ("f64", np.float64)):
        for mode in ("fixed", "tol1e-6"):
            for info in (True, False):
                add(
                    f"numpy/sinkhorn/{dname}/64x8/eps=0.5/{mode}/{'info' if info else 'labels'}",
                    lambda inp, t=np_dtype, m=mode, i=info: otlabel.sinkhorn(
                        inp.numpy.standard_normal((64, 8)).astype(t), 0.5, **MODES[m], return_info=i
                    ),
                )
        add(
            f"numpy/sinkhorn/{dname}/3x24x6/eps=0.5/tol1e-6/col_marginal=BxK/info",
            lambda inp, t=np_dtype: otlabel.sinkhorn(
                inp.numpy.standard_normal((3, 24, 6)).astype(t),
                0.5,
                tol=1e-6,
                col_marginal=inp.simplex(3, 6).numpy(),
                return_info=True,
            ),
        )
        add(
            f"numpy/with_prior/{dname}/64x8/eps=0.5/tol1e-6/info",
            lambda inp, t=np_dtype: otlabel.sinkhorn_with_prior(
                inp.numpy.standard_normal((64, 8)).astype(t),
                (inp.numpy.random((64, 8)) + 0.05).astype(t),
                0.5,
                tol=1e-6,
                return_info=True,
            ),
        )
        add(
            f"numpy/ragged/{dname}/unequal/eps=0.5/n_iter=5/info",
            lambda inp, t=np_dtype: otlabel.sinkhorn_ragged(
                inp.numpy.standard_normal((32, 6)).astype(t), np.array(PTRS["unequal"]), 0.5, n_iter=5, return_info=True
            ),
        )
    add(
        "numpy/sinkhorn/f64/64x8/eps=0.5/tol1e-6/numpy_marginals+init/info",
        lambda inp: otlabel.sinkhorn(
            inp.numpy.standard_normal((64, 8)),
            0.5,
            tol=1e-6,
            col_marginal=inp.simplex(8).numpy(),
            row_marginal=inp.simplex(64).numpy(),
            init=otlabel.sinkhorn(inp.numpy.standard_normal((64, 8)), 0.5, tol=1e-6, return_info=True),
            return_info=True,
        ),
    )


def _nan_at(tensor: torch.Tensor, index: tuple[int, ...], value: float = math.nan) -> torch.Tensor:
    """A copy of ``tensor`` with one entry set to ``value`` (NaN by default)."""
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def validate_cases() -> None:
    """validate="host" and "device": device checks turn bad input into NaN labels instead of an error."""
    for validate in ("auto", "host", "device"):
        for mode in ("fixed", "tol1e-6"):
            add(
                f"validate/sinkhorn/f32/64x8/eps=0.5/{mode}/validate={validate}/info",
                lambda inp, v=validate, m=mode: otlabel.sinkhorn(
                    inp.randn(64, 8, dtype=torch.float32), 0.5, **MODES[m], validate=v, return_info=True
                ),
            )
    bad = {
        "nan_score": lambda inp: {"scores": _nan_at(inp.randn(64, 8), (3, 2))},
        "inf_score": lambda inp: {"scores": _nan_at(inp.randn(64, 8), (3, 2), math.inf)},
        "negative_col_marginal": lambda inp: {
            "scores": inp.randn(64, 8),
            "col_marginal": torch.tensor([-0.1, 0.3, 0.1, 0.1, 0.2, 0.2, 0.1, 0.1], dtype=torch.float64),
        },
        "col_marginal_sum_2": lambda inp: {"scores": inp.randn(64, 8), "col_marginal": inp.simplex(8) * 2},
        "nan_init": lambda inp: {"scores": inp.randn(64, 8), "init": _nan_at(inp.randn(8), (1,))},
    }
    for what, build in bad.items():
        for validate in ("host", "device"):
            for mode in ("fixed", "tol1e-6"):
                add(
                    f"validate/sinkhorn/f64/64x8/eps=0.5/{mode}/validate={validate}/{what}/info",
                    lambda inp, b=build, v=validate, m=mode: (
                        lambda kw: otlabel.sinkhorn(
                            kw.pop("scores"), 0.5, **MODES[m], validate=v, return_info=True, **kw
                        )
                    )(b(inp)),
                )
    for validate in ("host", "device"):
        add(
            f"validate/with_prior/f64/64x8/eps=0.5/fixed/validate={validate}/zero_row_prior/info",
            lambda inp, v=validate: otlabel.sinkhorn_with_prior(
                inp.randn(64, 8),
                inp.prior(64, 8).index_fill(0, torch.tensor([5]), 0.0),
                0.5,
                validate=v,
                return_info=True,
            ),
        )
        add(
            f"validate/with_prior/f64/64x8/eps=0.5/fixed/validate={validate}/nan_score/info",
            lambda inp, v=validate: otlabel.sinkhorn_with_prior(
                _nan_at(inp.randn(64, 8), (0, 0)), inp.prior(64, 8), 0.5, validate=v, return_info=True
            ),
        )
        for ptr_name in ("unequal", "equal"):
            add(
                f"validate/ragged/f64/{ptr_name}/eps=0.5/fixed/validate={validate}/info",
                lambda inp, v=validate, p=ptr_name: otlabel.sinkhorn_ragged(
                    inp.randn(32, 6), torch.tensor(PTRS[p]), 0.5, validate=v, return_info=True
                ),
            )
            add(
                f"validate/ragged/f64/{ptr_name}/eps=0.5/fixed/validate={validate}/nan_score/info",
                lambda inp, v=validate, p=ptr_name: otlabel.sinkhorn_ragged(
                    _nan_at(inp.randn(32, 6), (9, 1)), torch.tensor(PTRS[p]), 0.5, validate=v, return_info=True
                ),
            )
        add(
            f"validate/ragged/f64/eps=0.5/fixed/validate={validate}/ptr_end_wrong/info",
            lambda inp, v=validate: otlabel.sinkhorn_ragged(
                inp.randn(32, 6), torch.tensor([0, 5, 12, 31]), 0.5, validate=v, return_info=True
            ),
        )


def _call(entry: str, *args: Any, **kwargs: Any) -> CaseFn:
    """A case calling ``otlabel.<entry>`` with inputs built from ``Inputs`` by callables in the arguments."""

    def run(inp: Inputs) -> Any:
        real_args = [a(inp) if callable(a) else a for a in args]
        real_kwargs = {k: (v(inp) if callable(v) else v) for k, v in kwargs.items()}
        return getattr(otlabel, entry)(*real_args, **real_kwargs)

    return run


def error_cases() -> None:
    """Bad input: the exception type and message are the record."""

    def s(inp: Inputs) -> torch.Tensor:
        return inp.randn(16, 4)

    def p(inp: Inputs) -> torch.Tensor:
        return inp.prior(16, 4)

    uniform4 = [0.25] * 4
    sinkhorn_errors: dict[str, dict[str, Any]] = {
        "epsilon=0": {"epsilon": 0},
        "epsilon=-1": {"epsilon": -1.0},
        "epsilon=nan": {"epsilon": math.nan},
        "epsilon=str": {"epsilon": "0.5"},
        "n_iter_with_tol": {"n_iter": 3, "tol": 1e-6},
        "n_iter=0": {"n_iter": 0},
        "n_iter=2.5": {"n_iter": 2.5},
        "tol=-1": {"tol": -1.0},
        "tol=0": {"tol": 0.0},
        "max_iter=0": {"tol": 1e-6, "max_iter": 0},
        "check_every=0": {"tol": 1e-6, "check_every": 0},
        "col_marginal_length": {"col_marginal": [0.5, 0.5]},
        "col_marginal_sum": {"col_marginal": [0.3, 0.3, 0.3, 0.3]},
        "col_marginal_negative": {"col_marginal": [-0.1, 0.5, 0.3, 0.3]},
        "col_marginal_nan": {"col_marginal": [math.nan, 0.5, 0.25, 0.25]},
        "col_marginal_2d_unbatched": {"col_marginal": [uniform4, uniform4]},
        "row_marginal_length": {"row_marginal": [1 / 15] * 15},
        "row_marginal_sum": {"row_marginal": [0.1] * 16},
        "backend=unknown": {"backend": "cuda-magic"},
        "backend=triton_on_cpu": {"backend": "triton"},
        "validate=unknown": {"validate": "sometimes"},
        "return_info=str": {"return_info": "yes"},
        "mass=0": {"mass": 0.0},
        "mass=1.5": {"mass": 1.5},
        "mass=bool": {"mass": True},
        "col_penalty=-1": {"col_penalty": -1.0},
        "col_penalty=nan": {"col_penalty": math.nan},
        "mass+col_penalty": {"mass": 0.5, "col_penalty": 1.0},
        "col_bounds=(None,None)": {"col_bounds": (None, None)},
        "col_bounds=not_pair": {"col_bounds": [0.1, 0.2, 0.3, 0.4]},
        "col_bounds_lower_sum>1": {"col_bounds": ([0.3] * 4, None)},
        "col_bounds_upper_sum<1": {"col_bounds": (None, [0.2] * 4)},
        "col_bounds_lower>upper": {"col_bounds": ([0.1, 0.3, 0.2, 0.2], [0.4, 0.2, 0.5, 0.5])},
        "col_bounds+col_marginal": {"col_bounds": ([0.1] * 4, None), "col_marginal": uniform4},
        "acceleration=newton": {"tol": 1e-6, "acceleration": "newton"},
        "anderson_fixed_mode": {"acceleration": "anderson"},
        "anderson+mass": {"tol": 1e-6, "acceleration": "anderson", "mass": 0.5},
        "init_wrong_length": {"init": torch.zeros(5, dtype=torch.float64)},
        "init_(f,None)": {"init": (torch.zeros(16, dtype=torch.float64), None)},
        "init_triple": {"init": (torch.zeros(16), torch.zeros(4), torch.zeros(4))},
        "init_plus_inf": {"init": torch.tensor([0.0, math.inf, 0.0, 0.0], dtype=torch.float64)},
        "process_group=str": {"process_group": "world"},
    }
    for what, kwargs in sinkhorn_errors.items():
        add(f"errors/sinkhorn/{what}", _call("sinkhorn", s, **{"epsilon": 0.5, **kwargs}))
    score_errors: dict[str, CaseFn] = {
        "nan_scores": lambda inp: _nan_at(inp.randn(16, 4), (2, 1)),
        "inf_scores": lambda inp: _nan_at(inp.randn(16, 4), (2, 1), -math.inf),
        "1d_scores": lambda inp: inp.randn(16),
        "4d_scores": lambda inp: inp.randn(2, 2, 4, 4),
        "int_scores": lambda inp: torch.ones(16, 4, dtype=torch.int64),
        "list_scores": lambda inp: [[0.0, 1.0], [1.0, 0.0]],
        "no_rows": lambda inp: inp.randn(0, 4),
        "no_cols": lambda inp: inp.randn(16, 0),
    }
    for what, build in score_errors.items():
        add(f"errors/sinkhorn/{what}", _call("sinkhorn", build, 0.5))
    add(
        "sinkhorn/f64/16x4/eps=0.5/fixed/requires_grad",
        _call("sinkhorn", lambda inp: inp.randn(16, 4).requires_grad_(), 0.5),
    )
    prior_errors: dict[str, CaseFn] = {
        "all_zero_row": lambda inp: inp.prior(16, 4).index_fill(0, torch.tensor([3]), 0.0),
        "all_zero_column": lambda inp: inp.prior(16, 4).index_fill(1, torch.tensor([2]), 0.0),
        "negative": lambda inp: inp.prior(16, 4).index_fill(0, torch.tensor([3]), -0.5),
        "nan": lambda inp: _nan_at(inp.prior(16, 4), (1, 1)),
        "shape": lambda inp: inp.prior(16, 3),
        # column 0 allowed on rows 0-1 only, but its marginal asks for 4 rows' mass
        # column 0 reachable from rows 0-1 only, but its uniform share is 4 rows' mass
        "infeasible_support": lambda inp: (
            inp.prior(16, 4).index_fill(1, torch.tensor([0]), 0.0)
            + torch.nn.functional.pad(torch.ones(2, 1, dtype=torch.float64), (0, 3, 0, 14))
        ),
    }
    for what, build in prior_errors.items():
        add(f"errors/with_prior/{what}", _call("sinkhorn_with_prior", s, build, 0.5))
    add(
        "errors/with_prior/log_prior_plus_inf",
        _call(
            "sinkhorn_with_prior",
            s,
            lambda inp: _nan_at(inp.prior(16, 4).log(), (0, 0), math.inf),
            0.5,
            log_prior=True,
        ),
    )
    add("errors/with_prior/log_prior=str", _call("sinkhorn_with_prior", s, p, 0.5, log_prior="yes"))
    add(
        "errors/with_prior/infeasible_with_col_marginal",
        _call(
            "sinkhorn_with_prior",
            s,
            lambda inp: (
                inp.prior(16, 4)
                .index_fill(1, torch.tensor([0]), 0.0)
                .index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(1.0, dtype=torch.float64))
            ),
            0.5,
            col_marginal=[0.7, 0.1, 0.1, 0.1],
        ),
    )

    def r(inp: Inputs) -> torch.Tensor:
        return inp.randn(12, 4)

    ragged_errors: dict[str, dict[str, Any]] = {
        "ptr_not_from_0": {"ptr": [1, 5, 12]},
        "ptr_not_to_N": {"ptr": [0, 5, 11]},
        "ptr_tensor_not_to_N": {"ptr": torch.tensor([0, 5, 11])},
        "ptr_empty_group": {"ptr": torch.tensor([0, 5, 5, 12])},
        "ptr_decreasing": {"ptr": torch.tensor([0, 7, 5, 12])},
        "ptr_float": {"ptr": torch.tensor([0.0, 5.0, 12.0])},
        "ptr_2d": {"ptr": torch.tensor([[0, 5, 12]])},
        "ptr_single": {"ptr": [0]},
        "ptr_out_of_range_list": {"ptr": [0, 5, 40]},
        "ptr_str": {"ptr": "0,5,12"},
        "segments=unknown": {"ptr": [0, 5, 12], "segments": "csr"},
        "col_marginal_shape": {"ptr": [0, 5, 12], "col_marginal": [[0.25] * 4] * 3},
        "row_marginal_group_sum": {"ptr": [0, 5, 12], "row_marginal": [1 / 12] * 12},
        "prior_zero_column_in_group": {
            "ptr": [0, 5, 12],
            "prior": lambda inp: inp.prior(12, 4).index_put_(
                (torch.arange(5), torch.zeros(5, dtype=torch.int64)), torch.tensor(0.0, dtype=torch.float64)
            ),
        },
        "n_iter_with_tol": {"ptr": [0, 5, 12], "n_iter": 2, "tol": 1e-6},
        "init_g_shape": {"ptr": [0, 5, 12], "init": torch.zeros(3, 4, dtype=torch.float64)},
    }
    for what, kwargs in ragged_errors.items():
        kwargs = dict(kwargs)
        ptr = kwargs.pop("ptr")
        add(f"errors/ragged/{what}", _call("sinkhorn_ragged", r, ptr, 0.5, **kwargs))
    add("errors/ragged/3d_scores", _call("sinkhorn_ragged", lambda inp: inp.randn(2, 6, 4), [0, 6], 0.5))
    add(
        "errors/sinkhorn/f16_labels_overflow",
        _call(
            "sinkhorn",
            lambda inp: inp.randn(70000, 1, dtype=torch.float16),
            0.5,
            n_iter=1,
            row_marginal=lambda inp: torch.cat((torch.ones(1), torch.zeros(69999))).double(),
        ),
    )
    add(
        "errors/sinkhorn/f32/scores_over_epsilon_overflow",
        _call("sinkhorn", lambda inp: inp.randn(16, 4, dtype=torch.float32), 1e-40),
    )
    add("sinkhorn/f64/16x4/eps=1e-300/fixed", _call("sinkhorn", s, 1e-300))


# ---------------------------------------------------------------------------------------------- OnlineLabeller


def _labeller_run(
    settings: dict[str, Any],
    batches: tuple[int, ...] = (12, 12, 12, 12),
    dtype: torch.dtype = torch.float32,
    given: bool = False,
    nan_step: int | None = None,
    resume_after: int | None = None,
) -> CaseFn:
    """Successive calls of one labeller: every call's labels, then its state_dict, marginal and repr."""

    def run(inp: Inputs) -> Any:
        k = 5
        labeller = otlabel.OnlineLabeller(k, **settings)
        bias = torch.tensor([1.5, 0.5, 0.0, 0.0, -0.5], dtype=torch.float64)
        out: dict[str, Any] = {"labels": [], "marginals": []}
        for step, size in enumerate(batches):
            scores = (inp.randn(size, k) + bias).to(dtype)
            if step == nan_step:
                scores = _nan_at(scores, (0, 0))
            if given:
                labeller.update(inp.simplex(k))
            if step == resume_after:
                state = labeller.state_dict()
                out["state_at_resume"] = {key: value.clone() for key, value in state.items()}
                labeller = otlabel.OnlineLabeller(k, **settings)
                labeller.load_state_dict(state)
            out["labels"].append(outcome(lambda s=scores: labeller(s)))
            out["marginals"].append(labeller.marginal.clone())
        out["state"] = labeller.state_dict()
        out["repr"] = repr(labeller)
        out["acceleration"] = labeller.acceleration
        return out

    return run


def labeller_cases() -> None:
    """OnlineLabeller: queue, warm start, the marginal estimates, the options, state round trips."""
    configs: dict[str, dict[str, Any]] = {
        "default": {"epsilon": 0.5},
        "queue=16": {"epsilon": 0.5, "queue_size": 16},
        "queue=40": {"epsilon": 0.5, "queue_size": 40},
        "queue=16/warm_start": {"epsilon": 0.5, "queue_size": 16, "warm_start": True},
        "warm_start": {"epsilon": 0.5, "warm_start": True},
        "warm_start/tol1e-6": {"epsilon": 0.5, "warm_start": True, "tol": 1e-6},
        "warm_start/n_iter=1": {"epsilon": 0.5, "warm_start": True, "n_iter": 1},
        "tol1e-9/check_every=1": {"epsilon": 0.5, "tol": 1e-9, "check_every": 1},
        "tol1e-9/max_iter=3": {"epsilon": 0.5, "tol": 1e-9, "max_iter": 3},
        "n_iter=5/queue=16": {"epsilon": 0.5, "n_iter": 5, "queue_size": 16},
        "ema": {"epsilon": 0.5, "marginal": "ema"},
        "ema/queue=16/warm_start": {"epsilon": 0.5, "marginal": "ema", "queue_size": 16, "warm_start": True},
        "ema/momentum=0/floor=0": {"epsilon": 0.5, "marginal": "ema", "momentum": 0.0, "floor": 0.0},
        "ema/momentum=0.5/floor=0.2/tol1e-6": {
            "epsilon": 0.5,
            "marginal": "ema",
            "momentum": 0.5,
            "floor": 0.2,
            "tol": 1e-6,
        },
        "ema/labels/col_penalty=1": {"epsilon": 0.5, "marginal": "ema", "estimate": "labels", "col_penalty": 1.0},
        "ema/labels/mass=0.8/tol1e-6": {
            "epsilon": 0.5,
            "marginal": "ema",
            "estimate": "labels",
            "mass": 0.8,
            "tol": 1e-6,
        },
        "fixed_marginal": {"epsilon": 0.5, "marginal": [0.3, 0.3, 0.2, 0.1, 0.1]},
        "fixed_marginal_tensor/queue=16": {
            "epsilon": 0.5,
            "marginal": torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2], dtype=torch.float64),
            "queue_size": 16,
        },
        "col_penalty=0.5/row_penalty=2": {"epsilon": 0.5, "col_penalty": 0.5, "row_penalty": 2.0},
        "mass=0.9/tol1e-6": {"epsilon": 0.5, "mass": 0.9, "tol": 1e-6},
        "col_bounds": {"epsilon": 0.5, "col_bounds": ([0.1] * 5, [0.3] * 5)},
        "anderson/tol1e-6/warm_start": {"epsilon": 0.2, "acceleration": "anderson", "tol": 1e-6, "warm_start": True},
        "validate=host": {"epsilon": 0.5, "validate": "host"},
        "eps=0.05": {"epsilon": 0.05},
    }
    for name, settings in configs.items():
        add(f"labeller/f32/12x5x4/{name}", _labeller_run(settings))
    add(
        "labeller/f64/12x5x4/ema/queue=16/warm_start",
        _labeller_run(configs["ema/queue=16/warm_start"], dtype=torch.float64),
    )
    add("labeller/bf16/12x5x4/queue=16/warm_start", _labeller_run(configs["queue=16/warm_start"], dtype=torch.bfloat16))
    add("labeller/f16/12x5x4/ema", _labeller_run(configs["ema"], dtype=torch.float16))
    add(
        "labeller/f32/12,7,20,1/queue=16/ema",
        _labeller_run({"epsilon": 0.5, "queue_size": 16, "marginal": "ema"}, batches=(12, 7, 20, 1)),
    )
    add(
        "labeller/f32/12,0,12/queue=16/ema/empty_batch",
        _labeller_run({"epsilon": 0.5, "queue_size": 16, "marginal": "ema"}, batches=(12, 0, 12)),
    )
    add(
        "labeller/f32/12x5x4/ema/given",
        _labeller_run({"epsilon": 0.5, "marginal": "ema", "estimate": "given"}, given=True),
    )
    for validate in ("host", "device"):
        settings = {"epsilon": 0.5, "queue_size": 16, "marginal": "ema", "warm_start": True, "validate": validate}
        add(f"labeller/f32/12x5x4/validate={validate}/nan_batch", _labeller_run(settings, nan_step=1))
    for name in ("ema/queue=16/warm_start", "queue=40", "anderson/tol1e-6/warm_start"):
        add(
            f"labeller/f32/12x5x4/{name}/resumed",
            _labeller_run(configs[name], batches=(12, 12, 12, 12, 12), resume_after=2),
        )
    constructor_errors: dict[str, dict[str, Any]] = {
        "n_classes=0": {"n_classes": 0},
        "epsilon=0": {"epsilon": 0.0},
        "n_iter_with_tol": {"n_iter": 2, "tol": 1e-6},
        "queue_size=-1": {"queue_size": -1},
        "marginal=unknown": {"marginal": "zipf"},
        "marginal_length": {"marginal": [0.5, 0.5]},
        "marginal_sum": {"marginal": [0.3] * 5},
        "momentum=1": {"marginal": "ema", "momentum": 1.0},
        "floor=-0.1": {"marginal": "ema", "floor": -0.1},
        "floor=str": {"marginal": "ema", "floor": "0.1"},
        "estimate=unknown": {"marginal": "ema", "estimate": "oracle"},
        "estimate=labels_without_relaxation": {"marginal": "ema", "estimate": "labels"},
        "estimate=given_uniform": {"estimate": "given"},
        "warm_start=str": {"warm_start": "yes"},
        "col_bounds_with_ema": {"marginal": "ema", "col_bounds": ([0.1] * 5, None)},
        "anderson_fixed_mode": {"acceleration": "anderson"},
        "acceleration=unknown": {"tol": 1e-6, "acceleration": "newton"},
        "mass=2": {"mass": 2.0},
        "col_penalty=0": {"col_penalty": 0.0},
        "backend=unknown": {"backend": "magic"},
        "validate=unknown": {"validate": "never"},
        "process_group=str": {"process_group": "world"},
    }
    for name, kwargs in constructor_errors.items():
        kwargs = {"n_classes": 5, **kwargs}
        add(f"errors/labeller/{name}", lambda inp, kw=kwargs: repr(otlabel.OnlineLabeller(**kw)))
    call_errors: dict[str, Callable[[Inputs], Any]] = {
        "call_wrong_k": lambda inp: otlabel.OnlineLabeller(5, 0.5)(inp.randn(4, 4)),
        "call_3d": lambda inp: otlabel.OnlineLabeller(5, 0.5)(inp.randn(2, 4, 5)),
        "call_numpy": lambda inp: otlabel.OnlineLabeller(5, 0.5)(inp.randn(4, 5).numpy()),
        "call_nan_host": lambda inp: otlabel.OnlineLabeller(5, 0.5)(_nan_at(inp.randn(4, 5), (1, 1))),
        "load_missing_key": lambda inp: otlabel.OnlineLabeller(5, 0.5).load_state_dict({"queue": torch.zeros(0, 5)}),
        "load_wrong_queue": lambda inp: otlabel.OnlineLabeller(5, 0.5, queue_size=4).load_state_dict(
            otlabel.OnlineLabeller(5, 0.5, queue_size=8).state_dict()
        ),
        "load_wrong_k": lambda inp: otlabel.OnlineLabeller(5, 0.5).load_state_dict(
            otlabel.OnlineLabeller(4, 0.5).state_dict()
        ),
        "load_bad_ema": lambda inp: otlabel.OnlineLabeller(5, 0.5).load_state_dict(
            {**otlabel.OnlineLabeller(5, 0.5).state_dict(), "marginal_ema": torch.full((5,), 0.3, dtype=torch.float64)}
        ),
        "load_not_mapping": lambda inp: otlabel.OnlineLabeller(5, 0.5).load_state_dict([1, 2]),
        "update_wrong_length": lambda inp: otlabel.OnlineLabeller(5, 0.5, marginal="ema", estimate="given").update(
            [0.5, 0.5]
        ),
        "update_uniform": lambda inp: otlabel.OnlineLabeller(5, 0.5).update(inp.simplex(5)),
    }
    for name, fn in call_errors.items():
        add(f"errors/labeller/{name}", fn)


# ---------------------------------------------------------------------------------------------- helpers


def helper_cases() -> None:
    """gaussian_rank_prior, fractional_ranks, foreground_marginal, colabel, hard_labels, integer_quotas."""
    for dname in ("f32", "f64"):
        d = DTYPES[dname]
        for log in (False, True):
            for sigma in (0.05, 0.3, 10.0):
                add(
                    f"gaussian_rank_prior/{dname}/20x4/sigma={sigma}/log={log}",
                    _call(
                        "gaussian_rank_prior",
                        lambda inp, d=d: inp.rand(20, dtype=d),
                        lambda inp, d=d: torch.linspace(0, 1, 4, dtype=d),
                        sigma=sigma,
                        log=log,
                    ),
                )
        add(
            f"gaussian_rank_prior/{dname}/3x20x4/levels=K",
            _call(
                "gaussian_rank_prior",
                lambda inp, d=d: inp.rand(3, 20, dtype=d),
                lambda inp, d=d: torch.linspace(0, 1, 4, dtype=d),
                sigma=0.3,
            ),
        )
        add(
            f"gaussian_rank_prior/{dname}/3x20x4/levels=BxK",
            _call(
                "gaussian_rank_prior",
                lambda inp, d=d: inp.rand(3, 20, dtype=d),
                lambda inp, d=d: inp.rand(3, 4, dtype=d),
                sigma=0.3,
                log=True,
            ),
        )
    add(
        "gaussian_rank_prior/f32/20x4/ties",
        _call(
            "gaussian_rank_prior",
            lambda inp: inp.rand(20).mul(4).round().float(),
            torch.tensor([0.0, 0.3, 0.6, 1.0]),
            sigma=0.2,
        ),
    )
    add(
        "gaussian_rank_prior/f16/20x4",
        _call(
            "gaussian_rank_prior",
            lambda inp: inp.rand(20, dtype=torch.float16),
            torch.tensor([0.0, 0.5, 1.0], dtype=torch.float16),
            sigma=0.3,
        ),
    )
    add(
        "gaussian_rank_prior/numpy/f64/20x4",
        _call("gaussian_rank_prior", lambda inp: inp.numpy.random(20), np.array([0.0, 0.4, 1.0]), sigma=0.3, log=True),
    )
    add(
        "gaussian_rank_prior/levels_slack",
        _call(
            "gaussian_rank_prior",
            lambda inp: inp.rand(20, dtype=torch.float32),
            torch.tensor([0.0, 1.0000001], dtype=torch.float32),
            sigma=0.3,
        ),
    )
    add(
        "errors/gaussian_rank_prior/sigma_underflow",
        _call(
            "gaussian_rank_prior", lambda inp: inp.rand(200, dtype=torch.float32), torch.tensor([0.0, 1.0]), sigma=0.001
        ),
    )
    add(
        "gaussian_rank_prior/f32/sigma_tiny_log",
        _call(
            "gaussian_rank_prior",
            lambda inp: inp.rand(200, dtype=torch.float32),
            torch.tensor([0.0, 1.0]),
            sigma=0.001,
            log=True,
        ),
    )
    add(
        "errors/gaussian_rank_prior/sigma=0",
        _call("gaussian_rank_prior", lambda inp: inp.rand(20), torch.tensor([0.0, 1.0]), sigma=0.0),
    )
    add(
        "errors/gaussian_rank_prior/level>1",
        _call("gaussian_rank_prior", lambda inp: inp.rand(20), torch.tensor([0.0, 1.5]), sigma=0.3),
    )
    add(
        "errors/gaussian_rank_prior/nan_fg",
        _call("gaussian_rank_prior", lambda inp: _nan_at(inp.rand(20), (4,)), torch.tensor([0.0, 1.0]), sigma=0.3),
    )
    add(
        "errors/gaussian_rank_prior/log=1",
        _call("gaussian_rank_prior", lambda inp: inp.rand(20), torch.tensor([0.0, 1.0]), sigma=0.3, log=1),
    )
    add(
        "gaussian_rank_prior/validate=device/nan_fg",
        _call(
            "gaussian_rank_prior",
            lambda inp: _nan_at(inp.rand(20), (4,)),
            torch.tensor([0.0, 1.0]),
            sigma=0.3,
            validate="device",
        ),
    )
    add(
        "gaussian_rank_prior/validate=device/level>1",
        _call("gaussian_rank_prior", lambda inp: inp.rand(20), torch.tensor([0.0, 1.5]), sigma=0.3, validate="device"),
    )
    for what, values in {
        "f64/20": lambda inp: inp.rand(20),
        "f32/3x20": lambda inp: inp.rand(3, 20, dtype=torch.float32),
        "ties": lambda inp: torch.tensor([0.3, 0.1, 0.3, 0.9, 0.1, 0.1]),
        "numpy": lambda inp: inp.numpy.random(9),
    }.items():
        add(f"fractional_ranks/{what}", _call("fractional_ranks", values))
    add(
        "fractional_ranks/validate=device/nan",
        _call("fractional_ranks", lambda inp: _nan_at(inp.rand(8), (2,)), validate="device"),
    )
    add("errors/fractional_ranks/nan", _call("fractional_ranks", lambda inp: _nan_at(inp.rand(8), (2,))))
    add("errors/fractional_ranks/3d", _call("fractional_ranks", lambda inp: inp.rand(2, 2, 2)))
    add("foreground_marginal/f64/binary", _call("foreground_marginal", lambda inp: (inp.rand(30) > 0.3).double()))
    add(
        "foreground_marginal/f32/soft/3x30",
        _call("foreground_marginal", lambda inp: inp.rand(3, 30, dtype=torch.float32)),
    )
    add(
        "foreground_marginal/f64/valid",
        _call("foreground_marginal", lambda inp: inp.rand(30), lambda inp: inp.rand(30) > 0.5),
    )
    add("foreground_marginal/numpy", _call("foreground_marginal", lambda inp: inp.numpy.random((2, 10))))
    add(
        "foreground_marginal/validate=device/nothing_valid",
        _call("foreground_marginal", lambda inp: inp.rand(10), torch.zeros(10, dtype=torch.bool), validate="device"),
    )
    add(
        "errors/foreground_marginal/nothing_valid",
        _call("foreground_marginal", lambda inp: inp.rand(10), torch.zeros(10, dtype=torch.bool)),
    )
    add("errors/foreground_marginal/out_of_range", _call("foreground_marginal", lambda inp: inp.rand(10) * 2))
    add(
        "errors/foreground_marginal/valid_not_bool",
        _call("foreground_marginal", lambda inp: inp.rand(10), torch.ones(10)),
    )

    def streams(count: int, *shape: int, dtype: torch.dtype = torch.float32) -> Callable[[Inputs], list]:
        return lambda inp: [inp.randn(*shape, dtype=dtype, scale=2.0) for _ in range(count)]

    add("colabel/f32/2x(16x4)/probs", _call("colabel", streams(2, 16, 4)))
    add("colabel/f32/2x(16x4)/logits", _call("colabel", streams(2, 16, 4), space="logits"))
    add("colabel/f32/2x(16x4)/weights=0.7,0.3/probs", _call("colabel", streams(2, 16, 4), [0.7, 0.3]))
    add("colabel/f32/2x(16x4)/weights=1,0/probs", _call("colabel", streams(2, 16, 4), [1.0, 0.0]))
    add(
        "colabel/f64/3x(2x16x4)/weights=1,2,3/logits",
        _call("colabel", streams(3, 2, 16, 4, dtype=torch.float64), (1, 2, 3), "logits"),
    )
    add("colabel/f16/2x(16x4)/probs", _call("colabel", streams(2, 16, 4, dtype=torch.float16)))
    add("colabel/f32/1x(16x4)/probs", _call("colabel", streams(1, 16, 4)))
    add(
        "colabel/numpy/2x(16x4)/probs",
        _call("colabel", lambda inp: [inp.numpy.standard_normal((16, 4)) for _ in range(2)]),
    )
    add(
        "colabel/then_sinkhorn/f32/16x4/eps=0.5",
        lambda inp: otlabel.sinkhorn(
            otlabel.colabel([inp.randn(16, 4, dtype=torch.float32) for _ in range(2)]), 0.5, return_info=True
        ),
    )
    add("errors/colabel/empty", _call("colabel", []))
    add("errors/colabel/tensor_not_list", _call("colabel", lambda inp: inp.randn(2, 16, 4)))
    add("errors/colabel/shapes", _call("colabel", lambda inp: [inp.randn(16, 4), inp.randn(16, 3)]))
    add(
        "errors/colabel/dtypes", _call("colabel", lambda inp: [inp.randn(16, 4), inp.randn(16, 4, dtype=torch.float32)])
    )
    add("errors/colabel/mixed_numpy", _call("colabel", lambda inp: [inp.randn(16, 4), inp.randn(16, 4).numpy()]))
    add("errors/colabel/space", _call("colabel", streams(2, 16, 4), space="probabilities"))
    add("errors/colabel/weights_zero", _call("colabel", streams(2, 16, 4), [0.0, 0.0]))
    add("errors/colabel/weights_length", _call("colabel", streams(2, 16, 4), [0.5]))
    add("errors/colabel/weights_negative", _call("colabel", streams(2, 16, 4), [1.0, -0.5]))

    def soft(*shape: int, dtype: torch.dtype = torch.float64) -> Callable[[Inputs], torch.Tensor]:
        return lambda inp: otlabel.sinkhorn(inp.randn(*shape), 0.3, tol=1e-9).to(dtype)

    add("hard_labels/f64/64x8/one_hot", _call("hard_labels", soft(64, 8)))
    add("hard_labels/f64/64x8/indices", _call("hard_labels", soft(64, 8), one_hot=False))
    add("hard_labels/f64/64x8/col_marginal", _call("hard_labels", soft(64, 8), lambda inp: inp.simplex(8)))
    add("hard_labels/f32/3x24x6/indices", _call("hard_labels", soft(3, 24, 6, dtype=torch.float32), one_hot=False))
    add(
        "hard_labels/f32/3x24x6/col_marginal=BxK",
        _call("hard_labels", soft(3, 24, 6, dtype=torch.float32), lambda inp: inp.simplex(3, 6)),
    )
    add("hard_labels/f16/64x8/one_hot", _call("hard_labels", soft(64, 8, dtype=torch.float16)))
    add(
        "hard_labels/numpy/64x8/one_hot",
        _call("hard_labels", lambda inp: otlabel.sinkhorn(inp.randn(64, 8).numpy(), 0.3, tol=1e-9)),
    )
    add(
        "hard_labels/argmax_imbalanced/augmenting",
        _call(
            "hard_labels", lambda inp: (inp.rand(40, 4) + torch.tensor([2.0, 0.0, 0.0, 0.0])).softmax(-1), one_hot=False
        ),
    )
    add(
        "hard_labels/sparse_support",
        _call("hard_labels", lambda inp: inp.prior(16, 4, zeros=True), [0.25] * 4, one_hot=False),
    )
    add("hard_labels/ties", _call("hard_labels", torch.full((6, 3), 1 / 3, dtype=torch.float64), one_hot=False))
    add(
        "errors/hard_labels/infeasible",
        _call("hard_labels", torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), [0.5, 0.5]),
    )
    add("errors/hard_labels/negative", _call("hard_labels", torch.tensor([[1.0, -0.1], [0.0, 1.0]])))
    add("errors/hard_labels/nan", _call("hard_labels", torch.tensor([[1.0, math.nan], [0.0, 1.0]])))
    add("errors/hard_labels/zero_total", _call("hard_labels", torch.zeros(3, 2)))
    add("errors/hard_labels/col_marginal_length", _call("hard_labels", soft(16, 4), [0.5, 0.5]))
    for what, args in {
        "halves": (torch.tensor([2.5, 2.5, 5.0]), 10),
        "f32_random": (lambda inp: inp.rand(7, dtype=torch.float32), 100),
        "zeros": (torch.tensor([0.0, 1.0, 0.0]), 4),
        "total=0": (torch.tensor([1.0, 2.0]), 0),
    }.items():
        add(f"integer_quotas/{what}", _call("integer_quotas", *args))
    add("errors/integer_quotas/list", _call("integer_quotas", [1.0, 2.0], 3))
    add("errors/integer_quotas/negative_total", _call("integer_quotas", torch.tensor([1.0, 2.0]), -1))
    add("errors/integer_quotas/negative_mass", _call("integer_quotas", torch.tensor([1.0, -2.0]), 3))


# ---------------------------------------------------------------------------------------------- distributed

#: Distributed cases: name -> (rows per rank, the global problem from Inputs).
DistBuilder = Callable[[Inputs], dict[str, Any]]
DISTRIBUTED: dict[str, tuple[list[int], DistBuilder]] = {}


def dist_case(name: str, splits: list[int], build: DistBuilder) -> None:
    full = f"distributed/gloo{WORLD}/{name}/{'+'.join(map(str, splits))}"
    if full in DISTRIBUTED or full in CASES:
        raise ValueError(f"duplicate case name {full}")
    DISTRIBUTED[full] = (splits, build)


def distributed_cases() -> None:
    """The rows of one global problem split over two gloo ranks (one of them empty in some)."""
    uneven, empty, last_empty = [5, 3], [0, 8], [8, 0]

    def problem(k: int = 4, **extra: Any) -> DistBuilder:
        def build(inp: Inputs) -> dict[str, Any]:
            n = 8
            out: dict[str, Any] = {"scores": inp.randn(n, k), "epsilon": 0.5}
            for key, value in extra.items():
                out[key] = value(inp) if callable(value) else value
            return out

        return build

    def col(inp: Inputs) -> torch.Tensor:
        return inp.simplex(4)

    def row(inp: Inputs) -> torch.Tensor:
        return inp.simplex(8)

    def prior(inp: Inputs) -> torch.Tensor:
        return inp.prior(8, 4)

    def zeros(inp: Inputs) -> torch.Tensor:
        return inp.prior(8, 4, zeros=True)

    for splits in (uneven, empty, last_empty):
        dist_case("fixed/info", splits, problem(return_info=True))
        dist_case("tol1e-9/info", splits, problem(tol=1e-9, return_info=True))
        dist_case("prior/tol1e-9/info", splits, problem(prior=prior, tol=1e-9, return_info=True))
    dist_case("n_iter=5", uneven, problem(n_iter=5))
    dist_case("n_iter=1/info", empty, problem(n_iter=1, return_info=True))
    dist_case("tol1e-6/check_every=1/info", uneven, problem(tol=1e-6, check_every=1, return_info=True))
    dist_case("col_marginal/fixed/info", uneven, problem(col_marginal=col, return_info=True))
    dist_case("col_marginal/tol1e-9/info", empty, problem(col_marginal=col, tol=1e-9, return_info=True))
    dist_case("prior/fixed/info", uneven, problem(prior=prior, return_info=True))
    dist_case(
        "log_prior/tol1e-9/info",
        uneven,
        problem(prior=lambda inp: inp.prior(8, 4).log(), log_prior=True, tol=1e-9, return_info=True),
    )
    dist_case(
        "zeros+col+row_marginal/tol1e-9/info",
        uneven,
        problem(prior=zeros, col_marginal=col, row_marginal=row, tol=1e-9, return_info=True),
    )
    dist_case("row_marginal/fixed/info", uneven, problem(row_marginal=row, return_info=True))
    dist_case("row_marginal/tol1e-9/info", empty, problem(row_marginal=row, tol=1e-9, return_info=True))
    dist_case("col_penalty=0.5/tol1e-9/info", uneven, problem(col_penalty=0.5, tol=1e-9, return_info=True))
    dist_case("col_penalty=0.5/n_iter=5/info", empty, problem(col_penalty=0.5, n_iter=5, return_info=True))
    dist_case("col_penalty=0.5+row_penalty=2/tol1e-9", uneven, problem(col_penalty=0.5, row_penalty=2.0, tol=1e-9))
    dist_case("mass=0.5/tol1e-9/info", uneven, problem(mass=0.5, tol=1e-9, return_info=True))
    dist_case(
        "col_bounds/tol1e-9/info", uneven, problem(col_bounds=([0.15] * 4, [0.35] * 4), tol=1e-9, return_info=True)
    )
    dist_case("init=g/tol1e-9/info", uneven, problem(init=lambda inp: inp.randn(4), tol=1e-9, return_info=True))
    dist_case("anderson/tol1e-9/info", uneven, problem(acceleration="anderson", tol=1e-9, return_info=True))
    dist_case("validate=device/fixed/info", uneven, problem(validate="device", return_info=True))
    dist_case(
        "batched/col_marginal=BxK/tol1e-9/info",
        uneven,
        lambda inp: {
            "scores": inp.randn(2, 8, 3),
            "epsilon": 0.5,
            "col_marginal": inp.simplex(2, 3),
            "tol": 1e-9,
            "return_info": True,
        },
    )
    dist_case(
        "f32/50randn/eps=0.01/tol1e-6/max_iter=50/info",
        uneven,
        lambda inp: {
            "scores": inp.randn(8, 4, dtype=torch.float32, scale=50.0),
            "epsilon": 0.01,
            "tol": 1e-6,
            "max_iter": 50,
            "return_info": True,
        },
    )
    dist_case("numpy/tol1e-9/info", uneven, problem(numpy=True, tol=1e-9, return_info=True))
    dist_case("warns/max_iter=2", uneven, problem(tol=1e-12, max_iter=2))
    dist_case("error/epsilon_differs", uneven, problem(rank1={"epsilon": 0.25}))
    dist_case("error/nan_on_rank1", uneven, problem(rank1={"nan": True}))
    dist_case("error/row_marginal_sum", uneven, problem(row_marginal=lambda inp: inp.simplex(8) * 1.5))
    dist_case("after_errors/tol1e-9", uneven, problem(tol=1e-9))
    dist_case(
        "labeller/queue=6/ema/warm_start",
        uneven,
        problem(labeller={"queue_size": 6, "marginal": "ema", "warm_start": True}),
    )
    dist_case("labeller/tol1e-6/ema", empty, problem(labeller={"tol": 1e-6, "marginal": "ema"}))


def _slice_rows(value: Any, lo: int, hi: int) -> Any:
    return value[..., lo:hi, :] if value.dim() >= 2 else value[lo:hi]


def _rank_call(rank: int, splits: list[int], problem: dict[str, Any], group: Any) -> Any:
    """This rank's call of a distributed case: its rows of everything row-shaped."""
    lo, hi = sum(splits[:rank]), sum(splits[: rank + 1])
    problem = dict(problem)
    labeller = problem.pop("labeller", None)
    changes = problem.pop("rank1", {})
    changes = changes if rank == 1 else {}
    as_numpy = problem.pop("numpy", False)
    scores = problem.pop("scores")
    if labeller is not None:  # three steps of one labeller, each rank its rows of the batch
        out: dict[str, Any] = {"labels": []}
        online = otlabel.OnlineLabeller(scores.shape[-1], problem.pop("epsilon"), process_group=group, **labeller)
        for step in range(3):
            out["labels"].append(online((scores + step * torch.linspace(0, 1, scores.shape[-1]))[lo:hi].float()))
        out["state"] = online.state_dict()
        return out
    scores = scores[..., lo:hi, :]
    if changes.get("nan") and scores.numel():
        scores = _nan_at(scores, (0, 0))
    if "row_marginal" in problem:
        problem["row_marginal"] = _slice_rows(problem["row_marginal"], lo, hi)
    prior = problem.pop("prior", None)
    if prior is not None:
        prior = prior[..., lo:hi, :]
    if as_numpy:
        scores = scores.numpy()
    epsilon = changes.get("epsilon", problem.pop("epsilon"))
    if prior is not None:
        return otlabel.sinkhorn_with_prior(scores, prior, epsilon, process_group=group, **problem)
    return otlabel.sinkhorn(scores, epsilon, process_group=group, **problem)


def rank_main(rank: int, init_file: str, names_file: str, out_file: str) -> None:
    """One rank of the gloo world: run the named distributed cases in order, save their digests."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    build_corpus()
    names = json.loads(Path(names_file).read_text())
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    results = {}
    for name in names:
        splits, build = DISTRIBUTED[name]
        problem = build(Inputs(name))
        results[name] = digest(outcome(lambda: _rank_call(rank, splits, problem, dist.group.WORLD)))
    dist.destroy_process_group()
    Path(out_file + ".tmp").write_text(json.dumps(results))
    os.replace(out_file + ".tmp", out_file)


def run_distributed(names: list[str]) -> dict[str, dict[str, Any]]:
    """Spawn the world once, run every named distributed case, combine the ranks' digests."""
    if not names:
        return {}
    library = str(Path(otlabel.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [library, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="behaviour-corpus-") as folder:
        names_file = Path(folder) / "names.json"
        names_file.write_text(json.dumps(names))
        outs = [Path(folder) / f"rank{rank}.json" for rank in range(WORLD)]
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_rank",
            "RANK",
            str(Path(folder) / "rendezvous"),
            str(names_file),
        ]
        processes = [
            subprocess.Popen(
                [*command[:3], str(rank), *command[4:], str(outs[rank])],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for rank in range(WORLD)
        ]
        deadline = time.monotonic() + WORLD_TIMEOUT_S
        logs = []
        for process in processes:
            try:
                logs.append(process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                logs.append(process.communicate()[0])
        failed = [rank for rank, process in enumerate(processes) if process.returncode != 0 or not outs[rank].exists()]
        if failed:
            message = f"distributed ranks {failed} failed:\n" + "\n".join(logs)[-4000:]
            print(message, file=sys.stderr)
            return {name: {"hash": "failed", "summary": [message[-500:]]} for name in names}
        per_rank = [json.loads(out.read_text()) for out in outs]
    combined = {}
    for name in names:
        hashes = [ranks[name]["hash"] for ranks in per_rank]
        summary = [f"rank{rank}/{line}" for rank, ranks in enumerate(per_rank) for line in ranks[name]["summary"]]
        combined[name] = {"hash": hashlib.sha256("|".join(hashes).encode()).hexdigest(), "summary": summary}
    return combined


# ---------------------------------------------------------------------------------------------- driver


def build_corpus() -> list[str]:
    """Register every case (once); return all names in run order."""
    if not CASES:
        core_cases()
        option_cases()
        prior_cases()
        ragged_cases()
        wide_cases()
        numpy_cases()
        validate_cases()
        error_cases()
        labeller_cases()
        helper_cases()
        distributed_cases()
    return list(CASES) + list(DISTRIBUTED)


def select(names: list[str], only: list[str] | None) -> list[str]:
    return [name for name in names if not only or any(part in name for part in only)]


def run_all(names: list[str], verbose: bool) -> tuple[dict[str, dict[str, Any]], float]:
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in CASES:
            case_start = time.perf_counter()
            results[name] = run_case(name, CASES[name])
            if verbose:
                print(f"{time.perf_counter() - case_start:8.3f} s  {name}", file=sys.stderr)
    distributed = [name for name in names if name in DISTRIBUTED]
    if distributed:
        dist_start = time.perf_counter()
        results.update(run_distributed(distributed))
        if verbose:
            print(f"{time.perf_counter() - dist_start:8.3f} s  {len(distributed)} distributed cases", file=sys.stderr)
    return {name: results[name] for name in names}, time.perf_counter() - start


def library_revision() -> str:
    folder = Path(otlabel.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def meta() -> dict[str, Any]:
    return {
        "library": str(Path(otlabel.__file__).resolve().parent),
        "library_revision": library_revision(),
        "otlabel": getattr(otlabel, "__version__", "?"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def compare(recorded: dict[str, Any], results: dict[str, dict[str, Any]], only: list[str] | None) -> int:
    old_meta, now = recorded.get("meta", {}), meta()
    for key in ("torch", "numpy", "machine"):
        if old_meta.get(key) != now[key]:
            print(f"warning: recorded with {key} {old_meta.get(key)}, comparing with {now[key]}", file=sys.stderr)
    old = recorded["cases"]
    differ = [name for name in results if name in old and old[name]["hash"] != results[name]["hash"]]
    new = [name for name in results if name not in old]
    missing = [name for name in select(list(old), only) if name not in results]
    for name in differ:
        print(f"DIFFERS {name}")
        before, after = old[name].get("summary", []), results[name]["summary"]
        removed = [line for line in before if line not in after]
        added = [line for line in after if line not in before]
        if not removed and not added:
            print("    (same summary: the bytes differ below its precision)")
        for line in removed[:8]:
            print(f"    - {line}")
        for line in added[:8]:
            print(f"    + {line}")
    for name in new:
        print(f"NOT RECORDED {name}")
    for name in missing:
        print(f"RECORDED BUT NOT RUN {name}")
    identical = len(results) - len(differ) - len(new)
    if differ or new or missing:
        print(
            f"{len(differ)} of {len(results)} cases differ ({identical} identical; "
            f"{len(new)} not recorded, {len(missing)} recorded but not in this corpus)"
        )
        if differ:
            print("differing cases:\n  " + "\n  ".join(differ))
        return 1
    print(f"{identical} cases identical")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_rank"]:  # a rank of the distributed world (started by run_distributed)
        rank_main(int(argv[1]), argv[2], argv[3], argv[4])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", choices=("record", "compare"))
    parser.add_argument("file", nargs="?", help="the record (JSON)")
    parser.add_argument(
        "--only", action="append", metavar="SUBSTRING", help="run the cases whose name contains it (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the case names and exit")
    parser.add_argument("--verbose", action="store_true", help="print each case's time")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = select(build_corpus(), args.only)
    if args.list:
        print("\n".join(names))
        print(f"{len(names)} cases", file=sys.stderr)
        return 0
    if args.mode is None or args.file is None:
        parser.error("give record FILE or compare FILE (or --list)")
    print(f"otlabel from {Path(otlabel.__file__).resolve().parent}; {len(names)} cases", file=sys.stderr)
    if args.mode == "compare":
        recorded = json.loads(Path(args.file).read_text())
    results, seconds = run_all(names, args.verbose)
    print(f"ran {len(results)} cases in {seconds:.1f} s", file=sys.stderr)
    if args.mode == "record":
        payload = {"meta": {**meta(), "only": args.only, "seconds": round(seconds, 1)}, "cases": results}
        path = Path(args.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1) + "\n")
        unhashable = [name for name, result in results.items() if result["hash"] in ("unhashable", "failed")]
        if unhashable:
            print("cases that could not be recorded:\n  " + "\n  ".join(unhashable), file=sys.stderr)
            return 1
        print(f"recorded {len(results)} cases in {path}")
        return 0
    return compare(recorded, results, args.only)


if __name__ == "__main__":
    sys.exit(main())
