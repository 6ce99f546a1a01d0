"""VICReg Studio web app: `python app.py [--host ADDRESS]` (honours PORT / GRADIO_SERVER_PORT /
GRADIO_SERVER_NAME).

A thin entry point: the training loop lives in vicreg/ (one TrainingJob per process, shared by every
visitor), the app's services in services/ (built once from the environment, see services/settings.py
for the variables), and the page in ui/. Nothing heavy happens at start-up: no dataset, umap or
feature extraction, and no network access. It listens on 127.0.0.1 unless asked otherwise (on a
Space, 0.0.0.0): services/exposure.py decides, and services/access.py says who may do what.
"""
from __future__ import annotations

import argparse
import logging
import os

from services.studio import Studio
from ui.layout import build_demo, launch
from vicreg.core.storage import storage_root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="VICReg Studio web app")
    p.add_argument("--host", default=None,
                   help="address to listen on (default 127.0.0.1, or GRADIO_SERVER_NAME; 0.0.0.0 on a Space); "
                        "any other than loopback makes the app public: set VICREG_ADMIN_TOKEN to have an admin")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    studio = Studio.from_env(args.host)
    s = studio.settings
    log = logging.getLogger("vicreg.app")
    log.log(*studio.access.startup_note())
    log.info("listening on %s; %d CPU thread(s) for heavy work and training; checkpoints in %s", s.host, s.threads,
             s.checkpoint_dir)
    if s.space and storage_root() is None:
        log.warning("no persistent storage: checkpoints, caches and downloads written here are lost when the Space "
                    "restarts (add the Space's persistent storage, mounted at /data, or set VICREG_STORAGE)")
    studio.training.start_up()  # before the page: on ZeroGPU the GPU calls are decorated now (services/gpu.py)
    demo = build_demo(studio, studio.training.job)  # lays the page out and starts nothing
    # then the work a first visitor wants soonest: the feature banks and map of the checkpoint the page opens on
    # (ui/header.py's choice), built in the background; a checkpoint chosen later starts its own
    if opening := studio.catalog.preferred(None):
        studio.maps.select(opening)
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    launch(demo, port, s.host, s.max_upload_mb)


if __name__ == "__main__":
    main()
