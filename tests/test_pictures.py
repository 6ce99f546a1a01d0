"""ui/pictures.py: output pictures are write-once files named by their pixels, so a file a visitor is
downloading is never rewritten under them (the cause of h11's "Too little data for declared
Content-Length" when gradio rewrote the same cached name for two visitors)."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
from PIL import Image

from ui.pictures import Pictures


def test_same_pixels_same_file_never_rewritten(tmp_path):
    pics = Pictures(str(tmp_path))
    a = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    p1 = pics(a)
    ino, data = os.stat(p1).st_ino, open(p1, "rb").read()
    p2 = pics(a.copy())
    assert p1 == p2 and os.stat(p2).st_ino == ino and open(p2, "rb").read() == data
    assert np.array_equal(np.asarray(Image.open(p1)), a)
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert pics(b) != p1 and pics(a.reshape(48, 192, 3)) != p1  # one changed value, or another shape
    names = {os.path.basename(p) for p in (p1, pics(b), pics(a.reshape(48, 192, 3)))}
    assert sorted(os.listdir(tmp_path)) == sorted(names)


def test_a_reader_never_sees_a_partial_file_while_others_ask_again(tmp_path):
    pics = Pictures(str(tmp_path))
    a = np.random.default_rng(1).integers(0, 256, (360, 360, 3), dtype=np.uint8)
    path = pics(a)
    size, short, stop = os.path.getsize(path), [], threading.Event()

    def ask():
        while not stop.is_set():
            pics(a)

    def read():
        while not stop.is_set():
            n = len(open(path, "rb").read())
            if n != size:
                short.append(n)

    threads = [threading.Thread(target=ask) for _ in range(3)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert short == [] and os.listdir(tmp_path) == [os.path.basename(path)]


def test_sweep_deletes_only_unused_pictures(tmp_path):
    pics = Pictures(str(tmp_path), keep_seconds=60)
    old, fresh = pics(np.zeros((4, 4, 3), np.uint8)), pics(np.ones((4, 4, 3), np.uint8))
    past = time.time() - 120
    os.utime(old, (past, past))
    os.utime(fresh, (past, past))
    pics(np.ones((4, 4, 3), np.uint8))  # asked for again: used, so kept
    assert pics.sweep() == 1 and not os.path.exists(old) and os.path.exists(fresh)


def test_sweeps_run_by_themselves(tmp_path):
    pics = Pictures(str(tmp_path), keep_seconds=0, sweep_every=5)
    for k in range(5):
        pics(np.full((4, 4, 3), k, np.uint8))
    assert len(os.listdir(tmp_path)) <= 1  # the fifth write swept the four before it (and maybe itself)
