#!/usr/bin/env python3
"""Load generator for `lowbit-engine serve` (stdlib only): concurrent streaming completions against an
OpenAI-compatible server. For each concurrency level C it sends C streams at once (each `--prompt-tokens` random
token ids, `--new-tokens` new tokens, greedy, ignore_eos) and prints one JSON line: output tokens/s over the wall time
of the level, time to first token and inter-token latency p50/p99 (ms)."""
import argparse
import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlparse


def stream_one(url, model, prompt, new_tokens, out):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        out.append({"error": f"HTTP {resp.status}: {resp.read()[:300]!r}"})
        return
    stamps, usage = [], None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            usage = chunk["usage"]
        if chunk["choices"] and chunk["choices"][0].get("text"):
            stamps.append(time.perf_counter())
    conn.close()
    out.append({"start": start, "stamps": stamps, "end": time.perf_counter(),
                "tokens": usage["completion_tokens"] if usage else len(stamps)})


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def level(url, model, concurrency, prompt_tokens, new_tokens, vocab, seed):
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, vocab) for _ in range(prompt_tokens)] for _ in range(concurrency)]
    out = []
    threads = [threading.Thread(target=stream_one, args=(url, model, p, new_tokens, out)) for p in prompts]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    errors = [o["error"] for o in out if "error" in o]
    ok = [o for o in out if "error" not in o]
    ttft = [(o["stamps"][0] - o["start"]) * 1000 for o in ok if o["stamps"]]
    itl = [(b - a) * 1000 for o in ok for a, b in zip(o["stamps"], o["stamps"][1:])]
    tokens = sum(o["tokens"] for o in ok)
    return {"engine": "lowbit-serve", "concurrency": concurrency, "promptTokens": prompt_tokens, "newTokens": new_tokens,
            "requests": len(ok), "errors": len(errors), "firstError": errors[0] if errors else None,
            "outputTokens": tokens, "seconds": round(wall, 3), "tokensPerSecond": round(tokens / wall, 1),
            "ttftMsP50": round(pct(ttft, 50) or 0, 1), "ttftMsP99": round(pct(ttft, 99) or 0, 1),
            "itlMsP50": round(pct(itl, 50) or 0, 2), "itlMsP99": round(pct(itl, 99) or 0, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=32000)
    args = ap.parse_args()
    # Warm-up: one short request (first-call allocations and kernel selection are not measured).
    level(args.url, args.model, 1, args.prompt_tokens, 8, args.vocab, 0)
    for c in [int(x) for x in args.concurrency.split(",")]:
        print(json.dumps(level(args.url, args.model, c, args.prompt_tokens, args.new_tokens, args.vocab, c)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
