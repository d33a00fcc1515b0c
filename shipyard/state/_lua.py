"""The Lua scripts of the Redis state: each one multi-key operation, atomic on the server.

They read the clock with ``redis.call('TIME')`` (server time: replicas' clocks never meet), which needs
effect replication (the default since Redis 5, the only mode since 7). Floats go back to Python as
strings because Redis truncates Lua numbers to integers; integers computed here are written with
``%d`` so a large one never turns into ``1e+15``, which HINCRBY would refuse.
"""

from __future__ import annotations

# Rate-limit buckets are hashes {tokens, ts}; a bucket expires when it would be full again, so an absent
# bucket is a full one. Budgets are hashes {spent, reserved}, whose expiry is set once, at creation.
#
# One call's admission, in one round trip: take from every bucket and reserve ``amount`` on every budget,
# all or nothing (when a bucket lacks room or a hard budget would pass its limit, nothing changes).
# KEYS: buckets (ARGV[1] of them), then budgets. ARGV: n, amount; per bucket capacity, per_s, cost; per
# budget limit, hard ('1'/'0'), ttl_s. Returns {0, spent+reserved before, per budget} when admitted,
# {1, retry_after ('-1': never), denied bucket indexes (1-based)} or {2, refused budget index, used...}.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local level = {}
local denied = {}
local wait = 0
for i = 1, n do
  local key = KEYS[i]
  local cap, rate, cost = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local l = level[key]
  if l == nil then
    local h = redis.call('HMGET', key, 'tokens', 'ts')
    if h[1] then
      l = math.min(cap, tonumber(h[1]) + math.max(0, now - tonumber(h[2])) * rate)
    else
      l = cap
    end
  end
  if l >= cost then
    level[key] = l - cost
  else
    level[key] = l
    denied[#denied + 1] = i
    if wait and cost <= cap and rate > 0 then
      wait = math.max(wait, (cost - l) / rate)
    else
      wait = false
    end
  end
end
if #denied > 0 then
  return {1, tostring(wait or -1), unpack(denied)}
end
local base = 3 + 3 * n
local used = {}
local refused = 0
for j = 1, #KEYS - n do
  local h = redis.call('HMGET', KEYS[n + j], 'spent', 'reserved')
  local u = tonumber(h[1] or '0') + tonumber(h[2] or '0')
  used[j] = u
  local a = base + 3 * (j - 1)
  if refused == 0 and ARGV[a + 1] == '1' and u + amount > tonumber(ARGV[a]) then
    refused = j
  end
end
if refused > 0 then
  return {2, refused, unpack(used)}
end
for i = 1, n do
  local key = KEYS[i]
  local cap, rate = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  redis.call('HSET', key, 'tokens', level[key], 'ts', now)
  local ms = 86400000
  if rate > 0 then ms = math.ceil((cap - level[key]) / rate * 1000) + 1000 end
  redis.call('PEXPIRE', key, ms)
end
for j = 1, #KEYS - n do
  local key = KEYS[n + j]
  redis.call('HINCRBY', key, 'reserved', ARGV[2])
  if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[base + 3 * (j - 1) + 2]) end
end
return {0, unpack(used)}
"""

# After a call, in one round trip: debit each bucket unconditionally (a negative cost refunds, capped at the
# capacity; a level below zero delays later takes), release each budget's reservation (never below zero)
# and add the actual cost to spent. KEYS: buckets (ARGV[1] of them), then budgets. ARGV: n, actual; per
# bucket capacity, per_s, cost; per budget release, ttl_s.
FINISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
for i = 1, n do
  local key = KEYS[i]
  local cap, rate, cost = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local h = redis.call('HMGET', key, 'tokens', 'ts')
  local l = cap
  if h[1] then l = math.min(cap, tonumber(h[1]) + math.max(0, now - tonumber(h[2])) * rate) end
  l = math.min(cap, l - cost)
  redis.call('HSET', key, 'tokens', l, 'ts', now)
  local ms = 86400000
  if rate > 0 then ms = math.ceil((cap - l) / rate * 1000) + 1000 end
  redis.call('PEXPIRE', key, ms)
end
local base = 3 + 3 * n
for j = 1, #KEYS - n do
  local key = KEYS[n + j]
  local a = base + 2 * (j - 1)
  local held = tonumber(redis.call('HGET', key, 'reserved') or '0')
  local dec = math.min(held, tonumber(ARGV[a]))
  if dec > 0 then redis.call('HINCRBY', key, 'reserved', string.format('%d', -dec)) end
  if ARGV[2] ~= '0' then redis.call('HINCRBY', key, 'spent', ARGV[2]) end
  if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[a + 1]) end
end
return 1
"""

# KEYS[1]: the namespace's stream; ARGV: max entries, entry, vector bytes, ttl_ms. The stream lives as
# long as its longest-lived entry; entries past their ttl are skipped by the readers.
VECTORS_ADD = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2], 'v', ARGV[3], 't', ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return id
"""

# The circuit breaker of shipyard.state._breaker.CircuitBreaker, step for step, shared by every process.
# KEYS[1]: hash {state (0 closed, 1 open, 2 half-open), gen, opened, inflight, e<i>, c<i>, f<i>}.
# ARGV: op ('admit' | 'record' | 'release' | 'ok'), ticket ('' = none), success ('1'/'0'; for 'ok': how
#       many successes, counted at once while closed), failure_ratio,
#       min_calls, window_s, cooldown_s, probes, buckets, ttl_s.
# Returns {state, gen, ms left of the cooldown, ticket (-1: none)}.
# The generation starts at the server time in ms, not 0: a breaker whose hash expired or was lost comes
# back with a higher generation, so mirrors (which only move forward) and old tickets stay correct.
BREAKER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key, op, ticket = KEYS[1], ARGV[1], ARGV[2]
local ratio, min_calls, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cooldown, probes, n, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local h = {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local state = tonumber(h.state or '0')
local gen = tonumber(h.gen or '-1')
local opened = tonumber(h.opened or '0')
local inflight = tonumber(h.inflight or '0')
local dirty = false
if gen < 0 then gen = math.floor(now * 1000); dirty = true end
local e, c, f = {}, {}, {}
for i = 0, n - 1 do
  e[i] = tonumber(h['e' .. i] or '-1')
  c[i] = tonumber(h['c' .. i] or '0')
  f[i] = tonumber(h['f' .. i] or '0')
end
local function open()
  gen = gen + 1; state = 1; opened = now; inflight = 0; dirty = true
end
local function close()
  gen = gen + 1; state = 0; dirty = true
  for i = 0, n - 1 do e[i] = -1; c[i] = 0; f[i] = 0 end
end
if state == 1 and now - opened >= cooldown then
  state = 2; inflight = 0; gen = gen + 1; dirty = true
end
local granted = -1
local current = ticket == '' or tonumber(ticket) == gen
if op == 'admit' then
  if state == 0 then
    granted = gen
  elseif state == 2 and inflight < probes then
    inflight = inflight + 1; granted = gen; dirty = true
  end
elseif op == 'release' then
  if current and state == 2 and inflight > 0 then inflight = inflight - 1; dirty = true end
elseif op == 'ok' and current and state == 0 then
  -- successes counted in a batch (ARGV[3] of them): no verdict is due on a success while closed
  local epoch = math.floor(now / (window / n))
  local i = epoch % n
  if e[i] ~= epoch then e[i] = epoch; c[i] = 0; f[i] = 0 end
  c[i] = c[i] + tonumber(ARGV[3])
  dirty = true
elseif op == 'record' and current then
  if state == 2 then
    inflight = math.max(0, inflight - 1)
    if ARGV[3] == '1' then close() else open() end
  elseif state == 0 then
    local epoch = math.floor(now / (window / n))
    local i = epoch % n
    if e[i] ~= epoch then e[i] = epoch; c[i] = 0; f[i] = 0 end
    c[i] = c[i] + 1
    dirty = true
    if ARGV[3] ~= '1' then
      f[i] = f[i] + 1
      local oldest, calls, fails = epoch - n + 1, 0, 0
      for j = 0, n - 1 do
        if e[j] >= oldest then calls = calls + c[j]; fails = fails + f[j] end
      end
      if calls >= min_calls and fails >= ratio * calls then open() end
    end
  end
end
if dirty then
  local fields = {'state', state, 'gen', string.format('%d', gen), 'opened', string.format('%.6f', opened),
                  'inflight', inflight}
  for i = 0, n - 1 do
    fields[#fields + 1] = 'e' .. i; fields[#fields + 1] = string.format('%d', e[i])
    fields[#fields + 1] = 'c' .. i; fields[#fields + 1] = c[i]
    fields[#fields + 1] = 'f' .. i; fields[#fields + 1] = f[i]
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('EXPIRE', key, ttl)
end
local left = 0
if state == 1 then left = math.max(0, math.ceil((opened + cooldown - now) * 1000)) end
return {state, gen, left, granted}
"""
