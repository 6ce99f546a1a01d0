"""Checkpoint names and paths cannot read or write outside the checkpoint folder.

Each test plants the same trap: a checkpoint folder beside an `outside` folder that holds a real,
resumable checkpoint (`secret`) and a victim file, with symlinks in the checkpoint folder leading out
to them (and one harmless link to a checkpoint inside). Then every way in tries `../`, absolute paths,
the links, and names with NUL or a newline: the command line (subprocesses; they fail before loading
anything), the app's handlers called directly (with every open of a file under `outside` recorded),
and the app's API through gradio_client. Each must be refused with a message that shows no absolute
path, and afterwards `outside` and the folder around it are byte for byte as they were.

The rules (vicreg/__main__.py and services/catalog.py say why): the CLI's `--model_path` may read a
checkpoint anywhere (the local user's own path), but a run's name stays a file in the checkpoint
folder; the app opens only the listed checkpoints, whose real paths are inside the folder, or the
default model.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from app_fixtures import KNOBS, demo_pair, offline_app  # noqa: F401
from leaks import scan

from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.core.presets import DEFAULT_MODEL
from vicreg.orchestration.jobs import TrainingJob
from vicreg.runfiles.checkpoint import CheckpointError, save_checkpoint
from vicreg.runfiles.names import checkpoint_stem

pytestmark = pytest.mark.reliability
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TALLY: dict[str, tuple[int, int]] = {}  # part -> (refused, tried)
UNLISTED = "⚠️ That checkpoint is not in the list"  # ui.common.UNLISTED: nothing was opened


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    done, tried = sum(r for r, _ in TALLY.values()), sum(t for _, t in TALLY.values())
    print(f"\npath attacks refused {done}/{tried} (" + ", ".join(f"{k} {r}/{t}" for k, (r, t) in TALLY.items()) + ")")


@pytest.fixture(scope="module")
def secret_checkpoint(tmp_path_factory) -> str:
    """A real checkpoint that can be resumed (1 of 2 epochs done): if anything used it, it would work."""
    from vicreg.core.model import VICReg

    cfg = TrainConfig(epochs=2, model=ModelConfig(projector="16-16"))
    path = str(tmp_path_factory.mktemp("secret") / "secret.safetensors")
    return save_checkpoint(path, VICReg(cfg.model), None, {"config": cfg.to_dict(), "epoch": 1, "step": 4})


def plant(base: str, secret: str, default: str) -> dict:
    """base/checkpoints/ (one real checkpoint, links in and out) beside base/outside/ (the secret, a victim)."""
    ck, out = os.path.join(base, "checkpoints"), os.path.join(base, "outside")
    os.makedirs(ck, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    shutil.copy(secret, os.path.join(out, "secret.safetensors"))
    shutil.copy(secret, os.path.join(ck, "inside.safetensors"))
    with open(os.path.join(out, "victim.txt"), "w") as f:
        f.write("not yours")  # no final newline: a metrics log opened through a link would be cut back
    victim = os.path.join(out, "victim.txt")
    links = {"linked.safetensors": os.path.join(out, "secret.safetensors"), "evil.metrics.jsonl": victim,
             "evil2.safetensors": victim, checkpoint_stem(default) + ".embeddings.npy": victim,
             "alias.safetensors": os.path.join(ck, "inside.safetensors")}
    for name, target in links.items():
        if not os.path.lexists(os.path.join(ck, name)):
            os.symlink(target, os.path.join(ck, name))
    return {"base": base, "ck": ck, "out": out, "secret": os.path.join(out, "secret.safetensors")}


def snapshot(w: dict) -> dict:
    """outside/'s files (path -> sha256), and every file named like an attack's name around the trap."""
    files = {os.path.join(w["out"], n): hashlib.sha256(open(os.path.join(w["out"], n), "rb").read()).hexdigest()
             for n in os.listdir(w["out"])}
    for root, _, names in os.walk(os.path.dirname(w["base"])):
        files.update({os.path.join(root, n): "planted?" for n in names if "escape" in n or "planted" in n})
    return files


def attack_values(w: dict, default: str) -> dict:
    """Checkpoint values a client might send instead of a listed one."""
    ck = w["ck"]
    return {"absolute": w["secret"], "dotdot": os.path.join(ck, "..", "outside", "secret.safetensors"),
            "relative": os.path.relpath(w["secret"]), "link_out": os.path.join(ck, "linked.safetensors"),
            "nul": os.path.join(ck, "inside.safetensors") + "\x00", "newline": os.path.join(ck, "inside.safetensors\n"),
            "not_canonical": os.path.join(ck, ".", "inside.safetensors"), "etc": "/etc/passwd",
            "default_dotdot": os.path.join(os.path.dirname(default), "..", os.path.basename(os.path.dirname(default)),
                                           os.path.basename(default))}


def bad_names(w: dict) -> dict:
    return {"dotdot": "../escape", "absolute": os.path.join(w["out"], "planted"), "nested": "a/b", "up": "..",
            "hidden": ".hidden", "nul": "a\x00b", "newline": "a\nb", "return": "a\rb", "backslash": "..\\escape",
            "long": "x" * 300, "padded": "  ../escape  ", "link_metrics": "evil", "link_checkpoint": "linked",
            "link_victim": "evil2"}


def clean(text: str, w: dict) -> bool:
    """A message that names no absolute path of this machine (tests/leaks.py counts it for the summary)."""
    return not scan(text) and all(s not in text for s in (w["base"], ROOT, os.path.realpath(w["base"]), "/etc/",
                                                          "/tmp/"))


def tally(part: str, results: dict) -> None:
    bad = {k: v for k, v in results.items() if v is not True}
    TALLY[part] = (len(results) - len(bad), len(results))
    assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())


# --- the command line --------------------------------------------------------------------------------

def cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": "", "VICREG_DATA": os.path.join(cwd, "nodata")}
    return subprocess.run([sys.executable, "-m", "vicreg", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_refuses_names_that_escape(tmp_path, secret_checkpoint, demo_pair, capsys):  # noqa: F811
    """Three kinds as real commands (subprocesses), then every attack through the same main() in process:
    a subprocess costs seconds of importing torch, and argv cannot carry NUL at all."""
    import torch

    from vicreg.__main__ import main

    w = plant(str(tmp_path / "trap"), secret_checkpoint, demo_pair[0])
    before, ck, nodata = snapshot(w), w["ck"], str(tmp_path / "nodata")  # a guard that failed would not train
    runs = {f"TRAIN {k}": ("TRAIN", "--name", v, "--checkpoint_dir", ck, "--epochs", "1", "--threads", "1",
                           "--data", nodata) for k, v in bad_names(w).items()}
    runs["RE_TRAIN --name ../"] = ("RE_TRAIN", "--model_path", os.path.join(ck, "inside.safetensors"), "--name",
                                   "../escape", "--checkpoint_dir", ck)
    runs["RE_TRAIN link, same name"] = ("RE_TRAIN", "--model_path", os.path.join(ck, "linked.safetensors"))
    runs["EVALUATE --name"] = ("EVALUATE", "--model_path", demo_pair[0], "--name", "../x", "--checkpoint_dir", ck)
    runs["INFERENCE --name"] = ("INFERENCE", "--model_path", demo_pair[0], "--name", "a\nb", "--checkpoint_dir", ck)
    runs["INFERENCE output link"] = ("INFERENCE", "--model_path", demo_pair[0], "--checkpoint_dir", ck,
                                     "--threads", "1")
    runs["EVALUATE not a checkpoint"] = ("EVALUATE", "--model_path", w["out"] + "/victim.txt", "--threads", "1")
    real = ("TRAIN dotdot", "RE_TRAIN link, same name", "INFERENCE output link")
    with ThreadPoolExecutor(3) as pool:
        done = dict(zip(real, pool.map(lambda k: cli(*runs[k], cwd=str(tmp_path)), real), strict=True))
    threads = torch.get_num_threads()
    try:
        for k, argv in runs.items():
            rc = main(list(argv))
            done[k + " (in process)"] = subprocess.CompletedProcess(argv, rc, "", capsys.readouterr().err)
    finally:
        torch.set_num_threads(threads)  # --threads 1 set it for this process
    expect = {"INFERENCE output": "link that leads out of it", "link": "leads out of the checkpoint folder",
              "not a checkpoint": "cannot read checkpoint"}
    results = {}
    for k, r in done.items():
        want = next((v for key, v in expect.items() if key in k), "invalid checkpoint name")
        err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        results[k] = True if r.returncode == 2 and err.startswith("error: ") and want in err and \
            "Traceback" not in r.stderr else f"rc {r.returncode}: {r.stderr[-400:]}"
    assert snapshot(w) == before and sorted(os.listdir(w["base"])) == ["checkpoints", "outside"]
    tally("cli", results)


# --- the app's handlers, in process ---------------------------------------------------------------------

class FakeJob(TrainingJob):
    """Records what would have started instead of training."""

    def __init__(self):
        super().__init__()
        self.started = []

    def start(self, cfg, resume=None, **_kw):
        self.started.append((cfg, resume))
        return True, f"run {len(self.started)} started"


RECORD: list[list[str]] = []  # the running test's list of opened files, while it holds one


def _audit(event, args):
    if event == "open" and RECORD and isinstance(args[0], (str, bytes)):
        RECORD[-1].append(os.fsdecode(args[0]))


@pytest.fixture
def opened(monkeypatch):
    """Every file opened while the test runs: Python's open (audit hook) and safetensors' own readers."""
    import safetensors
    import safetensors.torch

    import vicreg.runfiles.checkpoint

    if _audit not in HOOKED:
        sys.addaudithook(_audit)  # cannot be removed: it records only while a test holds RECORD
        HOOKED.append(_audit)
    seen: list[str] = []
    RECORD.append(seen)

    def spy(fn):
        return lambda path, *a, **k: (seen.append(os.fspath(path)), fn(path, *a, **k))[1]

    monkeypatch.setattr(safetensors, "safe_open", spy(safetensors.safe_open))
    monkeypatch.setattr(vicreg.runfiles.checkpoint, "load_file", spy(safetensors.torch.load_file))
    yield seen
    RECORD.remove(seen)


HOOKED: list = []


def test_handlers_refuse_paths_and_names(tmp_path, secret_checkpoint, demo_pair, opened):  # noqa: F811
    from PIL import Image

    from services.settings import Settings
    from services.studio import Studio
    from ui.layout import Handlers

    w = plant(str(tmp_path / "trap"), secret_checkpoint, demo_pair[0])
    studio = Studio(Settings(data_root=str(tmp_path / "nodata"), sample=demo_pair[1], default_checkpoint=demo_pair[0],
                             checkpoint_dir=w["ck"], cache_dir=str(tmp_path / "cache"), threads=1))
    job = FakeJob()
    h = Handlers.create(studio, job)
    before, default = snapshot(w), demo_pair[0]
    opened.clear()  # from here on: the app only (planting and snapshots open the files themselves)
    listed = [p for _, p in h.header.refresh(None)["choices"]]
    assert sorted(map(os.path.basename, listed)) == sorted(["alias.safetensors", f"{DEFAULT_MODEL}.safetensors",
                                                           "inside.safetensors"])
    png = str(tmp_path / "cache" / "x.png")
    os.makedirs(os.path.dirname(png), exist_ok=True)
    Image.new("RGB", (32, 32), "red").save(png)
    checks = {
        "resume": lambda v: h.train.resume(v, 1, 1, "cpu", "").startswith(UNLISTED),
        "explore_upload": lambda v: h.explore.upload(png, v).status.startswith(UNLISTED),
        "explore_test_image": lambda v: h.explore.test_image(0, v).status.startswith(UNLISTED),
        "evaluation_stored": lambda v: h.evaluate.stored(v).summary.startswith(UNLISTED),
        "evaluate": lambda v: (o := h.evaluate.evaluate(v, 10, 10, 1)).result is None and clean(o.summary, w),
        "umap_preview": lambda v: h.umap.preview(v, None).status.startswith(UNLISTED),
        "umap": lambda v: h.umap.show(v, None).status.startswith(UNLISTED),
        "refresh": lambda v: h.header.refresh(v)["value"] == default,
        "poll": lambda v: (o := h.train.poll(None, v, v)).checkpoint["value"] == default and
        o.resume_from["value"] is None,
    }
    results = {}
    for what, value in attack_values(w, default).items():
        for endpoint, ok in checks.items():
            try:
                results[f"{endpoint} {what}"] = ok(value) or "accepted"
            except Exception as e:  # a handler must answer, never raise
                results[f"{endpoint} {what}"] = f"{type(e).__name__}: {e}"
    for what, name in bad_names(w).items():
        out = h.train.start("quick_demo", name=name, epochs=1, batch_size=64, optimizer="lars", lr=0, train_subset=0,
                            inv_coeff=25, var_coeff=25, cov_coeff=1, knn_train=0, knn_test=0, warmup_epochs=0.5,
                            threads=1, device="cpu", secret="")
        text = getattr(out, "message", out)  # a (message, owner) pair where runs have owners
        results[f"train_start {what}"] = text.startswith("❌ Cannot start: ") and clean(text, w) or text
    for what, (repo, file) in {
        "file dotdot": ("user/repo", "../../outside/secret.safetensors"), "file absolute": ("user/repo", w["secret"]),
        "file inner dotdot": ("user/repo", "a/../../x.safetensors"), "file nul": ("user/repo", "x\x00.safetensors"),
        "file newline": ("user/repo", "x\n.safetensors"), "file backslash": ("user/repo", "..\\x.safetensors"),
        "file hidden": ("user/repo", ".cache/x.safetensors"), "file not a checkpoint": ("user/repo", "/etc/passwd"),
        "repo dotdot": ("../../etc", ""), "repo absolute": ("/etc/passwd", ""), "repo nested": ("a/../../b", ""),
        "repo nul": ("a\x00/b", ""),
    }.items():
        text = h.header.hub(repo, file, None)[0]
        results[f"hub {what}"] = text.startswith("❌ ") and clean(text, w) or text
    assert [p for p in opened if os.path.realpath(p).startswith(os.path.realpath(w["out"]))] == []
    assert job.started == [] and snapshot(w) == before
    tally("handlers", results)


def test_checkpoint_path_refuses_links_out(tmp_path, secret_checkpoint, demo_pair):  # noqa: F811
    """The trainer's own guard (vicreg.runfiles.names.checkpoint_path), for writers that skip the handlers."""
    from vicreg.runfiles.names import checkpoint_path

    w = plant(str(tmp_path), secret_checkpoint, demo_pair[0])
    results = {}
    for name in ("evil", "linked", "evil2", "../outside/secret", "a\nb"):
        try:
            results[name] = f"allowed: {checkpoint_path(w['ck'], name)}"
        except CheckpointError as e:
            results[name] = "leads out of the checkpoint folder" in str(e) or "invalid checkpoint name" in str(e)
    assert checkpoint_path(w["ck"], "alias") == os.path.join(w["ck"], "alias.safetensors")  # a link inside is fine
    tally("engine", results)


# --- the API of a running app ----------------------------------------------------------------------------

def test_api_refuses_paths_and_names(offline_app, secret_checkpoint, demo_pair):  # noqa: F811
    import httpx
    from gradio_client import Client, handle_file
    from PIL import Image

    w = plant(offline_app.folder, secret_checkpoint, demo_pair[0])  # its checkpoints/ is the app's folder
    before, default = snapshot(w), offline_app.default
    c = Client(offline_app.url, verbose=False)
    listed = [os.path.basename(p) for _, p in c.predict(checkpoint=None, api_name="/checkpoints")["choices"]]
    assert sorted(listed) == sorted(["alias.safetensors", f"{DEFAULT_MODEL}.safetensors", "inside.safetensors"])
    api = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    path_params = {"checkpoint", "resume_checkpoint", "name", "filename", "repo_id", "image"}
    png = os.path.join(w["out"], "..", "upload.png")
    Image.new("RGB", (32, 32), "blue").save(png)
    calls = {
        "/train_resume": (lambda v: c.predict(checkpoint=v, more_epochs=1, threads=1, device="cpu", secret="",
                                              api_name="/train_resume"), lambda o: o.startswith(UNLISTED)),
        "/explore_upload": (lambda v: c.predict(image=handle_file(png), checkpoint=v, api_name="/explore_upload"),
                            lambda o: o[0].startswith(UNLISTED)),
        "/explore_test_image": (lambda v: c.predict(index=0, checkpoint=v, api_name="/explore_test_image"),
                                lambda o: o[0].startswith(UNLISTED)),
        "/explore_views": (lambda v: c.predict(checkpoint=v, api_name="/explore_views"),
                           # drawn with the default augmentation, or no image yet (an unlisted upload sets none)
                           lambda o: "crop_xywh" in json.dumps(o[2]) or o[0] == "ℹ️ Upload or pick an image first."),
        "/evaluation_stored": (lambda v: c.predict(checkpoint=v, api_name="/evaluation_stored"),
                               lambda o: o[0].startswith(UNLISTED)),
        "/evaluate": (lambda v: c.predict(checkpoint=v, n_train=10, n_test=10, probe_epochs=1, api_name="/evaluate"),
                      lambda o: o[3] is None or o[3].get("results") is None),
        "/umap_preview": (lambda v: c.predict(checkpoint=v, api_name="/umap_preview"),
                          lambda o: o[0].startswith(UNLISTED)),
        "/umap": (lambda v: c.predict(checkpoint=v, api_name="/umap"), lambda o: o[0].startswith(UNLISTED)),
        "/checkpoints": (lambda v: c.predict(checkpoint=v, api_name="/checkpoints"), lambda o: o["value"] == default),
        "/train_status": (lambda v: c.predict(checkpoint=v, resume_checkpoint=v, api_name="/train_status"),
                          lambda o: all(u.get("value") in (default, None) for u in o if isinstance(u, dict) and
                                        "choices" in u)),  # checkpoint lists: never the sent value
    }
    covered = {"/train_start", "/hub_load", *calls}
    assert {ep for ep, d in api.items() if path_params & {p["parameter_name"] for p in d["parameters"]}} == covered
    results = {}
    for what, value in attack_values(w, default).items():
        for ep, (call, ok) in calls.items():
            out = call(value)
            results[f"{ep} {what}"] = bool(ok(out)) and "secret" not in json.dumps(out, default=str) or str(out)[:300]
    for what, name in bad_names(w).items():
        text = c.predict(**{**KNOBS, "name": name}, api_name="/train_start")
        results[f"/train_start {what}"] = text.startswith("❌ Cannot start: ") and clean(text, w) or text
    files = {"dotdot": "../../outside/secret.safetensors", "absolute": w["secret"], "nul": "x\x00.safetensors",
             "newline": "x\n.safetensors"}
    for what, file in files.items():
        text = c.predict(repo_id="user/repo", filename=file, api_name="/hub_load")[0]
        results[f"/hub_load {what}"] = text.startswith("❌ The file must be a path inside") and clean(text, w) or text
    # the upload box given a server path instead of an upload, and gradio's file route: gradio refuses both
    r = httpx.post(offline_app.url + "gradio_api/call/explore_upload", timeout=30, json={
        "data": [{"path": w["secret"], "meta": {"_type": "gradio.FileData"}}, default]})
    text = httpx.get(offline_app.url + f"gradio_api/call/explore_upload/{r.json()['event_id']}", timeout=30).text
    results["image path not uploaded"] = text.startswith("event: error") or text[:200]
    for what, url in {"file route": f"gradio_api/file={w['secret']}",
                      "file route dotdot": f"gradio_api/file=/tmp/gradio/../../{w['secret'].lstrip('/')}"}.items():
        r = httpx.get(offline_app.url + url, timeout=30)
        results[what] = r.status_code in (403, 404) or f"HTTP {r.status_code}"
    assert snapshot(w) == before and offline_app.proc.poll() is None
    assert "Traceback" not in "".join(str(v) for v in results.values())
    tally("api", results)
