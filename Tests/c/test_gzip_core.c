/* gzip codec: Python-made fixtures (Tests/vectors/gzip), round trips over
 * sizes and chunkings, Python decoding our output, sync-flush points, the
 * cork, a 1 GiB bomb under bounded memory, corrupt / truncated / trailing
 * input, the stash, and misuse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <zlib.h>

#include "gzip_core.h"
#include "mstest.h"

#define VEC "Tests/vectors/gzip/"

static uint32_t rng = 2463534242u;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

static uint8_t *load(const char *name, size_t *len) {
  char path[256];
  FILE *f;
  long n;
  uint8_t *buf;

  snprintf(path, sizeof(path), VEC "%s", name);
  f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)n + 1);
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* ------------------------------------------------------------------ */
/* Decoding helper                                                     */
/* ------------------------------------------------------------------ */

enum { FEED_WHOLE, FEED_BYTES, FEED_RANDOM, FEED_PAUSE };

typedef struct {
  uint8_t *plain;
  size_t len, cap;
  int status;      /* last return of next(): 0, 2 or an error */
  int eof;         /* ms_gunzip_eof() at the end (when status >= 0) */
  size_t max_chunk; /* largest produced count seen */
  char reason[MS_GZIP_REASON_LEN];
} gout_t;

static void gout_add(gout_t *o, const uint8_t *p, size_t n) {
  if (o->len + n + 1 > o->cap) {
    o->cap = (o->len + n + 1) * 2;
    o->plain = realloc(o->plain, o->cap);
  }
  memcpy(o->plain + o->len, p, n);
  o->len += n;
  if (n > o->max_chunk) o->max_chunk = n;
}

/* Feed wire through a fresh decoder. Every input piece is an exact-size
 * heap copy so ASan sees overreads. outcap: output buffer size. */
static gout_t gunzip_all(const uint8_t *wire, size_t len, int mode,
                         size_t outcap, uint64_t limit) {
  gout_t o = {0};
  ms_gunzip_t g;
  uint8_t *out = malloc(outcap);
  size_t off = 0;
  int r = 0, bad = 0;

  CHECK_INT(ms_gunzip_init(&g, limit), 0);
  o.plain = malloc(1);
  o.cap = 1;
  /* Input after the end is fed too: it must be refused. */
  while (off < len && r >= 0) {
    size_t n = len - off, c, k;
    uint8_t *chunk, *p;
    if (mode == FEED_BYTES) n = 1;
    if (mode == FEED_RANDOM || mode == FEED_PAUSE) {
      size_t m = 1 + rnd() % 700;
      if (m < n) n = m;
    }
    chunk = malloc(n);
    memcpy(chunk, wire + off, n);
    off += n;
    p = chunk;
    do {
      r = ms_gunzip_next(&g, p, n, &c, out, outcap, &k);
      bad += c > n || k > outcap;
      p += c;
      n -= c;
      gout_add(&o, out, k);
      if (mode == FEED_PAUSE && r == 1 && rnd() % 2) {
        /* The reader pauses: keep the rest, resume from the stash. */
        bad += ms_gunzip_stash(&g, p, n) != 0;
        n = 0;
        do {
          r = ms_gunzip_next(&g, NULL, 0, &c, out, outcap, &k);
          bad += c != 0 || k > outcap;
          gout_add(&o, out, k);
        } while (r == 1);
      }
    } while (r == 1);
    bad += r == 0 && n != 0;
    free(chunk);
  }
  CHECK_INT(bad, 0);
  if (r == 1) r = 0;
  o.status = r;
  o.eof = ms_gunzip_eof(&g);
  snprintf(o.reason, sizeof(o.reason), "%s", ms_gunzip_reason(&g));
  if (r >= 0) CHECK_INT(ms_gunzip_stashed(&g), 0);
  ms_gunzip_free(&g);
  free(out);
  return o;
}

/* Compress with our deflater, writes cut by wchunk, a sync flush every
 * flush_every writes (0: never), then finish. */
static uint8_t *gzip_all(const uint8_t *in, size_t len, int level,
                         size_t wchunk, int flush_every, size_t *outlen) {
  ms_gzip_t z;
  ms_gzbuf_t b = {0};
  size_t off = 0;
  int writes = 0, bad = 0;

  CHECK_INT(ms_gzip_init(&z, level), 0);
  while (off < len) {
    size_t n = len - off < wchunk ? len - off : wchunk;
    bad += ms_gzip_write(&z, in + off, n, &b) != 0;
    off += n;
    if (flush_every && ++writes % flush_every == 0) {
      bad += ms_gzip_flush(&z, &b) != 0;
      bad += ms_gzip_pending(&z) != 0;
    }
  }
  CHECK_INT(bad, 0);
  CHECK_INT(ms_gzip_finish(&z, &b), 0);
  CHECK_INT(ms_gzip_finished(&z), 1);
  CHECK_INT(ms_gzip_pending(&z), 0);
  ms_gzip_free(&z);
  *outlen = b.len;
  return b.data;
}

static void fill(uint8_t *p, size_t n, int kind) {
  for (size_t i = 0; i < n; i++) {
    switch (kind) {
      case 0: p[i] = (uint8_t)rnd(); break;              /* incompressible */
      case 1: p[i] = (uint8_t)("abcabcabd"[i % 9]); break; /* repetitive */
      default: p[i] = (uint8_t)(i % 251 < 40 ? rnd() & 7 : 'x'); break;
    }
  }
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

static void test_python_fixtures(void) {
  static const char *pairs[][2] = {{"hello.txt.gz", "hello.txt"},
                                   {"pattern.bin.gz", "pattern.bin"},
                                   {"fname.gz", "hello.txt"}};
  static const size_t caps[] = {1, 7, 4096, 65536};
  for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
    size_t zl, pl;
    uint8_t *z = load(pairs[i][0], &zl), *p = load(pairs[i][1], &pl);
    CHECK(z != NULL && p != NULL);
    if (!z || !p) continue;
    for (int mode = FEED_WHOLE; mode <= FEED_PAUSE; mode++) {
      for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        gout_t o;
        if (mode == FEED_BYTES && zl > 1000 && caps[c] < 4096) continue;
        o = gunzip_all(z, zl, mode, caps[c], 0);
        CHECK_INT(o.status, 2);
        CHECK_INT(o.eof, 0);
        CHECK_INT(o.len, pl);
        CHECK(o.len == pl && memcmp(o.plain, p, pl) == 0);
        CHECK(o.max_chunk <= caps[c]);
        free(o.plain);
      }
    }
    free(z);
    free(p);
  }
  {
    size_t zl;
    uint8_t *z = load("empty.gz", &zl);
    gout_t o;
    CHECK(z != NULL);
    if (z) {
      o = gunzip_all(z, zl, FEED_BYTES, 16, 0);
      CHECK_INT(o.status, 2);
      CHECK_INT(o.len, 0);
      CHECK_INT(o.eof, 0);
      free(o.plain);
      free(z);
    }
  }
}

/* Our output is a gzip stream: header bytes, and Python reads it. */
static void test_output_format(void) {
  uint8_t plain[5000];
  size_t zl;
  uint8_t *z;

  fill(plain, sizeof(plain), 2);
  z = gzip_all(plain, sizeof(plain), 6, 1000, 2, &zl);
  CHECK(zl > 18);
  CHECK_INT(z[0], 0x1f); /* ID1 */
  CHECK_INT(z[1], 0x8b); /* ID2 */
  CHECK_INT(z[2], 0x08); /* CM = deflate */
  /* ISIZE (last 4 bytes, little-endian) is the plaintext length. */
  CHECK_INT((uint32_t)z[zl - 4] | (uint32_t)z[zl - 3] << 8 |
                (uint32_t)z[zl - 2] << 16 | (uint32_t)z[zl - 1] << 24,
            sizeof(plain));
  /* CRC-32 before it. */
  CHECK_INT((uint32_t)z[zl - 8] | (uint32_t)z[zl - 7] << 8 |
                (uint32_t)z[zl - 6] << 16 | (uint32_t)z[zl - 5] << 24,
            crc32(0, plain, sizeof(plain)));
  free(z);
}

static int have_python(void) {
  return system("python3 -c 'import gzip, zlib' >/dev/null 2>&1") == 0;
}

/* Python's gzip module decodes our streams (the other direction is the
 * committed fixtures). Skipped, with a note, when python3 is missing. */
static void test_python_decodes_ours(void) {
  static const size_t sizes[] = {0, 1, 1000, 70000, 300000};
  char zpath[] = "/tmp/ms_gzip_XXXXXX", ppath[] = "/tmp/ms_plain_XXXXXX";
  if (!have_python()) {
    fprintf(stderr, "note: python3 not found, skipping the C->Python check\n");
    return;
  }
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    for (int flush_every = 0; flush_every <= 3; flush_every += 3) {
      uint8_t *plain = malloc(sizes[i] + 1);
      size_t zl;
      uint8_t *z;
      int zfd = mkstemp(zpath), pfd = mkstemp(ppath), rc;
      char cmd[512];
      fill(plain, sizes[i], (int)(i % 3));
      z = gzip_all(plain, sizes[i], (int)i - 1, 777, flush_every, &zl);
      CHECK(zfd >= 0 && pfd >= 0);
      CHECK(write(zfd, z, zl) == (ssize_t)zl);
      CHECK(write(pfd, plain, sizes[i]) == (ssize_t)sizes[i]);
      close(zfd);
      close(pfd);
      /* gzip.decompress and a zlib decompressobj(wbits=31) must agree. */
      snprintf(cmd, sizeof(cmd),
               "python3 -c 'import gzip,zlib,sys; z=open(\"%s\",\"rb\").read();"
               " p=open(\"%s\",\"rb\").read(); d=zlib.decompressobj(31);"
               " sys.exit(0 if gzip.decompress(z)==p and d.decompress(z)==p"
               " and d.eof and not d.unused_data else 1)'",
               zpath, ppath);
      rc = system(cmd);
      CHECK_INT(rc, 0);
      unlink(zpath);
      unlink(ppath);
      strcpy(zpath, "/tmp/ms_gzip_XXXXXX");
      strcpy(ppath, "/tmp/ms_plain_XXXXXX");
      free(z);
      free(plain);
    }
  }
}

static void test_roundtrips(void) {
  static const size_t sizes[] = {0, 1, 2, 100, 4095, 4096, 65535, 65536,
                                 65537, 200000};
  static const size_t wchunks[] = {1, 7, 4096, 1u << 20};
  static const size_t outcaps[] = {1, 100, 65536};
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
    for (int kind = 0; kind < 3; kind++) {
      uint8_t *plain = malloc(sizes[s] + 1);
      fill(plain, sizes[s], kind);
      for (size_t w = 0; w < sizeof(wchunks) / sizeof(wchunks[0]); w++) {
        size_t zl;
        uint8_t *z;
        /* 1-byte writes of 200 KB are slow to no purpose. */
        if (wchunks[w] == 1 && sizes[s] > 70000) continue;
        z = gzip_all(plain, sizes[s], kind == 1 ? 9 : (int)w - 1, wchunks[w],
                     (int)(s % 4), &zl);
        for (size_t c = 0; c < sizeof(outcaps) / sizeof(outcaps[0]); c++) {
          int mode = (int)((s + w + c) % 4);
          gout_t o;
          if (outcaps[c] == 1 && zl > 20000) continue;
          o = gunzip_all(z, zl, mode, outcaps[c], 0);
          CHECK_INT(o.status, 2);
          CHECK(o.len == sizes[s] && memcmp(o.plain, plain, sizes[s]) == 0);
          free(o.plain);
        }
        free(z);
      }
      free(plain);
    }
  }
}

/* The bounded deflate step with tiny output buffers. */
static void test_bounded_deflate(void) {
  static const size_t caps[] = {1, 6, 64, 1000};
  uint8_t plain[30000];
  fill(plain, sizeof(plain), 0);
  for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
    ms_gzip_t z;
    uint8_t *wire = malloc(200000), *out = malloc(caps[i]);
    size_t wl = 0, off = 0, c, p;
    int r, calls = 0, bad = 0;
    gout_t o;
    CHECK_INT(ms_gzip_init(&z, 1), 0);
    for (int step = 0; step < 3; step++) {
      ms_gzip_flush_t fl = step == 0   ? MS_GZIP_NO_FLUSH
                           : step == 1 ? MS_GZIP_SYNC_FLUSH
                                       : MS_GZIP_FINISH;
      size_t n = step == 2 ? 0 : sizeof(plain) / 2;
      const uint8_t *in = plain + off;
      /* A sync flush needs a minimum buffer; tiny ones only compress. */
      if (fl == MS_GZIP_SYNC_FLUSH && caps[i] < MS_GZIP_FLUSH_MIN_OUT) {
        CHECK_INT(ms_gzip_deflate(&z, in, n, &c, out, caps[i], &p, fl),
                  MS_EINVAL);
        fl = MS_GZIP_NO_FLUSH;
      }
      do {
        r = ms_gzip_deflate(&z, in, n, &c, out, caps[i], &p, fl);
        bad += !(r == 0 || r == 1) || c > n || p > caps[i];
        memcpy(wire + wl, out, p);
        wl += p;
        in += c;
        n -= c;
        off += c;
        calls++;
      } while (r == 1 && calls < 1000000);
      CHECK_INT(bad, 0);
      CHECK_INT(n, 0);
    }
    CHECK_INT(off, sizeof(plain));
    CHECK_INT(ms_gzip_finished(&z), 1);
    /* After finish: ESHUTDOWN, not final. */
    CHECK_INT(ms_gzip_deflate(&z, plain, 1, &c, out, caps[i], &p,
                              MS_GZIP_NO_FLUSH), MS_ESHUTDOWN);
    CHECK_INT(ms_gzip_finished(&z), 1);
    ms_gzip_free(&z);
    o = gunzip_all(wire, wl, FEED_RANDOM, 4096, 0);
    CHECK_INT(o.status, 2);
    CHECK(o.len == sizeof(plain) && memcmp(o.plain, plain, o.len) == 0);
    free(o.plain);
    free(wire);
    free(out);
  }
}

/* A sync flush makes everything so far decodable without more data. */
static void test_sync_flush(void) {
  ms_gzip_t z;
  ms_gunzip_t g;
  ms_gzbuf_t b = {0};
  uint8_t out[65536];
  const char *msgs[] = {"first message", "second, a little longer message",
                        "x", "the last one"};
  size_t c, k;

  CHECK_INT(ms_gzip_init(&z, -1), 0);
  CHECK_INT(ms_gunzip_init(&g, 0), 0);
  for (size_t i = 0; i < 4; i++) {
    size_t n = strlen(msgs[i]);
    CHECK_INT(ms_gzip_write(&z, (const uint8_t *)msgs[i], n, &b), 0);
    CHECK_INT(ms_gzip_pending(&z), n);
    CHECK_INT(ms_gzip_flush(&z, &b), 0);
    CHECK_INT(ms_gzip_pending(&z), 0);
    /* The flush ends in the sync marker 00 00 ff ff. */
    CHECK(b.len >= 4 && memcmp(b.data + b.len - 4, "\0\0\xff\xff", 4) == 0);
    CHECK_INT(ms_gunzip_next(&g, b.data, b.len, &c, out, sizeof(out), &k), 0);
    CHECK_INT(c, b.len);
    CHECK_INT(k, n);
    CHECK(k == n && memcmp(out, msgs[i], n) == 0);
    b.len = 0;
    /* An idle flush writes nothing. */
    CHECK_INT(ms_gzip_flush(&z, &b), 0);
    CHECK_INT(b.len, 0);
  }
  CHECK_INT(ms_gzip_finish(&z, &b), 0);
  CHECK(b.len > 0);
  CHECK_INT(ms_gunzip_next(&g, b.data, b.len, &c, out, sizeof(out), &k), 2);
  CHECK_INT(k, 0);
  CHECK_INT(ms_gunzip_eof(&g), 0);
  CHECK_INT(ms_gunzip_next(&g, NULL, 0, &c, out, sizeof(out), &k), 2);
  ms_gunzip_free(&g);
  ms_gzip_free(&z);
  ms_gzbuf_free(&b);

  /* Python's stream with a Z_SYNC_FLUSH at a recorded offset. */
  {
    size_t zl, l1, l2, ol;
    uint8_t *zz = load("sync.gz", &zl), *p1 = load("sync_part1.txt", &l1),
            *p2 = load("sync_part2.txt", &l2), *off = load("sync.offset", &ol);
    CHECK(zz && p1 && p2 && off);
    if (zz && p1 && p2 && off) {
      size_t at;
      off[ol] = 0;
      at = (size_t)strtoul((char *)off, NULL, 10);
      CHECK(at > 0 && at < zl);
      CHECK_INT(ms_gunzip_init(&g, 0), 0);
      CHECK_INT(ms_gunzip_next(&g, zz, at, &c, out, sizeof(out), &k), 0);
      CHECK_INT(c, at);
      CHECK(k == l1 && memcmp(out, p1, l1) == 0);
      CHECK_INT(ms_gunzip_eof(&g), MS_EHANGUP);
      CHECK_INT(ms_gunzip_next(&g, zz + at, zl - at, &c, out, sizeof(out), &k),
                2);
      CHECK(k == l2 && memcmp(out, p2, l2) == 0);
      ms_gunzip_free(&g);
    }
    free(zz);
    free(p1);
    free(p2);
    free(off);
  }
}

/* The cork: small writes stay inside zlib until the flush. */
static void test_cork(void) {
  ms_gzip_t z;
  ms_gzbuf_t b = {0};
  size_t total = 0, before;
  char line[64];

  CHECK_INT(ms_gzip_init(&z, 6), 0);
  for (int i = 0; i < 200; i++) {
    int n = snprintf(line, sizeof(line), "message number %d\n", i);
    CHECK_INT(ms_gzip_write(&z, (const uint8_t *)line, (size_t)n, &b), 0);
    total += (size_t)n;
  }
  CHECK_INT(ms_gzip_pending(&z), total);
  /* At most the 10-byte header has come out. */
  CHECK(b.len <= 10);
  before = b.len;
  CHECK_INT(ms_gzip_flush(&z, &b), 0);
  CHECK(b.len > before);
  CHECK(b.len < total / 2);
  CHECK_INT(ms_gzip_pending(&z), 0);
  CHECK_INT(ms_gzip_finish(&z, &b), 0);
  /* After finish: writes and flushes are refused, not final. */
  CHECK_INT(ms_gzip_write(&z, (const uint8_t *)"x", 1, &b), MS_ESHUTDOWN);
  CHECK_INT(ms_gzip_flush(&z, &b), MS_ESHUTDOWN);
  CHECK_INT(ms_gzip_finish(&z, &b), MS_ESHUTDOWN);
  CHECK_INT(ms_gzip_finished(&z), 1);
  ms_gzip_free(&z);
  ms_gzip_free(&z); /* twice is fine */
  ms_gzbuf_free(&b);
  CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
}

static long maxrss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* 1 GiB of zeros in about 1 MiB: output arrives in bounded chunks and the
 * decoder's memory does not grow. */
static void test_bomb(void) {
  const size_t block = 1u << 20;
  const uint64_t total = (uint64_t)1 << 30;
  uint8_t *zeros = calloc(1, block), *out = malloc(MS_GUNZIP_OUT_RECOMMENDED);
  ms_gzip_t z;
  ms_gzbuf_t b = {0};
  ms_gunzip_t g;
  uint64_t got = 0;
  size_t off = 0, c, k, max_k = 0, calls = 0;
  long rss0, rss1;
  int r;

  CHECK_INT(ms_gzip_init(&z, 6), 0);
  r = 0;
  for (uint64_t done = 0; done < total && r == 0; done += block)
    r = ms_gzip_write(&z, zeros, block, &b);
  CHECK_INT(r, 0);
  CHECK_INT(ms_gzip_finish(&z, &b), 0);
  ms_gzip_free(&z);
  fprintf(stderr, "bomb: 1 GiB of zeros -> %zu bytes\n", b.len);
  CHECK(b.len < 2 * block);

  rss0 = maxrss_kib();
  CHECK_INT(ms_gunzip_init(&g, 0), 0);
  do {
    size_t n = b.len - off < 4096 ? b.len - off : 4096;
    r = ms_gunzip_next(&g, b.data + off, n, &c, out, MS_GUNZIP_OUT_RECOMMENDED,
                       &k);
    off += c;
    got += k;
    if (k > max_k) max_k = k;
    calls++;
  } while (r == 0 || r == 1);
  rss1 = maxrss_kib();
  CHECK_INT(r, 2);
  CHECK_INT(off, b.len);
  CHECK(got == total);
  CHECK(max_k <= MS_GUNZIP_OUT_RECOMMENDED);
  CHECK(calls >= total / MS_GUNZIP_OUT_RECOMMENDED);
  fprintf(stderr, "bomb: %zu calls, max rss %ld -> %ld KiB\n", calls, rss0,
          rss1);
  CHECK(rss1 - rss0 < 16 * 1024);
  ms_gunzip_free(&g);

  /* With an expansion limit: exactly the limit arrives, then MS_ELIMIT. */
  {
    const uint64_t limit = 10u * 1000 * 1000 + 7;
    got = 0;
    off = 0;
    CHECK_INT(ms_gunzip_init(&g, limit), 0);
    do {
      r = ms_gunzip_next(&g, b.data + off, b.len - off, &c, out,
                         MS_GUNZIP_OUT_RECOMMENDED, &k);
      off += c;
      got += k;
    } while (r == 1 || r == 0);
    CHECK_INT(r, MS_ELIMIT);
    CHECK(got == limit);
    CHECK_INT(ms_gunzip_total_out(&g), limit);
    CHECK_HAS(ms_gunzip_reason(&g), "limit");
    CHECK_INT(ms_gunzip_next(&g, NULL, 0, &c, out, 1, &k), MS_ELIMIT);
    CHECK_INT(ms_gunzip_eof(&g), MS_ELIMIT);
    ms_gunzip_free(&g);
  }
  /* A limit equal to the size is not exceeded. */
  {
    uint8_t small[1000];
    size_t zl;
    uint8_t *zz;
    gout_t o;
    fill(small, sizeof(small), 1);
    zz = gzip_all(small, sizeof(small), 6, 100, 0, &zl);
    o = gunzip_all(zz, zl, FEED_BYTES, 64, sizeof(small));
    CHECK_INT(o.status, 2);
    CHECK_INT(o.len, sizeof(small));
    free(o.plain);
    o = gunzip_all(zz, zl, FEED_BYTES, 64, sizeof(small) - 1);
    CHECK_INT(o.status, MS_ELIMIT);
    CHECK_INT(o.len, sizeof(small) - 1);
    free(o.plain);
    free(zz);
  }
  ms_gzbuf_free(&b);
  free(zeros);
  free(out);
}

static void test_corrupt(void) {
  size_t zl, pl;
  uint8_t *z = load("hello.txt.gz", &zl), *p = load("hello.txt", &pl);
  struct {
    size_t at;     /* from the start, or from the end if from_end */
    int from_end;
    uint8_t xor_;
    const char *reason;
  } cases[] = {
      {0, 0, 0x01, "incorrect header check"},  /* ID1 */
      {1, 0, 0x80, "incorrect header check"},  /* ID2 */
      {2, 0, 0x01, "unknown compression method"},
      {3, 0, 0xe0, "unknown header flags set"}, /* reserved FLG bits */
      {8, 1, 0x01, "incorrect data check"},   /* CRC-32 */
      {4, 1, 0x01, "incorrect length check"}, /* ISIZE */
  };
  CHECK(z && p);
  if (!z || !p) return;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (int mode = FEED_WHOLE; mode <= FEED_BYTES; mode++) {
      uint8_t *bad = malloc(zl);
      size_t at = cases[i].from_end ? zl - cases[i].at : cases[i].at;
      gout_t o;
      memcpy(bad, z, zl);
      bad[at] ^= cases[i].xor_;
      o = gunzip_all(bad, zl, mode, 4096, 0);
      CHECK_INT(o.status, MS_EFRAME);
      CHECK_INT(o.eof, MS_EFRAME);
      CHECK_HAS(o.reason, "gzip: ");
      CHECK_HAS(o.reason, cases[i].reason);
      free(o.plain);
      free(bad);
    }
  }
  /* Invalid block type (BTYPE 11) in the first deflate block header. */
  {
    uint8_t *bad = malloc(zl);
    gout_t o;
    memcpy(bad, z, zl);
    bad[10] |= 0x06;
    o = gunzip_all(bad, zl, FEED_WHOLE, 4096, 0);
    CHECK_INT(o.status, MS_EFRAME);
    CHECK_HAS(o.reason, "invalid block type");
    free(o.plain);
    free(bad);
  }
  /* Flip every byte of the compressed body in turn: never a crash, never a
   * silent wrong result (CRC-32 catches what the format does not). */
  for (size_t at = 10; at < zl - 8; at++) {
    uint8_t *bad = malloc(zl);
    gout_t o;
    memcpy(bad, z, zl);
    bad[at] ^= 0x55;
    o = gunzip_all(bad, zl, FEED_RANDOM, 64, 0);
    CHECK(o.status == MS_EFRAME ||
          (o.status == 0 && o.eof == MS_EHANGUP) ||
          (o.status == 2 && o.len == pl && memcmp(o.plain, p, pl) == 0));
    free(o.plain);
    free(bad);
  }
  /* A zlib (RFC 1950) stream and a raw deflate stream are not gzip. */
  {
    uint8_t zb[512];
    uLongf zbl = sizeof(zb);
    gout_t o;
    CHECK_INT(compress2(zb, &zbl, p, pl, 6), Z_OK);
    o = gunzip_all(zb, zbl, FEED_WHOLE, 4096, 0);
    CHECK_INT(o.status, MS_EFRAME);
    CHECK_HAS(o.reason, "incorrect header check");
    free(o.plain);
    o = gunzip_all(z + 10, zl - 18, FEED_WHOLE, 4096, 0);
    CHECK_INT(o.status, MS_EFRAME);
    free(o.plain);
  }
  /* Finality: later calls give the same error. */
  {
    ms_gunzip_t g;
    uint8_t out[64];
    size_t c, k;
    CHECK_INT(ms_gunzip_init(&g, 0), 0);
    CHECK_INT(ms_gunzip_next(&g, (const uint8_t *)"notgzip!", 8, &c, out,
                             sizeof(out), &k),
              MS_EFRAME);
    CHECK_INT(ms_gunzip_next(&g, z, zl, &c, out, sizeof(out), &k), MS_EFRAME);
    CHECK_INT(c, 0);
    CHECK_INT(k, 0);
    CHECK_INT(ms_gunzip_stash(&g, z, zl), MS_EFRAME);
    CHECK_INT(ms_gunzip_eof(&g), MS_EFRAME);
    ms_gunzip_free(&g);
    ms_gunzip_free(&g);
  }
  free(z);
  free(p);
}

static void test_truncated(void) {
  size_t zl, pl;
  uint8_t *z = load("hello.txt.gz", &zl), *p = load("hello.txt", &pl);
  CHECK(z && p);
  if (!z || !p) return;
  for (size_t cut = 0; cut < zl; cut++) {
    gout_t o = gunzip_all(z, cut, cut % 2 ? FEED_BYTES : FEED_WHOLE, 16, 0);
    CHECK_INT(o.status, 0);
    CHECK_INT(o.eof, MS_EHANGUP);
    CHECK(o.len <= pl && memcmp(o.plain, p, o.len) == 0);
    free(o.plain);
  }
  free(z);
  free(p);
}

static void test_trailing(void) {
  size_t zl, pl, tl;
  uint8_t *z = load("hello.txt.gz", &zl), *p = load("hello.txt", &pl),
          *two = load("two_members.gz", &tl);
  uint8_t out[4096];
  ms_gunzip_t g;
  size_t c, k;
  CHECK(z && p && two);
  if (!z || !p || !two) return;
  /* Garbage in the same input as the trailer. */
  {
    uint8_t *w = malloc(zl + 3);
    memcpy(w, z, zl);
    memcpy(w + zl, "xyz", 3);
    CHECK_INT(ms_gunzip_init(&g, 0), 0);
    CHECK_INT(ms_gunzip_next(&g, w, zl + 3, &c, out, sizeof(out), &k),
              MS_EFRAME);
    CHECK_HAS(ms_gunzip_reason(&g), "data after the end");
    CHECK_INT(ms_gunzip_eof(&g), MS_EFRAME);
    ms_gunzip_free(&g);
    free(w);
  }
  /* Garbage in a later input; an empty later input is fine. */
  CHECK_INT(ms_gunzip_init(&g, 0), 0);
  CHECK_INT(ms_gunzip_next(&g, z, zl, &c, out, sizeof(out), &k), 2);
  CHECK_INT(c, zl);
  CHECK(k == pl && memcmp(out, p, pl) == 0);
  CHECK_INT(ms_gunzip_next(&g, NULL, 0, &c, out, sizeof(out), &k), 2);
  CHECK_INT(ms_gunzip_next(&g, (const uint8_t *)"\0", 1, &c, out, sizeof(out),
                           &k),
            MS_EFRAME);
  CHECK_INT(ms_gunzip_eof(&g), MS_EFRAME);
  ms_gunzip_free(&g);
  /* A second gzip member is trailing data too (one member per stream). */
  {
    gout_t o = gunzip_all(two, tl, FEED_WHOLE, 4096, 0);
    CHECK_INT(o.status, MS_EFRAME);
    CHECK_INT(o.len, 13);
    CHECK(o.len == 13 && memcmp(o.plain, "first member\n", 13) == 0);
    free(o.plain);
    o = gunzip_all(two, tl, FEED_BYTES, 4096, 0);
    CHECK_INT(o.status, MS_EFRAME);
    free(o.plain);
  }
  free(z);
  free(p);
  free(two);
}

/* A paused reader: stash the rest of the input, drain it later. */
static void test_stash(void) {
  uint8_t plain[100000], out[1000];
  size_t zl, c, k, got = 0;
  uint8_t *z, *res = malloc(sizeof(plain));
  ms_gunzip_t g;
  int r;

  fill(plain, sizeof(plain), 2);
  z = gzip_all(plain, sizeof(plain), 6, 5000, 0, &zl);
  CHECK_INT(ms_gunzip_init(&g, 0), 0);
  CHECK_INT(ms_gunzip_stashed(&g), 0);
  /* One call fills the output; pause and stash the rest. */
  r = ms_gunzip_next(&g, z, zl, &c, out, sizeof(out), &k);
  CHECK_INT(r, 1);
  CHECK_INT(k, sizeof(out));
  memcpy(res, out, k);
  got = k;
  CHECK(c < zl);
  CHECK_INT(ms_gunzip_stash(&g, z + c, zl - c), 0);
  CHECK_INT(ms_gunzip_stashed(&g), zl - c);
  /* Stash twice (a second pause with nothing drained): kept in order. */
  CHECK_INT(ms_gunzip_stash(&g, NULL, 0), 0);
  CHECK_INT(ms_gunzip_stashed(&g), zl - c);
  do {
    r = ms_gunzip_next(&g, NULL, 0, &c, out, sizeof(out), &k);
    if (c != 0) break;
    memcpy(res + got, out, k);
    got += k;
  } while (r == 1);
  CHECK_INT(r, 2);
  CHECK_INT(got, sizeof(plain));
  CHECK(memcmp(res, plain, sizeof(plain)) == 0);
  CHECK_INT(ms_gunzip_stashed(&g), 0);
  ms_gunzip_free(&g);

  /* Stash then fresh input in the same call: the stash goes first. */
  CHECK_INT(ms_gunzip_init(&g, 0), 0);
  CHECK_INT(ms_gunzip_stash(&g, z, 20), 0);
  got = 0;
  {
    const uint8_t *q = z + 20;
    size_t n = zl - 20;
    do {
      r = ms_gunzip_next(&g, q, n, &c, out, sizeof(out), &k);
      q += c;
      n -= c;
      memcpy(res + got, out, k);
      got += k;
    } while (r == 1 || (r == 0 && n > 0));
  }
  CHECK_INT(r, 2);
  CHECK(got == sizeof(plain) && memcmp(res, plain, got) == 0);
  ms_gunzip_free(&g);
  free(z);
  free(res);
}

static void test_misuse(void) {
  ms_gzip_t z;
  ms_gunzip_t g;
  uint8_t out[16];
  size_t c = 99, k = 99;
  ms_gzbuf_t b = {0};

  CHECK_INT(ms_gzip_init(&z, 10), MS_EINVAL);
  ms_gzip_free(&z);
  CHECK_INT(ms_gzip_init(&z, -2), MS_EINVAL);
  CHECK_INT(ms_gzip_init(&z, 0), 0);
  CHECK_INT(ms_gzip_deflate(&z, (const uint8_t *)"a", 1, &c, out, 0, &k,
                            MS_GZIP_NO_FLUSH),
            MS_EINVAL);
  CHECK_INT(c, 0);
  CHECK_INT(ms_gzip_deflate(&z, NULL, 1, &c, out, 16, &k, MS_GZIP_NO_FLUSH),
            MS_EINVAL);
  CHECK_INT(ms_gzip_write(&z, NULL, 1, &b), MS_EINVAL);
  /* Not final: level 0 (stored) still works. */
  CHECK_INT(ms_gzip_write(&z, (const uint8_t *)"abc", 3, &b), 0);
  CHECK_INT(ms_gzip_finish(&z, &b), 0);
  ms_gzip_free(&z);
  {
    gout_t o = gunzip_all(b.data, b.len, FEED_BYTES, 1, 0);
    CHECK_INT(o.status, 2);
    CHECK(o.len == 3 && memcmp(o.plain, "abc", 3) == 0);
    free(o.plain);
  }
  ms_gzbuf_free(&b);

  CHECK_INT(ms_gunzip_init(&g, 0), 0);
  CHECK_INT(ms_gunzip_next(&g, (const uint8_t *)"\x1f", 1, &c, NULL, 16, &k),
            MS_EINVAL);
  CHECK_INT(ms_gunzip_next(&g, (const uint8_t *)"\x1f", 1, &c, out, 0, &k),
            MS_EINVAL);
  CHECK_INT(ms_gunzip_next(&g, NULL, 5, &c, out, 16, &k), MS_EINVAL);
  CHECK_INT(ms_gunzip_eof(&g), MS_EHANGUP); /* nothing arrived at all */
  CHECK_STR(ms_gunzip_reason(&g), "");
  /* Still usable. */
  CHECK_INT(ms_gunzip_next(&g, (const uint8_t *)"\x1f", 1, &c, out, 16, &k),
            0);
  CHECK_INT(c, 1);
  ms_gunzip_free(&g);
  /* A never-initialised (zeroed) state frees fine. */
  memset(&g, 0, sizeof(g));
  ms_gunzip_free(&g);
  memset(&z, 0, sizeof(z));
  ms_gzip_free(&z);
}

int main(void) {
  test_python_fixtures();
  test_output_format();
  test_python_decodes_ours();
  test_roundtrips();
  test_bounded_deflate();
  test_sync_flush();
  test_cork();
  test_corrupt();
  test_truncated();
  test_trailing();
  test_stash();
  test_misuse();
  test_bomb();
  return mst_done("gzip_core");
}
