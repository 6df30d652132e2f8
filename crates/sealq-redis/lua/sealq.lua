#!lua name=sealq
-- sealq's Redis Functions library. Loaded by `sealq redis install`
-- (FUNCTION LOAD REPLACE); called with FCALL by producers and workers.
--
-- Keys. KEYS[1] of every per-queue function is the queue's key base
-- `PREFIX:{queue}:`; every key a call touches is that base plus a suffix, so
-- one call touches one Cluster slot. The global base `PREFIX:{~}:g:` (id index,
-- queue registry, paused registry) is passed as KEYS[2] only on standalone
-- servers; on a Cluster the Rust side maintains it with separate calls, using
-- the ids these functions return.
--
-- Per queue (Q = KEYS[1]):
--   Q..'t:'..id   hash  one task's state (small fields, below)
--   Q..'b:'..id   string the task's stored bytes: kind, metadata and sealed
--                 envelope (layout in codec.rs). Written by the producer
--                 beside sealq_enqueue (see there); read by workers with
--                 `MGET`. The bytes of large calls never pass through Lua:
--                 per task, converting a 1 KiB argument or reply costs more
--                 than a command of its own; in calls of a few tasks
--                 (sealq_enqueue_inline, the bytes of small dequeues) it
--                 saves whole commands (see docs/benchmarks.md).
--   Q..'ready'    zset  scheduled, pending and retry ids by run_at (dequeue order)
--   Q..'delayed'  zset  scheduled and retry ids by run_at (forwarding)
--   Q..'active'   zset  leased ids by lease expiry (recovery)
--   Q..'done'     zset  completed ids by purge time (retention); also
--                 the replay memory of a completed task while it is
--                 retained (below)
--   Q..'archived' zset  archived ids by finish time
--   Q..'seen'     zset  replay memory (finding 2 of the security review),
--                 with Q..'done': ids of tasks that left Q..'done' (purged,
--                 whatever their hash's state says) or were deleted or
--                 erased in any state, by when they were last remembered;
--                 kept for the replay horizon after that and while the
--                 task's key exists (sealq_purge). A completed id is in
--                 Q..'done' from its completion (sealq_ack) until the
--                 purge moves it here: one zset insert per completion.
--                 Dequeue flags a leased id found in either `replayed`,
--                 whatever the task's own state says
--   Q..'all'      zset  every stored id, score 0 (lexical order = id order)
--   Q..'n'        hash  task count per state, `trimmed` (archived tasks
--                 deleted by the caps), `maxdepth` (the queue's cap on
--                 waiting tasks, sealq_limit)
--   Q..'u:'..key  string unique key holder: id..'|'..expires_at_ms
--   Q..'flags'    hash  queue flags: `paused` while the queue is paused;
--                 a rate limit's token bucket: `rl` tasks per `rp` ms,
--                 `rt` tokens left at `ra` (sealq_rate, dequeue)
--   Q..'wake'     list  at most one wake-up token for idle workers
-- Global (G = KEYS[2]):
--   G..'ids'      hash  id -> queue, for every stored or remembered id
--   G..'queues'   set   queue names
--   G..'paused'   set   paused queue names
--
-- Task hash fields: s state, a attempts, r run_at, le last error, res
-- result, ar archive reason, lx lease expiry, tok lease token, fin finished
-- at, upd updated at, mr max retries, ret retention ms, sub subject tag
-- (hex), uk unique key. The queue is the key's own (a task copied under
-- another queue's key is opened with that queue in its associated data and
-- fails); kind and metadata live with the envelope in Q..'b:'..id.
--
-- Times are Unix ms from the caller's clock (ARGV), never Redis' TIME, so
-- tests can drive time and every worker agrees with its producers.

local VERSION = '__SEALQ_VERSION__'

local function s(n)
  return string.format('%d', n)
end

-- Attempt counts as strings, made on first use (formatting a number costs
-- Lua a new string per task; `string` is not reachable while loading).
local SMALL = nil

local function small(n)
  if not SMALL then
    SMALL = {}
    for i = 0, 255 do SMALL[i] = s(i) end
  end
  return SMALL[n] or s(n)
end

-- Damaged data (an edited key, a bad restore) never makes a call fail
-- half way: a function's writes are not rolled back by an error, so an
-- error after the first write would leave the call half applied (tasks
-- active with no holder, a task stored without its reply). What a call
-- reads is checked before it is used; the few commands that fail on a
-- damaged value (HINCRBY on a count that is not a whole number, LPUSH on a
-- wake key that is not a list, HMGET/HGETALL on a task key that is not a
-- hash) run through `tolerant` (redis.pcall) and the damage is repaired or the task set
-- aside (below). Repairs are logged in Redis' log.

local function warn(msg)
  redis.log(redis.LOG_WARNING, 'sealq: ' .. msg)
end

-- What `tolerant` returns for a damaged value.
local DAMAGED = {}

-- Run a command on a key that may hold damaged data: its reply, or DAMAGED
-- when the key holds the wrong type (or, for HINCRBY, a value that is not
-- a whole number). Every other error (a permission the caller's ACL does
-- not grant, …) is raised as redis.call raises it: only damage is
-- tolerated, never a refusal.
--
-- The check costs nothing unless the command failed: hot loops call
-- redis.pcall themselves and hand only an error reply to `damage` (a
-- command with an array reply, like HMGET, needs no type check first).
local function damage(r)
  local e = r.err
  if string.find(e, 'WRONGTYPE', 1, true) == 1 or string.find(e, 'not an integer', 1, true)
    or string.find(e, 'would overflow', 1, true) then
    return DAMAGED
  end
  error(r)
end

local function tolerant(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return damage(r) end
  return r
end

-- Whether a `tolerant` reply says the value was damaged.
local function failed(r)
  return r == DAMAGED
end

-- The task states (the names counted in Q..'n').
local STATES = {scheduled = true, pending = true, active = true, retry = true,
  completed = true, archived = true}

-- A count's value if it is a whole number, else nil.
local function whole(v)
  if type(v) == 'string' and string.find(v, '^%-?%d+$') then return tonumber(v) end
  return nil
end

-- Count `st` of queue Q recounted from the sets, which are the source of
-- truth (called after the caller's own set changes, so the result includes
-- them); nil for a count the sets do not hold (`trimmed`, other names).
-- Scheduled and retry tasks share Q..'delayed': one of them is the set's
-- size less the other when that one is whole, else the tasks are read.
local function recount(Q, st)
  local z = {active = 'active', completed = 'done', archived = 'archived'}
  if z[st] then return redis.call('ZCARD', Q .. z[st]) end
  if st == 'pending' then
    return redis.call('ZCARD', Q .. 'ready') - redis.call('ZCARD', Q .. 'delayed')
  end
  if st ~= 'scheduled' and st ~= 'retry' then return nil end
  local other = 'retry'
  if st == 'retry' then other = 'scheduled' end
  local o = tolerant('HGET', Q .. 'n', other)
  if o == false then o = 0 else o = whole(o) end
  if o then return redis.call('ZCARD', Q .. 'delayed') - o end
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', Q .. 'delayed', 0, -1)) do
    if tolerant('HGET', Q .. 't:' .. id, 's') == st then n = n + 1 end
  end
  return n
end

-- Add `by` to count `st` of Q; returns the new count, or nil when it is
-- unknown. A count that is not a whole number (an edited hash) is
-- recounted from the sets when `repair` is set; producers (enqueue) may not
-- read the sets, so they leave it, and the next worker call touching that
-- count repairs it. Never raises.
local function add_count(Q, st, by, repair)
  local r = tolerant('HINCRBY', Q .. 'n', st, by)
  if not failed(r) then return r end
  if not repair then return nil end
  local n = recount(Q, st)
  if n == nil then
    if st ~= 'trimmed' then return nil end
    n = math.max(by, 0)
  end
  if failed(tolerant('HSET', Q .. 'n', st, string.format('%d', n))) then
    warn('the counts hash ' .. Q .. 'n is not a hash; counts are not kept until it is deleted')
    return nil
  end
  warn('count `' .. st .. '` of ' .. Q .. 'n was not a whole number; recounted as ' .. n)
  return n
end

local function incr(Q, state, by)
  add_count(Q, state, by, true)
end

-- At most one token: a second push while one waits would wake nobody more.
-- (LPUSH and LTRIM rather than LLEN: producers hold no read permission.)
-- A wake key that is not a list (an edited key) is replaced: it is only a
-- hint. (`SET … PXAT 1` deletes it: producers hold no DEL permission.)
local function wake(Q)
  local k = Q .. 'wake'
  local n = tolerant('LPUSH', k, '1')
  if failed(n) then
    warn('replaced the wake key ' .. k .. ', which was not a list')
    redis.call('SET', k, '', 'PXAT', 1)
    n = redis.call('LPUSH', k, '1')
  end
  if n > 1 then
    redis.call('LTRIM', k, 0, 0)
  end
end

-- Lua's unpack has a stack limit: run `cmd key items...` in chunks (even
-- sizes, so score/member and field/value pairs stay together).
local CHUNK = 4000

local function bulk(cmd, key, items)
  local n = #items
  local i = 1
  while i <= n do
    local j = math.min(i + CHUNK - 1, n)
    redis.call(cmd, key, unpack(items, i, j))
    i = j + 1
  end
end

-- Like bulk, for commands with one reply per item (HMGET, ZMSCORE).
local function mget(cmd, key, items)
  local out = {}
  local n = #items
  local i = 1
  while i <= n do
    local j = math.min(i + CHUNK - 1, n)
    local r = redis.call(cmd, key, unpack(items, i, j))
    for k = 1, j - i + 1 do out[#out + 1] = r[k] end
    i = j + 1
  end
  return out
end

-- DEL many keys, in chunks.
local function del_all(keys)
  local n = #keys
  local i = 1
  while i <= n do
    local j = math.min(i + CHUNK - 1, n)
    redis.call('DEL', unpack(keys, i, j))
    i = j + 1
  end
end

-- Apply per-state count changes gathered by a batch (`repair`: see
-- add_count). Returns true when a count rose from zero (the queue may be
-- new to the registry), and the set of states whose count rose from zero
-- (a count that is not known is taken to have risen: both are hints).
local function counts(Q, delta, repair)
  local fresh = false
  local rose = {}
  for st, by in pairs(delta) do
    if by ~= 0 then
      local n = add_count(Q, st, by, repair)
      if by > 0 and (n == nil or n == by) then
        fresh = true
        rose[st] = true
      end
    end
  end
  return fresh, rose
end

-- Drop the unique key `uk` if task `id` holds it.
local function release_unique(Q, id, uk)
  if uk then
    local k = Q .. 'u:' .. uk
    local v = tolerant('GET', k)
    if type(v) == 'string' and string.sub(v, 1, #id + 1) == id .. '|' then
      redis.call('DEL', k)
    end
  end
end

-- Make key `k` expire at once (for callers without DEL).
local function drop(k)
  redis.call('SET', k, '', 'PX', 1)
end

local function clear_lease(T)
  redis.call('HDEL', T, 'tok', 'lx')
end

local function version()
  return VERSION
end

-- ARGV: now, queue, then per task 7 fields:
-- id, run_at, max_retries, retention_ms, subject, ukey, uttl
-- The caller has written each task's bytes to Q..'b:'..id just before, in
-- one of two ways:
-- * fast path (single node; KEYS[3] = a marker key M): one `MSETNX M 1
--   Q..'b:'..id bytes ...` in the same MULTI/EXEC. If M exists now, every
--   key was absent and is written: accepted tasks keep their bytes, refused
--   ones' are dropped. If not, nothing was written (some key existed): every
--   task not refused otherwise is 'nobytes', and the caller retries those
--   the other way.
-- * `SET NX PX` per task (same pipeline): refused tasks' bytes are left to
--   expire; accepted ones are made permanent (PERSIST).
-- * inline (sealq_enqueue_inline, for calls of a few tasks): each task's
--   bytes are an eighth field, written here with `SET NX`; one command per
--   call instead of MULTI, MSETNX, FCALL and EXEC (passing 1 KiB through
--   Lua costs less than the three extra commands). A task whose bytes key
--   exists already is 'nobytes', and the caller retries it the
--   `SET NX PX` way.
-- Returns the number of tasks when every task was stored (the usual case:
-- one integer instead of a string per task, which costs Redis a
-- conversion each and the caller a parse each); else per task: 'ok' |
-- 'exists' | 'nobytes' (its bytes are not there as just written) |
-- 'full:<cap>' (the queue holds its maximum of waiting tasks) | the id
-- holding the unique key.
-- Known ids are refused: on a single node through the global index (one
-- HMGET for the batch); on a Cluster the caller has claimed every id in the
-- global index before (sealq_registry 'index') and passes only the ids it
-- won. Per task PERSIST and HSET; the index, set and count updates are one
-- command per batch.
-- `stride` fields per task (7, or 8 with the bytes inline); `name` for errors.
local function enqueue_with(keys, args, stride, inline, name)
  if (#args - 2) % stride ~= 0 then
    return redis.error_reply('ERR ' .. name .. ': malformed arguments')
  end
  local Q, G, M = keys[1], keys[2], keys[3]
  if inline then M = nil end
  -- Fast path: did the MSETNX write (the marker is there)? The marker, and
  -- the bytes of refused tasks, are dropped with `SET '' PX 1` rather than
  -- DEL: producers hold no DEL permission.
  local wrote = false
  if M and redis.call('EXISTS', M) == 1 then
    wrote = true
    drop(M)
  end
  local now, queue = tonumber(args[1]), args[2]
  local nows = s(now)
  local n = (#args - 2) / stride
  local out, fresh = {}, {}
  local known = {}
  if G then
    local ids = {}
    for j = 1, n do ids[j] = args[3 + (j - 1) * stride] end
    known = mget('HMGET', G .. 'ids', ids)
  end
  -- A depth cap (Broker::set_max_depth: field `maxdepth` of the counts
  -- hash, which producers may read): room left for waiting (scheduled,
  -- pending, retry) tasks. One command, cap and counts together.
  -- A cap or count that is not a number (an edited hash) counts as none.
  local c = tolerant('HMGET', Q .. 'n', 'maxdepth', 'scheduled', 'pending', 'retry')
  if failed(c) then c = {} end
  local cap, room = c[1], nil
  if cap and not tonumber(cap) then
    warn('ignored the cap of ' .. Q .. 'n, which is not a number')
    cap = nil
  end
  if cap then
    room = tonumber(cap) - (tonumber(c[2]) or 0) - (tonumber(c[3]) or 0) - (tonumber(c[4]) or 0)
    cap = 'full:' .. cap
  end
  local ready, delayed, all, index = {}, {}, {}, {}
  -- Fill counts kept by hand: `#t` is a search in Lua 5.1, per append.
  local nready, ndelayed, nall, nok = 0, 0, 0, 0
  local delta = {pending = 0, scheduled = 0}
  for j = 1, n do
    local b = 3 + (j - 1) * stride
    local id, run_at = args[b], args[b + 1]
    local mr, ret, sub, uk, uttl = args[b + 2], args[b + 3], args[b + 4], args[b + 5], args[b + 6]
    local T = Q .. 't:' .. id
    if fresh[id] then
      out[j] = 'exists'
    elseif known[j] then
      -- Known in another queue (or remembered): bytes the MSETNX wrote
      -- under this queue belong to no task.
      if wrote then drop(Q .. 'b:' .. id) end
      out[j] = 'exists'
    else
      local dup = nil
      if uk ~= '' then
        -- (A unique key that is not a string holds nothing: SET replaces it.)
        local v = tolerant('GET', Q .. 'u:' .. uk)
        if type(v) == 'string' then
          local bar = string.find(v, '|', 1, true)
          local until_ms = bar and tonumber(string.sub(v, bar + 1))
          if until_ms and until_ms > now then
            dup = string.sub(v, 1, bar - 1)
          end
        end
      end
      if dup then
        if wrote then drop(Q .. 'b:' .. id) end
        out[j] = dup
      elseif room and room <= 0 then
        -- The queue is full: not stored (bytes written for it are dropped,
        -- or expire).
        if wrote then drop(Q .. 'b:' .. id) end
        out[j] = cap
      elseif M and not wrote then
        out[j] = 'nobytes'
      elseif inline and not redis.call('SET', Q .. 'b:' .. id, args[b + 7], 'NX') then
        -- A bytes key of that id exists (a stray, or another producer's
        -- write in flight): never overwritten.
        out[j] = 'nobytes'
      elseif not wrote and not inline and redis.call('PERSIST', Q .. 'b:' .. id) == 0 then
        -- Not written just now (missing, or left permanent by something
        -- else: producers may not read them to tell which).
        out[j] = 'nobytes'
      else
        local state = 'pending'
        if tonumber(run_at) > now then state = 'scheduled' end
        if sub == '' and uk == '' then
          -- The common case, without building a table to unpack.
          redis.call('HSET', T, 's', state, 'a', '0', 'r', run_at, 'mr', mr, 'ret', ret, 'upd', nows)
        else
          local h = {'s', state, 'a', '0', 'r', run_at, 'mr', mr, 'ret', ret, 'upd', nows}
          if sub ~= '' then h[#h + 1] = 'sub'; h[#h + 1] = sub end
          if uk ~= '' then
            h[#h + 1] = 'uk'; h[#h + 1] = uk
            redis.call('SET', Q .. 'u:' .. uk, id .. '|' .. s(now + tonumber(uttl)))
          end
          redis.call('HSET', T, unpack(h))
        end
        ready[nready + 1] = run_at; ready[nready + 2] = id
        nready = nready + 2
        if state == 'scheduled' then
          delayed[ndelayed + 1] = run_at; delayed[ndelayed + 2] = id
          ndelayed = ndelayed + 2
        end
        all[nall + 1] = '0'; all[nall + 2] = id
        nall = nall + 2
        if G then index[nall - 1] = id; index[nall] = queue end
        delta[state] = delta[state] + 1
        fresh[id] = true
        if room then room = room - 1 end
        out[j] = 'ok'
        nok = nok + 1
      end
    end
  end
  bulk('ZADD', Q .. 'ready', ready)
  bulk('ZADD', Q .. 'delayed', delayed)
  bulk('ZADD', Q .. 'all', all)
  local first, rose = counts(Q, delta, false)
  if G then
    bulk('HSET', G .. 'ids', index)
    -- The registry already holds a queue that had tasks in these states.
    if first then redis.call('SADD', G .. 'queues', queue) end
  end
  -- Wake idle workers only when the queue had no pending task: a worker
  -- blocks only after a dequeue found none, and one that takes a task
  -- while more wait passes the wake-up on (dequeue). With a backlog, an
  -- enqueue costs no wake-up commands.
  if rose.pending then wake(Q) end
  if nok == n then return n end
  return out
end

local function enqueue(keys, args)
  return enqueue_with(keys, args, 7, false, 'sealq_enqueue')
end

-- As sealq_enqueue, with each task's stored bytes as an eighth field.
local function enqueue_inline(keys, args)
  return enqueue_with(keys, args, 8, true, 'sealq_enqueue_inline')
end

-- KEYS: one base per queue, in order. ARGV: now, max, lease_ms, worker,
-- lease token (16 hex digits, fresh for every call: a task's lease is its
-- id and the token of the call that leased it, so a later lease of the
-- same task has another token). Returns {taken per key (one integer per
-- key visited), task triples, extras}: the triples are flat, 3 values per
-- task in order (id, attempts, run_at or false); extras are flat (task
-- number from 1, code, value) triples only for the tasks that need them:
-- code 'p' replayed (value 1), 'e' last error, 'b' the stored bytes. The
-- bytes come inline only for small batches (at most INLINE tasks: an idle
-- system's latency, one round trip); for larger ones the caller reads them
-- with MGET, which costs Redis far less than passing them through Lua. A
-- short reply matters: every value a function returns costs Redis a
-- conversion (see docs/benchmarks.md). Per task HMGET and HSET; the rest
-- is per queue.
local INLINE = 8

-- The sets that hold the replay memory (see the header).
local MEMORY = {'seen', 'done'}

-- The replay memory's entries for `ids` (non-empty) of queue Q: a table
-- whose j-th value is set when Q..'seen' or Q..'done' holds ids[j]; or
-- DAMAGED and the name of the set that is not a zset. (A miss costs Redis
-- little; the usual case is one `ZMSCORE` per set, the first reply used
-- as it comes.)
local function remembered(Q, ids)
  local out = nil
  for _, z in ipairs(MEMORY) do
    local i = 1
    while i <= #ids do
      local j = math.min(i + CHUNK - 1, #ids)
      local r = redis.pcall('ZMSCORE', Q .. z, unpack(ids, i, j))
      if r.err then r = damage(r) end
      if failed(r) then return DAMAGED, z end
      if not out and j == #ids then
        out = r
      else
        out = out or {}
        for k = 1, j - i + 1 do
          if r[k] then out[i + k - 1] = r[k] end
        end
      end
      i = j + 1
    end
  end
  return out
end

local function dequeue(keys, args)
  local now, max = tonumber(args[1]), tonumber(args[2])
  local nows = s(now)
  local expires = s(now + tonumber(args[3]))
  local tok = args[5]
  local per, out, extra = {}, {}, {}
  -- Fill counts kept by hand (`#t` is a search in Lua 5.1, per append).
  local taken, nout = 0, 0
  for qi, Q in ipairs(keys) do
    local want = max - taken
    if want <= 0 then break end
    local got = 0
    -- Paused, and a rate limit (a token bucket: `rl` per `rp` ms, `rt`
    -- tokens at `ra`), in one command.
    -- Flags that are not a hash (an edited key): the queue is skipped as
    -- if paused, rather than run against an operator's pause.
    local f = tolerant('HMGET', Q .. 'flags', 'paused', 'rl', 'rp', 'rt', 'ra')
    if failed(f) then
      warn('skipped queue ' .. Q .. ': its flags key is not a hash')
      f = {'1'}
    end
    local limit, tokens, at = tonumber(f[2]), nil, nil
    if limit and not f[1] then
      local period = tonumber(f[3]) or 1000
      tokens = tonumber(f[4]) or limit
      at = tonumber(f[5]) or now
      if now > at then
        tokens = math.min(limit, tokens + (now - at) * limit / period)
        at = now
      end
      want = math.min(want, math.floor(tokens))
    end
    if not f[1] and want > 0 then
      local ids = redis.call('ZRANGEBYSCORE', Q .. 'ready', '-inf', nows, 'LIMIT', 0, want)
      if #ids > 0 then
        -- The replay memory (Q..'seen' and Q..'done'), read before the
        -- first write. A memory that is not a zset (an edited key) fails
        -- closed: every task leased here is flagged replayed (archived
        -- `replay`, re-runnable by an operator) rather than run without
        -- the check.
        local seen, bad = remembered(Q, ids)
        if failed(seen) then
          warn('flagged every task leased from ' .. Q .. ' replayed: ' .. Q .. bad .. ' is not a zset')
          seen = {}
          for j = 1, #ids do seen[j] = '0' end
        end
        bulk('ZREM', Q .. 'ready', ids)
        local active, undelay = {}, {}
        local nactive = 0
        local delta = {pending = 0, scheduled = 0, retry = 0, active = 0}
        for j = 1, #ids do
          local id = ids[j]
          local T = Q .. 't:' .. id
          local cur = redis.pcall('HMGET', T, 's', 'a', 'r', 'le')
          if cur.err then cur = damage(cur) end
          if cur == DAMAGED then
            -- Not a hash (an edited key): no task to lease. It leaves the
            -- ready set (above) and the delayed one.
            warn('set aside ' .. T .. ' at dequeue: not a hash')
            undelay[#undelay + 1] = id
            cur = {}
          end
          local st = cur[1]
          if st == 'pending' or st == 'scheduled' or st == 'retry' then
            if st ~= 'pending' then undelay[#undelay + 1] = id end
            local an = tonumber(cur[2])
            -- A non-numeric count (an edited hash) stays as it is: the
            -- worker refuses the task (integrity) instead of the call failing.
            local a = cur[2] or ''
            if an then a = small(an + 1) end
            redis.call('HSET', T, 's', 'active', 'a', a, 'tok', tok, 'lx', expires, 'upd', nows)
            active[nactive + 1] = expires; active[nactive + 2] = id
            nactive = nactive + 2
            delta[st] = delta[st] - 1
            delta.active = delta.active + 1
            taken = taken + 1
            got = got + 1
            -- A missing run_at (an edited hash) comes back as false: the
            -- worker refuses the task (integrity).
            out[nout + 1] = id; out[nout + 2] = a; out[nout + 3] = cur[3] or false
            nout = nout + 3
            if seen[j] then
              local e = #extra
              extra[e + 1] = taken; extra[e + 2] = 'p'; extra[e + 3] = 1
            end
            if cur[4] then
              local e = #extra
              extra[e + 1] = taken; extra[e + 2] = 'e'; extra[e + 3] = cur[4]
            end
          end
        end
        bulk('ZADD', Q .. 'active', active)
        bulk('ZREM', Q .. 'delayed', undelay)
        counts(Q, delta, true)
      end
      if taken >= max then
        -- Work left behind: pass the wake-up on to another idle worker.
        if #redis.call('ZRANGEBYSCORE', Q .. 'ready', '-inf', nows, 'LIMIT', 0, 1) > 0 then
          wake(Q)
        end
      end
    end
    if tokens then
      redis.call('HSET', Q .. 'flags', 'rt', string.format('%.6f', tokens - got), 'ra', s(at))
    end
    per[qi] = got
  end
  if taken <= INLINE then
    local t = 0
    for qi, got in ipairs(per) do
      for _ = 1, got do
        t = t + 1
        -- (Bytes that are not a string read as missing: the caller
        -- archives the task, as it does when MGET finds none.)
        local b = tolerant('GET', keys[qi] .. 'b:' .. out[(t - 1) * 3 + 1])
        if type(b) == 'string' then
          local e = #extra
          extra[e + 1] = t; extra[e + 2] = 'b'; extra[e + 3] = b
        end
      end
    end
  end
  return {per, out, extra}
end

-- ARGV: now, then per ack: id, token, op, and op's own arguments (none,
-- one or two: an ack sends no empty placeholders):
-- c (complete), C a1 (complete with result a1), r a1 (retry at a1),
-- R a1 a2 (retry at a1 with error a2), a a1 (archive reason a1),
-- A a1 a2 (archive reason a1, error a2), q (requeue). Returns per ack 1
-- (applied) or 0 (lease lost), or 2: a completion applied on an id the
-- replay memory already held (the same task succeeding twice; the caller
-- counts it). A completed id joins the replay memory here, at completion
-- (finding 2 of the security review): its entry in Q..'done' is that
-- memory while the task is retained (one zset insert per completion).
-- Per ack HMGET (state, token, retention, unique key) and HSET; the lease
-- fields stay in the hash (they mean nothing outside state `active`); set
-- updates are one command per batch.
local NARGS = {c = 0, C = 1, r = 1, R = 2, a = 1, A = 2, q = 0}

local function ack(keys, args)
  local Q = keys[1]
  local now = tonumber(args[1])
  local nows = s(now)
  local out = {}
  local ready = false
  local left, done, archived, queued, delayed = {}, {}, {}, {}, {}
  -- Fill counts kept by hand (`#t` is a search in Lua 5.1, per append).
  local nout, nleft, ndone = 0, 0, 0
  local purge_at = {}
  local seen_at = {}
  local delta = {active = 0, completed = 0, retry = 0, archived = 0, pending = 0}
  -- Check the whole call's layout before writing anything (a function's
  -- writes are not rolled back by an error).
  local i = 2
  while i <= #args do
    local na = NARGS[args[i + 2]]
    if not na or i + 2 + na > #args then
      return redis.error_reply('ERR sealq_ack: malformed arguments')
    end
    i = i + 3 + na
  end
  i = 2
  while i <= #args do
    local id, tok, op = args[i], args[i + 1], args[i + 2]
    local a1, a2 = args[i + 3], args[i + 4]
    i = i + 3 + NARGS[op]
    local T = Q .. 't:' .. id
    -- (A task key that is no longer a hash holds no lease.)
    local cur = redis.pcall('HMGET', T, 's', 'tok', 'ret', 'uk')
    if cur.err then cur = damage(cur) end
    if cur == DAMAGED or cur[1] ~= 'active' or cur[2] ~= tok then
      nout = nout + 1
      out[nout] = 0
    else
      nleft = nleft + 1
      left[nleft] = id
      delta.active = delta.active - 1
      if op == 'c' or op == 'C' then
        if op == 'C' then
          redis.call('HSET', T, 's', 'completed', 'fin', nows, 'upd', nows, 'res', a1)
        else
          redis.call('HSET', T, 's', 'completed', 'fin', nows, 'upd', nows)
        end
        -- Purge time: one string per distinct retention in the call.
        local ret = cur[3] or '0'
        local at = purge_at[ret]
        if not at then
          at = s(now + (tonumber(ret) or 0))
          purge_at[ret] = at
        end
        done[ndone + 1] = at; done[ndone + 2] = id
        ndone = ndone + 2
        seen_at[ndone / 2] = nout + 1
        release_unique(Q, id, cur[4])
        delta.completed = delta.completed + 1
      elseif op == 'r' or op == 'R' then
        if op == 'R' then
          redis.call('HSET', T, 's', 'retry', 'r', a1, 'upd', nows, 'le', a2)
        else
          redis.call('HSET', T, 's', 'retry', 'r', a1, 'upd', nows)
        end
        queued[#queued + 1] = a1; queued[#queued + 1] = id
        delayed[#delayed + 1] = a1; delayed[#delayed + 1] = id
        delta.retry = delta.retry + 1
        if tonumber(a1) <= now then ready = true end
      elseif op == 'a' or op == 'A' then
        if op == 'A' then
          redis.call('HSET', T, 's', 'archived', 'ar', a1, 'fin', nows, 'upd', nows, 'le', a2)
        else
          redis.call('HSET', T, 's', 'archived', 'ar', a1, 'fin', nows, 'upd', nows)
        end
        if a1 == 'integrity' then
          -- (Rare: a task whose fields did not decode.) Reset an attempts
          -- count that is not a number and a missing run-at, so the
          -- archived task reads back.
          local ra = redis.call('HMGET', T, 'a', 'r')
          if not tonumber(ra[1]) then redis.call('HSET', T, 'a', '0') end
          if not tonumber(ra[2]) then redis.call('HSET', T, 'r', nows) end
        end
        archived[#archived + 1] = nows; archived[#archived + 1] = id
        release_unique(Q, id, cur[4])
        delta.archived = delta.archived + 1
      else
        -- Requeue (shutdown): rare, so its two fields are read only here.
        local ra = redis.call('HMGET', T, 'r', 'a')
        local a = (tonumber(ra[2]) or 1) - 1
        if a < 0 then a = 0 end
        redis.call('HSET', T, 's', 'pending', 'a', s(a), 'upd', nows)
        queued[#queued + 1] = ra[1]; queued[#queued + 1] = id
        delta.pending = delta.pending + 1
        ready = true
      end
      nout = nout + 1
      out[nout] = 1
    end
  end
  bulk('ZREM', Q .. 'active', left)
  if #done > 0 then
    -- The completed ids join Q..'done' (their replay memory while
    -- retained) with `ZADD NX`: its count says whether Q..'done' held one
    -- before (a second success of one id, rare). Q..'seen' (ids purged or
    -- deleted before) is read with one `ZMSCORE`. (A set that is not a
    -- zset, an edited key: dequeue fails closed on it, see there.)
    local ids = {}
    for k = 2, ndone, 2 do ids[k / 2] = done[k] end
    local i = 1
    while i <= #ids do
      local j = math.min(i + CHUNK - 1, #ids)
      local r = redis.pcall('ZMSCORE', Q .. 'seen', unpack(ids, i, j))
      if r.err then r = damage(r) end
      if failed(r) then
        warn('did not check completed ids against the replay memory: ' .. Q .. 'seen is not a zset')
        break
      end
      for k = 1, j - i + 1 do
        if r[k] then out[seen_at[i + k - 1]] = 2 end
      end
      i = j + 1
    end
    local added = 0
    i = 1
    while i <= #done do
      local j = math.min(i + CHUNK - 1, #done)
      added = added + redis.call('ZADD', Q .. 'done', 'NX', unpack(done, i, j))
      i = j + 1
    end
    if added < #ids then
      -- (Rare.) The ids Q..'done' held before kept their old purge time:
      -- mark their acks, then move their purge time on. (An id completed
      -- twice in the same millisecond with the same retention cannot be
      -- told apart from a fresh one: then every such id is marked, a false
      -- alarm rather than a missed second success.)
      local at = mget('ZMSCORE', Q .. 'done', ids)
      local marked, same = 0, {}
      for k = 1, #ids do
        if at[k] and tonumber(at[k]) ~= tonumber(done[2 * k - 1]) then
          out[seen_at[k]] = 2
          marked = marked + 1
        else
          same[#same + 1] = k
        end
      end
      if marked < #ids - added then
        for _, k in ipairs(same) do out[seen_at[k]] = 2 end
      end
      bulk('ZADD', Q .. 'done', done)
    end
  end
  bulk('ZADD', Q .. 'archived', archived)
  bulk('ZADD', Q .. 'ready', queued)
  bulk('ZADD', Q .. 'delayed', delayed)
  counts(Q, delta, true)
  if ready then wake(Q) end
  return out
end

-- ARGV: now, lease_ms, then id, token pairs. Returns 1/0 per lease.
local function extend(keys, args)
  local Q = keys[1]
  local expires = s(tonumber(args[1]) + tonumber(args[2]))
  local out = {}
  local active = {}
  local i = 3
  while i <= #args do
    local id, tok = args[i], args[i + 1]
    i = i + 2
    local T = Q .. 't:' .. id
    local cur = redis.pcall('HMGET', T, 's', 'tok')
    if cur.err then cur = damage(cur) end
    if not failed(cur) and cur[1] == 'active' and cur[2] == tok then
      redis.call('HSET', T, 'lx', expires)
      active[#active + 1] = expires; active[#active + 1] = id
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  bulk('ZADD', Q .. 'active', active)
  return out
end

-- ARGV: now, limit. Moves due scheduled/retry tasks to pending.
-- Returns {moved, next_due or ''}.
local function forward(keys, args)
  local Q = keys[1]
  local now = tonumber(args[1])
  local nows = s(now)
  local ids = redis.call('ZRANGEBYSCORE', Q .. 'delayed', '-inf', nows, 'LIMIT', 0, tonumber(args[2]))
  local moved = 0
  local delta = {scheduled = 0, retry = 0, pending = 0}
  if #ids > 0 then bulk('ZREM', Q .. 'delayed', ids) end
  for _, id in ipairs(ids) do
    local T = Q .. 't:' .. id
    local st = tolerant('HGET', T, 's')
    if st == 'scheduled' or st == 'retry' then
      redis.call('HSET', T, 's', 'pending', 'upd', nows)
      delta[st] = delta[st] - 1
      delta.pending = delta.pending + 1
      moved = moved + 1
    end
  end
  counts(Q, delta, true)
  if moved > 0 then wake(Q) end
  local nxt = redis.call('ZRANGE', Q .. 'delayed', 0, 0, 'WITHSCORES')
  local due = ''
  if #nxt > 0 then due = nxt[2] end
  return {moved, due}
end

-- ARGV: now, limit. Expired leases: retry (due now) or archive `exhausted`.
-- A task whose attempts or max retries are not numbers (an edited hash) is
-- quarantined: archived `integrity`, its id returned so the caller can
-- count and log it. A task key that is not a hash leaves the active set.
-- Returns {retried, archived, scanned, quarantined ids...}.
local function recover(keys, args)
  local Q = keys[1]
  local now = tonumber(args[1])
  local nows = s(now)
  local ids = redis.call('ZRANGEBYSCORE', Q .. 'active', '-inf', nows, 'LIMIT', 0, tonumber(args[2]))
  local retried, archived = 0, 0
  local bad = {}
  for _, id in ipairs(ids) do
    local T = Q .. 't:' .. id
    local cur = tolerant('HMGET', T, 's', 'a', 'mr', 'uk')
    redis.call('ZREM', Q .. 'active', id)
    if failed(cur) then
      warn('set aside ' .. T .. ' at lease recovery: not a hash')
    elseif cur[1] == 'active' and not (tonumber(cur[2]) and tonumber(cur[3])) then
      clear_lease(T)
      local a = cur[2]
      if not tonumber(a) then a = '0' end
      redis.call('HSET', T, 's', 'archived', 'ar', 'integrity', 'a', a, 'fin', nows, 'upd', nows)
      redis.call('ZADD', Q .. 'archived', nows, id)
      release_unique(Q, id, cur[4])
      incr(Q, 'active', -1)
      incr(Q, 'archived', 1)
      bad[#bad + 1] = id
    elseif cur[1] == 'active' then
      clear_lease(T)
      incr(Q, 'active', -1)
      if tonumber(cur[2]) > tonumber(cur[3]) then
        redis.call('HSET', T, 's', 'archived', 'ar', 'exhausted', 'fin', nows, 'upd', nows)
        redis.call('ZADD', Q .. 'archived', nows, id)
        release_unique(Q, id, cur[4])
        incr(Q, 'archived', 1)
        archived = archived + 1
      else
        redis.call('HSET', T, 's', 'retry', 'r', nows, 'upd', nows)
        redis.call('ZADD', Q .. 'ready', nows, id)
        redis.call('ZADD', Q .. 'delayed', nows, id)
        incr(Q, 'retry', 1)
        retried = retried + 1
      end
    end
  end
  if retried > 0 then wake(Q) end
  local out = {retried, archived, #ids}
  for _, id in ipairs(bad) do out[#out + 1] = id end
  return out
end

-- ARGV: now, limit, replay_horizon_ms, archive_max_count, archive_max_age_ms
-- (the caps: -1 for none). Deletes completed tasks past their retention;
-- trims archived tasks beyond the caps (oldest first; counted in the queue's
-- `n` hash as `trimmed`, never silently); forgets replay memory older than
-- the horizon whose task key is gone (an id whose task is still stored is
-- kept, its time renewed). Every id leaving Q..'done' joins Q..'seen',
-- whatever its hash's state says (it completed; an edited state must not
-- let it escape the replay memory); only completed tasks are deleted.
-- Returns {purged, scanned, trimmed, more to trim (0/1), forgotten ids...}
-- (forgotten ids only without G).
local function purge(keys, args)
  local Q, G = keys[1], keys[2]
  local now, limit = tonumber(args[1]), tonumber(args[2])
  local max_count, max_age = tonumber(args[4] or '-1'), tonumber(args[5] or '-1')
  local ids = redis.call('ZRANGEBYSCORE', Q .. 'done', '-inf', s(now), 'LIMIT', 0, limit)
  local purged = 0
  local forget, seen, gone, left = {}, {}, {}, {}
  local nows = s(now)
  if #ids > 0 then bulk('ZREM', Q .. 'done', ids) end
  for _, id in ipairs(ids) do
    local T = Q .. 't:' .. id
    -- Remembered from now on for the replay horizon.
    seen[#seen + 1] = nows; seen[#seen + 1] = id
    if tolerant('HGET', T, 's') == 'completed' then
      gone[#gone + 1] = T; gone[#gone + 1] = Q .. 'b:' .. id
      left[#left + 1] = id
      purged = purged + 1
    end
  end
  local i = 1
  while i <= #seen do
    local j = math.min(i + CHUNK - 1, #seen)
    if failed(tolerant('ZADD', Q .. 'seen', unpack(seen, i, j))) then
      -- (An edited key: dequeue fails closed on it, see there.)
      warn('did not remember purged ids: ' .. Q .. 'seen is not a zset')
      break
    end
    i = j + 1
  end
  if purged > 0 then
    del_all(gone)
    bulk('ZREM', Q .. 'all', left)
    incr(Q, 'completed', -purged)
  end
  -- Archive caps: past the age first, then the oldest beyond the count.
  local trim = {}
  local more = 0
  if max_age >= 0 then
    trim = redis.call('ZRANGEBYSCORE', Q .. 'archived', '-inf', '(' .. s(now - max_age), 'LIMIT', 0, limit)
    if #trim >= limit then more = 1 end
  end
  if max_count >= 0 and #trim < limit then
    local over = redis.call('ZCARD', Q .. 'archived') - #trim - max_count
    if over > 0 then
      local take = math.min(over, limit - #trim)
      if take < over then more = 1 end
      local extra = redis.call('ZRANGE', Q .. 'archived', #trim, #trim + take - 1)
      for _, id in ipairs(extra) do trim[#trim + 1] = id end
    end
  end
  local trimmed = 0
  for _, id in ipairs(trim) do
    local T = Q .. 't:' .. id
    redis.call('ZREM', Q .. 'archived', id)
    local cur = tolerant('HMGET', T, 's', 'uk')
    if failed(cur) then cur = {} end
    if cur[1] == 'archived' then
      redis.call('DEL', T, Q .. 'b:' .. id)
      redis.call('ZREM', Q .. 'all', id)
      release_unique(Q, id, cur[2])
      trimmed = trimmed + 1
      if not (tolerant('ZSCORE', Q .. 'seen', id) or redis.call('ZSCORE', Q .. 'done', id)) then
        if G then redis.call('HDEL', G .. 'ids', id) else forget[#forget + 1] = id end
      end
    end
  end
  if trimmed > 0 then
    incr(Q, 'archived', -trimmed)
    incr(Q, 'trimmed', trimmed)
  end
  local out = {purged, #ids, trimmed, more}
  local old = redis.call('ZRANGEBYSCORE', Q .. 'seen', '-inf', '(' .. s(now - tonumber(args[3])), 'LIMIT', 0, limit)
  for _, id in ipairs(old) do
    if redis.call('EXISTS', Q .. 't:' .. id) == 1 then
      -- Still stored (a task whose state was edited after it completed, or
      -- one put back after it was deleted): remembered while it exists, so
      -- flipping its state back cannot make it run. Looked at again one
      -- horizon later.
      redis.call('ZADD', Q .. 'seen', nows, id)
    else
      redis.call('ZREM', Q .. 'seen', id)
      if G then
        redis.call('HDEL', G .. 'ids', id)
      else
        forget[#forget + 1] = id
      end
    end
  end
  for _, id in ipairs(forget) do out[#out + 1] = id end
  return out
end

-- Delete one task in state `st`. Its id joins the replay memory, whatever
-- the state (finding 2 of the security review): a completed task ran and
-- must not come back; an operator deleted (or erased) the others, which
-- must not run if their keys are put back. `now` as a string. Returns
-- whether the id is remembered (not when Q..'seen' is damaged).
local function remove_task(Q, id, st, uk, nows)
  for _, z in ipairs({'ready', 'delayed', 'active', 'done', 'archived', 'all'}) do
    redis.call('ZREM', Q .. z, id)
  end
  release_unique(Q, id, uk)
  -- (A state that is not one, from an edited hash, is counted nowhere.)
  if STATES[st] then incr(Q, st, -1) end
  redis.call('DEL', Q .. 't:' .. id, Q .. 'b:' .. id)
  if failed(tolerant('ZADD', Q .. 'seen', 'GT', nows, id)) then
    warn('did not remember deleted id ' .. id .. ': ' .. Q .. 'seen is not a zset')
    return false
  end
  return true
end

-- ARGV: now, ids. Deletes tasks in any state. Returns {count, unindexed
-- ids...} (ids only without G: those the global index should forget).
local function delete(keys, args)
  local Q, G = keys[1], keys[2]
  local nows = args[1]
  local out = {0}
  for i = 2, #args do
    local id = args[i]
    local cur = tolerant('HMGET', Q .. 't:' .. id, 's', 'uk')
    -- A task key that is not a hash (an edited key) is deleted all the same.
    if failed(cur) then cur = {'', false} end
    if cur[1] then
      local remembered = remove_task(Q, id, cur[1], cur[2], nows)
      out[1] = out[1] + 1
      if not remembered then
        if G then redis.call('HDEL', G .. 'ids', id) else out[#out + 1] = id end
      end
    end
  end
  return out
end

-- ARGV: now, ids. Archived tasks back to pending with attempts 0.
local function rerun(keys, args)
  local Q = keys[1]
  local nows = args[1]
  local n = 0
  for i = 2, #args do
    local id = args[i]
    local T = Q .. 't:' .. id
    if tolerant('HGET', T, 's') == 'archived' then
      redis.call('HSET', T, 's', 'pending', 'a', '0', 'r', nows, 'upd', nows)
      redis.call('HDEL', T, 'ar', 'fin')
      redis.call('ZREM', Q .. 'archived', id)
      redis.call('ZADD', Q .. 'ready', nows, id)
      incr(Q, 'archived', -1)
      incr(Q, 'pending', 1)
      n = n + 1
    end
  end
  if n > 0 then wake(Q) end
  return n
end

-- ARGV: queue, '1' to pause or '0' to resume.
local function pause(keys, args)
  local Q, G = keys[1], keys[2]
  if args[2] == '1' then
    redis.call('HSETNX', Q .. 'flags', 'paused', '1')
    if G then
      redis.call('SADD', G .. 'paused', args[1])
      redis.call('SADD', G .. 'queues', args[1])
    end
  else
    if redis.call('HDEL', Q .. 'flags', 'paused') > 0 then wake(Q) end
    if G then redis.call('SREM', G .. 'paused', args[1]) end
  end
  return 1
end

-- Cap a queue's waiting tasks (enqueue refuses tasks beyond it).
-- KEYS: Q (and G on a single node). ARGV: queue, the cap on waiting tasks
-- or '' to remove it.
local function limit(keys, args)
  local Q, G = keys[1], keys[2]
  local n = tonumber(args[2])
  if args[2] == '' then
    redis.call('HDEL', Q .. 'n', 'maxdepth')
  elseif n and n >= 0 and n == math.floor(n) then
    redis.call('HSET', Q .. 'n', 'maxdepth', args[2])
    if G then redis.call('SADD', G .. 'queues', args[1]) end
  else
    return redis.error_reply('ERR sealq_limit: the cap must be a whole number or empty')
  end
  return 1
end

-- Rate-limit a queue's leases (Broker::set_rate_limit): KEYS: Q (and G on
-- a single node). ARGV: queue, limit and period ms, or '' '' to remove it.
-- A new limit starts with a full bucket.
local function rate(keys, args)
  local Q, G = keys[1], keys[2]
  if args[2] == '' then
    if redis.call('HDEL', Q .. 'flags', 'rl', 'rp', 'rt', 'ra') > 0 then wake(Q) end
    return 1
  end
  local n, p = tonumber(args[2]), tonumber(args[3])
  if not (n and p and n >= 1 and p >= 1 and n == math.floor(n) and p == math.floor(p)) then
    return redis.error_reply('ERR sealq_rate: limit and period must be whole numbers of at least 1')
  end
  redis.call('HSET', Q .. 'flags', 'rl', args[2], 'rp', args[3])
  redis.call('HDEL', Q .. 'flags', 'rt', 'ra')
  if G then redis.call('SADD', G .. 'queues', args[1]) end
  return 1
end

-- Global registry (KEYS[1] = G). ARGV: op, then values.
-- op 'index': queue, ids... -> per id 1 if claimed, 0 if already indexed.
-- op 'unindex': ids...; op 'queue': queue, paused flag ('1', '0' or '').
local function registry(keys, args)
  local G = keys[1]
  local op = args[1]
  if op == 'index' then
    local out = {}
    for i = 3, #args do
      out[#out + 1] = redis.call('HSETNX', G .. 'ids', args[i], args[2])
    end
    redis.call('SADD', G .. 'queues', args[2])
    return out
  elseif op == 'unindex' then
    for i = 2, #args do redis.call('HDEL', G .. 'ids', args[i]) end
    return #args - 1
  elseif op == 'queue' then
    redis.call('SADD', G .. 'queues', args[2])
    if args[3] == '1' then redis.call('SADD', G .. 'paused', args[2]) end
    if args[3] == '0' then redis.call('SREM', G .. 'paused', args[2]) end
    return 1
  end
  return redis.error_reply('unknown registry op')
end

-- Read-only -------------------------------------------------------------

-- KEYS[1] = G. ARGV: ids. Returns the queue of each id, or false.
local function locate(keys, args)
  if #args == 0 then return {} end
  return redis.call('HMGET', keys[1] .. 'ids', unpack(args))
end

-- KEYS[1] = G. Returns {queues, paused}.
local function queues(keys, args)
  return {redis.call('SMEMBERS', keys[1] .. 'queues'), redis.call('SMEMBERS', keys[1] .. 'paused')}
end

-- KEYS[1] = Q. Returns {paused, counts hgetall}.
-- (Keys of the wrong type read as empty: stats of the other queues go on.)
local function stats(keys, args)
  local Q = keys[1]
  local paused = tolerant('HEXISTS', Q .. 'flags', 'paused')
  local n = tolerant('HGETALL', Q .. 'n')
  local rate = tolerant('HMGET', Q .. 'flags', 'rl', 'rp')
  if failed(paused) then paused = 0 end
  if failed(n) then n = {} end
  if failed(rate) then rate = {} end
  return {paused, n, rate}
end

-- A task's hash and stored bytes for the read-only functions; a key of the
-- wrong type (an edited key) reads as a marker the caller reports as a
-- task that does not decode: the hash as {'!', 'wrongtype'}, the bytes as
-- nil.
local function hash_of(T)
  local h = tolerant('HGETALL', T)
  if failed(h) then return {'!', 'wrongtype'} end
  return h
end

local function bytes_of(B)
  local b = tolerant('GET', B)
  if failed(b) then return false end
  return b
end

-- KEYS[1] = Q. ARGV: ids. Returns per id {id, hgetall (maybe empty),
-- stored bytes or nil}.
local function get(keys, args)
  local Q = keys[1]
  local out = {}
  for i, id in ipairs(args) do
    out[i] = {id, hash_of(Q .. 't:' .. id), bytes_of(Q .. 'b:' .. id)}
  end
  return out
end

-- The set holding every task of a state, where there is one of its own
-- (pending tasks share Q..'ready' with scheduled and retry ones).
local STATE_SET = {scheduled = 'delayed', retry = 'delayed', active = 'active',
  completed = 'done', archived = 'archived'}

-- At most this many ids of a state's set are read and sorted in one call;
-- a larger set is listed by walking Q..'all' as for any other filter.
local SORT_AT_MOST = 4096

-- KEYS[1] = Q. ARGV: after ('' for none), limit, state ('' any), subject ('' any).
-- Returns up to limit {id, hgetall, stored bytes or nil} in id order.
-- A state with a set of its own that holds at most SORT_AT_MOST ids is
-- listed from that set (a worker's keyring check asks for the first
-- scheduled and retry tasks of its queues at start: walking a backlog of
-- 100,000 pending tasks to find none cost two full scans, 200,000 HGETs,
-- each blocking Redis for the whole walk). A task is listed when its set
-- and its hash agree on the state; one whose hash was edited to a state
-- whose set does not hold it is not (it is not leased, recovered or
-- purged as that state either).
local function list(keys, args)
  local Q = keys[1]
  local after, limit, state, sub = args[1], tonumber(args[2]), args[3], args[4]
  local out = {}
  local z = STATE_SET[state]
  if z and redis.call('ZCARD', Q .. z) <= SORT_AT_MOST then
    local ids = redis.call('ZRANGE', Q .. z, 0, -1)
    table.sort(ids)
    for _, id in ipairs(ids) do
      if #out >= limit then break end
      if after == '' or id > after then
        local T = Q .. 't:' .. id
        if tolerant('HGET', T, 's') == state and (sub == '' or tolerant('HGET', T, 'sub') == sub) then
          local h = hash_of(T)
          if #h > 0 then out[#out + 1] = {id, h, bytes_of(Q .. 'b:' .. id)} end
        end
      end
    end
    return out
  end
  local lo = '-'
  if after ~= '' then lo = '(' .. after end
  while #out < limit do
    local ids = redis.call('ZRANGEBYLEX', Q .. 'all', lo, '+', 'LIMIT', 0, 256)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local T = Q .. 't:' .. id
      local ok = true
      if state ~= '' and tolerant('HGET', T, 's') ~= state then ok = false end
      if ok and sub ~= '' and tolerant('HGET', T, 'sub') ~= sub then ok = false end
      if ok then
        local h = hash_of(T)
        if #h > 0 then out[#out + 1] = {id, h, bytes_of(Q .. 'b:' .. id)} end
        if #out >= limit then break end
      end
    end
    lo = '(' .. ids[#ids]
  end
  return out
end

local ro = {'no-writes'}
redis.register_function{function_name = 'sealq_version', callback = version, flags = ro}
redis.register_function{function_name = 'sealq_enqueue', callback = enqueue, flags = {}}
redis.register_function{function_name = 'sealq_enqueue_inline', callback = enqueue_inline, flags = {}}
redis.register_function{function_name = 'sealq_dequeue', callback = dequeue, flags = {}}
redis.register_function{function_name = 'sealq_ack', callback = ack, flags = {}}
redis.register_function{function_name = 'sealq_extend', callback = extend, flags = {}}
redis.register_function{function_name = 'sealq_forward', callback = forward, flags = {}}
redis.register_function{function_name = 'sealq_recover', callback = recover, flags = {}}
redis.register_function{function_name = 'sealq_purge', callback = purge, flags = {}}
redis.register_function{function_name = 'sealq_delete', callback = delete, flags = {}}
redis.register_function{function_name = 'sealq_rerun', callback = rerun, flags = {}}
redis.register_function{function_name = 'sealq_pause', callback = pause, flags = {}}
redis.register_function{function_name = 'sealq_limit', callback = limit, flags = {}}
redis.register_function{function_name = 'sealq_rate', callback = rate, flags = {}}
redis.register_function{function_name = 'sealq_registry', callback = registry, flags = {}}
redis.register_function{function_name = 'sealq_locate', callback = locate, flags = ro}
redis.register_function{function_name = 'sealq_queues', callback = queues, flags = ro}
redis.register_function{function_name = 'sealq_stats', callback = stats, flags = ro}
redis.register_function{function_name = 'sealq_get', callback = get, flags = ro}
redis.register_function{function_name = 'sealq_list', callback = list, flags = ro}

-- Erasure (right to erasure) ---------------------------------------------

-- KEYS[1] = Q (KEYS[2] = G on standalone servers). ARGV: now, subject tag
-- (hex), after ('' to start), limit. Looks at up to `limit` ids of the queue
-- after `after`, in id order. The subject's tasks are deleted with their
-- results and unique keys, except active ones: those are archived with
-- reason `erased`, their envelope, result and error wiped and their lease
-- revoked (the holder's ack and extension find no lease; recovery never
-- sees them). Returns {scheduled, pending, active, retry, completed,
-- archived, scanned, last id scanned or '', unindexed ids...} (ids only
-- without G: those the global index should forget).
-- Keep a task's kind and metadata, drop its envelope (layout in codec.rs:
-- version byte, u16 kind length, kind, u32 metadata length, metadata,
-- envelope). Bytes that do not parse are deleted whole.
local function wipe_envelope(B)
  local b = tolerant('GET', B)
  if type(b) ~= 'string' then
    if b then redis.call('DEL', B) end
    return
  end
  if #b >= 7 and string.byte(b, 1) == 1 then
    local kl = string.byte(b, 2) * 256 + string.byte(b, 3)
    local m = 4 + kl
    if #b >= m + 3 then
      local ml = ((string.byte(b, m) * 256 + string.byte(b, m + 1)) * 256
        + string.byte(b, m + 2)) * 256 + string.byte(b, m + 3)
      local keep = m + 3 + ml
      if #b >= keep then
        redis.call('SET', B, string.sub(b, 1, keep))
        return
      end
    end
  end
  redis.call('DEL', B)
end

local function erase(keys, args)
  local Q, G = keys[1], keys[2]
  local nows, sub, after, limit = args[1], args[2], args[3], tonumber(args[4])
  local lo = '-'
  if after ~= '' then lo = '(' .. after end
  local ids = redis.call('ZRANGEBYLEX', Q .. 'all', lo, '+', 'LIMIT', 0, limit)
  local n = {scheduled = 0, pending = 0, active = 0, retry = 0, completed = 0, archived = 0}
  local forget = {}
  for _, id in ipairs(ids) do
    local T = Q .. 't:' .. id
    local cur = tolerant('HMGET', T, 's', 'sub', 'uk')
    if failed(cur) then cur = {} end
    if cur[1] and cur[2] == sub then
      local st = cur[1]
      if n[st] then n[st] = n[st] + 1 else n.archived = n.archived + 1 end
      if st == 'active' then
        clear_lease(T)
        redis.call('HDEL', T, 'res', 'le')
        wipe_envelope(Q .. 'b:' .. id)
        redis.call('HSET', T, 's', 'archived', 'ar', 'erased', 'fin', nows, 'upd', nows)
        redis.call('ZREM', Q .. 'active', id)
        redis.call('ZADD', Q .. 'archived', nows, id)
        release_unique(Q, id, cur[3])
        incr(Q, 'active', -1)
        incr(Q, 'archived', 1)
      else
        if not remove_task(Q, id, st, cur[3], nows) then
          if G then redis.call('HDEL', G .. 'ids', id) else forget[#forget + 1] = id end
        end
      end
    end
  end
  local last = ''
  if #ids > 0 then last = ids[#ids] end
  local out = {n.scheduled, n.pending, n.active, n.retry, n.completed, n.archived, #ids, last}
  for _, id in ipairs(forget) do out[#out + 1] = id end
  return out
end

redis.register_function{function_name = 'sealq_erase', callback = erase, flags = {}}

-- Re-sealing (key rotation) ---------------------------------------------

-- Where the envelope starts in a task's stored bytes (layout in codec.rs),
-- or nil if they do not parse.
local function envelope_at(b)
  if #b < 7 or string.byte(b, 1) ~= 1 then return nil end
  local kl = string.byte(b, 2) * 256 + string.byte(b, 3)
  local m = 4 + kl
  if #b < m + 3 then return nil end
  local ml = ((string.byte(b, m) * 256 + string.byte(b, m + 1)) * 256
    + string.byte(b, m + 2)) * 256 + string.byte(b, m + 3)
  local at = m + 4 + ml
  if #b < at - 1 then return nil end
  return at
end

-- KEYS[1] = Q. ARGV: per swap 4 values: id, part ('p' payload envelope, 'r'
-- result, 'e' last error), expected bytes, replacement bytes. A part is
-- replaced only if the task exists in this queue and the part holds exactly
-- the expected bytes; nothing else of the task changes (state, lease,
-- times). Returns 1 (applied) or 0 per swap.
local function swap(keys, args)
  local Q = keys[1]
  local out = {}
  local i = 1
  while i + 3 <= #args do
    local id, part, want, new = args[i], args[i + 1], args[i + 2], args[i + 3]
    i = i + 4
    local T = Q .. 't:' .. id
    local ok = 0
    if redis.call('EXISTS', T) == 1 then
      if part == 'p' then
        local B = Q .. 'b:' .. id
        local b = tolerant('GET', B)
        local at = type(b) == 'string' and envelope_at(b)
        if at and string.sub(b, at) == want then
          redis.call('SET', B, string.sub(b, 1, at - 1) .. new, 'KEEPTTL')
          ok = 1
        end
      elseif part == 'r' or part == 'e' then
        local f = 'res'
        if part == 'e' then f = 'le' end
        if tolerant('HGET', T, f) == want then
          redis.call('HSET', T, f, new)
          ok = 1
        end
      end
    end
    out[#out + 1] = ok
  end
  return out
end

redis.register_function{function_name = 'sealq_swap', callback = swap, flags = {}}

-- Upgrade (admin) ---------------------------------------------------------

-- KEYS[1] = Q. ARGV: after ('' to start), limit. Moves tasks stored by
-- library version 4 (type `k`, metadata `m` and envelope `e` in the task
-- hash, queue in `q`) to this version's layout: the bytes into Q..'b:'..id
-- (codec.rs layout: version 1, u16 type length, type, u32 metadata length,
-- metadata, envelope; the envelope byte for byte), the old fields dropped.
-- Looks at up to `limit` ids after `after` in id order; tasks already in
-- this layout are left alone, so running it again is harmless.
-- Returns {scanned, migrated, last id scanned or ''}.
local function u16(n)
  return string.char(math.floor(n / 256) % 256, n % 256)
end

local function u32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end

local function migrate(keys, args)
  local Q = keys[1]
  local after, limit = args[1], tonumber(args[2])
  local lo = '-'
  if after ~= '' then lo = '(' .. after end
  local ids = redis.call('ZRANGEBYLEX', Q .. 'all', lo, '+', 'LIMIT', 0, limit)
  local migrated = 0
  for _, id in ipairs(ids) do
    local T = Q .. 't:' .. id
    local cur = redis.call('HMGET', T, 'k', 'm', 'e')
    if cur[1] and cur[2] and cur[3] then
      redis.call('SET', Q .. 'b:' .. id,
        '\1' .. u16(#cur[1]) .. cur[1] .. u32(#cur[2]) .. cur[2] .. cur[3])
      redis.call('HDEL', T, 'q', 'k', 'm', 'e', 'w')
      migrated = migrated + 1
    end
  end
  local last = ''
  if #ids > 0 then last = ids[#ids] end
  return {#ids, migrated, last}
end

redis.register_function{function_name = 'sealq_migrate', callback = migrate, flags = {}}

-- Re-wrapping a subject key after a key rotation (`sealq keys reseal`): a
-- compare-and-swap, so a key destroyed by an erasure meanwhile stays
-- destroyed, and one created anew for the subject is not overwritten.
-- KEYS[1]: one wrapped subject key (under the subject key prefix, which
-- may be on a Redis of its own). ARGV: the bytes expected there, the bytes
-- to put instead. Returns 1 when replaced, 0 otherwise.
local function key_swap(keys, args)
  if #args ~= 2 then
    return redis.error_reply('ERR sealq_key_swap: malformed arguments')
  end
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('SET', keys[1], args[2])
    return 1
  end
  return 0
end

redis.register_function{function_name = 'sealq_key_swap', callback = key_swap, flags = {}}

-- Erasing checked tasks (finding 6 of the security review) ----------------

-- KEYS[1] = Q (KEYS[2] = G on standalone servers). ARGV: now, ids. Erases
-- exactly these tasks of the queue, which the client checked belong to the
-- subject (their envelope authenticates with the subject's key and tag):
-- as sealq_erase does for a subject tag, deleted in every state but
-- active, active ones archived `erased` with envelope, result and error
-- wiped and lease revoked. Ids not stored are skipped. Returns {scheduled,
-- pending, active, retry, completed, archived, unindexed ids...} (ids only
-- without G: those the global index should forget).
local function erase_ids(keys, args)
  local Q, G = keys[1], keys[2]
  local nows = args[1]
  local n = {scheduled = 0, pending = 0, active = 0, retry = 0, completed = 0, archived = 0}
  local forget = {}
  for i = 2, #args do
    local id = args[i]
    local T = Q .. 't:' .. id
    local cur = tolerant('HMGET', T, 's', 'uk')
    -- A task key that is not a hash (an edited key) is erased all the same.
    if failed(cur) then cur = {'', false} end
    if cur[1] then
      local st = cur[1]
      if n[st] then n[st] = n[st] + 1 else n.archived = n.archived + 1 end
      if st == 'active' then
        clear_lease(T)
        redis.call('HDEL', T, 'res', 'le')
        wipe_envelope(Q .. 'b:' .. id)
        redis.call('HSET', T, 's', 'archived', 'ar', 'erased', 'fin', nows, 'upd', nows)
        redis.call('ZREM', Q .. 'active', id)
        redis.call('ZADD', Q .. 'archived', nows, id)
        release_unique(Q, id, cur[2])
        incr(Q, 'active', -1)
        incr(Q, 'archived', 1)
      elseif not remove_task(Q, id, st, cur[2], nows) then
        if G then redis.call('HDEL', G .. 'ids', id) else forget[#forget + 1] = id end
      end
    end
  end
  local out = {n.scheduled, n.pending, n.active, n.retry, n.completed, n.archived}
  for _, id in ipairs(forget) do out[#out + 1] = id end
  return out
end

redis.register_function{function_name = 'sealq_erase_ids', callback = erase_ids, flags = {}}
