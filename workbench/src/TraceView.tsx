import { useEffect, useMemo, useState } from "react";
import { FlowGraph } from "./FlowGraph";
import { call, Graph, post, TraceRecord, waitingText } from "./api";

type Trace = { stopped: boolean; records: TraceRecord[] };
type Bar = { step: string; start: number; end: number | null; status: string; attempt: number; error?: string };

/** One trace: the graph with the path it took, a waterfall of handler runs, and every other record as a mark. */
export function TraceView({ traceId, graph, tick }: { traceId: string; graph: Graph; tick: number }) {
  const [trace, setTrace] = useState<Trace | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const load = () => call<Trace>(`/traces/${traceId}`).then(setTrace, () => setTrace(null));
  useEffect(() => {
    load();
  }, [traceId, tick]); // eslint-disable-line react-hooks/exhaustive-deps

  const { bars, marks, t0, span, path } = useMemo(() => {
    const records = trace?.records ?? [];
    const t0 = records.length ? records[0].ts : 0;
    const bars: Bar[] = [];
    const open = new Map<string, Bar>();
    const marks: TraceRecord[] = [];
    for (const r of records) {
      // Two deliveries of one step can run at once (a fan-in): a run is its step and its delivery.
      const run = `${r.step}|${r.data.delivery_id ?? ""}`;
      if (r.kind === "start" && r.step) {
        const bar = { step: r.step, start: r.ts, end: null, status: "running", attempt: r.data.attempt ?? 1 };
        bars.push(bar);
        open.set(run, bar);
      } else if (r.kind === "end" && r.step && open.has(run)) {
        const bar = open.get(run)!;
        bar.end = r.ts;
        bar.status = r.data.status;
        // A suspended run is not an error: its end says what it waits for, and until when.
        bar.error = r.data.status === "suspended" ? `suspended: ${waitingText(r.data.waiting)}` : r.data.error;
        open.delete(run);
      } else if (r.kind !== "trigger" && r.kind !== "end") {
        marks.push(r);
      }
    }
    const last = Math.max(t0, ...records.map((r) => r.ts));
    return { bars, marks, t0, span: Math.max(last - t0, 0.001), path: new Set(bars.map((b) => b.step)) };
  }, [trace]);

  if (!trace) return <section className="detail">Loading trace…</section>;
  const entry = trace.records.find((r) => r.kind === "trigger")?.data.entry;
  const pct = (ts: number) => `${((ts - t0) / span) * 100}%`;
  const act = async (action: "stop" | "resume") => {
    await post(`/traces/${traceId}/${action}`);
    setNote(action === "stop" ? "Stopped: its next deliveries go to the dead letters." : "Resumed.");
    load();
  };
  return (
    <section className="detail" data-testid="trace-view" data-trace-id={traceId}>
      <h2>
        {entry} <span className="dim">{traceId}</span>
      </h2>
      <div className="filters">
        {trace.stopped ? (
          <button data-testid="trace-resume" onClick={() => act("resume")}>
            Resume
          </button>
        ) : (
          <button data-testid="trace-stop" onClick={() => act("stop")}>
            Stop this trace
          </button>
        )}
        {note && <span>{note}</span>}
      </div>
      <div className="mini-graph">
        <FlowGraph graph={graph} flow={null} highlight={path} />
      </div>
      <div className="waterfall" data-testid="waterfall">
        {bars.map((b, i) => (
          <div key={i} className="lane" data-testid="waterfall-bar" data-step={b.step}>
            <span className="lane-name">
              {b.step}
              {b.attempt > 1 ? ` (attempt ${b.attempt})` : ""}
            </span>
            <span className="lane-track">
              <span
                className={`bar ${b.status}`}
                style={{ left: pct(b.start), width: `max(3px, calc(${pct(b.end ?? t0 + span)} - ${pct(b.start)}))` }}
                title={b.error ?? b.status}
              />
            </span>
            <span className="lane-ms" data-testid="lane-status">
              {b.status === "suspended" ? "suspended" : b.end ? `${((b.end - b.start) * 1000).toFixed(1)} ms` : b.status}
            </span>
            {b.status === "suspended" && (
              <span className="lane-note waiting" data-testid="lane-waiting">
                {b.error}
              </span>
            )}
          </div>
        ))}
      </div>
      <table className="marks">
        <tbody>
          {marks.map((r, i) => (
            <tr key={i} data-testid={`mark-${r.kind}`} className={r.kind}>
              <td className="dim">+{((r.ts - t0) * 1000).toFixed(1)} ms</td>
              <td>{r.step}</td>
              <td>{r.kind}</td>
              <td>{describe(r)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function describe(r: TraceRecord): string {
  const d = r.data;
  switch (r.kind) {
    case "emit":
      return `${d.topic} → ${(d.subscribers ?? []).join(", ") || "no subscriber"}`;
    case "state":
      return `${d.op} ${d.group}/${d.key ?? ""}`;
    case "log":
      return `${d.level}: ${d.message} ${d.fields && Object.keys(d.fields).length ? JSON.stringify(d.fields) : ""}`;
    case "retry":
      return `retry in ${d.delay} s after ${d.error}`;
    case "dead_letter":
      return `dead letter after ${d.attempts} attempts: ${d.error}`;
    case "llm":
      return `${d.model}: ${d.tokens_in ?? "?"} → ${d.tokens_out ?? "?"} tokens${d.cost != null ? `, $${d.cost.toFixed(4)}` : ""}, ${Math.round(d.latency_ms)} ms${d.retries ? `, ${d.retries} retries` : ""}${d.error ? ` — ${d.error}` : ""}`;
    case "tool":
      return `${d.tool}(${JSON.stringify(d.arguments)}) ${d.status}${d.error ? `: ${d.error}` : ""}`;
    case "run":
      if (d.op === "woke") return `woken by an event on ${d.topic} (${d.event_id})`;
      if (d.op === "code_changed") return `the step's code changed (${d.was} → ${d.now}): going on from the journal`;
      if (d.op === "wait") return `wait ${d.name} on ${d.topic}: ${d.outcome}${d.early ? " (the event came before the wait)" : ""}`;
      return `step ${d.name}${d.replayed ? " replayed from the journal" : d.status === "error" ? ` failed: ${d.error}` : ` recorded in ${d.duration_ms} ms`}`;
    case "code":
      return `code exited ${d.exit_code ?? "killed: " + d.killed_by} in ${Math.round(d.duration_ms)} ms`;
    default:
      return JSON.stringify(d);
  }
}
