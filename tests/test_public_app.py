"""Safe by default, through a real `python app.py` and gradio_client: the address it listens on, and a
Space's rules with and without the admin secret (services/exposure.py, services/access.py).

The apps start as a fresh shell would (no GRADIO_SERVER_NAME unless a test gives one), on the shipped
model and sample, with no network: the Hub endpoint is a closed local port, and the data is a missing
.npz, for which a CIFAR-10 download stops before any network access.
"""
import ipaddress
import os

import pytest
from app_fixtures import KNOBS, NO_NETWORK, demo_pair, poll  # noqa: F401
from leaks import scan

from bench.harness import ROOT, AppProcess

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

SECRET = "space-admin-secret"
REFUSED = "On this public server only the admin may"  # the access refusal when no secret is set
BIG = {**KNOBS, "preset": "full", "name": "big", "epochs": 50, "batch_size": 128, "train_subset": 0,
       "knn_train": 5000, "knn_test": 1000}
TINY = {**KNOBS, "name": "mine", "epochs": 1, "batch_size": 32, "train_subset": 128, "knn_train": 100, "knn_test": 0}


class BareApp(AppProcess):
    """`python app.py ARGS` with `env` and none of this shell's app variables (GRADIO_SERVER_NAME, SPACE_ID...)."""

    def environment(self, env: dict) -> dict:
        full = {k: v for k, v in os.environ.items()
                if not k.startswith(("VICREG_", "GRADIO_", "SPACE")) and k not in ("SYSTEM", "PORT")}
        return {**full, **env, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": ROOT}


def listening(port: int) -> set[str]:
    """The addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        with open(name) as f:
            for line in f.read().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:
                    raw = bytes.fromhex(addr)
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word
                    found.add(str(ipaddress.ip_address(words)))
    return found


def app_env(folder, demo_pair, **extra) -> dict:  # noqa: F811
    for d in ("home", "cache", "checkpoints", "storage"):
        os.makedirs(os.path.join(folder, d), exist_ok=True)
    return {"VICREG_DATA": os.path.join(folder, "no-data.npz"), "VICREG_CACHE": os.path.join(folder, "cache"),
            "HOME": os.path.join(folder, "home"), "VICREG_CHECKPOINTS": os.path.join(folder, "checkpoints"),
            "VICREG_STORAGE": os.path.join(folder, "storage"), "VICREG_DEFAULT_CHECKPOINT": demo_pair[0],
            "VICREG_SAMPLE": demo_pair[1], "VICREG_APP_THREADS": "1", **NO_NETWORK, **extra}


def start(tmp_path_factory, demo_pair, name, args=(), **extra):  # noqa: F811
    folder = str(tmp_path_factory.mktemp(name))
    app = BareApp(app_env(folder, demo_pair, **extra), os.path.join(folder, "app.log"), args)
    app.folder = folder
    return app


def first(out):
    """The message of an endpoint whose other outputs (a button's update) the client may leave out."""
    return out if isinstance(out, str) else out[0]


def saved(app) -> list[str]:
    return sorted(os.listdir(os.path.join(app.folder, "checkpoints")))


def test_local_default_is_loopback_and_private(tmp_path_factory, demo_pair):  # noqa: F811
    app = start(tmp_path_factory, demo_pair, "local")
    try:
        assert listening(app.port) == {"127.0.0.1"}
        assert "listening on loopback only: a private tool, everything allowed" in app.tail()
        c = Client(app.url, verbose=False, ssl_verify=False)
        hub = c.predict(repo_id="someone/vicreg-cifar10", filename="", secret="", api_name="/hub_load")
        assert hub[0] == "❌ the Hugging Face Hub cannot be reached from this server (offline?)"  # allowed, offline
    finally:
        app.stop()


def test_space_without_secret_refuses_admin_actions(tmp_path_factory, demo_pair):  # noqa: F811
    app = start(tmp_path_factory, demo_pair, "space_open", SPACE_ID="you/vicreg-studio")
    try:
        assert listening(app.port) == {"0.0.0.0"}  # as Spaces require
        assert "WARNING" in app.tail() and "no VICREG_ADMIN_TOKEN set" in app.tail()
        c = Client(app.url, verbose=False, ssl_verify=False)
        big = c.predict(**BIG, api_name="/train_start")
        assert big.startswith("❌ On this shared server a visitor&#x27;s run may be at most the size of the 10-minute "
                              "CPU demo: train images at most 2,000 (asked all); a time budget of at most 540 s or 15 "
                              "epochs (asked 50 epochs)"), big
        assert "VICREG_ADMIN_TOKEN" in big
        resume = c.predict(checkpoint=demo_pair[0], more_epochs=1, threads=1, device="cpu", secret="",
                           api_name="/train_resume")
        hub = c.predict(repo_id="someone/vicreg-cifar10", filename="", secret="", api_name="/hub_load")
        data = first(c.predict(secret="", api_name="/download_data"))
        guessed = first(c.predict(secret="guess", api_name="/download_data"))
        for text, action in ((resume, "resume training"), (hub[0], "download checkpoints from the Hub"),
                             (data, "download CIFAR-10"), (guessed, "download CIFAR-10")):
            assert text.startswith(f"❌ {REFUSED} {action}, and no admin secret is set: to allow it, the owner sets an "
                                   "admin secret named VICREG_ADMIN_TOKEN"), text
        assert [t for t in (big, resume, hub[0], data, guessed) if scan(t)] == []  # no path, value or traceback
        assert c.predict(checkpoint=None, resume_checkpoint=None, api_name="/train_status")[5]["run_id"] == 0
        assert saved(app) == []  # nothing refused left a checkpoint
        # the public rules, not a locked door: a Quick-sized run starts, under a visitor's name
        mine = c.predict(**TINY, api_name="/train_start")
        assert mine.startswith("✅ run 1 started") and "<code>visitor-mine-" in mine, mine
        info, _ = poll(c, lambda i: not i["active"], timeout=180)
        assert info["status"] == "finished" and os.path.basename(info["end"]["checkpoint"]).startswith("visitor-mine-")
    finally:
        app.stop()


def test_space_with_secret_accepts_the_admin(tmp_path_factory, demo_pair):  # noqa: F811
    app = start(tmp_path_factory, demo_pair, "space_admin", args=("--host", "127.0.0.1"), SPACE_ID="you/vicreg-studio",
                VICREG_ADMIN_TOKEN=SECRET)
    try:
        assert listening(app.port) == {"127.0.0.1"}  # --host wins, even on a Space
        c = Client(app.url, verbose=False, ssl_verify=False)
        assert c.predict(**BIG, api_name="/train_start").startswith("❌ On this shared server a visitor")
        big = c.predict(**{**BIG, "secret": SECRET}, api_name="/train_start")
        assert big == "✅ run 1 started on the embedded 2,000-image CIFAR-10 sample (the full dataset is not " \
                      "available here): saving to checkpoint <code>big</code>", big
        assert c.predict(secret=SECRET, api_name="/train_stop").startswith("✅ stopping")
        info, _ = poll(c, lambda i: not i["active"], timeout=180)
        assert info["status"] == "stopped" and info["total_steps"] == 50 * (2000 // 128)
        ckpt = info["end"]["checkpoint"]
        resume = c.predict(checkpoint=ckpt, more_epochs=0, threads=1, device="cpu", secret=SECRET,
                           api_name="/train_resume")
        assert resume.startswith("✅ run 2 started: resuming big"), resume
        c.predict(secret=SECRET, api_name="/train_stop")
        poll(c, lambda i: not i["active"], timeout=180)
        hub = c.predict(repo_id="someone/vicreg-cifar10", filename="", secret=SECRET,
                        api_name="/hub_load")[0]
        data = first(c.predict(secret=SECRET, api_name="/download_data"))
        assert hub == "❌ the Hugging Face Hub cannot be reached from this server (offline?)"  # past the gate
        assert data.startswith("❌ CIFAR-10 could not be downloaded") and "only the admin" not in data, data
        assert "downloads need a folder" in app.tail()  # the server log: it stopped before any network access
        assert saved(app) == ["big.json", "big.metrics.jsonl", "big.safetensors"]
    finally:
        app.stop()
