"""Publish the app as a Hugging Face Space, in one command:

    python scripts/publish_space.py USER/SPACE [--secret] [--private] [--dry-run]

Log in first with `hf auth login` (or set HF_TOKEN). The script creates the Space (Gradio SDK; an
existing one is reused), optionally stores the admin secret as the Space secret VICREG_ADMIN_TOKEN
(typed at a hidden prompt, never shown or written anywhere else), then uploads the project.

What is uploaded: in a git checkout, the files git tracks plus new files it does not ignore, else
every file under the folder; both lists pass through one rule (`skip_reason`) that leaves out
environments, caches, run outputs, data, test artifacts, secrets files, temporary files and every
checkpoint except the shipped default. The default must be the packed form (backbone only, fp16):
a full, resumable checkpoint (ten times larger, with optimiser state) in its place is refused.
`--dry-run` lists the files and their sizes and uploads nothing; it needs no network and no token.
"""
from __future__ import annotations

import argparse
import getpass
import glob
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import httpx  # huggingface_hub's HTTP client: its network errors
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECRET_NAME = "VICREG_ADMIN_TOKEN"
MIN_SECRET_CHARS = 12  # visitors can try secrets through the API: a short one can be guessed
# The shipped default model and its JSON sidecar (the app's default, services/settings.py).
SHIPPED = ("checkpoints/cpu120.safetensors", "checkpoints/cpu120.json", "checkpoints/.gitkeep")
SHIPPED_CHECKPOINT = SHIPPED[0]

# Folders left out wherever they appear: environments, version control, caches, app state.
ENVIRONMENT_DIRS = (".venv", "venv", ".git", ".hg", ".tox", ".nox", "node_modules")
CACHE_DIRS = ("__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".cache", ".gradio",
              ".ipynb_checkpoints", "flagged")
# Folders left out at the top of the project: run outputs, datasets, test screenshots.
OUTPUT_DIRS = ("runs", "data", "tests/artifacts")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
OUTPUT_SUFFIXES = (".metrics.jsonl", ".embeddings.npy", ".pyc", ".pyo")
SECRET_FILES = re.compile(r"\.env(\..*)?|\.netrc|.*\.pem|.*\.key")
# vicreg.runfiles.files.atomic_write's temporary names: .<target>.<pid>-<12 hex>.tmp<ext>
TEMP_FILE = re.compile(r"\..+\.\d+-[0-9a-f]{12}\.tmp(\.[^./]*)?")


class PublishError(Exception):
    """Something the user must fix before publishing; the message says what."""


def _dir_reason(dirs: list[str]) -> str | None:
    """Why files under the folder `dirs` (path parts from the project root) stay home, or None."""
    if any(d in ENVIRONMENT_DIRS for d in dirs):
        return "environment or version control"
    if any(d in CACHE_DIRS for d in dirs) or any(d.endswith(".egg-info") for d in dirs):
        return "cache"
    joined = "/".join(dirs) + "/"
    if any(joined.startswith(d + "/") for d in OUTPUT_DIRS):
        return "run output, data or test artifact"
    return None


def skip_reason(rel: str) -> str | None:
    """The one rule for what a Space gets: why the file at `rel` (relative, '/'-separated) is left
    out, or None when it is uploaded."""
    parts = rel.split("/")
    why = _dir_reason(parts[:-1])
    if why:
        return why
    name = parts[-1]
    if SECRET_FILES.fullmatch(name):
        return "may hold secrets"
    if TEMP_FILE.fullmatch(name):
        return "temporary file of an interrupted write"
    if name.endswith(OUTPUT_SUFFIXES) or (name.startswith("embeddings") and name.endswith(".npy")):
        return "run output or compiled file"
    if rel in SHIPPED:
        return None
    if parts[0] == "checkpoints" or name.endswith(CHECKPOINT_SUFFIXES):
        return "checkpoint other than the shipped default"
    return None


def require_packed(folder: str, rel: str) -> None:
    """Refuse a shipped checkpoint that is not the packed form (or not a readable checkpoint at all)."""
    if ROOT not in sys.path:  # run as `python scripts/publish_space.py` after the app's install (not the project's)
        sys.path.insert(0, ROOT)
    from vicreg.runfiles.checkpoint import CheckpointError, read_meta

    try:
        meta = read_meta(os.path.join(folder, rel))
    except CheckpointError as e:
        raise PublishError(f"{rel} cannot be shipped: {e}. Restore the shipped file with "
                           f"`git checkout -- {rel} {rel[:-len('.safetensors')]}.json`.") from None
    if not meta.get("packed"):
        raise PublishError(
            f"{rel} is a full (resumable) checkpoint with optimiser state, not the packed model a Space "
            f"ships. Pack it first (scripts/build_default.py --checkpoint {rel} --out {rel} ...; see its "
            f"docstring), or restore the shipped file with `git checkout -- {rel} "
            f"{rel[:-len('.safetensors')]}.json`.")


def git_files(folder: str) -> list[str] | None:
    """The files git tracks or would track (new, not ignored) under `folder`; None outside a git checkout."""
    try:
        cmd = ["git", "-C", folder, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({p for p in out.decode("utf-8", "surrogateescape").split("\0") if p})


def walk_files(folder: str) -> list[str]:
    """Every file under `folder`, not descending into folders the rule leaves out."""
    found = []
    for here, dirs, files in os.walk(folder):
        base = os.path.relpath(here, folder)
        parts = [] if base == "." else base.split(os.sep)
        dirs[:] = sorted(d for d in dirs if _dir_reason(parts + [d]) is None)
        found += ["/".join(parts + [f]) for f in files]
    return sorted(found)


@dataclass
class Plan:
    files: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes) to upload
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    source: str = "walk"  # "git" (tracked files) or "walk" (every file)

    @property
    def total(self) -> int:
        return sum(size for _, size in self.files)


def plan(folder: str) -> Plan:
    """What would be uploaded from `folder`; raises PublishError when something must be fixed first."""
    tracked = git_files(folder)
    result = Plan(source="walk" if tracked is None else "git")
    for rel in walk_files(folder) if tracked is None else tracked:
        path = os.path.join(folder, *rel.split("/"))
        why = skip_reason(rel)
        if why is None and (os.path.islink(path) or not os.path.isfile(path)):
            why = "a link, missing, or not a regular file"
        if why:
            result.skipped.append((rel, why))
            continue
        if rel.endswith(CHECKPOINT_SUFFIXES):
            require_packed(folder, rel)
        result.files.append((rel, os.path.getsize(path)))
    return result


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def print_plan(p: Plan, repo_id: str) -> None:
    print(f"Files for the Space {repo_id} ({'from git ls-files' if p.source == 'git' else 'all files'}, "
          f"after the rules):")
    for rel, size in p.files:
        print(f"{human(size):>10}  {rel}")
    print(f"total: {human(p.total)} in {len(p.files)} files")
    reasons: dict[str, int] = {}
    for _, why in p.skipped:
        reasons[why] = reasons.get(why, 0) + 1
    for why, n in sorted(reasons.items()):
        print(f"left out: {n} file(s): {why}")
    if SHIPPED_CHECKPOINT not in dict(p.files):
        print(f"note: {SHIPPED_CHECKPOINT} is missing, so the Space starts without its default model")


def ask_secret() -> str:
    """The admin secret, typed twice at hidden prompts."""
    first = getpass.getpass(f"{SECRET_NAME} for the Space (hidden): ")
    if len(first) < MIN_SECRET_CHARS:
        raise PublishError(f"the admin secret must have at least {MIN_SECRET_CHARS} characters")
    if getpass.getpass("Again: ") != first:
        raise PublishError("the two entries differ; nothing was published")
    return first


def ignore_patterns() -> list[str]:
    """The same folder rules in upload_folder's pattern language, behind the explicit allow list."""
    dirs = ENVIRONMENT_DIRS + CACHE_DIRS
    return ([f"{d}/*" for d in dirs] + [f"*/{d}/*" for d in dirs] + [f"{d}/*" for d in OUTPUT_DIRS]
            + [f"*{s}" for s in OUTPUT_SUFFIXES])


def publish(api: HfApi, repo_id: str, folder: str, p: Plan, private: bool, secret: str | None) -> str:
    """Create (or reuse) the Space, set the secret before the first build sees the code, upload."""
    url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    if secret is not None:
        api.add_space_secret(repo_id, SECRET_NAME, secret, description="VICReg Studio admin secret")
        print(f"set the Space secret {SECRET_NAME}")
    print(f"uploading {len(p.files)} files ({human(p.total)}) ...")
    api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=folder,
                      allow_patterns=[glob.escape(rel) for rel, _ in p.files], ignore_patterns=ignore_patterns(),
                      commit_message="Publish VICReg Studio")
    return str(url)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python scripts/publish_space.py",
                                 description="Publish the app as a Hugging Face Space (log in first: hf auth login).")
    ap.add_argument("repo_id", help="the Space as USER/SPACE (or ORG/SPACE)")
    ap.add_argument("--secret", action="store_true", help=f"ask for the admin secret and store it as {SECRET_NAME}")
    ap.add_argument("--private", action="store_true", help="create the Space private (an existing one is unchanged)")
    ap.add_argument("--dry-run", action="store_true", help="list the files and sizes only; no network, no token")
    ap.add_argument("--folder", default=ROOT, help="the project folder to publish (default: this checkout)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo_id):
        ap.error(f"the Space must look like USER/SPACE, got {args.repo_id!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        p = plan(os.path.abspath(args.folder))
        print_plan(p, args.repo_id)
        if args.dry_run:
            return 0
        api = HfApi()
        print(f"logged in to Hugging Face as {api.whoami().get('name', '?')}")  # fails early when not
        secret = ask_secret() if args.secret else None
        url = publish(api, args.repo_id, os.path.abspath(args.folder), p, args.private, secret)
    except PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except LocalTokenNotFoundError:
        print("error: not logged in to Hugging Face: run `hf auth login` (or set HF_TOKEN) and try again",
              file=sys.stderr)
        return 1
    except (HfHubHTTPError, httpx.HTTPError, OSError) as e:
        why = " ".join(str(e).split())[:300]
        print(f"error: the Hub could not be reached or refused the request: {why}", file=sys.stderr)
        return 1
    print(f"published: {url} (the Space builds and starts in a few minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
