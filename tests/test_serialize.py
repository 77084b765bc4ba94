"""Serialization without MPI: large arrays travel out of band, wherever they sit in a result.

Out of band means the pickle stream holds no copy of the array's bytes: the buffer handed
to MPI is a view of the array's own memory, and on the receiving side the rebuilt array is
a view of the received buffer (no copy either way).
"""
import functools
import pickle
import sys
import types

import numpy as np
import pytest
from mpidispatch import _serialize


def _addresses(buffers):
    return [np.frombuffer(b.raw(), dtype=np.uint8).__array_interface__["data"][0]
            for b in buffers]


def _address(a):
    return a.__array_interface__["data"][0]


def nested_result():
    big = 1 << 20   # 1 MiB each: well above OUT_OF_BAND_MIN
    return {"coords": np.arange(big // 8, dtype=np.float64),
            "frames": [np.ones((64, 64, 32), dtype=np.float32), np.zeros(big, np.uint8)],
            "meta": {"name": "run 1", "energy": np.float64(-12.5),
                     "small": np.arange(10)},          # small: stays in band
            "fortran": np.asfortranarray(np.ones((512, 300)))}


def test_nested_arrays_are_out_of_band_and_not_copied():
    obj = nested_result()
    data, buffers = _serialize.dumps(obj)
    big = [obj["coords"], obj["frames"][0], obj["frames"][1], obj["fortran"]]
    assert len(buffers) == len(big)
    assert all(isinstance(b, pickle.PickleBuffer) for b in buffers)
    # the buffers are the arrays' own memory, not copies
    assert sorted(_addresses(buffers)) == sorted(_address(a) for a in big)
    # and the stream does not carry their bytes
    assert len(data) < 4096, len(data)


def test_round_trip_rebuilds_views_of_the_received_buffers():
    obj = nested_result()
    data, buffers = _serialize.dumps(obj)
    # what the receiver has: fresh buffers holding the bytes (as recv_buffers makes them)
    received = [np.frombuffer(b.raw(), dtype=np.uint8).copy() for b in buffers]
    back = _serialize.loads(data, received)
    assert back.keys() == obj.keys()
    np.testing.assert_array_equal(back["coords"], obj["coords"])
    np.testing.assert_array_equal(back["frames"][0], obj["frames"][0])
    np.testing.assert_array_equal(back["frames"][1], obj["frames"][1])
    np.testing.assert_array_equal(back["fortran"], obj["fortran"])
    assert back["fortran"].flags.f_contiguous
    assert back["meta"]["name"] == "run 1" and back["meta"]["energy"] == -12.5
    np.testing.assert_array_equal(back["meta"]["small"], np.arange(10))
    # zero-copy on the receiving side: each big array is a view of one received buffer
    got = {_address(back[k]) if k != "frames" else None for k in ("coords", "fortran")}
    got |= {_address(a) for a in back["frames"]}
    got.discard(None)
    assert got == {_address(r) for r in received}
    assert back["coords"].flags.writeable   # results own writable memory


def test_by_value_fallback_keeps_arrays_out_of_band():
    # A lambda forces cloudpickle (by value); the arrays must still travel out of band.
    arr = np.arange(1 << 17, dtype=np.float64)
    task = functools.partial(lambda x, d: x.sum() + len(d), arr, {"a": arr * 2})
    data, buffers = _serialize.dumps(task)
    assert len(buffers) == 2
    assert _address(arr) in _addresses(buffers)
    back = _serialize.loads(data, [np.frombuffer(b.raw(), np.uint8).copy() for b in buffers])
    assert back() == arr.sum() + 1


def test_non_contiguous_array_round_trips_in_band():
    a = np.arange(1 << 16, dtype=np.float64)[::2]       # a strided view: no single buffer
    data, buffers = _serialize.dumps({"view": a})
    back = _serialize.loads(data, buffers)
    np.testing.assert_array_equal(back["view"], a)


# ------------------------------------------------------------------ by reference or by value
def test_importable_functions_go_by_reference():
    import json
    data, _ = _serialize.dumps(functools.partial(json.dumps, [1]))
    assert b"json" in data and b"cloudpickle" not in data
    assert _serialize.loads(data)() == "[1]"


def _script_function(x):
    return x + 1


def test_script_functions_and_classes_go_by_value(monkeypatch):
    # A function of the script (module __main__) that a worker could not import: plain
    # pickle would store the reference "__main__._script_function"; it must travel by value.
    main = sys.modules["__main__"]
    fn = types.FunctionType(_script_function.__code__, {}, "script_fn")
    fn.__module__, fn.__qualname__ = "__main__", "script_fn"
    cls = type("ScriptClass", (), {"__module__": "__main__", "value": 41})
    monkeypatch.setattr(main, "script_fn", fn, raising=False)
    monkeypatch.setattr(main, "ScriptClass", cls, raising=False)
    data_fn, _ = _serialize.dumps(functools.partial(fn, 1))
    data_obj, _ = _serialize.dumps({"obj": cls()})
    monkeypatch.delattr(main, "script_fn")       # as on a worker: no such name there
    monkeypatch.delattr(main, "ScriptClass")
    assert _serialize.loads(data_fn)() == 2
    assert _serialize.loads(data_obj)["obj"].value == 41


def test_lambdas_and_closures_go_by_value():
    offset = 5
    data, _ = _serialize.dumps([lambda x: x * 2, (lambda: offset)])
    double, closure = _serialize.loads(data)
    assert double(4) == 8 and closure() == 5


def test_unpicklable_objects_raise():
    import threading
    with pytest.raises(TypeError):
        _serialize.dumps({"lock": threading.Lock()})


# ------------------------------------------- the script's objects: by value, bytes reused
SCRIPT = '''
import math
SCALE = 3
ITEMS = [1, 2]

def helper(x):
    return x * SCALE

def work(x):
    return helper(x) + math.floor(0.5)

def reads_a_list(x):
    return x + sum(ITEMS)

class Task:
    offset = 10
    def __init__(self, i):
        self.i = i
    def __call__(self):
        return self.i + self.offset
'''


def script_namespace():
    """Functions and a class as a script defines them (module ``__main__``)."""
    ns = {"__name__": "__main__"}
    exec(SCRIPT, ns)
    return ns


def round_trip(obj):
    data, buffers = _serialize.dumps(obj)
    return _serialize.loads(data, buffers)


def test_a_script_function_is_pickled_once_and_reused():
    ns = script_namespace()
    cache = _serialize.SCRIPT_CACHE
    hits, misses = cache.hits, cache.misses
    results = [round_trip(functools.partial(ns["work"], i))() for i in range(5)]
    assert results == [0, 3, 6, 9, 12]
    # work and the helper it calls by value: cloudpickled once, then reused
    assert cache.misses - misses == 1 and cache.hits - hits == 4


def test_a_rebound_global_is_seen_by_the_next_task():
    ns = script_namespace()
    assert round_trip(functools.partial(ns["work"], 2))() == 6
    ns["SCALE"] = 5                       # a global the nested helper reads
    assert round_trip(functools.partial(ns["work"], 2))() == 10
    ns["helper"] = lambda x: -x           # the helper itself replaced
    assert round_trip(functools.partial(ns["work"], 2))() == -2


def test_a_function_reading_a_mutable_global_is_pickled_afresh_each_time():
    ns = script_namespace()
    assert round_trip(functools.partial(ns["reads_a_list"], 0))() == 3
    ns["ITEMS"].append(4)                 # changed in place: no new object to compare
    assert round_trip(functools.partial(ns["reads_a_list"], 0))() == 7
    assert ns["reads_a_list"] not in _serialize.SCRIPT_CACHE.entries


def test_script_class_instances_reuse_the_class_bytes_and_see_attribute_changes():
    ns = script_namespace()
    cache = _serialize.SCRIPT_CACHE
    misses = cache.misses
    # (all dumped before any is loaded, as on a worker: cloudpickle loading a class in the
    # process that pickled it sets the loaded methods on the original class)
    sent = [_serialize.dumps(ns["Task"](i)) for i in range(3)]
    assert cache.misses - misses == 1
    assert [_serialize.loads(data, bufs)() for data, bufs in sent] == [10, 11, 12]
    ns["Task"].offset = 100
    assert round_trip(ns["Task"](1))() == 101


def test_a_closure_over_a_mutable_cell_still_goes_by_value_each_time():
    ns = script_namespace()
    box = [1]
    exec("def make(box):\n    return lambda: box[0]\n", ns)
    fn = ns["make"](box)
    assert round_trip(fn)() == 1
    box[0] = 2
    assert round_trip(fn)() == 2
