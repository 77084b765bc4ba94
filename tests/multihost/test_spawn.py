"""Spawned ``LocalWorker(host=...)`` on other hosts, from h0.

What works depends on the MPI wheel (measured, see docs/multihost.md):
- MPICH: every spawn onto another host works, from a manager under a host list and from a
  plain ``python`` manager with ``HYDRA_LAUNCHER=ssh``. With mpidispatch's default
  ``HYDRA_LAUNCHER=fork`` it would silently start the worker on h0: refused at once instead.
- Open MPI 5.0.x wheel: under a host list the first spawn onto another host works and any
  later one would hang in MPI_Comm_spawn (PRRTE 3.0.11); from a plain ``python`` manager none
  works. Both are refused at once with the cause, never after start_timeout.
"""
import json
import sys

import pytest

from conftest import BACKEND

HOSTLIST = "h0:1,h1:2,h2:2"
WANTED = ["h1", "h2", "h1", "h2"]


def spawn_run(hosts, tmp_path, under_host_list, wanted=WANTED, prefix=()):
    if under_host_list:
        argv = [sys.executable, "-m", "mpidispatch", "-n", "1", "--host", HOSTLIST]
    else:
        argv = [sys.executable]
    argv = list(prefix) + argv + [hosts.scenario("spawn.py")] + wanted
    run = hosts.run("h0", argv, tmp_path, timeout=40, env={"MPIDISPATCH_START_TIMEOUT": "20"})
    assert run.returncode == 0, run
    assert float(run.value("SECONDS")) < 15, run   # nothing waited out start_timeout
    assert hosts.leftovers() == [], run
    return (run, json.loads(run.value("RESULTS")), json.loads(run.value("WORKERS")),
            json.loads(run.value("START_ERRORS")))


def check_on_requested_hosts(run, results, workers):
    """Every worker that started runs where it was asked to; tasks each once, from there."""
    started = [w for w in workers if w[3] == "stopped" or w[3] == "ready"]
    assert started, run
    for index, wanted, actual, state in started:
        assert actual == wanted, run
    assert sorted(r[0] for r in results) == list(range(40)), run
    assert {host for _, host in results} <= {w[1] for w in started}, run


@pytest.mark.parametrize("under_host_list", [True, False], ids=["host-list", "plain-python"])
def test_spawn_onto_other_hosts(hosts, tmp_path, under_host_list):
    run, results, workers, errors = spawn_run(hosts, tmp_path, under_host_list)
    if BACKEND == "mpich":
        assert errors == [], run
        check_on_requested_hosts(run, results, workers)
        assert {host for _, host in results} == {"h1", "h2"}, run
    elif under_host_list:
        # the first spawn onto another host works; the next ones are refused at once
        check_on_requested_hosts(run, results, workers)
        assert [w[2] for w in workers][:1] == ["h1"], run
        assert len(errors) == 3 and all("only once per run" in e for e in errors), run
        assert {host for _, host in results} == {"h1"}, run
    else:
        assert results == [] and len(errors) == 4, run
        assert all("plain python" in e and "static world" in e for e in errors), run
        assert "cannot start worker" in run.value("RUN_ERROR"), run


@pytest.mark.skipif(BACKEND != "mpich", reason="HYDRA_LAUNCHER is MPICH's")
def test_spawn_with_fork_launcher_is_refused(hosts, tmp_path):
    run, results, workers, errors = spawn_run(hosts, tmp_path, False, ["h1"],
                                              prefix=["env", "-u", "HYDRA_LAUNCHER"])
    assert results == [] and len(errors) == 1, run
    assert "HYDRA_LAUNCHER=fork" in errors[0] and "HYDRA_LAUNCHER=ssh" in errors[0], run
