-- wrk script for `mlstack bench --engine wrk`: single-row KServe v2 JSON infer requests.
-- Arguments (after `--`): mode ("random": a fresh random row per request, so no response or prediction cache can hit;
-- "fixed": one constant body, every request a cache candidate), row width, input name.
-- The bearer token comes from MLSTACK_BENCH_TOKEN (kept off the command line). MLSTACK_BENCH_ADDRS ("host:port,...",
-- optional) spreads the threads over several servers: thread i connects to address i mod n (`mlstack bench --gateways`). A response counts as bad unless it is
-- 2xx with a non-empty "outputs" list; done() prints one JSON line (prefix MLSTACK_WRK_JSON) the harness parses.

local threads = {}
local next_id = 1

local addrs = nil
local spread = os.getenv("MLSTACK_BENCH_ADDRS")
if spread ~= nil and spread ~= "" then
  addrs = {}
  for host, port in string.gmatch(spread, "([^,:]+):(%d+)") do
    table.insert(addrs, wrk.lookup(host, port)[1])
  end
end

function setup(thread)
  if addrs ~= nil then
    thread.addr = addrs[(next_id - 1) % #addrs + 1]
  end
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

local function urandom_seed()
  -- os.time() has one-second resolution: two legs started in the same second would replay the same rows.
  local f = io.open("/dev/urandom", "rb")
  local seed = os.time()
  if f then
    local b = f:read(4)
    f:close()
    seed = b:byte(1) + b:byte(2) * 256 + b:byte(3) * 65536 + b:byte(4) * 16777216
  end
  return seed
end

local function body_for(row)
  return string.format('{"inputs":[{"name":"%s","shape":[1,%d],"datatype":"FP32","data":[%s]}]}',
                       input_name, width, table.concat(row, ","))
end

function init(args)
  mode = args[1] or "random"
  width = tonumber(args[2] or "4")
  input_name = args[3] or "input"
  bad = 0
  bad_sample = ""
  headers = {["Content-Type"] = "application/json"}
  local token = os.getenv("MLSTACK_BENCH_TOKEN")
  if token ~= nil and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  math.randomseed(urandom_seed() + id * 7919)
  if mode == "fixed" then
    local row = {}
    local iris = {"5.1", "3.5", "1.4", "0.2"}
    for i = 1, width do row[i] = iris[(i - 1) % 4 + 1] end
    fixed_request = wrk.format("POST", nil, headers, body_for(row))
  end
end

function request()
  if fixed_request ~= nil then
    return fixed_request
  end
  local row = {}
  for i = 1, width do
    row[i] = string.format("%.3f", 0.1 + math.random() * 7.9)
  end
  return wrk.format("POST", nil, headers, body_for(row))
end

function response(status, headers, body)
  if status < 200 or status > 299 or not string.find(body, '"outputs"%s*:%s*%[%s*{') then
    bad = bad + 1
    if bad_sample == "" then
      bad_sample = tostring(status) .. " " .. string.sub(body, 1, 300)
    end
  end
end

function done(summary, latency, requests)
  local nbad = 0
  local sample = ""
  for _, t in ipairs(threads) do
    nbad = nbad + (t:get("bad") or 0)
    if sample == "" then sample = t:get("bad_sample") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    'MLSTACK_WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"status":%d,"bad":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout, e.status, nbad,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
  if sample ~= "" then
    io.write("MLSTACK_WRK_SAMPLE " .. string.gsub(sample, "\n", " ") .. "\n")
  end
end
