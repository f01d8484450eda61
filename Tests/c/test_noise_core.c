/* Noise IK core: the generic Noise vectors byte for byte, HMAC/HKDF against
 * an independent derivation, the spec-layer handshake and its failures,
 * and the transport framing (round trips, pauses, goodbye, errors, nonce
 * exhaustion). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "mstest.h"
#include "noise_core.h"
#include "util_json.h"

static uint32_t rng = 12345;
static uint32_t rnd(void) {
  rng = rng * 1103515245u + 12345u;
  return rng >> 8;
}

/* ------------------------------------------------------------------ */
/* Independent HMAC-BLAKE2b and HKDF, straight from the formulas       */
/* ------------------------------------------------------------------ */

/* HMAC(K, m) = H((K' ^ opad) ‖ H((K' ^ ipad) ‖ m)), K' = K (or H(K) when
 * longer than the block) zero padded to 128 bytes. One-shot hashes over
 * concatenated buffers, unlike the core's incremental ones. */
static void ref_hmac(uint8_t out[64], const uint8_t *key, size_t keylen,
                     const uint8_t *m, size_t mlen) {
  uint8_t kp[128] = {0};
  uint8_t *buf = malloc(128 + (mlen > 64 ? mlen : 64));
  uint8_t inner[64];
  if (keylen > 128)
    crypto_generichash(kp, 64, key, keylen, NULL, 0);
  else
    memcpy(kp, key, keylen);
  for (int i = 0; i < 128; i++) buf[i] = kp[i] ^ 0x36;
  if (mlen > 0) memcpy(buf + 128, m, mlen);
  crypto_generichash(inner, 64, buf, 128 + mlen, NULL, 0);
  for (int i = 0; i < 128; i++) buf[i] = kp[i] ^ 0x5c;
  memcpy(buf + 128, inner, 64);
  crypto_generichash(out, 64, buf, 128 + 64, NULL, 0);
  free(buf);
}

static void ref_hkdf(const uint8_t ck[64], const uint8_t *ikm, size_t n,
                     uint8_t o1[64], uint8_t o2[64], uint8_t o3[64]) {
  uint8_t tk[64], m[65];
  ref_hmac(tk, ck, 64, ikm, n);
  m[0] = 1;
  ref_hmac(o1, tk, 64, m, 1);
  memcpy(m, o1, 64);
  m[64] = 2;
  ref_hmac(o2, tk, 64, m, 65);
  memcpy(m, o2, 64);
  m[64] = 3;
  ref_hmac(o3, tk, 64, m, 65);
}

static void test_hmac_hkdf(void) {
  static const size_t klens[] = {0, 1, 32, 64, 127, 128, 129, 200};
  static const size_t mlens[] = {0, 1, 63, 64, 65, 128, 129, 1000};
  uint8_t key[200], msg[1000], a[64], b[64], keyed[64];
  randombytes_buf(key, sizeof(key));
  randombytes_buf(msg, sizeof(msg));
  for (size_t i = 0; i < sizeof(klens) / sizeof(klens[0]); i++) {
    for (size_t j = 0; j < sizeof(mlens) / sizeof(mlens[0]); j++) {
      size_t split = mlens[j] / 3;
      ref_hmac(a, key, klens[i], msg, mlens[j]);
      ms_noise_hmac(b, key, klens[i], msg, split, msg + split,
                    mlens[j] - split);
      CHECK_MEM(a, b, 64);
    }
  }
  /* HMAC is not libsodium's keyed BLAKE2b. */
  ms_noise_hmac(a, key, 32, msg, 32, NULL, 0);
  crypto_generichash(keyed, 64, msg, 32, key, 32);
  CHECK(memcmp(a, keyed, 64) != 0);

  for (int t = 0; t < 8; t++) {
    uint8_t ck[64], r1[64], r2[64], r3[64], o1[64], o2[64], o3[64];
    size_t n = t == 0 ? 0 : (size_t)(t * 13);
    randombytes_buf(ck, sizeof(ck));
    ref_hkdf(ck, msg, n, r1, r2, r3);
    ms_noise_hkdf(ck, n ? msg : NULL, n, o1, o2, o3);
    CHECK_MEM(r1, o1, 64);
    CHECK_MEM(r2, o2, 64);
    CHECK_MEM(r3, o3, 64);
    memset(o3, 0xaa, 64);
    ms_noise_hkdf(ck, msg, n, o1, o2, NULL);
    CHECK_MEM(r1, o1, 64);
    CHECK_MEM(r2, o2, 64);
    /* Output aliasing the chaining key (as MixKey does). */
    memcpy(o1, ck, 64);
    ms_noise_hkdf(o1, msg, n, o1, o2, NULL);
    CHECK_MEM(r1, o1, 64);
  }
}

static void test_symmetric(void) {
  ms_noise_sym_t ss;
  uint8_t want[64] = {0};
  const char *longname =
      "Noise_IK_25519_ChaChaPoly_BLAKE2b_but_this_name_is_longer_than_64_b";
  char name64[64];

  /* Short name: zero padded. */
  ms_noise_sym_init(&ss, MS_NOISE_PROTOCOL_NAME,
                    strlen(MS_NOISE_PROTOCOL_NAME));
  memcpy(want, MS_NOISE_PROTOCOL_NAME, strlen(MS_NOISE_PROTOCOL_NAME));
  CHECK_MEM(ss.h, want, 64);
  CHECK_MEM(ss.ck, want, 64);
  CHECK_INT(ss.cs.has_key, 0);
  /* Exactly HASHLEN: still used as is. */
  memset(name64, 'N', sizeof(name64));
  ms_noise_sym_init(&ss, name64, sizeof(name64));
  CHECK_MEM(ss.h, name64, 64);
  /* Longer: hashed. */
  ms_noise_sym_init(&ss, longname, strlen(longname));
  crypto_generichash(want, 64, (const uint8_t *)longname, strlen(longname),
                     NULL, 0);
  CHECK_MEM(ss.h, want, 64);

  /* MixHash = H(h ‖ data). */
  {
    uint8_t buf[64 + 5], h2[64];
    memcpy(buf, ss.h, 64);
    memcpy(buf + 64, "hello", 5);
    crypto_generichash(h2, 64, buf, sizeof(buf), NULL, 0);
    ms_noise_sym_mix_hash(&ss, (const uint8_t *)"hello", 5);
    CHECK_MEM(ss.h, h2, 64);
  }
  /* Without a key, EncryptAndHash passes through and hashes plaintext. */
  {
    uint8_t out[5], h0[64];
    memcpy(h0, ss.h, 64);
    CHECK_INT(ms_noise_sym_encrypt_and_hash(&ss, out,
                                            (const uint8_t *)"abcde", 5), 0);
    CHECK_MEM(out, "abcde", 5);
    CHECK(memcmp(h0, ss.h, 64) != 0);
  }
  /* MixKey: ck, k = HKDF(ck, ikm) with k truncated to 32. */
  {
    uint8_t ck0[64], r1[64], r2[64], r3[64];
    memcpy(ck0, ss.ck, 64);
    ref_hkdf(ck0, (const uint8_t *)"ikm", 3, r1, r2, r3);
    ms_noise_sym_mix_key(&ss, (const uint8_t *)"ikm", 3);
    CHECK_MEM(ss.ck, r1, 64);
    CHECK_MEM(ss.cs.k, r2, 32);
    CHECK_INT(ss.cs.has_key, 1);
    CHECK_INT(ss.cs.n, 0);
  }
  /* Encrypt/DecryptAndHash round trip, in place too. */
  {
    ms_noise_sym_t a = ss, b = ss;
    uint8_t buf[40], pt[24];
    memset(pt, 7, sizeof(pt));
    CHECK_INT(ms_noise_sym_encrypt_and_hash(&a, buf, pt, 24), 0);
    CHECK_INT(ms_noise_sym_decrypt_and_hash(&b, buf, buf, 40), 0);
    CHECK_MEM(buf, pt, 24);
    CHECK_MEM(a.h, b.h, 64);
    /* A tampered one fails and leaves h alone. */
    {
      ms_noise_sym_t c = a, d = a;
      uint8_t h0[64];
      CHECK_INT(ms_noise_sym_encrypt_and_hash(&c, buf, pt, 24), 0);
      buf[3] ^= 1;
      memcpy(h0, d.h, 64);
      CHECK_INT(ms_noise_sym_decrypt_and_hash(&d, buf, buf, 40),
                MS_EDECRYPT);
      CHECK_MEM(d.h, h0, 64);
      CHECK_INT(d.cs.n, 1);
    }
    /* Split: HKDF(ck, "") truncated. */
    {
      ms_noise_cipher_t c1, c2;
      uint8_t r1[64], r2[64], r3[64];
      ref_hkdf(a.ck, NULL, 0, r1, r2, r3);
      ms_noise_sym_split(&a, &c1, &c2);
      CHECK_MEM(c1.k, r1, 32);
      CHECK_MEM(c2.k, r2, 32);
      CHECK(c1.has_key && c2.has_key && c1.n == 0 && c2.n == 0);
    }
  }
  ms_noise_sym_wipe(&ss);
  CHECK(sodium_is_zero((const uint8_t *)&ss, sizeof(ss)));
}

static void test_cipher(void) {
  ms_noise_cipher_t cs;
  uint8_t key[32], nonce[12] = {0}, ad[7] = "ad-data", pt[50], a[66], b[66];
  unsigned long long clen;
  randombytes_buf(key, sizeof(key));
  randombytes_buf(pt, sizeof(pt));

  /* Nonce layout: 4 zero bytes ‖ u64le(n). */
  ms_noise_cipher_init(&cs, key);
  ms__noise_cipher_set_nonce(&cs, 0x0102030405060708ull);
  CHECK_INT(ms_noise_cipher_encrypt(&cs, a, ad, sizeof(ad), pt, 50), 0);
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(8 - i);
  crypto_aead_chacha20poly1305_ietf_encrypt(b, &clen, pt, 50, ad, sizeof(ad),
                                            NULL, nonce, key);
  CHECK_INT(clen, 66);
  CHECK_MEM(a, b, 66);
  CHECK(cs.n == 0x0102030405060709ull);

  /* Decrypt, in place, and with the wrong AD or nonce. */
  ms_noise_cipher_init(&cs, key);
  ms__noise_cipher_set_nonce(&cs, 0x0102030405060708ull);
  memcpy(b, a, 66);
  CHECK_INT(ms_noise_cipher_decrypt(&cs, b, ad, sizeof(ad), b, 66), 0);
  CHECK_MEM(b, pt, 50);
  ms__noise_cipher_set_nonce(&cs, 0x0102030405060708ull);
  CHECK_INT(ms_noise_cipher_decrypt(&cs, b, ad, 6, a, 66), MS_EDECRYPT);
  CHECK(cs.n == 0x0102030405060708ull);
  ms__noise_cipher_set_nonce(&cs, 0);
  CHECK_INT(ms_noise_cipher_decrypt(&cs, b, ad, sizeof(ad), a, 66),
            MS_EDECRYPT);
  CHECK_INT(ms_noise_cipher_decrypt(&cs, b, ad, sizeof(ad), a, 15),
            MS_EDECRYPT);

  /* Exhaustion: n = 2^64-2 is the last usable nonce. */
  ms__noise_cipher_set_nonce(&cs, UINT64_MAX - 1);
  CHECK_INT(ms_noise_cipher_encrypt(&cs, a, NULL, 0, pt, 10), 0);
  CHECK(cs.n == UINT64_MAX);
  CHECK_INT(ms_noise_cipher_encrypt(&cs, a, NULL, 0, pt, 10), MS_ELIMIT);
  CHECK_INT(ms_noise_cipher_decrypt(&cs, b, NULL, 0, a, 26), MS_ELIMIT);
  CHECK(cs.n == UINT64_MAX);

  /* Without a key: pass through. */
  ms_noise_cipher_init(&cs, NULL);
  CHECK_INT(ms_noise_cipher_encrypt(&cs, a, ad, sizeof(ad), pt, 50), 0);
  CHECK_MEM(a, pt, 50);
  CHECK_INT(cs.n, 0);
  ms_noise_cipher_init(&cs, key);
  ms_noise_cipher_wipe(&cs);
  CHECK(sodium_is_zero((const uint8_t *)&cs, sizeof(cs)));
}

/* ------------------------------------------------------------------ */
/* Generic Noise vectors                                               */
/* ------------------------------------------------------------------ */

static void test_vector(const mj_t *v, int idx) {
  uint8_t iprol[256], rprol[256], is[32], ie[32], irs[32], rsk[32], re[32];
  long iprl, rprl;
  ms_noise_t ini, res;
  ms_noise_outcome_t io, ro;
  const mj_t *msgs = mj_get(v, "messages");
  size_t nmsg = mj_count(msgs);
  uint8_t hh[64];

  fprintf(stderr, "  vector %d (%s)\n", idx, mj_str(v, "from"));
  CHECK_STR(mj_str(v, "name"), MS_NOISE_PROTOCOL_NAME);
  iprl = mj_hex(v, "init_prologue", iprol, sizeof(iprol));
  rprl = mj_hex(v, "resp_prologue", rprol, sizeof(rprol));
  CHECK(iprl >= 0 && rprl >= 0);
  CHECK_INT(mj_hex(v, "init_static", is, 32), 32);
  CHECK_INT(mj_hex(v, "init_ephemeral", ie, 32), 32);
  CHECK_INT(mj_hex(v, "init_remote_static", irs, 32), 32);
  CHECK_INT(mj_hex(v, "resp_static", rsk, 32), 32);
  CHECK_INT(mj_hex(v, "resp_ephemeral", re, 32), 32);
  CHECK(nmsg >= 2);
  if (iprl < 0 || rprl < 0 || nmsg < 2) return;

  CHECK_INT(ms_noise_ik_initiator_init(&ini, iprol, (size_t)iprl, is, irs,
                                       ie), 0);
  CHECK_INT(ms_noise_ik_responder_init(&res, rprol, (size_t)rprl, rsk, re),
            0);
  /* The responder's public static is what the initiator was given. */
  CHECK_MEM(res.s_pk, irs, 32);
  CHECK_INT(ms_noise_expected(&ini), 0);

  for (size_t i = 0; i < nmsg; i++) {
    const mj_t *m = mj_at(msgs, i);
    size_t plen = 0, clen = 0;
    uint8_t *pl = mj_hex_alloc(m, "payload", &plen);
    uint8_t *ct = mj_hex_alloc(m, "ciphertext", &clen);
    uint8_t *out = malloc(clen + 64), *back = malloc(clen + 64);
    CHECK(pl != NULL && ct != NULL);
    if (pl == NULL || ct == NULL) {
      free(pl); free(ct); free(out); free(back);
      return;
    }
    if (i == 0) {
      CHECK_INT(clen, MS_NOISE_IK_MSG1_OVERHEAD + plen);
      CHECK_INT(ms_noise_ik_write_msg1(&ini, out, pl, plen), 0);
      CHECK_MEM(out, ct, clen);
      CHECK_INT(ms_noise_ik_read_msg1(&res, ct, clen, back), 0);
      CHECK_MEM(back, pl, plen);
      /* The responder learnt the initiator's static key. */
      CHECK_MEM(res.rs, ini.s_pk, 32);
    } else if (i == 1) {
      CHECK_INT(clen, MS_NOISE_IK_MSG2_OVERHEAD + plen);
      CHECK_INT(ms_noise_ik_write_msg2(&res, out, pl, plen), 0);
      CHECK_MEM(out, ct, clen);
      CHECK_INT(ms_noise_ik_read_msg2(&ini, ct, clen, back), 0);
      CHECK_MEM(back, pl, plen);
      CHECK_INT(ms_noise_outcome(&ini, &io), 0);
      CHECK_INT(ms_noise_outcome(&res, &ro), 0);
      CHECK_MEM(io.handshake_hash, ro.handshake_hash, 64);
      if (mj_get(v, "handshake_hash")) {
        CHECK_INT(mj_hex(v, "handshake_hash", hh, 64), 64);
        CHECK_MEM(io.handshake_hash, hh, 64);
      }
      CHECK_MEM(io.send.k, ro.recv.k, 32);
      CHECK_MEM(io.recv.k, ro.send.k, 32);
      /* Secrets are gone from the states. */
      CHECK(sodium_is_zero(ini.e_sk, 32) && sodium_is_zero(res.e_sk, 32));
      CHECK(sodium_is_zero(ini.s_sk, 32) && sodium_is_zero(res.s_sk, 32));
      CHECK(sodium_is_zero(ini.ss.ck, 64) && sodium_is_zero(res.ss.ck, 64));
    } else {
      /* Transport: even = initiator -> responder. Through the framed
       * encoder (prefix ‖ ciphertext) and the decoder. */
      int from_ini = i % 2 == 0;
      ms_noise_cipher_t *tx = from_ini ? &io.send : &ro.send;
      ms_noise_cipher_t *rxc = from_ini ? &ro.recv : &io.recv;
      ms_noise_rx_t rx;
      size_t w = 0, c = 0, ol = 0;
      uint8_t *o = NULL;
      CHECK_INT(clen, plen + 16);
      CHECK_INT(ms_noise_sealed_size(plen), clen + 2);
      CHECK_INT(ms_noise_seal(tx, out, pl, plen, &w), 0);
      CHECK_INT(w, clen + 2);
      CHECK_INT(ms_noise_frame_get(out), clen);
      CHECK_MEM(out + 2, ct, clen);
      ms_noise_rx_init(&rx, rxc);
      CHECK_INT(ms_noise_rx_next(&rx, out, w, &c, &o, &ol), 1);
      CHECK_INT(c, w);
      CHECK_INT(ol, plen);
      if (ol == plen) CHECK_MEM(o, pl, plen);
      *rxc = rx.cs; /* carry the advanced nonce */
      ms_noise_rx_free(&rx);
    }
    free(pl);
    free(ct);
    free(out);
    free(back);
  }
  ms_noise_outcome_wipe(&io);
  ms_noise_outcome_wipe(&ro);
  ms_noise_wipe(&ini);
  ms_noise_wipe(&res);
}

/* ------------------------------------------------------------------ */
/* Spec layer                                                          */
/* ------------------------------------------------------------------ */

typedef struct {
  uint8_t app[32];
  uint8_t c_sk[64], c_pk[32]; /* client ed25519 */
  uint8_t s_sk[64], s_pk[32]; /* server ed25519 */
  uint8_t c_eph[32], s_eph[32];
} ids_t;

static void make_ids(ids_t *id, uint8_t tag) {
  uint8_t seed[32];
  memset(id->app, 0xd4 ^ tag, 32);
  memset(seed, 0x11 ^ tag, 32);
  crypto_sign_seed_keypair(id->c_pk, id->c_sk, seed);
  memset(seed, 0x22 ^ tag, 32);
  crypto_sign_seed_keypair(id->s_pk, id->s_sk, seed);
  memset(id->c_eph, 0x33 ^ tag, 32);
  memset(id->s_eph, 0x44 ^ tag, 32);
}

/* Full handshake; returns 1 if every step succeeded. */
static int spec_handshake(const ids_t *id, ms_noise_t *cl, ms_noise_t *sv,
                          uint8_t m1[130], uint8_t m2[50], int fixed) {
  int ok = 1;
#define STEP(x)             \
  do {                      \
    int r_ = (x);           \
    CHECK_INT(r_, 0);       \
    if (r_ != 0) ok = 0;    \
  } while (0)
  STEP(ms_noise_client_init(cl, id->app, id->c_sk, id->c_pk, id->s_pk,
                            fixed ? id->c_eph : NULL));
  STEP(ms_noise_server_init(sv, id->app, id->s_sk, id->s_pk,
                            fixed ? id->s_eph : NULL));
  if (!ok) return 0;
  CHECK_INT(ms_noise_expected(cl), 0);
  CHECK_INT(ms_noise_expected(sv), MS_NOISE_MSG1_FRAMED_LEN);
  CHECK(ms_noise_remote_key(cl) != NULL &&
        memcmp(ms_noise_remote_key(cl), id->s_pk, 32) == 0);
  CHECK(ms_noise_remote_key(sv) == NULL);
  STEP(ms_noise_client_hello(cl, m1));
  CHECK_INT(ms_noise_expected(cl), MS_NOISE_MSG2_FRAMED_LEN);
  CHECK_INT(ms_noise_frame_get(m1), 128);
  STEP(ms_noise_server_read_hello(sv, m1, 130));
  CHECK_INT(ms_noise_expected(sv), 0);
  CHECK(ms_noise_remote_key(sv) != NULL &&
        memcmp(ms_noise_remote_key(sv), id->c_pk, 32) == 0);
  STEP(ms_noise_server_accept(sv, m2));
  CHECK_INT(ms_noise_frame_get(m2), 48);
  STEP(ms_noise_client_read_accept(cl, m2, 50));
  CHECK_INT(cl->stage, MS_NOISE_DONE);
  CHECK_INT(sv->stage, MS_NOISE_DONE);
  CHECK_INT(ms_noise_expected(cl), 0);
#undef STEP
  return ok;
}

static void check_outcomes(const ids_t *id, const ms_noise_t *cl,
                           const ms_noise_t *sv) {
  ms_noise_outcome_t c, s;
  uint8_t x[32];
  CHECK_INT(ms_noise_outcome(cl, &c), 0);
  CHECK_INT(ms_noise_outcome(sv, &s), 0);
  CHECK_MEM(c.send.k, s.recv.k, 32);
  CHECK_MEM(c.recv.k, s.send.k, 32);
  CHECK(memcmp(c.send.k, c.recv.k, 32) != 0);
  CHECK_MEM(c.handshake_hash, s.handshake_hash, 64);
  CHECK_MEM(c.remote_pk, id->s_pk, 32);
  CHECK_MEM(s.remote_pk, id->c_pk, 32);
  CHECK_INT(crypto_sign_ed25519_pk_to_curve25519(x, id->s_pk), 0);
  CHECK_MEM(c.remote_static, x, 32);
  CHECK_INT(crypto_sign_ed25519_pk_to_curve25519(x, id->c_pk), 0);
  CHECK_MEM(s.remote_static, x, 32);
  CHECK(c.send.n == 0 && c.recv.n == 0);
  CHECK(sodium_is_zero(cl->s_sk, 32) && sodium_is_zero(sv->s_sk, 32));
  CHECK(sodium_is_zero(cl->e_sk, 32) && sodium_is_zero(sv->e_sk, 32));
  CHECK(sodium_is_zero(cl->ss.ck, 64) && sodium_is_zero(sv->ss.ck, 64));
  ms_noise_outcome_wipe(&c);
  ms_noise_outcome_wipe(&s);
}

static void test_spec_handshake(void) {
  ids_t id;
  ms_noise_t cl, sv, cl2, sv2;
  uint8_t m1[130], m2[50], m1b[130], m2b[50];

  make_ids(&id, 0);
  CHECK_INT(ms_noise_msg1_framed_len(), 130);
  CHECK_INT(ms_noise_msg2_framed_len(), 50);
  CHECK(spec_handshake(&id, &cl, &sv, m1, m2, 1));
  check_outcomes(&id, &cl, &sv);
  /* Deterministic with fixed ephemerals. */
  CHECK(spec_handshake(&id, &cl2, &sv2, m1b, m2b, 1));
  CHECK_MEM(m1, m1b, 130);
  CHECK_MEM(m2, m2b, 50);
  ms_noise_wipe(&cl2);
  ms_noise_wipe(&sv2);
  /* Fresh ephemerals differ. */
  CHECK(spec_handshake(&id, &cl2, &sv2, m1b, m2b, 0));
  check_outcomes(&id, &cl2, &sv2);
  CHECK(memcmp(m1, m1b, 32) != 0);
  /* After DONE: steps are misuse, the states are not failed. */
  CHECK_INT(ms_noise_client_hello(&cl, m1b), MS_EINVAL);
  CHECK_INT(ms_noise_server_read_hello(&sv, m1, 130), MS_EINVAL);
  CHECK(ms_noise_error(&cl) == NULL && ms_noise_error(&sv) == NULL);
  ms_noise_wipe(&cl);
  CHECK_INT(ms_noise_outcome(&cl, &(ms_noise_outcome_t){0}), MS_EINVAL);
  ms_noise_wipe(&sv);
  ms_noise_wipe(&cl2);
  ms_noise_wipe(&sv2);
}

/* A server state fed msg1; expects failure with the error naming what. */
static void expect_server_fail(const ids_t *id, const uint8_t *m1, size_t len,
                               const char *what) {
  ms_noise_t sv;
  uint8_t m2[50];
  CHECK_INT(ms_noise_server_init(&sv, id->app, id->s_sk, id->s_pk, NULL), 0);
  CHECK_INT(ms_noise_server_read_hello(&sv, m1, len), MS_EHANDSHAKE);
  CHECK_INT(sv.stage, MS_NOISE_FAILED);
  if (what) CHECK_HAS(ms_noise_error(&sv), what);
  CHECK(ms_noise_remote_key(&sv) == NULL);
  CHECK_INT(ms_noise_expected(&sv), 0);
  /* Dead: everything after fails. */
  CHECK_INT(ms_noise_server_accept(&sv, m2), MS_EHANDSHAKE);
  CHECK_INT(ms_noise_server_read_hello(&sv, m1, len), MS_EHANDSHAKE);
  CHECK(sodium_is_zero(sv.s_sk, 32) && sodium_is_zero(sv.e_sk, 32));
  CHECK(sodium_is_zero((const uint8_t *)&sv.ss, sizeof(sv.ss)));
  ms_noise_wipe(&sv);
}

/* msg1 from a raw initiator with the client's X25519 static but a chosen
 * payload (the spec layer would always send its own key). */
static void forged_msg1(const ids_t *id, const uint8_t *payload,
                        uint8_t out[130]) {
  ms_noise_t ini;
  uint8_t xsk[32], xrs[32];
  CHECK_INT(crypto_sign_ed25519_sk_to_curve25519(xsk, id->c_sk), 0);
  CHECK_INT(crypto_sign_ed25519_pk_to_curve25519(xrs, id->s_pk), 0);
  CHECK_INT(ms_noise_ik_initiator_init(&ini, id->app, 32, xsk, xrs, NULL),
            0);
  ms_noise_frame_put(out, 128);
  CHECK_INT(ms_noise_ik_write_msg1(&ini, out + 2, payload, 32), 0);
  ms_noise_wipe(&ini);
  sodium_memzero(xsk, sizeof(xsk));
}

static void test_spec_failures(void) {
  ids_t id, other;
  ms_noise_t cl, sv;
  uint8_t m1[131], m2[51], bad[131];
  static const uint8_t identity[32] = {1}; /* ed25519 neutral: no X25519 */

  make_ids(&id, 0);
  make_ids(&other, 9);

  /* Init: mismatched local pair; server keys without an X25519 form. */
  CHECK_INT(ms_noise_client_init(&cl, id.app, id.c_sk, id.s_pk, id.s_pk,
                                 NULL), MS_EKEY);
  CHECK_HAS(ms_noise_error(&cl), "does not match");
  CHECK_INT(ms_noise_client_init(&cl, id.app, id.c_sk, id.c_pk, identity,
                                 NULL), MS_EKEY);
  CHECK_HAS(ms_noise_error(&cl), "server public key");
  CHECK_INT(cl.stage, MS_NOISE_FAILED);
  CHECK_INT(ms_noise_client_hello(&cl, m1), MS_EHANDSHAKE);
  CHECK_INT(ms_noise_server_init(&sv, id.app, id.s_sk, id.c_pk, NULL),
            MS_EKEY);

  /* Wrong network: client uses another app key. */
  CHECK_INT(ms_noise_client_init(&cl, other.app, id.c_sk, id.c_pk, id.s_pk,
                                 NULL), 0);
  CHECK_INT(ms_noise_client_hello(&cl, m1), 0);
  expect_server_fail(&id, m1, 130, "does not decrypt");
  ms_noise_wipe(&cl);

  /* Wrong server key: client dials another server's key. */
  CHECK_INT(ms_noise_client_init(&cl, id.app, id.c_sk, id.c_pk, other.s_pk,
                                 NULL), 0);
  CHECK_INT(ms_noise_client_hello(&cl, m1), 0);
  expect_server_fail(&id, m1, 130, "wrong server key");
  ms_noise_wipe(&cl);

  /* Payload key mismatching s: another identity's key, or no key. */
  forged_msg1(&id, other.c_pk, m1);
  expect_server_fail(&id, m1, 130, "does not match its static key");
  forged_msg1(&id, identity, m1);
  expect_server_fail(&id, m1, 130, "not a valid ed25519 key");
  forged_msg1(&id, id.c_pk, m1); /* control: the honest payload passes */
  CHECK_INT(ms_noise_server_init(&sv, id.app, id.s_sk, id.s_pk, NULL), 0);
  CHECK_INT(ms_noise_server_read_hello(&sv, m1, 130), 0);
  ms_noise_wipe(&sv);
  /* The documented caveat: -P converts like P, so the holder of P's secret
   * may claim -P (sign bit of the encoding flipped). */
  {
    uint8_t neg[32];
    memcpy(neg, id.c_pk, 32);
    neg[31] ^= 0x80;
    forged_msg1(&id, neg, m1);
    CHECK_INT(ms_noise_server_init(&sv, id.app, id.s_sk, id.s_pk, NULL), 0);
    CHECK_INT(ms_noise_server_read_hello(&sv, m1, 130), 0);
    CHECK(ms_noise_remote_key(&sv) &&
          memcmp(ms_noise_remote_key(&sv), neg, 32) == 0);
    ms_noise_wipe(&sv);
  }

  /* Truncated / oversized msg1. */
  CHECK_INT(ms_noise_client_init(&cl, id.app, id.c_sk, id.c_pk, id.s_pk,
                                 id.c_eph), 0);
  CHECK_INT(ms_noise_client_hello(&cl, m1), 0);
  m1[130] = 0;
  expect_server_fail(&id, m1, 0, "truncated");
  expect_server_fail(&id, m1, 1, "truncated");
  expect_server_fail(&id, m1, 2, "truncated");
  expect_server_fail(&id, m1, 129, "truncated");
  expect_server_fail(&id, m1, 131, "oversized");
  memcpy(bad, m1, 131);
  ms_noise_frame_put(bad, 127);
  expect_server_fail(&id, bad, 130, "length prefix");
  ms_noise_frame_put(bad, 129);
  expect_server_fail(&id, bad, 131, "length prefix");
  ms_noise_frame_put(bad, 65535);
  expect_server_fail(&id, bad, 130, "length prefix");

  /* Every byte of msg1 matters. */
  for (size_t i = 0; i < 130; i++) {
    memcpy(bad, m1, 130);
    bad[i] ^= (uint8_t)(1u << (i % 8));
    expect_server_fail(&id, bad, 130, i < 2 ? "length prefix" : "msg1");
  }

  /* The server's msg2, then every way the client can reject it. */
  CHECK_INT(ms_noise_server_init(&sv, id.app, id.s_sk, id.s_pk, id.s_eph), 0);
  CHECK_INT(ms_noise_server_read_hello(&sv, m1, 130), 0);
  CHECK_INT(ms_noise_server_accept(&sv, m2), 0);
  ms_noise_wipe(&sv);
  ms_noise_wipe(&cl);
  m2[50] = 0;
  for (int k = 0; k < 50 + 7; k++) {
    size_t len = 50;
    const char *what = "msg2";
    memcpy(bad, m2, 51);
    if (k < 50) {
      bad[k] ^= (uint8_t)(0x80u >> (k % 8));
      if (k < 2) what = "length prefix";
    } else {
      static const size_t lens[] = {0, 1, 2, 49, 51};
      if (k - 50 < 5) {
        len = lens[k - 50];
        what = len > 50 ? "oversized" : "truncated";
      } else {
        ms_noise_frame_put(bad, k == 55 ? 47 : 49);
        what = "length prefix";
      }
    }
    CHECK_INT(ms_noise_client_init(&cl, id.app, id.c_sk, id.c_pk, id.s_pk,
                                   id.c_eph), 0);
    CHECK_INT(ms_noise_client_hello(&cl, m1), 0);
    CHECK_INT(ms_noise_client_read_accept(&cl, bad, len), MS_EHANDSHAKE);
    CHECK_HAS(ms_noise_error(&cl), what);
    CHECK_INT(ms_noise_client_read_accept(&cl, m2, 50), MS_EHANDSHAKE);
    CHECK_INT(ms_noise_outcome(&cl, &(ms_noise_outcome_t){0}), MS_EINVAL);
    CHECK(sodium_is_zero(cl.e_sk, 32) && sodium_is_zero(cl.s_sk, 32));
    ms_noise_wipe(&cl);
  }
  /* Control: the untouched msg2 completes. */
  CHECK_INT(ms_noise_client_init(&cl, id.app, id.c_sk, id.c_pk, id.s_pk,
                                 id.c_eph), 0);
  CHECK_INT(ms_noise_client_hello(&cl, m1), 0);
  CHECK_INT(ms_noise_client_read_accept(&cl, m2, 50), 0);
  ms_noise_wipe(&cl);

  /* Wrong-stage calls change nothing. */
  CHECK_INT(ms_noise_client_init(&cl, id.app, id.c_sk, id.c_pk, id.s_pk,
                                 NULL), 0);
  CHECK_INT(ms_noise_server_init(&sv, id.app, id.s_sk, id.s_pk, NULL), 0);
  CHECK_INT(ms_noise_client_read_accept(&cl, m2, 50), MS_EINVAL);
  CHECK_INT(ms_noise_server_accept(&sv, m2), MS_EINVAL);
  CHECK_INT(ms_noise_server_read_hello(&cl, m1, 130), MS_EINVAL);
  CHECK_INT(ms_noise_client_hello(&sv, m1), MS_EINVAL);
  CHECK_INT(ms_noise_ik_read_msg2(&cl, m2 + 2, 48, NULL), MS_EINVAL);
  CHECK(cl.stage == MS_NOISE_INIT_WRITE_MSG1 &&
        sv.stage == MS_NOISE_RESP_READ_MSG1);
  CHECK(ms_noise_error(&cl) == NULL && ms_noise_error(&sv) == NULL);
  CHECK_INT(ms_noise_client_hello(&cl, m1), 0);
  CHECK_INT(ms_noise_server_read_hello(&sv, m1, 130), 0);
  /* Refused by the authorize hook: the driver hangs up and wipes. */
  ms_noise_wipe(&sv);
  CHECK(sodium_is_zero((const uint8_t *)&sv.ss, sizeof(sv.ss)));
  CHECK(ms_noise_remote_key(&sv) == NULL);
  ms_noise_wipe(&cl);

  /* Spec functions refuse raw states. */
  {
    uint8_t xsk[32] = {5};
    CHECK_INT(ms_noise_ik_responder_init(&sv, NULL, 0, xsk, NULL), 0);
    CHECK_INT(ms_noise_server_read_hello(&sv, m1, 130), MS_EINVAL);
    CHECK_INT(ms_noise_expected(&sv), 0);
    CHECK(ms_noise_remote_key(&sv) == NULL);
    ms_noise_wipe(&sv);
  }
}

static void test_raw_failures(void) {
  uint8_t isk[32], rsk[32], rpk[32], zero[32] = {0};
  uint8_t msg[200], pl[100];
  ms_noise_t ini, res;
  randombytes_buf(isk, 32);
  randombytes_buf(rsk, 32);
  crypto_scalarmult_base(rpk, rsk);

  /* A small-order responder key: es is all zeros. */
  CHECK_INT(ms_noise_ik_initiator_init(&ini, NULL, 0, isk, zero, NULL), 0);
  CHECK_INT(ms_noise_ik_write_msg1(&ini, msg, NULL, 0), MS_EHANDSHAKE);
  CHECK_HAS(ms_noise_error(&ini), "all zeros");
  ms_noise_wipe(&ini);
  /* A small-order initiator ephemeral in msg1. */
  CHECK_INT(ms_noise_ik_responder_init(&res, NULL, 0, rsk, NULL), 0);
  memset(msg, 0, 96);
  CHECK_INT(ms_noise_ik_read_msg1(&res, msg, 96, NULL), MS_EHANDSHAKE);
  CHECK_HAS(ms_noise_error(&res), "all zeros");
  ms_noise_wipe(&res);
  /* Too short / payload limit. */
  CHECK_INT(ms_noise_ik_responder_init(&res, NULL, 0, rsk, NULL), 0);
  CHECK_INT(ms_noise_ik_read_msg1(&res, msg, 95, NULL), MS_EHANDSHAKE);
  CHECK_HAS(ms_noise_error(&res), "too short");
  ms_noise_wipe(&res);
  CHECK_INT(ms_noise_ik_initiator_init(&ini, NULL, 0, isk, rpk, NULL), 0);
  CHECK_INT(ms_noise_ik_write_msg1(&ini, msg, pl, 65535 - 95), MS_EINVAL);
  CHECK_INT(ini.stage, MS_NOISE_INIT_WRITE_MSG1);
  /* Arbitrary payloads both ways, and msg2 with a small-order e. */
  randombytes_buf(pl, sizeof(pl));
  CHECK_INT(ms_noise_ik_write_msg1(&ini, msg, pl, 100), 0);
  /* A payload with nowhere to go fails (no write through NULL). */
  CHECK_INT(ms_noise_ik_responder_init(&res, NULL, 0, rsk, NULL), 0);
  CHECK_INT(ms_noise_ik_read_msg1(&res, msg, 196, NULL), MS_EHANDSHAKE);
  CHECK_HAS(ms_noise_error(&res), "no payload buffer");
  ms_noise_wipe(&res);
  CHECK_INT(ms_noise_ik_responder_init(&res, NULL, 0, rsk, NULL), 0);
  {
    uint8_t back[100];
    CHECK_INT(ms_noise_ik_read_msg1(&res, msg, 196, back), 0);
    CHECK_MEM(back, pl, 100);
  }
  memset(msg, 0, 48);
  CHECK_INT(ms_noise_ik_read_msg2(&ini, msg, 48, NULL), MS_EHANDSHAKE);
  CHECK_HAS(ms_noise_error(&ini), "all zeros");
  CHECK_INT(ms_noise_ik_read_msg2(&ini, msg, 48, NULL), MS_EHANDSHAKE);
  ms_noise_wipe(&ini);
  ms_noise_wipe(&res);
}

/* ------------------------------------------------------------------ */
/* Transport                                                           */
/* ------------------------------------------------------------------ */

static void make_pair(ms_noise_cipher_t *tx, ms_noise_cipher_t *rxc) {
  uint8_t k[32];
  randombytes_buf(k, 32);
  ms_noise_cipher_init(tx, k);
  ms_noise_cipher_init(rxc, k);
}

typedef struct {
  uint8_t *buf;
  size_t len;
  int status;      /* last non-1 return of rx_next */
  int frames;
} sink_t;

/* Decode wire in random chunks (each copied to its own allocation), with a
 * pause (stash, then drain) after some frames. */
static void decode_chunks(ms_noise_rx_t *rx, const uint8_t *wire, size_t len,
                          sink_t *s, int pause_every, size_t maxchunk) {
  size_t off = 0;
  s->status = 0;
  while (off < len && s->status >= 0 && s->status != 2) {
    size_t n = 1 + rnd() % maxchunk, c, ol;
    uint8_t *chunk, *p, *o;
    int r;
    if (n > len - off) n = len - off;
    chunk = malloc(n);
    memcpy(chunk, wire + off, n);
    off += n;
    p = chunk;
    for (;;) {
      r = ms_noise_rx_next(rx, p, n, &c, &o, &ol);
      if (c > n) {
        CHECK(c <= n);
        break;
      }
      p += c;
      n -= c;
      if (r != 1) break;
      memcpy(s->buf + s->len, o, ol);
      s->len += ol;
      s->frames++;
      if (pause_every && s->frames % pause_every == 0) {
        if (ms_noise_rx_stash(rx, p, n) != 0) CHECK(0);
        n = 0;
        while ((r = ms_noise_rx_next(rx, NULL, 0, &c, &o, &ol)) == 1) {
          memcpy(s->buf + s->len, o, ol);
          s->len += ol;
          s->frames++;
        }
        break;
      }
    }
    s->status = r;
    free(chunk);
  }
}

static void roundtrip(size_t size, int pause_every, size_t maxchunk) {
  ms_noise_cipher_t tx, rxc;
  ms_noise_rx_t rx;
  uint8_t *plain = malloc(size + 1), *wire;
  size_t cap = ms_noise_sealed_size(size) + MS_NOISE_GOODBYE_LEN, w = 0;
  size_t frames = size / 65519 + (size % 65519 != 0);
  sink_t s = {0};
  int ok;
  make_pair(&tx, &rxc);
  randombytes_buf(plain, size);
  wire = malloc(cap);
  CHECK_INT(ms_noise_sealed_size(size), size + 18 * frames);
  CHECK_INT(ms_noise_seal(&tx, wire, plain, size, &w), 0);
  CHECK_INT(w, ms_noise_sealed_size(size));
  CHECK(tx.n == frames);
  CHECK_INT(ms_noise_goodbye(&tx, wire + w), 0);
  CHECK_INT(ms_noise_frame_get(wire + w), 16);
  w += MS_NOISE_GOODBYE_LEN;
  s.buf = malloc(size + 1);
  ms_noise_rx_init(&rx, &rxc);
  decode_chunks(&rx, wire, w, &s, pause_every, maxchunk);
  ok = s.status == 2 && s.len == size && memcmp(s.buf, plain, size) == 0;
  CHECK(ok);
  if (!ok)
    fprintf(stderr, "  roundtrip %zu: status %d len %zu\n", size, s.status,
            s.len);
  CHECK_INT(s.frames, frames);
  CHECK_INT(ms_noise_rx_eof(&rx), 0);
  CHECK(rx.part == NULL && rx.stash == NULL);
  ms_noise_rx_free(&rx);
  free(plain);
  free(wire);
  free(s.buf);
}

static void test_transport_roundtrip(void) {
  static const size_t sizes[] = {0,      1,      2,      15,     16,
                                 17,     100,    4096,   65517,  65518,
                                 65519,  65520,  65521,  131037, 131038,
                                 131039, 131040, 196557, 196558, 200000};
  uint8_t buf[40];
  size_t w = 99;
  ms_noise_cipher_t tx, rxc;

  CHECK_INT(ms_noise_sealed_size(0), 0);
  CHECK_INT(ms_noise_sealed_size(1), 19);
  CHECK_INT(ms_noise_sealed_size(65519), 65537);
  CHECK_INT(ms_noise_sealed_size(65520), 65520 + 36);
  CHECK(ms_noise_sealed_size(SIZE_MAX) == SIZE_MAX);
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    roundtrip(sizes[i], 0, 70000);
    roundtrip(sizes[i], 1, 3000);
    roundtrip(sizes[i], 2, 1 + rnd() % 200000);
  }
  for (int i = 0; i < 12; i++) roundtrip(rnd() % 200001, (int)(i % 3), 9000);
  /* Tiny chunks: every prefix split. */
  roundtrip(70000, 0, 3);

  /* A zero-length write writes nothing and uses no nonce. */
  make_pair(&tx, &rxc);
  CHECK_INT(ms_noise_seal(&tx, buf, buf, 0, &w), 0);
  CHECK_INT(w, 0);
  CHECK(tx.n == 0);

  /* Many writes of random sizes into one stream. */
  {
    size_t total = 0, wl = 0, n;
    uint8_t *plain = malloc(600000), *wire = malloc(700000);
    sink_t s = {0};
    ms_noise_rx_t rx;
    make_pair(&tx, &rxc);
    randombytes_buf(plain, 600000);
    while (total < 500000) {
      size_t ww;
      n = rnd() % 3 == 0 ? rnd() % 70000 : rnd() % 300;
      if (ms_noise_seal(&tx, wire + wl, plain + total, n, &ww) != 0) CHECK(0);
      wl += ww;
      total += n;
    }
    CHECK_INT(ms_noise_goodbye(&tx, wire + wl), 0);
    wl += 18;
    s.buf = malloc(600000);
    ms_noise_rx_init(&rx, &rxc);
    decode_chunks(&rx, wire, wl, &s, 3, 5000);
    CHECK_INT(s.status, 2);
    CHECK_INT(s.len, total);
    CHECK(memcmp(s.buf, plain, total) == 0);
    ms_noise_rx_free(&rx);
    free(plain);
    free(wire);
    free(s.buf);
  }
}

/* Feed whole `wire` to a fresh decoder in one call and return the first
 * non-1 status after draining frames. */
static int feed(ms_noise_rx_t *rx, uint8_t *wire, size_t len, int *frames) {
  size_t c, ol;
  uint8_t *o;
  int r;
  *frames = 0;
  while ((r = ms_noise_rx_next(rx, wire, len, &c, &o, &ol)) == 1) {
    wire += c;
    len -= c;
    (*frames)++;
  }
  return r;
}

static void test_transport_errors(void) {
  ms_noise_cipher_t tx, rxc, tx0, rxc0;
  ms_noise_rx_t rx;
  uint8_t wire[400], copy[400], gb[18], msg[100];
  size_t w, c, ol;
  uint8_t *o;
  int frames;

  memset(msg, 'x', sizeof(msg));
  make_pair(&tx0, &rxc0);

  /* Goodbye: clean end; eof 0; again 2; later bytes an error. */
  tx = tx0;
  CHECK_INT(ms_noise_seal(&tx, wire, msg, 10, &w), 0);
  CHECK_INT(ms_noise_goodbye(&tx, wire + w), 0);
  CHECK(sodium_is_zero((const uint8_t *)&tx, sizeof(tx)));
  CHECK_INT(ms_noise_seal(&tx, copy, msg, 10, &c), MS_ESHUTDOWN);
  CHECK_INT(c, 0);
  CHECK_INT(ms_noise_goodbye(&tx, gb), MS_ESHUTDOWN);
  w += 18;
  memcpy(copy, wire, w);
  ms_noise_rx_init(&rx, &rxc0);
  CHECK_INT(ms_noise_rx_eof(&rx), MS_EHANGUP);
  CHECK_INT(feed(&rx, copy, w, &frames), 2);
  CHECK_INT(frames, 1);
  CHECK_INT(ms_noise_rx_eof(&rx), 0);
  CHECK_INT(ms_noise_rx_next(&rx, NULL, 0, &c, &o, &ol), 2);
  CHECK(sodium_is_zero(rx.cs.k, 32));
  CHECK_INT(ms_noise_rx_next(&rx, copy, 1, &c, &o, &ol), MS_EFRAME);
  CHECK_INT(ms_noise_rx_eof(&rx), MS_EFRAME);
  ms_noise_rx_free(&rx);

  /* Bytes after the goodbye in the same input. */
  memcpy(copy, wire, w);
  copy[w] = 0;
  ms_noise_rx_init(&rx, &rxc0);
  CHECK_INT(feed(&rx, copy, w + 1, &frames), MS_EFRAME);
  CHECK_INT(ms_noise_rx_eof(&rx), MS_EFRAME);
  ms_noise_rx_free(&rx);
  /* ... and in the stash. */
  {
    uint8_t extra[40];
    memcpy(extra, wire + 28, 18);
    extra[18] = 1;
    memcpy(copy, wire, 28);
    ms_noise_rx_init(&rx, &rxc0);
    CHECK_INT(ms_noise_rx_next(&rx, copy, 28, &c, &o, &ol), 1);
    CHECK_INT(ms_noise_rx_stash(&rx, extra, 19), 0);
    CHECK_INT(ms_noise_rx_stashed(&rx), 19);
    CHECK_INT(ms_noise_rx_next(&rx, NULL, 0, &c, &o, &ol), MS_EFRAME);
    CHECK_INT(ms_noise_rx_stashed(&rx), 0);
    ms_noise_rx_free(&rx);
  }

  /* EOF before the goodbye: between frames, mid-prefix, mid-frame. */
  {
    static const size_t cuts[] = {0, 1, 2, 10, 27, 28, 29, 30, 45};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
      memcpy(copy, wire, w);
      ms_noise_rx_init(&rx, &rxc0);
      CHECK_INT(feed(&rx, copy, cuts[i], &frames), 0);
      CHECK_INT(ms_noise_rx_eof(&rx), MS_EHANGUP);
      ms_noise_rx_free(&rx);
    }
  }

  /* L < 16, whole or with the prefix split. */
  for (unsigned L = 0; L < 16; L++) {
    uint8_t f[2];
    ms_noise_frame_put(f, L);
    ms_noise_rx_init(&rx, &rxc0);
    CHECK_INT(ms_noise_rx_next(&rx, f, 1, &c, &o, &ol), 0);
    CHECK_INT(ms_noise_rx_next(&rx, f + 1, 1, &c, &o, &ol), MS_EFRAME);
    CHECK_INT(ms_noise_rx_next(&rx, NULL, 0, &c, &o, &ol), MS_EFRAME);
    CHECK_INT(ms_noise_rx_eof(&rx), MS_EFRAME);
    CHECK(sodium_is_zero(rx.cs.k, 32));
    ms_noise_rx_free(&rx);
  }

  /* Tampering anywhere in a frame: tag, ciphertext or length. */
  tx = tx0;
  CHECK_INT(ms_noise_seal(&tx, wire, msg, 20, &w), 0); /* 38 bytes */
  for (size_t i = 0; i < w; i++) {
    int r;
    memcpy(copy, wire, w);
    copy[i] ^= 0x01;
    ms_noise_rx_init(&rx, &rxc0);
    r = feed(&rx, copy, w, &frames);
    CHECK_INT(frames, 0);
    if (i < 2) {
      /* A changed length: either waits for more, or fails the tag. */
      CHECK(r == 0 || r == MS_EDECRYPT);
      if (r == 0) CHECK_INT(ms_noise_rx_eof(&rx), MS_EHANGUP);
    } else {
      CHECK_INT(r, MS_EDECRYPT);
      CHECK_INT(ms_noise_rx_next(&rx, NULL, 0, &c, &o, &ol), MS_EDECRYPT);
      CHECK_INT(ms_noise_rx_eof(&rx), MS_EDECRYPT);
    }
    ms_noise_rx_free(&rx);
  }
  /* A tampered goodbye is not a goodbye. */
  tx = tx0;
  CHECK_INT(ms_noise_goodbye(&tx, gb), 0);
  gb[17] ^= 4;
  ms_noise_rx_init(&rx, &rxc0);
  CHECK_INT(ms_noise_rx_next(&rx, gb, 18, &c, &o, &ol), MS_EDECRYPT);
  ms_noise_rx_free(&rx);
  /* Replay / reorder: frame 2 before frame 1. */
  tx = tx0;
  CHECK_INT(ms_noise_seal(&tx, wire, msg, 5, &w), 0);
  CHECK_INT(ms_noise_seal(&tx, wire + w, msg, 5, &c), 0);
  memcpy(copy, wire + w, c);
  memcpy(copy + c, wire, w);
  ms_noise_rx_init(&rx, &rxc0);
  CHECK_INT(feed(&rx, copy, w + c, &frames), MS_EDECRYPT);
  ms_noise_rx_free(&rx);
  memcpy(copy, wire, w);
  memcpy(copy + w, wire, w);
  ms_noise_rx_init(&rx, &rxc0);
  CHECK_INT(feed(&rx, copy, 2 * w, &frames), MS_EDECRYPT);
  CHECK_INT(frames, 1);
  ms_noise_rx_free(&rx);

  /* Nonce exhaustion. Sender: n = 2^64-3 leaves two nonces. */
  tx = tx0;
  rxc = rxc0;
  ms__noise_cipher_set_nonce(&tx, UINT64_MAX - 2);
  ms__noise_cipher_set_nonce(&rxc, UINT64_MAX - 2);
  {
    uint8_t *big = calloc(1, 65519 * 2 + 1), *bw = malloc(65519 * 3);
    CHECK_INT(ms_noise_seal(&tx, bw, big, 65519 * 2 + 1, &w), MS_ELIMIT);
    CHECK_INT(w, 0);
    CHECK(tx.n == UINT64_MAX - 2);
    CHECK_INT(ms_noise_seal(&tx, bw, big, 65519 * 2, &w), 0);
    CHECK(tx.n == UINT64_MAX);
    free(big);
    free(bw);
  }
  CHECK_INT(ms_noise_seal(&tx, wire, msg, 1, &w), MS_ELIMIT);
  CHECK_INT(ms_noise_goodbye(&tx, gb), MS_ELIMIT);
  /* Receiver: two frames open, the third is refused. */
  tx = tx0;
  ms__noise_cipher_set_nonce(&tx, UINT64_MAX - 2);
  CHECK_INT(ms_noise_seal(&tx, wire, msg, 3, &w), 0);
  CHECK_INT(ms_noise_seal(&tx, wire + w, msg, 3, &c), 0);
  w += c;
  /* A third frame under the (reserved) last nonce, forged by hand. */
  {
    uint8_t nonce[12] = {0};
    unsigned long long cl;
    memset(nonce + 4, 0xff, 8);
    ms_noise_frame_put(wire + w, 19);
    crypto_aead_chacha20poly1305_ietf_encrypt(wire + w + 2, &cl, msg, 3, NULL,
                                              0, NULL, nonce, tx0.k);
    w += 21;
  }
  ms_noise_rx_init(&rx, &rxc);
  CHECK_INT(feed(&rx, wire, w, &frames), MS_ELIMIT);
  CHECK_INT(frames, 2);
  CHECK_INT(ms_noise_rx_eof(&rx), MS_ELIMIT);
  ms_noise_rx_free(&rx);

  /* A decoder without a key refuses to run. */
  {
    ms_noise_cipher_t none;
    ms_noise_cipher_init(&none, NULL);
    ms_noise_rx_init(&rx, &none);
    CHECK_INT(ms_noise_rx_next(&rx, wire, 3, &c, &o, &ol), MS_EINVAL);
    ms_noise_rx_free(&rx);
    CHECK_INT(ms_noise_seal(&none, wire, msg, 3, &w), MS_ESHUTDOWN);
  }
  ms_noise_cipher_wipe(&tx0);
  ms_noise_cipher_wipe(&rxc0);
}

/* Pause semantics in detail: frames delivered from the stash, then input. */
static void test_stash(void) {
  ms_noise_cipher_t tx, rxc;
  ms_noise_rx_t rx;
  uint8_t wire[200], msg[30];
  size_t w = 0, ww, c, ol;
  uint8_t *o;
  int r;
  make_pair(&tx, &rxc);
  for (int i = 0; i < 4; i++) {
    memset(msg, 'a' + i, sizeof(msg));
    CHECK_INT(ms_noise_seal(&tx, wire + w, msg, 10 + (size_t)i, &ww), 0);
    w += ww;
  }
  CHECK_INT(ms_noise_goodbye(&tx, wire + w), 0);
  w += 18;
  ms_noise_rx_init(&rx, &rxc);
  /* First frame, then pause with the rest (3 frames + half the goodbye). */
  CHECK_INT(ms_noise_rx_next(&rx, wire, w - 9, &c, &o, &ol), 1);
  CHECK_INT(ol, 10);
  CHECK(o[0] == 'a' && o >= wire && o < wire + w); /* in place */
  CHECK_INT(ms_noise_rx_stash(&rx, wire + c, w - 9 - c), 0);
  CHECK_INT(ms_noise_rx_stashed(&rx), w - 9 - c);
  for (int i = 1; i < 4; i++) {
    r = ms_noise_rx_next(&rx, NULL, 0, &c, &o, &ol);
    CHECK_INT(r, 1);
    CHECK_INT(ol, 10 + i);
    CHECK(o[0] == 'a' + i);
    CHECK_INT(c, 0);
  }
  CHECK_INT(ms_noise_rx_next(&rx, NULL, 0, &c, &o, &ol), 0);
  CHECK_INT(ms_noise_rx_stashed(&rx), 0);
  CHECK(rx.stash == NULL);
  CHECK_INT(ms_noise_rx_eof(&rx), MS_EHANGUP); /* mid-goodbye */
  CHECK_INT(ms_noise_rx_next(&rx, wire + w - 9, 9, &c, &o, &ol), 2);
  CHECK_INT(c, 9);
  CHECK_INT(ms_noise_rx_eof(&rx), 0);
  ms_noise_rx_free(&rx);
  ms_noise_cipher_wipe(&tx);
  ms_noise_cipher_wipe(&rxc);
}

/* Spec handshake then transport both ways. */
static void test_spec_then_transport(void) {
  ids_t id;
  ms_noise_t cl, sv;
  ms_noise_outcome_t co, so;
  ms_noise_rx_t rx;
  uint8_t m1[130], m2[50], wire[200], *o;
  size_t w, c, ol;
  make_ids(&id, 3);
  CHECK(spec_handshake(&id, &cl, &sv, m1, m2, 0));
  CHECK_INT(ms_noise_outcome(&cl, &co), 0);
  CHECK_INT(ms_noise_outcome(&sv, &so), 0);
  ms_noise_wipe(&cl);
  ms_noise_wipe(&sv);
  CHECK_INT(ms_noise_seal(&co.send, wire, (const uint8_t *)"ping", 4, &w), 0);
  ms_noise_rx_init(&rx, &so.recv);
  CHECK_INT(ms_noise_rx_next(&rx, wire, w, &c, &o, &ol), 1);
  CHECK(ol == 4 && memcmp(o, "ping", 4) == 0);
  ms_noise_rx_free(&rx);
  CHECK_INT(ms_noise_seal(&so.send, wire, (const uint8_t *)"pong", 4, &w), 0);
  ms_noise_rx_init(&rx, &co.recv);
  CHECK_INT(ms_noise_rx_next(&rx, wire, w, &c, &o, &ol), 1);
  CHECK(ol == 4 && memcmp(o, "pong", 4) == 0);
  ms_noise_rx_free(&rx);
  /* Directions differ: the client cannot read its own frames. */
  CHECK_INT(ms_noise_seal(&co.send, wire, (const uint8_t *)"ping", 4, &w), 0);
  ms_noise_rx_init(&rx, &co.recv);
  CHECK_INT(ms_noise_rx_next(&rx, wire, w, &c, &o, &ol), MS_EDECRYPT);
  ms_noise_rx_free(&rx);
  ms_noise_outcome_wipe(&co);
  ms_noise_outcome_wipe(&so);
}

/* The spec-layer handshake as computed by PyPI noiseprotocol + PyNaCl
 * (Tests/interop/noise_vectors.py): our client and server reproduce every
 * byte, and decode the other implementation's frames. */
static void test_pynoise(const mj_t *v) {
  uint8_t app[32], cseed[32], sseed[32], c_pk[32], c_sk[64], s_pk[32];
  uint8_t s_sk[64], ce[32], se[32], want1[130], want2[50], hh[64], m1[130];
  uint8_t m2[50], gb[18], want_gb[18];
  ms_noise_t cl, sv;
  ms_noise_outcome_t co, so;
  const mj_t *tr = mj_get(v, "transport");

  CHECK_INT(mj_hex(v, "app_key", app, 32), 32);
  CHECK_INT(mj_hex(v, "client_seed", cseed, 32), 32);
  CHECK_INT(mj_hex(v, "server_seed", sseed, 32), 32);
  CHECK_INT(mj_hex(v, "client_ephemeral", ce, 32), 32);
  CHECK_INT(mj_hex(v, "server_ephemeral", se, 32), 32);
  CHECK_INT(mj_hex(v, "msg1", want1, 130), 130);
  CHECK_INT(mj_hex(v, "msg2", want2, 50), 50);
  CHECK_INT(mj_hex(v, "handshake_hash", hh, 64), 64);
  crypto_sign_seed_keypair(c_pk, c_sk, cseed);
  crypto_sign_seed_keypair(s_pk, s_sk, sseed);
  {
    uint8_t k[32];
    CHECK_INT(mj_hex(v, "client_pk", k, 32), 32);
    CHECK_MEM(k, c_pk, 32);
    CHECK_INT(mj_hex(v, "server_pk", k, 32), 32);
    CHECK_MEM(k, s_pk, 32);
  }
  CHECK_INT(ms_noise_client_init(&cl, app, c_sk, c_pk, s_pk, ce), 0);
  CHECK_INT(ms_noise_server_init(&sv, app, s_sk, s_pk, se), 0);
  CHECK_INT(ms_noise_client_hello(&cl, m1), 0);
  CHECK_MEM(m1, want1, 130);
  CHECK_INT(ms_noise_server_read_hello(&sv, want1, 130), 0);
  CHECK(ms_noise_remote_key(&sv) &&
        memcmp(ms_noise_remote_key(&sv), c_pk, 32) == 0);
  CHECK_INT(ms_noise_server_accept(&sv, m2), 0);
  CHECK_MEM(m2, want2, 50);
  CHECK_INT(ms_noise_client_read_accept(&cl, want2, 50), 0);
  CHECK_INT(ms_noise_outcome(&cl, &co), 0);
  CHECK_INT(ms_noise_outcome(&sv, &so), 0);
  CHECK_MEM(co.handshake_hash, hh, 64);
  CHECK_MEM(so.handshake_hash, hh, 64);
  for (size_t i = 0; i < mj_count(tr); i++) {
    const mj_t *t = mj_at(tr, i);
    int c2s = strcmp(mj_str(t, "dir"), "c2s") == 0;
    size_t pl = 0, wl = 0, w = 0, c, ol;
    uint8_t *p = mj_hex_alloc(t, "payload", &pl);
    uint8_t *want = mj_hex_alloc(t, "wire", &wl);
    uint8_t *out = malloc(wl + 1), *o;
    ms_noise_rx_t rx;
    CHECK(p && want);
    CHECK_INT(ms_noise_seal(c2s ? &co.send : &so.send, out, p, pl, &w), 0);
    CHECK_INT(w, wl);
    CHECK_MEM(out, want, wl);
    ms_noise_rx_init(&rx, c2s ? &so.recv : &co.recv);
    CHECK_INT(ms_noise_rx_next(&rx, want, wl, &c, &o, &ol), 1);
    CHECK(ol == pl && memcmp(o, p, pl) == 0);
    *(c2s ? &so.recv : &co.recv) = rx.cs;
    ms_noise_rx_free(&rx);
    free(p);
    free(want);
    free(out);
  }
  CHECK_INT(mj_hex(v, "goodbye_c2s", want_gb, 18), 18);
  CHECK_INT(ms_noise_goodbye(&co.send, gb), 0);
  CHECK_MEM(gb, want_gb, 18);
  CHECK_INT(mj_hex(v, "goodbye_s2c", want_gb, 18), 18);
  CHECK_INT(ms_noise_goodbye(&so.send, gb), 0);
  CHECK_MEM(gb, want_gb, 18);
  ms_noise_outcome_wipe(&co);
  ms_noise_outcome_wipe(&so);
  ms_noise_wipe(&cl);
  ms_noise_wipe(&sv);
}

int main(void) {
  mj_t *kat, *py;
  if (sodium_init() < 0) return 1;
  CHECK_STR(ms_err_name(MS_EDECRYPT), "MS_EDECRYPT");
  kat = mj_load("Tests/vectors/noise_ik_kat.json");
  CHECK(kat != NULL);
  if (kat) {
    const mj_t *vs = mj_get(kat, "vectors");
    CHECK_INT(mj_count(vs), 2);
    for (size_t i = 0; i < mj_count(vs); i++) test_vector(mj_at(vs, i), (int)i);
  }
  py = mj_load("Tests/vectors/noise_spec_pynoise.json");
  CHECK(py != NULL);
  if (py) test_pynoise(py);
  mj_free(py);
  test_hmac_hkdf();
  test_symmetric();
  test_cipher();
  test_spec_handshake();
  test_spec_failures();
  test_raw_failures();
  test_transport_roundtrip();
  test_transport_errors();
  test_stash();
  test_spec_then_transport();
  mj_free(kat);
  return mst_done("noise_core");
}
