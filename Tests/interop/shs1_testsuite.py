#!/usr/bin/env python3
"""shs1-testsuite driver (spec/shs-boxstream.md §6), re-implemented in Python.

Usage: shs1_testsuite.py PATH/TO/multiserver [SEED]

Runs `multiserver shs1-test server K SK PK` and `multiserver shs1-test
client K PK` against an independent implementation of the other side
(PyNaCl + hmac/hashlib only): 45 tests per role (20 well-behaved peers and 5
of each fault), all spawned at once, each with a 10 s timeout. Prints details
for every failure and ends with `shs1-testsuite: N passed, N failed`; the
exit status is non-zero on any failure.
"""
import asyncio
import hashlib
import hmac
import random
import sys

from nacl import bindings as nb
from nacl.exceptions import BadSignatureError, CryptoError

TIMEOUT = 10.0
GOOD = 20
PER_FAULT = 5
SERVER_FAULTS = ["msg1_random", "msg1_hmac_random_key", "msg3_random",
                 "msg3_random_key", "msg3_random_plaintext"]
CLIENT_FAULTS = ["msg2_random", "msg2_hmac_random_key", "msg4_random",
                 "msg4_random_key", "msg4_random_plaintext"]
ZERO_NONCE = bytes(24)


def auth(key, msg):
    """HMAC-SHA-512 cut to 32 bytes (libsodium crypto_auth)."""
    return hmac.new(key, msg, hashlib.sha512).digest()[:32]


def sha256(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def box(msg, key):
    return nb.crypto_secretbox(msg, ZERO_NONCE, key)


def unbox(c, key):
    return nb.crypto_secretbox_open(c, ZERO_NONCE, key)


def sign(msg, sk):
    return nb.crypto_sign(msg, sk)[:64]


def verify(sig, msg, pk):
    try:
        nb.crypto_sign_open(sig + msg, pk)
        return True
    except BadSignatureError:
        return False


class Fail(Exception):
    pass


class Test:
    # The executable's stderr (its reasons for refusing bad input) is kept
    # per test and shown only when that test fails.
    def stderr_file(self):
        import tempfile
        self._err = tempfile.TemporaryFile()
        return self._err

    def stderr_text(self):
        err = getattr(self, "_err", None)
        if err is None:
            return ""
        err.seek(0)
        return err.read().decode(errors="replace")

    def __init__(self, seed, role, index, fault):
        self.rng = random.Random("%s/%s/%d" % (seed, role, index))
        self.role, self.index, self.fault = role, index, fault
        self.k = self.rand(32)
        self.server_pk, self.server_sk = nb.crypto_sign_seed_keypair(
            self.rand(32))
        self.client_pk, self.client_sk = nb.crypto_sign_seed_keypair(
            self.rand(32))
        self.eph_sk = self.rand(32)
        self.eph_pk = nb.crypto_scalarmult_base(self.eph_sk)
        self.trace = []

    def rand(self, n):
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def log(self, what, value):
        self.trace.append("  %s: %s" % (what, value.hex() if isinstance(
            value, (bytes, bytearray)) else value))

    def describe(self):
        head = "test %s #%d (%s)" % (self.role, self.index,
                                     self.fault or "good")
        keys = ["  K: " + self.k.hex(), "  server_pk: " + self.server_pk.hex(),
                "  server_sk: " + self.server_sk.hex(),
                "  harness_ephemeral_sk: " + self.eph_sk.hex()]
        if self.role == "server":
            keys += ["  client_pk: " + self.client_pk.hex()]
        return "\n".join([head] + keys + self.trace)


async def read_exact(proc, n, what):
    try:
        return await proc.stdout.readexactly(n)
    except asyncio.IncompleteReadError as e:
        raise Fail("%s: got %d of %d bytes before EOF (exit %s)" %
                   (what, len(e.partial), n, await proc.wait()))


async def send(proc, data):
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the peer gave up; judged by its exit status and output


async def expect_rejection(proc, after):
    """Bad input: exit non-zero, not one more byte on stdout."""
    rest = await proc.stdout.read()
    rc = await proc.wait()
    if rest:
        raise Fail("wrote %d byte(s) after %s: %s" % (len(rest), after,
                                                      rest[:32].hex()))
    if rc == 0:
        raise Fail("exit status 0 after %s" % after)


async def expect_quiet_end(proc):
    """Success: no extra bytes; exit 0 or still waiting (then SIGTERM)."""
    try:
        extra = await asyncio.wait_for(proc.stdout.read(1), 0.5)
    except asyncio.TimeoutError:
        extra = b""
    if extra:
        raise Fail("wrote too many bytes")
    if proc.returncode is None:
        try:
            rc = await asyncio.wait_for(proc.wait(), 0.5)
        except asyncio.TimeoutError:
            proc.terminate()
            await proc.wait()
            return
    else:
        rc = proc.returncode
    if rc != 0:
        raise Fail("exit status %d after a good handshake" % rc)


async def run_server_test(binary, t):
    """The binary is the server; we are a client (long-term A, ephemeral a)."""
    k, bp = t.k, t.server_pk
    proc = await asyncio.create_subprocess_exec(
        binary, "shs1-test", "server", k.hex(), t.server_sk.hex(), bp.hex(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=t.stderr_file())
    t.proc = proc
    a, ap = t.eph_sk, t.eph_pk
    if t.fault == "msg1_random":
        msg1 = t.rand(64)
    elif t.fault == "msg1_hmac_random_key":
        msg1 = auth(t.rand(32), ap) + ap
    else:
        msg1 = auth(k, ap) + ap
    t.log("msg1", msg1)
    await send(proc, msg1)
    if t.fault and t.fault.startswith("msg1"):
        return await expect_rejection(proc, "a bad msg1")

    msg2 = await read_exact(proc, 64, "msg2")
    t.log("msg2", msg2)
    bmac, b_eph = msg2[:32], msg2[32:]
    if not hmac.compare_digest(auth(k, b_eph), bmac):
        raise Fail("msg2 HMAC does not verify")
    ab = nb.crypto_scalarmult(a, b_eph)
    aB = nb.crypto_scalarmult(a, nb.crypto_sign_ed25519_pk_to_curve25519(bp))
    sig_a = sign(k + bp + sha256(ab), t.client_sk)
    hello = sig_a + t.client_pk
    key3 = sha256(k, ab, aB)
    if t.fault == "msg3_random":
        msg3 = t.rand(112)
    elif t.fault == "msg3_random_key":
        msg3 = box(hello, t.rand(32))
    elif t.fault == "msg3_random_plaintext":
        msg3 = box(t.rand(96), key3)
    else:
        msg3 = box(hello, key3)
    t.log("msg3", msg3)
    await send(proc, msg3)
    if t.fault:
        return await expect_rejection(proc, "a bad msg3")

    rest = await read_exact(proc, 80 + 112, "msg4 + outcome")
    msg4, outcome = rest[:80], rest[80:]
    t.log("msg4", msg4)
    t.log("outcome", outcome)
    Ab = nb.crypto_scalarmult(
        nb.crypto_sign_ed25519_sk_to_curve25519(t.client_sk), b_eph)
    key4 = sha256(k, ab, aB, Ab)
    try:
        sig_b = unbox(msg4, key4)
    except CryptoError:
        raise Fail("msg4 does not open")
    if not verify(sig_b, k + hello + sha256(ab), bp):
        raise Fail("msg4 signature invalid")
    s = sha256(key4)
    # The server's own view: encrypt towards us, decrypt what we send.
    want = (sha256(s, t.client_pk) + auth(k, ap)[:24] +
            sha256(s, bp) + bmac[:24])
    if outcome != want:
        t.log("expected outcome", want)
        raise Fail("outcome mismatch")
    await expect_quiet_end(proc)


async def run_client_test(binary, t):
    """The binary is the client; we are the server (B, b)."""
    k, bp, b_sk = t.k, t.server_pk, t.server_sk
    proc = await asyncio.create_subprocess_exec(
        binary, "shs1-test", "client", k.hex(), bp.hex(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=t.stderr_file())
    t.proc = proc
    b, b_eph = t.eph_sk, t.eph_pk
    msg1 = await read_exact(proc, 64, "msg1")
    t.log("msg1", msg1)
    amac, ap = msg1[:32], msg1[32:]
    if not hmac.compare_digest(auth(k, ap), amac):
        raise Fail("msg1 HMAC does not verify")
    if t.fault == "msg2_random":
        msg2 = t.rand(64)
    elif t.fault == "msg2_hmac_random_key":
        msg2 = auth(t.rand(32), b_eph) + b_eph
    else:
        msg2 = auth(k, b_eph) + b_eph
    t.log("msg2", msg2)
    await send(proc, msg2)
    if t.fault and t.fault.startswith("msg2"):
        return await expect_rejection(proc, "a bad msg2")

    msg3 = await read_exact(proc, 112, "msg3")
    t.log("msg3", msg3)
    ab = nb.crypto_scalarmult(b, ap)
    aB = nb.crypto_scalarmult(nb.crypto_sign_ed25519_sk_to_curve25519(b_sk),
                              ap)
    try:
        hello = unbox(msg3, sha256(k, ab, aB))
    except CryptoError:
        raise Fail("msg3 does not open")
    sig_a, client_pk = hello[:64], hello[64:]
    t.log("client_pk", client_pk)
    if not verify(sig_a, k + bp + sha256(ab), client_pk):
        raise Fail("msg3 signature invalid")
    Ab = nb.crypto_scalarmult(
        b, nb.crypto_sign_ed25519_pk_to_curve25519(client_pk))
    key4 = sha256(k, ab, aB, Ab)
    sig_b = sign(k + hello + sha256(ab), b_sk)
    if t.fault == "msg4_random":
        msg4 = t.rand(80)
    elif t.fault == "msg4_random_key":
        msg4 = box(sig_b, t.rand(32))
    elif t.fault == "msg4_random_plaintext":
        msg4 = box(t.rand(80), key4)  # 96 bytes, as the JS harness sends
    else:
        msg4 = box(sig_b, key4)
    t.log("msg4", msg4)
    await send(proc, msg4)
    if t.fault:
        return await expect_rejection(proc, "a bad msg4")

    outcome = await read_exact(proc, 112, "outcome")
    t.log("outcome", outcome)
    s = sha256(key4)
    # The client's own view: encrypt towards the server, from msg2's HMAC.
    want = sha256(s, bp) + msg2[:24] + sha256(s, client_pk) + amac[:24]
    if outcome != want:
        t.log("expected outcome", want)
        raise Fail("outcome mismatch")
    await expect_quiet_end(proc)


async def run_one(binary, t):
    runner = run_server_test if t.role == "server" else run_client_test
    t.proc = None
    try:
        await asyncio.wait_for(runner(binary, t), TIMEOUT)
        return None
    except asyncio.TimeoutError:
        err = "timed out after %.0f s" % TIMEOUT
    except Fail as e:
        err = str(e)
    except Exception as e:  # harness bug or spawn failure: still a failure
        err = "%s: %s" % (type(e).__name__, e)
    finally:
        if t.proc is not None and t.proc.returncode is None:
            t.proc.kill()
            await t.proc.wait()
    return err


def make_tests(seed):
    tests = []
    for role, faults in (("server", SERVER_FAULTS), ("client", CLIENT_FAULTS)):
        kinds = [None] * GOOD + [f for f in faults for _ in range(PER_FAULT)]
        for i, fault in enumerate(kinds):
            tests.append(Test(seed, role, i, fault))
    return tests


async def main_async(binary, seed):
    tests = make_tests(seed)
    results = await asyncio.gather(*(run_one(binary, t) for t in tests))
    failed = 0
    for t, err in zip(tests, results):
        if err is not None:
            failed += 1
            print("FAIL %s\n  reason: %s" % (t.describe(), err))
            print("  its stderr: %r" % t.stderr_text())
    return len(tests) - failed, failed


def main():
    if len(sys.argv) < 2:
        print("usage: shs1_testsuite.py PATH/TO/multiserver [SEED]",
              file=sys.stderr)
        return 2
    binary = sys.argv[1]
    seed = sys.argv[2] if len(sys.argv) > 2 else str(
        random.SystemRandom().getrandbits(32))
    print("shs1-testsuite: seed %s" % seed)
    passed, failed = asyncio.run(main_async(binary, seed))
    print("shs1-testsuite: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
