"""Rendering, validation and submit-command tests for mpidispatch.launch (no scheduler).

Fake ``sbatch``/``qsub``/``scontrol``/``qstat`` scripts on PATH record their argv and stdin;
they are only used here, to check exact command lines. Real submissions are in
tests/test_schedulers.py.
"""
import datetime
import os
import shlex
import stat
import sys

import pytest

from mpidispatch import _mpienv
from mpidispatch.errors import Error
from mpidispatch.launch import (JobTimeoutError, SchedulerError, SchedulerNotFoundError,
                                SGEJob, SlurmJob, submit)
from mpidispatch.launch import _options
from mpidispatch.launch.cli import main as cli_main


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "calc.py"
    path.write_text("print('hi')\n")
    return str(path)


def fake_command(bindir, name, stdout="", rc=0, stderr="", fail_first=0):
    """A stub that appends its argv (and stdin) to NAME.log and prints ``stdout``.

    With ``fail_first=k`` the first k calls print ``stderr`` and exit 1.
    """
    bindir.mkdir(exist_ok=True)
    log = bindir / (name + ".log")
    count = bindir / (name + ".count")
    path = bindir / name
    path.write_text(
        "#!/bin/bash\n"
        "printf '%%s\\n' \"$*\" >> %(log)s\n"
        "n=0; [ -f %(count)s ] && n=$(< %(count)s); echo $((n+1)) > %(count)s\n"
        "if [ \"$n\" -lt %(fail)d ]; then echo %(err)s >&2; exit 1; fi\n"
        "printf '%%s\\n' %(out)s\n"
        "exit %(rc)d\n" % dict(log=shlex.quote(str(log)), count=shlex.quote(str(count)),
                              fail=fail_first, err=shlex.quote(stderr),
                              out=shlex.quote(stdout), rc=rc))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return log


@pytest.fixture
def fakebin(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))    # only the stubs (they use bash builtins)
    return bindir


# ---------------------------------------------------------------------------- directives
def test_slurm_directives(script, tmp_path):
    job = submit(script, args=["x y", "--n", "3"], scheduler="slurm", nprocs=4,
                 time="1-02:03:04", queue="short", mem="2G", name="run1",
                 workdir=str(tmp_path), dry_run=True, extra_directives=["--nodes=2", "#X"])
    s = job.script
    assert s.startswith("#!/bin/bash\n")
    for line in ["#SBATCH --job-name=run1", "#SBATCH --ntasks=4",
                 "#SBATCH --chdir=%s" % tmp_path, "#SBATCH --output=%s/run1-%%j.out" % tmp_path,
                 "#SBATCH --partition=short", "#SBATCH --time=1-02:03:04",
                 "#SBATCH --mem-per-cpu=2048M", "#SBATCH --nodes=2", "\n#X\n"]:
        assert line in s, line
    assert "#SBATCH --array" not in s
    assert shlex.join([sys.executable, script, "x y", "--n", "3"]) in s
    assert " -n 4 " in s
    assert job.id is None and not os.path.exists(job.script_path)
    assert job.submit_argv() == ["sbatch", "--parsable", str(tmp_path / "run1.sbatch")]


def test_journal_is_exported_to_the_job(script, tmp_path):
    """Issue 14: submit(journal=...) / --journal records every face's tasks in the job."""
    job = submit(script, scheduler="slurm", nprocs=2, workdir=str(tmp_path), dry_run=True,
                 journal="run.db")
    assert "export MPIDISPATCH_JOURNAL=%s/run.db\n" % tmp_path in job.script
    assert "MPIDISPATCH_JOURNAL" not in submit(script, scheduler="slurm", nprocs=2,
                                               workdir=str(tmp_path), dry_run=True).script


def test_sge_directives(script, tmp_path):
    job = submit(script, scheduler="sge", nprocs=3, time=90, queue="all.q", pe="smp",
                 mem=512, workdir=str(tmp_path), dry_run=True, array="2-5")
    s = job.script
    for line in ["#$ -N calc", "#$ -S /bin/bash", "#$ -V", "#$ -notify", "#$ -wd %s" % tmp_path,
                 "#$ -o %s/calc-$JOB_ID.$TASK_ID.out" % tmp_path, "#$ -j y",
                 "#$ -pe smp 3", "#$ -q all.q", "#$ -l h_rt=1:30:00",
                 "#$ -l mem_free=512M", "#$ -t 2-5"]:
        assert line in s, line
    assert job.submit_argv() == ["qsub", "-terse", "-w", "e", str(tmp_path / "calc.sge")]


def test_sge_single_rank_needs_no_pe_and_default_pe(script, tmp_path):
    assert "-pe" not in submit(script, scheduler="sge", dry_run=True).script
    assert "#$ -pe mpi 2" in submit(script, scheduler="sge", nprocs=2, dry_run=True).script


def test_job_environment_and_launch_line(script, monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", ".:relative/dir")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMPI_MCA_foo", "bar")
    s = submit(script, scheduler="slurm", nprocs=2, dry_run=True).script
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    assert "export PATH=%s:" % shlex.quote(bindir).strip("'") in s
    assert "export PYTHONPATH=%s:%s/relative/dir" % (tmp_path, tmp_path) in s
    assert "export OMPI_MCA_foo=bar" in s
    assert "HYDRA_LAUNCHER" not in s          # inside an allocation hydra must use srun/qrsh
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        if key != "HYDRA_LAUNCHER":
            assert "export %s=%s" % (key, shlex.quote(value)) in s
    assert 'echo "$rc" > "%s/calc-$job${task:+.$task}.rc"' % tmp_path in s


@pytest.mark.parametrize("backend,flag", [("openmpi", "--with-ft ulfm"),
                                          ("mpich", "-disable-auto-cleanup")])
def test_fault_tolerant_flag(script, monkeypatch, backend, flag):
    monkeypatch.setattr(_mpienv, "backend", lambda: backend)
    s = submit(script, scheduler="sge", nprocs=2, fault_tolerant=True, dry_run=True).script
    assert "mpiexec %s -n 2 " % flag in s
    assert flag not in submit(script, scheduler="sge", nprocs=2, dry_run=True).script


def test_sge_open_mpi_gets_pe_hostfile(script, monkeypatch):
    monkeypatch.setattr(_mpienv, "backend", lambda: "openmpi")
    s = submit(script, scheduler="sge", nprocs=2, dry_run=True).script
    assert "export PRTE_MCA_prte_default_hostfile=" in s and '"$PE_HOSTFILE"' in s
    monkeypatch.setattr(_mpienv, "backend", lambda: "mpich")     # hydra reads it itself
    assert "PE_HOSTFILE" not in submit(script, scheduler="sge", nprocs=2, dry_run=True).script


def test_srun_launcher(script, monkeypatch):
    monkeypatch.setattr(_mpienv, "backend", lambda: "mpich")
    s = submit(script, scheduler="slurm", nprocs=2, launcher="srun", dry_run=True).script
    assert "\nsrun --mpi=pmi2 -n 2 %s" % sys.executable in s
    monkeypatch.setattr(_mpienv, "backend", lambda: "openmpi")
    with pytest.raises(ValueError, match="PMIx"):
        submit(script, scheduler="slurm", launcher="srun", dry_run=True)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,match", [
    (dict(nprocs=0), "nprocs must be >= 1"),
    (dict(nprocs="many"), "nprocs"),
    (dict(scheduler="pbs"), "unknown scheduler 'pbs'"),
    (dict(time="1h"), "bad time"),
    (dict(time="1:75:00"), "< 60"),
    (dict(time=0), "positive"),
    (dict(mem="lots"), "bad mem"),
    (dict(pe="smp"), "Grid Engine option"),
    (dict(name="1 bad"), "bad job name"),
    (dict(queue="a b"), "queue"),
    (dict(array="3-1"), "bad array"),
    (dict(args="a b"), "sequence"),
    (dict(scheduler="sge", launcher="srun"), "only works with scheduler='slurm'"),
])
def test_bad_options(script, kwargs, match, fakebin):
    log = fake_command(fakebin, "sbatch", "1")
    with pytest.raises(ValueError, match=match):
        submit(script, **kwargs)
    assert not log.exists()                  # nothing submitted


def test_missing_script(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        submit(str(tmp_path / "nope.py"), dry_run=True)


@pytest.mark.parametrize("text,seconds", [
    ("30", 1800), ("1:30", 90), ("1:30:00", 5400), ("2-0", 172800), ("1-1:1", 90060),
    ("0-00:00:05", 5), (15, 900), (datetime.timedelta(hours=2), 7200)])
def test_parse_time(text, seconds):
    assert _options.parse_time(text) == seconds


def test_time_formats():
    assert _options.format_slurm_time(90061) == "1-01:01:01"
    assert _options.format_slurm_time(59) == "00:00:59"
    assert _options.format_hms(90061) == "25:01:01"


@pytest.mark.parametrize("text,mib", [("2G", 2048), ("500M", 500), ("500MB", 500),
                                      (1024, 1024), ("1.5g", 1536), ("1T", 1048576)])
def test_parse_mem(text, mib):
    assert _options.parse_mem(text) == mib


# ---------------------------------------------------------------------------- job ids
@pytest.mark.parametrize("cls,out,job_id", [
    (SlurmJob, "4242\n", "4242"), (SlurmJob, "17;cluster2\n", "17"),
    (SGEJob, "77\n", "77"), (SGEJob, "78.1-3:1\n", "78")])
def test_parse_job_id(cls, out, job_id):
    assert cls.parse_job_id(out) == job_id


@pytest.mark.parametrize("cls", [SlurmJob, SGEJob])
def test_parse_job_id_error(cls):
    with pytest.raises(SchedulerError, match="could not find a job id") as info:
        cls.parse_job_id("Your job has been rejected\n")
    assert "rejected" in str(info.value)
    assert isinstance(info.value, Error)


# ---------------------------------------------------------------------------- fake clients
def test_fake_sbatch_exact_command(script, tmp_path, fakebin):
    log = fake_command(fakebin, "sbatch", "4242")
    job = submit(script, args=["a"], scheduler="slurm", nprocs=2, workdir=str(tmp_path))
    assert job.id == "4242"
    assert log.read_text().splitlines() == ["--parsable %s" % job.script_path]
    with open(job.script_path) as fh:
        assert fh.read() == job.script
    assert os.access(job.script_path, os.X_OK)


def test_fake_qsub_array(script, tmp_path, fakebin):
    log = fake_command(fakebin, "qsub", "78.1-3:1")
    job = submit(script, scheduler="sge", nprocs=2, array=3, workdir=str(tmp_path))
    assert job.id == "78"
    assert log.read_text().splitlines() == ["-terse -w e %s" % job.script_path]


def test_transient_error_is_retried(script, tmp_path, fakebin, monkeypatch):
    monkeypatch.setattr(SGEJob, "retries", 3)
    log = fake_command(fakebin, "qsub", "12", fail_first=2,
                       stderr='error: commlib error: got select error (Connection refused)')
    job = submit(script, scheduler="sge", workdir=str(tmp_path))
    assert job.id == "12" and len(log.read_text().splitlines()) == 3


def test_real_error_is_not_retried(script, tmp_path, fakebin):
    log = fake_command(fakebin, "qsub", "", fail_first=9, stderr=(
        'Unable to run job: the requested parallel environment "mpi" does not exist.'))
    with pytest.raises(SchedulerError, match="qconf -spl"):
        submit(script, scheduler="sge", nprocs=2, workdir=str(tmp_path))
    assert len(log.read_text().splitlines()) == 1


@pytest.mark.parametrize("scheduler,command", [("slurm", "sbatch"), ("sge", "qsub")])
def test_missing_submit_command(script, tmp_path, fakebin, scheduler, command):
    with pytest.raises(SchedulerNotFoundError) as info:
        submit(script, scheduler=scheduler, workdir=str(tmp_path))
    assert not list(tmp_path.glob("calc.s*")), "no job script may be written"
    msg = str(info.value)
    assert "%r was not found on PATH" % command in msg and "module" in msg
    assert isinstance(info.value, Error)


def test_wait_timeout_and_state(script, tmp_path, fakebin):
    fake_command(fakebin, "sbatch", "5")
    fake_command(fakebin, "scontrol", "JobId=5 JobName=x JobState=RUNNING ExitCode=0:0")
    job = submit(script, scheduler="slurm", workdir=str(tmp_path))
    assert job.state() == "RUNNING"
    with pytest.raises(JobTimeoutError, match="still RUNNING after 0 s.*scancel 5"):
        job.wait(timeout=0.3)


@pytest.mark.parametrize("lines,expected", [
    (["JobState=PENDING ExitCode=0:0"], ("PENDING", None)),
    (["JobState=COMPLETED ExitCode=0:0"], ("COMPLETED", 0)),
    (["JobState=FAILED ExitCode=3:0"], ("FAILED", 3)),
    (["JobState=TIMEOUT ExitCode=0:15"], ("FAILED", 143)),
    (["JobState=COMPLETED ExitCode=0:0", "JobState=RUNNING ExitCode=0:0"], ("RUNNING", None)),
    (["JobState=COMPLETED ExitCode=0:0", "JobState=FAILED ExitCode=2:0",
      "JobState=COMPLETED ExitCode=0:0"], ("FAILED", 2)),
    (["JobState=CANCELLED ExitCode=15:0"], ("CANCELLED", 15)),
])
def test_slurm_state_combination(lines, expected):
    assert SlurmJob._combine("\n".join("JobId=1 " + ln for ln in lines)) == expected


# ---------------------------------------------------------------------------- CLI
def test_cli_dry_run(script, tmp_path, capsys, fakebin):
    rc = cli_main(["--scheduler", "slurm", "-n", "2", "--time", "10", "--dry-run",
                   "--workdir", str(tmp_path), script, "--flag", "v"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "#SBATCH --ntasks=2" in out and "#SBATCH --time=00:10:00" in out
    assert "sbatch --parsable %s" % (tmp_path / "calc.sbatch") in out
    assert "%s --flag v" % script in out


def test_cli_submit_prints_id(script, tmp_path, capsys, fakebin):
    fake_command(fakebin, "qsub", "91")
    assert cli_main(["-s", "sge", "-n", "2", "-C", str(tmp_path), script]) == 0
    assert capsys.readouterr().out.strip() == "91"


def test_cli_errors(script, capsys, fakebin):
    assert cli_main(["--scheduler", "slurm", "-n", "0", script]) == 2
    assert "-n must be >= 1" in capsys.readouterr().err        # the flag, not the keyword
    assert cli_main(["--scheduler", "slurm", "--time", "soon", script]) == 2
    assert "bad --time" in capsys.readouterr().err
    assert cli_main(["--scheduler", "slurm", "-C", os.path.dirname(script), script]) == 1
    assert "'sbatch' was not found on PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["--scheduler", "pbs", script])
    assert info.value.code == 2
