"""new_id: UUIDv7 strings, unique, in time order, and not repeated by a forked child."""

from __future__ import annotations

import os
import time
import uuid

from stepline._ids import new_id


def test_ids_are_uuid7_unique_and_sort_by_time() -> None:
    first = [new_id() for _ in range(5000)]  # more than one 4 KB pool of randomness
    time.sleep(0.002)
    later = new_id()
    assert len(set(first)) == len(first)
    for id_ in first:  # every one, the last of each pool of randomness included
        parsed = uuid.UUID(id_)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == id_
    assert max(first) < later
    assert abs(int(later[:8] + later[9:13], 16) / 1000 - time.time()) < 5


def test_a_forked_child_draws_its_own_randomness() -> None:
    new_id()  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, "".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode()
    os.close(read)
    parent = "".join(new_id() for _ in range(3))
    # The millisecond prefixes may match; the random tails must not.
    tails = lambda ids: {ids[i * 36 + 14 : i * 36 + 36] for i in range(3)}  # noqa: E731
    assert not tails(child) & tails(parent)
