"""A training run as consecutive bounded calls, each in its own process, that together equal one run.

On a ZeroGPU Space no process holds a GPU except while a `spaces.GPU` function runs, and each such call
is limited to a few minutes (services/gpu.py). So a run proceeds as calls of `run_chunk`: each one
resumes exactly from the checkpoint the previous one saved (the engine's exact resume: the sample order,
the lr schedule, the optimiser state and, mid-epoch, the augmentation stream), trains until its time or
step budget runs out, saves, and returns. State crosses between calls only on disk, so a call may run in
a fresh process. `run_chunked` drives the calls and merges their events into one continuous run: one
StartEvent, every step and epoch, one EndEvent.

Stop reaches a call in another process through a file: the driver creates it when the run's stop event
is set, and the call's `Budget` sees it before the next step.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue as queues
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ..core.config import TrainConfig
from ..runfiles.events import EndEvent, EpochEvent, Event, StartEvent, StepEvent
from ..runfiles.names import checkpoint_stem
from ..training.data import load_dataset
from ..training.train import train

# What one call runs: run_chunk's arguments in, the engine's events out (run_chunk itself, run_chunk under
# `spaces.GPU`, or `in_fresh_process`).
ChunkCall = Callable[..., Iterator[Event]]


def train_seconds(seconds: float) -> float:
    """How long a call of `seconds` trains: a quarter (at least 10 s, at most half) is kept for starting,
    loading the checkpoint, the epoch-end kNN monitor and saving, so the call returns in time."""
    return seconds - min(seconds / 2, max(10.0, seconds / 4))


class Budget(threading.Event):
    """A call's stop signal for `train`: set by hand (a step budget), by the clock, or by the run's stop file."""

    def __init__(self, stop_file: str, deadline: float | None):
        super().__init__()
        self.stop_file, self.deadline = stop_file, deadline

    def is_set(self) -> bool:
        if super().is_set():
            return True
        late = self.deadline is not None and time.perf_counter() >= self.deadline
        if late or os.path.exists(self.stop_file):  # one stat per step: microseconds against a step's milliseconds
            self.set()
            return True
        return False


def run_chunk(cfg: dict, resume: str | None, seconds: float | None, steps: int | None, stop_file: str,
              cache_dir: str | None = None) -> Iterator[Event]:
    """One call: resume `cfg`'s run from `resume` (None: start it), train for at most `train_seconds(seconds)`
    and `steps` steps or until `stop_file` exists, save a resumable checkpoint and yield the engine's events.
    Module-level and fed only picklable values, so any process can run it."""
    t0 = time.perf_counter()
    config = TrainConfig.from_dict(cfg)
    budget = Budget(stop_file, t0 + train_seconds(seconds) if seconds else None)
    try:
        data = load_dataset(config.data, config.augment.size, cache_dir=cache_dir)
    except Exception as e:  # reported like the engine's own failures: as the last event
        yield EndEvent("failed", f"{type(e).__name__}: {e}", resume, 0, 0, time.perf_counter() - t0)
        return
    first = 0
    for ev in train(config, stop=budget, resume=resume, data=data):
        if isinstance(ev, StartEvent):
            first = ev.start_step
        elif steps and isinstance(ev, StepEvent) and ev.step >= first + steps:
            budget.set()  # the engine checks it before the next step, then saves
        yield ev


def _child(out, args: tuple) -> None:
    """A spawned process's body: run_chunk's events, then None; or the error's text."""
    try:
        for ev in run_chunk(*args):
            out.put(ev)
        out.put(None)
    except BaseException as e:  # noqa: BLE001 - whatever it was, the parent reports it
        out.put(f"{type(e).__name__}: {e}")


def in_fresh_process(*args) -> Iterator[Event]:
    """run_chunk in a newly spawned Python process (nothing inherited but the environment), its events
    streamed back: what a ZeroGPU call does, on any machine."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(out, args), daemon=True, name="vicreg-chunk")
    proc.start()
    try:
        while True:
            try:
                item = out.get(timeout=1.0)
            except queues.Empty:
                if proc.is_alive():
                    continue
                try:  # it may have exited right after its last put
                    item = out.get(timeout=1.0)
                except queues.Empty:
                    raise RuntimeError(f"the training process ended unexpectedly (exit code {proc.exitcode})") from None
            if item is None:
                return
            if isinstance(item, str):
                raise RuntimeError(item)
            yield item
    finally:
        proc.join(10)
        if proc.is_alive():  # the consumer gave up early
            proc.kill()
            proc.join()


@dataclass(frozen=True)
class Refusal:
    """A call that the GPU provider refused before it ran (on ZeroGPU: the visitor's daily GPU quota).
    `left`: the seconds it would still grant, if it said (a shorter call is then tried once); `why`: what
    to tell the user, who can resume the saved run later."""

    left: float | None
    why: str


@dataclass(frozen=True)
class ChunkPlan:
    """How a run is cut: calls of `seconds` (None: no time limit) and at most `steps` steps each (None: no
    step limit; tests cut runs by steps), each made through `call`."""

    seconds: float | None = 120.0
    steps: int | None = None
    call: ChunkCall = in_fresh_process
    cache_dir: str | None = None  # where the calls find the decoded dataset (the app's cache folder)
    zero_gpu: bool = False  # the calls are ZeroGPU's GPU calls (the Train tab says so)
    # which failures of a call are refusals (services/gpu.py reads ZeroGPU's quota errors); None: none are
    refused: Callable[[BaseException], Refusal | None] | None = None
    shortest: float = 20.0  # no call shorter than this is asked for (it would train almost nothing)

    @property
    def note(self) -> str:
        size = f"{self.seconds:g}-second" if self.seconds else f"{self.steps or 'unbounded'}-step"
        kind = "ZeroGPU GPU calls" if self.zero_gpu else "calls, each in a fresh process"
        return (f"Training runs as consecutive {size} {kind}; each resumes exactly from the checkpoint the last "
                "one saved, and the charts continue across them.")


def _relay_stop(stop: threading.Event, done: threading.Event, stop_file: str) -> None:
    while not done.is_set():
        if stop.wait(0.2):
            with open(stop_file, "w"):
                pass
            return


def run_chunked(cfg: TrainConfig, stop: threading.Event, resume: str | None, plan: ChunkPlan) -> Iterator[Event]:
    """`train(cfg, stop, resume)`'s events for a run made of `plan`'s calls: one StartEvent, the steps and
    epochs (elapsed counted from this run's start), and one EndEvent. Stop works within a call and between."""
    folder = tempfile.mkdtemp(prefix="vicreg-run-")
    stop_file = os.path.join(folder, "stop")
    done = threading.Event()
    relay = threading.Thread(target=_relay_stop, args=(stop, done, stop_file), daemon=True, name="vicreg-stop")
    relay.start()
    try:
        yield from _Chunks(cfg.to_dict(), stop, plan, stop_file, resume).events()
    finally:
        done.set()
        relay.join()
        shutil.rmtree(folder, ignore_errors=True)


class _Chunks:
    """The driver's state between calls: the merged run's start, and the last checkpoint and position."""

    def __init__(self, cfg: dict, stop: threading.Event, plan: ChunkPlan, stop_file: str, resume: str | None):
        self.cfg, self.stop, self.plan, self.stop_file = cfg, stop, plan, stop_file
        self.saved, self.epoch, self.step = resume, 0, 0
        self.begun = 0  # the step the latest call started from
        self.seconds = plan.seconds  # the next call's length: shorter once a refusal said what is left
        self.refused = False  # the provider refused a call: the run ends, saved, instead of calling again
        self.start: StartEvent | None = None
        self.t0 = time.perf_counter()

    def events(self) -> Iterator[Event]:
        while True:
            end = yield from self._call()
            if end.status != "stopped" or self.stop.is_set() or self.refused:  # finished, failed, stopped, refused
                yield end
                return
            self.saved = end.checkpoint
            if end.step <= self.begun:  # the next call would do the same: say what to change instead of looping
                yield self._failed("it ended before a single training step (starting up took the whole call); "
                                   "set VICREG_GPU_CHUNK_SECONDS higher")
                return

    def _call(self):
        """One call's events, passed on (a later call's StartEvent is dropped); returns its EndEvent."""
        offset, end = time.perf_counter() - self.t0, None
        p = self.plan
        try:
            for ev in p.call(self.cfg, self.saved, self.seconds, p.steps, self.stop_file, p.cache_dir):
                if isinstance(ev, StartEvent):
                    self.begun = ev.start_step
                    if self.start is None:
                        self.start = dataclasses.replace(ev, notes=[*ev.notes, p.note])
                        yield self.start
                elif isinstance(ev, EndEvent):
                    end = ev
                else:
                    self.epoch, self.step = ev.epoch, ev.step
                    if isinstance(ev, EpochEvent):
                        self.saved = ev.checkpoint
                    yield dataclasses.replace(ev, elapsed=ev.elapsed + offset)
        except Exception as e:  # the call itself failed (a ZeroGPU quota, a killed process): say so and stop
            refusal = p.refused(e) if p.refused else None
            if refusal is None:
                return self._failed(f"{type(e).__name__}: {e}")
            return (yield from self._refused(refusal))
        if end is None:
            return self._failed("it returned no result")
        self.epoch, self.step = end.epoch, end.step
        # a call that failed before saving reports no checkpoint, but the run has the last one saved
        return dataclasses.replace(end, checkpoint=end.checkpoint or self.saved, elapsed=time.perf_counter() - self.t0)

    def _refused(self, refusal: Refusal):
        """A refused call: once, a shorter one that fits what is left; else the run ends as stopped, saved."""
        if refusal.left is not None and refusal.left >= self.plan.shortest and self.seconds != refusal.left:
            self.seconds = refusal.left
            return (yield from self._call())
        self.refused = True
        where = (f"the run is saved in checkpoint {checkpoint_stem(self.saved)}: resume it then" if self.saved
                 else "nothing was trained yet")
        return EndEvent("stopped", f"{refusal.why}; {where}", self.saved, self.epoch, self.step,
                        time.perf_counter() - self.t0)

    def _failed(self, why: str) -> EndEvent:
        where = (f"the run is saved in checkpoint {checkpoint_stem(self.saved)}: resume it to go on" if self.saved
                 else "nothing was saved")
        call = "GPU call" if self.plan.zero_gpu else "training call"
        return EndEvent("failed", f"a {call} failed: {why}; {where}", self.saved, self.epoch, self.step,
                        time.perf_counter() - self.t0)
