"""The Lua scripts of the Redis store. Each runs atomically on the server: one script is one state change.

Keys, under the store's hash-tagged prefix P (`{stepline}`), so that every key of one store lives in one
Cluster slot and a script may touch any of them:

    P:seq               counter: the publish order of deliveries
    P:d:<id>            hash of a delivery in the queue: e (the event, JSON), s (step), q (seq), g (group key),
                        n (attempts so far), l (1 while leased), x (1 when the last attempt was lost), o (owner),
                        u (1 once suspended or given back: its run may have a journal), z (1 while suspended:
                        not in P:n), w (1 when woken while leased: its next suspend makes it ready at once)
    P:r:<step>          zset id -> seq: deliveries of the step that may be claimed now
    P:h:<step>          zset group key -> seq: the groups whose first delivery may be claimed now (FIFO claims)
    P:g:<step>:<gk>     zset id -> seq: every delivery of the step and message group still in the queue
    P:a:<step>          zset id -> lease deadline: leased deliveries
    P:delayed           zset id -> due time: delayed deliveries (a delayed emit, a retry's backoff, a suspended
                        run's wake time); no lease
    P:steps             set: the steps that have had deliveries
    P:n:<step>          counter: the step's deliveries in the queue (its backlog)
    P:o:<owner>         set: the deliveries a worker (one queue object) leased
    P:workers           zset owner -> its last heartbeat
    P:dead              zset id -> failed at;  P:dl:<id> hash of a dead letter (e, s, g, n, err, tb, at)
    P:idem:<key>        the end of an idempotency key's window (on the store's clock); its TTL only tidies up
    P:cron              hash step -> newest tick claimed
    P:s:<group>, P:sg   the user's state: a hash per group, and the set of groups
    P:c:<group>, P:cg   Stepline's control records, likewise
    P:t:<trace>         list of a trace's records (JSON); P:ts:<trace> its summary hash
    P:tr, P:tl, P:tseq  zsets of traces by first appearance and by last record; the counter behind P:tr
    P:tbytes            the bytes the stored trace records take
    P:wake              a Pub/Sub channel: "work may be ready" (waiting workers poll less often than that)
    P:st:<n>:<stream>:<group>:i   hash id -> item (JSON): a stream group's items (<n>: the stream name's length)
    ...:q               counter: the group's sequence number, taken by each change
    ...:l               zset seq -> change ([seq, id, op, item]): the group's newest changes, for catching up
    P:st:<n>:<stream>:groups  set: the stream's groups (for the Workbench)
    P:st:bus            a Pub/Sub channel: every stream change ([origin, stream, group, seq, id, op, item]) and
                        ephemeral event ([origin, stream, group, null, id, "event", event]), for every process

Times come from the caller's clock (ARGV), not the server's, so that tests can move time, and so that a
lease means the same on the server as in the worker that holds it. Hosts are expected to keep their clocks
within a fraction of a lease of each other (NTP does).
"""

from __future__ import annotations

# Shared by the queue scripts. `visible`: a delivery may now be claimed; `unready`: it is taken out of the
# ready sets (claimed, settled); `leave`: it leaves its message group, whose next delivery may then go.
_QUEUE = """
local P = ARGV[1]
local function head(step, gk)
  return redis.call('ZRANGE', P..':g:'..step..':'..gk, 0, 0)[1]
end
local function visible(id, step, seq, gk)
  redis.call('ZADD', P..':r:'..step, seq, id)
  if head(step, gk) == id then redis.call('ZADD', P..':h:'..step, seq, gk) end
end
local function unready(id, step, gk)
  if redis.call('ZREM', P..':r:'..step, id) == 1 and head(step, gk) == id then
    redis.call('ZREM', P..':h:'..step, gk)
  end
end
local function leave(id, step, gk)
  local was_head = head(step, gk) == id
  redis.call('ZREM', P..':g:'..step..':'..gk, id)
  if was_head then
    redis.call('ZREM', P..':h:'..step, gk)
    local nxt = head(step, gk)
    if nxt then
      local seq = redis.call('ZSCORE', P..':r:'..step, nxt)
      if seq then redis.call('ZADD', P..':h:'..step, seq, gk) end
    end
  end
end
-- The delivery (fields n l s g o q e), if this attempt still holds its lease.
local function held(id, attempt)
  local f = redis.call('HMGET', P..':d:'..id, 'n', 'l', 's', 'g', 'o', 'q', 'e')
  if f[1] ~= attempt or f[2] ~= '1' then return nil end
  return f
end
-- A delivery enters the queue behind everything in it, its attempts fresh; due after `delay` seconds.
local function enqueue(id, event, step, gk, now, delay)
  local seq = redis.call('INCR', P..':seq')
  redis.call('HSET', P..':d:'..id, 'e', event, 's', step, 'q', seq, 'g', gk, 'n', 0, 'l', 0, 'x', 0)
  redis.call('SADD', P..':steps', step)
  redis.call('INCR', P..':n:'..step)
  redis.call('ZADD', P..':g:'..step..':'..gk, seq, id)
  if delay > 0 then
    redis.call('ZADD', P..':delayed', now + delay, id)
  else
    visible(id, step, seq, gk)
  end
end
-- The leases `owner` still holds run out now: the next claim hands them out again, counted as lost.
local function give_back(owner, now)
  for _, id in ipairs(redis.call('SMEMBERS', P..':o:'..owner)) do
    local f = redis.call('HMGET', P..':d:'..id, 'o', 'l', 's')
    if f[1] == owner and f[2] == '1' and redis.call('ZSCORE', P..':a:'..f[3], id) then
      redis.call('ZADD', P..':a:'..f[3], now, id)
    end
  end
  redis.call('DEL', P..':o:'..owner)
  redis.call('ZREM', P..':workers', owner)
end
-- The lease of attempt `attempt` ends without an outcome (a retry, a suspension): fields n l s g o q e, or nil.
local function release(id, attempt)
  local f = held(id, attempt)
  if not f then return nil end
  redis.call('ZREM', P..':a:'..f[3], id)
  unready(id, f[3], f[4])
  if f[5] then redis.call('SREM', P..':o:'..f[5], id) end
  redis.call('HSET', P..':d:'..id, 'l', 0, 'x', 0)
  redis.call('HDEL', P..':d:'..id, 'o')
  return f
end
local function settle(id, f)
  redis.call('ZREM', P..':a:'..f[3], id)
  unready(id, f[3], f[4])
  leave(id, f[3], f[4])
  if f[5] then redis.call('SREM', P..':o:'..f[5], id) end
  redis.call('DEL', P..':d:'..id)
  redis.call('DECR', P..':n:'..f[3])
end
"""

# ARGV: P, now, idempotency key ('' for none), window, event JSON, group key, then (id, step, delay) each.
PUBLISH = (
    _QUEUE
    + """
local now = tonumber(ARGV[2])
if ARGV[3] ~= '' then
  local key = P..':idem:'..ARGV[3]
  local ends = redis.call('GET', key)
  if ends and tonumber(ends) > now then return 0 end
  local window = tonumber(ARGV[4])
  redis.call('SET', key, ARGV[2] + window, 'PX', math.ceil(window * 1000) + 60000)
end
for i = 7, #ARGV, 3 do
  enqueue(ARGV[i], ARGV[5], ARGV[i + 1], ARGV[6], now, tonumber(ARGV[i + 2]))
end
redis.call('PUBLISH', P..':wake', '')
return 1
"""
)

# ARGV: P, now, limit, owner, then (step, lease, fifo 0/1, cap or -1) each. Returns [id, step, attempts,
# lost, event JSON] per delivery, in publish order, and the due time of the next delayed delivery (or nil).
CLAIM = (
    _QUEUE
    + """
local now, limit, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZADD', P..':workers', now, owner)
-- Delayed deliveries that are due become ready (a bounded number per call: the next call takes more).
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P..':delayed', '-inf', ARGV[2], 'LIMIT', 0, 1000)) do
  redis.call('ZREM', P..':delayed', id)
  local f = redis.call('HMGET', P..':d:'..id, 's', 'q', 'g')
  if f[1] then visible(id, f[1], f[2], f[3]) end
end
local found = {}
for i = 5, #ARGV, 4 do
  local step, lease, fifo, cap = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1', tonumber(ARGV[i + 3])
  local active = P..':a:'..step
  -- A lease that ran out: the delivery is ready again (still marked leased: its next claim counts it lost).
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', active, '-inf', ARGV[2], 'LIMIT', 0, 1000)) do
    redis.call('ZREM', active, id)
    local f = redis.call('HMGET', P..':d:'..id, 'q', 'g')
    if f[1] then visible(id, step, f[1], f[2]) end
  end
  local room = limit
  if cap >= 0 then room = math.min(room, cap - redis.call('ZCARD', active)) end
  if room > 0 then
    if fifo then
      local heads = redis.call('ZRANGE', P..':h:'..step, 0, room - 1, 'WITHSCORES')
      for j = 1, #heads, 2 do
        table.insert(found, {tonumber(heads[j + 1]), head(step, heads[j]), step, lease})
      end
    else
      local ready = redis.call('ZRANGE', P..':r:'..step, 0, room - 1, 'WITHSCORES')
      for j = 1, #ready, 2 do table.insert(found, {tonumber(ready[j + 1]), ready[j], step, lease}) end
    end
  end
end
table.sort(found, function(a, b) return a[1] < b[1] end)
local out = {}
for k = 1, math.min(limit, #found) do
  local seq, id, step, lease = found[k][1], found[k][2], found[k][3], found[k][4]
  local key = P..':d:'..id
  local f = redis.call('HMGET', key, 'g', 'l', 'x', 'o', 'e', 'u', 'z')
  unready(id, step, f[1])
  local attempts = redis.call('HINCRBY', key, 'n', 1)
  local lost = (f[2] == '1' or f[3] == '1') and 1 or 0
  if f[7] == '1' then redis.call('INCR', P..':n:'..step) end  -- a suspended run whose time came counts again
  redis.call('HSET', key, 'l', 1, 'x', lost, 'o', owner, 'z', 0, 'w', 0)
  if f[4] and f[4] ~= owner then redis.call('SREM', P..':o:'..f[4], id) end
  redis.call('SADD', P..':o:'..owner, id)
  redis.call('ZADD', P..':a:'..step, now + lease, id)
  out[k] = {id, step, attempts, lost, f[5], f[6] == '1' and 1 or 0}
end
-- When the next delayed delivery is due, so that a waiting worker sleeps until then without asking.
return {out, redis.call('ZRANGE', P..':delayed', 0, 0, 'WITHSCORES')[2] or false}
"""
)

# ARGV: P, now, then (id, attempt, seconds) each. Returns the (0-based) positions of leases no longer held.
RENEW = (
    _QUEUE
    + """
local now = tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local f = held(id, ARGV[i + 1])
  if f then
    unready(id, f[3], f[4])  -- its lease ran out but nobody took it yet: it is still this run's
    redis.call('ZADD', P..':a:'..f[3], now + tonumber(ARGV[i + 2]), id)
  else
    table.insert(lost, (i - 3) / 3)
  end
end
return lost
"""
)

# ARGV: P, id, attempt. No wake message: what an ack frees (a slot of a capped step, the next delivery of
# a FIFO group) is taken by the worker that acked, which wakes itself; others look within a second anyway.
ACK = (
    _QUEUE
    + """
local f = held(ARGV[2], ARGV[3])
if not f then return 0 end
settle(ARGV[2], f)
return 1
"""
)

# ARGV: P, id, attempt, now, delay, counts (1: the attempt counts; 0: it is given back).
RETRY = (
    _QUEUE
    + """
local id = ARGV[2]
local f = release(id, ARGV[3])
if not f then return 0 end
local key = P..':d:'..id
if ARGV[6] == '0' then
  redis.call('HINCRBY', key, 'n', -1)
  redis.call('HSET', key, 'u', 1)
end
local delay = tonumber(ARGV[5])
if delay > 0 then
  redis.call('ZADD', P..':delayed', tonumber(ARGV[4]) + delay, id)
else
  visible(id, f[3], f[6], f[4])
end
redis.call('PUBLISH', P..':wake', '')
return 1
"""
)

# ARGV: P, id, attempt, now, until. The attempt is given back; woken while it ran, the run is ready at once.
SUSPEND = (
    _QUEUE
    + """
local id = ARGV[2]
local f = release(id, ARGV[3])
if not f then return 0 end
local key = P..':d:'..id
redis.call('HINCRBY', key, 'n', -1)
local woken = redis.call('HGET', key, 'w') == '1'
redis.call('HSET', key, 'u', 1, 'w', 0)
if woken then
  visible(id, f[3], f[6], f[4])
  redis.call('PUBLISH', P..':wake', '')
else
  redis.call('HSET', key, 'z', 1)
  redis.call('DECR', P..':n:'..f[3])
  redis.call('ZADD', P..':delayed', tonumber(ARGV[5]), id)
end
return 1
"""
)

# A worker whose claim failed (the connection dropped, the reply timed out) cannot tell whether the claim ran:
# the leases it holds that it never heard of go back to the queue, their attempts given back (they never ran).
# ARGV: P, owner, then the ids it knows it holds. Returns how many went back.
RELEASE = (
    _QUEUE
    + """
local owner = ARGV[2]
local known = {}
for i = 3, #ARGV do known[ARGV[i]] = true end
local count = 0
for _, id in ipairs(redis.call('SMEMBERS', P..':o:'..owner)) do
  if not known[id] then
    local mine = redis.call('HMGET', P..':d:'..id, 'n', 'o')
    local f = mine[2] == owner and release(id, mine[1])
    if f then
      redis.call('HINCRBY', P..':d:'..id, 'n', -1)
      visible(id, f[3], f[6], f[4])
      count = count + 1
    end
    redis.call('SREM', P..':o:'..owner, id)
  end
end
if count > 0 then redis.call('PUBLISH', P..':wake', '') end
return count
"""
)

# ARGV: P, id, now. 0 when there is no such delivery.
WAKE = (
    _QUEUE
    + """
local id = ARGV[2]
local key = P..':d:'..id
local f = redis.call('HMGET', key, 'l', 'z', 's', 'q', 'g')
if not f[3] then return 0 end
if f[1] == '1' then
  redis.call('HSET', key, 'w', 1)
elseif f[2] == '1' then
  redis.call('HSET', key, 'z', 0)
  redis.call('INCR', P..':n:'..f[3])
  if redis.call('ZREM', P..':delayed', id) == 1 then visible(id, f[3], f[4], f[5]) end
  redis.call('PUBLISH', P..':wake', '')
end
return 1
"""
)

# ARGV: P, id, attempt, now, error, has traceback (0/1), traceback.
DEAD_LETTER = (
    _QUEUE
    + """
local id = ARGV[2]
local f = held(id, ARGV[3])
if not f then return 0 end
local dead = P..':dl:'..id
redis.call('HSET', dead, 'e', f[7], 's', f[3], 'g', f[4], 'n', f[1], 'err', ARGV[5], 'at', ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', dead, 'tb', ARGV[7]) end
redis.call('ZADD', P..':dead', ARGV[4], id)
settle(id, f)
redis.call('PUBLISH', P..':wake', '')
return 1
"""
)

# ARGV: P, id, now. A dead letter back in the queue, attempt count fresh, behind everything queued now.
REPLAY = (
    _QUEUE
    + """
local id = ARGV[2]
local dead = P..':dl:'..id
local f = redis.call('HMGET', dead, 'e', 's', 'g')
if not f[1] then return 0 end
enqueue(id, f[1], f[2], f[3], tonumber(ARGV[3]), 0)
redis.call('DEL', dead)
redis.call('ZREM', P..':dead', id)
redis.call('PUBLISH', P..':wake', '')
return 1
"""
)

# ARGV: P, then the ids to purge (none: all of them). Returns how many went.
PURGE = """
local P = ARGV[1]
local ids = {}
if #ARGV == 1 then ids = redis.call('ZRANGE', P..':dead', 0, -1) else
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local n = 0
for _, id in ipairs(ids) do
  n = n + redis.call('ZREM', P..':dead', id)
  redis.call('DEL', P..':dl:'..id)
end
return n
"""

# ARGV: P, now, until ('+inf' for no horizon). Returns ready, delayed, in flight, dead, later.
STATS = """
local P, now, untl = ARGV[1], ARGV[2], ARGV[3]
local ready, in_flight = 0, 0
for _, step in ipairs(redis.call('SMEMBERS', P..':steps')) do
  ready = ready + redis.call('ZCARD', P..':r:'..step) + redis.call('ZCOUNT', P..':a:'..step, '-inf', now)
  in_flight = in_flight + redis.call('ZCOUNT', P..':a:'..step, '('..now, '+inf')
end
ready = ready + redis.call('ZCOUNT', P..':delayed', '-inf', now)
local delayed = redis.call('ZCOUNT', P..':delayed', '('..now, untl)
local later = 0
if untl ~= '+inf' then later = redis.call('ZCOUNT', P..':delayed', '('..untl, '+inf') end
return {ready, delayed, in_flight, redis.call('ZCARD', P..':dead'), later}
"""

# A worker says it lives, and hands out again at once the leases of workers that stopped saying so.
# ARGV: P, now, owner, stale before. Returns how many workers were taken for dead.
HEARTBEAT = (
    _QUEUE
    + """
local now, owner = ARGV[2], ARGV[3]
redis.call('ZADD', P..':workers', now, owner)
local stale = redis.call('ZRANGEBYSCORE', P..':workers', '-inf', '('..ARGV[4], 'LIMIT', 0, 100)
for _, dead in ipairs(stale) do give_back(dead, now) end
if #stale > 0 then redis.call('PUBLISH', P..':wake', '') end
return #stale
"""
)

# A worker that stops gives its leases back (handlers cancelled at shutdown): the same as a stale one's.
# ARGV: P, now, owner.
LEAVE = (
    _QUEUE
    + """
give_back(ARGV[3], ARGV[2])
redis.call('PUBLISH', P..':wake', '')
return 1
"""
)

# State. ARGV: P, namespace (s or c), group, key, by (an integer or a float, as text), is float (0/1).
# Adds to a number in place when the stored value is one (or missing); returns the new value as JSON text,
# or false when it is not a number this can add to (the caller then reports, or does it the slow way).
INCREMENT = """
local P, ns, group, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local hash = P..':'..ns..':'..group
local raw = redis.call('HGET', hash, key)
local value
if ARGV[6] == '0' and (not raw or string.match(raw, '^%-?%d+$')) and string.len(raw or '') < 16 then
  value = tostring(redis.call('HINCRBY', hash, key, ARGV[5]))
else
  if raw and not string.match(raw, '^%-?%d+%.?%d*[eE]?[-+]?%d*$') then return false end
  local sum = tonumber(raw or '0') + tonumber(ARGV[5])
  if sum ~= sum or sum == math.huge or sum == -math.huge then return false end
  value = string.format('%.17g', sum)
  if not string.find(value, '[.eEn]') then value = value .. '.0' end
  redis.call('HSET', hash, key, value)
end
redis.call('SADD', P..':'..ns..'g', group)
return value
"""

# ARGV: P, namespace, group, key, raw value. (A script, not MULTI: one command and one reply.)
SET = """
redis.call('HSET', ARGV[1]..':'..ARGV[2]..':'..ARGV[3], ARGV[4], ARGV[5])
redis.call('SADD', ARGV[1]..':'..ARGV[2]..'g', ARGV[3])
return 1
"""

# ARGV: P, namespace, group, key, expected raw value, 1 if it was missing, new raw value. 1 when swapped.
SWAP = """
local P, ns, group, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local hash = P..':'..ns..':'..group
local raw = redis.call('HGET', hash, key)
if ARGV[6] == '1' then
  if raw then return 0 end
elseif raw ~= ARGV[5] then
  return 0
end
redis.call('HSET', hash, key, ARGV[7])
redis.call('SADD', P..':'..ns..'g', group)
return 1
"""

# ARGV: P, namespace, group, key. 1 if the key existed.
DELETE = """
local P, ns, group = ARGV[1], ARGV[2], ARGV[3]
local hash = P..':'..ns..':'..group
local n = redis.call('HDEL', hash, ARGV[4])
if redis.call('EXISTS', hash) == 0 then redis.call('SREM', P..':'..ns..'g', group) end
return n
"""

# ARGV: P, namespace, group. How many keys went.
CLEAR = """
local P, ns, group = ARGV[1], ARGV[2], ARGV[3]
local n = redis.call('HLEN', P..':'..ns..':'..group)
redis.call('DEL', P..':'..ns..':'..group)
redis.call('SREM', P..':'..ns..'g', group)
return n
"""

# ARGV: P, then per trace: id, entry, first, last, records, errors, bytes, n, then its n records (JSON).
APPEND = """
local P = ARGV[1]
local i = 2
local total = 0
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 7])
  local summary = P..':ts:'..id
  if redis.call('HSETNX', summary, 'entry', ARGV[i + 1]) == 1 then
    redis.call('HSET', summary, 'first', ARGV[i + 2], 'last', ARGV[i + 3])
    redis.call('ZADD', P..':tr', redis.call('INCR', P..':tseq'), id)
  elseif tonumber(redis.call('HGET', summary, 'last')) < tonumber(ARGV[i + 3]) then
    redis.call('HSET', summary, 'last', ARGV[i + 3])
  end
  redis.call('HINCRBY', summary, 'records', ARGV[i + 4])
  redis.call('HINCRBY', summary, 'errors', ARGV[i + 5])
  redis.call('HINCRBY', summary, 'bytes', ARGV[i + 6])
  total = total + tonumber(ARGV[i + 6])
  redis.call('ZADD', P..':tl', 'GT', ARGV[i + 3], id)
  for j = i + 8, i + 7 + n, 500 do
    redis.call('RPUSH', P..':t:'..id, unpack(ARGV, j, math.min(j + 499, i + 7 + n)))
  end
  i = i + 8 + n
end
redis.call('INCRBY', P..':tbytes', total)
return 1
"""

# ARGV: P, then trace ids. Deletes them whole; returns how many there were.
DROP_TRACES = """
local P = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local bytes = redis.call('HGET', P..':ts:'..id, 'bytes')
  if bytes then
    redis.call('DECRBY', P..':tbytes', bytes)
    n = n + 1
  end
  redis.call('DEL', P..':t:'..id, P..':ts:'..id)
  redis.call('ZREM', P..':tr', id)
  redis.call('ZREM', P..':tl', id)
end
return n
"""

# Streams. ARGV: P, stream, group, then per script below. A change and its number are one script.
_STREAM = """
local P, stream, group = ARGV[1], ARGV[2], ARGV[3]
local base = P..':st:'..string.len(stream)..':'..stream..':'..group
-- The change goes into the group's log and, in the same script, out on P:st:bus to every process that
-- listens, as [origin, stream, group, seq, id, op, item]: no change is logged without being published.
local function logged(seq, id, op, raw, keep, origin)
  local change = '['..seq..','..cjson.encode(id)..',"'..op..'",'..raw..']'
  redis.call('SADD', P..':st:'..string.len(stream)..':'..stream..':groups', group)
  redis.call('ZADD', base..':l', seq, change)
  redis.call('ZREMRANGEBYSCORE', base..':l', '-inf', seq - keep)
  redis.call('PUBLISH', P..':st:bus', '['..cjson.encode(origin)..','..cjson.encode(stream)..','..
    cjson.encode(group)..','..string.sub(change, 2))
end
"""

# ARGV: ..., id, item JSON, log size, origin. Returns {seq, 1 if it replaced an item}.
STREAM_SET = (
    _STREAM
    + """
local id, raw = ARGV[4], ARGV[5]
local replaced = redis.call('HSET', base..':i', id, raw) == 0
local seq = redis.call('INCR', base..':q')
logged(seq, id, replaced and 'update' or 'create', raw, tonumber(ARGV[6]), ARGV[7])
return {seq, replaced and 1 or 0}
"""
)

# ARGV: ..., id, log size, origin. Returns the change's number, or false when there was no such item.
STREAM_DELETE = (
    _STREAM
    + """
local id = ARGV[4]
if redis.call('HDEL', base..':i', id) == 0 then return false end
local seq = redis.call('INCR', base..':q')
logged(seq, id, 'delete', 'null', tonumber(ARGV[5]), ARGV[6])
return seq
"""
)

# ARGV: ... . Returns {the group's number, id, item, id, item, ...}, of one moment.
STREAM_SNAPSHOT = (
    _STREAM
    + """
local out = {tonumber(redis.call('GET', base..':q') or '0')}
for _, v in ipairs(redis.call('HGETALL', base..':i')) do out[#out + 1] = v end
return out
"""
)

# ARGV: ..., since. Returns {the group's number, change, change, ...} after `since`, oldest first.
STREAM_CHANGES = (
    _STREAM
    + """
local out = {tonumber(redis.call('GET', base..':q') or '0')}
for _, v in ipairs(redis.call('ZRANGEBYSCORE', base..':l', '('..ARGV[4], '+inf')) do out[#out + 1] = v end
return out
"""
)

# ARGV: P, step, tick. 1 when this caller is the one that fires the tick.
CLAIM_TICK = """
local last = redis.call('HGET', ARGV[1]..':cron', ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', ARGV[1]..':cron', ARGV[2], ARGV[3])
return 1
"""
