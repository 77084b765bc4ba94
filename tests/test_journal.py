"""The run journal on its own (no MPI): store, keys, resume state, status and report.

Crash tests kill a real process that writes a journal; the report test opens the page in a
real headless Chromium when it is installed (``apt-get install -y chromium``).
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mpidispatch.journal import (Journal, JournalError, JournalMismatchError,  # noqa: E402
                                 content_digest, decode, encode_error, encode_result)
from mpidispatch.journal import _schema  # noqa: E402
from mpidispatch.journal._view import Status, WorkerInfo, Session, load_run, load_status  # noqa: E402,E501
from mpidispatch.journal.report import DONE_COLOUR, render, report_main  # noqa: E402
from mpidispatch.journal.status import format_status, status_main  # noqa: E402


def wait_for(condition, timeout=20.0, what="condition"):
    """Poll ``condition()`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail("timed out after %gs waiting for %s" % (timeout, what))


def query(path, sql, args=()):
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def states(path):
    return dict(query(path, "SELECT state, COUNT(*) FROM tasks GROUP BY state"))


@pytest.fixture(params=["process", "thread"])
def db(tmp_path, request, monkeypatch):
    """A journal path; the test runs with the writer in its own process and in a thread."""
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_WRITER", request.param)
    return str(tmp_path / "run.db")


@pytest.fixture
def plain_db(tmp_path):
    return str(tmp_path / "run.db")


# -- keys ---------------------------------------------------------------------------------------
def test_identical_tasks_get_keys_numbered_by_occurrence(db):
    with Journal.open(db, "t") as j:
        keys = [j.task_key(b"same"), j.task_key(b"same"), j.task_key(b"other"),
                j.task_key(b"same")]
    assert len(set(keys)) == 4
    assert keys[1] == keys[0] + "#1" and keys[3] == keys[0] + "#2"
    with Journal.open(db, "t") as j:   # a second run numbers them the same way
        assert [j.task_key(b"same"), j.task_key(b"same")] == keys[:2]


def test_setup_and_buffers_are_part_of_the_key():
    base = content_digest(b"task", b"setup A")
    assert base != content_digest(b"task", b"setup B")
    assert base != content_digest(b"task", None)
    assert content_digest([b"task", bytearray(b"1" * 10)]) != \
        content_digest([b"task", bytearray(b"2" * 10)])
    # parts are length-prefixed: moving bytes between parts changes the key
    assert content_digest([b"ab", b"c"]) != content_digest([b"a", b"bc"])


def test_user_keys(db):
    with Journal.open(db, "t") as j:
        assert j.task_key(b"x", user_key="1") != j.task_key(b"x", user_key=1)
        assert j.task_key(b"x", user_key=("a", 2)) == j.task_key(b"y", user_key=("a", 2))
        with pytest.raises(TypeError, match="task key must be"):
            j.task_key(b"x", user_key=object())


_KEY_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, %r)
    from mpidispatch import _serialize
    from mpidispatch.journal import content_digest

    class Square:                      # pickled by value (cloudpickle): defined in __main__
        def __init__(self, n):
            self.n = n
        def __call__(self):
            return self.n ** 2

    def task(x):
        return x + 1

    data, buffers = _serialize.dumps(Square(3))
    data2, _ = _serialize.dumps((task, (1,), {}))
    print(content_digest([data] + buffers), content_digest(data2))
""")


def test_keys_of_script_classes_are_stable_across_processes(tmp_path):
    script = tmp_path / "keys.py"
    script.write_text(_KEY_SCRIPT % str(ROOT))
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, str(script)], env=env, check=True,
                                capture_output=True, text=True, timeout=60).stdout)
    assert len(outs) == 1, outs


# -- recording and resuming ---------------------------------------------------------------------
def run_tasks(j, n, fail=(), prefix=b"task"):
    keys = [j.task_key(prefix + b"%d" % i) for i in range(n)]
    for i, k in enumerate(keys):
        j.queued(k)
        j.started(k, "worker %d" % (i % 2), "host%d" % (i % 2))
        if i in fail:
            j.finished(k, False, encode_error(ValueError("bad %d" % i)))
        else:
            j.finished(k, True, encode_result({"i": i}))
    return keys


def test_results_come_back_after_close(db):
    with Journal.open(db, "t") as j:
        run_tasks(j, 10, fail={3})
    assert states(db) == {"done": 9, "failed": 1}
    with Journal.open(db, "t") as j:
        keys = [j.task_key(b"task%d" % i) for i in range(10)]
        found = [j.lookup(k) for k in keys]
        assert [f[0] for f in found] == ["done"] * 3 + ["failed"] + ["done"] * 6
        assert decode(found[7][1]) == {"i": 7}
        err = decode(found[3][1])
        assert isinstance(err, ValueError) and str(err) == "bad 3"
        assert j.lookup(j.task_key(b"never submitted")) is None
        assert j.restored == 10
        assert j.recorded(keys[7]) == ("done", {"i": 7})


def test_failed_tasks_run_again_only_with_retry_failed(db):
    with Journal.open(db, "t") as j:
        run_tasks(j, 4, fail={1})
    with Journal.open(db, "t", retry_failed=True) as j:
        keys = [j.task_key(b"task%d" % i) for i in range(4)]
        assert j.lookup(keys[1]) is None
        assert j.lookup(keys[0])[0] == "done"
        j.queued(keys[1])
        j.started(keys[1], "worker 0", "h")
        j.finished(keys[1], True, encode_result("fixed"))
    with Journal.open(db, "t") as j:
        keys = [j.task_key(b"task%d" % i) for i in range(4)]
        assert decode(j.lookup(keys[1])[1]) == "fixed"
    assert query(db, "SELECT tries FROM tasks WHERE key=?", (keys[1],)) == [(2,)]


def test_large_results_live_in_files_beside_the_database(db):
    big = os.urandom(_schema.INLINE_RESULT_MAX + 10)
    with Journal.open(db, "t") as j:
        k = j.task_key(b"big")
        j.started(k, "worker 0", "h")
        j.finished(k, True, encode_result(big))
    files = os.listdir(_schema.results_dir(db))
    assert len(files) == 1 and files[0].endswith(".pickle")
    assert query(db, "SELECT result IS NULL, result_file FROM tasks") == [(1, files[0])]
    with Journal.open(db, "t") as j:
        assert decode(j.lookup(j.task_key(b"big"))[1]) == big


def test_a_lost_worker_ends_its_attempt_and_the_task_runs_again(db):
    with Journal.open(db, "t") as j:
        a, b = j.task_key(b"a"), j.task_key(b"b")
        j.queued(a)
        j.queued(b)
        j.started(a, "worker 0", "h0")
        j.started(b, "worker 1", "h1")
        j.worker_seen("worker 0", "h0", state="lost", exit_status=-9)
        j.flush()
        assert states(db) == {"queued": 1, "running": 1}
        j.started(a, "worker 1", "h1")
        j.finished(a, True, encode_result(1))
        j.started(b, "worker 2", "h2")   # started again with no end: its worker was lost too
        j.finished(b, True, encode_result(2))
    assert query(db, "SELECT key, worker, outcome FROM attempts ORDER BY id") == [
        (a, "worker 0", "lost"), (b, "worker 1", "lost")]
    assert query(db, "SELECT tries FROM tasks ORDER BY key") == [(2,), (2,)]
    assert query(db, "SELECT name, state, exit_status FROM workers WHERE name='worker 0'") == \
        [("worker 0", "lost", -9)]


def test_tasks_in_flight_at_close_are_interrupted(db):
    with Journal.open(db, "t") as j:
        k = j.task_key(b"slow")
        j.started(k, "worker 0", "h")
    assert states(db) == {"interrupted": 1}
    assert query(db, "SELECT outcome FROM attempts") == [("interrupted",)]
    with Journal.open(db, "t") as j:
        assert j.lookup(j.task_key(b"slow")) is None


_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, %r)
    from mpidispatch.journal import Journal, encode_result
    j = Journal.open(sys.argv[1], "t")
    print("WRITER", j._proc.pid if j._proc else 0, flush=True)
    keys = [j.task_key(b"task%%d" %% i) for i in range(200)]
    for k in keys[:100]:
        j.queued(k); j.started(k, "worker 0", "h"); j.finished(k, True, encode_result(k))
    print("FINISHED", flush=True)
    sys.stdin.readline()               # the test waits until those are committed
    for k in keys[100:103]:
        j.started(k, "worker 1", "h")
    print("STARTED", flush=True)
    sys.stdin.readline()               # ... and until these are; then it kills us
    for k in keys[103:]:               # never committed: the kill comes within the interval
        j.started(k, "worker 1", "h"); j.finished(k, True, encode_result(k))
    print("MORE", flush=True)
    time.sleep(60)
""")


def test_sigkill_loses_at_most_the_last_batch(db, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER % str(ROOT))
    env = dict(os.environ, MPIDISPATCH_JOURNAL_COMMIT_INTERVAL="0.2")
    proc = subprocess.Popen([sys.executable, str(script), db], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        writer_pid = int(proc.stdout.readline().split()[1])
        assert proc.stdout.readline().strip() == "FINISHED"
        started = time.monotonic()
        wait_for(lambda: states(db).get("done") == 100, what="100 done committed")
        assert time.monotonic() - started < 5   # committed within a fraction of a second
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "STARTED"
        wait_for(lambda: states(db).get("running") == 3, what="3 running committed")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "MORE"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if writer_pid:   # the writer commits what it received, then ends by itself
        wait_for(lambda: not os.path.exists("/proc/%d" % writer_pid) or
                 open("/proc/%d/stat" % writer_pid).read().split()[2] == "Z",
                 what="the writer process to end")
    counts = states(db)
    assert counts.get("done", 0) >= 100 and counts.get("running", 0) <= 3
    with Journal.open(db, "t") as j:   # the next run: the killed session is closed out
        keys = [j.task_key(b"task%d" % i) for i in range(200)]
        recorded = [k for k in keys if j.lookup(k)]
        assert keys[:100] == recorded[:100]
        assert all(j.lookup(k) is None for k in keys[100:103])
    (how,) = query(db, "SELECT how FROM sessions WHERE id=1")[0]
    assert how == "killed"
    if counts.get("running") == 3:
        assert query(db, "SELECT COUNT(*) FROM attempts WHERE outcome='interrupted'") == [(3,)]


def test_the_writer_process_ends_with_the_journal(plain_db, monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_WRITER", "process")
    j = Journal.open(plain_db, "t")
    proc = j._proc
    assert proc is not None and proc.poll() is None
    run_tasks(j, 3)
    j.close()
    assert proc.poll() is not None and j._proc is None
    assert states(plain_db) == {"done": 3}


def test_a_dead_writer_process_is_replaced_by_writing_from_the_manager(plain_db, caplog,
                                                                     monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_WRITER", "process")
    with Journal.open(plain_db, "t") as j:
        run_tasks(j, 3)
        j.flush()
        j._proc.kill()
        j._proc.wait()
        run_tasks(j, 4, prefix=b"after")
        j.flush()
        assert j._writer is not None and j._proc is None
        assert states(plain_db) == {"done": 7}
    assert "writer process stopped" in caplog.text
    assert query(plain_db, "SELECT how FROM sessions") == [("closed",)]


# -- refusing what would give wrong results -----------------------------------------------------
def test_journal_of_another_script_is_refused(db):
    Journal.open(db, "first.py").close()
    with pytest.raises(JournalMismatchError, match="belongs to another script"):
        Journal.open(db, "second.py")
    Journal.open(db, "first.py").close()   # the refusal left the journal as it was


def test_journal_of_another_format_is_refused(db):
    Journal.open(db, "t").close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value='999' WHERE name='format'")
    conn.commit()
    conn.close()
    with pytest.raises(JournalMismatchError, match="format 999"):
        Journal.open(db, "t")


def test_files_that_are_not_journals_are_refused(tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(str(other))
    conn.execute("CREATE TABLE x (y)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not an mpidispatch journal"):
        Journal.open(str(other), "t")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError, match="not a usable journal"):
        Journal.open(str(garbage), "t")
    with pytest.raises(JournalError, match="no directory"):
        Journal.open(str(tmp_path / "missing" / "run.db"), "t")


def test_a_journal_in_use_is_refused(db, monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_LOCK_WAIT", "0.3")
    with Journal.open(db, "t"):
        with pytest.raises(JournalError, match="in use by another manager"):
            Journal.open(db, "t")
    Journal.open(db, "t").close()


def test_a_journal_others_can_write_is_refused(db):
    Journal.open(db, "t").close()
    os.chmod(db, 0o666)
    with pytest.raises(JournalError, match="writable by everyone"):
        Journal.open(db, "t")


def test_wal_locally_rollback_journal_on_network_file_systems(monkeypatch):
    mounts = {"/": "ext4", "/scratch": "lustre", "/home": "nfs4", "/tmp": "tmpfs"}
    monkeypatch.delenv("MPIDISPATCH_JOURNAL_WAL", raising=False)
    assert _schema.sqlite_journal_mode("/scratch/me/run.db", mounts) == "DELETE"
    assert _schema.sqlite_journal_mode("/home/me/run.db", mounts) == "DELETE"
    assert _schema.sqlite_journal_mode("/tmp/run.db", mounts) == "WAL"
    assert _schema.sqlite_journal_mode("/scratchy/run.db", mounts) == "WAL"
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_WAL", "1")
    assert _schema.sqlite_journal_mode("/scratch/me/run.db", mounts) == "WAL"


def test_readers_never_block_the_writer(db, monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_WAL", "1")
    with Journal.open(db, "t") as j:
        run_tasks(j, 5)
        j.flush()
        reader = _schema.connect_reader(db)
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM tasks").fetchone() == (5,)
        run_tasks(j, 5, prefix=b"more")
        started = time.monotonic()
        j.flush()   # commits while the reader holds its read transaction
        assert time.monotonic() - started < 2
        assert j._failing is None
        assert reader.execute("SELECT COUNT(*) FROM tasks").fetchone() == (5,)  # snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM tasks").fetchone() == (10,)
        reader.close()


def test_rollback_mode_readers_delay_commits_but_never_the_manager(db, monkeypatch):
    """On a network file system (no WAL) a reader holds off a commit; the records are kept
    and committed once it is done, and recording never waits."""
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_WAL", "0")
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_COMMIT_INTERVAL", "0.05")
    with Journal.open(db, "t") as j:
        reader = _schema.connect_reader(db)
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM tasks").fetchone()   # holds a shared lock
        started = time.monotonic()
        run_tasks(j, 50)
        assert time.monotonic() - started < 0.5
        time_held = time.monotonic() + 3 * 0.05 + 2.5   # a few commit intervals, a busy timeout
        wait_for(lambda: time.monotonic() > time_held, timeout=10, what="commits held off")
        reader.execute("COMMIT")
        reader.close()
        wait_for(lambda: states(db).get("done") == 50, timeout=15, what="the retried commit")


def test_a_closed_journal_is_left_readable_without_its_wal_files(db, monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_WAL", "1")
    with Journal.open(db, "t") as j:
        run_tasks(j, 2)
        j.flush()
        assert query(db, "PRAGMA journal_mode") == [("wal",)]
    assert query(db, "PRAGMA journal_mode") == [("delete",)]
    assert not os.path.exists(db + "-wal") and not os.path.exists(db + "-shm")


def as_nobody(code):
    """Run Python ``code`` as user nobody with the system's python3 (ours may live where
    nobody cannot read, e.g. under /root)."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or "python3"
    prologue = "import os, sys; os.setgid(%d); os.setuid(%d); sys.path.insert(0, %r); " % (
        nobody.pw_gid, nobody.pw_uid, str(ROOT))
    return subprocess.run([python, "-c", prologue + code], capture_output=True, text=True,
                          timeout=60, cwd="/")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to read as another user")
def test_another_user_may_read_a_journal_it_cannot_write():
    probe = as_nobody("import mpidispatch.journal._view")
    if probe.returncode != 0:
        pytest.skip("user nobody cannot import mpidispatch with the system python3: %s"
                    % probe.stderr.strip().splitlines()[-1:])
    import tempfile
    shared = tempfile.mkdtemp(prefix="journal-readable-", dir="/tmp")   # pytest's is private
    try:
        os.chmod(shared, 0o755)
        db = os.path.join(shared, "run.db")
        show = ("from mpidispatch.journal._view import load_status; "
                "print(load_status(%r).counts)" % db)
        with Journal.open(db, "t") as j:
            run_tasks(j, 3)
            j.flush()
            live = as_nobody(show)
            assert live.stdout.strip() == "{'done': 3}", live.stderr[-2000:]
        ended = as_nobody(show)
        assert ended.stdout.strip() == "{'done': 3}", ended.stderr[-2000:]
    finally:
        shutil.rmtree(shared)


def test_the_journal_thread_commits_by_itself(db, monkeypatch):
    monkeypatch.setenv("MPIDISPATCH_JOURNAL_COMMIT_INTERVAL", "0.05")
    with Journal.open(db, "t") as j:
        run_tasks(j, 3)
        wait_for(lambda: states(db).get("done") == 3, timeout=5, what="a commit")


# -- status ---------------------------------------------------------------------------------------
def make_status(**changes):
    now = time.time()
    session = Session(2, 4242, "node7", ["farm.py"], now - 300, now - 0.5, None, None)
    fields = dict(path="run.db", run_id="farm.py",
                  sessions=[Session(1, 1, "node1", [], now - 900, now - 600, now - 600,
                                    "killed"), session],
                  counts={"done": 400, "running": 4, "queued": 596, "failed": 2},
                  done_earlier=250, finished_recently=120, finished_in_session=150,
                  window=60.0, reference=now,
                  workers=[WorkerInfo(2, "worker 1", "node7", "ready", now - 290, now - 1,
                                      None, running=1, tasks_done=80),
                           WorkerInfo(2, "worker 2", "node8", "lost", now - 290, now - 100,
                                      -9)])
    fields.update(changes)
    return Status(**fields)


def test_status_text_has_counts_rate_eta_and_workers():
    text = format_status(make_status())
    assert "done 400 (250 from earlier sessions), running 4, queued 596, failed 2" in text
    assert "resumed 1 time" in text
    assert "2.0 tasks/s over the last 60 s" in text
    assert "ETA 5 min 00 s" in text            # 600 tasks left at 2 tasks/s
    assert "manager pid 4242 on node7" in text
    assert "worker 1" in text and "busy" in text and "node8" in text
    assert "lost (exit -9)" in text


def test_status_of_a_manager_that_stopped_writing():
    st = make_status()
    st.sessions[-1].last_write -= 3600
    text = format_status(st)
    assert "not heard from for" in text and "resume" in text and "ETA" not in text
    assert "150 tasks ended" in text


def test_status_reads_a_live_journal(plain_db, capsys):
    with Journal.open(plain_db, "farm.py") as j:
        run_tasks(j, 6, fail={2})
        k = j.task_key(b"running")
        j.queued(k)
        j.started(k, "worker 0", "host0")
        j.flush()
        st = load_status(plain_db)
        assert st.counts == {"done": 5, "failed": 1, "running": 1}
        assert st.alive and st.finished_recently == 6
        assert {w.name: w.running for w in st.workers} == {"worker 0": 1, "worker 1": 0}
        assert status_main([plain_db]) == 0
        assert "running 1" in capsys.readouterr().out
    assert status_main([plain_db, "--watch", "0.1"]) == 0     # an ended run: prints once, returns
    assert "ended" in capsys.readouterr().out


def test_status_of_a_missing_or_foreign_file(tmp_path, capsys):
    assert status_main([str(tmp_path / "nope.db")]) == 2
    assert "no journal" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hello")
    assert status_main([str(tmp_path / "x.txt")]) == 2


# -- report ---------------------------------------------------------------------------------------
def make_run(db, n=48, workers=3):
    """A made-up run of ``n`` tasks: a failure, a lost worker whose task ran again, and a
    manager stopped half-way and resumed with ``workers - 1`` workers. Session times are
    set to match the made-up task times."""
    import random
    rnd = random.Random(7)
    t0 = time.time() - 3600
    stop = None

    def farm(j, start, names, host, stop_at=None):
        free = {w: start + 0.2 * i for i, w in enumerate(names)}
        for w in names:
            j.worker_seen(w, host, start, "ready")
        for i in range(n):
            k = j.task_key(b"t%d" % i)
            if j.lookup(k) is not None:
                continue
            if not free:
                break
            w = min(free, key=free.get)
            begin, seconds = free[w], rnd.lognormvariate(0.3, 0.5)
            if stop_at is not None and begin + seconds > stop_at:
                j.started(k, w, host, begin)     # in flight when the manager stopped
                del free[w]
                continue
            j.started(k, w, host, begin)
            if w == names[-1] and stop_at is not None and begin > start + 8:
                j.worker_seen(w, host, begin + seconds / 2, "lost", -9)
                del free[w]
                w = min(free, key=free.get)
                begin = max(free[w], begin + seconds / 2)
                j.started(k, w, host, begin)
            j.finished(k, i % 17 != 5, encode_result(i) if i % 17 != 5 else
                       encode_error(KeyError(i)), begin + seconds)
            free[w] = begin + seconds + 0.05
        return max(free.values(), default=start)

    j = Journal.open(db, "farm.py")
    stop = t0 + 16
    farm(j, t0, ["worker %d" % w for w in range(workers)], "node1", stop_at=stop)
    j.close()
    j = Journal.open(db, "farm.py")
    end = farm(j, stop + 3, ["worker %d" % w for w in range(workers - 1)], "node2")
    j.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE sessions SET started=?, last_write=?, ended=? WHERE id=1",
                 (t0 - 0.5, stop, stop))
    conn.execute("UPDATE attempts SET ended=? WHERE outcome='interrupted'", (stop,))
    conn.execute("UPDATE sessions SET started=?, last_write=?, ended=? WHERE id=2",
                 (stop + 2.5, end + 0.2, end + 0.2))
    conn.commit()
    conn.close()


def test_report_has_every_section(plain_db, tmp_path):
    make_run(plain_db)
    run = load_run(plain_db)
    assert len(run.sessions) == 2
    outcomes = sorted(a.outcome for a in run.attempts)
    assert outcomes.count("lost") == 1 and outcomes.count("interrupted") >= 1
    assert outcomes.count("failed") >= 1
    assert any(a.tries == 2 for a in run.attempts)
    page = render(run)
    try:
        import matplotlib  # noqa: F401
        plots = ("Timeline", "Utilisation", "Task durations")
    except ImportError:   # tables only, and a note saying how to get the plots
        plots = ()
        assert "pip install 'mpidispatch[report]'" in page
    for heading in ("Summary", "Slowest tasks", "Lost workers", "Sessions") + plots:
        assert "<h2>%s</h2>" % heading in page
    assert "killed by signal 9 (SIGKILL)" in page
    assert page.count("data:image/png;base64,") == len(plots)
    assert "http" not in page.replace("http-equiv", "")   # self-contained: nothing fetched
    tables = render(run, plots=False)
    assert "data:image" not in tables and "Slowest tasks" in tables
    out = tmp_path / "report.html"
    assert report_main([plain_db, "-o", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None,
                    reason="needs Chromium: apt-get install -y chromium (Debian package)")
def test_report_timeline_is_drawn_in_a_real_browser(plain_db, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image
    make_run(plain_db, n=60)
    page = tmp_path / "report.html"
    assert report_main([plain_db, "-o", str(page)]) == 0
    shot = tmp_path / "shot.png"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--user-data-dir=%s" % (tmp_path / "profile"), "--window-size=1200,1100",
           "--screenshot=%s" % shot, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                          start_new_session=True)
    assert shot.exists(), proc.stderr[-2000:]
    pixels = matplotlib.image.imread(str(shot))[..., :3]
    want = [int(DONE_COLOUR[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    close = (abs(pixels - want) < 0.03).all(axis=-1)
    rows = close.any(axis=1).nonzero()[0]
    # The timeline's done bars: many pixels of their colour, in several rows (one per worker)
    assert close.sum() > 2000, close.sum()
    assert rows.max() - rows.min() > 60
    if os.environ.get("MPIDISPATCH_REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["MPIDISPATCH_REPORT_SCREENSHOT"])
