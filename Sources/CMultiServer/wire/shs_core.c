/* Secret handshake v1 state machine (spec/shs-boxstream.md §3). No I/O. */
#include "shs_core.h"

#include <string.h>

_Static_assert(MS_SHS_KEYBYTES == crypto_scalarmult_BYTES, "dh size");
_Static_assert(MS_SHS_KEYBYTES == crypto_scalarmult_SCALARBYTES, "scalar");
_Static_assert(MS_SHS_KEYBYTES == crypto_box_PUBLICKEYBYTES, "box pk");
_Static_assert(MS_SHS_KEYBYTES == crypto_box_SECRETKEYBYTES, "box sk");
_Static_assert(MS_SHS_KEYBYTES == crypto_auth_BYTES, "hmac size");
_Static_assert(MS_SHS_KEYBYTES == crypto_auth_KEYBYTES, "hmac key size");
_Static_assert(MS_SHS_KEYBYTES == crypto_hash_sha256_BYTES, "sha256 size");
_Static_assert(MS_SHS_KEYBYTES == crypto_secretbox_KEYBYTES, "box key");
_Static_assert(MS_SHS_NONCEBYTES == crypto_secretbox_NONCEBYTES, "nonce");
_Static_assert(MS_SHS_SIGBYTES == crypto_sign_BYTES, "signature size");
_Static_assert(MS_APPKEYBYTES == crypto_auth_KEYBYTES, "app key size");
_Static_assert(MS_PUBLICKEYBYTES == crypto_sign_PUBLICKEYBYTES, "ed pk");
_Static_assert(MS_SECRETKEYBYTES == crypto_sign_SECRETKEYBYTES, "ed sk");
_Static_assert(MS_SHS_MSG1_LEN == crypto_auth_BYTES + crypto_box_PUBLICKEYBYTES,
               "msg1");
_Static_assert(MS_SHS_MSG3_LEN == crypto_secretbox_MACBYTES + crypto_sign_BYTES +
                                      crypto_sign_PUBLICKEYBYTES,
               "msg3");
_Static_assert(MS_SHS_MSG4_LEN == crypto_secretbox_MACBYTES + crypto_sign_BYTES,
               "msg4");
_Static_assert(MS_SHS_OUTCOME_WIRE_LEN ==
                   2 * (MS_SHS_KEYBYTES + MS_SHS_NONCEBYTES),
               "outcome");

/* The handshake boxes use an all-zero nonce: every key is used once. */
static const uint8_t zero_nonce[crypto_secretbox_NONCEBYTES];

#define HELLO_LEN (crypto_sign_BYTES + crypto_sign_PUBLICKEYBYTES)
/* K ‖ Bp ‖ sha256(ab) */
#define SIG_A_MSG_LEN \
  (MS_APPKEYBYTES + crypto_sign_PUBLICKEYBYTES + crypto_hash_sha256_BYTES)
/* K ‖ H ‖ sha256(ab) */
#define SIG_B_MSG_LEN (MS_APPKEYBYTES + HELLO_LEN + crypto_hash_sha256_BYTES)


/* Wipe every secret and intermediate; keep stage, role, error. */
static void wipe_secrets(ms_shs_t *st) {
  sodium_memzero(st->local_sk, sizeof(st->local_sk));
  sodium_memzero(st->eph_sk, sizeof(st->eph_sk));
  sodium_memzero(st->ab, sizeof(st->ab));
  sodium_memzero(st->ab_hash, sizeof(st->ab_hash));
  sodium_memzero(st->aB, sizeof(st->aB));
  sodium_memzero(st->Ab, sizeof(st->Ab));
  sodium_memzero(st->hello, sizeof(st->hello));
}


static int shs_fail(ms_shs_t *st, const char *msg) {
  wipe_secrets(st);
  sodium_memzero(&st->outcome, sizeof(st->outcome));
  sodium_memzero(st->remote_pk, sizeof(st->remote_pk));
  sodium_memzero(st->remote_curve_pk, sizeof(st->remote_curve_pk));
  st->stage = MS_SHS_FAILED;
  st->error = msg;
  return MS_EHANDSHAKE;
}


static int shs_init(ms_shs_t *st, int is_server,
                    const uint8_t app_key[MS_APPKEYBYTES],
                    const uint8_t local_sk[MS_SECRETKEYBYTES],
                    const uint8_t local_pk[MS_PUBLICKEYBYTES],
                    const uint8_t *eph_sk) {
  uint8_t curve[crypto_scalarmult_SCALARBYTES];
  int r;

  memset(st, 0, sizeof(*st));
  st->is_server = is_server;
  st->stage = MS_SHS_FAILED;
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
  r = crypto_sign_ed25519_sk_to_curve25519(curve, local_sk);
  sodium_memzero(curve, sizeof(curve));
  if (r != 0) {
    st->error = "init: local secret key has no curve25519 form";
    return MS_EKEY;
  }
  memcpy(st->app_key, app_key, MS_APPKEYBYTES);
  memcpy(st->local_sk, local_sk, MS_SECRETKEYBYTES);
  memcpy(st->local_pk, local_pk, MS_PUBLICKEYBYTES);
  if (eph_sk == NULL) {
    crypto_box_keypair(st->eph_pk, st->eph_sk);
  } else {
    memcpy(st->eph_sk, eph_sk, sizeof(st->eph_sk));
    if (crypto_scalarmult_base(st->eph_pk, st->eph_sk) != 0) {
      wipe_secrets(st);
      st->error = "init: bad ephemeral secret key";
      return MS_EKEY;
    }
  }
  /* hmac_K(own ephemeral pk); its first 24 bytes are a stream nonce. */
  crypto_auth(st->local_hmac, st->eph_pk, sizeof(st->eph_pk), st->app_key);
  return 0;
}


int ms_shs_client_init(ms_shs_t *st, const uint8_t app_key[MS_APPKEYBYTES],
                       const uint8_t local_sk[MS_SECRETKEYBYTES],
                       const uint8_t local_pk[MS_PUBLICKEYBYTES],
                       const uint8_t server_pk[MS_PUBLICKEYBYTES],
                       const uint8_t *eph_sk) {
  int r = shs_init(st, 0, app_key, local_sk, local_pk, eph_sk);
  if (r < 0) return r;
  /* A server key without a curve25519 form (small order, bad encoding) can
   * never complete a handshake: refuse it up front. The form is kept for
   * aB at msg2 (the conversion's subgroup check is costly). */
  if (crypto_sign_ed25519_pk_to_curve25519(st->remote_curve_pk, server_pk) != 0) {
    wipe_secrets(st);
    sodium_memzero(st->remote_curve_pk, sizeof(st->remote_curve_pk));
    st->error = "init: server public key is not a valid ed25519 key";
    return MS_EKEY;
  }
  memcpy(st->remote_pk, server_pk, MS_PUBLICKEYBYTES);
  st->stage = MS_SHS_CLIENT_SEND_HELLO;
  return 0;
}


int ms_shs_server_init(ms_shs_t *st, const uint8_t app_key[MS_APPKEYBYTES],
                       const uint8_t local_sk[MS_SECRETKEYBYTES],
                       const uint8_t local_pk[MS_PUBLICKEYBYTES],
                       const uint8_t *eph_sk) {
  int r = shs_init(st, 1, app_key, local_sk, local_pk, eph_sk);
  if (r < 0) return r;
  st->stage = MS_SHS_SERVER_WAIT_HELLO;
  return 0;
}


/* msg1/msg2: hmac_K(eph_pk) ‖ eph_pk */
static void write_hello(const ms_shs_t *st, uint8_t out[MS_SHS_MSG1_LEN]) {
  memcpy(out, st->local_hmac, crypto_auth_BYTES);
  memcpy(out + crypto_auth_BYTES, st->eph_pk, crypto_box_PUBLICKEYBYTES);
}


/* Check a hello's HMAC (constant time) and keep the remote ephemeral key. */
static int read_hello(ms_shs_t *st, const uint8_t in[MS_SHS_MSG1_LEN]) {
  const uint8_t *mac = in, *pk = in + crypto_auth_BYTES;
  if (crypto_auth_verify(mac, pk, crypto_box_PUBLICKEYBYTES, st->app_key) != 0)
    return -1;
  memcpy(st->remote_hmac, mac, crypto_auth_BYTES);
  memcpy(st->remote_eph_pk, pk, crypto_box_PUBLICKEYBYTES);
  return 0;
}


/* key3 = sha256(K ‖ ab ‖ aB) */
static void derive_key3(const ms_shs_t *st,
                        uint8_t key3[crypto_secretbox_KEYBYTES]) {
  crypto_hash_sha256_state h;
  crypto_hash_sha256_init(&h);
  crypto_hash_sha256_update(&h, st->app_key, sizeof(st->app_key));
  crypto_hash_sha256_update(&h, st->ab, sizeof(st->ab));
  crypto_hash_sha256_update(&h, st->aB, sizeof(st->aB));
  crypto_hash_sha256_final(&h, key3);
  sodium_memzero(&h, sizeof(h));
}


/* key4 = sha256(K ‖ ab ‖ aB ‖ Ab) */
static void derive_key4(const ms_shs_t *st,
                        uint8_t key4[crypto_secretbox_KEYBYTES]) {
  crypto_hash_sha256_state h;
  crypto_hash_sha256_init(&h);
  crypto_hash_sha256_update(&h, st->app_key, sizeof(st->app_key));
  crypto_hash_sha256_update(&h, st->ab, sizeof(st->ab));
  crypto_hash_sha256_update(&h, st->aB, sizeof(st->aB));
  crypto_hash_sha256_update(&h, st->Ab, sizeof(st->Ab));
  crypto_hash_sha256_final(&h, key4);
  sodium_memzero(&h, sizeof(h));
}


/* msg3 signature payload: K ‖ Bp ‖ sha256(ab) */
static void sig_a_payload(const ms_shs_t *st,
                          const uint8_t server_pk[MS_PUBLICKEYBYTES],
                          uint8_t m[SIG_A_MSG_LEN]) {
  memcpy(m, st->app_key, MS_APPKEYBYTES);
  memcpy(m + MS_APPKEYBYTES, server_pk, MS_PUBLICKEYBYTES);
  memcpy(m + MS_APPKEYBYTES + MS_PUBLICKEYBYTES, st->ab_hash,
         crypto_hash_sha256_BYTES);
}


/* msg4 signature payload: K ‖ H ‖ sha256(ab) */
static void sig_b_payload(const ms_shs_t *st, uint8_t m[SIG_B_MSG_LEN]) {
  memcpy(m, st->app_key, MS_APPKEYBYTES);
  memcpy(m + MS_APPKEYBYTES, st->hello, HELLO_LEN);
  memcpy(m + MS_APPKEYBYTES + HELLO_LEN, st->ab_hash,
         crypto_hash_sha256_BYTES);
}


/* S = sha256(key4); encrypt with sha256(S ‖ remote pk) from the remote
 * hmac, decrypt with sha256(S ‖ own pk) from our own hmac (spec §3.6). */
static void derive_outcome(ms_shs_t *st,
                           const uint8_t key4[crypto_secretbox_KEYBYTES]) {
  uint8_t s[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_state h;

  crypto_hash_sha256(s, key4, crypto_secretbox_KEYBYTES);

  crypto_hash_sha256_init(&h);
  crypto_hash_sha256_update(&h, s, sizeof(s));
  crypto_hash_sha256_update(&h, st->remote_pk, sizeof(st->remote_pk));
  crypto_hash_sha256_final(&h, st->outcome.encrypt_key);
  memcpy(st->outcome.encrypt_nonce, st->remote_hmac, MS_SHS_NONCEBYTES);

  crypto_hash_sha256_init(&h);
  crypto_hash_sha256_update(&h, s, sizeof(s));
  crypto_hash_sha256_update(&h, st->local_pk, sizeof(st->local_pk));
  crypto_hash_sha256_final(&h, st->outcome.decrypt_key);
  memcpy(st->outcome.decrypt_nonce, st->local_hmac, MS_SHS_NONCEBYTES);

  memcpy(st->outcome.remote_pk, st->remote_pk, sizeof(st->remote_pk));
  sodium_memzero(s, sizeof(s));
  sodium_memzero(&h, sizeof(h));
}


/* ------------------------------------------------------------------ */
/* Client                                                              */
/* ------------------------------------------------------------------ */

int ms_shs_client_hello(ms_shs_t *st, uint8_t out[MS_SHS_MSG1_LEN]) {
  if (st->stage != MS_SHS_CLIENT_SEND_HELLO) return MS_EINVAL;
  write_hello(st, out);
  st->stage = MS_SHS_CLIENT_WAIT_HELLO;
  return 0;
}


int ms_shs_client_verify_hello(ms_shs_t *st,
                               const uint8_t in[MS_SHS_MSG2_LEN]) {
  int r;

  if (st->stage != MS_SHS_CLIENT_WAIT_HELLO) return MS_EINVAL;
  if (read_hello(st, in) != 0)
    return shs_fail(st, "msg2 (server hello): HMAC mismatch: wrong network "
                        "key or not shs");
  /* ab = a·bp; -1 means all-zero output (low-order bp). */
  if (crypto_scalarmult(st->ab, st->eph_sk, st->remote_eph_pk) != 0)
    return shs_fail(st, "msg2 (server hello): low-order ephemeral key");
  crypto_hash_sha256(st->ab_hash, st->ab, sizeof(st->ab));
  /* aB = a·curve(Bp), converted at init */
  r = crypto_scalarmult(st->aB, st->eph_sk, st->remote_curve_pk);
  if (r != 0) return shs_fail(st, "msg2: low-order key (a*B is zero)");
  /* The ephemeral secret is not needed any more on the client. */
  sodium_memzero(st->eph_sk, sizeof(st->eph_sk));
  st->stage = MS_SHS_CLIENT_SEND_AUTH;
  return 0;
}


int ms_shs_client_auth(ms_shs_t *st, uint8_t out[MS_SHS_MSG3_LEN]) {
  uint8_t m[SIG_A_MSG_LEN];
  uint8_t key3[crypto_secretbox_KEYBYTES];
  int r;

  if (st->stage != MS_SHS_CLIENT_SEND_AUTH) return MS_EINVAL;
  /* sig_A = sign_A(K ‖ Bp ‖ sha256(ab)); H = sig_A ‖ Ap */
  sig_a_payload(st, st->remote_pk, m);
  r = crypto_sign_detached(st->hello, NULL, m, sizeof(m), st->local_sk);
  sodium_memzero(m, sizeof(m));
  if (r != 0) return shs_fail(st, "msg3 (client auth): signing failed");
  memcpy(st->hello + crypto_sign_BYTES, st->local_pk, MS_PUBLICKEYBYTES);
  derive_key3(st, key3);
  r = crypto_secretbox_easy(out, st->hello, HELLO_LEN, zero_nonce, key3);
  sodium_memzero(key3, sizeof(key3));
  if (r != 0) return shs_fail(st, "msg3 (client auth): box failed");
  st->stage = MS_SHS_CLIENT_WAIT_ACCEPT;
  return 0;
}


int ms_shs_client_verify_accept(ms_shs_t *st,
                                const uint8_t in[MS_SHS_MSG4_LEN]) {
  uint8_t local_curve[crypto_scalarmult_SCALARBYTES];
  uint8_t key4[crypto_secretbox_KEYBYTES];
  uint8_t sig_b[crypto_sign_BYTES];
  uint8_t m[SIG_B_MSG_LEN];
  int r;

  if (st->stage != MS_SHS_CLIENT_WAIT_ACCEPT) return MS_EINVAL;
  /* Ab = curve(A)·bp */
  if (crypto_sign_ed25519_sk_to_curve25519(local_curve, st->local_sk) != 0) {
    sodium_memzero(local_curve, sizeof(local_curve));
    return shs_fail(st, "msg4: local key has no curve25519 form");
  }
  r = crypto_scalarmult(st->Ab, local_curve, st->remote_eph_pk);
  sodium_memzero(local_curve, sizeof(local_curve));
  if (r != 0) return shs_fail(st, "msg4 (server accept): low-order key");
  derive_key4(st, key4);
  if (crypto_secretbox_open_easy(sig_b, in, MS_SHS_MSG4_LEN, zero_nonce,
                                 key4) != 0) {
    sodium_memzero(key4, sizeof(key4));
    return shs_fail(st, "msg4 (server accept): box does not open");
  }
  /* sig_B over K ‖ H ‖ sha256(ab), with the key we dialed. */
  sig_b_payload(st, m);
  r = crypto_sign_verify_detached(sig_b, m, sizeof(m), st->remote_pk);
  sodium_memzero(m, sizeof(m));
  sodium_memzero(sig_b, sizeof(sig_b));
  if (r != 0) {
    sodium_memzero(key4, sizeof(key4));
    return shs_fail(st, "msg4 (server accept): signature invalid");
  }
  derive_outcome(st, key4);
  sodium_memzero(key4, sizeof(key4));
  wipe_secrets(st);
  st->stage = MS_SHS_DONE;
  return 0;
}


/* ------------------------------------------------------------------ */
/* Server                                                              */
/* ------------------------------------------------------------------ */

int ms_shs_server_verify_hello(ms_shs_t *st,
                               const uint8_t in[MS_SHS_MSG1_LEN]) {
  uint8_t local_curve[crypto_scalarmult_SCALARBYTES];
  int r;

  if (st->stage != MS_SHS_SERVER_WAIT_HELLO) return MS_EINVAL;
  if (read_hello(st, in) != 0)
    return shs_fail(st, "msg1 (client hello): HMAC mismatch: wrong network "
                        "key or not shs");
  /* ab = b·ap; all-zero output (low-order ap) is fatal (capability attack,
   * spec §7.1). */
  if (crypto_scalarmult(st->ab, st->eph_sk, st->remote_eph_pk) != 0)
    return shs_fail(st, "msg1 (client hello): low-order ephemeral key");
  crypto_hash_sha256(st->ab_hash, st->ab, sizeof(st->ab));
  /* aB = curve(B)·ap */
  if (crypto_sign_ed25519_sk_to_curve25519(local_curve, st->local_sk) != 0) {
    sodium_memzero(local_curve, sizeof(local_curve));
    return shs_fail(st, "msg1: local key has no curve25519 form");
  }
  r = crypto_scalarmult(st->aB, local_curve, st->remote_eph_pk);
  sodium_memzero(local_curve, sizeof(local_curve));
  if (r != 0) return shs_fail(st, "msg1 (client hello): low-order key");
  st->stage = MS_SHS_SERVER_SEND_HELLO;
  return 0;
}


int ms_shs_server_hello(ms_shs_t *st, uint8_t out[MS_SHS_MSG2_LEN]) {
  if (st->stage != MS_SHS_SERVER_SEND_HELLO) return MS_EINVAL;
  write_hello(st, out);
  st->stage = MS_SHS_SERVER_WAIT_AUTH;
  return 0;
}


int ms_shs_server_verify_auth(ms_shs_t *st,
                              const uint8_t in[MS_SHS_MSG3_LEN]) {
  uint8_t key3[crypto_secretbox_KEYBYTES];
  uint8_t client_curve[crypto_scalarmult_BYTES];
  uint8_t m[SIG_A_MSG_LEN];
  const uint8_t *sig_a, *client_pk;
  int r;

  if (st->stage != MS_SHS_SERVER_WAIT_AUTH) return MS_EINVAL;
  derive_key3(st, key3);
  r = crypto_secretbox_open_easy(st->hello, in, MS_SHS_MSG3_LEN, zero_nonce,
                                 key3);
  sodium_memzero(key3, sizeof(key3));
  if (r != 0)
    return shs_fail(st, "msg3 (client auth): box does not open: client does "
                        "not know our key or the network key");
  sig_a = st->hello;
  client_pk = st->hello + crypto_sign_BYTES;
  /* sig_A over K ‖ our own Bp ‖ sha256(ab), checked with the Ap taken from
   * the box. libsodium rejects small-order R and small-order Ap here. */
  sig_a_payload(st, st->local_pk, m);
  r = crypto_sign_verify_detached(sig_a, m, sizeof(m), client_pk);
  sodium_memzero(m, sizeof(m));
  if (r != 0) return shs_fail(st, "msg3 (client auth): signature invalid");
  /* Ab = b·curve(Ap) */
  if (crypto_sign_ed25519_pk_to_curve25519(client_curve, client_pk) != 0)
    return shs_fail(st, "msg3 (client auth): low-order key (no curve25519 "
                        "form)");
  r = crypto_scalarmult(st->Ab, st->eph_sk, client_curve);
  sodium_memzero(client_curve, sizeof(client_curve));
  if (r != 0) return shs_fail(st, "msg3 (client auth): low-order key");
  memcpy(st->remote_pk, client_pk, MS_PUBLICKEYBYTES);
  /* The ephemeral secret is not needed any more on the server. */
  sodium_memzero(st->eph_sk, sizeof(st->eph_sk));
  st->stage = MS_SHS_SERVER_SEND_ACCEPT;
  return 0;
}


int ms_shs_server_accept(ms_shs_t *st, uint8_t out[MS_SHS_MSG4_LEN]) {
  uint8_t m[SIG_B_MSG_LEN];
  uint8_t sig_b[crypto_sign_BYTES];
  uint8_t key4[crypto_secretbox_KEYBYTES];
  int r;

  if (st->stage != MS_SHS_SERVER_SEND_ACCEPT) return MS_EINVAL;
  /* sig_B = sign_B(K ‖ H ‖ sha256(ab)) */
  sig_b_payload(st, m);
  r = crypto_sign_detached(sig_b, NULL, m, sizeof(m), st->local_sk);
  sodium_memzero(m, sizeof(m));
  if (r != 0) {
    sodium_memzero(sig_b, sizeof(sig_b));
    return shs_fail(st, "msg4 (server accept): signing failed");
  }
  derive_key4(st, key4);
  r = crypto_secretbox_easy(out, sig_b, sizeof(sig_b), zero_nonce, key4);
  sodium_memzero(sig_b, sizeof(sig_b));
  if (r != 0) {
    sodium_memzero(key4, sizeof(key4));
    return shs_fail(st, "msg4 (server accept): box failed");
  }
  derive_outcome(st, key4);
  sodium_memzero(key4, sizeof(key4));
  wipe_secrets(st);
  st->stage = MS_SHS_DONE;
  return 0;
}


/* ------------------------------------------------------------------ */
/* Queries                                                             */
/* ------------------------------------------------------------------ */

size_t ms_shs_expected(const ms_shs_t *st) {
  switch (st->stage) {
    case MS_SHS_CLIENT_WAIT_HELLO: return MS_SHS_MSG2_LEN;
    case MS_SHS_CLIENT_WAIT_ACCEPT: return MS_SHS_MSG4_LEN;
    case MS_SHS_SERVER_WAIT_HELLO: return MS_SHS_MSG1_LEN;
    case MS_SHS_SERVER_WAIT_AUTH: return MS_SHS_MSG3_LEN;
    default: return 0;
  }
}


const uint8_t *ms_shs_remote_key(const ms_shs_t *st) {
  switch (st->stage) {
    case MS_SHS_CLIENT_SEND_HELLO:
    case MS_SHS_CLIENT_WAIT_HELLO:
    case MS_SHS_CLIENT_SEND_AUTH:
    case MS_SHS_CLIENT_WAIT_ACCEPT:
    case MS_SHS_SERVER_SEND_ACCEPT:
    case MS_SHS_DONE:
      return st->remote_pk;
    default:
      return NULL;
  }
}


int ms_shs_outcome(const ms_shs_t *st, ms_shs_outcome_t *out) {
  if (st->stage != MS_SHS_DONE) return MS_EINVAL;
  memcpy(out, &st->outcome, sizeof(*out));
  return 0;
}


void ms_shs_outcome_serialize(const ms_shs_outcome_t *o,
                              uint8_t out[MS_SHS_OUTCOME_WIRE_LEN]) {
  uint8_t *p = out;
  memcpy(p, o->encrypt_key, MS_SHS_KEYBYTES);
  p += MS_SHS_KEYBYTES;
  memcpy(p, o->encrypt_nonce, MS_SHS_NONCEBYTES);
  p += MS_SHS_NONCEBYTES;
  memcpy(p, o->decrypt_key, MS_SHS_KEYBYTES);
  p += MS_SHS_KEYBYTES;
  memcpy(p, o->decrypt_nonce, MS_SHS_NONCEBYTES);
}


const char *ms_shs_error(const ms_shs_t *st) {
  return st->error;
}


void ms_shs_wipe(ms_shs_t *st) {
  sodium_memzero(st, sizeof(*st));
}
