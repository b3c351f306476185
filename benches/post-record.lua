-- wrk script: POST one ~1.2 KB canonical application record (benches/one-record.json)
-- per request, each with a new case_no so every request is a new record (no dedup).
-- Env: BODY_FILE (default benches/one-record.json), NODE (default nat-hall),
--      WRK_OUT (append one summary line there), WRK_LABEL (its label),
--      WRK_BASE (added to the thread number in case numbers: give each wrk process
--      its own, or two processes send the same cases and half are duplicates).
local path = os.getenv("BODY_FILE") or "benches/one-record.json"
local f = assert(io.open(path, "rb"))
local template = f:read("*a")
f:close()

local threads = {}
local counter = 0


function setup(thread)
  thread:set("id", #threads + 1 + tonumber(os.getenv("WRK_BASE") or "0"))
  table.insert(threads, thread)
end

function init(args)
  counter = 0
end

local headers = {
  ["Content-Type"] = "application/json",
  ["X-Hallgate-Node"] = os.getenv("NODE") or "nat-hall",
}

function request()
  counter = counter + 1
  -- A body of several records (BATCH=N, a JSON array whose case numbers end in
  -- CASENO00..) takes a 16-digit prefix; one record the whole 18 digits.
  local case_no = os.getenv("BATCH") and string.format("35%02d%012d", id, counter)
    or string.format("35%02d%014d", id, counter)
  local body = template:gsub("CASENO", case_no)
  -- A fresh case (benches/one-record-fresh.json) is accepted now.
  body = body:gsub("NOWUTC", os.date("!%Y-%m-%dT%H:%M:%SZ"))
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local line = string.format(
    "rps=%.1f p50_ms=%.3f p99_ms=%.3f mean_ms=%.3f max_ms=%.3f requests=%d body_bytes=%d errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000, latency.max / 1000, summary.requests, #template,
    e.connect, e.read, e.write, e.status, e.timeout)
  io.write("SUMMARY ", line, "\n")
  local out = os.getenv("WRK_OUT")
  if out then
    local o = assert(io.open(out, "a"))
    o:write((os.getenv("WRK_LABEL") or "run"), " ", line, "\n")
    o:close()
  end
end
