"""Heavy background work in child processes at the lowest CPU priority: the forward passes of a
feature bank (services/features/bank_child.py) and a UMAP fit (services/features/umap_fit.py).

Why a child and not a thread of the server: a low-priority thread of the server that holds the GIL
when the scheduler sets it aside would stall the server's requests and the training job's Python
between their torch ops; a whole process can be niced, keeps numba out of the server and returns its
memory when it ends. A child lowers its own priority first (`lower_priority`), so every thread it
starts inherits it; reports progress as `progress <fraction> <text>` lines on stdout (`report`); and
ends by itself when the app that started it is gone (`watch_parent`), so a stopped app leaves nothing
running.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Callable

from vicreg.runfiles.progress import Progress

# The project's root, the children's working directory, so that `-m services.features...` finds the package
# (as services/settings.py's ROOT; not imported from there: settings imports torch, which a child may not need)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NICE = 19  # the lowest priority: a training job (nice 0) keeps its cores; idle cores still do this work


def lower_priority(nice: int = NICE) -> None:
    """This process (and the threads it starts from now on) at `nice`."""
    if hasattr(os, "nice"):
        try:
            os.nice(max(0, nice - os.nice(0)))
        except OSError:  # a platform or sandbox that refuses: the work still gets done
            pass


def watch_parent(every: float = 1.0) -> None:
    """Exit as soon as the process that started this one has gone (this one is then re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="vicreg-watch-parent").start()


def report(fraction: float, text: str) -> None:
    print(f"progress {fraction:.4f} {text}", flush=True)


def _read_progress(stream, last: list) -> None:
    for line in stream:
        kind, _, rest = line.strip().partition(" ")
        fraction, _, text = rest.partition(" ")
        if kind == "progress":
            try:
                last[0] = (float(fraction), text)
            except ValueError:
                continue


def run(module: str, args: list[str], log_path: str, progress: Progress, timeout: float,
        estimate: Callable[[float], tuple[float, str]] | None = None) -> None:
    """`python -m module args` to the end, reporting its progress lines (or, for a child that prints
    none, `estimate(seconds so far)`); RuntimeError with the end of its log when it fails."""
    t0, last = time.perf_counter(), [None]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=log,
                                text=True)
        reader = threading.Thread(target=_read_progress, args=(proc.stdout, last), daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                elapsed = time.perf_counter() - t0
                if elapsed > timeout:
                    raise RuntimeError(f"{module} did not finish within {timeout:.0f}s")
                now = last[0] or (estimate(elapsed) if estimate else None)
                if now:
                    progress(*now)
                time.sleep(0.25)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(5)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-600:]
        raise RuntimeError(f"{module} failed (exit {proc.returncode}): {tail.strip()}")
