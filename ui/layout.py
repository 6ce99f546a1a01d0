"""The page: header and four tabs over one Studio and one TrainingJob, and what a (re)loaded page
fills in at once (checkpoint list, run in progress, example gallery, the stored map and report)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from services.studio import Studio
from services.training import TrainingJob

from . import eval_tab, explore_tab, header, train_tab, umap_tab
from .eval_handlers import EvalHandlers
from .explore_handlers import ExploreHandlers
from .header_handlers import HeaderHandlers
from .train_handlers import TrainHandlers
from .umap_handlers import UmapHandlers

CSS = """
.vr-status { font-size: 0.95em; }
.vr-bar { height: 14px; background: #eee; border-radius: 7px; overflow: hidden; margin: 4px 0 6px; }
.vr-fill { height: 100%; background: #4f8df5; transition: width 0.8s; }
.vr-fill.finished { background: #3bb273; } .vr-fill.failed { background: #e15554; }
.vr-fill.stopped { background: #aaa; }
.vr-end { margin-top: 4px; }
#explore-original img, #explore-view1 img, #explore-view2 img, #explore-neighbours img, #explore-examples img,
#explore-embedding img { image-rendering: pixelated; }
.vr-nbrs { display: flex; flex-wrap: wrap; gap: 10px; }
.vr-nbrs figure { margin: 0; text-align: center; }
.vr-nbrs img { width: 96px; height: 96px; image-rendering: pixelated; border-radius: 4px; }
.vr-nbrs figcaption { font-size: 0.8em; max-width: 110px; }
.vr-nbrs-title { font-size: 0.9em; margin-bottom: 6px; opacity: 0.8; }
"""

# A phone (390 px wide and the like): the page keeps 8 px margins, the header's rows (`vr-stack`, ui/header.py)
# become one column, the four tab buttons fit side by side (gradio moves tabs that do not fit into a "…" menu,
# measuring the buttons, so the smaller padding applies to its measuring copy too), the checkpoint's label fits,
# the example gallery wraps into the width instead of scrolling sideways, and the embedding, guess and map take
# a line each. In the page's head as written:
# gradio scopes `css` rules to the app's inner container, and the page margin is outside it.
PHONE = """<style>
@media (max-width: 640px) {
  .gradio-container div.main.app { padding-left: 8px !important; padding-right: 8px !important; }
  .gradio-container .vr-stack { flex-direction: column !important; align-items: stretch !important; }
  .gradio-container .vr-stack > * { width: 100% !important; min-width: 0 !important; flex: 0 0 auto !important; }
  .gradio-container .tab-container button { padding-left: 10px !important; padding-right: 10px !important; }
  .gradio-container #checkpoint input { font-size: 12px !important; text-overflow: ellipsis; margin-right: 16px; }
  .gradio-container #explore-examples .grid-container {
    grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)) !important; }
  .gradio-container .row:has(> #explore-guess) > * { min-width: 100% !important; }
}
</style>"""


@dataclass
class Handlers:
    header: HeaderHandlers
    train: TrainHandlers
    evaluate: EvalHandlers
    explore: ExploreHandlers
    umap: UmapHandlers

    @classmethod
    def create(cls, studio: Studio, job: TrainingJob) -> "Handlers":
        return cls(HeaderHandlers(studio), TrainHandlers(studio, job), EvalHandlers(studio), ExploreHandlers(studio),
                   UmapHandlers(studio))


def build_demo(studio: Studio, job: TrainingJob) -> gr.Blocks:
    h = Handlers.create(studio, job)
    # uploads and gradio's own output copies older than an hour are deleted hourly: a public Space runs for
    # weeks, and every visitor's upload lands in gradio's cache (ui/pictures.py sweeps the app's pictures)
    with gr.Blocks(title="VICReg Studio", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# VICReg Studio\nVariance-Invariance-Covariance regularised self-supervised learning on "
                    "CIFAR-10: train, evaluate, and look inside the learned representation.")
        top = header.build(h.header)
        preset = train_tab.preset_radio(h.train)  # shown in Train; Explore and UMAP (built before it) set it
        kept = train_tab.owner_store()
        # Explore first: a visitor's main use (upload an image, see its embedding), the first tab on a phone too
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                ex = explore_tab.build(h.explore, top.checkpoint, tabs, preset)
            with gr.Tab("Train", id="train"):
                train = train_tab.build(h.train, top.checkpoint, top.secret, preset, kept)
            with gr.Tab("Evaluate", id="evaluate"):
                ev = eval_tab.build(h.evaluate, top.checkpoint)
            with gr.Tab("UMAP", id="umap"):
                um = umap_tab.build(h.umap, top.checkpoint, tabs, preset, ex.state)
        private = dict(api_visibility="private", show_progress="hidden")
        # a (re)loaded page: checkpoint list, then the selected model's stored map and report; the same
        # after a refresh or a Hub download, which may select another checkpoint
        for event in [demo.load(h.header.refresh, top.checkpoint, top.checkpoint, **private), *top.changed]:
            event.then(h.umap.preview, um.inputs, um.outputs, **private) \
                .then(h.evaluate.stored, top.checkpoint, ev.outputs, **private)
        demo.load(h.header.data_status, None, [top.data_status, top.download], **private)
        demo.load(h.train.poll, train.poll_inputs, train.poll_outputs, **private)
        train_tab.restore_owner(demo, train)
        demo.load(h.explore.examples, None, [ex.gallery, ex.status], **private)
    return demo


def launch(demo: gr.Blocks, port: int, server_name: str, max_upload_mb: float) -> None:
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=server_name, server_port=port, max_file_size=f"{max_upload_mb:g}mb",
                theme=gr.themes.Soft(), css=CSS, head=PHONE, show_error=False, footer_links=["api", "gradio"])
