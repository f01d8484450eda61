/* SOCKS5 client exchange: exact client bytes (hand-derived from RFC 1928 /
 * RFC 1929), every reply code, every split point, the offset past the
 * reply, malformed answers, credential rejection, eof, misuse. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mstest.h"
#include "socks5.h"

/* Hex helper for expected bytes; spaces allowed. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  char clean[2048];
  size_t n = 0;
  long r;
  for (const char *p = hex; *p && n + 1 < sizeof(clean); p++)
    if (*p != ' ') clean[n++] = *p;
  clean[n] = 0;
  r = mst_unhex(clean, out, cap);
  if (r < 0) {
    fprintf(stderr, "bad hex in test: %s\n", hex);
    abort();
  }
  return (size_t)r;
}

#define CHECK_HEX(p, n, hex)                          \
  do {                                                \
    uint8_t mst_x[1024];                              \
    size_t mst_xn = unhex((hex), mst_x, sizeof(mst_x)); \
    CHECK_INT((n), mst_xn);                           \
    if ((size_t)(n) == mst_xn) CHECK_MEM((p), mst_x, mst_xn); \
  } while (0)

/* ------------------------------------------------------------------ */
/* A scripted exchange                                                 */
/* ------------------------------------------------------------------ */

typedef struct {
  uint8_t sent[2048]; /* everything the client sent, in order */
  size_t sent_len;
  int status;         /* MS_SOCKS5_CONNECTED, NEED_MORE or the error */
  size_t tunnel_at;   /* offset in the proxy's bytes where tunnel data
                         starts (valid when CONNECTED) */
  int path;
  int rep;
  char reason[MS_SOCKS5_REASON_LEN];
} run_t;

static void take(ms_socks5_t *s, run_t *r) {
  const uint8_t *p;
  size_t n = ms_socks5_output(s, &p);
  if (n > 0) {
    memcpy(r->sent + r->sent_len, p, n);
    r->sent_len += n;
  }
}

/* Feed the proxy's bytes cut at the given points (sorted, < len). Each
 * piece is an exact-size heap copy so ASan sees overreads. */
static run_t run(const char *host, uint16_t port, const char *user,
                 const char *pass, const uint8_t *proxy, size_t len,
                 const size_t *cuts, size_t ncuts) {
  run_t r;
  ms_socks5_t s;
  size_t start = 0;

  memset(&r, 0, sizeof(r));
  r.status = ms_socks5_init(&s, host, strlen(host), port, user, pass);
  if (r.status < 0) return r;
  take(&s, &r);
  r.status = MS_SOCKS5_NEED_MORE;
  for (size_t i = 0; i <= ncuts && r.status == MS_SOCKS5_NEED_MORE; i++) {
    size_t end = i < ncuts ? cuts[i] : len, n = end - start;
    uint8_t *piece = malloc(n ? n : 1), *q = piece;
    memcpy(piece, proxy + start, n);
    while (n > 0) {
      size_t c = 99;
      int k = ms_socks5_feed(&s, q, n, &c);
      if (c > n) {
        k = -9999;
        c = n;
      }
      q += c;
      n -= c;
      if (k == MS_SOCKS5_SEND) {
        take(&s, &r);
        continue;
      }
      r.status = k;
      if (k == MS_SOCKS5_CONNECTED) r.tunnel_at = end - n;
      if (k != MS_SOCKS5_NEED_MORE) break;
    }
    free(piece);
    start = end;
  }
  r.path = ms_socks5_path_failure(&s);
  r.rep = ms_socks5_rep(&s);
  snprintf(r.reason, sizeof(r.reason), "%s", ms_socks5_reason(&s));
  ms_socks5_wipe(&s);
  return r;
}

static run_t run_whole(const char *host, uint16_t port, const char *user,
                       const char *pass, const char *proxy_hex) {
  uint8_t proxy[1024];
  size_t n = unhex(proxy_hex, proxy, sizeof(proxy));
  return run(host, port, user, pass, proxy, n, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* Client messages                                                     */
/* ------------------------------------------------------------------ */

static void test_messages(void) {
  ms_socks5_t s;
  const uint8_t *p;
  size_t n, c;

  /* No credentials: VER 5, 1 method, 00. */
  CHECK_INT(ms_socks5_init(&s, "example.onion", 13, 8008, NULL, NULL), 0);
  CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_SEND_GREETING);
  n = ms_socks5_output(&s, &p);
  CHECK_HEX(p, n, "05 01 00");
  CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_WAIT_METHOD);
  CHECK_INT(ms_socks5_output(&s, &p), 0); /* nothing until the answer */
  CHECK(p == NULL);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
            MS_SOCKS5_SEND);
  CHECK_INT(c, 2);
  CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_SEND_CONNECT);
  /* CONNECT, ATYP 03, length 13, the name as given, port 8008 = 1f48. */
  n = ms_socks5_output(&s, &p);
  CHECK_HEX(p, n, "05 01 00 03 0d 6578616d706c652e6f6e696f6e 1f48");
  CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_WAIT_REPLY);
  ms_socks5_wipe(&s);

  /* Credentials: methods 00 and 02, then RFC 1929. */
  CHECK_INT(ms_socks5_init(&s, "Foo.Example.", 12, 1, "tor", "isolation1"), 0);
  n = ms_socks5_output(&s, &p);
  CHECK_HEX(p, n, "05 02 00 02");
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x02", 2, &c),
            MS_SOCKS5_SEND);
  CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_SEND_AUTH);
  n = ms_socks5_output(&s, &p);
  CHECK_HEX(p, n, "01 03 746f72 0a 69736f6c6174696f6e31");
  /* The credentials left the state when the message was built. */
  {
    uint8_t zero[MS_SOCKS5_MAX_FIELD] = {0};
    CHECK_MEM(s.user, zero, sizeof(zero));
    CHECK_MEM(s.pass, zero, sizeof(zero));
  }
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x01\x00", 2, &c),
            MS_SOCKS5_SEND);
  /* The auth message is still intact after the feed (async writes). */
  CHECK_INT(p[0], 0x01);
  CHECK_INT(p[2], 't');
  n = ms_socks5_output(&s, &p);
  /* Names are not case-folded or stripped; port 1. */
  CHECK_HEX(p, n, "05 01 00 03 0c 466f6f2e4578616d706c652e 0001");
  ms_socks5_wipe(&s);

  /* IPv4 literal: ATYP 01. 9050 = 235a. */
  CHECK_INT(ms_socks5_init(&s, "127.0.0.1", 9, 9050, NULL, NULL), 0);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
            MS_SOCKS5_SEND);
  n = ms_socks5_output(&s, &p);
  CHECK_HEX(p, n, "05 01 00 01 7f000001 235a");
  ms_socks5_wipe(&s);

  /* IPv6 literal, bare and bracketed: ATYP 04. 443 = 01bb. */
  {
    const char *v6[] = {"::1", "[::1]"};
    for (int i = 0; i < 2; i++) {
      CHECK_INT(ms_socks5_init(&s, v6[i], strlen(v6[i]), 443, NULL, NULL), 0);
      (void)ms_socks5_output(&s, &p);
      CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
                MS_SOCKS5_SEND);
      n = ms_socks5_output(&s, &p);
      CHECK_HEX(p, n, "05 01 00 04 00000000000000000000000000000001 01bb");
      ms_socks5_wipe(&s);
    }
    CHECK_INT(ms_socks5_init(&s, "2001:db8::a:b", 13, 65535, NULL, NULL), 0);
    (void)ms_socks5_output(&s, &p);
    CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
              MS_SOCKS5_SEND);
    n = ms_socks5_output(&s, &p);
    CHECK_HEX(p, n, "05 01 00 04 20010db80000000000000000000a000b ffff");
    ms_socks5_wipe(&s);
  }
  /* Things that look almost like literals are names. */
  {
    const char *names[] = {"1.2.3", "1.2.3.4.5", "[1.2.3.4]", "::g", "[::1",
                           "01.2.3.4x"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
      size_t hl = strlen(names[i]);
      CHECK_INT(ms_socks5_init(&s, names[i], hl, 80, NULL, NULL), 0);
      (void)ms_socks5_output(&s, &p);
      CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
                MS_SOCKS5_SEND);
      n = ms_socks5_output(&s, &p);
      CHECK_INT(n, 4 + 1 + hl + 2);
      CHECK_INT(p[3], MS_SOCKS5_ATYP_DOMAIN);
      CHECK_INT(p[4], hl);
      CHECK_MEM(p + 5, names[i], hl);
      ms_socks5_wipe(&s);
    }
  }
  /* The longest fields: a 255-byte name, 255-byte user and password. */
  {
    char big[256];
    memset(big, 'a', 255);
    big[255] = 0;
    CHECK_INT(ms_socks5_init(&s, big, 255, 80, big, big), 0);
    (void)ms_socks5_output(&s, &p);
    CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x02", 2, &c),
              MS_SOCKS5_SEND);
    n = ms_socks5_output(&s, &p);
    CHECK_INT(n, MS_SOCKS5_MAX_MSG);
    CHECK_INT(p[0], 1);
    CHECK_INT(p[1], 255);
    CHECK_INT(p[257], 255);
    CHECK_INT(p[512], 'a');
    CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x01\x00", 2, &c),
              MS_SOCKS5_SEND);
    n = ms_socks5_output(&s, &p);
    CHECK_INT(n, 4 + 1 + 255 + 2);
    CHECK_INT(p[4], 255);
    ms_socks5_wipe(&s);
  }
}

static void test_init_errors(void) {
  ms_socks5_t s;
  char big[300];
  const uint8_t *p;
  size_t c;

  memset(big, 'b', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  CHECK_INT(ms_socks5_init(&s, "", 0, 80, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_FAILED);
  CHECK_INT(ms_socks5_output(&s, &p), 0);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05", 1, &c), MS_EINVAL);
  CHECK_HAS(ms_socks5_reason(&s), "host");
  CHECK_INT(ms_socks5_init(&s, NULL, 3, 80, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, big, 256, 80, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, "a\0b", 3, 80, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, "host", 4, 0, NULL, NULL), MS_EINVAL);
  CHECK_HAS(ms_socks5_reason(&s), "port");
  CHECK_INT(ms_socks5_init(&s, "host", 4, 80, "u", NULL), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, "host", 4, 80, NULL, "p"), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, "host", 4, 80, "", "p"), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, "host", 4, 80, "u", ""), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, "host", 4, 80, big, "p"), MS_EINVAL);
  CHECK_INT(ms_socks5_init(&s, "host", 4, 80, "u", big), MS_EINVAL);
  CHECK_HAS(ms_socks5_reason(&s), "password");
  /* Host given by length: bytes past host_len are not read. */
  CHECK_INT(ms_socks5_init(&s, "hostXXXX", 4, 80, NULL, NULL), 0);
  CHECK_INT(s.host_len, 4);
  ms_socks5_wipe(&s);
}

/* ------------------------------------------------------------------ */
/* Replies                                                             */
/* ------------------------------------------------------------------ */

static void test_success_replies(void) {
  ms_socks5_t s;
  const uint8_t *p, *addr;
  size_t n, c, alen;
  uint8_t atyp;
  uint16_t port;
  struct {
    const char *hex;
    uint8_t atyp;
    const char *addr_hex;
    uint16_t port;
  } cases[] = {
      {"05 00 00 01 0a000001 1f90", 1, "0a000001", 8080},
      {"05 00 00 01 00000000 0000", 1, "00000000", 0}, /* what Tor sends */
      {"05 00 00 04 fe800000000000000000000000000001 0050", 4,
       "fe800000000000000000000000000001", 80},
      {"05 00 00 03 05 612e622e63 0050", 3, "612e622e63", 80},
      {"05 00 00 03 01 78 ffff", 3, "78", 65535},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t reply[300], want[300];
    size_t rl = unhex(cases[i].hex, reply, sizeof(reply) - 5);
    size_t wl = unhex(cases[i].addr_hex, want, sizeof(want));
    memcpy(reply + rl, "HELLO", 5); /* tunnel data right behind */
    CHECK_INT(ms_socks5_init(&s, "x.onion", 7, 80, NULL, NULL), 0);
    CHECK_INT(ms_socks5_bound(&s, &atyp, &addr, &alen, &port), MS_EINVAL);
    (void)ms_socks5_output(&s, &p);
    CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
              MS_SOCKS5_SEND);
    (void)ms_socks5_output(&s, &p);
    CHECK_INT(ms_socks5_feed(&s, reply, rl + 5, &c), MS_SOCKS5_CONNECTED);
    CHECK_INT(c, rl); /* "HELLO" is handed back */
    CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_CONNECTED_STAGE);
    CHECK_INT(ms_socks5_rep(&s), 0);
    CHECK_INT(ms_socks5_error(&s), 0);
    CHECK_INT(ms_socks5_path_failure(&s), 0);
    CHECK_STR(ms_socks5_reason(&s), "");
    CHECK_INT(ms_socks5_bound(&s, &atyp, &addr, &alen, &port), 0);
    CHECK_INT(atyp, cases[i].atyp);
    CHECK_INT(alen, wl);
    CHECK_MEM(addr, want, wl);
    CHECK_INT(port, cases[i].port);
    /* Later feeds: connected, nothing consumed; eof is clean. */
    n = 77;
    CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"more", 4, &n),
              MS_SOCKS5_CONNECTED);
    CHECK_INT(n, 0);
    CHECK_INT(ms_socks5_output(&s, &p), 0);
    CHECK_INT(ms_socks5_eof(&s), 0);
    ms_socks5_wipe(&s);
  }
}

/* Every REP value: error code, reason, path/fatal. */
static void test_rep_codes(void) {
  struct {
    int rep, err, path;
    const char *str;
  } known[] = {
      {0x01, MS_EPROXY, 1, "general SOCKS server failure"},
      {0x02, MS_EPROXY, 0, "connection not allowed by ruleset"},
      {0x03, -ENETUNREACH, 1, "network unreachable"},
      {0x04, -EHOSTUNREACH, 1, "host unreachable"},
      {0x05, -ECONNREFUSED, 1, "connection refused"},
      {0x06, MS_ETIMEDOUT, 1, "TTL expired"},
      {0x07, MS_EPROXY, 0, "command not supported"},
      {0x08, MS_EPROXY, 0, "address type not supported"},
      {0xf0, -EHOSTUNREACH, 1, "onion service descriptor can not be found"},
      {0xf1, MS_EPROXY, 1, "onion service descriptor is invalid"},
      {0xf2, -EHOSTUNREACH, 1, "onion service introduction failed"},
      {0xf3, -EHOSTUNREACH, 1, "onion service rendezvous failed"},
      {0xf4, MS_EUNAUTHORIZED, 0, "onion service missing client authorization"},
      {0xf5, MS_EUNAUTHORIZED, 0, "onion service wrong client authorization"},
      {0xf6, MS_EADDRESS, 0, "onion service invalid address"},
      {0xf7, MS_ETIMEDOUT, 1, "onion service introduction timed out"},
  };
  int unassigned_ok = 1;

  CHECK_INT(ms_socks5_rep_error(0), 0);
  CHECK_STR(ms_socks5_rep_str(0), "succeeded");
  CHECK_INT(ms_socks5_rep_is_path_failure(0), 0);
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
    char hex[64];
    run_t r;
    CHECK_INT(ms_socks5_rep_error(known[i].rep), known[i].err);
    CHECK_STR(ms_socks5_rep_str(known[i].rep), known[i].str);
    CHECK_INT(ms_socks5_rep_is_path_failure(known[i].rep), known[i].path);
    /* Through the state machine: a full failure reply. */
    snprintf(hex, sizeof(hex), "0500 05%02x0001 00000000 0000", known[i].rep);
    r = run_whole("abc.onion", 80, NULL, NULL, hex);
    CHECK_INT(r.status, known[i].err);
    CHECK_INT(r.path, known[i].path);
    CHECK_INT(r.rep, known[i].rep);
    CHECK_HAS(r.reason, known[i].str);
    snprintf(hex, sizeof(hex), "REP 0x%02x", known[i].rep);
    CHECK_HAS(r.reason, hex);
    /* Reported on the REP byte alone (a lax proxy may send no more). */
    snprintf(hex, sizeof(hex), "0500 05%02x", known[i].rep);
    r = run_whole("abc.onion", 80, NULL, NULL, hex);
    CHECK_INT(r.status, known[i].err);
  }
  /* Every other value is "unassigned": a general failure, path. */
  for (int rep = 0x09; rep <= 0xff; rep++) {
    if (rep >= 0xf0 && rep <= 0xf7) continue;
    if (ms_socks5_rep_error(rep) != MS_EPROXY ||
        ms_socks5_rep_is_path_failure(rep) != 1 ||
        strcmp(ms_socks5_rep_str(rep), "unassigned reply code") != 0)
      unassigned_ok = 0;
  }
  CHECK(unassigned_ok);
  {
    run_t r = run_whole("abc.onion", 80, NULL, NULL, "0500 0580 0001");
    CHECK_INT(r.status, MS_EPROXY);
    CHECK_HAS(r.reason, "unassigned reply code (REP 0x80)");
  }
  /* ms_strerror knows the new code. */
  CHECK_STR(ms_strerror(MS_EPROXY), "proxy refused the request");
  CHECK_STR(ms_err_name(MS_EPROXY), "MS_EPROXY");
}

static void test_malformed(void) {
  struct {
    const char *user, *pass, *proxy_hex, *reason;
    int err;
  } cases[] = {
      {NULL, NULL, "04 00", "version 4", MS_EFRAME},
      {NULL, NULL, "00", "version 0", MS_EFRAME},
      {NULL, NULL, "48 54", "not a SOCKS5 proxy", MS_EFRAME}, /* "HTTP" */
      {NULL, NULL, "05 ff", "none of the offered", MS_EUNAUTHORIZED},
      {"u", "p", "05 ff", "username/password", MS_EUNAUTHORIZED},
      {NULL, NULL, "05 02", "method 0x02, which was not offered", MS_EFRAME},
      {NULL, NULL, "05 01", "method 0x01", MS_EFRAME},
      {"u", "p", "05 03", "method 0x03", MS_EFRAME},
      {"u", "p", "05 02 05 00", "version 5, not 1", MS_EFRAME},
      {"u", "p", "05 02 01 01", "rejected the username/password",
       MS_EUNAUTHORIZED},
      {"u", "p", "05 02 01 ff", "status 0xff", MS_EUNAUTHORIZED},
      {NULL, NULL, "05 00 04 00 00 01", "CONNECT reply has version 4",
       MS_EFRAME},
      {NULL, NULL, "05 00 05 00 01 01", "reserved byte 0x01", MS_EFRAME},
      {NULL, NULL, "05 00 05 00 00 02", "unknown address type 0x02",
       MS_EFRAME},
      {NULL, NULL, "05 00 05 00 00 00", "unknown address type 0x00",
       MS_EFRAME},
      {NULL, NULL, "05 00 05 00 00 05", "unknown address type", MS_EFRAME},
      {NULL, NULL, "05 00 05 00 00 03 00 0050", "empty domain name",
       MS_EFRAME},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    run_t r = run_whole("h.onion", 80, cases[i].user, cases[i].pass,
                        cases[i].proxy_hex);
    CHECK_INT(r.status, cases[i].err);
    CHECK_HAS(r.reason, cases[i].reason);
    CHECK_INT(r.path, 0); /* all fatal */
  }
  /* With credentials the proxy may still choose no authentication. */
  {
    run_t r = run_whole("h.onion", 80, "u", "p", "0500 0500000100000000 0000");
    CHECK_INT(r.status, MS_SOCKS5_CONNECTED);
    CHECK_HEX(r.sent, r.sent_len, "05020002 050100 03 07 682e6f6e696f6e 0050");
  }
}

/* Finality, eof in every stage, misuse. */
static void test_states(void) {
  ms_socks5_t s;
  const uint8_t *p;
  size_t c;

  /* Feeding before the greeting was taken: misuse, not final. */
  CHECK_INT(ms_socks5_init(&s, "h", 1, 1, NULL, NULL), 0);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c), MS_EINVAL);
  CHECK_INT(c, 0);
  CHECK_INT(ms_socks5_stage(&s), MS_SOCKS5_SEND_GREETING);
  CHECK_INT(ms_socks5_eof(&s), MS_EHANGUP);
  CHECK_HAS(ms_socks5_reason(&s), "before the greeting");
  ms_socks5_wipe(&s);

  CHECK_INT(ms_socks5_init(&s, "h", 1, 1, NULL, NULL), 0);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, NULL, 1, &c), MS_EINVAL);
  CHECK_INT(ms_socks5_feed(&s, NULL, 0, &c), MS_SOCKS5_NEED_MORE);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05", 1, &c),
            MS_SOCKS5_NEED_MORE);
  CHECK_INT(ms_socks5_eof(&s), MS_EHANGUP);
  CHECK_HAS(ms_socks5_reason(&s), "before choosing a method");
  CHECK_INT(ms_socks5_path_failure(&s), 1);
  /* Final: the same error afterwards, nothing consumed, no output. */
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x00", 1, &c), MS_EHANGUP);
  CHECK_INT(c, 0);
  CHECK_INT(ms_socks5_output(&s, &p), 0);
  CHECK_INT(ms_socks5_eof(&s), MS_EHANGUP);
  CHECK_INT(ms_socks5_error(&s), MS_EHANGUP);
  ms_socks5_wipe(&s);

  /* Feeding in SEND_CONNECT (answer done, message not taken): misuse. */
  CHECK_INT(ms_socks5_init(&s, "h", 1, 1, "u", "p"), 0);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x02", 2, &c),
            MS_SOCKS5_SEND);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x01\x00", 2, &c), MS_EINVAL);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x01", 1, &c),
            MS_SOCKS5_NEED_MORE);
  CHECK_INT(ms_socks5_eof(&s), MS_EHANGUP);
  CHECK_HAS(ms_socks5_reason(&s), "username/password");
  ms_socks5_wipe(&s);

  CHECK_INT(ms_socks5_init(&s, "h", 1, 1, NULL, NULL), 0);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
            MS_SOCKS5_SEND);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00\x00\x03\x09", 5, &c),
            MS_SOCKS5_NEED_MORE);
  CHECK_INT(ms_socks5_eof(&s), MS_EHANGUP);
  CHECK_HAS(ms_socks5_reason(&s), "before the CONNECT reply");
  ms_socks5_wipe(&s);

  /* A failure reply stops exactly at its REP byte. */
  CHECK_INT(ms_socks5_init(&s, "h", 1, 1, NULL, NULL), 0);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x00", 2, &c),
            MS_SOCKS5_SEND);
  (void)ms_socks5_output(&s, &p);
  CHECK_INT(ms_socks5_feed(&s, (const uint8_t *)"\x05\x04\x00\x01", 4, &c),
            -EHOSTUNREACH);
  CHECK_INT(c, 2);
  CHECK_INT(ms_socks5_eof(&s), -EHOSTUNREACH);
  CHECK_INT(ms_socks5_path_failure(&s), 1);
  ms_socks5_wipe(&s);
}

/* One conversation cut at every byte boundary (two pieces), byte by byte,
 * and at every pair of cuts: same client bytes, same tunnel offset. */
static void test_splits(void) {
  struct {
    const char *user, *pass, *proxy_hex, *sent_hex;
    size_t tunnel_at;
  } convs[] = {
      {NULL, NULL, "0500 05000001 7f000001 1f90 48454c4c4f",
       "050100 050100 03 07 682e6f6e696f6e 0050", 12},
      {"ab", "cde", "0502 0100 05000004 00000000000000000000000000000001 0050 5858",
       "05020002 0102616203636465 050100 03 07 682e6f6e696f6e 0050", 26},
      {NULL, NULL, "0500 05000003 0b 6578616d706c652e636f6d 0050 21",
       "050100 050100 03 07 682e6f6e696f6e 0050", 20},
      {"u", "p", "0502 0101", "05020002 0101750170", 0}, /* rejected */
  };
  for (size_t k = 0; k < sizeof(convs) / sizeof(convs[0]); k++) {
    uint8_t proxy[512];
    size_t len = unhex(convs[k].proxy_hex, proxy, sizeof(proxy));
    run_t ref = run("h.onion", 80, convs[k].user, convs[k].pass, proxy, len,
                    NULL, 0);
    int mismatches = 0;
    size_t cuts[512];
    if (convs[k].tunnel_at) {
      CHECK_INT(ref.status, MS_SOCKS5_CONNECTED);
      CHECK_INT(ref.tunnel_at, convs[k].tunnel_at);
    } else {
      CHECK_INT(ref.status, MS_EUNAUTHORIZED);
    }
    CHECK_HEX(ref.sent, ref.sent_len, convs[k].sent_hex);
    /* every single cut */
    for (size_t i = 1; i < len; i++) {
      run_t r = run("h.onion", 80, convs[k].user, convs[k].pass, proxy, len,
                    &i, 1);
      if (r.status != ref.status || r.tunnel_at != ref.tunnel_at ||
          r.sent_len != ref.sent_len ||
          memcmp(r.sent, ref.sent, r.sent_len) != 0)
        mismatches++;
    }
    CHECK_INT(mismatches, 0);
    /* every pair of cuts */
    mismatches = 0;
    for (size_t i = 1; i < len; i++) {
      for (size_t j = i + 1; j < len; j++) {
        size_t two[2] = {i, j};
        run_t r = run("h.onion", 80, convs[k].user, convs[k].pass, proxy, len,
                      two, 2);
        if (r.status != ref.status || r.tunnel_at != ref.tunnel_at ||
            memcmp(r.sent, ref.sent, ref.sent_len) != 0)
          mismatches++;
      }
    }
    CHECK_INT(mismatches, 0);
    /* byte by byte */
    for (size_t i = 0; i + 1 < len; i++) cuts[i] = i + 1;
    {
      run_t r = run("h.onion", 80, convs[k].user, convs[k].pass, proxy, len,
                    cuts, len - 1);
      CHECK_INT(r.status, ref.status);
      CHECK_INT(r.tunnel_at, ref.tunnel_at);
      CHECK_INT(r.sent_len, ref.sent_len);
    }
  }
  /* The longest reply (255-byte BND.ADDR), byte by byte. */
  {
    uint8_t proxy[2 + MS_SOCKS5_MAX_REPLY + 3];
    size_t cuts[sizeof(proxy)], len = 0;
    run_t r;
    proxy[len++] = 5;
    proxy[len++] = 0;
    proxy[len++] = 5;
    proxy[len++] = 0;
    proxy[len++] = 0;
    proxy[len++] = 3;
    proxy[len++] = 255;
    memset(proxy + len, 'n', 255);
    len += 255;
    proxy[len++] = 0x12;
    proxy[len++] = 0x34;
    memcpy(proxy + len, "abc", 3);
    len += 3;
    for (size_t i = 0; i + 1 < len; i++) cuts[i] = i + 1;
    r = run("h.onion", 80, NULL, NULL, proxy, len, cuts, len - 1);
    CHECK_INT(r.status, MS_SOCKS5_CONNECTED);
    CHECK_INT(r.tunnel_at, len - 3);
  }
}

int main(void) {
  test_messages();
  test_init_errors();
  test_success_replies();
  test_rep_codes();
  test_malformed();
  test_states();
  test_splits();
  return mst_done("socks5");
}
