"""The authentication of workers that connect back to a manager (no I/O here).

Both sides hold a per-array random key (32 bytes, in the rendezvous file, mode 0600, which
only the user can read). Every step is a challenge-response over **fixed-size raw byte
frames** (HMAC-SHA256, compared with :func:`hmac.compare_digest`): nothing a peer sends is
unpickled, decoded or parsed before its MAC has been checked, and a frame of the wrong size
is refused by its size alone. Each side proves the key to the other, bound to nonces that
both chose, so a recorded exchange cannot be replayed::

    TCP   manager -> worker   SERVER_HELLO   magic | server nonce
          worker  -> manager  CLIENT_HELLO   magic | client nonce | MAC | info (host:pid)
          manager -> worker   FRAME          ACCEPTED / UNNEEDED / REJECTED | MAC
          manager -> worker   FRAME          CONNECT! | MAC          (later: "go connect")
    MPI   manager -> worker   FRAME          CHALLNGE | MPI nonce     (after MPI_Comm_accept)
          worker  -> manager  FRAME          RESPONSE | MAC
          manager -> worker   FRAME          WELCOME! | MAC

The MPI response is bound to the TCP nonces of the worker that was told to connect, so a
process that only knows the MPI port name cannot take that worker's place.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Optional, Tuple

#: First bytes of both hellos: protocol name and version.
MAGIC = b"MPDARR01"
CODE_SIZE = 8
NONCE_SIZE = 32
MAC_SIZE = 32
INFO_SIZE = 64
KEY_SIZE = 32

SERVER_HELLO_SIZE = len(MAGIC) + NONCE_SIZE
CLIENT_HELLO_SIZE = len(MAGIC) + NONCE_SIZE + MAC_SIZE + INFO_SIZE
FRAME_SIZE = CODE_SIZE + MAC_SIZE

# frame codes (8 bytes each)
ACCEPTED = b"ACCEPTED"    # key proven; wait for CONNECT!
UNNEEDED = b"UNNEEDED"    # key proven, but the manager has all the workers it wants
REJECTED = b"REJECTED"    # key not proven (the MAC field is zeros: nothing to prove)
CONNECT = b"CONNECT!"     # call MPI_Comm_connect now
CHALLENGE = b"CHALLNGE"   # MPI: prove the key for this nonce
RESPONSE = b"RESPONSE"
WELCOME = b"WELCOME!"

_HELLO = b"mpidispatch hello\0"
_REPLY = b"mpidispatch reply\0"
_RESPONSE = b"mpidispatch mpi response\0"
_WELCOME = b"mpidispatch mpi welcome\0"


def new_key() -> bytes:
    """A fresh random key for one array."""
    return secrets.token_bytes(KEY_SIZE)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, label + b"".join(parts), hashlib.sha256).digest()


def _pad_info(info: str) -> bytes:
    raw = info.encode("ascii", "replace")[:INFO_SIZE]
    return raw + b"\0" * (INFO_SIZE - len(raw))


# ------------------------------------------------------------------------------------- TCP
def server_hello(server_nonce: bytes) -> bytes:
    return MAGIC + server_nonce


def parse_server_hello(data: bytes) -> Optional[bytes]:
    """The server nonce, or None if ``data`` is not a server hello."""
    if len(data) != SERVER_HELLO_SIZE or not hmac.compare_digest(data[:len(MAGIC)], MAGIC):
        return None
    return data[len(MAGIC):]


def client_hello(key: bytes, server_nonce: bytes, client_nonce: bytes, info: str) -> bytes:
    """The worker's proof of the key, with ``info`` (e.g. ``host:pid``, for messages)."""
    padded = _pad_info(info)
    return (MAGIC + client_nonce + _mac(key, _HELLO, server_nonce, client_nonce, padded)
            + padded)


def check_client_hello(key: bytes, server_nonce: bytes,
                       data: bytes) -> Tuple[Optional[bytes], str]:
    """(client nonce, info) of a valid hello; (None, why not) otherwise."""
    if len(data) != CLIENT_HELLO_SIZE:
        return None, "a greeting of %d bytes instead of %d" % (len(data), CLIENT_HELLO_SIZE)
    magic, rest = data[:len(MAGIC)], data[len(MAGIC):]
    if not hmac.compare_digest(magic, MAGIC):
        return None, "not an mpidispatch greeting"
    nonce, mac, padded = rest[:NONCE_SIZE], rest[NONCE_SIZE:NONCE_SIZE + MAC_SIZE], \
        rest[NONCE_SIZE + MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, _HELLO, server_nonce, nonce, padded)):
        return None, "a wrong key"
    info = padded.rstrip(b"\0").decode("ascii", "replace")
    return nonce, info


def reply(key: bytes, code: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """A manager's answer frame, which proves the key to the worker (except REJECTED)."""
    if code == REJECTED:
        return REJECTED + b"\0" * MAC_SIZE
    return code + _mac(key, _REPLY, code, server_nonce, client_nonce)


def check_reply(key: bytes, frame: bytes, server_nonce: bytes,
                client_nonce: bytes) -> Optional[bytes]:
    """The code of a manager frame whose MAC is right (REJECTED needs none), else None."""
    if len(frame) != FRAME_SIZE:
        return None
    code, mac = frame[:CODE_SIZE], frame[CODE_SIZE:]
    if code == REJECTED:
        return REJECTED
    if hmac.compare_digest(mac, _mac(key, _REPLY, code, server_nonce, client_nonce)):
        return code
    return None


# ------------------------------------------------------------------------------------- MPI
def challenge(mpi_nonce: bytes) -> bytes:
    return CHALLENGE + mpi_nonce


def parse_challenge(frame: bytes) -> Optional[bytes]:
    if len(frame) != FRAME_SIZE or not hmac.compare_digest(frame[:CODE_SIZE], CHALLENGE):
        return None
    return frame[CODE_SIZE:]


def response(key: bytes, mpi_nonce: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """The worker's MPI-side proof, bound to the TCP session it was told to connect in."""
    return RESPONSE + _mac(key, _RESPONSE, mpi_nonce, server_nonce, client_nonce)


def check_response(key: bytes, frame: bytes, mpi_nonce: bytes, server_nonce: bytes,
                   client_nonce: bytes) -> bool:
    return (len(frame) == FRAME_SIZE
            and hmac.compare_digest(frame, response(key, mpi_nonce, server_nonce,
                                                    client_nonce)))


def welcome(key: bytes, mpi_nonce: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """The manager's MPI-side proof: the worker unpickles tasks only after checking it."""
    return WELCOME + _mac(key, _WELCOME, mpi_nonce, server_nonce, client_nonce)


def check_welcome(key: bytes, frame: bytes, mpi_nonce: bytes, server_nonce: bytes,
                  client_nonce: bytes) -> bool:
    return (len(frame) == FRAME_SIZE
            and hmac.compare_digest(frame, welcome(key, mpi_nonce, server_nonce,
                                                   client_nonce)))
