-- The benchmark's five behaviours for nginx + lua-nginx-module (see nginx.conf.in).
local ngx = ngx
local M = {}

local SECRET = "bench-secret"
local RATE = 1e9
local BURST = 1e9

local prefix, counter = 0, 0

function M.init_worker()
    prefix = ngx.worker.pid()
end

local function to_hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", string.byte(c)) end))
end

local function json_exit(status, body, extra)
    ngx.status = status
    ngx.header["content-type"] = "application/json"
    if extra then
        for k, v in pairs(extra) do ngx.header[k] = v end
    end
    ngx.print(body)
    return ngx.exit(status)
end

-- Keep the client's x-request-id or make one (<worker prefix>-<counter>).
function M.request_id()
    local id = ngx.var.http_x_request_id
    if not id then
        counter = counter + 1
        id = string.format("%08x-%08x", prefix, counter)
        ngx.req.set_header("x-request-id", id)
    end
    ngx.ctx.request_id = id
end

local function unauthorized(reason)
    return json_exit(401, '{"error":"unauthorized","message":"' .. reason .. '"}',
        { ["www-authenticate"] = "Bearer" })
end

-- Authorization: Bearer <client>.<hex HMAC-SHA1(secret, client)>
function M.auth()
    local header = ngx.var.http_authorization
    if not header then return unauthorized("missing bearer token") end
    local token = header:match("^Bearer (.+)$")
    local client, sig = nil, nil
    if token then client, sig = token:match("^(.*)%.([^.]*)$") end
    if not client then return unauthorized("malformed bearer token") end
    if #sig ~= 40 or not sig:match("^%x+$") then return unauthorized("malformed signature") end
    if to_hex(ngx.hmac_sha1(SECRET, client)) ~= sig:lower() then
        return unauthorized("bad signature")
    end
    ngx.ctx.client = client
end

-- A token bucket per client in a shared dict ("rl:<client>" -> "tokens last_ms").
function M.rate_limit()
    local buckets = ngx.shared.buckets
    local key = "rl:" .. (ngx.ctx.client or "anonymous")
    ngx.update_time()
    local now = math.floor(ngx.now() * 1000)
    local tokens, last = BURST, now
    local stored = buckets:get(key)
    if stored then
        local t, l = stored:match("^(%S+) (%S+)$")
        tokens, last = tonumber(t), tonumber(l)
    end
    local elapsed = math.max(now - last, 0) / 1000
    tokens = math.min(tokens + elapsed * RATE, BURST)
    if tokens < 1 then
        return json_exit(429, '{"error":"rate limited"}', { ["retry-after"] = "1" })
    end
    buckets:set(key, string.format("%.17g %d", tokens - 1, now), 60)
end

function M.hello()
    ngx.print('{"message":"hello","client":"', ngx.ctx.client or "", '","request_id":"',
        ngx.ctx.request_id or "", '"}')
end

function M.headers()
    if ngx.ctx.request_id then ngx.header["x-request-id"] = ngx.ctx.request_id end
    ngx.header["x-powered-by"] = "plugd-bench"
end

function M.access_log()
    local line = string.format(
        '{"ts":%d,"method":"%s","path":"%s","status":%d,"request_id":"%s","client":"%s"}',
        math.floor(ngx.now() * 1000), ngx.req.get_method(), ngx.var.uri, ngx.status,
        ngx.ctx.request_id or "", ngx.ctx.client or "")
    ngx.log(ngx.NOTICE, line)
end

return M
