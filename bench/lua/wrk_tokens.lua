-- bench/lua/wrk_tokens.lua — the wrk script of the jwt-*-cold scenarios:
--     wrk -s bench/lua/wrk_tokens.lua URL -- TOKENS_FILE
-- TOKENS_FILE holds one JWT a line (bench.py writes it); every request carries
-- the next one as `Authorization: Bearer …`, round robin, starting at a random
-- line so that successive runs (warm-up, rounds) do not replay the same prefix.
local tokens, n, i = {}, 0, 0
local hdrs = {}

function init(args)
    local path = args[1]
    for line in io.lines(path) do
        if #line > 0 then
            n = n + 1
            tokens[n] = "Bearer " .. line
        end
    end
    if n == 0 then error("wrk_tokens.lua: no tokens in " .. tostring(path)) end
    local f = io.open("/dev/urandom", "rb")
    local b = f:read(4)
    f:close()
    i = (b:byte(1) + b:byte(2) * 256 + b:byte(3) * 65536 + b:byte(4) * 16777216) % n
end

function request()
    i = i % n + 1
    hdrs["Authorization"] = tokens[i]
    return wrk.format(nil, nil, hdrs)
end
