/* libFuzzer target for the box-stream decoder.
 *   byte 0 bit 0 = 0: raw mode. The rest is wire bytes: the first part
 *     (length from byte 1) is sealed first so the decoder gets past valid
 *     headers, then the raw bytes follow; fed in chunks from a PRNG seeded
 *     by byte 0, with the reader pausing (stash) now and then.
 *   bit 0 = 1: sealed mode. The rest is plaintext, sealed in writes cut by
 *     the PRNG, plus the goodbye; the decoder must give back exactly the
 *     plaintext and end cleanly. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "boxstream.h"

static const uint8_t key[32] = {0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
                                0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
                                0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
                                0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
                                0x42, 0x42, 0x42, 0x42};
static const uint8_t nonce[24] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xfd};

static uint32_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

/* Decode wire in random chunks; returns the final status and appends the
 * plaintext to *plain (capacity >= len). */
static int decode(const uint8_t *wire, size_t len, uint8_t *plain,
                  size_t *plain_len) {
  ms_unbox_t u;
  size_t off = 0;
  int r = 0;
  ms_unbox_init(&u, key, nonce);
  *plain_len = 0;
  while (off < len && r >= 0 && r != 2) {
    size_t n = 1 + rnd() % 300, c, ol;
    uint8_t *chunk, *p, *o;
    if (rnd() % 4 == 0) n = len - off;
    if (n > len - off) n = len - off;
    chunk = malloc(n);
    memcpy(chunk, wire + off, n);
    off += n;
    p = chunk;
    for (;;) {
      r = ms_unbox_next(&u, p, n, &c, &o, &ol);
      assert(c <= n);
      p += c;
      n -= c;
      if (r != 1) break;
      assert(ol <= MS_BOX_MAX_BODY);
      memcpy(plain + *plain_len, o, ol);
      *plain_len += ol;
      if (rnd() % 3 == 0) {
        /* pause: keep the rest, resume from the stash */
        int s = ms_unbox_stash(&u, p, n);
        assert(s == 0);
        n = 0;
        while ((r = ms_unbox_next(&u, NULL, 0, &c, &o, &ol)) == 1) {
          memcpy(plain + *plain_len, o, ol);
          *plain_len += ol;
        }
        break;
      }
    }
    free(chunk);
  }
  assert(r == 0 || r == 1 || r == 2 || r == MS_EBOXHEADER ||
         r == MS_EBOXBODY);
  if (r >= 0 && r != 2) r = ms_unbox_eof(&u);
  if (r == 2) assert(ms_unbox_eof(&u) == 0);
  ms_unbox_free(&u);
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t mode;
  if (size < 2) return 0;
  mode = data[0];
  rng_state = mode * 2654435761u;
  data++;
  size--;
  if (mode & 1) {
    size_t cap = (MS_BOX_HEADER_LEN + 1) * size + 64; /* worst: 1-byte writes */
    uint8_t *wire = malloc(cap), *plain = malloc(size + 1);
    size_t wl = 0, off = 0, pl;
    ms_box_t box;
    int r;
    ms_box_init(&box, key, nonce);
    while (off < size) {
      size_t n = 1 + rnd() % 9000;
      if (n > size - off) n = size - off;
      assert(wl + ms_box_sealed_size(n) <= cap);
      wl += ms_box_seal(&box, wire + wl, data + off, n);
      off += n;
    }
    ms_box_goodbye(&box, wire + wl);
    wl += MS_BOX_GOODBYE_LEN;
    r = decode(wire, wl, plain, &pl);
    assert(r == 2);
    assert(pl == size);
    assert(memcmp(plain, data, size) == 0);
    free(wire);
    free(plain);
  } else {
    size_t valid = data[0] % 64 < size ? data[0] % 64 : size;
    size_t cap = ms_box_sealed_size(valid) + size + 64;
    uint8_t *wire = malloc(cap), *plain = malloc(cap);
    size_t wl, pl;
    ms_box_t box;
    ms_box_init(&box, key, nonce);
    wl = ms_box_seal(&box, wire, data, valid);
    memcpy(wire + wl, data + valid, size - valid);
    wl += size - valid;
    (void)decode(wire, wl, plain, &pl);
    free(wire);
    free(plain);
  }
  return 0;
}
