"""Turn objects into bytes plus out-of-band buffers, and back.

Plain pickle (protocol 5) is used whenever it is enough: it costs a few microseconds, while
cloudpickle costs ~30 us per call. Pickle would "succeed" on functions and classes from
``__main__``, lambdas and closures by storing a reference that a worker cannot resolve, so a
``reducer_override`` hook spots those and the whole object is then pickled by cloudpickle
(by value). Large buffers (numpy arrays, bytes-like objects) go out of band so that they are
sent with ``MPI.Send`` straight from their memory, without a copy into the pickle stream.
"""
from __future__ import annotations

import io
import pickle
import types
from typing import Any, List, Sequence, Tuple

#: Buffers smaller than this stay inside the pickle stream: one message beats several.
OUT_OF_BAND_MIN = 64 * 1024


class _NeedsByValue(Exception):
    """Raised inside the fast pickler when an object must be pickled by value."""


def _by_reference_is_wrong(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    if module is None or module == "__main__" or module.startswith("__mp_main__"):
        return True
    qualname = getattr(obj, "__qualname__", "")
    return "<lambda>" in qualname or "<locals>" in qualname


class _FastPickler(pickle.Pickler):
    """Protocol-5 pickler that refuses objects a remote process could not import."""

    def reducer_override(self, obj: Any) -> Any:
        # Called by the C pickler for everything except the builtin containers and atoms,
        # so the check costs little on the hot path.
        if isinstance(obj, (types.FunctionType, type)) and _by_reference_is_wrong(obj):
            raise _NeedsByValue
        return NotImplemented


def dumps(obj: Any) -> Tuple[bytes, List[pickle.PickleBuffer]]:
    """Serialize ``obj``; return the pickle bytes and the out-of-band buffers.

    Raises:
        Exception: whatever pickle/cloudpickle raise for an unpicklable object.
    """
    buffers: List[pickle.PickleBuffer] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes < OUT_OF_BAND_MIN:
            return True  # in band
        buffers.append(buf)
        return False

    stream = io.BytesIO()
    try:
        _FastPickler(stream, 5, buffer_callback=keep).dump(obj)
        return stream.getvalue(), buffers
    except _NeedsByValue:
        pass
    except (pickle.PicklingError, AttributeError, TypeError):
        pass  # e.g. a local class: cloudpickle may manage, or will raise the real error
    import cloudpickle
    buffers = []
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=keep), buffers


def loads(data: bytes, buffers: Sequence[Any] = ()) -> Any:
    """Inverse of :func:`dumps`."""
    return pickle.loads(data, buffers=buffers)
