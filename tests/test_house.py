"""House rules of the source, read from the files: no import circles between modules or folders
(scripts/import_cycles.py), the engine's folders on their floors, files and functions small enough to read whole,
and the page reaching the engine through services/."""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CYCLES = os.path.join(ROOT, "scripts", "import_cycles.py")
# tests, measurements and release tools are not the product: the size rules are for the app and the engine
NOT_SOURCE = {"tests", "bench", "scripts", "build"}
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60
MAX_UI_FILES_ON_ENGINE = 4  # ui/ reaches the engine through services/; these few may name its types
# vicreg/'s folders from the lowest floor up (vicreg/__init__.py): each imports only the floors below it
ENGINE_FLOORS = ("vicreg.core", "vicreg.runfiles", "vicreg.training", "vicreg.orchestration", "vicreg")


def source_files() -> list[str]:
    """The project's own .py files, relative to the repository root."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        top = os.path.relpath(folder, ROOT) == "."
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__"
                         and not d.endswith(".egg-info") and not (top and d in NOT_SOURCE))
        found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in sorted(files) if f.endswith(".py")]
    return found


def read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def test_the_checker_finds_a_circle_and_the_project_has_none(tmp_path):
    for rel, text in {"vicreg/__init__.py": "", "vicreg/a.py": "from .b import x\n",
                      "vicreg/b.py": "def f():\n    from vicreg import a  # a lazy import is a circle too\n"}.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text)
    made = subprocess.run([sys.executable, CYCLES, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 1 and "import circle: vicreg.a -> vicreg.b -> vicreg.a" in made.stdout, made.stdout
    ours = subprocess.run([sys.executable, CYCLES], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert ours.stdout.startswith("no import circles among ")
    assert "no folder circles among " in ours.stdout


def test_the_checker_finds_a_folder_circle_without_a_module_circle(tmp_path):
    for rel, text in {"vicreg/__init__.py": "", "vicreg/low/__init__.py": "", "vicreg/high/__init__.py": "",
                      "vicreg/low/a.py": "from ..high.c import g\n", "vicreg/low/b.py": "def f():\n    pass\n",
                      "vicreg/high/c.py": "from ..low.b import f\n\n\ndef g():\n    f()\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    made = subprocess.run([sys.executable, CYCLES, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 1 and made.stdout.startswith("no import circles among "), made.stdout
    assert "folder circle: vicreg.high -> vicreg.low -> vicreg.high" in made.stdout, made.stdout


def test_the_engine_folders_import_only_the_floors_below():
    spec = importlib.util.spec_from_file_location("import_cycles", CYCLES)
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    folders = checker.folder_graph(ROOT)
    assert set(ENGINE_FLOORS) <= set(folders)
    for i, folder in enumerate(ENGINE_FLOORS):
        up = {f for f in folders[folder] if f.split(".")[0] == "vicreg"} - set(ENGINE_FLOORS[:i])
        assert up == set(), f"{folder} imports {sorted(up)}, which are not below it"
    assert not {f for f in folders["services.features"] if f.split(".")[0] in ("services", "ui")}


def test_source_files_are_at_most_300_lines():
    files = source_files()
    assert {"app.py", "vicreg/training/train.py", "services/studio.py", "ui/layout.py"} <= set(files)
    long = {rel: n for rel in files if (n := read(rel).count("\n")) > MAX_FILE_LINES}
    assert long == {}, f"split these files (lines): {long}"


def test_functions_are_at_most_60_lines():
    long = {}
    for rel in source_files():
        for node in ast.walk(ast.parse(read(rel), rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long[f"{rel}:{node.name}"] = n
    assert long == {}, f"split these functions (lines): {long}"


def test_the_page_reaches_the_engine_through_services():
    on_engine = set()
    for name in sorted(os.listdir(os.path.join(ROOT, "ui"))):
        if name.endswith(".py"):
            tree = ast.parse(read(os.path.join("ui", name)), name)
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                if any(n == "vicreg" or n.startswith("vicreg.") for n in names):
                    on_engine.add(name)
    assert len(on_engine) <= MAX_UI_FILES_ON_ENGINE, sorted(on_engine)
    assert "train_handlers.py" not in on_engine
