-- bench/lua/agg.lua — the OpenResty side of the aggregation scenarios: the same
-- calls and the same shaping as bench/conf/bench.gw.in, with
-- ngx.location.capture_multi (parallel subrequests through keep-alive upstreams)
-- and cjson. The output is built in the gateway's key order, so both sides
-- answer the same JSON (bench.py checks it before measuring).
local cjson = require "cjson.safe"
local decode, enc = cjson.decode, cjson.encode
local capture_multi = ngx.location.capture_multi
local concat, min = table.concat, math.min

local M = {}

local function send(body)
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Content-Length"] = #body
    ngx.print(body)
end

local function bad_gateway()
    ngx.status = 502
    send('{"error":"status"}')
end

local function body_of(res)
    if res.status ~= 200 then return nil end
    return decode(res.body)
end

function M.agg3(d0, d1, d2)
    local r0, r1, r2 = capture_multi{
        { "/_b0/" .. d0 .. "user.json" },
        { "/_b1/" .. d1 .. "orders.json" },
        { "/_b2/" .. d2 .. "recs.json" },
    }
    local user, orders, recs = body_of(r0), body_of(r1), body_of(r2)
    if not (user and orders and recs) then return bad_gateway() end

    local out = {
        '{"id":', enc(user.id),
        ',"name":', enc(user.first_name .. " " .. user.last_name),
        ',"email":', enc(user.email),
        ',"city":', enc(user.address.city),
        ',"orders":[',
    }
    local n, open = #out, 0
    for i, it in ipairs(orders.items) do
        if i > 1 then n = n + 1; out[n] = "," end
        n = n + 1
        out[n] = '{"id":' .. enc(it.id) .. ',"total":' .. enc(it.total) .. ',"status":' .. enc(it.status) .. "}"
        if it.status == "open" then open = open + 1 end
    end
    n = n + 1; out[n] = '],"open":' .. open .. ',"recs":['
    local products = recs.products
    for i = 1, min(5, #products) do
        local p = products[i]
        if i > 1 then n = n + 1; out[n] = "," end
        n = n + 1
        out[n] = '{"id":' .. enc(p.id) .. ',"name":' .. enc(p.name) .. ',"price":' .. enc(p.price) .. "}"
    end
    n = n + 1; out[n] = "]}"
    send(concat(out))
end

local reqs10 = {}
for i = 0, 9 do reqs10[i + 1] = { "/_b" .. i .. "/s" .. i .. ".json" } end

function M.agg10()
    local res = { capture_multi(reqs10) }
    local out, n = { "{" }, 1
    for i = 1, 10 do
        local s = body_of(res[i])
        if not s then return bad_gateway() end
        if i > 1 then n = n + 1; out[n] = "," end
        n = n + 1
        out[n] = '"s' .. (i - 1) .. '":{"id":' .. enc(s.id) .. ',"name":' .. enc(s.name) .. ',"top":['
        local items = s.items
        for j = 1, min(3, #items) do
            local it = items[j]
            if j > 1 then n = n + 1; out[n] = "," end
            n = n + 1
            out[n] = '{"id":' .. enc(it.id) .. ',"v":' .. enc(it.v) .. "}"
        end
        n = n + 1; out[n] = "]}"
    end
    n = n + 1; out[n] = "}"
    send(concat(out))
end

function M.slow()
    local r0, r1 = capture_multi{
        { "/_b0/user.json" },
        { "/_t1/d1000/orders.json" },
    }
    local user = body_of(r0)
    if not user then return bad_gateway() end
    local late = body_of(r1)   -- 504 after 100 ms: null, as gwd's `optional`
    local items = late and enc(late.items) or "null"
    send('{"id":' .. enc(user.id) .. ',"orders":' .. items .. "}")
end

return M
