"""Engine options: one documented type, one precedence rule, one validation.

Every face takes the same engine options as keywords. Each option's value comes from, in
order: the keyword the user passed, the environment variable ``MPIDISPATCH_<NAME>``, the
default below. An unknown keyword is a ``TypeError`` that names the known ones; a bad value
is a ``ValueError`` (or ``TypeError``) raised at the call that passed it, not later.

Why one type: before, four faces passed ``**options`` through with their own defaults
(``prefetch`` was 2 in one face and 1 in another) and the engine read some settings from the
environment at arbitrary moments. Now :func:`resolve` is the only place an option is read.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

from ._util import env_get


@dataclasses.dataclass(frozen=True)
class Options:
    """The engine's options (all faces accept them as keywords).

    Attributes:
        python: command line that starts a worker's Python (default: this interpreter).
        output: ``%d`` pattern of the per-worker log files (``None``: no log files).
        start_timeout: seconds a worker may take to start and say hello.
            Env ``MPIDISPATCH_START_TIMEOUT``; default 30.
        prefetch: tasks in flight per worker (``>= 1``); more hides the round trip between
            tiny tasks, 1 balances long unequal tasks best. Env ``MPIDISPATCH_PREFETCH``;
            default 2 (the dispatcher face: 1, PyOPUS's one job per worker).
        fault_tolerant: spawn a replacement for each worker that dies.
        max_retries: times a task is retried after its worker died before it fails with
            :class:`~mpidispatch.WorkerLostError`. Env ``MPIDISPATCH_MAX_RETRIES``; default 3.
        respawn_budget: replacements a fault-tolerant run may spawn in all (default:
            2 x the workers asked for + 4; replacements never raise it).
        task_timeout: seconds a task may run before its worker is stopped (``None``: no
            limit). Env ``MPIDISPATCH_TASK_TIMEOUT``.
        heartbeat_timeout: seconds without a word from a worker on another host (which the
            manager cannot check by pid) before it counts as lost. Env
            ``MPIDISPATCH_HEARTBEAT_TIMEOUT``; default 60.
        health_interval: seconds between liveness checks. Env
            ``MPIDISPATCH_HEALTH_INTERVAL``; default 0.2.
        stop_timeout: seconds a stopping worker may take before it is killed. Env
            ``MPIDISPATCH_STOP_TIMEOUT``; default 10.
        force_heartbeat: use heartbeats even for workers on this host (tests). Env
            ``MPIDISPATCH_FORCE_HEARTBEAT``; default false.
        batch: most tasks sent to a worker in one message. ``None`` (default): automatic,
            several small tasks per message once tasks are measured to be much shorter than
            a message round trip; ``1``: one task per message. Env ``MPIDISPATCH_BATCH``
            (``auto`` for None). Only tasks without a time limit are batched.
        journal: a run journal file (``run.db``): every task's outcome is recorded there,
            and a task whose outcome is recorded is not run again (docs/journal.md).
        retry_failed: with a journal, run tasks recorded as failed again instead of
            returning their recorded error.
    """

    python: Optional[str] = None
    output: Optional[str] = "worker%d.output"
    start_timeout: float = 30.0
    prefetch: int = 2
    fault_tolerant: bool = False
    max_retries: int = 3
    respawn_budget: Optional[int] = None
    task_timeout: Optional[float] = None
    heartbeat_timeout: float = 60.0
    health_interval: float = 0.2
    stop_timeout: float = 10.0
    force_heartbeat: bool = False
    batch: Optional[int] = None
    journal: Optional[str] = None
    retry_failed: bool = False


#: Options that may come from the environment, and how to parse them.
_FROM_ENV = {
    "start_timeout": float, "prefetch": int, "max_retries": int, "task_timeout": float,
    "heartbeat_timeout": float, "health_interval": float, "stop_timeout": float,
    "force_heartbeat": "bool", "respawn_budget": int, "batch": int, "journal": str,
    "retry_failed": "bool",
}
_FIELDS = {f.name for f in dataclasses.fields(Options)}

#: Every environment variable mpidispatch reads, with what it does (``mpidispatch info``).
ENVIRONMENT: Dict[str, str] = {
    "MPIDISPATCH_START_TIMEOUT": "seconds a worker may take to start (30)",
    "MPIDISPATCH_PREFETCH": "tasks in flight per worker (2)",
    "MPIDISPATCH_MAX_RETRIES": "retries of a task whose worker died (3)",
    "MPIDISPATCH_RESPAWN_BUDGET": "replacements per fault-tolerant run (2 x workers + 4)",
    "MPIDISPATCH_TASK_TIMEOUT": "default seconds a task may run (no limit)",
    "MPIDISPATCH_HEARTBEAT_TIMEOUT": "seconds of silence before a remote worker is lost (60)",
    "MPIDISPATCH_HEALTH_INTERVAL": "seconds between liveness checks (0.2)",
    "MPIDISPATCH_STOP_TIMEOUT": "seconds a stopping worker may take before it is killed (10)",
    "MPIDISPATCH_FORCE_HEARTBEAT": "heartbeats for local workers too (false; tests)",
    "MPIDISPATCH_BATCH": "most tasks per message (auto: batch tasks much shorter than a "
                         "round trip; 1: off)",
    "MPIDISPATCH_WATCHDOG_INTERVAL": "seconds between a worker's checks that its manager "
                                     "lives (0.5)",
    "MPIDISPATCH_BACKOFF_SPIN": "seconds an idle process yields before it sleeps (0.02)",
    "MPIDISPATCH_BACKOFF_MAX": "longest sleep of an idle process, seconds (0.01)",
    "MPIDISPATCH_CHUNK_BYTES": "largest single MPI message of a big buffer (1 GiB)",
    "MPIDISPATCH_JOURNAL": "run journal file for every face (none); `submit --journal` sets it",
    "MPIDISPATCH_RETRY_FAILED": "with a journal, rerun tasks recorded as failed (false)",
    "MPIDISPATCH_SUMMARY_AFTER": "print the summary line after runs this long, seconds (60)",
}

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def _from_env(name: str) -> Any:
    """The value of option ``name`` from ``MPIDISPATCH_<NAME>``, or ``_MISSING``."""
    raw = env_get(name.upper()).strip()
    if not raw:
        return _MISSING
    kind = _FROM_ENV[name]
    try:
        if kind == "bool":
            low = raw.lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise ValueError(raw)
        if raw.lower() in ("none", "inf") and name in ("task_timeout", "respawn_budget"):
            return None
        if raw.lower() in ("none", "auto") and name == "batch":
            return None
        return kind(raw)  # type: ignore[operator]
    except ValueError:
        what = "boolean" if kind == "bool" else getattr(kind, "__name__", kind)
        raise ValueError("MPIDISPATCH_%s=%r is not a valid %s"
                         % (name.upper(), raw, what)) from None


_MISSING = object()


def resolve(defaults: Optional[Dict[str, Any]] = None, **given: Any) -> Options:
    """Build :class:`Options` from keywords, the environment and defaults (in that order).

    Args:
        defaults: a face's own defaults, which replace the built-in ones (e.g. the
            dispatcher's ``prefetch=1``); the environment still takes precedence over them.
        **given: the user's keywords; ``None`` means "not given" for options whose
            default is not None.

    Raises:
        TypeError: an unknown option (the message lists the known ones).
        ValueError: a value out of range.
    """
    unknown = sorted(set(given) - _FIELDS)
    if unknown:
        raise TypeError("unknown option%s %s; the engine options are: %s" % (
            "s" if len(unknown) > 1 else "", ", ".join(unknown), ", ".join(sorted(_FIELDS))))
    values: Dict[str, Any] = {}
    for name in _FIELDS:
        value = given.get(name, _MISSING)
        if value is None and name not in ("python", "output", "respawn_budget",
                                           "task_timeout"):
            value = _MISSING
        if value is _MISSING and name in _FROM_ENV:
            value = _from_env(name)
        if value is _MISSING and defaults and name in defaults:
            value = defaults[name]
        if value is not _MISSING:
            values[name] = value
    options = Options(**values)
    validate(options)
    return options


def _positive(name: str, value: Any, allow_none: bool = False, integer: bool = False) -> None:
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError("%s must be a%s number%s, not %r" % (
            name, "n integer" if integer else "", " or None" if allow_none else "", value))
    if not value > 0:
        raise ValueError("%s must be > 0, not %r" % (name, value))


def validate(o: Options) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad option of ``o``."""
    if o.python is not None and (not isinstance(o.python, str) or not o.python.strip()):
        raise TypeError("python must be a command line (a non-empty str), not %r" % (o.python,))
    if o.output is not None:
        if not isinstance(o.output, str):
            raise TypeError("output must be a %%d file name pattern or None, not %r"
                            % (o.output,))
        try:
            o.output % 0
        except (TypeError, ValueError):
            raise ValueError("output=%r must contain one %%d for the worker's number, e.g. "
                             "'worker%%d.log' (or be None for no log files)"
                             % (o.output,)) from None
    _positive("start_timeout", o.start_timeout)
    _positive("prefetch", o.prefetch, integer=True)
    if isinstance(o.max_retries, bool) or not isinstance(o.max_retries, int) \
            or o.max_retries < 0:
        raise ValueError("max_retries must be an integer >= 0, not %r" % (o.max_retries,))
    if o.respawn_budget is not None and (isinstance(o.respawn_budget, bool) or
                                         not isinstance(o.respawn_budget, int) or
                                         o.respawn_budget < 0):
        raise ValueError("respawn_budget must be an integer >= 0 or None, not %r"
                         % (o.respawn_budget,))
    _positive("task_timeout", o.task_timeout, allow_none=True)
    _positive("heartbeat_timeout", o.heartbeat_timeout)
    _positive("health_interval", o.health_interval)
    _positive("stop_timeout", o.stop_timeout)
    _positive("batch", o.batch, allow_none=True, integer=True)
    if o.journal is not None and not isinstance(o.journal, (str, os.PathLike)):
        raise TypeError("journal must be a file name (str) or None, not %r" % (o.journal,))
    if not isinstance(o.retry_failed, bool):
        raise TypeError("retry_failed must be True or False, not %r" % (o.retry_failed,))

