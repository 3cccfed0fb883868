"""Training and test-time inference of CASE: run folder, checkpoints, resume, DDP.

:func:`train` runs one experiment into a run folder::

    <out>/config.yaml        the resolved configuration
    <out>/log.jsonl          one JSON record per logged step: losses, OT diagnostics, Q^C
    <out>/checkpoints/       step_XXXXXX.pt (periodic), final.pt, best.pt (held-out selection)
    <out>/predictions.json   {"results": {video: [{"label", "score", "segment"}]}} on the test split
    <out>/metrics.json       {"tiou": [...], "mAP": [...], "average": ...} (fractions)
    <out>/*.png              foreground plots (Fig. 5 style) and entropy curves (Fig. 4 style)

Determinism: the model is initialised from ``train.seed``; the data order is a pure
function of (seed, step) (:class:`BatchOrder`) and each video's random snippet sampling of
(seed, epoch, video), so a run resumed from a checkpoint replays exactly the batches an
uninterrupted run sees, and on the CPU ends with the same weights and metrics.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) each rank takes an equal slice of every
global batch, the model is wrapped in DDP, and with ``labeling.scope="global"`` the OT
problems are solved over the global batch on every rank; the result equals one process on
the whole batch up to floating-point summation order.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from . import checkpoint as ckpt
from .config import Config, dump_config, to_dict
from .data.constants import SNIPPET_SECONDS
from .losses import case_objective, joint_objective, mil_pooling
from .model import CASEModel

__all__ = [
    "RunPaths",
    "BatchOrder",
    "Distributed",
    "build_model",
    "TrainedModel",
    "load_for_inference",
    "load_trained",
    "predict_video",
    "predict_dataset",
    "detect_dataset",
    "evaluate_predictions",
    "known_labels_only",
    "train",
    "RunFolderError",
]

#: Q^C[:, fg] before the first cluster classification: equal levels make the prior flat.
INITIAL_CLUSTER_FG = 0.5


class RunFolderError(RuntimeError):
    """The run folder is in a state that the requested action would damage."""


@dataclass(frozen=True)
class RunPaths:
    """Where a run folder keeps each file."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @classmethod
    def setup(cls, device: str) -> Distributed:
        """Join the process group that ``torchrun`` describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)

    def teardown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class BatchOrder:
    """The data order: batch ``step`` is a pure function of (seed, step).

    Each epoch is a permutation of the N training videos drawn from a generator seeded with
    (seed, epoch); it is cut into ⌊N / batch_size⌋ global batches (the remainder is dropped,
    as the official code does), and rank r of W takes the r-th of W equal slices.

    Examples
    --------
    >>> order = BatchOrder(10, 4, seed=0)
    >>> order.batches_per_epoch, order.position(5)
    (2, (2, 1))
    >>> sorted(order.indices(0) + order.indices(1)) == sorted(set(order.indices(0) + order.indices(1)))
    True
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"train.batch_size ({batch_size}) must be a multiple of the number of processes ({world})")
        if num_items < batch_size:
            raise ValueError(f"train.batch_size ({batch_size}) exceeds the {num_items} training videos")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world = rank, world
        self.batches_per_epoch = num_items // batch_size
        self._epoch = -1
        self._perm: list[int] = []

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of global batch ``step`` (0-based)."""
        return divmod(step, self.batches_per_epoch)

    def permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_items, generator=g).tolist()
            self._epoch = epoch
        return self._perm

    def global_indices(self, step: int) -> list[int]:
        epoch, batch = self.position(step)
        start = batch * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size]

    def indices(self, step: int) -> list[int]:
        """This rank's videos of global batch ``step``."""
        share = self.batch_size // self.world
        return self.global_indices(step)[self.rank * share : (self.rank + 1) * share]

    def state(self, step: int) -> dict[str, int]:
        """What a checkpoint records of the data order (enough to check a resume against)."""
        epoch, batch = self.position(step)
        return {"seed": self.seed, "step": step, "epoch": epoch, "batch": batch, "batch_size": self.batch_size}


# --------------------------------------------------------------------------- data


def _data_api() -> Any:
    from . import data

    return data


def _set_epoch(dataset: Any, epoch: int) -> None:
    """Tell a dataset whose random sampling depends on the epoch which epoch it is in."""
    setter = getattr(dataset, "set_epoch", None)
    if setter is not None:
        setter(epoch)


def load_batch(dataset: Any, indices: Sequence[int], epoch: int, device: torch.device | None = None) -> dict[str, Any]:
    """Fetch and collate the videos ``indices`` (random sampling seeded by epoch and video)."""
    _set_epoch(dataset, epoch)
    batch = _data_api().collate_videos([dataset[i] for i in indices])
    if device is not None:
        batch["features"] = batch["features"].to(device, non_blocking=True)
        batch["label"] = batch["label"].to(device, non_blocking=True)
    return batch


class StepBatches(torch.utils.data.Dataset):
    """Item j is this rank's collated batch of step ``start + j``: a pure function of the step.

    Wrapping the batches (rather than the videos) in a DataLoader lets worker processes
    prepare the next steps while the model trains, with exactly the batches the in-process
    path gives: each item sets its own epoch, so no state has to reach the workers.
    """

    def __init__(self, dataset: Any, order: BatchOrder, start: int, stop: int) -> None:
        self.dataset, self.order, self.start, self.stop = dataset, order, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, j: int) -> dict[str, Any]:
        step = self.start + j
        return load_batch(self.dataset, self.order.indices(step), self.order.position(step)[0])


def iterate_batches(
    dataset: Any, order: BatchOrder, start: int, stop: int, num_workers: int
) -> Iterator[dict[str, Any]]:
    """The batches of steps ``start`` .. ``stop - 1``, loaded in ``num_workers`` background processes (0: inline)."""
    batches = StepBatches(dataset, order, start, stop)
    if num_workers == 0:
        return (batches[j] for j in range(len(batches)))
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        multiprocessing_context="spawn",
        prefetch_factor=2,
    )
    return iter(loader)


# --------------------------------------------------------------------------- model


def build_model(cfg: Config, num_classes: int) -> CASEModel:
    """The model for ``cfg`` and a data set of ``num_classes`` classes (checked against the config)."""
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ValueError(
            f"model.num_classes is {cfg.model.num_classes} but the data set has {num_classes} classes; "
            "fix the config or leave model.num_classes unset"
        )
    return CASEModel(cfg.data.feature_dim, num_classes, cfg.model)


@dataclass
class TrainedModel:
    """What a checkpoint holds for inference.

    Attributes
    ----------
    model : CASEModel
        In eval mode, on the requested device.
    cluster_fg : Tensor (K,)
        Q^C[:, fg] of the last cluster classification (clustering-assisted testing).
    config : Config
        The configuration the model was trained with.
    class_names : list of str or None
        The class of each classifier output, in order (None in checkpoints written before
        the class names were saved).
    step : int
        Training steps behind the weights.
    path : Path
        The checkpoint file.
    """

    model: CASEModel
    cluster_fg: Tensor
    config: Config
    class_names: list[str] | None
    step: int
    path: Path

    @property
    def num_classes(self) -> int:
        """C, the number of classifier outputs."""
        return self.model.num_classes


def load_for_inference(checkpoint: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model, Q^C[:, fg], configuration and class names saved in a checkpoint.

    Examples
    --------
    >>> trained = load_for_inference("runs/synthetic-seed0/checkpoints/final.pt")  # doctest: +SKIP
    >>> trained.class_names[:2], trained.cluster_fg.shape  # doctest: +SKIP
    (['BaseballPitch', 'BasketballDunk'], torch.Size([16]))
    """
    from .config import from_dict

    state = ckpt.load_checkpoint(checkpoint, map_location=device)
    cfg = from_dict(Config, state["config"])
    num_classes = state["model"]["streams.rgb.classifier.weight"].shape[0]
    model = build_model(cfg, num_classes).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    names = state.get("class_names")
    return TrainedModel(
        model,
        state["cluster_fg"].to(device),
        cfg,
        None if names is None else list(names),
        int(state["step"]),
        Path(checkpoint),
    )


def load_trained(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[CASEModel, Tensor, Config]:
    """The model, Q^C[:, fg] and configuration saved in a checkpoint, ready for inference.

    ``detect_dataset(predict_dataset(model, dataset, cluster_fg, cfg, device),
    dataset.class_names, cfg)`` gives the run's detections; :func:`load_for_inference` also
    returns the class names (``evaluate.py --checkpoint`` uses it).
    """
    trained = load_for_inference(checkpoint, device)
    return trained.model, trained.cluster_fg, trained.config


# --------------------------------------------------------------------------- inference


@torch.no_grad()
def predict_video(model: CASEModel, features: Tensor, cluster_fg: Tensor, cfg: Config) -> dict[str, np.ndarray]:
    """What the model says about one video, in the form post-processing takes.

    Parameters
    ----------
    model : CASEModel
        In eval mode.
    features : Tensor (T, D)
    cluster_fg : Tensor (K,)
        Q^C[:, fg] saved with the checkpoint.
    cfg : Config

    Returns
    -------
    dict of ndarray
        ``cas`` (T, C): softmax over classes, streams averaged; ``attention`` (T,): P^A,
        streams averaged; ``cluster_probs`` (T, K): P^S, streams averaged; ``cluster_fg``
        (K,); ``video_scores`` (C,): each stream's softmax of its top-k pooled logits
        (k = ⌊T / loss.topk_divisor⌋, chosen on the training calibration), averaged.
    """
    outputs = model(features.unsqueeze(0))
    cas_probs, attentions, video_logits, _ = mil_pooling(outputs, cfg.loss)
    video_scores = torch.stack([F.softmax(v, dim=-1) for v in video_logits]).mean(0)
    cluster_probs = torch.stack([F.softmax(o.cluster_logits, dim=-1) for o in outputs]).mean(0)
    return {
        "cas": cas_probs[0].float().cpu().numpy(),
        "attention": torch.stack(attentions).mean(0)[0].float().cpu().numpy(),
        "cluster_probs": cluster_probs[0].float().cpu().numpy(),
        "cluster_fg": cluster_fg.float().cpu().numpy(),
        "video_scores": video_scores[0].float().cpu().numpy(),
    }


def predict_dataset(
    model: CASEModel,
    dataset: Any,
    cluster_fg: Tensor,
    cfg: Config,
    device: torch.device,
    indices: Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`predict_video` for each video of ``dataset`` (or of ``indices``), with its metadata."""
    model.eval()
    for i in range(len(dataset)) if indices is None else indices:
        item = dataset[i]
        out = predict_video(model, item["features"].to(device), cluster_fg.to(device), cfg)
        index = item["index"]
        out.update(
            video=item["video"],
            index=index.numpy() if isinstance(index, Tensor) else np.asarray(index),
            num_snippets=int(item["num_snippets"]),
            duration=float(item["duration"]),
        )
        yield out


def detect_dataset(predictions: Iterator[dict[str, Any]], class_names: Sequence[str], cfg: Config) -> dict[str, Any]:
    """Detections of every video (ActivityNet results format) from :func:`predict_dataset`'s output."""
    from .postprocess import detect_video, foreground_for_testing

    results = {}
    for p in predictions:
        foreground = foreground_for_testing(
            p["attention"], p["cluster_probs"], p["cluster_fg"], mode=cfg.postprocess.foreground_mode
        )
        results[p["video"]] = detect_video(
            p["cas"],
            foreground,
            p["video_scores"],
            p["index"],
            p["num_snippets"],
            p["duration"],
            list(class_names),
            cfg.postprocess,
        )
    return {"results": results}


def evaluate_predictions(
    ground_truth: Mapping[str, Any], predictions: Mapping[str, Any], subset: str, cfg: Config
) -> Any:
    """mAP of ``predictions`` by the ActivityNet protocol at ``eval.tiou`` (and ``eval.ambiguous``).

    Detections of classes absent from the whole database are dropped first: they change no
    AP (see :func:`known_labels_only`), and the evaluator rejects unknown labels.

    Returns
    -------
    case.metrics.DetectionMetrics
    """
    from .metrics import evaluate_detection

    return evaluate_detection(
        ground_truth,
        known_labels_only(predictions, ground_truth),
        subset=subset,
        tiou_thresholds=tuple(cfg.eval.tiou),
        ambiguous=cfg.eval.ambiguous,
    )


# --------------------------------------------------------------------------- training


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _truncate_log(path: Path, last_step: int) -> None:
    """Keep the log records of steps <= ``last_step`` (a killed run may have logged past its checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if record.get("step", 0) <= last_step:
            kept.append(record)
    ckpt.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _prepare_folder(paths: RunPaths, cfg: Config, resume: bool) -> None:
    config_text = dump_config(cfg)
    if paths.root.exists() and any(paths.root.iterdir()):
        if not resume:
            raise RunFolderError(
                f"run folder {paths.root} already holds files; pass --resume to continue that run, "
                "or --out to start a new one"
            )
        if paths.config.exists() and paths.config.read_text() != config_text:
            raise RunFolderError(
                f"--resume: the configuration differs from the one in {paths.config}; resume with the same "
                "--config/--set/--seed, or start a new run with --out"
            )
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(paths.config, config_text)


def _split_heldout(num_videos: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    perm = torch.randperm(num_videos, generator=g).tolist()
    held = max(1, round(fraction * num_videos))
    return sorted(perm[held:]), sorted(perm[:held])


class _Subset(torch.utils.data.Dataset):
    """A view of some videos of a dataset (keeps ``class_names`` and ``set_epoch``)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.class_names = dataset.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[self.indices[i]]

    def set_epoch(self, epoch: int) -> None:
        _set_epoch(self.dataset, epoch)


#: Subset name of the held-out training videos in the model-selection ground truth.
HELDOUT_SUBSET = "heldout"


def _heldout_ground_truth(dataset: Any, videos: set[str]) -> dict:
    """The training split's annotations with the held-out videos as their own subset.

    The other training videos stay in the database (their labels are known labels) but are
    not scored; no test video is involved.
    """
    gt = dataset.ground_truth()
    database = {v: {**e, "subset": HELDOUT_SUBSET if v in videos else e["subset"]} for v, e in gt["database"].items()}
    return {**gt, "database": database}


def _mean_over_ranks(values: dict[str, float], env: Distributed, device: torch.device) -> dict[str, float]:
    if env.world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / env.world for k, v in zip(keys, t.tolist(), strict=True)}


def _state(
    model: CASEModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    cluster_fg: Tensor,
    order: BatchOrder,
    cfg: Config,
    extra: dict,
) -> dict:
    # extra: "best" (held-out selection) and "class_names" (what each classifier output means)
    return {
        "format": 1,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "cluster_fg": cluster_fg.detach().cpu(),
        "rng": ckpt.rng_state(),
        "data_order": order.state(step),
        "config": to_dict(cfg),
        **extra,
    }


def setup_runtime(cfg: Config, env: Distributed | None = None) -> torch.device:
    """Apply ``train.threads`` and return the device of ``train.device`` (this rank's GPU under DDP).

    Raises RuntimeError when CUDA is asked for and absent (shared by training and ``evaluate.py``).
    """
    env = env or Distributed()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = cfg.train.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use --device cpu")
        if env.world > 1:
            device = f"cuda:{env.local_rank}"
        torch.cuda.set_device(torch.device(device))
    return torch.device(device)


def train(cfg: Config, out: str | Path, resume: bool = False) -> dict[str, Any] | None:
    """Train CASE as ``cfg`` says, then evaluate on ``eval.split``; everything lands in ``out``.

    Parameters
    ----------
    cfg : Config
    out : path
        The run folder (created; an existing non-empty one needs ``resume=True``).
    resume : bool
        Continue from the latest checkpoint in ``out`` (a finished run is only re-evaluated).

    Returns
    -------
    dict or None
        On the main process, ``{"metrics": {...}, "steps": int, "seconds": float}``; None elsewhere.
    """
    env = Distributed.setup(cfg.train.device)
    try:
        return _train(cfg, RunPaths(Path(out)), resume, env)
    finally:
        env.teardown()


def _train(cfg: Config, paths: RunPaths, resume: bool, env: Distributed) -> dict[str, Any] | None:
    from tqdm import tqdm

    started = time.perf_counter()
    device = setup_runtime(cfg, env)
    seed = cfg.train.seed
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if env.main:
        _prepare_folder(paths, cfg, resume)
    env.barrier()

    data = _data_api()
    full_train = data.build_dataset(cfg.data, "train", "random", seed=seed)
    class_names = list(full_train.class_names)
    train_set: Any = full_train
    heldout = None
    if cfg.train.select == "heldout":
        train_idx, held_idx = _split_heldout(len(full_train), cfg.train.heldout_fraction, seed)
        train_set = _Subset(full_train, train_idx)
        held_set = full_train.with_sampling(cfg.eval.sampling)
        held_videos = {held_set.videos[i] for i in held_idx}
        heldout = (held_set, held_idx, _heldout_ground_truth(held_set, held_videos))
    order = BatchOrder(len(train_set), cfg.train.batch_size, seed, env.rank, env.world)

    model = build_model(cfg, len(class_names)).to(device)
    meta = {"class_names": class_names}  # saved with every checkpoint: what each classifier output means
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay
    )
    cluster_fg = torch.full((cfg.model.num_clusters,), INITIAL_CLUSTER_FG, device=device)
    step, best = 0, {"score": -math.inf, "step": None}

    if resume:
        latest = ckpt.latest_checkpoint(paths.checkpoints)
        if latest is not None:
            state = ckpt.load_checkpoint(latest, map_location=device)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            cluster_fg = state["cluster_fg"].to(device)
            step = int(state["step"])
            best = state.get("best", best)
            ckpt.set_rng_state(state["rng"])
            if state["data_order"] != order.state(step):
                raise RunFolderError(
                    f"{latest}: its data order {state['data_order']} does not match this run's {order.state(step)}"
                )
        if env.main:
            _truncate_log(paths.log, step)
    env.barrier()

    net: torch.nn.Module = model
    if env.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not cfg.labeling.scc.enabled,
        )

    bar = tqdm(
        total=cfg.train.steps,
        initial=step,
        disable=not (env.main and cfg.train.progress),
        desc="train",
        dynamic_ncols=True,
    )
    log_handle = open(paths.log, "a") if env.main else None
    try:
        for batch in iterate_batches(train_set, order, step, cfg.train.steps, cfg.train.num_workers):
            net.train()
            epoch, _ = order.position(step)
            features = batch["features"].to(device, non_blocking=True)
            outputs = net(features)
            result = case_objective(outputs, batch["label"].to(device), cluster_fg, cfg.loss, cfg.labeling)
            if not torch.isfinite(result.loss):
                raise FloatingPointError(f"step {step + 1}: the loss is not finite ({result.parts}); lower optim.lr")
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            optimizer.step()
            if result.cluster_fg is not None:
                cluster_fg = result.cluster_fg
            step += 1
            parts = _mean_over_ranks(result.parts, env, device)
            if env.main:
                bar.update(1)
                total = float(joint_objective(parts, cfg.loss))
                bar.set_postfix(loss=f"{total:.4f}", refresh=False)
                if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                    record = {"step": step, "epoch": epoch, "loss": total, **parts}
                    record.update({k: _jsonable(v) for k, v in result.diagnostics.items()})
                    record["seconds"] = round(time.perf_counter() - started, 3)
                    log_handle.write(json.dumps(record) + "\n")
                    log_handle.flush()
            if heldout is not None and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
                score = _heldout_score(model, heldout, cluster_fg, class_names, cfg, device, env)
                if env.main and score > best["score"]:
                    best = {"score": score, "step": step}
                    ckpt.save_checkpoint(
                        paths.checkpoints / "best.pt",
                        _state(model, optimizer, step, cluster_fg, order, cfg, {"best": best, **meta}),
                    )
            if step < cfg.train.steps and cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                if env.main:
                    ckpt.save_checkpoint(
                        paths.checkpoints / f"step_{step:06d}.pt",
                        _state(model, optimizer, step, cluster_fg, order, cfg, {"best": best, **meta}),
                    )
                    ckpt.prune_checkpoints(paths.checkpoints, cfg.train.keep_checkpoints)
                env.barrier()
        if env.main and not (paths.checkpoints / "final.pt").exists():
            ckpt.save_checkpoint(
                paths.checkpoints / "final.pt",
                _state(model, optimizer, step, cluster_fg, order, cfg, {"best": best, **meta}),
            )
    finally:
        bar.close()
        if log_handle is not None:
            log_handle.close()
    env.barrier()
    if not env.main:
        return None

    if heldout is not None and best["step"] is not None:
        chosen = ckpt.load_checkpoint(paths.checkpoints / "best.pt", map_location=device)
        model.load_state_dict(chosen["model"])
        cluster_fg = chosen["cluster_fg"].to(device)
    metrics = evaluate_run(model, cluster_fg, cfg, paths, device, full_train)
    summary = {"metrics": metrics, "steps": step, "seconds": round(time.perf_counter() - started, 2)}
    if heldout is not None:
        summary["selected_step"] = best["step"]
    return summary


def _heldout_score(
    model: CASEModel,
    heldout: tuple,
    cluster_fg: Tensor,
    class_names: list[str],
    cfg: Config,
    device: torch.device,
    env: Distributed,
) -> float:
    """Average mAP on the held-out training videos (main process; others get -inf)."""
    if not env.main:
        return -math.inf
    dataset, indices, gt = heldout
    predictions = detect_dataset(predict_dataset(model, dataset, cluster_fg, cfg, device, indices), class_names, cfg)
    return float(evaluate_predictions(gt, predictions, HELDOUT_SUBSET, cfg).average)


def evaluate_run(
    model: CASEModel, cluster_fg: Tensor, cfg: Config, paths: RunPaths, device: torch.device, *built: Any
) -> dict[str, Any]:
    """Predict on ``eval.split``, write predictions.json, metrics.json and the plots; return the metrics.

    ``built``: data sets already built (e.g. the training split), reused for the ground truth.
    """
    from .metrics import write_metrics

    data = _data_api()
    dataset = data.build_dataset(cfg.data, cfg.eval.split, cfg.eval.sampling, seed=cfg.train.seed)
    outputs = list(predict_dataset(model, dataset, cluster_fg, cfg, device))
    predictions = detect_dataset(iter(outputs), dataset.class_names, cfg)
    ckpt.atomic_write_json(paths.predictions, predictions)
    gt = evaluation_ground_truth(cfg, dataset, *built)
    metrics = evaluate_predictions(gt, predictions, cfg.eval.split, cfg)
    write_metrics(paths.metrics, metrics)
    _plots(outputs, gt, cfg, paths)
    return metrics.to_dict()


def evaluation_ground_truth(cfg: Config, *datasets: Any) -> dict:
    """The ground truth of every split in one database, as THUMOS14's ``gt.json`` holds it.

    The evaluator scores the subset ``eval.split`` but accepts a predicted label only if the
    database knows it; a small (synthetic) test split may lack a class that the training
    split has, which is still a legitimate prediction (it is a false positive). A split among
    the ``datasets`` already built is not built again (ground truth does not depend on the
    sampling).
    """
    built = {d.split: d for d in datasets}
    database = {}
    for split in ("train", "test"):
        other = (
            built[split] if split in built else _data_api().build_dataset(cfg.data, split, "all", seed=cfg.train.seed)
        )
        database.update(other.ground_truth()["database"])
    return {"database": database}


def known_labels_only(predictions: Mapping[str, Any], gt: Mapping[str, Any]) -> dict:
    """Drop detections of classes that no video of ``gt``'s database has.

    The evaluator rejects a label unknown to the ground truth; a class without any instance
    in the database has no AP, so dropping its detections changes no score.
    """
    known = {a["label"] for entry in gt["database"].values() for a in entry.get("annotations", [])}
    return {"results": {v: [d for d in dets if d["label"] in known] for v, dets in predictions["results"].items()}}


def _plots(outputs: list[dict[str, Any]], gt: dict, cfg: Config, paths: RunPaths) -> None:
    """Fig. 5-style foreground plots of a few test videos and Fig. 4-style entropy curves."""
    from . import viz
    from .postprocess import foreground_for_testing

    annotated = [p for p in outputs if gt["database"].get(p["video"], {}).get("annotations")]
    for p in annotated[: cfg.eval.plot_videos]:
        cluster = None
        if cfg.labeling.ccc.enabled:  # without CCC, Q^C never leaves its flat start: no P^T to draw
            cluster = foreground_for_testing(p["attention"], p["cluster_probs"], p["cluster_fg"], mode="cluster")
        viz.plot_foreground(
            paths.root / f"foreground_{p['video']}.png",
            p["attention"],
            cluster,
            ground_truth=gt["database"][p["video"]]["annotations"],
            index=p["index"],
            snippet_seconds=SNIPPET_SECONDS,
            title=p["video"],
        )
    if cfg.labeling.scc.enabled:
        viz.plot_entropy_curves(paths.root / "entropy.png", paths.log)
