"""Train tab: presets and knobs, Start / Stop / Resume, and live charts polled from the shared job."""
from __future__ import annotations

import os

import gradio as gr

from vicreg.checkpoint import CheckpointError, read_meta, safe_name
from vicreg.config import LossConfig, TrainConfig

from . import charts
from .common import KNOBS, PRESETS, QUICK, admin_error, admin_required, checkpoint_choices, checkpoint_dir, esc, fmt_seconds, msg

COLLAPSE_NOTE = (
    "**Watch collapse:** set the *variance* weight to 0 (or variance and covariance both to 0) and start: "
    "nothing then stops all images mapping to the same point, so the embeddings' std and effective-rank "
    "charts fall towards zero within a few dozen steps while the loss looks *better*."
)


def _devices() -> list[str]:
    import torch

    out = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def _describe_device(dev: str) -> str:
    from vicreg.runtime import make_runtime

    try:
        return f"**Device:** {make_runtime(dev).describe()}"
    except ValueError as e:
        return msg(str(e), "warn")


def make_config(knobs: dict, data_root: str, device: str, threads: int = 0) -> TrainConfig:
    cfg = TrainConfig(
        name=safe_name(str(knobs["name"] or "vicreg_model").strip()), epochs=int(knobs["epochs"]),
        batch_size=int(knobs["batch_size"]), optimizer=knobs["optimizer"], lr=float(knobs["lr"]) or None,
        train_subset=int(knobs["train_subset"]) or None, knn_train=int(knobs["knn_train"]), knn_test=int(knobs["knn_test"]),
        warmup_epochs=float(knobs["warmup"]), device=device, data=data_root, checkpoint_dir=checkpoint_dir(), threads=threads,
        loss=LossConfig(inv_coeff=float(knobs["inv"]), var_coeff=float(knobs["var"]), cov_coeff=float(knobs["cov"])),
    )
    if min(cfg.loss.inv_coeff, cfg.loss.var_coeff, cfg.loss.cov_coeff) < 0:
        raise ValueError("loss weights must be 0 or positive")
    return cfg.validate()


def progress_html(snap) -> str:
    if snap.run_id == 0:
        return "<div id='train-progress' class='vr-status'>No training run yet in this server process.</div>"
    st, last, start = snap.status, snap.last, snap.start
    total = start.total_steps if start else 0
    step = last.step if last else (start.start_step if start else 0)
    frac = step / total if total else 0.0
    parts = [f"run {snap.run_id} <b>{esc(st)}</b>"]
    if start:
        parts.append(f"<b>{esc(start.run)}</b> on {esc(start.runtime)}")
        parts.append(f"epoch {min((last.epoch + 1) if last else start.start_epoch + 1, start.epochs)}/{start.epochs}")
        parts.append(f"step {step}/{total}")
    elif st == "loading":
        parts.append("loading CIFAR-10…")
    if last:
        parts.append(f"{last.pairs_per_s:.0f} pairs/s")
        parts.append(f"loss {last.loss:.3f}")
        if snap.active:
            parts.append(f"ETA {fmt_seconds(snap.eta_seconds())}")
    end = ""
    if snap.end:
        kind = {"finished": "ok", "stopped": "info", "failed": "error"}[snap.end.status]
        end = f"<div class='vr-end'>{msg(esc(snap.end.reason), kind)}" + (
            f" — checkpoint <code>{esc(snap.end.checkpoint)}</code>" if snap.end.checkpoint else "") + "</div>"
    bar = f"<div class='vr-bar'><div class='vr-fill {esc(st)}' style='width:{100 * frac:.1f}%'></div></div>"
    return f"<div id='train-progress' class='vr-status'>{bar}<div>{' · '.join(parts)}</div>{end}</div>"


def status_dict(snap) -> dict:
    last, start = snap.last, snap.start
    return {
        "run_id": snap.run_id, "status": snap.status, "active": snap.active,
        "run": start.run if start else None, "runtime": start.runtime if start else None,
        "total_steps": start.total_steps if start else None, "step": last.step if last else 0,
        "epoch": (last.epoch + 1) if last else None, "n_steps_logged": len(snap.steps),
        "loss": last.loss if last else None, "emb_std": last.emb_std if last else None,
        "eff_rank": last.eff_rank if last else None, "pairs_per_s": last.pairs_per_s if last else None,
        "eta_s": snap.eta_seconds(), "knn_top1": [e.knn_top1 for e in snap.epochs],
        "end": ({"status": snap.end.status, "reason": snap.end.reason, "checkpoint": snap.end.checkpoint} if snap.end else None),
    }


def build(job, studio, ckpt: gr.Dropdown):
    """Lay out the tab; returns (preset radio, timer) so other tabs can offer the quick preset."""
    gr.Markdown("Self-supervised VICReg pre-training of a ResNet-18 on CIFAR-10. The run continues in the "
                "server when you close or reload the page; one run at a time is shared by all visitors.")
    with gr.Row():
        preset = gr.Radio(list(PRESETS) + ["Custom"], value="Quick CPU demo", label="Preset", scale=3)
        device = gr.Dropdown(_devices(), value="auto", label="Device", scale=1)
    device_md = gr.Markdown(_describe_device("auto"))
    with gr.Row():
        name = gr.Textbox(QUICK["name"], label="Run name (checkpoint file name)")
        epochs = gr.Number(QUICK["epochs"], label="Epochs", precision=0, minimum=1, elem_id="train-epochs")
        batch = gr.Number(QUICK["batch_size"], label="Batch size", precision=0, minimum=2, elem_id="train-batch")
        opt = gr.Radio(["lars", "adamw"], value=QUICK["optimizer"], label="Optimizer")
        lr = gr.Number(QUICK["lr"], label="Base LR (0 = optimizer default; scaled by batch/256)", minimum=0)
    with gr.Row():
        inv = gr.Number(QUICK["inv"], label="Invariance weight λ", minimum=0)
        var = gr.Number(QUICK["var"], label="Variance weight μ", minimum=0)
        cov = gr.Number(QUICK["cov"], label="Covariance weight ν", minimum=0)
        subset = gr.Number(QUICK["train_subset"], label="Train images (0 = all 50,000)", precision=0, minimum=0, elem_id="train-subset")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            knn_train = gr.Number(QUICK["knn_train"], label="kNN monitor bank (train images)", precision=0, minimum=1)
            knn_test = gr.Number(QUICK["knn_test"], label="kNN monitor queries (0 = off)", precision=0, minimum=0)
            warmup = gr.Number(QUICK["warmup"], label="Warm-up epochs", minimum=0)
            threads = gr.Number(0, label=f"CPU threads (0 = {studio.threads}; use 1 if the CPU is shared)", precision=0,
                                minimum=0, maximum=256, elem_id="train-threads")
    gr.Markdown(COLLAPSE_NOTE)
    secret = gr.Textbox(label="Admin secret", type="password", visible=admin_required())
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="train-start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
        resume_from = gr.Dropdown([], label="Resume from checkpoint", scale=2, allow_custom_value=True)
        resume_btn = gr.Button("Resume")
    message = gr.Markdown(elem_id="train-message")
    progress = gr.HTML(progress_html(job.snapshot()))
    with gr.Row():
        loss_plot = gr.Plot(charts.empty("Loss"), label="Loss", elem_id="loss-plot", scale=3)
        with gr.Column(scale=2):
            knn_plot = gr.Plot(charts.empty("kNN top-1 per epoch"), label="kNN accuracy", elem_id="knn-plot")
            lr_plot = gr.Plot(charts.empty("Learning rate"), label="Learning rate", elem_id="lr-plot")
    health_plot = gr.Plot(charts.empty("Embedding std / effective rank"), label="Embedding health", elem_id="health-plot")
    status_json = gr.JSON(visible=False)
    seen = gr.State(None)
    knob_boxes = [name, epochs, batch, opt, lr, subset, inv, var, cov, knn_train, knn_test, warmup]

    def apply_preset(p):
        vals = PRESETS.get(p)
        return [gr.skip()] * len(knob_boxes) if vals is None else [vals[k] for k in KNOBS]

    preset.change(apply_preset, preset, knob_boxes, api_visibility="private")
    device.change(_describe_device, device, device_md, api_visibility="private")

    def start(name, epochs, batch_size, optimizer, lr, train_subset, inv_weight, var_weight, cov_weight,
              knn_train, knn_test, warmup_epochs, threads, device, secret):
        if err := admin_error(secret):
            return msg(err, "error")
        vals = [name, epochs, batch_size, optimizer, lr, train_subset, inv_weight, var_weight, cov_weight, knn_train, knn_test, warmup_epochs]
        try:
            cfg = make_config(dict(zip(KNOBS, vals)), studio.data_root, device, int(threads or 0) or studio.threads)
        except (ValueError, TypeError, CheckpointError) as e:
            return msg(f"Cannot start: {e}", "error")
        ok, text = job.start(cfg)
        if not ok:
            return msg(f"Not started: {text}.", "warn")
        return msg(f"{text}: saving to <code>{esc(os.path.join(cfg.checkpoint_dir, cfg.name))}.safetensors</code>", "ok")

    def stop(secret):
        if err := admin_error(secret):
            return msg(err, "error")
        ok, text = job.stop()
        return msg(text, "ok" if ok else "warn")

    def resume(checkpoint, epochs, threads, device, secret):
        path, n_epochs, dev = checkpoint, epochs, device
        if err := admin_error(secret):
            return msg(err, "error")
        if not path or path not in {p for _, p in checkpoint_choices()}:
            return msg("Pick a checkpoint to resume from.", "warn")
        try:
            meta = read_meta(path)
        except CheckpointError as e:
            return msg(str(e), "error")
        done = int(meta.get("epoch", 0)) + (1 if meta.get("step_in_epoch") else 0)
        if int(n_epochs or 0) < done or (int(n_epochs or 0) == meta.get("epoch") and not meta.get("step_in_epoch")):
            return msg(f"This checkpoint already has {meta.get('epoch')} epochs: set Epochs higher to train further.", "warn")
        cfg = TrainConfig.from_dict(meta["config"])
        cfg.epochs, cfg.device, cfg.data, cfg.threads = int(n_epochs), dev, studio.data_root, int(threads or 0) or studio.threads
        cfg.checkpoint_dir, cfg.name = os.path.dirname(path), os.path.basename(path)[: -len(".safetensors")]
        ok, text = job.start(cfg, resume=path)
        return msg(f"{text}: resuming {esc(cfg.name)} at epoch {meta.get('epoch')} step {meta.get('step')}", "ok") if ok else msg(f"Not started: {text}.", "warn")

    def poll(last_seen, checkpoint, resume_checkpoint):
        current_ckpt, current_resume = checkpoint, resume_checkpoint
        snap = job.snapshot()
        version = (snap.run_id, snap.status, len(snap.steps), len(snap.epochs))
        info = status_dict(snap)
        if version == last_seen:
            return (gr.skip(),) * 5 + (info, last_seen, gr.skip(), gr.skip())
        bs = snap.start.config.get("batch_size") if snap.start else None
        figs = (charts.loss_figure(snap.steps), charts.lr_figure(snap.steps), charts.health_figure(snap.steps, bs), charts.knn_figure(snap.epochs))
        ck = rs = gr.skip()
        if last_seen is None or last_seen[:2] != version[:2] or last_seen[3] != version[3]:  # new checkpoints may exist
            choices = checkpoint_choices()
            paths = [p for _, p in choices]
            ck = gr.update(choices=choices, value=current_ckpt if current_ckpt in paths else (paths[0] if paths else None))
            rs = gr.update(choices=choices, value=current_resume if current_resume in paths else None)
        return (progress_html(snap), *figs, info, version, ck, rs)

    start_btn.click(start, knob_boxes + [threads, device, secret], message, api_name="train_start", concurrency_limit=None)
    stop_btn.click(stop, secret, message, api_name="train_stop", concurrency_limit=None)
    resume_btn.click(resume, [resume_from, epochs, threads, device, secret], message, api_name="train_resume", concurrency_limit=None)
    timer = gr.Timer(1.5)
    outs = [progress, loss_plot, lr_plot, health_plot, knn_plot, status_json, seen, ckpt, resume_from]
    timer.tick(poll, [seen, ckpt, resume_from], outs, api_name="train_status", show_progress="hidden", concurrency_limit=None)
    return preset, (poll, [seen, ckpt, resume_from], outs)
