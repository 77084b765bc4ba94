"""A real three-node Slurm on the namespace hosts (.ci/slurm-multinode.sh): slurmctld on h0,
one slurmd per host. Clients run on h0 with SLURM_CONF pointing at that cluster; the
one-node CI Slurm of .ci/schedulers.sh is not touched.

- ``sbatch -N 3`` with ``srun`` across the nodes;
- ``mpidispatch submit -n 5``: a static world over the allocation's nodes, each result from
  the host of its rank;
- ``SlurmWorkerArray()`` inside a multi-node allocation (spawned workers, one per slot);
- ``SlurmWorkerArray(n)`` from outside: array tasks on other nodes join the manager (MPICH).
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import BACKEND, ROOT

SLURM_SH = ROOT / ".ci" / "slurm-multinode.sh"
STATE = os.environ.get("MPIDISPATCH_SLURM_STATE", "/run/mpidispatch-slurm")
CONF = os.path.join(STATE, "slurm.conf")

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm3(cluster):
    """The three-node Slurm, started here if needed (and then stopped at the end)."""
    if not (shutil.which("slurmctld", path="/usr/sbin:" + os.environ.get("PATH", ""))
            and shutil.which("sbatch")):
        pytest.skip("Slurm is not installed (.ci/schedulers.sh start installs it)")
    started = False
    if subprocess.run(["bash", str(SLURM_SH), "status"], capture_output=True,
                      timeout=60).returncode != 0:
        proc = subprocess.run(["bash", str(SLURM_SH), "start"], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            pytest.fail("could not start the three-node Slurm: %s%s"
                        % (proc.stdout[-1500:], proc.stderr[-1500:]))
        started = True
    yield cluster
    if started:
        subprocess.run(["bash", str(SLURM_SH), "stop"], capture_output=True, timeout=120)


def slurm_env(hosts, **more):
    """Inside Slurm the launchers find the nodes themselves: no fake ssh for MPI."""
    env = {"SLURM_CONF": CONF, "HYDRA_LAUNCHER": "slurm", "HYDRA_LAUNCHER_EXEC": "srun",
           "PRTE_MCA_plm_ssh_agent": "ssh", "MPIDISPATCH_ARRAY_POLL": "0.5"}
    env.update(more)
    return env


def sbatch_and_wait(hosts, tmp_path, args, timeout=40):
    """Submit on h0, wait (bounded) until the job has left the queue; its output text."""
    run = hosts.run("h0", ["sbatch", "--parsable", "-o", "job-%j.out"] + args, tmp_path,
                    env=slurm_env(hosts))
    assert run.returncode == 0, run
    job = run.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = hosts.run("h0", ["squeue", "-h", "-j", job, "-o", "%T"], tmp_path,
                      env=slurm_env(hosts))
        if not q.stdout.strip():
            break
        time.sleep(0.2)
    else:
        hosts.run("h0", ["scancel", job], tmp_path, env=slurm_env(hosts))
        pytest.fail("job %s still queued after %g s" % (job, timeout))
    out = tmp_path / ("job-%s.out" % job)
    return out.read_text() if out.exists() else ""


def test_sbatch_srun_across_three_nodes(slurm3, tmp_path):
    text = sbatch_and_wait(slurm3, tmp_path, ["-N", "3", "-n", "3", "--wrap",
                                              "srun hostname; echo NODES=$SLURM_JOB_NODELIST"])
    assert sorted(w for w in text.split() if w.startswith("h")) == ["h0", "h1", "h2"], text
    assert "NODES=h[0-2]" in text, text


def test_submit_static_world_across_nodes(slurm3, tmp_path):
    """`mpidispatch submit -n 5`: 5 ranks over 3 two-CPU nodes (h0:2, h1:2, h2:1)."""
    argv = [sys.executable, "-m", "mpidispatch", "submit", "--scheduler", "slurm", "-n", "5",
            "--wait", slurm3.scenario("faces.py"), "imp", "40"]
    run = slurm3.run("h0", argv, tmp_path, timeout=60, env=slurm_env(slurm3))
    assert run.returncode == 0, run
    text = "".join(p.read_text() for p in tmp_path.glob("faces-*.out"))
    results = json.loads(text.split("RESULTS ", 1)[1].splitlines()[0])
    assert sorted(r[0] for r in results) == list(range(40)), text
    rank_host = {rank: host for _, host, rank in results}
    # block distribution: ranks fill the nodes in order (before the mapping fix, Open MPI
    # put every rank on h0)
    assert rank_host == {1: "h0", 2: "h1", 3: "h1", 4: "h2"}, text
    assert "MANAGER h0" in text


def test_slurm_worker_array_inside_a_multinode_allocation(slurm3, tmp_path):
    """SlurmWorkerArray() spawns a worker per slot of the allocation, on that slot's host (IMP's
    rule: the manager's own slot gets a plain LocalWorker)."""
    wrap = "%s %s --slurm-allocation" % (sys.executable, slurm3.scenario("spawn.py"))
    text = sbatch_and_wait(slurm3, tmp_path, ["-n", "5", "--wrap", wrap], timeout=60)
    assert "SECONDS" in text, text
    workers = json.loads(text.split("WORKERS ", 1)[1].splitlines()[0])
    results = json.loads(text.split("RESULTS ", 1)[1].splitlines()[0])
    assert [w[1] for w in workers] == [None, "h0", "h1", "h1", "h2"], text
    assert sorted(r[0] for r in results) == list(range(40)), text
    if BACKEND == "mpich":
        assert [w[2] for w in workers] == ["h0", "h0", "h1", "h1", "h2"], text
        assert {h for _, h in results} == {"h0", "h1", "h2"}, text
    else:
        # Open MPI: a plain-python manager cannot spawn onto other hosts; refused at once,
        # the run goes on with the worker on its own host
        assert [w[3] for w in workers] == ["ready", "ready", "dead", "dead", "dead"], text
        assert {h for _, h in results} == {"h0"}, text
        errors = json.loads(text.split("START_ERRORS ", 1)[1].splitlines()[0])
        assert len(errors) == 3 and all("plain python" in e for e in errors), text


@pytest.mark.skipif(BACKEND != "mpich", reason="joining workers need the MPICH wheel (Open MPI "
                    "refuses SlurmWorkerArray(n) with ConnectNotSupportedError)")
def test_submitted_array_lands_on_other_nodes_and_joins(slurm3, tmp_path):
    argv = [sys.executable, slurm3.scenario("spawn.py"), "--slurm-submit", "4",
            "--exclude=h0"]
    run = slurm3.run("h0", argv, tmp_path, timeout=60, env=slurm_env(slurm3))
    assert run.returncode == 0, run
    workers = json.loads(run.value("WORKERS"))
    results = json.loads(run.value("RESULTS"))
    assert sorted(w[2] for w in workers) == ["h1", "h1", "h2", "h2"], run
    assert sorted(r[0] for r in results) == list(range(40)), run
    assert {h for _, h in results} == {"h1", "h2"}, run
