/* Noise_IK_25519_ChaChaPoly_BLAKE2b core (spec/noise.md). No I/O. */
#include "noise_core.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(MS_NOISE_HASHLEN == crypto_generichash_blake2b_BYTES_MAX,
               "BLAKE2b-512");
_Static_assert(MS_NOISE_DHLEN == crypto_scalarmult_BYTES, "dh size");
_Static_assert(MS_NOISE_DHLEN == crypto_scalarmult_SCALARBYTES, "scalar");
_Static_assert(MS_NOISE_KEYBYTES ==
                   crypto_aead_chacha20poly1305_ietf_KEYBYTES,
               "aead key");
_Static_assert(MS_NOISE_TAGBYTES == crypto_aead_chacha20poly1305_ietf_ABYTES,
               "aead tag");
_Static_assert(MS_NOISE_NONCEBYTES ==
                   crypto_aead_chacha20poly1305_ietf_NPUBBYTES,
               "aead nonce");
_Static_assert(MS_NOISE_KEYBYTES <= MS_NOISE_HASHLEN, "key from hash");
_Static_assert(MS_PUBLICKEYBYTES == crypto_sign_PUBLICKEYBYTES, "ed pk");
_Static_assert(MS_SECRETKEYBYTES == crypto_sign_SECRETKEYBYTES, "ed sk");
_Static_assert(MS_NOISE_MSG1_LEN == 128, "spec msg1 is 128 bytes");
_Static_assert(MS_NOISE_MSG2_LEN == 48, "spec msg2 is 48 bytes");
_Static_assert(MS_NOISE_MAX_PAYLOAD == 65519, "transport payload limit");
_Static_assert(sizeof(MS_NOISE_PROTOCOL_NAME) - 1 <= MS_NOISE_HASHLEN,
               "the protocol name is padded, not hashed");

/* Output target for zero-length plaintexts: never read. */
static uint8_t noise_empty[1];


size_t ms_noise_msg1_framed_len(void) { return MS_NOISE_MSG1_FRAMED_LEN; }
size_t ms_noise_msg2_framed_len(void) { return MS_NOISE_MSG2_FRAMED_LEN; }


void ms_noise_frame_put(uint8_t out[MS_NOISE_LENBYTES], size_t len) {
  out[0] = (uint8_t)((len >> 8) & 0xff);
  out[1] = (uint8_t)(len & 0xff);
}


size_t ms_noise_frame_get(const uint8_t in[MS_NOISE_LENBYTES]) {
  return ((size_t)in[0] << 8) | in[1];
}


/* ------------------------------------------------------------------ */
/* CipherState                                                         */
/* ------------------------------------------------------------------ */

void ms_noise_cipher_init(ms_noise_cipher_t *cs, const uint8_t *key) {
  memset(cs, 0, sizeof(*cs));
  if (key != NULL) {
    memcpy(cs->k, key, MS_NOISE_KEYBYTES);
    cs->has_key = 1;
  }
}


void ms_noise_cipher_wipe(ms_noise_cipher_t *cs) {
  sodium_memzero(cs, sizeof(*cs));
}


void ms__noise_cipher_set_nonce(ms_noise_cipher_t *cs, uint64_t n) {
  cs->n = n;
}


/* 32 zero bits ‖ u64le(n) */
static void make_nonce(uint8_t out[MS_NOISE_NONCEBYTES], uint64_t n) {
  memset(out, 0, 4);
  for (int i = 0; i < 8; i++) out[4 + i] = (uint8_t)(n >> (8 * i));
}


int ms_noise_cipher_encrypt(ms_noise_cipher_t *cs, uint8_t *out,
                            const uint8_t *ad, size_t adlen,
                            const uint8_t *in, size_t len) {
  uint8_t nonce[MS_NOISE_NONCEBYTES];

  if (!cs->has_key) {
    if (len > 0 && out != in) memmove(out, in, len);
    return 0;
  }
  if (cs->n == MS_NOISE_NONCE_MAX) return MS_ELIMIT;
  if (in == NULL) in = noise_empty;
  make_nonce(nonce, cs->n);
  (void)crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, len, ad,
                                                  adlen, NULL, nonce, cs->k);
  cs->n++;
  return 0;
}


int ms_noise_cipher_decrypt(ms_noise_cipher_t *cs, uint8_t *out,
                            const uint8_t *ad, size_t adlen,
                            const uint8_t *in, size_t len) {
  uint8_t nonce[MS_NOISE_NONCEBYTES];

  if (!cs->has_key) {
    if (len > 0 && out != in) memmove(out, in, len);
    return 0;
  }
  if (cs->n == MS_NOISE_NONCE_MAX) return MS_ELIMIT;
  if (len < MS_NOISE_TAGBYTES) return MS_EDECRYPT;
  if (out == NULL) out = noise_empty; /* only when len == tag */
  make_nonce(nonce, cs->n);
  if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, len, ad,
                                                adlen, nonce, cs->k) != 0) {
    if (out != noise_empty) sodium_memzero(out, len - MS_NOISE_TAGBYTES);
    return MS_EDECRYPT;
  }
  cs->n++;
  return 0;
}


/* ------------------------------------------------------------------ */
/* HMAC-BLAKE2b and HKDF                                               */
/* ------------------------------------------------------------------ */

void ms_noise_hmac(uint8_t out[MS_NOISE_HASHLEN], const uint8_t *key,
                   size_t keylen, const uint8_t *d1, size_t d1len,
                   const uint8_t *d2, size_t d2len) {
  uint8_t k[MS_NOISE_BLOCKLEN] = {0};
  uint8_t pad[MS_NOISE_BLOCKLEN];
  uint8_t inner[MS_NOISE_HASHLEN];
  crypto_generichash_blake2b_state h;

  if (keylen > MS_NOISE_BLOCKLEN) {
    (void)crypto_generichash_blake2b(k, MS_NOISE_HASHLEN, key, keylen, NULL,
                                     0);
  } else if (keylen > 0) {
    memcpy(k, key, keylen);
  }
  /* inner = H((K ^ ipad) ‖ data) */
  for (size_t i = 0; i < sizeof(pad); i++) pad[i] = k[i] ^ 0x36;
  (void)crypto_generichash_blake2b_init(&h, NULL, 0, MS_NOISE_HASHLEN);
  (void)crypto_generichash_blake2b_update(&h, pad, sizeof(pad));
  if (d1len > 0) (void)crypto_generichash_blake2b_update(&h, d1, d1len);
  if (d2len > 0) (void)crypto_generichash_blake2b_update(&h, d2, d2len);
  (void)crypto_generichash_blake2b_final(&h, inner, sizeof(inner));
  /* out = H((K ^ opad) ‖ inner) */
  for (size_t i = 0; i < sizeof(pad); i++) pad[i] = k[i] ^ 0x5c;
  (void)crypto_generichash_blake2b_init(&h, NULL, 0, MS_NOISE_HASHLEN);
  (void)crypto_generichash_blake2b_update(&h, pad, sizeof(pad));
  (void)crypto_generichash_blake2b_update(&h, inner, sizeof(inner));
  (void)crypto_generichash_blake2b_final(&h, out, MS_NOISE_HASHLEN);

  sodium_memzero(k, sizeof(k));
  sodium_memzero(pad, sizeof(pad));
  sodium_memzero(inner, sizeof(inner));
  sodium_memzero(&h, sizeof(h));
}


void ms_noise_hkdf(const uint8_t ck[MS_NOISE_HASHLEN], const uint8_t *ikm,
                   size_t ikmlen, uint8_t out1[MS_NOISE_HASHLEN],
                   uint8_t out2[MS_NOISE_HASHLEN], uint8_t *out3) {
  uint8_t temp[MS_NOISE_HASHLEN];
  uint8_t o1[MS_NOISE_HASHLEN], o2[MS_NOISE_HASHLEN];
  uint8_t byte;

  /* Locals first: an output may alias ck. */
  ms_noise_hmac(temp, ck, MS_NOISE_HASHLEN, ikm, ikmlen, NULL, 0);
  byte = 0x01;
  ms_noise_hmac(o1, temp, sizeof(temp), &byte, 1, NULL, 0);
  byte = 0x02;
  ms_noise_hmac(o2, temp, sizeof(temp), o1, sizeof(o1), &byte, 1);
  if (out3 != NULL) {
    byte = 0x03;
    ms_noise_hmac(out3, temp, sizeof(temp), o2, sizeof(o2), &byte, 1);
  }
  memcpy(out1, o1, sizeof(o1));
  memcpy(out2, o2, sizeof(o2));
  sodium_memzero(temp, sizeof(temp));
  sodium_memzero(o1, sizeof(o1));
  sodium_memzero(o2, sizeof(o2));
}


/* ------------------------------------------------------------------ */
/* SymmetricState                                                      */
/* ------------------------------------------------------------------ */

void ms_noise_sym_init(ms_noise_sym_t *ss, const char *protocol_name,
                       size_t name_len) {
  memset(ss, 0, sizeof(*ss));
  if (name_len <= MS_NOISE_HASHLEN) {
    memcpy(ss->h, protocol_name, name_len); /* zero padded */
  } else {
    (void)crypto_generichash_blake2b(ss->h, MS_NOISE_HASHLEN,
                                     (const uint8_t *)protocol_name,
                                     name_len, NULL, 0);
  }
  memcpy(ss->ck, ss->h, MS_NOISE_HASHLEN);
  ms_noise_cipher_init(&ss->cs, NULL);
}


/* out = HASH(h ‖ data); out may be h. */
static void hash_with(uint8_t out[MS_NOISE_HASHLEN],
                      const uint8_t h[MS_NOISE_HASHLEN], const uint8_t *data,
                      size_t len) {
  crypto_generichash_blake2b_state st;
  (void)crypto_generichash_blake2b_init(&st, NULL, 0, MS_NOISE_HASHLEN);
  (void)crypto_generichash_blake2b_update(&st, h, MS_NOISE_HASHLEN);
  if (len > 0) (void)crypto_generichash_blake2b_update(&st, data, len);
  (void)crypto_generichash_blake2b_final(&st, out, MS_NOISE_HASHLEN);
  sodium_memzero(&st, sizeof(st));
}


void ms_noise_sym_mix_hash(ms_noise_sym_t *ss, const uint8_t *data,
                           size_t len) {
  hash_with(ss->h, ss->h, data, len);
}


void ms_noise_sym_mix_key(ms_noise_sym_t *ss, const uint8_t *ikm,
                          size_t len) {
  uint8_t temp_k[MS_NOISE_HASHLEN];
  ms_noise_hkdf(ss->ck, ikm, len, ss->ck, temp_k, NULL);
  /* HASHLEN 64 > 32: truncate to the cipher key. */
  ms_noise_cipher_init(&ss->cs, temp_k);
  sodium_memzero(temp_k, sizeof(temp_k));
}


int ms_noise_sym_encrypt_and_hash(ms_noise_sym_t *ss, uint8_t *out,
                                  const uint8_t *in, size_t len) {
  size_t clen = len + (ss->cs.has_key ? MS_NOISE_TAGBYTES : 0);
  int r = ms_noise_cipher_encrypt(&ss->cs, out, ss->h, MS_NOISE_HASHLEN, in,
                                  len);
  if (r < 0) return r;
  ms_noise_sym_mix_hash(ss, out, clen);
  return 0;
}


int ms_noise_sym_decrypt_and_hash(ms_noise_sym_t *ss, uint8_t *out,
                                  const uint8_t *in, size_t len) {
  uint8_t next_h[MS_NOISE_HASHLEN];
  int r;
  /* The ciphertext is hashed before decrypting: out may be in. */
  hash_with(next_h, ss->h, in, len);
  r = ms_noise_cipher_decrypt(&ss->cs, out, ss->h, MS_NOISE_HASHLEN, in, len);
  if (r == 0) memcpy(ss->h, next_h, MS_NOISE_HASHLEN);
  sodium_memzero(next_h, sizeof(next_h));
  return r;
}


void ms_noise_sym_split(const ms_noise_sym_t *ss, ms_noise_cipher_t *c1,
                        ms_noise_cipher_t *c2) {
  uint8_t k1[MS_NOISE_HASHLEN], k2[MS_NOISE_HASHLEN];
  ms_noise_hkdf(ss->ck, NULL, 0, k1, k2, NULL);
  ms_noise_cipher_init(c1, k1);
  ms_noise_cipher_init(c2, k2);
  sodium_memzero(k1, sizeof(k1));
  sodium_memzero(k2, sizeof(k2));
}


void ms_noise_sym_wipe(ms_noise_sym_t *ss) {
  sodium_memzero(ss, sizeof(*ss));
}


/* ------------------------------------------------------------------ */
/* IK handshake                                                        */
/* ------------------------------------------------------------------ */

/* Wipe every secret and intermediate; keep stage, role, error. */
static void wipe_secrets(ms_noise_t *st) {
  ms_noise_sym_wipe(&st->ss);
  sodium_memzero(st->s_sk, sizeof(st->s_sk));
  sodium_memzero(st->e_sk, sizeof(st->e_sk));
  sodium_memzero(st->re, sizeof(st->re));
}


static int noise_fail(ms_noise_t *st, const char *msg) {
  wipe_secrets(st);
  ms_noise_outcome_wipe(&st->outcome);
  sodium_memzero(st->rs, sizeof(st->rs));
  sodium_memzero(st->remote_pk, sizeof(st->remote_pk));
  st->have_remote_pk = 0;
  st->stage = MS_NOISE_FAILED;
  st->error = msg;
  return MS_EHANDSHAKE;
}


/* A step may run only in its stage; a dead state stays dead. */
static int check_stage(const ms_noise_t *st, ms_noise_stage_t want) {
  if (st->stage == MS_NOISE_FAILED) return MS_EHANDSHAKE;
  if (st->stage != want) return MS_EINVAL;
  return 0;
}


/* MixKey(DH(sk, pk)); -1 for an all-zero result (small-order pk). */
static int mix_dh(ms_noise_t *st, const uint8_t sk[MS_NOISE_DHLEN],
                  const uint8_t pk[MS_NOISE_DHLEN]) {
  uint8_t shared[MS_NOISE_DHLEN];
  int r = crypto_scalarmult(shared, sk, pk);
  if (r == 0) ms_noise_sym_mix_key(&st->ss, shared, sizeof(shared));
  sodium_memzero(shared, sizeof(shared));
  return r == 0 ? 0 : -1;
}


static int hs_init(ms_noise_t *st, int initiator, const uint8_t *prologue,
                   size_t prologue_len, const uint8_t s_sk[MS_NOISE_DHLEN],
                   const uint8_t *e_sk) {
  memset(st, 0, sizeof(*st));
  st->initiator = initiator;
  st->stage = MS_NOISE_FAILED;
  if (sodium_init() < 0) {
    st->error = "init: libsodium unavailable";
    return MS_EKEY;
  }
  memcpy(st->s_sk, s_sk, MS_NOISE_DHLEN);
  if (crypto_scalarmult_base(st->s_pk, st->s_sk) != 0) {
    wipe_secrets(st);
    st->error = "init: bad static secret key";
    return MS_EKEY;
  }
  if (e_sk == NULL) {
    randombytes_buf(st->e_sk, sizeof(st->e_sk));
  } else {
    memcpy(st->e_sk, e_sk, MS_NOISE_DHLEN);
  }
  if (crypto_scalarmult_base(st->e_pk, st->e_sk) != 0) {
    wipe_secrets(st);
    st->error = "init: bad ephemeral secret key";
    return MS_EKEY;
  }
  ms_noise_sym_init(&st->ss, MS_NOISE_PROTOCOL_NAME,
                    sizeof(MS_NOISE_PROTOCOL_NAME) - 1);
  ms_noise_sym_mix_hash(&st->ss, prologue, prologue_len);
  return 0;
}


int ms_noise_ik_initiator_init(ms_noise_t *st, const uint8_t *prologue,
                               size_t prologue_len,
                               const uint8_t s_sk[MS_NOISE_DHLEN],
                               const uint8_t rs[MS_NOISE_DHLEN],
                               const uint8_t *e_sk) {
  int r = hs_init(st, 1, prologue, prologue_len, s_sk, e_sk);
  if (r < 0) return r;
  /* pre-message <- s */
  memcpy(st->rs, rs, MS_NOISE_DHLEN);
  ms_noise_sym_mix_hash(&st->ss, st->rs, sizeof(st->rs));
  st->stage = MS_NOISE_INIT_WRITE_MSG1;
  return 0;
}


int ms_noise_ik_responder_init(ms_noise_t *st, const uint8_t *prologue,
                               size_t prologue_len,
                               const uint8_t s_sk[MS_NOISE_DHLEN],
                               const uint8_t *e_sk) {
  int r = hs_init(st, 0, prologue, prologue_len, s_sk, e_sk);
  if (r < 0) return r;
  /* pre-message <- s: our own static key */
  ms_noise_sym_mix_hash(&st->ss, st->s_pk, sizeof(st->s_pk));
  st->stage = MS_NOISE_RESP_READ_MSG1;
  return 0;
}


/* After the last message: Split, keep the outcome, drop the secrets. */
static void finish(ms_noise_t *st) {
  ms_noise_cipher_t c1, c2;
  ms_noise_sym_split(&st->ss, &c1, &c2);
  if (st->initiator) {
    st->outcome.send = c1;
    st->outcome.recv = c2;
  } else {
    st->outcome.send = c2;
    st->outcome.recv = c1;
  }
  memcpy(st->outcome.handshake_hash, st->ss.h, MS_NOISE_HASHLEN);
  memcpy(st->outcome.remote_static, st->rs, MS_NOISE_DHLEN);
  if (st->spec) memcpy(st->outcome.remote_pk, st->remote_pk,
                       MS_PUBLICKEYBYTES);
  ms_noise_cipher_wipe(&c1);
  ms_noise_cipher_wipe(&c2);
  wipe_secrets(st);
  st->stage = MS_NOISE_DONE;
}


int ms_noise_ik_write_msg1(ms_noise_t *st, uint8_t *out,
                           const uint8_t *payload, size_t plen) {
  int r = check_stage(st, MS_NOISE_INIT_WRITE_MSG1);
  uint8_t *p = out;

  if (r < 0) return r;
  if (plen > MS_NOISE_MAX_MSG - MS_NOISE_IK_MSG1_OVERHEAD) return MS_EINVAL;
  /* e */
  memcpy(p, st->e_pk, MS_NOISE_DHLEN);
  ms_noise_sym_mix_hash(&st->ss, st->e_pk, MS_NOISE_DHLEN);
  p += MS_NOISE_DHLEN;
  /* es */
  if (mix_dh(st, st->e_sk, st->rs) < 0)
    return noise_fail(st, "msg1: es is all zeros (bad responder static key)");
  /* s */
  if (ms_noise_sym_encrypt_and_hash(&st->ss, p, st->s_pk, MS_NOISE_DHLEN) < 0)
    return noise_fail(st, "msg1: cannot encrypt s");
  p += MS_NOISE_DHLEN + MS_NOISE_TAGBYTES;
  /* ss */
  if (mix_dh(st, st->s_sk, st->rs) < 0)
    return noise_fail(st, "msg1: ss is all zeros (bad responder static key)");
  /* payload */
  if (ms_noise_sym_encrypt_and_hash(&st->ss, p, payload, plen) < 0)
    return noise_fail(st, "msg1: cannot encrypt the payload");
  st->stage = MS_NOISE_INIT_READ_MSG2;
  return 0;
}


int ms_noise_ik_read_msg1(ms_noise_t *st, const uint8_t *in, size_t len,
                          uint8_t *payload) {
  int r = check_stage(st, MS_NOISE_RESP_READ_MSG1);
  const uint8_t *p = in;

  if (r < 0) return r;
  if (len < MS_NOISE_IK_MSG1_OVERHEAD)
    return noise_fail(st, "msg1: too short");
  if (len > MS_NOISE_MAX_MSG) return noise_fail(st, "msg1: too long");
  if (payload == NULL) {
    if (len > MS_NOISE_IK_MSG1_OVERHEAD) return noise_fail(st, "msg1: no "
                                                              "payload buffer");
    payload = noise_empty;
  }
  /* e */
  memcpy(st->re, p, MS_NOISE_DHLEN);
  ms_noise_sym_mix_hash(&st->ss, st->re, MS_NOISE_DHLEN);
  p += MS_NOISE_DHLEN;
  /* es */
  if (mix_dh(st, st->s_sk, st->re) < 0)
    return noise_fail(st, "msg1: es is all zeros (bad initiator ephemeral)");
  /* s */
  if (ms_noise_sym_decrypt_and_hash(&st->ss, st->rs, p,
                                    MS_NOISE_DHLEN + MS_NOISE_TAGBYTES) < 0)
    return noise_fail(st, "msg1: initiator static key does not decrypt "
                          "(wrong network or wrong server key)");
  p += MS_NOISE_DHLEN + MS_NOISE_TAGBYTES;
  /* ss */
  if (mix_dh(st, st->s_sk, st->rs) < 0)
    return noise_fail(st, "msg1: ss is all zeros (bad initiator static key)");
  /* payload */
  if (ms_noise_sym_decrypt_and_hash(&st->ss, payload, p,
                                    len - (size_t)(p - in)) < 0)
    return noise_fail(st, "msg1: payload does not decrypt");
  st->stage = MS_NOISE_RESP_WRITE_MSG2;
  return 0;
}


int ms_noise_ik_write_msg2(ms_noise_t *st, uint8_t *out,
                           const uint8_t *payload, size_t plen) {
  int r = check_stage(st, MS_NOISE_RESP_WRITE_MSG2);

  if (r < 0) return r;
  if (plen > MS_NOISE_MAX_MSG - MS_NOISE_IK_MSG2_OVERHEAD) return MS_EINVAL;
  /* e */
  memcpy(out, st->e_pk, MS_NOISE_DHLEN);
  ms_noise_sym_mix_hash(&st->ss, st->e_pk, MS_NOISE_DHLEN);
  /* ee */
  if (mix_dh(st, st->e_sk, st->re) < 0)
    return noise_fail(st, "msg2: ee is all zeros");
  /* se: initiator's static with our ephemeral */
  if (mix_dh(st, st->e_sk, st->rs) < 0)
    return noise_fail(st, "msg2: se is all zeros");
  /* payload */
  if (ms_noise_sym_encrypt_and_hash(&st->ss, out + MS_NOISE_DHLEN, payload,
                                    plen) < 0)
    return noise_fail(st, "msg2: cannot encrypt the payload");
  finish(st);
  return 0;
}


int ms_noise_ik_read_msg2(ms_noise_t *st, const uint8_t *in, size_t len,
                          uint8_t *payload) {
  int r = check_stage(st, MS_NOISE_INIT_READ_MSG2);

  if (r < 0) return r;
  if (len < MS_NOISE_IK_MSG2_OVERHEAD)
    return noise_fail(st, "msg2: too short");
  if (len > MS_NOISE_MAX_MSG) return noise_fail(st, "msg2: too long");
  if (payload == NULL) {
    if (len > MS_NOISE_IK_MSG2_OVERHEAD) return noise_fail(st, "msg2: no "
                                                              "payload buffer");
    payload = noise_empty;
  }
  /* e */
  memcpy(st->re, in, MS_NOISE_DHLEN);
  ms_noise_sym_mix_hash(&st->ss, st->re, MS_NOISE_DHLEN);
  /* ee */
  if (mix_dh(st, st->e_sk, st->re) < 0)
    return noise_fail(st, "msg2: ee is all zeros (bad responder ephemeral)");
  /* se: our static with the responder's ephemeral */
  if (mix_dh(st, st->s_sk, st->re) < 0)
    return noise_fail(st, "msg2: se is all zeros (bad responder ephemeral)");
  /* payload */
  if (ms_noise_sym_decrypt_and_hash(&st->ss, payload, in + MS_NOISE_DHLEN,
                                    len - MS_NOISE_DHLEN) < 0)
    return noise_fail(st, "msg2: does not decrypt");
  finish(st);
  return 0;
}


/* ------------------------------------------------------------------ */
/* Spec layer                                                          */
/* ------------------------------------------------------------------ */

/* Check the local ed25519 pair and convert its secret to X25519. */
static int local_curve(ms_noise_t *st,
                       const uint8_t local_sk[MS_SECRETKEYBYTES],
                       const uint8_t local_pk[MS_PUBLICKEYBYTES],
                       uint8_t x_sk[MS_NOISE_DHLEN]) {
  uint8_t x_pk[MS_NOISE_DHLEN];
  memset(st, 0, sizeof(*st));
  st->stage = MS_NOISE_FAILED;
  if (sodium_init() < 0) {
    st->error = "init: libsodium unavailable";
    return MS_EKEY;
  }
  /* libsodium's ed25519 secret key is seed ‖ pk: the halves must agree. */
  if (sodium_memcmp(local_sk + crypto_sign_SEEDBYTES, local_pk,
                    crypto_sign_PUBLICKEYBYTES) != 0) {
    st->error = "init: local secret key does not match public key";
    return MS_EKEY;
  }
  if (crypto_sign_ed25519_pk_to_curve25519(x_pk, local_pk) != 0 ||
      crypto_sign_ed25519_sk_to_curve25519(x_sk, local_sk) != 0) {
    sodium_memzero(x_sk, MS_NOISE_DHLEN);
    st->error = "init: local key has no X25519 form";
    return MS_EKEY;
  }
  return 0;
}


int ms_noise_client_init(ms_noise_t *st,
                         const uint8_t app_key[MS_APPKEYBYTES],
                         const uint8_t local_sk[MS_SECRETKEYBYTES],
                         const uint8_t local_pk[MS_PUBLICKEYBYTES],
                         const uint8_t server_pk[MS_PUBLICKEYBYTES],
                         const uint8_t *eph_sk) {
  uint8_t x_sk[MS_NOISE_DHLEN], x_rs[MS_NOISE_DHLEN];
  int r = local_curve(st, local_sk, local_pk, x_sk);

  if (r < 0) return r;
  /* A server key without an X25519 form is an invalid address. */
  if (crypto_sign_ed25519_pk_to_curve25519(x_rs, server_pk) != 0) {
    sodium_memzero(x_sk, sizeof(x_sk));
    st->error = "init: server public key has no X25519 form";
    return MS_EKEY;
  }
  r = ms_noise_ik_initiator_init(st, app_key, MS_APPKEYBYTES, x_sk, x_rs,
                                 eph_sk);
  sodium_memzero(x_sk, sizeof(x_sk));
  if (r < 0) return r;
  st->spec = 1;
  memcpy(st->local_pk, local_pk, MS_PUBLICKEYBYTES);
  memcpy(st->remote_pk, server_pk, MS_PUBLICKEYBYTES);
  st->have_remote_pk = 1;
  return 0;
}


int ms_noise_server_init(ms_noise_t *st,
                         const uint8_t app_key[MS_APPKEYBYTES],
                         const uint8_t local_sk[MS_SECRETKEYBYTES],
                         const uint8_t local_pk[MS_PUBLICKEYBYTES],
                         const uint8_t *eph_sk) {
  uint8_t x_sk[MS_NOISE_DHLEN];
  int r = local_curve(st, local_sk, local_pk, x_sk);

  if (r < 0) return r;
  r = ms_noise_ik_responder_init(st, app_key, MS_APPKEYBYTES, x_sk, eph_sk);
  sodium_memzero(x_sk, sizeof(x_sk));
  if (r < 0) return r;
  st->spec = 1;
  memcpy(st->local_pk, local_pk, MS_PUBLICKEYBYTES);
  return 0;
}


static int check_spec_stage(const ms_noise_t *st, ms_noise_stage_t want) {
  int r = check_stage(st, want);
  if (r == 0 && !st->spec) return MS_EINVAL;
  return r;
}


int ms_noise_client_hello(ms_noise_t *st,
                          uint8_t out[MS_NOISE_MSG1_FRAMED_LEN]) {
  int r = check_spec_stage(st, MS_NOISE_INIT_WRITE_MSG1);
  if (r < 0) return r;
  ms_noise_frame_put(out, MS_NOISE_MSG1_LEN);
  return ms_noise_ik_write_msg1(st, out + MS_NOISE_LENBYTES, st->local_pk,
                                MS_PUBLICKEYBYTES);
}


int ms_noise_server_read_hello(ms_noise_t *st, const uint8_t *in,
                               size_t len) {
  uint8_t client_pk[MS_PUBLICKEYBYTES];
  uint8_t x_pk[MS_NOISE_DHLEN];
  int r = check_spec_stage(st, MS_NOISE_RESP_READ_MSG1);

  if (r < 0) return r;
  if (len < MS_NOISE_LENBYTES)
    return noise_fail(st, "msg1: truncated (no length prefix)");
  if (ms_noise_frame_get(in) != MS_NOISE_MSG1_LEN)
    return noise_fail(st, "msg1: length prefix is not 128");
  if (len < MS_NOISE_MSG1_FRAMED_LEN) return noise_fail(st, "msg1: truncated");
  if (len > MS_NOISE_MSG1_FRAMED_LEN)
    return noise_fail(st, "msg1: oversized (bytes beyond the frame)");
  r = ms_noise_ik_read_msg1(st, in + MS_NOISE_LENBYTES, MS_NOISE_MSG1_LEN,
                            client_pk);
  if (r < 0) return r;
  /* The payload names the client's ed25519 identity; it must be the key
   * whose X25519 form msg1 authenticated as s. */
  if (crypto_sign_ed25519_pk_to_curve25519(x_pk, client_pk) != 0)
    return noise_fail(st, "msg1: client key in the payload is not a valid "
                          "ed25519 key");
  if (sodium_memcmp(x_pk, st->rs, MS_NOISE_DHLEN) != 0)
    return noise_fail(st, "msg1: client key does not match its static key");
  memcpy(st->remote_pk, client_pk, MS_PUBLICKEYBYTES);
  st->have_remote_pk = 1;
  return 0;
}


int ms_noise_server_accept(ms_noise_t *st,
                           uint8_t out[MS_NOISE_MSG2_FRAMED_LEN]) {
  int r = check_spec_stage(st, MS_NOISE_RESP_WRITE_MSG2);
  if (r < 0) return r;
  ms_noise_frame_put(out, MS_NOISE_MSG2_LEN);
  return ms_noise_ik_write_msg2(st, out + MS_NOISE_LENBYTES, NULL, 0);
}


int ms_noise_client_read_accept(ms_noise_t *st, const uint8_t *in,
                                size_t len) {
  int r = check_spec_stage(st, MS_NOISE_INIT_READ_MSG2);
  if (r < 0) return r;
  if (len < MS_NOISE_LENBYTES)
    return noise_fail(st, "msg2: truncated (no length prefix)");
  if (ms_noise_frame_get(in) != MS_NOISE_MSG2_LEN)
    return noise_fail(st, "msg2: length prefix is not 48");
  if (len < MS_NOISE_MSG2_FRAMED_LEN) return noise_fail(st, "msg2: truncated");
  if (len > MS_NOISE_MSG2_FRAMED_LEN)
    return noise_fail(st, "msg2: oversized (bytes beyond the frame)");
  return ms_noise_ik_read_msg2(st, in + MS_NOISE_LENBYTES, MS_NOISE_MSG2_LEN,
                               NULL);
}


size_t ms_noise_expected(const ms_noise_t *st) {
  if (!st->spec) return 0;
  if (st->stage == MS_NOISE_RESP_READ_MSG1) return MS_NOISE_MSG1_FRAMED_LEN;
  if (st->stage == MS_NOISE_INIT_READ_MSG2) return MS_NOISE_MSG2_FRAMED_LEN;
  return 0;
}


const uint8_t *ms_noise_remote_key(const ms_noise_t *st) {
  if (!st->spec || !st->have_remote_pk || st->stage == MS_NOISE_FAILED)
    return NULL;
  return st->remote_pk;
}


int ms_noise_outcome(const ms_noise_t *st, ms_noise_outcome_t *out) {
  if (st->stage != MS_NOISE_DONE) return MS_EINVAL;
  *out = st->outcome;
  return 0;
}


void ms_noise_outcome_wipe(ms_noise_outcome_t *o) {
  sodium_memzero(o, sizeof(*o));
}


const char *ms_noise_error(const ms_noise_t *st) {
  return st->error;
}


void ms_noise_wipe(ms_noise_t *st) {
  sodium_memzero(st, sizeof(*st));
  st->stage = MS_NOISE_FAILED;
}


/* ------------------------------------------------------------------ */
/* Transport: encoder                                                  */
/* ------------------------------------------------------------------ */

static size_t frames_for(size_t len) {
  return len / MS_NOISE_MAX_PAYLOAD + (len % MS_NOISE_MAX_PAYLOAD != 0);
}


size_t ms_noise_sealed_size(size_t len) {
  size_t frames = frames_for(len);
  /* Saturate rather than wrap for absurd sizes; ms_noise_seal refuses. */
  if (frames > (SIZE_MAX - len) / MS_NOISE_FRAME_OVERHEAD) return SIZE_MAX;
  return len + frames * MS_NOISE_FRAME_OVERHEAD;
}


int ms_noise_seal(ms_noise_cipher_t *cs, uint8_t *out, const uint8_t *in,
                  size_t len, size_t *written) {
  size_t frames = frames_for(len), pos = 0;

  *written = 0;
  if (!cs->has_key) return MS_ESHUTDOWN;
  if (ms_noise_sealed_size(len) == SIZE_MAX) return MS_EINVAL;
  /* Every frame needs a nonce below 2^64-1: all or nothing. */
  if ((uint64_t)frames > MS_NOISE_NONCE_MAX - cs->n) return MS_ELIMIT;
  while (len > 0) {
    size_t n = len < MS_NOISE_MAX_PAYLOAD ? len : MS_NOISE_MAX_PAYLOAD;
    ms_noise_frame_put(out + pos, n + MS_NOISE_TAGBYTES);
    /* Cannot fail: key present and nonces checked above. */
    if (ms_noise_cipher_encrypt(cs, out + pos + MS_NOISE_LENBYTES, NULL, 0, in,
                                n) < 0)
      return MS_ELIMIT;
    pos += MS_NOISE_LENBYTES + n + MS_NOISE_TAGBYTES;
    in += n;
    len -= n;
  }
  *written = pos;
  return 0;
}


int ms_noise_goodbye(ms_noise_cipher_t *cs,
                     uint8_t out[MS_NOISE_GOODBYE_LEN]) {
  int r;
  if (!cs->has_key) return MS_ESHUTDOWN;
  if (cs->n == MS_NOISE_NONCE_MAX) return MS_ELIMIT;
  ms_noise_frame_put(out, MS_NOISE_TAGBYTES);
  r = ms_noise_cipher_encrypt(cs, out + MS_NOISE_LENBYTES, NULL, 0, NULL, 0);
  /* Nothing may be sealed after the goodbye. */
  ms_noise_cipher_wipe(cs);
  return r;
}


/* ------------------------------------------------------------------ */
/* Transport: decoder                                                  */
/* ------------------------------------------------------------------ */

enum { RX_RUNNING = 0, RX_ENDED = 2 };

void ms_noise_rx_init(ms_noise_rx_t *rx, const ms_noise_cipher_t *cs) {
  memset(rx, 0, sizeof(*rx));
  rx->cs = *cs;
}


static void release_part(ms_noise_rx_t *rx) {
  if (rx->part != NULL) {
    /* Holds the frame being assembled or its plaintext. */
    sodium_memzero(rx->part, rx->body_len ? rx->body_len : rx->part_len);
    free(rx->part);
    rx->part = NULL;
  }
  rx->part_len = 0;
}


static void release_stash(ms_noise_rx_t *rx) {
  if (rx->stash != NULL) {
    sodium_memzero(rx->stash, rx->stash_len);
    free(rx->stash);
    rx->stash = NULL;
  }
  rx->stash_off = 0;
  rx->stash_len = 0;
}


void ms_noise_rx_free(ms_noise_rx_t *rx) {
  release_part(rx);
  release_stash(rx);
  sodium_memzero(rx, sizeof(*rx));
}


static int rx_fail(ms_noise_rx_t *rx, int err) {
  release_part(rx);
  release_stash(rx);
  ms_noise_cipher_wipe(&rx->cs);
  sodium_memzero(rx->hdr, sizeof(rx->hdr));
  rx->hdr_len = 0;
  rx->body_len = 0;
  rx->state = err;
  return err;
}


/* Open the frame of body_len bytes at c in place. 1 (data), 2 (goodbye)
 * or an error. */
static int open_frame(ms_noise_rx_t *rx, uint8_t *c, uint8_t **out,
                      size_t *outlen) {
  size_t n = rx->body_len;
  int r = ms_noise_cipher_decrypt(&rx->cs, c, NULL, 0, c, n);
  if (r < 0) return rx_fail(rx, r);
  rx->body_len = 0;
  if (n == MS_NOISE_TAGBYTES) {
    rx->state = RX_ENDED;
    ms_noise_cipher_wipe(&rx->cs);
    return RX_ENDED;
  }
  *out = c;
  *outlen = n - MS_NOISE_TAGBYTES;
  return 1;
}


/* One pass over one input source (caller's buffer or the stash). The part
 * buffer, when allocated, is rx->body_len bytes: the frame being built. */
static int rx_step(ms_noise_rx_t *rx, uint8_t *in, size_t len, size_t *used,
                   uint8_t **out, size_t *outlen) {
  size_t pos = 0, take;
  int r;

  *used = 0;
  if (rx->body_len == 0) {
    size_t L;
    if (rx->hdr_len == 0 && len >= MS_NOISE_LENBYTES) {
      L = ms_noise_frame_get(in);
      pos = MS_NOISE_LENBYTES;
    } else {
      take = MS_NOISE_LENBYTES - rx->hdr_len;
      if (take > len) take = len;
      memcpy(rx->hdr + rx->hdr_len, in, take);
      rx->hdr_len += take;
      pos = take;
      *used = pos;
      if (rx->hdr_len < MS_NOISE_LENBYTES) return 0;
      L = ms_noise_frame_get(rx->hdr);
      rx->hdr_len = 0;
    }
    *used = pos;
    if (L < MS_NOISE_TAGBYTES) return rx_fail(rx, MS_EFRAME);
    rx->body_len = L;
  }

  if (rx->part_len == 0 && len - pos >= rx->body_len) {
    size_t n = rx->body_len;
    r = open_frame(rx, in + pos, out, outlen);
    if (r < 0) return r;
    *used = pos + n;
    return r;
  }
  if (pos == len) return 0;
  if (rx->part == NULL) {
    rx->part = malloc(rx->body_len);
    if (rx->part == NULL) return MS_ENOMEM;
    rx->part_len = 0;
  }
  take = rx->body_len - rx->part_len;
  if (take > len - pos) take = len - pos;
  memcpy(rx->part + rx->part_len, in + pos, take);
  rx->part_len += take;
  pos += take;
  *used = pos;
  if (rx->part_len < rx->body_len) return 0;
  /* Complete: part_len stays the frame size until the next call releases
   * the buffer (its plaintext is handed out). */
  return open_frame(rx, rx->part, out, outlen);
}


int ms_noise_rx_next(ms_noise_rx_t *rx, uint8_t *in, size_t len,
                     size_t *consumed, uint8_t **out, size_t *outlen) {
  int r;

  *consumed = 0;
  *out = NULL;
  *outlen = 0;
  if (rx->state < 0) return rx->state;
  if (rx->state == RX_ENDED) {
    if (len > 0 || ms_noise_rx_stashed(rx) > 0)
      return rx_fail(rx, MS_EFRAME);
    return RX_ENDED;
  }
  if (!rx->cs.has_key) return MS_EINVAL;
  /* What the previous call returned is no longer needed: drop drained
   * buffers so an idle decoder holds none. */
  if (rx->stash != NULL && rx->stash_off == rx->stash_len) release_stash(rx);
  if (rx->part != NULL && rx->body_len == 0) release_part(rx);

  if (rx->stash != NULL) {
    size_t used = 0;
    r = rx_step(rx, rx->stash + rx->stash_off, rx->stash_len - rx->stash_off,
                &used, out, outlen);
    if (r < 0 && rx->state < 0) return r; /* failed, already released */
    rx->stash_off += used;
    if (r == RX_ENDED) {
      /* Anything after the goodbye is an error. */
      if (rx->stash_off < rx->stash_len || len > 0)
        return rx_fail(rx, MS_EFRAME);
      release_stash(rx);
      return r;
    }
    if (r != 0) return r; /* a frame (from the stash), or MS_ENOMEM */
    release_stash(rx);    /* fully consumed */
  }

  r = len > 0 ? rx_step(rx, in, len, consumed, out, outlen) : 0;
  if (r == RX_ENDED) {
    release_part(rx);
    if (*consumed < len) return rx_fail(rx, MS_EFRAME);
  }
  return r;
}


int ms_noise_rx_stash(ms_noise_rx_t *rx, const uint8_t *in, size_t len) {
  size_t keep, total;
  uint8_t *buf;

  if (len == 0) return 0;
  keep = ms_noise_rx_stashed(rx);
  total = keep + len;
  if (total < len) return MS_ENOMEM;
  buf = malloc(total);
  if (buf == NULL) return MS_ENOMEM;
  if (keep > 0) memcpy(buf, rx->stash + rx->stash_off, keep);
  memcpy(buf + keep, in, len);
  release_stash(rx);
  rx->stash = buf;
  rx->stash_off = 0;
  rx->stash_len = total;
  return 0;
}


size_t ms_noise_rx_stashed(const ms_noise_rx_t *rx) {
  return rx->stash != NULL ? rx->stash_len - rx->stash_off : 0;
}


int ms_noise_rx_eof(const ms_noise_rx_t *rx) {
  if (rx->state == RX_ENDED) return 0;
  if (rx->state < 0) return rx->state;
  return MS_EHANGUP;
}
