"""colabel: fusing several streams before labelling (CASE suppl. F.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otlabel import ArgumentTypeError, InvalidArgumentError, colabel, sinkhorn


def test_logit_space_is_the_weighted_mean():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(colabel([a, b], space="logits"), (a + b) / 2)
    torch.testing.assert_close(colabel([a, b], weights=[3, 1], space="logits"), 0.75 * a + 0.25 * b)


def test_prob_space_averages_probabilities():
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    fused = colabel([a, b], weights=[0.3, 0.7])
    expected = torch.log(0.3 * a.softmax(-1) + 0.7 * b.softmax(-1))
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(fused.exp().sum(-1), torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("space", ["probs", "logits"])
def test_single_stream_gives_the_same_labels(space):
    scores = torch.randn(50, 4, dtype=torch.float64)
    torch.testing.assert_close(
        sinkhorn(colabel([scores], space=space), 0.5, tol=1e-12), sinkhorn(scores, 0.5, tol=1e-12)
    )


def test_zero_weight_stream_is_ignored_and_numpy_round_trip():
    a, b = np.random.default_rng(0).standard_normal((2, 4, 3))
    fused = colabel([a, b], weights=[1.0, 0.0])
    assert isinstance(fused, np.ndarray)
    np.testing.assert_allclose(fused, a - np.log(np.exp(a).sum(-1, keepdims=True)))


def test_fusion_keeps_gradients():
    a = torch.randn(4, 3, requires_grad=True)
    colabel([a, torch.randn(4, 3)]).sum().backward()
    assert a.grad is not None


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((torch.randn(3, 2),), {}, ArgumentTypeError, "predictions must be a list or tuple"),
        (([],), {}, InvalidArgumentError, "predictions is empty"),
        (([torch.randn(3, 2), torch.randn(3, 3)],), {}, InvalidArgumentError, r"predictions\[1\] has shape"),
        (([torch.randn(3, 2), torch.randn(3, 2).double()],), {}, InvalidArgumentError, r"predictions\[1\] is"),
        (([torch.randn(3, 2), np.zeros((3, 2), np.float32)],), {}, ArgumentTypeError, "mixes numpy"),
        (([torch.randn(3, 2)],), {"space": "logit"}, InvalidArgumentError, "space must be one of"),
        (([torch.randn(3, 2)] * 2,), {"weights": [1.0]}, InvalidArgumentError, "weights has 1 entries"),
        (([torch.randn(3, 2)] * 2,), {"weights": [1.0, -1.0]}, InvalidArgumentError, "weights must be finite"),
        (([torch.randn(3, 2)] * 2,), {"weights": [0, 0]}, InvalidArgumentError, "weights must not all be zero"),
        (([torch.randn(3)],), {}, InvalidArgumentError, r"predictions\[0\] must have shape"),
    ],
)
def test_colabel_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        colabel(*args, **kwargs)
