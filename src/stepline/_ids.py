"""Identifiers: UUIDv7 strings, so ids sort by creation time (handy in traces and queues)."""

from __future__ import annotations

import os
import threading
import time

_SIZE = 10  # random bytes per id
_POOL = 4096 - 4096 % _SIZE  # a whole number of ids' worth, so none is cut short at the end


class _Entropy(threading.local):
    """Random bytes read from the OS 4 KB at a time: one getrandom call per 409 ids, not one per id."""

    def __init__(self) -> None:
        self.buf = b""
        self.at = _POOL


_entropy = _Entropy()
# A forked child must not hand out the ids its parent is about to.
os.register_at_fork(after_in_child=lambda: _Entropy.__init__(_entropy))


def new_id() -> str:
    e = _entropy
    at = e.at
    if at >= _POOL:
        e.buf = os.urandom(_POOL)
        at = 0
    e.at = at + _SIZE
    rand = bytearray(e.buf[at : at + _SIZE])
    rand[0] = 0x70 | rand[0] & 0x0F  # version 7
    rand[2] = 0x80 | rand[2] & 0x3F  # variant 10
    ms = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    return f"{ms[:4].hex()}-{ms[4:].hex()}-{rand[:2].hex()}-{rand[2:4].hex()}-{rand[4:].hex()}"
