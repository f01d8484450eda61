/*
 * The ws transport over real sockets: bulk echo (plain and under shs), a
 * server on net and ws at once, fallback, half-close, addresses and scope
 * (noauth never over ws), metadata and subprotocols, the HTTP handler, and
 * conformance groups in the Autobahn categories (framing, ping/pong,
 * reserved bits, opcodes, fragmentation, UTF-8, limits, close handling)
 * driven by a raw TCP peer that sends hand-built frames to our server and
 * checks our answer bytes, and by a raw TCP fake server against our client.
 *
 * The raw peer runs on the test's thread with non-blocking sockets, pumping
 * the multiservers' loop while it waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "mstest.h"
#include "util.h"
#include "multiserver_plugin.h"
#include "multiserver_ws.h"
#include "http1.h"

#define WAIT_MS 20000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
} env_t;

static uv_loop_t *g_loop;

static void env_init(env_t *e, const ms_options_t *so, const ms_options_t *co) {
  ms_options_t d;
  tu_opts_default(&d);
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, so ? so : &d), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, co ? co : &d), 0);
  g_loop = &e->loop;
}

static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
  g_loop = NULL;
}

static int addr_port(const char *a) {
  const char *c = strrchr(a, ':');
  return c ? atoi(c + 1) : 0;
}

/* ======================================================================== */
/* raw TCP peer                                                             */
/* ======================================================================== */

static void pump(void) {
  uv_run(g_loop, UV_RUN_NOWAIT);
  usleep(300);
}

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  nonblock(fd);
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static bool raw_send(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t end = tu_now_ms() + WAIT_MS;
  while (n > 0) {
    ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
    if (k > 0) {
      b += k;
      n -= (size_t)k;
      continue;
    }
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN &&
        errno != EINTR)
      return false;
    if (tu_now_ms() > end) return false;
    pump();
  }
  return true;
}

/* 1 with n bytes, 0 at EOF (or reset), -1 on timeout. */
static int raw_read(int fd, uint8_t *buf, size_t n, unsigned timeout_ms) {
  uint64_t end = tu_now_ms() + timeout_ms;
  size_t got = 0;
  while (got < n) {
    ssize_t k = recv(fd, buf + got, n - got, 0);
    if (k > 0) {
      got += (size_t)k;
      continue;
    }
    if (k == 0) return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 0;
    if (tu_now_ms() > end) return -1;
    pump();
  }
  return 1;
}

/* Wait for the peer to close: true at EOF or reset, false if data or a
 * timeout came first. */
static bool raw_eof(int fd, unsigned timeout_ms) {
  uint8_t b;
  return raw_read(fd, &b, 1, timeout_ms) == 0;
}

static char head[8192];

/* Read an HTTP head byte by byte (nothing past it) into head[]. */
static bool raw_head(int fd) {
  size_t n = 0;
  while (n + 1 < sizeof head) {
    if (raw_read(fd, (uint8_t *)head + n, 1, WAIT_MS) != 1) break;
    n++;
    if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0) {
      head[n] = '\0';
      return true;
    }
  }
  head[n] = '\0';
  return false;
}

static int head_status(void) {
  return strncmp(head, "HTTP/1.1 ", 9) == 0 ? atoi(head + 9) : -1;
}

static const char *KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/* Send an upgrade request (extra: more header lines, each ending CRLF) and
 * return the answer's status (head[] holds it). */
static int raw_upgrade_ex(int fd, const char *path, const char *extra) {
  char req[2048];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s\r\n",
                   path, KEY, extra ? extra : "");
  if (!raw_send(fd, req, (size_t)n) || !raw_head(fd)) return -1;
  return head_status();
}

static int raw_ws(int port) {
  int fd = raw_connect(port);
  if (fd < 0) return -1;
  if (raw_upgrade_ex(fd, "/", NULL) != 101) {
    close(fd);
    return -1;
  }
  return fd;
}

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A frame into out: byte 0 given whole (FIN/RSV/opcode), payload masked
 * with MASK when mask. */
static size_t mkframe(uint8_t *out, uint8_t b0, const void *p, size_t n, bool mask) {
  size_t h = 0;
  out[h++] = b0;
  uint8_t mbit = mask ? 0x80 : 0;
  if (n < 126) {
    out[h++] = mbit | (uint8_t)n;
  } else if (n < 65536) {
    out[h++] = mbit | 126;
    out[h++] = (uint8_t)(n >> 8);
    out[h++] = (uint8_t)n;
  } else {
    out[h++] = mbit | 127;
    for (int i = 7; i >= 0; i--) out[h++] = (uint8_t)((uint64_t)n >> (8 * i));
  }
  if (mask) {
    memcpy(out + h, MASK, 4);
    h += 4;
  }
  for (size_t i = 0; i < n; i++)
    out[h + i] = ((const uint8_t *)p)[i] ^ (mask ? MASK[i & 3] : 0);
  return h + n;
}

static uint8_t *fbuf; /* 4 MiB scratch for frames */

static bool send_frame(int fd, uint8_t b0, const void *p, size_t n, bool mask) {
  size_t len = mkframe(fbuf, b0, p, n, mask);
  return raw_send(fd, fbuf, len);
}

typedef struct {
  uint8_t b0;
  bool masked;
  uint8_t key[4];
  size_t len;
  uint8_t *data; /* into rbuf */
} rframe_t;

static uint8_t *rbuf; /* 4 MiB */

/* 1 a frame, 0 EOF, -1 timeout. Payload unmasked into rbuf. */
static int read_frame(int fd, rframe_t *f, unsigned timeout_ms) {
  uint8_t h[14];
  int r = raw_read(fd, h, 2, timeout_ms);
  if (r != 1) return r;
  f->b0 = h[0];
  f->masked = h[1] & 0x80;
  uint64_t len = h[1] & 0x7f;
  if (len == 126) {
    if ((r = raw_read(fd, h + 2, 2, timeout_ms)) != 1) return r;
    len = ((uint64_t)h[2] << 8) | h[3];
  } else if (len == 127) {
    if ((r = raw_read(fd, h + 2, 8, timeout_ms)) != 1) return r;
    len = 0;
    for (int i = 0; i < 8; i++) len = (len << 8) | h[2 + i];
  }
  if (len > (4u << 20)) return 0;
  if (f->masked && (r = raw_read(fd, f->key, 4, timeout_ms)) != 1) return r;
  f->len = (size_t)len;
  f->data = rbuf;
  if (len && (r = raw_read(fd, rbuf, (size_t)len, timeout_ms)) != 1) return r;
  if (f->masked)
    for (size_t i = 0; i < f->len; i++) rbuf[i] ^= f->key[i & 3];
  return 1;
}

/* Read frames until a close frame: its code (1005 for none), or -1 if the
 * connection ended or timed out first. Data frames are skipped. */
static int read_close(int fd) {
  rframe_t f;
  for (;;) {
    if (read_frame(fd, &f, WAIT_MS) != 1) return -1;
    if ((f.b0 & 0x0f) == 0x8) return f.len >= 2 ? (f.data[0] << 8) | f.data[1] : 1005;
  }
}

/* Read data frames until n bytes arrived; compare with want. */
static bool read_echo(int fd, const uint8_t *want, size_t n) {
  static uint8_t *acc;
  if (acc == NULL) acc = malloc(4u << 20);
  size_t got = 0;
  rframe_t f;
  while (got < n) {
    if (read_frame(fd, &f, WAIT_MS) != 1) return false;
    int op = f.b0 & 0x0f;
    if (op == 0x9 || op == 0xa) continue;
    if (op != 0x2 && op != 0x0) return false;
    if (f.masked) return false; /* a server never masks */
    if (got + f.len > n) return false;
    memcpy(acc + got, f.data, f.len);
    got += f.len;
  }
  return memcmp(acc, want, n) == 0;
}

/* ======================================================================== */
/* 1. bulk echo, shs, net and ws at once, fallback, half-close              */
/* ======================================================================== */

#define BULK (16u * 1024 * 1024)

static void bulk_over(const char *listen_addr) {
  env_t e;
  env_init(&e, NULL, NULL);
  uint8_t *data = malloc(BULK);
  randombytes_buf(data, BULK);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, listen_addr, tu_echo_on_connection, &echo);
  if (l) {
    const tu_bulk_cfg_t cfg = {.data = data,
                               .total = BULK,
                               .queue_limit = 1024 * 1024,
                               .timeout_ms = 120000,
                               .close_timeout_ms = WAIT_MS};
    tu_bulk_t b;
    tu_bulk_echo(&e.loop, e.cli, ms_listener_address(l), &cfg, &echo, &b);
    CHECK(strncmp(b.address, "ws://127.0.0.1:", 15) == 0);
    if (strstr(listen_addr, "shs")) CHECK(b.has_key);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  free(data);
  env_done(&e);
}

static void test_bulk(void) {
  bulk_over("ws://127.0.0.1:0");
  bulk_over("ws://127.0.0.1:0~shs");
}

static void test_net_and_ws(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0;ws://127.0.0.1:0/ms~shs",
                                  tu_on_accept, &acc);
  if (l == NULL) return;
  char **alts;
  size_t n = tu_split(ms_listener_address(l), &alts);
  CHECK_INT(n, 2);
  CHECK(n == 2 && strncmp(alts[0], "net:127.0.0.1:", 14) == 0);
  CHECK(n == 2 && strncmp(alts[1], "ws://127.0.0.1:", 15) == 0);
  CHECK(n == 2 && strstr(alts[1], "/ms~shs:") != NULL);
  for (size_t i = 0; i < n; i++) {
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, alts[i], &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect");
    CHECK_INT(r.status, 0);
    WAIT(&e.loop, acc.n, (int)i + 1, "accept");
    if (r.s) {
      if (i == 1) {
        CHECK_STR(ms_stream_meta(r.s, "ws.path", NULL), "/ms");
        CHECK_STR(ms_stream_meta(r.s, "host", NULL), "127.0.0.1");
        CHECK(ms_stream_remote_key(r.s) != NULL);
        CHECK_STR(ms_stream_meta(acc.s[i], "ws.path", NULL), "/ms");
        CHECK(strncmp(ms_stream_address(acc.s[i]), "ws://127.0.0.1:", 15) == 0);
        CHECK(ms_stream_is_server(acc.s[i]));
      }
      tu_close_streams(&e.loop, &r.s, 1, WAIT_MS);
    }
  }
  tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
  tu_split_free(alts, n);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_fallback(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  tu_lerr_t lerr = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "ws://127.0.0.1:0/here", tu_on_accept, &acc);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  int port = addr_port(ms_listener_address(l));
  (void)port;
  char a[512];
  /* A closed port, then a path the server does not serve (404: a path
   * failure), then the right one. */
  snprintf(a, sizeof a, "ws://127.0.0.1:%d/here;ws://127.0.0.1:%d/elsewhere;%s",
           tu_closed_port(), addr_port(ms_listener_address(l)), ms_listener_address(l));
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, 1, "accept");
  WAIT(&e.loop, lerr.count, 1, "404 reported to the listener");
  CHECK_HAS(lerr.last_reason, "404");
  if (r.s) tu_close_streams(&e.loop, &r.s, 1, WAIT_MS);
  /* Only the wrong path: the reason says what the server answered. */
  snprintf(a, sizeof a, "ws://127.0.0.1:%d/elsewhere", addr_port(ms_listener_address(l)));
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "404");
  tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_half_close(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_half_close(&e.loop, e.srv, e.cli, "ws://127.0.0.1:0", 0, MS_EOF, WAIT_MS, NULL);
  env_done(&e);
  /* Closing without shutdown: the client sees TCP end without a close
   * frame, which is a hang-up. */
  env_init(&e, NULL, NULL);
  tu_half_close(&e.loop, e.srv, e.cli, "ws://127.0.0.1:0", 1, MS_EHANGUP, WAIT_MS, NULL);
  env_done(&e);
  env_init(&e, NULL, NULL);
  tu_half_close(&e.loop, e.srv, e.cli, "ws://127.0.0.1:0~shs", 0, MS_EOF, WAIT_MS, NULL);
  env_done(&e);
}

/* ======================================================================== */
/* 2. addresses, scope, noauth                                              */
/* ======================================================================== */

static void test_addresses(void) {
  char reason[256], *canon = NULL;
  const char *ok_dial[] = {"ws://example.com", "ws://example.com:8989",
                           "ws://1.2.3.4:80/a/b?x=1", "wss://[::1]:8443/p",
                           "ws://host:8989~shs:1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s="};
  for (size_t i = 0; i < sizeof ok_dial / sizeof *ok_dial; i++) {
    int rc = ms_address_check(ok_dial[i], false, &canon, reason, sizeof reason);
    CHECK_INT(rc, 0);
    if (rc) fprintf(stderr, "  %s: %s\n", ok_dial[i], reason);
    ms_free(canon);
    canon = NULL;
  }
  const char *bad[] = {"ws:host",          "ws://",          "ws://::1:80",
                       "ws://[::1:80",     "ws://host:0",    "ws://host:70000",
                       "ws://host:x",      "ws://ho st",     "ws://[1.2.3.4]:80",
                       "ws://host:80:81",  "ws://bad_!;host"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int rc = ms_address_check(bad[i], false, NULL, reason, sizeof reason);
    CHECK(rc != 0);
    if (rc == 0) fprintf(stderr, "  accepted %s\n", bad[i]);
  }
  CHECK_INT(ms_address_check("ws://127.0.0.1:0", true, NULL, reason, sizeof reason), 0);
  CHECK(ms_address_check("ws://127.0.0.1:0/p?q", true, NULL, reason, sizeof reason) != 0);
  /* noauth: never over ws or wss, even with every permission. */
  CHECK_INT(ms_address_check("ws://127.0.0.1:80~noauth", false, NULL, reason, sizeof reason),
            MS_ENOAUTH_REMOTE);
  CHECK_HAS(reason, "web page");
  CHECK_INT(ms_address_check("wss://example.com~noauth", true, NULL, reason, sizeof reason),
            MS_ENOAUTH_REMOTE);
  ms_options_t o;
  tu_opts_default(&o);
  o.allow_remote_noauth = true;
  o.allow_loopback_noauth = true;
  env_t e;
  env_init(&e, &o, &o);
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen(e.srv, "ws://127.0.0.1:0~noauth", tu_on_accept, NULL, &l, reason,
                      sizeof reason),
            MS_ENOAUTH_REMOTE);
  CHECK_HAS(reason, "never allowed over ws");
  /* ... but net with the same options still may. */
  tu_accept_t acc = {0};
  l = tu_listen_ok(e.srv, "net:127.0.0.1:0~noauth", tu_on_accept, &acc);
  if (l) tu_close_listener(&e.loop, l, WAIT_MS);
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, "ws://127.0.0.1:1~noauth", &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, MS_ENOAUTH_REMOTE);
  /* IPv6 listen advertises brackets and the real port. */
  l = tu_listen_ok(e.srv, "ws://[::1]:0/six", tu_on_accept, &acc);
  if (l) {
    const char *a = ms_listener_address(l);
    CHECK(strncmp(a, "ws://[::1]:", 11) == 0 && strstr(a, "/six"));
    CHECK(strstr(a, "]:") && atoi(strstr(a, "]:") + 2) > 0);
    CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect v6");
    CHECK_INT(r.status, 0);
    WAIT(&e.loop, acc.n, 1, "accept v6");
    if (r.s) tu_close_streams(&e.loop, &r.s, 1, WAIT_MS);
    tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  /* A misspelt option fails the listen. */
  ms_popts_t *po;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "ws", "max_mesage", "10"), 0);
  CHECK_INT(ms_listen_with(e.srv, "ws://127.0.0.1:0", po, tu_on_accept, NULL, &l, reason,
                           sizeof reason),
            MS_EINVAL);
  ms_popts_free(po);
  env_done(&e);
}

/* ======================================================================== */
/* 3. conformance: a raw client against our server                          */
/* ======================================================================== */

typedef struct {
  env_t e;
  tu_echo_t echo;
  tu_lerr_t lerr;
  ms_listener_t *l, *lim;
  int port, lim_port;
} srvfix_t;

static void srv_up(srvfix_t *f) {
  memset(f, 0, sizeof *f);
  env_init(&f->e, NULL, NULL);
  f->l = tu_listen_ok(f->e.srv, "ws://127.0.0.1:0", tu_echo_on_connection, &f->echo);
  if (f->l) {
    ms_listener_on_error(f->l, tu_on_listen_error, &f->lerr);
    f->port = addr_port(ms_listener_address(f->l));
  }
  ms_popts_t *po;
  char reason[256];
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "ws", "max_message", "1000"), 0);
  CHECK_INT(ms_popts_set(po, "ws", "origins", "http://good.example,https://also.example"), 0);
  CHECK_INT(ms_popts_set(po, "ws", "protocols", "chat,ssb"), 0);
  CHECK_INT(ms_listen_with(f->e.srv, "ws://127.0.0.1:0/lim", po, tu_echo_on_connection,
                           &f->echo, &f->lim, reason, sizeof reason),
            0);
  ms_popts_free(po);
  if (f->lim) f->lim_port = addr_port(ms_listener_address(f->lim));
}

static void srv_down(srvfix_t *f) {
  if (f->l) tu_close_listener(&f->e.loop, f->l, WAIT_MS);
  if (f->lim) tu_close_listener(&f->e.loop, f->lim, WAIT_MS);
  tu_sleep_loop(&f->e.loop, 50);
  env_done(&f->e);
}

/* A fresh connection gets the echo: the server keeps serving. */
static void still_serving(srvfix_t *f) {
  int fd = raw_ws(f->port);
  CHECK(fd >= 0);
  if (fd < 0) return;
  uint8_t m[300];
  randombytes_buf(m, sizeof m);
  CHECK(send_frame(fd, 0x82, m, sizeof m, true));
  CHECK(read_echo(fd, m, sizeof m));
  close(fd);
}

/* Send bytes on a fresh connection and expect a close with code. */
static void expect_fail(srvfix_t *f, const uint8_t *bytes, size_t n, int code,
                        const char *what) {
  int fd = raw_ws(f->port);
  CHECK(fd >= 0);
  if (fd < 0) return;
  int errs = f->echo.errors;
  CHECK(raw_send(fd, bytes, n));
  int got = read_close(fd);
  if (got != code) fprintf(stderr, "  %s: close %d, want %d\n", what, got, code);
  CHECK_INT(got, code);
  CHECK(raw_eof(fd, WAIT_MS));
  close(fd);
  WAIT(&f->e.loop, f->echo.errors, errs + 1, what);
}

static void test_server_framing(void) {
  srvfix_t f;
  srv_up(&f);
  int fd = raw_ws(f.port);
  CHECK(fd >= 0);
  CHECK(strstr(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL);
  /* Lengths across the 7-bit, 16-bit and 64-bit forms, and empty. */
  size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 100000};
  uint8_t *m = malloc(100000);
  randombytes_buf(m, 100000);
  for (size_t i = 0; fd >= 0 && i < sizeof sizes / sizeof *sizes; i++) {
    CHECK(send_frame(fd, 0x82, m, sizes[i], true));
    if (sizes[i]) CHECK(read_echo(fd, m, sizes[i]));
  }
  /* A text message is delivered as its bytes (echoed in binary). */
  const char *txt = "héllo wörld €𝄞";
  CHECK(send_frame(fd, 0x81, txt, strlen(txt), true));
  CHECK(read_echo(fd, (const uint8_t *)txt, strlen(txt)));
  /* The frame bytes split over many TCP writes. */
  size_t len = mkframe(fbuf, 0x82, m, 1000, true);
  for (size_t i = 0; i < len; i += 7) {
    CHECK(raw_send(fd, fbuf + i, len - i < 7 ? len - i : 7));
    pump();
  }
  CHECK(read_echo(fd, m, 1000));
  /* Several frames in one TCP write. */
  size_t a = mkframe(fbuf, 0x82, m, 10, true);
  a += mkframe(fbuf + a, 0x82, m + 10, 20, true);
  a += mkframe(fbuf + a, 0x82, m + 30, 30, true);
  CHECK(raw_send(fd, fbuf, a));
  CHECK(read_echo(fd, m, 60));
  if (fd >= 0) close(fd);
  free(m);
  /* Unmasked client frame: 1002. */
  uint8_t b[64];
  size_t n = mkframe(b, 0x82, "abc", 3, false);
  expect_fail(&f, b, n, 1002, "unmasked client frame");
  CHECK_INT(f.echo.last_error, MS_EFRAME);
  still_serving(&f);
  srv_down(&f);
}

static void test_server_ping(void) {
  srvfix_t f;
  srv_up(&f);
  int fd = raw_ws(f.port);
  CHECK(fd >= 0);
  rframe_t fr;
  CHECK(send_frame(fd, 0x89, "hello", 5, true));
  CHECK_INT(read_frame(fd, &fr, WAIT_MS), 1);
  CHECK_INT(fr.b0, 0x8a);
  CHECK(!fr.masked);
  CHECK(fr.len == 5 && memcmp(fr.data, "hello", 5) == 0);
  uint8_t p125[125];
  randombytes_buf(p125, sizeof p125);
  CHECK(send_frame(fd, 0x89, p125, 125, true));
  CHECK_INT(read_frame(fd, &fr, WAIT_MS), 1);
  CHECK(fr.b0 == 0x8a && fr.len == 125 && memcmp(fr.data, p125, 125) == 0);
  CHECK(send_frame(fd, 0x89, NULL, 0, true));
  CHECK_INT(read_frame(fd, &fr, WAIT_MS), 1);
  CHECK(fr.b0 == 0x8a && fr.len == 0);
  /* An unsolicited pong is ignored. */
  CHECK(send_frame(fd, 0x8a, "x", 1, true));
  CHECK(send_frame(fd, 0x82, "data", 4, true));
  CHECK(read_echo(fd, (const uint8_t *)"data", 4));
  if (fd >= 0) close(fd);
  /* A ping of 126 bytes: 1002. */
  uint8_t big[126] = {0};
  size_t n = mkframe(fbuf, 0x89, big, 126, true);
  uint8_t *copy = malloc(n);
  memcpy(copy, fbuf, n);
  expect_fail(&f, copy, n, 1002, "ping > 125 bytes");
  free(copy);
  still_serving(&f);
  srv_down(&f);
}

static void test_server_reserved(void) {
  srvfix_t f;
  srv_up(&f);
  uint8_t b[64];
  /* RSV1, RSV2, RSV3 set (no extension was negotiated). */
  uint8_t rsv[] = {0x40, 0x20, 0x10};
  for (size_t i = 0; i < 3; i++) {
    size_t n = mkframe(b, (uint8_t)(0x82 | rsv[i]), "abc", 3, true);
    expect_fail(&f, b, n, 1002, "reserved bit");
  }
  /* On a ping too. */
  size_t n = mkframe(b, 0x89 | 0x40, "p", 1, true);
  expect_fail(&f, b, n, 1002, "reserved bit on a ping");
  /* Reserved opcodes: data 3-7, control 0xb-0xf. */
  uint8_t ops[] = {0x3, 0x7, 0xb, 0xf};
  for (size_t i = 0; i < sizeof ops; i++) {
    n = mkframe(b, (uint8_t)(0x80 | ops[i]), "abc", 3, true);
    expect_fail(&f, b, n, 1002, "reserved opcode");
  }
  still_serving(&f);
  srv_down(&f);
}

static void test_server_fragments(void) {
  srvfix_t f;
  srv_up(&f);
  int fd = raw_ws(f.port);
  CHECK(fd >= 0);
  rframe_t fr;
  /* Three fragments with a ping between: the pong comes at once, the data
   * in order. */
  CHECK(send_frame(fd, 0x02, "one-", 4, true));
  CHECK(send_frame(fd, 0x89, "mid", 3, true));
  CHECK_INT(read_frame(fd, &fr, WAIT_MS), 1);
  /* The echo of the first fragment may come first. */
  while (fr.b0 != 0x8a && read_frame(fd, &fr, WAIT_MS) == 1) {
  }
  CHECK(fr.b0 == 0x8a && fr.len == 3 && memcmp(fr.data, "mid", 3) == 0);
  CHECK(send_frame(fd, 0x00, "two-", 4, true));
  CHECK(send_frame(fd, 0x80, "three", 5, true));
  /* "one-" may already have been echoed before the pong. */
  close(fd);
  fd = raw_ws(f.port);
  CHECK(send_frame(fd, 0x01, "fr", 2, true));   /* text, fragmented */
  CHECK(send_frame(fd, 0x00, "ag", 2, true));
  CHECK(send_frame(fd, 0x80, "ment", 4, true)); /* FIN continuation */
  CHECK(read_echo(fd, (const uint8_t *)"fragment", 8));
  /* Empty fragments are fine. */
  CHECK(send_frame(fd, 0x02, NULL, 0, true));
  CHECK(send_frame(fd, 0x00, "x", 1, true));
  CHECK(send_frame(fd, 0x80, NULL, 0, true));
  CHECK(read_echo(fd, (const uint8_t *)"x", 1));
  close(fd);
  uint8_t b[128];
  size_t n;
  /* A continuation with nothing to continue. */
  n = mkframe(b, 0x80, "x", 1, true);
  expect_fail(&f, b, n, 1002, "continuation without a start");
  /* A new data frame inside a fragmented message. */
  n = mkframe(b, 0x02, "a", 1, true);
  n += mkframe(b + n, 0x82, "b", 1, true);
  expect_fail(&f, b, n, 1002, "data frame inside a fragmented message");
  /* A fragmented control frame. */
  n = mkframe(b, 0x09, "p", 1, true);
  expect_fail(&f, b, n, 1002, "fragmented ping");
  still_serving(&f);
  srv_down(&f);
}

static void test_server_utf8(void) {
  srvfix_t f;
  srv_up(&f);
  uint8_t b[128];
  size_t n;
  const uint8_t overlong[] = {0xc0, 0x80};
  n = mkframe(b, 0x81, overlong, 2, true);
  expect_fail(&f, b, n, 1007, "overlong");
  const uint8_t surrogate[] = {'a', 0xed, 0xa0, 0x80};
  n = mkframe(b, 0x81, surrogate, 4, true);
  expect_fail(&f, b, n, 1007, "surrogate");
  /* Split across fragments: valid halves of one character are fine... */
  int fd = raw_ws(f.port);
  const uint8_t euro[] = {0xe2, 0x82, 0xac};
  CHECK(send_frame(fd, 0x01, euro, 1, true));
  CHECK(send_frame(fd, 0x80, euro + 1, 2, true));
  CHECK(read_echo(fd, euro, 3));
  close(fd);
  /* ... a message ending inside one is not. */
  n = mkframe(b, 0x01, euro, 2, true);
  n += mkframe(b + n, 0x80, "", 0, true);
  expect_fail(&f, b, n, 1007, "truncated character at the end of the message");
  /* A close reason that is not UTF-8. */
  const uint8_t cl[] = {0x03, 0xe8, 0xff, 0xfe};
  n = mkframe(b, 0x88, cl, 4, true);
  expect_fail(&f, b, n, 1007, "close reason not UTF-8");
  CHECK_INT(f.echo.last_error, MS_EFRAME);
  still_serving(&f);
  srv_down(&f);
}

static void test_server_limits(void) {
  srvfix_t f;
  srv_up(&f);
  uint8_t *m = calloc(1, 2000);
  /* The /lim listener has ws.max_message=1000. */
  int fd = raw_connect(f.lim_port);
  CHECK_INT(raw_upgrade_ex(fd, "/lim", NULL), 101);
  CHECK(send_frame(fd, 0x82, m, 1000, true));
  CHECK(read_echo(fd, m, 1000));
  int errs = f.echo.errors;
  /* One frame over the limit: refused from its header. */
  size_t n = mkframe(fbuf, 0x82, m, 0, true);
  fbuf[1] = 0x80 | 126;
  fbuf[2] = 2000 >> 8;
  fbuf[3] = 2000 & 0xff;
  memcpy(fbuf + 4, MASK, 4);
  n = 8;
  CHECK(raw_send(fd, fbuf, n));
  CHECK_INT(read_close(fd), 1009);
  CHECK(raw_eof(fd, WAIT_MS));
  close(fd);
  WAIT(&f.e.loop, f.echo.errors, errs + 1, "1009 reported");
  CHECK_INT(f.echo.last_error, MS_ELIMIT);
  /* Fragments adding up to more than the limit. */
  fd = raw_connect(f.lim_port);
  CHECK_INT(raw_upgrade_ex(fd, "/lim", NULL), 101);
  CHECK(send_frame(fd, 0x02, m, 600, true));
  CHECK(send_frame(fd, 0x80, m, 600, true));
  CHECK_INT(read_close(fd), 1009);
  close(fd);
  free(m);
  still_serving(&f);
  srv_down(&f);
}

static void test_server_close(void) {
  srvfix_t f;
  srv_up(&f);
  /* A close 1000: the echo server sees EOF, shuts down: our close 1000,
   * then TCP ends. */
  int fd = raw_ws(f.port);
  int eofs = f.echo.eof;
  const uint8_t c1000[] = {0x03, 0xe8, 'b', 'y', 'e'};
  CHECK(send_frame(fd, 0x82, "last", 4, true));
  CHECK(send_frame(fd, 0x88, c1000, sizeof c1000, true));
  CHECK(read_echo(fd, (const uint8_t *)"last", 4));
  CHECK_INT(read_close(fd), 1000);
  CHECK(raw_eof(fd, WAIT_MS));
  close(fd);
  WAIT(&f.e.loop, f.echo.eof, eofs + 1, "EOF from a close frame");
  /* An empty close works too. */
  fd = raw_ws(f.port);
  CHECK(send_frame(fd, 0x88, NULL, 0, true));
  CHECK_INT(read_close(fd), 1000);
  close(fd);
  uint8_t b[64];
  size_t n;
  const uint8_t one[] = {0x03};
  n = mkframe(b, 0x88, one, 1, true);
  expect_fail(&f, b, n, 1002, "1-byte close payload");
  const uint8_t c999[] = {0x03, 0xe7};
  n = mkframe(b, 0x88, c999, 2, true);
  expect_fail(&f, b, n, 1002, "close code 999");
  const uint8_t c1005[] = {0x03, 0xed};
  n = mkframe(b, 0x88, c1005, 2, true);
  expect_fail(&f, b, n, 1002, "close code 1005 on the wire");
  const uint8_t c5000[] = {0x13, 0x88};
  n = mkframe(b, 0x88, c5000, 2, true);
  expect_fail(&f, b, n, 1002, "close code 5000");
  /* A peer failing us with 1011: we answer its close at once and the
   * application sees a hang-up. */
  fd = raw_ws(f.port);
  int errs = f.echo.errors;
  const uint8_t c1011[] = {0x03, 0xf3};
  CHECK(send_frame(fd, 0x88, c1011, 2, true));
  CHECK_INT(read_close(fd), 1011);
  close(fd);
  WAIT(&f.e.loop, f.echo.errors, errs + 1, "1011 reported");
  CHECK_INT(f.echo.last_error, MS_EHANGUP);
  /* TCP EOF in the middle of a frame: a hang-up for the application. */
  fd = raw_ws(f.port);
  errs = f.echo.errors;
  n = mkframe(fbuf, 0x82, "abcdefgh", 8, true);
  CHECK(raw_send(fd, fbuf, n - 3));
  tu_sleep_loop(&f.e.loop, 30);
  shutdown(fd, SHUT_WR); /* a FIN, not a reset */
  rframe_t rf; /* the 5 payload bytes that did come are echoed, then the end */
  while (read_frame(fd, &rf, WAIT_MS) == 1) CHECK(rf.b0 == 0x82);
  close(fd);
  WAIT(&f.e.loop, f.echo.errors, errs + 1, "EOF mid-frame");
  CHECK_INT(f.echo.last_error, MS_EHANGUP);
  still_serving(&f);
  srv_down(&f);
}

static void test_server_handshake(void) {
  srvfix_t f;
  srv_up(&f);
  struct {
    const char *req;
    int status;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
       426},
      {"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       404},
      {"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET / HTTP/1.1\nHost: x\n\n", 400},
      {"GARBAGE\r\n\r\n", 400},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int fd = raw_connect(f.port);
    int lerrs = f.lerr.count;
    CHECK(raw_send(fd, cases[i].req, strlen(cases[i].req)));
    CHECK(raw_head(fd));
    CHECK_INT(head_status(), cases[i].status);
    if (cases[i].status == 426) CHECK(strstr(head, "Sec-WebSocket-Version: 13") != NULL);
    CHECK(raw_eof(fd, WAIT_MS));
    close(fd);
    WAIT(&f.e.loop, f.lerr.count, lerrs + 1, "refusal reported");
  }
  /* A head over the size limit: 431. */
  int fd = raw_connect(f.port);
  char *big = malloc(10000);
  int n = snprintf(big, 10000, "GET / HTTP/1.1\r\nX-Pad: ");
  memset(big + n, 'a', 9000);
  CHECK(raw_send(fd, big, (size_t)n + 9000));
  CHECK(raw_head(fd));
  CHECK_INT(head_status(), 431);
  close(fd);
  free(big);
  /* A client that sends nothing is dropped after the handshake timeout:
   * tested in test_timeout. Origins: refused, allowed, absent. */
  fd = raw_connect(f.lim_port);
  CHECK_INT(raw_upgrade_ex(fd, "/lim", "Origin: http://evil.example\r\n"), 403);
  close(fd);
  WAIT(&f.e.loop, f.lerr.count, f.lerr.count + 0, "");
  tu_accept_t acc = {0};
  (void)acc;
  fd = raw_connect(f.lim_port);
  CHECK_INT(raw_upgrade_ex(fd, "/lim",
                           "Origin: https://also.example\r\n"
                           "Sec-WebSocket-Protocol: x, ssb\r\nSec-WebSocket-Protocol: chat\r\n"),
            101);
  CHECK(strstr(head, "Sec-WebSocket-Protocol: ssb\r\n") != NULL);
  CHECK(send_frame(fd, 0x82, "o", 1, true));
  CHECK(read_echo(fd, (const uint8_t *)"o", 1));
  close(fd);
  fd = raw_connect(f.lim_port);
  CHECK_INT(raw_upgrade_ex(fd, "/lim", NULL), 101);
  CHECK(strstr(head, "Sec-WebSocket-Protocol") == NULL);
  close(fd);
  /* Frames sent right behind the request (in the same write) are kept:
   * the bytes read past the head are pushed back. */
  fd = raw_connect(f.port);
  char req[512];
  n = snprintf(req, sizeof req,
               "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
               KEY);
  size_t fl = mkframe((uint8_t *)req + n, 0x82, "early", 5, true);
  CHECK(raw_send(fd, req, (size_t)n + fl));
  CHECK(raw_head(fd));
  CHECK_INT(head_status(), 101);
  CHECK(read_echo(fd, (const uint8_t *)"early", 5));
  close(fd);
  still_serving(&f);
  srv_down(&f);
}

/* Metadata the application sees on the server side. */
static void test_server_meta(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "ws://127.0.0.1:0/app", tu_on_accept, &acc);
  if (l == NULL) return;
  int fd = raw_connect(addr_port(ms_listener_address(l)));
  CHECK_INT(raw_upgrade_ex(fd, "/app?room=1",
                           "Origin: http://page.example\r\nSec-WebSocket-Protocol: a, b\r\n"),
            101);
  WAIT(&e.loop, acc.n, 1, "accept");
  if (acc.n) {
    ms_stream_t *s = acc.s[0];
    CHECK_STR(ms_stream_meta(s, "ws.path", NULL), "/app");
    CHECK_STR(ms_stream_meta(s, "ws.origin", NULL), "http://page.example");
    CHECK_STR(ms_stream_meta(s, "ws.protocols", NULL), "a, b");
    CHECK_STR(ms_stream_meta(s, "ws.query", NULL), "room=1");
    CHECK(ms_stream_meta(s, "ws.protocol", NULL) == NULL);
    CHECK(strncmp(ms_stream_address(s), "ws://127.0.0.1:", 15) == 0);
    CHECK(strstr(ms_stream_address(s), "/app") != NULL);
  }
  close(fd);
  tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 4. our client against a raw fake server                                  */
/* ======================================================================== */

static int fake_listen(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)&sa, sizeof sa);
  listen(fd, 8);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  *port = ntohs(sa.sin_port);
  nonblock(fd);
  return fd;
}

static int fake_accept_within(int lfd, unsigned ms) {
  uint64_t end = tu_now_ms() + ms;
  while (tu_now_ms() < end) {
    int fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
      nonblock(fd);
      return fd;
    }
    pump();
  }
  return -1;
}

static int fake_accept(int lfd) { return fake_accept_within(lfd, WAIT_MS); }

/* Read the client's request; answer 101 (with the right accept unless
 * bad_accept) followed by extra bytes in the same write. */
static bool fake_handshake(int fd, bool bad_accept, const uint8_t *extra, size_t en) {
  if (!raw_head(fd)) return false;
  CHECK(strncmp(head, "GET /chat HTTP/1.1\r\n", 20) == 0);
  CHECK(strstr(head, "Sec-WebSocket-Version: 13\r\n") != NULL);
  const char *k = strstr(head, "Sec-WebSocket-Key: ");
  if (k == NULL) return false;
  k += 19;
  char accept[MS_WS_ACCEPT_LEN + 1];
  CHECK_INT(ms_ws_accept(k, 24, accept), 0);
  if (bad_accept) accept[0] = accept[0] == 'A' ? 'B' : 'A';
  char resp[512];
  int n = snprintf(resp, sizeof resp,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                   accept);
  if (en) memcpy(resp + n, extra, en);
  return raw_send(fd, resp, (size_t)n + en);
}

typedef struct {
  uint8_t buf[65536];
  size_t len;
  int status; /* last non-zero status */
  int ends;
} rec_t;

static void rec_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                     void *arg) {
  (void)s;
  rec_t *r = arg;
  if (status == 0) {
    if (r->len + len <= sizeof r->buf) memcpy(r->buf + r->len, data, len);
    r->len += len;
    return;
  }
  r->status = status;
  r->ends++;
}

typedef struct {
  env_t e;
  int lfd, port, fd;
  tu_conn_t r;
  rec_t rec;
} clifix_t;

/* Our client connects to the fake server, which answers 101 + extra. */
static bool cli_up(clifix_t *f, const uint8_t *extra, size_t en) {
  memset(f, 0, sizeof *f);
  env_init(&f->e, NULL, NULL);
  f->lfd = fake_listen(&f->port);
  char a[128];
  snprintf(a, sizeof a, "ws://127.0.0.1:%d/chat", f->port);
  CHECK_INT(tu_connect(f->e.cli, a, &f->r, NULL), 0);
  f->fd = fake_accept(f->lfd);
  CHECK(f->fd >= 0);
  CHECK(fake_handshake(f->fd, false, extra, en));
  WAIT(&f->e.loop, f->r.done, 1, "client connect");
  CHECK_INT(f->r.status, 0);
  if (f->r.s == NULL) return false;
  CHECK_INT(ms_stream_read_start(f->r.s, rec_read, &f->rec), 0);
  return true;
}

static void cli_down(clifix_t *f) {
  if (f->r.s) tu_close_streams(&f->e.loop, &f->r.s, 1, WAIT_MS);
  if (f->fd >= 0) close(f->fd);
  close(f->lfd);
  env_done(&f->e);
}

static void cli_write(clifix_t *f, const void *p, size_t n) {
  ms_buf_t b = {p, n};
  CHECK_INT(ms_stream_write(f->r.s, &b, 1, NULL, NULL), 0);
}

/* The client fails with code after the fake server sends bytes. */
static void cli_expect_fail(const uint8_t *bytes, size_t n, int code, int status,
                            const char *what) {
  clifix_t f;
  if (cli_up(&f, NULL, 0)) {
    CHECK(raw_send(f.fd, bytes, n));
    rframe_t fr;
    int got = -1;
    while (read_frame(f.fd, &fr, WAIT_MS) == 1) {
      if ((fr.b0 & 0x0f) == 0x8) {
        CHECK(fr.masked);
        got = fr.len >= 2 ? (fr.data[0] << 8) | fr.data[1] : 1005;
        break;
      }
    }
    if (got != code) fprintf(stderr, "  %s: close %d, want %d\n", what, got, code);
    CHECK_INT(got, code);
    WAIT(&f.e.loop, f.rec.ends, 1, what);
    CHECK_INT(f.rec.status, status);
  }
  cli_down(&f);
}

static void test_client_frames(void) {
  clifix_t f;
  /* A frame in the same TCP write as the 101: pushed back, not lost. */
  uint8_t early[32];
  size_t en = mkframe(early, 0x82, "early", 5, false);
  if (cli_up(&f, early, en)) {
    /* Our frames are masked, each with its own key. */
    cli_write(&f, "abc", 3);
    rframe_t fr;
    CHECK_INT(read_frame(f.fd, &fr, WAIT_MS), 1);
    CHECK(fr.masked && fr.b0 == 0x82 && fr.len == 3 && memcmp(fr.data, "abc", 3) == 0);
    uint8_t k1[4];
    memcpy(k1, fr.key, 4);
    tu_sleep_loop(&f.e.loop, 5);
    cli_write(&f, "def", 3);
    CHECK_INT(read_frame(f.fd, &fr, WAIT_MS), 1);
    CHECK(fr.masked && memcmp(fr.data, "def", 3) == 0);
    CHECK(memcmp(k1, fr.key, 4) != 0);
    /* Writes of one loop turn go out as one TCP write of several frames. */
    for (int i = 0; i < 10; i++) cli_write(&f, "0123456789", 10);
    size_t total = 0;
    while (total < 100 && read_frame(f.fd, &fr, WAIT_MS) == 1) total += fr.len;
    CHECK_INT(total, 100);
    /* Server frames: binary, text, fragmented with a ping inside. */
    uint8_t b[256];
    size_t n = mkframe(b, 0x82, "bin", 3, false);
    n += mkframe(b + n, 0x81, "txt", 3, false);
    n += mkframe(b + n, 0x02, "fr", 2, false);
    n += mkframe(b + n, 0x89, "pi", 2, false);
    n += mkframe(b + n, 0x80, "ag", 2, false);
    CHECK(raw_send(f.fd, b, n));
    /* The pong carries the ping's payload, masked. */
    CHECK_INT(read_frame(f.fd, &fr, WAIT_MS), 1);
    CHECK(fr.b0 == 0x8a && fr.masked && fr.len == 2 && memcmp(fr.data, "pi", 2) == 0);
    uint64_t end = tu_now_ms() + WAIT_MS;
    while (f.rec.len < 15 && tu_now_ms() < end) pump();
    CHECK_INT(f.rec.len, 15);
    CHECK(memcmp(f.rec.buf, "earlybintxtfrag", 15) == 0);
    /* The server's close ends reading with EOF; our shutdown answers it. */
    const uint8_t c1000[] = {0x03, 0xe8};
    n = mkframe(b, 0x88, c1000, 2, false);
    CHECK(raw_send(f.fd, b, n));
    WAIT(&f.e.loop, f.rec.ends, 1, "EOF");
    CHECK_INT(f.rec.status, MS_EOF);
    CHECK_STR(ms_stream_meta(f.r.s, "ws.close_code", NULL), "1000");
    tu_shut_t sh = {0};
    CHECK_INT(ms_stream_shutdown(f.r.s, tu_on_shut, &sh), 0);
    CHECK_INT(read_close(f.fd), 1000);
    WAIT(&f.e.loop, sh.done, 1, "shutdown");
    CHECK_INT(sh.status, 0);
    CHECK(raw_eof(f.fd, WAIT_MS)); /* our FIN after the close frame */
  }
  cli_down(&f);
  uint8_t b[64];
  size_t n;
  n = mkframe(b, 0x82, "abc", 3, true);
  cli_expect_fail(b, n, 1002, MS_EFRAME, "masked server frame");
  n = mkframe(b, 0x82 | 0x40, "abc", 3, false);
  cli_expect_fail(b, n, 1002, MS_EFRAME, "reserved bit from the server");
  n = mkframe(b, 0x85, "abc", 3, false);
  cli_expect_fail(b, n, 1002, MS_EFRAME, "reserved opcode from the server");
  const uint8_t bad[] = {0xf8, 0x88, 0x80, 0x80, 0x80};
  n = mkframe(b, 0x81, bad, sizeof bad, false);
  cli_expect_fail(b, n, 1007, MS_EFRAME, "invalid UTF-8 from the server");
  /* Over the default 16 MiB limit: refused from the header alone. */
  uint8_t h[10] = {0x82, 127, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x01};
  cli_expect_fail(h, sizeof h, 1009, MS_ELIMIT, "frame over max_message");
  /* TCP EOF mid-frame: a hang-up. */
  if (cli_up(&f, NULL, 0)) {
    n = mkframe(b, 0x82, "abcdef", 6, false);
    CHECK(raw_send(f.fd, b, n - 2));
    tu_sleep_loop(&f.e.loop, 20);
    shutdown(f.fd, SHUT_WR);
    close(f.fd);
    f.fd = -1;
    WAIT(&f.e.loop, f.rec.ends, 1, "EOF mid-frame");
    CHECK_INT(f.rec.status, MS_EHANGUP);
  }
  cli_down(&f);
}

static void test_client_handshake(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  int port, lfd = fake_listen(&port);
  char a[128];
  snprintf(a, sizeof a, "ws://127.0.0.1:%d/chat", port);
  /* A wrong Sec-WebSocket-Accept. */
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  int fd = fake_accept(lfd);
  CHECK(fake_handshake(fd, true, NULL, 0));
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "accept");
  close(fd);
  /* Not a 101. */
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  fd = fake_accept(lfd);
  CHECK(raw_head(fd));
  const char *no = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
  CHECK(raw_send(fd, no, strlen(no)));
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "403");
  close(fd);
  /* Hung up before answering. */
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  fd = fake_accept(lfd);
  CHECK(raw_head(fd));
  close(fd);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK(r.status != 0);
  CHECK_HAS(r.reason, "hung up");
  /* No answer at all: the handshake timeout (ws.handshake_timeout_ms). */
  ms_popts_t *po;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "ws", "handshake_timeout_ms", "200"), 0);
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_connect_with(e.cli, a, po, tu_on_conn, &r, NULL), 0);
  ms_popts_free(po);
  fd = fake_accept(lfd);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, MS_ETIMEDOUT);
  close(fd);
  /* Cancel while the TCP connect or the upgrade is pending. */
  ms_connect_t *req;
  CHECK_INT(tu_connect(e.cli, a, &r, &req), 0);
  tu_cancel(&r, req);
  WAIT(&e.loop, r.done, 1, "cancel");
  CHECK_INT(r.status, MS_ECANCELED);
  fd = fake_accept_within(lfd, 200); /* the connect may not have started */
  if (fd >= 0) close(fd);
  CHECK_INT(tu_connect(e.cli, a, &r, &req), 0);
  fd = fake_accept(lfd);
  CHECK(raw_head(fd));
  tu_cancel(&r, req);
  WAIT(&e.loop, r.done, 1, "cancel");
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(raw_eof(fd, WAIT_MS));
  close(fd);
  close(lfd);
  env_done(&e);
}

/* Our client offers subprotocols and an Origin; our server picks one. */
static void test_protocols(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  ms_popts_t *po;
  char reason[256];
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "ws", "protocols", "ssb,chat"), 0);
  CHECK_INT(ms_popts_set(po, "ws", "origins", "http://me.example"), 0);
  tu_accept_t acc = {0};
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen_with(e.srv, "ws://127.0.0.1:0", po, tu_on_accept, &acc, &l, reason,
                           sizeof reason),
            0);
  ms_popts_free(po);
  if (l == NULL) return;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "ws", "protocols", "chat, ssb"), 0);
  CHECK_INT(ms_popts_set(po, "ws", "origin", "http://me.example"), 0);
  tu_conn_t r = {0};
  CHECK_INT(ms_connect_with(e.cli, ms_listener_address(l), po, tu_on_conn, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, 1, "accept");
  if (r.s) CHECK_STR(ms_stream_meta(r.s, "ws.protocol", NULL), "chat");
  if (acc.n) {
    CHECK_STR(ms_stream_meta(acc.s[0], "ws.protocol", NULL), "chat");
    CHECK_STR(ms_stream_meta(acc.s[0], "ws.origin", NULL), "http://me.example");
  }
  if (r.s) tu_close_streams(&e.loop, &r.s, 1, WAIT_MS);
  /* A refused Origin: 403, an authentication-free path failure. */
  CHECK_INT(ms_popts_set(po, "ws", "origin", "http://other.example"), 0);
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_connect_with(e.cli, ms_listener_address(l), po, tu_on_conn, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "403");
  ms_popts_free(po);
  tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 5. the HTTP handler                                                      */
/* ======================================================================== */

static int http_calls;

static void http_cb(ms_http_request_t *req, void *arg) {
  (void)arg;
  http_calls++;
  CHECK(ms_http_request_peer(req) != NULL);
  if (strcmp(ms_http_request_path(req), "/hello") == 0) {
    CHECK_STR(ms_http_request_header(req, "x-test"), "yes");
    CHECK_STR(ms_http_request_target(req), "/hello?x=1");
    CHECK_INT(ms_http_respond(req, 200, "text/plain", "hi there", 8), 0);
    return;
  }
  CHECK_INT(ms_http_respond(req, 404, NULL, NULL, 0), 0);
}

static void test_http_handler(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  CHECK_INT(ms_ws_set_http_handler(e.srv, http_cb, NULL), 0);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "ws://127.0.0.1:0", tu_echo_on_connection, &echo);
  if (l == NULL) return;
  int port = addr_port(ms_listener_address(l));
  int fd = raw_connect(port);
  const char *g = "GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nX-Test: yes\r\n\r\n";
  CHECK(raw_send(fd, g, strlen(g)));
  CHECK(raw_head(fd));
  CHECK_INT(head_status(), 200);
  CHECK(strstr(head, "Content-Length: 8\r\n") != NULL);
  uint8_t body[8];
  CHECK_INT(raw_read(fd, body, 8, WAIT_MS), 1);
  CHECK(memcmp(body, "hi there", 8) == 0);
  CHECK(raw_eof(fd, WAIT_MS));
  close(fd);
  fd = raw_connect(port);
  const char *h = "HEAD /hello?x=1 HTTP/1.1\r\nHost: x\r\nX-Test: yes\r\n\r\n";
  CHECK(raw_send(fd, h, strlen(h)));
  CHECK(raw_head(fd));
  CHECK_INT(head_status(), 200);
  CHECK(raw_eof(fd, WAIT_MS)); /* no body after a HEAD */
  close(fd);
  fd = raw_connect(port);
  const char *p = "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
  CHECK(raw_send(fd, p, strlen(p)));
  CHECK(raw_head(fd));
  CHECK_INT(head_status(), 400);
  close(fd);
  /* WebSocket still works on the same port. */
  fd = raw_ws(port);
  CHECK(fd >= 0);
  CHECK(send_frame(fd, 0x82, "ws", 2, true));
  CHECK(read_echo(fd, (const uint8_t *)"ws", 2));
  close(fd);
  CHECK_INT(http_calls, 2);
  CHECK_INT(ms_ws_set_http_handler(e.srv, NULL, NULL), 0);
  tu_sleep_loop(&e.loop, 20);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* A client that connects and says nothing is dropped (handshake timeout),
 * and closing a listener ends the handshakes it has in progress. */
static void test_timeout(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  ms_popts_t *po;
  char reason[256];
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "ws", "handshake_timeout_ms", "200"), 0);
  tu_lerr_t lerr = {0};
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen_with(e.srv, "ws://127.0.0.1:0", po, tu_on_accept, NULL, &l, reason,
                           sizeof reason),
            0);
  ms_popts_free(po);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  int fd = raw_connect(addr_port(ms_listener_address(l)));
  CHECK(raw_send(fd, "GET / HT", 8));
  CHECK(raw_eof(fd, WAIT_MS));
  CHECK_INT(lerr.last_status, MS_ETIMEDOUT);
  close(fd);
  int fd2 = raw_connect(addr_port(ms_listener_address(l)));
  tu_sleep_loop(&e.loop, 20);
  tu_close_listener(&e.loop, l, WAIT_MS);
  CHECK(raw_eof(fd2, WAIT_MS));
  close(fd2);
  env_done(&e);
}

/* ======================================================================== */
/* 6. wss: ws over the tls transform                                        */
/* ======================================================================== */

static void test_wss(void) {
  char dir[64];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  char cmd[2048];
  const char *k = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  snprintf(cmd, sizeof cmd,
           "cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 -subj /CN=ws-ca "
           ">/dev/null 2>&1 && openssl req %s -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 "
           ">/dev/null 2>&1 && printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && "
           "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem "
           "-days 2 -extfile ext.cnf >/dev/null 2>&1 && openssl req -x509 %s -keyout o.key "
           "-out other.pem -days 2 -subj /CN=other >/dev/null 2>&1",
           dir, k, k, k);
  if (system(cmd) != 0) {
    fprintf(stderr, "  wss: openssl not available, skipped\n");
    tu_rmtree(dir);
    return;
  }
  char cert[128], key[128], ca[128], other[128], reason[256];
  snprintf(cert, sizeof cert, "%s/srv.pem", dir);
  snprintf(key, sizeof key, "%s/srv.key", dir);
  snprintf(ca, sizeof ca, "%s/ca.pem", dir);
  snprintf(other, sizeof other, "%s/other.pem", dir);
  const char *stacks[] = {"wss://127.0.0.1:0/secure", "wss://127.0.0.1:0~shs"};
  uint8_t *data = malloc(4u << 20);
  randombytes_buf(data, 4u << 20);
  for (size_t i = 0; i < 2; i++) {
    env_t e;
    env_init(&e, NULL, NULL);
    ms_popts_t *so, *co;
    CHECK_INT(ms_popts_new(&so), 0);
    CHECK_INT(ms_popts_set(so, "wss", "cert", cert), 0);
    CHECK_INT(ms_popts_set(so, "wss", "key", key), 0);
    CHECK_INT(ms_popts_new(&co), 0);
    CHECK_INT(ms_popts_set(co, "wss", "ca", ca), 0);
    tu_echo_t echo = {0};
    ms_listener_t *l = NULL;
    int rc = ms_listen_with(e.srv, stacks[i], so, tu_echo_on_connection, &echo, &l, reason,
                            sizeof reason);
    CHECK_INT(rc, 0);
    if (rc) fprintf(stderr, "  %s: %s\n", stacks[i], reason);
    if (l) {
      CHECK(strncmp(ms_listener_address(l), "wss://127.0.0.1:", 16) == 0);
      const tu_bulk_cfg_t cfg = {.data = data,
                                 .total = 4u << 20,
                                 .queue_limit = 1024 * 1024,
                                 .timeout_ms = 120000,
                                 .close_timeout_ms = WAIT_MS,
                                 .opts = co};
      tu_bulk_t b;
      tu_bulk_echo(&e.loop, e.cli, ms_listener_address(l), &cfg, &echo, &b);
      CHECK(strncmp(b.address, "wss://127.0.0.1:", 16) == 0);
      if (echo.errors) fprintf(stderr, "  echo error %s\n", ms_err_name(echo.last_error));
      /* A client trusting another CA: refused, the reason says why. */
      ms_popts_t *bad;
      CHECK_INT(ms_popts_new(&bad), 0);
      CHECK_INT(ms_popts_set(bad, "wss", "ca", other), 0);
      tu_conn_t r = {0};
      CHECK_INT(ms_connect_with(e.cli, ms_listener_address(l), bad, tu_on_conn, &r, NULL), 0);
      WAIT(&e.loop, r.done, 1, "wss connect with the wrong CA");
      CHECK(r.status != 0);
      CHECK_HAS(r.reason, "certificate");
      ms_popts_free(bad);
      tu_close_listener(&e.loop, l, WAIT_MS);
    }
    ms_popts_free(so);
    ms_popts_free(co);
    env_done(&e);
  }
  /* A wss listener without a certificate is refused at once. */
  env_t e;
  env_init(&e, NULL, NULL);
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen(e.srv, "wss://127.0.0.1:0", tu_on_accept, NULL, &l, reason, sizeof reason),
            MS_EINVAL);
  CHECK_HAS(reason, "wss.cert");
  env_done(&e);
  free(data);
  tu_rmtree(dir);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"bulk", test_bulk},
      {"net_and_ws", test_net_and_ws},
      {"fallback", test_fallback},
      {"half_close", test_half_close},
      {"addresses", test_addresses},
      {"server_framing", test_server_framing},
      {"server_ping", test_server_ping},
      {"server_reserved", test_server_reserved},
      {"server_fragments", test_server_fragments},
      {"server_utf8", test_server_utf8},
      {"server_limits", test_server_limits},
      {"server_close", test_server_close},
      {"server_handshake", test_server_handshake},
      {"server_meta", test_server_meta},
      {"client_frames", test_client_frames},
      {"client_handshake", test_client_handshake},
      {"protocols", test_protocols},
      {"http_handler", test_http_handler},
      {"timeout", test_timeout},
      {"wss", test_wss},
  };
  if (sodium_init() < 0) return 1;
  fbuf = malloc(4u << 20);
  rbuf = malloc(4u << 20);
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  free(fbuf);
  free(rbuf);
  return mst_done("ws");
}
