/*
 * Secret handshake v1 (spec/shs-boxstream.md §2-§3): an I/O-free state
 * machine per role, one step function per message.
 *
 *   client                                 server
 *   ms_shs_client_hello       --msg1 64-->  ms_shs_server_verify_hello
 *   ms_shs_client_verify_hello <--msg2 64-- ms_shs_server_hello
 *   ms_shs_client_auth        --msg3 112->  ms_shs_server_verify_auth
 *                                           (ms_shs_remote_key: authorize)
 *   ms_shs_client_verify_accept <-msg4 80-- ms_shs_server_accept
 *   ms_shs_outcome                          ms_shs_outcome
 *
 * Every failure returns MS_EHANDSHAKE (MS_EKEY for bad keys at init) and is
 * final: the state wipes its secrets and ms_shs_error() names the stage. A
 * step called in the wrong state returns MS_EINVAL and changes nothing.
 * Call ms_shs_wipe() when done (also after a successful ms_shs_outcome).
 */
#ifndef MS_SHS_CORE_H
#define MS_SHS_CORE_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_SHS_MSG1_LEN 64  /* client hello: hmac_K(ap) ‖ ap */
#define MS_SHS_MSG2_LEN 64  /* server hello: hmac_K(bp) ‖ bp */
#define MS_SHS_MSG3_LEN 112 /* client auth: box(sig_A ‖ Ap) */
#define MS_SHS_MSG4_LEN 80  /* server accept: box(sig_B) */
#define MS_SHS_OUTCOME_WIRE_LEN 112 /* shs1-testsuite outcome layout */

#define MS_SHS_KEYBYTES 32
#define MS_SHS_NONCEBYTES 24
#define MS_SHS_SIGBYTES 64

typedef enum {
  MS_SHS_CLIENT_SEND_HELLO = 1, /* next: ms_shs_client_hello */
  MS_SHS_CLIENT_WAIT_HELLO,     /* next: ms_shs_client_verify_hello */
  MS_SHS_CLIENT_SEND_AUTH,      /* next: ms_shs_client_auth */
  MS_SHS_CLIENT_WAIT_ACCEPT,    /* next: ms_shs_client_verify_accept */
  MS_SHS_SERVER_WAIT_HELLO,     /* next: ms_shs_server_verify_hello */
  MS_SHS_SERVER_SEND_HELLO,     /* next: ms_shs_server_hello */
  MS_SHS_SERVER_WAIT_AUTH,      /* next: ms_shs_server_verify_auth */
  MS_SHS_SERVER_SEND_ACCEPT,    /* next: ms_shs_server_accept */
  MS_SHS_DONE,                  /* outcome available */
  MS_SHS_FAILED
} ms_shs_stage_t;

/* Box-stream parameters of one side after the handshake (spec §3.6). */
typedef struct {
  uint8_t encrypt_key[MS_SHS_KEYBYTES];
  uint8_t encrypt_nonce[MS_SHS_NONCEBYTES];
  uint8_t decrypt_key[MS_SHS_KEYBYTES];
  uint8_t decrypt_nonce[MS_SHS_NONCEBYTES];
  uint8_t remote_pk[MS_PUBLICKEYBYTES];
} ms_shs_outcome_t;

/* Caller-owned state; treat the fields as private. The DH values stay in
 * the state only while a later step needs them. */
typedef struct {
  ms_shs_stage_t stage;
  int is_server;
  const char *error;                        /* static string or NULL */
  uint8_t app_key[MS_APPKEYBYTES];          /* K */
  uint8_t local_sk[MS_SECRETKEYBYTES];      /* A or B (ed25519, 64) */
  uint8_t local_pk[MS_PUBLICKEYBYTES];      /* Ap or Bp */
  uint8_t remote_pk[MS_PUBLICKEYBYTES];     /* Bp (client) / Ap (server) */
  uint8_t remote_curve_pk[MS_SHS_KEYBYTES]; /* curve(Bp), client: from init */
  uint8_t eph_sk[MS_SHS_KEYBYTES];          /* a or b (curve25519) */
  uint8_t eph_pk[MS_SHS_KEYBYTES];          /* ap or bp */
  uint8_t remote_eph_pk[MS_SHS_KEYBYTES];   /* bp (client) / ap (server) */
  uint8_t local_hmac[MS_SHS_KEYBYTES];      /* hmac_K(own eph pk) */
  uint8_t remote_hmac[MS_SHS_KEYBYTES];     /* hmac_K(remote eph pk) */
  uint8_t ab[MS_SHS_KEYBYTES];              /* a·b */
  uint8_t ab_hash[MS_SHS_KEYBYTES];         /* sha256(a·b) */
  uint8_t aB[MS_SHS_KEYBYTES];              /* a·B */
  uint8_t Ab[MS_SHS_KEYBYTES];              /* A·b */
  uint8_t hello[MS_SHS_SIGBYTES + MS_PUBLICKEYBYTES]; /* H = sig_A ‖ Ap */
  ms_shs_outcome_t outcome;
} ms_shs_t;

/* local_sk is the 64-byte ed25519 secret key (seed ‖ pk) and must match
 * local_pk. eph_sk: a raw curve25519 secret (32 bytes), or NULL for a fresh
 * crypto_box_keypair. Returns 0 or MS_EKEY (bad key; also for a server key
 * that has no curve25519 form). */
MS_WUR int ms_shs_client_init(ms_shs_t *st,
                              const uint8_t app_key[MS_APPKEYBYTES],
                              const uint8_t local_sk[MS_SECRETKEYBYTES],
                              const uint8_t local_pk[MS_PUBLICKEYBYTES],
                              const uint8_t server_pk[MS_PUBLICKEYBYTES],
                              const uint8_t *eph_sk);
MS_WUR int ms_shs_server_init(ms_shs_t *st,
                              const uint8_t app_key[MS_APPKEYBYTES],
                              const uint8_t local_sk[MS_SECRETKEYBYTES],
                              const uint8_t local_pk[MS_PUBLICKEYBYTES],
                              const uint8_t *eph_sk);

/* Client steps. */
MS_WUR int ms_shs_client_hello(ms_shs_t *st, uint8_t out[MS_SHS_MSG1_LEN]);
MS_WUR int ms_shs_client_verify_hello(ms_shs_t *st,
                                      const uint8_t in[MS_SHS_MSG2_LEN]);
MS_WUR int ms_shs_client_auth(ms_shs_t *st, uint8_t out[MS_SHS_MSG3_LEN]);
MS_WUR int ms_shs_client_verify_accept(ms_shs_t *st,
                                       const uint8_t in[MS_SHS_MSG4_LEN]);

/* Server steps. After ms_shs_server_verify_auth succeeds the client's key
 * is known (ms_shs_remote_key); authorize it before ms_shs_server_accept,
 * and on refusal hang up without calling it (then ms_shs_wipe). */
MS_WUR int ms_shs_server_verify_hello(ms_shs_t *st,
                                      const uint8_t in[MS_SHS_MSG1_LEN]);
MS_WUR int ms_shs_server_hello(ms_shs_t *st, uint8_t out[MS_SHS_MSG2_LEN]);
MS_WUR int ms_shs_server_verify_auth(ms_shs_t *st,
                                     const uint8_t in[MS_SHS_MSG3_LEN]);
MS_WUR int ms_shs_server_accept(ms_shs_t *st, uint8_t out[MS_SHS_MSG4_LEN]);

/* Bytes the next verify step needs (64, 112 or 80), 0 when the next step
 * produces output, is done, or failed. */
size_t ms_shs_expected(const ms_shs_t *st);
/* The remote long-term key: the dialed key for a client, the verified client
 * key for a server after msg3. NULL before that or after failure. */
const uint8_t *ms_shs_remote_key(const ms_shs_t *st);
/* Copy the box-stream parameters once DONE. Returns 0 or MS_EINVAL. */
MS_WUR int ms_shs_outcome(const ms_shs_t *st, ms_shs_outcome_t *out);
/* encryption_key ‖ encryption_nonce ‖ decryption_key ‖ decryption_nonce */
void ms_shs_outcome_serialize(const ms_shs_outcome_t *o,
                              uint8_t out[MS_SHS_OUTCOME_WIRE_LEN]);
/* Stage-naming message of the last failure, or NULL. */
const char *ms_shs_error(const ms_shs_t *st);
/* sodium_memzero everything. */
void ms_shs_wipe(ms_shs_t *st);

#ifdef __cplusplus
}
#endif
#endif /* MS_SHS_CORE_H */
