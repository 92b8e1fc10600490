// The admin API (docs/admin-api.md). Same origin: no CORS, no token in dev.
export const API = "/__stepline/api";

export type Step = {
  name: string;
  type: "api" | "event" | "cron" | "noop";
  trigger: string;
  file: string;
  flows: string[];
  emits: string[];
  virtualEmits: string[];
};
export type Edge = { source: string; target: string; topic: string; virtual: boolean };
export type Graph = { flows: string[]; steps: Step[]; edges: Edge[] };
export type TraceSummary = {
  traceId: string;
  entry: string;
  startedAt: number;
  lastAt: number;
  records: number;
  errors: number;
};
export type TraceRecord = { traceId: string; kind: string; step: string | null; ts: number; data: Record<string, any> };
/** A durable run (one with a journal), as GET /runs lists it; `waiting` says on what a suspended one waits. */
export type Run = {
  id: string;
  step: string;
  trace_id: string;
  status: "running" | "retrying" | "suspended";
  started_at: number;
  waiting: { kind: "sleep" | "wait"; key: string; until: number | null; topic?: string; match?: unknown } | null;
};

// The `until` of a wait without a timeout (adapters/base.py FOREVER): shown as no deadline.
const FOREVER = 253402300799;

/** What a suspended run waits for, and until when, in a few words. */
export function waitingText(waiting: Run["waiting"]): string {
  if (!waiting) return "";
  const until = waiting.until != null && waiting.until < FOREVER ? ` until ${new Date(waiting.until * 1000).toLocaleString()}` : "";
  if (waiting.kind === "sleep") return `sleeping${until}`;
  const match = waiting.match ? ` matching ${JSON.stringify(waiting.match)}` : "";
  return `waiting for ${waiting.topic}${match}${until}`;
}

export type DeadLetter = {
  id: string;
  step: string;
  topic: string;
  traceId: string;
  attempts: number;
  error: string;
  traceback: string | null;
  failedAt: number;
  data: unknown;
};

// In `stepline start` the API needs the admin token: open the page as /__workbench/?token=... once.
function token(): string | null {
  const given = new URLSearchParams(window.location.search).get("token");
  if (given) sessionStorage.setItem("stepline-token", given);
  return given ?? sessionStorage.getItem("stepline-token");
}

export async function call<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  const response = await fetch(API + path, { ...init, headers: { ...headers, ...(init.headers as object) } });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(body?.error ?? `${response.status} ${response.statusText}`);
  return body as T;
}

export const post = <T,>(path: string, body?: unknown) =>
  call<T>(path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) });

/** Live trace records over server-sent events; returns the function that stops listening. */
export function live(onRecords: (records: TraceRecord[]) => void): () => void {
  const t = token(); // EventSource sends no headers: the token goes in the query
  const source = new EventSource(API + "/live" + (t ? `?token=${encodeURIComponent(t)}` : ""));
  source.onmessage = (message) => onRecords(JSON.parse(message.data));
  return () => source.close();
}

export function when(ts: number): string {
  return new Date(ts * 1000).toLocaleTimeString();
}

/** A stream, as GET /streams lists it: its groups with their item count, number (seq) and watchers here. */
export type StreamGroup = { group: string; items: number; seq: number; watchers: number };
export type Stream = {
  name: string;
  file: string;
  description: string | null;
  schema: Record<string, any> | null;
  access: "open" | "checked";
  groups: StreamGroup[];
};
/** An item of a stream: its fields and its id. */
export type StreamItem = Record<string, unknown> & { id: string };
export type StreamSnapshot = { stream: string; group: string; seq: number | null; items: StreamItem[] };

/** Where the app's stream WebSocket is: on this page's host (docs/streams.md). */
export function streamSocketUrl(): string {
  return `${window.location.protocol === "https:" ? "wss" : "ws"}://${window.location.host}/__stepline/streams`;
}
