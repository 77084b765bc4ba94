"""The wire protocol: message tags and how payloads with large buffers travel.

One tag per message kind; task ids travel inside the payload, never as tags (tags are
bounded by ``MPI_TAG_UB``).

=========  ==================  =====================================================
tag        direction           record (travels as a plain tuple, pickled by mpi4py)
=========  ==================  =====================================================
TASK       manager -> worker   :class:`TaskMsg` (work_id, context_id, data, sizes)
TASKS      manager -> worker   :class:`TasksMsg` (context_id, ((work_id, data), ...)): a batch
SETUP      manager -> worker   :class:`SetupMsg` (context_id, data, sizes)
RESULT     worker -> manager   :class:`ResultMsg` (work_id, data, sizes, seconds)
RESULTS    worker -> manager   :class:`ResultsMsg` (((work_id, data, seconds), ...)): a batch
ERROR      worker -> manager   :class:`ErrorMsg` (work_id, kind, data, sizes)
CONTROL    both ways           :class:`ControlMsg` (verb, data, sizes) -- see :class:`Verb`
DATA       both ways           :class:`DataMsg` (data, sizes) -- send_data/get_data
BUFFER     both ways           raw bytes: the out-of-band buffers of the message before
=========  ==================  =====================================================

Every header message stays under mpi4py's receive buffer for a posted ``irecv`` (32 KiB,
``mpi4py.rc.irecv_bufsz``; a longer one crashed the receiver): whatever may be long -- a
task, a result, an error with its traceback, ``run_cmd`` source, a control message's info --
is a pickle stream that :func:`pack` moves to a buffer when it is over :data:`INLINE_MAX`.

A batch (TASKS, RESULTS) carries only small inline pickle streams -- no out-of-band buffers
-- and stays under :data:`BATCH_BYTES` of data and :data:`BATCH_MAX` entries, so it obeys
the same bound (:func:`batch_fits`). A task or result that does not fit travels alone, and
every failure travels alone as an ERROR record: one failing task of a batch fails alone.

Records are ``NamedTuple`` classes for the code on both sides, but travel as plain tuples:
pickling a named tuple costs ~10x a plain one (the class travels by reference), and the tag
already says which record it is (:data:`RECORDS`).

``data`` is a pickle stream from :mod:`mpidispatch._serialize`; ``sizes`` lists the byte
sizes of its out-of-band buffers, which follow on the BUFFER tag in chunks of at most
``CHUNK`` bytes (so no message is limited to 2 GiB). MPI keeps messages between two
processes on one tag in order, and a receiver always reads a message's buffers before
anything else from that sender, so buffers never get mixed up.
"""
from __future__ import annotations

import enum
import os
import time
import traceback
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import _serialize
from ._util import env_float

#: Largest single MPI message for one buffer chunk (bytes).
CHUNK = int(env_float("CHUNK_BYTES", float(1 << 30)))


class Tag(enum.IntEnum):
    """Message kinds."""

    TASK = 11
    SETUP = 12
    RESULT = 13
    ERROR = 14
    CONTROL = 15
    DATA = 16
    BUFFER = 17
    TASKS = 18
    RESULTS = 19


class Verb(enum.IntEnum):
    """CONTROL message verbs."""

    HELLO = 1       # worker -> manager, info: host, pid, log, python, version
    WELCOME = 2     # manager -> worker, info: host, pid, cwd, heartbeat, sys_path
    HEARTBEAT = 3   # worker -> manager (workers on other hosts)
    STOP = 4        # manager -> worker, info: {"hard": bool}
    EXEC = 5        # manager -> worker, info: Python source (run_cmd)
    FORGET = 6      # manager -> worker, info: context id whose setup to drop
    BYE = 7         # worker -> manager: stopping; the manager may disconnect now
    SETUP_DONE = 8  # worker -> manager, info: context id whose setup function finished


class ErrorKind(enum.IntEnum):
    """What failed on the worker (ERROR messages)."""

    RAISED = 1      # the task raised
    PICKLE = 2      # its result could not be pickled
    UNPICKLE = 3    # the task could not be unpickled on the worker
    SETUP = 4       # the group's setup function raised
    CMD = 5         # run_cmd source raised (work_id is None)


class TaskMsg(NamedTuple):
    """A task for a worker: run the unpickled ``data`` with context ``context_id``'s setup."""

    work_id: int
    context_id: int
    data: Optional[bytes]
    sizes: Tuple[int, ...]


class TasksMsg(NamedTuple):
    """Several small tasks of one context in one message: each ``(work_id, data)`` is run
    like a :class:`TaskMsg` without buffers; results come back as :class:`ResultsMsg` (or
    one RESULT/ERROR per task that does not fit a batch)."""

    context_id: int
    tasks: Tuple[Tuple[int, bytes], ...]


class SetupMsg(NamedTuple):
    """A context's setup function: run it once, keep its values for the context's tasks."""

    context_id: int
    data: Optional[bytes]
    sizes: Tuple[int, ...]


class ResultMsg(NamedTuple):
    """A task's pickled result, and how long the task ran on the worker (seconds): the
    manager sizes its prefetch by that, not by round trips that include its own delays."""

    work_id: int
    data: Optional[bytes]
    sizes: Tuple[int, ...]
    seconds: float = 0.0


class ResultsMsg(NamedTuple):
    """Results of several tasks of a batch: each ``(work_id, data, seconds)`` is a
    :class:`ResultMsg` without buffers."""

    results: Tuple[Tuple[int, bytes, float], ...]


class ErrorMsg(NamedTuple):
    """A failure on the worker: ``data``/``sizes`` hold :func:`pack_error`'s tuple."""

    work_id: Optional[int]
    kind: int
    data: Optional[bytes]
    sizes: Tuple[int, ...]


class ControlMsg(NamedTuple):
    """Lifecycle and commands (see :class:`Verb`); ``data``/``sizes`` hold its info (none:
    ``None, ()``)."""

    verb: int
    data: Optional[bytes] = None
    sizes: Tuple[int, ...] = ()


class DataMsg(NamedTuple):
    """Message passing: an object sent with ``send_data``."""

    data: Optional[bytes]
    sizes: Tuple[int, ...]


#: The record class of each tag.
RECORDS: Dict[int, Any] = {Tag.TASK: TaskMsg, Tag.SETUP: SetupMsg, Tag.RESULT: ResultMsg,
                           Tag.ERROR: ErrorMsg, Tag.CONTROL: ControlMsg, Tag.DATA: DataMsg,
                           Tag.TASKS: TasksMsg, Tag.RESULTS: ResultsMsg}


def buffer_sizes(buffers: Sequence[Any]) -> Tuple[int, ...]:
    return tuple(memoryview(b).nbytes for b in buffers)


def _chunks(buf: Any) -> Any:
    view = memoryview(buf).cast("B")
    for start in range(0, max(len(view), 1), CHUNK):
        yield view[start:start + CHUNK]


#: Pickle streams longer than this travel as a buffer, so that every header message stays
#: well under mpi4py's 32 KiB receive buffer of a posted irecv.
INLINE_MAX = 16 * 1024


#: Most pickle bytes of the entries of one batch (TASKS or RESULTS) together.
BATCH_BYTES = INLINE_MAX

#: Most entries in one batch. With :data:`BATCH_BYTES` of data and the pickle framing of
#: each entry (a few dozen bytes), a batch header stays under mpi4py's 32 KiB.
BATCH_MAX = 256

#: The largest single entry that may join a batch (a longer one travels alone).
BATCH_ENTRY_MAX = 4096


def batch_fits(count: int, nbytes: int, entry: Optional[bytes]) -> bool:
    """Whether a batch of ``count`` entries with ``nbytes`` of data can take ``entry`` too
    (``None``: an entry that cannot be batched, such as a payload with buffers)."""
    return (entry is not None and len(entry) <= BATCH_ENTRY_MAX and count < BATCH_MAX
            and nbytes + len(entry) <= BATCH_BYTES)


def pack(data: Optional[bytes],
         buffers: Sequence[Any]) -> Tuple[Any, Tuple[int, ...], list]:
    """(inline data or None, buffer sizes, buffers to send) for a payload.

    A long pickle stream is sent as the first buffer (``data`` is then None), so that
    the header message that a posted receive takes is always small.
    """
    buffers = list(buffers)
    if data is not None and len(data) > INLINE_MAX:
        buffers.insert(0, data)
        data = None
    return data, buffer_sizes(buffers), buffers


def pack_object(obj: Any) -> Tuple[Any, Tuple[int, ...], list]:
    """Serialize ``obj`` and :func:`pack` it: (inline data or None, sizes, buffers)."""
    data, buffers = _serialize.dumps(obj)
    return pack(data, buffers)


def control(verb: Verb, info: Any = None) -> Tuple[tuple, list]:
    """A CONTROL message for ``send_message``: (record as a tuple, buffers)."""
    if info is None:
        return (verb.value, None, ()), []
    data, sizes, buffers = pack_object(info)
    return (verb.value, data, sizes), buffers


def error_message(work_id: Optional[int], kind: "ErrorKind", error: tuple) -> Tuple[tuple, list]:
    """An ERROR message for ``send_message`` from :func:`pack_error`'s tuple."""
    data, sizes, buffers = pack_object(error)
    return (work_id, kind.value, data, sizes), buffers


def read_info(comm: Any, source: int, msg: "ControlMsg") -> Any:
    """The info of a CONTROL message (receives its buffers, if any); None if it has none."""
    if msg.data is None and not msg.sizes:
        return None
    return decode(comm, source, msg.data, msg.sizes)


def send_message(comm: Any, dest: int, tag: int, message: tuple,
                 buffers: Sequence[Any] = ()) -> List[Any]:
    """Start sending ``message`` and its buffers; return the requests still in flight.

    Nothing here waits for the receiver. The header goes with ``isend``: a plain ``send``
    of a pickled task above the eager limit (a cloudpickled function is a few kB) blocks
    until the receiver next calls MPI, which stalled the whole manager behind one busy
    worker under Open MPI's shared-memory transport. Buffers go with ``Isend``. The caller
    keeps the returned ``(request, chunk)`` pairs (they hold the data alive; ``chunk`` is
    None for the header) and tests them with :func:`requests_done`.
    """
    req = comm.isend(message, dest=dest, tag=tag)
    pending: List[Any] = [] if req.Test() else [(req, None)]
    if not buffers:
        return pending
    MPI = _mpi()
    for buf in buffers:
        for chunk in _chunks(buf):
            pending.append((comm.Isend([chunk, MPI.BYTE], dest=dest, tag=Tag.BUFFER), chunk))
    return pending


def requests_done(pending: List[Any]) -> bool:
    """Test the requests from :func:`send_message`; drop finished ones; True if none left."""
    i = 0
    while i < len(pending):
        if pending[i][0].Test():
            pending.pop(i)
        else:
            i += 1
    return not pending


def transfer_active(pending: List[Any]) -> bool:
    """True while buffers move: the receiver has the header and now takes the buffers,
    which progress only while the sender calls MPI (so the sender should not sleep). A
    header still waiting for its receiver (a busy worker) is no reason to spin."""
    return bool(pending) and pending[0][1] is not None


def recv_buffers(comm: Any, source: int, sizes: Sequence[int], timeout: float = 600.0) -> list:
    """Receive the out-of-band buffers that follow a message from ``source``.

    Polls without sleeping: large transfers progress only while MPI is called, and the wait
    is bounded by ``timeout`` (the data is already on its way when this is called).

    Raises:
        TimeoutError: the buffers did not arrive within ``timeout`` seconds.
    """
    if not sizes:
        return []
    import numpy
    MPI = _mpi()
    buffers, requests = [], []
    for size in sizes:
        buf = numpy.empty(size, dtype=numpy.uint8)  # not zero-filled, unlike bytearray
        buffers.append(buf)
        for chunk in _chunks(buf):
            requests.append(comm.Irecv([chunk, MPI.BYTE], source=source, tag=Tag.BUFFER))
    wait_all(requests, timeout, "buffers of a message from rank %d" % source)
    return buffers


def wait_all(requests: list, timeout: float, what: str) -> None:
    """Complete MPI ``requests`` (keeping MPI progressing), or raise TimeoutError."""
    MPI = _mpi()
    deadline = time.monotonic() + timeout
    while not MPI.Request.Testall(requests):
        if time.monotonic() > deadline:
            for req in requests:
                try:
                    req.Cancel()
                except Exception:
                    pass
            raise TimeoutError("%s did not complete in %g s" % (what, timeout))
        os.sched_yield()


def decode(comm: Any, source: int, data: Any, sizes: Sequence[int]) -> Any:
    """Receive the buffers of a message and unpickle its payload (see :func:`pack`)."""
    buffers = recv_buffers(comm, source, sizes)
    if data is None:
        data = buffers.pop(0)
    return _serialize.loads(data, buffers)


def pack_error(exc: BaseException, where: str) -> tuple:
    """Describe an exception for the ERROR message: (pickled exc or None, type, text, tb)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    tb = "### raised on %s\n%s" % (where, tb)
    data: Optional[bytes]
    try:
        data, bufs = _serialize.dumps(exc)
        if bufs:
            data = None
    except BaseException:  # an exception that cannot be pickled still gets reported
        data = None
    return (data, type(exc).__name__, str(exc), tb)


def unpack_error(error: tuple) -> Tuple[BaseException, str]:
    """Rebuild (exception, traceback text) from :func:`pack_error`'s tuple."""
    data, type_name, text, tb = error
    exc: Optional[BaseException]
    try:
        exc = _serialize.loads(data) if data is not None else None
    except BaseException:
        exc = None
    if exc is None:
        exc = RuntimeError("%s: %s (the exception could not be sent back)" % (type_name, text))
    return exc, tb


def _mpi():
    from ._mpienv import mpi
    return mpi()
