"""Python client for `specd serve` (protocol v1, docs/protocol.md), on Debian's python3-zmq and
python3-msgpack.

    from specd_client import Client
    with Client() as c:                       # the daemon's default socket
        for ev in c.generate("Once upon a time", max_tokens=32):
            if ev["type"] == "token":
                print(ev["text"], end="", flush=True)
            else:                             # the last event is the request's "done"
                print("\\n", ev["finish_reason"], ev["stats"]["ms_per_token"])

Every call raises SpecdError (with .code and .message from the daemon's `error` reply),
ConnectError (no daemon at the endpoint, or the connection dropped) or Timeout (the daemon was silent
for `timeout` seconds); none blocks forever. One Client is one connection and is not thread-safe:
open one per thread.
"""
import os
import pwd
import socket as socketlib
import stat
import struct
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
MAX_MSG_BYTES = 4 << 20
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000


class SpecdError(Exception):
    """The daemon answered a request with an `error` reply."""

    def __init__(self, code, message, reply=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply = reply or {}


class ConnectError(SpecdError):
    """No daemon at the endpoint, or the connection to it dropped."""

    def __init__(self, message):
        super().__init__("connect", message)


class Timeout(SpecdError):
    """The daemon sent nothing for the client's timeout."""

    def __init__(self, message):
        super().__init__("timeout", message)


def default_socket_path():
    """$XDG_RUNTIME_DIR/specd.sock, else /tmp/specd-$UID/specd.sock (the same rule as `specd serve`)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "specd.sock")
    return f"/tmp/specd-{os.getuid()}/specd.sock"


DAEMON_UID_ENV = "SPECD_DAEMON_UID"


def check_daemon_peer(path):
    """Who listens on the socket, checked before anything is sent (the rule of the C client): the socket
    file's owner and the listening process (SO_PEERCRED) must be $SPECD_DAEMON_UID (a uid or a user name)
    when set, else this
    user or root. Raises ConnectError naming the uid found."""
    want = os.environ.get(DAEMON_UID_ENV)
    if want:
        if not want.isdigit():  # a user name, e.g. the systemd unit's dynamic user "specd"
            try:
                want = str(pwd.getpwnam(want).pw_uid)
            except KeyError:
                raise ConnectError(f"{DAEMON_UID_ENV}='{want}' is neither a uid nor a known user name") from None
        ok, expect = (lambda uid: uid == int(want)), f"uid {want} ({DAEMON_UID_ENV})"
    else:
        ok, expect = (lambda uid: uid in (os.getuid(), 0)), f"you (uid {os.getuid()}) or root"

    def refuse(what, uid):
        return ConnectError(f"refusing to talk to {path}: {what} is uid {uid}, expected {expect}; another "
                            f"user may have taken the socket (set {DAEMON_UID_ENV} to trust a daemon of another user)")
    owner = os.lstat(path).st_uid
    if not ok(owner):
        raise refuse("the socket file's owner", owner)
    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as e:
            raise ConnectError(f"no daemon at ipc://{path}: is `specd serve` running? ({e.strerror})") from None
        _pid, uid, _gid = struct.unpack("3i", s.getsockopt(socketlib.SOL_SOCKET, socketlib.SO_PEERCRED,
                                                          struct.calcsize("3i")))
        if not ok(uid):
            raise refuse("the listening process", uid)


def resolve_endpoint(socket=None, tcp=None):
    """An endpoint from --socket / --tcp style arguments (tcp "HOST:PORT", "PORT" or ":PORT")."""
    if tcp is not None:
        host, _, port = str(tcp).rpartition(":")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"tcp: '{tcp}' has no valid port (1..65535)")
        return f"tcp://{host or '127.0.0.1'}:{int(port)}"
    return "ipc://" + (socket or default_socket_path())


def read_curve_key(path, name):
    """The Z85 key of the `name = KEY` line ("public" or "secret") of a `specd keygen` key file, as bytes.
    A secret key file must be readable by its owner only."""
    if name == "secret" and os.stat(path).st_mode & 0o077:
        raise ValueError(f"secret key file {path} is readable by group or others: chmod 600 it")
    with open(path, encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition("=")
            if key.strip() == name and len(value.strip()) == 40:
                return value.strip().encode("ascii")
    raise ValueError(f"key file {path}: no valid `{name} = <40 Z85 characters>` line (write keys with specd keygen)")


class Client:
    """One DEALER connection to the daemon.

    endpoint: "ipc:///path" or "tcp://host:port"; or give socket=PATH / tcp=HOST:PORT; default: the
    daemon's default socket. timeout: seconds the daemon may stay silent during a request (None: wait
    forever; the daemon sends heartbeats while a request is queued). connect_timeout: seconds for the
    first ping that proves a v1 daemon answers. wait: seconds to keep retrying while no daemon answers
    yet (one still loading its models has no socket until it is ready); 0: one try.
    curve_server, curve_key: TCP with CURVE (a daemon started with --curve-secret): the daemon's public
    key file (NAME.pub of `specd keygen`) and this client's key file (NAME.key); both or neither.
    """

    def __init__(self, endpoint=None, socket=None, tcp=None, timeout=60.0, connect_timeout=2.0, wait=0.0,
                 curve_server=None, curve_key=None):
        self.endpoint = endpoint or resolve_endpoint(socket, tcp)
        if (curve_server is None) != (curve_key is None):
            raise ValueError("CURVE needs both curve_server (the daemon's .pub) and curve_key (this client's .key)")
        self._curve = None
        if curve_server is not None:
            self._curve = (read_curve_key(curve_server, "public"), read_curve_key(curve_key, "public"),
                           read_curve_key(curve_key, "secret"))
        if not self.endpoint.startswith(("ipc://", "tcp://")):
            raise ValueError(f"endpoint '{self.endpoint}': expected ipc://PATH or tcp://HOST:PORT")
        self.timeout = timeout
        # wait: a daemon still starting (loading its models, no socket yet): retry for up to `wait` seconds
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                self._connect(connect_timeout)
                return
            except ConnectError:
                if time.monotonic() + 0.1 > deadline:
                    raise
                time.sleep(0.1)

    def _connect(self, connect_timeout):
        self._next_id = 1
        self._pending = {}  # id -> replies that arrived while waiting for another request
        self._inflight = set()
        self._connected = False
        self._lost = False
        self._ctx = None
        if self.endpoint.startswith("ipc://"):
            path = self.endpoint[len("ipc://"):]
            try:
                is_sock = stat.S_ISSOCK(os.stat(path).st_mode)
            except FileNotFoundError:
                raise self._no_daemon("no socket file") from None
            if not is_sock:
                raise self._no_daemon("the file is not a socket")
            check_daemon_peer(path)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        for opt, val in ((zmq.LINGER, 0), (zmq.MAXMSGSIZE, MAX_MSG_BYTES), (zmq.RCVHWM, 0),
                         (zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS), (zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS),
                         (zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)):
            self._sock.setsockopt(opt, val)
        if self._curve:
            self._sock.curve_serverkey, self._sock.curve_publickey, self._sock.curve_secretkey = self._curve
        # connection events: a refused connect or a dropped connection fails a wait at once
        self._mon = self._sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED)
        self._sock.connect(self.endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._mon, zmq.POLLIN)
        try:
            rid = self._send("ping")
            self._wait(rid, connect_timeout, connecting=True)
        except Exception:
            self.close()
            raise

    # ---- plumbing ----

    def _no_daemon(self, why):
        return ConnectError(f"no daemon at {self.endpoint}: is `specd serve` running? ({why})")

    def close(self):
        if getattr(self, "_ctx", None) is None:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._mon.close(0)
        self._sock.close(0)
        self._ctx.term()
        self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, op, **fields):
        if self._lost:
            self._read_events()
            if not self._connected:
                raise ConnectError(f"lost the connection to the daemon at {self.endpoint}")
            self._lost = False
        rid = self._next_id
        self._next_id += 1
        msg = {"v": PROTOCOL_VERSION, "id": rid, "op": op}
        msg.update({k: v for k, v in fields.items() if v is not None})
        self._sock.send(msgpack.packb(msg, use_bin_type=True))
        self._inflight.add(rid)
        return rid

    def _read_events(self):
        events = []
        while self._mon.poll(0):
            frames = self._mon.recv_multipart()
            ev = int.from_bytes(frames[0][:2], "little")
            if ev == zmq.EVENT_CONNECTED:
                self._connected = True
            elif ev == zmq.EVENT_DISCONNECTED and self._connected:
                self._connected = False
                self._lost = True
            events.append(ev)
        return events

    def _wait(self, rid, timeout, connecting=False):
        """The next reply to request rid (replies to other requests are kept for later)."""
        q = self._pending.get(rid)
        if q:
            return self._took(q.pop(0))
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            ready = dict(self._poller.poll(None if left is None else int(left * 1000) + 1))
            if self._sock in ready:
                rep = msgpack.unpackb(self._sock.recv(), raw=False, strict_map_key=False)
                if not isinstance(rep, dict):
                    raise SpecdError("protocol", f"bad reply from {self.endpoint}: not a map")
                if rep.get("type") == "heartbeat":
                    continue
                if rep.get("id") == rid or (rep.get("id") is None and rep.get("type") == "error"):
                    return self._took(rep)
                if rep.get("id") in self._inflight:  # another request's reply: keep it for its reader
                    self._pending.setdefault(rep.get("id"), []).append(rep)
                continue
            if self._mon in ready:
                events = self._read_events()
                if self._lost:
                    raise ConnectError(f"the daemon at {self.endpoint} closed the connection")
                if connecting and not self._connected and zmq.EVENT_CONNECT_RETRIED in events:
                    raise self._no_daemon("connection refused")
                continue
            if end is not None and time.monotonic() >= end:
                if connecting:
                    raise self._no_daemon("no answer")
                raise Timeout(f"timed out after {timeout} s waiting for the daemon at {self.endpoint}")

    def _took(self, rep):
        if rep.get("type") != "token":  # a final reply: the request is over
            self._inflight.discard(rep.get("id"))
            self._pending.pop(rep.get("id"), None)
        return rep

    @staticmethod
    def _check(rep):
        if rep.get("type") == "error":
            raise SpecdError(rep.get("code", "?"), rep.get("message", ""), rep)
        return rep

    def _call(self, op, **fields):
        rid = self._send(op, **fields)
        rep = self._check(self._wait(rid, self.timeout))
        if rep.get("type") != "result":
            raise SpecdError("protocol", f"unexpected '{rep.get('type')}' reply to {op}")
        return rep

    # ---- the calls ----

    def generate(self, prompt=None, tokens=None, max_tokens=None, temperature=None, top_k=None, top_p=None,
                 min_p=None, seed=None, stop=None, mode=None, draft_max=None, stream=True, add_bos=None,
                 special=None):
        """A generator of events: {"type": "token", "text", "tokens", "id"} while streaming, then one
        {"type": "done", "text", "tokens", "finish_reason", "stats", "id"} last. Leaving the loop early
        (break, an exception) cancels the request on the daemon. add_bos (default: the daemon's, yes) and
        special (parse special-token text such as "<|eot_id|>" into those tokens) apply to prompt text."""
        rid = self._send("generate", prompt=prompt, tokens=tokens, max_tokens=max_tokens,
                         temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
                         stop=list(stop) if stop else None, mode=mode, draft_max=draft_max, stream=stream,
                         add_bos=add_bos, special=special)
        yield from self._events(rid, "generate")

    def chat(self, messages, add_generation_prompt=None, max_tokens=None, temperature=None, top_k=None,
             top_p=None, min_p=None, seed=None, stop=None, mode=None, draft_max=None, stream=True):
        """Like generate, for a conversation: messages is a list of {"role", "content"}; the daemon renders
        it with the model's chat template and generation ends at the end-of-turn token."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        rid = self._send("chat", messages=msgs, add_generation_prompt=add_generation_prompt,
                         max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                         seed=seed, stop=list(stop) if stop else None, mode=mode, draft_max=draft_max,
                         stream=stream)
        yield from self._events(rid, "chat")

    def _events(self, rid, op):
        finished = False
        try:
            while True:
                rep = self._wait(rid, self.timeout)
                if rep.get("type") == "error":
                    finished = True  # the request is over: nothing to cancel
                    self._check(rep)
                if rep.get("type") == "done":
                    finished = True
                    yield rep
                    return
                if rep.get("type") != "token":
                    finished = True
                    raise SpecdError("protocol", f"unexpected '{rep.get('type')}' reply to {op}")
                yield rep
        finally:
            if not finished:
                self._abandon(rid)

    def _abandon(self, rid):
        """Cancels request rid and waits for its end, so the connection stays usable."""
        try:
            self.cancel(rid)
            while rid in self._inflight and self._wait(rid, self.timeout).get("type") == "token":
                pass
        except SpecdError:
            pass

    def complete(self, prompt=None, **params):
        """generate without streaming: the `done` reply (text, tokens, finish_reason, stats)."""
        params["stream"] = False
        done = None
        for ev in self.generate(prompt, **params):
            done = ev
        return done

    def complete_chat(self, messages, **params):
        """chat without streaming: the `done` reply."""
        params["stream"] = False
        done = None
        for ev in self.chat(messages, **params):
            done = ev
        return done

    def tokenize(self, text, add_bos=True, special=False):
        """special: special-token text ("<|eot_id|>") becomes that one token."""
        return self._call("tokenize", text=text, add_bos=add_bos, special=special)["tokens"]

    def detokenize(self, tokens, special=False):
        """special: control tokens come back as their text instead of nothing."""
        return self._call("detokenize", tokens=list(tokens), special=special)["text"]

    def info(self):
        return self._call("info")

    def stats(self):
        return self._call("stats")

    def cancel(self, request_id):
        """Cancels one of this connection's requests; True when it was queued or running."""
        return bool(self._call("cancel", target=request_id)["found"])

    def ping(self):
        """One round trip; returns its duration in seconds."""
        t0 = time.perf_counter()
        self._call("ping")
        return time.perf_counter() - t0

    @property
    def last_id(self):
        """The id of the most recent request sent (for cancel)."""
        return self._next_id - 1
