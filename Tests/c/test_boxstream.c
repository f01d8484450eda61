/* Box-stream encoder/decoder against every vector set, plus chunking,
 * truncation, tampering, oversize and round-trip tests. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "boxstream.h"
#include "mstest.h"
#include "util_json.h"

#define REF "Tests/vectors/ref_handshake.json"
#define BSC "Tests/vectors/box-stream-c_kat.json"
#define PYS "Tests/vectors/pysecrethandshake_kat.json"

/* Result of feeding a whole wire through a decoder. */
typedef struct {
  uint8_t *plain;   /* concatenated plaintext */
  size_t plain_len;
  size_t packets;
  int status;       /* 2 goodbye, error code, or the eof() value */
  size_t max_stash; /* bookkeeping for the pause test */
  int idle_buffers; /* buffers held after a call that returned 0 at a packet
                       boundary (should stay 0) */
} decoded_t;

enum { CHUNK_WHOLE, CHUNK_BYTES, CHUNK_RANDOM, CHUNK_PAUSE };

static void append(decoded_t *d, const uint8_t *p, size_t n) {
  d->plain = realloc(d->plain, d->plain_len + n + 1);
  memcpy(d->plain + d->plain_len, p, n);
  d->plain_len += n;
  d->packets++;
}

/* Feeds wire to a fresh decoder in the given chunking. Each chunk is a
 * separate exact-size heap copy so ASan sees any overread. */
static decoded_t decode(const uint8_t key[32], const uint8_t nonce[24],
                        const uint8_t *wire, size_t len, int mode) {
  decoded_t d = {0};
  ms_unbox_t u;
  size_t off = 0;
  int r = 0;

  ms_unbox_init(&u, key, nonce);
  d.plain = malloc(1);
  while (off < len) {
    size_t n = len - off;
    uint8_t *chunk, *p;
    if (mode == CHUNK_BYTES) n = 1;
    if (mode == CHUNK_RANDOM) {
      size_t m = 1 + randombytes_uniform(5000);
      if (m < n) n = m;
    }
    chunk = malloc(n);
    memcpy(chunk, wire + off, n);
    off += n;
    p = chunk;
    for (;;) {
      size_t c = 0, outlen = 0;
      uint8_t *out = NULL;
      r = ms_unbox_next(&u, p, n, &c, &out, &outlen);
      p += c;
      n -= c;
      if (r == 1) {
        append(&d, out, outlen);
        if (mode == CHUNK_PAUSE) {
          /* Reader pauses after every packet: keep the rest, resume from
           * the stash with no new input. */
          int s = ms_unbox_stash(&u, p, n);
          CHECK_INT(s, 0);
          if (ms_unbox_stashed(&u) > d.max_stash)
            d.max_stash = ms_unbox_stashed(&u);
          n = 0;
          free(chunk);
          chunk = NULL;
          p = NULL;
        }
        continue;
      }
      if (r == 0) {
        if (u.part_len == 0 && !u.in_body && (u.part || u.stash))
          d.idle_buffers++;
      }
      break;
    }
    free(chunk);
    if (r != 0) break;
  }
  if (r == 0) {
    /* Drain anything stashed (pause mode). */
    for (;;) {
      size_t c, outlen;
      uint8_t *out;
      r = ms_unbox_next(&u, NULL, 0, &c, &out, &outlen);
      if (r != 1) break;
      append(&d, out, outlen);
    }
  }
  d.status = r == 0 ? ms_unbox_eof(&u) : r;
  if (r == 2) {
    CHECK_INT(ms_unbox_eof(&u), 0);
    CHECK(u.part == NULL && u.stash == NULL);
  }
  ms_unbox_free(&u);
  return d;
}

static void check_decode_all_modes(const uint8_t key[32],
                                   const uint8_t nonce[24],
                                   const uint8_t *wire, size_t len,
                                   const uint8_t *plain, size_t plain_len,
                                   size_t packets, int status) {
  for (int mode = CHUNK_WHOLE; mode <= CHUNK_PAUSE; mode++) {
    decoded_t d = decode(key, nonce, wire, len, mode);
    CHECK_INT(d.status, status);
    CHECK_INT(d.plain_len, plain_len);
    CHECK_INT(d.packets, packets);
    if (d.plain_len == plain_len) CHECK_MEM(d.plain, plain, plain_len);
    CHECK_INT(d.idle_buffers, 0);
    free(d.plain);
  }
}

/* ---------------------------------------------------------------- */

static void test_nonce_increment(const mj_t *bsc) {
  uint8_t n[24], want[24];
  memset(n, 0xff, sizeof(n));
  ms__box_nonce_increment(n);
  memset(want, 0, sizeof(want));
  CHECK_MEM(n, want, 24); /* wraps mod 2^192 */

  memset(n, 0, sizeof(n));
  n[23] = 0xff;
  n[22] = 0x01;
  ms__box_nonce_increment(n);
  CHECK_INT(n[23], 0);
  CHECK_INT(n[22], 2); /* big-endian carry */

  /* box-stream-c's wrap start: ff..fd00 counted up to the wrap. */
  CHECK_INT(mj_hex(bsc, "nonce_wrap_start", n, 24), 24);
  for (int i = 0; i < 0x300; i++) ms__box_nonce_increment(n);
  CHECK_MEM(n, want, 24);
}

/* ref_handshake.json: both directions, packets, goodbye, whole wire. */
static void test_ref_streams(const mj_t *ref) {
  for (int dir = 0; dir < 2; dir++) {
    char path[128];
    uint8_t key[32], nonce[24];
    ms_box_t box;
    const mj_t *bs;
    uint8_t *wire, *mine, *all_plain;
    size_t wire_len, mine_len = 0, all_len = 0, pkt = 0, npackets;

    snprintf(path, sizeof(path), "vectors.0.box_stream.%d", dir);
    bs = mj_get(ref, path);
    CHECK(bs != NULL);
    if (!bs) return;
    CHECK_INT(mj_hex(bs, "key", key, 32), 32);
    CHECK_INT(mj_hex(bs, "initial_nonce", nonce, 24), 24);
    wire = mj_hex_alloc(bs, "wire", &wire_len);
    CHECK(wire != NULL);
    if (!wire) return;
    mine = malloc(wire_len + 8192);
    all_plain = malloc(wire_len);
    npackets = mj_count(mj_get(bs, "packets"));
    ms_box_init(&box, key, nonce);

    for (size_t w = 0; w < mj_count(mj_get(bs, "writes")); w++) {
      size_t plen;
      uint8_t *plain;
      size_t sz, got, off = 0;
      snprintf(path, sizeof(path), "writes.%zu", w);
      plain = mj_hex_alloc(bs, path, &plen);
      CHECK(plain != NULL);
      if (!plain) break;
      sz = ms_box_sealed_size(plen);
      got = ms_box_seal(&box, mine + mine_len, plain, plen);
      CHECK_INT(got, sz);
      /* Compare the packets this write produced, one by one. */
      while (off < got && pkt < npackets) {
        uint8_t hdr[34], body[4096], hn[24], bn[24];
        long bl;
        snprintf(path, sizeof(path), "packets.%zu.boxed_header", pkt);
        CHECK_INT(mj_hex(bs, path, hdr, 34), 34);
        snprintf(path, sizeof(path), "packets.%zu.boxed_body", pkt);
        bl = mj_hex(bs, path, body, sizeof(body));
        CHECK(bl > 0);
        CHECK_MEM(mine + mine_len + off, hdr, 34);
        if (bl > 0) CHECK_MEM(mine + mine_len + off + 34, body, (size_t)bl);
        /* header nonce N, body nonce N+1 */
        snprintf(path, sizeof(path), "packets.%zu.header_nonce", pkt);
        CHECK_INT(mj_hex(bs, path, hn, 24), 24);
        snprintf(path, sizeof(path), "packets.%zu.body_nonce", pkt);
        CHECK_INT(mj_hex(bs, path, bn, 24), 24);
        ms__box_nonce_increment(hn);
        CHECK_MEM(hn, bn, 24);
        off += 34 + (size_t)(bl > 0 ? bl : 0);
        pkt++;
      }
      CHECK_INT(off, got);
      memcpy(all_plain + all_len, plain, plen);
      all_len += plen;
      mine_len += got;
      free(plain);
    }
    CHECK_INT(pkt, npackets);
    {
      uint8_t gb[34], gbn[24];
      CHECK_INT(mj_hex(bs, "goodbye.nonce", gbn, 24), 24);
      CHECK_MEM(box.nonce, gbn, 24);
      ms_box_goodbye(&box, mine + mine_len);
      CHECK_INT(mj_hex(bs, "goodbye.boxed", gb, 34), 34);
      CHECK_MEM(mine + mine_len, gb, 34);
      mine_len += 34;
    }
    CHECK_INT(mine_len, wire_len);
    CHECK_MEM(mine, wire, wire_len);
    check_decode_all_modes(key, nonce, wire, wire_len, all_plain, all_len,
                           npackets, 2);
    ms_box_wipe(&box);
    free(wire);
    free(mine);
    free(all_plain);
  }
}

/* box-stream-c KAT (continues the shs1-crypto-js chain). */
static void test_box_stream_c(const mj_t *bsc, const mj_t *jskat) {
  uint8_t key[32], nonce[24], out[34 + 8], want[34 + 8], plain[16];
  uint8_t wire[2 * 42 + 34], k2[32], n2[24];
  size_t wl = 0;
  ms_box_t box;

  CHECK_INT(mj_hex(bsc, "key", key, 32), 32);
  CHECK_INT(mj_hex(bsc, "initial_nonce", nonce, 24), 24);
  /* The chain: these are the client's encryption key/nonce of the KAT. */
  CHECK_INT(mj_hex(jskat, "client_outcome.encryption_key", k2, 32), 32);
  CHECK_INT(mj_hex(jskat, "client_outcome.encryption_nonce", n2, 24), 24);
  CHECK_MEM(key, k2, 32);
  CHECK_MEM(nonce, n2, 24);
  ms_box_init(&box, key, nonce);
  for (int i = 0; i < 2; i++) {
    char path[64];
    snprintf(path, sizeof(path), "packets.%d.plaintext", i);
    CHECK_INT(mj_hex(bsc, path, plain, sizeof(plain)), 8);
    CHECK_INT(ms_box_seal(&box, out, plain, 8), 42);
    snprintf(path, sizeof(path), "packets.%d.boxed_header", i);
    CHECK_INT(mj_hex(bsc, path, want, 34), 34);
    snprintf(path, sizeof(path), "packets.%d.boxed_body", i);
    CHECK_INT(mj_hex(bsc, path, want + 34, 8), 8);
    CHECK_MEM(out, want, 42);
    memcpy(wire + wl, out, 42);
    wl += 42;
  }
  ms_box_goodbye(&box, out);
  CHECK_INT(mj_hex(bsc, "goodbye", want, 34), 34);
  CHECK_MEM(out, want, 34);
  memcpy(wire + wl, out, 34);
  wl += 34;
  {
    uint8_t exp[16];
    CHECK_INT(mj_hex(bsc, "packets.0.plaintext", exp, 8), 8);
    CHECK_INT(mj_hex(bsc, "packets.1.plaintext", exp + 8, 8), 8);
    check_decode_all_modes(key, nonce, wire, wl, exp, 16, 2, 2);
  }
}

/* PySecretHandshake: "foo", "foo", "bar", goodbye. */
static void test_pysecrethandshake(const mj_t *pys) {
  static const char *const names[] = {"boxstream.MESSAGE_1",
                                      "boxstream.MESSAGE_2",
                                      "boxstream.MESSAGE_3"};
  uint8_t key[32], nonce[24], out[64], want[64], wire[3 * 37 + 34];
  uint8_t plain_all[9];
  size_t wl = 0;
  ms_box_t box;

  CHECK_INT(mj_hex(pys, "crypto.CLIENT_ENCRYPT_KEY", key, 32), 32);
  CHECK_INT(mj_hex(pys, "crypto.CLIENT_ENCRYPT_NONCE", nonce, 24), 24);
  ms_box_init(&box, key, nonce);
  for (int i = 0; i < 3; i++) {
    char path[64];
    uint8_t plain[8];
    snprintf(path, sizeof(path), "boxstream_plaintexts.%d", i);
    CHECK_INT(mj_hex(pys, path, plain, sizeof(plain)), 3);
    memcpy(plain_all + 3 * i, plain, 3);
    CHECK_INT(ms_box_seal(&box, out, plain, 3), 37);
    CHECK_INT(mj_hex(pys, names[i], want, sizeof(want)), 37);
    CHECK_MEM(out, want, 37);
    memcpy(wire + wl, out, 37);
    wl += 37;
  }
  ms_box_goodbye(&box, out);
  CHECK_INT(mj_hex(pys, "boxstream.MESSAGE_CLOSED", want, 34), 34);
  CHECK_MEM(out, want, 34);
  memcpy(wire + wl, out, 34);
  wl += 34;
  check_decode_all_modes(key, nonce, wire, wl, plain_all, 9, 3, 2);
}

/* negative[11]: nonce carry/wrap positive vector. */
static void test_wrap_vector(const mj_t *ref) {
  const mj_t *v = mj_get(ref, "negative.11");
  uint8_t key[32], nonce[24], next[24], plain[8], out[80], want[80];
  ms_box_t box;
  long pl;
  CHECK(v != NULL);
  if (!v) return;
  CHECK_INT(mj_hex(v, "key", key, 32), 32);
  CHECK_INT(mj_hex(v, "initial_nonce", nonce, 24), 24);
  CHECK_INT(mj_hex(v, "next_nonce", next, 24), 24);
  pl = mj_hex(v, "packet.plaintext", plain, sizeof(plain));
  CHECK_INT(pl, 4);
  ms_box_init(&box, key, nonce);
  CHECK_INT(ms_box_seal(&box, out, plain, 4), 38);
  CHECK_INT(mj_hex(v, "packet.boxed_header", want, 34), 34);
  CHECK_INT(mj_hex(v, "packet.boxed_body", want + 34, 4), 4);
  CHECK_MEM(out, want, 38);
  CHECK_MEM(box.nonce, next, 24);
  ms_box_goodbye(&box, out + 38);
  CHECK_INT(mj_hex(v, "goodbye", want + 38, 34), 34);
  CHECK_MEM(out + 38, want + 38, 34);
  check_decode_all_modes(key, nonce, out, 72, plain, 4, 1, 2);
}

/* negative[6..10]: tampering, reorder, truncation, oversize. */
static void test_negative(const mj_t *ref) {
  static const struct {
    int index;
    int status;
    size_t delivered; /* packets delivered before the error */
  } cases[] = {
      {6, MS_EBOXHEADER, 0},
      {7, MS_EBOXBODY, 0},
      {8, MS_EBOXHEADER, 0},
      {9, MS_EHANGUP, 2},
      {10, MS_EBOXHEADER, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char path[64];
    const mj_t *v;
    uint8_t key[32], nonce[24], *wire;
    size_t wl;
    snprintf(path, sizeof(path), "negative.%d", cases[i].index);
    v = mj_get(ref, path);
    CHECK(v != NULL);
    if (!v) continue;
    CHECK_INT(mj_hex(v, "key", key, 32), 32);
    CHECK_INT(mj_hex(v, "nonce", nonce, 24), 24);
    wire = mj_hex_alloc(v, "wire", &wl);
    CHECK(wire != NULL);
    if (!wire) continue;
    for (int mode = CHUNK_WHOLE; mode <= CHUNK_PAUSE; mode++) {
      decoded_t d = decode(key, nonce, wire, wl, mode);
      CHECK_INT(d.status, cases[i].status);
      CHECK_INT(d.packets, cases[i].delivered);
      if (cases[i].index == 9 && d.plain_len == 11)
        CHECK_MEM(d.plain, "firstsecond", 11);
      free(d.plain);
    }
    free(wire);
  }
}

/* Errors are final; goodbye then data is an error; truncation anywhere
 * is a hang-up, never a clean end. */
static void test_finality_and_truncation(void) {
  uint8_t key[32], nonce[24], plain[5000], wire[6000], buf[6000];
  size_t wl;
  ms_box_t box;
  ms_unbox_t u;
  size_t c, ol;
  uint8_t *o;
  int r;

  randombytes_buf(key, sizeof(key));
  randombytes_buf(nonce, sizeof(nonce));
  randombytes_buf(plain, sizeof(plain));
  ms_box_init(&box, key, nonce);
  wl = ms_box_seal(&box, wire, plain, sizeof(plain));
  ms_box_goodbye(&box, wire + wl);
  wl += 34;

  /* Every truncation point before the goodbye is complete → MS_EHANGUP. */
  for (size_t cut = 0; cut < wl; cut += (cut < 80 ? 1 : 97)) {
    decoded_t d = decode(key, nonce, wire, cut, CHUNK_WHOLE);
    CHECK_INT(d.status, MS_EHANGUP);
    free(d.plain);
  }
  {
    decoded_t d = decode(key, nonce, wire, wl, CHUNK_WHOLE);
    CHECK_INT(d.status, 2);
    free(d.plain);
  }

  /* Goodbye followed by more bytes. */
  memcpy(buf, wire, wl);
  buf[wl] = 0;
  ms_unbox_init(&u, key, nonce);
  r = ms_unbox_next(&u, buf, wl + 1, &c, &o, &ol);
  CHECK_INT(r, 1);
  r = ms_unbox_next(&u, buf + c, wl + 1 - c, &c, &o, &ol);
  CHECK_INT(r, 1);
  r = ms_unbox_next(&u, buf + wl - 34, 35, &c, &o, &ol);
  CHECK_INT(r, 2);
  CHECK_INT(c, 34);
  CHECK_INT(ms_unbox_next(&u, NULL, 0, &c, &o, &ol), 2);
  CHECK_INT(ms_unbox_eof(&u), 0);
  CHECK_INT(ms_unbox_next(&u, buf + wl, 1, &c, &o, &ol), MS_EBOXHEADER);
  CHECK_INT(ms_unbox_next(&u, NULL, 0, &c, &o, &ol), MS_EBOXHEADER);
  ms_unbox_free(&u);

  /* A failure stays: even valid input afterwards is refused. */
  memcpy(buf, wire, wl);
  buf[3] ^= 1;
  ms_unbox_init(&u, key, nonce);
  CHECK_INT(ms_unbox_next(&u, buf, wl, &c, &o, &ol), MS_EBOXHEADER);
  CHECK(o == NULL);
  memcpy(buf, wire, wl);
  CHECK_INT(ms_unbox_next(&u, buf, wl, &c, &o, &ol), MS_EBOXHEADER);
  CHECK_INT(ms_unbox_eof(&u), MS_EBOXHEADER);
  ms_unbox_free(&u);

  /* Wrong nonce (replay under a later nonce) fails at the header. */
  memcpy(buf, wire, wl);
  {
    uint8_t n2[24];
    memcpy(n2, nonce, 24);
    ms__box_nonce_increment(n2);
    ms__box_nonce_increment(n2);
    ms_unbox_init(&u, key, n2);
    CHECK_INT(ms_unbox_next(&u, buf, wl, &c, &o, &ol), MS_EBOXHEADER);
    ms_unbox_free(&u);
  }
  ms_box_wipe(&box);
}

/* Authentic L = 0 packet: accepted as empty, not the goodbye. Oversize
 * authentic header: rejected. */
static void test_empty_and_oversize(void) {
  uint8_t key[32], nonce[24], n1[24], hp[18], wire[34 + 34 + 3 + 34];
  uint8_t body[4097];
  ms_box_t box;
  ms_unbox_t u;
  size_t c, ol, wl = 0;
  uint8_t *o;

  randombytes_buf(key, 32);
  randombytes_buf(nonce, 24);
  memcpy(n1, nonce, 24);
  ms__box_nonce_increment(n1);
  /* MAC of the empty body under N+1, header under N. */
  CHECK_INT(crypto_secretbox_detached(body, hp + 2, body, 0, n1, key), 0);
  hp[0] = hp[1] = 0;
  CHECK(!sodium_is_zero(hp, 18));
  CHECK_INT(crypto_secretbox_easy(wire, hp, 18, nonce, key), 0);
  wl = 34;
  ms__box_nonce_increment(n1); /* N+2 */
  ms_box_init(&box, key, n1);
  CHECK_INT(ms_box_seal(&box, wire + wl, (const uint8_t *)"abc", 3), 37);
  wl += 37;
  ms_box_goodbye(&box, wire + wl);
  wl += 34;
  CHECK_INT(ms_box_seal(&box, body, body, 0), 0); /* empty write: nothing */
  CHECK_INT(ms_box_sealed_size(0), 0);
  CHECK_INT(ms_box_sealed_size(1), 35);
  CHECK_INT(ms_box_sealed_size(4096), 4130);
  CHECK_INT(ms_box_sealed_size(4097), 4097 + 68);

  ms_unbox_init(&u, key, nonce);
  CHECK_INT(ms_unbox_next(&u, wire, wl, &c, &o, &ol), 1);
  CHECK_INT(ol, 0);
  CHECK(o != NULL);
  CHECK_INT(c, 34);
  CHECK_INT(ms_unbox_next(&u, wire + 34, wl - 34, &c, &o, &ol), 1);
  CHECK_INT(ol, 3);
  CHECK_MEM(o, "abc", 3);
  CHECK_INT(ms_unbox_next(&u, wire + 71, wl - 71, &c, &o, &ol), 2);
  ms_unbox_free(&u);

  /* Authentic header claiming 4097 bytes. */
  memcpy(n1, nonce, 24);
  ms__box_nonce_increment(n1);
  randombytes_buf(body, sizeof(body));
  CHECK_INT(crypto_secretbox_detached(body, hp + 2, body, 4097, n1, key), 0);
  hp[0] = 0x10;
  hp[1] = 0x01;
  CHECK_INT(crypto_secretbox_easy(wire, hp, 18, nonce, key), 0);
  ms_unbox_init(&u, key, nonce);
  CHECK_INT(ms_unbox_next(&u, wire, 34, &c, &o, &ol), MS_EBOXHEADER);
  ms_unbox_free(&u);
}

/* Random sizes 1..20000, sealed in one pass, decoded in random chunks. */
static void test_roundtrip(void) {
  uint8_t key[32], nonce[24];
  randombytes_buf(key, 32);
  for (int iter = 0; iter < 300; iter++) {
    size_t n = 1 + randombytes_uniform(20000);
    size_t sz = ms_box_sealed_size(n);
    uint8_t *plain = malloc(n), *wire = malloc(sz + 34);
    ms_box_t box;
    size_t wl;
    int mode = iter % 4;
    decoded_t d;
    randombytes_buf(plain, n);
    randombytes_buf(nonce, 24);
    if (iter % 7 == 0) memset(nonce, 0xff, 24); /* wrap inside the write */
    ms_box_init(&box, key, nonce);
    wl = ms_box_seal(&box, wire, plain, n);
    if (wl != sz) CHECK_INT(wl, sz);
    ms_box_goodbye(&box, wire + wl);
    d = decode(key, nonce, wire, wl + 34, mode);
    if (d.status != 2 || d.plain_len != n || memcmp(d.plain, plain, n) != 0 ||
        d.packets != (n + 4095) / 4096 || d.idle_buffers != 0) {
      CHECK(!"roundtrip");
      fprintf(stderr, "  size %zu mode %d status %d len %zu\n", n, mode,
              d.status, d.plain_len);
    } else {
      CHECK(1);
    }
    free(d.plain);
    free(plain);
    free(wire);
  }
}

/* Whole packets in each input: no buffer is ever allocated. */
static void test_no_alloc_steady_state(void) {
  uint8_t key[32], nonce[24], plain[300], wire[400];
  ms_box_t enc;
  ms_unbox_t u;
  int allocated = 0;
  randombytes_buf(key, 32);
  randombytes_buf(nonce, 24);
  ms_box_init(&enc, key, nonce);
  ms_unbox_init(&u, key, nonce);
  for (int i = 0; i < 100; i++) {
    size_t n = 1 + randombytes_uniform(sizeof(plain)), wl, c, ol;
    uint8_t *o;
    randombytes_buf(plain, n);
    wl = ms_box_seal(&enc, wire, plain, n);
    CHECK_INT(ms_unbox_next(&u, wire, wl, &c, &o, &ol), 1);
    CHECK_INT(c, wl);
    CHECK(o == wire + 34); /* opened in place */
    CHECK_INT(ol, n);
    CHECK_MEM(o, plain, n);
    if (u.part || u.stash) allocated++;
    CHECK_INT(ms_unbox_next(&u, wire + wl, 0, &c, &o, &ol), 0);
  }
  CHECK_INT(allocated, 0);
  /* A partial header allocates; once drained, the buffer is released. */
  {
    size_t wl = ms_box_seal(&enc, wire, plain, 10), c, ol;
    uint8_t *o;
    CHECK_INT(ms_unbox_next(&u, wire, 5, &c, &o, &ol), 0);
    CHECK(u.part != NULL);
    CHECK_INT(ms_unbox_next(&u, wire + 5, wl - 5, &c, &o, &ol), 1);
    CHECK_INT(ol, 10);
    CHECK_INT(ms_unbox_next(&u, NULL, 0, &c, &o, &ol), 0);
    CHECK(u.part == NULL && u.stash == NULL);
  }
  CHECK_INT(ms_unbox_eof(&u), MS_EHANGUP);
  ms_unbox_free(&u);
  ms_box_wipe(&enc);
}

int main(void) {
  mj_t *ref, *bsc, *pys, *js;
  if (sodium_init() < 0) return 1;
  ref = mj_load(REF);
  bsc = mj_load(BSC);
  pys = mj_load(PYS);
  js = mj_load("Tests/vectors/shs1-crypto-js_kat.json");
  CHECK(ref && bsc && pys && js);
  if (ref && bsc && pys && js) {
    test_nonce_increment(bsc);
    test_ref_streams(ref);
    test_box_stream_c(bsc, js);
    test_pysecrethandshake(pys);
    test_wrap_vector(ref);
    test_negative(ref);
  }
  test_finality_and_truncation();
  test_empty_and_oversize();
  test_roundtrip();
  test_no_alloc_steady_state();
  mj_free(ref);
  mj_free(bsc);
  mj_free(pys);
  mj_free(js);
  return mst_done("boxstream");
}
