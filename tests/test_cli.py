"""The ``mpidispatch`` command line: usage, version, typos, info, and ``submit``'s messages
(in the language of the API in use: flags on the command line, keywords in Python), with the
scheduler's reason for a job that would never start (real Slurm / Grid Engine; skipped when
they are not running).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest

import mpidispatch
from mpidispatch import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=None, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "mpidispatch", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL)


def test_version_lives_in_one_place():
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == "mpidispatch %s" % mpidispatch.__version__
    assert importlib.metadata.version("mpidispatch") == mpidispatch.__version__
    with open(os.path.join(ROOT, "pyproject.toml")) as fh:
        pyproject = fh.read()
    assert 'dynamic = ["version"]' in pyproject
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.M)      # no literal version


def test_no_arguments_explains_instead_of_claiming_args_are_required():
    proc = cli()
    assert proc.returncode == 2
    assert "mpidispatch {info,doctor,submit,bench,status,report} ..." in proc.stderr
    assert "give a script to run" in proc.stderr
    assert "required" not in proc.stderr
    proc = cli("-n", "2")
    assert proc.returncode == 2
    assert "required: script.py" in proc.stderr and "script, args" not in proc.stderr


def test_typo_of_a_command_gets_a_suggestion(tmp_path):
    proc = cli("sumbit", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown command 'sumbit': did you mean 'submit'?" in proc.stderr
    proc = cli("doctro", cwd=tmp_path)
    assert "did you mean 'doctor'?" in proc.stderr
    proc = cli("nothing_here.py", cwd=tmp_path)
    assert "no such script or command: 'nothing_here.py'" in proc.stderr


def test_help_lists_commands_and_the_default_of_n():
    proc = cli("-h")
    assert proc.returncode == 0
    assert "mpidispatch {info,doctor,submit,bench,status,report} ..." in proc.stdout
    for command in ("info", "doctor", "submit"):
        assert re.search(r"mpidispatch %s\s+\w" % command, proc.stdout), command
    assert "(default: no mpiexec;" in " ".join(proc.stdout.split())


def test_info():
    proc = cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "MPI wheel: %s" % mpidispatch._mpienv.backend() in proc.stdout
    assert "mpi4py" in proc.stdout


def test_submit_option_errors_name_flags(tmp_path):
    script = tmp_path / "run.py"
    script.write_text("print('hi')\n")
    proc = cli("submit", "--scheduler", "slurm", "-n", "0", "--dry-run", str(script))
    assert proc.returncode == 2
    assert "error: -n must be >= 1" in proc.stderr
    proc = cli("submit", "--scheduler", "slurm", "--pe", "mpi", "--dry-run", str(script))
    assert "--pe is a Grid Engine option; for Slurm, -n alone sets --ntasks" in proc.stderr
    proc = cli("submit", "--scheduler", "slurm", "--time", "soon", "--dry-run", str(script))
    assert "bad --time 'soon'" in proc.stderr
    with pytest.raises(ValueError, match="nprocs must be >= 1"):
        launch.submit(str(script), scheduler="slurm", nprocs=0, dry_run=True)


def test_missing_scheduler_command_in_each_language(tmp_path):
    script = tmp_path / "run.py"
    script.write_text("print('hi')\n")
    env = dict(os.environ, PATH=os.path.join(sys.prefix, "bin"))
    proc = cli("submit", "--scheduler", "sge", str(script), env=env)
    assert proc.returncode == 1
    assert "'qsub' was not found on PATH" in proc.stderr
    assert "(Use --dry-run to only print the job script.)" in proc.stderr
    err = launch.SchedulerNotFoundError("x {option:dry_run} {option:queue} {option:nprocs=4}")
    assert str(err) == "x dry_run=True queue= nprocs=4"
    assert err.in_language("cli") == "x --dry-run --partition -n 4"
    err = launch.SchedulerError("{option:time=1:00:00}")
    assert (str(err), err.in_language("cli")) == ('time="1:00:00"', "--time 1:00:00")


# ---------------------------------------------------------------------------- schedulers
def _down(argv):
    if shutil.which(argv[0]) is None:
        return "%s not on PATH" % argv[0]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "no answer"
    return None if proc.returncode == 0 else proc.stderr.strip()[:200]


def needs(scheduler):
    reason = _down(["sinfo", "-h"] if scheduler == "slurm" else ["qstat", "-f"])
    if reason:
        pytest.skip("%s is not running (%s): sudo .ci/schedulers.sh start" % (scheduler, reason))


def _slurm_job_gone(job_id):
    out = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True,
                         timeout=30).stdout
    return not out.strip()


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_slurm_job_that_would_never_start_cli(tmp_path):
    needs("slurm")
    script = tmp_path / "run.py"
    script.write_text("print('hi')\n")
    proc = cli("submit", "--scheduler", "slurm", "-n", "64", "--time", "1:00:00",
               "--workdir", str(tmp_path), str(script))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "it is pending with reason PartitionConfig" in err, err
    assert re.search(r"ask for fewer ranks \(-n \d+ or less\)", err), err
    assert "choose a larger partition with --partition" in err
    assert "nprocs" not in err and "queue=" not in err
    job_id = re.search(r"will not start job (\d+)", err).group(1)
    assert "The job was cancelled" in err
    assert _slurm_job_gone(job_id)


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_slurm_job_that_would_never_start_python(tmp_path):
    needs("slurm")
    script = tmp_path / "run.py"
    script.write_text("print('hi')\n")
    with pytest.raises(launch.JobWillNotRunError) as info:
        launch.submit(str(script), scheduler="slurm", nprocs=64, time="1:00:00",
                      workdir=str(tmp_path))
    err = str(info.value)
    assert info.value.reason == "PartitionConfig"
    assert re.search(r"ask for fewer ranks \(nprocs=\d+ or less\)", err), err
    assert "queue=" in err and "--partition" not in err
    assert _slurm_job_gone(info.value.job_id)


@pytest.mark.sge
@pytest.mark.timeout(120)
def test_sge_job_that_would_never_start(tmp_path):
    needs("sge")
    script = tmp_path / "run.py"
    script.write_text("print('hi')\n")
    proc = cli("submit", "--scheduler", "sge", "-n", "64", "--workdir", str(tmp_path),
               str(script))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "no suitable queues" in err and "Grid Engine could never run this job" in err
    assert "ask for fewer ranks (-n;" in err and "another queue (--partition)" in err
    with pytest.raises(launch.SchedulerError) as info:
        launch.submit(str(script), scheduler="sge", nprocs=64, workdir=str(tmp_path))
    assert "ask for fewer ranks (nprocs=;" in str(info.value)


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_wait_reports_a_job_that_became_hopeless(tmp_path):
    """A held job (pending, fine) is changed to need 64 CPUs: wait() says so at once."""
    needs("slurm")
    script = tmp_path / "run.py"
    script.write_text("print('hi')\n")
    job = launch.submit(str(script), scheduler="slurm", workdir=str(tmp_path),
                        extra_directives=["--hold"])
    try:
        assert job.state() == "PENDING"
        for argv in (["scontrol", "update", "JobId=%s" % job.id, "NumCPUs=64"],
                     ["scontrol", "release", job.id]):
            subprocess.run(argv, capture_output=True, text=True, timeout=30)
        with pytest.raises(launch.JobWillNotRunError) as info:
            job.wait(timeout=60)
        assert info.value.reason == "PartitionConfig"
        assert "Cancel it with job.cancel() / `scancel %s`" % job.id in str(info.value)
        assert job.state() == "PENDING"                 # wait() leaves the job alone
    finally:
        job.cancel()
