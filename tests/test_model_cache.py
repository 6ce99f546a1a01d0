"""services/features/models.py: concurrent embed requests are batched on the light thread and each caller gets
its own image's embedding (and a bad checkpoint's error)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from app_fixtures import demo_pair  # noqa: F401

from services.features.models import ModelCache
from vicreg.runfiles.checkpoint import CheckpointError


def test_concurrent_requests_are_batched_and_answered_each(demo_pair, tmp_path):  # noqa: F811
    cache = ModelCache(device="cpu", precision="fp32")
    imgs = np.random.default_rng(0).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    alone = [cache.embed(demo_pair[0], im) for im in imgs]
    sizes, real = [], cache._embed_many

    def counted(path, images):
        sizes.append(len(images))
        return real(path, images)

    cache._embed_many = counted
    got, errors = [None] * len(imgs), []
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")

    def ask(i):
        got[i] = cache.embed(demo_pair[0], imgs[i])

    def ask_bad():
        with pytest.raises(CheckpointError) as e:
            cache.embed(str(bad), imgs[0])
        errors.append(str(e.value))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(imgs))] + [threading.Thread(target=ask_bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s for s in sizes if s) == len(imgs) + 1 and max(sizes) > 1  # batched, each image once
    for a, b in zip(alone, got, strict=True):
        assert b.shape == (512,) and np.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert len(errors) == 1 and "bad.safetensors" in errors[0]
