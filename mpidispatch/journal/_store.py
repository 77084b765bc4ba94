"""The journal as the manager sees it: keys, lookups, and records that cost next to nothing.

The manager's loop only appends small tuples to a queue (well under a microsecond each). A
thread of the journal drains that queue at most every :data:`COMMIT_INTERVAL` seconds and
hands the batch to the :class:`~._writer.Writer`, which commits it in one SQLite transaction.
A SIGKILL of the manager loses at most the records of the last interval.

By default the writer works in that thread. ``MPIDISPATCH_JOURNAL_WRITER=process`` runs it
in a process of its own instead: the manager then spends about 5 instead of 13 us of CPU
per task and never shares its interpreter lock with the writer, which pays off when the
manager's host has a core to spare; on a host whose cores are all busy (measured: 2 cores,
3 MPI processes) the extra process costs more than it saves. A writer process that cannot
be started or dies is replaced by the thread.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import pickle
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, Deque, Optional, Tuple

from ..errors import Error
from . import _schema
from ._keys import KeyMaker, Parts
from ._writer import (DONE, FAILED, OP_FINISHED, OP_QUEUED, OP_STARTED, OP_WORKER, Writer,
                      read_frame, send_frame)

log = logging.getLogger("mpidispatch.journal")

#: Seconds between commits while records arrive (``MPIDISPATCH_JOURNAL_COMMIT_INTERVAL``).
COMMIT_INTERVAL = 0.2
#: Seconds between heartbeats (``sessions.last_write``) while nothing else is written.
HEARTBEAT_INTERVAL = 5.0
#: Seconds to wait for the writer to confirm a flush or the final commit.
ACK_TIMEOUT = 60.0
#: Seconds :meth:`Journal.open` waits for a journal in use (``MPIDISPATCH_JOURNAL_LOCK_WAIT``).
LOCK_WAIT = 5.0

_open_journals: "weakref.WeakSet[Journal]" = weakref.WeakSet()


class JournalError(Error):
    """The journal cannot be opened or written (in use, unreadable, not a journal)."""


class JournalMismatchError(JournalError):
    """The journal belongs to another script (``run_id``) or has another format version."""


def _close_open_journals() -> None:
    for journal in list(_open_journals):
        try:
            journal.close()
        except Exception:  # cleanup at exit must not turn a clean exit into a traceback
            log.exception("error while closing a journal at exit")


atexit.register(_close_open_journals)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get("MPIDISPATCH_" + name, "") or default)
    except ValueError:
        return default


class Journal:
    """A run journal: the state and result of every task, kept in a SQLite file.

    Open it with :meth:`open`. The manager's loop calls :meth:`queued`, :meth:`started`,
    :meth:`finished` and :meth:`worker_seen` as things happen; each only appends to a queue.
    A face asks :meth:`lookup` (or :meth:`recorded`) before it queues a task: a recorded
    result comes back instead of running the task again.
    """

    def __init__(self, path: str, run_id: str, retry_failed: bool, conn: sqlite3.Connection,
                 lock_file: Any, session: int, has_final: bool) -> None:
        self.path = path
        self.run_id = run_id
        self.retry_failed = retry_failed
        self.session = session
        self.closed = False
        #: Tasks whose recorded result or error :meth:`lookup` handed back in this session.
        self.restored = 0
        self._pid = os.getpid()
        self._lock_file = lock_file
        self._has_final = has_final
        self._keys = KeyMaker()
        self._ops: Deque[tuple] = deque()
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader: Optional[sqlite3.Connection] = None
        self._results_dir = _schema.results_dir(path)
        self._interval = _env_float("JOURNAL_COMMIT_INTERVAL", COMMIT_INTERVAL)
        self._last_send = time.monotonic()
        self._failing: Optional[str] = None
        self._seq = 0
        self._writer: Optional[Writer] = None    # in this process (thread mode)
        self._proc: Optional[subprocess.Popen] = None
        self._to_writer = self._from_writer = -1
        if os.environ.get("MPIDISPATCH_JOURNAL_WRITER", "thread").strip() != "process" or \
                not self._start_process():
            self._writer = Writer(path, session, conn)
        else:
            conn.close()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpidispatch-journal",
                                        daemon=True)
        self._thread.start()
        _open_journals.add(self)

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, run_id: str, retry_failed: bool = False) -> "Journal":
        """Open (or create) the journal at ``path`` for the script identified by ``run_id``.

        Args:
            path: the SQLite file (``run.db``); its directory must exist.
            run_id: what identifies the script, e.g. :func:`default_run_id`; a journal
                written under another run id is refused.
            retry_failed: run tasks recorded as failed again instead of returning their
                recorded error.

        Raises:
            JournalMismatchError: the file belongs to another run id or format version.
            JournalError: the file is not a journal, is in use by another manager, cannot
                be written, or may be written by other users (its pickles are trusted).
        """
        path = os.path.abspath(os.fspath(path))
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise JournalError("cannot create the journal %s: no directory %s"
                               % (path, directory))
        _check_trusted(path)
        lock_file = _take_lock(path)
        try:
            conn = _schema.connect_writer(path)
            session, has_final = _prepare(conn, path, run_id)
        except sqlite3.DatabaseError as exc:
            _release_lock(lock_file)
            raise JournalError("%s is not a usable journal: %s. Use another file name, or "
                               "delete it to start afresh." % (path, exc)) from exc
        except BaseException:
            _release_lock(lock_file)
            raise
        return cls(path, run_id, retry_failed, conn, lock_file, session, has_final)

    # -- keys and lookups --------------------------------------------------------------------
    def task_key(self, payload: Parts, setup: Parts = None, user_key: Any = None) -> str:
        """The key of a task: ``user_key`` if given, else a digest of its bytes.

        ``payload`` and ``setup`` are bytes or sequences of bytes-like objects (a pickle
        stream and its out-of-band buffers). The n-th task with the same bytes in this run
        gets the n-th key for those bytes. See docs/journal.md, "What makes two tasks the
        same".

        Raises:
            TypeError: ``user_key`` is not a str, int, float, bytes, bool or tuple of these.
        """
        return self._keys.key(payload, setup, user_key)

    def lookup(self, key: str) -> Optional[Tuple[str, bytes]]:
        """``(state, blob)`` if the task's outcome is recorded, else None (run it).

        ``state`` is ``"done"`` (``blob`` is the pickled result) or ``"failed"`` (the pickled
        exception; never returned with ``retry_failed=True``). Use :func:`decode` on ``blob``.
        """
        if not self._has_final:
            return None
        with self._read_lock:
            if self._reader is None:
                self._reader = _schema.connect_reader(self.path)
            row = self._reader.execute(
                "SELECT state, result, result_file FROM tasks WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        state, blob, result_file = row
        if state == FAILED and self.retry_failed or state not in (DONE, FAILED):
            return None
        if result_file:
            try:
                with open(os.path.join(self._results_dir, result_file), "rb") as f:
                    blob = f.read()
            except OSError as exc:
                log.warning("result file of task %s is missing (%s); running it again", key,
                            exc)
                return None
        self.restored += 1
        return state, bytes(blob)

    def recorded(self, key: str) -> Optional[Tuple[str, Any]]:
        """Like :meth:`lookup`, unpickled: ``("done", result)``, ``("failed", exception)``
        or None. A record that cannot be unpickled any more (its class moved) is logged and
        taken as not recorded, so the task runs again."""
        found = self.lookup(key)
        if found is None:
            return None
        try:
            return found[0], decode(found[1])
        except JournalError as exc:
            self.restored -= 1
            log.warning("task %s runs again: %s", key, exc)
            return None

    # -- records (called from the manager's loop; each only appends) -------------------------
    def queued(self, key: str, t: Optional[float] = None) -> None:
        """The task was handed to the engine."""
        self._ops.append((OP_QUEUED, key, time.time() if t is None else t))

    def started(self, key: str, worker: str, host: Optional[str],
                t: Optional[float] = None) -> None:
        """The task was sent to ``worker`` on ``host``."""
        self._ops.append((OP_STARTED, key, time.time() if t is None else t, worker, host))

    def finished(self, key: str, ok: bool, blob: bytes, t: Optional[float] = None) -> None:
        """The task ended: ``ok`` with ``blob`` its pickled result, or failed with ``blob``
        the pickled exception (see :func:`encode_result`, :func:`encode_error`)."""
        self._ops.append((OP_FINISHED, key, time.time() if t is None else t, ok, blob))

    def worker_seen(self, name: str, host: Optional[str], t: Optional[float] = None,
                    state: str = "ready", exit_status: Optional[int] = None) -> None:
        """A worker said hello (``ready``), was ``lost`` (with its exit status) or
        ``stopped``. A lost worker's running attempts are marked lost."""
        self._ops.append((OP_WORKER, name, time.time() if t is None else t, host, state,
                          exit_status))

    # -- committing --------------------------------------------------------------------------
    def flush(self) -> None:
        """Commit every record made so far, now (the journal does this by itself at most every
        0.2 s; call it before an exit path that may not reach :meth:`close`). Waits for the
        writer, at most ``ACK_TIMEOUT`` seconds."""
        with self._send_lock:
            self._send(force=True)           # commits, in thread mode
            if self._writer is None:
                self._request(("flush",))

    def close(self) -> None:
        """Commit, mark tasks still running as interrupted and this session as ended, stop the
        writer, release the file. Also done at interpreter exit."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if os.getpid() != self._pid:   # a forked child: the journal is its parent's
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        with self._send_lock:
            try:
                self._send(force=True)
                if self._writer is not None:
                    if not self._writer.close(time.time()):
                        self._failing = self._writer.failing
                else:
                    self._request(("close", time.time()))
                    self._end_process()
                    if self._writer is not None:      # it died meanwhile: finish here
                        if not self._writer.close(time.time()):
                            self._failing = self._writer.failing
            finally:
                if self._reader is not None:
                    try:
                        self._reader.close()
                    except sqlite3.Error:
                        pass
                    self._reader = None
                _release_lock(self._lock_file)
        _open_journals.discard(self)
        if self._failing:
            log.error("the journal %s could not be written: %s", self.path, self._failing)

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._send_lock:
                if not self.closed:
                    self._send()

    def _send(self, force: bool = False) -> None:
        """Hand the queued records to the writer (with the send lock held)."""
        ops = self._ops
        batch = [ops.popleft() for _ in range(len(ops))]
        now = time.monotonic()
        if not batch and not force and now - self._last_send < HEARTBEAT_INTERVAL:
            return
        self._last_send = now
        if self._writer is not None:
            self._writer.fold(batch)
            self._writer.commit()
            self._failing = self._writer.failing
            return
        try:
            send_frame(self._to_writer, ("ops", batch) if batch else ("beat",))
        except OSError as exc:
            writer = self._writer_died("sending to it failed: %s" % exc)
            writer.fold(batch)
            writer.commit()

    # -- the writer process --------------------------------------------------------------------
    def _start_process(self) -> bool:
        """Start the writer process; False (and a warning) if it cannot be started."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = ("import sys; sys.path[:0] = [%r]; "
                "from mpidispatch.journal._writer import main; main()" % root)
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", code, self.path, str(self.session)],
                stdin=to_r, stdout=from_w, stderr=None, close_fds=True,
                pass_fds=(self._lock_file.fileno(),))   # the writer holds the lock too
        except OSError as exc:
            for fd in (to_r, to_w, from_r, from_w):
                os.close(fd)
            log.warning("cannot start the journal's writer process (%s); writing from a "
                        "thread instead", exc)
            return False
        os.close(to_r)
        os.close(from_w)
        self._to_writer, self._from_writer = to_w, from_r
        return True

    def _request(self, message: tuple) -> None:
        """Send a flush or close request and wait for the writer's answer (bounded)."""
        self._seq += 1
        try:
            send_frame(self._to_writer, (message[0], self._seq) + message[1:])
            answer = self._answer(ACK_TIMEOUT)
        except OSError as exc:
            answer = None
            reason = str(exc)
        else:
            reason = "no answer within %g s" % ACK_TIMEOUT
        if answer is None or answer[0] != self._seq:
            writer = self._writer_died(reason)
            if message[0] == "flush":
                writer.commit()
            return
        self._failing = answer[1]

    def _answer(self, timeout: float) -> Optional[tuple]:
        deadline = time.monotonic() + timeout
        chunks = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_writer], [], [], left)
            if not ready:
                return None
            data = os.read(self._from_writer, 65536)
            if not data:
                return None
            chunks += data
            if len(chunks) >= 8 and len(chunks) >= 8 + int.from_bytes(chunks[:8], "little"):
                import io
                return read_frame(io.BytesIO(chunks))

    def _writer_died(self, reason: str) -> Writer:
        """The writer process is gone (or stuck): go on writing from this process."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        status = self._end_process()
        log.error("the journal's writer process stopped (%s; exit status %s); the records it "
                  "had not committed are lost, and they run again on resume. Writing from the "
                  "manager from now on.", reason, status)
        self._writer = writer = Writer(self.path, self.session)
        return writer

    def _end_process(self) -> Optional[int]:
        """Close the pipes and reap the writer (killing it if it does not end in time)."""
        proc = self._proc
        if proc is None:
            return None
        self._proc = None
        for fd in (self._to_writer, self._from_writer):
            try:
                os.close(fd)
            except OSError:
                pass
        self._to_writer = self._from_writer = -1
        try:
            return proc.wait(timeout=ACK_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _check_trusted(path: str) -> None:
    """Refuse a journal that other users may write: resuming unpickles what it holds."""
    for p in (path, _schema.results_dir(path)):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        if st.st_uid != os.getuid() and os.getuid() != 0 or st.st_mode & 0o002:
            raise JournalError(
                "%s is owned by another user or writable by everyone; a journal's results "
                "are unpickled on resume, so only a file you alone can write is trusted. "
                "Fix its permissions (chmod o-w) or use another journal file." % p)


def _take_lock(path: str) -> Any:
    """Hold ``run.db.lock`` for as long as this manager writes the journal."""
    lock_file = open(_schema.lock_path(path), "a+")
    # The writer process of a manager that was just killed holds it while it commits what it
    # received: wait a little for that, not for a live run.
    deadline = time.monotonic() + _env_float("JOURNAL_LOCK_WAIT", LOCK_WAIT)
    while True:
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
        lock_file.seek(0)
        holder = lock_file.read().strip() or "another process"
        lock_file.close()
        raise JournalError(
            "the journal %s is in use by another manager (%s). Two runs cannot share a "
            "journal: wait for that run to end, or give this one another file." % (path, holder))
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write("pid %d on %s since %s\n" % (os.getpid(), socket.gethostname(),
                                                 time.strftime("%Y-%m-%d %H:%M:%S")))
    lock_file.flush()
    return lock_file


def _release_lock(lock_file: Any) -> None:
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
    except (OSError, ValueError):
        pass
    lock_file.close()


def _prepare(conn: sqlite3.Connection, path: str, run_id: str) -> Tuple[int, bool]:
    """Create or check the tables, close out earlier sessions, start this one.

    Returns (this session's id, whether any task has a recorded outcome).
    """
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    has_tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] > 0
    if has_tables and app_id != _schema.APPLICATION_ID:
        raise JournalError("%s is an SQLite database but not an mpidispatch journal; use "
                           "another file name." % path)
    now = time.time()
    try:
        if not has_tables:   # nobody else can be creating it: we hold the lock file
            conn.execute("PRAGMA application_id=%d" % _schema.APPLICATION_ID)
            conn.executescript(_schema.SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        if not has_tables:
            from .. import __version__
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", str(_schema.FORMAT)), ("run_id", run_id),
                ("created", repr(now)), ("mpidispatch", __version__)])
        meta = dict(conn.execute("SELECT name, value FROM meta"))
        if meta.get("format") != str(_schema.FORMAT):
            raise JournalMismatchError(
                "the journal %s has format %s (written by mpidispatch %s); this mpidispatch "
                "reads format %d. Use a new journal file, or delete this one (and %s) to "
                "start afresh." % (path, meta.get("format"), meta.get("mpidispatch", "?"),
                                   _schema.FORMAT, os.path.basename(_schema.results_dir(path))))
        if meta.get("run_id") != run_id:
            raise JournalMismatchError(
                "the journal %s belongs to another script (run id %r), not to this one (run "
                "id %r); its results would be wrong here. Give this run its own journal "
                "file, or delete that one (and %s) to start afresh."
                % (path, meta.get("run_id"), run_id,
                   os.path.basename(_schema.results_dir(path))))
        # A session that never ended was killed: what it had in flight was interrupted.
        for sid, last in conn.execute(
                "SELECT id, COALESCE(last_write, started) FROM sessions WHERE ended IS NULL"
        ).fetchall():
            conn.execute("UPDATE sessions SET ended=?, how='killed' WHERE id=?", (last, sid))
            conn.execute("INSERT INTO attempts (key, session, worker, host, started, ended, "
                         "outcome) SELECT key, session, worker, host, started, ?, "
                         "'interrupted' FROM tasks WHERE state='running' AND session=?",
                         (last, sid))
        conn.execute("UPDATE tasks SET state='interrupted' WHERE state='running'")
        conn.execute("UPDATE workers SET state='gone' WHERE state IN ('ready', 'busy')")
        cur = conn.execute("INSERT INTO sessions (pid, host, argv, started, last_write) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (os.getpid(), socket.gethostname(), json.dumps(sys.argv), now, now))
        session = cur.lastrowid
        has_final = conn.execute("SELECT EXISTS (SELECT 1 FROM tasks WHERE state IN "
                                 "('done', 'failed'))").fetchone()[0] == 1
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        raise
    return int(session or 0), bool(has_final)


# -- pickling results and errors ----------------------------------------------------------------
_PLAIN_TYPES = frozenset((type(None), bool, int, float, complex, str, bytes))


def encode_result(obj: Any) -> bytes:
    """Pickle a task's result for :meth:`Journal.finished` (by value where pickle's reference
    would not resolve in a later run, like :mod:`mpidispatch._serialize`).

    Raises:
        Exception: what pickle and cloudpickle raise for an object that cannot be pickled.
    """
    if type(obj) in _PLAIN_TYPES:
        return pickle.dumps(obj, 5)
    try:
        data = pickle.dumps(obj, 5)
    except (pickle.PicklingError, AttributeError, TypeError):
        pass   # a lambda, a closure, a local class: cloudpickle may manage
    else:
        # a reference into the script's module would not resolve under another launcher
        if b"__main__" not in data and b"__mp_main__" not in data:
            return data
    import cloudpickle
    return cloudpickle.dumps(obj, protocol=5)


def encode_error(exc: BaseException) -> bytes:
    """Pickle a task's exception; one that cannot be pickled is kept as an :class:`Error`
    holding its type and message."""
    try:
        return encode_result(exc)
    except Exception:
        return pickle.dumps(Error("%s: %s" % (type(exc).__name__, exc)), 5)


def decode(blob: bytes) -> Any:
    """Unpickle a blob from :meth:`Journal.lookup`.

    Raises:
        JournalError: it cannot be unpickled here (a class that moved or was renamed).
    """
    try:
        return pickle.loads(blob)
    except Exception as exc:
        raise JournalError("a recorded result cannot be unpickled: %s: %s. The code it "
                           "refers to changed since it was recorded; rerun with a new journal "
                           "file." % (type(exc).__name__, exc)) from exc


def default_run_id(script: Optional[str] = None) -> str:
    """A run id naming the script: the file name of ``script`` (default: ``sys.argv[0]``).

    Two scripts with the same file name in different directories share it; pass your own
    run id to :meth:`Journal.open` (a face's ``journal_run_id=``) to tell them apart.
    """
    script = script if script is not None else (sys.argv[0] if sys.argv else "")
    return os.path.basename(script) or "<interactive>"
