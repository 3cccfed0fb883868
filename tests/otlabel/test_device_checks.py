"""``validate=``: host checks by default, device-side checks that never synchronise on request.

On the CPU a read-back is free, so "no synchronisation" is checked by making every way a tensor
reaches the host (``bool``, ``item``, ``tolist``, ``float``, ``int``) raise during the call:
what would be a host synchronisation on a GPU is then an error here. ``tests/otlabel/test_cuda.py``
checks the same on CUDA with ``torch.cuda.set_sync_debug_mode("error")`` and CUDA graphs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from otlabel import (
    InvalidArgumentError,
    colabel,
    foreground_marginal,
    fractional_ranks,
    gaussian_rank_prior,
    sinkhorn,
    sinkhorn_features,
    sinkhorn_ragged,
    sinkhorn_with_prior,
)

from .helpers import cosine_scores, feasible_prior


@contextlib.contextmanager
def no_host_reads() -> Iterator[None]:
    """Every host read of a tensor's value raises inside this context."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor value was read on the host (a synchronisation on a GPU)")

    names = ("__bool__", "item", "tolist", "__float__", "__int__", "__index__", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}
    try:
        for name in names:
            setattr(torch.Tensor, name, refuse)
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def _problem(seed: int = 0, n_rows: int = 300, n_cols: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(cosine_scores(rng, n_rows, n_cols)).float()
    prior, marginal = (torch.from_numpy(x).float() for x in feasible_prior(rng, n_rows, n_cols, 0.3))
    return scores, prior, marginal


def test_the_reads_guard_catches_a_host_read():
    with no_host_reads(), pytest.raises(AssertionError, match="read on the host"):
        sinkhorn(torch.randn(8, 3), validate="host")


def test_device_mode_reads_nothing_back_and_equals_host_mode():
    scores, prior, marginal = _problem()
    fg, levels = torch.rand(300), torch.linspace(0, 1, 12)
    host = (
        sinkhorn(scores, 0.05),
        sinkhorn(scores, 0.05, col_marginal=marginal, n_iter=7),
        sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal),
        sinkhorn_with_prior(scores, gaussian_rank_prior(fg, levels, 0.2), 0.05),
        sinkhorn(torch.stack([scores, scores.flip(0)]), 0.05),
        sinkhorn_ragged(scores, [0, 100, 300], 0.05),
    )
    with no_host_reads():
        device = (
            sinkhorn(scores, 0.05, validate="device"),
            sinkhorn(scores, 0.05, col_marginal=marginal, n_iter=7, validate="device"),
            sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal, validate="device"),
            sinkhorn_with_prior(
                scores, gaussian_rank_prior(fg, levels, 0.2, validate="device"), 0.05, validate="device"
            ),
            sinkhorn(torch.stack([scores, scores.flip(0)]), 0.05, validate="device"),
            sinkhorn_ragged(scores, [0, 100, 300], 0.05, validate="device"),
        )
        colabel([scores, scores.flip(1)])
        fractional_ranks(fg, validate="device")
        foreground_marginal((fg > 0.5).float(), validate="device")
    for d, h in zip(device, host, strict=True):
        torch.testing.assert_close(d, h, rtol=1e-6, atol=1e-6)  # per-row/column shifts vs a global one


BAD_CALLS = {
    "nan score": lambda s, p, m, v: sinkhorn(torch.where(s > 0.5, math.nan, s), 0.05, validate=v),
    "inf score": lambda s, p, m, v: sinkhorn(torch.where(s > 0.5, math.inf, s), 0.05, validate=v),
    "scores / epsilon overflow": lambda s, p, m, v: sinkhorn(s * 1e37, 0.05, validate=v),
    "negative marginal": lambda s, p, m, v: sinkhorn(s, 0.05, col_marginal=m - m.mean(), validate=v),
    "marginal off 1": lambda s, p, m, v: sinkhorn(s, 0.05, col_marginal=2 * m, validate=v),
    "nan marginal": lambda s, p, m, v: sinkhorn(s, 0.05, col_marginal=m * math.nan, validate=v),
    "negative prior": lambda s, p, m, v: sinkhorn_with_prior(s, -p, 0.05, validate=v),
    "nan prior": lambda s, p, m, v: sinkhorn_with_prior(s, p * math.nan, 0.05, validate=v),
    "all-zero prior row": lambda s, p, m, v: sinkhorn_with_prior(s, p * (torch.arange(300) > 0)[:, None], validate=v),
    "all-zero prior column": lambda s, p, m, v: sinkhorn_with_prior(s, p * (torch.arange(12) > 0), validate=v),
    "unreachable column": lambda s, p, m, v: sinkhorn_with_prior(
        s, p, 0.05, row_marginal=torch.where(p[:, 3] > 0, 0.0, 1.0) / (p[:, 3] == 0).sum(), validate=v
    ),
    "ragged nan": lambda s, p, m, v: sinkhorn_ragged(s * math.nan, [0, 100, 300], 0.05, validate=v),
    "ragged row marginal off": lambda s, p, m, v: sinkhorn_ragged(
        s, [0, 100, 300], 0.05, row_marginal=torch.full((300,), 1 / 300), validate=v
    ),
    "ragged bad ptr": lambda s, p, m, v: sinkhorn_ragged(s, torch.tensor([0, 200, 100, 300]), 0.05, validate=v),
    "nan rank prior": lambda s, p, m, v: sinkhorn_with_prior(
        s, gaussian_rank_prior(torch.rand(300) * math.nan, torch.rand(12), 0.2, validate=v), validate=v
    ),
    "level above 1": lambda s, p, m, v: sinkhorn_with_prior(
        s, gaussian_rank_prior(torch.rand(300), torch.rand(12) + 1, 0.2, validate=v), validate=v
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_device_mode_turns_every_failed_check_into_nan_labels(case):
    scores, prior, marginal = _problem()
    with no_host_reads():
        labels = BAD_CALLS[case](scores, prior, marginal, "device")
    assert torch.isnan(labels).all()


@pytest.mark.parametrize("case", BAD_CALLS)
def test_host_mode_raises_for_the_same_calls(case):
    scores, prior, marginal = _problem()
    with pytest.raises(InvalidArgumentError):
        BAD_CALLS[case](scores, prior, marginal, "host")


def test_an_unhealthy_scaling_path_is_nan_in_device_mode_and_replayed_in_host_mode():
    """A column of mass 1e-35 takes sums out of float32's safe range within three iterations."""
    scores = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    marginal = torch.tensor([1e-35, 0.3, 0.3, 0.4 - 1e-35])
    host = sinkhorn(scores, 0.05, col_marginal=marginal, return_info=True)
    assert host.log_domain and torch.isfinite(host.labels).all()
    with no_host_reads():
        device = sinkhorn(scores, 0.05, col_marginal=marginal, validate="device")
    assert torch.isnan(device).all()


def test_tolerance_mode_reads_back_anyway_so_device_checks_raise_there():
    scores, _, _ = _problem()
    with pytest.raises(InvalidArgumentError, match="scores contains NaN"):
        sinkhorn(scores * math.nan, 0.05, tol=1e-6, validate="device")


def test_return_info_reads_back_anyway_so_device_checks_raise_there():
    # The docs promise it: return_info's errors are read back, and a failed check raises at that
    # read-back instead of returning NaN labels with NaN errors (it did in fixed mode).
    scores, prior, marginal = _problem()
    with pytest.raises(InvalidArgumentError, match="scores contains NaN"):
        sinkhorn(scores * math.nan, 0.05, validate="device", return_info=True)
    with pytest.raises(InvalidArgumentError, match="col_marginal"):
        sinkhorn(scores, 0.05, col_marginal=2 * marginal, validate="device", return_info=True)
    with pytest.raises(InvalidArgumentError, match="features contain NaN|NaN"):
        sinkhorn_features(scores[:, :6] * math.nan, scores[:12, :6], 0.05, validate="device", return_info=True)
    good = sinkhorn(scores, 0.05, validate="device", return_info=True)  # nothing failed: the result
    host = sinkhorn(scores, 0.05, validate="host", return_info=True)  # (its shifts differ: the rounding)
    torch.testing.assert_close(good.labels, host.labels, rtol=1e-5, atol=1e-6)
    assert math.isfinite(good.row_error) and math.isfinite(good.col_error)


def test_auto_is_host_mode_in_eager_code_and_bad_values_are_named():
    with pytest.raises(InvalidArgumentError, match="scores contains NaN"):
        sinkhorn(torch.tensor([[math.nan, 1.0]]), 0.05)
    with pytest.raises(InvalidArgumentError, match="validate must be one of"):
        sinkhorn(torch.randn(4, 2), validate="gpu")
    with pytest.raises(InvalidArgumentError, match="validate must be one of"):
        gaussian_rank_prior(torch.rand(4), torch.rand(2), 0.1, validate=True)
