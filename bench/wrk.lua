-- wrk script for bench/run.sh: optional POST (WRK_METHOD=POST), and one machine-readable line
-- at the end ("WRKJSON {...}") with exact counts and latency percentiles in microseconds.
local method = os.getenv("WRK_METHOD")
if method == "POST" then
  wrk.method = "POST"
  wrk.body = string.rep("x", 64)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
