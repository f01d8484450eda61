#!/usr/bin/env python3
"""A real browser against our ws transport and HTTP handler.

`multiserver serve --echo --http-root Tests/browser 'ws://127.0.0.1:0'`
serves index.html; headless Chromium loads it from our HTTP handler, the
page opens a WebSocket back to the same port, sends binary messages of
several sizes (1 B .. 1 MiB, across the 7/16/64-bit length forms), checks
the echo byte for byte, writes "PASS n/n" into its DOM and reports the same
text to the server with a GET of /__result/<text>, whose HTTP log line
(stderr) this runner reads. Then: a request outside the root is refused
(403), a missing file is 404. Then the same page over https + wss with a
certificate from a CA made here with openssl.

Skipped (with a message, exit 0) only when no chromium is installed; CI
installs it (.ci/run, .ci/setup).

Usage: browser_test.py PATH_TO_MULTISERVER. Closing line:
"browser: N passed, N failed".
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

MS = sys.argv[1] if len(sys.argv) > 1 else "build/multiserver"
HERE = os.path.dirname(os.path.abspath(__file__))
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def raw_get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data


def run_page(chrome, url, log_path, timeout=40):
    """Load url in headless Chromium until the server's log has a result."""
    profile = tempfile.mkdtemp(prefix="wsdrv-chrome-")
    args = [chrome, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--disable-extensions", "--remote-debugging-port=0",
            f"--user-data-dir={profile}"]
    if url.startswith("https:"):
        # The test's own CA is not in Chromium's store (acceptable for a test).
        args.append("--ignore-certificate-errors")
    proc = subprocess.Popen(args + [url], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    result = None
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and result is None:
            time.sleep(0.2)
            with open(log_path, "r", errors="replace") as f:
                for line in f:
                    if "/__result/" in line:
                        enc = line.split("/__result/", 1)[1].split()[0]
                        result = urllib.parse.unquote(enc)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return result


def wss_part(chrome):
    """The same page over https + wss, with a certificate from a CA made
    here (Chromium runs with --ignore-certificate-errors: the test CA is not
    in its store, acceptable for a test). Skipped without openssl or when
    the build has no tls transform."""
    if shutil.which("openssl") is None:
        print("browser: wss part skipped (no openssl)")
        return
    d = tempfile.mkdtemp(prefix="wsdrv-browser-ca-")
    log = open(os.path.join(d, "log"), "w")
    srv = None
    try:
        k = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
        run("req", "-x509", *k, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=browser test CA")
        run("req", *k, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
        srv = subprocess.Popen([MS, "serve", "--echo", "--http-root", HERE,
                                "--opt", f"wss.cert={d}/srv.pem", "--opt", f"wss.key={d}/srv.key",
                                "wss://127.0.0.1:0"],
                               stdout=subprocess.PIPE, stderr=log, text=True)
        addr = srv.stdout.readline().strip()
        if not addr:
            srv.wait(10)
            log.flush()
            err = open(log.name).read()
            check("tls" in err, f"wss refused with a reason: {err!r}")
            print("browser: wss part skipped (no tls transform)")
            return
        check(addr.startswith("wss://127.0.0.1:"), f"wss address {addr!r}")
        port = int(addr.rsplit(":", 1)[1])
        res = run_page(chrome, f"https://127.0.0.1:{port}/index.html", log.name)
        check(res is not None and res.startswith("PASS"), f"browser over wss: {res!r}")
    finally:
        if srv and srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(timeout=10)
            except subprocess.TimeoutExpired:
                srv.kill()
        log.close()
        if failed:
            sys.stderr.write(open(log.name).read()[-2000:])
        shutil.rmtree(d, ignore_errors=True)


def main():
    chrome = find_chromium()
    if chrome is None:
        print("browser: skipped (no chromium installed; CI installs it)")
        print("browser: 0 passed, 0 failed")
        return 0
    log = tempfile.NamedTemporaryFile(prefix="wsdrv-browser-", suffix=".log", delete=False)
    srv = subprocess.Popen([MS, "serve", "--echo", "--http-root", HERE, "ws://127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        addr = srv.stdout.readline().strip()
        check(addr.startswith("ws://127.0.0.1:"), f"server address {addr!r}")
        port = int(addr.rsplit(":", 1)[1])
        res = run_page(chrome, f"http://127.0.0.1:{port}/index.html", log.name)
        check(res is not None and res.startswith("PASS"), f"browser result {res!r}")
        if res:
            n = res.split()[-1]
            check(n.split("/")[0] == n.split("/")[1], f"all sizes echoed: {res}")
        # The HTTP handler keeps to its root.
        check(b" 403 " in raw_get(port, "/../../etc/passwd").split(b"\r\n")[0], "traversal refused")
        check(b" 403 " in raw_get(port, "/%2e%2e/%2e%2e/etc/passwd").split(b"\r\n")[0],
              "encoded traversal refused")
        check(b" 404 " in raw_get(port, "/nope.html").split(b"\r\n")[0], "missing file is 404")
        head = raw_get(port, "/index.html").split(b"\r\n\r\n")[0]
        check(b"text/html" in head, "html content type")
        check(srv.poll() is None, "server still serving")
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
        if failed:
            with open(log.name) as f:
                sys.stderr.write(f.read()[-3000:])
        os.unlink(log.name)
    wss_part(chrome)
    print(f"browser: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
