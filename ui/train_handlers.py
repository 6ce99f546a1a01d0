"""Train tab handlers: Start / Stop / Resume and the status poll, over the shared TrainingJob."""
from __future__ import annotations

import os
import secrets
from typing import Any, NamedTuple

import gradio as gr

from services.studio import Studio
from services.visitors import visitor_name
from vicreg.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    checkpoint_stem,
    read_meta,
    resume_config,
    safe_name,
)
from vicreg.checkpoint import more_epochs as epochs_after
from vicreg.config import PRESETS, TrainConfig
from vicreg.jobs import JobSnapshot, TrainingJob

from . import charts
from .common import KNOBS, UNLISTED, base_config, esc, fmt_seconds, knob_overrides, knob_values, msg, scrub

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


def progress_html(snap: JobSnapshot) -> str:
    if snap.run_id == 0:
        return "<div id='train-progress' class='vr-status'>No training run yet in this server process.</div>"
    st, last, start = snap.status, snap.last, snap.start
    total = start.total_steps if start else 0
    step = last.step if last else (start.start_step if start else 0)
    parts = [f"run {snap.run_id} <b>{esc(st)}</b>"]
    if start:
        parts.append(f"<b>{esc(start.run)}</b> on {esc(start.runtime)}")
        parts.append(f"epoch {min((last.epoch + 1) if last else start.start_epoch + 1, start.epochs)}/{start.epochs}")
        parts.append(f"step {step}/{total}")
    elif st == "loading":
        parts.append("loading the training images…")
    if last:
        parts += [f"{last.pairs_per_s:.0f} pairs/s", f"loss {last.loss:.3f}"]
        if snap.active:
            parts.append(f"ETA {fmt_seconds(snap.eta_seconds())}")
    end = ""
    if snap.end:
        kind = {"finished": "ok", "stopped": "info", "failed": "error"}[snap.end.status]
        saved = f" — checkpoint <code>{esc(checkpoint_stem(snap.end.checkpoint))}</code>" if snap.end.checkpoint else ""
        end = f"<div class='vr-end'>{msg(esc(scrub(snap.end.reason)), kind)}{saved}</div>"
    width = f"{100 * step / max(total, 1):.1f}%"
    bar = f"<div class='vr-bar'><div class='vr-fill {esc(st)}' style='width:{width}'></div></div>"
    notes = "".join(f"<div>{msg(esc(scrub(n)), 'info')}</div>" for n in getattr(start, "notes", None) or [])
    warning = latest_warning(snap)
    notes += f"<div id='train-warning'>{msg(esc(warning), 'warn')}</div>" if warning else ""
    return f"<div id='train-progress' class='vr-status'>{bar}<div>{' · '.join(parts)}</div>{notes}{end}</div>"


def latest_warning(snap: JobSnapshot) -> str | None:
    """The run's most recent warning (a collapse), newest steps first: warnings are rare."""
    return next((s.warning for s in reversed(snap.steps) if s.warning), None)


def status_dict(snap: JobSnapshot) -> dict:
    last, start, end = snap.last, snap.start, snap.end
    return {
        "run_id": snap.run_id, "status": snap.status, "active": snap.active,
        "run": start.run if start else None, "runtime": start.runtime if start else None,
        "total_steps": start.total_steps if start else None, "start_step": start.start_step if start else None,
        "resumed_from": checkpoint_stem(start.resumed_from) if start and start.resumed_from else None,
        "n_train": start.n_train if start else None, "step": last.step if last else 0,
        "epoch": (last.epoch + 1) if last else None, "n_steps_logged": len(snap.steps),
        "loss": last.loss if last else None, "emb_std": last.emb_std if last else None,
        "eff_rank": last.eff_rank if last else None, "pairs_per_s": last.pairs_per_s if last else None,
        "eta_s": snap.eta_seconds(), "knn_top1": [e.knn_top1 for e in snap.epochs], "warning": latest_warning(snap),
        "end": {"status": end.status, "reason": scrub(end.reason), "checkpoint": end.checkpoint} if end else None,
    }


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

    def config(self, preset: str, values: dict, device: str, threads) -> TrainConfig:
        """The preset's recipe with the knobs on top, run on the data this server has."""
        name = safe_name(str(values.get("name") or "vicreg_model").strip(), self.studio.checkpoint_dir)
        values = {**values, "name": name}
        cfg = base_config(preset).updated({**knob_overrides(values), "device": device, "data": self.studio.data.path(),
                                           "checkpoint_dir": self.studio.checkpoint_dir,
                                           "threads": self._threads(threads)})
        default = self.studio.catalog.default()
        if default and os.path.realpath(checkpoint_path(cfg.checkpoint_dir, cfg.name)) == os.path.realpath(default):
            raise CheckpointError(f"'{cfg.name}' is the name of the default demo model; choose another run name")
        return cfg.validate()

    def start(self, preset, name, epochs, batch_size, optimizer, lr, train_subset, inv_coeff, var_coeff, cov_coeff,
              knn_train, knn_test, warmup_epochs, threads, device, secret, owner=None) -> StartOut:
        """Start a run. On a public demo (services/access.py) a visitor's run is Quick-demo sized, stops by
        itself after a while, and only that visitor (this session's `owner` token) or the admin may stop it."""
        access = self.studio.access
        if err := access.wrong_secret(secret):
            return StartOut(msg(err, "error"), owner)
        values = dict(zip(KNOBS, (name, epochs, batch_size, optimizer, lr, train_subset, inv_coeff, var_coeff,
                                  cov_coeff, knn_train, knn_test, warmup_epochs)))
        admin = access.is_admin(secret)
        if not admin:  # a visitor's run gets a name of its own, kept only a while (services/visitors.py)
            values["name"] = visitor_name(values["name"])
        try:
            cfg = self.config(preset, values, device, threads if admin else min(self._threads(threads),
                                                                                self.studio.threads))
        except (ValueError, TypeError, CheckpointError) as e:
            return StartOut(msg(f"Cannot start: {esc(scrub(e))}", "error"), owner)
        if not admin and (err := access.visitor_run_error(cfg)):
            return StartOut(msg(esc(err), "error"), owner)
        token = None if admin else secrets.token_hex(16)
        limit = None if admin else access.visitor_seconds
        if not admin:
            self.studio.visitors.before_run(self.job)
        ok, text = self.job.start(cfg, owner=token, time_limit=limit)
        if not ok:
            return StartOut(msg(f"Not started: {esc(text)}.", "warn"), owner)
        note = SAMPLE_NOTE if self.studio.data.using_sample() else ""
        if limit is not None:
            note += f" (visitor runs stop by themselves after {access.visitor_minutes:g} min; only you can stop it)"
        return StartOut(msg(f"{text}{note}: saving to checkpoint <code>{esc(cfg.name)}</code>", "ok"), token)

    def stop(self, secret, owner=None) -> str:
        access, snap = self.studio.access, self.job.snapshot()
        if err := access.wrong_secret(secret):
            return msg(err, "error")
        if snap.active and not access.is_admin(secret) and (snap.owner is None or owner != snap.owner):
            return msg("Only the visitor who started this run, or the admin, can stop it; you can watch it live "
                       "here.", "warn")
        ok, text = self.job.stop()
        return msg(text, "ok" if ok else "warn")

    def resume(self, checkpoint, more_epochs, threads, device, secret) -> str:
        """Continue a checkpoint: `more_epochs` extra epochs, or 0 to finish its planned run."""
        if err := self._admin(secret, "resume training"):
            return err
        path = self.studio.catalog.valid(checkpoint)
        if not path:
            return msg(UNLISTED if checkpoint else "Pick a checkpoint to resume from.", "warn")
        try:
            ckpt = Checkpoint(path, read_meta(path), {})
            total = epochs_after(ckpt, int(more_epochs)) if int(more_epochs or 0) else None
            run = TrainConfig.from_dict(ckpt.meta["config"]).updated(
                {"name": checkpoint_stem(path), "checkpoint_dir": os.path.dirname(path), "device": device,
                 "data": self.studio.data.path(), "threads": self._threads(threads)})
            cfg = resume_config(ckpt, run, total)
        except (CheckpointError, ValueError, TypeError) as e:
            return msg(f"Cannot resume: {esc(scrub(e))}", "warn")
        ok, text = self.job.start(cfg, resume=path)
        if not ok:
            return msg(f"Not started: {esc(text)}.", "warn")
        meta = ckpt.meta
        return msg(f"{text}: resuming {esc(cfg.name)} at epoch {meta.get('epoch')} step {meta.get('step')}, "
                   f"to epoch {cfg.epochs}", "ok")

    def poll(self, last_seen, checkpoint, resume_checkpoint) -> PollOut:
        snap = self.job.snapshot()
        version = [snap.run_id, snap.status, len(snap.steps), len(snap.epochs)]
        info = status_dict(snap)
        if version == last_seen:
            skip = gr.skip()
            return PollOut(skip, skip, skip, skip, skip, info, last_seen, skip, skip)
        bs = snap.start.config.get("batch_size") if snap.start else None
        ck = rs = gr.skip()
        if last_seen is None or last_seen[:2] != version[:2] or last_seen[3] != version[3]:  # new checkpoints?
            if self.studio.access.public:
                self.studio.visitors.after_run(self.job)
            choices = self.studio.catalog.choices()
            ck = gr.update(choices=choices, value=self.studio.catalog.preferred(checkpoint, choices))
            rs = gr.update(choices=choices, value=resume_checkpoint if resume_checkpoint in dict(choices).values()
                           else None)
        return PollOut(progress_html(snap), charts.loss_figure(snap.steps), charts.lr_figure(snap.steps),
                       charts.health_figure(snap.steps, bs), charts.knn_figure(snap.epochs), info, version, ck, rs)
