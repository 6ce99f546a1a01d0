"""The page header's handlers: the checkpoint list, a Hub download, and the data in use (with a
CIFAR-10 download when only the embedded sample is here). The layout is ui/header.py."""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import gradio as gr

from services.catalog import checkpoint_stem
from services.errors import CheckpointError, DataError
from services.hub import HubError, download_from_hub
from services.studio import Studio

from .common import DATA_HELP, esc, failure, msg, scrub

# A file inside a Hub repo: relative, '/'-separated parts that do not start with a dot (so no '..'),
# no backslash or control character, ending in .safetensors. The download lands under a name of our own
# in the checkpoint folder either way; this keeps odd paths away from the Hub client and its cache.
HUB_FILE = re.compile(r"(?:[\w-][\w.-]{0,99}/){0,8}[\w-][\w.-]{0,99}\.safetensors")
PROGRESS = gr.Progress()  # gradio gives each call its own tracker in place of this default


class DataOut(NamedTuple):
    status: Any
    download: Any


class HeaderHandlers:
    def __init__(self, studio: Studio):
        self.studio = studio

    def refresh(self, checkpoint) -> dict:
        """The checkpoint list (default model first), keeping the current choice while it is listed."""
        choices = self.studio.catalog.choices()
        return gr.update(choices=choices, value=self.studio.catalog.preferred(checkpoint, choices))

    def hub(self, repo_id, filename, secret=None) -> tuple:
        """Download a checkpoint from the Hub (admin only on a public demo) and select it."""
        if err := self.studio.access.admin_only(secret, "download checkpoints from the Hub"):
            return msg(esc(err), "error"), gr.skip()
        filename = str(filename or "").strip()
        if filename and not HUB_FILE.fullmatch(filename):
            return msg("The file must be a path inside the Hub repo ending in .safetensors, such as "
                       "<code>model.safetensors</code>, or empty for the repo's checkpoint.", "error"), gr.skip()
        try:
            path = download_from_hub(str(repo_id or ""), self.studio.checkpoint_dir, filename or None)
        except HubError as e:
            return msg(esc(scrub(e)), "error"), gr.skip()
        except (CheckpointError, OSError) as e:
            return failure("The downloaded checkpoint could not be saved", e, "The details are in the server log."), \
                gr.skip()
        return msg(f"Downloaded <code>{esc(checkpoint_stem(path))}</code> and selected it.", "ok"), self.refresh(path)

    def data_status(self) -> DataOut:
        data = self.studio.data
        if data.full_available():
            return DataOut(msg("Data: the full CIFAR-10 dataset.", "info"), gr.update(visible=False))
        if not data.using_sample():
            return DataOut(msg("No CIFAR-10 data and no embedded sample on this server. " + DATA_HELP, "warn"),
                           gr.update(visible=not data.root.endswith(".npz")))
        n_train, n_test = data.sample_sizes()
        return DataOut(msg(f"Data: the embedded sample of {n_train:,} training and {n_test:,} test CIFAR-10 images "
                           "(the full dataset is not here). Neighbours, the map and the Quick demo use it. "
                           + DATA_HELP, "info"),
                       gr.update(visible=not data.root.endswith(".npz")))

    def download(self, secret=None, progress=PROGRESS) -> DataOut:
        if err := self.studio.access.admin_only(secret, "download CIFAR-10"):
            return DataOut(msg(esc(err), "error"), gr.skip())
        try:
            self.studio.data.download(lambda f, d: progress(f, desc=d))
        except DataError as e:
            text = failure("CIFAR-10 could not be downloaded", e, "Is this server online? " + DATA_HELP)
            return DataOut(text, gr.skip())
        return DataOut(msg("CIFAR-10 downloaded: Evaluate, Explore and the map now use the full dataset.", "ok"),
                       gr.update(visible=False))
