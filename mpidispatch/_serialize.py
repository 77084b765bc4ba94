"""Turn objects into bytes plus out-of-band buffers, and back.

Plain pickle (protocol 5) is used whenever it is enough: it costs a few microseconds, while
cloudpickle costs ~30 us per call. Pickle refuses lambdas, closures and local classes (it
cannot look them up by name), but it "succeeds" on functions and classes of the script
(``__main__``) by storing a reference that a worker cannot resolve; such a stream names the
module ``__main__``, so a byte search spots it (a string containing ``__main__`` anywhere in
the object does too: harmless, that object just takes the slower path). Either way the whole
object is then pickled by cloudpickle, by value. (A ``reducer_override`` hook that checked
every object did the same job at 1.5x the cost on a small task: 4.3 against 2.9 us.)

Cloudpickling a script's function costs far more than the task it carries (26 us against
about 4 for ``partial(abs, i)``, mostly re-analysing the same function for every task). So
the script's functions and classes are pickled by value **once** and the bytes are reused
(:class:`_ScriptPickler`, as Dask caches its pickled functions), for as long as everything
cloudpickle would capture with them is the same: the same code, and the very same objects
for each global name, default, closure cell and class attribute they use, each of them
immutable (numbers, strings, ``None``, tuples of those), a module, an importable function or
class, or again a cacheable function or class of the script. A function that reads a list,
a dict, an array or any other mutable global is pickled afresh for every task, as before,
so a task always sees the value the global had when it was submitted.

Large buffers (numpy arrays, bytes-like objects) go out of band, so that they are sent with
``MPI_Isend`` straight from their memory, without a copy into the pickle stream, and come back
as arrays over the received buffers, again without a copy.
"""
from __future__ import annotations

import functools
import io
import pickle
import types
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Sequence, Tuple

#: Buffers smaller than this stay inside the pickle stream: one message beats several.
OUT_OF_BAND_MIN = 64 * 1024


class _BigBuffer(Exception):
    """An object holds a buffer worth sending out of band: take the slower path."""


def _in_band(buf: pickle.PickleBuffer) -> bool:
    if buf.raw().nbytes < OUT_OF_BAND_MIN:
        return True
    raise _BigBuffer


_MAIN_MODULES = ("__main__", "__mp_main__")
_IMMUTABLE = frozenset([type(None), bool, int, float, complex, str, bytes, range, type(...)])
_MISSING = object()
#: Script functions and classes whose bytes are kept (the least recently used go first).
CACHE_SIZE = 128


class _NotCacheable(Exception):
    """A script object whose by-value bytes could go stale: pickle the whole task afresh."""


_NAMES: Dict[types.CodeType, Tuple[str, ...]] = {}


def _code_names(code: types.CodeType) -> Tuple[str, ...]:
    """Global names ``code`` and the code nested in it may read (attribute names too)."""
    names = _NAMES.get(code)
    if names is None:
        found: List[str] = []
        todo = [code]
        while todo:
            c = todo.pop()
            found.extend(c.co_names)
            todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        names = _NAMES[code] = tuple(dict.fromkeys(found))
        if len(_NAMES) > 4 * CACHE_SIZE:
            _NAMES.clear()
    return names


class _Fingerprint:
    """What cloudpickle captures with a script function or class, as the objects
    themselves (compared by identity; held, so that no id is reused)."""

    def __init__(self) -> None:
        self.parts: List[Any] = []

    def add(self, value: Any, depth: int) -> None:
        kind = type(value)
        self.parts.append(value)
        if kind in _IMMUTABLE or value is _MISSING or kind is types.ModuleType \
                or kind is types.BuiltinFunctionType:
            return
        if kind in (tuple, frozenset):
            if len(value) > 64:
                raise _NotCacheable
            for item in value:
                self.add(item, depth)
            return
        if kind is types.FunctionType or isinstance(value, type):
            if getattr(value, "__module__", None) in _MAIN_MODULES:
                if depth <= 0:
                    raise _NotCacheable
                self.add_script_object(value, depth - 1)
            return   # importable: pickled by reference, its identity is enough
        raise _NotCacheable   # a list, a dict, an array, an instance: may change in place

    def add_script_object(self, obj: Any, depth: int) -> None:
        if isinstance(obj, type):
            for base in obj.__bases__:
                self.add(base, depth)
            for name, value in vars(obj).items():
                if name in ("__dict__", "__weakref__", "__slotnames__"):  # (copyreg's cache)
                    continue
                self.parts.append(name)
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                elif isinstance(value, property):
                    value = (value.fget, value.fset, value.fdel)
                self.add(value, depth)
            return
        if obj.__dict__:
            raise _NotCacheable
        self.parts.append(obj.__code__)
        for cell in obj.__closure__ or ():
            self.add(cell.cell_contents, depth)
        self.add(obj.__defaults__, depth)
        self.add(tuple(obj.__kwdefaults__.values()) if obj.__kwdefaults__ else None, depth)
        scope = obj.__globals__
        for name in _code_names(obj.__code__):
            self.add(scope.get(name, _MISSING), depth)

    def same(self, other: "_Fingerprint") -> bool:
        if len(self.parts) != len(other.parts):
            return False
        return all(a is b or (type(a) is str and a == b)
                   for a, b in zip(self.parts, other.parts))


def _fingerprint(obj: Any) -> _Fingerprint:
    fp = _Fingerprint()
    fp.parts.append(obj)
    fp.add_script_object(obj, depth=3)
    return fp


class _ScriptCache:
    """Script object -> (fingerprint, cloudpickled bytes)."""

    def __init__(self) -> None:
        self.entries: "OrderedDict[Any, Tuple[_Fingerprint, bytes]]" = OrderedDict()
        self.hits = self.misses = 0

    def by_value(self, obj: Any) -> bytes:
        """``obj`` pickled by value, reused while its fingerprint holds.

        Raises:
            _NotCacheable: it uses something mutable (or nests too deep).
        """
        import cloudpickle
        fp = _fingerprint(obj)
        entry = self.entries.get(obj)
        if entry is not None and entry[0].same(fp):
            self.entries.move_to_end(obj)
            self.hits += 1
            return entry[1]
        self.misses += 1
        data = cloudpickle.dumps(obj, protocol=5)
        self.entries[obj] = (fp, data)
        self.entries.move_to_end(obj)
        if len(self.entries) > CACHE_SIZE:
            self.entries.popitem(last=False)
        return data


SCRIPT_CACHE = _ScriptCache()


class _ScriptPickler(pickle.Pickler):
    """Plain pickle, but the script's functions and classes by value from the cache."""

    def reducer_override(self, obj: Any) -> Any:
        if (type(obj) is types.FunctionType or isinstance(obj, type)) \
                and getattr(obj, "__module__", None) in _MAIN_MODULES:
            return pickle.loads, (SCRIPT_CACHE.by_value(obj),)
        return NotImplemented


def _dumps_script(obj: Any, keep: Callable[[pickle.PickleBuffer], bool]) -> bytes:
    out = io.BytesIO()
    _ScriptPickler(out, 5, buffer_callback=keep).dump(obj)
    return out.getvalue()


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

    if _of_the_script(obj):
        data = None   # known to need the script's objects by value: skip the plain try
    else:
        data = _plain(obj, keep)
    # the script's module, by its name or multiprocessing's (see the module docstring)
    if data is not None and b"__main__" not in data and b"__mp_main__" not in data:
        return data, buffers
    buffers.clear()
    try:   # every function and class of the script goes by value: no name is left to look up
        return _dumps_script(obj, keep), buffers
    except (_NotCacheable, pickle.PicklingError, AttributeError, TypeError):
        pass   # cloudpickle knows more (closures, local classes) or raises the real error
    import cloudpickle
    buffers.clear()
    data = cloudpickle.dumps(obj, protocol=5, buffer_callback=keep)
    return data, buffers


def _of_the_script(obj: Any) -> bool:
    """A task that is, or is a ``partial`` of, a function or an instance of the script."""
    if type(obj) is functools.partial:
        obj = obj.func
    kind = type(obj)
    if kind is types.FunctionType:
        return getattr(obj, "__module__", None) in _MAIN_MODULES
    return kind.__module__ in _MAIN_MODULES


def _plain(obj: Any, keep: Callable[[pickle.PickleBuffer], bool]) -> Any:
    """Plain pickle's bytes for ``obj``, or None if it refuses."""
    try:  # first without a closure of its own: the common small object
        data = pickle.dumps(obj, 5, buffer_callback=_in_band)
    except _BigBuffer:
        try:
            data = pickle.dumps(obj, 5, buffer_callback=keep)
        except (pickle.PicklingError, AttributeError, TypeError):
            data = None
    except (pickle.PicklingError, AttributeError, TypeError):
        data = None  # a lambda, a closure, a local class: cloudpickle may manage, or raise
    return data


def loads(data: bytes, buffers: Sequence[Any] = ()) -> Any:
    """Inverse of :func:`dumps`."""
    return pickle.loads(data, buffers=buffers)
