/* Tor control exchange (wire/torctl.c): the exact commands, every
 * authentication choice, replies split at every byte, multi-line and data
 * replies, asynchronous events, tor's refusals, malformed replies, eof,
 * misuse. The replies are written after control-spec.txt and what tor
 * 0.4.9 sends (checked by test_onion against a real daemon). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mstest.h"
#include "torctl.h"

#define SID "mgalacgufpjdqfu3sfl7pesexoyni62rhs7v2gsk5gfugemd7m6jodid"
#define KEY "ED25519-V3:+ApWB3rfN7XdvFDgEq0HRPYgp4x8lagWUtCdXWVfh1KnIpLhXeQ6fh1U/0MBMR85vuzrnHeoAeG3Yz1jQo5MJQ=="

static const char *PI_COOKIE =
    "250-PROTOCOLINFO 1\r\n"
    "250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=\"/var/lib/tor/control_auth_cookie\"\r\n"
    "250-VERSION Tor=\"0.4.9.11\"\r\n"
    "250 OK\r\n";

/* Everything the client sent, and the last result. */
typedef struct {
  char sent[4096];
  size_t sent_len;
  int result;
  int cookies; /* NEED_COOKIE events */
} run_t;

static void take(ms_torctl_t *t, run_t *r) {
  const uint8_t *p;
  size_t n = ms_torctl_output(t, &p);
  if (n && r->sent_len + n < sizeof r->sent) {
    memcpy(r->sent + r->sent_len, p, n);
    r->sent_len += n;
    r->sent[r->sent_len] = '\0';
  }
}

/* Feed reply bytes in pieces of step bytes (0: whole), answering SEND and
 * NEED_COOKIE, until a result other than NEED_MORE/SEND/NEED_COOKIE. */
static int feed(ms_torctl_t *t, run_t *r, const char *reply, size_t step) {
  size_t len = strlen(reply), off = 0;
  int res = MS_TORCTL_NEED_MORE;
  while (off < len) {
    size_t n = step ? (len - off < step ? len - off : step) : len - off;
    uint8_t *piece = malloc(n), *q = piece;
    memcpy(piece, reply + off, n);
    off += n;
    while (n > 0) {
      size_t c = 12345;
      res = ms_torctl_feed(t, q, n, &c);
      CHECK(c <= n);
      q += c;
      n -= c;
      if (res == MS_TORCTL_NEED_COOKIE) {
        uint8_t cookie[32];
        for (int i = 0; i < 32; i++) cookie[i] = (uint8_t)(i * 17);
        r->cookies++;
        CHECK_INT(ms_torctl_set_cookie(t, cookie, 32), 0);
        res = MS_TORCTL_SEND;
      }
      if (res == MS_TORCTL_SEND) {
        take(t, r);
        continue;
      }
      if (res != MS_TORCTL_NEED_MORE) break;
    }
    free(piece);
    if (res != MS_TORCTL_NEED_MORE && res != MS_TORCTL_SEND) break;
  }
  r->result = res;
  return res;
}

static const char *cookie_hex(void) {
  static char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02X", (unsigned)(i * 17) & 0xff);
  return hex;
}

static void test_cookie_flow(void) {
  for (size_t step = 0; step <= 7; step++) {
    ms_torctl_t t;
    run_t r;
    memset(&r, 0, sizeof r);
    CHECK_INT(ms_torctl_init(&t, NULL, 8008, "127.0.0.1:41234", NULL), 0);
    CHECK_INT(ms_torctl_stage(&t), MS_TORCTL_SEND_PROTOCOLINFO);
    take(&t, &r);
    CHECK_STR(r.sent, "PROTOCOLINFO 1\r\n");
    char reply[2048];
    snprintf(reply, sizeof reply,
             "%s250 OK\r\n"
             "250-ServiceID=" SID "\r\n"
             "250-PrivateKey=" KEY "\r\n"
             "250 OK\r\n",
             PI_COOKIE);
    CHECK_INT(feed(&t, &r, reply, step), MS_TORCTL_PUBLISHED);
    CHECK_INT(r.cookies, 1);
    CHECK_STR(ms_torctl_cookie_file(&t), "/var/lib/tor/control_auth_cookie");
    CHECK_INT(ms_torctl_methods(&t), MS_TORCTL_METHOD_COOKIE | MS_TORCTL_METHOD_SAFECOOKIE);
    char want[1024];
    snprintf(want, sizeof want,
             "PROTOCOLINFO 1\r\nAUTHENTICATE %s\r\n"
             "ADD_ONION NEW:ED25519-V3 Port=8008,127.0.0.1:41234\r\n",
             cookie_hex());
    CHECK_STR(r.sent, want);
    CHECK_STR(ms_torctl_service_id(&t), SID);
    CHECK_STR(ms_torctl_private_key(&t), KEY);
    /* Events while published are ignored. */
    size_t c;
    CHECK_INT(ms_torctl_feed(&t, (const uint8_t *)"650 STATUS_CLIENT NOTICE X\r\n", 28, &c),
              MS_TORCTL_NEED_MORE);
    CHECK_INT(c, 28);
    CHECK_INT(ms_torctl_delete(&t), 0);
    r.sent_len = 0;
    take(&t, &r);
    CHECK_STR(r.sent, "DEL_ONION " SID "\r\n");
    CHECK_INT(feed(&t, &r, "250 OK\r\n", step), MS_TORCTL_DELETED);
    CHECK_INT(ms_torctl_eof(&t), 0);
    ms_torctl_wipe(&t);
  }
}

static void test_saved_key_and_password(void) {
  ms_torctl_t t;
  run_t r;
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_torctl_init(&t, "pa\"ss\\w rd", 80, "[::1]:9", KEY), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r,
                 "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n"
                 "250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n"
                 "250 OK\r\n250-ServiceID=" SID "\r\n250 OK\r\n", 0),
            MS_TORCTL_PUBLISHED);
  CHECK_STR(r.sent, "PROTOCOLINFO 1\r\nAUTHENTICATE \"pa\\\"ss\\\\w rd\"\r\n"
                    "ADD_ONION " KEY " Port=80,[::1]:9\r\n");
  CHECK_STR(ms_torctl_private_key(&t), "");
  CHECK_INT(r.cookies, 0);

  /* NULL authentication: a bare AUTHENTICATE. Bare LF line ends. */
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", KEY), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r,
                 "250-PROTOCOLINFO 1\n250-AUTH METHODS=NULL\n250 OK\n250 OK\n"
                 "250-ServiceID=" SID "\n250 OK\n", 1),
            MS_TORCTL_PUBLISHED);
  CHECK_STR(r.sent, "PROTOCOLINFO 1\r\nAUTHENTICATE\r\nADD_ONION " KEY " Port=80,127.0.0.1:9\r\n");
}

static void test_auth_refusals(void) {
  ms_torctl_t t;
  run_t r;
  /* A password, but tor takes cookies only. */
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_torctl_init(&t, "pw", 80, "127.0.0.1:9", NULL), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r, PI_COOKIE, 0), MS_EUNAUTHORIZED);
  CHECK_HAS(ms_torctl_reason(&t), "COOKIE");
  /* No password, tor wants one. */
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", NULL), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r, "250-AUTH METHODS=HASHEDPASSWORD\r\n250 OK\r\n", 0),
            MS_EUNAUTHORIZED);
  CHECK_HAS(ms_torctl_reason(&t), "HASHEDPASSWORD");
  /* SAFECOOKIE only: not supported. */
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", NULL), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r, "250-AUTH METHODS=SAFECOOKIE COOKIEFILE=\"/x\"\r\n250 OK\r\n", 0),
            MS_EUNAUTHORIZED);
  /* 515 from AUTHENTICATE. */
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_torctl_init(&t, "pw", 80, "127.0.0.1:9", NULL), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r,
                 "250-AUTH METHODS=HASHEDPASSWORD\r\n250 OK\r\n"
                 "515 Authentication failed: Password did not match HashedControlPassword value from configuration\r\n",
                 3),
            MS_EUNAUTHORIZED);
  CHECK_HAS(ms_torctl_reason(&t), "515");
  CHECK_HAS(ms_torctl_reason(&t), "AUTHENTICATE");
  /* Final: later feeds give the same error. */
  size_t c;
  CHECK_INT(ms_torctl_feed(&t, (const uint8_t *)"250 OK\r\n", 8, &c), MS_EUNAUTHORIZED);
  CHECK_INT(ms_torctl_eof(&t), MS_EUNAUTHORIZED);
  /* A cookie of the wrong size. */
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", NULL), 0);
  take(&t, &r);
  CHECK_INT(ms_torctl_feed(&t, (const uint8_t *)PI_COOKIE, strlen(PI_COOKIE), &c),
            MS_TORCTL_NEED_COOKIE);
  CHECK_INT(ms_torctl_feed(&t, (const uint8_t *)"x", 1, &c), MS_EINVAL); /* misuse */
  CHECK_INT(ms_torctl_set_cookie(&t, (const uint8_t *)"short", 5), MS_EINVAL);
  CHECK_INT(ms_torctl_stage(&t), MS_TORCTL_FAILED);
}

static void test_add_refusals(void) {
  ms_torctl_t t;
  run_t r;
  const char *pre = "250-AUTH METHODS=NULL\r\n250 OK\r\n250 OK\r\n";
  char reply[1024];
  struct {
    const char *add;
    int want;
    const char *has;
  } cases[] = {
      {"550 Onion address collision\r\n", MS_EPROXY, "550"},
      {"512 Invalid VIRTPORT/TARGET\r\n", MS_EPROXY, "ADD_ONION"},
      {"250-ServiceID=tooshort\r\n250 OK\r\n", MS_EFRAME, "ServiceID"},
      {"250-ServiceID=" SID "\r\n250-PrivateKey=RSA1024:abc\r\n250 OK\r\n", MS_EFRAME, "PrivateKey"},
      {"250 OK\r\n", MS_EFRAME, "without a ServiceID"},
      {"250-ServiceID=" SID "\r\n250 OK\r\n", MS_EFRAME, "no PrivateKey"},
      {"hello\r\n", MS_EFRAME, "not a control-protocol"},
      {"25\r\n", MS_EFRAME, "not a control-protocol"},
      {"250/OK\r\n", MS_EFRAME, "not a control-protocol"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memset(&r, 0, sizeof r);
    CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", NULL), 0);
    take(&t, &r);
    snprintf(reply, sizeof reply, "%s%s", pre, cases[i].add);
    CHECK_INT(feed(&t, &r, reply, i % 3), cases[i].want);
    CHECK_HAS(ms_torctl_reason(&t), cases[i].has);
  }
  /* DEL_ONION refused. */
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", KEY), 0);
  take(&t, &r);
  snprintf(reply, sizeof reply, "%s250-ServiceID=" SID "\r\n250 OK\r\n", pre);
  CHECK_INT(feed(&t, &r, reply, 0), MS_TORCTL_PUBLISHED);
  CHECK_INT(ms_torctl_delete(&t), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r, "552 Unknown Onion Service id\r\n", 0), MS_EPROXY);
  CHECK_HAS(ms_torctl_reason(&t), "DEL_ONION");
}

static void test_skipping(void) {
  /* Events before the reply, a data reply, a multi-line error, a line
   * over the limit. */
  ms_torctl_t t;
  run_t r;
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", KEY), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r,
                 "650 CIRC 1 LAUNCHED\r\n"
                 "250+PROTOCOLINFO 1\r\nAUTH METHODS=COOKIE\r\n.. dot-stuffed\r\n.\r\n"
                 "250-AUTH METHODS=NULL\r\n650-EVENT\r\n650 END\r\n250 OK\r\n"
                 "250 OK\r\n250-ServiceID=" SID "\r\n250 OK\r\n",
                 5),
            MS_TORCTL_PUBLISHED);
  CHECK_INT(ms_torctl_methods(&t), MS_TORCTL_METHOD_NULL);

  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", KEY), 0);
  take(&t, &r);
  CHECK_INT(feed(&t, &r, "551-first\r\n551 second\r\n", 0), MS_EPROXY);
  CHECK_HAS(ms_torctl_reason(&t), "second");

  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", KEY), 0);
  take(&t, &r);
  char *big = malloc(MS_TORCTL_LINE_MAX + 10);
  memset(big, 'a', MS_TORCTL_LINE_MAX + 8);
  memcpy(big, "250-", 4);
  big[MS_TORCTL_LINE_MAX + 8] = '\0';
  CHECK_INT(feed(&t, &r, big, 0), MS_EFRAME);
  CHECK_HAS(ms_torctl_reason(&t), "longer");
  free(big);

  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", KEY), 0);
  take(&t, &r);
  size_t c;
  CHECK_INT(ms_torctl_feed(&t, (const uint8_t *)"250-x\0y\r\n", 9, &c), MS_EFRAME);
}

static void test_eof_and_misuse(void) {
  ms_torctl_t t;
  run_t r;
  size_t c;
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", KEY), 0);
  /* Feeding before taking the command is misuse, not final. */
  CHECK_INT(ms_torctl_feed(&t, (const uint8_t *)"250 OK\r\n", 8, &c), MS_EINVAL);
  CHECK_INT(ms_torctl_delete(&t), MS_EINVAL);
  take(&t, &r);
  CHECK_INT(ms_torctl_feed(&t, (const uint8_t *)"250-AUTH", 8, &c), MS_TORCTL_NEED_MORE);
  CHECK_INT(ms_torctl_eof(&t), MS_EHANGUP);
  CHECK_HAS(ms_torctl_reason(&t), "before the exchange ended");
  CHECK_INT(ms_torctl_feed(&t, NULL, 0, &c), MS_EHANGUP);

  const uint8_t *p;
  CHECK_INT(ms_torctl_output(&t, &p), 0);
  CHECK(p == NULL);
  /* Bad arguments. */
  CHECK_INT(ms_torctl_init(&t, "", 80, "127.0.0.1:9", NULL), MS_EINVAL);
  CHECK_INT(ms_torctl_init(&t, "a\nb", 80, "127.0.0.1:9", NULL), MS_EINVAL);
  CHECK_INT(ms_torctl_init(&t, NULL, 0, "127.0.0.1:9", NULL), MS_EINVAL);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1 9", NULL), MS_EINVAL);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "", NULL), MS_EINVAL);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_torctl_init(&t, NULL, 80, "127.0.0.1:9", "ED25519-V3:short"), MS_EINVAL);
  CHECK_INT(ms_torctl_stage(&t), MS_TORCTL_FAILED);
  /* Validators. */
  CHECK(ms_torctl_check_service_id(SID, strlen(SID)));
  CHECK(!ms_torctl_check_service_id("MGALACGUFPJDQFU3SFL7PESEXOYNI62RHS7V2GSK5GFUGEMD7M6JODID", 56));
  CHECK(!ms_torctl_check_service_id(SID, 55));
  CHECK(!ms_torctl_check_service_id("mgalacgufpjdqfu3sfl7pesexoyni62rhs7v2gsk5gfugemd7m6jodi1", 56));
  CHECK(ms_torctl_check_key(KEY, strlen(KEY)));
  CHECK(!ms_torctl_check_key(KEY, strlen(KEY) - 1));
  CHECK(!ms_torctl_check_key("RSA1024:" KEY, strlen(KEY) + 8));
}

int main(void) {
  test_cookie_flow();
  test_saved_key_and_password();
  test_auth_refusals();
  test_add_refusals();
  test_skipping();
  test_eof_and_misuse();
  return mst_done("torctl");
}
