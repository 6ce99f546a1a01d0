"""Per-process caches behind the app (no gradio here): the dataset, loaded models, one feature index
of the CIFAR-10 test set per checkpoint, its UMAP, and evaluation reports.

Disk layout under VICREG_CACHE (plain .npy and JSON, never pickle):
    explore/<checkpoint-key>-n<points>-<precision>/{features,labels,indices,umap}.npy, meta.json
    eval/<checkpoint-key>-<n_train>-<n_test>-<epochs>-<precision>.json
A checkpoint's key includes its mtime and size, so retraining under the same name misses the cache.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import umap_fit
from .config import default_cache_dir, default_data_root
from .data import Dataset, even_subset, load_dataset
from .explore import FeatureIndex, Progress, _save_npy, l2_normalize, map_points, model_key, two_views


class HubError(RuntimeError):
    """A Hugging Face Hub download that failed; str(e) is a message for the visitor."""


def _noop(frac: float, desc: str) -> None:
    pass


class Studio:
    def __init__(self, data_root: str | None = None, cache_dir: str | None = None, device: str = "auto", precision: str = "auto"):
        self.data_root = data_root or default_data_root()
        self.cache_dir = cache_dir or default_cache_dir()
        self._device, self._precision = device, precision
        self._rt = None
        self._lock = threading.RLock()  # guards the dicts below
        self._data_lock = threading.Lock()
        self.heavy = threading.Lock()  # one feature extraction / UMAP fit / evaluation at a time
        self._data: dict[str, Dataset] = {}
        self._models: OrderedDict = OrderedDict()
        self._indexes: OrderedDict = OrderedDict()
        self._maps: dict[str, np.ndarray] = {}
        # torch's intra-op thread count is per OS thread (new threads inherit the last value set).
        # Per-image work runs on one thread of its own with 1 torch thread: tiny ops on 2 threads
        # wait on each other whenever the CPU is shared (measured ~60 ms vs ~5 ms for two views).
        # Heavy work sets `threads` back explicitly, and so must training (TrainConfig.threads).
        # VICREG_APP_THREADS overrides it: on a CPU shared with other jobs, 1 thread avoids OpenMP
        # oversubscription (measured there: 0.65 s/step instead of 10 s/step at batch 16).
        self.threads = int(os.environ.get("VICREG_APP_THREADS") or 0) or torch.get_num_threads()
        self._light = ThreadPoolExecutor(1, thread_name_prefix="vicreg-light", initializer=torch.set_num_threads, initargs=(1,))

    # ------------------------------------------------------------------ basics
    @property
    def rt(self):
        if self._rt is None:
            from .runtime import make_runtime

            self._rt = make_runtime(self._device, self._precision)
        return self._rt

    def dataset(self, root: str | None = None) -> Dataset:
        """Loaded once per process and root (the training job's data_loader uses this too)."""
        root = os.path.abspath(root or self.data_root)
        with self._data_lock:
            if root not in self._data:
                self._data[root] = load_dataset(root)
            return self._data[root]

    def model(self, path: str | None):
        from .embed import load_model

        key = model_key(path)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model, cfg, _ = load_model(path, self.rt)
        with self._lock:
            self._models[key] = (model, cfg)
            while len(self._models) > 3:
                self._models.popitem(last=False)
        return model, cfg

    def embed(self, path: str, pixels: np.ndarray) -> np.ndarray:
        """512-d backbone embedding of one (3, 32, 32) uint8 image."""
        return self._light.submit(self._embed, path, pixels).result()

    def _embed(self, path: str, pixels: np.ndarray) -> np.ndarray:
        from .evaluate import extract_features

        model, cfg = self.model(path)
        x = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(0)
        return extract_features(model.backbone, x, self.rt, cfg.augment).numpy()[0]

    def views(self, pixels: np.ndarray, path: str | None, seed: int):
        """Two augmented views with the checkpoint's augmentation settings (defaults without one)."""
        from .config import AugmentConfig

        aug = self.model(path)[1].augment if path else AugmentConfig()
        return self._light.submit(two_views, pixels, aug, seed).result()

    def _index_dir(self, path: str | None) -> str:
        prec = "bf16" if self.rt.bf16 else "fp32"
        return os.path.join(self.cache_dir, "explore", f"{model_key(path)}-n{map_points()}-{prec}")

    # ------------------------------------------------------------------ feature index
    def cached_index(self, path: str) -> FeatureIndex | None:
        d = self._index_dir(path)
        with self._lock:
            if d in self._indexes:
                self._indexes.move_to_end(d)
                return self._indexes[d]
        try:
            with open(os.path.join(d, "meta.json")) as f:
                meta = json.load(f)
            arrays = [np.load(os.path.join(d, f"{n}.npy"), allow_pickle=False) for n in ("features", "labels", "indices")]
        except (OSError, ValueError):
            return None
        idx = FeatureIndex(os.path.basename(d), arrays[0], arrays[1], arrays[2], meta["classes"])
        with self._lock:
            self._indexes[d] = idx
            while len(self._indexes) > 4:
                self._indexes.popitem(last=False)
        return idx

    def index(self, path: str, progress: Progress | None = None) -> FeatureIndex:
        """Features of the first map_points() evenly spaced CIFAR-10 test images (computed once)."""
        from .evaluate import extract_features

        progress = progress or _noop
        hit = self.cached_index(path)
        if hit is not None:
            return hit
        with self.heavy:
            hit = self.cached_index(path)  # another visitor may have built it meanwhile
            if hit is not None:
                return hit
            torch.set_num_threads(self.threads)
            progress(0.0, "loading CIFAR-10")
            data = self.dataset()
            sub, idx = even_subset(data.test, map_points())
            model, cfg = self.model(path)
            feats = extract_features(model.backbone, sub.images, self.rt, cfg.augment, batch_size=256,
                                     progress=lambda f, d: progress(f, f"embedding {len(sub)} test images"))
            d = self._index_dir(path)
            os.makedirs(d, exist_ok=True)
            for name, arr in (("features", l2_normalize(feats.numpy())), ("labels", sub.labels.numpy()), ("indices", idx)):
                _save_npy(os.path.join(d, f"{name}.npy"), arr)
            with open(os.path.join(d, "meta.json"), "w") as f:
                json.dump({"checkpoint": path, "classes": list(data.classes), "points": len(sub), "data": data.source}, f)
        return self.cached_index(path)

    # ------------------------------------------------------------------ UMAP
    def cached_umap(self, path: str) -> np.ndarray | None:
        f = os.path.join(self._index_dir(path), "umap.npy")
        with self._lock:
            if f in self._maps:
                return self._maps[f]
        if not os.path.exists(f):
            return None
        coords = np.load(f, allow_pickle=False)
        with self._lock:
            self._maps[f] = coords
        return coords

    def umap(self, path: str, progress: Progress | None = None, timeout: float = 1800) -> np.ndarray:
        """2-D map of the index, fitted in a child process (numba never loads in the server)."""
        progress = progress or _noop
        hit = self.cached_umap(path)
        if hit is not None:
            return hit
        self.index(path, lambda f, d: progress(0.4 * f, d))
        with self.heavy:
            hit = self.cached_umap(path)
            if hit is not None:
                return hit
            d = self._index_dir(path)
            out, log = os.path.join(d, "umap.npy"), os.path.join(d, "umap.log")
            t0 = time.perf_counter()
            with open(log, "w") as lf:
                proc = subprocess.Popen([sys.executable, umap_fit.__file__, os.path.join(d, "features.npy"), out],
                                        stdout=lf, stderr=subprocess.STDOUT)
                try:
                    while proc.poll() is None:
                        el = time.perf_counter() - t0
                        if el > timeout:
                            raise RuntimeError(f"UMAP did not finish within {timeout:.0f}s")
                        # no progress from inside UMAP: an estimate (~20 s cold, ~10 s warm for 10k points)
                        progress(0.4 + 0.55 * min(1.0, el / 25), f"fitting UMAP ({el:.0f}s; about 10-30 s)")
                        time.sleep(0.5)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            if proc.returncode != 0 or not os.path.exists(out):
                with open(log) as lf:
                    tail = lf.read()[-600:]
                raise RuntimeError(f"UMAP failed (exit {proc.returncode}): {tail.strip()}")
        progress(1.0, "map ready")
        return self.cached_umap(path)

    # ------------------------------------------------------------------ evaluation
    def cached_eval(self, path: str | None, n_train: int, n_test: int, epochs: int) -> dict | None:
        try:
            with open(self._eval_file(path, n_train, n_test, epochs)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _eval_file(self, path, n_train, n_test, epochs) -> str:
        prec = "bf16" if self.rt.bf16 else "fp32"
        return os.path.join(self.cache_dir, "eval", f"{model_key(path)}-{n_train}-{n_test}-{epochs}-{prec}.json")

    def evaluate(self, path: str | None, n_train: int, n_test: int, epochs: int = 100, progress: Progress | None = None) -> dict:
        """kNN + linear probe on evenly spaced subsets (0 = all); path None = random-init baseline.
        Results are cached on disk, so the baseline is computed once per subset size."""
        from .evaluate import evaluate_backbone

        progress = progress or _noop
        hit = self.cached_eval(path, n_train, n_test, epochs)
        if hit is not None:
            return hit
        with self.heavy:
            hit = self.cached_eval(path, n_train, n_test, epochs)
            if hit is not None:
                return hit
            torch.set_num_threads(self.threads)
            progress(0.0, "loading CIFAR-10")
            data = self.dataset()
            tr, _ = even_subset(data.train, n_train)
            te, _ = even_subset(data.test, n_test)
            model, cfg = self.model(path)
            rep = evaluate_backbone(model.backbone, tr.images, tr.labels, te.images, te.labels, data.classes, self.rt,
                                    cfg.augment, probe_epochs=epochs, progress=progress)
            res = {"checkpoint": path, "knn_top1": rep.knn_top1, "linear_top1": rep.linear.top1,
                   "train_top1": rep.linear.train_top1, "per_class": rep.linear.per_class,
                   "confusion": rep.linear.confusion, "classes": rep.classes, "seconds": rep.seconds,
                   "n_train": len(tr), "n_test": len(te), "probe_epochs": epochs}
            f = self._eval_file(path, n_train, n_test, epochs)
            os.makedirs(os.path.dirname(f), exist_ok=True)
            with open(f + ".tmp", "w") as fh:
                json.dump(res, fh)
            os.replace(f + ".tmp", f)
            return res


def _check_online(timeout: float = 3.0) -> None:
    """Fail in seconds, not after the hub client's ~25 s of retries, when there is no network."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubError("Hugging Face Hub downloads are disabled here (HF_HUB_OFFLINE is set)")
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
    except OSError as e:
        raise HubError(f"the Hugging Face Hub ({url.hostname}) cannot be reached from this machine (offline?): {e}") from None


def download_from_hub(repo_id: str, checkpoint_dir: str, filename: str | None = None) -> str:
    """Copy a VICReg Studio checkpoint from a Hugging Face Hub model repo into checkpoint_dir."""
    from .checkpoint import CheckpointError, checkpoint_path, read_meta

    repo_id = (repo_id or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}", repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repo id; it looks like 'user/vicreg-cifar10'")
    _check_online()
    try:
        from huggingface_hub import hf_hub_download, list_repo_files

        if not filename:
            files = [f for f in list_repo_files(repo_id) if f.endswith(".safetensors")]
            if not files:
                raise HubError(f"{repo_id} holds no .safetensors checkpoint")
            filename = sorted(files, key=lambda f: (f != "model.safetensors", len(f), f))[0]
        local = hf_hub_download(repo_id, filename)
    except HubError:
        raise
    except Exception as e:  # offline, DNS, 401/404, ...: all end up as one clear message
        name, msg = type(e).__name__, str(e).strip().splitlines()
        hint = "the repo or file does not exist or is private" if "404" in str(e) or "NotFound" in name else \
            "the Hub cannot be reached (offline?)"
        raise HubError(f"could not download from the Hugging Face Hub: {hint} [{name}: {msg[0][:200] if msg else ''}]") from None
    try:
        read_meta(local)
    except CheckpointError as e:
        raise HubError(f"{repo_id}/{filename} is not a VICReg Studio checkpoint: {e}") from None
    dest = checkpoint_path(checkpoint_dir, "hub__" + repo_id.replace("/", "__"))
    os.makedirs(checkpoint_dir, exist_ok=True)
    shutil.copyfile(local, dest + ".tmp")
    os.replace(dest + ".tmp", dest)
    return dest
