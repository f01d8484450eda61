#!/usr/bin/env python3
"""Live interop of the `gzip` transform with Python's zlib (an encoder and
decoder nobody here wrote) over plain TCP.

  1. their client -> our server (`multiserver serve --echo net:...~gzip`):
     a gzip member (zlib.compressobj(wbits=31)) sent in Z_SYNC_FLUSH'ed
     pieces; after each piece our echo must decode to exactly that piece
     without any more input from them (proves our per-turn sync flush);
     then they finish the member and half-close, and our trailer must end
     their decoder cleanly (CRC-32 and length checked by zlib), nothing
     after it. Corrupt input is refused and our server keeps serving.
  2. our client (`multiserver connect net:...~gzip`) -> their gzip echo
     server: 1 MiB each way, checksums, our trailer seen by their decoder,
     their trailer ends our client cleanly (exit 0); a server that hangs up
     before its trailer makes our client fail (MS_EHANGUP).

Usage: gzip_interop.py PATH_TO_MULTISERVER. Closing line:
"gzip-interop: N passed, N failed".
"""
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

MS = sys.argv[1] if len(sys.argv) > 1 else "build/multiserver"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def gz_comp():
    return zlib.compressobj(6, zlib.DEFLATED, 31)


def gz_decomp():
    return zlib.decompressobj(wbits=31)


def text(n):
    words = [b"the", b"feed", b"of", b"signed", b"messages", b"hello", b"world", b"gossip", b"\n"]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += words[(i * 7 + len(out)) % len(words)] + b" "
        i += 1
    return bytes(out[:n])


def serve(*args):
    p = subprocess.Popen([MS, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode().strip()
    return p, line


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    return p.returncode, err.decode(errors="replace")


def port_of(addr):
    return int(addr.split("~")[0].rsplit(":", 1)[1])


def read_decoded(sock, d, want, timeout=10):
    """Read until d has produced `want` bytes; returns them (or fewer)."""
    got = bytearray()
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        sock.settimeout(max(0.05, deadline - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        got += d.decompress(chunk)
    return bytes(got)


def their_client_our_server():
    p, addr = serve("--echo", "net:127.0.0.1:0~gzip")
    check(addr.endswith("~gzip"), f"served address ends with ~gzip: {addr!r}")
    port = port_of(addr)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    c, d = gz_comp(), gz_decomp()
    sent = hashlib.sha256()
    echoed = hashlib.sha256()
    total = 0
    pieces = [b"hi", b"x" * 1, text(100), os.urandom(1000), text(70000), os.urandom(300000),
              b"", text(5), os.urandom(1 << 20), b"last"]
    ok_each = True
    for i, piece in enumerate(pieces):
        wire = c.compress(piece) + c.flush(zlib.Z_SYNC_FLUSH)
        sock.sendall(wire)
        sent.update(piece)
        total += len(piece)
        back = read_decoded(sock, d, len(piece)) if piece else b""
        if back != piece:
            ok_each = False
            print(f"  piece {i} ({len(piece)} bytes): got {len(back)} back", file=sys.stderr)
        echoed.update(back)
    check(ok_each, "every sync-flushed piece came back decodable at once (our per-turn sync flush)")
    # finish our member, half-close, read to their (our server's) end
    sock.sendall(c.flush(zlib.Z_FINISH))
    sock.shutdown(socket.SHUT_WR)
    rest = bytearray()
    sock.settimeout(10)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += d.decompress(chunk)
    except (socket.timeout, zlib.error) as e:
        check(False, f"reading our server's end: {e!r}")
    sock.close()
    check(rest == b"", f"no data after the last piece ({len(rest)} bytes)")
    check(d.eof, "our server's gzip trailer ended their decoder (CRC-32 and length verified)")
    check(d.unused_data == b"", f"nothing after our trailer: {d.unused_data[:16]!r}")
    check(echoed.digest() == sent.digest(), f"checksums of {total} bytes match")

    # a corrupt stream is refused; the server keeps serving
    bad = socket.create_connection(("127.0.0.1", port), timeout=10)
    bad.sendall(b"\x1f\x8b\x08\x00garbage that is not deflate" * 10)
    bad.settimeout(10)
    try:
        closed = bad.recv(100) == b""
    except ConnectionResetError:
        closed = True
    bad.close()
    check(closed, "our server hangs up on corrupt gzip")
    s2 = socket.create_connection(("127.0.0.1", port), timeout=10)
    c2, d2 = gz_comp(), gz_decomp()
    s2.sendall(c2.compress(b"still here") + c2.flush(zlib.Z_SYNC_FLUSH))
    check(read_decoded(s2, d2, 10) == b"still here", "our server keeps serving after corrupt input")
    s2.close()
    time.sleep(0.2)
    rc, err = stop(p)
    check("malformed frame" in err, f"our server logs the corrupt stream: {err[-300:]!r}")


class TheirServer:
    """A gzip echo server: decodes their peer's member, echoes each decoded
    chunk sync-flushed, and at our trailer plus EOF finishes theirs."""

    def __init__(self, truncate=False):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.truncate = truncate
        self.result = {}
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        conn, _ = self.lsock.accept()
        conn.settimeout(30)
        c, d = gz_comp(), gz_decomp()
        got = hashlib.sha256()
        n = 0
        err = None
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                out = d.decompress(chunk)
                if out:
                    got.update(out)
                    n += len(out)
                    conn.sendall(c.compress(out) + c.flush(zlib.Z_SYNC_FLUSH))
            if not self.truncate:
                conn.sendall(c.flush(zlib.Z_FINISH))
        except Exception as e:  # noqa: BLE001 - recorded for the checks
            err = repr(e)
        self.result = {"digest": got.digest(), "n": n, "eof": d.eof,
                       "unused": d.unused_data, "err": err}
        conn.close()
        self.lsock.close()


def our_client_their_server():
    srv = TheirServer()
    payload = os.urandom(1 << 19) + text(1 << 19)
    r = subprocess.run([MS, "connect", f"net:127.0.0.1:{srv.port}~gzip"], input=payload,
                       capture_output=True, timeout=60)
    srv.t.join(10)
    res = srv.result
    check(r.returncode == 0, f"our client exits 0 after their trailer: rc={r.returncode} {r.stderr!r}")
    check(hashlib.sha256(r.stdout).digest() == hashlib.sha256(payload).digest(),
          f"our client got the 1 MiB echo back ({len(r.stdout)} bytes)")
    check(res.get("digest") == hashlib.sha256(payload).digest(),
          f"their server decoded our 1 MiB intact ({res.get('n')} bytes, {res.get('err')})")
    check(res.get("eof") is True and res.get("unused") == b"",
          "their decoder saw our trailer (CRC-32 and length), nothing after it")

    srv = TheirServer(truncate=True)
    r = subprocess.run([MS, "connect", f"net:127.0.0.1:{srv.port}~gzip"], input=b"cut me off",
                       capture_output=True, timeout=60)
    srv.t.join(10)
    check(r.returncode != 0 and r.stdout == b"cut me off",
          f"a server that hangs up before its trailer fails our client: rc={r.returncode}")
    check(b"hang-up" in r.stderr or b"EHANGUP" in r.stderr, f"...with MS_EHANGUP: {r.stderr!r}")


def main():
    for t in (their_client_our_server, our_client_their_server):
        try:
            t()
        except Exception as e:  # noqa: BLE001 - a crash is a failure
            check(False, f"{t.__name__} raised {e!r}")
    print(f"gzip-interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
