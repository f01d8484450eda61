/* libFuzzer target for the gzip codec.
 *   byte 0 bit 0 = 0: raw mode. The rest is fed to the inflater as wire
 *     bytes, in chunks from a PRNG seeded by byte 0, into a small output
 *     buffer, with the reader pausing (stash) now and then; the counts must
 *     stay in bounds and the result must be one of the documented codes.
 *     The same input fed whole must give the same status and output.
 *   bit 0 = 1: round trip. The rest is plaintext, compressed with PRNG-cut
 *     writes and sync flushes (growable and bounded forms), then inflated:
 *     it must come back exactly and end cleanly; a sync-flushed prefix must
 *     decode to the plaintext written before it. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gzip_core.h"

/* Caps the work of a small input that expands a lot. */
#define LIMIT (1u << 20)

static uint32_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

typedef struct {
  uint8_t *buf;
  size_t len, cap;
} acc_t;

static void acc_add(acc_t *a, const uint8_t *p, size_t n) {
  if (a->len + n > a->cap) {
    a->cap = (a->len + n) * 2 + 64;
    a->buf = realloc(a->buf, a->cap);
    assert(a->buf != NULL);
  }
  memcpy(a->buf + a->len, p, n);
  a->len += n;
}

/* Returns the final status (2, an error, or the eof() value). */
static int inflate_all(const uint8_t *wire, size_t len, int chunked,
                       size_t outcap, acc_t *plain) {
  ms_gunzip_t g;
  uint8_t *out = malloc(outcap);
  size_t off = 0;
  int r = 0;

  assert(ms_gunzip_init(&g, LIMIT) == 0);
  while (off < len && r >= 0) {
    size_t n = chunked ? 1 + rnd() % 200 : len - off, c, k;
    uint8_t *chunk, *p;
    if (n > len - off) n = len - off;
    chunk = malloc(n);
    memcpy(chunk, wire + off, n);
    off += n;
    p = chunk;
    do {
      r = ms_gunzip_next(&g, p, n, &c, out, outcap, &k);
      assert(c <= n && k <= outcap);
      p += c;
      n -= c;
      acc_add(plain, out, k);
      if (chunked && r == 1 && rnd() % 3 == 0) {
        assert(ms_gunzip_stash(&g, p, n) == 0);
        n = 0;
        do {
          r = ms_gunzip_next(&g, NULL, 0, &c, out, outcap, &k);
          assert(c == 0 && k <= outcap);
          acc_add(plain, out, k);
        } while (r == 1);
      }
    } while (r == 1);
    if (r == 0) assert(n == 0);
    free(chunk);
  }
  assert(r == 0 || r == 2 || r == MS_EFRAME || r == MS_ELIMIT ||
         r == MS_ENOMEM);
  assert(ms_gunzip_total_out(&g) <= LIMIT);
  if (r == 0) r = ms_gunzip_eof(&g);
  if (r == 2) assert(ms_gunzip_eof(&g) == 0);
  if (r < 0 && r != MS_EHANGUP) assert(ms_gunzip_reason(&g)[0] != '\0');
  ms_gunzip_free(&g);
  free(out);
  return r;
}

static void raw_mode(const uint8_t *data, size_t size) {
  acc_t a = {0}, b = {0};
  int ra = inflate_all(data, size, 1, 16 + rnd() % 3000, &a);
  int rb = inflate_all(data, size, 0, 65536, &b);
  assert(ra == rb);
  assert(a.len == b.len);
  assert(a.len == 0 || memcmp(a.buf, b.buf, a.len) == 0);
  free(a.buf);
  free(b.buf);
}

static void roundtrip_mode(const uint8_t *data, size_t size) {
  ms_gzip_t z;
  ms_gzbuf_t wire = {0};
  size_t off = 0, flushed_wire = 0, flushed_plain = 0;
  int bounded = rnd() % 2;
  uint8_t step[300];
  acc_t plain = {0};

  assert(ms_gzip_init(&z, (int)(rnd() % 11) - 1) == 0);
  while (off < size) {
    size_t n = 1 + rnd() % 5000;
    if (n > size - off) n = size - off;
    if (!bounded) {
      assert(ms_gzip_write(&z, data + off, n, &wire) == 0);
    } else {
      const uint8_t *in = data + off;
      size_t left = n, c, p, cap = 1 + rnd() % sizeof(step);
      int r;
      do {
        r = ms_gzip_deflate(&z, in, left, &c, step, cap, &p,
                            MS_GZIP_NO_FLUSH);
        assert(r == 0 || r == 1);
        in += c;
        left -= c;
        assert(wire.len + p <= SIZE_MAX);
        if (wire.cap - wire.len < p) {
          wire.cap = (wire.len + p) * 2;
          wire.data = realloc(wire.data, wire.cap);
        }
        memcpy(wire.data + wire.len, step, p);
        wire.len += p;
      } while (r == 1 || left > 0);
    }
    off += n;
    assert(ms_gzip_pending(&z) > 0);
    if (rnd() % 3 == 0) {
      assert(ms_gzip_flush(&z, &wire) == 0);
      assert(ms_gzip_pending(&z) == 0);
      flushed_wire = wire.len;
      flushed_plain = off;
    }
  }
  assert(ms_gzip_finish(&z, &wire) == 0);
  assert(ms_gzip_finished(&z));
  ms_gzip_free(&z);

  /* The flushed prefix decodes to exactly the plaintext before the flush. */
  if (flushed_wire > 0) {
    int r = inflate_all(wire.data, flushed_wire, 1, 1 + rnd() % 5000, &plain);
    assert(r == MS_EHANGUP || (r == 2 && flushed_plain == size));
    assert(plain.len == flushed_plain);
    assert(memcmp(plain.buf, data, flushed_plain) == 0);
    plain.len = 0;
  }
  assert(inflate_all(wire.data, wire.len, 1, 1 + rnd() % 5000, &plain) == 2);
  assert(plain.len == size);
  assert(size == 0 || memcmp(plain.buf, data, size) == 0);
  free(plain.buf);
  ms_gzbuf_free(&wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t mode;
  if (size < 1) return 0;
  mode = data[0];
  rng_state = mode * 2654435761u + (uint32_t)size;
  data++;
  size--;
  if (mode & 1)
    roundtrip_mode(data, size);
  else
    raw_mode(data, size);
  return 0;
}
