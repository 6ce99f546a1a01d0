"""The README and docs/: short, licensed, citable, valid as a Space's config, and written about the project."""
from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

from vicreg.core.presets import DEFAULT_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
# Sentences that narrate how the project was made instead of describing it to its users.
NARRATING = (r"session", r"we measured", r"measured by", r"was stopped and resumed", r"earlier", r"helper",
             r"\bagents?\b", r"\bwe\b", r"\bour\b", r"\bus\b", r"so far", r"lent to", r"no gpu was available",
             r"for lack of time")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def front_matter() -> dict:
    text = read(README)
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_readme_is_short():
    assert len(read(README).splitlines()) <= 200


def test_front_matter_is_a_valid_space_config():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == "6.31.0" and meta["app_file"] == "app.py"
    assert meta["license"] == "mit"
    assert isinstance(meta["short_description"], str) and 0 < len(meta["short_description"]) <= 60
    assert meta["datasets"] == ["uoft-cs/cifar10"]
    assert "models" not in meta  # no Hub model exists for the shipped checkpoint


def test_the_test_command_is_where_ci_finds_it():
    lines = read(README).splitlines()
    i = lines.index("<!-- test-command -->")
    assert lines[i + 1] == "```bash"
    assert lines[i + 2].startswith("python3 -m venv .venv && ") and "pytest" in lines[i + 2]


def test_license_is_mit():
    text = read(os.path.join(ROOT, "LICENSE"))
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 VICReg Studio contributors" in text


def test_citations_and_model_card():
    text = read(README)
    assert re.search(r"@\w+\{bardes2022vicreg,", text) and "2105.04906" in text
    assert re.search(r"@\w+\{krizhevsky2009\w*,", text) and "Learning Multiple Layers of Features" in text
    card = os.path.join(ROOT, "docs", "model_card.md")
    assert os.path.isfile(card) and "docs/model_card.md" in text
    for heading in ("## Training data", "## Recipe", "## Compute", "## Evaluation", "## Intended use", "## Limits"):
        assert heading in read(card), heading


def test_model_card_matches_the_shipped_metadata():
    import json

    with open(os.path.join(ROOT, "checkpoints", DEFAULT_MODEL + ".json")) as f:
        meta = json.load(f)
    card = read(os.path.join(ROOT, "docs", "model_card.md"))
    assert f"**{meta['provenance']['epochs']} epochs**" in card
    prov = meta["provenance"]
    assert f"{prov['images_seen']:,} images" in card and f"{prov['views_seen']:,} views" in card
    assert f"{prov['steps']:,} steps" in card
    assert f"{100 * meta['report']['linear_top1']:.2f} %" in card
    assert f"{100 * meta['report']['knn_top1']:.2f} %" in card
    assert meta["packed"] is True


def test_relative_links_resolve():
    for path in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", read(path)):
            if "://" not in target:
                assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{path}: {target}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: os.path.relpath(p, ROOT))
def test_written_about_the_project(path):
    text = read(path).lower()
    found = [phrase for phrase in NARRATING if re.search(phrase, text)]
    assert not found, f"{os.path.relpath(path, ROOT)} narrates: {found}"


def test_no_claim_that_the_shipped_files_are_in_lfs_here():
    text = " ".join(read(README).split() + [w for d in DOCS for w in read(d).split()])
    assert "committed through Git LFS" not in text and "ordinary git files" in text
