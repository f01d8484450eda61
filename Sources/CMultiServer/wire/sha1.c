/* SHA-1 from FIPS 180-4 §5.1.1 (padding), §5.3.1 (H0), §6.1.2 (compression).
 * No I/O, no allocation. */
#include "sha1.h"

#include <string.h>


static uint32_t rol32(uint32_t x, unsigned n) {
  return (x << n) | (x >> (32u - n));
}


static uint32_t load_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}


static void store_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}


/* One 512-bit block: message schedule W[0..79] kept as a 16-word ring. */
static void sha1_compress(uint32_t h[5], const uint8_t block[64]) {
  uint32_t w[16];
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

  for (unsigned t = 0; t < 16; t++) w[t] = load_be32(block + 4 * t);
  for (unsigned t = 0; t < 80; t++) {
    uint32_t f, k, tmp;
    if (t >= 16) {
      w[t & 15] = rol32(w[(t - 3) & 15] ^ w[(t - 8) & 15] ^
                        w[(t - 14) & 15] ^ w[t & 15], 1);
    }
    if (t < 20) {
      f = (b & c) | (~b & d);          /* Ch */
      k = 0x5a827999u;
    } else if (t < 40) {
      f = b ^ c ^ d;                   /* Parity */
      k = 0x6ed9eba1u;
    } else if (t < 60) {
      f = (b & c) | (b & d) | (c & d); /* Maj */
      k = 0x8f1bbcdcu;
    } else {
      f = b ^ c ^ d;                   /* Parity */
      k = 0xca62c1d6u;
    }
    tmp = rol32(a, 5) + f + e + k + w[t & 15];
    e = d;
    d = c;
    c = rol32(b, 30);
    b = a;
    a = tmp;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  memset(w, 0, sizeof(w));
}


void ms_sha1_init(ms_sha1_t *h) {
  h->h[0] = 0x67452301u;
  h->h[1] = 0xefcdab89u;
  h->h[2] = 0x98badcfeu;
  h->h[3] = 0x10325476u;
  h->h[4] = 0xc3d2e1f0u;
  h->total = 0;
  h->block_len = 0;
  memset(h->block, 0, sizeof(h->block));
}


void ms_sha1_update(ms_sha1_t *h, const void *data, size_t len) {
  const uint8_t *p = data;

  if (len == 0) return;
  h->total += len;
  if (h->block_len > 0) {
    size_t n = MS_SHA1_BLOCKBYTES - h->block_len;
    if (n > len) n = len;
    memcpy(h->block + h->block_len, p, n);
    h->block_len += n;
    p += n;
    len -= n;
    if (h->block_len < MS_SHA1_BLOCKBYTES) return;
    sha1_compress(h->h, h->block);
    h->block_len = 0;
  }
  while (len >= MS_SHA1_BLOCKBYTES) {
    sha1_compress(h->h, p);
    p += MS_SHA1_BLOCKBYTES;
    len -= MS_SHA1_BLOCKBYTES;
  }
  if (len > 0) {
    memcpy(h->block, p, len);
    h->block_len = len;
  }
}


void ms_sha1_final(ms_sha1_t *h, uint8_t out[MS_SHA1_DIGESTBYTES]) {
  uint64_t bits = h->total * 8u;
  size_t n = h->block_len;

  /* §5.1.1: a 1 bit, zeros up to 448 mod 512, then the 64-bit length. */
  h->block[n++] = 0x80;
  if (n > MS_SHA1_BLOCKBYTES - 8) {
    memset(h->block + n, 0, MS_SHA1_BLOCKBYTES - n);
    sha1_compress(h->h, h->block);
    n = 0;
  }
  memset(h->block + n, 0, MS_SHA1_BLOCKBYTES - 8 - n);
  store_be32(h->block + 56, (uint32_t)(bits >> 32));
  store_be32(h->block + 60, (uint32_t)bits);
  sha1_compress(h->h, h->block);
  for (unsigned i = 0; i < 5; i++) store_be32(out + 4 * i, h->h[i]);
  memset(h, 0, sizeof(*h));
}


void ms_sha1(uint8_t out[MS_SHA1_DIGESTBYTES], const void *data, size_t len) {
  ms_sha1_t h;
  ms_sha1_init(&h);
  ms_sha1_update(&h, data, len);
  ms_sha1_final(&h, out);
}
