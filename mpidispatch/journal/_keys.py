"""Task keys: what makes two tasks "the same" across runs.

A key is either the user's own (``key=`` where a face takes one) or a digest of the bytes
that the task travels as: its pickle stream and out-of-band buffers, plus those of its
context's setup function. Identical bytes submitted several times in one run (a Monte Carlo
sample submitted 100 times) are told apart by their occurrence: the n-th copy gets ``#n``.

Pickle streams are stable across processes except for two things this module knows about:

* cloudpickle gives every class it pickles by value (classes defined in the script) a random
  tracker id; those ids are replaced by the class's qualified name before hashing.
* ``set``/``frozenset`` of strings iterate in an order that depends on the interpreter's hash
  seed, so a task holding one may get a new key in each run. Give such tasks a ``key=``, or
  set ``PYTHONHASHSEED``. (Documented in docs/journal.md.)
"""
from __future__ import annotations

import hashlib
import re
import struct
import sys
from typing import Any, Dict, Optional, Sequence, Union

Bytes = Union[bytes, bytearray, memoryview]
#: The parts a payload travels as: one bytes-like, or several (pickle stream + buffers).
Parts = Union[Bytes, Sequence[Any], None]

_TRACKER_ID = re.compile(rb"\x8c\x20([0-9a-f]{32})")   # SHORT_BINUNICODE of a uuid4().hex
_USER_KEY_TYPES = (str, int, float, bytes, bool, type(None))


def _canonical(data: Union[bytes, bytearray]) -> Union[bytes, bytearray]:
    """Replace cloudpickle's random class tracker ids by the classes' names."""
    cp = sys.modules.get("cloudpickle.cloudpickle")
    if cp is None or b"_make_skeleton" not in data:
        return data
    tracked = getattr(cp, "_DYNAMIC_CLASS_TRACKER_BY_ID", {})

    def name(match: "re.Match[bytes]") -> bytes:
        cls = tracked.get(match.group(1).decode())
        if cls is None:
            return match.group(0)
        return b"\x8c" + ("%s.%s" % (cls.__module__, cls.__qualname__)).encode()

    return _TRACKER_ID.sub(name, bytes(data))


_LENGTH = struct.Struct("<Q").pack


def _feed(update: Any, parts: Parts) -> None:
    """Hash parts, each prefixed with its length (moving bytes between parts changes it)."""
    if parts is None:
        update(b"\0none")
        return
    if isinstance(parts, (bytes, bytearray, memoryview)):
        parts = (parts,)
    for part in parts:
        if part is None:
            update(b"\0none")
        elif type(part) is bytes or type(part) is bytearray:
            part = _canonical(part)   # a pickle stream (buffers are raw data)
            update(_LENGTH(len(part)))
            update(part)
        else:
            view = memoryview(part).cast("B")   # type: ignore[arg-type]
            update(_LENGTH(view.nbytes))
            update(view)


def content_digest(payload: Parts, setup: Parts = None) -> str:
    """Hex digest (128 bits of BLAKE2b) of a task's payload parts and its setup's parts."""
    h = hashlib.blake2b(digest_size=16)
    update = h.update
    _feed(update, payload)
    update(b"\0setup")
    _feed(update, setup)
    return h.hexdigest()


def _check_user_key(value: Any) -> None:
    if isinstance(value, tuple):
        for v in value:
            _check_user_key(v)
    elif not isinstance(value, _USER_KEY_TYPES):
        raise TypeError(
            "a task key must be a str, int, float, bytes, bool, None or a tuple of these "
            "(its repr must be the same in every run), not %s %r"
            % (type(value).__name__, value))


def user_key_text(value: Any) -> str:
    """The journal's text for a user's ``key=``: ``k:`` + its repr (``'1'`` and ``1`` differ).

    Raises:
        TypeError: the key is of a type whose repr is not stable across runs.
    """
    _check_user_key(value)
    return "k:" + repr(value)


class KeyMaker:
    """Keys for one run: content digests numbered by occurrence, or the user's keys.

    Holds one small entry per distinct task content seen in this run (about 100 bytes each).
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: Dict[str, int] = {}

    def key(self, payload: Parts, setup: Parts = None, user_key: Optional[Any] = None) -> str:
        if user_key is not None:
            return user_key_text(user_key)
        digest = content_digest(payload, setup)
        n = self._seen.get(digest, 0)
        self._seen[digest] = n + 1
        return "h:" + digest if n == 0 else "h:%s#%d" % (digest, n)
