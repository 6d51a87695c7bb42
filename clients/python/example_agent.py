#!/usr/bin/python3
"""A minimal agent backend on specd: every turn sends the same long system prompt plus the conversation
so far, streams the reply, and reports how much of the prompt the daemon reused from its KV caches
(stats.reused: prompt tokens not recomputed, from this session's cache or blocks another session of the
same tenant computed) and how often the request was preempted.

    /usr/bin/python3 clients/python/example_agent.py [--socket PATH | --tcp HOST:PORT] [-n N] [TURN ...]

Without TURN arguments it reads one user turn per line from stdin.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from specd_client import Client, SpecdError  # noqa: E402

SYSTEM = ("You are a careful assistant. You answer briefly, you say when you do not know, "
          "and you never invent facts.\n")


def build_prompt(history, user):
    lines = [SYSTEM]
    for u, a in history:
        lines.append(f"User: {u}\nAssistant: {a}\n")
    lines.append(f"User: {user}\nAssistant:")
    return "".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket")
    ap.add_argument("--tcp")
    ap.add_argument("-n", type=int, default=24, help="tokens per reply")
    ap.add_argument("--history", type=int, default=2, help="earlier turns kept in the prompt")
    ap.add_argument("turns", nargs="*")
    args = ap.parse_args()
    turns = args.turns or (line.strip() for line in sys.stdin if line.strip())
    try:
        client = Client(socket=args.socket, tcp=args.tcp)
    except SpecdError as e:
        print(f"agent: {e.message}", file=sys.stderr)
        return 3
    history = []
    with client:
        for user in turns:
            prompt = build_prompt(history[-args.history:], user)
            print(f"> {user}\n", end="", flush=True)
            try:
                for ev in client.generate(prompt, max_tokens=args.n, stop=["\nUser:"]):
                    if ev["type"] == "token":
                        print(ev["text"], end="", flush=True)
                    else:
                        done = ev
            except SpecdError as e:
                print(f"\nagent: the daemon refused this turn: {e.code}: {e.message}", file=sys.stderr)
                continue
            st = done["stats"]
            print(f"\n  [{st['generated']} tokens, {done['finish_reason']}; prompt {st['prompt_tokens']} tokens,"
                  f" {st['prefilled']} computed, {st['reused']} reused; preempted {st['preempted']} times;"
                  f" acceptance {st['acceptance']:.2f}]")
            history.append((user, done["text"].strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
