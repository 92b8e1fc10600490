"""The three-step chain used by the crash test and the benchmark: POST /chains/{id} -> A -> B -> C."""

from __future__ import annotations

from pathlib import Path

STEPS = {
    "start_step.py": """
config = {"type": "api", "name": "StartChain", "path": "/chains/{id}", "method": "POST", "emits": ["chain.a"]}

async def handler(req, ctx):
    chain = req.path_params["id"]
    # the key makes a client's retry of a request whose answer it lost start no second chain
    await ctx.emit({"topic": "chain.a", "data": {"id": chain}, "idempotencyKey": f"chain-{chain}"})
    return {"status": 202, "body": {"traceId": ctx.trace_id}}
""",
    "a_step.py": """
config = {"type": "event", "name": "A", "subscribes": ["chain.a"], "emits": ["chain.b"]}

async def handler(input, ctx):
    await ctx.state.increment("runs", "A")
    await ctx.emit("chain.b", input)
""",
    "b_step.py": """
config = {"type": "event", "name": "B", "subscribes": ["chain.b"], "emits": ["chain.c"]}

async def handler(input, ctx):
    await ctx.state.increment("runs", "B")
    await ctx.emit("chain.c", input)
""",
    "c_step.py": """
config = {"type": "event", "name": "C", "subscribes": ["chain.c"]}

async def handler(input, ctx):
    await ctx.state.increment("runs", "C")
    await ctx.state.set("done", input["id"], True)
""",
}


def write_chain_project(root: Path) -> Path:
    (root / "steps").mkdir(parents=True, exist_ok=True)
    for name, source in STEPS.items():
        (root / "steps" / name).write_text(source.lstrip())
    return root
