"""One ordered exit hook for the whole library.

At interpreter exit, before MPI finalizes, things must stop in this order: executors finish
their futures (they still need the engines), engines stop their workers, worker arrays
cancel their batch jobs, and rank 0 of a static world releases the other ranks. Before,
four ``atexit`` registrations did this in an order implied by import order; now each part
registers its hook here with its stage, and one ``atexit`` hook runs them by stage.

The hook is registered with ``atexit`` the first time :func:`register` is called, which is
after ``mpi4py.MPI`` was imported (every caller has MPI up), so it runs before mpi4py's own
finalization hook (``atexit`` runs hooks last-in, first-out).
"""
from __future__ import annotations

import atexit
import logging
from typing import Callable, List, Tuple

log = logging.getLogger("mpidispatch")

#: Stages, in the order their hooks run at exit.
EXECUTORS, ENGINES, ARRAYS, WORLD = 10, 20, 30, 40

_hooks: List[Tuple[int, int, Callable[[], None]]] = []
_registered = False


def register(fn: Callable[[], None], stage: int) -> None:
    """Run ``fn`` at exit in ``stage`` (see the constants); registering twice is a no-op."""
    global _registered
    if any(h[2] is fn for h in _hooks):
        return
    _hooks.append((stage, len(_hooks), fn))
    if not _registered:
        atexit.register(run_exit_hooks)
        _registered = True


def run_exit_hooks() -> None:
    """Run every registered hook once, by stage; a failing hook is logged, not raised."""
    hooks = sorted(_hooks)
    _hooks.clear()
    for _, _, fn in hooks:
        try:
            fn()
        except Exception:
            log.exception("error in mpidispatch exit hook %r", fn)
