"""Feature banks and maps built in the background (services/features/banks.py, services/features/maps.py) and the
Explore answer that follows them (ui/explore_handlers.py), on a small "full" dataset: 200 real CIFAR-10 test
images in a packed .npz, beside the embedded sample and the default model. The bank's forward passes
run in the real child process; the UMAP fit is replaced by a fixed stand-in (its own child is tested
with the app, tests/test_app_api.py), and a gate holds the builder so that what the page shows
while the bank is being built is seen, not raced."""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from app_fixtures import demo_pair, trained_checkpoint  # noqa: F401
from PIL import Image

from services.features import children
from services.features.banks import BANK, MAP, READY
from services.settings import ROOT, Settings
from services.studio import Studio
from ui.explore_handlers import ExploreHandlers
from ui.umap_handlers import UmapHandlers
from vicreg.runfiles.files import atomic_write
from vicreg.runfiles.names import checkpoint_stem
from vicreg.training.data import Split, even_subset, read_packed


class Gate:
    """Stands between the builder and its children: holds them until opened; records each start. A gate
    closed at the end of its test fails what it holds, so that nothing runs on behind the test."""

    def __init__(self):
        self.open, self.started, self.calls, self.real = threading.Event(), threading.Event(), [], children.run
        self.closed = False

    def run(self, module, args, *rest, **kw):
        self.calls.append((module, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        self.started.set()
        self.open.wait(120)
        if self.closed:
            raise RuntimeError("the test is over")
        if module == "services.features.umap_fit":  # a fixed map: a feature bank's first two coordinates
            feats = np.load(args[0])
            atomic_write(args[1], lambda tmp: np.save(tmp, (feats[:, :2] * 10).astype(np.float32)))
            return None
        return self.real(module, args, *rest, **kw)


@pytest.fixture
def gate(monkeypatch):
    g = Gate()
    monkeypatch.setattr(children, "run", g.run)
    yield g
    g.closed = True
    g.open.set()


def make_studio(folder, packed, demo) -> Studio:
    return Studio(Settings(data_root=packed, sample=demo[1], default_checkpoint=demo[0],
                           cache_dir=str(folder / "cache"), checkpoint_dir=str(folder / "checkpoints"), threads=1))


@pytest.fixture(scope="module")
def sample(demo_pair):  # noqa: F811
    z = read_packed(demo_pair[1])
    feats = z["features"].astype(np.float32)
    return {"x": z["test_x"], "y": z["test_y"], "umap": z["umap"], "classes": json.loads(str(z["classes"])),
            "features": feats / np.linalg.norm(feats, axis=1, keepdims=True)}


def nearest(features, emb, k=8, drop=None):
    sims = features @ (emb / np.linalg.norm(emb))
    order = [i for i in np.argsort(-sims, kind="stable") if i != drop]
    return order[:k], sims


def bank_files(studio, path):
    d = studio.maps.store.folder(studio.maps.main(path))
    return {n: np.load(os.path.join(d, f"{n}.npy")) for n in ("features", "indices", "umap")}


def test_neighbours_from_the_sample_then_from_the_full_bank(tmp_path, packed_cifar, demo_pair, sample, gate):  # noqa: F811
    studio, ckpt = make_studio(tmp_path, packed_cifar, demo_pair), demo_pair[0]
    h = ExploreHandlers(studio)
    Image.fromarray(sample["x"][17].transpose(1, 2, 0)).save(tmp_path / "seventeen.png")
    h.select(ckpt)  # the page's choice: the sample's bank (stored in it), the full bank, its map
    replies = h.upload_stream(str(tmp_path / "seventeen.png"), ckpt)
    views = next(replies)
    assert views.view1 and views.view2 and views.embedding is None and views.guess is None
    assert "⏳ Embedding: computing…" in views.status
    early = next(replies)
    emb = np.asarray(early.info["embedding"], dtype=np.float32)
    order, _ = nearest(sample["features"], emb)
    assert [n["index"] for n in early.info["neighbours"]] == order and order[0] == 17  # the sample's own rows
    assert "from the embedded sample's 6,000 test images until the full test set's feature bank is ready" \
        in early.status and "Nearest of the embedded sample&#x27;s 6,000 test images for now" in early.neighbours
    assert "on the embedded sample's map" in early.status and early.info["map_xy"] is not None
    assert gate.started.wait(60) and gate.calls == [("services.features.bank_child", 19)]  # the lowest priority, held
    line, timer = h.background(ckpt)
    assert line.startswith("⏳ Building the feature bank of the test images in the background (") and timer.active
    assert line.endswith("Until it is ready, neighbours and guesses come from the embedded sample's 6,000 test images.")
    gate.open.set()
    final = list(replies)[-1]
    line, timer = h.background(ckpt)
    assert line == "" and not timer.active
    files = bank_files(studio, ckpt)
    full, _ = nearest(files["features"], emb)
    assert [n["index"] for n in final.info["neighbours"]] == files["indices"][full].tolist()
    assert "Nearest test images (class · cosine similarity · test #)" in final.neighbours
    assert "embedded sample" not in final.status and "Map position (" in final.status
    assert [m for m, _ in gate.calls] == ["services.features.bank_child", "services.features.umap_fit"]
    assert final.info["map_xy"] is not None and final.state["map"] == studio.maps.full(ckpt).index.key


def test_a_restart_loads_the_bank_from_disk(tmp_path, packed_cifar, demo_pair, gate):  # noqa: F811
    first = make_studio(tmp_path, packed_cifar, demo_pair)
    gate.open.set()
    first.maps.select(demo_pair[0])
    first.maps.wait(first.maps.stage(MAP, demo_pair[0]))
    assert len(gate.calls) == 2
    # a restart, from a copy of the checkpoint (another path and date): found by its content's hash
    copy = tmp_path / "elsewhere" / os.path.basename(demo_pair[0])
    copy.parent.mkdir()
    shutil.copy(demo_pair[0], copy)
    again = make_studio(tmp_path, packed_cifar, demo_pair)
    again.maps.select(str(copy))
    again.maps.wait(again.maps.stage(MAP, str(copy)))
    assert len(gate.calls) == 2 and again.maps.stage(BANK, str(copy)).state == READY  # no child ran
    bank = again.maps.best(str(copy))
    assert not bank.stand_in and bank.coords is not None
    np.testing.assert_array_equal(bank.index.features, bank_files(first, demo_pair[0])["features"])


def test_another_checkpoint_gets_the_samples_bank_first(tmp_path, packed_cifar, demo_pair, trained_checkpoint,  # noqa: F811
                                                         gate):
    studio, ckpt = make_studio(tmp_path, packed_cifar, demo_pair), trained_checkpoint
    gate.open.set()
    studio.maps.select(ckpt)
    studio.maps.wait(studio.maps.stage(MAP, ckpt))
    assert [m for m, _ in gate.calls] == ["services.features.bank_child"] * 2 + ["services.features.umap_fit"]
    stand_in = studio.maps.store.bank(studio.maps.stand_in(ckpt))  # computed, not stored in the sample
    assert stand_in.features.shape[0] == 6000 and studio.maps.store.coords(studio.maps.stand_in(ckpt)) is None
    assert studio.maps.best(ckpt).index.features.shape[0] == 200 and not studio.maps.best(ckpt).stand_in


@pytest.mark.usefixtures("gate")
def test_a_test_image_leaves_itself_out_of_the_samples_bank(tmp_path, packed_cifar, demo_pair, sample):  # noqa: F811
    studio, ckpt = make_studio(tmp_path, packed_cifar, demo_pair), demo_pair[0]  # the gate stays shut
    h = ExploreHandlers(studio)
    replies = h.test_stream(3, ckpt)  # the packed set holds 200 evenly spaced test images of the sample
    row = int(even_subset(Split(torch.from_numpy(sample["x"]), torch.from_numpy(sample["y"])), 200)[1][3])
    answer = [r for r in (next(replies), next(replies)) if r.info["neighbours"]][0]
    emb = np.asarray(answer.info["embedding"], dtype=np.float32)
    order, sims = nearest(sample["features"], emb, drop=row)
    assert row == 90 and sims[row] > 0.999 and [n["index"] for n in answer.info["neighbours"]] == order
    assert "leave-one-out" in answer.status and "from the embedded sample's" in answer.status


def test_umap_shows_the_samples_map_until_the_full_one(tmp_path, packed_cifar, demo_pair, sample,  # noqa: F811
                                                        gate):
    studio, ckpt = make_studio(tmp_path, packed_cifar, demo_pair), demo_pair[0]
    h = UmapHandlers(studio)
    early = h.preview(ckpt, None)
    assert early.result["stand_in"] is True and early.result["points"] == len(sample["umap"])
    assert early.status.startswith(f"**{checkpoint_stem(ckpt)}**: 6,000 of the embedded CIFAR-10 sample's test "
                                   "images · standing in until the map of the full test set, which is being built in "
                                   "the background (")
    assert gate.started.wait(60)
    status, plot, result, _, timer = h.tick(ckpt, None, early.result)
    assert "standing in until the map of the full test set" in status and plot == result == {"__type__": "update"}
    gate.open.set()
    studio.maps.wait(studio.maps.stage(MAP, ckpt))
    *out, timer = h.tick(ckpt, None, early.result)
    assert out[2]["stand_in"] is False and out[2]["points"] == 200 and out[2]["sample"] is False
    coords = bank_files(studio, ckpt)["umap"]
    traces = json.loads(out[1].plot)["data"]
    assert sum(len(t["x"]) for t in traces) == 200 and traces[0]["x"][0] in np.round(coords[:, 0], 3)


def test_children_run_at_the_lowest_priority():
    code = "import os; from services.features.children import lower_priority; lower_priority(); print(os.nice(0))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(children.NICE), out.stderr


def test_a_child_that_fails_says_why(tmp_path):
    seen = []
    with pytest.raises(RuntimeError,
                       match=r"(?s)services.features.bank_child failed \(exit 2\): .*CHECKPOINT IMAGES.npy"):
        children.run("services.features.bank_child", ["too", "few"], str(tmp_path / "child.log"),
                     lambda f, text: seen.append((f, text)), timeout=60)
    assert seen == []


def test_progress_lines_are_read_and_others_ignored():
    import io

    last = [None]
    children._read_progress(io.StringIO("hello\nprogress 0.25 embedding 10 images\nprogress x y\n"), last)
    assert last[0] == (0.25, "embedding 10 images")
