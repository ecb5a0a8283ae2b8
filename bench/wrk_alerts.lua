-- wrk script: Alertmanager webhooks (format 4) of N alerts, every alert a new fingerprint.
-- Usage: wrk -t1 -c8 -d10s -s bench/wrk_alerts.lua URL -- BATCH TOKEN RUN_ID
-- Prints one line "WRKJSON {...}" with exact latency percentiles (microseconds).

local threads = {}
local counter = 0
local batch = 100
local run = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  batch = tonumber(args[1]) or 100
  run = tonumber(args[3]) or 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (args[2] or "")
end

local alert = '{"status":"firing","labels":{"alertname":"ServiceDown","host":"bench%02d",'
  .. '"instance":"bench%02d:18080","job":"app","service":"app","severity":"critical"},'
  .. '"annotations":{"summary":"app on bench%02d is down"},'
  .. '"startsAt":"2026-11-26T00:48:44.979Z","endsAt":"0001-01-01T00:00:00Z",'
  .. '"generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"%08x%04x%08x"}'

function request()
  local parts = {}
  for i = 1, batch do
    counter = counter + 1
    local h = counter % 50 + 1
    parts[i] = string.format(alert, h, h, h, run, tid, counter)
  end
  local body = '{"receiver":"opsflow","status":"firing","alerts":['
    .. table.concat(parts, ",")
    .. '],"groupLabels":{},"commonLabels":{},"commonAnnotations":{},'
    .. '"externalURL":"http://127.0.0.1:9093","version":"4","groupKey":"{}","truncatedAlerts":0}'
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,'
    .. '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"lat_mean_us":%.1f,'
    .. '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
