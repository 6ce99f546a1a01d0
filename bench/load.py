"""Concurrent-visitor load benchmark (not a test): N gradio_client visitors upload images and read the
map for a fixed time while one training job runs in the same app, on this machine's loopback only.

    python -m bench.load [--visitors 20] [--seconds 120] [--idle 40]      # from the repository root

The app starts as a fresh clone would on a free Space (the shipped default model and the embedded
sample, no dataset, no network). An admin starts one long Quick-preset training job; its pairs/s are
measured first with no visitors (`--idle` seconds), then while the visitors work. Each visitor loops:
upload a 200x150 JPEG made from a sample test image (downloading every output file, as a browser
does), and read the map after the first upload and every `--map_every`-th one after it. Printed:
requests answered / sent, errors, uploads/s, latency p50/p95, training pairs/s idle vs loaded, and the
server log's error count.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass

from bench.app_bench import first_start_env, pct, photos
from bench.harness import AppProcess, demo_files
from vicreg.runfiles.metrics import read_metrics

ADMIN = "load-bench-admin"
VISITOR_RUN = dict(preset="quick_demo", epochs=1, batch_size=32, optimizer="lars", lr=0, train_subset=320,
                   inv_coeff=25, var_coeff=25, cov_coeff=1, knn_train=100, knn_test=0, warmup_epochs=0.5, threads=1,
                   device="cpu", secret="")


def train_rate(metrics: str, t_from: float, t_to: float) -> tuple[float, int]:
    """Training pairs/s between two wall-clock times, from the run's metrics file (step events carry
    the run's elapsed seconds; the file's first line is the start event)."""
    events = read_metrics(metrics)  # the line being written now, if any, is skipped
    batch = next((ev["config"]["batch_size"] for ev in events if ev["kind"] == "start"), 0)
    steps = [ev for ev in events if ev["kind"] == "step"]
    if not steps:
        return 0.0, 0
    # map elapsed -> wall clock with the file's own clock: the last step was written at its mtime
    offset = os.path.getmtime(metrics) - steps[-1]["elapsed"]
    inside = [s for s in steps if t_from <= offset + s["elapsed"] <= t_to]
    if len(inside) < 2:
        return 0.0, len(inside)
    pairs = (inside[-1]["step"] - inside[0]["step"]) * batch
    return pairs / max(inside[-1]["elapsed"] - inside[0]["elapsed"], 1e-9), len(inside)


class Visitor(threading.Thread):
    def __init__(self, k: int, url: str, checkpoint: str, files: list[str], until: float, map_every: int,
                 folder: str, try_training: bool = False):
        super().__init__(daemon=True, name=f"visitor-{k}")
        self.try_training = try_training
        self.start_replies: list[str] = []
        self.k, self.url, self.checkpoint, self.files, self.until = k, url, checkpoint, files, until
        self.map_every, self.folder = map_every, folder
        self.upload_s: list[float] = []
        self.map_s: list[float] = []
        self.sent = self.answered = 0
        self.errors: list[str] = []

    def _call(self, fn, record: list[float]) -> None:
        self.sent += 1
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            self.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            return
        record.append(time.perf_counter() - t)
        self.answered += 1

    def run(self) -> None:
        from gradio_client import Client, handle_file

        rng = random.Random(self.k)
        # plain http on loopback: without ssl_verify=False gradio_client builds a certificate store (about
        # 28 ms of CPU) for every request and file download, and the load generator, not the app, saturates
        c = Client(self.url, verbose=False, download_files=self.folder, ssl_verify=False)
        n = 0
        if self.try_training:  # every visitor also tries to start a run of their own: one job at a time
            def start():
                self.start_replies.append(c.predict(**VISITOR_RUN, name=f"visitor_{self.k}", api_name="/train_start"))

            self._call(start, [])
        while time.time() < self.until:
            f = rng.choice(self.files)

            def upload(f=f):
                out = c.predict(image=handle_file(f), checkpoint=self.checkpoint, api_name="/explore_upload")
                info = out[10]
                assert info and len(info["neighbours"]) == 8 and info["map_xy"] is not None, str(out[0])[:200]
                assert all(os.path.getsize(p) > 0 for p in (out[1], out[2], out[4], out[6], out[8])), "empty file"

            self._call(upload, self.upload_s)
            n += 1
            # the map after the first upload, then after every map_every-th: a visitor who gets few answers on a
            # busy machine still reads it
            if self.map_every and (n - 1) % self.map_every == 0 and time.time() < self.until:
                def read_map():
                    out = c.predict(checkpoint=self.checkpoint, api_name="/umap")
                    assert out[2] and out[2]["points"] > 0, str(out[0])[:200]

                self._call(read_map, self.map_s)


def summary(name: str, xs: list[float]) -> str:
    if not xs:
        return f"{name:<28} none"
    return (f"{name:<28} n={len(xs):5d}  p50 {statistics.median(xs) * 1000:7.0f} ms  p95 {pct(xs, 95) * 1000:7.0f} ms"
            f"  max {max(xs) * 1000:7.0f} ms")


@dataclass
class LoadReport:
    visitors: int
    seconds: float
    training: bool
    sent: int
    answered: int
    errors: list[str]
    upload_s: list[float]
    map_s: list[float]
    start_replies: list[str]  # what visitors were told when they tried to start a second training run
    idle_pairs_per_s: float
    loaded_pairs_per_s: float
    training_runs: int  # run ids the job handed out: 1 means one training job existed throughout
    training_status: str
    log: str  # the server's log

    @property
    def uploads_per_s(self) -> float:
        return len(self.upload_s) / self.seconds

    @property
    def training_lost(self) -> float:
        return 1 - self.loaded_pairs_per_s / self.idle_pairs_per_s if self.idle_pairs_per_s else float("nan")

    def lines(self) -> list[str]:
        on = "on" if self.training else "off"
        out = [f"{self.visitors} visitors for {self.seconds:.0f}s (loopback), training {on}: answered "
               f"{self.answered}/{self.sent}, errors {len(self.errors)}"]
        out += [f"  error x{self.errors.count(e)}: {e}" for e in sorted(set(self.errors))[:10]]
        out += [summary("upload -> all outputs", self.upload_s), summary("read the map", self.map_s),
                f"uploads/s {self.uploads_per_s:.2f}   requests/s {self.answered / self.seconds:.2f}"]
        if self.training:
            out.append(f"training pairs/s: idle {self.idle_pairs_per_s:.1f}, with visitors "
                       f"{self.loaded_pairs_per_s:.1f}: {100 * self.training_lost:.0f}% lost; training runs "
                       f"{self.training_runs}, status "
                       f"{self.training_status}; visitors' start attempts refused "
                       f"{sum('already in progress' in r for r in self.start_replies)}/{len(self.start_replies)}")
        out.append(f"server log: {self.log.count('Traceback')} tracebacks, {self.log.count('Content-Length')} "
                   "Content-Length errors")
        return out


def run_load(visitors: int = 20, seconds: float = 120, idle: float = 40, map_every: int = 3, training: bool = True,
             work: str | None = None, train_threads: int = 2) -> LoadReport:
    checkpoint, sample = demo_files(os.environ.get("VICREG_DATA") or "../shared/data/cifar10")
    work = work or tempfile.mkdtemp(prefix="vicreg-load-")
    env = {**first_start_env(os.path.join(work, "app"), checkpoint, sample), "VICREG_ADMIN_TOKEN": ADMIN}
    app = AppProcess(env, os.path.join(work, "app.log"))
    from gradio_client import Client

    admin = Client(app.url, verbose=False, ssl_verify=False)
    metrics = os.path.join(work, "app", "checkpoints", "load_run.metrics.jsonl")
    idle_rate = loaded_rate = 0.0
    try:
        files = photos(sample, 60, work)
        if training:
            knobs = dict(preset="quick_demo", name="load_run", epochs=200, batch_size=32, optimizer="lars", lr=0,
                         train_subset=2000, inv_coeff=25, var_coeff=25, cov_coeff=1, knn_train=100, knn_test=0,
                         warmup_epochs=0.5, threads=train_threads, device="cpu", secret=ADMIN)
            admin.predict(**knobs, api_name="/train_start")
            while not os.path.exists(metrics) or os.path.getsize(metrics) < 2000:
                time.sleep(1)
            t = time.time()
            time.sleep(idle)
            idle_rate = train_rate(metrics, t, time.time())[0]
        t_load = time.time()
        until = t_load + seconds
        vs = [Visitor(k, app.url, checkpoint, files, until, map_every, os.path.join(work, f"dl{k}"),
                      try_training=training) for k in range(visitors)]
        for v in vs:
            v.start()
        for v in vs:
            v.join(seconds + 120)
        t_end = time.time()
        if training:
            loaded_rate = train_rate(metrics, t_load, t_end)[0]
        status = admin.predict(checkpoint=None, resume_checkpoint=None, api_name="/train_status")[5]
        if training:
            admin.predict(secret=ADMIN, api_name="/train_stop")
    finally:
        app.stop()
    with open(os.path.join(work, "app.log"), encoding="utf-8", errors="replace") as f:
        log = f.read()
    return LoadReport(visitors, t_end - t_load, training, sum(v.sent for v in vs), sum(v.answered for v in vs),
                      [e for v in vs for e in v.errors], [x for v in vs for x in v.upload_s],
                      [x for v in vs for x in v.map_s], [r for v in vs for r in v.start_replies], idle_rate,
                      loaded_rate, status["run_id"], status["status"], log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--idle", type=float, default=40, help="seconds of training with no visitors first")
    ap.add_argument("--map_every", type=int, default=3,
                    help="read the map after the first upload and every k-th after it (0 = never)")
    ap.add_argument("--no_training", action="store_true")
    ap.add_argument("--train_threads", type=int, default=2, help="the training run's CPU threads")
    args = ap.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    report = run_load(args.visitors, args.seconds, args.idle, args.map_every, not args.no_training,
                      train_threads=args.train_threads)
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
