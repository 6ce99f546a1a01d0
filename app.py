"""VICReg Studio web app: `python app.py` (honours PORT / GRADIO_SERVER_PORT).

A thin Gradio layer: the training loop lives in vicreg/ (one TrainingJob per process, shared by every
visitor), the per-image / per-checkpoint work in vicreg/explore.py and vicreg/studio.py, and each
tab's layout in ui/. Nothing heavy happens at start-up: no dataset, umap or feature extraction.

Environment: VICREG_DATA (CIFAR-10 location), VICREG_CHECKPOINTS (checkpoint folder), VICREG_CACHE
(feature / UMAP / evaluation caches), VICREG_ADMIN_TOKEN (if set, starting/stopping training needs
it), VICREG_MAX_UPLOAD_MB (upload limit, default 20), VICREG_MAP_POINTS (test images on the map,
default 10000).
"""
from __future__ import annotations

import os

import gradio as gr

from ui import eval_tab, explore_tab, train_tab, umap_tab
from ui.common import checkpoint_choices, checkpoint_dir, esc, msg
from vicreg.jobs import TrainingJob
from vicreg.studio import HubError, Studio, download_from_hub

STUDIO = Studio()
# The one training job of this process; its data_loader caches the decoded dataset once.
JOB = TrainingJob(data_loader=lambda cfg: STUDIO.dataset(cfg.data))

CSS = """
.vr-status { font-size: 0.95em; }
.vr-bar { height: 14px; background: #eee; border-radius: 7px; overflow: hidden; margin: 4px 0 6px; }
.vr-fill { height: 100%; background: #4f8df5; transition: width 0.8s; }
.vr-fill.finished { background: #3bb273; } .vr-fill.failed { background: #e15554; } .vr-fill.stopped { background: #aaa; }
.vr-end { margin-top: 4px; }
#explore-original img, #explore-view1 img, #explore-view2 img, #explore-neighbours img, #explore-examples img,
#explore-embedding img { image-rendering: pixelated; }
"""


def build_demo(job: TrainingJob = JOB, studio: Studio = STUDIO) -> gr.Blocks:
    with gr.Blocks(title="VICReg Studio") as demo:
        gr.Markdown("# VICReg Studio\nVariance-Invariance-Covariance regularised self-supervised learning on CIFAR-10: "
                    "train, evaluate, and look inside the learned representation.")
        with gr.Row(equal_height=True):
            ckpt = gr.Dropdown([], label="Checkpoint (Evaluate / Explore / UMAP)", allow_custom_value=True, scale=4,
                               elem_id="checkpoint")
            refresh = gr.Button("↻ Refresh list", scale=0, min_width=120)
        with gr.Accordion("Load a checkpoint from the Hugging Face Hub", open=False):
            with gr.Row():
                repo = gr.Textbox(label="Model repo id", placeholder="user/vicreg-cifar10", scale=3)
                hub_file = gr.Textbox(label="File (optional; default: the repo's .safetensors)", scale=2)
                hub_btn = gr.Button("Download", scale=0, min_width=120)
            hub_msg = gr.Markdown()
        with gr.Tabs() as tabs:
            with gr.Tab("Train", id="train"):
                preset, (poll, poll_in, poll_out) = train_tab.build(job, studio, ckpt)
            with gr.Tab("Evaluate", id="evaluate"):
                eval_tab.build(studio, ckpt)
            with gr.Tab("Explore", id="explore"):
                explore_state, (examples, examples_out) = explore_tab.build(studio, ckpt, tabs, preset)
            with gr.Tab("UMAP", id="umap"):
                umap_tab.build(studio, ckpt, tabs, preset, explore_state)

        def refresh_list(checkpoint):
            current = checkpoint
            choices = checkpoint_choices()
            paths = [p for _, p in choices]
            return gr.update(choices=choices, value=current if current in paths else (paths[0] if paths else None))

        def hub(repo_id, filename, checkpoint):
            try:
                path = download_from_hub(repo_id, checkpoint_dir(), filename or None)
            except HubError as e:
                return msg(esc(e), "error"), gr.skip()
            upd = refresh_list(path)
            return msg(f"Downloaded to <code>{esc(path)}</code> and selected.", "ok"), upd

        refresh.click(refresh_list, ckpt, ckpt, api_name="checkpoints")
        hub_btn.click(hub, [repo, hub_file, ckpt], [hub_msg, ckpt], api_name="hub_load")
        # a (re)loaded page: list checkpoints, show the run in progress, fill the example gallery
        demo.load(refresh_list, ckpt, ckpt, api_visibility="private")
        demo.load(poll, poll_in, poll_out, api_visibility="private", show_progress="hidden")
        demo.load(examples, None, examples_out, api_visibility="private", show_progress="hidden")
    return demo


def main() -> None:
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    mb = float(os.environ.get("VICREG_MAX_UPLOAD_MB", 20))
    demo = build_demo()
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), server_port=port,
                max_file_size=f"{mb:g}mb", theme=gr.themes.Soft(), css=CSS, show_error=False,
                footer_links=["api", "gradio"])


if __name__ == "__main__":
    main()
