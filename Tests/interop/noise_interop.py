#!/usr/bin/env python3
"""Live interop of the `noise` transform (spec/noise.md) over TCP against an
implementation nobody here wrote: PyPI `noiseprotocol` (Noise_IK_25519_
ChaChaPoly_BLAKE2b), with PyNaCl for the ed25519 -> X25519 conversions and
the spec's framing (u16be length before every message, transport payloads of
at most 65519 bytes, an empty transport message as goodbye) written here.

  1. our client (`multiserver connect`) -> their server (echo): 1 MiB each
     way, checksums, our goodbye seen by them, theirs ends our client
     cleanly (exit 0).
  2. their client -> our server (`multiserver serve --echo ...~noise`): 1 MiB
     each way, checksums, our goodbye seen (not a bare hang-up).
  3. a client refused by `serve --authorize @ID`: no msg2, a hang-up.
  4. a wrong server key fails on both sides, and our server keeps serving.

Usage: noise_interop.py PATH_TO_MULTISERVER. Closing line:
"noise-interop: N passed, N failed".
"""
import asyncio
import base64
import hashlib
import os
import signal
import struct
import subprocess
import sys

try:
    import nacl.bindings as nb
    from nacl.signing import SigningKey
    from noise.connection import Keypair, NoiseConnection
except ImportError as e:  # the venv from .ci/setup provides these
    print(f"noise-interop: 0 passed, 1 failed  (missing Python package: {e}; run .ci/setup)")
    sys.exit(1)

MS = sys.argv[1] if len(sys.argv) > 1 else "build/multiserver"
NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2b"
APP_KEY = base64.b64decode("1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=")
SIZE = 1 << 20
MAX_PAYLOAD = 65519
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


def x25519_sk(sk: SigningKey):
    return nb.crypto_sign_ed25519_sk_to_curve25519(bytes(sk) + bytes(sk.verify_key))


def x25519_pk(pk: bytes):
    return nb.crypto_sign_ed25519_pk_to_curve25519(bytes(pk))


def frame(msg):
    return struct.pack(">H", len(msg)) + bytes(msg)


async def read_frame(reader):
    (n,) = struct.unpack(">H", await reader.readexactly(2))
    return await reader.readexactly(n)


class Session:
    """The spec's transport framing over a finished NoiseConnection."""

    def __init__(self, conn, reader, writer):
        self.c, self.r, self.w = conn, reader, writer
        self.goodbye_seen = False

    def write(self, data):
        for i in range(0, len(data), MAX_PAYLOAD):
            self.w.write(frame(self.c.encrypt(data[i:i + MAX_PAYLOAD])))

    def goodbye(self):
        self.w.write(frame(self.c.encrypt(b"")))

    async def read(self):
        """Payload bytes, or None after the goodbye (a hang-up raises)."""
        ct = await read_frame(self.r)
        if len(ct) < 16:
            raise ValueError("frame shorter than a tag")
        pt = bytes(self.c.decrypt(ct))
        if not pt:
            self.goodbye_seen = True
            return None
        return pt


def their_server_conn(server_key):
    c = NoiseConnection.from_name(NAME)
    c.set_as_responder()
    c.set_prologue(APP_KEY)
    c.set_keypair_from_private_bytes(Keypair.STATIC, x25519_sk(server_key))
    c.start_handshake()
    return c


def their_client_conn(client_key, server_pk):
    c = NoiseConnection.from_name(NAME)
    c.set_as_initiator()
    c.set_prologue(APP_KEY)
    c.set_keypair_from_private_bytes(Keypair.STATIC, x25519_sk(client_key))
    c.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, x25519_pk(server_pk))
    c.start_handshake()
    return c


async def their_handshake_as_client(reader, writer, client_key, server_pk):
    """Their client's handshake; raises if the server hangs up."""
    c = their_client_conn(client_key, server_pk)
    writer.write(frame(c.write_message(bytes(client_key.verify_key))))
    await writer.drain()
    m2 = await asyncio.wait_for(read_frame(reader), 10)
    if len(m2) != 48:
        raise ValueError(f"msg2 of {len(m2)} bytes")
    c.read_message(m2)
    assert c.handshake_finished
    return Session(c, reader, writer)


async def their_server_our_client():
    server_key = SigningKey.generate()
    results = {"server_errors": []}

    async def handle(reader, writer):
        try:
            c = their_server_conn(server_key)
            m1 = await asyncio.wait_for(read_frame(reader), 10)
            if len(m1) != 128:
                raise ValueError(f"msg1 of {len(m1)} bytes")
            client_pk = bytes(c.read_message(m1))
            rs = c.noise_protocol.handshake_state.rs.public_bytes
            if x25519_pk(client_pk) != rs:
                raise ValueError("payload key does not match s")
            results["client_pk"] = client_pk
            writer.write(frame(c.write_message(b"")))
            await writer.drain()
        except Exception as e:  # handshake refused: record and hang up
            results["server_errors"].append(repr(e))
            writer.close()
            return
        s = Session(c, reader, writer)
        got = bytearray()
        try:
            while True:
                chunk = await s.read()
                if chunk is None:
                    break
                got += chunk
                s.write(chunk)  # echo
                await writer.drain()
        except Exception as e:
            results["server_errors"].append(repr(e))
        results["clean_end"] = s.goodbye_seen
        results["server_got"] = hashlib.sha256(got).hexdigest()
        s.goodbye()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    payload = os.urandom(SIZE)
    proc = await asyncio.create_subprocess_exec(
        MS, "connect", f"net:127.0.0.1:{port}~noise:{b64(server_key.verify_key)}",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(payload), 60)
    digest = hashlib.sha256(payload).hexdigest()
    check(proc.returncode == 0, f"our client exits 0 after their goodbye: rc={proc.returncode} {err!r}")
    check(hashlib.sha256(out).hexdigest() == digest, f"our client got the 1 MiB echo back ({len(out)} bytes)")
    check(results.get("server_got") == digest, "their server received our 1 MiB intact")
    check(results.get("clean_end") is True, "their server saw our goodbye, not a hang-up")
    check(not results["server_errors"], f"their server had no errors: {results['server_errors']}")

    # wrong server key: we dial their server with someone else's key
    wrong = SigningKey.generate().verify_key
    proc = await asyncio.create_subprocess_exec(
        MS, "connect", f"net:127.0.0.1:{port}~noise:{b64(wrong)}",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(b"secret"), 30)
    await asyncio.sleep(0.2)
    check(proc.returncode != 0 and b"server hung up after msg1" in err,
          f"our client fails on a wrong key: {err!r}")
    check(len(results["server_errors"]) == 1, f"their server rejects it: {results['server_errors']}")
    server.close()
    await server.wait_closed()


async def start_our_server(*args):
    proc = await asyncio.create_subprocess_exec(
        MS, "serve", "--echo", *args, "net:127.0.0.1:0~noise",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
    host_port, key = line.split("~noise:")
    return proc, int(host_port.rsplit(":", 1)[1]), base64.b64decode(key)


async def stop(proc):
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    return err.decode()


async def our_server_their_client():
    proc, port, server_pk = await start_our_server()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    s = await their_handshake_as_client(reader, writer, SigningKey.generate(), server_pk)
    payload = os.urandom(SIZE)
    got = bytearray()

    async def read_all():
        while True:
            chunk = await s.read()
            if chunk is None:
                return
            got.extend(chunk)

    rtask = asyncio.ensure_future(read_all())
    for i in range(0, SIZE, 100000):  # writes that span frames
        s.write(payload[i:i + 100000])
        await writer.drain()
    s.goodbye()
    await writer.drain()
    await asyncio.wait_for(rtask, 60)
    check(hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(),
          f"their client got the 1 MiB echo from our server ({len(got)} bytes)")
    check(s.goodbye_seen, "their client saw our goodbye, not a hang-up")
    rest = await asyncio.wait_for(reader.read(), 10)
    check(rest == b"", f"nothing after our goodbye, then EOF ({len(rest)} bytes)")
    writer.close()

    # wrong key: their client dials our server with a key that is not ours
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await their_handshake_as_client(reader, writer, SigningKey.generate(),
                                        bytes(SigningKey.generate().verify_key))
        failed_ok = False
    except (asyncio.IncompleteReadError, ConnectionError):
        failed_ok = True
    check(failed_ok, "their client fails against our server with a wrong key (hang-up before msg2)")
    writer.close()

    # our server keeps serving
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    s = await their_handshake_as_client(reader, writer, SigningKey.generate(), server_pk)
    s.write(b"still here")
    await writer.drain()
    check(await asyncio.wait_for(s.read(), 10) == b"still here", "our server keeps serving after the failure")
    s.goodbye()
    await writer.drain()
    writer.close()

    await asyncio.sleep(0.2)
    err = await stop(proc)
    check("MS_EHANDSHAKE" in err and "msg1" in err, f"our server reports the failed handshake: {err!r}")


async def refused_client():
    allowed = SigningKey.generate()
    allowed_id = "@" + b64(allowed.verify_key) + ".ed25519"
    proc, port, server_pk = await start_our_server("--authorize", allowed_id)

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await their_handshake_as_client(reader, writer, SigningKey.generate(), server_pk)
        refused = False
    except (asyncio.IncompleteReadError, ConnectionError):
        refused = True
    check(refused, "an unlisted client gets no msg2 (the server hangs up)")
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    s = await their_handshake_as_client(reader, writer, allowed, server_pk)
    s.write(b"listed")
    await writer.drain()
    check(await asyncio.wait_for(s.read(), 10) == b"listed", "the listed client is served")
    s.goodbye()
    await writer.drain()
    writer.close()

    await asyncio.sleep(0.2)
    err = await stop(proc)
    check("MS_EUNAUTHORIZED" in err, f"our server logs the refusal: {err!r}")


async def main():
    for t in (their_server_our_client, our_server_their_client, refused_client):
        try:
            await t()
        except Exception as e:
            check(False, f"{t.__name__} raised {e!r}")


asyncio.run(main())
print(f"noise-interop: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
