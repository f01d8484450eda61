/* libFuzzer target for the noise core. byte 0 picks the case (mod 6):
 *   0 server (spec layer): arbitrary bytes as the framed msg1
 *   1 server: a real client's framed msg1 XORed with fuzz bytes; only the
 *     unmodified one may succeed
 *   2 raw responder: arbitrary unframed msg1 of any length
 *   3 client: a real msg1 sent, then arbitrary bytes as the framed msg2
 *   4 transport decoder: a valid sealed prefix (length from byte 1), then
 *     arbitrary bytes, fed in PRNG chunks with pauses (stash)
 *   5 transport round trip: the rest is plaintext, sealed in PRNG-cut
 *     writes plus the goodbye; decoding gives it back exactly and ends
 *     cleanly
 * Never crash; every call returns one of its documented codes. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "noise_core.h"

static uint8_t app[32], c_sk[64], c_pk[32], s_sk[64], s_pk[32];
static uint8_t real_m1[MS_NOISE_MSG1_FRAMED_LEN];
static const uint8_t c_eph[32] = {1, 2, 3}, s_eph[32] = {4, 5, 6};
static const uint8_t tkey[32] = {0x42, 0x43, 0x44};

static void setup(void) {
  static int done;
  uint8_t seed[32] = {7};
  ms_noise_t cl;
  if (done) return;
  done = 1;
  if (sodium_init() < 0) __builtin_trap();
  memset(app, 0x11, sizeof(app));
  crypto_sign_seed_keypair(c_pk, c_sk, seed);
  seed[0] = 8;
  crypto_sign_seed_keypair(s_pk, s_sk, seed);
  if (ms_noise_client_init(&cl, app, c_sk, c_pk, s_pk, c_eph) != 0 ||
      ms_noise_client_hello(&cl, real_m1) != 0)
    __builtin_trap();
  ms_noise_wipe(&cl);
}

static uint32_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

static void server_case(const uint8_t *m1, size_t len, int must_pass) {
  ms_noise_t sv;
  uint8_t m2[MS_NOISE_MSG2_FRAMED_LEN];
  int r;
  assert(ms_noise_server_init(&sv, app, s_sk, s_pk, s_eph) == 0);
  r = ms_noise_server_read_hello(&sv, m1, len);
  assert(r == 0 || r == MS_EHANDSHAKE);
  if (must_pass == 1) assert(r == 0);
  if (must_pass == 0) assert(r == MS_EHANDSHAKE);
  if (r == 0) {
    assert(ms_noise_remote_key(&sv) != NULL);
    assert(ms_noise_server_accept(&sv, m2) == 0);
  } else {
    assert(ms_noise_error(&sv) != NULL);
    assert(ms_noise_remote_key(&sv) == NULL);
    assert(ms_noise_server_accept(&sv, m2) == MS_EHANDSHAKE);
  }
  ms_noise_wipe(&sv);
}

/* Decode wire in random chunks with pauses; returns the final status and
 * appends the plaintext to plain (capacity >= len). */
static int decode(const uint8_t *wire, size_t len, uint8_t *plain,
                  size_t *plain_len) {
  ms_noise_cipher_t cs;
  ms_noise_rx_t rx;
  size_t off = 0;
  int r = 0;
  ms_noise_cipher_init(&cs, tkey);
  ms_noise_rx_init(&rx, &cs);
  *plain_len = 0;
  while (off < len && r >= 0 && r != 2) {
    size_t n = 1 + rnd() % 70000, c, ol;
    uint8_t *chunk, *p, *o;
    if (rnd() % 4 == 0) n = 1 + rnd() % 20;
    if (n > len - off) n = len - off;
    chunk = malloc(n);
    memcpy(chunk, wire + off, n);
    off += n;
    p = chunk;
    for (;;) {
      r = ms_noise_rx_next(&rx, p, n, &c, &o, &ol);
      assert(c <= n);
      p += c;
      n -= c;
      if (r != 1) break;
      assert(ol >= 1 && ol <= MS_NOISE_MAX_PAYLOAD);
      memcpy(plain + *plain_len, o, ol);
      *plain_len += ol;
      if (rnd() % 3 == 0) {
        int s = ms_noise_rx_stash(&rx, p, n);
        assert(s == 0);
        n = 0;
        while ((r = ms_noise_rx_next(&rx, NULL, 0, &c, &o, &ol)) == 1) {
          memcpy(plain + *plain_len, o, ol);
          *plain_len += ol;
        }
        break;
      }
    }
    free(chunk);
  }
  assert(r == 0 || r == 1 || r == 2 || r == MS_EFRAME || r == MS_EDECRYPT);
  if (r == 2) assert(ms_noise_rx_eof(&rx) == 0);
  if (r >= 0 && r != 2) r = ms_noise_rx_eof(&rx);
  assert(r == 2 || r == MS_EHANGUP || r == MS_EFRAME || r == MS_EDECRYPT);
  ms_noise_rx_free(&rx);
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t mode;
  if (size < 2) return 0;
  setup();
  mode = data[0];
  rng_state = mode * 2654435761u;
  data++;
  size--;
  switch (mode % 6) {
    case 0:
      server_case(data, size, size == MS_NOISE_MSG1_FRAMED_LEN &&
                                      memcmp(data, real_m1, size) == 0
                                  ? 1
                                  : 0);
      break;
    case 1: {
      uint8_t m1[MS_NOISE_MSG1_FRAMED_LEN];
      int same = 1;
      for (size_t i = 0; i < sizeof(m1); i++) {
        uint8_t x = i < size ? data[i] : 0;
        m1[i] = real_m1[i] ^ x;
        if (x) same = 0;
      }
      server_case(m1, sizeof(m1), same);
      break;
    }
    case 2: {
      ms_noise_t res;
      uint8_t xsk[32] = {9}, *pl = malloc(size + 1);
      int r;
      assert(ms_noise_ik_responder_init(&res, data, size % 40, xsk, NULL) ==
             0);
      r = ms_noise_ik_read_msg1(&res, data, size,
                                size >= MS_NOISE_IK_MSG1_OVERHEAD ? pl : NULL);
      assert(r == MS_EHANDSHAKE || r == 0);
      ms_noise_wipe(&res);
      free(pl);
      break;
    }
    case 3: {
      ms_noise_t cl;
      uint8_t m1[MS_NOISE_MSG1_FRAMED_LEN];
      int r;
      assert(ms_noise_client_init(&cl, app, c_sk, c_pk, s_pk, c_eph) == 0);
      assert(ms_noise_client_hello(&cl, m1) == 0);
      r = ms_noise_client_read_accept(&cl, data, size);
      assert(r == 0 || r == MS_EHANDSHAKE);
      if (r == 0) {
        ms_noise_outcome_t o;
        assert(ms_noise_outcome(&cl, &o) == 0);
        ms_noise_outcome_wipe(&o);
      }
      ms_noise_wipe(&cl);
      break;
    }
    case 4: {
      ms_noise_cipher_t cs;
      size_t valid = data[0] % 128 < size ? data[0] % 128 : size, wl, pl;
      size_t cap = ms_noise_sealed_size(valid) + size + 64;
      uint8_t *wire = malloc(cap), *plain = malloc(cap);
      ms_noise_cipher_init(&cs, tkey);
      assert(ms_noise_seal(&cs, wire, data, valid, &wl) == 0);
      memcpy(wire + wl, data + valid, size - valid);
      wl += size - valid;
      (void)decode(wire, wl, plain, &pl);
      free(wire);
      free(plain);
      break;
    }
    default: {
      /* Writes of up to 200000 bytes: cross frame boundaries. */
      size_t cap = 2 * size + 18 * (size + 2) + 64;
      uint8_t *wire = malloc(cap), *plain = malloc(size + 1);
      size_t wl = 0, off = 0, pl, w;
      ms_noise_cipher_t cs;
      ms_noise_cipher_init(&cs, tkey);
      while (off < size) {
        size_t n = rnd() % 2 ? 1 + rnd() % 100 : rnd() % 200000;
        if (n > size - off) n = size - off;
        assert(wl + ms_noise_sealed_size(n) <= cap);
        assert(ms_noise_seal(&cs, wire + wl, data + off, n, &w) == 0);
        assert(w == ms_noise_sealed_size(n));
        wl += w;
        off += n;
      }
      assert(ms_noise_goodbye(&cs, wire + wl) == 0);
      wl += MS_NOISE_GOODBYE_LEN;
      assert(decode(wire, wl, plain, &pl) == 2);
      assert(pl == size);
      assert(memcmp(plain, data, size) == 0);
      free(wire);
      free(plain);
      break;
    }
  }
  return 0;
}
