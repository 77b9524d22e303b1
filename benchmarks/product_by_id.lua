-- wrk script: GET /products/{id}, one id per request, from BENCH_FIRST_ID..BENCH_MAX_ID (default
-- 1..10000). BENCH_PATH replaces "/products/" to aim at another route taking an id.
--
-- BENCH_ORDER=random (the default): a random id per request.
-- BENCH_ORDER=sequential: each thread walks its own ids, thread k of BENCH_THREADS asking for
-- BENCH_FIRST_ID + k - 1, then every BENCH_THREADS-th id after it. No id is asked for twice in a
-- run until the range runs out; then each thread starts again from its first id.
--
-- At the end it prints one line, "WRK_JSON {...}", that benchmarks/harness.py parses; its
-- "last_id" is the highest id asked for (0 in random order).
-- Nothing runs per response (no `response` callback), so wrk itself stays cheap.

local first_id = tonumber(os.getenv("BENCH_FIRST_ID") or "1")
local max_id = tonumber(os.getenv("BENCH_MAX_ID") or "10000")
local is_sequential = os.getenv("BENCH_ORDER") == "sequential"
local stride = tonumber(os.getenv("BENCH_THREADS") or "1")
local path = os.getenv("BENCH_PATH") or "/products/"
local threads = {}

function setup(thread)
   thread:set("thread_number", #threads + 1)
   table.insert(threads, thread)
end

function init(_args)
   -- Each thread draws its own sequence of ids.
   math.randomseed(os.time() * 1000 + thread_number)
   next_id = first_id + thread_number - 1
   last_id = 0
end

function request()
   local id
   if is_sequential then
      if next_id > max_id then
         next_id = first_id + thread_number - 1
      end
      id = next_id
      next_id = next_id + stride
      if id > last_id then
         last_id = id
      end
   else
      id = math.random(first_id, max_id)
   end
   return wrk.format("GET", path .. id)
end

function done(summary, latency, _requests)
   local e = summary.errors
   local highest = 0
   for _, thread in ipairs(threads) do
      highest = math.max(highest, thread:get("last_id") or 0)
   end
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
         .. '"write": %d, "non_2xx_3xx": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, '
         .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "last_id": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, highest
   ))
end
