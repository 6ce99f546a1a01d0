"""The app's services behind one object: built once per process from `Settings` and shared by every
visitor. Each part has one job; this class only wires them together."""
from __future__ import annotations

import os
import threading

from vicreg.core.config import AugmentConfig, TrainConfig
from vicreg.training.data import Dataset

from .catalog import Catalog
from .features.data import DataSource
from .features.live_map import LiveMap
from .features.maps import MapStore
from .features.models import FileHashes, ModelCache
from .images import Decoded, decode_image
from .reports import ReportStore
from .settings import Settings
from .training import Training
from .visitors import VisitorRuns


class Studio:
    def __init__(self, settings: Settings | None = None):
        s = self.settings = settings or Settings()
        self.heavy = threading.Lock()  # one evaluation at a time (banks and maps: services/features/banks.py)
        self.hashes = FileHashes()
        self.data = DataSource(s.data_root, s.sample, s.cache_dir)
        self.models = ModelCache(s.device, s.precision, s.threads)
        self.maps = MapStore(self.models, self.data, self.hashes, s.cache_dir, s.map_points)  # built in the background
        self.reports = ReportStore(self.models, self.data, s.cache_dir, self.heavy)
        self.catalog = Catalog(s.checkpoint_dir, s.default_checkpoint)
        self.access = s.access()
        self.live_map = LiveMap(os.path.join(s.cache_dir, "live-map"))  # the Train tab's map of the monitor's images
        self.visitors = VisitorRuns(s.checkpoint_dir, s.visitor_keep, s.visitor_mb)  # what is kept of visitors' runs
        # the training job, its runs checked and cut for this server (app.py calls its start_up before launch)
        self.training = Training(s.checkpoint_dir, s.cache_dir, self.data, self.catalog, self.access, self.visitors,
                                 self.models.threads)

    @classmethod
    def from_env(cls, host: str | None = None) -> "Studio":
        """`host`: the address asked for on the command line, if any (services/exposure.py)."""
        return cls(Settings.from_env(host=host))

    @property
    def threads(self) -> int:
        """torch threads for heavy work and training (VICREG_APP_THREADS, else the CPUs this process may use)."""
        return self.models.threads

    @property
    def checkpoint_dir(self) -> str:
        return self.settings.checkpoint_dir

    def training_data(self, cfg: TrainConfig) -> Dataset:
        """The training job's data loader: each path is decoded once per process."""
        return self.data.dataset(cfg.data)

    def decode(self, src: bytes | str | os.PathLike) -> Decoded:
        """An upload as the model sees it, within this server's size limits (BadImage otherwise)."""
        return decode_image(src, AugmentConfig().size, self.settings.max_pixels, self.settings.max_bytes)
