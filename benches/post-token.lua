-- wrk script: like post-record.lua, with `Authorization: Bearer` tokens.
-- TOKENS_FILE holds one token per line. TOKEN_MODE=same uses the first token for every
-- request (verified once, then cached); TOKEN_MODE=each gives every request its own
-- token (each verified, its jti recorded) until the file runs out.
local path = os.getenv("BODY_FILE") or "benches/one-record.json"
local f = assert(io.open(path, "rb"))
local template = f:read("*a")
f:close()

local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
local same = (os.getenv("TOKEN_MODE") or "same") == "same"

local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  thread:set("nthreads", 0)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  nthreads = #threads
end

function request()
  counter = counter + 1
  local case_no = string.format("35%02d%014d", id, counter)
  local body = template:gsub("CASENO", case_no)
  local token = tokens[1]
  if not same then
    -- thread `id` uses tokens id, id + 2, id + 4, ... (two wrk threads)
    local i = ((counter - 1) * 2 + id - 1) % #tokens + 1
    token = tokens[i]
  end
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local line = string.format(
    "rps=%.1f p50_ms=%.3f p99_ms=%.3f requests=%d errors_status=%d errors_timeout=%d",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.status, e.timeout)
  io.write("SUMMARY ", line, "\n")
  local out = os.getenv("WRK_OUT")
  if out then
    local o = assert(io.open(out, "a"))
    o:write((os.getenv("WRK_LABEL") or "run"), " ", line, "\n")
    o:close()
  end
end
