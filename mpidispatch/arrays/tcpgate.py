"""The TCP side of the rendezvous: where joining workers prove the key and wait their turn.

One background thread runs a selector over the listening socket and every connection (no
thread per connection, no MPI call). Each greeting must be complete within
``greeting_timeout`` seconds from the connection (a deadline per greeting, not per byte);
at most ``max_greetings`` greetings are in progress at once (a new connection closes the
oldest greeting: a real worker greets within milliseconds); a greeting is a fixed number of
raw bytes (see :mod:`.auth`; nothing is decoded before the MAC is checked); the record of
refusals is bounded. An authenticated worker's connection stays open: it is how the worker
learns that its manager has gone (EOF).
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import Counter, deque
from typing import Deque, Dict, List, Optional, Tuple

from . import auth

log = logging.getLogger("mpidispatch")

#: Seconds a connection may take to send its whole greeting.
DEFAULT_GREETING_TIMEOUT = 10.0
#: Greetings in progress at once; more connections are closed without reading.
DEFAULT_MAX_GREETINGS = 64


class Peer:
    """An authenticated worker's connection (its "manager alive" channel).

    Attributes:
        info: what the worker said it is (``host:pid``), checked by the MAC.
        server_nonce, client_nonce: the nonces of its TCP handshake (bind the MPI one).
    """

    def __init__(self, sock: socket.socket, server_nonce: bytes, client_nonce: bytes,
                 info: str) -> None:
        self.sock = sock
        self.server_nonce = server_nonce
        self.client_nonce = client_nonce
        self.info = info
        self.closed = False

    def __repr__(self) -> str:
        return "<worker %s>" % self.info


class _Greeting:
    __slots__ = ("sock", "address", "server_nonce", "data", "deadline")

    def __init__(self, sock: socket.socket, address: object, server_nonce: bytes,
                 deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.server_nonce = server_nonce
        self.data = b""
        self.deadline = deadline


class TcpGate:
    """The manager's TCP listener for joining workers.

    The array sets :attr:`wanted` (workers still waiting for a communicator) and
    :attr:`in_flight` (a worker told to connect whose MPI handshake is not done) under
    :attr:`lock`; a worker that proves the key beyond those is answered UNNEEDED.

    Args:
        key: the array's key.
        bind: address to listen on (default: all; announced as the fully qualified name).
        greeting_timeout: seconds from connection to a complete greeting.
        max_greetings: greetings in progress at once.
    """

    def __init__(self, key: bytes, bind: Optional[str] = None,
                 greeting_timeout: float = DEFAULT_GREETING_TIMEOUT,
                 max_greetings: int = DEFAULT_MAX_GREETINGS) -> None:
        self.key = key
        self.greeting_timeout = greeting_timeout
        self.max_greetings = max_greetings
        self.lock = threading.Lock()
        self.wanted = 0
        self.in_flight = 0
        #: Outcomes by kind ("joined", "wrong key", "garbage", "timeout", ...).
        self.counts: Counter = Counter()
        #: The latest refusals, for error messages (bounded).
        self.recent: Deque[str] = deque(maxlen=32)
        self._ready: Deque[Peer] = deque()
        self._peers: Dict[int, Peer] = {}
        self._greetings: Dict[int, _Greeting] = {}
        self._to_close: List[Tuple[Peer, bytes]] = []
        self._closing = False
        self.server = socket.create_server((bind or "", 0), backlog=128)
        self.server.setblocking(False)
        self.address = (bind or socket.getfqdn(), self.server.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.server, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.thread = threading.Thread(target=self._run, name="mpidispatch-rendezvous",
                                       daemon=True)
        self.thread.start()

    # -- the manager's side (any thread) ------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Authenticated workers waiting to be told to connect."""
        with self.lock:
            return len(self._ready)

    def next_ready(self) -> Optional[Peer]:
        """The longest-waiting authenticated worker that is still connected, or None."""
        with self.lock:
            while self._ready:
                peer = self._ready.popleft()
                if not peer.closed:
                    return peer
        return None

    def send_go(self, peer: Peer) -> bool:
        """Tell ``peer`` to call ``MPI_Comm_connect``; False if it is gone."""
        frame = auth.reply(self.key, auth.CONNECT, peer.server_nonce, peer.client_nonce)
        with self.lock:
            if peer.closed:
                return False
            try:
                return peer.sock.send(frame) == len(frame)
            except OSError:
                return False

    def discard(self, peer: Peer, code: bytes = b"") -> None:
        """Close ``peer``'s connection (after a final frame ``code``, if given)."""
        with self.lock:
            if not peer.closed:
                self._to_close.append((peer, code))
        self._wake()

    def trim(self) -> None:
        """Answer UNNEEDED to waiting workers beyond those still wanted."""
        with self.lock:
            while self._ready and len(self._ready) + self.in_flight > self.wanted:
                self._to_close.append((self._ready.pop(), auth.UNNEEDED))
        self._wake()

    def close(self) -> None:
        """Stop listening and close every connection (waiting workers then exit)."""
        with self.lock:
            if self._closing:
                return
            self._closing = True
        self._wake()
        self.thread.join(5.0)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:        # the buffer is full (it is woken already) or closed
            pass

    # -- the selector thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self.lock:
                    if self._closing:
                        break
                    pending, self._to_close = self._to_close, []
                for peer, code in pending:
                    self._close_peer(peer, code)
                for key, _ in self._selector.select(self._timeout()):
                    try:
                        self._handle(key.data)
                    except Exception:  # a bug: report it, keep serving the others
                        log.exception("rendezvous: error while handling %r", key.data)
                self._expire()
        finally:
            self._shutdown()

    def _handle(self, what: object) -> None:
        if what == "listen":
            self._accept()
        elif what == "wake":
            self._drain_wake()
        elif isinstance(what, _Greeting):
            self._read_greeting(what)
        elif isinstance(what, Peer):
            self._read_peer(what)

    def _timeout(self) -> Optional[float]:
        if not self._greetings:
            return None
        first = min(g.deadline for g in self._greetings.values())
        return max(0.0, first - time.monotonic())

    def _accept(self) -> None:
        for _ in range(64):           # a burst, then let the other sockets have a turn
            try:
                sock, address = self.server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self._greetings) >= self.max_greetings:
                # the oldest makes room: a real worker greets within milliseconds, so a
                # flood of idle connections cannot keep it out
                oldest = min(self._greetings.values(), key=lambda g: g.deadline)
                self._forget_greeting(oldest)
                oldest.sock.close()
                self.counts["evicted"] += 1
                self.recent.append("too many greetings at once: the oldest, from %s, was "
                                   "closed" % _address(oldest.address))
            sock.setblocking(False)
            nonce = auth.new_nonce()
            try:
                sock.send(auth.server_hello(nonce))
            except OSError:
                sock.close()
                continue
            greeting = _Greeting(sock, address, nonce,
                                 time.monotonic() + self.greeting_timeout)
            self._greetings[sock.fileno()] = greeting
            self._selector.register(sock, selectors.EVENT_READ, greeting)

    def _read_greeting(self, greeting: _Greeting) -> None:
        want = auth.CLIENT_HELLO_SIZE + 1 - len(greeting.data)
        try:
            chunk = greeting.sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._end_greeting(greeting, "truncated greeting (%d bytes, then closed)"
                               % len(greeting.data), "truncated")
            return
        greeting.data += chunk
        if len(greeting.data) >= len(auth.MAGIC) and \
                greeting.data[:len(auth.MAGIC)] != auth.MAGIC:
            self._end_greeting(greeting, "not an mpidispatch greeting", "garbage", auth.REJECTED)
        elif len(greeting.data) > auth.CLIENT_HELLO_SIZE:
            self._end_greeting(greeting, "oversized greeting", "oversized", auth.REJECTED)
        elif len(greeting.data) == auth.CLIENT_HELLO_SIZE:
            self._judge(greeting)

    def _judge(self, greeting: _Greeting) -> None:
        nonce, info = auth.check_client_hello(self.key, greeting.server_nonce, greeting.data)
        if nonce is None:
            kind = "wrong key" if info == "a wrong key" else "garbage"
            self._end_greeting(greeting, info, kind, auth.REJECTED)
            return
        self._forget_greeting(greeting)
        peer = Peer(greeting.sock, greeting.server_nonce, nonce, info)
        with self.lock:
            admitted = (not self._closing
                        and len(self._ready) + self.in_flight < self.wanted)
            if admitted:
                self._ready.append(peer)
                self._peers[greeting.sock.fileno()] = peer
        if not admitted:
            self.counts["unneeded"] += 1
            self._send_and_close(greeting.sock, self._frame(auth.UNNEEDED, peer))
            return
        self.counts["authenticated"] += 1
        try:
            greeting.sock.send(self._frame(auth.ACCEPTED, peer))
        except OSError:
            pass
        self._selector.register(greeting.sock, selectors.EVENT_READ, peer)

    def _read_peer(self, peer: Peer) -> None:
        """An authenticated worker sent something (ignored) or closed its connection."""
        try:
            chunk = peer.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_peer(peer, b"")

    def _expire(self) -> None:
        now = time.monotonic()
        for greeting in [g for g in self._greetings.values() if g.deadline <= now]:
            self._end_greeting(greeting, "no complete greeting within %g s (%d bytes)"
                               % (self.greeting_timeout, len(greeting.data)), "timeout",
                               auth.REJECTED)

    # -- closing ------------------------------------------------------------------------------
    def _frame(self, code: bytes, peer: Peer) -> bytes:
        return auth.reply(self.key, code, peer.server_nonce, peer.client_nonce)

    def _end_greeting(self, greeting: _Greeting, why: str, kind: str,
                      code: bytes = b"") -> None:
        self._forget_greeting(greeting)
        self.counts[kind] += 1
        self.recent.append("%s from %s" % (why, _address(greeting.address)))
        frame = auth.reply(self.key, code, b"", b"") if code else b""
        self._send_and_close(greeting.sock, frame)

    def _forget_greeting(self, greeting: _Greeting) -> None:
        self._greetings.pop(greeting.sock.fileno(), None)
        try:
            self._selector.unregister(greeting.sock)
        except (KeyError, ValueError):
            pass

    def _close_peer(self, peer: Peer, code: bytes) -> None:
        with self.lock:
            if peer.closed:
                return
            peer.closed = True
            self._peers.pop(peer.sock.fileno(), None)
            if peer in self._ready:
                self._ready.remove(peer)
        try:
            self._selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        self._send_and_close(peer.sock, self._frame(code, peer) if code else b"")

    @staticmethod
    def _send_and_close(sock: socket.socket, frame: bytes) -> None:
        try:
            if frame:
                sock.send(frame)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _shutdown(self) -> None:
        for greeting in list(self._greetings.values()):
            self._forget_greeting(greeting)
            greeting.sock.close()
        with self.lock:
            peers = list(self._peers.values())
        for peer in peers:
            self._close_peer(peer, b"")
        self._selector.close()
        for sock in (self.server, self._wake_r, self._wake_w):
            sock.close()


def _address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return "%s:%s" % (address[0], address[1])
    return str(address)
