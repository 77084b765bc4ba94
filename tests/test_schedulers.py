"""Submissions to a REAL Slurm and Grid Engine (started by ``.ci/schedulers.sh start``).

Each test is skipped with a reason when its scheduler is not installed or not answering,
so the suite passes on a laptop. Every wait is bounded. Run with either MPI wheel:
``/tmp/venv-ompi/bin/python -m pytest tests/test_schedulers.py -v``.
"""
import functools
import os
import shutil
import subprocess
import sys
import time

import pytest

from mpidispatch.launch import CANCELLED_EXIT_CODE, submit
from mpidispatch import _mpienv

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(os.path.dirname(HERE), "slurm_scripts")

MPI_SCRIPT = """\
import sys
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.rank + 1)
print("rank %d of %d sum %d args %s" % (comm.rank, comm.size, total, sys.argv[1:]), flush=True)
"""


def _answers(argv, expect):
    if shutil.which(argv[0]) is None:
        return "%s not on PATH" % argv[0]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=8)
    except subprocess.TimeoutExpired:
        return "`%s` did not answer in 8 s" % " ".join(argv)
    if proc.returncode != 0 or expect not in proc.stdout:
        return "`%s` failed: %s" % (" ".join(argv), (proc.stderr or proc.stdout).strip()[:200])
    return None


@functools.lru_cache(maxsize=None)
def _down_reason(scheduler):
    if scheduler == "slurm":
        return _answers(["sinfo", "-h", "-o", "%t"], "")
    return _answers(["qstat", "-f"], "@")


def needs(scheduler):
    reason = _down_reason(scheduler)
    if reason:
        pytest.skip("%s is not running (%s); start it with `sudo .ci/schedulers.sh start`"
                    % (scheduler, reason))


SCHEDULERS = [pytest.param("slurm", marks=pytest.mark.slurm),
              pytest.param("sge", marks=pytest.mark.sge)]


@pytest.fixture(params=SCHEDULERS)
def scheduler(request):
    needs(request.param)
    return request.param


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault_tolerant", [False, True], ids=["plain", "ulfm"])
def test_two_rank_mpi_job(scheduler, tmp_path, fault_tolerant):
    script = write(tmp_path, "ranks.py", MPI_SCRIPT)
    job = submit(script, args=["a b", "7"], scheduler=scheduler, nprocs=2, time="5",
                 workdir=str(tmp_path), fault_tolerant=fault_tolerant)
    assert job.wait(timeout=90) == 0, job.output()
    out = job.output()
    for rank in (0, 1):
        assert "rank %d of 2 sum 3 args ['a b', '7']" % rank in out, out
    assert job.state() == "COMPLETED"


@pytest.mark.timeout(120)
def test_wait_returns_exit_code_of_failing_script(scheduler, tmp_path, capsys):
    from mpidispatch.launch.cli import main
    script = write(tmp_path, "fail.py", "print('about to fail', flush=True)\nraise SystemExit(3)\n")
    rc = main(["--scheduler", scheduler, "-n", "1", "--wait", "--timeout", "90",
               "--workdir", str(tmp_path), script])
    captured = capsys.readouterr()
    assert rc == 3, captured
    assert "about to fail" in captured.out
    assert "FAILED, exit code 3" in captured.err


@pytest.mark.timeout(120)
def test_array_of_three(scheduler, tmp_path):
    script = write(tmp_path, "task.py", (
        "import os\nfrom mpi4py import MPI\n"
        "t = os.environ.get('SLURM_ARRAY_TASK_ID') or os.environ.get('SGE_TASK_ID')\n"
        "print('task', t, 'rank', MPI.COMM_WORLD.rank, flush=True)\n"))
    job = submit(script, scheduler=scheduler, nprocs=1, array=3, workdir=str(tmp_path))
    assert job.wait(timeout=90) == 0
    files = job.output_files()
    assert len(files) == 3, files
    for task, path in enumerate(files, 1):
        with open(path) as fh:
            assert "task %d rank 0" % task in fh.read()


@pytest.mark.timeout(120)
def test_cancel_long_job(scheduler, tmp_path):
    script = write(tmp_path, "sleeper.py", "import time\nprint('sleeping', flush=True)\n"
                                           "time.sleep(60)\n")
    job = submit(script, scheduler=scheduler, workdir=str(tmp_path))
    deadline = time.monotonic() + 60
    while job.state() != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.state() == "RUNNING"
    t0 = time.monotonic()
    job.cancel()
    assert job.wait(timeout=30) == CANCELLED_EXIT_CODE
    assert time.monotonic() - t0 < 20
    assert job.state() == "CANCELLED"
    _assert_no_process_left(script)


def _assert_no_process_left(script):
    """The cancelled job's ranks are gone (not orphaned outside the scheduler's reach)."""
    deadline = time.monotonic() + 10
    while True:
        left = subprocess.run(["pgrep", "-f", script], capture_output=True, text=True,
                              timeout=10).stdout.split()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in left:                      # clean up before failing, so nothing keeps running
        subprocess.run(["kill", "-KILL", pid], timeout=10)
    assert not left, "processes of the cancelled job still running: %s" % left


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_srun_launcher_mpich(tmp_path):
    needs("slurm")
    if _mpienv.backend() != "mpich":
        pytest.skip("srun --mpi=pmi2 needs the mpich wheel (Open MPI needs Slurm's PMIx plugin)")
    script = write(tmp_path, "ranks.py", MPI_SCRIPT)
    job = submit(script, scheduler="slurm", nprocs=2, launcher="srun", workdir=str(tmp_path))
    assert job.wait(timeout=90) == 0
    assert "rank 1 of 2 sum 3" in job.output()


# ---------------------------------------------------------------------------- templates
def _template_env():
    env = dict(os.environ, VENV=sys.prefix)
    env.pop("VIRTUAL_ENV", None)
    return env


def _copy_templates(tmp_path):
    for name in os.listdir(TEMPLATES):
        shutil.copy(os.path.join(TEMPLATES, name), tmp_path / name)


def _slurm_run(tmp_path, argv):
    """sbatch, then poll scontrol (sbatch --wait polls slowly); returns the job id."""
    proc = subprocess.run(["sbatch", "--parsable", *argv], cwd=tmp_path, env=_template_env(),
                          capture_output=True, text=True, timeout=30, check=True)
    job_id = proc.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        info = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                              text=True, timeout=30).stdout
        states = [w.split("=", 1)[1] for w in info.split() if w.startswith("JobState=")]
        if states and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states):
            assert set(states) == {"COMPLETED"}, info
            return job_id
        time.sleep(0.25)
    pytest.fail("Slurm job %s did not finish in 90 s" % job_id)


def _sge_run(tmp_path, argv):
    """qsub -sync y (bounded): returns the job's exit status."""
    proc = subprocess.run(["qsub", "-sync", "y", *argv], cwd=tmp_path, env=_template_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split()[2]              # "Your job 12 (...) has been submitted"


def _read(path):
    with open(path) as fh:
        return fh.read()


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_slurm_templates(tmp_path):
    needs("slurm")
    _copy_templates(tmp_path)
    # as written (4 ranks): Slurm counts 4 CPUs on this 2-core VM, which made Open MPI refuse
    # to bind ("more cpus than are available in your allocation") until _mpi_env.sh said so
    jid = _slurm_run(tmp_path, ["one_node.sbatch"])
    out = _read(tmp_path / ("mpi-one-node-%s.out" % jid))
    assert all("process %d of 4" % r in out for r in range(4)), out
    jid = _slurm_run(tmp_path, ["--nodes=1", "--ntasks-per-node=2", "multi_node.sbatch"])
    out = _read(tmp_path / ("mpi-multi-node-%s.out" % jid))
    assert "process 1 of 2" in out, out
    jid = _slurm_run(tmp_path, ["array.sbatch"])
    for task in (1, 2, 3):
        out = _read(tmp_path / ("mpi-array-%s_%d.out" % (jid, task)))
        assert "task %d size 2 result %d" % (task, 3 * task) in out, out


@pytest.mark.sge
@pytest.mark.timeout(120)
def test_sge_templates(tmp_path):
    needs("sge")
    _copy_templates(tmp_path)
    jid = _sge_run(tmp_path, ["one_node.sge"])               # as written: 4 slots
    out = _read(tmp_path / ("mpi-one-node-%s.out" % jid))
    assert all("process %d of 4" % r in out for r in range(4)), out
    proc = subprocess.run(["qsub", "-terse", "-sync", "y", "array.sge"], cwd=tmp_path,
                          env=_template_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jid = proc.stdout.split(".")[0].strip()
    for task in (1, 2, 3):
        out = _read(tmp_path / ("mpi-array-%s.%d.out" % (jid, task)))
        assert "task %d size 2 result %d" % (task, 3 * task) in out, out
