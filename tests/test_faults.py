"""The pieces behind crash safety, one at a time: the VICREG_FAULT test hook's spec, a kill's leftovers
(a temporary file, a torn metrics line) and how the next run tidies them, and what listings ignore."""
import json
import os
import subprocess
import sys
import threading

import pytest

from vicreg.core.config import ModelConfig, TrainConfig
from vicreg.core.model import VICReg
from vicreg.runfiles.checkpoint import list_checkpoints, save_checkpoint
from vicreg.runfiles.faults import Fault, parse
from vicreg.runfiles.files import sweep_stale_temps
from vicreg.runfiles.metrics import cut_torn_tail, open_for_append, read_metrics

pytestmark = pytest.mark.reliability
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_fault_spec():
    assert parse(None) is None and parse("") is None
    f = parse("stop:0:13, kill@ckpt_partial:2")
    assert (f.rank_fault, f.kill_point, f.kill_at, f.nan_step) == (("stop", 0, 13), "ckpt_partial", 2, None)
    assert parse("exit:1:6").rank_fault == ("exit", 1, 6) and parse("kill@knn").kill_at == 1
    assert parse("nan@3").nan_step == 3
    for bad in ("kill@nowhere:1", "boom:1:2", "nan@x", "stop:0"):
        with pytest.raises(ValueError, match="VICREG_FAULT item"):
            parse(bad)


def test_stop_at_a_step_on_one_rank():
    stop = threading.Event()
    parse("stop:0:2").at_step(0, 1, stop)
    assert not stop.is_set()
    parse("stop:0:2").at_step(1, 2, stop)  # another rank's fault
    assert not stop.is_set()
    parse("stop:0:2").at_step(0, 2, stop)
    assert stop.is_set()
    Fault().at_step(0, 2, threading.Event())  # no fault: nothing happens


KILLED_WRITE = """
import sys
from vicreg.runfiles.faults import Fault, parse
from vicreg.runfiles.files import atomic_write
fault = parse(sys.argv[2])
atomic_write(sys.argv[1], lambda tmp: open(tmp, "wb").write(bytes(range(200))), on_written=fault.on_written("ckpt"))
"""


@pytest.mark.parametrize("point, size", [("ckpt_partial", 100), ("ckpt_before_rename", 200)])
def test_a_write_killed_midway_leaves_the_target_and_a_temp_file_the_next_run_sweeps(tmp_path, point, size):
    target = tmp_path / "run.safetensors"
    target.write_bytes(b"the previous checkpoint")
    p = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target), f"kill@{point}:1"], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True)
    assert p.returncode == -9, p.stderr
    temps = [n for n in os.listdir(tmp_path) if n.startswith(".run.safetensors.")]
    assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) == size  # half of the bytes, or all
    assert target.read_bytes() == b"the previous checkpoint"
    (tmp_path / f".other.safetensors.{os.getppid()}-0123456789ab.tmp.safetensors").write_bytes(b"not run's")
    live = tmp_path / f".run.safetensors.{os.getpid()}-0123456789ab.tmp.safetensors"  # a live writer's file
    live.write_bytes(b"being written")
    assert sweep_stale_temps(str(target)) == [str(tmp_path / temps[0])]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, f".other.safetensors.{os.getppid()}-0123456789ab"
                                                   ".tmp.safetensors", "run.safetensors"])


def test_listings_skip_dot_files_such_as_a_complete_temp_file(tmp_path):
    cfg = TrainConfig(model=ModelConfig(projector="8-8"))
    path = save_checkpoint(str(tmp_path / "a.safetensors"), VICReg(cfg.model), None,
                           {"config": cfg.to_dict(), "epoch": 1, "step": 1})
    (tmp_path / ".a.safetensors.999999-0123456789ab.tmp.safetensors").write_bytes(open(path, "rb").read())
    assert [p for p, _ in list_checkpoints(str(tmp_path))] == [path]


def _events(n):
    return "".join(json.dumps({"kind": "step", "step": i}) + "\n" for i in range(1, n + 1))


def test_the_reader_skips_a_torn_last_line_and_the_appender_cuts_it(tmp_path):
    path = tmp_path / "run.metrics.jsonl"
    path.write_text(_events(2) + '{"kind": "st')
    assert [e["step"] for e in read_metrics(str(path))] == [1, 2]
    with open_for_append(str(path)) as f:  # a resumed run appends after the last whole line
        f.write(json.dumps({"kind": "start", "step": 2}) + "\n")
    assert path.read_text() == _events(2) + '{"kind": "start", "step": 2}\n'
    assert [e["kind"] for e in read_metrics(str(path))] == ["step", "step", "start"]
    assert cut_torn_tail(str(path)) == 0 and cut_torn_tail(str(tmp_path / "none.jsonl")) == 0


def test_a_long_torn_tail_and_a_file_that_is_only_a_torn_line_are_cut(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(_events(3) + '{"x": "' + "y" * 200_000)  # longer than one read-back block
    assert cut_torn_tail(str(path)) == 200_007 and path.read_text() == _events(3)
    path.write_text('{"kind": "sta')
    assert cut_torn_tail(str(path)) == 13 and path.read_text() == "" and read_metrics(str(path)) == []


def test_a_damaged_line_before_the_last_is_not_a_crash_trace_and_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(_events(1) + "garbage\n" + _events(1))
    with pytest.raises(ValueError, match="line 2 is not a JSON event"):
        read_metrics(str(path))
