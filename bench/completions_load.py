#!/usr/bin/python3
"""Aggregate tokens/s of OpenAI-style /v1/completions servers under concurrent clients (standard library only).

    completions_load.py [--rounds R] [--streams S] [--requests N] [--tokens T] NAME=URL EXTRA_JSON [NAME=URL EXTRA_JSON ...]

Each run: S client threads, each sending N non-streamed greedy requests one after another (prompt i of the
built-in set, max_tokens T, plus the server's EXTRA_JSON fields), all starting together. Aggregate
tokens/s = the completion tokens the servers report (usage.completion_tokens) / the run's wall time.
Servers alternate run by run (A, B, A, B, ...), R rounds; prints every run and, per server, the median,
then the ratio of every later server's median to the first's. One warm-up request per server first."""
import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request

PROMPTS = [
    "Once upon a time", "The robot", "Data flows", "In the morning the little girl",
    "The old sailor looked at the sea and said", "A recipe for bread:", "The history of the city began",
    "Dear friend, I am writing to tell you",
]


def complete(url, prompt, tokens, extra):
    body = dict(extra, prompt=prompt, max_tokens=tokens, temperature=0)
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        rep = json.load(r)
    return rep["usage"]["completion_tokens"]


def run(url, extra, streams, requests, tokens):
    counts, errors = [0] * streams, []
    go = threading.Barrier(streams + 1)

    def client(i):
        go.wait()
        try:
            for j in range(requests):
                counts[i] += complete(url, PROMPTS[(i + j) % len(PROMPTS)], tokens, extra)
        except Exception as e:  # reported after the run
            errors.append(f"stream {i}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return sum(counts), wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("servers", nargs="+")
    a = ap.parse_args()
    if len(a.servers) % 2:
        ap.error("servers come as NAME=URL EXTRA_JSON pairs")
    servers = []
    for spec, extra in zip(a.servers[::2], a.servers[1::2]):
        name, _, url = spec.partition("=")
        servers.append((name, url.rstrip("/"), json.loads(extra)))
    for name, url, extra in servers:
        complete(url, PROMPTS[0], 4, extra)
    tps = {name: [] for name, _, _ in servers}
    for r in range(a.rounds):
        for name, url, extra in servers:
            n, wall = run(url, extra, a.streams, a.requests, a.tokens)
            tps[name].append(n / wall)
            print(f"round {r + 1}: {name:10s} {n:5d} tokens in {wall:6.2f} s: {n / wall:8.1f} tokens/s", flush=True)
    base = servers[0][0]
    for name, _, _ in servers:
        print(f"{name:10s} median {statistics.median(tps[name]):8.1f} tokens/s over {a.rounds} runs")
    for name, _, _ in servers[1:]:
        print(f"{name} / {base}: {statistics.median(tps[name]) / statistics.median(tps[base]):.2f}x "
              f"(aggregate tokens/s at {a.streams} concurrent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
