"""Run by tests/test_python_client.c: exercises clients/python/specd_client.py against a running daemon.
usage: python3 tests/python_client_check.py ENDPOINT   (exit 0 when every check holds; failures on stderr)"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
import specd_client as sc  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"  check failed: {what}", file=sys.stderr)


def main(endpoint):
    # no daemon: a clear ConnectError, fast
    t0 = time.monotonic()
    try:
        sc.Client(socket="/tmp/specd-test-no-such-dir/none.sock")
        check(False, "connect to a missing socket raised nothing")
    except sc.ConnectError as e:
        check("no daemon at ipc:///tmp/specd-test-no-such-dir/none.sock" in str(e), f"message: {e}")
    check(time.monotonic() - t0 < 1.0, "missing socket took over 1 s")
    # wait: retried for about that long (a daemon still loading has no socket yet), then the same error
    t0 = time.monotonic()
    try:
        sc.Client(socket="/tmp/specd-test-no-such-dir/none.sock", wait=0.5)
        check(False, "connect with wait to a missing socket raised nothing")
    except sc.ConnectError as e:
        check("no socket file" in str(e), f"message: {e}")
    check(0.3 < time.monotonic() - t0 < 2.0, f"wait=0.5 took {time.monotonic() - t0:.2f} s")

    # a daemon of another user than the one expected is refused before anything is sent
    if endpoint.startswith("ipc://"):
        os.environ[sc.DAEMON_UID_ENV] = str(os.getuid() + 1)
        try:
            sc.Client(endpoint)
            check(False, "a daemon of an unexpected uid was accepted")
        except sc.ConnectError as e:
            check("refusing to talk to" in str(e) and f"uid {os.getuid()}" in str(e), f"message: {e}")
        del os.environ[sc.DAEMON_UID_ENV]
        check(sc.default_socket_path().endswith("/specd.sock"), "default socket path")

    with sc.Client(endpoint, timeout=30) as c:
        check(0 < c.ping() < 1.0, "ping round trip")
        ids = c.tokenize("Once upon a time", add_bos=False)
        check(len(ids) > 1 and all(isinstance(i, int) for i in ids), f"tokenize: {ids}")
        check(c.tokenize("Once upon a time")[1:] == ids, "tokenize with BOS = BOS + ids")
        check("Once upon a time" in c.detokenize(ids), "detokenize(tokenize(x)) contains x")
        info = c.info()
        check(info.get("protocol") == 1 and "limits" in info, f"info: {info}")
        check("requests" in c.stats(), "stats has requests")

        # streaming: token events then exactly one done, pieces adding up to it
        events = list(c.generate("Once upon a time", max_tokens=32, temperature=0))
        check(events and events[-1]["type"] == "done", "last event is done")
        check(all(e["type"] == "token" for e in events[:-1]), "only token events before done")
        done = events[-1]
        check("".join(e["text"] for e in events[:-1]) == done["text"], "pieces add up to the text")
        check(sum((e["tokens"] for e in events[:-1]), []) == done["tokens"], "pieces add up to the ids")
        check(done["finish_reason"] in ("length", "stop"), f"finish_reason {done['finish_reason']}")
        # greedy: plain, spec and unstreamed agree
        plain = c.complete("Once upon a time", max_tokens=32, temperature=0, mode="plain")
        check(plain["text"] == done["text"], "plain == spec (greedy)")

        # cancel from inside the loop, by the event's id (a token takes ~50 us: on a loaded machine the
        # request may end before the cancel arrives, so up to 5 tries, one of which must be cancelled)
        cancelled = False
        for _ in range(5):
            last = None
            for ev in c.generate("The robot", max_tokens=120, temperature=0, mode="plain"):
                if last is None:
                    found = c.cancel(ev["id"])
                last = ev
            check(last["type"] == "done", f"generate ended with {last}")
            if last["finish_reason"] == "cancelled":
                check(found and len(last["tokens"]) < 120, "a cancelled request was found and stopped early")
                cancelled = True
                break
        check(cancelled, "no request was cancelled in 5 tries")

        # leaving the loop early cancels, and the connection goes on
        g = c.generate("The robot", max_tokens=100)
        next(g)
        g.close()
        check(c.ping() < 1.0, "usable after an abandoned generate")

        # the daemon's errors arrive as SpecdError with its code
        try:
            list(c.generate("cat " * 300))
            check(False, "an over-long prompt raised nothing")
        except sc.SpecdError as e:
            check(e.code == "too_long", f"code {e.code}")

        # special tokens and add_bos
        sp = c.tokenize("<s>hi</s>", add_bos=False, special=True)
        check(sp[0] == 1 and sp[-1] == 2, f"special ids {sp}")
        check(1 not in c.tokenize("<s>hi", add_bos=False), "without special, <s> is text")
        check(c.detokenize(sp, special=True).startswith("<s>"), "detokenize special renders <s>")
        check("<s>" not in c.detokenize(sp), "detokenize leaves control tokens out")
        with_bos = c.complete("Once upon a time", max_tokens=4, temperature=0)
        no_bos = c.complete("Once upon a time", max_tokens=4, temperature=0, add_bos=False)
        check(no_bos["stats"]["prompt_tokens"] == with_bos["stats"]["prompt_tokens"] - 1, "add_bos=False drops BOS")
        as_text = c.complete("<s>Once upon a time", max_tokens=4, temperature=0, add_bos=False, special=True)
        check(as_text["tokens"] == with_bos["tokens"], "special <s> in the text = add_bos")
        # chat without a chat template: the daemon says so
        try:
            c.complete_chat([{"role": "user", "content": "hi"}])
            check(False, "chat without a template raised nothing")
        except sc.SpecdError as e:
            check(e.code == "unsupported" and "--chat-template" in str(e), f"chat: {e}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
