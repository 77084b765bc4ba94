"""A static world across hosts (``mpiexec`` with a host list), every face once.

The manager runs on h0 alone; workers are ranks on h1 and h2. Every task reports
``socket.gethostname()`` and its world rank, and each result is checked against the host the
host list put that rank on: results come from the right hosts, each task exactly once.
"""
import json
import sys

import pytest

from conftest import BACKEND

HOSTLIST = "h0:1,h1:2,h2:2"


def run_face(hosts, tmp_path, face, ntasks=40):
    argv = hosts.mpiexec(HOSTLIST, 5) + [sys.executable, hosts.scenario("faces.py"), face,
                                         str(ntasks)]
    run = hosts.run("h0", argv, tmp_path, timeout=60)
    assert run.returncode == 0, run
    return run


def check_results(hosts, run, ntasks):
    """Each task once; each ran on the host of its rank; both worker hosts took some."""
    rank_host = hosts.rank_hosts(HOSTLIST)
    results = json.loads(run.value("RESULTS"))
    assert sorted(r[0] for r in results) == list(range(ntasks)), run
    for task, host, rank in results:
        assert rank >= 1 and host == rank_host[rank], (task, host, rank, run)
    assert {r[1] for r in results} == {"h1", "h2"}, run
    assert run.value("MANAGER") == "h0"
    return results


@pytest.mark.parametrize("face", ["imp", "dispatcher", "executor"])
def test_face_across_hosts(hosts, tmp_path, face):
    run = run_face(hosts, tmp_path, face)
    check_results(hosts, run, 40)
    if face == "dispatcher":
        assert run.value("LOCAL") == "false"
    assert hosts.leftovers() == []


def test_modeller_job_and_message_passing_across_hosts(hosts, tmp_path):
    run = run_face(hosts, tmp_path, "modeller", ntasks=20)
    check_results(hosts, run, 20)
    messages = json.loads(run.value("MESSAGES"))
    # worker index i is world rank i + 1
    rank_host = hosts.rank_hosts(HOSTLIST)
    assert [(i, host) for i, host, _ in messages] == [(i, rank_host[i + 1]) for i in range(4)]
    assert all(ok for _, _, ok in messages), run
    assert hosts.leftovers() == []


def test_python_m_mpidispatch_with_a_host_file(hosts, tmp_path):
    """``python -m mpidispatch -n 5 --hostfile F``: the launcher's own host file format."""
    hostfile = tmp_path / "hosts"
    lines = ["h0:1", "h1:2", "h2:2"]
    if BACKEND == "openmpi":
        lines = [line.replace(":", " slots=") for line in lines]
    hostfile.write_text("\n".join(lines) + "\n")
    argv = [sys.executable, "-m", "mpidispatch", "-n", "5", "--hostfile", str(hostfile),
            hosts.scenario("faces.py"), "imp", "40"]
    run = hosts.run("h0", argv, tmp_path, timeout=60)
    assert run.returncode == 0, run
    check_results(hosts, run, 40)
    assert hosts.leftovers() == []
