-- wrk script: `batch` of BENCH_BATCH (default 50) im.notify.system.add commands, urlencoded as
-- the PHP SDK sends it (`cmd[KEY]=method?query`). Goal 4 of issue 15 compares its latency with
-- that of a single add (bench/notify.lua) in the same run.
--
-- Environment: BENCH_HOOK (webhook path prefix), BENCH_BATCH (commands per batch).

local hook = os.getenv("BENCH_HOOK") or "/rest/1/missing/"
local size = tonumber(os.getenv("BENCH_BATCH") or "50")
local parts = { "halt=0" }
for i = 1, size do
  -- The command's own query, percent-encoded once more as a form value.
  local query = "USER_ID%3D1%26MESSAGE%3DBatch%2Bitem%2B" .. i .. "%2Bof%2B%5Bb%5D" .. size .. "%5B%2Fb%5D"
  parts[#parts + 1] = "cmd%5Bc" .. i .. "%5D=im.notify.system.add%3F" .. query
end
local req = wrk.format("POST", hook .. "batch.json",
  { ["Content-Type"] = "application/x-www-form-urlencoded" }, table.concat(parts, "&"))

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
