"""Real CIFAR-10 images for the tests, and the `full_data` marker.

Every data fixture comes from the embedded sample, assets/cifar10_sample.npz (2,000 train + 6,000 test real
CIFAR-10 images: the first 200 train and 600 test of each class, class-sorted), so the suite runs on a fresh
clone, offline:
- `cifar`: the sample as a vicreg.training.data.Dataset (loads in milliseconds).
- `cifar_root`: the sample as an image folder, <split>/<class>/NNNN.png (lossless, so it decodes to exactly
  `cifar`; NNNN is the image's rank in its class, as in the full copy), for the app, uploads and files.
- `mini_cifar`: 60 train + 30 test images per class as JPEG (the full copy's format), for CLI runs that
  decode and evaluate everything.
- `packed_cifar`: 500 train + 200 test images in one packed .npz.

Tests whose assertions need the whole 50,000 + 10,000 split are marked `full_data` and use `full_cifar`
(or `full_cifar_root`): the copy VICREG_DATA points at. Without one they are skipped, saying why. With
VICREG_REQUIRE_FULL_DATA=1 (.ci/run sets it) a full_data test that does not run (no copy, skipped,
deselected with -m/-k/--deselect, or its file left out) fails the session.

Temporary files go to a folder of the session's own, removed when it ends (use_own_temp_folder). The summary
counts what is new in the system's temp folder afterwards (0 when the suite left nothing);
VICREG_REQUIRE_CLEAN_TEMP=1 makes anything left there fail the session.
"""
import getpass
import glob
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SAMPLE = os.path.join(ROOT, "assets", "cifar10_sample.npz")
FULL_REASON = ("needs the full CIFAR-10 split (50,000 + 10,000 images): set VICREG_DATA to a copy (an image "
               "folder with train/ and test/, a packed .npz or a torchvision CIFAR-10 root)")
MARK = "pytest.mark.full_data"  # how a test file marks its full_data tests (decorator or pytestmark)
FULL = {"collected": {}, "run": set(), "why": {}}  # nodeid -> test file; nodeids whose body ran; nodeid -> why not


def full_data_root() -> str | None:
    """VICREG_DATA when it holds a whole CIFAR-10 copy, else None."""
    from services.features.data import holds_full_dataset

    root = os.environ.get("VICREG_DATA")
    return root if root and holds_full_dataset(root) else None


def full_data_required() -> bool:
    return os.environ.get("VICREG_REQUIRE_FULL_DATA") == "1"


# ------------------------------------------------------------------ fixtures: the embedded sample

@pytest.fixture(scope="session")
def cifar():
    """The embedded sample as a Dataset: 2,000 train + 6,000 test images (200 + 600 per class)."""
    from vicreg.training.data import load_packed

    if not os.path.isfile(SAMPLE):
        pytest.fail("assets/cifar10_sample.npz is missing; it ships with the repository (restore it with git)")
    return load_packed(SAMPLE)


def write_image_folder(root, dataset, per_class: tuple[int, int] | None = None, ext: str = "png") -> str:
    """`dataset` as an ImageFolder tree, <split>/<class>/NNNN.<ext> (NNNN: the image's rank in its class);
    per_class = (train, test) keeps the first n of each class, None keeps all."""
    import numpy as np
    from PIL import Image

    opts = {"compress_level": 1} if ext == "png" else {"quality": 75}  # q75: the full copy's JPEG tables
    for i, (split, data) in enumerate((("train", dataset.train), ("test", dataset.test))):
        images, labels = data.images.numpy(), data.labels.numpy()
        for c, cls in enumerate(dataset.classes):
            folder = os.path.join(root, split, cls)
            os.makedirs(folder)
            rows = np.flatnonzero(labels == c)[: per_class[i] if per_class else None]
            for k, row in enumerate(rows):
                Image.fromarray(images[row].transpose(1, 2, 0)).save(os.path.join(folder, f"{k:04d}.{ext}"), **opts)
    return str(root)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory, cifar) -> str:
    """The whole sample as an image folder (PNG, ~1 s to write): decodes to exactly `cifar`."""
    return write_image_folder(tmp_path_factory.mktemp("cifar_sample"), cifar)


@pytest.fixture(scope="session")
def mini_cifar(tmp_path_factory, cifar) -> str:
    """A small real-CIFAR-10 image folder: 60 train + 30 test JPEGs per class, so CLI runs that decode and
    evaluate everything stay quick."""
    return write_image_folder(tmp_path_factory.mktemp("mini_cifar"), cifar, (60, 30), "jpg")


def write_packed(path, dataset, n_train: int, n_test: int) -> str:
    """Save evenly spaced subsets of `dataset` as a packed .npz (vicreg.training.data.load_packed's layout)."""
    import json

    import numpy as np

    from vicreg.training.data import even_subset

    tr, _ = even_subset(dataset.train, n_train)
    te, _ = even_subset(dataset.test, n_test)
    np.savez(path, train_x=tr.images.numpy(), train_y=tr.labels.numpy(), test_x=te.images.numpy(),
             test_y=te.labels.numpy(), classes=np.asarray(json.dumps(list(dataset.classes))))
    return str(path)


@pytest.fixture(scope="session")
def packed_cifar(tmp_path_factory, cifar) -> str:
    """500 train + 200 test real CIFAR-10 images (evenly spaced, so every class) in one packed .npz:
    loads in milliseconds without any decode cache."""
    return write_packed(tmp_path_factory.mktemp("packed") / "cifar_small.npz", cifar, 500, 200)


# ------------------------------------------------------------------ fixtures: the full copy (full_data tests)

@pytest.fixture(scope="session")
def full_cifar_root() -> str:
    """The full copy at VICREG_DATA; only for tests marked full_data (the marker skips them without one)."""
    root = full_data_root()
    if root is None:
        pytest.fail(f"full_cifar_root is only for tests marked full_data; this one {FULL_REASON}")
    return root


@pytest.fixture(scope="session")
def full_cifar(full_cifar_root):
    """The full copy as uint8 tensors (decoded once into the decode cache, VICREG_CACHE)."""
    from vicreg.training.data import load_dataset

    return load_dataset(full_cifar_root)


# ------------------------------------------------------------------ the full_data marker: skip, count, require

def pytest_itemcollected(item):
    # every collected item, before -m / -k / --deselect remove any: what the session was asked to run
    if item.get_closest_marker("full_data"):
        FULL["collected"][item.nodeid] = str(item.path)


@pytest.hookimpl(tryfirst=True)  # before the fixtures are set up
def pytest_runtest_setup(item):
    if item.get_closest_marker("full_data") and full_data_root() is None:
        if full_data_required():
            pytest.fail(f"VICREG_REQUIRE_FULL_DATA=1 but this test {FULL_REASON}", pytrace=False)
        pytest.skip(FULL_REASON)


def pytest_deselected(items):
    FULL["why"].update((i.nodeid, "deselected") for i in items if i.nodeid in FULL["collected"])


def pytest_runtest_logreport(report):
    # under pytest-xdist the controller collects nothing itself: the report's keywords carry the marker
    if report.nodeid in FULL["collected"] or "full_data" in getattr(report, "keywords", {}):
        if report.when == "call" and not report.skipped:
            FULL["run"].add(report.nodeid)
        elif report.skipped or report.failed:
            FULL["why"].setdefault(report.nodeid, "skipped" if report.skipped else f"failed in {report.when}")


def full_data_shortfall() -> list[str]:
    """The full_data tests that did not run (skipped or deselected); when they are required, also the
    files that define some but were not collected, or that none was collected at all."""
    out = [f"{n}: {FULL['why'].get(n, 'did not run')}" for n in sorted(set(FULL["collected"]) - FULL["run"])]
    if full_data_required():
        files = {f for f in glob.glob(os.path.join(ROOT, "tests", "test_*.py")) if MARK in open(f).read()}
        out += [f"{os.path.relpath(f, ROOT)}: not collected" for f in sorted(files - set(FULL["collected"].values()))]
        if not FULL["run"] and not out:
            out.append("no full_data test was collected")
    return out


# ------------------------------------------------------------------ the temp folder: nothing left behind

# The suite's own temp folder, shared with the xdist workers and every process the tests start.
TEMP_VAR = "VICREG_TEST_TEMP"
TEMP = {"folder": None, "system": None, "before": set(), "left": []}  # what this process made; the system's


def use_own_temp_folder() -> None:
    """Point "the temp folder" at one folder of the suite's own in the system's, removed when the session ends
    (pytest_unconfigure). Without it a run leaves litter there: gradio's client an empty <40 hex> folder for
    every file it downloads, the apps gradio's upload folder, torchrun its torchelastic_* folders, chromium its
    profiles. This process follows tempfile.tempdir; the workers, apps, trainers and browsers it starts follow
    TMPDIR and GRADIO_TEMP_DIR. pytest's tmp_path folders stay where pytest keeps and rotates them (the
    system's temp folder), so a failed test's files are still there to read, and torch's compile cache keeps
    its usual place too (a cache, reused across runs)."""
    folder = os.environ.get(TEMP_VAR)
    if not folder:  # the controller, or a run without xdist: it makes the folder, checks and removes it
        system = tempfile.gettempdir()
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", system)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(system, f"torchinductor_{_user()}"))
        folder = os.path.realpath(tempfile.mkdtemp(prefix="vicreg-tests-"))
        TEMP.update(folder=folder, system=system, before=set(os.listdir(system)))
        os.environ[TEMP_VAR] = folder
    os.makedirs(folder, exist_ok=True)
    os.environ["TMPDIR"] = folder
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(folder, "gradio"))
    tempfile.tempdir = folder


def _user() -> str:
    """The user name torch's compile cache is named after (its default folder: <temp>/torchinductor_<user>)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid_{os.getuid()}"


def left_in_system_temp() -> list[str]:
    """What appeared in the system's temp folder during the session and is still there (this user's, besides
    pytest's own folders): the suite's litter, or another process's on a shared machine."""
    system = TEMP["system"]
    new = set(os.listdir(system)) - TEMP["before"] - {os.path.basename(TEMP["folder"])}
    return sorted(n for n in new if not n.startswith("pytest-of-") and _owner(os.path.join(system, n)) == os.getuid())


def _owner(path: str) -> int | None:
    try:
        return os.lstat(path).st_uid
    except OSError:  # gone meanwhile
        return None


def pytest_unconfigure():
    if TEMP["folder"]:
        shutil.rmtree(TEMP["folder"], ignore_errors=True)


# ------------------------------------------------------------------ pytest-xdist: one core per worker, counts merged

def pytest_configure(config):
    """The suite's own temp folder (use_own_temp_folder); then each xdist worker (`-n 2`) gets one CPU of its own
    and 1 torch thread, and so do the apps and CLI runs it starts (they inherit the affinity, and
    vicreg.core.runtime.available_cpus reads it): two torch processes never share a core, which on a 2-core machine
    would slow both several times over. Files are handed out in SLOW_FIRST's order (below)."""
    if hasattr(config.option, "loadscopereorder"):  # xdist would otherwise hand out the files with most tests first
        config.option.loadscopereorder = False
    use_own_temp_folder()
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...
    if worker and hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
        if len(cpus) >= count:
            os.sched_setaffinity(0, {cpus[int(worker[2:]) % len(cpus)]})
            import torch

            torch.set_num_threads(1)


# The longest files start first, longest first, so that with `--dist loadfile` the two workers finish close together
# instead of one of them starting a one-minute file last (xdist's own order, most tests first, put the one-test files
# of a minute each at the end: 641 s for 1,094 s of tests). Seconds on one core, AMD EPYC, 2026-12-07 (--durations=0):
# 114, 104, 73, 66, 63, 61, 58, 54, 49, 47, 43, 37, 32, 31, 30, 29, 26, 26, 23, 18; the rest 15 s or less.
SLOW_FIRST = ("test_distributed.py", "test_cli.py", "test_browser.py", "test_browser_full.py", "test_crash.py",
              "test_concurrency.py", "test_public_app.py", "test_app_api.py", "test_banks.py", "test_app_offline.py",
              "test_multiview.py", "test_browser_phone.py", "test_train_processes.py", "test_chunks.py",
              "test_handlers.py", "test_hostile_uploads.py", "test_watch.py", "test_path_attacks.py",
              "test_gpu_check.py", "test_numerical_faults.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: file order kept otherwise


def _worker_counts() -> dict:
    from leaks import SEEN

    return {"collected": FULL["collected"], "why": FULL["why"], "run": sorted(FULL["run"]),
            "scanned": SEEN["scanned"], "leaking": SEEN["leaking"]}


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without pytest-xdist
def pytest_testnodedown(node):
    """The controller merges what each worker collected and scanned (xdist's workeroutput)."""
    from leaks import SEEN

    got = getattr(node, "workeroutput", {}).get("vicreg_counts")
    if got:
        FULL["collected"].update(got["collected"])
        for nodeid, why in got["why"].items():
            FULL["why"].setdefault(nodeid, why)
        FULL["run"].update(got["run"])
        SEEN["scanned"] += got["scanned"]
        SEEN["leaking"].extend(tuple(x) for x in got["leaking"])


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: hand the counts to the controller
        session.config.workeroutput["vicreg_counts"] = _worker_counts()
        return
    failed = full_data_required() and not session.config.option.collectonly and full_data_shortfall()
    if TEMP["folder"]:  # the session's processes have ended (fixtures torn down): what did they leave?
        TEMP["left"] = left_in_system_temp()
        failed = failed or (clean_temp_required() and TEMP["left"])
    if failed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def clean_temp_required() -> bool:
    """VICREG_REQUIRE_CLEAN_TEMP=1: anything new left in the system's temp folder fails the session (on a machine
    where nothing else writes there meanwhile)."""
    return os.environ.get("VICREG_REQUIRE_CLEAN_TEMP") == "1"


def pytest_terminal_summary(terminalreporter, config):
    from leaks import SEEN

    if SEEN["scanned"]:
        terminalreporter.write_line(f"visitor messages scanned for server paths, environment values and tracebacks: "
                                    f"{SEEN['scanned']}, leaking: {len(SEEN['leaking'])}")
        for text, found in SEEN["leaking"][:10]:
            terminalreporter.write_line(f"  {found}: {text!r}")
    if config.option.collectonly:
        return
    if TEMP["folder"]:
        left = TEMP["left"]
        terminalreporter.write_line(f"new in the system temp folder ({TEMP['system']}) since the session began "
                                    f"(the suite's, or another process's): {len(left)}"
                                    + (f": {', '.join(left[:10])}" if left else ""), red=bool(left))
    required = " (VICREG_REQUIRE_FULL_DATA=1: every one must run)" if full_data_required() else ""
    terminalreporter.write_line(f"full_data tests run: {len(FULL['run'])} of {len(FULL['collected'])} collected"
                                f"{required}")
    short = full_data_shortfall()
    if short:
        why = "" if full_data_root() else f"; each {FULL_REASON}"
        terminalreporter.write_line(f"full_data tests not run: {len(short)}{why}", red=full_data_required())
        for line in short[:10]:
            terminalreporter.write_line(f"  {line}")
