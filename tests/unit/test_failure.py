"""The failure policy, driven with plain objects (no MPI)."""
from collections import OrderedDict
from types import SimpleNamespace

from mpidispatch._failure import FailurePolicy
from mpidispatch._options import resolve
from mpidispatch.errors import TaskTimeoutError, WorkerLostError
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)


def worker(**kw):
    base = dict(state="ready", pid=100, host="here", inflight=OrderedDict(), last_heard=0.0,
                busy_since=0.0, start_time=0.0, log_file="w.log", exitcode=None,
                start_timeout=None)
    base.update(kw)
    return SimpleNamespace(**base)


def item(index=0, timeout=None):
    it = SimpleNamespace(index=index, task="t%d" % index, tries=0, killed=0, worker=None,
                         error=None, timeout=timeout, work_id=index + 1)
    it.describe = lambda: "task #%d" % it.index
    return it


def policy(pids=None, **opts):
    pids = pids or {}
    return FailurePolicy(resolve(**opts), "here", pid_status=lambda pid: pids.get(pid))


def test_healthy_worker_passes():
    assert policy().check(worker(), now=1.0) is None


def test_dead_pid_is_lost():
    v = policy(pids={100: "gone"}).check(worker(), now=1.0)
    assert v.kind == "lost" and "gone" in v.reason and not v.kill


def test_remote_worker_silent_with_a_task_is_lost_and_killed():
    w = worker(host="elsewhere", last_heard=0.0)
    w.inflight[1] = item()
    v = policy(heartbeat_timeout=5).check(w, now=6.0)
    assert v.kind == "lost" and v.kill and "heartbeat" in v.reason
    assert policy(heartbeat_timeout=5).check(w, now=4.0) is None


def test_silent_remote_worker_its_watcher_calls_busy_is_left_to_run():
    """Issue 9.12: starved heartbeat, but the watcher (a process beside it) says running."""
    from mpidispatch._watch import WatchReport
    p = policy(heartbeat_timeout=5)
    for state in "RSD":
        w = worker(host="elsewhere", last_heard=0.0, quiet_noted=None,
                   watch=WatchReport(seen=5.5, sequence=9, state=state, cpu_ticks=600))
        w.inflight[1] = item()
        assert p.check(w, now=6.0) is None
        assert w.quiet_noted == 0.0     # its silence was logged once


def test_silent_remote_worker_its_watcher_calls_stopped_or_silent_is_lost():
    from mpidispatch._watch import WatchReport
    p = policy(heartbeat_timeout=5)
    stopped = worker(host="elsewhere", watch=WatchReport(5.5, 9, "T", 600))
    stopped.inflight[1] = item()
    v = p.check(stopped, now=6.0)
    assert v.kind == "lost" and v.kill and "reports the process stopped" in v.reason
    stale = worker(host="elsewhere", watch=WatchReport(0.5, 9, "R", 600))  # host silent too
    stale.inflight[1] = item()
    v = p.check(stale, now=6.0)
    assert v.kind == "lost" and "nor a word from its watcher" in v.reason
    unknown = worker(host="elsewhere", watch=WatchReport(5.5, 9, "?", 0))  # no /proc there
    unknown.inflight[1] = item()
    assert p.check(unknown, now=6.0).kind == "lost"


def test_remote_idle_worker_is_not_lost_for_silence():
    assert policy(heartbeat_timeout=5).check(worker(host="elsewhere"), now=60.0) is None


def test_start_timeout():
    w = worker(state="starting", start_time=0.0)
    assert policy(start_timeout=10).check(w, now=5.0) is None
    assert policy(start_timeout=10).check(w, now=11.0).kind == "start"
    w.start_timeout = 20  # the worker's own limit wins
    assert policy(start_timeout=10).check(w, now=11.0) is None


def test_task_timeout_names_the_task_as_the_user_knows_it():
    w = worker(busy_since=0.0)
    it = item(index=51)
    w.inflight[1] = it
    p = policy(task_timeout=2)
    v = p.check(w, now=3.0)
    assert v.kind == "timeout" and v.item is it and v.limit == 2
    err = p.timeout_error(v, w)
    assert isinstance(err, TaskTimeoutError) and "task #51" in str(err)
    assert err.index == 51 and err.task == "t51"


def test_only_the_running_task_counts_a_try():
    running, waiting = item(0), item(1)
    requeue, give_up = policy().after_loss(worker(), [running, waiting], "killed", 3)
    assert requeue == [running, waiting] and not give_up
    assert (running.tries, waiting.tries) == (1, 0)


def test_given_up_after_max_retries():
    it = item()
    p = policy(max_retries=2)
    for _ in range(2):
        requeue, _ = p.after_loss(worker(), [it], "killed", 5)
        assert requeue == [it]
    requeue, give_up = p.after_loss(worker(), [it], "killed", 5)
    assert give_up == [it] and isinstance(it.error, WorkerLostError)
    assert it.error.index == 0 and "max_retries=2" in str(it.error)


def test_poison_task_is_not_retried_on_the_last_live_worker():
    it = item(index=7)
    requeue, give_up = policy(max_retries=10).after_loss(worker(), [it], "exit 0", 1)
    assert give_up == [it] and "last live worker" in str(it.error)
    assert it.error.index == 7


def test_fault_tolerant_mode_retries_on_replacements():
    it = item()
    requeue, _ = policy(max_retries=10, fault_tolerant=True).after_loss(
        worker(), [it], "exit 0", 1)
    assert requeue == [it]


def test_respawn_budget_is_fixed_per_run():
    p = policy(fault_tolerant=True)
    allowed = 0
    while p.may_replace(requested=2):
        allowed += 1
        assert allowed < 100, "the budget never ran out"
    assert allowed == 2 * 2 + 4 == p.respawns


def test_explicit_budget_and_no_replacements_without_fault_tolerance():
    assert not policy().may_replace(2)
    p = policy(fault_tolerant=True, respawn_budget=1)
    assert p.may_replace(2) and not p.may_replace(2)
