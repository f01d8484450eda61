#!/usr/bin/env python3
"""WebSocket interop against implementations nobody here wrote: PyPI
`websockets` (a full client and server) and `wsproto` (a sans-I/O protocol
machine used here to check our bytes on the wire).

  1. websockets client -> `multiserver serve --echo 'ws://127.0.0.1:0'`:
     1 MiB binary echo with SHA-256, a ping, a fragmented message, a text
     message (echoed as its bytes), a close with status code and reason.
  2. websockets server (echo) <- `multiserver connect 'ws://127.0.0.1:PORT/p'`:
     1 MiB through stdin/stdout, checksums, exit 0 after the close handshake.
  3. wsproto as the client of our server: our 101 is accepted, our frames
     are exact (unmasked, shortest length form: b'\\x82\\x05hello'), a pong
     answers its ping, a close 1000 answers its close.
  4. wsproto as the server of `multiserver connect`: our request is
     accepted, our frames are masked and parse, stdin EOF sends a close 1000.
  5. wss: (1) and (2) over TLS with a CA made here with openssl, when the
     build has the tls transform.

Usage: ws_interop.py PATH_TO_MULTISERVER. Closing line:
"ws-interop: N passed, N failed".
"""
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

try:
    from websockets.sync.client import connect as ws_connect
    from websockets.sync.server import serve as ws_serve
    import wsproto
    from wsproto import WSConnection, ConnectionType
    from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection,
                                Ping, Pong, Request, TextMessage)
except ImportError as e:  # the venv from .ci/setup provides these
    print(f"ws-interop: 0 passed, 1 failed  (missing Python package: {e}; run .ci/setup)")
    sys.exit(1)

MS = sys.argv[1] if len(sys.argv) > 1 else "build/multiserver"
SIZE = 1 << 20
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def start_server(addr, extra=()):
    p = subprocess.Popen([MS, "serve", "--echo", *extra, addr], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    return p, line


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    return err


def websockets_client(url, ssl_ctx=None, tag="ws"):
    data = os.urandom(SIZE)
    with ws_connect(url, ssl=ssl_ctx, max_size=None, open_timeout=10,
                    close_timeout=10) as c:
        # binary echo: our echo is a byte stream, messages may be re-cut
        for i in range(0, SIZE, 65536):
            c.send(data[i:i + 65536])
        got = bytearray()
        while len(got) < SIZE:
            m = c.recv(timeout=20)
            check(isinstance(m, bytes), f"{tag}: echo comes in binary messages")
            got += m
        check(hashlib.sha256(got).digest() == hashlib.sha256(data).digest(),
              f"{tag}: 1 MiB echo checksum")
        # ping
        waiter = c.ping(b"are you there")
        check(waiter.wait(10), f"{tag}: pong for our ping")
        # fragmented message
        c.send([b"frag", b"mented", b" message"])
        got = bytearray()
        while len(got) < 18:
            got += c.recv(timeout=10)
        check(bytes(got) == b"fragmented message", f"{tag}: fragmented echo {bytes(got)!r}")
        # text is delivered as its bytes
        c.send("héllo")
        m = c.recv(timeout=10)
        check(m == "héllo".encode(), f"{tag}: text echoed as bytes: {m!r}")
        c.close(code=1000, reason="bye")
        rcvd = getattr(c, "close_rcvd", None) or c.protocol.close_rcvd
        check(rcvd is not None and rcvd.code == 1000, f"{tag}: our close answers theirs: {rcvd}")


def websockets_server_our_client(ssl_ctx=None, tag="ws", connect_extra=()):
    seen = {}

    def handler(conn):
        seen["path"] = conn.request.path
        seen["host"] = conn.request.headers.get("Host")
        for msg in conn:
            conn.send(msg)

    with ws_serve(handler, "127.0.0.1", 0, ssl=ssl_ctx, max_size=None) as srv:
        port = srv.socket.getsockname()[1]
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        data = os.urandom(SIZE)
        scheme = "wss" if ssl_ctx else "ws"
        p = subprocess.Popen([MS, "connect", *connect_extra, f"{scheme}://127.0.0.1:{port}/p"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        # Like most WebSocket implementations, websockets answers a close
        # frame at once and drops what it had not sent yet: close stdin (our
        # client's close) only once the whole echo is back.
        wt = threading.Thread(target=lambda: (p.stdin.write(data), p.stdin.flush()), daemon=True)
        wt.start()
        got = bytearray()
        while len(got) < SIZE:
            b = p.stdout.read1(65536)
            if not b:
                break
            got += b
        wt.join(10)
        p.stdin.close()
        got += p.stdout.read()
        err = p.stderr.read()
        p.wait(timeout=30)
        check(p.returncode == 0, f"{tag}: connect exit {p.returncode}: {err[-500:]!r}")
        check(hashlib.sha256(got).digest() == hashlib.sha256(data).digest(),
              f"{tag}: 1 MiB through their echo ({len(got)} bytes back)")
        check(seen.get("path") == "/p", f"{tag}: request path {seen.get('path')}")
        check(seen.get("host") == f"127.0.0.1:{port}", f"{tag}: Host {seen.get('host')}")
        srv.shutdown()


def recv_some(s):
    b = s.recv(65536)
    if not b:
        raise EOFError
    return b


def wsproto_client(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    w = WSConnection(ConnectionType.CLIENT)
    s.sendall(w.send(Request(host=f"127.0.0.1:{port}", target="/")))
    events = []
    while not any(isinstance(e, AcceptConnection) for e in events):
        w.receive_data(recv_some(s))
        events += list(w.events())
    check(any(isinstance(e, AcceptConnection) for e in events), "wsproto: our 101 accepted")
    s.sendall(w.send(BytesMessage(data=b"hello")))
    raw = b""
    while len(raw) < 7:
        raw += recv_some(s)
    check(raw == b"\x82\x05hello", f"wsproto: our frame bytes {raw!r}")
    w.receive_data(raw)
    ev = list(w.events())
    check(len(ev) == 1 and isinstance(ev[0], BytesMessage) and ev[0].data == b"hello",
          f"wsproto: parses our frame: {ev}")
    s.sendall(w.send(Ping(payload=b"pp")))
    raw = recv_some(s)
    check(raw == b"\x8a\x02pp", f"wsproto: pong bytes {raw!r}")
    s.sendall(w.send(CloseConnection(code=1000, reason="done")))
    raw = b""
    try:
        while True:
            raw += recv_some(s)
    except (EOFError, ConnectionResetError):
        pass
    check(raw == b"\x88\x02\x03\xe8", f"wsproto: close 1000 bytes {raw!r}")
    w.receive_data(raw)
    ev = list(w.events())
    check(any(isinstance(e, CloseConnection) and e.code == 1000 for e in ev),
          f"wsproto: parses our close: {ev}")
    s.close()


def wsproto_server_our_client():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    p = subprocess.Popen([MS, "connect", f"ws://127.0.0.1:{port}/wsproto"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ls.settimeout(10)
    s, _ = ls.accept()
    s.settimeout(10)
    w = WSConnection(ConnectionType.SERVER)
    req = None
    while req is None:
        w.receive_data(recv_some(s))
        for e in w.events():
            if isinstance(e, Request):
                req = e
    check(req.target == "/wsproto", f"wsproto server: target {req.target}")
    s.sendall(w.send(AcceptConnection()))
    p.stdin.write(b"from our client")
    p.stdin.flush()
    raw = b""
    while len(raw) < 2 + 4 + 15:
        raw += recv_some(s)
    check(raw[0] == 0x82 and raw[1] == 0x80 | 15, f"wsproto server: masked binary frame header {raw[:2]!r}")
    w.receive_data(raw)
    ev = list(w.events())
    check(len(ev) == 1 and isinstance(ev[0], BytesMessage) and ev[0].data == b"from our client",
          f"wsproto server: parses our masked frame: {ev}")
    s.sendall(w.send(BytesMessage(data=b"to you")))
    p.stdin.close()  # EOF: our client sends its close
    closed = None
    while closed is None:
        w.receive_data(recv_some(s))
        for e in w.events():
            if isinstance(e, CloseConnection):
                closed = e
    check(closed.code == 1000, f"wsproto server: close code {closed.code}")
    s.sendall(w.send(closed.response()))
    s.close()
    out = p.stdout.read()
    err = p.stderr.read()
    p.wait(timeout=10)
    check(out == b"to you", f"wsproto server: our client's output {out!r}")
    check(p.returncode == 0, f"wsproto server: connect exit {p.returncode}: {err[-300:]!r}")
    ls.close()


def make_ca(d):
    """A CA and a server certificate for 127.0.0.1/localhost, with openssl."""
    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ws-interop CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return [os.path.join(d, n) for n in ("ca.pem", "srv.pem", "srv.key")]


def main():
    srv, addr = start_server("ws://127.0.0.1:0")
    check(addr.startswith("ws://127.0.0.1:"), f"advertised {addr!r}")
    port = int(addr.rsplit(":", 1)[1])
    try:
        websockets_client(addr)
        wsproto_client(port)
    except Exception as e:
        check(False, f"against our server: {e!r}")
    err = stop(srv)
    check("Traceback" not in err, "server log")
    try:
        websockets_server_our_client()
        wsproto_server_our_client()
    except Exception as e:
        check(False, f"against their server: {e!r}")

    d = tempfile.mkdtemp(prefix="wsdrv-ca-") if shutil.which("openssl") else None
    srv = addr = None
    if d:
        ca, cert, key = make_ca(d)
        srv, addr = start_server("wss://127.0.0.1:0",
                                 ["--opt", f"wss.cert={cert}", "--opt", f"wss.key={key}"])
        if not addr:
            err = stop(srv)
            check("needs the tls transform" in err, f"wss refused clearly: {err!r}")
            srv = None
    if srv:
        try:
            check(addr.startswith("wss://127.0.0.1:"), f"wss advertised {addr!r}")
            ctx = ssl.create_default_context(cafile=ca)
            try:
                websockets_client(addr, ctx, "wss")
            except Exception as e:
                check(False, f"wss against our server: {e!r}")
            stop(srv)
            sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            sctx.load_cert_chain(cert, key)
            try:
                websockets_server_our_client(sctx, "wss", ["--opt", f"wss.ca={ca}"])
            except Exception as e:
                check(False, f"wss against their server: {e!r}")
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        if d:
            shutil.rmtree(d, ignore_errors=True)
        print("ws-interop: wss part skipped (no tls transform in this build, or no openssl)")
    print(f"ws-interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
