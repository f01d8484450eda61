#!/usr/bin/env python3
"""CLI contract tests for `multiserver` over real sockets.

Runs the binary named by $MULTISERVER (default build/multiserver). Every
subprocess has a timeout, so the suite cannot hang. Prints one closing line
"cli: N passed, N failed" and exits non-zero on any failure.
"""
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

MS = os.environ.get("MULTISERVER", "build/multiserver")
passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


class Server:
    """`multiserver serve ...` in the background; .address is its line."""

    def __init__(self, *args):
        self.p = subprocess.Popen([MS, "serve", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.address = self.p.stdout.readline().decode().strip()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            out, err = self.p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
        return self.p.returncode, out, err.decode()


def connect(addr, data=b"", *opts, timeout=30):
    return subprocess.run([MS, "connect", *opts, addr], input=data,
                          capture_output=True, timeout=timeout)


def alternatives(multi):
    return multi.split(";")


def test_address():
    r = subprocess.run([MS, "address", "net:example.org:8008~shs:1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s="],
                       capture_output=True, timeout=10)
    check(r.returncode == 0 and r.stdout == b"net:example.org:8008~shs:1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=\n",
          "address prints canonical form")
    for bad, word in [("net:host:70000", "70000"), ("Net:h:1", "lowercase"), ("net:h:1~", "empty"),
                      ("shs:1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=~net:h:1", "transform"),
                      ("net:h:1~shs:notbase64", "base64"), ("net:192.0.2.1:8008~noauth", "noauth")]:
        r = subprocess.run([MS, "address", bad], capture_output=True, timeout=10)
        err = r.stderr.decode()
        check(r.returncode == 2 and word in err and err.count("\n") == 1,
              f"address {bad!r} exits 2 with one line naming {word!r}: {r.returncode} {err!r}")
    r = subprocess.run([MS, "address", "--listen", "net:0.0.0.0:0~shs"], capture_output=True, timeout=10)
    check(r.returncode == 0, "port 0 is valid in a listen address")
    r = subprocess.run([MS, "address", "net:127.0.0.1:0"], capture_output=True, timeout=10)
    check(r.returncode == 2, "port 0 is invalid in a dial address")


def test_three_stacks_echo(tmp):
    sock = os.path.join(tmp, "a.sock")
    s = Server("--echo", "net:127.0.0.1:0", f"unix:{sock}~shs", "net:127.0.0.1:0~shs")
    alts = alternatives(s.address)
    check(len(alts) == 3, f"one line with three stacks: {s.address!r}")
    check(re.fullmatch(r"net:127\.0\.0\.1:\d+", alts[0]) is not None, f"net advertised with port: {alts[0]}")
    check(alts[1].startswith(f"unix:{sock}~shs:"), f"unix~shs advertised with key: {alts[1]}")
    check(oct(os.stat(sock).st_mode & 0o777) == "0o600", "unix socket file is 0600")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    for a in alts:
        r = connect(a, payload)
        check(r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(payload).digest(),
              f"echo over {a}: rc={r.returncode} len={len(r.stdout)} err={r.stderr!r}")
    # all three stacks in one connect address: the first alternative is used
    r = connect(s.address, b"multi")
    check(r.returncode == 0 and r.stdout == b"multi", "connect to the whole multiaddress")
    rc, _, err = s.stop()
    check(rc == 0, f"serve exits 0 on SIGTERM ({rc})")
    check(not os.path.exists(sock), "unix socket file removed on exit")
    check(err.count("connection ") >= 4, "each connection logged on stderr")


def test_concurrent(tmp):
    s = Server("--echo", "net:127.0.0.1:0~shs")
    procs = []
    for i in range(20):
        data = os.urandom(20000 + i)
        procs.append((data, subprocess.Popen([MS, "connect", s.address], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    ok = 0
    for data, p in procs:
        out, _ = p.communicate(data, timeout=60)
        ok += p.returncode == 0 and out == data
    check(ok == len(procs), f"20 concurrent shs echo clients: {ok} ok")
    s.stop()


def test_errors(tmp):
    # a port nobody listens on
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    r = connect(f"net:127.0.0.1:{port}")
    err = r.stderr.decode()
    check(r.returncode != 0 and "refused" in err and err.count("\n") == 1,
          f"closed port: one-line reason: {err!r}")
    # fallback from a dead alternative to a live one
    s = Server("--echo", "net:127.0.0.1:0")
    r = connect(f"net:127.0.0.1:{port};ws://localhost:1;{s.address}", b"fallback")
    check(r.returncode == 0 and r.stdout == b"fallback", f"fallback to the live alternative: {r.stderr!r}")
    s.stop()
    # wrong key, wrong app key; the server keeps serving
    s = Server("--echo", "net:127.0.0.1:0~shs")
    other = subprocess.run([MS, "keygen"], capture_output=True, timeout=10).stdout.decode().strip()
    key = other[1:-len(".ed25519")]
    wrong = re.sub(r"~shs:.*$", f"~shs:{key}", s.address)
    r = connect(wrong, b"x")
    check(r.returncode != 0 and "server key" in r.stderr.decode(), f"wrong server key: {r.stderr!r}")
    app = "dGhpcyBpcyBhIDMyIGJ5dGUgbmV0d29yayBrZXkhISE="
    r = connect(s.address, b"x", "--app-key", app)
    check(r.returncode != 0 and "app key" in r.stderr.decode(), f"wrong app key: {r.stderr!r}")
    r = connect(s.address, b"after")
    check(r.returncode == 0 and r.stdout == b"after", "server keeps serving after failed handshakes")
    rc, _, err = s.stop()
    check(err.count("MS_EHANDSHAKE") == 2, f"server logged both failed handshakes: {err!r}")


def test_keys_and_authorize(tmp):
    sk, ck = os.path.join(tmp, "server.secret"), os.path.join(tmp, "client.secret")
    sid = subprocess.run([MS, "keygen", "--out", sk], capture_output=True, timeout=10).stdout.decode().strip()
    cid = subprocess.run([MS, "keygen", "--out", ck], capture_output=True, timeout=10).stdout.decode().strip()
    check(re.fullmatch(r"@[A-Za-z0-9+/]{43}=\.ed25519", sid) is not None, f"keygen prints an id: {sid}")
    check(oct(os.stat(sk).st_mode & 0o777) == "0o600", "secret file is 0600")
    s = Server("--echo", "--keys", sk, "--authorize", cid, "net:127.0.0.1:0~shs")
    check(s.address.endswith("~shs:" + sid[1:-len(".ed25519")]), "advertised key is the --keys identity")
    r = connect(s.address, b"allowed", "--keys", ck)
    check(r.returncode == 0 and r.stdout == b"allowed", f"authorized client: {r.stderr!r}")
    r = connect(s.address, b"denied")
    check(r.returncode != 0 and r.stdout == b"", "unlisted client refused")
    rc, _, err = s.stop()
    check("MS_EUNAUTHORIZED" in err, f"refusal logged: {err!r}")


def test_sink(tmp):
    s = Server("--sink", "net:127.0.0.1:0", f"unix:{os.path.join(tmp, 'sink.sock')}~shs")
    for a in alternatives(s.address):
        r = connect(a, os.urandom(1 << 20))
        check(r.returncode == 0 and r.stdout == b"", f"--sink over {a} reads all, answers nothing: {r.stderr!r}")
    rc, _, err = s.stop()
    check(rc == 0 and err.count("connection ") == 2, f"sink server logs and exits 0: {rc} {err!r}")


def test_bridge(tmp):
    s = Server("net:127.0.0.1:0~shs")
    c = subprocess.Popen([MS, "connect", s.address], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    c.stdin.write(b"to server\n")
    c.stdin.close()
    line = s.p.stdout.readline()
    check(line == b"to server\n", f"server stdout gets client bytes: {line!r}")
    s.p.stdin.write(b"to client\n")
    s.p.stdin.close()
    out = c.stdout.read()
    c.wait(timeout=10)
    check(out == b"to client\n" and c.returncode == 0, f"client gets server bytes and exits 0: {out!r}")
    s.p.wait(timeout=10)
    check(s.p.returncode == 0, f"bridged server exits 0 after the connection ends ({s.p.returncode})")


def test_options_and_noauth(tmp):
    # --opt passes per-stack options; a misspelt key is refused with the known ones.
    s = Server("--sink", "--opt", "shs.handshake_timeout_ms=300", "net:127.0.0.1:0~shs")
    addr = s.address
    port = int(addr.split("~")[0].rsplit(":", 1)[1])
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", port)) as sock:  # says nothing
        sock.settimeout(5)
        try:
            got = sock.recv(1)
        except socket.timeout:
            got = None
    check(got == b"" and time.time() - t0 < 3,
          f"shs.handshake_timeout_ms=300 closes a silent client early ({time.time() - t0:.1f}s)")
    _, _, err = s.stop()
    check("timed out" in err, f"timeout logged: {err!r}")
    r = subprocess.run([MS, "serve", "--opt", "shs.handshake_timout_ms=1", "net:127.0.0.1:0~shs"],
                       capture_output=True, timeout=10)
    check(r.returncode == 1 and b"handshake_timeout_ms" in r.stderr,
          f"a misspelt option names the known keys: {r.stderr!r}")
    r = subprocess.run([MS, "serve", "--opt", "nodot", "net:127.0.0.1:0"], capture_output=True, timeout=10)
    check(r.returncode != 0 and b"PROTOCOL.KEY=VALUE" in r.stderr, f"--opt syntax: {r.stderr!r}")
    # noauth: refused on loopback TCP by default, allowed with its own flag,
    # and on unix sockets for this user.
    r = subprocess.run([MS, "serve", "net:127.0.0.1:0~noauth"], capture_output=True, timeout=10)
    check(r.returncode == 1 and b"allow_loopback_noauth" in r.stderr, f"loopback noauth refused: {r.stderr!r}")
    s = Server("--echo", "--allow-loopback-noauth", "net:127.0.0.1:0~noauth")
    r = connect(s.address, b"lo", "--allow-loopback-noauth")
    check(r.returncode == 0 and r.stdout == b"lo", f"--allow-loopback-noauth: {r.stderr!r}")
    s.stop()
    sock = os.path.join(tmp, "na.sock")
    s = Server("--echo", f"unix:{sock}~noauth")
    r = connect(s.address, b"same user")
    check(r.returncode == 0 and r.stdout == b"same user", f"unix noauth, same uid: {r.stderr!r}")
    s.stop()


def raw_http(port, req):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req.encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data


def test_ws(tmp):
    """ws and ws~shs end to end through the CLI, fallback after a 404,
    --allow-origin, --http-root, and noauth never over ws."""
    s = Server("--echo", "net:127.0.0.1:0", "ws://127.0.0.1:0/ssb~shs", "ws://127.0.0.1:0")
    alts = alternatives(s.address)
    check(len(alts) == 3 and re.fullmatch(r"ws://127\.0\.0\.1:\d+/ssb~shs:[A-Za-z0-9+/=]+", alts[1]),
          f"ws~shs advertised with port, path and key: {s.address!r}")
    payload = os.urandom(2 * 1024 * 1024 + 3)
    for a in alts[1:]:
        r = connect(a, payload)
        check(r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(payload).digest(),
              f"echo over {a}: rc={r.returncode} len={len(r.stdout)} err={r.stderr[-300:]!r}")
    # a path the server does not serve (404) falls back to the next alternative
    port = alts[2].rsplit(":", 1)[1]
    r = connect(f"ws://127.0.0.1:{port}/nothere;{alts[0]}", b"fallback")
    check(r.returncode == 0 and r.stdout == b"fallback", f"fallback after a 404: {r.stderr!r}")
    rc, _, err = s.stop()
    check(rc == 0, f"serve exits 0 ({rc})")
    check("404" in err, "the 404 is logged by the server")

    # --allow-origin
    s = Server("--echo", "--allow-origin", "http://good.example", "--allow-origin",
               "http://also.example", "ws://127.0.0.1:0")
    r = connect(s.address, b"hi", "--opt", "ws.origin=http://also.example")
    check(r.returncode == 0 and r.stdout == b"hi", f"allowed Origin: {r.stderr!r}")
    r = connect(s.address, b"hi", "--opt", "ws.origin=http://evil.example")
    check(r.returncode != 0 and b"403" in r.stderr, f"refused Origin: {r.stderr!r}")
    r = connect(s.address, b"none")
    check(r.returncode == 0 and r.stdout == b"none", "no Origin (not a browser) is served")
    s.stop()

    # --http-root
    root = os.path.join(tmp, "www")
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("<p>hi</p>")
    with open(os.path.join(root, "sub", "app.wasm"), "wb") as f:
        f.write(b"\0asm")
    with open(os.path.join(tmp, "secret.txt"), "w") as f:
        f.write("secret")
    os.symlink(os.path.join(tmp, "secret.txt"), os.path.join(root, "link.txt"))
    s = Server("--echo", "--http-root", root, "ws://127.0.0.1:0")
    port = int(s.address.rsplit(":", 1)[1])

    def get(path, m="GET"):
        return raw_http(port, f"{m} {path} HTTP/1.1\r\nHost: x\r\n\r\n")
    r = get("/")
    check(r.startswith(b"HTTP/1.1 200") and b"text/html" in r and r.endswith(b"<p>hi</p>"), f"GET /: {r[:200]!r}")
    r = get("/sub/app.wasm")
    check(r.startswith(b"HTTP/1.1 200") and b"application/wasm" in r, f"wasm type: {r[:200]!r}")
    r = get("/index.html", "HEAD")
    check(r.startswith(b"HTTP/1.1 200") and r.endswith(b"\r\n\r\n"), f"HEAD has no body: {r!r}")
    for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "/link.txt"]:
        r = get(bad)
        check(r.startswith(b"HTTP/1.1 403"), f"{bad} refused: {r[:60]!r}")
    check(get("/missing.js").startswith(b"HTTP/1.1 404"), "missing file 404")
    check(get("/", "POST").startswith(b"HTTP/1.1 405"), "POST refused")
    r = connect(s.address, b"still ws")
    check(r.returncode == 0 and r.stdout == b"still ws", "ws on the same port as the files")
    s.stop()

    # noauth is never allowed over ws, whatever the flags
    r = subprocess.run([MS, "serve", "--allow-remote-noauth", "--allow-loopback-noauth",
                        "ws://127.0.0.1:0~noauth"], capture_output=True, timeout=10)
    check(r.returncode != 0 and b"never allowed over ws" in r.stderr, f"ws~noauth refused: {r.stderr!r}")


def test_demo(tmp):
    """scripts/demo.sh (make demo) exits 0 on success and non-zero on a real failure."""
    env = {**os.environ, "MULTISERVER": os.path.abspath(MS)}
    r = subprocess.run(["bash", "scripts/demo.sh"], env=env, capture_output=True, timeout=120)
    check(r.returncode == 0 and b"cmp ok" in r.stdout,
          f"demo.sh exits 0: {r.returncode} {r.stdout[-300:]!r} {r.stderr[-300:]!r}")
    # A multiserver whose connect corrupts what it prints: the 4 MiB check must fail.
    bad = os.path.join(tmp, "ms-corrupt")
    with open(bad, "w") as f:
        f.write('#!/bin/sh\nif [ "$1" = connect ]; then "%s" "$@" | tr "\\000" "\\001"; exit 0; fi\n'
                'exec "%s" "$@"\n' % (env["MULTISERVER"], env["MULTISERVER"]))
    os.chmod(bad, 0o755)
    r = subprocess.run(["bash", "scripts/demo.sh"], env={**env, "MULTISERVER": bad},
                       capture_output=True, timeout=120)
    check(r.returncode == 1 and b"MISMATCH" in r.stdout,
          f"demo.sh exits 1 on a mismatch: {r.returncode} {r.stdout[-300:]!r}")


def test_shs_and_noise(tmp):
    """One server on net~shs and net~noise at once; connect over each."""
    s = Server("--echo", "net:127.0.0.1:0~shs", "net:127.0.0.1:0~noise")
    alts = alternatives(s.address)
    check(len(alts) == 2, f"one line with both stacks: {s.address!r}")
    if len(alts) != 2:
        s.stop()
        return
    key = alts[0].split("~shs:")[-1]
    check(re.fullmatch(r"net:127\.0\.0\.1:\d+~shs:[A-Za-z0-9+/]{43}=", alts[0]) is not None,
          f"shs advertised with key: {alts[0]}")
    check(re.fullmatch(r"net:127\.0\.0\.1:\d+~noise:[A-Za-z0-9+/]{43}=", alts[1]) is not None,
          f"noise advertised with key: {alts[1]}")
    check(alts[1].endswith("~noise:" + key), "the same identity on both stacks")
    payload = os.urandom(2 * 1024 * 1024 + 5)
    for a in alts:
        r = connect(a, payload)
        check(r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(payload).digest(),
              f"echo over {a}: rc={r.returncode} len={len(r.stdout)} err={r.stderr!r}")
    # a dead noise alternative first: falls back to the live one
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    r = connect(f"net:127.0.0.1:{dead}~noise:{key};{alts[1]}", b"fallback")
    check(r.returncode == 0 and r.stdout == b"fallback", f"noise fallback over a closed port: {r.stderr!r}")
    # a wrong key: the client names the likely causes, the server keeps serving
    port = alts[1].split(":")[2].split("~")[0]
    other = subprocess.run([MS, "keygen", "--out", os.path.join(tmp, "other.secret")],
                           capture_output=True, timeout=10).stdout.decode().strip()
    r = connect(f"net:127.0.0.1:{port}~noise:{other[1:-len('.ed25519')]}", b"x")
    check(r.returncode != 0 and b"server hung up after msg1" in r.stderr,
          f"wrong noise key fails clearly: {r.stderr!r}")
    # per-stack option accepted, a misspelt one refused
    r = connect(alts[1], b"opt", "--opt", "noise.handshake_timeout_ms=5000")
    check(r.returncode == 0 and r.stdout == b"opt", f"--opt noise.handshake_timeout_ms: {r.stderr!r}")
    r = connect(alts[1], b"opt", "--opt", "noise.handshake_timeout=5000")
    check(r.returncode != 0 and b"handshake_timeout_ms" in r.stderr, f"misspelt noise option: {r.stderr!r}")
    r = connect(alts[1], b"still")
    check(r.returncode == 0 and r.stdout == b"still", "server keeps serving noise")
    rc, _, err = s.stop()
    check(rc == 0, f"serve exits 0 on SIGTERM ({rc})")
    check("~noise:" in err and "~shs:" in err, "connections on both stacks logged")
    check("MS_EHANDSHAKE" in err, f"the wrong-key handshake logged: {err!r}")


def test_gzip(tmp):
    # ~shs~gzip: compressed inside the encrypted session, served and dialed
    # by the CLI; also over a unix socket and in the other order.
    sock = os.path.join(tmp, "gz.sock")
    s = Server("--echo", "net:127.0.0.1:0~shs~gzip", f"unix:{sock}~shs~gzip", "net:127.0.0.1:0~gzip~shs")
    alts = alternatives(s.address)
    check(len(alts) == 3 and re.fullmatch(r"net:127\.0\.0\.1:\d+~shs:[A-Za-z0-9+/=]+~gzip", alts[0]) is not None,
          f"~shs~gzip advertised with the key before ~gzip: {s.address!r}")
    payload = os.urandom(1 << 20) + b"compressible text " * 60000
    for a in alts:
        r = connect(a, payload)
        check(r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(payload).digest(),
              f"echo over {a}: rc={r.returncode} len={len(r.stdout)} err={r.stderr!r}")
    r = connect(alts[0], b"")
    check(r.returncode == 0 and r.stdout == b"", f"empty session over ~shs~gzip: {r.stderr!r}")
    rc, _, err = s.stop()
    check(rc == 0, f"serve exits 0 on SIGTERM ({rc})")
    # the size limit, per stack: the server ends the stream with MS_ELIMIT
    s = Server("--echo", "--opt", "gzip.max_bytes=100000", "net:127.0.0.1:0~shs~gzip")
    r = connect(s.address, b"z" * 1000000)
    check(r.returncode != 0 and len(r.stdout) <= 100000,
          f"gzip.max_bytes=100000 cuts a 1 MB upload: rc={r.returncode} got {len(r.stdout)}")
    _, _, err = s.stop()
    check("limit exceeded" in err, f"the limit is logged: {err[-300:]!r}")
    r = subprocess.run([MS, "serve", "--opt", "gzip.max_byte=1", "net:127.0.0.1:0~gzip"],
                       capture_output=True, timeout=10)
    check(r.returncode == 1 and b"max_bytes" in r.stderr, f"a misspelt gzip option names the known keys: {r.stderr!r}")
    r = subprocess.run([MS, "address", "net:127.0.0.1:1~gzip:9"], capture_output=True, timeout=10)
    check(r.returncode == 2 and b"no arguments" in r.stderr, f"gzip takes no arguments: {r.stderr!r}")


def test_scope_and_stats(tmp):
    """serve --scope prints what a peer in that scope can dial; --stats logs counters."""
    s = Server("--echo", "--scope", "device", "--stats", "net:0.0.0.0:0~shs")
    check(s.address.startswith("net:127.0.0.1:") and "0.0.0.0" not in s.address,
          f"--scope device lists loopback, never 0.0.0.0: {s.address!r}")
    r = connect(s.address, b"scoped")
    check(r.returncode == 0 and r.stdout == b"scoped", f"the device address works: {r.stderr!r}")
    time.sleep(1.2)
    rc, _, err = s.stop()
    check(re.search(r"stats connections=\d+ handshakes=\d+ accepted=1 ", err) is not None,
          f"--stats lines on stderr: {err[-400:]!r}")
    r = subprocess.run([MS, "serve", "--scope", "galaxy", "net:127.0.0.1:0"], capture_output=True,
                       timeout=10)
    check(r.returncode == 2 and b"device, local or public" in r.stderr, f"bad --scope: {r.stderr!r}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for t in [test_address, test_three_stacks_echo, test_concurrent, test_errors,
                  test_keys_and_authorize, test_sink, test_bridge, test_options_and_noauth,
                  test_demo, test_shs_and_noise, test_gzip, test_ws,
                  test_scope_and_stats]:
            try:
                t(tmp) if t.__code__.co_argcount else t()
            except Exception as e:  # a crash or timeout in a test is a failure
                check(False, f"{t.__name__} raised {e!r}")
    print(f"cli: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
