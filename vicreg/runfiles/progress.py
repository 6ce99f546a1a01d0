"""The progress callback every long step takes: ``progress(fraction_done, what_is_happening)``."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]


def noop(frac: float, desc: str) -> None:  # noqa: ARG001 - a Progress that reports nowhere
    """The Progress to use when the caller gave none."""
