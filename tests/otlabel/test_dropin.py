"""otlabel as a drop-in for the Sinkhorn-Knopp loops of SwAV, DINOv2 and DINOv3 (docs: "Replacing your Sinkhorn-Knopp").

The loops are re-stated below as short functions, one per code base, with the same operations in
the same order as the originals (read at facebookresearch/swav 06b1b7c ``main_swav.py``,
facebookresearch/dinov2 b8931f7 ``dinov2/loss/dino_clstoken_loss.py`` and ``ibot_patch_loss.py``,
facebookresearch/dinov3 6876159 ``dinov3/loss/dino_clstoken_loss.py`` and ``ibot_patch_loss.py``).
Their ``torch.distributed.all_reduce`` calls are an ``all_reduce`` argument: a no-op for one
process, or a sum over ranks simulated by threads (:class:`ThreadWorld`) to run the very same loop
code on a split batch. iBOT's own code (bytedance/ibot) has no Sinkhorn-Knopp: it centres the
teacher with a moving average, so there is nothing to re-state for it.

``python -m tests.otlabel.test_dropin`` prints the tables of the docs page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from otlabel import sinkhorn

AllReduce = Callable[[torch.Tensor], None]


def _single_process(tensor: torch.Tensor) -> None:
    """``dist.all_reduce`` with one process: nothing to add."""


# ----------------------------------------------------------------------------------------------
# The loops, re-stated
# ----------------------------------------------------------------------------------------------


def _sinkhorn_knopp(q: torch.Tensor, n: int | torch.Tensor, n_iterations: int, all_reduce: AllReduce) -> torch.Tensor:
    """The iteration all three loops share, on the transposed K x B_local matrix ``q`` (modified in
    place); ``n``: the global row count, which is where they differ."""
    k = q.shape[0]
    total = torch.sum(q)
    all_reduce(total)
    q /= total
    for _ in range(n_iterations):
        per_prototype = torch.sum(q, dim=1, keepdim=True)  # prototype masses -> 1/K
        all_reduce(per_prototype)
        q /= per_prototype
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)  # sample masses -> 1/N
        q /= n
    q *= n  # every sample's label sums to 1
    return q.t()


def swav_distributed_sinkhorn(
    out: torch.Tensor,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    world_size: int = 1,
    all_reduce: AllReduce = _single_process,
) -> torch.Tensor:
    """SwAV's ``distributed_sinkhorn(out)`` (``args.epsilon``, ``args.sinkhorn_iterations``, ``args.world_size``).

    ``out``: (B_local, K) scores (cosines with the prototypes, queue rows first). Works on the
    transposed K x B matrix; the global row count is assumed to be ``B_local * world_size``.
    """
    q = torch.exp(out / epsilon).t()
    n = q.shape[1] * world_size
    return _sinkhorn_knopp(q, n, sinkhorn_iterations, all_reduce)


def dino_sinkhorn_knopp_teacher(
    teacher_output: torch.Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    world_size: int = 1,
    all_reduce: AllReduce = _single_process,
) -> torch.Tensor:
    """DINOv2's ``DINOLoss.sinkhorn_knopp_teacher`` (DINOv3's is the same, on a process subgroup).

    ``teacher_output``: (n_global_crops * B_local, K) teacher DINO-head logits, cast to float32
    first (float64 is kept here, for the float64 comparison; the original casts it down too); the
    temperature divides them; the global row count is ``rows * world_size``.
    """
    teacher_output = teacher_output.float() if teacher_output.dtype != torch.float64 else teacher_output
    q = torch.exp(teacher_output / teacher_temp).t()
    n = q.shape[1] * world_size
    return _sinkhorn_knopp(q, n, n_iterations, all_reduce)


def dino_ibot_patch_sinkhorn_knopp_teacher(
    teacher_output: torch.Tensor,
    teacher_temp: float,
    n_masked_patches_tensor: torch.Tensor,
    n_iterations: int = 3,
    all_reduce: AllReduce = _single_process,
) -> torch.Tensor:
    """DINOv2's ``iBOTPatchLoss.sinkhorn_knopp_teacher`` (DINOv3: ``SinkhornKnoppTeacher.forward``).

    ``teacher_output``: (n_masked_patches, K) teacher iBOT-head logits of this rank's masked
    patches (float32; float64 kept as above). Unlike the two loops above, the global row count is
    the all-reduced count of masked patches: ranks may hold different numbers of rows.
    """
    teacher_output = teacher_output.float() if teacher_output.dtype != torch.float64 else teacher_output
    q = torch.exp(teacher_output / teacher_temp).t()
    n = n_masked_patches_tensor.clone()
    all_reduce(n)
    return _sinkhorn_knopp(q, n, n_iterations, all_reduce)


# The otlabel calls (the page states them; the tests check them)


def otlabel_swav(out: torch.Tensor) -> torch.Tensor:
    return sinkhorn(out, epsilon=0.05, n_iter=3)


def otlabel_dino(teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    return sinkhorn(teacher_output.float(), epsilon=teacher_temp, n_iter=3)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def cosine_logits(n_rows: int, n_cols: int, dtype: torch.dtype, seed: int, dim: int = 64) -> torch.Tensor:
    """Cosines between unit embeddings and unit prototypes: what SwAV's prototypes and DINOv2's head
    (an L2-normalised bottleneck into a weight-normalised last layer with unit norms) output."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n_rows, dim, generator=gen, dtype=torch.float64), dim=1)
    y = torch.nn.functional.normalize(torch.randn(n_cols, dim, generator=gen, dtype=torch.float64), dim=1)
    return (x @ y.T).to(dtype)


#: (rows, columns, temperature): N < K and N > K, the batch shapes DINO and SwAV use, cut to CPU size.
SWAV_SHAPES = [
    (64, 3000, 0.05),  # SwAV: 64 images per GPU, 3000 prototypes, no queue
    (1024, 300, 0.05),  # a 64-row batch behind a 960-row queue (cut from 3840), 300 prototypes
    (7, 5, 0.05),
]
DINO_CLS_SHAPES = [
    (128, 65536, 0.04),  # 2 global crops x 64 images per GPU, 65536 prototypes, warm-up teacher_temp
    (64, 16384, 0.07),  # 2 x 32 images (ViT-L/14 config), final teacher_temp, prototypes cut from 131072
    (1000, 10, 0.07),
]
DINO_PATCH_SHAPES = [
    (700, 2048, 0.04),  # masked patches of a few images; prototypes cut from 65536
    (3, 8, 0.07),
]
DTYPES = [torch.float64, torch.float32]
#: max abs difference allowed between otlabel's labels and the loop's (labels lie in [0, 1])
ATOL = {torch.float64: 1e-6, torch.float32: 5e-6}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ----------------------------------------------------------------------------------------------
# Same labels, one process
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SWAV_SHAPES, ids=str)
def test_swav_loop(shape: tuple[int, int, float], dtype: torch.dtype) -> None:
    n, k, _ = shape
    out = cosine_logits(n, k, dtype, seed=n + k)
    expected = swav_distributed_sinkhorn(out.clone())
    labels = otlabel_swav(out)
    assert labels.dtype == expected.dtype == dtype and labels.shape == (n, k)
    assert _max_diff(labels, expected) <= ATOL[dtype]
    # with a queue, SwAV keeps the batch's rows only: the same slice of the same labels
    torch.testing.assert_close(otlabel_swav(out)[-5:], expected[-5:], rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", DINO_CLS_SHAPES, ids=str)
def test_dino_cls_loop(shape: tuple[int, int, float], dtype: torch.dtype) -> None:
    n, k, temp = shape
    logits = cosine_logits(n, k, dtype, seed=n + k)
    expected = dino_sinkhorn_knopp_teacher(logits, teacher_temp=temp)
    labels = otlabel_dino(logits, temp) if dtype == torch.float32 else sinkhorn(logits, epsilon=temp, n_iter=3)
    assert labels.dtype == expected.dtype == dtype
    assert _max_diff(labels, expected) <= ATOL[dtype]
    # DINO reshapes to (n_global_crops, B, K): a view, the same on both sides
    assert labels.view(2, -1, k).shape == expected.view(2, -1, k).shape


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", DINO_PATCH_SHAPES, ids=str)
def test_dino_ibot_patch_loop(shape: tuple[int, int, float], dtype: torch.dtype) -> None:
    n, k, temp = shape
    logits = cosine_logits(n, k, dtype, seed=n + k)
    expected = dino_ibot_patch_sinkhorn_knopp_teacher(logits, temp, torch.tensor(n))
    labels = sinkhorn(logits, epsilon=temp, n_iter=3)
    assert _max_diff(labels, expected) <= ATOL[dtype]


def test_bfloat16_logits_labelled_in_float32_as_dino_does() -> None:
    """DINO casts the teacher's logits to float32 and returns float32 labels; otlabel keeps the input's
    dtype, so the drop-in passes ``logits.float()``."""
    logits = cosine_logits(128, 4096, torch.float32, seed=1).bfloat16()
    expected = dino_sinkhorn_knopp_teacher(logits, teacher_temp=0.04)
    labels = otlabel_dino(logits, 0.04)
    assert labels.dtype == expected.dtype == torch.float32
    assert _max_diff(labels, expected) <= ATOL[torch.float32]
    assert sinkhorn(logits, epsilon=0.04).dtype == torch.bfloat16  # without .float(): bfloat16 labels


def test_more_iterations() -> None:
    """``sinkhorn_iterations`` / ``n_iterations`` is otlabel's ``n_iter``."""
    out = cosine_logits(200, 30, torch.float64, seed=2)
    for n_iter in (1, 5, 20):
        expected = swav_distributed_sinkhorn(out.clone(), sinkhorn_iterations=n_iter)
        assert _max_diff(sinkhorn(out, epsilon=0.05, n_iter=n_iter), expected) <= 1e-6


# ----------------------------------------------------------------------------------------------
# Wide logits: the loop overflows, otlabel does not
# ----------------------------------------------------------------------------------------------


def wide_logits(case: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, float]:
    """(logits, temperature) on which the loop leaves the float range, in one of three ways."""
    base = cosine_logits(64, 4096, torch.float64, seed=3)
    temp = 0.04
    if case == "one_entry_overflows":  # an unnormalised head: |logit| up to ~6, logit / T above 88.7
        logits = 10.0 * base
    elif case == "total_overflows":  # every logit / T <= 82 (exp finite), but 262144 of them sum past 3.4e38
        logits = 3.2 + 0.05 * base
    elif case == "prototype_underflows":  # one prototype no sample likes: exp(logit / T) = 0 in its whole row
        logits = base.clone()
        logits[:, 7] = -5.0
    elif case == "float64_overflow":  # logit / T up to ~750 > 709.8
        logits = 60.0 * base
    else:
        raise ValueError(case)
    return logits.to(dtype), temp


WIDE_CASES = [
    ("one_entry_overflows", torch.float32),
    ("total_overflows", torch.float32),
    ("prototype_underflows", torch.float32),
    ("float64_overflow", torch.float64),
]


@pytest.mark.parametrize(("case", "dtype"), WIDE_CASES, ids=[c for c, _ in WIDE_CASES])
def test_wide_logits_loop_not_finite_otlabel_finite(case: str, dtype: torch.dtype) -> None:
    logits, temp = wide_logits(case, dtype)
    loop = dino_sinkhorn_knopp_teacher(logits, teacher_temp=temp)
    assert not torch.isfinite(loop).all()
    labels = sinkhorn(logits, epsilon=temp, n_iter=3)
    assert torch.isfinite(labels).all()
    assert labels.min() >= 0 and labels.max() <= 1
    torch.testing.assert_close(labels.sum(1), torch.ones(len(labels), dtype=dtype), rtol=0, atol=1e-5)
    if case == "prototype_underflows":  # a dead prototype keeps its share of the mass, N/K (to the 3
        assert abs(labels[:, 7].sum().item() - 64 / 4096) < 1e-2 * 64 / 4096  # iterations' column accuracy)


@pytest.mark.parametrize("case", ["one_entry_overflows", "total_overflows", "prototype_underflows"])
def test_wide_logits_otlabel_float32_is_the_exact_answer(case: str) -> None:
    """Where float32 fails, the loop's own answer exists: the same loop on the logits minus their
    maximum (a constant the loop's first normalisation cancels), in float64. otlabel's float32
    labels are that answer to float32 rounding."""
    logits, temp = wide_logits(case, torch.float32)
    exact = dino_sinkhorn_knopp_teacher(logits.double() - logits.max().double(), teacher_temp=temp)
    assert torch.isfinite(exact).all()
    assert _max_diff(sinkhorn(logits, epsilon=temp, n_iter=3), exact) <= ATOL[torch.float32]


# ----------------------------------------------------------------------------------------------
# A split batch: the loops' all_reduce over simulated ranks
# ----------------------------------------------------------------------------------------------


class ThreadWorld:
    """``size`` ranks as threads, with an in-place sum ``all_reduce`` in rank order: runs a loop's own
    code on every rank at once, as ``torch.distributed`` would (no processes, no backend)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._barrier = threading.Barrier(size, timeout=60)
        self._slots: list[torch.Tensor | None] = [None] * size

    def all_reduce(self, rank: int) -> AllReduce:
        def reduce(tensor: torch.Tensor) -> None:
            self._slots[rank] = tensor.clone()
            self._barrier.wait()
            total = self._slots[0].clone()
            for other in self._slots[1:]:
                total += other
            self._barrier.wait()  # every rank has read the slots before any writes the next ones
            tensor.copy_(total)

        return reduce

    def run(self, body: Callable[[int, AllReduce], torch.Tensor]) -> list[torch.Tensor]:
        results: list[torch.Tensor | None] = [None] * self.size
        errors: list[BaseException] = []

        def target(rank: int) -> None:
            try:
                results[rank] = body(rank, self.all_reduce(rank))
            except BaseException as error:  # surfaced below; the barrier breaks for the others
                errors.append(error)
                self._barrier.abort()

        threads = [threading.Thread(target=target, args=(rank,)) for rank in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results  # type: ignore[return-value]


def _split(scores: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return [part.clone() for part in torch.split(scores, sizes)]


def test_equal_ranks_every_loop_labels_the_global_batch() -> None:
    """With the same number of rows on every rank, each loop's labels are the rank's slice of one
    labelling of the concatenated batch: what otlabel's ``process_group=`` returns (that equality
    is tested on real gloo ranks in tests/otlabel/test_distributed.py)."""
    sizes = [48, 48, 48]
    scores = cosine_logits(sum(sizes), 500, torch.float64, seed=4)
    one_process = list(torch.split(sinkhorn(scores, epsilon=0.05, n_iter=3), sizes))
    parts = _split(scores, sizes)
    world = ThreadWorld(len(sizes))
    loops = {
        "swav": world.run(lambda r, ar: swav_distributed_sinkhorn(parts[r].clone(), 0.05, 3, len(sizes), ar)),
        "dino_cls": world.run(lambda r, ar: dino_sinkhorn_knopp_teacher(parts[r], 0.05, 3, len(sizes), ar)),
        "dino_patch": world.run(
            lambda r, ar: dino_ibot_patch_sinkhorn_knopp_teacher(parts[r], 0.05, torch.tensor(sizes[r]), 3, ar)
        ),
    }
    for per_rank in loops.values():
        for mine, expected in zip(per_rank, one_process):
            assert _max_diff(mine, expected) <= 1e-6


UNEVEN = [30, 90, 9]


def test_uneven_ranks_patch_loop_labels_the_global_batch() -> None:
    """The iBOT-patch loop all-reduces the row count, so uneven ranks label the global batch: otlabel's
    ``process_group=`` call, which always counts the actual rows."""
    scores = cosine_logits(sum(UNEVEN), 400, torch.float64, seed=5)
    parts = _split(scores, UNEVEN)
    world = ThreadWorld(len(UNEVEN))
    per_rank = world.run(
        lambda r, ar: dino_ibot_patch_sinkhorn_knopp_teacher(parts[r], 0.05, torch.tensor(UNEVEN[r]), 3, ar)
    )
    one_process = torch.split(sinkhorn(scores, epsilon=0.05, n_iter=3), UNEVEN)
    for mine, expected in zip(per_rank, one_process):
        assert _max_diff(mine, expected) <= 1e-6


def uneven_swav_gap(dtype: torch.dtype = torch.float64) -> tuple[float, float]:
    """(max abs gap between SwAV's loop on uneven ranks and the global labelling, the same gap for
    otlabel's row-weighted call that reproduces the loop)."""
    world_size = len(UNEVEN)
    scores = cosine_logits(sum(UNEVEN), 400, dtype, seed=5)
    parts = _split(scores, UNEVEN)
    loop = torch.cat(
        ThreadWorld(world_size).run(lambda r, ar: swav_distributed_sinkhorn(parts[r].clone(), 0.05, 3, world_size, ar))
    )
    global_labels = sinkhorn(scores, epsilon=0.05, n_iter=3)
    # what the loop solves: every rank's rows weighted by 1 / (world_size * its row count), so each rank
    # carries 1 / world_size of the mass whatever its size; rows then rescaled to 1
    weights = torch.cat([torch.full((n,), 1.0 / (world_size * n), dtype=dtype) for n in UNEVEN])
    weighted = sinkhorn(scores, epsilon=0.05, n_iter=3, row_marginal=weights)
    weighted = weighted / weighted.sum(1, keepdim=True)
    return _max_diff(loop, global_labels), _max_diff(loop, weighted)


def test_uneven_ranks_swav_and_dino_cls_loops_weight_ranks_not_rows() -> None:
    """SwAV's and DINO's CLS loops count ``rows * world_size``: on uneven ranks they label another
    problem, in which each rank weighs 1 / world_size (its rows then sum to 1 again). otlabel gives
    that too, with a row marginal, but by default labels the global batch."""
    gap_to_global, gap_to_weighted = uneven_swav_gap()
    assert gap_to_global > 1e-2
    assert gap_to_weighted <= 1e-6


# ----------------------------------------------------------------------------------------------
# The docs page's tables
# ----------------------------------------------------------------------------------------------


def _report() -> None:  # pragma: no cover - prints the tables of docs/replacing_sinkhorn_knopp.md
    torch.set_num_threads(1)
    rows = []
    for name, shapes in (("SwAV", SWAV_SHAPES), ("DINO CLS", DINO_CLS_SHAPES), ("DINO iBOT patch", DINO_PATCH_SHAPES)):
        for n, k, temp in shapes:
            diffs = []
            for dtype in DTYPES:
                logits = cosine_logits(n, k, dtype, seed=n + k)
                if name == "SwAV":
                    loop = swav_distributed_sinkhorn(logits.clone())
                elif name == "DINO CLS":
                    loop = dino_sinkhorn_knopp_teacher(logits, temp)
                else:
                    loop = dino_ibot_patch_sinkhorn_knopp_teacher(logits, temp, torch.tensor(n))
                diffs.append(_max_diff(sinkhorn(logits, epsilon=temp, n_iter=3), loop))
            rows.append(f"| {name} | {n} x {k} | {temp} | {diffs[0]:.1e} | {diffs[1]:.1e} |")
    print("\n".join(rows))
    print()
    for case, dtype in WIDE_CASES:
        logits, temp = wide_logits(case, dtype)
        loop = dino_sinkhorn_knopp_teacher(logits, temp)
        labels = sinkhorn(logits, epsilon=temp, n_iter=3)
        ratio = (logits / temp).double()
        exact = dino_sinkhorn_knopp_teacher(logits.double() - logits.max().double(), temp)
        gap = _max_diff(labels, exact) if dtype == torch.float32 else float("nan")
        print(
            f"| {case} | {str(dtype)[6:]} | {ratio.min().item():.0f} .. {ratio.max().item():.0f} "
            f"| {torch.isnan(loop).float().mean().item():.0%} NaN, {torch.isinf(loop).sum().item()} inf "
            f"| {bool(torch.isfinite(labels).all())} | {(labels.double().sum(1) - 1).abs().max().item():.1e} "
            f"| {gap:.1e} |"
        )
    print()
    to_global, to_weighted = uneven_swav_gap()
    print(f"uneven SwAV gap to global: {to_global:.2e}, to row-weighted otlabel: {to_weighted:.2e}")


if __name__ == "__main__":
    _report()
