-- wrk script: GET /products/{id} with a random id in 1..BENCH_MAX_ID per request
-- (BENCH_PATH replaces "/products/" to aim at another route taking an id).
-- At the end it prints one line, "WRK_JSON {...}", that benchmarks/db_read.py parses.
-- Nothing runs per response (no `response` callback), so wrk itself stays cheap.

local max_id = tonumber(os.getenv("BENCH_MAX_ID") or "10000")
local path = os.getenv("BENCH_PATH") or "/products/"
local threads = {}

function setup(thread)
   thread:set("thread_number", #threads + 1)
   table.insert(threads, thread)
end

function init(_args)
   -- Each thread draws its own sequence of ids.
   math.randomseed(os.time() * 1000 + thread_number)
end

function request()
   return wrk.format("GET", path .. math.random(1, max_id))
end

function done(summary, latency, _requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
         .. '"write": %d, "non_2xx_3xx": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, '
         .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean
   ))
end
