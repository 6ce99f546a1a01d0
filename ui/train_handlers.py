"""Train tab handlers: Start / Stop / Resume and the status poll, over the shared training job
(services/training.py assembles and checks the runs)."""
from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr

from services.errors import CheckpointError
from services.reference import reference_for
from services.studio import Studio
from services.training import PRESETS, TrainConfig, TrainingJob

from . import charts
from .common import KNOBS, UNLISTED, base_config, esc, knob_dict, knob_values, msg, scrub
from .train_status import progress_html, status_dict

SAMPLE_NOTE = " on the embedded 2,000-image CIFAR-10 sample (the full dataset is not available here)"


class StartOut(NamedTuple):
    message: Any
    owner: Any  # the visitor's token for the run they started (a gr.State: never sent to the API)


class PollOut(NamedTuple):
    progress: Any
    loss_plot: Any
    lr_plot: Any
    health_plot: Any
    knn_plot: Any
    status: Any
    seen: Any
    checkpoint: Any
    resume_from: Any
    map_plot: Any  # last: the API's outputs before it keep their places


def preset_knobs(preset: str) -> tuple:
    """The knobs' values for a preset, in KNOBS order (Custom leaves them as they are)."""
    if preset not in PRESETS:
        return (gr.skip(),) * len(KNOBS)
    values = knob_values(base_config(preset))
    return tuple(values[k] for k in KNOBS)


class TrainHandlers:
    def __init__(self, studio: Studio, job: TrainingJob | None = None):
        """`job`: the one the page is built over, when it is not the studio's own (the studio then serves it)."""
        self.studio, self.training = studio, studio.training
        if job is not None and job is not self.training.job:
            self.training.adopt(job)

    def most_processes(self) -> int:
        return self.training.most_processes()

    def config(self, preset: str, values: dict, device: str, threads) -> TrainConfig:
        """The preset's recipe with the knobs on top (`values`: by dotted name), run on the data this server has."""
        return self.training.config(base_config(preset), values, device, threads)

    def start(self, preset, *, threads=0, device="auto", secret=None, owner=None, processes=1, **knobs) -> StartOut:
        """Start a run: the preset with the Train tab's knobs on top, each by its name (`KNOBS` without the
        dots: name, epochs, ..., var_coeff, ...), on `processes` processes (torchrun when more than one).
        On a public demo (services/access.py) a visitor's run is Quick-demo sized, stops by itself after a
        while, and only that visitor (this session's `owner` token) or the admin may stop it."""
        access = self.studio.access
        if err := access.wrong_secret(secret):
            return StartOut(msg(err, "error"), owner)
        admin = access.is_admin(secret)
        try:
            cfg, n = self.training.run_config(base_config(preset), knob_dict(knobs), device, threads, processes, admin)
        except (ValueError, TypeError, CheckpointError) as e:
            return StartOut(msg(f"Cannot start: {esc(scrub(e))}", "error"), owner)
        if not admin and (err := access.visitor_run_error(cfg, n)):
            return StartOut(msg(esc(err), "error"), owner)
        run = self.training.start(cfg, n, admin)
        if not run.ok:
            return StartOut(msg(f"Not started: {esc(run.text)}.", "warn"), owner)
        note = SAMPLE_NOTE if self.studio.data.using_sample() else ""
        if run.limit is not None:
            note += f" (visitor runs stop by themselves after {access.visitor_minutes:g} min; only you can stop it)"
        return StartOut(msg(f"{run.text}{note}: saving to checkpoint <code>{esc(cfg.name)}</code>", "ok"), run.owner)

    def stop(self, secret, owner=None) -> str:
        """Stop the run after its current step, with a resumable checkpoint (every rank of a torchrun run)."""
        access, snap = self.studio.access, self.training.snapshot()
        if err := access.wrong_secret(secret):
            return msg(err, "error")
        if snap.active and not access.is_admin(secret) and (snap.owner is None or owner != snap.owner):
            return msg("Only the visitor who started this run, or the admin, can stop it; you can watch it live "
                       "here.", "warn")
        ok, text = self.training.stop()
        return msg(text, "ok" if ok else "warn")

    def resume(self, checkpoint, more_epochs, threads, device, secret, processes=1) -> str:
        """Continue a checkpoint: `more_epochs` extra epochs, or 0 to finish its planned run."""
        if err := self.studio.access.admin_only(secret, "resume training"):
            return msg(err, "error")
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return msg(UNLISTED if checkpoint else "Pick a checkpoint to resume from.", "warn")
        try:
            r = self.training.resume_config(path, more_epochs, device, threads, processes)
        except (CheckpointError, ValueError, TypeError) as e:
            return msg(f"Cannot resume: {esc(scrub(e))}", "warn")
        ok, text = self.training.resume(r)
        if not ok:
            return msg(f"Not started: {esc(text)}.", "warn")
        return msg(f"{text}: resuming {esc(r.cfg.name)} at epoch {r.epoch} step {r.step}, to epoch {r.cfg.epochs}",
                   "ok")

    def poll(self, last_seen, checkpoint, resume_checkpoint) -> PollOut:
        snap = self.training.snapshot()
        live = self.studio.live_map
        if snap.watches:  # the newest monitor point's features, laid out in a child process
            live.offer(snap.run_id, snap.watches[-1])
        drawn = live.latest(snap.run_id)
        version = [snap.run_id, snap.status, len(snap.steps), len(snap.epochs), len(snap.watches),
                   drawn.count if drawn else 0]
        info = status_dict(snap, drawn)
        if version == last_seen:
            skip = gr.skip()
            return PollOut(skip, skip, skip, skip, skip, info, last_seen, skip, skip, skip)
        bs = snap.start.config.get("batch_size") if snap.start else None
        ck = rs = gr.skip()
        if last_seen is None or last_seen[:2] != version[:2] or last_seen[3] != version[3]:  # new checkpoints?
            choices = self.studio.catalog.choices()
            ck = gr.update(choices=choices, value=self.studio.catalog.preferred(checkpoint, choices))
            rs = gr.update(choices=choices, value=resume_checkpoint if resume_checkpoint in dict(choices).values()
                           else None)
        ref = reference_for(snap)
        watching = snap.start.config.get("watch_images", 0) if snap.start else 1
        accuracy = charts.accuracy_figure(snap.watches, snap.epochs, ref)
        return PollOut(progress_html(snap), charts.loss_figure(snap.steps, ref), charts.lr_figure(snap.steps),
                       charts.health_figure(snap.steps, bs, ref), accuracy, info, version, ck, rs,
                       charts.live_map_figure(drawn, watching))
