"""GPUs on Hugging Face Spaces: the `spaces.GPU` decorator, and training on ZeroGPU.

`spaces` (preinstalled on Spaces) is imported only on a Space (SPACE_ID set); everywhere else
`gpu_decorator` is the identity. On ZeroGPU (SPACES_ZERO_GPU true, by the `spaces` package's own rule) no
process holds a GPU except while a `spaces.GPU` function runs, a few minutes per call at most, so a training
run proceeds as consecutive calls of VICREG_GPU_CHUNK_SECONDS (default 120) seconds each, every one resuming
exactly from the checkpoint the last one saved (vicreg/orchestration/chunks.py). The calls must be decorated before the
app launches (ZeroGPU looks for them then): `chunk_plan` does it.

Set VICREG_GPU_CHUNK_SECONDS anywhere else to train the same way, each call in a freshly spawned process
(what ZeroGPU does): the ZeroGPU path, testable on any machine.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Callable, Mapping

from vicreg.orchestration.chunks import ChunkCall, ChunkPlan, Refusal, in_fresh_process, run_chunk

from . import exposure

log = logging.getLogger("vicreg.app")

DEFAULT_CHUNK_SECONDS = 120.0
MIN_CHUNK_SECONDS = 20.0  # a call trains 10 s of it (vicreg.orchestration.chunks.train_seconds)
TRUE = ("1", "t", "true")  # spaces.config.boolean: how the `spaces` package reads SPACES_ZERO_GPU


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def on_space(env: Mapping[str, str] | None = None) -> bool:
    return exposure.on_space(_env(env))


def zero_gpu(env: Mapping[str, str] | None = None) -> bool:
    """A ZeroGPU Space: its GPU exists only inside `spaces.GPU` calls."""
    env = _env(env)
    return on_space(env) and (env.get("SPACES_ZERO_GPU") or "").lower() in TRUE


def chunk_seconds(env: Mapping[str, str] | None = None) -> float | None:
    """The length of one training call: VICREG_GPU_CHUNK_SECONDS, else 120 on ZeroGPU, else None (no calls)."""
    env = _env(env)
    raw = env.get("VICREG_GPU_CHUNK_SECONDS")
    if not raw:
        return DEFAULT_CHUNK_SECONDS if zero_gpu(env) else None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if seconds >= MIN_CHUNK_SECONDS:
        return seconds
    log.warning("VICREG_GPU_CHUNK_SECONDS must be a number of seconds, at least %g; got %r, so %g is used",
                MIN_CHUNK_SECONDS, raw, DEFAULT_CHUNK_SECONDS)
    return DEFAULT_CHUNK_SECONDS


def gpu_decorator(duration: float | Callable[..., float], env: Mapping[str, str] | None = None) -> Callable:
    """`spaces.GPU(duration=...)` on a Space (where it does nothing unless the Space is ZeroGPU); elsewhere,
    or where `spaces` is missing, the identity."""
    if on_space(env):
        try:
            import spaces
        except ImportError:
            log.warning("this Space has no `spaces` package; GPU functions run undecorated")
        else:
            return spaces.GPU(duration=duration)
    return lambda fn: fn


# ZeroGPU's daily GPU time (Hugging Face's ZeroGPU documentation): 2 minutes for anonymous visitors, 5 for free
# accounts. A call that asks for more than is left is refused at once, with "…quota… (60s requested vs. 30s left)".
LEFT = re.compile(r"(\d+(?:\.\d+)?)\s*s\s+left", re.IGNORECASE)
QUOTA_WHY = ("your ZeroGPU quota for today is used up (Hugging Face gives anonymous visitors about 2 GPU minutes a "
             "day and free accounts 5): log in to Hugging Face for more, or come back later")


def quota_refusal(error: BaseException) -> Refusal | None:
    """A ZeroGPU quota refusal (and the seconds it says are left), or None for any other failure."""
    text = str(error)
    if "quota" not in text.lower() and type(error).__name__ != "ZeroGPUQuotaExceeded":
        return None
    left = LEFT.search(text)
    return Refusal(float(left.group(1)) if left else None, QUOTA_WHY)


def _call_seconds(_cfg: dict, _resume: str | None, seconds: float, *_args, **_kwargs) -> float:
    """ZeroGPU's duration for a call: the `seconds` it was given (spaces passes it run_chunk's arguments,
    which chunks.py gives by position)."""
    return seconds


def chunk_plan(cache_dir: str | None = None, env: Mapping[str, str] | None = None) -> ChunkPlan | None:
    """How the app's training job cuts runs here: ZeroGPU calls, fresh processes (VICREG_GPU_CHUNK_SECONDS
    off ZeroGPU), or None (one piece, in this process). Call it before the app launches."""
    seconds = chunk_seconds(env)
    if seconds is None:
        return None
    if zero_gpu(env):
        # spaces runs each call in a process forked from this one (the decorated generator's events are
        # streamed back); the duration it asks ZeroGPU for is the call's `seconds` argument
        call: ChunkCall = gpu_decorator(_call_seconds, env)(run_chunk)
        if call is run_chunk:  # no `spaces` package, so no GPU calls to make: train in one piece
            return None
        return ChunkPlan(seconds, call=call, cache_dir=cache_dir, zero_gpu=True, refused=quota_refusal,
                         shortest=MIN_CHUNK_SECONDS)
    return ChunkPlan(seconds, call=in_fresh_process, cache_dir=cache_dir)
