"""A Grid Engine cell with two execution hosts on the namespace hosts (.ci/sge-multinode.sh):
sge_qmaster on h0 (the submit host), sge_execd on h1 and h2, PE "mpi" ($round_robin). The
one-node CI cell of .ci/schedulers.sh is not touched.

- ``mpidispatch submit --scheduler sge -n 4 --pe mpi``: a static world over both execution
  hosts, each result from the host of its rank;
- ``SGEPEWorkerArray()`` inside a PE job: one spawned worker per slot, on the slot's host
  (MPICH; the Open MPI wheel refuses spawns onto other hosts from a plain-python manager).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import BACKEND, ROOT

SGE_SH = ROOT / ".ci" / "sge-multinode.sh"
ENV = {"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "mdmulti", "SGE_QMASTER_PORT": "6544",
       "SGE_EXECD_PORT": "6545"}

pytestmark = pytest.mark.sge


@pytest.fixture(scope="module")
def sge2(cluster):
    """The two-execution-host cell, started here if needed (and then stopped at the end)."""
    if not (shutil.which("sge_qmaster", path="/usr/sbin:" + os.environ.get("PATH", ""))
            and shutil.which("qsub")):
        pytest.skip("Grid Engine is not installed (.ci/schedulers.sh start installs it)")
    started = False
    if subprocess.run(["bash", str(SGE_SH), "status"], capture_output=True,
                      timeout=60).returncode != 0:
        proc = subprocess.run(["bash", str(SGE_SH), "start"], capture_output=True, text=True,
                              timeout=180)
        if proc.returncode != 0:
            pytest.fail("could not start the Grid Engine cell: %s%s"
                        % (proc.stdout[-1500:], proc.stderr[-1500:]))
        started = True
    yield cluster
    if started:
        subprocess.run(["bash", str(SGE_SH), "stop"], capture_output=True, timeout=120)


def test_submit_static_world_across_two_execution_hosts(sge2, tmp_path):
    argv = [sys.executable, "-m", "mpidispatch", "submit", "--scheduler", "sge", "-n", "4",
            "--pe", "mpi", "--wait", sge2.scenario("faces.py"), "imp", "40"]
    run = sge2.run("h0", argv, tmp_path, timeout=90, env=dict(ENV))
    assert run.returncode == 0, run
    text = "".join(p.read_text() for p in tmp_path.glob("faces-*.out"))
    results = json.loads(text.split("RESULTS ", 1)[1].splitlines()[0])
    assert sorted(r[0] for r in results) == list(range(40)), text
    # the PE gives h1 2 slots and h2 2 slots; rank 0 (the manager) on the job's master, h1
    assert {rank: host for _, host, rank in results} == {1: "h1", 2: "h2", 3: "h2"}, text
    assert "MANAGER h1" in text


def test_sge_pe_worker_array_across_execution_hosts(sge2, tmp_path):
    job = tmp_path / "job.sh"
    job.write_text("#!/bin/bash\nexec %s %s --sge-pe\n"
                   % (sys.executable, sge2.scenario("spawn.py")))
    job.chmod(0o755)
    argv = ["qsub", "-sync", "y", "-V", "-cwd", "-j", "y", "-o", "pe.out", "-pe", "mpi", "4",
            str(job)]
    run = sge2.run("h0", argv, tmp_path, timeout=90,
                   env=dict(ENV, MPIDISPATCH_START_TIMEOUT="20"))
    assert run.returncode == 0, run
    text = (tmp_path / "pe.out").read_text()
    workers = json.loads(text.split("WORKERS ", 1)[1].splitlines()[0])
    results = json.loads(text.split("RESULTS ", 1)[1].splitlines()[0])
    assert "MANAGER h1" in text, text
    # IMP's rule: one worker per slot, a plain LocalWorker in the manager's own slot
    assert [w[1] for w in workers] == [None, "h1", "h2", "h2"], text
    assert sorted(r[0] for r in results) == list(range(40)), text
    if BACKEND == "mpich":
        assert [w[2] for w in workers] == ["h1", "h1", "h2", "h2"], text
        assert {h for _, h in results} == {"h1", "h2"}, text
    else:
        assert [w[3] for w in workers] == ["ready", "ready", "dead", "dead"], text
        assert {h for _, h in results} == {"h1"}, text
