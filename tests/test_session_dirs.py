"""Stale Open MPI session directories from killed runs do not break later runs.

Open MPI's runtime keeps its rendezvous files in ``$TMPDIR/ompi.<pid>`` (``mpirun``) and
``$TMPDIR/prte.<pid>`` (the ``prte`` a singleton manager starts to spawn workers), and does not
remove them when it is killed. A later ``mpirun`` or ``prte`` that gets the same PID finds its
files already there and stops with "The PMIx server's listener thread failed to start" (exit
213). On a busy login node or CI machine PIDs come round again within hours. mpidispatch gives
the runtimes it starts a directory of their own (``PRTE_MCA_prte_local_tmpdir_base``).

The test makes the collision certain: a ``$TMPDIR`` holding a stale directory for *every* PID.
"""
import shutil
import socket
import sys
from pathlib import Path

import pytest

from conftest import BACKEND, ROOT, SCENARIOS, run_program
from mpidispatch import _mpienv
from mpidispatch.launch import submit
from test_engine import check_basic

pytestmark = pytest.mark.skipif(BACKEND != "openmpi",
                                reason="Open MPI's runtime (PRTE) keeps session directories")

PID_MAX_FILE = Path("/proc/sys/kernel/pid_max")


@pytest.fixture(scope="module")
def stale_tmpdir(tmp_path_factory):
    """A temporary directory as a killed run leaves it, for every PID this machine can give."""
    pid_max = int(PID_MAX_FILE.read_text()) if PID_MAX_FILE.exists() else 1 << 22
    if pid_max > 1 << 17:
        pytest.skip("pid_max=%d: too many PIDs to cover with stale directories" % pid_max)
    root = tmp_path_factory.mktemp("stale-tmp")
    tool_file = "pmix.%s.tool" % socket.gethostname()   # the file the runtime creates first
    for pid in range(2, pid_max + 1):
        for runtime in ("ompi", "prte"):
            session = root / ("%s.%d" % (runtime, pid))
            session.mkdir()
            (session / tool_file).touch()
    yield root
    shutil.rmtree(root, ignore_errors=True)       # 2 x pid_max directories: 256 MB at 32768


@pytest.mark.parametrize("how", ["spawned", "python -m mpidispatch -n 3"])
def test_stale_session_directories_do_not_break_a_run(mpi_run, stale_tmpdir, how):
    env = {"TMPDIR": str(stale_tmpdir)}
    if how == "spawned":
        run = mpi_run("imp_basic.py", "2", env=env, timeout=120)
    else:
        run = mpi_run("imp_basic.py", n=3, module=True, env=env, timeout=120)
    assert "listener thread failed" not in run.stderr, run
    check_basic(run, 2)
    assert _left_in(stale_tmpdir) == [], run     # the run's own directory went with it


def _left_in(tmpdir):
    """What is in ``tmpdir`` besides the stale session directories."""
    return [p.name for p in tmpdir.iterdir() if not p.name.startswith(("ompi.", "prte."))]


def test_a_generated_job_script_makes_and_removes_its_own(stale_tmpdir, tmp_path, monkeypatch):
    # the body mpidispatch submit writes, run by bash itself (bash skips the #SBATCH lines)
    monkeypatch.setenv(_mpienv.SESSION_BASE_VAR, "/the/submitting/manager/s/own")
    job = submit(str(SCENARIOS / "imp_basic.py"), scheduler="slurm", nprocs=3,
                 workdir=str(tmp_path), dry_run=True)
    assert "/the/submitting/manager/s/own" not in job.script   # a path for another run
    script = tmp_path / "job.sh"
    script.write_text(job.script)
    run = run_program(["bash", str(script)], tmp_path, timeout=120,
                      env={"TMPDIR": str(stale_tmpdir)})
    assert "listener thread failed" not in run.stderr, run
    check_basic(run, 2)
    assert _left_in(stale_tmpdir) == [], run


def test_the_slurm_template_makes_and_removes_its_own(stale_tmpdir, tmp_path):
    # slurm_scripts/array.sbatch with _mpi_env.sh, run by bash with what Slurm would set
    for name in ("_mpi_env.sh", "array.sbatch", "example_task.py"):
        shutil.copy(ROOT / "slurm_scripts" / name, tmp_path / name)
    env = {"TMPDIR": str(stale_tmpdir), "VENV": sys.prefix, "SLURM_SUBMIT_DIR": str(tmp_path),
           "SLURM_NTASKS": "2", "SLURM_ARRAY_TASK_ID": "2"}
    run = run_program(["bash", "array.sbatch"], tmp_path, timeout=120, env=env)
    assert run.returncode == 0, run
    assert "task 2 size 2 result 6" in run.stdout, run
    assert _left_in(stale_tmpdir) == [], run
