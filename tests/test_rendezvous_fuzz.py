"""Fuzzing the connect-back rendezvous of submitted worker arrays (docs/security.md).

* the TCP gate, in this process (no MPI: it makes no MPI call), under both wheels: every
  single-bit flip of a valid greeting, every truncation, oversized and random greetings,
  non-ASCII text, the old clear-text greeting, pickles that would run code, a replayed
  greeting, slow drips, a flood of idle connections -- then legitimate workers still get in;
* the MPI port (MPICH wheel: the Open MPI 5 wheel cannot connect jobs): strangers that know
  the port name send pickles that would run code, frames of the wrong size, a wrong MAC,
  nothing at all -- none is returned, nothing runs, a real worker joins afterwards;
* a whole manager (MPICH) running tasks while garbage hits its TCP gate and workers join:
  the loop never stalls, the workers join and take tasks.

Each test prints how many inputs it tried (``pytest -s`` shows them; docs/security.md has
the figures).
"""
import os
import pickle
import random
import socket
import threading
import time

import pytest

from conftest import BACKEND
from mpidispatch.arrays import auth
from mpidispatch.arrays.tcpgate import TcpGate

mpich_only = pytest.mark.skipif(BACKEND != "mpich", reason="joining a running manager over "
                                "MPI needs the MPICH wheel (Open MPI 5 cannot connect jobs)")


def _recv_all(sock, limit=4096):
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(limit - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


class Client:
    """One connection to the gate: reads the server hello, sends whatever it is told."""

    def __init__(self, gate, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", gate.address[1]), timeout=timeout)
        hello = b""
        while len(hello) < auth.SERVER_HELLO_SIZE:
            chunk = self.sock.recv(auth.SERVER_HELLO_SIZE - len(hello))
            assert chunk, "the gate closed before its hello"
            hello += chunk
        self.server_nonce = auth.parse_server_hello(hello)
        assert self.server_nonce is not None

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def answer(self):
        """What the gate sends until it closes the connection."""
        data = _recv_all(self.sock)
        self.sock.close()
        return data


def _valid_hello(key, client):
    nonce = auth.new_nonce()
    return auth.client_hello(key, client.server_nonce, nonce, "fuzz:1"), nonce


def _bomb(marker):
    class Bomb:
        def __reduce__(self):
            return (os.system, ("touch %s" % marker,))
    return pickle.dumps(Bomb())


@pytest.fixture
def gate():
    key = auth.new_key()
    g = TcpGate(key, "127.0.0.1", greeting_timeout=1.0, max_greetings=16)
    yield g
    g.close()


def _threads_named(prefix):
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.mark.timeout(180)
def test_tcp_gate_fuzz(gate, tmp_path):
    marker = tmp_path / "MARKER"
    bad_key = auth.new_key()
    rng = random.Random(20261130)
    tried = 0
    errors = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args)   # a traceback in the gate thread
    try:
        # 1. every single-bit flip of a valid greeting is refused
        for bit in range(auth.CLIENT_HELLO_SIZE * 8):
            c = Client(gate)
            hello, _ = _valid_hello(gate.key, c)
            flipped = bytearray(hello)
            flipped[bit // 8] ^= 1 << (bit % 8)
            c.send(bytes(flipped))
            assert c.answer()[:8] == auth.REJECTED, bit
            tried += 1
        # 2. a wrong key, a replayed greeting, the old clear-text greeting
        c = Client(gate)
        c.send(_valid_hello(bad_key, c)[0])
        assert c.answer()[:8] == auth.REJECTED
        first = Client(gate)
        replay, _ = _valid_hello(gate.key, first)
        first.sock.close()
        c = Client(gate)
        c.send(replay)                   # recorded for another connection's nonce
        assert c.answer()[:8] == auth.REJECTED
        c = Client(gate)
        c.send(b"MPIDISPATCH " + b"0" * 32 + b" vm 1\n")
        assert c.answer()[:8] == auth.REJECTED
        tried += 3
        # 3. truncated greetings: every length, then the connection closes
        for size in range(auth.CLIENT_HELLO_SIZE):
            c = Client(gate)
            hello, _ = _valid_hello(gate.key, c)
            c.send(hello[:size])
            c.sock.shutdown(socket.SHUT_WR)
            assert c.answer()[:8] in (b"", auth.REJECTED)
            tried += 1
        # 4. oversized, random and non-ASCII greetings; pickles that would run code
        #    (sent 8 at a time: at most max_greetings=16 are read at once)
        inputs = []
        for _ in range(50):
            inputs.append(lambda c: _valid_hello(gate.key, c)[0] + bytes(
                rng.randrange(256) for _ in range(rng.randrange(1, 5000))))
        for _ in range(200):
            inputs.append(lambda c: bytes(rng.randrange(256)
                                          for _ in range(rng.randrange(1, 400))))
        for text in ("MPIDISPATCH ünïcødé ☃ host 1\n", "\x00" * 136, "\xff" * 136):
            inputs.append(lambda c, text=text: text.encode("utf-8"))
        bomb = _bomb(marker)
        for framed in (bomb, auth.MAGIC + bomb, (auth.MAGIC + bomb).ljust(136, b"\0"),
                       bomb.ljust(136, b"."), bomb * 50):
            inputs.append(lambda c, framed=framed: framed)
        for start in range(0, len(inputs), 8):
            batch = [(Client(gate), make) for make in inputs[start:start + 8]]
            for c, make in batch:
                c.send(make(c))
            for c, _ in batch:
                assert c.answer()[:8] in (b"", auth.REJECTED)
        tried += len(inputs)
        # 5. slow drips: a byte every 0.2 s keeps no connection past its greeting deadline
        drips = [Client(gate) for _ in range(10)]
        t0 = time.monotonic()
        closed_after = []

        def drip(c):
            hello, _ = _valid_hello(gate.key, c)
            for byte in hello:
                try:
                    c.sock.send(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.2)
            closed_after.append(time.monotonic() - t0)
        workers = [threading.Thread(target=drip, args=(c,)) for c in drips]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        for c in drips:
            assert c.answer()[-40:-32] in (auth.REJECTED, b"")
        assert max(closed_after) < 10, closed_after    # 136 bytes would take 27 s
        tried += len(drips)
        # 6. a flood of idle connections: at most max_greetings wait (the oldest are closed),
        #    in one thread; a worker that greets at once still gets in
        threads_before = len(_threads_named("mpidispatch"))
        idle = []
        for _ in range(300):
            try:
                idle.append(socket.create_connection(("127.0.0.1", gate.address[1]), timeout=10))
            except OSError:
                pass
        assert len(_threads_named("mpidispatch")) == threads_before == 1
        with gate.lock:
            gate.wanted = 1
        c = Client(gate)
        hello, nonce = _valid_hello(gate.key, c)
        c.send(hello)
        frame = _recv_all(c.sock, auth.FRAME_SIZE)
        assert auth.check_reply(gate.key, frame, c.server_nonce, nonce) == auth.ACCEPTED
        c.sock.close()
        open_idle = 0
        for s in idle:
            s.settimeout(0.2)
            try:
                while s.recv(100):                  # the server hello, then EOF if closed
                    pass
            except socket.timeout:
                open_idle += 1                      # still waiting for its greeting
            except OSError:
                pass
            s.close()
        assert open_idle <= gate.max_greetings
        tried += len(idle) + 1
        # 7. legitimate workers still get in: as many as wanted, the next one is not needed
        with gate.lock:
            gate.wanted = 3
        answers, kept = [], []
        for _ in range(4):
            c = Client(gate)
            kept.append(c)                      # a closed connection leaves the queue
            hello, nonce = _valid_hello(gate.key, c)
            c.send(hello)
            frame = _recv_all(c.sock, auth.FRAME_SIZE)
            answers.append(auth.check_reply(gate.key, frame, c.server_nonce, nonce))
            if answers[-1] != auth.ACCEPTED:
                c.sock.close()
        assert answers == [auth.ACCEPTED] * 3 + [auth.UNNEEDED]
        assert gate.waiting == 3
        tried += 4
    finally:
        threading.excepthook = old_hook
    assert not marker.exists()
    assert not errors, errors
    assert len(gate.recent) <= 32 and gate.thread.is_alive()
    counts = dict(gate.counts)
    print("\nTCP gate fuzz: %d inputs; outcomes %s" % (tried, counts))
    assert counts["authenticated"] == 4 and counts["evicted"] > 0


@mpich_only
@pytest.mark.timeout(400)
def test_mpi_port_fuzz(mpi_run):
    """Strangers who know the MPI port name, one after the other, in the place of a worker
    told to connect: pickles that run code (as a 40-byte frame and with mpi4py's pickled
    send on every tag), frames too short, too long, of random sizes, a wrong MAC, silence,
    a quick disconnect. None is returned, nothing runs, a real worker joins afterwards."""
    run = mpi_run("arrays_token.py", "2", timeout=380)
    assert run.returncode == 0, run
    tried = int(run.value("TRIED"))
    assert tried == 2 * 7 + 2 * 2
    assert run.value("ROGUES_REFUSED") == "%d True" % tried
    assert run.value("MARKER") == "False"
    assert float(run.value("MAX_POLL")) < 0.5
    assert run.value("GOOD") == "hello" and run.value("GOOD_EXIT") == "0"
    print("\nMPI port fuzz: %d strangers, all refused; longest poll %s s"
          % (tried, run.value("MAX_POLL")))


@mpich_only
@pytest.mark.timeout(200)
def test_manager_under_fuzz_keeps_working_and_workers_join(mpi_run):
    """A Manager runs tasks while garbage hits its array's TCP gate: the loop never stalls
    (results keep coming), the array's two real workers join and take tasks."""
    run = mpi_run("arrays_fuzz.py", timeout=180)
    assert run.returncode == 0, run
    assert float(run.value("MAX_GAP")) < 2.0, run
    assert run.value("JOINED") == "2", run
    assert run.value("MARKER") == "False"
    inputs = int(run.value("FUZZ_INPUTS"))
    assert inputs > 50
    assert "Traceback" not in run.stderr
    print("\nmanager under fuzz: %d inputs; longest gap between results %s s; gate %s"
          % (inputs, run.value("MAX_GAP"), run.value("GATE")))
