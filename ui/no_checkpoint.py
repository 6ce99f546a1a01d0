"""The "no trained checkpoint yet" box of the Explore and UMAP tabs, with its button to the Quick demo."""
from __future__ import annotations

import gradio as gr

from .common import NO_CHECKPOINT, QUICK


def quick() -> tuple:
    """Open the Train tab on the Quick CPU demo preset."""
    return gr.Tabs(selected="train"), QUICK


def box(tabs: gr.Tabs, preset: gr.Radio) -> gr.Column:
    """The box, hidden until a handler shows it (no checkpoint to show anything with)."""
    with gr.Column(visible=False) as column:
        gr.Markdown(NO_CHECKPOINT)
        button = gr.Button("Set up the Quick CPU demo in the Train tab", variant="primary")
    button.click(quick, None, [tabs, preset], api_visibility="private")
    return column
