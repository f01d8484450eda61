/* Box-stream encoder/decoder (spec/shs-boxstream.md §4). No I/O. */
#include "boxstream.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(MS_BOX_KEYBYTES == crypto_secretbox_KEYBYTES, "box key size");
_Static_assert(MS_BOX_NONCEBYTES == crypto_secretbox_NONCEBYTES,
               "box nonce size");
_Static_assert(MS_BOX_MACBYTES == crypto_secretbox_MACBYTES, "box mac size");
_Static_assert(MS_BOX_HEADER_LEN == 34, "box header is 34 bytes on the wire");
_Static_assert(MS_BOX_MAX_BODY >= MS_BOX_HEADER_LEN,
               "the partial buffer also holds a header");
_Static_assert(MS_BOX_MAX_BODY <= 0xffff, "length travels as u16");

/* Target for *out of an empty packet: never written to. */
static uint8_t ms_box_empty[1];


void ms_box_init(ms_box_t *box, const uint8_t key[MS_BOX_KEYBYTES],
                 const uint8_t nonce[MS_BOX_NONCEBYTES]) {
  memcpy(box->key, key, MS_BOX_KEYBYTES);
  memcpy(box->nonce, nonce, MS_BOX_NONCEBYTES);
  box->sub_valid = false;
}


void ms_box_wipe(ms_box_t *box) {
  sodium_memzero(box, sizeof(*box));
}


void ms__box_nonce_increment(uint8_t nonce[MS_BOX_NONCEBYTES]) {
  /* Big-endian: the carry runs from the last byte toward the first.
   * sodium_increment() is little-endian and must not be used here. */
  for (size_t i = MS_BOX_NONCEBYTES; i-- > 0;) {
    if (++nonce[i] != 0) break;
  }
}


/* ------------------------------------------------------------------ */
/* Encoder                                                             */
/* ------------------------------------------------------------------ */

size_t ms_box_sealed_size(size_t len) {
  size_t packets = len / MS_BOX_MAX_BODY + (len % MS_BOX_MAX_BODY != 0);
  /* packets <= len / 4096 + 1, so packets * 34 fits: only the sum can
   * overflow. */
  if (packets * MS_BOX_HEADER_LEN > SIZE_MAX - len) return SIZE_MAX;
  return len + packets * MS_BOX_HEADER_LEN;
}


/* The XSalsa20 subkey for nonce, derived only when the prefix changed. */
static const uint8_t *box_subkey(ms_box_t *box, const uint8_t nonce[MS_BOX_NONCEBYTES]) {
  if (!box->sub_valid || memcmp(box->sub_prefix, nonce, sizeof box->sub_prefix) != 0) {
    crypto_core_hsalsa20(box->subkey, nonce, box->key, NULL);
    memcpy(box->sub_prefix, nonce, sizeof box->sub_prefix);
    box->sub_valid = true;
  }
  return box->subkey;
}

/* crypto_secretbox_detached (XSalsa20-Poly1305) with the cached subkey:
 * the same bytes. c may equal m (in place) but must not otherwise overlap. */
static void xs_seal(ms_box_t *box, uint8_t *c, uint8_t mac[MS_BOX_MACBYTES],
                    const uint8_t *m, size_t mlen,
                    const uint8_t nonce[MS_BOX_NONCEBYTES]) {
  const uint8_t *sk = box_subkey(box, nonce);
  uint8_t block0[64];
  crypto_onetimeauth_poly1305_state st;
  size_t mlen0 = mlen < 32 ? mlen : 32;
  /* Block 0: 32 bytes of Poly1305 key, then the first 32 message bytes. */
  crypto_stream_salsa20(block0, sizeof block0, nonce + 16, sk);
  crypto_onetimeauth_poly1305_init(&st, block0);
  for (size_t i = 0; i < mlen0; i++) c[i] = m[i] ^ block0[32 + i];
  if (mlen > mlen0)
    crypto_stream_salsa20_xor_ic(c + mlen0, m + mlen0, mlen - mlen0, nonce + 16, 1, sk);
  crypto_onetimeauth_poly1305_update(&st, c, mlen);
  crypto_onetimeauth_poly1305_final(&st, mac);
  sodium_memzero(block0, sizeof block0);
  sodium_memzero(&st, sizeof st);
}

/* crypto_secretbox_open_detached with the cached subkey. 0 or -1 (nothing
 * written then). m may equal c. */
static int xs_open(ms_box_t *box, uint8_t *m, const uint8_t *c,
                   const uint8_t mac[MS_BOX_MACBYTES], size_t clen,
                   const uint8_t nonce[MS_BOX_NONCEBYTES]) {
  const uint8_t *sk = box_subkey(box, nonce);
  uint8_t block0[64];
  size_t mlen0 = clen < 32 ? clen : 32;
  crypto_stream_salsa20(block0, sizeof block0, nonce + 16, sk);
  if (crypto_onetimeauth_poly1305_verify(mac, c, clen, block0) != 0) {
    sodium_memzero(block0, sizeof block0);
    return -1;
  }
  for (size_t i = 0; i < mlen0; i++) m[i] = c[i] ^ block0[32 + i];
  if (clen > mlen0)
    crypto_stream_salsa20_xor_ic(m + mlen0, c + mlen0, clen - mlen0, nonce + 16, 1, sk);
  sodium_memzero(block0, sizeof block0);
  return 0;
}

/* One packet: body (n bytes at body, sealed from in; in may equal body)
 * and its header at hdr. */
static void seal_one(ms_box_t *box, uint8_t *hdr, uint8_t *body,
                     const uint8_t *in, size_t n) {
  uint8_t header[MS_BOX_HEADER_PLAIN_LEN];
  uint8_t body_nonce[MS_BOX_NONCEBYTES];
  memcpy(body_nonce, box->nonce, sizeof(body_nonce));
  ms__box_nonce_increment(body_nonce);
  /* Body under N+1; its MAC goes into the header plaintext. */
  xs_seal(box, body, header + 2, in, n, body_nonce);
  header[0] = (uint8_t)(n >> 8);
  header[1] = (uint8_t)(n & 0xff);
  /* Header under N: tag ‖ ciphertext, as crypto_secretbox_easy. */
  xs_seal(box, hdr + MS_BOX_MACBYTES, hdr, header, sizeof(header), box->nonce);
  /* N <- N + 2 */
  memcpy(box->nonce, body_nonce, sizeof(body_nonce));
  ms__box_nonce_increment(box->nonce);
  sodium_memzero(header, sizeof(header));
}

size_t ms_box_seal(ms_box_t *box, uint8_t *out, const uint8_t *in,
                   size_t len) {
  size_t written = 0;
  while (len > 0) {
    size_t n = len < MS_BOX_MAX_BODY ? len : MS_BOX_MAX_BODY;
    uint8_t *hdr = out + written;
    seal_one(box, hdr, hdr + MS_BOX_HEADER_LEN, in, n);
    written += MS_BOX_HEADER_LEN + n;
    in += n;
    len -= n;
  }
  return written;
}

size_t ms_box_seal_packet_inplace(ms_box_t *box, uint8_t *out, size_t n) {
  seal_one(box, out, out + MS_BOX_HEADER_LEN, out + MS_BOX_HEADER_LEN, n);
  return MS_BOX_HEADER_LEN + n;
}


void ms_box_goodbye(ms_box_t *box, uint8_t out[MS_BOX_GOODBYE_LEN]) {
  uint8_t zeros[MS_BOX_HEADER_PLAIN_LEN] = {0};
  (void)crypto_secretbox_easy(out, zeros, sizeof(zeros), box->nonce,
                              box->key);
  /* Advance so that a second (erroneous) goodbye never reuses the nonce. */
  ms__box_nonce_increment(box->nonce);
  ms__box_nonce_increment(box->nonce);
}


/* ------------------------------------------------------------------ */
/* Decoder                                                             */
/* ------------------------------------------------------------------ */

enum { UNBOX_RUNNING = 0, UNBOX_ENDED = 2 };

void ms_unbox_init(ms_unbox_t *u, const uint8_t key[MS_BOX_KEYBYTES],
                   const uint8_t nonce[MS_BOX_NONCEBYTES]) {
  memset(u, 0, sizeof(*u));
  ms_box_init(&u->box, key, nonce);
}


static void release_part(ms_unbox_t *u) {
  if (u->part != NULL) {
    sodium_memzero(u->part, u->part_hi);
    free(u->part);
    u->part = NULL;
  }
  u->part_len = 0;
  u->part_hi = 0;
}


static void release_stash(ms_unbox_t *u) {
  if (u->stash != NULL) {
    sodium_memzero(u->stash, u->stash_len);
    free(u->stash);
    u->stash = NULL;
  }
  u->stash_off = 0;
  u->stash_len = 0;
}


void ms_unbox_free(ms_unbox_t *u) {
  release_part(u);
  release_stash(u);
  sodium_memzero(u, sizeof(*u));
}


static int unbox_fail(ms_unbox_t *u, int err) {
  u->state = err;
  ms_box_wipe(&u->box);
  sodium_memzero(u->body_mac, sizeof(u->body_mac));
  release_part(u);
  release_stash(u);
  return err;
}


static int ensure_part(ms_unbox_t *u) {
  if (u->part == NULL) {
    u->part = malloc(MS_BOX_MAX_BODY);
    if (u->part == NULL) return MS_ENOMEM;
    u->part_len = 0;
  }
  return 0;
}


/* Returns 0 (body follows), 2 (goodbye) or an error. */
static int open_header(ms_unbox_t *u,
                       const uint8_t boxed[MS_BOX_HEADER_LEN]) {
  uint8_t plain[MS_BOX_HEADER_PLAIN_LEN];
  unsigned len;

  if (xs_open(&u->box, plain, boxed + MS_BOX_MACBYTES, boxed,
              MS_BOX_HEADER_PLAIN_LEN, u->box.nonce) != 0)
    return unbox_fail(u, MS_EBOXHEADER);
  if (sodium_is_zero(plain, sizeof(plain))) {
    /* Goodbye: all 18 bytes zero. An authentic L = 0 header still carries a
     * non-zero body MAC, so it never lands here. */
    u->state = UNBOX_ENDED;
    ms_box_wipe(&u->box);
    return UNBOX_ENDED;
  }
  len = ((unsigned)plain[0] << 8) | plain[1];
  if (len > MS_BOX_MAX_BODY) {
    sodium_memzero(plain, sizeof(plain));
    return unbox_fail(u, MS_EBOXHEADER);
  }
  memcpy(u->body_mac, plain + 2, MS_BOX_MACBYTES);
  sodium_memzero(plain, sizeof(plain));
  u->body_len = (uint16_t)len;
  u->in_body = 1;
  ms__box_nonce_increment(u->box.nonce);
  return 0;
}


/* Decrypts body_len bytes at c in place. Returns 0 or MS_EBOXBODY. */
static int open_body(ms_unbox_t *u, uint8_t *c) {
  if (xs_open(&u->box, c, c, u->body_mac, u->body_len, u->box.nonce) != 0)
    return unbox_fail(u, MS_EBOXBODY);
  ms__box_nonce_increment(u->box.nonce);
  u->in_body = 0;
  return 0;
}


/* One pass over one input source (caller's buffer or the stash). */
static int unbox_step(ms_unbox_t *u, uint8_t *in, size_t len, size_t *used,
                      uint8_t **out, size_t *outlen) {
  size_t pos = 0;
  int r;

  *used = 0;
  if (!u->in_body) {
    if (u->part_len == 0 && len - pos >= MS_BOX_HEADER_LEN) {
      r = open_header(u, in + pos);
      pos += MS_BOX_HEADER_LEN;
    } else {
      size_t take;
      if (pos == len) return 0;
      if ((r = ensure_part(u)) < 0) return r;
      take = MS_BOX_HEADER_LEN - u->part_len;
      if (take > len - pos) take = len - pos;
      memcpy(u->part + u->part_len, in + pos, take);
      u->part_len += take;
      if (u->part_len > u->part_hi) u->part_hi = u->part_len;
      pos += take;
      *used = pos;
      if (u->part_len < MS_BOX_HEADER_LEN) return 0;
      r = open_header(u, u->part);
      u->part_len = 0;
    }
    *used = pos;
    if (r != 0) return r; /* goodbye or error */
  }

  if (u->part_len == 0 && len - pos >= u->body_len) {
    uint8_t *c = u->body_len ? in + pos : ms_box_empty;
    size_t n = u->body_len;
    if ((r = open_body(u, c)) < 0) return r;
    pos += n;
    *used = pos;
    *out = c;
    *outlen = n;
    return 1;
  } else {
    size_t take;
    if (pos == len) return 0;
    if ((r = ensure_part(u)) < 0) return r;
    take = u->body_len - u->part_len;
    if (take > len - pos) take = len - pos;
    memcpy(u->part + u->part_len, in + pos, take);
    u->part_len += take;
    if (u->part_len > u->part_hi) u->part_hi = u->part_len;
    pos += take;
    *used = pos;
    if (u->part_len < u->body_len) return 0;
    u->part_len = 0;
    if ((r = open_body(u, u->part)) < 0) return r;
    *out = u->part;
    *outlen = u->body_len;
    return 1;
  }
}


int ms_unbox_next(ms_unbox_t *u, uint8_t *in, size_t len, size_t *consumed,
                  uint8_t **out, size_t *outlen) {
  int r;

  *consumed = 0;
  *out = NULL;
  *outlen = 0;
  if (u->state < 0) return u->state;
  if (u->state == UNBOX_ENDED) {
    if (len > 0 || ms_unbox_stashed(u) > 0)
      return unbox_fail(u, MS_EBOXHEADER);
    return UNBOX_ENDED;
  }
  /* What the previous call returned is no longer needed: drop drained
   * buffers so an idle decoder holds none. */
  if (u->stash != NULL && u->stash_off == u->stash_len) release_stash(u);
  /* The partial buffer is kept while bytes stream in (no allocation per
   * read); it goes when an input ends on a packet boundary, below. */

  if (u->stash != NULL) {
    size_t used = 0;
    r = unbox_step(u, u->stash + u->stash_off, u->stash_len - u->stash_off,
                   &used, out, outlen);
    if (u->stash == NULL) return r; /* failed, already released */
    u->stash_off += used;
    if (r != 0) {
      if (r == UNBOX_ENDED && u->stash_off == u->stash_len) release_stash(u);
      return r;
    }
    release_stash(u); /* fully consumed */
  }

  if (len > 0) {
    r = unbox_step(u, in, len, consumed, out, outlen);
  } else {
    r = 0;
  }
  if (r == 0 && u->part != NULL && u->part_len == 0) release_part(u);
  if (r == UNBOX_ENDED) release_part(u);
  return r;
}


int ms_unbox_stash(ms_unbox_t *u, const uint8_t *in, size_t len) {
  size_t keep, total;
  uint8_t *buf;

  if (len == 0) return 0;
  keep = ms_unbox_stashed(u);
  total = keep + len;
  if (total < len) return MS_ENOMEM;
  buf = malloc(total);
  if (buf == NULL) return MS_ENOMEM;
  if (keep > 0) memcpy(buf, u->stash + u->stash_off, keep);
  memcpy(buf + keep, in, len);
  release_stash(u);
  u->stash = buf;
  u->stash_off = 0;
  u->stash_len = total;
  return 0;
}


size_t ms_unbox_stashed(const ms_unbox_t *u) {
  return u->stash != NULL ? u->stash_len - u->stash_off : 0;
}


int ms_unbox_eof(const ms_unbox_t *u) {
  if (u->state == UNBOX_ENDED) return 0;
  if (u->state < 0) return u->state;
  return MS_EHANGUP;
}
