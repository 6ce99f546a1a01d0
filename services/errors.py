"""The errors a visitor's request may meet that are not bugs, for the page to explain (its one rule from an
error to a message: ui/common.py `explain`): a checkpoint that cannot be used, data that cannot be loaded, an
image that cannot be read, and what reading files and running models raise."""
from __future__ import annotations

from vicreg.runfiles.names import CheckpointError
from vicreg.training.data import DataError

from .images import BadImage

__all__ = ["EXPECTED", "BadImage", "CheckpointError", "DataError"]

# Anything else is a bug and propagates: gradio then shows its own generic error.
EXPECTED = (CheckpointError, DataError, BadImage, RuntimeError, OSError, ValueError)
