#!/usr/bin/env python3
"""Live shs1 + box-stream interop over TCP against an implementation nobody
here wrote: PyPI `secret-handshake` 0.1.0.dev3 (PySecretHandshake, on PyNaCl).

  1. our client (`multiserver connect`) -> their SHSServer (echo): 1 MiB each
     way, checksums, their goodbye ends our client cleanly (exit 0).
  2. their SHSClient -> our server (`multiserver serve --echo`): 1 MiB each
     way, checksums, our goodbye seen by their decoder (not a bare hang-up).
  3. wrong server key, both directions: the handshake fails on both sides and
     our server keeps serving.

Usage: pyshs_interop.py PATH_TO_MULTISERVER. Closing line:
"pyshs-interop: N passed, N failed".
"""
import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import sys

try:
    from nacl.signing import SigningKey
    from secret_handshake.network import SHSClient, SHSServer
    from secret_handshake.boxstream import get_stream_pair
except ImportError as e:  # the venv from .ci/setup provides these
    print(f"pyshs-interop: 0 passed, 1 failed  (missing Python package: {e}; run .ci/setup)")
    sys.exit(1)

MS = sys.argv[1] if len(sys.argv) > 1 else "build/multiserver"
APP_KEY = base64.b64decode("1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=")
SIZE = 1 << 20
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def b64(k):
    return base64.b64encode(bytes(k)).decode()


class CountingReader:
    """Wraps an asyncio reader to tell a goodbye (a clean None from
    UnboxStream.read) from a hang-up (IncompleteReadError inside it)."""

    def __init__(self, r):
        self.r = r
        self.truncated = False

    async def readexactly(self, n):
        try:
            return await self.r.readexactly(n)
        except asyncio.IncompleteReadError:
            self.truncated = True
            raise


async def their_server_our_client():
    server_key = SigningKey.generate()
    results = {}

    srv = SHSServer("127.0.0.1", 0, server_key, application_key=APP_KEY)

    async def handle(reader, writer):
        try:
            await srv._handshake(reader, writer)
        except Exception as e:  # handshake refused: record and hang up
            results.setdefault("server_errors", []).append(repr(e))
            writer.close()
            return
        keys = srv.crypto.get_box_keys()
        srv.crypto.clean()
        counting = CountingReader(reader)
        unbox, box = get_stream_pair(counting, writer, **keys)
        got = bytearray()
        while True:
            chunk = await unbox.read()
            if chunk is None:
                break
            got += chunk
            box.write(chunk)  # echo
            await writer.drain()
        results["clean_end"] = not counting.truncated
        results["server_got"] = hashlib.sha256(got).hexdigest()
        box.close()  # their goodbye
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    payload = os.urandom(SIZE)
    proc = await asyncio.create_subprocess_exec(
        MS, "connect", f"net:127.0.0.1:{port}~shs:{b64(server_key.verify_key)}",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(payload), 60)
    digest = hashlib.sha256(payload).hexdigest()
    check(proc.returncode == 0, f"our client exits 0 after their goodbye: rc={proc.returncode} {err!r}")
    check(hashlib.sha256(out).hexdigest() == digest, f"our client got the 1 MiB echo back ({len(out)} bytes)")
    check(results.get("server_got") == digest, "their server received our 1 MiB intact")
    check(results.get("clean_end") is True, "their server saw our goodbye, not a hang-up")

    # wrong server key: we dial their server with someone else's key
    wrong = SigningKey.generate().verify_key
    proc = await asyncio.create_subprocess_exec(
        MS, "connect", f"net:127.0.0.1:{port}~shs:{b64(wrong)}",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(b"secret"), 30)
    await asyncio.sleep(0.2)
    check(proc.returncode != 0 and b"server" in err, f"our client fails on a wrong key: {err!r}")
    check(len(results.get("server_errors", [])) == 1, f"their server rejects it: {results.get('server_errors')}")
    server.close()
    await server.wait_closed()


async def our_server_their_client():
    proc = await asyncio.create_subprocess_exec(
        MS, "serve", "--echo", "net:127.0.0.1:0~shs",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
    host_port, key = line.split("~shs:")
    port = int(host_port.rsplit(":", 1)[1])
    server_pk = base64.b64decode(key)

    client = SHSClient("127.0.0.1", port, SigningKey.generate(), server_pk, application_key=APP_KEY)
    await asyncio.wait_for(client.open(), 10)
    counting = CountingReader(client.read_stream.reader)
    client.read_stream.reader = counting
    payload = os.urandom(SIZE)
    got = bytearray()

    async def reader():
        while True:
            chunk = await client.read()
            if chunk is None:
                return
            got.extend(chunk)

    rtask = asyncio.ensure_future(reader())
    for i in range(0, SIZE, 65536):
        client.write(payload[i:i + 65536])
        await client.writer.drain()
    client.write_stream.close()  # their goodbye (UnboxStream has no close())
    await client.writer.drain()
    await asyncio.wait_for(rtask, 60)
    check(hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(),
          f"their client got the 1 MiB echo from our server ({len(got)} bytes)")
    check(not counting.truncated, "their client saw our goodbye, not a hang-up")
    client.writer.close()

    # wrong key: their client dials our server with a key that is not ours
    bad = SHSClient("127.0.0.1", port, SigningKey.generate(), bytes(SigningKey.generate().verify_key),
                    application_key=APP_KEY)
    try:
        await asyncio.wait_for(bad.open(), 10)
        failed_ok = False
    except Exception:
        failed_ok = True
    check(failed_ok, "their client fails against our server with a wrong key")

    # our server keeps serving
    ok = SHSClient("127.0.0.1", port, SigningKey.generate(), server_pk, application_key=APP_KEY)
    await asyncio.wait_for(ok.open(), 10)
    ok.write(b"still here")
    check(await asyncio.wait_for(ok.read(), 10) == b"still here", "our server keeps serving after the failure")
    ok.write_stream.close()
    ok.writer.close()

    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    err = err.decode()
    check("MS_EHANDSHAKE" in err and "msg3" in err, f"our server reports the failed handshake: {err!r}")


async def main():
    for t in (their_server_our_client, our_server_their_client):
        try:
            await t()
        except Exception as e:
            check(False, f"{t.__name__} raised {e!r}")


asyncio.run(main())
print(f"pyshs-interop: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
