"""Copy a VICReg Studio checkpoint from a Hugging Face Hub model repo into the checkpoint folder.

HF_HUB_OFFLINE and HF_ENDPOINT are read when a download is asked for, never at import. Messages in
HubError name neither server folders nor environment values.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
from typing import Mapping
from urllib.parse import urlparse

from huggingface_hub import hf_hub_download, list_repo_files

from vicreg.runfiles.checkpoint import read_meta
from vicreg.runfiles.files import atomic_write
from vicreg.runfiles.names import CheckpointError, checkpoint_path

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


class HubError(RuntimeError):
    """A Hugging Face Hub download that failed; str(e) is a message for the visitor."""


def check_online(env: Mapping[str, str] | None = None, timeout: float = 3.0) -> None:
    """Fail in seconds, not after the hub client's ~25 s of retries, when there is no network."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubError("Hugging Face Hub downloads are disabled on this server (offline mode)")
    url = urlparse(env.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except (OSError, TypeError):
        raise HubError("the Hugging Face Hub cannot be reached from this server (offline?)") from None


def _pick_file(repo_id: str) -> str:
    files = [f for f in list_repo_files(repo_id) if f.endswith(".safetensors")]
    if not files:
        raise HubError(f"{repo_id} holds no .safetensors checkpoint")
    return sorted(files, key=lambda f: (f != "model.safetensors", len(f), f))[0]


def _fetch(repo_id: str, filename: str | None) -> tuple[str, str]:
    try:
        filename = filename or _pick_file(repo_id)
        return hf_hub_download(repo_id, filename), filename
    except HubError:
        raise
    except Exception as e:  # offline, DNS, 401/404, ...: all end up as one clear message
        missing = "404" in str(e) or "NotFound" in type(e).__name__
        hint = "the repo or file does not exist or is private" if missing else "the Hub cannot be reached (offline?)"
        raise HubError(f"could not download from the Hugging Face Hub: {hint} ({type(e).__name__})") from e


def download_from_hub(repo_id: str, checkpoint_dir: str, filename: str | None = None) -> str:
    """The checkpoint's local path (checkpoint_dir/hub__<user>__<repo>.safetensors)."""
    repo_id = (repo_id or "").strip()
    if not REPO_ID.fullmatch(repo_id):
        raise HubError(f"{repo_id[:100]!r} is not a Hub repo id; it looks like 'user/vicreg-cifar10'")
    check_online()
    local, filename = _fetch(repo_id, filename)
    try:
        read_meta(local)
    except CheckpointError:
        raise HubError(f"{repo_id}/{filename} is not a VICReg Studio checkpoint") from None
    dest = checkpoint_path(checkpoint_dir, "hub__" + repo_id.replace("/", "__"))
    return atomic_write(dest, lambda tmp: shutil.copyfile(local, tmp))
