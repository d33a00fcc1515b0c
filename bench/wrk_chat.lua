-- wrk script: POST one OpenAI chat-completions request per call, and print the results as two lines
-- that bench/overhead.py parses:
--
--   BENCH_LATENCY_MS p50=<ms> p90=<ms> p99=<ms> mean=<ms> max=<ms>
--   BENCH_REQUESTS total=<n> seconds=<s> rps=<r/s> status_ge_400=<n> connect=<n> read=<n> write=<n> timeout=<n>
--
-- MODEL (env) names the Shipyard feature (the direct runs send it too; the fake upstreams ignore it).
-- API_KEY (env) is sent as a bearer token, so the request is the same size as a real client's.
-- There is no response() callback unless MAX_REQUESTS is set: it runs Lua per reply and slows wrk down.
-- wrk counts replies with a status >= 400 in status_ge_400 (reported by wrk as errors.status).
--
--   MODEL=bench wrk -t1 -c8 -d20s --timeout 10s --latency -s bench/wrk_chat.lua http://127.0.0.1:PORT/v1/chat/completions

local model = os.getenv("MODEL") or "bench"
local key = os.getenv("API_KEY") or "sk-bench"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"model":"' .. model .. '","messages":['
    .. '{"role":"system","content":"You are a helpful assistant."},'
    .. '{"role":"user","content":"Say hello in one short sentence."}'
    .. '],"max_tokens":32}'

-- MAX_REQUESTS (env, optional): stop once this many replies have arrived (-d is then only an upper
-- bound). Use it with -t1 (each thread counts its own replies). It needs a response() callback, so it is defined only when asked for:
-- the measured runs keep wrk's fast path. wrk may count a few replies that land in the same loop turn.
local max_requests = tonumber(os.getenv("MAX_REQUESTS") or "")
if max_requests then
    local seen = 0
    function response(status, headers, body)
        seen = seen + 1
        if seen == max_requests then
            wrk.thread:stop()
            -- wrk's main thread sleeps for all of -d; SIGINT ends that sleep, and wrk then reports the
            -- time actually taken. The shell's parent is wrk. The signal is repeated a few times because
            -- one that lands on a thread other than wrk's main one does not end the sleep. io.popen, not
            -- os.execute: system() ignores SIGINT while its child runs.
            local p = io.popen("(for i in 1 2 3 4 5 6 7 8 9 10; do"
                .. " [ \"$(cat /proc/$PPID/comm 2>/dev/null)\" = wrk ] || exit 0;"
                .. " kill -INT $PPID; sleep 0.3; done) >/dev/null 2>&1 &")
            if p then p:close() end
        end
    end
end

function done(summary, latency, requests)
    local ms = function(us) return us / 1000.0 end
    local seconds = summary.duration / 1e6
    io.write(string.format("BENCH_LATENCY_MS p50=%.3f p90=%.3f p99=%.3f mean=%.3f max=%.3f\n",
        ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
        ms(latency.mean), ms(latency.max)))
    local e = summary.errors
    io.write(string.format(
        "BENCH_REQUESTS total=%d seconds=%.3f rps=%.1f status_ge_400=%d connect=%d read=%d write=%d timeout=%d\n",
        summary.requests, seconds, summary.requests / seconds,
        e.status, e.connect, e.read, e.write, e.timeout))
end
