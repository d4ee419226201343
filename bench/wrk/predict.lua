-- wrk script: POST /api/v1/predict with X-Token, rotating over short review sentences.
--
--   wrk -t1 -c32 -d10s --timeout 30s -s bench/wrk/predict.lua http://127.0.0.1:8000/api/v1/predict
--
-- The URL's path is the route. Settings come from the environment (run from the repository root):
--
--   WRK_TOKEN        X-Token value                           (default: bench-token)
--   WRK_TEXTS_FILE   one sentence per line                   (default: bench/wrk/texts.txt)
--   WRK_BATCH        texts per request                       (default: 1; 32 for the batch variant)
--   WRK_MODEL        "model" field                           (default: sentiment_analysis)
--   WRK_VERSION      "model_version" field; empty: unpinned  (default: v1)
--   WRK_ROUTING_KEY  1: send an X-Routing-Key that differs on every request, so that the
--                    registry's rollout (the 90/10 canary) splits the traffic (default: 0)
--   WRK_PROTOCOL     native: {"texts": [...]} bodies; v2: Open Inference Protocol JSON bodies
--                    (a BYTES "text" tensor) for /v2/models/<model>/versions/<v>/infer, where the
--                    URL names the model and version                 (default: native)
--
-- Variants: single text pinned to v1 (the defaults); WRK_BATCH=32; WRK_VERSION= WRK_ROUTING_KEY=1
-- (unpinned, canary). done() prints one line "WRK_JSON {...}" for bench/bench_wrk.py: the counts,
-- the non-200 responses by status, the model_version of the 200 responses (the canary split) and
-- the latency percentiles (wrk's latency:percentile) in microseconds.

local function env(name, default)
   local value = os.getenv(name)
   if value == nil then return default end
   return value
end

local function json_string(s)
   s = s:gsub('[%c"\\]', function(c)
      if c == '"' then return '\\"' end
      if c == '\\' then return '\\\\' end
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

-- Per-thread state (each wrk thread has its own Lua state).
local requests = {}       -- prebuilt requests (no routing key) or bodies (routing key)
local headers = nil
local next_index = 1
local counter = 0
local routing = false
non200 = 0
statuses = ""             -- "status:count,..." of the non-200 responses, read by done()
versions = ""             -- "version:count,..." of the 200 responses' model_version (the canary split)
local status_counts = {}
local version_counts = {}

local function encode_counts(counts)
   local parts = {}
   for key, count in pairs(counts) do table.insert(parts, key .. ":" .. count) end
   return table.concat(parts, ",")
end

local function merge_counts(name)
   local merged = {}
   for _, thread in ipairs(threads) do
      local s = thread:get(name) or ""
      for key, count in s:gmatch("([^:,]+):(%d+)") do
         merged[key] = (merged[key] or 0) + tonumber(count)
      end
   end
   local parts = {}
   for key, count in pairs(merged) do table.insert(parts, json_string(key) .. ": " .. count) end
   return "{" .. table.concat(parts, ", ") .. "}"
end

function init(args)
   local path = env("WRK_TEXTS_FILE", "bench/wrk/texts.txt")
   local file = assert(io.open(path, "r"), "cannot open " .. path .. " (run from the repository root or set WRK_TEXTS_FILE)")
   local texts = {}
   for line in file:lines() do
      if line:match("%S") then table.insert(texts, line) end
   end
   file:close()
   assert(#texts > 0, path .. " has no texts")

   local batch = tonumber(env("WRK_BATCH", "1"))
   local model = env("WRK_MODEL", "sentiment_analysis")
   local version = env("WRK_VERSION", "v1")
   routing = env("WRK_ROUTING_KEY", "0") == "1"
   local protocol = env("WRK_PROTOCOL", "native")

   headers = {}
   for name, value in pairs(wrk.headers) do headers[name] = value end  -- Host, set by wrk
   headers["Content-Type"] = "application/json"
   headers["X-Token"] = env("WRK_TOKEN", "bench-token")

   -- One body per starting text: text i, i+1, ... i+batch-1 (wrapping).
   local tail = ', "model": ' .. json_string(model)
   if version ~= "" then tail = tail .. ', "model_version": ' .. json_string(version) end
   tail = tail .. "}"
   for i = 1, #texts do
      local items = {}
      for j = 0, batch - 1 do
         table.insert(items, json_string(texts[((i - 1 + j) % #texts) + 1]))
      end
      local body = '{"texts": [' .. table.concat(items, ", ") .. "]" .. tail
      if protocol == "v2" then
         body = '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [' .. batch .. '], "data": ['
            .. table.concat(items, ", ") .. "]}]}"
      end
      if routing then
         table.insert(requests, body)
      else
         table.insert(requests, wrk.format("POST", nil, headers, body))
      end
   end
   -- Threads start at different texts.
   next_index = ((thread_index or 0) * 17) % #requests + 1
end

function request()
   local i = next_index
   next_index = next_index % #requests + 1
   if not routing then return requests[i] end
   counter = counter + 1
   headers["X-Routing-Key"] = "wrk-" .. (thread_index or 0) .. "-" .. counter
   return wrk.format("POST", nil, headers, requests[i])
end

function response(status, response_headers, body)
   if status ~= 200 then
      non200 = non200 + 1
      status_counts[status] = (status_counts[status] or 0) + 1
      statuses = encode_counts(status_counts)
      return
   end
   local version = body and body:match('"model_version"%s*:%s*"([^"]*)"')
   if version then
      version_counts[version] = (version_counts[version] or 0) + 1
      versions = encode_counts(version_counts)
   end
end

function done(summary, latency, reqs)
   local total_non200 = 0
   for _, thread in ipairs(threads) do
      total_non200 = total_non200 + (tonumber(thread:get("non200")) or 0)
   end
   local e = summary.errors
   local function num(x) if x ~= x or x == nil then return 0 end return x end  -- NaN when nothing completed
   local line = string.format(
      '{"duration_us": %d, "requests": %d, "bytes": %d, "non200": %d, "statuses": %s, "versions": %s, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"mean": %.1f, "stdev": %.1f, "min": %d, "max": %d, '
         .. '"p50": %d, "p90": %d, "p99": %d, "p999": %d}, "batch": %d}',
      summary.duration, summary.requests, summary.bytes, total_non200, merge_counts("statuses"), merge_counts("versions"),
      e.connect, e.read, e.write, e.status, e.timeout,
      num(latency.mean), num(latency.stdev), num(latency.min), num(latency.max),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      tonumber(env("WRK_BATCH", "1"))
   )
   io.write("WRK_JSON " .. line .. "\n")
end
