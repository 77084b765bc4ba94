"""Faults across hosts: every result exactly once, and nothing left on any host afterwards.

A static world of 5 ranks (manager alone on h0; workers on h1 and h2) started with
``python -m mpidispatch --ft -n 5 --host ...``. The scenario injects the fault itself once a
quarter of the results are in, on a busy worker of h2:

- ``kill``: SIGKILL. Open MPI's ULFM reports it at once. (MPICH: not supported in a static
  world, see docs/fault-tolerance.md; skipped.)
- ``stop``: SIGSTOP. Only the heartbeat finds it (MPIDISPATCH_HEARTBEAT_TIMEOUT, 4 s here);
  at the end ``python -m mpidispatch`` ends the launcher that waits for the stopped rank.
- ``netcut``: h2's eth0 down until the manager has given up on its busy workers (longer than
  the heartbeat timeout), then up again; those workers then leave when told.
"""
import json
import sys

import pytest

from conftest import BACKEND

pytestmark = pytest.mark.fault

HOSTLIST = "h0:1,h1:2,h2:2"
HEARTBEAT = 4.0


def run_fault(hosts, tmp_path, mode, ntasks=200):
    # MPICH refuses fault_tolerant=True in a static world (a rank's death ends it): there the
    # manager runs without it, still under mpiexec -disable-auto-cleanup (--ft); a silent
    # worker's tasks are requeued all the same.
    ft = BACKEND == "openmpi"
    argv = [sys.executable, "-m", "mpidispatch", "--ft", "-n", "5", "--host", HOSTLIST,
            hosts.scenario("faults.py"), mode, str(ntasks), "ft" if ft else "noft"]
    env = {"MULTIHOST_AGENT": hosts.agent, "MPIDISPATCH_HEARTBEAT_TIMEOUT": str(HEARTBEAT),
           "MPIDISPATCH_LAUNCHER_GRACE": "2"}
    run = hosts.run("h0", argv, tmp_path, timeout=45, env=env)
    assert run.returncode == 0, run
    assert run.value("FAULT_ERROR") == "None", run
    assert run.value("EXACTLY_ONCE") == "True", run
    results = json.loads(run.value("RESULTS"))
    assert len(results) == ntasks
    # each result names the host its task ran on: a worker host, or h0 for a replacement
    assert {host for _, host in results} <= {"h0", "h1", "h2"}, run
    assert "h1" in {host for _, host in results}
    assert run.value("VICTIM").startswith("h2 "), run
    assert int(run.value("LOST")) >= 1, run
    assert hosts.leftovers() == [], run
    # fault-tolerant mode warns, once, that a lost host would end this run
    assert (run.stdout + run.stderr).count("a lost host ends the whole run") == int(ft), run
    return run


@pytest.mark.skipif(BACKEND == "mpich", reason="MPICH: a dead rank of a static world is not "
                    "supported (docs/fault-tolerance.md); measured here: the manager "
                    "segfaulted or lost every rank of that host")
def test_worker_killed_on_another_host_ulfm(hosts, tmp_path):
    run = run_fault(hosts, tmp_path, "kill")
    assert "process failed" in run.value("VICTIM_DEATH"), run
    assert float(run.value("DETECT")) < 1.0, run    # ULFM, not the heartbeat
    assert run.value("LOST") == "1", run


def test_worker_stopped_on_another_host_heartbeat(hosts, tmp_path):
    run = run_fault(hosts, tmp_path, "stop")
    assert "no heartbeat" in run.value("VICTIM_DEATH"), run
    # the watcher beside it (on h2, over UDP to h0) told stopped from busy
    assert "watcher reports the process stopped" in run.value("VICTIM_DEATH"), run
    # silent for HEARTBEAT seconds since it was last heard, which may be up to one
    # heartbeat interval (HEARTBEAT/4) before the fault
    assert HEARTBEAT * 0.75 <= float(run.value("DETECT")) < HEARTBEAT + 3, run
    assert run.value("LOST") == "1", run


def test_network_to_a_host_cut_then_restored(hosts, tmp_path):
    run = run_fault(hosts, tmp_path, "netcut")
    assert "no heartbeat" in run.value("VICTIM_DEATH"), run
    assert "nor a word from its watcher" in run.value("VICTIM_DEATH"), run
    assert HEARTBEAT * 0.75 <= float(run.value("DOWN")) < HEARTBEAT + 3, run
    # tasks of h2 went to others; h2's workers took none after the cut
    assert int(run.value("LOST")) in (1, 2), run


def test_tasks_holding_the_gil_on_another_host_are_not_lost(hosts, tmp_path):
    """Issue 9.12 across hosts: 4 ranks on h1 and h2 each run a task that holds Python's
    lock for 3 s with a 1 s heartbeat timeout; the watchers (UDP from h1/h2 to h0) say
    they are running, so no worker is lost and every result comes once."""
    argv = [sys.executable, "-m", "mpidispatch", "--ft", "-n", "5", "--host", HOSTLIST,
            hosts.scenario("faults.py"), "gil", "8", "noft"]
    env = {"MULTIHOST_AGENT": hosts.agent, "MPIDISPATCH_HEARTBEAT_TIMEOUT": "1",
           "HOLD": "3", "MPIDISPATCH_LAUNCHER_GRACE": "2"}
    run = hosts.run("h0", argv, tmp_path, timeout=60, env=env)
    assert run.returncode == 0, run
    assert run.value("EXACTLY_ONCE") == "True", run
    assert run.value("LOST") == "0", run
    assert {host for _, host in json.loads(run.value("RESULTS"))} == {"h1", "h2"}, run
    assert "its process is running" in run.stderr, run
    assert hosts.leftovers() == [], run
