"""Training CASE: from a configuration to a finished run folder (:mod:`case.runfolder`).

:func:`train` reads in six sections:

1. **Check everything** that can be checked before the first step, and before a run folder
   exists (:func:`prepare_run`): the device, both splits' files (streamed through: present,
   shapes, finite values), the annotations training and scoring need, the batch size
   against the videos, ``eval.ambiguous``, a training item of ``data.num_segments`` snippets
   and the seeded model and optimiser (sizes that do not fit in memory). A mistake ends
   here, with nothing to clean up.
2. **The run folder**: locked, and either new or resumed with the same configuration.
3. **The checkpoint to resume from** (the latest readable one), restored into the model and
   optimiser.
4. **Training**: one step is :func:`train_step`, the paper's Eq. 14; periodic checkpoints,
   the held-out model selection (:func:`case.evaluation.valid_one_epoch`), the log.
5. **The final checkpoint.**
6. **Evaluation** of the final (or selected) checkpoint on ``eval.split`` through the one
   evaluation path (:func:`case.evaluation.evaluate_checkpoint`, which ``evaluate.py
   --checkpoint`` and the ablation use too): ``predictions.json``, ``metrics.json``, plots.

Determinism: the model is initialised from ``train.seed`` and the data order and sampling
are pure functions of it (:mod:`case.batching`), so a run resumed from a checkpoint ends on
the CPU with the same weights and metrics as an uninterrupted one.

Distributed: under ``torchrun`` each rank takes an equal slice of every global batch, the
model is wrapped in DDP, and with ``labeling.scope="global"`` the OT problems are solved over
the global batch on every rank (:mod:`case.distributed`); rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from otlabel import OnlineLabeller, OTLabelError

from . import checkpoint as ckpt
from . import viz
from .atomic import atomic_write_json
from .batching import BatchOrder, VideoSubset, iterate_batches, split_heldout
from .config import Config, ConfigError, to_dict
from .data import DatasetError, VideoDataset, build_dataset
from .data.constants import SNIPPET_SECONDS
from .data.fingerprint import fingerprint, first_change
from .distributed import Distributed, mean_over_ranks, setup_runtime
from .errors import Interrupted, RunFolderError, RunWarning, fits_in_memory, raise_if_interrupted
from .evaluation import evaluate_checkpoint, has_annotations, valid_one_epoch
from .inference import TrainedModel
from .labeling import ccc_marginal_state
from .losses import StepOutput, case_objective, joint_objective
from .metrics import load_ambiguous, write_metrics
from .model import CASEModel
from .postprocess import foreground_for_testing
from .runfolder import RunFolder, RunPaths

__all__ = ["RunInputs", "TrainingState", "prepare_run", "forward", "compiled", "train_step", "train"]

#: Q^C[:, fg] before the first cluster classification: equal levels make the prior flat.
INITIAL_CLUSTER_FG = 0.5


@dataclass
class TrainingState:
    """What training carries from step to step, and what a checkpoint saves of it."""

    model: CASEModel
    optimizer: torch.optim.Optimizer
    cluster_fg: torch.Tensor  # Q^C[:, fg] of the last cluster classification: the next step's prior levels
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "step": None})  # held-out selection
    finished: bool = False  # resumed from final.pt: nothing left to train
    #: CCC's moving average of β (labeling.ccc.marginal="ema"; None otherwise): checkpointed
    ccc_marginal: OnlineLabeller | None = None

    def checkpoint(
        self, order: BatchOrder, cfg: Config, class_names: list[str], data: dict[str, Any]
    ) -> dict[str, Any]:
        """What a checkpoint holds (:data:`case.checkpoint.REQUIRED_KEYS`, the splits' fingerprint
        ``data`` as ``data_fingerprint``, and ``ccc_marginal`` with ``labeling.ccc.marginal="ema"``)."""
        extra = {}
        if self.ccc_marginal is not None:
            extra["ccc_marginal"] = {k: v.detach().cpu() for k, v in self.ccc_marginal.state_dict().items()}
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "cluster_fg": self.cluster_fg.detach().cpu(),
            "rng": ckpt.rng_state(),
            "data_order": order.state(self.step),
            "config": to_dict(cfg),
            "class_names": class_names,  # what each classifier output means
            "best": self.best,
            "data_fingerprint": data,  # the splits' videos in order and their files (--resume compares)
            **extra,
        }


@dataclass
class RunInputs:
    """Everything a run reads, checked (:func:`prepare_run`).

    Attributes
    ----------
    device : torch.device
    class_names : list of str
    train_set : dataset
        The videos training draws batches from (the training split less any held-out slice).
    order : BatchOrder
        This rank's data order over ``train_set``.
    evaluated : VideoDataset
        The ``eval.split`` data set, sampled as ``eval.sampling``.
    heldout : tuple or None
        (data set, video indices, ground truth) of the held-out slice (``train.select="heldout"``).
    state : TrainingState
        The seeded model and optimiser at step 0.
    data : dict
        ``{split: fingerprint}`` of the splits the run reads (:mod:`case.data.fingerprint`):
        saved in every checkpoint, compared by ``--resume``.
    """

    device: torch.device
    class_names: list[str]
    train_set: Any
    order: BatchOrder
    evaluated: VideoDataset
    heldout: tuple[VideoDataset, list[int], dict[str, Any]] | None
    state: TrainingState
    data: dict[str, Any]


def prepare_run(cfg: Config, env: Distributed) -> RunInputs:
    """Section 1: check the machine, the data and every setting that depends on them.

    Streams once through every feature file of both splits (a few seconds at THUMOS14
    scale) so that a NaN, an infinity or an absurd magnitude is named with its file now
    rather than found by otlabel in the middle of training.

    Raises
    ------
    ConfigError
        A setting the machine or the data cannot honour (``train.device``,
        ``model.num_classes``, ``train.batch_size``, ``eval.ambiguous``, sizes that do not fit
        in memory).
    DatasetError
        A data file that is missing or malformed; no annotated video to train on or to score.
    DetectionFileError
        A malformed ``eval.ambiguous`` file.
    """
    device = setup_runtime(cfg.train.device, cfg.train.threads, env)
    _check_speed_settings(cfg, device)
    seed = cfg.train.seed
    full_train = build_dataset(cfg.data, "train", "random", seed=seed)
    if cfg.eval.split == "train":
        evaluated = full_train.with_sampling(cfg.eval.sampling)
    else:
        evaluated = build_dataset(cfg.data, cfg.eval.split, cfg.eval.sampling, seed=seed)
        evaluated.verify()
    full_train.verify()
    if not has_annotations(full_train.ground_truth()):
        raise DatasetError(
            f"{cfg.data.root}: none of the {len(full_train)} training videos has an annotation: nothing to learn from"
        )
    if not has_annotations(evaluated.ground_truth()):
        raise DatasetError(
            f"{cfg.data.root}: none of the {len(evaluated)} videos of eval.split {cfg.eval.split!r} has an "
            "annotation to score against (evaluate.py --checkpoint predicts on videos without any)"
        )
    class_names = list(full_train.class_names)
    if cfg.model.num_classes is not None and cfg.model.num_classes != len(class_names):
        raise ConfigError(
            f"model.num_classes is {cfg.model.num_classes} but the data set has {len(class_names)} classes; "
            "fix the config or leave model.num_classes unset"
        )
    if cfg.eval.ambiguous is not None:
        try:
            load_ambiguous(cfg.eval.ambiguous)
        except FileNotFoundError:
            raise ConfigError(f"eval.ambiguous: file {cfg.eval.ambiguous} not found") from None
    train_set: Any = full_train
    heldout = None
    if cfg.train.select == "heldout":
        train_idx, held_idx = split_heldout(len(full_train), cfg.train.heldout_fraction, seed)
        if len(train_idx) < cfg.train.batch_size:  # BatchOrder's message would blame the batch size alone
            raise ConfigError(
                f"train.heldout_fraction={cfg.train.heldout_fraction:g} holds out {len(held_idx)} of the "
                f"{len(full_train)} training videos, leaving {len(train_idx)} to train on, fewer than "
                f"train.batch_size ({cfg.train.batch_size}); lower train.heldout_fraction or train.batch_size"
            )
        train_set = VideoSubset(full_train, train_idx)
        held_set = full_train.with_sampling(cfg.eval.sampling)
        held_videos = {held_set.videos[i] for i in held_idx}
        database = held_set.ground_truth()["database"]
        held_gt = {"database": {v: e for v, e in database.items() if v in held_videos}}
        heldout = (held_set, held_idx, held_gt)
    try:
        order = BatchOrder(len(train_set), cfg.train.batch_size, seed, env.rank, env.world)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    with fits_in_memory(f"a training video of data.num_segments={cfg.data.num_segments} snippets"):
        train_set[0]
    sizes = ", ".join(f"model.{k}={getattr(cfg.model, k)}" for k in ("hidden_dim", "num_clusters"))
    with fits_in_memory(f"the model ({sizes}, {len(class_names)} classes, data.feature_dim={cfg.data.feature_dim})"):
        state = _new_state(cfg, len(class_names), device)
    data = {
        split: fingerprint(dataset, cfg.data.root)
        for split, dataset in (("train", full_train), (cfg.eval.split, evaluated))
    }
    return RunInputs(device, class_names, train_set, order, evaluated, heldout, state, data)


def _check_speed_settings(cfg: Config, device: torch.device) -> None:
    """``train.precision`` and ``train.compile`` against the machine (one line naming the key)."""
    if cfg.train.precision == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"train.precision is 'bfloat16' but {torch.cuda.get_device_name(device)} does not support it; "
            "use train.precision=float32"
        )
    if cfg.train.compile and device.type == "cpu":
        compiler = os.environ.get("CXX") or "g++"  # what inductor calls on Linux
        if shutil.which(compiler) is None:
            raise ConfigError(
                f"train.compile is true but the C++ compiler {compiler!r} that torch.compile needs on the CPU "
                "is not found; install one (or set CXX), or use train.compile=false"
            )


def _new_state(cfg: Config, num_classes: int, device: torch.device) -> TrainingState:
    """The model initialised from ``train.seed``, its Adam optimiser, the flat prior levels: step 0."""
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = CASEModel(cfg.data.feature_dim, num_classes, cfg.model).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        weight_decay=cfg.optim.weight_decay,
        fused=cfg.optim.fused or None,  # None: PyTorch's default (the for-loop update on the CPU)
    )
    cluster_fg = torch.full((cfg.model.num_clusters,), INITIAL_CLUSTER_FG, device=device)
    return TrainingState(model, optimizer, cluster_fg, ccc_marginal=ccc_marginal_state(cfg.labeling.ccc))


def train_step(
    net: torch.nn.Module,
    batch: dict[str, Any],
    cluster_fg: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    device: torch.device,
    marginal_state: OnlineLabeller | None = None,
) -> StepOutput:
    """One optimiser step on the paper's Eq. 14, L = L_cls + L_att + λ_S·L_S + λ_C·L_C.

    The forward pass runs in ``train.precision`` (:func:`forward`); the losses, the labelling
    and the update are float32.

    :func:`case.losses.case_objective` computes the four terms, solving the step's two
    labelling problems (SCC's Q^S with the rank prior of Q^C[:, fg] = ``cluster_fg``, and
    CCC's Q^C) on the way; the returned ``cluster_fg`` feeds the next step's prior.
    ``marginal_state`` is CCC's moving average of β (``labeling.ccc.marginal="ema"``).

    Raises
    ------
    FloatingPointError
        The model's outputs or the loss are not finite (training diverged: the learning rate
        is too high); nothing is updated.
    """
    net.train()
    outputs = forward(net, batch["features"].to(device, non_blocking=True), cfg.train.precision)
    try:
        result = case_objective(
            outputs, batch["label"].to(device), cluster_fg, cfg.loss, cfg.labeling, marginal_state=marginal_state
        )
    except OTLabelError:
        # otlabel refuses a NaN or infinite score when it reads its inputs back, which it does
        # anyway: the outputs are looked at only then, so a step that is fine reads nothing more.
        if all(bool(torch.isfinite(tensor).all()) for stream in outputs for tensor in stream):
            raise
        raise _diverged("the model's outputs are NaN or infinite") from None
    if not torch.isfinite(result.loss):
        raise _diverged(str(result.parts))
    optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    optimizer.step()
    return result


def forward(net: torch.nn.Module, features: torch.Tensor, precision: str) -> tuple[Any, ...]:
    """The model's outputs for ``features`` in ``precision`` (``train.precision``).

    ``"bfloat16"`` runs the forward pass (and so its backward) under
    ``torch.autocast(device_type, dtype=torch.bfloat16)``, on the CPU as on CUDA: the encoders
    compute in bfloat16 and the heads in float32 (:class:`case.model.StreamHead`), so the
    outputs — the losses' inputs and the scores otlabel labels — are float32 either way.
    """
    with torch.autocast(features.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        return net(features)


def input_dtype(precision: str) -> torch.dtype:
    """The dtype training batches are loaded in for ``train.precision``: the forward pass's own
    (bfloat16 features are exactly the float32 ones as autocast casts them, in half the memory)."""
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def compiled(net: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """``net`` through ``torch.compile`` when ``train.compile`` says so (else ``net`` itself).

    The compiled module shares the parameters of ``net``: checkpoints keep saving the plain
    model's ``state_dict``."""
    return torch.compile(net) if cfg.train.compile else net


def _diverged(what: str) -> FloatingPointError:
    """The error of a step whose numbers left the float range (``train.py`` exits with status 1)."""
    return FloatingPointError(f"the loss is not finite ({what}); lower optim.lr")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _warn(message: str) -> None:
    warnings.warn(RunWarning(message), stacklevel=2)


def train(cfg: Config, out: str | Path, resume: bool = False, numbered: bool = False) -> dict[str, Any] | None:
    """Train CASE as ``cfg`` says, then evaluate on ``eval.split``; everything lands in ``out``.

    Parameters
    ----------
    cfg : Config
    out : path
        The run folder (created; an existing non-empty one needs ``resume=True``).
    resume : bool
        Continue from the latest readable checkpoint in ``out`` (a finished run is only re-evaluated).
    numbered : bool
        ``out`` is a default name (a new run, one process): if it holds a run or another
        process takes it first, the run goes to the first free one of ``out-2``, ``out-3``, ...
        (:meth:`case.runfolder.RunFolder.open_new`).

    Returns
    -------
    dict or None
        On the main process, ``{"metrics": {...}, "steps": int, "seconds": float, "folder":
        Path}`` (and ``"selected_step"`` with held-out selection); None elsewhere.

    Raises
    ------
    ConfigError, DatasetError, DetectionFileError, RunFolderError
        Before the first step (and before any run folder is made, except for the last).
    Interrupted
        Ctrl-C: its message says where the run stopped and how to continue it (the run
        folder keeps its checkpoints, and its lock is released), or that the synthetic set's
        generation starts again on the next run.
    """
    env = Distributed.setup(cfg.train.device)
    try:
        result = _train(cfg, RunPaths(Path(out)), resume, numbered, env)
        # the other ranks wait for rank 0's evaluation: a rank that tears the group down while
        # its peer still holds it can make gloo abort the peer ('terminate called without an
        # active exception'); a failing rank is ended by torchrun, which stops the others
        env.barrier()
        return result
    finally:
        env.teardown()


def _train(cfg: Config, paths: RunPaths, resume: bool, numbered: bool, env: Distributed) -> dict[str, Any] | None:
    started = time.perf_counter()

    # 1. Check everything that can be checked before the first step (no run folder yet).
    inputs = prepare_run(cfg, env)

    # 2. The run folder: locked, and new or resumed with the same configuration (rank 0 writes it).
    if not env.main:
        opened = contextlib.nullcontext()
    elif numbered:
        opened = RunFolder.open_new(paths.root, cfg)
        paths = opened.paths
    else:
        opened = RunFolder.open(paths, cfg, resume)
    state = inputs.state
    with opened as folder:
        try:
            # 3. The checkpoint to resume from, restored into the model and optimiser.
            if resume:
                _restore(state, cfg, inputs, paths, env)
            if env.main:
                folder.write_config(cfg)
                folder.truncate_log(state.step)
            env.barrier()

            # 4-5. Training (one step = Eq. 14, train_step) and the final checkpoint.
            _train_steps(cfg, inputs, state, paths, env, started)
            env.barrier()
            if not env.main:
                return None

            # 6. Evaluation of the final (or held-out selected) checkpoint: the one evaluation path.
            raise_if_interrupted()
            chosen = "best.pt" if inputs.heldout is not None and state.best["step"] is not None else "final.pt"
            metrics = _evaluate(paths.checkpoints / chosen, cfg, inputs, paths)
        except KeyboardInterrupt:  # every file is whole (atomic writes), the log is cut back on resume
            raise Interrupted(f"interrupted at step {state.step}; continue with --resume --out {paths.root}") from None
    summary = {"metrics": metrics, "steps": state.step, "seconds": round(time.perf_counter() - started, 2)}
    summary["folder"] = paths.root
    if inputs.heldout is not None:
        summary["selected_step"] = state.best["step"]
    return summary


def _restore(state: TrainingState, cfg: Config, inputs: RunInputs, paths: RunPaths, env: Distributed) -> None:
    """Section 3: restore ``state`` from the latest readable checkpoint of the run folder (if any).

    With held-out selection, a checkpoint whose selection names a step needs ``best.pt``
    (the end of the run evaluates it); if that file does not read back, training resumes
    from a checkpoint before that step, whose replay (deterministic) writes it again.
    """
    skipped = _warn if env.main else None
    found = ckpt.load_latest(paths.checkpoints, inputs.device, skipped=skipped)
    before = None if found is None or inputs.heldout is None else found[1]["best"]["step"]
    if before is not None:
        try:
            ckpt.load_whole(paths.checkpoints / "best.pt", "cpu")
            before = None
        except (FileNotFoundError, RuntimeError) as err:
            if env.main:
                _warn(f"{err}; resuming before step {before}, which selects and writes it again")
            found = ckpt.load_latest(paths.checkpoints, inputs.device, skipped=skipped, before=before)
    if found is None:
        if env.main and ckpt.resume_candidates(paths.checkpoints, before):
            _warn(f"no checkpoint in {paths.checkpoints} reads back whole: training restarts from step 0")
        elif env.main and before is not None:
            _warn(f"no checkpoint before step {before} is kept: training restarts from step 0")
        return
    path, saved = found
    try:  # a checkpoint made or edited by hand: one line naming it, not a traceback
        ckpt.saved_config(path, saved)
        class_names = ckpt.saved_class_names(path, saved)
    except RuntimeError as err:
        raise RunFolderError(str(err)) from None
    RunFolder.check_same_config(saved["config"], cfg, str(path))
    if class_names != inputs.class_names:  # they come from the data, not the configuration
        raise RunFolderError(
            f"{path} was trained on the classes {class_names}, but the data set has "
            f"{inputs.class_names}; resume on the data the run started with, or start a new run with --out"
        )
    _check_same_data(path, saved, cfg, inputs, env)
    if saved["data_order"] != inputs.order.state(saved["step"]):
        raise RunFolderError(
            f"{path}: its data order {saved['data_order']} does not match this run's "
            f"{inputs.order.state(saved['step'])}"
        )
    try:
        state.cluster_fg = ckpt.load_weights(path, saved, state.model).to(inputs.device)
    except RuntimeError as err:
        raise RunFolderError(str(err)) from None
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RunFolderError(f"checkpoint {path}: its optimizer state does not fit the model ({first})") from None
    ckpt.set_rng_state(saved["rng"])
    if state.ccc_marginal is not None:  # labeling.ccc.marginal="ema" (the same configuration: checked above)
        if "ccc_marginal" not in saved:
            raise RunFolderError(f"{path} holds no ccc_marginal state for labeling.ccc.marginal='ema'")
        try:
            state.ccc_marginal.load_state_dict(saved["ccc_marginal"])
        except (TypeError, ValueError) as err:
            raise RunFolderError(f"{path}: its ccc_marginal state does not load: {err}") from None
    state.step, state.best, state.finished = int(saved["step"]), saved["best"], path.name == "final.pt"


def _check_same_data(path: Path, saved: dict[str, Any], cfg: Config, inputs: RunInputs, env: Distributed) -> None:
    """Refuse to resume on data other than the run's: the splits' videos in order and their files
    (:mod:`case.data.fingerprint`) against what checkpoint ``path`` saved.

    A checkpoint written before fingerprints were saved cannot be compared: a warning says so.
    """
    fingerprints = saved.get("data_fingerprint")
    if not isinstance(fingerprints, dict):
        if env.main:
            _warn(
                f"{path} holds no data fingerprint (an older checkpoint): the data cannot be checked against the run's"
            )
        return
    for split, now in inputs.data.items():
        change = first_change(fingerprints.get(split, {}), now, cfg.data.root)
        if change is not None:
            raise RunFolderError(
                f"--resume: {change}; {path} was trained on the data as it was: restore it, or start a new run "
                "with --out"
            )


def _train_steps(
    cfg: Config, inputs: RunInputs, state: TrainingState, paths: RunPaths, env: Distributed, started: float
) -> None:
    """Sections 4 and 5: the steps left, with the log, periodic checkpoints and held-out selection; final.pt."""
    device, train = inputs.device, cfg.train
    net: torch.nn.Module = state.model
    if env.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            state.model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not cfg.labeling.scc.enabled,
        )
    net = compiled(net, cfg)

    def save(name: str) -> None:
        saved = state.checkpoint(inputs.order, cfg, inputs.class_names, inputs.data)
        ckpt.save_checkpoint(paths.checkpoints / name, saved)

    bar = tqdm(
        total=train.steps,
        initial=state.step,
        disable=not (env.main and train.progress),
        desc="train",
        dynamic_ncols=True,
    )
    log = paths.log.open("a", encoding="utf-8") if env.main else None
    try:
        batches = iterate_batches(
            inputs.train_set, inputs.order, state.step, train.steps, train.num_workers, input_dtype(train.precision)
        )
        for batch in batches:
            raise_if_interrupted()
            epoch, _ = inputs.order.position(state.step)
            try:
                result = train_step(
                    net, batch, state.cluster_fg, state.optimizer, cfg, device, marginal_state=state.ccc_marginal
                )
            except FloatingPointError as err:
                raise FloatingPointError(f"step {state.step + 1}: {err}") from None
            if result.cluster_fg is not None:
                state.cluster_fg = result.cluster_fg
            state.step += 1
            step = state.step
            parts = mean_over_ranks(result.parts, device)
            if env.main:
                bar.update(1)
                total = float(joint_objective(parts, cfg.loss))
                bar.set_postfix(loss=f"{total:.4f}", refresh=False)
                if step % train.log_every == 0 or step == train.steps:
                    record = {"step": step, "epoch": epoch, "loss": total, **parts}
                    record.update({k: _jsonable(v) for k, v in result.diagnostics.items()})
                    record["seconds"] = round(time.perf_counter() - started, 3)
                    _append(log, json.dumps(record) + "\n", paths.log)
            if inputs.heldout is not None and (step % train.eval_every == 0 or step == train.steps) and env.main:
                held_set, held_idx, held_gt = inputs.heldout
                trained = TrainedModel(state.model, state.cluster_fg, cfg, inputs.class_names, step)
                scored = valid_one_epoch(
                    trained, held_set, cfg, device, ground_truth=held_gt, subset="train", indices=held_idx
                )
                score = scored.metrics[cfg.postprocess.foreground_mode].average
                if score > state.best["score"]:
                    state.best = {"score": score, "step": step}
                    save("best.pt")
            if step < train.steps and train.checkpoint_every and step % train.checkpoint_every == 0:
                if env.main:
                    save(f"step_{step:06d}.pt")
                    ckpt.prune_checkpoints(paths.checkpoints, train.keep_checkpoints)
                env.barrier()
        if env.main and not state.finished:  # a resume from final.pt trained nothing and keeps it
            save("final.pt")
    finally:
        bar.close()
        if log is not None:
            log.close()


def _append(log: Any, line: str, path: Path) -> None:
    """Append ``line`` to the open log; a failed write names the file (a file object's error does not)."""
    try:
        log.write(line)
        log.flush()
    except OSError as err:
        err.filename = err.filename or str(path)
        raise


def _evaluate(checkpoint: Path, cfg: Config, inputs: RunInputs, paths: RunPaths) -> dict[str, Any]:
    """Section 6: ``predictions.json``, ``metrics.json`` and the plots of ``checkpoint`` on ``eval.split``.

    The predictions are the configured foreground mode's; ``metrics.json`` (returned) holds its
    figures and those of P^A, P^T and P^M, scored from the same forward pass."""
    ground_truth = inputs.evaluated.ground_truth()
    drawn: list[dict[str, Any]] = []
    evaluation = evaluate_checkpoint(
        checkpoint,
        device=inputs.device,
        dataset=inputs.evaluated,
        observe=_first_annotated(drawn, ground_truth, cfg.eval.plot_videos),
    )
    record = evaluation.record()
    atomic_write_json(paths.predictions, evaluation.predictions[evaluation.mode])
    write_metrics(paths.metrics, record)
    _plot(drawn, ground_truth, cfg, paths)
    return record


def _first_annotated(
    drawn: list[dict[str, Any]], ground_truth: dict[str, Any], limit: int
) -> Callable[[dict[str, Any]], None]:
    """An observer that keeps the model outputs of the first ``limit`` videos with annotations."""

    def observe(output: dict[str, Any]) -> None:
        if len(drawn) < limit and ground_truth["database"].get(output["video"], {}).get("annotations"):
            drawn.append(output)

    return observe


def _plot(outputs: list[dict[str, Any]], gt: dict[str, Any], cfg: Config, paths: RunPaths) -> None:
    """Fig. 5-style foreground plots of a few test videos and Fig. 4-style entropy curves.

    The plots come after ``predictions.json`` and ``metrics.json``: one that cannot be drawn
    (no log record to draw after a resume whose log was deleted, a file system that refuses
    the file) is a warning, not a failed run that every ``--resume`` would fail again.
    """
    for p in outputs:
        cluster = None
        if cfg.labeling.ccc.enabled:  # without CCC, Q^C never leaves its flat start: no P^T to draw
            cluster = foreground_for_testing(p["attention"], p["cluster_probs"], p["cluster_fg"], mode="cluster")
        path = paths.root / viz.foreground_plot_name(p["video"])
        with _or_warn(path):
            viz.plot_foreground(
                path,
                p["attention"],
                cluster,
                ground_truth=gt["database"][p["video"]]["annotations"],
                index=p["index"],
                snippet_seconds=SNIPPET_SECONDS,
                title=p["video"],
            )
    if cfg.labeling.scc.enabled:
        with _or_warn(paths.root / "entropy.png"):
            viz.plot_entropy_curves(paths.root / "entropy.png", paths.log)


@contextlib.contextmanager
def _or_warn(plot: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as err:
        _warn(f"{plot} not drawn: {err}")
