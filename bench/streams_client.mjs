// The load client of bench/streams.py: many WebSocket subscribers of one stream group, in one Node.js process.
//
//   node streams_client.mjs --modules DIR --url ws://127.0.0.1:PORT/ --subscribers 1000 [--stream bench]
//                           [--group g] [--no-deflate] [--connect-batch 50]
//
// DIR holds node_modules/ws (bench/streams.py installs it under .bench/streams-client). The client opens the
// connections, joins the group on each (Motia's v0 protocol: {"type": "join", "data": {...}}) and waits for
// every sync, then prints {"ready": ...}. From then on it reads commands from stdin, one JSON object a line:
//
//   {"cmd": "arm", "phase": "throughput", "sets": 2000, "timeout": 60, "idle": 5}
//       -> {"armed": "throughput"}, then, once every subscriber has had `sets` creates (or `timeout` seconds after
//          arming, or `idle` seconds without a message once one came), {"phase": "throughput", ...figures}
//   {"cmd": "quit"}
//
// Every line it prints on stdout is one JSON object; anything else goes to stderr. A message is counted
// by looking for its markers in the raw frame, not by parsing it: at a million messages a phase, JSON.parse
// would make this process, not the server, the bottleneck on a small machine. The items are {"t": ms}, so
// `"t":` appears once in a create (Motia's and Stepline's messages are compact JSON; `"timestamp":` does
// not match it).

import { createRequire } from 'node:module'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import readline from 'node:readline'

const options = parseArgs(process.argv.slice(2))
const require = createRequire(path.join(options.modules, 'package.json'))
const WebSocket = require('ws')

const CREATE = Buffer.from('"type":"create"')
// Motia 0.17 on Redis sends every set twice: the create, and an ephemeral event wrapping it
// ({"event": {"type": "event", "event": {"type": "create", ...}}}). Those are counted apart, as `extra`.
const EVENT = Buffer.from('"type":"event"')
const T = Buffer.from('"t":')
const now = () => performance.timeOrigin + performance.now() // wall clock, ms, sub-ms resolution

const sockets = []
let synced = 0
let closed = 0
const closeCodes = {}
let errors = 0
let stray = 0 // creates that arrived while no phase was armed (the tail of an earlier one)
let phase = null

function parseArgs(argv) {
  const out = { stream: 'bench', group: 'g', deflate: true, connectBatch: 50 }
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i]
    if (key === '--no-deflate') out.deflate = false
    else if (key === '--modules') out.modules = argv[++i]
    else if (key === '--url') out.url = argv[++i]
    else if (key === '--subscribers') out.subscribers = Number(argv[++i])
    else if (key === '--stream') out.stream = argv[++i]
    else if (key === '--group') out.group = argv[++i]
    else if (key === '--connect-batch') out.connectBatch = Number(argv[++i])
    else throw new Error(`unknown option ${key}`)
  }
  if (!out.modules || !out.url || !out.subscribers) throw new Error('--modules, --url and --subscribers are required')
  return out
}

function emit(object) {
  process.stdout.write(JSON.stringify(object) + '\n')
}

function onCreate(index, frame, at) {
  if (phase === null) {
    stray++
    return
  }
  const p = phase
  const i = frame.indexOf(T)
  const t = i < 0 ? NaN : parseFloat(frame.toString('latin1', i + T.length, i + T.length + 32))
  if (p.received < p.latencies.length) p.latencies[p.received] = at - t
  p.received++
  p.perSocket[index]++
  if (t < p.firstSet) p.firstSet = t
  if (p.firstReceipt === null) p.firstReceipt = at
  p.lastReceipt = at
  if (p.received >= p.expect) finish()
}

function onMessage(index, socket, frame) {
  const at = now()
  if (socket.synced && frame.indexOf(CREATE) >= 0) {
    if (frame.indexOf(EVENT) < 0) onCreate(index, frame, at)
    else if (phase !== null) phase.extra++
    return
  }
  // Not a create on a live subscription: parse it (the sync, an error, anything unexpected).
  const message = JSON.parse(frame.toString())
  const type = message?.event?.type
  if (type === 'sync' && !socket.synced) {
    socket.synced = true
    synced++
    if (synced === options.subscribers) {
      emit({
        ready: true,
        connect_s: (performance.now() - started) / 1000,
        extensions: sockets[0].extensions || '',
      })
    }
  } else if (type !== 'sync') {
    process.stderr.write(`unexpected message on socket ${index}: ${frame.toString().slice(0, 300)}\n`)
  }
}

function open(index) {
  return new Promise((resolve) => {
    const socket = new WebSocket(options.url, { perMessageDeflate: options.deflate })
    socket.synced = false
    sockets[index] = socket
    socket.on('open', () => {
      const data = { streamName: options.stream, groupId: options.group, subscriptionId: `sub-${index}` }
      socket.send(JSON.stringify({ type: 'join', data }))
      resolve()
    })
    socket.on('message', (frame) => onMessage(index, socket, frame))
    socket.on('error', (error) => {
      errors++
      process.stderr.write(`socket ${index}: ${error.message}\n`)
      resolve()
    })
    socket.on('close', (code, reason) => {
      closed++
      const key = `${code}${reason.length ? ` ${reason}` : ''}`
      closeCodes[key] = (closeCodes[key] || 0) + 1
    })
  })
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.round(q * (sorted.length - 1)))]
}

function finish() {
  const p = phase
  if (p === null) return
  phase = null
  clearTimeout(p.deadline)
  clearInterval(p.idleCheck)
  const cpu = process.cpuUsage(p.cpu)
  const kept = p.latencies.subarray(0, Math.min(p.received, p.latencies.length)).filter((x) => Number.isFinite(x))
  kept.sort()
  let short = 0
  for (let i = 0; i < p.perSocket.length; i++) if (p.perSocket[i] < p.perSocketExpect) short++
  const span = p.lastReceipt === null ? null : (p.lastReceipt - p.firstSet) / 1000
  emit({
    phase: p.name,
    expect: p.expect,
    received: p.received,
    extra: p.extra, // other frames that came with the creates (Motia's duplicates)
    // Messages per second delivered: from the first set (its `t`) to the last receipt, over every subscriber.
    msgs_per_s: span ? p.received / span : null,
    span_s: span,
    first_set_ms: Number.isFinite(p.firstSet) ? p.firstSet : null,
    first_receipt_ms: p.firstReceipt,
    last_receipt_ms: p.lastReceipt,
    p50_ms: percentile(kept, 0.5),
    p99_ms: percentile(kept, 0.99),
    max_ms: kept.length ? kept[kept.length - 1] : null,
    sockets_short: short, // subscribers that received fewer than their share
    closed,
    close_codes: closeCodes,
    errors,
    stray,
    timed_out: p.received < p.expect,
    client_cpu_s: (cpu.user + cpu.system) / 1e6,
    wall_s: (performance.now() - p.armedAt) / 1000,
  })
}

function arm(command) {
  if (phase !== null) finish()
  const sets = Number(command.sets)
  const expect = sets * options.subscribers
  phase = {
    name: command.phase,
    expect,
    perSocketExpect: sets,
    received: 0,
    extra: 0,
    latencies: new Float64Array(expect),
    perSocket: new Int32Array(options.subscribers),
    firstSet: Infinity,
    firstReceipt: null,
    lastReceipt: null,
    armedAt: performance.now(),
    cpu: process.cpuUsage(),
  }
  const p = phase
  p.deadline = setTimeout(() => phase === p && finish(), Number(command.timeout ?? 60) * 1000)
  const idle = Number(command.idle ?? 5) * 1000
  p.idleCheck = setInterval(() => {
    if (phase === p && p.lastReceipt !== null && now() - p.lastReceipt > idle) finish()
  }, 250)
  emit({ armed: command.phase })
}

const started = performance.now()
const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (!line.trim()) return
  const command = JSON.parse(line)
  if (command.cmd === 'arm') arm(command)
  else if (command.cmd === 'quit') {
    for (const socket of sockets) socket?.terminate()
    process.exit(0)
  }
})
lines.on('close', () => process.exit(0))

// Connect in batches: a thousand handshakes at once overflow a small server's accept queue on its first
// second, and what is measured here is delivery, not accepting.
for (let next = 0; next < options.subscribers; next += options.connectBatch) {
  const batch = []
  for (let i = next; i < Math.min(options.subscribers, next + options.connectBatch); i++) batch.push(open(i))
  await Promise.all(batch)
}
