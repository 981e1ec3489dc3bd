-- wrk script: a read method by GET, e.g. im.notify.get.
--
-- Environment: BENCH_HOOK (webhook path prefix), BENCH_QUERY (method and query string, e.g.
-- "im.notify.get.json?LIMIT=50").

local hook = os.getenv("BENCH_HOOK") or "/rest/1/missing/"
local query = os.getenv("BENCH_QUERY") or "im.notify.get.json"
local req = wrk.format("GET", hook .. query, { ["Accept"] = "application/json" })

function request()
  return req
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
