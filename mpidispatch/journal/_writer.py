"""The journal's writing side: folds the manager's records into rows and commits them.

The manager's loop only appends records (small tuples) to a queue. A :class:`Writer` turns a
batch of them into one row per task (the last state wins, tries add up; an attempt that
ended without a result becomes a row of ``attempts``) and writes them in one transaction.

It runs in a thread of the manager, or (``MPIDISPATCH_JOURNAL_WRITER=process``) in a process
of its own (:func:`main`, started by :class:`~._store.Journal`), so that its work never holds
the manager's interpreter lock. The process reads framed batches on stdin and answers flush
requests on stdout; it
ignores SIGINT/SIGTERM/SIGHUP (its manager decides when to stop) and ends when its stdin
closes, after committing what it received: a manager killed with SIGKILL loses only the
records it had not sent yet (at most one commit interval).
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import sqlite3
import struct
import sys
import time
from typing import Any, BinaryIO, Dict, Iterable, List, Optional

from . import _schema

log = logging.getLogger("mpidispatch.journal")

# Task states.
QUEUED, RUNNING, DONE, FAILED, INTERRUPTED = "queued", "running", "done", "failed", "interrupted"
# Attempt outcome besides the task states.
LOST = "lost"
# Record kinds (the first field of each record tuple).
OP_QUEUED, OP_STARTED, OP_FINISHED, OP_WORKER = range(4)

_FRAME = struct.Struct("<Q")


class Writer:
    """Folds records and commits rows for one session of a journal (one thread at a time)."""

    def __init__(self, path: str, session: int, conn: Optional[sqlite3.Connection] = None
                 ) -> None:
        self.path = path
        self.session = session
        self.conn = conn if conn is not None else _schema.connect_writer(path)
        self.failing: Optional[str] = None
        self.last_write = 0.0
        self._results_dir = _schema.results_dir(path)
        # Folded state not yet committed (kept across a failed commit, retried next time).
        self._task_rows: Dict[str, list] = {}
        self._attempt_rows: List[tuple] = []
        self._worker_rows: Dict[str, list] = {}
        self._running: Dict[str, tuple] = {}   # key -> (worker, host, started)

    def close(self, t: float) -> bool:
        """Tasks still running are interrupted; commit and mark the session ended."""
        self.interrupt_running(t)
        ok = self.commit(end=True)
        deadline = time.monotonic() + CLOSE_RETRY_SECONDS
        while not ok and time.monotonic() < deadline:
            time.sleep(0.2)   # e.g. a reader holds the file (rollback journal mode)
            ok = self.commit(end=True)
        try:
            # Leave a closed journal in rollback mode: a reader who may not write beside it
            # (another user running `status`) cannot open a WAL database without its -shm.
            self.conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass   # a reader has it open right now: it stays in WAL mode, which is fine
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
        return ok

    def commit(self, end: bool = False) -> bool:
        """Write the folded rows in one transaction; True if it worked (else they are kept
        and written with the next commit)."""
        now = time.time()
        try:
            self._write_result_files()
            conn = self.conn
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
            if self.failing is None:
                log.warning("cannot write the journal %s (will retry): %s", self.path, exc)
            self.failing = str(exc)
            return False
        self.failing = None
        self.last_write = now
        self._task_rows.clear()
        self._attempt_rows.clear()
        self._worker_rows.clear()
        return True

    def fold(self, ops: Iterable[tuple]) -> None:
        """Turn queued records into the rows to upsert (last state wins, tries add up).

        A task's row holds its latest attempt; an attempt that ends without a result (its
        worker was lost) becomes a row of ``attempts``.
        """
        tasks = self._task_rows
        running = self._running
        session = self.session
        for op in ops:
            kind, key, t = op[0], op[1], op[2]
            if kind == OP_WORKER:
                self._fold_worker(op)
                continue
            row = tasks.get(key)
            if row is None:
                # state, tries, worker, host, queued, started, ended, session, result, file
                row = tasks[key] = [QUEUED, 0, None, None, None, None, None, session, None,
                                    None]
            if kind == OP_QUEUED:
                row[0], row[4], row[6], row[8], row[9] = QUEUED, t, None, None, None
            elif kind == OP_STARTED:
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

    def interrupt_running(self, t: float) -> None:
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




#: Seconds :meth:`Writer.close` keeps retrying a commit that failed (a busy file).
CLOSE_RETRY_SECONDS = 30.0


def result_file_name(key: str) -> str:
    """File name (in ``run.db-results/``) of a task's large result: keys may hold any text."""
    import hashlib
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + ".pickle"


# -- the writer process ---------------------------------------------------------------------------
def send_frame(fd: int, obj: Any) -> None:
    """Write one framed pickle to a pipe (all of it)."""
    data = pickle.dumps(obj, 5)
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_frame(stream: BinaryIO) -> Any:
    """Read one framed pickle; None at end of file."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def main() -> None:
    """The writer process: ``python -c ... PATH SESSION`` with frames on stdin.

    Frames: ``("ops", [record, ...])`` fold and commit; ``("beat",)`` commit (a heartbeat);
    ``("flush", seq)`` commit and answer ``(seq, error)``; ``("close", seq, t)`` interrupt
    running tasks, end the session, answer, exit. End of stdin: commit and exit.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(format="mpidispatch journal writer: %(message)s")
    path, session = sys.argv[1], int(sys.argv[2])
    writer = Writer(path, session)
    stdin = sys.stdin.buffer
    out = sys.stdout.fileno()
    while True:
        frame = read_frame(stdin)
        if frame is None:                  # the manager is gone: keep what it sent
            writer.commit()
            return
        kind = frame[0]
        if kind == "ops":
            writer.fold(frame[1])
            writer.commit()
        elif kind == "beat":
            writer.commit()
        elif kind == "flush":
            writer.commit()
            send_frame(out, (frame[1], writer.failing))
        elif kind == "close":
            ok = writer.close(frame[2])
            send_frame(out, (frame[1], None if ok else writer.failing))
            return


if __name__ == "__main__":
    main()
