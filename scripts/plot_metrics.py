"""Plot a run's metrics file (JSON lines written by training) to a PNG: the three loss terms,
the embedding std and effective rank, and per-epoch kNN accuracy.

    python scripts/plot_metrics.py checkpoints/cpu30.metrics.jsonl assets/cpu30_curves.png

Needs matplotlib (not a runtime dependency: pip install matplotlib).
"""
from __future__ import annotations

import sys

from vicreg.runfiles.metrics import read_metrics


def main(src: str, dst: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = read_metrics(src)  # a killed run's torn last line is skipped
    # keep the last run in the file (a metrics file accumulates every run under that name)
    starts = [i for i, e in enumerate(events) if e["kind"] == "start" and not e.get("resumed_from")]
    events = events[starts[-1]:] if starts else events
    steps = [e for e in events if e["kind"] == "step"]
    epochs = [e for e in events if e["kind"] == "epoch"]
    x = [s["step"] for s in steps]
    fig, ax = plt.subplots(2, 3, figsize=(13, 6.5))
    panels = [("loss", "total loss"), ("invariance", "invariance (MSE)"), ("variance", "variance (hinge on std)"),
              ("covariance", "covariance (off-diagonal)"), ("emb_std", "embedding std / eff. rank")]
    for a, (key, title) in zip(ax.flat[: len(panels)], panels, strict=True):  # the last: kNN
        a.plot(x, [s[key] for s in steps], lw=0.8)
        a.set_title(title)
        a.set_xlabel("step")
    a2 = ax.flat[4].twinx()
    a2.plot(x, [s["eff_rank"] for s in steps], color="tab:orange", lw=0.8)
    a2.set_ylabel("effective rank", color="tab:orange")
    k = ax.flat[5]
    k.plot([e["step"] for e in epochs], [100 * (e["knn_top1"] or 0) for e in epochs], "o-", color="tab:green")
    k.set_title("kNN top-1 per epoch (%)")
    k.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(dst, dpi=90)
    print(f"wrote {dst} ({len(steps)} steps, {len(epochs)} epochs)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
