"""Import circles among the project's own modules (vicreg/, services/, ui/ and app.py), and among their folders,
read from the source.

    python scripts/import_cycles.py [ROOT]   # prints each circle; exit status 1 if there is any, else 0

Every import counts, also one inside a function: a lazy import hides a circle from Python at start-up, not
from whoever has to read or split the files. The layers are meant to point one way (app.py -> ui/ ->
services/ -> vicreg/), and inside vicreg/ each file only imports files below it; a circle means two files
belong together or a name lives in the wrong one.

Folders are checked the same way: a folder (a package's own modules, not its subfolders') imports another when
any of its modules does, and no two folders may import each other, even where no two modules do. The folders
inside vicreg/ are floors (core, runfiles, training, orchestration) and services/features/ sits below the rest
of services/; a folder circle means a file sits on the wrong floor. tests/test_house.py runs this.
"""
from __future__ import annotations

import ast
import os
import sys

PACKAGES = ("vicreg", "services", "ui")
SCRIPTS = ("app.py",)


def modules(root: str) -> dict[str, str]:
    """{dotted module name: file} for the project's own modules under `root`."""
    found = {}
    for pkg in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, pkg)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for name in sorted(f for f in files if f.endswith(".py")):
                parts = os.path.relpath(os.path.join(folder, name), root)[: -len(".py")].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, name)
    for script in SCRIPTS:
        if os.path.isfile(os.path.join(root, script)):
            found[script[: -len(".py")]] = os.path.join(root, script)
    return found


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict) -> set[str]:
    """The project modules one import statement loads (the deepest known module each name resolves to)."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(max(node.level - 1, 0)):
            base = base.rpartition(".")[0]
        prefix = ".".join(p for p in ((base if node.level else ""), node.module or "") if p)
        targets = [f"{prefix}.{a.name}" if prefix else a.name for a in node.names] + [prefix]
    out = set()
    for name in targets:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def graph(root: str) -> dict[str, set[str]]:
    """{module: the project modules it imports}."""
    known = modules(root)
    edges = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = os.path.basename(path) == "__init__.py"
        edges[module] = set().union(*(_imported(n, module, is_package, known) for n in ast.walk(tree)
                                      if isinstance(n, (ast.Import, ast.ImportFrom))))
    return edges


def _path_back(edges: dict[str, set[str]], start: str, group: set[str]) -> list[str]:
    """A shortest circle through `start` inside `group`, as module names from `start` back to it."""
    came = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for dep in sorted(edges[node] & group):
                if dep == start:
                    path = [node]
                    while came[path[-1]] is not None:
                        path.append(came[path[-1]])
                    return path[::-1] + [start]
                if dep not in came:
                    came[dep] = node
                    nxt.append(dep)
        frontier = nxt
    return [start]


def folder_of(module: str, known: dict[str, str]) -> str:
    """The package whose folder holds `module`: a package's __init__ is in its own folder; app.py is its own."""
    if os.path.basename(known[module]) == "__init__.py" or "." not in module:
        return module
    return module.rpartition(".")[0]


def folder_graph(root: str) -> dict[str, set[str]]:
    """{folder: the other folders its modules import}."""
    known, edges = modules(root), graph(root)
    folders: dict[str, set[str]] = {}
    for module, deps in edges.items():
        here = folder_of(module, known)
        folders.setdefault(here, set()).update(f for f in (folder_of(d, known) for d in deps) if f != here)
    return folders


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle for each group of nodes that import each other (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while v not in group:
                group.add(stack.pop())
            on_stack.difference_update(group)
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_path_back(edges, min(g), g) for g in groups]


def cycles(root: str) -> list[list[str]]:
    """One circle for each group of modules that import each other."""
    return circles(graph(root))


def folder_cycles(root: str) -> list[list[str]]:
    """One circle for each group of folders that import each other."""
    return circles(folder_graph(root))


def main(argv: list[str]) -> int:
    root = argv[0] if argv else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found, in_folders = cycles(root), folder_cycles(root)
    for circle in found:
        print("import circle: " + " -> ".join(circle))
    if not found:
        print(f"no import circles among {len(modules(root))} modules")
    for circle in in_folders:
        print("folder circle: " + " -> ".join(circle))
    if not in_folders:
        print(f"no folder circles among {len(folder_graph(root))} folders")
    return 1 if found or in_folders else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
