"""``differentiable=True``: gradients through the labels, exact for the fixed iterations and
implicit at convergence (otlabel/_gradients.py).

The references are written here from the definitions: autograd through a plain log-domain loop
of the same iterations (fixed mode), the same loop run to convergence (tolerance mode), POT's
torch backend unrolled to convergence, and ``torch.autograd.gradcheck``'s finite differences.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from otlabel import ConvergenceWarning, InvalidArgumentError, sinkhorn, sinkhorn_with_prior
from otlabel.errors import ArgumentTypeError

EPS = 0.5


def _plain_loop(
    scores, epsilon, n_iter, *, col=None, row=None, prior=None, log_prior=False, col_tau=None, row_tau=None
):  # noqa: ANN001, ANN202
    """The fixed-iteration map, written out in the log domain (autograd differentiates it)."""
    n_rows, n_cols = scores.shape[-2:]
    kernel = scores / epsilon
    if prior is not None:
        kernel = kernel + (prior if log_prior else prior.log())
    log_col = (n_rows * col / col.sum(-1, keepdim=True)).log() if col is not None else math.log(n_rows / n_cols)
    log_row = (n_rows * row / row.sum(-1, keepdim=True)).log() if row is not None else 0.0
    col_step = 1.0 if col_tau is None else col_tau / (col_tau + epsilon)
    row_step = 1.0 if row_tau is None else row_tau / (row_tau + epsilon)
    f = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    for _ in range(n_iter):
        g = col_step * (log_col - torch.logsumexp(kernel + f.unsqueeze(-1), -2))
        f = row_step * (log_row - torch.logsumexp(kernel + g.unsqueeze(-2), -1))
    return torch.exp(kernel + f.unsqueeze(-1) + g.unsqueeze(-2))


def _inputs(batch: tuple[int, ...] = (), n: int = 6, k: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    col = torch.rand(k, generator=gen, dtype=torch.float64) + 0.3
    row = torch.rand(n, generator=gen, dtype=torch.float64) + 0.3
    return {
        "scores": torch.randn(*batch, n, k, generator=gen, dtype=torch.float64),
        "prior": torch.rand(*batch, n, k, generator=gen, dtype=torch.float64) + 0.1,
        "col": col / col.sum(),  # proportions (the forward accepts sums within 1e-4 of 1)
        "row": row / row.sum(),
        "weights": torch.randn(*batch, n, k, generator=gen, dtype=torch.float64),
    }


# (name, keywords of sinkhorn, which inputs carry a gradient)
CASES = [
    ("equipartition", {}, ["scores"]),
    ("col_marginal", {"col_marginal": "col"}, ["scores", "col"]),
    ("row_marginal", {"row_marginal": "row", "col_marginal": "col"}, ["scores", "row", "col"]),
    ("prior", {"prior": "prior"}, ["scores", "prior"]),
    ("log_prior", {"prior": "prior", "log_prior": True}, ["scores", "prior"]),
    ("col_penalty", {"col_penalty": 0.3, "col_marginal": "col"}, ["scores", "col"]),
    ("both_penalties", {"col_penalty": 0.3, "row_penalty": 2.0, "row_marginal": "row"}, ["scores", "row"]),
]
MODES = {"fixed": {"n_iter": 7}, "tolerance": {"tol": 1e-13, "max_iter": 100_000}}


def _call(values: dict[str, torch.Tensor], keywords: dict, mode: dict, **extra):  # noqa: ANN202
    given = {key: values[v] if isinstance(v, str) else v for key, v in keywords.items()}
    if given.get("log_prior"):
        given["prior"] = given["prior"].log() if not given["prior"].requires_grad else given["prior"]
    return sinkhorn(values["scores"], EPS, differentiable=True, **given, **mode, **extra)


def _reference(values: dict[str, torch.Tensor], keywords: dict, n_iter: int) -> torch.Tensor:
    given = {key: values[v] if isinstance(v, str) else v for key, v in keywords.items()}
    return _plain_loop(
        values["scores"],
        EPS,
        n_iter,
        col=given.get("col_marginal"),
        row=given.get("row_marginal"),
        prior=given.get("prior"),
        log_prior=bool(given.get("log_prior")),
        col_tau=given.get("col_penalty"),
        row_tau=given.get("row_penalty"),
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "keywords", "wanted"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("batch", [(), (2,)], ids=["single", "batched"])
def test_gradients_equal_autograd_through_the_plain_loop(mode: str, name: str, keywords: dict, wanted: list, batch):  # noqa: ANN001
    """Fixed mode: the exact derivative of the n_iter map (1e-10); tolerance mode: the derivative
    of the converged plan, against the plain loop run to convergence (1e-6)."""
    values = _inputs(batch)
    if keywords.get("log_prior"):
        values["prior"] = values["prior"].log()
    for key in wanted:
        values[key].requires_grad_(True)
    labels = _call(values, keywords, MODES[mode])
    reference = _reference(values, keywords, MODES[mode]["n_iter"] if mode == "fixed" else 4000)
    ours = torch.autograd.grad((labels * values["weights"]).sum(), [values[k] for k in wanted])
    theirs = torch.autograd.grad((reference * values["weights"]).sum(), [values[k] for k in wanted])
    tolerance = 1e-10 if mode == "fixed" else 1e-6
    assert torch.allclose(labels, reference, rtol=0, atol=tolerance)
    for key, a, b in zip(wanted, ours, theirs):
        assert a.shape == values[key].shape
        assert b.abs().max() > 1e-3, key  # a gradient worth comparing
        assert torch.allclose(a, b, rtol=0, atol=tolerance), (key, (a - b).abs().max())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "keywords", "wanted"), CASES, ids=[c[0] for c in CASES])
def test_gradcheck(mode: str, name: str, keywords: dict, wanted: list) -> None:
    """Finite differences, float64, every input that carries a gradient."""
    values = _inputs(n=5, k=3, seed=1)
    if keywords.get("log_prior"):
        values["prior"] = values["prior"].log()
    settings = {"n_iter": 4} if mode == "fixed" else {"tol": 1e-14, "max_iter": 100_000}

    def labels(*tensors: torch.Tensor) -> torch.Tensor:
        return _call({**values, **dict(zip(wanted, tensors))}, keywords, settings)

    tensors = [values[k].clone().requires_grad_(True) for k in wanted]
    assert torch.autograd.gradcheck(labels, tensors, atol=1e-6, rtol=1e-5)


def test_tolerance_mode_equals_pot_s_torch_backend() -> None:
    """POT (torch backend, unrolled by autograd to convergence): ot.sinkhorn with M = -scores/eps,
    reg = 1, times N; and ot.unbalanced.sinkhorn_unbalanced with reg_m = tau/eps, c = ones."""
    values = _inputs(n=8, k=5, seed=2)
    scores, weights, col = values["scores"], values["weights"], values["col"]
    n_rows, n_cols = scores.shape
    rows = torch.full((n_rows,), 1.0 / n_rows, dtype=torch.float64)
    for tau in (None, 0.7):
        mine = scores.clone().requires_grad_(True)
        labels = sinkhorn(
            mine, EPS, col_marginal=col, col_penalty=tau, tol=1e-13, max_iter=100_000, differentiable=True
        )
        ours = torch.autograd.grad((labels * weights).sum(), mine)[0]
        theirs_in = scores.clone().requires_grad_(True)
        cost = -theirs_in / EPS
        if tau is None:
            plan = ot.sinkhorn(rows, col, cost, 1.0, numItermax=100_000, stopThr=1e-14) * n_rows
        else:  # rows hard (reg_m inf), columns KL-penalised with tau / eps in POT's units (reg = 1)
            plan = ot.unbalanced.sinkhorn_unbalanced(
                rows * n_rows, col * n_rows, cost, 1.0, (float("inf"), tau / EPS),
                c=torch.ones(n_rows, n_cols, dtype=torch.float64), numItermax=100_000, stopThr=1e-15,
            )  # fmt: skip
        theirs = torch.autograd.grad((plan * weights).sum(), theirs_in)[0]
        assert torch.allclose(labels, plan, atol=1e-8, rtol=0)
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=0), (tau, (ours - theirs).abs().max())


@pytest.mark.parametrize("mode", MODES)
def test_a_zero_of_the_prior_has_its_one_sided_derivative(mode: str) -> None:
    """Q is zero where Q-hat is, but dQ/dQ-hat is not: it is formed without dividing by Q-hat."""
    values = _inputs(n=5, k=3, seed=3)
    prior = values["prior"].clone()
    prior[1, 2] = 0.0
    settings = {"n_iter": 5} if mode == "fixed" else {"tol": 1e-14, "max_iter": 100_000}

    def loss(p: torch.Tensor) -> torch.Tensor:
        return (
            sinkhorn_with_prior(values["scores"], p, EPS, differentiable=True, **settings) * values["weights"]
        ).sum()

    given = prior.clone().requires_grad_(True)
    grad = torch.autograd.grad(loss(given), given)[0]
    assert torch.isfinite(grad).all() and grad[1, 2] != 0
    step = 1e-7
    bumped = prior.clone()
    bumped[1, 2] = step
    one_sided = (loss(bumped) - loss(prior)) / step
    assert abs(grad[1, 2] - one_sided) < 1e-5 * max(1.0, abs(one_sided))


def test_the_default_carries_no_gradient_and_is_unchanged() -> None:
    values = _inputs(seed=4)
    scores = values["scores"].clone().requires_grad_(True)
    for mode in MODES.values():
        plain = sinkhorn(scores, EPS, **mode)
        assert plain.grad_fn is None and not plain.requires_grad
        with_grad = sinkhorn(scores, EPS, differentiable=True, **mode)
        assert with_grad.requires_grad
        assert torch.equal(with_grad.detach(), plain)  # the same forward, bit for bit


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_half_and_single_precision_inputs_get_gradients_in_their_dtype(dtype: torch.dtype) -> None:
    values = _inputs((2,), n=16, k=5, seed=5)
    scale = 0.2
    reference_in = values["scores"].clone().requires_grad_(True)
    reference = torch.autograd.grad(
        (sinkhorn(reference_in, scale, n_iter=3, differentiable=True) * values["weights"]).sum(), reference_in
    )[0]
    scores = values["scores"].to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the solver computes in float32 all the same
        labels = sinkhorn(scores, scale, n_iter=3, differentiable=True)
    assert labels.dtype == dtype
    grad = torch.autograd.grad((labels.double() * values["weights"]).sum(), scores)[0]
    assert grad.dtype == dtype and torch.isfinite(grad).all()
    tolerance = {torch.float32: 1e-4, torch.float16: 0.05, torch.bfloat16: 0.5}[dtype]
    assert (grad.double() - reference).abs().max() < tolerance * reference.abs().max()


def test_wide_float32_scores_give_finite_gradients() -> None:
    """|scores / epsilon| up to 1e4: the plain loop's exp overflows; the labels and gradients stay finite."""
    gen = torch.Generator().manual_seed(6)
    scores = (torch.randn(64, 8, generator=gen) * 100).requires_grad_(True)
    for mode in ({"n_iter": 3}, {"tol": 1e-4, "max_iter": 200}):
        with warnings.catch_warnings():  # (the tolerance mode needs far more iterations here)
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = sinkhorn(scores, 0.01, differentiable=True, **mode)
        grad = torch.autograd.grad((labels * torch.randn(64, 8, generator=gen)).sum(), scores)[0]
        assert torch.isfinite(labels).all() and torch.isfinite(grad).all()


def test_compiled_with_fullgraph_gives_the_eager_gradient() -> None:
    values = _inputs((2,), n=12, k=4, seed=7)
    weights = values["weights"].float()

    def loss(scores: torch.Tensor) -> torch.Tensor:
        return (sinkhorn(scores, 0.2, n_iter=3, differentiable=True) * weights).sum()

    eager_in = values["scores"].float().requires_grad_(True)
    loss(eager_in).backward()
    compiled_in = values["scores"].float().requires_grad_(True)
    torch.compile(loss, fullgraph=True)(compiled_in).backward()
    assert torch.allclose(compiled_in.grad, eager_in.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("keywords", "words"),
    [
        ({"mass": 0.5, "n_iter": 3}, "mass"),
        ({"col_bounds": (0.1, 0.5), "tol": 1e-6}, "col_bounds"),
        ({"init": torch.zeros(4, dtype=torch.float64)}, "a warm start"),
        ({"differentiable": "yes"}, "differentiable must be a bool"),
    ],
)
def test_what_is_not_covered_is_refused_before_any_work(keywords: dict, words: str) -> None:
    scores = _inputs()["scores"].requires_grad_(True)
    keywords = {"differentiable": True, **keywords}
    with pytest.raises((InvalidArgumentError, ArgumentTypeError), match=words):
        sinkhorn(scores, EPS, **keywords)


def test_numpy_scores_are_refused() -> None:
    with pytest.raises(ArgumentTypeError, match="differentiable=True needs scores as a torch tensor"):
        sinkhorn(np.zeros((4, 3)), EPS, differentiable=True)


def test_a_warm_started_tolerance_call_has_the_cold_call_s_gradient() -> None:
    """The implicit derivative depends on the converged plan only, not on where the loop started."""
    values = _inputs(seed=8)
    first = sinkhorn(values["scores"], EPS, tol=1e-13, max_iter=100_000, return_info=True)
    grads = []
    for init in (None, first):
        scores = (values["scores"] + 0.01).requires_grad_(True)
        labels = sinkhorn(scores, EPS, tol=1e-13, max_iter=100_000, init=init, differentiable=True)
        grads.append(torch.autograd.grad((labels * values["weights"]).sum(), scores)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-9, rtol=0)


def test_fixed_sums_have_no_gradient_and_return_info_carries_the_labels() -> None:
    """What the constraints hold cannot move: the column sums of a converged plan and the row sums
    (exact after the last row step) have zero gradient; ``return_info`` labels carry it too."""
    values = _inputs(seed=9)
    scores = values["scores"].clone().requires_grad_(True)
    info = sinkhorn(scores, EPS, tol=1e-13, max_iter=100_000, differentiable=True, return_info=True)
    assert info.converged and info.labels.requires_grad
    for sums in (info.labels.sum(0), info.labels.sum(1)):
        weighted = (sums * torch.arange(1.0, len(sums) + 1, dtype=torch.float64)).sum()
        grad = torch.autograd.grad(weighted, scores, retain_graph=True)[0]
        assert grad.abs().max() < 1e-10
    rows = sinkhorn(scores, EPS, n_iter=3, differentiable=True).sum(1)
    grad = torch.autograd.grad((rows * values["row"]).sum(), scores)[0]
    assert grad.abs().max() < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_online_labeller_s_gradient_is_that_of_one_call_on_queue_and_batch(mode: str) -> None:
    """The queue is a constant; the batch's gradient equals sinkhorn's on the concatenated rows,
    and a warm-started tolerance labeller gives the cold gradient."""
    from otlabel import OnlineLabeller

    values = _inputs(n=10, k=4, seed=10)
    settings = {"n_iter": 4} if mode == "fixed" else {"tol": 1e-13, "max_iter": 100_000}
    warm = mode == "tolerance"
    labeller = OnlineLabeller(4, EPS, queue_size=6, differentiable=True, warm_start=warm, **settings)
    first = values["scores"][:6]
    labeller(first)  # fills the queue (and the potential)
    batch = values["scores"][6:].clone().requires_grad_(True)
    labels = labeller(batch)
    assert labels.requires_grad and labels.shape == (4, 4)
    ours = torch.autograd.grad((labels * values["weights"][6:]).sum(), batch)[0]
    reference_in = values["scores"][6:].clone().requires_grad_(True)
    reference = sinkhorn(torch.cat((first, reference_in)), EPS, differentiable=True, **settings)[6:]
    theirs = torch.autograd.grad((reference * values["weights"][6:]).sum(), reference_in)[0]
    assert torch.allclose(labels, reference, atol=1e-10, rtol=0)
    assert torch.allclose(ours, theirs, atol=1e-9, rtol=0)
    assert not labeller._queue.requires_grad and not labeller._potential.requires_grad


def test_online_labeller_refuses_a_differentiable_fixed_mode_warm_start() -> None:
    from otlabel import OnlineLabeller

    with pytest.raises(InvalidArgumentError, match="differentiable=True cannot be combined with a warm start"):
        OnlineLabeller(4, differentiable=True, warm_start=True, n_iter=3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "keywords", "wanted"), CASES, ids=[c[0] for c in CASES])
def test_ragged_gradients_are_each_group_s_own(mode: str, name: str, keywords: dict, wanted: list) -> None:
    """sinkhorn_ragged with differentiable=True: every group's gradient is that of sinkhorn on its
    rows alone (groups of 3, 6 and 2 rows; a row marginal renormalised within each group)."""
    from otlabel import sinkhorn_ragged

    ptr = torch.tensor([0, 3, 9, 11])
    values = _inputs(n=11, k=4, seed=11)
    if keywords.get("log_prior"):
        values["prior"] = values["prior"].log()
    row = values["row"].clone()
    for lo, hi in zip(ptr[:-1], ptr[1:]):
        row[lo:hi] = row[lo:hi] / row[lo:hi].sum()  # sums to 1 within each group
    values["row"] = row
    leaves = {key: values[key].clone().requires_grad_(True) for key in wanted}
    given = {k: leaves.get(v, values.get(v)) if isinstance(v, str) else v for k, v in keywords.items()}
    labels = sinkhorn_ragged(leaves["scores"], ptr, EPS, differentiable=True, **given, **MODES[mode])
    ours = torch.autograd.grad((labels * values["weights"]).sum(), [leaves[k] for k in wanted])
    expected = {key: torch.zeros_like(values[key]) for key in wanted}
    for lo, hi in zip(ptr[:-1].tolist(), ptr[1:].tolist()):
        rows_of = ("scores", "prior", "row", "weights")
        group = {key: value[lo:hi] if key in rows_of else value for key, value in values.items()}
        for key, grad in _group_grads(group, keywords, wanted, MODES[mode]).items():
            if key in ("scores", "prior", "row"):
                expected[key][lo:hi] = grad
            else:
                expected[key] += grad
    for key, got in zip(wanted, ours):
        torch.testing.assert_close(got, expected[key], rtol=0, atol=1e-9, msg=key)


def _group_grads(group: dict, keywords: dict, wanted: list, mode: dict) -> dict[str, torch.Tensor]:
    leaves = {key: group[key].clone().requires_grad_(True) for key in wanted}
    given = {k: leaves.get(v, group.get(v)) if isinstance(v, str) else v for k, v in keywords.items()}
    labels = sinkhorn(leaves["scores"], EPS, differentiable=True, **given, **mode)
    found = torch.autograd.grad((labels * group["weights"]).sum(), [leaves[k] for k in wanted])
    return dict(zip(wanted, found))


@pytest.mark.parametrize("batch", [(), (2,)], ids=["single", "batched"])
@pytest.mark.parametrize(
    ("keywords", "wanted"),
    [
        ({"mass": 0.6}, ["scores"]),
        ({"mass": 0.6, "col_marginal": "col", "row_marginal": "row"}, ["scores", "col", "row"]),
        ({"mass": 0.9, "prior": "prior"}, ["scores", "prior"]),
    ],
    ids=["mass", "mass_marginals", "mass_prior"],
)
def test_partial_transport_gradcheck(batch: tuple, keywords: dict, wanted: list) -> None:
    """``mass`` in tolerance mode: the active rows and columns hold their mass, the others are
    free; finite differences agree (the problems here have both kinds of rows and columns)."""
    values = _inputs(batch, n=6, k=4, seed=12)
    settings = {"tol": 1e-14, "max_iter": 200_000}
    plain = {k: values[v] if isinstance(v, str) else v for k, v in keywords.items()}
    labels = sinkhorn(values["scores"], EPS, **plain, **settings)
    rows = labels.sum(-1)
    assert (rows < 0.99).any() and (rows > 0.999999).any()  # free and active rows

    def call(*tensors: torch.Tensor) -> torch.Tensor:
        return _call({**values, **dict(zip(wanted, tensors))}, keywords, settings)

    tensors = [values[k].clone().requires_grad_(True) for k in wanted]
    assert torch.autograd.gradcheck(call, tensors, atol=1e-6, rtol=1e-5)


def test_partial_transport_ragged_gradients_are_each_group_s_own() -> None:
    from otlabel import sinkhorn_ragged

    values = _inputs(n=11, k=4, seed=13)
    ptr = torch.tensor([0, 4, 9, 11])
    settings = {"tol": 1e-14, "max_iter": 200_000, "differentiable": True, "mass": 0.7}
    scores = values["scores"].clone().requires_grad_(True)
    labels = sinkhorn_ragged(scores, ptr, EPS, **settings)
    ours = torch.autograd.grad((labels * values["weights"]).sum(), scores)[0]
    for lo, hi in zip(ptr[:-1].tolist(), ptr[1:].tolist()):
        group = values["scores"][lo:hi].clone().requires_grad_(True)
        alone = sinkhorn(group, EPS, **settings)
        theirs = torch.autograd.grad((alone * values["weights"][lo:hi]).sum(), group)[0]
        torch.testing.assert_close(ours[lo:hi], theirs, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "keywords",
    [{}, {"col_penalty": 0.3}, {"mass": 0.6}, {"prior": "prior", "row_marginal": "row"}],
    ids=["balanced", "col_penalty", "mass", "prior"],
)
@pytest.mark.parametrize("shape", [(9, 4), (4, 9)], ids=["tall", "wide"])
def test_conjugate_gradients_give_the_direct_solve_s_gradient(
    keywords: dict, shape: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond DIRECT_SOLVE_LIMIT the implicit solve is iterative: here it is forced at every size
    and must give the direct solve's gradient (the balanced problem's singular direction included)."""
    import otlabel._gradients as gradients

    n, k = shape
    values = _inputs(n=n, k=k, seed=14)
    settings = {"tol": 1e-14, "max_iter": 200_000}
    found = []
    for limit in (gradients.DIRECT_SOLVE_LIMIT, 0):
        monkeypatch.setattr(gradients, "DIRECT_SOLVE_LIMIT", limit)
        scores = values["scores"].clone().requires_grad_(True)
        labels = _call({**values, "scores": scores}, keywords, settings)
        found.append(torch.autograd.grad((labels * values["weights"]).sum(), scores)[0])
    assert found[0].abs().max() > 1e-3
    torch.testing.assert_close(found[1], found[0], rtol=0, atol=1e-8)


@pytest.mark.parametrize("mode", MODES)
def test_a_numpy_prior_or_marginal_beside_tensor_scores(mode: str) -> None:
    """Only the tensors get gradients; a numpy prior (or a list marginal) is a constant — it used
    to fail in the backward's bookkeeping (save_for_backward of an ndarray)."""
    from otlabel import sinkhorn_ragged

    values = _inputs(seed=15)
    prior, col = values["prior"].numpy(), values["col"].tolist()
    scores = values["scores"].clone().requires_grad_(True)
    labels = sinkhorn(scores, EPS, prior=prior, col_marginal=col, differentiable=True, **MODES[mode])
    ours = torch.autograd.grad((labels * values["weights"]).sum(), scores)[0]
    reference_in = values["scores"].clone().requires_grad_(True)
    reference = sinkhorn(
        reference_in, EPS, prior=values["prior"], col_marginal=values["col"], differentiable=True, **MODES[mode]
    )
    theirs = torch.autograd.grad((reference * values["weights"]).sum(), reference_in)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    ragged = sinkhorn_ragged(scores, torch.tensor([0, 6]), EPS, prior=prior, differentiable=True, **MODES[mode])
    assert torch.isfinite(torch.autograd.grad(ragged.sum(), scores)[0]).all()


def test_second_derivatives_are_refused_not_wrong() -> None:
    """The backward is written by hand and not itself differentiable: a double backward (a
    Hessian, a gradient penalty) was silently wrong; it is refused."""
    scores = _inputs(seed=16)["scores"].clone().requires_grad_(True)
    labels = sinkhorn(scores, EPS, n_iter=3, differentiable=True)
    (grad,) = torch.autograd.grad(labels.pow(2).sum(), scores, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.pow(2).sum().backward()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(5, 3), (3, 5)], ids=["tall", "wide"])
def test_a_zero_marginal_entry_keeps_the_other_gradients_finite(mode: str, shape: tuple) -> None:
    """A row or column with zero mass is empty; the implicit solve divided by its sum (NaN in
    every gradient). The scores' gradient equals the problem without that row or column."""
    n, k = shape
    values = _inputs(n=n, k=k, seed=17)
    row = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
    row[2] = 0.0
    col = torch.full((k,), 1.0 / (k - 1), dtype=torch.float64)
    col[1] = 0.0
    for keywords in ({"row_marginal": row}, {"col_marginal": col}, {"col_marginal": col, "mass": 0.7}):
        if "mass" in keywords and mode == "fixed":
            continue
        scores = values["scores"].clone().requires_grad_(True)
        labels = sinkhorn(scores, EPS, differentiable=True, **keywords, **MODES[mode])
        grad = torch.autograd.grad((labels * values["weights"]).sum(), scores)[0]
        assert torch.isfinite(grad).all(), keywords
        reference_in = values["scores"].clone().requires_grad_(True)
        reference = _plain_loop(
            reference_in, EPS, 4000 if mode == "tolerance" else MODES[mode]["n_iter"], **_loop_marginals(keywords)
        )
        if "mass" not in keywords:
            theirs = torch.autograd.grad((reference * values["weights"]).sum(), reference_in)[0]
            torch.testing.assert_close(grad, theirs, rtol=0, atol=1e-6)


def _loop_marginals(keywords: dict) -> dict:
    return {"row": keywords.get("row_marginal"), "col": keywords.get("col_marginal")}


def test_a_zero_entry_of_a_marginal_that_needs_a_gradient_is_refused() -> None:
    """d loss / d c_k at c_k = 0 is a one-sided limit the backward does not form: refused, where
    it was NaN (and a NaN that p / p.sum() spreads to every entry)."""
    values = _inputs(seed=18)
    col = torch.tensor([0.6, 0.0, 0.4, 0.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(InvalidArgumentError, match="col_marginal has zero entries"):
        sinkhorn(values["scores"], EPS, col_marginal=col, differentiable=True)
