"""Train tab layout: presets and knobs, Start / Stop / Resume, and live charts polled from the job."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from services.training import (
    LONG_DEMO,
    MAX_VIEWS,
    PRESETS,
    QUICK,
    VIEW_SIZE,
    ChunkPlan,
    devices,
    runtime_of,
)

from . import charts
from .common import CUSTOM, KNOBS, base_config, knob_arg, knob_values, msg, preset_choices
from .train_handlers import PollOut, TrainHandlers, preset_knobs
from .train_status import progress_html

COLLAPSE_NOTE = (
    "**Watch collapse:** set the *variance* weight to 0 (or variance and covariance both to 0) and start: "
    "nothing then stops all images mapping to the same point, so the embeddings' std and effective-rank "
    "charts fall towards zero within a few dozen steps while the loss looks *better*."
)


@dataclass
class TrainTab:
    preset: gr.Radio
    device: gr.Dropdown
    processes: gr.Number
    knobs: dict  # dotted TrainConfig field name (KNOBS) -> its component
    threads: gr.Number
    secret: gr.Textbox
    start: gr.Button
    stop: gr.Button
    resume_from: gr.Dropdown
    more_epochs: gr.Number
    resume: gr.Button
    message: gr.Markdown
    progress: gr.HTML
    loss_plot: gr.Plot
    lr_plot: gr.Plot
    health_plot: gr.Plot
    knn_plot: gr.Plot
    map_plot: gr.Plot
    status: gr.JSON
    seen: gr.State
    checkpoint: gr.Dropdown  # the header's, refreshed when a run saves a checkpoint
    owner: gr.State  # this visitor's token for the run they started (services/access.py) ...
    kept: gr.BrowserState  # ... and its copy in the browser, which a reloaded page reads back into `owner`

    @property
    def poll_inputs(self) -> list:
        return [self.seen, self.checkpoint, self.resume_from]

    @property
    def poll_outputs(self) -> list:
        return [getattr(self, f) for f in PollOut._fields]


GPU = "gpu"
GPU_ON_CPU = ("The GPU recipe is meant for a GPU: on this device it takes more than a day (the default model's "
              "recipe, cpu120, takes about 2 hours on a 2-core CPU). Pick a CUDA device, or a CPU preset.")


def gpu_label(cuda: bool) -> str:
    p = PRESETS[GPU]
    shape = f"LARS, batch {p['batch_size']}, {p['epochs']} epochs"
    return f"GPU recipe ({shape})" if cuda else f"GPU recipe ({shape}; meant for a GPU)"


def presets(cuda: bool) -> list[tuple[str, str]]:
    """The preset choices, the GPU recipe before Custom, labelled for whether this machine has a GPU."""
    listed = [c for c in preset_choices() if c[1] not in (GPU, CUSTOM)]
    return listed + ([(gpu_label(cuda), GPU)] if GPU in PRESETS else []) + [("Custom", CUSTOM)]


def describe_device(dev: str, preset: str | None = None, chunks: ChunkPlan | None = None) -> str:
    """The device a run on `dev` uses, how it is run (ZeroGPU calls), and a warning for the GPU recipe on a CPU."""
    try:
        described, kind = runtime_of(dev)
    except ValueError as e:
        return msg(str(e), "warn")
    lines = [f"**Device:** {described}"]
    if chunks is not None:
        lines.append(msg(chunks.note, "info"))
    if preset == GPU and kind == "cpu":
        lines.append(msg(GPU_ON_CPU, "warn"))
    return "\n\n".join(lines)


def _knobs(threads_default: int) -> tuple[dict, gr.Number]:
    q = knob_values(base_config(QUICK))
    k = {}
    with gr.Row():
        k["name"] = gr.Textbox(q["name"], label="Run name (checkpoint file name)")
        k["epochs"] = gr.Number(q["epochs"], label="Epochs", precision=0, minimum=1, elem_id="train-epochs")
        k["batch_size"] = gr.Number(q["batch_size"], label="Batch size", precision=0, minimum=2, elem_id="train-batch")
        k["optimizer"] = gr.Radio(["lars", "adamw"], value=q["optimizer"], label="Optimizer")
        k["lr"] = gr.Number(q["lr"], label="Base LR (0 = optimizer default; scaled by batch/256)", minimum=0)
    with gr.Row():
        k["loss.inv_coeff"] = gr.Number(q["loss.inv_coeff"], label="Invariance weight λ", minimum=0)
        k["loss.var_coeff"] = gr.Number(q["loss.var_coeff"], label="Variance weight μ", minimum=0)
        k["loss.cov_coeff"] = gr.Number(q["loss.cov_coeff"], label="Covariance weight ν", minimum=0)
        k["train_subset"] = gr.Number(q["train_subset"], label="Train images (0 = all)", precision=0, minimum=0,
                                      elem_id="train-subset")
    with gr.Row():  # the views each image gives a step: a preset sets them (cpu150: four small ones)
        k["augment.views"] = gr.Number(q["augment.views"], label="Views per image (2 = VICReg's pair; more = "
                                       "multi-view)", precision=0, minimum=2, maximum=MAX_VIEWS, elem_id="train-views")
        k["augment.view_size"] = gr.Number(q["augment.view_size"],
                                           label=f"Training view size (px, 0 = full {VIEW_SIZE})", precision=0,
                                           minimum=0, maximum=VIEW_SIZE, elem_id="train-view-size")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            k["knn_train"] = gr.Number(q["knn_train"], label="kNN monitor bank (train images)", precision=0,
                                       minimum=1)
            k["knn_test"] = gr.Number(q["knn_test"], label="kNN monitor queries (0 = off)", precision=0, minimum=0)
            k["warmup_epochs"] = gr.Number(q["warmup_epochs"], label="Warm-up epochs", minimum=0)
            threads = gr.Number(0, label=f"CPU threads (0 = {threads_default}; use 1 if the CPU is shared)",
                                precision=0, minimum=0, maximum=256, elem_id="train-threads")
    assert set(k) == set(KNOBS), "the Train tab shows every knob"
    return k, threads


def preset_radio(h: TrainHandlers) -> gr.Radio:
    """The preset choice, made before the tabs and shown in the Train tab (`build`): Explore and UMAP set it."""
    return gr.Radio(presets(h.training.cuda_available()), value=QUICK, label="Preset", scale=3, elem_id="train-preset",
                    render=False)


def owner_store() -> gr.BrowserState:
    """Where the browser keeps this visitor's owner token (encrypted in its localStorage). Made at the page's
    top level, outside the tabs: a tab's contents are only mounted once it is shown, and a reloaded page reads
    the token back at once."""
    return gr.BrowserState(None, storage_key="vicreg-run-owner")


def _copy(value):
    """The value unchanged: copies the owner token between the page's memory (gr.State) and the browser."""
    return value


def build(h: TrainHandlers, ckpt: gr.Dropdown, secret: gr.Textbox, preset: gr.Radio,
          kept: gr.BrowserState) -> TrainTab:
    gr.Markdown("Self-supervised VICReg pre-training of a ResNet-18 on CIFAR-10. The run continues in the "
                "server when you close or reload the page; one run at a time is shared by all visitors.")
    most = h.most_processes()
    with gr.Row():
        preset.render()
        with gr.Column(scale=1, min_width=160):
            device = gr.Dropdown(devices(), value="auto", label="Device")
            processes = gr.Number(1, label=f"Processes (torchrun; 1–{most})", precision=0, minimum=1, maximum=most,
                                  visible=most > 1, elem_id="train-processes")
    device_md = gr.Markdown(describe_device("auto", QUICK, h.training.chunks), elem_id="train-device")
    knobs, threads = _knobs(h.studio.threads)
    gr.Markdown(COLLAPSE_NOTE)
    if h.studio.access.public:
        lift = ("The admin secret lifts these limits." if h.studio.access.secret_set
                else "This server has no admin secret, so the limits apply to everyone.")
        views = base_config(LONG_DEMO).augment.views
        gr.Markdown(f"This is a shared demo: you may start a run up to the size of the 10-minute CPU demo ({views} "
                    f"views per image), in one process. It stops by itself after {h.studio.access.visitor_minutes:g} "
                    "minutes, and only you (or the admin) can stop it, from this browser even after a reload; "
                    "everyone else watches it live. " + lift, elem_id="train-public-note")
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="train-start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
    with gr.Row():
        resume_from = gr.Dropdown([], label="Resume from checkpoint", scale=3, allow_custom_value=True,
                                  elem_id="resume-from")
        more = gr.Number(0, label="More epochs (0 = finish the planned run)", precision=0, minimum=0, scale=1,
                         elem_id="resume-more")
        resume_btn = gr.Button("Resume", scale=1, elem_id="train-resume")
    message = gr.Markdown(elem_id="train-message")
    progress = gr.HTML(progress_html(h.training.snapshot()))
    plots = _charts()
    tab = TrainTab(preset, device, processes, knobs, threads, secret, start_btn, stop_btn, resume_from, more,
                   resume_btn, message, progress, *plots, gr.JSON(visible=False), gr.State(None), ckpt,
                   gr.State(None), kept)
    _wire(h, tab, device_md)
    return tab


def _charts() -> tuple[gr.Plot, gr.Plot, gr.Plot, gr.Plot, gr.Plot]:
    """The live charts: loss, learning rate, embedding health, accuracy, map (TrainTab's order). What learning
    looks like comes first: the guess's accuracy against the untrained start, and the classes separating."""
    with gr.Row():
        knn_plot = gr.Plot(charts.empty(charts.ACCURACY_TITLE), label="Accuracy", elem_id="knn-plot", scale=3)
        map_plot = gr.Plot(charts.live_map_figure(None, 1), label="Map", elem_id="train-map", scale=2)
    with gr.Row():
        loss_plot = gr.Plot(charts.empty("Loss"), label="Loss", elem_id="loss-plot", scale=3)
        with gr.Column(scale=2):
            health_plot = gr.Plot(charts.empty("Embedding std / effective rank"), label="Embedding health",
                                  elem_id="health-plot")
            lr_plot = gr.Plot(charts.empty("Learning rate"), label="Learning rate", elem_id="lr-plot")
    return loss_plot, lr_plot, health_plot, knn_plot, map_plot


def _wire(h: TrainHandlers, t: TrainTab, device_md: gr.Markdown) -> None:
    private = dict(api_visibility="private", show_progress="hidden")
    t.preset.change(preset_knobs, t.preset, [t.knobs[k] for k in KNOBS], api_visibility="private")

    def device_note(dev: str, chosen: str) -> str:
        return describe_device(dev, chosen, h.training.chunks)

    for source in (t.preset, t.device):
        source.change(device_note, [t.device, t.preset], device_md, api_visibility="private")
    # the knobs travel by name: the handler's keyword arguments and the API's parameters are KNOBS' last parts
    named = {knob_arg(k): t.knobs[k] for k in KNOBS}
    run = dict(threads=t.threads, device=t.device, secret=t.secret)
    t.start.click(h.start, [t.preset], [t.message, t.owner], api_name="train_start", concurrency_limit=None,
                  inputs_kwargs={**named, **run, "owner": t.owner, "processes": t.processes}) \
        .then(_copy, t.owner, t.kept, **private)
    t.stop.click(h.stop, [t.secret, t.owner], t.message, api_name="train_stop", concurrency_limit=None)
    t.resume.click(h.resume, [t.resume_from, t.more_epochs, t.threads, t.device, t.secret, t.processes], t.message,
                   api_name="train_resume", concurrency_limit=None)
    gr.Timer(1.5).tick(h.poll, t.poll_inputs, t.poll_outputs, api_name="train_status", show_progress="hidden",
                       concurrency_limit=None)


def restore_owner(demo: gr.Blocks, t: TrainTab) -> None:
    """A (re)loaded page takes its owner token back from the browser: its starter can still stop the run."""
    demo.load(_copy, t.kept, t.owner, api_visibility="private", show_progress="hidden")
