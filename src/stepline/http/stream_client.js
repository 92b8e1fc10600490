// Stepline's stream client: no dependencies, an ES module. Served by every Stepline app at
// /__stepline/streams/client.js; copy it into a bundled front end as it is. Docs: docs/streams.md.
//
//   import { StreamClient } from "/__stepline/streams/client.js"
//   const client = new StreamClient()                 // ws(s)://<this page's host>/__stepline/streams
//   const report = client.subscribeItem("progress", "reports", reportId)
//   report.onChange((item) => render(item))          // the item now (null when there is none)
//   report.onEvent("done", (data) => ...)            // ephemeral events sent to it
//
// A dropped connection is reopened (after 1 s, then up to 10 s apart) and every watch joins again with
// the last number (seq) it saw: the server sends what was missed, or a fresh snapshot.

export class StreamClient {
  constructor(url, options = {}) {
    if (url === undefined && typeof location !== "undefined") {
      url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/__stepline/streams`
    }
    this.url = url
    this.options = options
    this.subs = new Map() // subscriptionId -> Subscription
    this.closed = false
    this.delay = options.reconnectDelay ?? 1000
    this.open()
  }

  open() {
    const WS = this.options.WebSocket ?? globalThis.WebSocket
    const protocols = this.options.token ? ["Authorization", this.options.token] : undefined
    const ws = (this.ws = new WS(this.url, protocols))
    ws.onopen = () => {
      this.delay = this.options.reconnectDelay ?? 1000
      for (const sub of this.subs.values()) this.join(sub)
    }
    ws.onmessage = (message) => this.receive(JSON.parse(message.data))
    ws.onclose = (close) => {
      for (const sub of this.subs.values()) sub.emitStatus("disconnected", close.code, close.reason)
      if (this.closed) return
      setTimeout(() => this.closed || this.open(), this.delay)
      this.delay = Math.min(this.delay * 2, 10000)
    }
  }

  subscribeGroup(streamName, groupId) {
    return this.add(new Subscription(this, { streamName, groupId }))
  }

  subscribeItem(streamName, groupId, id) {
    return this.add(new Subscription(this, { streamName, groupId, id }))
  }

  add(sub) {
    this.subs.set(sub.sub.subscriptionId, sub)
    this.join(sub)
    return sub
  }

  join(sub) {
    if (this.ws.readyState !== 1) return
    const data = { ...sub.sub }
    if (sub.seq !== null) data.since = sub.seq
    this.ws.send(JSON.stringify({ type: "join", data }))
  }

  leave(sub) {
    this.subs.delete(sub.sub.subscriptionId)
    if (this.ws.readyState === 1) this.ws.send(JSON.stringify({ type: "leave", data: sub.sub }))
  }

  receive(message) {
    for (const sub of this.subs.values()) {
      const s = sub.sub
      if (s.streamName !== message.streamName || s.groupId !== message.groupId) continue
      if (s.id !== undefined && message.id !== s.id) continue
      if (s.id === undefined && message.id !== undefined && message.event.type === "sync") continue
      sub.apply(message)
    }
  }

  close() {
    this.closed = true
    this.ws.close()
  }
}

let counter = 0

export class Subscription {
  constructor(client, sub) {
    this.client = client
    this.sub = { ...sub, subscriptionId: `${Date.now().toString(36)}-${++counter}-${Math.random().toString(36).slice(2)}` }
    this.item = sub.id !== undefined
    this.state = this.item ? null : []
    this.seq = null // the group's number this state is as of
    this.changeListeners = new Set()
    this.eventListeners = new Map()
    this.errorListeners = new Set()
    this.statusListeners = new Set()
  }

  apply(message) {
    const event = message.event
    if (event.type === "event") {
      const inner = event.event
      if (inner.type === "error") this.errorListeners.forEach((f) => f(inner.data))
      ;(this.eventListeners.get(inner.type) ?? []).forEach((f) => f(inner.data))
      return
    }
    if (message.seq !== undefined && this.seq !== null && event.type !== "sync" && message.seq <= this.seq) return
    if (event.type === "sync") {
      this.state = event.data ?? (this.item ? null : [])
    } else if (this.item) {
      this.state = event.type === "delete" ? null : event.data
    } else if (event.type === "delete") {
      this.state = this.state.filter((x) => x.id !== event.data.id)
    } else {
      const at = this.state.findIndex((x) => x.id === event.data.id)
      this.state = at < 0 ? [...this.state, event.data] : this.state.map((x, i) => (i === at ? event.data : x))
    }
    if (message.seq !== undefined) this.seq = message.seq
    this.changeListeners.forEach((f) => f(this.state))
  }

  emitStatus(status, code, reason) {
    this.statusListeners.forEach((f) => f(status, code, reason))
  }

  /** Called with the state after every change: an array of items for a group, the item (or null). */
  onChange(listener) {
    this.changeListeners.add(listener)
    return () => this.changeListeners.delete(listener)
  }

  /** Called with the data of each ephemeral event of this type. */
  onEvent(type, listener) {
    if (!this.eventListeners.has(type)) this.eventListeners.set(type, new Set())
    this.eventListeners.get(type).add(listener)
    return () => this.eventListeners.get(type).delete(listener)
  }

  /** Called with {code, message} when the server refuses the watch (STREAM_ACCESS_DENIED, ...). */
  onError(listener) {
    this.errorListeners.add(listener)
    return () => this.errorListeners.delete(listener)
  }

  /** Called with ("disconnected", code, reason) when the connection drops (it is reopened by itself). */
  onStatus(listener) {
    this.statusListeners.add(listener)
    return () => this.statusListeners.delete(listener)
  }

  getState() {
    return this.state
  }

  close() {
    this.client.leave(this)
  }
}
