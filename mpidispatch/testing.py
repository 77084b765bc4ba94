"""Test code that uses mpidispatch: start a face with workers, tear it all down, or run it
in-process; and a pytest plugin for tests inside an ``mpiexec`` world.

::

    from mpidispatch import MPIExecutor
    from mpidispatch.testing import running

    def test_squares():
        with running(MPIExecutor, workers=2) as ex:       # 2 spawned worker processes
            assert list(ex.map(square, range(4))) == [0, 1, 4, 9]

``running(face, workers)`` works for ``Manager``, ``job``, ``MPIExecutor`` and subclasses of
``JobDispatcher``. On leaving the block (also when the test failed) it closes the face and
makes sure that no worker process it started is left. With ``in_process=True`` (or pytest's
``--mpidispatch-in-process``, or ``MPIDISPATCH_IN_PROCESS=1``) the same block runs every task
serially in the test's own process, without MPI: the same methods and the same errors, for
fast iteration and debuggers.

As a pytest plugin (``pytest_plugins = ["mpidispatch.testing"]`` in a ``conftest.py``) it
adds the ``mpidispatch_face`` fixture and the ``--mpidispatch-in-process`` option, and makes
``mpiexec -n N python -m pytest --with-mpi`` (pytest-mpi) work with the static world: ranks
1..N-1 serve as workers for the whole session while rank 0 runs the tests, whose faces adopt
those ranks. See docs/testing.md.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

from . import _inprocess
from ._mpienv import mpi, under_launcher
from ._util import env_bool
from .dispatcher import JobDispatcher
from .executor import MPIExecutor
from .modeller import job
from .tasks import Manager
from .workers import LocalWorker

__all__ = ["running", "in_process_default"]

#: Part of the command line of every spawned worker process (see ``LocalWorker``).
_WORKER_MARK = "mpidispatch._worker import spawned_main"
#: Seconds a closed face's worker processes get to exit before they are killed.
STOP_WAIT = 10.0

_option_in_process = False  # set by pytest's --mpidispatch-in-process


def in_process_default() -> bool:
    """True when :func:`running` runs faces in-process unless told otherwise: pytest's
    ``--mpidispatch-in-process`` option or ``MPIDISPATCH_IN_PROCESS=1``."""
    return _option_in_process or env_bool("IN_PROCESS", False)


def _world_size() -> int:
    """Ranks of the ``mpiexec`` world (1 in a singleton); starts MPI only under mpiexec."""
    return mpi().COMM_WORLD.Get_size() if under_launcher() else 1


@contextlib.contextmanager
def running(face: Callable[..., Any], workers: int = 2, *, in_process: Optional[bool] = None,
            **options: Any) -> Iterator[Any]:
    """Start ``face`` with ``workers`` worker processes; close it and its workers at the end.

    Args:
        face: ``Manager``, ``job``, ``MPIExecutor``, or a ``JobDispatcher`` subclass (or a
            subclass of any of them).
        workers: in a plain process, the ``LocalWorker`` processes to spawn. Under
            ``mpiexec -n N`` the world's ranks serve instead (as they do for a script):
            ``Manager`` and ``job`` take all of them, ``MPIExecutor`` and ``JobDispatcher``
            at most ``workers``.
        in_process: run every task serially in this process without MPI (default:
            :func:`in_process_default`).
        **options: passed to the face's constructor (``prefetch``, ``setup``, ...).

    Yields:
        The face object (a ``Manager``, ``job``, executor or dispatcher).

    On exit, even after an exception, the face is closed (an executor is shut down with
    its queued futures cancelled), and any worker process it spawned that has not exited
    within ``STOP_WAIT`` seconds is killed, with a ``ResourceWarning`` naming it.
    """
    if in_process is None:
        in_process = in_process_default()
    if in_process:
        obj = _inprocess.start(face, workers, **options)
        try:
            yield obj
        finally:
            _close(obj)
        return
    before = _worker_processes()
    obj = _start(face, workers, options)
    try:
        yield obj
    finally:
        try:
            _close(obj)
        finally:
            _reap(before)


def _start(face: Any, workers: int, options: Dict[str, Any]) -> Any:
    """The face object, with ``workers`` spawned workers unless the world provides them."""
    spawn = workers if _world_size() == 1 else 0
    if not isinstance(face, type):
        raise TypeError("running() takes a face class (Manager, job, MPIExecutor or a "
                        "JobDispatcher subclass), not %r" % (face,))
    if issubclass(face, (MPIExecutor, JobDispatcher)):
        return face(max_workers=workers, **options)
    if issubclass(face, Manager):
        manager = face(**options)
        for _ in range(spawn):
            manager.add_worker(LocalWorker())
        return manager
    if issubclass(face, job):
        modeller_job = face(**options)
        modeller_job.extend(LocalWorker() for _ in range(spawn))
        return modeller_job
    raise TypeError("running() takes Manager, job, MPIExecutor or a JobDispatcher subclass, "
                    "not %r" % (face,))


def _close(obj: Any) -> None:
    if isinstance(obj, (MPIExecutor, _inprocess.InProcessExecutor)):
        obj.shutdown(wait=True, cancel_futures=True)
    else:
        obj.close()


# -- no process left behind ------------------------------------------------------------------
def _children() -> Dict[int, List[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def _worker_processes() -> Set[int]:
    """Live descendants of this process that are spawned mpidispatch workers.

    Spawned workers run under the MPI library's launcher (``prte`` for Open MPI, a
    ``mpiexec`` per spawn for MPICH), both children of this process.
    """
    if not os.path.isdir("/proc"):
        return set()
    tree = _children()
    found, todo = set(), list(tree.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if _WORKER_MARK.encode() in f.read():
                    found.add(pid)
        except OSError:
            continue
    return found


def _reap(before: Set[int], wait: Optional[float] = None) -> List[int]:
    """Wait for the worker processes started since ``before`` to exit; kill the rest."""
    deadline = time.monotonic() + (STOP_WAIT if wait is None else wait)
    left = _worker_processes() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _worker_processes() - before
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if left:
        warnings.warn("mpidispatch.testing: worker process(es) %s did not exit within %g s "
                      "of closing the face and were killed" % (sorted(left), STOP_WAIT),
                      ResourceWarning, stacklevel=3)
    return sorted(left)


# -- pytest plugin ---------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # the helpers above work without pytest
    pytest = None  # type: ignore[assignment]


def _serving_world(config: Any) -> bool:
    """pytest-mpi's --with-mpi (or --only-mpi) under an mpiexec world of 2 or more ranks."""
    with_mpi = any(_option(config, name) for name in ("--with-mpi", "--only-mpi"))
    return with_mpi and _world_size() > 1


def _option(config: Any, name: str) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # pytest-mpi not installed
        return None


def _rank() -> int:
    return mpi().COMM_WORLD.Get_rank()


if pytest is not None:

    def pytest_addoption(parser: Any) -> None:
        parser.getgroup("mpidispatch").addoption(
            "--mpidispatch-in-process", action="store_true", default=False,
            help="mpidispatch.testing.running() runs faces in-process, without MPI "
                 "(tasks run serially in the test process)")

    @pytest.hookimpl(trylast=True)
    def pytest_configure(config: Any) -> None:
        global _option_in_process
        _option_in_process = bool(_option(config, "--mpidispatch-in-process"))
        if _serving_world(config) and _rank() > 0:
            # A worker rank runs no test: its report would only repeat rank 0's collection
            # after rank 0's results. Problems on this rank still reach stderr.
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                config.pluginmanager.unregister(reporter)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(session: Any) -> Optional[bool]:
        """In an mpiexec world: ranks >= 1 serve as workers until rank 0's tests are done.

        Rank 0 constructs (and closes) a face first, the call in which every other rank turns
        into a worker, so that the world forms even when no test needs it; from then on the
        faces that rank 0's tests create adopt the serving ranks. A worker rank returns
        from here when rank 0 exits, having run no test itself: the tests and their
        modules were collected on every rank, so tasks defined in them unpickle anywhere.
        """
        if not _serving_world(session.config):
            return None
        if _rank() == 0:
            Manager().close()
            return None
        try:
            Manager(output=None)  # serves; leaves by SystemExit when rank 0 is done
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        return True

    @pytest.fixture
    def mpidispatch_face() -> Iterator[Callable[..., Any]]:
        """``mpidispatch_face(face, workers=2, **options)``: start a face (see
        :func:`running`); every face started is closed at the end of the test, with no
        worker process left, whether the test passed or not."""
        with contextlib.ExitStack() as stack:
            def start(face: Callable[..., Any], workers: int = 2, **options: Any) -> Any:
                return stack.enter_context(running(face, workers, **options))
            yield start
else:  # pragma: no cover
    def mpidispatch_face() -> None:
        raise RuntimeError("the mpidispatch_face fixture needs pytest")
