/*
 * The `noise` transform (spec/noise.md, wire format version 1): an I/O-free
 * core for Noise_IK_25519_ChaChaPoly_BLAKE2b (Noise revision 34) on
 * libsodium. Bytes in, bytes out; the libuv driver lives elsewhere.
 *
 * Three layers, lowest first:
 *
 *  1. Noise primitives: CipherState (ms_noise_cipher_*), SymmetricState
 *     (ms_noise_sym_*), HMAC-BLAKE2b and HKDF (ms_noise_hmac, ms_noise_hkdf).
 *
 *  2. The raw IK handshake (ms_noise_ik_*): raw X25519 static keys,
 *     arbitrary prologue and payloads, unframed messages. This is what the
 *     generic Noise known-answer vectors exercise.
 *
 *  3. The spec layer (ms_noise_client_* / ms_noise_server_*): ed25519
 *     identities converted to X25519, prologue = the 32-byte app key,
 *     msg1 payload = the client's ed25519 key, msg2 payload empty, and the
 *     2-byte big-endian length framing. One call per message:
 *
 *   client                                    server
 *   ms_noise_client_hello     --msg1 2+128-->  ms_noise_server_read_hello
 *                                              (ms_noise_remote_key:
 *                                               authorize, else hang up)
 *   ms_noise_client_read_accept <-msg2 2+48--  ms_noise_server_accept
 *   ms_noise_outcome                           ms_noise_outcome
 *
 * Handshake errors: every failure of a step returns MS_EHANDSHAKE (MS_EKEY
 * for bad keys at init), is final (the state wipes its secrets, every later
 * step returns MS_EHANDSHAKE) and ms_noise_error() names the stage. A step
 * called in the wrong stage returns MS_EINVAL and changes nothing. Call
 * ms_noise_wipe() when done, also after a successful ms_noise_outcome().
 *
 * After the handshake, the outcome's two cipher states drive the transport
 * framing: ms_noise_seal / ms_noise_goodbye for writes, ms_noise_rx_* for
 * reads (the same shape as ms_box_seal / ms_unbox_* in boxstream.h).
 *
 * Identity note: ed25519 keys P and -P convert to the same X25519 key, so
 * whoever holds the secret of one identity can also complete a handshake
 * claiming its negation (the msg1 payload is only checked to convert to
 * the static key msg1 carried). Nobody without that secret can.
 *
 * Threading: none of this touches globals after sodium_init(); each state
 * belongs to one thread at a time.
 */
#ifndef MS_NOISE_CORE_H
#define MS_NOISE_CORE_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_NOISE_PROTOCOL_NAME "Noise_IK_25519_ChaChaPoly_BLAKE2b"

#define MS_NOISE_HASHLEN 64   /* BLAKE2b-512 */
#define MS_NOISE_BLOCKLEN 128 /* BLAKE2b block, for HMAC */
#define MS_NOISE_DHLEN 32     /* X25519 */
#define MS_NOISE_KEYBYTES 32  /* ChaCha20-Poly1305 key */
#define MS_NOISE_TAGBYTES 16  /* Poly1305 tag */
#define MS_NOISE_NONCEBYTES 12 /* 32 zero bits ‖ u64le(n) */
/* n = 2^64-1 is reserved: a cipher whose nonce reached it is exhausted. */
#define MS_NOISE_NONCE_MAX UINT64_MAX

#define MS_NOISE_MAX_MSG 65535 /* any Noise message */
#define MS_NOISE_LENBYTES 2    /* u16be length prefix of every message */
/* Largest transport payload: MS_NOISE_MAX_MSG - tag. */
#define MS_NOISE_MAX_PAYLOAD (MS_NOISE_MAX_MSG - MS_NOISE_TAGBYTES)

/* Raw IK message overheads (unframed): msg1 = e ‖ enc(s) ‖ enc(payload),
 * msg2 = e ‖ enc(payload). */
#define MS_NOISE_IK_MSG1_OVERHEAD \
  (MS_NOISE_DHLEN + MS_NOISE_DHLEN + 2 * MS_NOISE_TAGBYTES) /* 96 */
#define MS_NOISE_IK_MSG2_OVERHEAD \
  (MS_NOISE_DHLEN + MS_NOISE_TAGBYTES) /* 48 */

/* Spec-layer handshake messages: unframed and framed sizes. */
#define MS_NOISE_MSG1_LEN (MS_NOISE_IK_MSG1_OVERHEAD + MS_PUBLICKEYBYTES)
#define MS_NOISE_MSG2_LEN MS_NOISE_IK_MSG2_OVERHEAD
#define MS_NOISE_MSG1_FRAMED_LEN (MS_NOISE_LENBYTES + MS_NOISE_MSG1_LEN)
#define MS_NOISE_MSG2_FRAMED_LEN (MS_NOISE_LENBYTES + MS_NOISE_MSG2_LEN)
/* Transport frame overhead, and the goodbye frame (L = 16, no payload). */
#define MS_NOISE_FRAME_OVERHEAD (MS_NOISE_LENBYTES + MS_NOISE_TAGBYTES)
#define MS_NOISE_GOODBYE_LEN MS_NOISE_FRAME_OVERHEAD

size_t ms_noise_msg1_framed_len(void); /* 130 */
size_t ms_noise_msg2_framed_len(void); /* 50 */

/* ------------------------------------------------------------------ */
/* Framing helpers                                                     */
/* ------------------------------------------------------------------ */

/* Write len (<= MS_NOISE_MAX_MSG) as the 2-byte big-endian prefix. */
void ms_noise_frame_put(uint8_t out[MS_NOISE_LENBYTES], size_t len);
/* Read a 2-byte big-endian prefix. */
size_t ms_noise_frame_get(const uint8_t in[MS_NOISE_LENBYTES]);

/* ------------------------------------------------------------------ */
/* Noise primitives                                                    */
/* ------------------------------------------------------------------ */

/* CipherState (Noise §5.1). Caller-owned; treat the fields as private
 * except for tests. has_key == 0 is the spec's "k is empty": encrypt and
 * decrypt then pass the bytes through unchanged. */
typedef struct {
  uint8_t k[MS_NOISE_KEYBYTES];
  uint64_t n;
  int has_key;
} ms_noise_cipher_t;

/* InitializeKey(key): key may be NULL (empty). n = 0. */
void ms_noise_cipher_init(ms_noise_cipher_t *cs,
                          const uint8_t *key /* MS_NOISE_KEYBYTES or NULL */);
/* sodium_memzero the key and nonce; has_key becomes 0. */
void ms_noise_cipher_wipe(ms_noise_cipher_t *cs);
/* Test hook: set n (to exercise nonce exhaustion). Never use elsewhere. */
void ms__noise_cipher_set_nonce(ms_noise_cipher_t *cs, uint64_t n);

/* EncryptWithAd(ad, plaintext). out receives len + 16 bytes (len bytes
 * without a key) and may equal in (in place) but must not otherwise
 * overlap it. Returns 0, or MS_ELIMIT if n has reached 2^64-1 (nothing
 * written, n unchanged). n increments on success. */
MS_WUR int ms_noise_cipher_encrypt(ms_noise_cipher_t *cs, uint8_t *out,
                                   const uint8_t *ad, size_t adlen,
                                   const uint8_t *in, size_t len);
/* DecryptWithAd(ad, ciphertext). out receives len - 16 bytes and may equal
 * in. Returns 0, MS_ELIMIT (nonce exhausted), or MS_EDECRYPT (len < 16 with
 * a key, or the tag does not verify; out is then zeroed and n unchanged).
 * n increments on success. */
MS_WUR int ms_noise_cipher_decrypt(ms_noise_cipher_t *cs, uint8_t *out,
                                   const uint8_t *ad, size_t adlen,
                                   const uint8_t *in, size_t len);

/* HMAC-BLAKE2b (RFC 2104 with B = 128, L = 64), written out over
 * crypto_generichash_blake2b: H((K ^ opad) ‖ H((K ^ ipad) ‖ data)). Keys
 * longer than 128 bytes are hashed first. The input is the concatenation
 * of up to two parts (d2 may be NULL with d2len 0). */
void ms_noise_hmac(uint8_t out[MS_NOISE_HASHLEN], const uint8_t *key,
                   size_t keylen, const uint8_t *d1, size_t d1len,
                   const uint8_t *d2, size_t d2len);
/* HKDF(chaining_key, input_key_material, num_outputs) of Noise §4.3 with
 * num_outputs 2 (out3 == NULL) or 3. Each output is MS_NOISE_HASHLEN bytes.
 * ikm may be NULL when ikmlen is 0. */
void ms_noise_hkdf(const uint8_t ck[MS_NOISE_HASHLEN], const uint8_t *ikm,
                   size_t ikmlen, uint8_t out1[MS_NOISE_HASHLEN],
                   uint8_t out2[MS_NOISE_HASHLEN], uint8_t *out3);

/* SymmetricState (Noise §5.2). */
typedef struct {
  ms_noise_cipher_t cs;
  uint8_t ck[MS_NOISE_HASHLEN];
  uint8_t h[MS_NOISE_HASHLEN];
} ms_noise_sym_t;

/* InitializeSymmetric(name): h = name zero-padded to HASHLEN if it fits,
 * else HASH(name); ck = h; empty key. */
void ms_noise_sym_init(ms_noise_sym_t *ss, const char *protocol_name,
                       size_t name_len);
void ms_noise_sym_mix_hash(ms_noise_sym_t *ss, const uint8_t *data,
                           size_t len);
void ms_noise_sym_mix_key(ms_noise_sym_t *ss, const uint8_t *ikm, size_t len);
/* EncryptAndHash: out gets len (+16 with a key) bytes, see
 * ms_noise_cipher_encrypt for in-place use. Returns 0 or MS_ELIMIT. */
MS_WUR int ms_noise_sym_encrypt_and_hash(ms_noise_sym_t *ss, uint8_t *out,
                                         const uint8_t *in, size_t len);
/* DecryptAndHash: h is mixed with the ciphertext only when it opens.
 * Returns 0, MS_ELIMIT or MS_EDECRYPT. */
MS_WUR int ms_noise_sym_decrypt_and_hash(ms_noise_sym_t *ss, uint8_t *out,
                                         const uint8_t *in, size_t len);
/* Split(): c1 (initiator -> responder), c2 (responder -> initiator). Does
 * not wipe ss (h stays the handshake hash); ms_noise_sym_wipe does. */
void ms_noise_sym_split(const ms_noise_sym_t *ss, ms_noise_cipher_t *c1,
                        ms_noise_cipher_t *c2);
void ms_noise_sym_wipe(ms_noise_sym_t *ss);

/* ------------------------------------------------------------------ */
/* The IK handshake                                                    */
/* ------------------------------------------------------------------ */

typedef enum {
  MS_NOISE_INIT_WRITE_MSG1 = 1, /* initiator; next: write msg1 */
  MS_NOISE_INIT_READ_MSG2,      /* initiator; next: read msg2 */
  MS_NOISE_RESP_READ_MSG1,      /* responder; next: read msg1 */
  MS_NOISE_RESP_WRITE_MSG2,     /* responder; next: authorize, write msg2 */
  MS_NOISE_DONE,                /* outcome available */
  MS_NOISE_FAILED
} ms_noise_stage_t;

/* One side's result of a completed handshake. */
typedef struct {
  ms_noise_cipher_t send;  /* encrypts what this side writes */
  ms_noise_cipher_t recv;  /* decrypts what this side reads */
  uint8_t handshake_hash[MS_NOISE_HASHLEN];
  uint8_t remote_static[MS_NOISE_DHLEN];  /* X25519 */
  uint8_t remote_pk[MS_PUBLICKEYBYTES];   /* ed25519 (spec layer only) */
} ms_noise_outcome_t;

/* Caller-owned handshake state; treat the fields as private. */
typedef struct {
  ms_noise_stage_t stage;
  int initiator;
  int spec;                                /* spec layer (ed25519 ids) */
  const char *error;                       /* static string or NULL */
  ms_noise_sym_t ss;
  uint8_t s_sk[MS_NOISE_DHLEN], s_pk[MS_NOISE_DHLEN];
  uint8_t e_sk[MS_NOISE_DHLEN], e_pk[MS_NOISE_DHLEN];
  uint8_t rs[MS_NOISE_DHLEN], re[MS_NOISE_DHLEN];
  uint8_t local_pk[MS_PUBLICKEYBYTES];     /* own ed25519 (spec layer) */
  uint8_t remote_pk[MS_PUBLICKEYBYTES];    /* peer ed25519 (spec layer) */
  int have_remote_pk;
  ms_noise_outcome_t outcome;
} ms_noise_t;

/* Raw IK, initiator. prologue may be NULL when prologue_len is 0. s_sk: raw
 * X25519 static secret; rs: responder's X25519 static public key. e_sk: raw
 * X25519 ephemeral secret (vectors and tests only), or NULL for a fresh one.
 * Returns 0 or MS_EKEY (the libsodium init failed, or a key's public form
 * cannot be computed); the state is then FAILED. */
MS_WUR int ms_noise_ik_initiator_init(ms_noise_t *st, const uint8_t *prologue,
                                      size_t prologue_len,
                                      const uint8_t s_sk[MS_NOISE_DHLEN],
                                      const uint8_t rs[MS_NOISE_DHLEN],
                                      const uint8_t *e_sk);
/* Raw IK, responder. Same conventions. */
MS_WUR int ms_noise_ik_responder_init(ms_noise_t *st, const uint8_t *prologue,
                                      size_t prologue_len,
                                      const uint8_t s_sk[MS_NOISE_DHLEN],
                                      const uint8_t *e_sk);

/* msg1 = e, es, s, ss + payload. out must hold MS_NOISE_IK_MSG1_OVERHEAD +
 * plen bytes (no framing) and must not overlap payload; plen at most
 * MS_NOISE_MAX_MSG - MS_NOISE_IK_MSG1_OVERHEAD (else MS_EINVAL, nothing
 * changes). Failure (a DH result of all zeros: rs has small order) is
 * MS_EHANDSHAKE. */
MS_WUR int ms_noise_ik_write_msg1(ms_noise_t *st, uint8_t *out,
                                  const uint8_t *payload, size_t plen);
/* Read an unframed msg1 of len bytes (MS_NOISE_IK_MSG1_OVERHEAD to
 * MS_NOISE_MAX_MSG). payload receives len - MS_NOISE_IK_MSG1_OVERHEAD bytes
 * (may be NULL only when that is 0, else the step fails). MS_EHANDSHAKE if
 * it is short or long, a DH is all zeros, or a tag fails. The initiator's static key is then in
 * st->rs. */
MS_WUR int ms_noise_ik_read_msg1(ms_noise_t *st, const uint8_t *in,
                                 size_t len, uint8_t *payload);
/* msg2 = e, ee, se + payload; then Split: DONE. out holds
 * MS_NOISE_IK_MSG2_OVERHEAD + plen bytes. Errors as for msg1. */
MS_WUR int ms_noise_ik_write_msg2(ms_noise_t *st, uint8_t *out,
                                  const uint8_t *payload, size_t plen);
/* Read an unframed msg2; payload gets len - MS_NOISE_IK_MSG2_OVERHEAD
 * bytes; then Split: DONE. */
MS_WUR int ms_noise_ik_read_msg2(ms_noise_t *st, const uint8_t *in,
                                 size_t len, uint8_t *payload);

/* ------------------------------------------------------------------ */
/* The spec layer (ed25519 identities, app key, framing)               */
/* ------------------------------------------------------------------ */

/* local_sk is the 64-byte ed25519 secret key (seed ‖ pk) and must match
 * local_pk; server_pk is the dialed ed25519 key. eph_sk: raw X25519
 * secret for tests, or NULL. Returns 0 or MS_EKEY: the local pair does not
 * match, or a key (the server's included) has no X25519 form. */
MS_WUR int ms_noise_client_init(ms_noise_t *st,
                                const uint8_t app_key[MS_APPKEYBYTES],
                                const uint8_t local_sk[MS_SECRETKEYBYTES],
                                const uint8_t local_pk[MS_PUBLICKEYBYTES],
                                const uint8_t server_pk[MS_PUBLICKEYBYTES],
                                const uint8_t *eph_sk);
MS_WUR int ms_noise_server_init(ms_noise_t *st,
                                const uint8_t app_key[MS_APPKEYBYTES],
                                const uint8_t local_sk[MS_SECRETKEYBYTES],
                                const uint8_t local_pk[MS_PUBLICKEYBYTES],
                                const uint8_t *eph_sk);

/* Client: the framed msg1 (u16be 128 ‖ 128 bytes; payload = own ed25519
 * key). MS_EHANDSHAKE, MS_EINVAL as above. */
MS_WUR int ms_noise_client_hello(ms_noise_t *st,
                                 uint8_t out[MS_NOISE_MSG1_FRAMED_LEN]);
/* Server: read a framed msg1; len must be MS_NOISE_MSG1_FRAMED_LEN and the
 * prefix must say 128 (a truncated or oversized message fails and the
 * error says so). Fails also if it does not decrypt (wrong network or
 * server key) or the payload key does not convert to the s it carried.
 * On success ms_noise_remote_key() is the client's ed25519 key: authorize
 * it, then call ms_noise_server_accept, or hang up (ms_noise_wipe). */
MS_WUR int ms_noise_server_read_hello(ms_noise_t *st, const uint8_t *in,
                                      size_t len);
/* Server: the framed msg2 (u16be 48 ‖ 48 bytes); then DONE. */
MS_WUR int ms_noise_server_accept(ms_noise_t *st,
                                  uint8_t out[MS_NOISE_MSG2_FRAMED_LEN]);
/* Client: read a framed msg2 of exactly MS_NOISE_MSG2_FRAMED_LEN bytes
 * (prefix 48, empty payload); then DONE. */
MS_WUR int ms_noise_client_read_accept(ms_noise_t *st, const uint8_t *in,
                                       size_t len);

/* Framed bytes the next read step needs (130 for msg1 at the server, 50 for
 * msg2 at the client), 0 when the next step writes, or it is done/failed.
 * A driver reads exactly that many bytes and passes them on; it may look at
 * the 2-byte prefix early (ms_noise_frame_get) to fail fast. Raw IK states
 * give 0 (their message sizes depend on the payload). */
size_t ms_noise_expected(const ms_noise_t *st);
/* Spec layer: the remote ed25519 key (the dialed key for a client; the
 * client's verified key for a server after msg1). NULL otherwise. */
const uint8_t *ms_noise_remote_key(const ms_noise_t *st);
/* Copy the outcome once DONE (both layers). Returns 0 or MS_EINVAL. The
 * copy holds live keys: wipe it (ms_noise_outcome_wipe) after handing the
 * ciphers on. */
MS_WUR int ms_noise_outcome(const ms_noise_t *st, ms_noise_outcome_t *out);
void ms_noise_outcome_wipe(ms_noise_outcome_t *o);
/* Stage-naming message of the last failure, or NULL. */
const char *ms_noise_error(const ms_noise_t *st);
/* sodium_memzero everything (the state is FAILED-equivalent afterwards). */
void ms_noise_wipe(ms_noise_t *st);

/* ------------------------------------------------------------------ */
/* Transport: encoder                                                  */
/* ------------------------------------------------------------------ */

/* Wire size of one write of len bytes: len + 18 per started 65519-byte
 * piece; 0 for len == 0. */
size_t ms_noise_sealed_size(size_t len);
/* Seal a whole write with cs (the outcome's `send`) into consecutive frames
 * u16be(L) ‖ ciphertext ‖ tag, L = piece + 16, pieces of at most
 * MS_NOISE_MAX_PAYLOAD bytes. out must hold ms_noise_sealed_size(len) bytes
 * and must not overlap in. A zero-length write writes nothing (an empty
 * frame would be the goodbye). *written gets the byte count (0 on error).
 * Returns 0, MS_ELIMIT when the nonces left do not cover all frames
 * (nothing is written then; the stream must end), or MS_ESHUTDOWN after
 * the goodbye or without a key. */
MS_WUR int ms_noise_seal(ms_noise_cipher_t *cs, uint8_t *out,
                         const uint8_t *in, size_t len, size_t *written);
/* The goodbye: u16be(16) ‖ tag of an empty payload. Wipes cs afterwards:
 * later seals return MS_ESHUTDOWN. Returns 0, MS_ELIMIT (nonce exhausted;
 * nothing written) or MS_ESHUTDOWN. */
MS_WUR int ms_noise_goodbye(ms_noise_cipher_t *cs,
                            uint8_t out[MS_NOISE_GOODBYE_LEN]);

/* ------------------------------------------------------------------ */
/* Transport: decoder                                                  */
/* ------------------------------------------------------------------ */

typedef struct {
  ms_noise_cipher_t cs;
  uint8_t hdr[MS_NOISE_LENBYTES]; /* a length prefix split across inputs */
  size_t hdr_len;
  /* A frame body split across inputs: allocated (L bytes, at most
   * MS_NOISE_MAX_MSG) only while such a frame is pending or was just
   * delivered from it; freed once drained. */
  uint8_t *part;
  size_t part_len;
  /* Unconsumed input kept by ms_noise_rx_stash(); processed before new
   * input. Allocated only while non-empty. */
  uint8_t *stash;
  size_t stash_off, stash_len;
  size_t body_len; /* L of the current frame; 0 while reading a prefix */
  /* 0 while running, 2 after the goodbye, or the final negative error. */
  int state;
} ms_noise_rx_t;

/* Take over cs (the outcome's `recv`; copied, the caller wipes its copy). */
void ms_noise_rx_init(ms_noise_rx_t *rx, const ms_noise_cipher_t *cs);
/* Wipe the key and any pending bytes, free the buffers. May be
 * re-initialised afterwards. */
void ms_noise_rx_free(ms_noise_rx_t *rx);
/*
 * Iterator, like ms_unbox_next. Consumes bytes of in[0..len) until one
 * frame is complete.
 *  1  a frame: *out, *outlen is its plaintext (1..65519 bytes), decrypted
 *     IN PLACE in `in` when the frame lies wholly in it, else inside the
 *     decoder; valid until the next call on this decoder (or until `in`
 *     is reused).
 *  0  all of `in` consumed, more is needed.
 *  2  the goodbye: clean end. Later calls with len == 0 (and no stash)
 *     return 2 again; later bytes are an error (MS_EFRAME).
 *  <0 MS_EFRAME (L < 16, or bytes after the goodbye), MS_EDECRYPT (a tag
 *     does not verify), MS_ELIMIT (the nonce reached 2^64-1). Final: every
 *     later call returns it. MS_ENOMEM (allocation) is not final; retry
 *     with the unconsumed rest.
 * *consumed is always set (the stash is not counted). Resume after a pause
 * with ms_noise_rx_next(rx, NULL, 0, ...) until it returns 0. Nothing is
 * allocated while frames arrive whole in each input.
 */
MS_WUR int ms_noise_rx_next(ms_noise_rx_t *rx, uint8_t *in, size_t len,
                            size_t *consumed, uint8_t **out, size_t *outlen);
/* Keep unconsumed wire bytes (copied) for a paused reader; plaintext
 * returned earlier may be invalid afterwards. Returns 0 or MS_ENOMEM. */
MS_WUR int ms_noise_rx_stash(ms_noise_rx_t *rx, const uint8_t *in,
                             size_t len);
/* Bytes kept by ms_noise_rx_stash and not yet processed. */
size_t ms_noise_rx_stashed(const ms_noise_rx_t *rx);
/* At end of input: 0 after the goodbye; the final error if failed; else
 * MS_EHANGUP (EOF without goodbye, also mid-frame). */
MS_WUR int ms_noise_rx_eof(const ms_noise_rx_t *rx);

#ifdef __cplusplus
}
#endif
#endif /* MS_NOISE_CORE_H */
