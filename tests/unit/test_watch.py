"""The watcher's datagrams and the manager's post, over a real UDP socket (no MPI)."""
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

from mpidispatch import _watcher
from mpidispatch._watch import WatchPost
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)

KEY, TOKEN = b"k" * 32, b"t" * 16


def test_a_frame_round_trips_and_is_fixed_size():
    frame = _watcher.pack(KEY, TOKEN, 7, "R", 1234)
    assert len(frame) == _watcher.FRAME_SIZE
    assert _watcher.token_of(frame) == TOKEN
    assert _watcher.unpack(KEY, frame) == (7, "R", 1234)


def test_wrong_key_size_or_magic_is_refused():
    frame = _watcher.pack(KEY, TOKEN, 7, "R", 1234)
    assert _watcher.unpack(b"x" * 32, frame) is None
    assert _watcher.unpack(KEY, frame + b"!") is None
    assert _watcher.token_of(frame[:-1]) is None
    assert _watcher.token_of(b"XXXXXXXX" + frame[8:]) is None
    flipped = frame[:40] + bytes([frame[40] ^ 1]) + frame[41:]
    assert _watcher.unpack(KEY, flipped) is None


def test_process_state_of_this_process_and_of_a_gone_one():
    state, ticks = _watcher.process_state(os.getpid())
    assert state in "RS" and ticks >= 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert _watcher.process_state(child.pid) is None


def _send(post_port, frame):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(frame, ("127.0.0.1", post_port))


def _collect_until(post, cond, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        post.collect(time.monotonic())
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_the_post_takes_signed_reports_and_refuses_forgeries_and_replays():
    post = WatchPost()
    w = SimpleNamespace()
    try:
        creds = post.enlist(w, interval=0.5, same_host=True)
        assert "127.0.0.1" in creds["addresses"]
        key, token = bytes.fromhex(creds["key"]), bytes.fromhex(creds["token"])
        _send(creds["port"], _watcher.pack(b"w" * 32, token, 1, "T", 0))   # wrong key
        _send(creds["port"], b"garbage")
        _send(creds["port"], _watcher.pack(key, token, 5, "R", 10))
        assert _collect_until(post, lambda: w.watch is not None)
        assert (w.watch.sequence, w.watch.state, w.watch.busy) == (5, "R", True)
        _send(creds["port"], _watcher.pack(key, token, 4, "T", 10))        # a replay
        _send(creds["port"], _watcher.pack(key, token, 6, "T", 11))
        assert _collect_until(post, lambda: w.watch.sequence == 6)
        assert w.watch.state == "T" and not w.watch.busy
        assert post.refused == 3
        post.forget(w)
        _send(creds["port"], _watcher.pack(key, token, 7, "R", 12))
        assert _collect_until(post, lambda: post.refused == 4)
    finally:
        post.close()


def test_a_watcher_reports_its_parent_and_ends_with_it():
    """A real watcher process: reports this process (its parent) running, ends on EOF."""
    post = WatchPost()
    w = SimpleNamespace()
    try:
        creds = post.enlist(w, interval=0.1, same_host=True)
        proc = subprocess.Popen([sys.executable, "-I", "-S", _watcher.__file__],
                                stdin=subprocess.PIPE)
        import json
        proc.stdin.write(json.dumps(creds).encode() + b"\n")
        proc.stdin.flush()
        assert _collect_until(post, lambda: w.watch is not None and w.watch.sequence >= 2)
        assert w.watch.busy
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        post.close()
