"""The run folder: what it holds, who may write it, and whether a resume may continue it.

A run folder (``train.py --out``) holds::

    <out>/config.yaml        the resolved configuration
    <out>/log.jsonl          one JSON record per logged step: losses, OT diagnostics, Q^C
    <out>/checkpoints/       step_XXXXXX.pt (periodic), final.pt, best.pt (held-out selection)
    <out>/predictions.json   {"results": {video: [{"label", "score", "segment"}]}} on eval.split
    <out>/metrics.json       {"tiou": [...], "mAP": [...], "average": ...} (fractions), and the
                             same of P^A, P^T, P^M under "modes" (case.scoring.metrics_record)
    <out>/*.png              foreground plots (Fig. 5 style) and entropy curves (Fig. 4 style)
    <out>/run.lock           while a process works in it: that process's pid and host

Every file is written atomically (:mod:`case.atomic`). One process at a time works in a
folder (:class:`RunLock`); a new run needs an empty folder, and ``--resume`` continues only
a run of the same configuration (but for :data:`RESUME_MAY_CHANGE`) — compared with
``config.yaml`` and with the configuration saved in the checkpoint it resumes from, so that
deleting ``config.yaml`` cannot smuggle another learning rate onto old weights.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # not POSIX: the lock record alone decides (see RunLock)
    fcntl = None

from .atomic import atomic_write_text, remove_temporaries
from .errors import ConfigError, RunFolderError, RunFolderInUse, RunWarning

if TYPE_CHECKING:
    from .config import Config

# case.config (and with it torch, through the model's and the losses' settings) is imported
# where a configuration is read or compared: owning_run, which evaluate.py --pred asks, needs
# neither.

__all__ = [
    "LOCK_NAME",
    "RESUME_MAY_CHANGE",
    "RunPaths",
    "RunLock",
    "RunFolder",
    "run_differences",
    "is_run_folder",
    "owning_run",
]

#: The lock file's name inside a run folder.
LOCK_NAME = "run.lock"

#: The settings a ``--resume`` may change, the one list of them: they cannot change the run's
#: weights, log or metrics — a progress bar; worker processes, which load the same batches as
#: the training process (:mod:`case.batching`); how often a periodic checkpoint is written and
#: how many are kept (saving draws no random number and changes no state); how many test videos
#: are drawn in the plots. Every other setting must be the one the run started with (the thread
#: count too: CPU kernels sum in another order on another number of threads).
RESUME_MAY_CHANGE = (
    "train.progress",
    "train.num_workers",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "eval.plot_videos",
)

#: What a run folder's writers put in it, by name (the ablation adds its cache and error
#: files): only a temporary file of one of these is a write that a kill cut short.
_RUN_FILES = (
    r"config\.yaml|log\.jsonl|predictions\.json|metrics\.json|entropy\.png|foreground_.+\.png"
    r"|ablation\.json|ablation_error\.txt"
)
_CHECKPOINT_FILES = r"final\.pt|best\.pt|step_\d+\.pt"


def run_differences(saved: Any, cfg: Config) -> list[str]:
    """How ``cfg`` differs from the saved configuration of a run (``config.yaml``'s plain data, or a
    checkpoint's) in what continuing that run must keep: every key but :data:`RESUME_MAY_CHANGE`.

    Empty when the run may go on (or be reused) under ``cfg``: the one rule of ``--resume`` and
    of the ablation's reuse of a finished run (:func:`case.ablation.runner.ensure_trained`).
    """
    from .config import differences_from

    if isinstance(saved, Mapping):  # those keys compare equal: the saved run takes cfg's values
        saved = dict(saved)
        for key in RESUME_MAY_CHANGE:
            section, name = key.split(".")
            if isinstance(saved.get(section), Mapping):
                saved[section] = {**saved[section], name: getattr(getattr(cfg, section), name)}
    return differences_from(saved, cfg)


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run of ``train.py``: its ``config.yaml`` (written before the first
    step, kept after the last) or its lock (a run starting in it; removed when that run ends)."""
    folder = Path(folder)
    return (folder / "config.yaml").is_file() or (folder / LOCK_NAME).exists()


def owning_run(path: str | Path) -> Path | None:
    """The run folder whose own file ``path`` is (``metrics.json``, ``checkpoints/final.pt``, ...), or None.

    Its own files are those its writers name (``config.yaml``, ``log.jsonl``,
    ``predictions.json``, ``metrics.json``, the figures, the ablation's files, the
    checkpoints); a file of another name in a run folder, or one in a folder inside it (the
    ``eval-*`` folders of ``evaluate.py``), belongs to no run. Links are followed: a link to a
    run's file is that file.
    """
    path = Path(path).resolve()
    folder = path.parent
    if re.fullmatch(_RUN_FILES, path.name) and is_run_folder(folder):
        return folder
    if folder.name == "checkpoints" and re.fullmatch(_CHECKPOINT_FILES, path.name) and is_run_folder(folder.parent):
        return folder.parent
    return None


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

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name in parentheses may hold spaces


def _alive(holder: Mapping[str, Any]) -> bool:
    """Whether the process a lock record names still runs (a process on another host is assumed to;
    a record without a pid was cut short by a kill)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    started = holder.get("started")
    return started is None or _process_start(pid) in (None, started)


def _describe(holder: Mapping[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"


class RunLock:
    """One process at a time in a run folder: ``run.lock`` names it (pid, host, start time).

    The lock is an exclusive ``flock`` on that file, which the kernel releases when the
    holder dies however it dies, so a lock left by a killed process is found stale at once
    (and the takeover is reported). Where the file system cannot ``flock`` (some network
    mounts, or a system without it), the record alone decides: a holder on this host whose
    process is gone is stale, one on another host is assumed alive (two processes starting at
    the same instant are not told apart there). :meth:`release` (on any normal exit) removes
    the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def _record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunFolderInUse` naming the process that holds it
        (:class:`RunFolderError` where the lock file cannot be written)."""
        while True:
            try:  # never through a symbolic link: the record would overwrite whatever it points to
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            except OSError as err:  # a read-only or foreign folder, a planted link
                if self.path.is_symlink():
                    raise RunFolderError(
                        f"lock file {self.path} is a symbolic link, which no run makes; delete it"
                    ) from None
                raise RunFolderError(f"cannot write the lock file {self.path}: {err.strerror or err}") from None
            try:
                if fcntl is None:
                    raise OSError(errno.ENOSYS, "no flock on this platform")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                kernel_lock = True
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise RunFolderInUse(
                    f"run folder {self.path.parent} is in use by {_describe(holder)} (lock file {self.path}); "
                    "wait for that run to end, or stop it"
                ) from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                kernel_lock = False
            try:  # a holder that released meanwhile removed the file we opened: lock the new one
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:
                os.close(fd)
                continue
            break
        previous = self._read(fd)
        if previous and not kernel_lock and _alive(previous):
            os.close(fd)
            raise RunFolderInUse(
                f"run folder {self.path.parent} is in use by {_describe(previous)} (lock file {self.path}); "
                "wait for that run to end, or stop it (delete the lock file if that process is gone)"
            )
        if previous:
            warnings.warn(
                RunWarning(f"{self.path}: stale lock of {_describe(previous)}, a process that is gone; taken over"),
                stacklevel=2,
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(self._record()) + "\n").encode())
        os.fsync(fd)
        self._fd = fd

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            record = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        except (ValueError, UnicodeDecodeError):
            return {"pid": None, "host": None, "since": None}  # cut short by a kill mid-write
        return record if isinstance(record, dict) else {}

    def release(self) -> None:
        """Give the lock up and remove the file (unlinked while still held, so no one locks a stale inode)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None


class RunFolder:
    """A locked run folder, checked for the run about to be written into it.

    Use as a context manager (the lock is released on exit, whatever the exit)::

        with RunFolder.open(paths, cfg, resume) as folder:
            state = folder.resume_state(...)
            folder.write_config(cfg)
    """

    def __init__(self, paths: RunPaths, lock: RunLock) -> None:
        self.paths, self.lock = paths, lock

    @classmethod
    def open(cls, paths: RunPaths, cfg: Config, resume: bool) -> RunFolder:
        """Create (if needed) and lock the folder; refuse what would damage it.

        Raises
        ------
        RunFolderError
            ``--out`` is a file or cannot be created; another process works in the folder;
            the folder holds files and ``resume`` is False, or holds files but no run (no
            ``config.yaml``, no checkpoint) and ``resume`` is True; its ``config.yaml`` differs
            from ``cfg``.

        Warns
        -----
        RunWarning
            ``resume`` is True but the folder holds no run yet (one starts from step 0).
        """
        root = paths.root
        if root.exists() and not root.is_dir():
            raise RunFolderError(f"run folder {root} is a file, not a folder; choose another --out")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create run folder {root}: {err.strerror or err}") from None
        lock = RunLock(paths.lock)
        lock.acquire()
        folder = cls(paths, lock)
        try:
            folder._check(cfg, resume)
        except BaseException:
            lock.release()
            raise
        return folder

    @classmethod
    def open_new(cls, base: Path, cfg: Config) -> RunFolder:
        """Create and lock the first free folder of ``base``, ``base-2``, ``base-3``, ... for a new run.

        A name is free if nothing is there or an empty folder. Choosing and locking are one step:
        two runs started together both find ``base`` free, and the one that locks it second
        goes on to the next name instead of being refused.

        Raises
        ------
        RunFolderError
            A free name cannot be created or locked (a read-only parent folder).
        """
        n = 1
        while True:
            root = base if n == 1 else base.with_name(f"{base.name}-{n}")
            n += 1
            if root.exists() and (not root.is_dir() or any(root.iterdir())):
                continue
            try:
                return cls.open(RunPaths(root), cfg, resume=False)
            except RunFolderInUse:  # another run took this name since we looked
                continue

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def _check(self, cfg: Config, resume: bool) -> None:
        paths = self.paths
        if paths.checkpoints.exists() and not paths.checkpoints.is_dir():
            raise RunFolderError(f"{paths.checkpoints} is a file, not the run's checkpoint folder")
        if paths.log.is_symlink():  # the run appends to it: through a link, to whatever it points to
            raise RunFolderError(f"{paths.log} is a symbolic link, which no run makes; replace it with its file")
        # writes a kill cut short (we hold the lock); nothing else, in case this is not a run folder
        remove_temporaries(paths.root, _RUN_FILES)
        remove_temporaries(paths.checkpoints, _CHECKPOINT_FILES)
        held = [p for p in paths.root.rglob("*") if p.is_file() and p != paths.lock]
        if held and not resume:
            raise RunFolderError(
                f"run folder {paths.root} already holds files; pass --resume to continue that run, "
                "or --out to start a new one"
            )
        if resume and not held:
            warnings.warn(RunWarning(f"--resume: {paths.root} holds no run yet; a new one starts"), stacklevel=3)
        elif resume and not (paths.config.exists() or any(paths.checkpoints.glob("*.pt"))):
            # writing a run into a folder of other files would replace a log.jsonl or metrics.json there
            raise RunFolderError(
                f"--resume: {paths.root} holds files but no run of train.py (no config.yaml, no checkpoint); "
                "choose the run's folder, or another --out for a new run"
            )
        if paths.config.exists():
            from .config import parse_yaml

            try:
                saved = parse_yaml(paths.config.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ConfigError) as err:
                raise RunFolderError(f"{paths.config} cannot be read ({err}); restore it or delete it") from None
            self.check_same_config(saved, cfg, str(paths.config))

    @staticmethod
    def check_same_config(saved: Any, cfg: Config, source: str) -> None:
        """Raise :class:`RunFolderError` naming the keys in which ``cfg`` differs from a saved configuration
        (but for :data:`RESUME_MAY_CHANGE`: :func:`run_differences`)."""
        differences = run_differences(saved, cfg)
        if not differences:
            return
        raise RunFolderError(
            f"--resume: the configuration differs from the one in {source} ({'; '.join(differences[:5])}); "
            "resume with the same --config/--set/--seed, or start a new run with --out"
        )

    def write_config(self, cfg: Config) -> None:
        """Write ``config.yaml`` (and make ``checkpoints/``)."""
        from .config import dump_config

        self.paths.checkpoints.mkdir(exist_ok=True)
        atomic_write_text(self.paths.config, dump_config(cfg))

    def truncate_log(self, last_step: int) -> None:
        """Keep the log records of steps <= ``last_step`` (a killed run may have logged past its checkpoint)."""
        if not self.paths.log.exists():
            return
        kept = []
        for line in self.paths.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # an empty line, or one cut by the kill
                continue
            if isinstance(record, dict) and record.get("step", 0) <= last_step:
                kept.append(record)
        atomic_write_text(self.paths.log, "".join(json.dumps(r) + "\n" for r in kept))
