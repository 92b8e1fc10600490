import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { FlowGraph } from "./FlowGraph";
import { StepPanel } from "./StepPanel";
import { StreamsTab } from "./StreamsTab";
import { TraceView } from "./TraceView";
import { call, DeadLetter, Graph, live, post, Run, TraceRecord, TraceSummary, waitingText, when } from "./api";

type Tab = "flows" | "traces" | "logs" | "state" | "streams" | "runs" | "dead" | "endpoints";
const TABS: [Tab, string][] = [
  ["flows", "Flows"],
  ["traces", "Traces"],
  ["logs", "Logs"],
  ["state", "State"],
  ["streams", "Streams"],
  ["runs", "Runs"],
  ["dead", "Dead letters"],
  ["endpoints", "Endpoints & events"],
];

export function App() {
  const [tab, setTab] = useState<Tab>("flows");
  const [graph, setGraph] = useState<Graph | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [traceId, setTraceId] = useState<string | null>(null);
  const [tick, setTick] = useState(0); // bumped (at most once a second) when live records arrive
  const [liveLogs, setLiveLogs] = useState<TraceRecord[]>([]);
  const pending = useRef(false);

  useEffect(() => {
    call<Graph>("/graph").then(setGraph, (e) => setError(String(e.message ?? e)));
  }, []);

  useEffect(
    () =>
      live((records) => {
        setLiveLogs((logs) => [...logs, ...records.filter((r) => r.kind === "log")].slice(-2000));
        if (!pending.current) {
          pending.current = true;
          setTimeout(() => {
            pending.current = false;
            setTick((t) => t + 1);
          }, 1000);
        }
      }),
    [],
  );

  const openTrace = useCallback((id: string) => {
    setTraceId(id);
    setTab("traces");
  }, []);

  return (
    <div className="app">
      <header>
        <h1>Stepline Workbench</h1>
        <nav>
          {TABS.map(([key, label]) => (
            <button key={key} data-testid={`tab-${key}`} className={tab === key ? "on" : ""} onClick={() => setTab(key)}>
              {label}
            </button>
          ))}
        </nav>
      </header>
      {error && <p className="error">{error}</p>}
      <main>
        {tab === "flows" && graph && <FlowsTab graph={graph} tick={tick} openTrace={openTrace} />}
        {tab === "traces" && graph && (
          <TracesTab graph={graph} tick={tick} selected={traceId} select={setTraceId} />
        )}
        {tab === "logs" && <LogsTab live={liveLogs} graph={graph} initialTrace={traceId} openTrace={openTrace} />}
        {tab === "state" && <StateTab tick={tick} />}
        {tab === "streams" && <StreamsTab tick={tick} />}
        {tab === "runs" && <RunsTab tick={tick} openTrace={openTrace} />}
        {tab === "dead" && <DeadTab tick={tick} openTrace={openTrace} />}
        {tab === "endpoints" && graph && <EndpointsTab graph={graph} openTrace={openTrace} />}
      </main>
    </div>
  );
}

function FlowsTab({ graph, tick, openTrace }: { graph: Graph; tick: number; openTrace: (id: string) => void }) {
  const [flow, setFlow] = useState("");
  const [selected, setSelected] = useState<string | null>(null);
  return (
    <div className="split">
      <section className="graph">
        <label>
          Flow{" "}
          <select data-testid="flow-filter" value={flow} onChange={(e) => setFlow(e.target.value)}>
            <option value="">all</option>
            {graph.flows.map((f) => (
              <option key={f}>{f}</option>
            ))}
          </select>
        </label>
        <FlowGraph graph={graph} flow={flow || null} highlight={new Set()} onSelect={setSelected} />
      </section>
      {selected && <StepPanel name={selected} tick={tick} openTrace={openTrace} onClose={() => setSelected(null)} />}
    </div>
  );
}

function TracesTab(props: { graph: Graph; tick: number; selected: string | null; select: (id: string) => void }) {
  const [traces, setTraces] = useState<TraceSummary[]>([]);
  useEffect(() => {
    call<TraceSummary[]>("/traces?limit=100").then(setTraces, () => undefined);
  }, [props.tick]);
  return (
    <div className="split">
      <section className="list" data-testid="trace-list">
        <table>
          <thead>
            <tr>
              <th>started</th>
              <th>entry</th>
              <th>status</th>
              <th>ms</th>
              <th>records</th>
            </tr>
          </thead>
          <tbody>
            {traces.map((t) => (
              <tr
                key={t.traceId}
                data-testid="trace-row"
                data-trace-id={t.traceId}
                className={t.traceId === props.selected ? "on" : ""}
                onClick={() => props.select(t.traceId)}
              >
                <td>{when(t.startedAt)}</td>
                <td>{t.entry}</td>
                <td className={t.errors ? "bad" : "good"}>{t.errors ? `${t.errors} errors` : "ok"}</td>
                <td>{Math.round((t.lastAt - t.startedAt) * 1000)}</td>
                <td>{t.records}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {!traces.length && <p className="dim">No traces yet: call an endpoint or emit an event.</p>}
      </section>
      {props.selected && <TraceView traceId={props.selected} graph={props.graph} tick={props.tick} />}
    </div>
  );
}

function LogsTab(props: {
  live: TraceRecord[];
  graph: Graph | null;
  initialTrace: string | null;
  openTrace: (id: string) => void;
}) {
  const [trace, setTrace] = useState(props.initialTrace ?? "");
  const [step, setStep] = useState("");
  const [level, setLevel] = useState("");
  const [text, setText] = useState("");
  const [loaded, setLoaded] = useState<TraceRecord[]>([]);
  useEffect(() => {
    const q = new URLSearchParams();
    if (trace) q.set("trace", trace);
    if (step) q.set("step", step);
    if (level) q.set("level", level);
    if (text) q.set("text", text);
    call<TraceRecord[]>(`/logs?${q}`).then(setLoaded, () => undefined);
  }, [trace, step, level, text]);
  const matches = useCallback(
    (r: TraceRecord) =>
      (!trace || r.traceId === trace) &&
      (!step || r.step === step) &&
      (!level || r.data.level === level) &&
      (!text || JSON.stringify(r.data).toLowerCase().includes(text.toLowerCase())),
    [trace, step, level, text],
  );
  const shown = useMemo(() => {
    const seen = new Set(loaded.map((r) => `${r.traceId}${r.ts}${r.data.message}`));
    const fresh = props.live.filter((r) => matches(r) && !seen.has(`${r.traceId}${r.ts}${r.data.message}`));
    return [...loaded, ...fresh].slice(-1000);
  }, [loaded, props.live, matches]);
  return (
    <section className="logs">
      <div className="filters">
        <input data-testid="log-trace" placeholder="trace id" value={trace} onChange={(e) => setTrace(e.target.value)} />
        <select data-testid="log-step" value={step} onChange={(e) => setStep(e.target.value)}>
          <option value="">every step</option>
          {props.graph?.steps.map((s) => (
            <option key={s.name}>{s.name}</option>
          ))}
        </select>
        <select data-testid="log-level" value={level} onChange={(e) => setLevel(e.target.value)}>
          <option value="">every level</option>
          {["debug", "info", "warn", "error"].map((l) => (
            <option key={l}>{l}</option>
          ))}
        </select>
        <input data-testid="log-text" placeholder="text" value={text} onChange={(e) => setText(e.target.value)} />
      </div>
      <table data-testid="log-lines">
        <tbody>
          {shown.map((r, i) => (
            <tr key={i} data-testid="log-line" className={`level-${r.data.level}`}>
              <td>{when(r.ts)}</td>
              <td>{r.data.level}</td>
              <td>{r.step}</td>
              <td>
                {r.data.message} <span className="dim">{r.data.fields && JSON.stringify(r.data.fields)}</span>
              </td>
              <td>
                <a onClick={() => props.openTrace(r.traceId)}>{r.traceId.slice(-8)}</a>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function StateTab({ tick }: { tick: number }) {
  const [groups, setGroups] = useState<string[]>([]);
  const [group, setGroup] = useState<string | null>(null);
  const [items, setItems] = useState<Record<string, unknown>>({});
  const [editing, setEditing] = useState<{ key: string; text: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    call<string[]>("/state").then(setGroups, () => undefined);
  }, [tick]);
  const load = useCallback((g: string) => {
    setGroup(g);
    call<Record<string, unknown>>(`/state/${encodeURIComponent(g)}`).then(setItems, () => undefined);
  }, []);
  useEffect(() => {
    if (group && !editing) load(group);
  }, [tick]); // eslint-disable-line react-hooks/exhaustive-deps
  const save = async () => {
    if (!group || !editing) return;
    try {
      const value = JSON.parse(editing.text);
      await call(`/state/${encodeURIComponent(group)}/${encodeURIComponent(editing.key)}`, {
        method: "PUT",
        body: JSON.stringify(value),
      });
      setEditing(null);
      setError(null);
      load(group);
    } catch (e: any) {
      setError(`Not saved: ${e.message}`);
    }
  };
  const remove = async (key: string) => {
    if (!group) return;
    await call(`/state/${encodeURIComponent(group)}/${encodeURIComponent(key)}`, { method: "DELETE" });
    load(group);
  };
  return (
    <div className="split">
      <section className="list">
        <h2>Groups</h2>
        <ul data-testid="state-groups">
          {groups.map((g) => (
            <li key={g} className={g === group ? "on" : ""} onClick={() => load(g)}>
              {g}
            </li>
          ))}
        </ul>
      </section>
      {group && (
        <section className="detail" data-testid="state-items">
          <h2>{group}</h2>
          {error && <p className="error">{error}</p>}
          <table>
            <tbody>
              {Object.entries(items).map(([key, value]) => (
                <tr key={key} data-testid="state-item" data-key={key}>
                  <td>{key}</td>
                  <td>
                    {editing?.key === key ? (
                      <textarea
                        data-testid="state-editor"
                        value={editing.text}
                        onChange={(e) => setEditing({ key, text: e.target.value })}
                      />
                    ) : (
                      <code data-testid="state-value">{JSON.stringify(value)}</code>
                    )}
                  </td>
                  <td>
                    {editing?.key === key ? (
                      <>
                        <button data-testid="state-save" onClick={save}>
                          Save
                        </button>
                        <button onClick={() => setEditing(null)}>Cancel</button>
                      </>
                    ) : (
                      <>
                        <button
                          data-testid="state-edit"
                          onClick={() => setEditing({ key, text: JSON.stringify(value, null, 2) })}
                        >
                          Edit
                        </button>
                        <button data-testid="state-delete" onClick={() => remove(key)}>
                          Delete
                        </button>
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
    </div>
  );
}

/** Durable runs: what each suspended one waits for and until when, and a way to cancel it. */
function RunsTab({ tick, openTrace }: { tick: number; openTrace: (id: string) => void }) {
  const [runs, setRuns] = useState<Run[]>([]);
  const [note, setNote] = useState<string | null>(null);
  const load = useCallback(() => call<Run[]>("/runs").then(setRuns, () => undefined), []);
  useEffect(() => {
    load();
  }, [tick, load]);
  const cancel = async (run: Run) => {
    await post(`/runs/${run.id}/cancel`, { reason: "cancelled from the Workbench" });
    setNote(`Cancelling ${run.step} (${run.id}).`);
    setTimeout(load, 1500);
  };
  return (
    <section className="runs" data-testid="runs">
      {note && <p data-testid="runs-note">{note}</p>}
      {!runs.length && <p className="dim">No durable runs: none is suspended or has recorded a step.</p>}
      <table>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id} data-testid="run" data-status={r.status}>
              <td>
                <b>{r.step}</b> <span className="dim">{r.id}</span>
              </td>
              <td className={r.status === "suspended" ? "waiting" : r.status === "retrying" ? "bad" : ""}>{r.status}</td>
              <td data-testid="run-waiting">{waitingText(r.waiting)}</td>
              <td className="dim">since {when(r.started_at)}</td>
              <td>
                <button onClick={() => openTrace(r.trace_id)}>Trace</button>
                <button data-testid="run-cancel" onClick={() => cancel(r)}>
                  Cancel
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function DeadTab({ tick, openTrace }: { tick: number; openTrace: (id: string) => void }) {
  const [dead, setDead] = useState<DeadLetter[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const load = useCallback(() => call<DeadLetter[]>("/dead-letters").then(setDead, () => undefined), []);
  useEffect(() => {
    load();
  }, [tick, load]);
  const replay = async (body: unknown) => {
    const result = await post<{ replayed: number }>("/dead-letters/replay", body);
    setNote(`Replayed ${result.replayed}.`);
    load();
  };
  return (
    <section className="dead" data-testid="dead-letters">
      <div className="filters">
        <button data-testid="replay-all" disabled={!dead.length} onClick={() => replay({ all: true })}>
          Replay all
        </button>
        {note && <span data-testid="replay-note">{note}</span>}
      </div>
      {!dead.length && <p className="dim">No dead letters.</p>}
      {dead.map((d) => (
        <div key={d.id} className="card" data-testid="dead-letter">
          <div className="row" onClick={() => setOpen(open === d.id ? null : d.id)}>
            <b>{d.step}</b> on <code>{d.topic}</code> after {d.attempts} attempts, {when(d.failedAt)}:{" "}
            <span className="bad">{d.error}</span>
          </div>
          {open === d.id && (
            <div>
              <h3>Input</h3>
              <pre>{JSON.stringify(d.data, null, 2)}</pre>
              {d.traceback && (
                <>
                  <h3>Traceback</h3>
                  <pre>{d.traceback}</pre>
                </>
              )}
            </div>
          )}
          <button data-testid="replay-one" onClick={() => replay({ ids: [d.id] })}>
            Replay
          </button>
          <button onClick={() => openTrace(d.traceId)}>Trace</button>
        </div>
      ))}
    </section>
  );
}

function EndpointsTab({ graph, openTrace }: { graph: Graph; openTrace: (id: string) => void }) {
  const topics = useMemo(
    () => [...new Set(graph.edges.filter((e) => !e.virtual).map((e) => e.topic))].sort(),
    [graph],
  );
  return (
    <div className="endpoints">
      <section>
        <h2>Endpoints</h2>
        {graph.steps
          .filter((s) => s.type === "api")
          .map((s) => (
            <StepPanel key={s.name} name={s.name} tick={0} openTrace={openTrace} compact />
          ))}
      </section>
      <section>
        <h2>Events</h2>
        {topics.map((t) => (
          <Emitter key={t} topic={t} openTrace={openTrace} />
        ))}
      </section>
    </div>
  );
}

export function Emitter({ topic, openTrace }: { topic: string; openTrace: (id: string) => void }) {
  const [data, setData] = useState("{}");
  const [result, setResult] = useState<string | null>(null);
  const [traceId, setTraceId] = useState<string | null>(null);
  const emit = async () => {
    try {
      const r = await post<{ traceId: string; subscribers: string[] }>("/emit", { topic, data: JSON.parse(data) });
      setTraceId(r.traceId);
      setResult(`Emitted to ${r.subscribers.join(", ") || "no subscriber"}.`);
    } catch (e: any) {
      setResult(`Not emitted: ${e.message}`);
    }
  };
  return (
    <div className="card" data-testid={`emitter-${topic}`}>
      <code>{topic}</code>
      <textarea value={data} onChange={(e) => setData(e.target.value)} />
      <button onClick={emit}>Emit</button>
      {result && <span>{result}</span>}
      {traceId && <a onClick={() => openTrace(traceId)}> trace</a>}
    </div>
  );
}
