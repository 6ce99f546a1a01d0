"""vicreg.runfiles.files.atomic_write: the one atomic file write behind checkpoints, sidecars and the decode cache."""
import os

import numpy as np
import pytest

from vicreg.runfiles.files import atomic_write, atomic_write_text


def _listing(folder):
    return sorted(os.listdir(folder))


def test_a_failing_writer_leaves_the_target_untouched_and_no_temp_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old contents")
    seen = []

    def half_then_fail(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("new but half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), half_then_fail)
    assert target.read_text() == "old contents"
    assert _listing(tmp_path) == ["state.json"]
    # the writer was handed a different file in the target's own folder (so the rename is atomic)
    assert os.path.dirname(seen[0]) == str(tmp_path) and seen[0] != str(target)


def test_a_failing_writer_creates_nothing_when_there_was_no_target(tmp_path):
    def fail(_tmp):
        raise ValueError("bad data")

    with pytest.raises(ValueError):
        atomic_write(str(tmp_path / "new.bin"), fail)
    assert _listing(tmp_path) == []


def test_success_replaces_the_target_and_leaves_only_it(tmp_path):
    target = tmp_path / "sub" / "notes.txt"  # the folder is created
    assert atomic_write_text(str(target), "first") == str(target)
    assert atomic_write_text(str(target), "second\nline") == str(target)
    assert target.read_text() == "second\nline"
    assert _listing(tmp_path / "sub") == ["notes.txt"]


def test_numpy_targets_keep_their_exact_names(tmp_path):
    # np.save / np.savez append .npy / .npz to a name without it; the temporary name must already
    # end with the target's extension so that the file written is the file renamed.
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    atomic_write(str(tmp_path / "emb.npy"), lambda tmp: np.save(tmp, arr))
    atomic_write(str(tmp_path / "pack.npz"), lambda tmp: np.savez(tmp, a=arr, b=arr * 2))
    assert _listing(tmp_path) == ["emb.npy", "pack.npz"]
    assert np.array_equal(np.load(tmp_path / "emb.npy"), arr)
    with np.load(tmp_path / "pack.npz") as z:
        assert sorted(z.files) == ["a", "b"] and np.array_equal(z["b"], arr * 2)


def test_two_writers_of_one_path_get_different_temporary_files(tmp_path):
    names = []
    for _ in range(2):
        atomic_write(str(tmp_path / "x.bin"), lambda tmp: (names.append(tmp), open(tmp, "wb").write(b"x")))
    assert names[0] != names[1]
    assert _listing(tmp_path) == ["x.bin"]
