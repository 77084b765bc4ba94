"""The wire protocol: message tags and how payloads with large buffers travel.

One tag per message kind; task ids travel inside the payload, never as tags (tags are
bounded by ``MPI_TAG_UB``).

=========  ==================  =====================================================
tag        direction           payload (a tuple, pickled by mpi4py)
=========  ==================  =====================================================
TASK       manager -> worker   (work_id, context_id, data, sizes)
SETUP      manager -> worker   (context_id, data, sizes)
RESULT     worker -> manager   (work_id, data, sizes)
ERROR      worker -> manager   (work_id, error) -- see :func:`pack_error`
CONTROL    both ways           (verb, info...) -- hello, welcome, heartbeat, stop, exec
DATA       both ways           (data, sizes) -- message passing (send_data/get_data)
BUFFER     both ways           raw bytes: the out-of-band buffers of the message before
=========  ==================  =====================================================

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
from typing import Any, List, Sequence, Tuple

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


def buffer_sizes(buffers: Sequence[Any]) -> Tuple[int, ...]:
    return tuple(memoryview(b).nbytes for b in buffers)


def _chunks(buf: Any):
    view = memoryview(buf).cast("B")
    for start in range(0, max(len(view), 1), CHUNK):
        yield view[start:start + CHUNK]


#: Pickle streams longer than this travel as a buffer, so every header message stays small.
INLINE_MAX = 32 * 1024


def pack(data: bytes, buffers: Sequence[Any]) -> Tuple[Any, Tuple[int, ...], list]:
    """(inline data or None, buffer sizes, buffers to send) for a payload.

    A long pickle stream is sent as the first buffer (``data`` is then None), so that
    the header message that a posted receive takes is always small.
    """
    buffers = list(buffers)
    if len(data) > INLINE_MAX:
        buffers.insert(0, data)
        data = None
    return data, buffer_sizes(buffers), buffers


def send_message(comm: Any, dest: int, tag: int, message: tuple,
                 buffers: Sequence[Any] = ()) -> List[Any]:
    """Start sending ``message`` and its buffers; return the requests still in flight.

    Header messages are small (see :func:`pack`) and go with a plain send, which MPI
    completes at once (eager protocol); buffers go with ``Isend`` so that the caller never
    waits for a busy receiver. The caller keeps the returned requests (they hold the
    buffers alive) and tests them with :func:`requests_done`.
    """
    comm.send(message, dest=dest, tag=tag)
    if not buffers:
        return []
    MPI = _mpi()
    pending: List[Any] = []
    for buf in buffers:
        for chunk in _chunks(buf):
            pending.append((comm.Isend([chunk, MPI.BYTE], dest=dest, tag=Tag.BUFFER), chunk))
    return pending


def requests_done(pending: List[Any]) -> bool:
    """Test the requests from :func:`send_message`; drop finished ones; True if none left."""
    i = 0
    while i < len(pending):
        if pending[i][0].Test():  # (request, buffer chunk it keeps alive)
            pending.pop(i)
        else:
            i += 1
    return not pending


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
    try:
        data, bufs = _serialize.dumps(exc)
        if bufs or len(data) > INLINE_MAX:
            data = None
    except BaseException:  # an exception that cannot be pickled still gets reported
        data = None
    return (data, type(exc).__name__, str(exc), tb)


def unpack_error(error: tuple) -> Tuple[BaseException, str]:
    """Rebuild (exception, traceback text) from :func:`pack_error`'s tuple."""
    data, type_name, text, tb = error
    exc: BaseException
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
