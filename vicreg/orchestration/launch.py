"""A run of several processes, started the way the command line's users start one (`torchrun`, docs/gpu.md),
as a child of this process, and seen as one stream of events: the app's multi-process runs.

The child is `python -m torch.distributed.run --standalone --nproc_per_node=N -m vicreg TRAIN <every option>`
(or RE_TRAIN). Every rank trains; rank 0 writes the checkpoint and the metrics file, so the events come from
that file, read as it grows (one JSON event per line; a line counts once its newline is written). A stop is
the command line's own: SIGTERM to the child's process group reaches every rank, the ranks agree on one step
and rank 0 saves one resumable checkpoint. The EndEvent is yielded only once every process has exited.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Iterator

from ..core.config import TrainConfig
from ..core.runtime import available_cpus
from ..runfiles.checkpoint import read_meta
from ..runfiles.events import EndEvent, EpochEvent, Event, StartEvent, StepEvent, WatchEvent
from ..runfiles.metrics import cut_torn_tail
from ..runfiles.names import metrics_path
from .cli import resume_args, train_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project, on PYTHONPATH
KINDS = {"start": StartEvent, "step": StepEvent, "epoch": EpochEvent, "watch": WatchEvent, "end": EndEvent}
SHUTDOWN_SECONDS = 600  # torchrun's wait for the ranks to save and exit after a stop, before it kills them
_running: set[subprocess.Popen] = set()  # stopped (and so saved) when this process exits
_hooked: list[bool] = []  # the exit hook is registered (once, with the first run)


def max_processes() -> int:
    """The most processes a run may use here: one per GPU on a CUDA machine, else 2 CPU processes (to try it)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 2


def rank_threads(cfg: TrainConfig, processes: int) -> int:
    """Each rank's share of cfg.threads (0: the CPUs this process may use), at least one."""
    return max(1, (cfg.threads or available_cpus()) // processes)


def check_processes(cfg: TrainConfig, processes: int) -> None:
    """A ValueError that says why `cfg` cannot run on `processes` processes (the trainer's own rule, checked
    before any process starts)."""
    if processes < 2:
        raise ValueError(f"a torchrun run needs at least 2 processes, got {processes}")
    if cfg.batch_size % processes:
        raise ValueError(f"the batch size ({cfg.batch_size}) is the global batch and must divide by the {processes} "
                         "processes")


def command(cfg: TrainConfig, processes: int, resume: str | None = None) -> list[str]:
    """The child's command line."""
    check_processes(cfg, processes)
    cfg = cfg.with_values({"threads": rank_threads(cfg, processes)})
    args = resume_args(cfg, resume, read_meta(resume)) if resume else train_args(cfg)
    # only rank 0's output: its `error:` line is the run's (the other ranks' say that rank 0 failed)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            f"--shutdown-timeout={SHUTDOWN_SECONDS}", "--local-ranks-filter=0", "-m", "vicreg", *args]


def event(d: dict) -> Event:
    """An event from its JSON form (vicreg.runfiles.events.to_dict); fields this version does not know are left out."""
    kind = KINDS[d["kind"]]
    return kind(**{f.name: d[f.name] for f in dataclasses.fields(kind) if f.name in d})


class _Tail:
    """The events in the complete lines appended to a file since `offset`; `seen` keeps every one."""

    def __init__(self, path: str, offset: int):
        self.path, self.offset, self.pending = path, offset, b""
        self.seen: list[Event] = []

    def events(self) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:  # rank 0 opens it once the data is loaded
            return []
        self.offset += len(chunk)
        *done, self.pending = (self.pending + chunk).split(b"\n")
        new = [event(json.loads(line)) for line in done if line.strip()]
        self.seen += new
        return new


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # torchrun and every rank: the ranks stop together, torchrun then exits
    except (ProcessLookupError, PermissionError):
        pass


def _stop_all() -> None:
    for proc in list(_running):
        _signal(proc, signal.SIGTERM)


def _track(proc: subprocess.Popen) -> None:
    """Keep `proc` to stop (and so save) when this process exits; the exit hook is set with the first one."""
    if not _hooked:
        atexit.register(_stop_all)
        _hooked.append(True)
    _running.add(proc)


def run_torchrun(cfg: TrainConfig, stop: threading.Event, processes: int, resume: str | None = None,
                 poll: float = 0.2) -> Iterator[Event]:
    """Run `cfg` (continuing `resume` when given: cfg is then its resume_config) on `processes` processes and yield
    rank 0's events as they are written, always ending with one EndEvent. Setting `stop` stops every rank after
    its current step with one resumable checkpoint."""
    t0 = time.perf_counter()
    argv = command(cfg, processes, resume)
    path = metrics_path(cfg.checkpoint_dir, cfg.name)
    os.makedirs(cfg.checkpoint_dir, exist_ok=True)
    cut_torn_tail(path)  # what the run would cut itself: the events before this offset are older runs'
    tail = _Tail(path, os.path.getsize(path) if os.path.exists(path) else 0)
    env = {**os.environ, "OMP_NUM_THREADS": str(rank_threads(cfg, processes)),
           "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _track(proc)
        try:
            end = yield from _follow(proc, tail, stop, poll)
        finally:
            if proc.poll() is None:  # the consumer went away: stop the ranks, as Ctrl-C would
                _signal(proc, signal.SIGTERM)
            _reap(proc)
            _running.discard(proc)
        end = end or _missing_end(tail.seen, stop.is_set(), proc.returncode, _log_tail(log), t0)
    yield end


def _follow(proc: subprocess.Popen, tail: _Tail, stop: threading.Event, poll: float):
    """Yield the events until the child exits; return its EndEvent (held back until then) or None."""
    end, signalled = None, False
    while True:
        running = proc.poll() is None
        for ev in tail.events():
            if isinstance(ev, EndEvent):
                end = ev
            else:
                yield ev
        if not running:
            return end
        if stop.is_set() and not signalled:
            _signal(proc, signal.SIGTERM)
            signalled = True
        time.sleep(poll)


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(SHUTDOWN_SECONDS + 60)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()


def _log_tail(log: IO[bytes], n: int = 4000) -> str:
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - n))
    return log.read().decode("utf-8", "replace").replace("\r", "\n")


def _missing_end(seen: list[Event], stopped: bool, code: int | None, output: str, t0: float) -> EndEvent:
    """The EndEvent of a run whose rank 0 wrote none: stopped before its first step, or failed (the command
    line's own `error:` line when there is one)."""
    last = next((e for e in reversed(seen) if isinstance(e, EpochEvent) and e.checkpoint), None)  # the last saved
    step = max((e.step for e in seen if isinstance(e, (StepEvent, EpochEvent))), default=0)
    epoch, ckpt, elapsed = (last.epoch if last else 0), (last.checkpoint if last else None), time.perf_counter() - t0
    if stopped and not any(isinstance(e, StartEvent) for e in seen):
        return EndEvent("stopped", "stopped before the first step: nothing was saved", None, 0, 0, elapsed)
    errors = [line[len("error: "):] for line in output.splitlines() if line.startswith("error: ")]
    reason = errors[-1].removeprefix("failed: ") if errors else (
        f"the training processes ended with exit code {code}: "
        + " ".join(line.strip() for line in output.splitlines()[-3:] if line.strip())[:300])
    return EndEvent("failed", reason, ckpt, epoch, step, elapsed)
