-- wrk script for bench/webhook_ingest.py (read that file's docstring first).
--
--   wrk -t T -c C -d CAP --timeout S -s bench/webhook_ingest.lua URL -- \
--       PREFIX RATE T C_PER_THREAD SLOW_MS OUT
--
-- Thread n (1-based) loads PREFIX-n.tsv: one request per line, four tab-separated
-- fields: request id ("<kind>.<stage>.<thread>.<index>", sent as X-Request-ID, which
-- the app echoes), path, X-Hub-Signature-256 value, JSON body. Every request is
-- built once in init() and sent exactly once.
--
-- RATE is the stage's total target in requests/s (0 = unthrottled). Each thread keeps
-- its own schedule of RATE/T evenly spaced send slots; delay() returns the time left
-- until the next slot (0 once the schedule is behind: the server sets the pace then).
-- When a thread has handed out every request, each connection that asks for more gets
-- a delay it never reaches; once all of the thread's connections are idle and every
-- request is answered, the thread stops (wrk.thread:stop()) and writes OUT.done-<n>:
-- wrk's main thread sleeps for the whole -d whatever its threads do, so the caller
-- sends wrk SIGINT once every thread has written its file (wrk then reports as usual).
--
-- response() matches each answer to its request by the echoed X-Request-ID: per-kind
-- counts of 200 and non-200 answers, status codes, each request's latency (from
-- request() to response(), timed in this script), answers slower than SLOW_MS, and the
-- ids answered 200. done() writes one JSON object to OUT: wrk's totals, its latency
-- percentiles (microseconds; wrk corrects its histogram for coordinated omission, so
-- these differ from the raw latencies) and socket errors (timeouts included), plus
-- every thread's counts, latencies and answered ids.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local NEVER_MS = 1e9  -- an idle connection's "delay": longer than any stage

-- main state ---------------------------------------------------------------------

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

-- thread state -------------------------------------------------------------------

function init(args)
  local prefix = args[1]
  local rate = tonumber(args[2])
  local thread_count = tonumber(args[3])
  connections = tonumber(args[4])
  slow_ms = tonumber(args[5])
  out_path = args[6]
  interval_ms = rate > 0 and 1000 * thread_count / rate or 0

  local host = wrk.headers["Host"]
  requests_ = {}
  ids = {}
  for line in io.lines(prefix .. "-" .. thread_no .. ".tsv") do
    local id, path, signature, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
    if id == nil then
      error("bad line in " .. prefix .. "-" .. thread_no .. ".tsv")
    end
    local headers = {
      ["Host"] = host,
      ["Content-Type"] = "application/json",
      ["X-Hub-Signature-256"] = signature,
      ["X-Request-ID"] = id,
    }
    requests_[#requests_ + 1] = wrk.format("POST", path, headers, body)
    ids[#ids + 1] = id
  end
  planned = #requests_
  granted = 0    -- delays handed out for a request still to come
  sent = 0       -- requests returned by request()
  idle = 0       -- connections that found nothing left to send
  started_ms = nil
  first_sent_ms = nil  -- the stage's span: first request() to last response()
  last_answer_ms = nil
  finished = false
  sent_at = {}
  answered = 0
  slow = 0
  unmatched = 0  -- non-200 answers without one of our request ids
  ok = {}        -- kind -> 200 answers
  other = {}     -- kind -> non-200 answers
  codes = {}     -- "status" -> non-200 answers
  acked = {}     -- request ids answered 200
  latencies = {} -- ms from request() to response(), per answered request
end

function delay()
  if granted >= planned then
    idle = idle + 1
    -- Every connection idle and every request answered: done. A request lost on a
    -- socket error is never answered; then wait until the server has closed each
    -- idle connection once (its keep-alive timeout) and wrk reconnected it.
    if not finished and ((idle >= connections and answered >= sent) or idle >= 2 * connections) then
      finished = true
      -- wrk's main thread sleeps for the whole -d duration whatever its threads do:
      -- this file tells the caller to interrupt it (SIGINT), which ends the run early.
      local marker = assert(io.open(out_path .. ".done-" .. thread_no, "w"))
      marker:write(string.format("%.3f\n", now_ms()))
      marker:close()
      wrk.thread:stop()
    end
    return NEVER_MS
  end
  granted = granted + 1
  if interval_ms == 0 then
    return 0
  end
  local now = now_ms()
  if started_ms == nil then
    started_ms = now
  end
  local slot = started_ms + (granted - 1) * interval_ms
  return slot > now and math.floor(slot - now + 0.5) or 0
end

function request()
  if requests_ == nil or sent >= granted then
    -- Not one of ours: wrk calls request() once before the run to check that the
    -- request parses (never sent), and would call it again, without asking delay(),
    -- to resend on a connection the server closed mid-request. That webhook counts
    -- as unanswered; a health check goes out in its place.
    return wrk.format("GET", "/healthz")
  end
  sent = sent + 1
  local now = now_ms()
  first_sent_ms = first_sent_ms or now
  sent_at[ids[sent]] = now
  return requests_[sent]
end

function response(status, headers, body)
  local now = now_ms()
  local id = headers["X-Request-ID"] or headers["x-request-id"]
  local started = id and sent_at[id]
  if not started then
    -- The health check above, or an answer the app did not write (gunicorn's own
    -- error pages carry no request id).
    if status ~= 200 then
      unmatched = unmatched + 1
      codes[tostring(status)] = (codes[tostring(status)] or 0) + 1
    end
    return
  end
  sent_at[id] = nil
  answered = answered + 1
  last_answer_ms = now
  local elapsed = now - started
  latencies[#latencies + 1] = elapsed
  if elapsed > slow_ms then
    slow = slow + 1
  end
  local kind = id:match("^(%a+)")
  if status == 200 then
    ok[kind] = (ok[kind] or 0) + 1
    acked[#acked + 1] = id
  else
    other[kind] = (other[kind] or 0) + 1
    codes[tostring(status)] = (codes[tostring(status)] or 0) + 1
  end
end

-- back in the main state ---------------------------------------------------------

local function encode(value)
  -- Enough JSON for what done() writes. An empty table comes out as [] (the Python
  -- side reads an empty list where it expects counts as "no counts").
  local kind = type(value)
  if kind == "number" then
    if value == math.floor(value) and math.abs(value) < 2 ^ 53 then
      return string.format("%d", value)
    end
    return string.format("%.17g", value)
  elseif kind == "string" then
    local escaped = value:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end)
    return '"' .. escaped .. '"'
  elseif kind == "table" then
    local parts = {}
    if next(value) == nil or #value > 0 then
      for _, item in ipairs(value) do
        parts[#parts + 1] = encode(item)
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for key, item in pairs(value) do
      parts[#parts + 1] = encode(tostring(key)) .. ":" .. encode(item)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end

function done(summary, latency, requests)
  local per_thread = {}
  local out_path_main = nil
  for _, thread in ipairs(threads) do
    out_path_main = out_path_main or thread:get("out_path")
    per_thread[#per_thread + 1] = {
      planned = thread:get("planned"),
      sent = thread:get("sent"),
      answered = thread:get("answered"),
      unmatched = thread:get("unmatched"),
      slow = thread:get("slow"),
      ok = thread:get("ok"),
      other = thread:get("other"),
      codes = thread:get("codes"),
      acked = thread:get("acked"),
      latencies_ms = thread:get("latencies"),
      first_sent_ms = thread:get("first_sent_ms"),
      last_answer_ms = thread:get("last_answer_ms"),
    }
  end
  local result = {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = {
      connect = summary.errors.connect,
      read = summary.errors.read,
      write = summary.errors.write,
      status = summary.errors.status,
      timeout = summary.errors.timeout,
    },
    latency_us = {
      p50 = latency:percentile(50.0),
      p90 = latency:percentile(90.0),
      p99 = latency:percentile(99.0),
      max = latency.max,
      mean = latency.mean,
    },
    threads = per_thread,
  }
  local file = assert(io.open(out_path_main, "w"))
  file:write(encode(result))
  file:close()
end
