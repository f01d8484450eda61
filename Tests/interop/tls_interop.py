#!/usr/bin/env python3
"""Live TLS interop against implementations nobody here wrote: Python's
`ssl` module (its own client/server logic over OpenSSL) and the `openssl`
CLI's s_client.

  1. their client -> our server (`multiserver serve --echo … net:127.0.0.1:0~tls`):
     1 MiB echoed with a checksum over TLS 1.3 and over TLS 1.2; unwrap()
     completes, so our server answered their close_notify with its own.
  2. our client (`multiserver connect --opt tls.ca=… net:localhost:PORT~tls`)
     -> their echo server: 1 MiB each way, their server saw our close_notify
     (a clean end, not a ragged EOF), ours saw theirs (exit 0).
  3. failures: our client without the test CA (verify failed, their server
     sees the alert); their client expecting another name fails against our
     server, which keeps serving and logs MS_EHANDSHAKE.
  4. openssl s_client (verifying chain and name) echoes through our server.

Certificates are made with the openssl CLI in a temp dir (skipped with a
message when it is missing). Usage: tls_interop.py PATH_TO_MULTISERVER.
Closing line: "tls-interop: N passed, N failed".
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

MS = sys.argv[1] if len(sys.argv) > 1 else "build/multiserver"
SIZE = 1 << 20
CHUNK = 65536
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def run(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, shell=True, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certs(d):
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    run(f"openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=interop-ca", d)
    with open(os.path.join(d, "srv.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run(f"openssl req {ec} -keyout srv.key -out srv.csr -subj /CN=localhost", d)
    run("openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out srv.pem -days 2 -extfile srv.ext", d)
    return {k: os.path.join(d, v) for k, v in
            (("ca", "ca.pem"), ("cert", "srv.pem"), ("key", "srv.key"))}


def their_client(port, certs, payload, maximum=None, hostname="localhost"):
    """Echo payload through our server; returns (echo, version, clean_unwrap)."""
    ctx = ssl.create_default_context(cafile=certs["ca"])
    if maximum:
        ctx.maximum_version = maximum
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname=hostname)
    version = s.version()
    got = bytearray()
    for i in range(0, len(payload), CHUNK):
        chunk = payload[i:i + CHUNK]
        s.sendall(chunk)
        want = i + len(chunk)
        while len(got) < want:
            b = s.recv(want - len(got))
            if not b:
                break
            got += b
    clean = False
    try:
        s.unwrap()  # our close_notify must answer theirs
        clean = True
    except (ssl.SSLError, OSError) as e:
        print("unwrap:", repr(e), file=sys.stderr)
    raw.close()
    return bytes(got), version, clean


def our_server_their_client(certs):
    proc = subprocess.Popen(
        [MS, "serve", "--echo", "--opt", f"tls.cert={certs['cert']}",
         "--opt", f"tls.key={certs['key']}", "net:127.0.0.1:0~tls"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode().strip()
        check(line.endswith("~tls"), f"our server prints its address: {line!r}")
        port = int(line.split("~")[0].rsplit(":", 1)[1])
        payload = os.urandom(SIZE)
        for maximum, want in ((None, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")):
            got, version, clean = their_client(port, certs, payload, maximum)
            check(version == want, f"negotiated {want}: {version}")
            check(hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(),
                  f"their {want} client got the 1 MiB echo ({len(got)} bytes)")
            check(clean, f"their {want} client saw our close_notify (unwrap completed)")

        # a client that expects another name fails; our server keeps serving
        try:
            their_client(port, certs, b"x", hostname="not-this-host.example")
            ok = False
        except ssl.SSLCertVerificationError:
            ok = True
        check(ok, "their client refuses our certificate for another name")
        got, _, _ = their_client(port, certs, b"still here")
        check(got == b"still here", "our server keeps serving after the failure")

        # openssl s_client, verifying chain and name
        if shutil.which("openssl"):
            sc = subprocess.Popen(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", certs["ca"],
                 "-verify_hostname", "localhost", "-verify_return_error", "-quiet"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            sc.stdin.write(b"hello from s_client\n")
            sc.stdin.flush()
            timer = threading.Timer(20, sc.kill)
            timer.start()
            echoed = sc.stdout.readline()  # -quiet keeps it open past stdin EOF
            timer.cancel()
            sc.kill()
            _, sc_err = sc.communicate()
            check(echoed == b"hello from s_client\n",
                  f"openssl s_client echoes through our server: {echoed!r} {sc_err[-300:]!r}")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    err = err.decode()
    check("MS_EHANDSHAKE" in err, f"our server reports the refused handshake: {err[-500:]!r}")


def their_server(certs):
    """A threaded Python ssl echo server; returns (port, results, stop)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    results = {"clean_end": [], "errors": [], "got": []}

    def serve_one(conn):
        try:
            s = ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
        except (ssl.SSLError, OSError) as e:
            results["errors"].append(repr(e))
            conn.close()
            return
        h = hashlib.sha256()
        try:
            while True:
                b = s.recv(CHUNK)
                if not b:  # close_notify
                    results["clean_end"].append(True)
                    break
                h.update(b)
                s.sendall(b)
            results["got"].append(h.hexdigest())
            s.unwrap()  # our close_notify in answer
        except (ssl.SSLError, OSError) as e:
            results["errors"].append(repr(e))
        finally:
            conn.close()

    def loop():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return lsock.getsockname()[1], results, lsock


def their_server_our_client(certs):
    port, results, lsock = their_server(certs)
    payload = os.urandom(SIZE)
    r = subprocess.run([MS, "connect", "--opt", f"tls.ca={certs['ca']}", f"net:localhost:{port}~tls"],
                       input=payload, capture_output=True, timeout=60)
    digest = hashlib.sha256(payload).hexdigest()
    check(r.returncode == 0, f"our client exits 0 after their close_notify: rc={r.returncode} {r.stderr!r}")
    check(hashlib.sha256(r.stdout).hexdigest() == digest,
          f"our client got the 1 MiB echo back ({len(r.stdout)} bytes)")
    check(results["got"] == [digest], "their server received our 1 MiB intact")
    check(results["clean_end"] == [True], f"their server saw our close_notify: {results}")

    # without the test CA the system CAs do not know their certificate
    r = subprocess.run([MS, "connect", f"net:localhost:{port}~tls"], input=b"secret",
                       capture_output=True, timeout=30)
    check(r.returncode != 0 and b"certificate verify failed" in r.stderr,
          f"our client refuses an unknown CA: {r.stderr!r}")
    # the same certificate under a name it does not carry
    r = subprocess.run([MS, "connect", "--opt", f"tls.ca={certs['ca']}", "--opt",
                        "tls.servername=elsewhere.example", f"net:localhost:{port}~tls"],
                       input=b"secret", capture_output=True, timeout=30)
    check(r.returncode != 0 and b"hostname mismatch" in r.stderr,
          f"our client refuses a wrong name: {r.stderr!r}")
    for _ in range(50):
        if len(results["errors"]) >= 2:
            break
        threading.Event().wait(0.1)
    check(len(results["errors"]) == 2 and all("ALERT" in e.upper() for e in results["errors"]),
          f"their server sees our alerts: {results['errors']}")
    lsock.close()


def main():
    if not shutil.which("openssl"):
        print("tls-interop: skipped (no openssl CLI to make certificates)")
        print("tls-interop: 0 passed, 0 failed")
        return 0
    d = tempfile.mkdtemp(prefix="tls-interop-")
    try:
        certs = make_certs(d)
        for t in (our_server_their_client, their_server_our_client):
            try:
                t(certs)
            except Exception as e:
                check(False, f"{t.__name__} raised {e!r}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"tls-interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


sys.exit(main())
