"""What the Train tab shows of the shared job: the progress line and the status the page and the API poll."""
from __future__ import annotations

from services.training import JobSnapshot, checkpoint_stem, rate_unit

from .common import esc, fmt_seconds, msg, scrub


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
        parts += [f"{last.pairs_per_s:.0f} {rate_unit(start.config) if start else 'pairs/s'}", f"loss {last.loss:.3f}"]
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


def status_dict(snap: JobSnapshot, drawn=None) -> dict:
    """What the page and the API poll; `drawn`: the live map's latest state (services/features/live_map.py)."""
    last, start, end = snap.last, snap.start, snap.end
    guess = [(w.step, w.guess) for w in snap.watches if w.guess is not None]
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
        "processes": snap.processes,
        "untrained_guess": guess[0][1] if guess and guess[0][0] == 0 else None,
        "guess": [{"step": s, "guess": g} for s, g in guess],
        "maps_drawn": drawn.count if drawn else 0,
    }
