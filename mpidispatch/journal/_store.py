"""The journal writer: the manager records what happens to each task, cheaply and in order.

The manager's loop only appends small tuples to a queue (well under a microsecond each); a
thread of the journal's own drains that queue at most every :data:`COMMIT_INTERVAL` seconds,
folds the records into rows, writes them in one SQLite transaction and commits. So a
SIGKILL loses at most the records of the last fraction of a second, and the loop never waits
for the disk. Large results are written to files beside the database before the commit
that refers to them.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import pickle
import socket
import sqlite3
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from ..errors import Error
from . import _schema
from ._keys import KeyMaker, Parts

log = logging.getLogger("mpidispatch.journal")

#: Seconds between commits while records arrive (``MPIDISPATCH_JOURNAL_COMMIT_INTERVAL``).
COMMIT_INTERVAL = 0.2
#: Seconds between heartbeats (``sessions.last_write``) while nothing else is written.
HEARTBEAT_INTERVAL = 5.0
#: Seconds :meth:`Journal.close` keeps retrying a commit that failed (a busy file).
CLOSE_RETRY_SECONDS = 30.0

# Task states.
QUEUED, RUNNING, DONE, FAILED, INTERRUPTED = "queued", "running", "done", "failed", "interrupted"
# Attempt outcomes besides DONE/FAILED.
LOST = "lost"

_OP_QUEUED, _OP_STARTED, _OP_FINISHED, _OP_WORKER = range(4)

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
    A face asks :meth:`lookup` before it queues a task: a recorded result comes back
    instead of running the task again.
    """

    def __init__(self, path: str, run_id: str, retry_failed: bool, conn: sqlite3.Connection,
                 lock_file: Any, session: int, has_final: bool) -> None:
        self.path = path
        self.run_id = run_id
        self.retry_failed = retry_failed
        self.session = session
        self.closed = False
        self._pid = os.getpid()
        #: Tasks whose recorded result or error :meth:`lookup` handed back in this session.
        self.restored = 0
        self._conn = conn
        self._lock_file = lock_file
        self._has_final = has_final
        self._keys = KeyMaker()
        self._ops: Deque[tuple] = deque()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader: Optional[sqlite3.Connection] = None
        self._results_dir = _schema.results_dir(path)
        self._interval = _env_float("JOURNAL_COMMIT_INTERVAL", COMMIT_INTERVAL)
        # Folded state not yet committed (kept across a failed commit, retried next time).
        self._task_rows: Dict[str, list] = {}
        self._attempt_rows: List[tuple] = []
        self._worker_rows: Dict[str, list] = {}
        self._running: Dict[str, tuple] = {}   # key -> (worker, host, started)
        self._last_write = 0.0
        self._failing: Optional[str] = None
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
        self._ops.append((_OP_QUEUED, key, time.time() if t is None else t))

    def started(self, key: str, worker: str, host: Optional[str],
                t: Optional[float] = None) -> None:
        """The task was sent to ``worker`` on ``host``."""
        self._ops.append((_OP_STARTED, key, time.time() if t is None else t, worker, host))

    def finished(self, key: str, ok: bool, blob: bytes, t: Optional[float] = None) -> None:
        """The task ended: ``ok`` with ``blob`` its pickled result, or failed with ``blob``
        the pickled exception (see :func:`encode_result`, :func:`encode_error`)."""
        self._ops.append((_OP_FINISHED, key, time.time() if t is None else t, ok, blob))

    def worker_seen(self, name: str, host: Optional[str], t: Optional[float] = None,
                    state: str = "ready", exit_status: Optional[int] = None) -> None:
        """A worker said hello (``ready``), was ``lost`` (with its exit status) or
        ``stopped``. A lost worker's running attempts are marked lost."""
        self._ops.append((_OP_WORKER, name, time.time() if t is None else t, host, state,
                          exit_status))

    # -- committing --------------------------------------------------------------------------
    def flush(self) -> None:
        """Commit every record made so far, now (the journal's thread does this by itself
        at most every 0.2 s; call it before an exit path that may not reach :meth:`close`).
        """
        with self._write_lock:
            self._commit()

    def close(self) -> None:
        """Commit, mark this session ended, stop the journal's thread, release the file."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if os.getpid() != self._pid:   # a forked child: the journal is its parent's
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        with self._write_lock:
            try:
                self._fold()
                self._interrupt_running(time.time())
                self._commit(end=True)
                deadline = time.monotonic() + CLOSE_RETRY_SECONDS
                while self._failing and time.monotonic() < deadline:
                    time.sleep(0.2)   # e.g. a reader holds the file (rollback journal mode)
                    self._commit(end=True)
            finally:
                for conn in (self._reader, self._conn):
                    if conn is not None:
                        try:
                            conn.close()
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
            now = time.time()
            if self._ops or now - self._last_write >= HEARTBEAT_INTERVAL:
                with self._write_lock:
                    if not self.closed:
                        self._commit()

    def _commit(self, end: bool = False) -> None:
        """Fold the queued records into rows and write them in one transaction."""
        self._fold()
        now = time.time()
        try:
            self._write_result_files()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._task_rows:
                    conn.executemany(_UPSERT_TASK, [[k] + r for k, r in self._task_rows.items()])
                if self._attempt_rows:
                    conn.executemany(_INSERT_ATTEMPT, self._attempt_rows)
                if self._worker_rows:
                    conn.executemany(_UPSERT_WORKER, list(self._worker_rows.values()))
                if end:
                    conn.execute("UPDATE sessions SET last_write=?, ended=?, how='closed' "
                                 "WHERE id=?", (now, now, self.session))
                    conn.execute("UPDATE workers SET state='stopped' WHERE session=? AND "
                                 "(state IS NULL OR state='ready')", (self.session,))
                else:
                    conn.execute("UPDATE sessions SET last_write=? WHERE id=?",
                                 (now, self.session))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            if self._failing is None:
                log.warning("cannot write the journal %s (will retry): %s", self.path, exc)
            self._failing = str(exc)
            return
        self._failing = None
        self._last_write = now
        self._task_rows.clear()
        self._attempt_rows.clear()
        self._worker_rows.clear()

    def _fold(self) -> None:
        """Turn queued records into the rows to upsert (last state wins, tries add up).

        A task's row holds its latest attempt; an attempt that ends without a result (its
        worker was lost) becomes a row of ``attempts``.
        """
        ops = self._ops
        tasks = self._task_rows
        running = self._running
        session = self.session
        for _ in range(len(ops)):
            op = ops.popleft()
            kind, key, t = op[0], op[1], op[2]
            if kind == _OP_WORKER:
                self._fold_worker(op)
                continue
            row = tasks.get(key)
            if row is None:
                # state, tries, worker, host, queued, started, ended, session, result, file
                row = tasks[key] = [QUEUED, 0, None, None, None, None, None, session, None,
                                    None]
            if kind == _OP_QUEUED:
                row[0], row[4], row[6], row[8], row[9] = QUEUED, t, None, None, None
            elif kind == _OP_STARTED:
                worker, host = op[3], op[4]
                previous = running.get(key)
                if previous is not None:   # started again without an end: its worker was lost
                    self._lost_attempt(key, previous, t)
                running[key] = (worker, host, t)
                row[0], row[2], row[3], row[5], row[6], row[8], row[9] = (
                    RUNNING, worker, host, t, None, None, None)
                row[1] += 1
                self._touch_worker(worker, host, t)
            else:
                ok, blob = op[3], op[4]
                row[0], row[6], row[8], row[9] = (DONE if ok else FAILED), t, blob, None
                attempt = running.pop(key, None)
                if attempt is not None:
                    self._touch_worker(attempt[0], attempt[1], t)

    def _lost_attempt(self, key: str, attempt: tuple, t: float) -> None:
        worker, host, started = attempt
        self._attempt_rows.append((key, self.session, worker, host, started, t, LOST))

    def _interrupt_running(self, t: float) -> None:
        """The manager stops with tasks in flight: their attempts end ``interrupted``."""
        for key, (worker, host, started) in self._running.items():
            self._attempt_rows.append((key, self.session, worker, host, started, t,
                                       INTERRUPTED))
            row = self._task_rows.get(key)
            if row is None:
                row = self._task_rows[key] = [QUEUED, 0, None, None, None, None, None,
                                              self.session, None, None]
            row[0] = INTERRUPTED
        self._running.clear()
        for row in self._worker_rows.values():
            if row[3] in (None, "ready"):
                row[3] = "stopped"

    def _fold_worker(self, op: tuple) -> None:
        _, name, t, host, state, exit_status = op
        row = self._touch_worker(name, host, t)
        row[3] = state
        if exit_status is not None:
            row[6] = exit_status
        if state in ("lost", "stopped", "dead"):
            for key, attempt in list(self._running.items()):
                if attempt[0] == name:
                    del self._running[key]
                    self._lost_attempt(key, attempt, t)
                    task = self._task_rows.get(key)
                    if task is None:
                        task = self._task_rows[key] = [QUEUED, 0, None, None, None, None,
                                                       None, self.session, None, None]
                    task[0] = QUEUED   # the engine requeues it (or reports it failed)

    def _touch_worker(self, name: str, host: Optional[str], t: float) -> list:
        row = self._worker_rows.get(name)
        if row is None:
            # session, name, host, state, first_seen, last_seen, exit_status
            row = self._worker_rows[name] = [self.session, name, host, None, t, t, None]
        if host:
            row[2] = host
        if t > row[5]:
            row[5] = t
        return row

    def _write_result_files(self) -> None:
        """Move results larger than INLINE_RESULT_MAX into files (before the commit)."""
        for key, row in self._task_rows.items():
            blob = row[8]
            if blob is None or len(blob) <= _schema.INLINE_RESULT_MAX:
                continue
            os.makedirs(self._results_dir, mode=0o700, exist_ok=True)
            name = result_file_name(key)
            final = os.path.join(self._results_dir, name)
            tmp = final + ".tmp"
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            row[8], row[9] = None, name


_UPSERT_TASK = """
INSERT INTO tasks (key, state, tries, worker, host, queued, started, ended, session, result,
                   result_file)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    state = excluded.state,
    tries = tasks.tries + excluded.tries,
    worker = COALESCE(excluded.worker, tasks.worker),
    host = COALESCE(excluded.host, tasks.host),
    queued = COALESCE(excluded.queued, tasks.queued),
    started = COALESCE(excluded.started, tasks.started),
    ended = excluded.ended,
    session = excluded.session,
    result = excluded.result,
    result_file = excluded.result_file
"""

_INSERT_ATTEMPT = """
INSERT INTO attempts (key, session, worker, host, started, ended, outcome)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

_UPSERT_WORKER = """
INSERT INTO workers (session, name, host, state, first_seen, last_seen, exit_status)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session, name) DO UPDATE SET
    host = COALESCE(excluded.host, workers.host),
    state = COALESCE(excluded.state, workers.state),
    last_seen = MAX(excluded.last_seen, workers.last_seen),
    exit_status = COALESCE(excluded.exit_status, workers.exit_status)
"""


def result_file_name(key: str) -> str:
    """File name (in ``run.db-results/``) of a task's large result: keys may hold any text."""
    import hashlib
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + ".pickle"


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
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
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
    return int(session), bool(has_final)


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
    from .._serialize import _FastPickler, _NeedsByValue
    import io
    stream = io.BytesIO()
    try:
        _FastPickler(stream, 5).dump(obj)
        return stream.getvalue()
    except (_NeedsByValue, pickle.PicklingError, AttributeError, TypeError):
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
