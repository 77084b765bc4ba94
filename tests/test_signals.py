"""Signals and orphans: a signalled run stops cleanly and leaves no process behind.

Every process of a run carries ``MPIDISPATCH_TESTTAG=<uuid>`` in its environment (inherited
by mpiexec, its daemons, the ranks, spawned workers and whatever tasks start), so "nothing
left" is counted exactly, whatever the process tree became. Each test kills what is left of
its own run at the end, pass or fail.
"""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import BACKEND, SCENARIOS, _environment
from mpidispatch import _launcher, _mpiexec, _signals
from mpidispatch.errors import Terminated

pytestmark = pytest.mark.fault
SCENARIO = str(SCENARIOS / "signals_loop.py")
TAG = "MPIDISPATCH_TESTTAG"


def tagged(tag):
    """Live processes whose environment holds TAG=tag: [(pid, command line)] (found by the
    launcher's own sweep, :func:`mpidispatch._launcher.tagged_processes`)."""
    found = []
    for pid in _launcher.tagged_processes(TAG, tag):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                found.append((pid, f.read().replace(b"\0", b" ").decode()[:150]))
        except OSError:
            continue
    return found


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail("not within %gs: %s" % (timeout, what))


class TaggedRun:
    """A run of the scenario in a new session, its processes tagged."""

    def __init__(self, cmd, tmp_path, env=None):
        self.tag = uuid.uuid4().hex
        self.marks = tmp_path / "marks"
        extra = {TAG: self.tag}
        extra.update(env or {})
        self.out = open(tmp_path / "stdout", "w+")
        self.err = open(tmp_path / "stderr", "w+")
        self.proc = subprocess.Popen(cmd, cwd=str(tmp_path),
                                     env=_environment(extra, cmd, tmp_path),
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.err, start_new_session=True)

    def lines(self, prefix):
        try:
            text = self.marks.read_text()
        except OSError:
            return []
        return [line[len(prefix):].strip() for line in text.splitlines()
                if line.startswith(prefix)]

    def wait_running(self, count, timeout=60):
        wait_for(lambda: len(self.lines("RUNNING")) >= count, timeout,
                 "%d tasks running; marks: %s; %s" % (count, self.lines(""), self.stderr()))

    def leftovers(self, within):
        """The run's processes still alive after ``within`` seconds (polling: [] early)."""
        deadline = time.monotonic() + within
        while True:
            left = tagged(self.tag)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("the run did not end within %gs after the signal" % timeout)

    def stderr(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read()[-3000:]

    def cleanup(self):
        for pid, _ in tagged(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


@pytest.fixture
def tagged_run(tmp_path):
    runs = []

    def start(cmd, env=None):
        run = TaggedRun(cmd, tmp_path, env)
        runs.append(run)
        return run
    yield start
    for run in runs:
        run.cleanup()


def launcher_cmd(nworkers, mode=""):
    return [sys.executable, "-m", "mpidispatch", "-n", str(nworkers + 1), SCENARIO,
            "marks", str(nworkers)] + ([mode] if mode else [])


# -- point 1: signalling the launcher leaves nothing running ----------------------------------
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGHUP", "SIGKILL"])
def test_signalled_launcher_leaves_nothing(tagged_run, signame):
    run = tagged_run(launcher_cmd(2))
    run.wait_running(2)
    assert len(tagged(run.tag)) >= 4            # launcher, mpiexec, 3 ranks (and proxies)
    signum = getattr(signal, signame)
    started = time.monotonic()
    os.kill(run.proc.pid, signum)
    code = run.wait(30)
    left = run.leftovers(within=15)
    assert left == [], "%s left %d processes: %s" % (signame, len(left), left)
    seconds = time.monotonic() - started
    if signum != signal.SIGKILL:
        assert code == 128 + signum, run.stderr()
        assert run.lines("CAUGHT") == ["KeyboardInterrupt" if signum == signal.SIGINT
                                       else "Terminated"], run.lines("")
        assert run.lines("FINALLY") == [""]
        assert seconds < 10, seconds


def test_killed_mpiexec_leaves_no_orphaned_manager(tagged_run):
    """The manager notices that its launcher is gone (issue 9: an orphaned manager spun)."""
    cmd = _mpiexec.command(3, [sys.executable, SCENARIO, "marks", "2", "idle"],
                           oversubscribe=True)
    run = tagged_run(cmd)
    wait_for(lambda: run.lines("STARTED"), 60, "the manager to start")
    os.kill(run.proc.pid, signal.SIGKILL)      # prterun or hydra's mpiexec
    run.wait(10)
    left = run.leftovers(within=20)
    assert left == [], left


# -- point 2: Ctrl-C reaches the script under the launcher ------------------------------------
def test_ctrl_c_under_launcher_reaches_the_script_first(tagged_run):
    run = tagged_run(launcher_cmd(2))
    run.wait_running(2)
    os.killpg(run.proc.pid, signal.SIGINT)     # what a terminal does: the foreground group
    code = run.wait(30)
    assert code == 130, run.stderr()
    assert run.lines("CAUGHT") == ["KeyboardInterrupt"]
    assert run.lines("FINALLY") == [""]
    err = run.stderr()
    assert "_launcher.py" not in err and "subprocess.py" not in err, err
    assert run.leftovers(within=15) == []


def test_a_scripts_traceback_shows_the_script_not_the_launcher(tmp_path):
    (tmp_path / "bad.py").write_text("def f():\n    raise ValueError('bad input')\nf()\n")
    out = subprocess.run([sys.executable, "-m", "mpidispatch", "bad.py"], cwd=str(tmp_path),
                         env=_environment(None), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "ValueError: bad input" in out.stderr and 'bad.py", line 2, in f' in out.stderr
    assert "_launcher.py" not in out.stderr and "runpy" not in out.stderr, out.stderr


# -- point 3: SIGTERM / SIGINT in the manager --------------------------------------------------
@pytest.mark.parametrize("signame,exception,world", [
    ("SIGTERM", "Terminated", "spawned"), ("SIGINT", "KeyboardInterrupt", "spawned"),
    ("SIGHUP", "Terminated", "spawned"), ("SIGTERM", "Terminated", "static")])
def test_manager_signal_raises_in_loop_and_stops_workers(tagged_run, signame, exception,
                                                         world):
    if world == "static":
        cmd = _mpiexec.command(3, [sys.executable, SCENARIO, "marks", "2"], oversubscribe=True)
    elif BACKEND == "mpich":
        cmd = [sys.executable, "-m", "mpidispatch", "-n", "1", SCENARIO, "marks", "2"]
    else:
        cmd = [sys.executable, SCENARIO, "marks", "2"]
    run = tagged_run(cmd)
    run.wait_running(2)
    signum = getattr(signal, signame)
    manager = int(run.lines("STARTED")[0])
    started = time.monotonic()
    os.kill(manager, signum)
    code = run.wait(30)
    seconds = time.monotonic() - started
    assert run.lines("CAUGHT") == [exception], (run.lines(""), run.stderr())
    assert run.lines("FINALLY") == [""]
    # an uncaught KeyboardInterrupt ends Python by SIGINT (-2 here, 130 in a shell)
    if world == "spawned":   # (mpiexec's own status is that of the first rank to end)
        assert code in (128 + signum, -signum if signum == signal.SIGINT else None), \
            (code, run.stderr())
    if exception == "Terminated":
        assert run.lines("CODE") == [str(128 + signum)]
    assert seconds < 10, seconds                  # two busy workers are not waited for
    assert run.leftovers(within=10) == []


def test_executor_sigterm_fails_pending_futures_and_exits(tagged_run):
    """The executor's engine runs in a thread: `with` must not wait for tasks never sent."""
    script = str(SCENARIOS / "signals_executor.py")
    if BACKEND == "mpich":
        cmd = [sys.executable, "-m", "mpidispatch", "-n", "1", script, "marks", "2"]
    else:
        cmd = [sys.executable, script, "marks", "2"]
    run = tagged_run(cmd)
    run.wait_running(2)
    started = time.monotonic()
    os.kill(int(run.lines("STARTED")[0]), signal.SIGTERM)
    code = run.wait(30)
    assert run.lines("CAUGHT") == ["Terminated"], (run.lines(""), run.stderr())
    assert run.lines("FINALLY") == [""]
    assert code == 143, run.stderr()
    assert time.monotonic() - started < 10
    assert run.leftovers(within=10) == []


def test_terminated_is_a_system_exit_with_the_shell_status():
    exc = Terminated(signal.SIGTERM)
    assert isinstance(exc, SystemExit) and not isinstance(exc, Exception)
    assert exc.code == 143 and exc.signum == signal.SIGTERM
    assert "SIGTERM" in str(exc)


def test_a_users_own_handler_is_left_alone():
    code = ("import signal; from mpidispatch import _signals\n"
            "mine = lambda s, f: None\n"
            "signal.signal(signal.SIGTERM, mine)\n"
            "_signals.manager_started()\n"
            "assert signal.getsignal(signal.SIGTERM) is mine\n"
            "assert signal.getsignal(signal.SIGHUP) is _signals._on_signal\n"
            "assert signal.getsignal(signal.SIGINT) is _signals._on_signal\n")
    out = subprocess.run([sys.executable, "-c", code], env=_environment(None),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_stop_state_is_per_run():
    """Caught and survived: the next manager hands out tasks again. A REPL keeps Ctrl-C."""
    code = ("import os, signal, sys; from mpidispatch import _signals, Terminated\n"
            "_signals.manager_started()\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM); signal.pause()\n"
            "except Terminated as exc:\n"
            "    assert exc.code == 143\n"
            "assert _signals.stopping()\n"
            "_signals.manager_started()\n"
            "assert not _signals.stopping()\n"
            "print('OK')\n")
    out = subprocess.run([sys.executable, "-c", code], env=_environment(None),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "OK", out.stderr
    repl = subprocess.run([sys.executable, "-i", "-c", "from mpidispatch import _signals; "
                           "_signals.manager_started(); import signal; "
                           "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"],
                          env=_environment(None), capture_output=True, text=True, timeout=60,
                          input="")
    assert repl.stdout.strip().startswith("True"), repl


def test_signal_held_in_bookkeeping_comes_again_outside():
    """Held inside the engine, and the program left the engine: it arrives again there."""
    code = ("import signal, sys, time; from mpidispatch import _signals, Terminated\n"
            "_signals.manager_started()\n"
            "ns = {'sys': sys}\n"
            "exec(compile('def progress(): return sys._getframe()', _signals._ENGINE_FILE,"
            " 'exec'), ns)\n"
            "_signals._on_signal(signal.SIGTERM, ns['progress']())   # held, no raise\n"
            "print('HELD', flush=True)\n"
            "try:\n"
            "    time.sleep(10)\n"
            "except Terminated as exc:\n"
            "    print('RAISED', exc.code)\n")
    out = subprocess.run([sys.executable, "-c", code], env=_environment(None),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["HELD", "RAISED", "143"], (out.stdout, out.stderr)


def test_signal_inside_engine_bookkeeping_is_held_for_the_loop():
    """A handler never raises inside the engine's bookkeeping, only in run_until itself."""
    frames = {}
    source = ("import sys\n"
              "def progress(): frames['progress'] = sys._getframe()\n"
              "def run_until():\n"
              "    frames['run_until'] = sys._getframe()\n"
              "    progress()\n")
    namespace = {"frames": frames}
    exec(compile(source, _signals._ENGINE_FILE, "exec"), namespace)
    namespace["run_until"]()
    assert _signals._at_safe_point(frames["run_until"])
    assert not _signals._at_safe_point(frames["progress"])
    assert _signals._at_safe_point(sys._getframe())     # user code


# -- point 4: processes started by tasks end with the run --------------------------------------
def _children_gone(run, within):
    pids = [int(p) for p in run.lines("CHILD")]
    assert pids, run.lines("")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


@pytest.mark.parametrize("world", ["spawned", "static", "launcher"])
def test_task_children_end_with_the_run(tagged_run, world):
    if world == "spawned":
        cmd = ([sys.executable, "-m", "mpidispatch", "-n", "1"] if BACKEND == "mpich"
               else [sys.executable]) + [SCENARIO, "marks", "2", "quick"]
    elif world == "static":
        cmd = _mpiexec.command(3, [sys.executable, SCENARIO, "marks", "2", "quick"],
                               oversubscribe=True)
    else:
        cmd = launcher_cmd(2, "quick")
    run = tagged_run(cmd)
    code = run.wait(90)
    assert run.lines("DONE") == [""], (code, run.lines(""), run.stderr())
    assert len(run.lines("CHILD")) == 2 * 2 * 2   # 4 tasks, a subprocess and a fork each
    assert _children_gone(run, within=10) == []
    assert run.leftovers(within=10) == []


def test_worker_leads_its_own_process_group():
    """The wrapper kills what is left of the worker's group however the worker ended."""
    wrapper = _signals.WORKER_WRAPPER % {"record": ""}
    script = ("import os, subprocess, sys; os.setpgid(0, 0); "
              "p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True); os._exit(3)")
    out = subprocess.run(["/bin/sh", "-c", wrapper, sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    child = int(out.stdout.split()[0])
    wait_for(lambda: not _alive(child), 5, "the task's child to end with its worker")


# -- issue 8 point 5: one home for mpiexec lines ------------------------------------------------
def test_mpiexec_lines_and_environment_have_one_home():
    package = os.path.join(os.path.dirname(_mpiexec.__file__))
    builders = []
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or name in ("_mpiexec.py", "worker_arrays.py"):
                continue
            text = open(path).read()
            for needle in ('"--with-ft"', '"-disable-auto-cleanup"', '"bin", "mpiexec"',
                           '"PMI_RANK"', '"OMPI_COMM_WORLD'):
                if needle in text:
                    builders.append((os.path.relpath(path, package), needle))
    assert builders == []


@pytest.mark.parametrize("backend,ft,over,expect", [
    ("openmpi", True, True, ["--with-ft", "ulfm", "-n", "3", "--map-by", "slot:oversubscribe"]),
    ("openmpi", False, False, ["-n", "3"]),
    ("mpich", True, True, ["-disable-auto-cleanup", "-n", "3"]),
    ("mpich", False, False, ["-n", "3"]),
    # one rank (spawned workers): a worker killed on purpose must not end the manager
    ("mpich", False, False, ["-disable-auto-cleanup", "-n", "1"]),
    ("openmpi", False, False, ["-n", "1"])])
def test_mpiexec_command(monkeypatch, backend, ft, over, expect):
    from mpidispatch import _mpienv
    monkeypatch.setattr(_mpienv, "backend", lambda: backend)
    cmd = _mpiexec.command(int(expect[expect.index("-n") + 1]), ["python", "x.py"], ft,
                           oversubscribe=over, spawning_manager=True)
    assert cmd[1:] == expect + ["python", "x.py"]
    # a worker array's helper rank joins a manager: never the switch without ft
    if not ft:
        assert "-disable-auto-cleanup" not in _mpiexec.command(1, ["python", "x.py"])
    assert os.path.basename(cmd[0]) == "mpiexec"


def test_mpiexec_environment_drops_rank_variables_and_keeps_user_values():
    base = {"PATH": "/usr/bin", "PMI_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
            "OMPI_MCA_btl": "self,tcp", "PMIX_MCA_foo": "1"}
    env = _mpiexec.environment(base, pythonpath=["/src"], local=True)
    assert not _mpiexec.under_launcher(env)
    assert "PMI_RANK" not in env and "OMPI_COMM_WORLD_SIZE" not in env
    assert env["OMPI_MCA_btl"] == "self,tcp" and env["PMIX_MCA_foo"] == "1"
    assert env["PATH"].split(os.pathsep)[0] == os.path.join(sys.prefix, "bin")
    assert env["PYTHONPATH"] == "/src" and env["HYDRA_LAUNCHER"] == "fork"
