/*
 * SHA-1 (FIPS 180-4 §6.1), written from the standard for one purpose: the
 * WebSocket opening handshake (RFC 6455 §4.2.2), whose Sec-WebSocket-Accept
 * value is base64(SHA-1(key ‖ GUID)). libsodium has no SHA-1.
 *
 * SHA-1 is broken for collision resistance; do not use it for anything that
 * needs a secure hash. The handshake only needs a fixed, public function.
 *
 * I/O-free, no allocation. The state is caller-owned and may be copied.
 * Inputs of any length (up to 2^61 - 1 bytes in total) are accepted.
 *
 *   ms_sha1_t h;
 *   ms_sha1_init(&h);
 *   ms_sha1_update(&h, p1, n1);   (any number of times, any split)
 *   ms_sha1_final(&h, digest);    (h is wiped; init again to reuse)
 */
#ifndef MS_SHA1_H
#define MS_SHA1_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MS_SHA1_DIGESTBYTES 20
#define MS_SHA1_BLOCKBYTES 64

/* Treat the fields as private. */
typedef struct {
  uint32_t h[5];                   /* chaining value H0..H4 */
  uint64_t total;                  /* bytes hashed so far */
  uint8_t block[MS_SHA1_BLOCKBYTES]; /* partial block */
  size_t block_len;                /* bytes used in block, < 64 */
} ms_sha1_t;

/* Start a new hash (FIPS 180-4 §5.3.1 initial value). */
void ms_sha1_init(ms_sha1_t *h);
/* Absorb len bytes of data (data may be NULL when len == 0). */
void ms_sha1_update(ms_sha1_t *h, const void *data, size_t len);
/* Pad, write the 20-byte digest, and zero the state. */
void ms_sha1_final(ms_sha1_t *h, uint8_t out[MS_SHA1_DIGESTBYTES]);
/* One-shot: out = SHA-1(data[0..len)). */
void ms_sha1(uint8_t out[MS_SHA1_DIGESTBYTES], const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* MS_SHA1_H */
