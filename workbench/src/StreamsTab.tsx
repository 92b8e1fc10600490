import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { call, Stream, StreamItem, StreamSnapshot, streamSocketUrl } from "./api";

/** How the items of the chosen group are kept fresh: the stream WebSocket, or re-reading every 2 s. */
type Mode = "connecting" | "live" | "polling";
/** An ephemeral event sent to the group (or to one of its items): not stored, so only seen while watching. */
type StreamEvent = { n: number; at: number; type: string; data: unknown; id?: string };

const POLL_MS = 2000;
const EVENTS_KEPT = 50;
const ANSWER_MS = 5000; // how long a join may go unanswered before the page polls instead
let joins = 0;

/**
 * The items of one group of a stream, kept live: a join over the app's stream WebSocket (Motia's protocol,
 * as src/stepline/http/stream_client.js speaks it), applying sync/create/update/delete as they come. When the
 * join is refused (a stream with an access check) or the socket fails, the group is re-read from the admin
 * API every 2 s instead, and `note` says why; a failed socket is tried again, now and then.
 * The group is left when the stream or group changes, or the component using it goes.
 */
function useStreamGroup(stream: string, group: string) {
  const [items, setItems] = useState<StreamItem[]>([]);
  const [mode, setMode] = useState<Mode>("connecting");
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [events, setEvents] = useState<StreamEvent[]>([]);

  useEffect(() => {
    let done = false;
    let seq: number | null = null; // the group's number the items shown are as of
    let socket: WebSocket | null = null;
    let poll: ReturnType<typeof setInterval> | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let answer: ReturnType<typeof setTimeout> | undefined; // waiting for the join's snapshot
    let delay = POLL_MS;
    let received = 0;
    const sub = {
      streamName: stream,
      groupId: group,
      subscriptionId: `workbench-${Date.now().toString(36)}-${++joins}-${Math.random().toString(36).slice(2)}`,
    };
    setItems([]);
    setEvents([]);
    setMode("connecting");
    setNote(null);
    setError(null);

    const read = () =>
      call<StreamSnapshot>(`/streams/${encodeURIComponent(stream)}/${encodeURIComponent(group)}`).then(
        (snapshot) => {
          if (done || (seq !== null && snapshot.seq !== null && snapshot.seq < seq)) return; // older than shown
          seq = snapshot.seq;
          setItems(snapshot.items);
          setError(null);
        },
        (e) => done || setError(String(e.message ?? e)),
      );
    const startPolling = (why: string) => {
      setMode("polling");
      setNote(why);
      if (poll === undefined) poll = setInterval(read, POLL_MS);
      read();
    };
    const stopPolling = () => {
      if (poll !== undefined) clearInterval(poll);
      poll = undefined;
    };

    const connect = () => {
      retry = undefined;
      let opened = false;
      let refused = false;
      let synced = false;
      const ws = new WebSocket(streamSocketUrl());
      socket = ws;
      ws.onopen = () => {
        opened = true;
        ws.send(JSON.stringify({ type: "join", data: sub }));
        clearTimeout(answer);
        answer = setTimeout(() => {
          if (!done && socket === ws && !synced) {
            startPolling("live updates unavailable: the stream socket sent no snapshot; refreshing every 2 s");
          }
        }, ANSWER_MS);
      };
      ws.onmessage = (message) => {
        if (done) return;
        let m: any;
        try {
          m = JSON.parse(message.data);
        } catch {
          return;
        }
        if (m?.streamName !== stream || m.groupId !== group || !m.event) return;
        const event = m.event;
        if (event.type === "event") {
          const inner = event.event ?? {};
          if (inner.type === "error") {
            refused = true;
            socket = null;
            ws.close();
            const why = inner.data?.message ?? inner.data?.code ?? "refused";
            startPolling(`live updates refused: ${why}; refreshing every 2 s`);
            return;
          }
          const n = ++received;
          setEvents((list) =>
            [{ n, at: m.timestamp ?? Date.now(), type: String(inner.type), data: inner.data, id: m.id }, ...list].slice(
              0,
              EVENTS_KEPT,
            ),
          );
          return;
        }
        if (m.id !== undefined && event.type === "sync") return; // one item's snapshot: not this watch's
        if (typeof m.seq === "number" && seq !== null && event.type !== "sync" && m.seq <= seq) return; // seen
        if (event.type === "sync") {
          synced = true;
          setItems(Array.isArray(event.data) ? event.data : []);
          stopPolling();
          setMode("live");
          setNote(null);
          setError(null);
          delay = POLL_MS;
        } else if (event.type === "delete") {
          setItems((list) => list.filter((x) => x.id !== event.data?.id));
        } else if (event.type === "create" || event.type === "update") {
          const item = event.data as StreamItem;
          setItems((list) => {
            const at = list.findIndex((x) => x.id === item.id);
            return at < 0 ? [...list, item] : list.map((x, i) => (i === at ? item : x));
          });
        }
        if (typeof m.seq === "number") seq = m.seq;
      };
      ws.onclose = () => {
        if (done || refused || socket !== ws) return;
        socket = null;
        startPolling(
          opened
            ? "live updates lost: the connection closed; refreshing every 2 s"
            : "live updates unavailable: could not connect to /__stepline/streams; refreshing every 2 s",
        );
        retry = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30_000);
      };
    };
    read(); // the items at once; the socket's snapshot (or the polling) follows
    connect();

    return () => {
      done = true;
      stopPolling();
      clearTimeout(retry);
      clearTimeout(answer);
      const ws = socket;
      socket = null;
      if (!ws) return;
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "leave", data: sub }));
        ws.close();
      } else if (ws.readyState === WebSocket.CONNECTING) {
        ws.onopen = () => ws.close(); // closing a socket that is still connecting makes the browser complain
      }
    };
  }, [stream, group]);

  return { items, mode, note, error, events };
}

/** A field's value in a cell: text as it is, anything nested as JSON; a number that may be a time says which. */
function Value({ value }: { value: unknown }) {
  if (value === null || value === undefined) return <span className="dim">{String(value)}</span>;
  if (typeof value === "string") return <>{value}</>;
  if (typeof value === "object") return <code>{JSON.stringify(value)}</code>;
  if (typeof value === "number" && value > 1e9 && value < 1e10) {
    return <span title={`as seconds since the epoch: ${new Date(value * 1000).toLocaleString()}`}>{value}</span>;
  }
  return <>{String(value)}</>;
}

function GroupItems({ stream, group, changed }: { stream: Stream; group: string; changed: () => void }) {
  const { items, mode, note, error, events } = useStreamGroup(stream.name, group);
  useEffect(changed, [items, mode]); // eslint-disable-line react-hooks/exhaustive-deps -- the list's counts follow
  // Columns: the id, the schema's fields in its order, then any other field an item has.
  const columns = useMemo(() => {
    const seen = new Set<string>(Object.keys(stream.schema?.properties ?? {}));
    for (const item of items) for (const key of Object.keys(item)) seen.add(key);
    seen.delete("id");
    return [...seen];
  }, [items, stream.schema]);
  return (
    <section className="detail" data-testid="stream-items" data-stream={stream.name} data-group={group}>
      <h2>
        {stream.name} <span className="dim">/</span> {group}{" "}
        <span data-testid="stream-live" data-mode={mode} className={`live-badge ${mode}`}>
          {mode === "live" ? "live" : mode === "polling" ? "polling" : "connecting"}
        </span>
      </h2>
      {note && (
        <p className="waiting" data-testid="stream-note">
          {note}
        </p>
      )}
      {error && <p className="error">{error}</p>}
      <table className="stream-table">
        <thead>
          <tr>
            <th>id</th>
            {columns.map((c) => (
              <th key={c}>{c}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {items.map((item) => (
            <tr key={item.id} data-testid="stream-item" data-id={item.id}>
              <td>
                <code>{item.id}</code>
              </td>
              {columns.map((c) => (
                <td key={c} data-field={c}>
                  {c in item ? <Value value={item[c]} /> : ""}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
      {!items.length && mode !== "connecting" && <p className="dim">No items in this group.</p>}
      <h3>Events</h3>
      {!events.length && (
        <p className="dim">No ephemeral events yet: they are not stored, so only those sent while watching show.</p>
      )}
      {events.length > 0 && (
        <table className="stream-events" data-testid="stream-events">
          <tbody>
            {events.map((e) => (
              <tr key={e.n} data-testid="stream-event">
                <td className="dim">{new Date(e.at).toLocaleTimeString()}</td>
                <td className="event-type">
                  <b>{e.type}</b>
                  {e.id !== undefined && <span className="dim"> to {e.id}</span>}
                </td>
                <td>
                  <code>{JSON.stringify(e.data)}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {stream.schema && (
        <details className="schema">
          <summary>Item schema</summary>
          <pre>{JSON.stringify(stream.schema, null, 2)}</pre>
        </details>
      )}
    </section>
  );
}

/** Streams: every stream with its groups; a chosen group's items, live, and its ephemeral events. */
export function StreamsTab({ tick }: { tick: number }) {
  const [streams, setStreams] = useState<Stream[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [chosen, setChosen] = useState<{ stream: string; group: string } | null>(null);
  const load = useCallback(
    () =>
      call<Stream[]>("/streams").then(
        (s) => {
          setStreams(s);
          setError(null);
        },
        (e) => setError(String(e.message ?? e)),
      ),
    [],
  );
  useEffect(() => {
    load();
  }, [tick, load]);
  // The chosen group's items changed (or its watch did): re-read the counts, at most twice a second.
  const pending = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const changed = useCallback(() => {
    if (pending.current === undefined) {
      pending.current = setTimeout(() => {
        pending.current = undefined;
        load();
      }, 500);
    }
  }, [load]);
  useEffect(() => () => clearTimeout(pending.current), []);
  const stream = streams?.find((s) => s.name === chosen?.stream);
  return (
    <div className="split streams">
      <section className="list" data-testid="streams">
        <h2>Streams</h2>
        {error && <p className="error">{error}</p>}
        {streams && !streams.length && (
          <p className="dim">No streams: a stream is a *_stream.py file under steps/ (docs/streams.md).</p>
        )}
        {streams?.map((s) => (
          <div key={s.name} className="stream" data-testid={`stream-${s.name}`}>
            <div className="stream-head">
              <b>{s.name}</b>
              <span className={`access ${s.access}`} title={s.access === "checked" ? "the stream has an access check" : ""}>
                {s.access === "checked" ? "access checked" : "open"}
              </span>
            </div>
            {s.description && <div>{s.description}</div>}
            <div className="dim small">{s.file}</div>
            {s.groups.length ? (
              <table className="stream-groups">
                <thead>
                  <tr>
                    <th>group</th>
                    <th>items</th>
                    <th>seq</th>
                    <th>watchers</th>
                  </tr>
                </thead>
                <tbody>
                  {s.groups.map((g) => (
                    <tr
                      key={g.group}
                      data-testid={`stream-group-${s.name}-${g.group}`}
                      className={chosen?.stream === s.name && chosen.group === g.group ? "on" : ""}
                      onClick={() => setChosen({ stream: s.name, group: g.group })}
                    >
                      <td>{g.group}</td>
                      <td data-field="items">{g.items}</td>
                      <td data-field="seq">{g.seq}</td>
                      <td data-field="watchers">{g.watchers}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <p className="dim small">No groups yet: nothing has been set in this stream.</p>
            )}
          </div>
        ))}
      </section>
      {stream && chosen ? (
        <GroupItems key={`${chosen.stream}\u0000${chosen.group}`} stream={stream} group={chosen.group} changed={changed} />
      ) : (
        streams?.length ? <p className="dim detail-hint">Choose a group to see its items, live.</p> : null
      )}
    </div>
  );
}
