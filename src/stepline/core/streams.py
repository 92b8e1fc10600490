"""Streams: items that steps set, pushed to the clients that watch them the moment they change.

A client watches one group of a stream, or one item of it. The hub keeps a Channel per watched group and
passes each change on in the order of the group's sequence number, which the store assigns in the same
write as the item:

- A join registers the connection first and buffers what arrives, then reads the snapshot and the number
  V it is as of, sends it (`sync`), and then what the buffer holds after V: no change falls between the
  snapshot and the updates (Motia reads its snapshot before it joins the room, and loses those).
- A change whose number is not the next expected one (another process's change still on its way, or
  one the bus lost) holds the channel back while the missing ones are read from the group's change log;
  past the log's reach, every watcher gets a fresh `sync`.
- A client that reconnects with the last number it saw (`since`) is sent what it missed from the log,
  or a fresh `sync` when the log no longer reaches back.
- Each connection has an Outbox, bounded: an item's update still waiting to go is replaced by its newer
  one, and a connection that still falls behind is closed as a slow consumer (the step never waits).

Messages are Motia's (`{"timestamp", "streamName", "groupId", "id"?, "event": {"type", "data"}}`) with the
group's number as an extra `seq`; timestamps strictly increase per channel, as Motia's clients require
(they drop a message not newer than the last).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stepline import _json
from stepline._errors import FieldError, SchemaValidationError
from stepline.adapters.base import StreamChange, StreamEvent, StreamStore
from stepline.steps.streams import StreamDef, Subscription

log = logging.getLogger("stepline.streams")

# A connection's outbox: past this many messages waiting, the connection is closed as a slow consumer
# (after an item's waiting update has been replaced by each newer one), or past this many bytes.
OUTBOX_MESSAGES = 1024
OUTBOX_BYTES = 8 * 1024 * 1024
# The WebSocket close code (and reason) for a client that does not read fast enough: 1008, policy violation.
SLOW_CODE = 1008
SLOW_REASON = "slow consumer"
ACCESS_DENIED = "STREAM_ACCESS_DENIED"
NOT_FOUND = "STREAM_NOT_FOUND"
_FILL_TRIES = 50
IDLE_STOP = 30.0  # seconds without a watcher after which a process stops hearing other processes' changes


class StreamAccessError(Exception):
    """A join refused: `code` is STREAM_ACCESS_DENIED or STREAM_NOT_FOUND, `reason` says why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Out:
    """A message waiting in an outbox: its text, the group's number it brings the client to (None for an
    event, which changes nothing), and its type (SSE names its events by it)."""

    text: str
    seq: int | None
    type: str


class SlowConsumer(Exception):
    pass


class Outbox:
    """What one connection still has to send, bounded. The transport takes messages with `get`."""

    def __init__(self, limit: int = OUTBOX_MESSAGES, limit_bytes: int = OUTBOX_BYTES) -> None:
        self._queue: OrderedDict[Any, Out] = OrderedDict()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._serial = 0
        self.overflowed = False
        self.closed = False
        # Set by a transport that can send a message at once, without a task switch: called with the message
        # when nothing waits before it; True when it took the message.
        self.direct: Callable[[Out], bool] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, out: Out, key: Any = None) -> None:
        """Queue a message; never waits. With a key (an item's update), a waiting message of the same key is
        dropped and this one goes to the end: an update replaces the whole item, so the newer one says all
        the older did, and the queue stays in order of the group's numbers."""
        if self.closed or self.overflowed:
            return
        if not self._queue and self.direct is not None and self.direct(out):
            return  # sent, in order: nothing was waiting before it
        if key is None:
            self._serial += 1
            key = self._serial
        else:
            old = self._queue.pop(key, None)
            if old is not None:
                self._bytes -= len(old.text)
        self._queue[key] = out
        self._bytes += len(out.text)
        if len(self._queue) > self._limit or self._bytes > self._limit_bytes:
            self.overflowed = True  # the transport closes the connection; nothing more is queued
            self._queue.clear()
            self._bytes = 0
        self._ready.set()

    def pop(self) -> Out | None:
        """The next message if one waits (no coroutine per message: the sender drains the outbox in a loop,
        and waits with `ready` only once it is empty); SlowConsumer once the outbox overflowed."""
        if self.overflowed:
            raise SlowConsumer
        if not self._queue:
            return None
        _, out = self._queue.popitem(last=False)
        self._bytes -= len(out.text)
        return out

    async def ready(self) -> None:
        """Until a message waits (or the outbox overflowed, or closed)."""
        while not self._queue and not self.overflowed and not self.closed:
            self._ready.clear()
            await self._ready.wait()

    async def get(self) -> Out:
        """The next message; SlowConsumer once the outbox overflowed."""
        while not self._queue:
            if self.overflowed:
                raise SlowConsumer
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            raise SlowConsumer
        _, out = self._queue.popitem(last=False)
        self._bytes -= len(out.text)
        return out

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._ready.set()


@dataclass(eq=False)
class _Member:
    """A connection's watches of one channel: how many of the whole group, and which items."""

    outbox: Outbox
    groups: int = 0
    items: Counter[str] = field(default_factory=Counter)
    # Set while the connection's first watch of the channel joins: what arrives is kept for after its sync.
    buffer: list[StreamChange | StreamEvent] | None = None
    floor: int = 0  # changes up to this number are in what the connection was sent (its sync)

    def wants(self, id: str | None) -> bool:
        return self.groups > 0 or (id is not None and id in self.items)

    @property
    def empty(self) -> bool:
        return self.groups == 0 and not self.items


class Channel:
    """One watched group: passes its changes on in order, to every connection watching it."""

    def __init__(self, hub: Hub, stream: str, group: str) -> None:
        self.hub = hub
        self.stream = stream
        self.group = group
        self.cursor: int | None = None  # the number of the last change passed on; None before the first sync
        self.members: dict[Outbox, _Member] = {}
        self._held: list[StreamChange] = []
        self._filling: asyncio.Task[None] | None = None
        self._advanced = asyncio.Event()
        self._last_ts = 0

    # -- messages --------------------------------------------------------------------------------

    def stamp(self) -> int:
        """Milliseconds, strictly increasing: Motia's clients drop a message not newer than the last."""
        now = int(time.time() * 1000)
        self._last_ts = now if now > self._last_ts else self._last_ts + 1
        return self._last_ts

    def _message(self, id: str | None, event: dict[str, Any], seq: int | None) -> str:
        body: dict[str, Any] = {"timestamp": self.stamp(), "streamName": self.stream, "groupId": self.group}
        if id is not None:
            body["id"] = id
        body["event"] = event
        if seq is not None:
            body["seq"] = seq
        return _json.dumps(body).decode()

    def _change_out(self, change: StreamChange) -> Out:
        data = {"id": change.id} if change.op == "delete" else change.data
        return Out(self._message(change.id, {"type": change.op, "data": data}, change.seq), change.seq, change.op)

    def _event_out(self, event: StreamEvent) -> Out:
        return Out(self._message(event.id, {"type": "event", "event": event.event}, None), None, "event")

    def _key(self, change: StreamChange) -> Any:
        return ("u", self.stream, self.group, change.id) if change.op == "update" else None

    # -- changes ---------------------------------------------------------------------------------

    def offer(self, change: StreamChange) -> None:
        """A change of this group, from this process or another, in any order, perhaps twice."""
        if self.cursor is None or self._filling is not None:
            self._held.append(change)
            return
        if change.seq <= self.cursor:
            return  # passed on already
        if change.seq == self.cursor + 1:
            self._pass(change)
            return
        self._held.append(change)  # some before it are missing: read them from the log first
        self.catch_up()

    def catch_up(self) -> None:
        """Read what the log has after the cursor (a gap, or a listener that may have missed some)."""
        if self._filling is None and self.cursor is not None:
            self._filling = asyncio.create_task(self._fill(), name=f"stepline-stream-fill-{self.stream}")

    def _pass(self, change: StreamChange) -> None:
        self.cursor = change.seq
        out: Out | None = None
        for member in self.members.values():
            if change.seq <= member.floor:
                continue
            if member.buffer is not None:
                member.buffer.append(change)
            elif member.wants(change.id):
                if out is None:
                    out = self._change_out(change)  # one message for every connection
                member.outbox.push(out, self._key(change))
        self._advanced.set()

    def _release_held(self) -> None:
        assert self.cursor is not None
        self._held.sort(key=lambda c: c.seq)
        while self._held and self._held[0].seq <= self.cursor + 1:
            change = self._held.pop(0)
            if change.seq == self.cursor + 1:
                self._pass(change)

    async def _fill(self) -> None:
        try:
            tries = 0
            while True:
                self._release_held()
                assert self.cursor is not None
                got = await self.hub.store.changes(self.stream, self.group, self.cursor)
                if got is None:  # the log no longer reaches back: a fresh sync for every watcher
                    await self._resync()
                else:
                    for change in got:
                        if change.seq == self.cursor + 1:
                            self._pass(change)
                self._release_held()
                if not self._held:
                    return
                tries += 1  # the held changes are committed, so the log has them: this is a slow read
                if tries >= _FILL_TRIES:
                    log.error("stream %s/%s: changes after %s cannot be read", self.stream, self.group, self.cursor)
                    await self._resync()
                    return
                await asyncio.sleep(0.01 * tries)
        except Exception as exc:  # the store failed: the next change (or reconnect) tries again
            log.warning("stream %s/%s: reading missed changes failed (%s)", self.stream, self.group, exc)
        finally:
            self._filling = None

    async def _resync(self) -> None:
        items, seq = await self.hub.store.snapshot(self.stream, self.group)
        self.cursor = seq
        self._held = [c for c in self._held if c.seq > seq]
        for outbox, member in self.members.items():
            if member.buffer is not None:
                continue  # its own sync is on the way
            member.floor = seq
            if member.groups:
                outbox.push(self._sync_out(items, seq, None))
            for id in member.items:
                outbox.push(self._sync_out(items, seq, id))
        self._advanced.set()

    def _sync_out(self, items: dict[str, Any], seq: int, id: str | None) -> Out:
        data = list(items.values()) if id is None else items.get(id)
        return Out(self._message(id, {"type": "sync", "data": data}, seq), seq, "sync")

    async def until(self, seq: int, timeout: float = 10.0) -> None:
        """Wait until every change up to `seq` has been passed on (TimeoutError if the store cannot tell)."""
        async with asyncio.timeout(timeout):
            while self.cursor is not None and self.cursor < seq:
                self.catch_up()
                self._advanced.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._advanced.wait(), 0.5)

    # -- events ----------------------------------------------------------------------------------

    def event(self, event: StreamEvent) -> None:
        out: Out | None = None
        for member in self.members.values():
            if member.buffer is not None:
                member.buffer.append(event)
            elif member.wants(event.id):
                out = out or self._event_out(event)
                member.outbox.push(out)

    # -- joining ---------------------------------------------------------------------------------

    async def join(self, outbox: Outbox, id: str | None, since: int | None) -> None:
        member = self.members.get(outbox)
        first = member is None
        if member is None:
            member = self.members[outbox] = _Member(outbox, buffer=[])
        if id is None:
            member.groups += 1
        else:
            member.items[id] += 1
        try:
            if first:
                await self._join_first(member, id, since)
            else:
                # The connection is live on this channel: a sync at V must not be followed by older changes.
                items, seq = await self.hub.store.snapshot(self.stream, self.group)
                await self.until(seq)
                outbox.push(self._sync_out(items, seq, id))
        except BaseException:
            self.leave(outbox, id)
            raise

    async def _join_first(self, member: _Member, id: str | None, since: int | None) -> None:
        # Registered before reading: whatever is passed on from here on arrives in the member's buffer,
        # and what was committed before is in the snapshot (or the replay), both read after. One case
        # more: another connection's join, reading later, may have started the channel at a number past
        # this read, and the changes between were never passed on: then read again (a read made now is
        # at least as new as the channel's number).
        while True:
            replay = await self.hub.store.changes(self.stream, self.group, since) if since is not None else None
            if replay is not None:
                assert since is not None
                seq = replay[-1].seq if replay else since
            else:
                items, seq = await self.hub.store.snapshot(self.stream, self.group)
            if self.cursor is None or seq >= self.cursor:
                break
        self._start(seq)
        if replay is not None:
            for change in replay:
                if member.wants(change.id):
                    member.outbox.push(self._change_out(change), self._key(change))
        else:
            if member.groups:
                member.outbox.push(self._sync_out(items, seq, None))
            for item_id in member.items:
                member.outbox.push(self._sync_out(items, seq, item_id))
        member.floor = seq
        self._go_live(member)

    def _start(self, seq: int) -> None:
        if self.cursor is None:
            self.cursor = seq
            self._held = [c for c in self._held if c.seq > seq]
            if self._held:
                self.catch_up()

    def _go_live(self, member: _Member) -> None:
        buffered, member.buffer = member.buffer or [], None
        for item in buffered:
            if isinstance(item, StreamEvent):
                if member.wants(item.id):
                    member.outbox.push(self._event_out(item))
            elif item.seq > member.floor and member.wants(item.id):
                member.outbox.push(self._change_out(item), self._key(item))

    def leave(self, outbox: Outbox, id: str | None) -> None:
        member = self.members.get(outbox)
        if member is None:
            return
        if id is None:
            member.groups = max(0, member.groups - 1)
        else:
            member.items[id] -= 1
            if member.items[id] <= 0:
                del member.items[id]
        if member.empty:
            del self.members[outbox]


class Hub:
    """The streams of a project, on a store: what `ctx.streams` writes through and the transports join."""

    def __init__(self, store: StreamStore, streams: dict[str, StreamDef]) -> None:
        self.store = store
        self.streams = streams
        self._channels: dict[tuple[str, str], Channel] = {}
        self._watches: dict[Outbox, dict[str, tuple[str, str, str | None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Future[None] | None = None
        self._joining = 0  # joins under way: the listener is not stopped under them

    def set_streams(self, streams: dict[str, StreamDef]) -> None:
        self.streams = streams

    def definition(self, name: str) -> StreamDef:
        stream = self.streams.get(name)
        if stream is None:
            known = ", ".join(sorted(self.streams)) or "none"
            raise StreamAccessError(NOT_FOUND, f"there is no stream {name!r} (streams: {known})")
        return stream

    # -- writing (ctx.streams) -------------------------------------------------------------------

    async def set(self, name: str, group: str, id: str, data: Any) -> dict[str, Any]:
        stream = self.definition(name)
        _check_key(group, "group_id")
        _check_key(id, "id")
        what = f"the item {id!r} of stream {name!r}"
        if not isinstance(data, dict):
            got = type(data).__name__
            raise SchemaValidationError(what, [FieldError("", f"a stream item is a JSON object, not a {got}")])
        value = stream.validate(data, what)
        item = {**value, "id": id}
        change = await self.store.set(name, group, id, item)
        self._offer(change)
        return item

    async def delete(self, name: str, group: str, id: str) -> dict[str, Any] | None:
        self.definition(name)
        before = await self.store.get(name, group, id)
        change = await self.store.delete(name, group, id)
        if change is None:
            return None
        self._offer(change)
        return before if isinstance(before, dict) else {"id": id}

    async def get(self, name: str, group: str, id: str) -> dict[str, Any] | None:
        self.definition(name)
        value = await self.store.get(name, group, id)
        return value if isinstance(value, dict) else None

    async def get_group(self, name: str, group: str) -> list[dict[str, Any]]:
        self.definition(name)
        items, _ = await self.store.snapshot(name, group)
        return list(items.values())

    async def send(self, name: str, group: str, id: str | None, event: dict[str, Any]) -> None:
        self.definition(name)
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise SchemaValidationError(
                f"an event for stream {name!r}", [FieldError("type", 'an event is {"type": "...", "data": ...}')]
            )
        ev = StreamEvent(name, group, id, {"type": event["type"], "data": event.get("data")})
        channel = self._channels.get((name, group))
        if channel is not None:
            channel.event(ev)
        await self.store.send(ev)

    def _offer(self, change: StreamChange) -> None:
        channel = self._channels.get((change.stream, change.group))
        if channel is not None:
            channel.offer(change)

    # -- watching ----------------------------------------------------------------------------------

    async def check_access(self, subscription: Subscription, auth: Any) -> None:
        """Raises StreamAccessError unless the stream exists and its can_access lets `auth` watch."""
        stream = self.definition(subscription.stream)
        if stream.can_access is None:
            return
        try:
            allowed = stream.can_access(subscription, auth)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Exception as exc:
            log.error("stream %s: can_access raised %s: %s", stream.name, type(exc).__name__, exc)
            raise StreamAccessError(ACCESS_DENIED, f"access check failed ({type(exc).__name__})") from None
        if allowed is False or allowed is None:
            raise StreamAccessError(ACCESS_DENIED, f"access to {_where(subscription)} denied")

    async def join(self, outbox: Outbox, sub_id: str, subscription: Subscription, since: int | None = None) -> None:
        """Start sending `outbox` the subscription's sync (or what it missed after `since`), then its changes."""
        self._joining += 1
        try:
            await self._join(outbox, sub_id, subscription, since)
        finally:
            self._joining -= 1

    async def _join(self, outbox: Outbox, sub_id: str, subscription: Subscription, since: int | None) -> None:
        await self._listen()
        watches = self._watches.setdefault(outbox, {})
        if sub_id in watches:  # a client re-joining under the same id: the old watch goes
            self.leave(outbox, sub_id)
            watches = self._watches.setdefault(outbox, {})
        key = (subscription.stream, subscription.group_id)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = Channel(self, *key)
        watches[sub_id] = (subscription.stream, subscription.group_id, subscription.id)
        try:
            await channel.join(outbox, subscription.id, since)
        except BaseException:
            watches.pop(sub_id, None)
            self._forget(channel)
            raise

    def leave(self, outbox: Outbox, sub_id: str) -> bool:
        watches = self._watches.get(outbox)
        if not watches or sub_id not in watches:
            return False
        stream, group, id = watches.pop(sub_id)
        if not watches:
            del self._watches[outbox]
        channel = self._channels.get((stream, group))
        if channel is not None:
            channel.leave(outbox, id)
            self._forget(channel)
        return True

    def drop(self, outbox: Outbox) -> None:
        """The connection is gone: all its watches go."""
        for sub_id in list(self._watches.get(outbox, {})):
            self.leave(outbox, sub_id)
        outbox.close()

    def _forget(self, channel: Channel) -> None:
        if not channel.members and self._channels.get((channel.stream, channel.group)) is channel:
            del self._channels[(channel.stream, channel.group)]
            if not self._channels and self._listener is not None:
                asyncio.get_running_loop().call_later(IDLE_STOP, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        """No one has watched anything for a while: stop listening (SQLite's listener polls its table)."""
        if self._channels or self._joining or self._listener is None:
            return
        self._listener.cancel()
        self._listener = None
        self._listening = None  # the next join starts it again, and waits until it listens

    @property
    def watchers(self) -> int:
        return sum(len(w) for w in self._watches.values())

    def watched(self) -> list[tuple[str, str, int]]:
        """(stream, group, watches) of every watched group, for the Workbench."""
        return [
            (c.stream, c.group, sum(m.groups + sum(m.items.values()) for m in c.members.values()))
            for c in self._channels.values()
        ]

    # -- other processes ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Hear other processes' changes from before the first snapshot on: started at the first join."""
        if self._listening is None:
            self._listening = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(self._hear(), name="stepline-streams-listen")
        await asyncio.shield(self._listening)

    async def _hear(self) -> None:
        assert self._listening is not None
        while True:
            try:
                async for batch in self.store.listen():
                    if not batch:  # (again) listening: what passed before may have been missed
                        if not self._listening.done():
                            self._listening.set_result(None)
                        for each in list(self._channels.values()):
                            each.catch_up()
                        continue
                    for message in batch:
                        channel = self._channels.get((message.stream, message.group))
                        if channel is not None and isinstance(message, StreamEvent):
                            channel.event(message)
                        elif channel is not None and isinstance(message, StreamChange):
                            channel.offer(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for other processes' stream changes failed (%s); retrying", exc)
                if not self._listening.done():
                    self._listening.set_result(None)  # joins go on; this process's own changes still flow
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        for outbox in list(self._watches):
            self.drop(outbox)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
            self._listening = None


def _check_key(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else type(value).__name__
        raise SchemaValidationError(f"the stream {name}", [FieldError(name, f"is a non-empty string, not {got}")])


def _where(subscription: Subscription) -> str:
    item = f"/{subscription.id}" if subscription.id is not None else ""
    return f"{subscription.stream}/{subscription.group_id}{item}"


class StreamHandle:
    """`ctx.streams.<name>`: one stream's items, by group and id, and its ephemeral events.

    Motia's calls, as Motia's Python steps make them: `await ctx.streams.progress.set(group_id, id, data)`."""

    def __init__(self, hub: Hub, name: str) -> None:
        self._hub = hub
        self.name = name

    async def set(self, group_id: str, id: str, data: Any) -> dict[str, Any]:
        """Create or replace an item (validated against the stream's schema); returns it, with its `id`.
        Every client watching the group, or the item, hears of it."""
        return await self._hub.set(self.name, group_id, id, data)

    async def get(self, group_id: str, id: str) -> dict[str, Any] | None:
        return await self._hub.get(self.name, group_id, id)

    async def delete(self, group_id: str, id: str) -> dict[str, Any] | None:
        """Remove an item; returns what it was (None when there was none)."""
        return await self._hub.delete(self.name, group_id, id)

    async def get_group(self, group_id: str) -> list[dict[str, Any]]:
        return await self._hub.get_group(self.name, group_id)

    getGroup = get_group  # Motia's spelling

    def item(self, group_id: str, id: str, *, key: str = "text", extra: dict[str, Any] | None = None) -> StreamItem:
        """One item as a target for text that grows: `ctx.llm.stream(prompt, to=ctx.streams.chat.item(g, i))`
        writes `{**extra, key: text so far, "done": False}` as it comes, then `"done": True`."""
        return StreamItem(self, group_id, id, key, extra or {})

    async def send(self, channel: dict[str, Any], event: dict[str, Any]) -> None:
        """An ephemeral event (`{"type", "data"}`) to the watchers of a group (`{"groupId": g}`) or of one
        item (`{"groupId": g, "id": i}`): not stored, so only those connected now receive it."""
        if not isinstance(channel, dict):
            raise TypeError('the channel is {"groupId": "..."} or {"groupId": "...", "id": "..."}')
        group = channel.get("groupId", channel.get("group_id"))
        _check_key(group, "groupId")
        await self._hub.send(self.name, str(group), channel.get("id"), event)


@dataclass
class StreamItem:
    """An item that text is written into as it grows (ctx.llm.stream's `to`)."""

    handle: StreamHandle
    group_id: str
    id: str
    key: str = "text"
    extra: dict[str, Any] = field(default_factory=dict)

    async def write(self, text: str, done: bool) -> None:
        await self.handle.set(self.group_id, self.id, {**self.extra, self.key: text, "done": done})


class Streams:
    """`ctx.streams`: the project's streams by name, as attributes (`ctx.streams.progress`) or keys."""

    def __init__(self, hub: Hub | None) -> None:
        self._hub = hub

    def __getattr__(self, name: str) -> StreamHandle:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> StreamHandle:
        if self._hub is None:
            raise RuntimeError("this app's store keeps no streams (a store of your own without `streams`)")
        if name not in self._hub.streams:
            known = ", ".join(sorted(self._hub.streams)) or "none yet"
            raise AttributeError(
                f"there is no stream {name!r} (streams: {known}); define it in a *_stream.py file: "
                f'config = {{"name": "{name}", "schema": ...}}'
            )
        return StreamHandle(self._hub, name)

    def __contains__(self, name: str) -> bool:
        return self._hub is not None and name in self._hub.streams
