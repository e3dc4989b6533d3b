-- serve_wrk.lua: wrk script for bench/serve_wrk.sh: POSTs X-rays to /api/v1/predictions as
-- multipart uploads with the bearer token. Arguments (after --): LIST TOKEN NTHREADS; LIST has
-- one image path a line. Thread k of n takes lines k, k+n, ... and cycles through them, so no two
-- threads send the same image. done() prints one grep-able line.
local boundary = "pneumo-wrk-7d41c2"
local threads, counter = {}, 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local list, token, n = args[1], args[2], tonumber(args[3])
  wrk.method = "POST"
  wrk.path = "/api/v1/predictions"
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  bodies, sent, hits, bad, nbodies = {}, 0, 0, 0, 0
  local i = 0
  for path in io.lines(list) do
    if i % n == id - 1 then
      local f = assert(io.open(path, "rb"))
      local data = f:read("*a")
      f:close()
      table.insert(bodies, "--" .. boundary .. "\r\n" ..
        'Content-Disposition: form-data; name="image"; filename="x.jpeg"\r\n' ..
        "Content-Type: image/jpeg\r\n\r\n" .. data .. "\r\n--" .. boundary .. "--\r\n")
    end
    i = i + 1
  end
  nbodies = #bodies
end

function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent - 1) % #bodies + 1])
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  elseif body:find('"cached":true', 1, true) then
    hits = hits + 1
  end
end

function done(summary, latency, requests)
  local h, b, images = 0, 0, 0
  for _, t in ipairs(threads) do
    h = h + t:get("hits")
    b = b + t:get("bad")
    images = images + t:get("nbodies")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.2f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f " ..
    "non200=%d socket_errors=%d timeouts=%d cached=%d distinct_images=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, b, e.connect + e.read + e.write, e.timeout, h, images))
end
