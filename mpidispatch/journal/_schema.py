"""The journal's file format: SQLite tables, format version, and how connections are opened.

One SQLite database per run (``run.db``), plus, beside it, ``run.db-results/`` for results
larger than :data:`INLINE_RESULT_MAX` and ``run.db.lock`` (held by the manager writing it).

Tables (format :data:`FORMAT`), kept to one row write per task in the common case:

========  =======================================================================
meta      name/value pairs: ``format``, ``run_id``, ``created``, ``mpidispatch``
sessions  one row per manager that opened the journal: pid, host, argv, started,
          last_write (a heartbeat), ended, how (``closed`` or ``killed``)
tasks     one row per task key: state (queued, running, done, failed,
          interrupted), tries, and its latest attempt: worker, host, queued/started/
          ended times, the session that last wrote it, the pickled result or error
          (``result``) or the name of the file holding it (``result_file``)
attempts  the earlier attempts of tasks that ran more than once: worker, host,
          started, ended, outcome (``lost`` with its worker, or ``interrupted``
          when the manager stopped)
workers   one row per worker and session: host, state, first/last contact, exit
          status
========  =======================================================================

Times are Unix times (``time.time()``) of the manager's host, so that a reader elsewhere can
compare them with its own clock.
"""
from __future__ import annotations

import os
import sqlite3
from typing import Dict, Optional

#: Version of the table layout; a journal of another format is refused, never misread.
FORMAT = 1
#: ``PRAGMA application_id`` of a journal ("mpdj"): tells it from other SQLite files.
APPLICATION_ID = 0x6D70646A
#: Results and errors larger than this (bytes) go to a file beside the database.
INLINE_RESULT_MAX = 1 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, pid INTEGER, host TEXT, argv TEXT,
    started REAL NOT NULL, last_write REAL, ended REAL, how TEXT);
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, tries INTEGER NOT NULL DEFAULT 0,
    worker TEXT, host TEXT, queued REAL, started REAL, ended REAL, session INTEGER,
    result BLOB, result_file TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, session INTEGER, worker TEXT, host TEXT,
    started REAL, ended REAL, outcome TEXT);
CREATE TABLE IF NOT EXISTS workers (
    session INTEGER NOT NULL, name TEXT NOT NULL, host TEXT, state TEXT,
    first_seen REAL, last_seen REAL, exit_status INTEGER, PRIMARY KEY (session, name));
"""

#: File systems on which SQLite's WAL mode must not be used: its shared-memory index does
#: not work between hosts, and a reader on a login node may look at the file.
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs",
                       "ceph", "glusterfs", "9p", "afs", "panfs", "pvfs2", "orangefs",
                       "wekafs", "fuse.sshfs", "fuse.glusterfs", "fuse.ceph", "virtiofs")


def results_dir(path: str) -> str:
    """Directory beside the database that holds the large results."""
    return path + "-results"


def lock_path(path: str) -> str:
    return path + ".lock"


def _mounts() -> Dict[str, str]:
    """Mount point -> file system type, from /proc/self/mounts (empty elsewhere)."""
    found: Dict[str, str] = {}
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    found[fields[1].replace("\\040", " ")] = fields[2]
    except OSError:
        pass
    return found


def filesystem_type(path: str, mounts: Optional[Dict[str, str]] = None) -> str:
    """Type of the file system holding ``path`` ('' when unknown)."""
    mounts = _mounts() if mounts is None else mounts
    here = os.path.realpath(os.path.dirname(os.path.abspath(path)) or ".")
    best = ""
    for point in mounts:
        inside = here == point or here.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best = point
    return mounts.get(best, "")


def sqlite_journal_mode(path: str, mounts: Optional[Dict[str, str]] = None) -> str:
    """``WAL`` on a local file system, ``DELETE`` (rollback journal) on a network one.

    ``MPIDISPATCH_JOURNAL_WAL=1`` or ``=0`` overrides the choice.
    """
    forced = os.environ.get("MPIDISPATCH_JOURNAL_WAL", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return "WAL"
    if forced in ("0", "false", "no", "off"):
        return "DELETE"
    return "DELETE" if filesystem_type(path, mounts) in NETWORK_FILESYSTEMS else "WAL"


def connect_writer(path: str) -> sqlite3.Connection:
    """The manager's connection: creates the file, WAL (or rollback) mode, full sync."""
    # The timeout bounds a commit's wait for a reader in rollback-journal mode; the journal's
    # thread retries a commit that timed out at its next turn.
    conn = sqlite3.connect(path, timeout=2.0, isolation_level=None, check_same_thread=False)
    mode = sqlite_journal_mode(path)
    conn.execute("PRAGMA journal_mode=%s" % mode)
    # Commits are batched (a few per second), so syncing each one costs little and a node
    # crash, not only a process crash, loses at most the last batch.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def connect_reader(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``) that never takes a write lock.

    Raises:
        FileNotFoundError: there is no such file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError("no journal %s" % path)
    uri = "file:%s?mode=ro" % _quote(os.path.abspath(path))
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        # A WAL journal that no manager has open, read by someone who may not create its
        # -shm file: with no -wal file beside it, nothing is being written, so the file can
        # be read as it is.
        if "readonly" not in str(exc) or os.path.exists(path + "-wal"):
            raise
        conn.close()
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=timeout,
                               isolation_level=None, check_same_thread=False)
    return conn


def _quote(path: str) -> str:
    from urllib.parse import quote
    return quote(path, safe="/")
