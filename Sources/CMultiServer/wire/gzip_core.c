/* gzip codec (RFC 1952 over zlib) for the gzip transform. No I/O. */
#include "gzip_core.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* windowBits 15 (32 KiB history) + 16: gzip wrapper, not zlib or raw. */
#define GZ_WINDOW_BITS (15 + 16)
#define GZ_MEM_LEVEL 8
/* Room kept free when growing an output buffer (enough for a flush step). */
#define GZ_MIN_ROOM MS_GZIP_FLUSH_MIN_OUT

enum { GZ_RUNNING = 0, GZ_ENDED = 2 };

/* Size prefix in front of every zlib block, so that the free hook knows how
 * much to wipe. Kept at max_align_t so the block stays suitably aligned. */
#define GZ_HDR                                                   \
  (_Alignof(max_align_t) > sizeof(size_t) ? _Alignof(max_align_t) \
                                          : sizeof(size_t))

_Static_assert(MS_GZIP_CHUNK >= GZ_MIN_ROOM, "growth step holds the minimum");

/* Stand-in for a NULL input pointer with length 0 (zlib is given a valid
 * pointer always). Never read. */
static const uint8_t gz_none[1];


static voidpf gz_zalloc(voidpf opaque, uInt items, uInt size) {
  size_t n;
  uint8_t *p;

  (void)opaque;
  if (size != 0 && items > (SIZE_MAX - GZ_HDR) / size) return Z_NULL;
  n = (size_t)items * size;
  p = malloc(GZ_HDR + n);
  if (p == NULL) return Z_NULL;
  memcpy(p, &n, sizeof(n));
  return p + GZ_HDR;
}


static void gz_zfree(voidpf opaque, voidpf ptr) {
  uint8_t *p;
  size_t n;

  (void)opaque;
  if (ptr == Z_NULL) return;
  p = (uint8_t *)ptr - GZ_HDR;
  memcpy(&n, p, sizeof(n));
  sodium_memzero(p, GZ_HDR + n);
  free(p);
}


static void gz_hooks(z_stream *zs) {
  zs->zalloc = gz_zalloc;
  zs->zfree = gz_zfree;
  zs->opaque = Z_NULL;
}


static uInt clamp_uint(size_t n) {
  return n > UINT_MAX ? UINT_MAX : (uInt)n;
}


/* ------------------------------------------------------------------ */
/* Growable output buffer                                              */
/* ------------------------------------------------------------------ */

void ms_gzbuf_free(ms_gzbuf_t *buf) {
  if (buf->data != NULL) {
    sodium_memzero(buf->data, buf->cap);
    free(buf->data);
  }
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
}


/* Make room for at least GZ_MIN_ROOM more bytes. Copies rather than
 * realloc()s so the old block, which holds compressed plaintext, is wiped. */
static int gzbuf_reserve(ms_gzbuf_t *buf) {
  size_t step, cap;
  uint8_t *p;

  if (buf->cap - buf->len >= GZ_MIN_ROOM) return 0;
  step = buf->cap / 2 > MS_GZIP_CHUNK ? buf->cap / 2 : MS_GZIP_CHUNK;
  if (buf->cap > SIZE_MAX - step) return MS_ENOMEM;
  cap = buf->cap + step;
  p = malloc(cap);
  if (p == NULL) return MS_ENOMEM;
  if (buf->len > 0) memcpy(p, buf->data, buf->len);
  if (buf->data != NULL) {
    sodium_memzero(buf->data, buf->cap);
    free(buf->data);
  }
  buf->data = p;
  buf->cap = cap;
  return 0;
}


/* ------------------------------------------------------------------ */
/* Deflate                                                             */
/* ------------------------------------------------------------------ */

static void deflate_release(ms_gzip_t *gz) {
  if (gz->zinit) {
    (void)deflateEnd(&gz->zs);
    gz->zinit = 0;
  }
  /* z_stream holds only pointers and counters after deflateEnd. */
  sodium_memzero(&gz->zs, sizeof(gz->zs));
}


int ms_gzip_init(ms_gzip_t *gz, int level) {
  int r;

  memset(gz, 0, sizeof(*gz));
  if (level < -1 || level > 9) return MS_EINVAL;
  gz_hooks(&gz->zs);
  r = deflateInit2(&gz->zs, level, Z_DEFLATED, GZ_WINDOW_BITS, GZ_MEM_LEVEL,
                   Z_DEFAULT_STRATEGY);
  if (r != Z_OK) {
    memset(gz, 0, sizeof(*gz));
    return r == Z_MEM_ERROR ? MS_ENOMEM : MS_EINVAL;
  }
  gz->zinit = 1;
  return 0;
}


void ms_gzip_free(ms_gzip_t *gz) {
  deflate_release(gz);
  memset(gz, 0, sizeof(*gz));
}


static int deflate_fail(ms_gzip_t *gz, int err) {
  deflate_release(gz);
  gz->state = err;
  gz->flushing = 0;
  return err;
}


int ms_gzip_deflate(ms_gzip_t *gz, const uint8_t *in, size_t len,
                    size_t *consumed, uint8_t *out, size_t cap,
                    size_t *produced, ms_gzip_flush_t flush) {
  size_t used = 0, prod = 0;
  int zflush, r = Z_OK;

  *consumed = 0;
  *produced = 0;
  if (gz->state < 0) return gz->state;
  if (gz->state == GZ_ENDED) return MS_ESHUTDOWN;
  if (!gz->zinit || out == NULL || cap == 0 || (in == NULL && len > 0))
    return MS_EINVAL;
  switch (flush) {
    case MS_GZIP_NO_FLUSH: zflush = Z_NO_FLUSH; break;
    case MS_GZIP_SYNC_FLUSH: zflush = Z_SYNC_FLUSH; break;
    case MS_GZIP_FINISH: zflush = Z_FINISH; break;
    default: return MS_EINVAL;
  }
  if (zflush == Z_SYNC_FLUSH && cap < MS_GZIP_FLUSH_MIN_OUT) return MS_EINVAL;
  /* An idle flush writes nothing (no empty sync marker per loop turn). */
  if (zflush == Z_SYNC_FLUSH && len == 0 && gz->unflushed == 0 &&
      !gz->flushing)
    return 0;
  if (in == NULL) in = gz_none;

  for (;;) {
    uInt ain = clamp_uint(len - used), aout = clamp_uint(cap - prod);
    /* Flush only with the last piece of input. */
    int mode = used + ain < len ? Z_NO_FLUSH : zflush;

    gz->zs.next_in = (Bytef *)(uintptr_t)(in + used);
    gz->zs.avail_in = ain;
    gz->zs.next_out = out + prod;
    gz->zs.avail_out = aout;
    r = deflate(&gz->zs, mode);
    used += ain - gz->zs.avail_in;
    prod += aout - gz->zs.avail_out;
    gz->zs.next_in = Z_NULL;
    gz->zs.next_out = Z_NULL;
    if (r == Z_STREAM_ERROR) break;
    if (r == Z_STREAM_END) {
      gz->unflushed = 0;
      gz->total_in += used;
      gz->total_out += prod;
      *consumed = used;
      *produced = prod;
      gz->state = GZ_ENDED;
      gz->flushing = 0;
      deflate_release(gz); /* the trailer is out: drop zlib's memory now */
      return 0;
    }
    if (gz->zs.avail_out == 0) {
      if (prod < cap) continue; /* only a clamped piece filled up */
      gz->unflushed += used;
      gz->total_in += used;
      gz->total_out += prod;
      *consumed = used;
      *produced = prod;
      if (used == len && zflush == Z_NO_FLUSH) return 0;
      gz->flushing = zflush != Z_NO_FLUSH;
      return 1;
    }
    if (used < len) continue;
    /* All input taken and room left: a flush is complete. A FINISH with
     * room left must have ended the stream; anything else is zlib's bug. */
    if (zflush == Z_FINISH) {
      r = Z_STREAM_ERROR;
      break;
    }
    gz->total_in += used;
    gz->total_out += prod;
    *consumed = used;
    *produced = prod;
    if (zflush == Z_SYNC_FLUSH) {
      gz->unflushed = 0;
      gz->flushing = 0;
    } else {
      gz->unflushed += used;
    }
    return 0;
  }
  *consumed = used;
  *produced = prod;
  return deflate_fail(gz, MS_EFRAME);
}


static int deflate_grow(ms_gzip_t *gz, const uint8_t *in, size_t len,
                        ms_gzbuf_t *out, ms_gzip_flush_t flush) {
  size_t off = 0;

  if (gz->state < 0) return gz->state;
  if (gz->state == GZ_ENDED) return MS_ESHUTDOWN;
  if (in == NULL && len > 0) return MS_EINVAL;
  if (flush == MS_GZIP_NO_FLUSH && len == 0) return 0;
  for (;;) {
    size_t c = 0, p = 0;
    int r;
    if (gzbuf_reserve(out) < 0) return deflate_fail(gz, MS_ENOMEM);
    r = ms_gzip_deflate(gz, in ? in + off : NULL, len - off, &c,
                        out->data + out->len, out->cap - out->len, &p, flush);
    off += c;
    out->len += p;
    if (r != 1) return r;
  }
}


int ms_gzip_write(ms_gzip_t *gz, const uint8_t *in, size_t len,
                  ms_gzbuf_t *out) {
  return deflate_grow(gz, in, len, out, MS_GZIP_NO_FLUSH);
}


int ms_gzip_flush(ms_gzip_t *gz, ms_gzbuf_t *out) {
  return deflate_grow(gz, NULL, 0, out, MS_GZIP_SYNC_FLUSH);
}


int ms_gzip_finish(ms_gzip_t *gz, ms_gzbuf_t *out) {
  return deflate_grow(gz, NULL, 0, out, MS_GZIP_FINISH);
}


size_t ms_gzip_pending(const ms_gzip_t *gz) {
  return gz->unflushed;
}


int ms_gzip_finished(const ms_gzip_t *gz) {
  return gz->state == GZ_ENDED;
}


/* ------------------------------------------------------------------ */
/* Inflate                                                             */
/* ------------------------------------------------------------------ */

static void inflate_release(ms_gunzip_t *gz) {
  if (gz->zinit) {
    (void)inflateEnd(&gz->zs);
    gz->zinit = 0;
  }
  sodium_memzero(&gz->zs, sizeof(gz->zs));
}


static void release_stash(ms_gunzip_t *gz) {
  if (gz->stash != NULL) {
    sodium_memzero(gz->stash, gz->stash_len);
    free(gz->stash);
    gz->stash = NULL;
  }
  gz->stash_off = 0;
  gz->stash_len = 0;
}


int ms_gunzip_init(ms_gunzip_t *gz, uint64_t max_total) {
  int r;

  memset(gz, 0, sizeof(*gz));
  gz_hooks(&gz->zs);
  gz->zs.next_in = Z_NULL;
  gz->zs.avail_in = 0;
  r = inflateInit2(&gz->zs, GZ_WINDOW_BITS);
  if (r != Z_OK) {
    memset(gz, 0, sizeof(*gz));
    return r == Z_MEM_ERROR ? MS_ENOMEM : MS_EINVAL;
  }
  gz->zinit = 1;
  gz->max_total = max_total;
  return 0;
}


void ms_gunzip_free(ms_gunzip_t *gz) {
  inflate_release(gz);
  release_stash(gz);
  sodium_memzero(gz, sizeof(*gz));
}


static int inflate_fail(ms_gunzip_t *gz, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int inflate_fail(ms_gunzip_t *gz, int err, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(gz->reason, sizeof(gz->reason), fmt, ap);
  va_end(ap);
  inflate_release(gz);
  release_stash(gz);
  gz->state = err;
  return err;
}


static int trailing_data(ms_gunzip_t *gz) {
  return inflate_fail(gz, MS_EFRAME, "gzip: data after the end of the stream");
}


/* One source of input. Returns 0 (input used up, room left), 1 (out full),
 * 2 (trailer verified) or an error. */
static int inflate_run(ms_gunzip_t *gz, const uint8_t *in, size_t len,
                       size_t *used, uint8_t *out, size_t cap, size_t *prod) {
  for (;;) {
    uInt ain = clamp_uint(len - *used), aout = clamp_uint(cap - *prod);
    size_t got_in, got_out;
    int r;

    if (aout == 0) return 1;
    if (gz->max_total != 0) {
      /* Allow one byte past the limit, so that overrun is detectable. */
      uint64_t allowed = gz->max_total - gz->total_out;
      if (allowed < UINT64_MAX && (uint64_t)aout > allowed + 1)
        aout = (uInt)(allowed + 1);
    }
    gz->zs.next_in = (Bytef *)(uintptr_t)(len ? in + *used : gz_none);
    gz->zs.avail_in = ain;
    gz->zs.next_out = out + *prod;
    gz->zs.avail_out = aout;
    r = inflate(&gz->zs, Z_NO_FLUSH);
    got_in = ain - gz->zs.avail_in;
    got_out = aout - gz->zs.avail_out;
    gz->zs.next_in = Z_NULL;
    gz->zs.next_out = Z_NULL;
    *used += got_in;
    *prod += got_out;
    gz->total_out += got_out;
    if (gz->max_total != 0 && gz->total_out > gz->max_total) {
      uint64_t over = gz->total_out - gz->max_total;
      *prod -= (size_t)over;
      gz->total_out = gz->max_total;
      return inflate_fail(gz, MS_ELIMIT,
                          "gzip: decompressed size exceeds the limit of "
                          "%llu bytes",
                          (unsigned long long)gz->max_total);
    }
    switch (r) {
      case Z_STREAM_END:
        gz->state = GZ_ENDED;
        inflate_release(gz); /* drop (and wipe) the window now */
        return GZ_ENDED;
      case Z_OK:
      case Z_BUF_ERROR: /* no progress possible: input or output ran out */
        if (gz->zs.avail_out == 0) {
          if (*prod == cap) return 1;
          continue; /* a clamped piece filled up */
        }
        if (*used < len) {
          if (got_in == 0 && got_out == 0)
            return inflate_fail(gz, MS_EFRAME, "gzip: decoder stalled");
          continue;
        }
        return 0;
      case Z_DATA_ERROR:
        return inflate_fail(gz, MS_EFRAME, "gzip: %s",
                            gz->zs.msg ? gz->zs.msg : "corrupt data");
      case Z_NEED_DICT:
        return inflate_fail(gz, MS_EFRAME,
                            "gzip: stream asks for a preset dictionary");
      case Z_MEM_ERROR:
        return inflate_fail(gz, MS_ENOMEM, "gzip: out of memory");
      default:
        return inflate_fail(gz, MS_EFRAME, "gzip: zlib error %d", r);
    }
  }
}


int ms_gunzip_next(ms_gunzip_t *gz, const uint8_t *in, size_t len,
                   size_t *consumed, uint8_t *out, size_t cap,
                   size_t *produced) {
  int r;

  *consumed = 0;
  *produced = 0;
  if (gz->state < 0) return gz->state;
  if (out == NULL || cap == 0 || (in == NULL && len > 0)) return MS_EINVAL;
  if (gz->state == GZ_ENDED) {
    if (len > 0 || ms_gunzip_stashed(gz) > 0) return trailing_data(gz);
    release_stash(gz);
    return GZ_ENDED;
  }
  if (!gz->zinit) return MS_EINVAL;

  if (gz->stash != NULL) {
    size_t su = 0;
    r = inflate_run(gz, gz->stash + gz->stash_off,
                    gz->stash_len - gz->stash_off, &su, out, cap, produced);
    if (r < 0) return r;
    gz->stash_off += su;
    if (r == GZ_ENDED) {
      if (gz->stash_off < gz->stash_len || len > 0) return trailing_data(gz);
      release_stash(gz);
      return GZ_ENDED;
    }
    if (r == 1) return 1;
    release_stash(gz); /* drained */
  }

  r = inflate_run(gz, in, len, consumed, out, cap, produced);
  if (r == GZ_ENDED && *consumed < len) return trailing_data(gz);
  return r;
}


int ms_gunzip_stash(ms_gunzip_t *gz, const uint8_t *in, size_t len) {
  size_t keep, total;
  uint8_t *buf;

  if (gz->state < 0) return gz->state;
  if (len == 0) return 0;
  if (in == NULL) return MS_EINVAL;
  keep = ms_gunzip_stashed(gz);
  if (keep > SIZE_MAX - len) return MS_ENOMEM;
  total = keep + len;
  buf = malloc(total);
  if (buf == NULL) return MS_ENOMEM;
  if (keep > 0) memcpy(buf, gz->stash + gz->stash_off, keep);
  memcpy(buf + keep, in, len);
  release_stash(gz);
  gz->stash = buf;
  gz->stash_off = 0;
  gz->stash_len = total;
  return 0;
}


size_t ms_gunzip_stashed(const ms_gunzip_t *gz) {
  return gz->stash != NULL ? gz->stash_len - gz->stash_off : 0;
}


int ms_gunzip_eof(const ms_gunzip_t *gz) {
  if (gz->state == GZ_ENDED) return 0;
  if (gz->state < 0) return gz->state;
  return MS_EHANGUP;
}


const char *ms_gunzip_reason(const ms_gunzip_t *gz) {
  return gz->reason;
}


uint64_t ms_gunzip_total_out(const ms_gunzip_t *gz) {
  return gz->total_out;
}
