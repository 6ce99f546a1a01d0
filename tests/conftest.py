import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.environ.get("VICREG_DATA") or os.path.join(ROOT, "..", "shared", "data", "cifar10")


@pytest.fixture(scope="session")
def cifar_root() -> str:
    if not os.path.isdir(os.path.join(DATA, "train")):
        pytest.fail(f"CIFAR-10 image folder not found at {DATA}; set VICREG_DATA (see README)")
    return DATA


@pytest.fixture(scope="session")
def cifar(cifar_root):
    """The full shared CIFAR-10 copy as uint8 tensors (decoded once into the cache)."""
    from vicreg.data import load_dataset

    return load_dataset(cifar_root)


@pytest.fixture(scope="session")
def mini_cifar(tmp_path_factory, cifar_root) -> str:
    """A small real-CIFAR-10 image folder: 60 train + 30 test images per class, copied from the
    shared copy, so CLI runs that decode and evaluate everything stay quick."""
    root = tmp_path_factory.mktemp("mini_cifar")
    for split, n in (("train", 60), ("test", 30)):
        for cls in sorted(os.listdir(os.path.join(cifar_root, split))):
            src = os.path.join(cifar_root, split, cls)
            dst = root / split / cls
            dst.mkdir(parents=True)
            for f in sorted(os.listdir(src))[:n]:
                shutil.copy(os.path.join(src, f), dst / f)
    return str(root)


def write_packed(path, dataset, n_train: int, n_test: int) -> str:
    """Save evenly spaced subsets of `dataset` as a packed .npz (vicreg.data.load_packed's layout)."""
    import json

    import numpy as np

    from vicreg.data import even_subset

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


def pytest_terminal_summary(terminalreporter):
    from leaks import SEEN

    if SEEN["scanned"]:
        terminalreporter.write_line(f"visitor messages scanned for server paths, environment values and tracebacks: "
                                    f"{SEEN['scanned']}, leaking: {len(SEEN['leaking'])}")
        for text, found in SEEN["leaking"][:10]:
            terminalreporter.write_line(f"  {found}: {text!r}")
