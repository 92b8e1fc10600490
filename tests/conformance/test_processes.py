"""Conformance for stores that several processes share."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

from stepline.adapters import open_store
from stepline.adapters.base import StoreOptions


async def test_increments_from_two_processes_are_not_lost(tmp_path: Path, shared_store: str) -> None:
    script = f"""
        import asyncio
        from pathlib import Path
        from stepline.adapters import open_store
        from stepline.adapters.base import Increment, StoreOptions

        async def main():
            adapters = open_store({shared_store!r}, StoreOptions(root=Path({str(tmp_path)!r})))
            await asyncio.gather(*(adapters.state.update("g", "n", Increment()) for _ in range(400)))
            for _ in range(100):
                await adapters.state.update("g", "n", Increment())
            await adapters.close()
            print("ok")

        asyncio.run(main())
    """
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", textwrap.dedent(script), stdout=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [(await asyncio.wait_for(p.communicate(), 60))[0] for p in procs]
    assert outputs == [b"ok\n", b"ok\n"]
    adapters = open_store(shared_store, StoreOptions(root=tmp_path))
    try:
        assert await adapters.state.get("g", "n") == 1000
    finally:
        await adapters.close()
