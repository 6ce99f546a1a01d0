"""One background training job per process, shared by every app visitor (no UI code here).

The job owns a thread that drains the training generator into an in-memory event log; callers
poll `snapshot()`. Closing or reloading a page does not touch the thread, so a reloaded page sees
the same run. `start` is atomic: concurrent Start requests produce one job.

With a `ChunkPlan` (on ZeroGPU, services/gpu.py) each run is made of bounded calls (vicreg/orchestration/chunks.py)
that the snapshot shows as one continuous run: one run_id, steps that accumulate, "running" between calls.
A run of several processes (`processes` > 1) runs under torchrun as a child process (vicreg/orchestration/launch.py),
its events read from rank 0's metrics file; the snapshot shows it like any other run.

What a run that hit its time limit says, and what happens once a run has ended, are the caller's
(`time_up_reason`, `on_end`): the app explains its visitors' limit and tidies their runs (services/training.py).
"""
from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..core.config import TrainConfig
from ..runfiles.events import EndEvent, EpochEvent, Event, StartEvent, StepEvent, WatchEvent
from ..training.data import Dataset
from ..training.train import train
from .chunks import ChunkPlan, run_chunked
from .launch import run_torchrun

log = logging.getLogger(__name__)


@dataclass
class JobSnapshot:
    run_id: int  # increases with every started run; 0 = never started
    status: str  # "idle", "loading", "running", "stopping", "finished", "stopped", "failed"
    start: StartEvent | None
    steps: list[StepEvent] = field(default_factory=list)
    epochs: list[EpochEvent] = field(default_factory=list)
    watches: list[WatchEvent] = field(default_factory=list)  # the learning monitor's points, the untrained first
    end: EndEvent | None = None
    owner: str | None = None  # who may stop the run besides an admin (the app's visitor token); never shown
    time_limit: float | None = None  # seconds after which the run stops by itself
    processes: int = 1  # more than one: a torchrun run (its events are rank 0's)
    previous: JobSnapshot | None = None  # the run before this one (drawn behind it in grey), without features

    @property
    def active(self) -> bool:
        return self.status in ("loading", "running", "stopping")

    @property
    def last(self) -> StepEvent | None:
        return self.steps[-1] if self.steps else None

    def eta_seconds(self) -> float | None:
        if not self.start or not self.last or self.last.pairs_per_s <= 0:
            return None
        left = self.start.total_steps - self.last.step
        return left * self.start.config["batch_size"] / self.last.pairs_per_s


class TrainingJob:
    def __init__(self, data_loader: Callable[[TrainConfig], Dataset] | None = None, max_steps_kept: int = 20000,
                 chunks: ChunkPlan | None = None, on_end: Callable[[], None] | None = None):
        self.chunks = chunks  # None: each run trains in this process, in one piece
        self.on_end = on_end  # called in the run's thread once its end is recorded
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._data_loader = data_loader
        self._max_steps = max_steps_kept
        self._run_id = 0
        self._status = "idle"
        self._start: StartEvent | None = None
        self._steps: list[StepEvent] = []
        self._epochs: list[EpochEvent] = []
        self._watches: list[WatchEvent] = []
        self._end: EndEvent | None = None
        self._owner: str | None = None
        self._time_limit: float | None = None
        self._timed_out = False
        self._processes = 1
        self._previous: JobSnapshot | None = None

    def start(self, cfg: TrainConfig, resume: str | None = None, owner: str | None = None,
              time_limit: float | None = None, processes: int = 1) -> tuple[bool, str]:
        """(True, message) if a run started; (False, why) if one is already going. `owner` is an opaque
        token kept with the run (the app lets that visitor stop it); after `time_limit` seconds the run
        stops by itself with a resumable checkpoint, as if Stop had been pressed. `processes` > 1 runs it
        under torchrun (not with a ChunkPlan: a ZeroGPU call holds one GPU)."""
        if processes > 1 and self.chunks is not None:
            return False, "a run on ZeroGPU uses one process"
        with self._lock:
            if self._status in ("loading", "running", "stopping"):
                run = self._start.run if self._start else "starting"
                return False, f"a training run ({run}) is already in progress; stop it first"
            if self._steps:  # the run that ends here becomes the one to compare with
                self._previous = JobSnapshot(self._run_id, self._status, self._start, self._steps, self._epochs,
                                             [dataclasses.replace(w, features=None) for w in self._watches],
                                             self._end)
            self._run_id += 1
            self._status = "loading"
            self._start, self._steps, self._epochs, self._watches, self._end = None, [], [], [], None
            self._owner, self._time_limit, self._timed_out, self._processes = owner, time_limit, False, processes
            self._stop = threading.Event()
            # a chunked run's calls are made in the context of the request that started it: ZeroGPU reads the
            # visitor from there (whose GPU quota the calls use)
            ctx = contextvars.copy_context() if self.chunks is not None else contextvars.Context()
            self._thread = threading.Thread(target=ctx.run, args=(self._run, cfg, resume, self._stop, self._run_id),
                                            daemon=True, name="vicreg-train")
            self._thread.start()
            return True, f"run {self._run_id} started" + (f" with {processes} processes" if processes > 1 else "")

    def stop(self) -> tuple[bool, str]:
        with self._lock:
            if self._status not in ("loading", "running"):
                return False, "no training run is in progress"
            self._stop.set()
            self._status = "stopping"
            return True, "stopping after the current step; a resumable checkpoint will be saved"

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(self._run_id, self._status, self._start, list(self._steps), list(self._epochs),
                               list(self._watches), self._end, self._owner, self._time_limit, self._processes,
                               self._previous)

    def wait(self, timeout: float | None = None) -> bool:
        t = self._thread
        if t is not None:
            t.join(timeout)
        return t is None or not t.is_alive()

    def _record(self, run_id: int, ev: Event) -> None:
        with self._lock:
            if run_id != self._run_id:
                return
            if isinstance(ev, StartEvent):
                self._start = ev
                if self._status == "loading":
                    self._status = "running"
            elif isinstance(ev, StepEvent):
                self._steps.append(ev)
                if len(self._steps) > self._max_steps:  # keep memory bounded: thin the oldest half
                    half = len(self._steps) // 2
                    self._steps = self._steps[:half:2] + self._steps[half:]
            elif isinstance(ev, EpochEvent):
                self._epochs.append(ev)
            elif isinstance(ev, WatchEvent):
                if len(self._watches) > 1:  # the map needs the latest features only: older ones go (~0.5 MB each)
                    self._watches[-2] = dataclasses.replace(self._watches[-2], features=None)
                self._watches.append(ev)
            elif isinstance(ev, EndEvent):
                if self._timed_out and ev.status == "stopped":
                    ev = dataclasses.replace(ev, reason=self.time_up_reason(ev.reason, self._time_limit))
                self._end = ev
                self._status = ev.status

    def time_up_reason(self, reason: str, seconds: float) -> str:
        """The end reason of a run its time limit stopped."""
        return f"{reason}: its time limit of {seconds:g} s was reached"

    def _time_up(self, run_id: int, stop: threading.Event) -> None:
        with self._lock:
            if run_id != self._run_id or self._status not in ("loading", "running"):
                return
            self._timed_out = True
            self._status = "stopping"
        stop.set()

    def _run(self, cfg: TrainConfig, resume: str | None, stop: threading.Event, run_id: int) -> None:
        t0 = time.perf_counter()
        timer = None
        if self._time_limit is not None:
            timer = threading.Timer(self._time_limit, self._time_up, args=(run_id, stop))
            timer.daemon = True
            timer.start()
        try:
            if self._processes > 1:  # each rank loads the data itself, from cfg.data
                events = run_torchrun(cfg, stop, self._processes, resume)
            elif self.chunks is not None:  # each call loads the data itself, from cfg.data
                events = run_chunked(cfg, stop, resume, self.chunks)
            else:
                data = self._data_loader(cfg) if self._data_loader else None  # also checks the data is there
                events = train(cfg, stop=stop, resume=resume, data=data)
            for ev in events:
                self._record(run_id, ev)
        except Exception as e:  # data loading failed before the generator could report it
            self._record(run_id, EndEvent("failed", f"{type(e).__name__}: {e}", None, 0, 0, time.perf_counter() - t0))
        finally:
            if timer is not None:
                timer.cancel()
            self._ended()

    def _ended(self) -> None:
        if self.on_end is None:
            return
        try:
            self.on_end()
        except Exception:  # the run has ended and is recorded: what follows it must not hide that
            log.exception("after the training run")
