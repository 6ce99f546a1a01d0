"""The page header's layout: the checkpoint picker shared by all tabs, the admin secret, a Hub download, and
the data in use (with a Download CIFAR-10 action when only the embedded sample is here). Its rows stack into
one column on a phone (the `vr-stack` class, ui/layout.py's CSS). Handlers: ui/header_handlers.py."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .header_handlers import HeaderHandlers

DOWNLOAD_LABEL = "Download CIFAR-10 (170 MB)"
STACK = ["vr-stack"]  # a row that becomes one column on a narrow screen


@dataclass
class Header:
    checkpoint: gr.Dropdown
    data_status: gr.Markdown
    download: gr.Button
    secret: gr.Textbox  # the admin secret of a public demo (services/access.py); hidden when none is set
    changed: list  # events after which the selected checkpoint may have changed (refresh, Hub download)


def build(h: HeaderHandlers) -> Header:
    choices = h.studio.catalog.choices()
    with gr.Row(equal_height=True, elem_classes=STACK, elem_id="header-checkpoint"):
        ckpt = gr.Dropdown(choices, value=h.studio.catalog.preferred(None, choices), allow_custom_value=True, scale=4,
                           label="Checkpoint (Evaluate / Explore / UMAP)", elem_id="checkpoint")
        refresh = gr.Button("↻ Refresh list", scale=0, min_width=120, elem_id="checkpoint-refresh")
        secret = gr.Textbox(label="Admin secret", type="password", visible=h.studio.access.secret_set, scale=1,
                            elem_id="admin-secret")
    with gr.Accordion("Load a checkpoint from the Hugging Face Hub", open=False):
        with gr.Row(elem_classes=STACK):
            repo = gr.Textbox(label="Model repo id", placeholder="user/vicreg-cifar10", scale=3)
            hub_file = gr.Textbox(label="File (optional; default: the repo's .safetensors)", scale=2)
            hub_btn = gr.Button("Download", scale=0, min_width=120)
        hub_msg = gr.Markdown()
    with gr.Row(equal_height=True, elem_classes=STACK, elem_id="header-data"):
        data_status = gr.Markdown(elem_id="data-status")
        download = gr.Button(DOWNLOAD_LABEL, visible=False, scale=0, min_width=220, elem_id="data-download")
    refreshed = refresh.click(h.refresh, ckpt, ckpt, api_name="checkpoints")
    loaded = hub_btn.click(h.hub, [repo, hub_file, secret], [hub_msg, ckpt], api_name="hub_load")
    download.click(h.download, secret, [data_status, download], api_name="download_data", concurrency_id="heavy",
                   concurrency_limit=1)
    return Header(ckpt, data_status, download, secret, [refreshed, loaded])
