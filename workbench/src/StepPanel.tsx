import { useEffect, useState } from "react";
import { call, post, when } from "./api";
import { Emitter } from "./App";

type Details = {
  name: string;
  type: string;
  trigger: string;
  file: string;
  description: string | null;
  flows: string[];
  config: Record<string, any>;
  schemas: { body?: any; input?: any; responses?: Record<string, any> };
  recentRuns: { traceId: string; ts: number; status: string; duration_ms: number; error: string | null }[];
  errorRate: number | null;
};

export function StepPanel(props: {
  name: string;
  tick: number;
  openTrace: (id: string) => void;
  onClose?: () => void;
  compact?: boolean;
}) {
  const [step, setStep] = useState<Details | null>(null);
  useEffect(() => {
    call<Details>(`/steps/${encodeURIComponent(props.name)}`).then(setStep, () => undefined);
  }, [props.name, props.tick]);
  if (!step) return null;
  return (
    <section className={props.compact ? "card" : "detail"} data-testid={`step-${step.name}`}>
      <h2>
        {step.name} <span className="dim">{step.type}</span>
        {props.onClose && (
          <button className="close" onClick={props.onClose}>
            ×
          </button>
        )}
      </h2>
      <p>
        <code>{step.trigger}</code>
        {!props.compact && <span className="dim"> · {step.file}</span>}
      </p>
      {step.description && <p>{step.description}</p>}
      {step.type === "api" && <Tester step={step} openTrace={props.openTrace} />}
      {step.type === "cron" && <CronRun name={step.name} openTrace={props.openTrace} />}
      {step.type === "event" &&
        (step.config.subscribes as string[]).map((t) => <Emitter key={t} topic={t} openTrace={props.openTrace} />)}
      {!props.compact && (
        <>
          {step.schemas.input && <Schema title="Input" schema={step.schemas.input} />}
          {step.schemas.body && <Schema title="Body" schema={step.schemas.body} />}
          <h3>
            Recent runs{" "}
            {step.errorRate !== null && (
              <span className={step.errorRate ? "bad" : "good"}>{Math.round(step.errorRate * 100)}% failed</span>
            )}
          </h3>
          <table>
            <tbody>
              {step.recentRuns.map((r, i) => (
                <tr key={i} onClick={() => props.openTrace(r.traceId)}>
                  <td>{when(r.ts)}</td>
                  <td className={r.status === "ok" ? "good" : "bad"}>{r.status}</td>
                  <td>{r.duration_ms?.toFixed(1)} ms</td>
                  <td className="dim">{r.error}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}

function Schema({ title, schema }: { title: string; schema: any }) {
  return (
    <details>
      <summary>{title} schema</summary>
      <pre>{JSON.stringify(schema, null, 2)}</pre>
    </details>
  );
}

function CronRun({ name, openTrace }: { name: string; openTrace: (id: string) => void }) {
  const [traceId, setTraceId] = useState<string | null>(null);
  return (
    <div>
      <button data-testid="cron-run" onClick={() => post<{ traceId: string }>(`/cron/${name}/run`).then((r) => setTraceId(r.traceId))}>
        Run now
      </button>
      {traceId && <a onClick={() => openTrace(traceId)}> trace</a>}
    </div>
  );
}

/** A form generated from the body schema: a field per property, JSON for what a field cannot hold. */
function Tester({ step, openTrace }: { step: Details; openTrace: (id: string) => void }) {
  const path: string = step.config.path;
  const method: string = step.config.method;
  const params = [...path.matchAll(/[{:](\w+)/g)].map((m) => m[1]);
  const properties: Record<string, any> = step.schemas.body?.properties ?? {};
  const [values, setValues] = useState<Record<string, string>>({});
  const [raw, setRaw] = useState("");
  const [result, setResult] = useState<{ status: number; body: string; traceId: string | null } | null>(null);

  const body = () => {
    if (raw.trim()) return JSON.parse(raw);
    if (!step.schemas.body) return undefined;
    const out: Record<string, unknown> = {};
    for (const [name, prop] of Object.entries(properties)) {
      const value = values[`body.${name}`];
      if (value === undefined || value === "") continue;
      out[name] =
        prop.type === "integer" || prop.type === "number"
          ? Number(value)
          : prop.type === "boolean"
            ? value === "true"
            : prop.type === "string" || !prop.type
              ? value
              : JSON.parse(value);
    }
    return out;
  };
  const send = async () => {
    let url = path;
    for (const p of params) url = url.replace(new RegExp(`[{:]${p}(?::[^}/]*)?}?`), encodeURIComponent(values[`path.${p}`] ?? ""));
    try {
      const payload = body();
      const response = await fetch(url, {
        method,
        headers: { "content-type": "application/json" },
        body: method === "GET" || payload === undefined ? undefined : JSON.stringify(payload),
      });
      const text = await response.text();
      setResult({ status: response.status, body: text, traceId: response.headers.get("x-trace-id") });
    } catch (e: any) {
      setResult({ status: 0, body: `Not sent: ${e.message}`, traceId: null });
    }
  };
  const field = (key: string, label: string, prop?: any) => (
    <label key={key}>
      {label}
      {prop?.enum ? (
        <select data-testid={`field-${key}`} value={values[key] ?? ""} onChange={(e) => setValues({ ...values, [key]: e.target.value })}>
          <option value=""></option>
          {prop.enum.map((v: string) => (
            <option key={v}>{v}</option>
          ))}
        </select>
      ) : (
        <input
          data-testid={`field-${key}`}
          placeholder={prop?.type ?? "string"}
          value={values[key] ?? ""}
          onChange={(e) => setValues({ ...values, [key]: e.target.value })}
        />
      )}
    </label>
  );
  return (
    <div className="tester" data-testid={`tester-${step.name}`}>
      <div className="fields">
        {params.map((p) => field(`path.${p}`, p))}
        {Object.entries(properties).map(([name, prop]) => field(`body.${name}`, name + ((step.schemas.body?.required ?? []).includes(name) ? " *" : ""), prop))}
      </div>
      {step.schemas.body && !Object.keys(properties).length && (
        <textarea placeholder="JSON body" value={raw} onChange={(e) => setRaw(e.target.value)} />
      )}
      <button data-testid="send" onClick={send}>
        {method} {path}
      </button>
      {result && (
        <div data-testid="response">
          <b className={result.status < 400 ? "good" : "bad"}>{result.status}</b> <code>{result.body}</code>
          {result.traceId && (
            <a data-testid="response-trace" onClick={() => openTrace(result.traceId!)}>
              {" "}
              open trace
            </a>
          )}
        </div>
      )}
    </div>
  );
}
