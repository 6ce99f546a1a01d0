"""Feature banks and maps built in the background, one at a time, at the lowest CPU priority.

One worker thread takes the stages asked for, the latest request first: a bank (the data loaded in
this process, for the neighbours' thumbnails; the forward passes in a child process) or a map (the
UMAP fit in a child process). services/features/children.py says why children, and how they stay out of a
training job's way. The thread lowers its own priority too, and so do the decoding threads it starts.
Anyone may wait on a stage, with a timeout, and read its progress meanwhile.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import children
from .bank_store import BankStore, Where
from .models import ModelCache

log = logging.getLogger("vicreg.banks")
BANK, MAP = "bank", "map"
WAITING, RUNNING, READY, FAILED = "waiting", "running", "ready", "failed"


@dataclass
class Stage:
    kind: str  # BANK or MAP
    where: Where
    state: str = WAITING
    fraction: float = 0.0
    text: str = "waiting for other work to finish"
    error: str = ""
    started: float | None = None
    seconds: float | None = None  # how long it took, once ready

    @property
    def done(self) -> bool:
        return self.state in (READY, FAILED)


class Builder:
    def __init__(self, store: BankStore, models: ModelCache, timeout: float = 6 * 3600):
        self.store, self.models, self.timeout = store, models, timeout
        self._cond = threading.Condition()
        self._stages: dict[tuple[str, str], Stage] = {}
        self._queue: list[Stage] = []
        self._worker: threading.Thread | None = None

    def stage(self, kind: str, where: Where) -> Stage | None:
        """The stage if it was asked for in this process."""
        with self._cond:
            return self._stages.get((kind, self.store.folder(where)))

    def request(self, wanted: list[tuple[str, Where]], retry: bool = True) -> list[Stage]:
        """Queue these stages ahead of the others, in this order; `retry`: a failed one is tried again."""
        keys = [(kind, self.store.folder(w)) for kind, w in wanted]
        with self._cond:
            out = []
            for key, (kind, w) in zip(keys, wanted, strict=True):
                st = self._stages.get(key)
                if st is None or retry and st.state == FAILED:
                    st = self._stages[key] = Stage(kind, w)
                out.append(st)
            todo = [st for st in out if st.state == WAITING]
            self._queue = todo + [st for st in self._queue if st not in todo]
            if todo and (self._worker is None or not self._worker.is_alive()):
                self._worker = threading.Thread(target=self._run, daemon=True, name="vicreg-banks")
                self._worker.start()
            self._cond.notify_all()
        return out

    def wait(self, st: Stage, seconds: float) -> Stage:
        """Until the stage is done or `seconds` pass."""
        with self._cond:
            self._cond.wait_for(lambda: st.done, seconds)
        return st

    def _progress(self, st: Stage, fraction: float, text: str) -> None:
        with self._cond:
            st.fraction, st.text = max(0.0, min(1.0, fraction)), text
            self._cond.notify_all()

    def _run(self) -> None:
        _lower_thread_priority()
        while True:
            with self._cond:
                if not self._queue:
                    return
                st = self._queue.pop(0)
                st.state, st.started = RUNNING, time.perf_counter()
                self._cond.notify_all()
            try:
                (self._bank if st.kind == BANK else self._map)(st)
                state, error = READY, ""
            except Exception as e:  # noqa: BLE001 - recorded on the stage; waiters show it, the log has it
                log.warning("building the %s %s failed: %s", st.kind, self.store.folder(st.where), e, exc_info=e)
                state, error = FAILED, f"{type(e).__name__}: {e}"
            with self._cond:
                st.state, st.error, st.seconds = state, error, time.perf_counter() - st.started
                st.fraction = 1.0 if state == READY else st.fraction
                self._cond.notify_all()

    def _bank(self, st: Stage) -> None:
        w = st.where
        self._progress(st, 0.0, "loading the test images")
        test, rows, classes = self.store.test_images(w)  # this thread: its decoding threads inherit the priority
        if self.store.bank(w) is not None:
            return
        d = self.store.folder(w)
        os.makedirs(d, exist_ok=True)
        images, out = os.path.join(d, "images.tmp.npy"), os.path.join(d, "features.tmp.npy")
        np.save(images, test.images.numpy()[rows])
        rt = self.models.rt
        args = [os.path.abspath(w.checkpoint), images, out, str(self.models.threads), rt.device.type,
                "bf16" if rt.bf16 else "fp32"]
        try:
            children.run("services.features.bank_child", args, os.path.join(d, "bank.log"),
                         lambda f, text: self._progress(st, 0.05 + 0.95 * f, text), self.timeout)
            feats = np.load(out, allow_pickle=False)
            self.store.save_bank(w, feats, test.labels.numpy()[rows], rows, classes)
        finally:
            for f in (images, out):
                if os.path.exists(f):
                    os.remove(f)

    def _map(self, st: Stage) -> None:
        w = st.where
        if self.store.coords(w) is not None:
            return
        if self.store.bank(w) is None:
            raise RuntimeError("the feature bank this map is made from is not there")
        d = self.store.folder(w)
        args = [os.path.abspath(os.path.join(d, "features.npy")), os.path.abspath(os.path.join(d, "umap.npy"))]

        def estimate(seconds: float) -> tuple[float, str]:  # nothing from inside UMAP: ~10-30 s for 10k points
            return min(0.95, seconds / 30), f"fitting UMAP: {seconds:.0f} s of about 10-30 s"

        children.run("services.features.umap_fit", args, os.path.join(d, "umap.log"),
                     lambda f, text: self._progress(st, f, text), self.timeout, estimate)


def _lower_thread_priority() -> None:
    """This thread (Linux: the nice value is per thread, and threads started from it inherit it)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), children.NICE)
    except (AttributeError, OSError):
        pass
