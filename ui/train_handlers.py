"""Train tab handlers: Start / Stop / Resume and the status poll, over the shared TrainingJob."""
from __future__ import annotations

import os
import secrets
from typing import Any, NamedTuple

import gradio as gr

from services.reference import reference_for
from services.studio import Studio
from services.visitors import visitor_name
from vicreg.checkpoint import CheckpointError, load_checkpoint
from vicreg.config import PRESETS, TrainConfig
from vicreg.jobs import TrainingJob
from vicreg.launch import check_processes, max_processes
from vicreg.names import checkpoint_path, checkpoint_stem, safe_name
from vicreg.resume import more_epochs as epochs_after
from vicreg.resume import resume_config
from vicreg.runtime import resolve_device

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
    def __init__(self, studio: Studio, job: TrainingJob):
        self.studio, self.job = studio, job

    def _admin(self, secret: str | None, action: str) -> str | None:
        err = self.studio.access.admin_only(secret, action)
        return msg(err, "error") if err else None

    def _threads(self, threads) -> int:
        return int(threads or 0) or self.studio.threads

    def most_processes(self) -> int:
        """The processes a run may use here: one on ZeroGPU (a call holds one GPU), else vicreg.launch's rule."""
        return 1 if self.job.chunks is not None else max_processes()

    def _processes(self, processes, device: str) -> int:
        n, most = int(processes or 1), self.most_processes()
        if not 1 <= n <= most:
            raise ValueError(f"processes must be from 1 to {most} on this machine, got {n}")
        kind = resolve_device(device).type
        if n > 1 and kind not in ("cpu", "cuda"):
            raise ValueError(f"a run of several processes trains on CUDA GPUs or on the CPU, not {kind}")
        return n

    def config(self, preset: str, values: dict, device: str, threads) -> TrainConfig:
        """The preset's recipe with the knobs on top (`values`: by dotted name), run on the data this server has."""
        name = safe_name(str(values.get("name") or "vicreg_model").strip(), self.studio.checkpoint_dir)
        cfg = base_config(preset).with_values({**values, "name": name, "device": device,
                                               "data": self.studio.data.path(),
                                               "checkpoint_dir": self.studio.checkpoint_dir,
                                               "threads": self._threads(threads)})
        default = self.studio.catalog.default()
        if default and os.path.realpath(checkpoint_path(cfg.checkpoint_dir, cfg.name)) == os.path.realpath(default):
            raise CheckpointError(f"'{cfg.name}' is the name of the default demo model; choose another run name")
        return cfg.validate()

    def _run_config(self, preset, knobs: dict, threads, device, processes, admin: bool) -> tuple[TrainConfig, int]:
        values = knob_dict(knobs)
        if not admin:  # a visitor's run gets a name of its own, kept only a while (services/visitors.py)
            values["name"] = visitor_name(values.get("name"))
        n = self._processes(processes, device)
        cfg = self.config(preset, values, device, threads if admin else min(self._threads(threads),
                                                                            self.studio.threads))
        if n > 1:
            check_processes(cfg, n)
        return cfg, n

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
            cfg, n = self._run_config(preset, knobs, threads, device, processes, admin)
        except (ValueError, TypeError, CheckpointError) as e:
            return StartOut(msg(f"Cannot start: {esc(scrub(e))}", "error"), owner)
        if not admin and (err := access.visitor_run_error(cfg, n)):
            return StartOut(msg(esc(err), "error"), owner)
        token = None if admin else secrets.token_hex(16)
        limit = None if admin else access.visitor_seconds
        if not admin:
            self.studio.visitors.before_run(self.job)
        ok, text = self.job.start(cfg, owner=token, time_limit=limit, processes=n)
        if not ok:
            return StartOut(msg(f"Not started: {esc(text)}.", "warn"), owner)
        note = SAMPLE_NOTE if self.studio.data.using_sample() else ""
        if limit is not None:
            note += f" (visitor runs stop by themselves after {access.visitor_minutes:g} min; only you can stop it)"
        return StartOut(msg(f"{text}{note}: saving to checkpoint <code>{esc(cfg.name)}</code>", "ok"), token)

    def stop(self, secret, owner=None) -> str:
        """Stop the run after its current step, with a resumable checkpoint (every rank of a torchrun run)."""
        access, snap = self.studio.access, self.job.snapshot()
        if err := access.wrong_secret(secret):
            return msg(err, "error")
        if snap.active and not access.is_admin(secret) and (snap.owner is None or owner != snap.owner):
            return msg("Only the visitor who started this run, or the admin, can stop it; you can watch it live "
                       "here.", "warn")
        ok, text = self.job.stop()
        return msg(text, "ok" if ok else "warn")

    def resume(self, checkpoint, more_epochs, threads, device, secret, processes=1) -> str:
        """Continue a checkpoint: `more_epochs` extra epochs, or 0 to finish its planned run."""
        if err := self._admin(secret, "resume training"):
            return err
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return msg(UNLISTED if checkpoint else "Pick a checkpoint to resume from.", "warn")
        try:
            n = self._processes(processes, device)
            ckpt = load_checkpoint(path)
            total = epochs_after(ckpt, int(more_epochs)) if int(more_epochs or 0) else None
            run = TrainConfig.from_dict(ckpt.meta["config"]).updated(
                {"name": checkpoint_stem(path), "checkpoint_dir": os.path.dirname(path), "device": device,
                 "data": self.studio.data.path(), "threads": self._threads(threads)})
            cfg = resume_config(ckpt, run, total)
            if n > 1:
                check_processes(cfg, n)
        except (CheckpointError, ValueError, TypeError) as e:
            return msg(f"Cannot resume: {esc(scrub(e))}", "warn")
        ok, text = self.job.start(cfg, resume=path, processes=n)
        if not ok:
            return msg(f"Not started: {esc(text)}.", "warn")
        meta = ckpt.meta
        return msg(f"{text}: resuming {esc(cfg.name)} at epoch {meta.get('epoch')} step {meta.get('step')}, "
                   f"to epoch {cfg.epochs}", "ok")

    def poll(self, last_seen, checkpoint, resume_checkpoint) -> PollOut:
        snap = self.job.snapshot()
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
            if self.studio.access.public:
                self.studio.visitors.after_run(self.job)
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
