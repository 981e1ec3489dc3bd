-- wrk script: im.notify.system.add with a realistic mix of bodies.
--
-- Environment:
--   BENCH_HOOK      webhook path prefix, e.g. /rest/1/CODE/ (required)
--   BENCH_DELAY_MS  think time per connection between answers (0: closed loop at full speed);
--                   bench/run.sh uses it to hold the offered load near a target rate, since
--                   Debian has no wrk2.
--
-- The cycle has four encodings (JSON and urlencoded form, each with and without ATTACH). Tagged
-- requests carry CLIENT_ID, without which a webhook TAG is ignored (D3), and draw from 16 tags,
-- so most of them replace an earlier notification of the same recipient.

local hook = os.getenv("BENCH_HOOK") or "/rest/1/missing/"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local path = hook .. "im.notify.system.add.json"
local requests = {}

local function json_plain(i)
  return '{"USER_ID":1,"MESSAGE":"Build #' .. i .. ' of [b]imnotify[/b] finished in 42 s",'
    .. '"MESSAGE_OUT":"Build #' .. i .. ' finished"}'
end

local function json_attach(i, tag)
  return '{"USER_ID":1,"MESSAGE":"Deploy #' .. i .. ' needs approval","CLIENT_ID":"bench",'
    .. '"TAG":"DEPLOY_' .. tag .. '","SUB_TAG":"DEPLOY|' .. tag .. '",'
    .. '"ATTACH":{"ID":1,"COLOR":"#29619b","BLOCKS":['
    .. '{"MESSAGE":"API v2 is [b]ready[/b] for production"},'
    .. '{"LINK":{"NAME":"Pipeline ' .. i .. '","LINK":"https://ci.example.com/p/' .. i .. '"}},'
    .. '{"DELIMITER":{"SIZE":200,"COLOR":"#c2c2c2"}},'
    .. '{"GRID":[{"NAME":"Branch","VALUE":"main","DISPLAY":"LINE","WIDTH":120},'
    .. '{"NAME":"Commit","VALUE":"4e05d4f","DISPLAY":"LINE"}]}]}}'
end

local function form_plain(i)
  return 'USER_ID=1&MESSAGE=Backup+%23' .. i .. '+completed%23BR%23Size%3A+1.2+GB'
    .. '&MESSAGE_OUT=Backup+completed'
end

local function form_attach(i, tag)
  return 'USER_ID=1&MESSAGE=Ticket+%23' .. i .. '+was+updated&CLIENT_ID=bench'
    .. '&TAG=TICKET_' .. tag .. '&SUB_TAG=TICKET%7C' .. tag
    .. '&ATTACH%5B0%5D%5BMESSAGE%5D=Status+changed+to+%5Bb%5Din+progress%5B%2Fb%5D'
    .. '&ATTACH%5B1%5D%5BLINK%5D%5BNAME%5D=Ticket+' .. i
    .. '&ATTACH%5B1%5D%5BLINK%5D%5BLINK%5D=https%3A%2F%2Fdesk.example.com%2Ft%2F' .. i
    .. '&ATTACH%5B2%5D%5BUSER%5D%5BNAME%5D=Anna+Smith'
end

local json_headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
local form_headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

for i = 1, 64 do
  local tag = i % 16
  local kind = i % 4
  local body, headers
  if kind == 0 then
    body, headers = json_plain(i), json_headers
  elseif kind == 1 then
    body, headers = json_attach(i, tag), json_headers
  elseif kind == 2 then
    body, headers = form_plain(i), form_headers
  else
    body, headers = form_attach(i, tag), form_headers
  end
  requests[i] = wrk.format("POST", path, headers, body)
end

local n = 0
function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
