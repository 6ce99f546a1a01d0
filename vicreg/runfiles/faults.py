"""Test hooks that break a run on purpose, to prove it survives. The trainer reads the spec once at
run setup (`from_env`, VICREG_FAULT) and hands the resulting `Fault` to what it calls; a normal run
gets an empty `Fault()`, whose hooks do nothing and read no environment.

VICREG_FAULT is a comma-separated list of:
- `exit:RANK:STEP`: that rank ends abruptly (exit code 17) before global step STEP + 1;
- `stop:RANK:STEP`: a stop is requested there (as Ctrl-C on that rank alone would);
- `kill@POINT:N`: this process SIGKILLs itself the N-th time it reaches POINT (N counts per process);
- `nan@STEP`: the loss of global step STEP (1-based, as messages count) becomes NaN.
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from typing import Callable

# Where a kill can land. ckpt_partial leaves the checkpoint's temporary file holding only the first
# half of its bytes (a kill mid-write); log leaves half a metrics line.
POINTS = {
    "step": "before a training step",
    "after_step": "after a step's optimiser update, before its metrics line",
    "log": "halfway through writing a metrics line",
    "knn": "inside the per-epoch kNN feature extraction",
    "ckpt_partial": "halfway through writing a checkpoint's temporary file",
    "ckpt_before_rename": "with a checkpoint's temporary file complete but not yet renamed",
    "sidecar": "after a checkpoint's rename, before its JSON sidecar is written",
    "sidecar_partial": "halfway through writing the JSON sidecar's temporary file",
    "epoch_end": "after an epoch's checkpoint, before its epoch line",
}


@dataclass
class Fault:
    rank_fault: tuple[str, int, int] | None = None  # (exit | stop, rank, step)
    kill_point: str | None = None
    kill_at: int = 0
    nan_step: int | None = None
    seen: int = 0  # how often this process has reached kill_point

    def reach(self, point: str, tear: Callable[[], None] | None = None) -> None:
        """SIGKILL this process when this is the N-th time at `point`; `tear` first leaves the half-done
        work that a kill at that moment leaves on disk."""
        if point != self.kill_point:
            return
        self.seen += 1
        if self.seen == self.kill_at:
            if tear is not None:
                tear()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_written(self, kind: str) -> Callable[[str], None]:
        """`atomic_write`'s hook for a checkpoint ('ckpt') or sidecar ('sidecar') temporary file."""
        def hook(tmp: str) -> None:
            self.reach(f"{kind}_partial", lambda: os.truncate(tmp, os.path.getsize(tmp) // 2))
            if kind == "ckpt":
                self.reach("ckpt_before_rename")
        return hook

    def poison(self, terms, step: int):
        """The loss terms of global step `step`, their total made NaN at the nan@ step."""
        return terms._replace(total=terms.total * float("nan")) if step == self.nan_step else terms

    def at_step(self, rank: int, step: int, stop: threading.Event) -> None:
        """The per-step check: a kill@step, and 'exit:RANK:STEP' ends that rank abruptly before global
        step STEP + 1, 'stop:RANK:STEP' requests a stop there (as Ctrl-C on that rank alone would)."""
        self.reach("step")
        if self.rank_fault is None:
            return
        what, at_rank, at = self.rank_fault
        if at_rank == rank and at == step:
            if what == "exit":
                os._exit(17)
            stop.set()


def from_env() -> Fault:
    """The run's hooks: VICREG_FAULT's, or an empty Fault (no hooks) when it is unset."""
    return parse(os.environ.get("VICREG_FAULT")) or Fault()


def parse(spec: str | None) -> Fault | None:
    """VICREG_FAULT's value -> a Fault (None when unset); a malformed spec raises ValueError."""
    if not spec:
        return None
    f = Fault()
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        try:
            if item.startswith("kill@"):
                point, _, n = item[len("kill@"):].partition(":")
                if point not in POINTS:
                    raise ValueError(f"unknown point {point!r}; use one of {', '.join(POINTS)}")
                f.kill_point, f.kill_at = point, int(n or 1)
            elif item.startswith("nan@"):
                f.nan_step = int(item[len("nan@"):])
            else:
                what, rank, at = item.split(":")
                if what not in ("exit", "stop"):
                    raise ValueError(f"unknown fault {what!r}")
                f.rank_fault = (what, int(rank), int(at))
        except ValueError as e:
            raise ValueError(f"VICREG_FAULT item {item!r}: {e} (see vicreg/runfiles/faults.py)") from None
    return f
