"""Hostile checkpoints as a visitor meets them: planted in the checkpoint folder, or fetched from the
Hub. None is listed or loaded, no code runs, and every message is one a visitor may see (tests/leaks.py:
no server path, environment value or traceback)."""
from __future__ import annotations

import os
import shutil

import pytest
from app_fixtures import demo_pair  # noqa: F401
from leaks import scan
from test_hostile_checkpoints import _cases

import services.hub
from services.settings import Settings
from services.studio import Studio
from ui.layout import Handlers
from vicreg.orchestration.jobs import TrainingJob

pytestmark = pytest.mark.reliability


@pytest.fixture
def planted(tmp_path, demo_pair):  # noqa: F811
    made = tmp_path / "made"
    made.mkdir()
    marker, files = _cases(made)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for f in files:
        shutil.copy(made / f, folder / f)
    studio = Studio(Settings(data_root=str(tmp_path / "no-data"), sample=demo_pair[1], default_checkpoint=demo_pair[0],
                             checkpoint_dir=str(folder), cache_dir=str(tmp_path / "cache"), threads=1))
    return Handlers.create(studio, TrainingJob()), studio, folder, made, files, marker


def test_planted_checkpoints_are_never_listed_or_opened(planted, tmp_path, demo_pair):  # noqa: F811
    h, studio, folder, _, files, marker = planted
    assert [p for _, p in studio.catalog.choices()] == [demo_pair[0]]  # only the default model is offered
    img = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (40, 30), "teal").save(img)
    texts = []
    for f in files:
        path = str(folder / f)
        texts += [h.explore.upload(str(img), path).status, h.umap.show(path, None).status,
                  h.evaluate.evaluate(path, 100, 100, 5).summary, h.train.resume(path, 1, 1, "cpu", ""),
                  h.train.resume(f, 1, 1, "cpu", "")]
    assert all(scan(t) == [] for t in texts), [t for t in texts if scan(t)]
    assert not os.path.exists(marker)


def test_hostile_hub_downloads_are_refused(planted, monkeypatch):
    h, studio, folder, made, files, marker = planted
    before = sorted(os.listdir(folder))
    monkeypatch.setattr(services.hub, "check_online", lambda *_a, **_k: None)
    refused = []
    for f in files:
        monkeypatch.setattr(services.hub, "hf_hub_download", lambda _repo, _name, f=f: str(made / f))
        text = h.header.hub("someone/vicreg-cifar10", "model.safetensors", None)[0]
        assert text == "❌ someone/vicreg-cifar10/model.safetensors is not a VICReg Studio checkpoint", (f, text)
        assert scan(text) == []
        refused.append(f)
    assert len(refused) == 10 and sorted(os.listdir(folder)) == before and not os.path.exists(marker)
    print(f"\nhostile checkpoints refused from the Hub {len(refused)}/{len(files)}")
