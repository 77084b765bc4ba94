"""Read a journal without disturbing the manager writing it: what ``status`` and ``report`` see.

Every read opens the file read-only (``mode=ro``) and reads in one transaction, so that the
figures are consistent with each other; in WAL mode a reader never blocks the writer.
"""
from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import _schema
from ._store import HEARTBEAT_INTERVAL, JournalError

#: A manager not heard from for this long (seconds) is taken to be gone.
SILENT_AFTER = 3 * HEARTBEAT_INTERVAL
#: Window of the rate shown by ``status`` (seconds).
RATE_WINDOW = 60.0


@dataclass
class Session:
    """One manager that opened the journal (a first run, or a resume)."""

    id: int
    pid: int
    host: str
    argv: List[str]
    started: float
    last_write: float
    ended: Optional[float]
    how: Optional[str]      # "closed", "killed", or None while it runs


@dataclass
class WorkerInfo:
    session: int
    name: str
    host: Optional[str]
    state: Optional[str]
    first_seen: Optional[float]
    last_seen: Optional[float]
    exit_status: Optional[int]
    running: int = 0
    tasks_done: int = 0


@dataclass
class Attempt:
    """One run of a task on a worker (a bar of the report's timeline)."""

    key: str
    session: int
    worker: Optional[str]
    host: Optional[str]
    started: float
    ended: Optional[float]
    outcome: str            # done, failed, lost, interrupted, running
    tries: int = 1


@dataclass
class Status:
    """What ``mpidispatch status`` prints."""

    path: str
    run_id: str
    sessions: List[Session]
    counts: Dict[str, int]
    done_earlier: int          # done in an earlier session (restored on resume)
    finished_recently: int     # tasks ended within the rate window
    finished_in_session: int   # tasks ended in the latest session
    window: float              # seconds the rate is over
    reference: float           # "now" on the manager's clock
    workers: List[WorkerInfo] = field(default_factory=list)

    @property
    def session(self) -> Session:
        return self.sessions[-1]

    @property
    def alive(self) -> bool:
        s = self.session
        return s.ended is None and time.time() - s.last_write < SILENT_AFTER

    @property
    def rate(self) -> float:
        return self.finished_recently / self.window if self.window > 0 else 0.0

    @property
    def remaining(self) -> int:
        c = self.counts
        return c.get("queued", 0) + c.get("running", 0) + c.get("interrupted", 0)

    @property
    def eta(self) -> Optional[float]:
        """Seconds until the tasks known now are done, at the recent rate (None: unknown)."""
        if not self.alive or self.rate <= 0:
            return None
        return self.remaining / self.rate


def connect(path: str) -> sqlite3.Connection:
    """A read-only connection to a journal, checked to be one.

    Raises:
        JournalError: no such file, or not a journal.
    """
    try:
        conn = _schema.connect_reader(path)
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except FileNotFoundError as exc:
        raise JournalError("no journal %s: %s" % (path, exc)) from exc
    except sqlite3.DatabaseError as exc:
        raise JournalError("%s cannot be read as a journal: %s" % (path, exc)) from exc
    if app_id != _schema.APPLICATION_ID:
        conn.close()
        raise JournalError("%s is not an mpidispatch journal (or it is still empty)" % path)
    return conn


def _sessions(conn: sqlite3.Connection) -> List[Session]:
    rows = conn.execute("SELECT id, pid, host, argv, started, COALESCE(last_write, started), "
                        "ended, how FROM sessions ORDER BY id").fetchall()
    out = []
    for sid, pid, host, argv, started, last, ended, how in rows:
        try:
            args = json.loads(argv or "[]")
        except ValueError:
            args = []
        out.append(Session(sid, pid, host, args, started, last, ended, how))
    return out


def _workers(conn: sqlite3.Connection, where: str = "", args: tuple = ()) -> List[WorkerInfo]:
    rows = conn.execute("SELECT session, name, host, state, first_seen, last_seen, exit_status "
                        "FROM workers %s" % where, args).fetchall()
    rows.sort(key=lambda r: (r[0], _natural(r[1])))
    return [WorkerInfo(*row) for row in rows]


def _natural(name: str) -> tuple:
    """Sort key putting 'worker 2' before 'worker 10'."""
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", name or ""))


def load_status(path: str) -> Status:
    """The figures ``status`` shows, read in one transaction."""
    conn = connect(path)
    try:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT name, value FROM meta"))
        sessions = _sessions(conn)
        if not sessions:
            raise JournalError("%s has no session yet" % path)
        current = sessions[-1]
        counts = dict(conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"))
        earlier = conn.execute("SELECT COUNT(*) FROM tasks WHERE state='done' AND session<?",
                               (current.id,)).fetchone()[0]
        reference = time.time() if current.ended is None else current.ended
        window = min(RATE_WINDOW, max(reference - current.started, 1.0))
        recent = conn.execute("SELECT COUNT(*) FROM tasks WHERE ended>=? AND session=?",
                              (reference - window, current.id)).fetchone()[0]
        in_session = conn.execute("SELECT COUNT(*) FROM tasks WHERE ended IS NOT NULL AND "
                                  "session=?", (current.id,)).fetchone()[0]
        workers = _workers(conn, "WHERE session=?", (current.id,))
        busy = dict(conn.execute("SELECT worker, COUNT(*) FROM tasks WHERE state='running' "
                                 "AND session=? GROUP BY worker", (current.id,)))
        done = dict(conn.execute("SELECT worker, COUNT(*) FROM tasks WHERE state IN "
                                 "('done', 'failed') AND session=? GROUP BY worker",
                                 (current.id,)))
        conn.execute("COMMIT")
    finally:
        conn.close()
    for w in workers:
        w.running = busy.get(w.name, 0)
        w.tasks_done = done.get(w.name, 0)
    return Status(path, meta.get("run_id", "?"), sessions, counts, earlier, recent, in_session,
                  window, reference, workers)


@dataclass
class RunRecord:
    """Everything the report draws."""

    path: str
    run_id: str
    sessions: List[Session]
    attempts: List[Attempt]
    workers: List[WorkerInfo]
    counts: Dict[str, int]


def load_run(path: str) -> RunRecord:
    """Every attempt, worker and session of a journal (results are not read)."""
    conn = connect(path)
    try:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT name, value FROM meta"))
        sessions = _sessions(conn)
        counts = dict(conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"))
        attempts = [Attempt(key, session, worker, host, started, ended, outcome)
                    for key, session, worker, host, started, ended, outcome in conn.execute(
                        "SELECT key, session, worker, host, started, ended, outcome "
                        "FROM attempts WHERE started IS NOT NULL")]
        for key, session, worker, host, started, ended, state, tries in conn.execute(
                "SELECT key, session, worker, host, started, ended, state, tries FROM tasks "
                "WHERE started IS NOT NULL AND state IN ('running', 'done', 'failed')"):
            attempts.append(Attempt(key, session, worker, host, started, ended, state, tries))
        workers = _workers(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    attempts.sort(key=lambda a: a.started)
    return RunRecord(path, meta.get("run_id", "?"), sessions, attempts, workers, counts)
