"""VICReg Studio web app: `python app.py` (honours PORT / GRADIO_SERVER_PORT / GRADIO_SERVER_NAME).

A thin entry point: the training loop lives in vicreg/ (one TrainingJob per process, shared by every
visitor), the app's services in services/ (built once from the environment, see services/settings.py
for the variables), and the page in ui/. Nothing heavy happens at start-up: no dataset, umap or
feature extraction, and no network access.
"""
from __future__ import annotations

import logging
import os

from services.studio import Studio
from ui.layout import build_demo, launch
from vicreg.jobs import TrainingJob


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    studio = Studio.from_env()
    job = TrainingJob(data_loader=studio.training_data)  # decodes each dataset once per process
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    launch(build_demo(studio, job), port, os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
           studio.settings.max_upload_mb)


if __name__ == "__main__":
    main()
