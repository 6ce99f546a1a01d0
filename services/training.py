"""Training for the app (no gradio): the one TrainingJob of this process, shared by every visitor; how runs are
cut here (the chunk plan, services/gpu.py); the run a Start or a Resume asks for, assembled and checked; and
what is kept of visitors' runs (services/visitors.py), tidied whenever a run ends.

`Training.start_up` is the app's start-up step for training, taken once before the app launches (app.py): on
ZeroGPU the GPU calls must be decorated by then, and `spaces` imported before anything asks torch about CUDA.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

import torch

from vicreg.core.config import MAX_VIEWS, AugmentConfig, TrainConfig
from vicreg.core.presets import LONG_DEMO, PRESETS, QUICK
from vicreg.core.runtime import plan_runtime, resolve_device
from vicreg.orchestration import jobs
from vicreg.orchestration.chunks import ChunkPlan
from vicreg.orchestration.jobs import JobSnapshot
from vicreg.orchestration.launch import check_processes, max_processes
from vicreg.runfiles.checkpoint import load_checkpoint
from vicreg.runfiles.events import rate_unit
from vicreg.runfiles.names import CheckpointError, checkpoint_path, checkpoint_stem, safe_name
from vicreg.runfiles.resume import resume_run
from vicreg.training.data import Dataset

from . import gpu
from .access import Access
from .catalog import Catalog
from .features.data import DataSource
from .visitors import VisitorRuns, visitor_name

# The engine's recipes, types and words the Train tab shows, passed on so that the page imports services only.
__all__ = ["LONG_DEMO", "MAX_VIEWS", "PRESETS", "QUICK", "VIEW_SIZE", "ChunkPlan", "JobSnapshot",
           "Resume", "Started", "TrainConfig", "Training", "TrainingJob", "checkpoint_stem", "devices", "rate_unit",
           "runtime_of"]

VIEW_SIZE = AugmentConfig().size  # CIFAR-10's side: the largest training view


class TrainingJob(jobs.TrainingJob):
    """The app's training job: the engine's, with the visitors' time limit explained in the app's words."""

    def time_up_reason(self, reason: str, seconds: float) -> str:
        return f"{reason}: runs started by visitors stop after {seconds / 60:g} min on this shared server"


def devices() -> list[str]:
    """The devices a run may ask for here: auto, the CPU, each CUDA GPU, and Apple's GPU where there is one."""
    out = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def runtime_of(device: str) -> tuple[str, str]:
    """What a run on `device` runs on, in words, and the device's kind ("cpu", "cuda", "mps"); ValueError for a
    device this machine does not have."""
    rt = plan_runtime(device)
    return rt.describe(), rt.device.type


@dataclass(frozen=True)
class Started:
    ok: bool
    text: str  # the job's answer: "run 3 started", or why not
    owner: str | None = None  # the visitor's token for the run they started (None: an admin's run)
    limit: float | None = None  # seconds after which the run stops by itself (None: never)


@dataclass(frozen=True)
class Resume:
    cfg: TrainConfig  # the checkpoint's recipe with this server's run settings
    checkpoint: str  # the file it continues
    processes: int
    epoch: int | None  # where the checkpoint stands
    step: int | None


class Training:
    """The training job and the rules for what it may run, for one server."""

    def __init__(self, checkpoint_dir: str, cache_dir: str, data: DataSource, catalog: Catalog, access: Access,
                 visitors: VisitorRuns, threads: int):
        self.checkpoint_dir, self.cache_dir, self.threads = checkpoint_dir, cache_dir, threads
        self.data, self.catalog, self.access, self.visitors = data, catalog, access, visitors
        self.job: jobs.TrainingJob = TrainingJob(data_loader=self._dataset)  # decodes each dataset once per process
        self.adopt(self.job)

    def _dataset(self, cfg: TrainConfig) -> Dataset:
        return self.data.dataset(cfg.data)

    def start_up(self) -> None:
        """Before the app launches: how runs are cut here (on ZeroGPU this imports `spaces` and decorates the GPU
        calls), and on a public demo only the newest visitors' runs kept, as after a run."""
        if self.job.chunks is None:
            self.job.chunks = gpu.chunk_plan(self.cache_dir)
        self._ended()

    @property
    def chunks(self) -> ChunkPlan | None:
        """How runs are cut here (`start_up`); None: each run trains in this process, in one piece."""
        return self.job.chunks

    def adopt(self, job: jobs.TrainingJob) -> None:
        """Serve `job` from now on (the page is built over the job it is given): its runs are cut the way this
        server cuts them, and visitors' runs are tidied when one ends."""
        if job.chunks is None:
            job.chunks = self.job.chunks
        job.on_end = self._ended
        self.job = job

    def _ended(self) -> None:
        """After a run (in its thread) and at start-up: on a public demo only the newest visitors' runs stay."""
        if self.access.public:
            self.visitors.after_run(self.job)

    def cuda_available(self) -> bool:
        """Whether CUDA looks available here (on ZeroGPU it does once `start_up` has imported `spaces`: the GPU
        exists inside its calls)."""
        return torch.cuda.is_available()

    def snapshot(self) -> JobSnapshot:
        return self.job.snapshot()

    def threads_for(self, threads) -> int:
        """The torch threads a run asks for (0: the server's)."""
        return int(threads or 0) or self.threads

    def most_processes(self) -> int:
        """The processes a run may use here: one on ZeroGPU (a call holds one GPU), else
        vicreg.orchestration.launch's rule."""
        return 1 if self.job.chunks is not None else max_processes()

    def processes(self, processes, device: str) -> int:
        """The processes asked for, checked: within `most_processes`, and several only on CUDA GPUs or the CPU."""
        n, most = int(processes or 1), self.most_processes()
        if not 1 <= n <= most:
            raise ValueError(f"processes must be from 1 to {most} on this machine, got {n}")
        kind = resolve_device(device).type
        if n > 1 and kind not in ("cpu", "cuda"):
            raise ValueError(f"a run of several processes trains on CUDA GPUs or on the CPU, not {kind}")
        return n

    def config(self, base: TrainConfig, values: dict, device: str, threads) -> TrainConfig:
        """`base` (a preset's recipe) with `values` on top (by dotted name), run on the data this server has."""
        name = safe_name(str(values.get("name") or "vicreg_model").strip(), self.checkpoint_dir)
        cfg = base.with_values({**values, "name": name, "device": device, "data": self.data.path(),
                                "checkpoint_dir": self.checkpoint_dir, "threads": self.threads_for(threads)})
        default = self.catalog.default()
        if default and os.path.realpath(checkpoint_path(cfg.checkpoint_dir, cfg.name)) == os.path.realpath(default):
            raise CheckpointError(f"'{cfg.name}' is the name of the default demo model; choose another run name")
        return cfg.validate()

    def run_config(self, base: TrainConfig, values: dict, device: str, threads, processes,
                   admin: bool) -> tuple[TrainConfig, int]:
        """The run a Start asks for and its processes. A visitor's run gets a name of its own, kept only a while
        (services/visitors.py), and at most the server's threads."""
        if not admin:
            values = {**values, "name": visitor_name(values.get("name"))}
        n = self.processes(processes, device)
        cfg = self.config(base, values, device, threads if admin else min(self.threads_for(threads), self.threads))
        if n > 1:
            check_processes(cfg, n)
        return cfg, n

    def start(self, cfg: TrainConfig, processes: int = 1, admin: bool = True) -> Started:
        """Start `cfg`. A visitor's run gets an owner token (who may stop it) and a time limit, and room is made
        for it among the visitors' runs first."""
        owner = None if admin else secrets.token_hex(16)
        limit = None if admin else self.access.visitor_seconds
        if not admin:
            self.visitors.before_run(self.job)
        ok, text = self.job.start(cfg, owner=owner, time_limit=limit, processes=processes)
        return Started(ok, text, owner, limit)

    def resume_config(self, path: str, more_epochs, device: str, threads, processes=1) -> Resume:
        """Continuing the checkpoint at `path` (a listed one): `more_epochs` extra epochs, or 0 to finish its
        planned run, into the same file (vicreg.runfiles.resume.resume_run, RE_TRAIN's rule); its other run settings are
        the checkpoint's own."""
        n = self.processes(processes, device)
        ckpt = load_checkpoint(path)
        run = TrainConfig.from_dict(ckpt.meta["config"]).with_values(
            {"device": device, "data": self.data.path(), "threads": self.threads_for(threads)})
        cfg = resume_run(ckpt, run, more=int(more_epochs or 0) or None)
        if n > 1:
            check_processes(cfg, n)
        return Resume(cfg, path, n, ckpt.meta.get("epoch"), ckpt.meta.get("step"))

    def resume(self, r: Resume) -> tuple[bool, str]:
        return self.job.start(r.cfg, resume=r.checkpoint, processes=r.processes)

    def stop(self) -> tuple[bool, str]:
        return self.job.stop()
