-- quizworker enqueue script, protocol version 1 (docs/PROTOCOL.md).
-- Call: EVAL <this script> 0 <redis queue name> <envelope JSON>
--   <redis queue name> is the key prefix plus the queue, e.g. "quizworker:scoring".
-- Returns: { job id, 1 } for a new job, or { id of the existing job, 0 } when the envelope's
-- idempotency key (or its id) was already used on this queue.
-- Writes the key layout of apalis-redis 1.0 so that its workers take the job.
local queue = ARGV[1]
local raw = ARGV[2]
if not queue or queue == '' or not raw then
  return redis.error_reply('quizworker: usage: EVAL script 0 <queue> <envelope json>')
end

local ok, env = pcall(cjson.decode, raw)
if not ok or type(env) ~= 'table' then
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
return { id, 1 }
