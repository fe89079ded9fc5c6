-- quizworker enqueue script, protocol version 1 (docs/PROTOCOL.md).
-- Call: EVAL <this script> 0 <redis queue name> <envelope JSON>
--   <redis queue name> is the key prefix plus the queue, e.g. "quizworker:scoring".
-- Returns: { job id, 1 } when it wrote the job into Redis, or { id of the existing job, 0 } when
-- the envelope's idempotency key (or its id) is already in use on this queue. It sees Redis
-- only: a finished job whose entries maintenance trimmed is written again (docs/PROTOCOL.md 3).
-- Writes the key layout of apalis-redis 1.0 so that its workers take the job.
local queue = ARGV[1]
local raw = ARGV[2]
if not queue or queue == '' or not raw then
  return redis.error_reply('quizworker: usage: EVAL script 0 <queue> <envelope json>')
end

local SURROGATE_ESCAPE = '\\u[dD][89a-fA-F]%x%x'

-- JSON.stringify writes user text cut in the middle of an emoji with a lone surrogate escape
-- ("\ud83d"), which is no character: cjson and the daemon's JSON reader refuse it. Each lone
-- one becomes "\ufffd" (U+FFFD, the replacement character); pairs stay as they are.
local function replace_lone_surrogates(text)
  local at = string.find(text, SURROGATE_ESCAPE)
  if not at then
    return text
  end
  local parts, copied_to = {}, 0
  while at do
    local before = at - 1
    while before >= 1 and string.byte(text, before) == 92 do
      before = before - 1
    end
    local next_at
    if (at - 1 - before) % 2 == 1 then
      -- An escaped backslash followed by "ud83d": text, not an escape.
      next_at = at + 1
    elseif string.find(text, '^\\u[dD][89abAB]%x%x\\u[dD][c-fC-F]%x%x', at) then
      next_at = at + 12
    else
      parts[#parts + 1] = string.sub(text, copied_to + 1, at - 1)
      parts[#parts + 1] = '\\ufffd'
      copied_to = at + 5
      next_at = at + 6
    end
    at = string.find(text, SURROGATE_ESCAPE, next_at)
  end
  parts[#parts + 1] = string.sub(text, copied_to + 1)
  return table.concat(parts)
end

raw = replace_lone_surrogates(raw)
local ok, env = pcall(cjson.decode, raw)
if not ok then
  local reason = tostring(env)
  if string.find(reason, 'too many nested', 1, true) then
    return redis.error_reply('quizworker: the envelope nests arrays and objects deeper than the script\'s JSON decoder allows (cjson: '
      .. reason .. '); the daemon refuses jobs nested deeper than its limits.max_json_depth, 64 by default')
  end
  return redis.error_reply('quizworker: the envelope is not valid JSON (cjson: ' .. reason .. ')')
end
if type(env) ~= 'table' then
  return redis.error_reply('quizworker: the envelope is not a JSON object')
end
if env.v ~= 1 then
  return redis.error_reply('quizworker: envelope field "v" must be 1')
end
local id = env.id
if type(id) ~= 'string' or #id ~= 26 or not string.match(id, '^[0-7][0-9A-HJKMNP-TV-Z]+$') then
  return redis.error_reply('quizworker: envelope field "id" must be a ULID (26 characters, Crockford base32, upper case)')
end
if type(env.kind) ~= 'string' or env.kind == '' then
  return redis.error_reply('quizworker: envelope field "kind" must be a non-empty string')
end
if env.payload == nil then
  return redis.error_reply('quizworker: envelope field "payload" is missing')
end
if type(env.created_at) ~= 'string' then
  return redis.error_reply('quizworker: envelope field "created_at" must be an RFC 3339 time')
end

-- Whole seconds since the Unix epoch of an RFC 3339 time in UTC ("Z" or "+00:00"), or nil.
local function epoch_seconds(ts)
  local y, mo, d, h, mi, s = string.match(ts, '^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)')
  if not y then return nil end
  local rest = string.sub(ts, 20)
  if not (string.match(rest, '^%.%d+[Zz]$') or string.match(rest, '^[Zz]$')
          or string.match(rest, '^%.?%d*%+00:00$')) then
    return nil
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local seconds = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  -- Scheduled scores are whole seconds and due means score <= now: round a fraction up.
  local fraction = string.match(rest, '^%.(%d+)')
  if fraction and tonumber(fraction) > 0 then seconds = seconds + 1 end
  return seconds
end

local run_at = 0
if env.run_at ~= nil and env.run_at ~= cjson.null then
  run_at = type(env.run_at) == 'string' and epoch_seconds(env.run_at) or nil
  if not run_at then
    return redis.error_reply('quizworker: envelope field "run_at" must be an RFC 3339 time in UTC (ending in Z or +00:00)')
  end
end
if env.max_attempts ~= nil and env.max_attempts ~= cjson.null then
  local n = env.max_attempts
  if type(n) ~= 'number' or n < 1 or n > 1000 or n % 1 ~= 0 then
    return redis.error_reply('quizworker: envelope field "max_attempts" must be a whole number from 1 to 1000')
  end
end

if env.webhook ~= nil and env.webhook ~= cjson.null
    and (type(env.webhook) ~= 'string' or env.webhook == '') then
  return redis.error_reply('quizworker: envelope field "webhook" must be a non-empty string')
end

local key = ''
if env.idempotency_key ~= nil and env.idempotency_key ~= cjson.null then
  if type(env.idempotency_key) ~= 'string' or env.idempotency_key == '' then
    return redis.error_reply('quizworker: envelope field "idempotency_key" must be a non-empty string')
  end
  key = env.idempotency_key
  local existing = redis.call('GET', queue .. ':idempotency:' .. key)
  if existing then
    return { existing, 0 }
  end
end

if redis.call('HSETNX', queue .. ':data', id, raw) == 0 then
  return { id, 0 }
end
if key ~= '' then
  redis.call('SET', queue .. ':idempotency:' .. key, id)
end
-- apalis-redis needs these fields to take the job; quizworker keeps its own attempt count and
-- limit in the journal, so its values here do not matter.
redis.call('HSET', queue .. ':meta:' .. id,
  'attempts', 0, 'max_attempts', 25, 'status', 'Pending', 'idempotency_key', key)

local now = tonumber(redis.call('TIME')[1])
if run_at > now then
  redis.call('ZADD', queue .. ':scheduled', run_at, id)
else
  redis.call('RPUSH', queue .. ':active', id)
  redis.call('DEL', queue .. ':signal')
  redis.call('LPUSH', queue .. ':signal', 1)
  redis.call('PUBLISH', 'tasks:' .. queue .. ':active:available', id)
end
-- Tells the daemon a job arrived, so that it journals it as queued or scheduled before a worker
-- takes it (docs/WEB_TIER.md: the status view). Bounded: with no daemon reading for a long
-- while, the oldest notes go, and those jobs enter the journal when a worker takes them.
redis.call('XADD', queue .. ':arrivals', 'MAXLEN', '~', 100000, '*', 'id', id)
return { id, 1 }
