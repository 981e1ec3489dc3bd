-- bench/notify.lua with a Host header on every request: its prepared requests carry none, which
-- imnotify accepts but nginx (HTTP/1.1) answers with 400. bench/pg.sh uses this for all its
-- scenarios, so that they send the same bytes.
local format = wrk.format
wrk.format = function(method, path, headers, body)
  headers = headers or {}
  headers["Host"] = headers["Host"] or "127.0.0.1"
  return format(method, path, headers, body)
end
dofile(os.getenv("BENCH_ROOT") .. "/bench/notify.lua")
