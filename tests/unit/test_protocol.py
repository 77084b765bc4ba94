"""Wire records and payload packing, with a fake communicator (no MPI)."""
import pickle

import numpy

from mpidispatch import _protocol, _serialize
from mpidispatch._protocol import (INLINE_MAX, RECORDS, ControlMsg, ErrorKind, ErrorMsg, Tag,
                                   TaskMsg, Verb, control, error_message, pack, pack_error,
                                   requests_done, send_message, transfer_active, unpack_error)
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)


class FakeRequest:
    def __init__(self, done):
        self.done = done

    def Test(self):
        return self.done


class FakeComm:
    """Records what was sent; ``eager`` decides whether a header completes at once."""

    def __init__(self, eager=True):
        self.eager = eager
        self.sent = []

    def isend(self, obj, dest, tag):
        self.sent.append((tag, pickle.loads(pickle.dumps(obj))))
        return FakeRequest(self.eager)

    def Isend(self, buf, dest, tag):
        self.sent.append((tag, bytes(buf[0])))
        return FakeRequest(False)


def test_every_tag_has_a_record():
    assert set(RECORDS) == {Tag.TASK, Tag.SETUP, Tag.RESULT, Tag.ERROR, Tag.CONTROL, Tag.DATA,
                            Tag.TASKS, Tag.RESULTS}


def test_records_travel_as_plain_tuples_and_rebuild():
    comm = FakeComm()
    msg = TaskMsg(7, 3, b"data", ())
    assert send_message(comm, 1, Tag.TASK, tuple(msg)) == []
    tag, payload = comm.sent[0]
    assert type(payload) is tuple and RECORDS[tag](*payload) == msg


def test_a_header_to_a_busy_receiver_is_left_pending_not_waited_for():
    comm = FakeComm(eager=False)
    pending = send_message(comm, 1, Tag.TASK, (1, 0, b"x", ()))
    assert len(pending) == 1 and not transfer_active(pending)
    assert not requests_done(pending)
    pending[0][0].done = True
    assert requests_done(pending) and pending == []


def test_nested_arrays_travel_out_of_band():
    arr = numpy.arange(100000, dtype=numpy.float64)
    data, bufs = _serialize.dumps({"a": arr, "b": [arr[:10]]})
    data, sizes, bufs = pack(data, bufs)
    assert arr.nbytes in sizes  # the big array is a buffer, not part of the pickle stream
    assert len(data) < 1000


def test_pending_buffers_are_an_active_transfer_once_the_header_went():
    assert transfer_active([(FakeRequest(False), b"chunk")])
    assert not transfer_active([(FakeRequest(False), None), (FakeRequest(False), b"x")])
    assert not transfer_active([])


def test_long_pickles_become_a_buffer_so_headers_stay_small():
    data, sizes, bufs = pack(b"x" * (_protocol.INLINE_MAX + 1), [])
    assert data is None and sizes == (_protocol.INLINE_MAX + 1,)


def test_errors_carry_type_text_and_traceback():
    try:
        1 / 0
    except ZeroDivisionError as exc:
        packed = pack_error(exc, "worker h:1")
    message, buffers = error_message(5, ErrorKind.RAISED, packed)
    msg = ErrorMsg(*message)
    assert not buffers and msg.data is not None
    exc, tb = unpack_error(_serialize.loads(msg.data))
    assert isinstance(exc, ZeroDivisionError) and "worker h:1" in tb and "1 / 0" in tb


def test_an_unpicklable_exception_still_gets_reported():
    class Local(Exception):
        def __reduce__(self):
            raise TypeError("no")

    exc, tb = unpack_error(pack_error(Local("odd"), "w"))
    assert "Local: odd" in str(exc)


def test_control_verbs_are_small_ints_on_the_wire():
    message, buffers = control(Verb.STOP, {"hard": False})
    msg = ControlMsg(*pickle.loads(pickle.dumps(message)))
    assert msg.verb == 4 and Verb(msg.verb) is Verb.STOP and not buffers
    assert _serialize.loads(msg.data) == {"hard": False}
    assert control(Verb.BYE) == ((Verb.BYE.value, None, ()), [])


MPI4PY_IRECV_BUFFER = 32 * 1024  # mpi4py.rc.irecv_bufsz: a longer header crashed receivers


def test_every_header_stays_under_the_posted_receive_buffer():
    """Long tracebacks, error texts, run_cmd sources and control infos go as buffers."""
    try:
        raise ValueError("x" * 200000)
    except ValueError as exc:
        packed = pack_error(exc, "w")
    headers = [error_message(1, ErrorKind.RAISED, packed),
               control(Verb.EXEC, "print(1)\n" * 50000),
               control(Verb.WELCOME, {"sys_path": ["/p" * 100] * 1000})]
    for edge in (INLINE_MAX - 50, INLINE_MAX, INLINE_MAX + 1, 4 * INLINE_MAX):
        data, sizes, bufs = pack(b"y" * edge, [])
        headers.append(((1, 0, data, sizes), bufs))
    for message, buffers in headers:
        assert len(pickle.dumps(message, pickle.HIGHEST_PROTOCOL)) < MPI4PY_IRECV_BUFFER
