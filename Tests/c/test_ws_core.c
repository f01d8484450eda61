/* The IO-free WebSocket cores: SHA-1 (FIPS 180-4 / RFC 3174 vectors), the
 * HTTP/1.1 upgrade parser and helpers, the frame encoder/decoder (RFC 6455
 * §5.7 examples, every protocol error, every split point) and the UTF-8
 * validator. */
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "mstest.h"
#include "sha1.h"
#include "wsframe.h"

static uint32_t rng = 12345;
static uint32_t rnd(void) {
  rng = rng * 1103515245u + 12345u;
  return rng >> 8;
}


/* ------------------------------------------------------------------ */
/* SHA-1                                                               */
/* ------------------------------------------------------------------ */

static void hexof(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}

static void check_sha1(const char *msg, size_t len, const char *hex) {
  uint8_t d[20];
  char h[41];
  ms_sha1_t s;

  ms_sha1(d, msg, len);
  hexof(d, 20, h);
  CHECK_STR(h, hex);
  /* every two-piece split gives the same digest */
  for (size_t cut = 0; cut <= len; cut++) {
    ms_sha1_init(&s);
    ms_sha1_update(&s, msg, cut);
    ms_sha1_update(&s, msg + cut, len - cut);
    ms_sha1_final(&s, d);
    hexof(d, 20, h);
    if (strcmp(h, hex) != 0) {
      CHECK_STR(h, hex);
      return;
    }
  }
  CHECK(1);
}

static void test_sha1(void) {
  static const char m448[] =
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  static const char m896[] =
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
      "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
  uint8_t d[20], chunk[1000];
  char h[41];
  ms_sha1_t s;
  size_t left = 1000000;

  check_sha1("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  check_sha1("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
  check_sha1(m448, strlen(m448), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  check_sha1(m896, strlen(m896), "a49b2446a02c645bf419f995b67091253a04a259");
  check_sha1("The quick brown fox jumps over the lazy dog", 43,
             "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12");
  /* one million 'a', in uneven pieces */
  memset(chunk, 'a', sizeof(chunk));
  ms_sha1_init(&s);
  while (left > 0) {
    size_t n = 1 + rnd() % sizeof(chunk);
    if (n > left) n = left;
    ms_sha1_update(&s, chunk, n);
    left -= n;
  }
  ms_sha1_final(&s, d);
  hexof(d, 20, h);
  CHECK_STR(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  /* RFC 3174 test 4: "01234567" x 80 */
  {
    char m[641];
    for (int i = 0; i < 80; i++) memcpy(m + 8 * i, "01234567", 8);
    ms_sha1(d, m, 640);
    hexof(d, 20, h);
    CHECK_STR(h, "dea356a2cddd90c7a7ecedc5ebb563934f460452");
  }
  /* lengths around the padding boundary (55, 56, 63, 64, 65) agree with
   * piecewise hashing byte by byte */
  for (size_t n = 50; n <= 130; n++) {
    uint8_t a[20], b[20], buf[130];
    memset(buf, 0x5a, n);
    ms_sha1(a, buf, n);
    ms_sha1_init(&s);
    for (size_t i = 0; i < n; i++) ms_sha1_update(&s, buf + i, 1);
    ms_sha1_final(&s, b);
    CHECK_MEM(a, b, 20);
  }
}


/* ------------------------------------------------------------------ */
/* UTF-8                                                               */
/* ------------------------------------------------------------------ */

typedef struct {
  const char *hex;
  int valid;    /* 1 whole and complete; 0 invalid; 2 valid prefix only */
} utf8_case_t;

static const utf8_case_t utf8_cases[] = {
    {"7f", 1},             /* U+007F */
    {"c280", 1},           /* U+0080 */
    {"dfbf", 1},           /* U+07FF */
    {"e0a080", 1},         /* U+0800 */
    {"ed9fbf", 1},         /* U+D7FF */
    {"ee8080", 1},         /* U+E000 */
    {"efbfbf", 1},         /* U+FFFF */
    {"f0908080", 1},       /* U+10000 */
    {"f48fbfbf", 1},       /* U+10FFFF */
    {"cebae1bdb9cf83cebcceb5", 1}, /* "κόσμε" */
    {"48656c6c6f2d3132333435363738393031323334", 1},
    {"f4908080", 0},       /* > U+10FFFF */
    {"f5808080", 0},
    {"c080", 0},           /* overlong NUL */
    {"c1bf", 0},           /* overlong */
    {"e08080", 0},         /* overlong */
    {"e09fbf", 0},         /* overlong U+07FF */
    {"f0808080", 0},       /* overlong */
    {"f08fbfbf", 0},       /* overlong U+FFFF */
    {"eda080", 0},         /* surrogate U+D800 */
    {"edbfbf", 0},         /* surrogate U+DFFF */
    {"eda080edb080", 0},   /* surrogate pair in CESU form */
    {"80", 0},             /* lone continuation */
    {"bf", 0},
    {"fe", 0},
    {"ff", 0},
    {"c241", 0},           /* lead without continuation */
    {"e28241", 0},
    {"41424344c3", 2},     /* truncated 2-byte at end */
    {"e282", 2},           /* truncated 3-byte */
    {"f09080", 2},         /* truncated 4-byte */
    {"f4", 2},
    {"", 1},
};

static void test_utf8(void) {
  for (size_t c = 0; c < sizeof(utf8_cases) / sizeof(utf8_cases[0]); c++) {
    uint8_t b[64];
    long n = mst_unhex(utf8_cases[c].hex, b, sizeof(b));
    int want = utf8_cases[c].valid;
    ms_ws_utf8_t v;
    CHECK(n >= 0);
    CHECK_INT(ms_ws_utf8_valid(b, (size_t)n), want == 1);
    /* every two-piece split, and byte at a time, agree */
    for (long cut = 0; cut <= n; cut++) {
      int r1, r2;
      ms_ws_utf8_init(&v);
      r1 = ms_ws_utf8_update(&v, b, (size_t)cut);
      r2 = ms_ws_utf8_update(&v, b + cut, (size_t)(n - cut));
      CHECK_INT(r1 == 0 && r2 == 0, want != 0);
      CHECK_INT(ms_ws_utf8_complete(&v), want == 1);
    }
    ms_ws_utf8_init(&v);
    {
      int bad = 0;
      for (long i = 0; i < n; i++) bad |= ms_ws_utf8_update(&v, b + i, 1) < 0;
      CHECK_INT(!bad, want != 0);
    }
  }
  /* sticky failure; long ASCII with an error late (fast path) */
  {
    ms_ws_utf8_t v;
    uint8_t big[100];
    memset(big, 'x', sizeof(big));
    ms_ws_utf8_init(&v);
    CHECK_INT(ms_ws_utf8_update(&v, (const uint8_t *)"\xc0", 1), MS_EFRAME);
    CHECK_INT(ms_ws_utf8_update(&v, (const uint8_t *)"a", 1), MS_EFRAME);
    CHECK(!ms_ws_utf8_complete(&v));
    CHECK(ms_ws_utf8_valid(big, sizeof(big)));
    big[97] = 0x80;
    CHECK(!ms_ws_utf8_valid(big, sizeof(big)));
    big[97] = 0xc3;
    big[98] = 0xa9;
    CHECK(ms_ws_utf8_valid(big, sizeof(big)));
  }
}


/* ------------------------------------------------------------------ */
/* Frame encoder                                                       */
/* ------------------------------------------------------------------ */

static const uint8_t rfc_key[4] = {0x37, 0xfa, 0x21, 0x3d};

static void check_hex(const uint8_t *p, size_t n, const char *hex) {
  char h[512];
  if (n > 250) n = 250;
  hexof(p, n, h);
  CHECK_STR(h, hex);
}

static void test_encoder(void) {
  uint8_t out[300], hdr[MS_WS_MAX_HEADER];
  int n;

  /* §5.7: single-frame unmasked text */
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_TEXT, 5, NULL);
  CHECK_INT(n, 2);
  memcpy(out, hdr, 2);
  memcpy(out + 2, "Hello", 5);
  check_hex(out, 7, "810548656c6c6f");
  /* §5.7: single-frame masked text */
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_TEXT, 5, rfc_key);
  CHECK_INT(n, 6);
  memcpy(out, hdr, 6);
  memcpy(out + 6, "Hello", 5);
  CHECK_INT(ms_ws_mask(out + 6, 5, rfc_key, 0), 5);
  check_hex(out, 11, "818537fa213d7f9f4d5158");
  /* masked in pieces with a running offset */
  memcpy(out + 6, "Hello", 5);
  {
    uint64_t off = ms_ws_mask(out + 6, 1, rfc_key, 0);
    off = ms_ws_mask(out + 7, 3, rfc_key, off);
    off = ms_ws_mask(out + 10, 1, rfc_key, off);
    CHECK_INT(off, 5);
  }
  check_hex(out, 11, "818537fa213d7f9f4d5158");
  /* fragmented unmasked text "Hel" + "lo" */
  n = ms_ws_frame_header(hdr, false, MS_WS_OP_TEXT, 3, NULL);
  check_hex(hdr, (size_t)n, "0103");
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_CONT, 2, NULL);
  check_hex(hdr, (size_t)n, "8002");
  /* unmasked ping, masked pong */
  n = ms_ws_control_frame(out, sizeof(out), MS_WS_OP_PING,
                          (const uint8_t *)"Hello", 5, NULL);
  CHECK_INT(n, 7);
  check_hex(out, 7, "890548656c6c6f");
  n = ms_ws_pong_frame(out, sizeof(out), (const uint8_t *)"Hello", 5,
                       rfc_key);
  CHECK_INT(n, 11);
  check_hex(out, 11, "8a8537fa213d7f9f4d5158");
  /* 256-byte and 64 KiB binary headers */
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_BINARY, 256, NULL);
  check_hex(hdr, (size_t)n, "827e0100");
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_BINARY, 65536, NULL);
  check_hex(hdr, (size_t)n, "827f0000000000010000");
  /* length form boundaries */
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_BINARY, 125, NULL);
  check_hex(hdr, (size_t)n, "827d");
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_BINARY, 126, NULL);
  check_hex(hdr, (size_t)n, "827e007e");
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_BINARY, 65535, NULL);
  check_hex(hdr, (size_t)n, "827effff");
  n = ms_ws_frame_header(hdr, false, MS_WS_OP_BINARY, 65536, rfc_key);
  check_hex(hdr, (size_t)n, "02ff000000000001000037fa213d");
  CHECK_INT(n, MS_WS_MAX_HEADER);
  n = ms_ws_frame_header(hdr, true, MS_WS_OP_BINARY, UINT64_C(0x7fffffffffffffff), NULL);
  check_hex(hdr, (size_t)n, "827f7fffffffffffffff");
  /* encoder refusals */
  CHECK_INT(ms_ws_frame_header(hdr, true, 3, 0, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_frame_header(hdr, true, 0xb, 0, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_frame_header(hdr, false, MS_WS_OP_PING, 0, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_frame_header(hdr, true, MS_WS_OP_PING, 126, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_frame_header(hdr, true, MS_WS_OP_BINARY, UINT64_C(1) << 63, NULL),
            MS_EINVAL);
  CHECK_INT(ms_ws_control_frame(out, sizeof(out), MS_WS_OP_TEXT, NULL, 0, NULL),
            MS_EINVAL);
  CHECK_INT(ms_ws_control_frame(out, sizeof(out), MS_WS_OP_PING, out, 126, NULL),
            MS_EINVAL);
  CHECK_INT(ms_ws_control_frame(out, 6, MS_WS_OP_PING,
                                (const uint8_t *)"Hello", 5, NULL), MS_ELIMIT);
  CHECK_INT(ms_ws_control_frame(out, 2, MS_WS_OP_PONG, NULL, 0, NULL), 2);
  check_hex(out, 2, "8a00");
  /* close frames */
  n = ms_ws_close_frame(out, sizeof(out), 1000, "bye", 3, NULL);
  CHECK_INT(n, 7);
  check_hex(out, 7, "880503e8627965");
  n = ms_ws_close_frame(out, sizeof(out), MS_WS_CLOSE_NO_STATUS, NULL, 0, NULL);
  CHECK_INT(n, 2);
  check_hex(out, 2, "8800");
  n = ms_ws_close_frame(out, sizeof(out), 1001, NULL, 0, rfc_key);
  CHECK_INT(n, 8);
  CHECK_INT(out[1], 0x82);
  CHECK_INT(out[6] ^ rfc_key[0], 0x03);
  CHECK_INT(out[7] ^ rfc_key[1], 0xe9);
  CHECK_INT(ms_ws_close_frame(out, sizeof(out), 1005, "x", 1, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_close_frame(out, sizeof(out), 1006, NULL, 0, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_close_frame(out, sizeof(out), 999, NULL, 0, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_close_frame(out, sizeof(out), 1000, "\xc0\x80", 2, NULL),
            MS_EINVAL);
  {
    char reason[124];
    memset(reason, 'r', sizeof(reason));
    CHECK_INT(ms_ws_close_frame(out, sizeof(out), 1000, reason, 123, NULL),
              127);
    CHECK_INT(ms_ws_close_frame(out, sizeof(out), 1000, reason, 124, NULL),
              MS_ELIMIT);
    CHECK_INT(ms_ws_close_frame(out, 126, 1000, reason, 123, NULL), MS_ELIMIT);
    CHECK_INT(ms_ws_close_frame(out, sizeof(out), 4999, reason, 123, rfc_key),
              MS_WS_MAX_CONTROL_FRAME);
  }
  /* close code validity */
  {
    static const unsigned ok[] = {1000, 1001, 1002, 1003, 1007, 1008,
                                  1009, 1010, 1011, 3000, 3999, 4000, 4999};
    static const unsigned bad[] = {0, 1, 999, 1004, 1005, 1006, 1012, 1013,
                                   1014, 1015, 1016, 1100, 2000, 2999, 5000,
                                   65535};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
      CHECK(ms_ws_close_code_valid(ok[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
      CHECK(!ms_ws_close_code_valid(bad[i]));
  }
  /* masking is an involution at any offset and length */
  {
    uint8_t a[100], b[100];
    for (size_t i = 0; i < sizeof(a); i++) a[i] = (uint8_t)rnd();
    for (uint64_t off = 0; off < 8; off++) {
      for (size_t len = 0; len < 40; len += 3) {
        memcpy(b, a, sizeof(a));
        (void)ms_ws_mask(b + 5, len, rfc_key, off);
        for (size_t i = 0; i < len; i++) {
          if (b[5 + i] != (a[5 + i] ^ rfc_key[(off + i) & 3])) {
            CHECK(0);
            break;
          }
        }
        (void)ms_ws_mask(b + 5, len, rfc_key, off);
        CHECK_MEM(a, b, sizeof(a));
      }
    }
  }
}


/* ------------------------------------------------------------------ */
/* Frame decoder                                                       */
/* ------------------------------------------------------------------ */

/* What one decoding run produced. */
typedef struct {
  char trace[4096]; /* events in a compact form, see note_event */
  size_t trace_len;
  uint8_t data[70000]; /* concatenated data payloads */
  size_t data_len;
  int status;       /* 0, MS_ECLOSED-free final: the last r < 0, or 0 */
  uint16_t close_code; /* decoder's code on error */
  uint16_t got_close;  /* code of a received close, 0 if none */
  size_t messages;
  size_t msg_len;   /* bytes of the current message so far */
} run_t;

static void trace_add(run_t *r, const char *s) {
  size_t n = strlen(s);
  if (r->trace_len + n < sizeof(r->trace)) {
    memcpy(r->trace + r->trace_len, s, n + 1);
    r->trace_len += n;
  }
}

/* Messages are traced as "T:<text>|" (T text, B binary, with data
 * concatenated across frames and chunks), control frames as "P:<x>|",
 * "O:<x>|", "C<code>:<reason>|". */
static void note_event(run_t *r, const ms_ws_event_t *ev, int *in_msg) {
  char tmp[300];
  switch (ev->type) {
  case MS_WS_EV_DATA:
    if (!*in_msg) {
      trace_add(r, ev->msg_opcode == MS_WS_OP_TEXT ? "T:" : "B:");
      *in_msg = 1;
    }
    if (r->data_len + ev->len <= sizeof(r->data)) {
      memcpy(r->data + r->data_len, ev->data, ev->len);
      r->data_len += ev->len;
    }
    /* the first 64 bytes of each message go into the trace (NUL shown as
     * '.'), so the trace does not depend on how the input was cut */
    for (size_t i = 0; i < ev->len && r->msg_len + i < 64; i++) {
      char ch[2] = {ev->data[i] ? (char)ev->data[i] : '.', 0};
      trace_add(r, ch);
    }
    r->msg_len += ev->len;
    if (ev->fin) {
      if (r->msg_len > 64) trace_add(r, "~");
      r->msg_len = 0;
      trace_add(r, "|");
      *in_msg = 0;
      r->messages++;
    }
    break;
  case MS_WS_EV_PING:
  case MS_WS_EV_PONG:
    trace_add(r, ev->type == MS_WS_EV_PING ? "P:" : "O:");
    memcpy(tmp, ev->data, ev->len);
    tmp[ev->len] = 0;
    trace_add(r, tmp);
    trace_add(r, "|");
    break;
  case MS_WS_EV_CLOSE:
    snprintf(tmp, sizeof(tmp), "C%u:%.*s|", ev->close_code,
             (int)ev->reason_len, ev->reason);
    trace_add(r, tmp);
    r->got_close = ev->close_code;
    break;
  }
}

/* Decode wire with a decoder built from cfg, in pieces given by cuts
 * (ncuts ascending offsets; 0 = whole). Each piece is an exact-size heap
 * copy so ASan sees overreads and the in-place unmasking works. */
static void run_cuts(const ms_ws_decoder_config_t *cfg, const uint8_t *wire,
                     size_t len, const size_t *cuts, size_t ncuts,
                     run_t *out) {
  ms_ws_decoder_t d;
  size_t start = 0;
  int in_msg = 0, r = 0;

  memset(out, 0, sizeof(*out));
  CHECK_INT(ms_ws_decoder_init(&d, cfg), 0);
  for (size_t k = 0; k <= ncuts && r >= 0; k++) {
    size_t end = k < ncuts ? cuts[k] : len;
    size_t n = end - start, c;
    uint8_t *piece = malloc(n ? n : 1), *p = piece;
    ms_ws_event_t ev;
    memcpy(piece, wire + start, n);
    start = end;
    for (;;) {
      r = ms_ws_decode(&d, p, n, &c, &ev);
      if (c > n) {
        CHECK(0);
        break;
      }
      p += c;
      n -= c;
      if (r == 1) {
        note_event(out, &ev, &in_msg);
        if (ev.type == MS_WS_EV_CLOSE) break;
        continue;
      }
      break;
    }
    free(piece);
    if (r == 1) break; /* close */
    if (r < 0) break;
  }
  out->status = r < 0 ? r : 0;
  out->close_code = ms_ws_decoder_close_code(&d);
  if (r < 0) {
    size_t c = 99;
    ms_ws_event_t ev;
    /* final: the same error again, nothing consumed */
    CHECK_INT(ms_ws_decode(&d, (uint8_t *)"\x81", 1, &c, &ev), r);
    CHECK_INT(c, 0);
    CHECK(ms_ws_decoder_reason(&d) != NULL);
    CHECK_INT(ms_ws_decoder_eof(&d), r);
  } else if (out->got_close) {
    size_t c = 99;
    ms_ws_event_t ev;
    CHECK_INT(ms_ws_decode(&d, (uint8_t *)"\x81", 1, &c, &ev), MS_ECLOSED);
    CHECK_INT(c, 0);
    CHECK_INT(ms_ws_decoder_eof(&d), 0);
    CHECK_INT(ms_ws_decoder_close_code(&d), 0);
  } else {
    CHECK_INT(ms_ws_decoder_eof(&d), MS_EHANGUP);
  }
}

/* Runs that fail must fail the same way; the data delivered before the
 * failure may differ (each piece is checked as it arrives). */
static int same_run(const run_t *a, const run_t *b) {
  if (a->status < 0 || b->status < 0)
    return a->status == b->status && a->close_code == b->close_code;
  return a->status == b->status && a->close_code == b->close_code &&
         a->got_close == b->got_close && strcmp(a->trace, b->trace) == 0 &&
         a->data_len == b->data_len &&
         memcmp(a->data, b->data, a->data_len) == 0;
}

static run_t run_a, run_b; /* big: keep off the stack */

/* Whole, byte at a time, and every two-piece split must agree; the whole
 * run must match the expectation. */
static void check_wire(ms_ws_role_t role, uint64_t max_frame,
                       uint64_t max_msg, const char *hex, int want_status,
                       unsigned want_code, const char *want_trace) {
  static uint8_t wire[70000];
  static size_t cuts[70000];
  ms_ws_decoder_config_t cfg;
  long n = mst_unhex(hex, wire, sizeof(wire));
  int all_same = 1;

  CHECK(n >= 0);
  ms_ws_decoder_config_default(&cfg, role);
  if (max_frame) cfg.max_frame = max_frame;
  if (max_msg) cfg.max_message = max_msg;
  run_cuts(&cfg, wire, (size_t)n, NULL, 0, &run_a);
  CHECK_INT(run_a.status, want_status);
  if (want_status < 0) {
    CHECK_INT(run_a.close_code, want_code);
  } else {
    CHECK_INT(run_a.got_close, want_code);
  }
  if (want_trace) CHECK_STR(run_a.trace, want_trace);
  for (long i = 0; i < n; i++) cuts[i] = (size_t)i + 1;
  run_cuts(&cfg, wire, (size_t)n, cuts, n > 0 ? (size_t)n - 1 : 0, &run_b);
  CHECK(same_run(&run_a, &run_b));
  for (long cut = 1; cut < n; cut++) {
    size_t c[1] = {(size_t)cut};
    run_cuts(&cfg, wire, (size_t)n, c, 1, &run_b);
    if (!same_run(&run_a, &run_b)) {
      all_same = 0;
      fprintf(stderr, "split at %ld differs: %s vs %s\n", cut, run_b.trace,
              run_a.trace);
    }
  }
  CHECK(all_same);
}

#define SRV MS_WS_ROLE_SERVER
#define CLI MS_WS_ROLE_CLIENT

static void test_decoder_examples(void) {
  static char hex[2 * 300 + 64];
  /* §5.7 examples */
  check_wire(CLI, 0, 0, "810548656c6c6f", 0, 0, "T:Hello|");
  check_wire(SRV, 0, 0, "818537fa213d7f9f4d5158", 0, 0, "T:Hello|");
  check_wire(CLI, 0, 0, "010348656c80026c6f", 0, 0, "T:Hello|");
  check_wire(CLI, 0, 0, "890548656c6c6f", 0, 0, "P:Hello|");
  check_wire(SRV, 0, 0, "8a8537fa213d7f9f4d5158", 0, 0, "O:Hello|");
  check_wire(SRV, 0, 0, "898537fa213d7f9f4d5158", 0, 0, "P:Hello|");
  /* control frames between fragments, then more messages */
  check_wire(CLI, 0, 0, "010348656c890080026c6f8a0178820178", 0, 0,
             "T:HelP:|lo|O:x|B:x|");
  /* empty message, empty fragments, empty control frames */
  check_wire(CLI, 0, 0, "8100", 0, 0, "T:|");
  check_wire(CLI, 0, 0, "82008100", 0, 0, "B:|T:|");
  check_wire(CLI, 0, 0, "0100000080026869", 0, 0, "T:hi|");
  check_wire(CLI, 0, 0, "89008a00", 0, 0, "P:|O:|");
  /* three fragments, masked, with a ping in between */
  check_wire(SRV, 0, 0,
             "0281010203047e" "898001020304" "00810102030468" "80810a0b0c0d68",
             0, 0, "B:\x7fP:|ib|");
  /* close frames end the stream */
  check_wire(CLI, 0, 0, "8800", 0, 1005, "C1005:|");
  check_wire(CLI, 0, 0, "880503e8627965", 0, 1000, "C1000:bye|");
  check_wire(CLI, 0, 0, "810161880203e98100", 0, 1001, "T:a|C1001:|");
  check_wire(SRV, 0, 0, "88820102030402ea", 0, 1000, "C1000:|");
  {
    static const char *const ok[] = {"03e8", "03e9", "03ea", "03eb", "03ef",
                                     "03f0", "03f1", "03f2", "03f3", "0bb8",
                                     "0f9f", "0fa0", "1387"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
      unsigned code;
      sscanf(ok[i], "%x", &code);
      snprintf(hex, sizeof(hex), "8802%s", ok[i]);
      check_wire(CLI, 0, 0, hex, 0, code, NULL);
    }
  }
  /* a close reason in UTF-8 */
  check_wire(CLI, 0, 0, "880703e8cebae1bdb9", 0, 1000, NULL);
  /* 256-byte binary, unmasked and masked */
  {
    char *h = hex;
    h += sprintf(h, "827e0100");
    for (int i = 0; i < 256; i++) h += sprintf(h, "%02x", i & 0xff);
    check_wire(CLI, 0, 0, hex, 0, 0, NULL);
    CHECK_INT(run_a.data_len, 256);
    CHECK_INT(run_a.data[255], 255);
    h = hex;
    h += sprintf(h, "82fe010037fa213d");
    for (int i = 0; i < 256; i++)
      h += sprintf(h, "%02x", (i & 0xff) ^ rfc_key[i & 3]);
    check_wire(SRV, 0, 0, hex, 0, 0, NULL);
    CHECK_INT(run_a.data_len, 256);
    CHECK_INT(run_a.data[7], 7);
    CHECK_INT(run_a.data[200], 200);
  }
  /* text with every UTF-8 boundary character, split everywhere */
  check_wire(CLI, 0, 0, "81197fc280dfbfe0a080efbfbff0908080f48fbfbfed9fbfee8080",
             0, 0, NULL);
  CHECK_INT(run_a.messages, 1);
  /* a character split across fragments is fine */
  check_wire(CLI, 0, 0, "0101e2000182" "8001ac", 0, 0, "T:\xe2\x82\xac|");
  check_wire(CLI, 0, 0, "0101f0" "00029080" "800180", 0, 0, NULL);
  /* binary is not UTF-8 checked */
  check_wire(CLI, 0, 0, "8202c080", 0, 0, "B:\xc0\x80|");
  /* limits are inclusive */
  check_wire(CLI, 10, 10, "820a30313233343536373839", 0, 0, "B:0123456789|");
  check_wire(CLI, 10, 10, "0205303132333480053536373839", 0, 0,
             "B:0123456789|");
  check_wire(CLI, 1, 1, "890548656c6c6f", 0, 0, "P:Hello|");
}

typedef struct {
  ms_ws_role_t role;
  uint64_t max_frame, max_msg;
  const char *hex;
  int err;
  unsigned code;
  const char *trace;
} bad_case_t;

static const bad_case_t bad_cases[] = {
    /* reserved bits without an extension */
    {CLI, 0, 0, "c10548656c6c6f", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "a10548656c6c6f", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "910548656c6c6f", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "f100", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "c900", MS_EFRAME, 1002, ""},
    /* unknown opcodes */
    {CLI, 0, 0, "8300", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8400", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8700", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8b00", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8c00", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8f00", MS_EFRAME, 1002, ""},
    {SRV, 0, 0, "8380aabbccdd", MS_EFRAME, 1002, ""},
    /* fragmented control frames */
    {CLI, 0, 0, "0900", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "0a00", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "0800", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "010161" "0900", MS_EFRAME, 1002, "T:a"},
    /* control payload over 125 */
    {CLI, 0, 0, "897e007e", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8a7e007e", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "887f0000000000000080", MS_EFRAME, 1002, ""},
    {SRV, 0, 0, "89fe007e", MS_EFRAME, 1002, ""},
    /* continuation without a message */
    {CLI, 0, 0, "8000", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "0000", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8101618000", MS_EFRAME, 1002, "T:a|"},
    /* new data frame inside a fragmented message */
    {CLI, 0, 0, "010161010162", MS_EFRAME, 1002, "T:a"},
    {CLI, 0, 0, "010161820162", MS_EFRAME, 1002, "T:a"},
    {CLI, 0, 0, "020161" "8900" "8100", MS_EFRAME, 1002, "B:aP:|"},
    /* masking by role */
    {SRV, 0, 0, "810548656c6c6f", MS_EFRAME, 1002, ""},
    {SRV, 0, 0, "8900", MS_EFRAME, 1002, ""},
    {SRV, 0, 0, "880203e8", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "818537fa213d7f9f4d5158", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8a8037fa213d", MS_EFRAME, 1002, ""},
    /* non-minimal lengths, and the 64-bit top bit */
    {CLI, 0, 0, "827e007d", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "827e0000", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "827f000000000000ffff", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "827f0000000000000000", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "827f000000000000007d", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "827f8000000000000000", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "827fffffffffffffffff", MS_EFRAME, 1002, ""},
    {SRV, 0, 0, "82fe007d01020304", MS_EFRAME, 1002, ""},
    /* close payloads */
    {CLI, 0, 0, "880103", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "88020000", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "88020001", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203e7", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203ec", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203ed", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203ee", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203f4", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203f5", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203f6", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203f7", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880203f8", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8802044c", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880207d0", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "88020bb7", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "88021388", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "8802ffff", MS_EFRAME, 1002, ""},
    {CLI, 0, 0, "880403e8c080", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "880303e8e2", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "880503e8eda080", MS_EFRAME, 1007, ""},
    /* invalid UTF-8 in text */
    {CLI, 0, 0, "8102c080", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "8103e08080", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "8103eda080", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "8104f4908080", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "8101ff", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "8101e2", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "8102e282", MS_EFRAME, 1007, ""},
    {CLI, 0, 0, "0101e2" "800182", MS_EFRAME, 1007, "T:\xe2"},
    {CLI, 0, 0, "0101e2" "8000", MS_EFRAME, 1007, "T:\xe2"},
    {CLI, 0, 0, "010161" "0001c0" "800180", MS_EFRAME, 1007, "T:a"},
    {CLI, 0, 0, "810161" "8102c0af", MS_EFRAME, 1007, "T:a|"},
    {SRV, 0, 0, "8182aabbccdd6a3b", MS_EFRAME, 1007, ""},
    /* too big */
    {CLI, 10, 0, "820b3031323334353637383930", MS_ELIMIT, 1009, ""},
    {CLI, 10, 0, "810b3031323334353637383930", MS_ELIMIT, 1009, ""},
    {CLI, 0, 10, "0206303132333435" "8006303132333435", MS_ELIMIT, 1009,
     "B:012345"},
    {CLI, 0, 10, "0106303132333435" "8900" "0006303132333435", MS_ELIMIT,
     1009, "T:012345P:|"},
    {CLI, 0, 0, "827f7fffffffffffffff", MS_ELIMIT, 1009, ""},
    {CLI, 0, 0, "827f0000000001000001", MS_ELIMIT, 1009, ""},
    {SRV, 100, 0, "82fe1000aabbccdd", MS_ELIMIT, 1009, ""},
};

static void test_decoder_errors(void) {
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
    const bad_case_t *b = &bad_cases[i];
    int fails = mst_fail;
    check_wire(b->role, b->max_frame, b->max_msg, b->hex, b->err, b->code,
               b->trace);
    if (mst_fail != fails) fprintf(stderr, "  in bad case %zu: %s\n", i, b->hex);
  }
}

static void test_decoder_api(void) {
  ms_ws_decoder_t d;
  ms_ws_decoder_config_t cfg;
  ms_ws_event_t ev;
  uint8_t buf[64];
  size_t c;
  long n;

  /* init refusals */
  ms_ws_decoder_config_default(&cfg, SRV);
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), 0);
  CHECK_INT(ms_ws_decoder_init(&d, NULL), 0);
  cfg.role = (ms_ws_role_t)0;
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), MS_EINVAL);
  ms_ws_decoder_config_default(&cfg, CLI);
  cfg.max_frame = 0;
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), MS_EINVAL);
  ms_ws_decoder_config_default(&cfg, CLI);
  cfg.max_message = 0;
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), MS_EINVAL);
  ms_ws_decoder_config_default(&cfg, CLI);
  cfg.rsv_allowed = 0x80;
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), MS_EINVAL);
  CHECK_INT(ms_ws_decoder_close_code(&d), 0);

  /* unmasking happens in place: the event points into the input */
  CHECK_INT(ms_ws_decoder_init(&d, NULL), 0);
  n = mst_unhex("818537fa213d7f9f4d5158" "818001020304", buf, sizeof(buf));
  CHECK_INT(ms_ws_decode(&d, buf, (size_t)n, &c, &ev), 1);
  CHECK_INT(c, 11);
  CHECK(ev.data == buf + 6);
  CHECK_INT(ev.len, 5);
  CHECK_MEM(buf + 6, "Hello", 5);
  CHECK(ev.fin && ev.frame_end);
  CHECK_INT(ev.opcode, MS_WS_OP_TEXT);
  CHECK_INT(ev.msg_opcode, MS_WS_OP_TEXT);
  CHECK_INT(ms_ws_decode(&d, buf + 11, 6, &c, &ev), 1);
  CHECK_INT(c, 6);
  CHECK_INT(ev.len, 0);
  CHECK(ev.fin);
  CHECK_INT(ms_ws_decode(&d, NULL, 0, &c, &ev), 0);
  CHECK_INT(c, 0);

  /* a frame in pieces: one event per piece, frame_end on the last */
  ms_ws_decoder_config_default(&cfg, CLI);
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), 0);
  n = mst_unhex("010548656c6c6f80026869", buf, sizeof(buf));
  CHECK_INT(ms_ws_decode(&d, buf, 4, &c, &ev), 1);
  CHECK_INT(c, 4);
  CHECK_INT(ev.len, 2);
  CHECK(!ev.frame_end && !ev.fin);
  CHECK_INT(ms_ws_decode(&d, buf + 4, (size_t)n - 4, &c, &ev), 1);
  CHECK_INT(c, 3);
  CHECK_INT(ev.len, 3);
  CHECK(ev.frame_end && !ev.fin);
  CHECK_INT(ev.opcode, MS_WS_OP_TEXT);
  CHECK_INT(ms_ws_decode(&d, buf + 7, (size_t)n - 7, &c, &ev), 1);
  CHECK_INT(c, 4);
  CHECK(ev.frame_end && ev.fin);
  CHECK_INT(ev.opcode, MS_WS_OP_CONT);
  CHECK_INT(ev.msg_opcode, MS_WS_OP_TEXT);
  CHECK_MEM(ev.data, "hi", 2);

  /* bytes after a close frame are not consumed */
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), 0);
  n = mst_unhex("880203e88100", buf, sizeof(buf));
  CHECK_INT(ms_ws_decode(&d, buf, (size_t)n, &c, &ev), 1);
  CHECK_INT(c, 4);
  CHECK_INT(ev.type, MS_WS_EV_CLOSE);
  CHECK_INT(ev.close_code, 1000);
  CHECK_INT(ev.reason_len, 0);
  CHECK_INT(ev.len, 2);
  CHECK_INT(ms_ws_decode(&d, buf + 4, 2, &c, &ev), MS_ECLOSED);

  /* an error reports its close code and a reason that fits a close frame */
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), 0);
  n = mst_unhex("818537fa213d7f9f4d5158", buf, sizeof(buf));
  CHECK_INT(ms_ws_decode(&d, buf, (size_t)n, &c, &ev), MS_EFRAME);
  CHECK_INT(ms_ws_decoder_close_code(&d), 1002);
  CHECK_STR(ms_ws_decoder_reason(&d), "masked frame from server");
  {
    const char *why = ms_ws_decoder_reason(&d);
    uint8_t fr[MS_WS_MAX_CONTROL_FRAME];
    CHECK(ms_ws_close_frame(fr, sizeof(fr), ms_ws_decoder_close_code(&d), why,
                            strlen(why), rfc_key) > 0);
  }

  /* negotiated RSV bits pass through; UTF-8 check can be turned off */
  ms_ws_decoder_config_default(&cfg, CLI);
  cfg.rsv_allowed = MS_WS_RSV1;
  cfg.no_utf8_check = true;
  CHECK_INT(ms_ws_decoder_init(&d, &cfg), 0);
  n = mst_unhex("c102c080" "a100", buf, sizeof(buf));
  CHECK_INT(ms_ws_decode(&d, buf, (size_t)n, &c, &ev), 1);
  CHECK_INT(ev.rsv, MS_WS_RSV1);
  CHECK_INT(ev.len, 2);
  CHECK_INT(ms_ws_decode(&d, buf + c, (size_t)n - c, &c, &ev), MS_EFRAME);
  CHECK_INT(ms_ws_decoder_close_code(&d), 1002);
}

/* 64 KiB frame: whole, byte at a time, and random splits (every split
 * point would be quadratic). */
static void test_decoder_big(void) {
  static uint8_t wire[65536 + 14];
  static size_t cuts[65550];
  ms_ws_decoder_config_t cfg;
  int h;

  h = ms_ws_frame_header(wire, true, MS_WS_OP_BINARY, 65536, rfc_key);
  CHECK_INT(h, 14);
  for (size_t i = 0; i < 65536; i++) wire[h + i] = (uint8_t)(i * 7);
  (void)ms_ws_mask(wire + h, 65536, rfc_key, 0);
  ms_ws_decoder_config_default(&cfg, SRV);
  run_cuts(&cfg, wire, sizeof(wire), NULL, 0, &run_a);
  CHECK_INT(run_a.status, 0);
  CHECK_INT(run_a.data_len, 65536);
  CHECK_INT(run_a.messages, 1);
  CHECK_INT(run_a.data[65535], (uint8_t)(65535 * 7));
  CHECK_INT(run_a.data[1234], (uint8_t)(1234 * 7));
  for (size_t i = 0; i + 1 < sizeof(wire); i++) cuts[i] = i + 1;
  run_cuts(&cfg, wire, sizeof(wire), cuts, sizeof(wire) - 1, &run_b);
  CHECK(same_run(&run_a, &run_b));
  for (int t = 0; t < 50; t++) {
    size_t k = 0, at = 0;
    while (1) {
      at += 1 + rnd() % 3000;
      if (at >= sizeof(wire)) break;
      cuts[k++] = at;
    }
    run_cuts(&cfg, wire, sizeof(wire), cuts, k, &run_b);
    CHECK(same_run(&run_a, &run_b));
  }
  /* over a limit just below it */
  cfg.max_frame = 65535;
  run_cuts(&cfg, wire, sizeof(wire), NULL, 0, &run_b);
  CHECK_INT(run_b.status, MS_ELIMIT);
  CHECK_INT(run_b.close_code, 1009);
  CHECK_INT(run_b.data_len, 0);
}

/* Random frames (fragmented messages with pings between fragments),
 * encoded with the encoder, decoded in random pieces. */
static void test_roundtrip(void) {
  static uint8_t wire[200000], expect[100000];
  static size_t cuts[200000];
  int ok = 1;

  for (int t = 0; t < 300 && ok; t++) {
    ms_ws_role_t role = (t & 1) ? SRV : CLI;
    ms_ws_decoder_config_t cfg;
    size_t wl = 0, el = 0, msgs = 1 + rnd() % 5, k = 0, at = 0;
    for (size_t m = 0; m < msgs; m++) {
      int binary = rnd() % 2;
      size_t frames = 1 + rnd() % 4;
      for (size_t f = 0; f < frames; f++) {
        size_t len = rnd() % 4 == 0 ? rnd() % 70000 % 3000 : rnd() % 200;
        uint8_t key[4];
        int h;
        for (int i = 0; i < 4; i++) key[i] = (uint8_t)rnd();
        h = ms_ws_frame_header(wire + wl, f + 1 == frames,
                               f == 0 ? (binary ? MS_WS_OP_BINARY
                                                : MS_WS_OP_TEXT)
                                      : MS_WS_OP_CONT,
                               len, role == SRV ? key : NULL);
        CHECK(h >= 2);
        wl += (size_t)h;
        for (size_t i = 0; i < len; i++) {
          uint8_t b = binary ? (uint8_t)rnd() : (uint8_t)('a' + rnd() % 26);
          wire[wl + i] = expect[el + i] = b;
        }
        if (role == SRV) (void)ms_ws_mask(wire + wl, len, key, 0);
        wl += len;
        el += len;
        if (rnd() % 3 == 0) {
          int n = ms_ws_control_frame(wire + wl, sizeof(wire) - wl,
                                      MS_WS_OP_PING, (const uint8_t *)"pp",
                                      2, role == SRV ? key : NULL);
          CHECK(n > 0);
          wl += (size_t)n;
        }
      }
    }
    while (1) {
      uint32_t span = rnd() % 2 ? 20 : 2000; /* one rnd() per statement */
      at += 1 + rnd() % span;
      if (at >= wl) break;
      cuts[k++] = at;
    }
    ms_ws_decoder_config_default(&cfg, role);
    run_cuts(&cfg, wire, wl, cuts, k, &run_a);
    if (run_a.status != 0 || run_a.messages != msgs || run_a.data_len != el ||
        memcmp(run_a.data, expect, el) != 0)
      ok = 0;
  }
  CHECK(ok);
}


/* ------------------------------------------------------------------ */
/* HTTP/1.1                                                            */
/* ------------------------------------------------------------------ */

static const char rfc_request[] =
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

typedef struct {
  ms_http_parser_t p;
  char buf[MS_HTTP_DEFAULT_MAX_HEAD];
  ms_http_header_t hdrs[MS_HTTP_DEFAULT_MAX_HEADERS];
} parser_box_t;

static parser_box_t pb, pb2;

/* Parse text (whole) as kind; returns the parse result. */
static int parse_all(parser_box_t *b, ms_http_kind_t kind, const char *text,
                     size_t len, size_t cap, size_t max_headers,
                     size_t *consumed) {
  size_t c = 0;
  int r;
  CHECK_INT(ms_http_parser_init(&b->p, kind, b->buf, cap, b->hdrs,
                                max_headers), 0);
  r = ms_http_parse(&b->p, (const uint8_t *)text, len, &c);
  if (consumed) *consumed = c;
  return r;
}

static int parse_str(ms_http_kind_t kind, const char *text) {
  return parse_all(&pb, kind, text, strlen(text), sizeof(pb.buf),
                   MS_HTTP_DEFAULT_MAX_HEADERS, NULL);
}

/* Evaluate a request text: 101/400/404/426, or the parse error. */
static int evaluate(const char *text, const char *path) {
  ms_ws_upgrade_t info;
  int r = parse_str(MS_HTTP_REQUEST, text);
  if (r != MS_HTTP_DONE) return r;
  return ms_ws_upgrade_evaluate(ms_http_message(&pb.p), path, &info);
}

static void test_http_parse(void) {
  const ms_http_msg_t *m;
  const ms_http_header_t *h;
  ms_ws_upgrade_t info;
  char accept[MS_WS_ACCEPT_LEN + 1];
  size_t len = strlen(rfc_request), c;
  static char with_tail[2048];

  CHECK_INT(ms_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, accept), 0);
  CHECK_STR(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  CHECK_INT(ms_ws_accept(NULL, 0, accept), MS_EINVAL);

  CHECK_INT(parse_str(MS_HTTP_REQUEST, rfc_request), MS_HTTP_DONE);
  m = ms_http_message(&pb.p);
  CHECK(m != NULL);
  if (!m) return;
  CHECK_STR(m->method, "GET");
  CHECK_INT(m->method_len, 3);
  CHECK_STR(m->target, "/chat");
  CHECK_INT(m->nheaders, 7);
  CHECK_INT(m->head_len, len);
  CHECK_STR(m->headers[0].name, "Host");
  CHECK_STR(m->headers[0].value, "server.example.com");
  h = ms_http_header_find(m, "sec-websocket-key");
  CHECK(h && strcmp(h->value, "dGhlIHNhbXBsZSBub25jZQ==") == 0);
  CHECK(ms_http_header_find(m, "SEC-WEBSOCKET-VERSION") != NULL);
  CHECK(ms_http_header_find(m, "X-Nope") == NULL);
  CHECK_INT(ms_http_header_count(m, "upgrade"), 1);
  CHECK(ms_http_header_has_token(m, "connection", "UPGRADE"));
  CHECK(!ms_http_header_has_token(m, "connection", "keep-alive"));
  CHECK_INT(ms_ws_upgrade_evaluate(m, "/chat", &info), 101);
  CHECK(info.reason == NULL);
  CHECK_INT(info.path_len, 5);
  CHECK(info.query == NULL);
  CHECK_STR(info.host, "server.example.com");
  CHECK_STR(info.origin, "http://example.com");
  CHECK_STR(info.key, "dGhlIHNhbXBsZSBub25jZQ==");
  CHECK_INT(info.protocols, 2);
  {
    const char *p;
    size_t pl;
    static const char *const sup1[] = {"superchat", "chat"};
    static const char *const sup2[] = {"other", "superchat"};
    static const char *const sup3[] = {"Chat", "x"};
    CHECK(ms_ws_upgrade_protocol(m, 1, &p, &pl) && pl == 9 &&
          memcmp(p, "superchat", 9) == 0);
    CHECK(!ms_ws_upgrade_protocol(m, 2, &p, &pl));
    CHECK_INT(ms_ws_select_protocol(m, sup1, 2), 1);  /* client order */
    CHECK_INT(ms_ws_select_protocol(m, sup2, 2), 1);
    CHECK_INT(ms_ws_select_protocol(m, sup3, 2), -1); /* case-sensitive */
    CHECK_INT(ms_ws_select_protocol(m, sup3, 0), -1);
  }
  CHECK_INT(ms_ws_upgrade_evaluate(m, NULL, &info), 101);
  CHECK_INT(ms_ws_upgrade_evaluate(m, "/chat2", &info), 404);
  CHECK(info.reason != NULL);
  CHECK_INT(ms_ws_upgrade_evaluate(m, "/cha", &info), 404);
  CHECK_INT(ms_ws_upgrade_evaluate(m, "/", &info), 404);
  CHECK_INT(ms_ws_upgrade_evaluate(NULL, "/", &info), MS_EINVAL);

  /* bytes after the head: DONE at the right offset, at every split */
  memcpy(with_tail, rfc_request, len);
  memcpy(with_tail + len, "\x81\x85\x37\xfa", 4);
  for (size_t cut = 0; cut <= len + 4; cut++) {
    size_t c1 = 0, c2 = 0;
    int r1, r2 = -1;
    CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, pb.buf,
                                  sizeof(pb.buf), pb.hdrs, 64), 0);
    r1 = ms_http_parse(&pb.p, (const uint8_t *)with_tail, cut, &c1);
    if (r1 == MS_HTTP_NEED_MORE) {
      CHECK_INT(c1, cut);
      r2 = ms_http_parse(&pb.p, (const uint8_t *)with_tail + cut,
                         len + 4 - cut, &c2);
      CHECK_INT(r2, MS_HTTP_DONE);
      CHECK_INT(c1 + c2, len);
    } else {
      CHECK_INT(r1, MS_HTTP_DONE);
      CHECK_INT(c1, len);
      CHECK(cut >= len);
    }
    m = ms_http_message(&pb.p);
    CHECK(m && ms_ws_upgrade_evaluate(m, "/chat", &info) == 101);
  }
  /* byte at a time */
  CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, pb.buf,
                                sizeof(pb.buf), pb.hdrs, 64), 0);
  {
    int r = 0;
    size_t i;
    for (i = 0; i < len + 4; i++) {
      r = ms_http_parse(&pb.p, (const uint8_t *)with_tail + i, 1, &c);
      if (r != MS_HTTP_NEED_MORE) break;
      CHECK_INT(c, 1);
    }
    CHECK_INT(r, MS_HTTP_DONE);
    CHECK_INT(i, len - 1);
    CHECK_INT(c, 1);
    /* later calls: DONE, nothing consumed */
    CHECK_INT(ms_http_parse(&pb.p, (const uint8_t *)"x", 1, &c), MS_HTTP_DONE);
    CHECK_INT(c, 0);
  }
  CHECK(ms_http_message(&pb.p) != NULL);
  CHECK_INT(ms_http_error_status(&pb.p), 0);
  CHECK(ms_http_error_reason(&pb.p) == NULL);

  /* case-insensitive names, token lists, OWS, query */
  CHECK_INT(evaluate("GET /ws?x=1&y HTTP/1.1\r\n"
                     "host:a\r\n"
                     "UPGRADE: WebSocket\r\n"
                     "connection: keep-alive, Upgrade\r\n"
                     "sec-websocket-key:   dGhlIHNhbXBsZSBub25jZQ==  \r\n"
                     "SEC-WEBSOCKET-VERSION:\t13\t\r\n"
                     "\r\n", "/ws"), 101);
  m = ms_http_message(&pb.p);
  CHECK(ms_ws_upgrade_evaluate(m, "/ws", &info) == 101);
  CHECK_INT(info.query_len, 5);
  CHECK(info.query && memcmp(info.query, "x=1&y", 5) == 0);
  CHECK(info.origin == NULL);
  CHECK_INT(info.protocols, 0);
  CHECK_STR(ms_http_header_find(m, "Sec-WebSocket-Version")->value, "13");
  /* Connection and Upgrade split over several fields */
  CHECK_INT(evaluate("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
                     "Upgrade: websocket\r\nConnection: close\r\n"
                     "Connection: upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/"), 101);
}

/* One request with a header replaced/removed, evaluated. */
#define REQ_BASE(extra)                                                   \
  "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"               \
  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" \
  "Sec-WebSocket-Version: 13\r\n" extra "\r\n"

static void test_http_verdicts(void) {
  CHECK_INT(evaluate(REQ_BASE(""), "/chat"), 101);
  /* missing or wrong fields -> 400 */
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                     "/chat"), 400);
  CHECK_INT(evaluate("POST /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate("get /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate("GET ws://h/chat HTTP/1.1\r\nHost: h\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate(REQ_BASE("Host: h2\r\n"), "/chat"), 400);
  CHECK_INT(evaluate(REQ_BASE("Origin: a\r\nOrigin: b\r\n"), "/chat"), 400);
  CHECK_INT(evaluate(REQ_BASE("Content-Length: 5\r\n"), "/chat"), 400);
  CHECK_INT(evaluate(REQ_BASE("Content-Length: 0\r\n"), "/chat"), 101);
  CHECK_INT(evaluate(REQ_BASE("Transfer-Encoding: chunked\r\n"), "/chat"),
            400);
  CHECK_INT(evaluate(REQ_BASE("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
                     "/chat"), 400);
  CHECK_INT(evaluate(REQ_BASE("Sec-WebSocket-Version: 13\r\n"), "/chat"), 400);
  CHECK_INT(evaluate(REQ_BASE("Sec-WebSocket-Protocol: a b\r\n"), "/chat"),
            400);
  CHECK_INT(evaluate(REQ_BASE("Sec-WebSocket-Protocol: chat, , x\r\n"),
                     "/chat"), 101);
  CHECK_INT(evaluate(REQ_BASE("Sec-WebSocket-Protocol: a/b\r\n"), "/chat"),
            400);
  /* Upgrade/Connection must list the tokens, not contain them */
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websockets\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade-Insecure\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", "/chat"), 400);
  /* invalid keys */
  {
    static const char *const keys[] = {
        "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===",
        "dGhlIHNhbXBsZSBub25jZR==", /* non-canonical last char */
        "dGhlIHNhbXBsZSBub25jZ===", "dGhlIHNhbXBsZSBub25j*Q==",
        "dGhlIHNhbXBsZSBub25jZQ", "", "dGhlIHNhbXBsZSBub25jZQ==AA",
        "dGhlIHNhbXBsZSBub25jZQ-="};
    char req[512];
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
      snprintf(req, sizeof(req),
               "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n", keys[i]);
      CHECK_INT(evaluate(req, "/chat"), 400);
      CHECK(!ms_ws_key_valid(keys[i], strlen(keys[i])));
    }
    CHECK(ms_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    CHECK(ms_ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    CHECK(ms_ws_key_valid("/////////////////////w==", 24));
    CHECK(!ms_ws_key_valid("/////////////////////x==", 24));
    CHECK(!ms_ws_key_valid(NULL, 24));
  }
  /* version -> 426, path -> 404 */
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 8\r\n\r\n", "/chat"), 426);
  CHECK_INT(evaluate("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13, 8\r\n\r\n", "/chat"), 426);
  CHECK_INT(evaluate(REQ_BASE(""), "/other"), 404);
  CHECK_INT(evaluate("GET /chat?q HTTP/1.1\r\nHost: h\r\n\r\n", "/other"),
            404);
  CHECK_INT(evaluate("GET /chat?q HTTP/1.1\r\nHost: h\r\n\r\n", "/chat"),
            400);
  /* a head full of subprotocol elements is handled in one pass */
  {
    static char req[8192];
    ms_ws_upgrade_t info;
    size_t n = (size_t)sprintf(req, REQ_BASE("") );
    const ms_http_msg_t *m;
    static const char *const sup[] = {"zz"};
    n -= 2; /* drop the final CRLF, add one more field */
    n += (size_t)sprintf(req + n, "Sec-WebSocket-Protocol: ");
    while (n < sizeof(req) - 8) n += (size_t)sprintf(req + n, "a,");
    n += (size_t)sprintf(req + n, "zz\r\n\r\n");
    CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, req, n, 8192, 64, NULL),
              MS_HTTP_DONE);
    m = ms_http_message(&pb.p);
    CHECK_INT(ms_ws_upgrade_evaluate(m, "/chat", &info), 101);
    CHECK(info.protocols > 3900);
    CHECK_INT(ms_ws_select_protocol(m, sup, 1), 0);
  }
}

static void test_http_malformed(void) {
  static const char *const bad[] = {
      "GET /chat HTTP/1.1\nHost: h\r\n\r\n",        /* bare LF */
      "GET /chat HTTP/1.1\r\nHost: h\n\r\n",
      "GET /chat HTTP/1.1\r\nHost: h\r\n\n",
      "GET /chat HTTP/1.1\r\nHo\rst: h\r\n\r\n",    /* bare CR */
      "GET /chat HTTP/1.1\r\nHost: h\r\r\n\r\n",
      "\r\nGET /chat HTTP/1.1\r\nHost: h\r\n\r\n",  /* leading empty line */
      "GET /chat HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", /* obs-fold */
      "GET /chat HTTP/1.1\r\n Host: h\r\n\r\n",
      "GET /chat HTTP/1.1\r\nHost : h\r\n\r\n",     /* space before colon */
      "GET /chat HTTP/1.1\r\n: h\r\n\r\n",          /* empty name */
      "GET /chat HTTP/1.1\r\nHost h\r\n\r\n",       /* no colon */
      "GET /chat HTTP/1.1\r\nHo(st: h\r\n\r\n",     /* bad name char */
      "GET /chat HTTP/1.1\r\nHost: h\x01\r\n\r\n",  /* control in value */
      "GET /chat HTTP/1.1\r\nHost: h\x7f\r\n\r\n",
      "GET /chat HTTP/1.0\r\nHost: h\r\n\r\n",      /* version */
      "GET /chat HTTP/2.0\r\nHost: h\r\n\r\n",
      "GET /chat http/1.1\r\nHost: h\r\n\r\n",
      "GET /chat HTTP/1.1 \r\nHost: h\r\n\r\n",
      "GET  /chat HTTP/1.1\r\nHost: h\r\n\r\n",     /* double space */
      "GET /chat  HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET\t/chat HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /chat\r\nHost: h\r\n\r\n",
      "GET\r\n\r\n",
      "G(T /chat HTTP/1.1\r\nHost: h\r\n\r\n",      /* bad method */
      " GET /chat HTTP/1.1\r\n\r\n",
      "GET /ch\x80t HTTP/1.1\r\n\r\n",              /* bad target */
      "GET /ch\x01t HTTP/1.1\r\n\r\n",
  };
  size_t c;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int r = parse_str(MS_HTTP_REQUEST, bad[i]);
    CHECK_INT(r, MS_EFRAME);
    CHECK_INT(ms_http_error_status(&pb.p), 400);
    CHECK(ms_http_error_reason(&pb.p) != NULL);
    CHECK(ms_http_message(&pb.p) == NULL);
    /* byte at a time fails the same way */
    CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, pb.buf,
                                  sizeof(pb.buf), pb.hdrs, 64), 0);
    r = 0;
    for (size_t k = 0; bad[i][k] && r == 0; k++)
      r = ms_http_parse(&pb.p, (const uint8_t *)bad[i] + k, 1, &c);
    CHECK_INT(r, MS_EFRAME);
    /* final */
    CHECK_INT(ms_http_parse(&pb.p, (const uint8_t *)"\r\n", 2, &c), MS_EFRAME);
    CHECK_INT(c, 0);
  }
  /* NUL inside a value */
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, "GET / HTTP/1.1\r\nA: x\0y\r\n\r\n",
                      26, sizeof(pb.buf), 64, NULL), MS_EFRAME);
  /* obs-text in a value is allowed */
  CHECK_INT(parse_str(MS_HTTP_REQUEST,
                      "GET / HTTP/1.1\r\nA: caf\xc3\xa9\r\nB:\r\n\r\n"),
            MS_HTTP_DONE);
  CHECK_INT(ms_http_message(&pb.p)->headers[1].value_len, 0);
  CHECK_STR(ms_http_message(&pb.p)->headers[1].value, "");
  /* parser init refusals */
  CHECK_INT(ms_http_parser_init(&pb.p, (ms_http_kind_t)3, pb.buf, 100, pb.hdrs,
                                1), MS_EINVAL);
  CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, NULL, 100, pb.hdrs, 1),
            MS_EINVAL);
  CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, pb.buf, 8, pb.hdrs, 1),
            MS_EINVAL);
  CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, pb.buf, 100, NULL, 1),
            MS_EINVAL);
  CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, pb.buf, 100, NULL, 0),
            0);
}

static void test_http_limits(void) {
  static char big[20000];
  size_t n, c;
  int r;

  /* a head of exactly the limit passes; one byte more is 431 */
  n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX: ");
  while (n < 8192 - 4) big[n++] = 'a';
  memcpy(big + n, "\r\n\r\n", 4);
  n += 4;
  CHECK_INT(n, 8192);
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, big, n, 8192, 64, &c),
            MS_HTTP_DONE);
  CHECK_INT(c, 8192);
  CHECK_INT(ms_http_message(&pb.p)->headers[0].value_len, 8192 - 16 - 4 - 3);
  memmove(big + 17, big + 16, n - 16);
  big[16] = 'Y';
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, big, n + 1, 8192, 64, &c),
            MS_ELIMIT);
  CHECK_INT(ms_http_error_status(&pb.p), 431);
  /* same byte by byte */
  CHECK_INT(ms_http_parser_init(&pb.p, MS_HTTP_REQUEST, pb.buf, 8192, pb.hdrs,
                                64), 0);
  r = 0;
  for (size_t i = 0; i <= n && r == 0; i++)
    r = ms_http_parse(&pb.p, (const uint8_t *)big + i, 1, &c);
  CHECK_INT(r, MS_ELIMIT);
  /* a never-ending line, in big pieces */
  memset(big, 'a', sizeof(big));
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, big, sizeof(big), 8192, 64, &c),
            MS_ELIMIT);
  CHECK_INT(ms_http_error_status(&pb.p), 431);
  /* a smaller limit chosen by the caller */
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, rfc_request, strlen(rfc_request),
                      100, 64, &c), MS_ELIMIT);
  /* header count: 64 fine, 65 -> 431 */
  for (int extra = 63; extra <= 64; extra++) {
    n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < extra; i++) n += (size_t)sprintf(big + n, "X%d: %d\r\n", i, i);
    n += (size_t)sprintf(big + n, "\r\n");
    r = parse_all(&pb, MS_HTTP_REQUEST, big, n, 8192, 64, &c);
    if (extra == 63) {
      CHECK_INT(r, MS_HTTP_DONE);
      CHECK_INT(ms_http_message(&pb.p)->nheaders, 64);
      CHECK_STR(ms_http_message(&pb.p)->headers[63].name, "X62");
    } else {
      CHECK_INT(r, MS_ELIMIT);
      CHECK_INT(ms_http_error_status(&pb.p), 431);
      CHECK_STR(ms_http_error_reason(&pb.p), "too many header fields");
    }
  }
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, rfc_request, strlen(rfc_request),
                      8192, 3, &c), MS_ELIMIT);
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, "GET / HTTP/1.1\r\n\r\n", 18,
                      8192, 0, &c), MS_HTTP_DONE);
}

static void test_token_lists(void) {
  static const struct {
    const char *list, *token;
    int has;
  } cases[] = {
      {"keep-alive, Upgrade", "upgrade", 1},
      {"keep-alive,upgrade", "Upgrade", 1},
      {"Upgrade", "upgrade", 1},
      {"  , upgrade ,,", "upgrade", 1},
      {"\tupgrade\t", "upgrade", 1},
      {"upgrades", "upgrade", 0},
      {"upgrade-x", "upgrade", 0},
      {"x-upgrade", "upgrade", 0},
      {"", "upgrade", 0},
      {",,,", "upgrade", 0},
      {"keep-alive upgrade", "upgrade", 0},
      {"close", "upgrade", 0},
      {"a,b,c", "c", 1},
      {"a,b,c", "a", 1},
  };
  size_t pos = 0, el, count = 0;
  const char *e;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    CHECK_INT(ms_http_list_has(cases[i].list, strlen(cases[i].list),
                               cases[i].token), cases[i].has);
  while (ms_http_list_next(" a , ,b,  c d ,", 15, &pos, &e, &el)) {
    count++;
    if (count == 3) CHECK(el == 3 && memcmp(e, "c d", 3) == 0);
  }
  CHECK_INT(count, 3);
  CHECK(ms_http_is_token("chat", 4));
  CHECK(ms_http_is_token("!#$%&'*+-.^_`|~09azAZ", 21));
  CHECK(!ms_http_is_token("", 0));
  CHECK(!ms_http_is_token("a b", 3));
  CHECK(!ms_http_is_token("a\"", 2));
  CHECK(!ms_http_is_token("a,b", 3));
  CHECK(!ms_http_is_token("a\x80", 2));
}

static void test_http_responses(void) {
  char out[512];
  const ms_http_msg_t *m;
  const char *proto = "x", *why = NULL;
  int n;
  size_t c;

  /* 101 round trip through the client checker */
  n = ms_ws_build_101(out, sizeof(out), "dGhlIHNhbXBsZSBub25jZQ==", 24, "chat");
  CHECK(n > 0);
  CHECK_STR(out, "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                 "Sec-WebSocket-Protocol: chat\r\n\r\n");
  CHECK_INT((size_t)n, strlen(out));
  CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, out, (size_t)n, 8192, 64, &c),
            MS_HTTP_DONE);
  m = ms_http_message(&pb2.p);
  CHECK_INT(m->status, 101);
  CHECK_STR(m->reason, "Switching Protocols");
  CHECK(m->method == NULL && m->target == NULL);
  CHECK_INT(ms_ws_check_response(m, "dGhlIHNhbXBsZSBub25jZQ==",
                                 "chat, superchat", &proto, &why), 0);
  CHECK_STR(proto, "chat");
  CHECK(why == NULL);
  CHECK_INT(ms_ws_check_response(m, "dGhlIHNhbXBsZSBub25jZQ==", "superchat",
                                 &proto, &why), MS_EHANDSHAKE);
  CHECK(why != NULL);
  CHECK_INT(ms_ws_check_response(m, "dGhlIHNhbXBsZSBub25jZQ==", NULL, &proto,
                                 &why), MS_EHANDSHAKE);
  CHECK_INT(ms_ws_check_response(m, "AAAAAAAAAAAAAAAAAAAAAA==", "chat", &proto,
                                 &why), MS_EHANDSHAKE);
  CHECK_HAS(why, "Accept");
  CHECK_INT(ms_ws_check_response(m, "bad", "chat", &proto, &why), MS_EINVAL);
  /* without a subprotocol */
  n = ms_ws_build_101(out, sizeof(out), "dGhlIHNhbXBsZSBub25jZQ==", 24, NULL);
  CHECK_INT(n, 129);
  CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, out, (size_t)n, 8192, 64, &c),
            MS_HTTP_DONE);
  m = ms_http_message(&pb2.p);
  CHECK_INT(ms_ws_check_response(m, "dGhlIHNhbXBsZSBub25jZQ==", "chat", &proto,
                                 &why), 0);
  CHECK(proto == NULL);
  CHECK_INT(ms_ws_check_response(m, "dGhlIHNhbXBsZSBub25jZQ==", NULL, NULL,
                                 NULL), 0);
  /* 101 builder refusals */
  CHECK_INT(ms_ws_build_101(out, 50, "dGhlIHNhbXBsZSBub25jZQ==", 24, NULL),
            MS_ELIMIT);
  CHECK_INT(ms_ws_build_101(out, 129, "dGhlIHNhbXBsZSBub25jZQ==", 24, NULL),
            MS_ELIMIT); /* no room for the NUL */
  CHECK_INT(ms_ws_build_101(out, 130, "dGhlIHNhbXBsZSBub25jZQ==", 24, NULL),
            129);
  CHECK_INT(ms_ws_build_101(out, sizeof(out), "short", 5, NULL), MS_EINVAL);
  CHECK_INT(ms_ws_build_101(out, sizeof(out), "dGhlIHNhbXBsZSBub25jZQ==", 24,
                            "a\r\nX: y"), MS_EINVAL);

  /* server answers the client must refuse */
  {
    static const char *const resp[] = {
        "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: S3PPLMBITXAQ9KYGZZHZRBK+XOO=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: Chat\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(resp) / sizeof(resp[0]); i++) {
      CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, resp[i], strlen(resp[i]),
                          8192, 64, &c), MS_HTTP_DONE);
      why = NULL;
      CHECK_INT(ms_ws_check_response(ms_http_message(&pb2.p),
                                     "dGhlIHNhbXBsZSBub25jZQ==",
                                     "chat, superchat", &proto, &why),
                MS_EHANDSHAKE);
      CHECK(why != NULL);
    }
  }
  /* status-line forms */
  CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, "HTTP/1.1 101\r\n\r\n", 16, 8192,
                      64, &c), MS_HTTP_DONE);
  CHECK_INT(ms_http_message(&pb2.p)->status, 101);
  CHECK_INT(ms_http_message(&pb2.p)->reason_len, 0);
  CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, "HTTP/1.1 404 \r\n\r\n", 17,
                      8192, 64, &c), MS_HTTP_DONE);
  CHECK_INT(ms_http_message(&pb2.p)->status, 404);
  {
    static const char *const bad[] = {
        "HTTP/1.1 1x1 OK\r\n\r\n", "HTTP/1.1 099 OK\r\n\r\n",
        "HTTP/1.0 101 OK\r\n\r\n", "HTTP/1.1  101 OK\r\n\r\n",
        "HTTP/1.1 1011 OK\r\n\r\n", "HTTP/1.1 101 O\x01K\r\n\r\n",
        "HTTP/1.1 101 OK\n\r\n",     "FTP/1.1 101 OK\r\n\r\n",
        "HTTP/1.1 10\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
      CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, bad[i], strlen(bad[i]), 8192,
                          64, &c), MS_EFRAME);
  }
  /* the response parser hands back the first frame bytes */
  {
    const char *r = "HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x02hi";
    size_t rl = strlen(r);
    CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, r, rl, 8192, 64, &c),
              MS_HTTP_DONE);
    CHECK_INT(c, rl - 4);
  }

  /* refusals */
  n = ms_http_build_error(out, sizeof(out), 400);
  CHECK_STR(out, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                 "Content-Length: 0\r\n\r\n");
  CHECK_INT((size_t)n, strlen(out));
  n = ms_http_build_error(out, sizeof(out), 404);
  CHECK_HAS(out, "HTTP/1.1 404 Not Found\r\n");
  n = ms_http_build_error(out, sizeof(out), 426);
  CHECK_STR(out, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Version: 13\r\nConnection: close\r\n"
                 "Content-Length: 0\r\n\r\n");
  n = ms_http_build_error(out, sizeof(out), 431);
  CHECK_HAS(out, "431 Request Header Fields Too Large");
  CHECK(n > 0 && n < 192);
  CHECK(ms_http_build_error(out, sizeof(out), 403) > 0);
  CHECK_INT(ms_http_build_error(out, sizeof(out), 500), MS_EINVAL);
  CHECK_INT(ms_http_build_error(out, sizeof(out), 101), MS_EINVAL);
  CHECK_INT(ms_http_build_error(out, 20, 400), MS_ELIMIT);
  CHECK_INT(ms_http_build_error(out, 0, 400), MS_ELIMIT);
  /* each refusal parses as a response */
  {
    static const int sts[] = {400, 403, 404, 426, 431};
    for (size_t i = 0; i < 5; i++) {
      n = ms_http_build_error(out, sizeof(out), sts[i]);
      CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, out, (size_t)n, 8192, 64,
                          &c), MS_HTTP_DONE);
      CHECK_INT(ms_http_message(&pb2.p)->status, sts[i]);
    }
  }
}

static void test_client_request(void) {
  char out[1024], key[MS_WS_KEY_LEN + 1];
  uint8_t nonce[16];
  ms_ws_client_request_t rq;
  ms_ws_upgrade_t info;
  const ms_http_msg_t *m;
  size_t c;
  int n;

  for (int i = 0; i < 16; i++) nonce[i] = (uint8_t)(i * 17);
  ms_ws_key_encode(nonce, key);
  CHECK_INT(strlen(key), 24);
  CHECK(ms_ws_key_valid(key, 24));
  {
    /* the RFC's nonce is "the sample nonce" */
    ms_ws_key_encode((const uint8_t *)"the sample nonce", key);
    CHECK_STR(key, "dGhlIHNhbXBsZSBub25jZQ==");
  }
  memset(&rq, 0, sizeof(rq));
  rq.host = "server.example.com";
  rq.port = 80;
  rq.path = "/chat";
  rq.key = key;
  rq.origin = "http://example.com";
  rq.protocols = "chat, superchat";
  n = ms_ws_build_request(out, sizeof(out), &rq);
  CHECK(n > 0);
  CHECK_STR(out, "GET /chat HTTP/1.1\r\n"
                 "Host: server.example.com\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "Origin: http://example.com\r\n"
                 "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n");
  /* the server side accepts what the client side builds */
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, out, (size_t)n, 8192, 64, &c),
            MS_HTTP_DONE);
  m = ms_http_message(&pb.p);
  CHECK_INT(ms_ws_upgrade_evaluate(m, "/chat", &info), 101);
  CHECK_STR(info.origin, "http://example.com");
  CHECK_INT(info.protocols, 2);

  /* Host forms */
  {
    static const struct {
      const char *host;
      uint16_t port;
      bool secure;
      const char *want;
    } hosts[] = {
        {"example.com", 80, false, "Host: example.com\r\n"},
        {"example.com", 0, false, "Host: example.com\r\n"},
        {"example.com", 443, false, "Host: example.com:443\r\n"},
        {"example.com", 443, true, "Host: example.com\r\n"},
        {"example.com", 80, true, "Host: example.com:80\r\n"},
        {"example.com", 8080, false, "Host: example.com:8080\r\n"},
        {"10.0.0.1", 9000, false, "Host: 10.0.0.1:9000\r\n"},
        {"::1", 80, false, "Host: [::1]\r\n"},
        {"::1", 8080, false, "Host: [::1]:8080\r\n"},
        {"[::1]", 8080, false, "Host: [::1]:8080\r\n"},
        {"[2001:db8::1]", 443, true, "Host: [2001:db8::1]\r\n"},
        {"fe80::1%eth0", 8008, false, "Host: [fe80::1]:8008\r\n"},
        {"::ffff:1.2.3.4", 80, false, "Host: [::ffff:1.2.3.4]\r\n"},
    };
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
      rq.host = hosts[i].host;
      rq.port = hosts[i].port;
      rq.secure = hosts[i].secure;
      n = ms_ws_build_request(out, sizeof(out), &rq);
      CHECK(n > 0);
      CHECK_HAS(out, hosts[i].want);
      CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, out, (size_t)n, 8192, 64, &c),
                MS_HTTP_DONE);
      CHECK_INT(ms_ws_upgrade_evaluate(ms_http_message(&pb.p), "/chat",
                                       &info), 101);
    }
  }
  /* optional parts left out, default path */
  rq.host = "h";
  rq.port = 0;
  rq.secure = false;
  rq.path = NULL;
  rq.origin = NULL;
  rq.protocols = NULL;
  n = ms_ws_build_request(out, sizeof(out), &rq);
  CHECK(n > 0);
  CHECK(strncmp(out, "GET / HTTP/1.1\r\nHost: h\r\n", 25) == 0);
  CHECK(strstr(out, "Origin") == NULL);
  CHECK(strstr(out, "Protocol") == NULL);
  CHECK_INT(ms_ws_build_request(out, (size_t)n, &rq), MS_ELIMIT);
  CHECK_INT(ms_ws_build_request(out, (size_t)n + 1, &rq), n);
  /* with a query */
  rq.path = "/a/b?c=d&e";
  CHECK(ms_ws_build_request(out, sizeof(out), &rq) > 0);
  CHECK_HAS(out, "GET /a/b?c=d&e HTTP/1.1\r\n");
  /* refusals */
  {
    ms_ws_client_request_t b;
    b = rq; b.path = "chat";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.path = "/a b";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.path = "/a\r\nX: y";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.host = "";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.host = "h\r\nX: y";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.host = "a/b";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.host = "[::1";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.host = "[]";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.host = "::g";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.host = NULL;
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.key = "dGhlIHNhbXBsZSBub25jZQ";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.origin = "a\r\nb";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.origin = "";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.protocols = "a b";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.protocols = ", ,";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    b = rq; b.protocols = "a\r\n";
    CHECK_INT(ms_ws_build_request(out, sizeof(out), &b), MS_EINVAL);
    CHECK_INT(ms_ws_build_request(out, sizeof(out), NULL), MS_EINVAL);
  }
}

/* A full handshake and a message each way, the two roles wired together
 * through the builders, parsers and frame codec. */
static void test_end_to_end(void) {
  char req[512], resp[256], key[MS_WS_KEY_LEN + 1];
  uint8_t wire[256], nonce[16], mkey[4] = {1, 2, 3, 4};
  ms_ws_client_request_t rq = {0};
  ms_ws_upgrade_t info;
  ms_ws_decoder_t srv, cli;
  ms_ws_event_t ev;
  static const char *const sup[] = {"chat"};
  size_t c, wl;
  int n, sel, h;
  const char *proto = NULL;

  for (int i = 0; i < 16; i++) nonce[i] = (uint8_t)rnd();
  ms_ws_key_encode(nonce, key);
  rq.host = "::1";
  rq.port = 8989;
  rq.path = "/ws";
  rq.key = key;
  rq.protocols = "x, chat";
  n = ms_ws_build_request(req, sizeof(req), &rq);
  CHECK(n > 0);
  /* the server reads the request and the client's first frame together */
  memcpy(wire, req, (size_t)n);
  CHECK_INT(parse_all(&pb, MS_HTTP_REQUEST, req, (size_t)n, 8192, 64, &c),
            MS_HTTP_DONE);
  CHECK_INT(ms_ws_upgrade_evaluate(ms_http_message(&pb.p), "/ws", &info), 101);
  CHECK(info.host && strcmp(info.host, "[::1]:8989") == 0);
  sel = ms_ws_select_protocol(ms_http_message(&pb.p), sup, 1);
  CHECK_INT(sel, 0);
  n = ms_ws_build_101(resp, sizeof(resp), info.key, info.key_len,
                      sel >= 0 ? sup[sel] : NULL);
  CHECK(n > 0);
  /* the 101 and the server's first frame arrive in one read */
  memcpy(wire, resp, (size_t)n);
  h = ms_ws_frame_header(wire + n, true, MS_WS_OP_TEXT, 2, NULL);
  memcpy(wire + n + h, "hi", 2);
  wl = (size_t)n + (size_t)h + 2;
  CHECK_INT(parse_all(&pb2, MS_HTTP_RESPONSE, (const char *)wire, wl, 8192, 64,
                      &c), MS_HTTP_DONE);
  CHECK_INT(c, (size_t)n);
  CHECK_INT(ms_ws_check_response(ms_http_message(&pb2.p), key, rq.protocols,
                                 &proto, NULL), 0);
  CHECK_STR(proto, "chat");
  CHECK_INT(ms_ws_decoder_init(&cli, &(ms_ws_decoder_config_t){
      .role = MS_WS_ROLE_CLIENT, .max_frame = 100, .max_message = 100}), 0);
  CHECK_INT(ms_ws_decode(&cli, wire + c, wl - c, &c, &ev), 1);
  CHECK(ev.type == MS_WS_EV_DATA && ev.len == 2 && ev.fin &&
        memcmp(ev.data, "hi", 2) == 0);
  /* client -> server, masked */
  CHECK_INT(ms_ws_decoder_init(&srv, NULL), 0);
  h = ms_ws_frame_header(wire, true, MS_WS_OP_BINARY, 3, mkey);
  memcpy(wire + h, "abc", 3);
  (void)ms_ws_mask(wire + h, 3, mkey, 0);
  n = ms_ws_close_frame(wire + h + 3, 200, 1000, "done", 4, mkey);
  CHECK(n > 0);
  wl = (size_t)h + 3 + (size_t)n;
  CHECK_INT(ms_ws_decode(&srv, wire, wl, &c, &ev), 1);
  CHECK(ev.type == MS_WS_EV_DATA && memcmp(ev.data, "abc", 3) == 0);
  CHECK_INT(ms_ws_decode(&srv, wire + c, wl - c, &c, &ev), 1);
  CHECK_INT(ev.type, MS_WS_EV_CLOSE);
  CHECK_INT(ev.close_code, 1000);
  CHECK(ev.reason_len == 4 && memcmp(ev.reason, "done", 4) == 0);
}


int main(void) {
  test_sha1();
  test_utf8();
  test_encoder();
  test_decoder_examples();
  test_decoder_errors();
  test_decoder_api();
  test_decoder_big();
  test_roundtrip();
  test_http_parse();
  test_http_verdicts();
  test_http_malformed();
  test_http_limits();
  test_token_lists();
  test_http_responses();
  test_client_request();
  test_end_to_end();
  return mst_done("ws_core");
}
