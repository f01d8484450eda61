/* The tls transform over real sockets: certificates made with the openssl
 * CLI at start (skipped with a message when it is missing), a 4 MiB echo
 * through tls~shs, metadata and identity, verification failures (wrong CA,
 * wrong name) without fallback, missing options, truncation, garbage from
 * a plain client, timeouts, and ms_stream_wrap nesting tls over a plain
 * net stream in both roles. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mstest.h"
#include "multiserver_plugin.h"
#include "util.h"

#define WAIT_MS 20000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

static char dir[256];
static char ca_pem[300], ca2_pem[300], srv_pem[300], srv_key[300], other_pem[300],
    other_key[300];
static char srv_fp[65]; /* sha256 of srv.pem's DER, lower-case hex */

/* ---- certificates ------------------------------------------------------- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  if (rc != 0) fprintf(stderr, "  command failed (%d): %s\n", rc, cmd);
  return rc;
}

static bool make_certs(void) {
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(ca_pem, sizeof ca_pem, "%s/ca.pem", dir);
  snprintf(ca2_pem, sizeof ca2_pem, "%s/ca2.pem", dir);
  snprintf(srv_pem, sizeof srv_pem, "%s/srv.pem", dir);
  snprintf(srv_key, sizeof srv_key, "%s/srv.key", dir);
  snprintf(other_pem, sizeof other_pem, "%s/other.pem", dir);
  snprintf(other_key, sizeof other_key, "%s/other.key", dir);
  const char *q = ">/dev/null 2>&1";
  const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  if (sh("cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 -subj /CN=ms-test-ca %s",
         dir, ec, q) ||
      sh("cd %s && openssl req -x509 %s -keyout ca2.key -out ca2.pem -days 2 -subj /CN=ms-other-ca %s",
         dir, ec, q) ||
      sh("cd %s && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > srv.ext && "
         "openssl req %s -keyout srv.key -out srv.csr -subj /CN=localhost %s && "
         "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem "
         "-days 2 -extfile srv.ext %s",
         dir, ec, q, q) ||
      sh("cd %s && printf 'subjectAltName=DNS:other.example\\nbasicConstraints=CA:FALSE\\n' > other.ext && "
         "openssl req %s -keyout other.key -out other.csr -subj /CN=other.example %s && "
         "openssl x509 -req -in other.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out other.pem "
         "-days 2 -extfile other.ext %s",
         dir, ec, q, q) ||
      sh("cd %s && openssl x509 -in srv.pem -outform DER | openssl dgst -sha256 -r | cut -c1-64 > srv.fp",
         dir))
    return false;
  char p[300];
  snprintf(p, sizeof p, "%s/srv.fp", dir);
  FILE *f = fopen(p, "r");
  if (!f) return false;
  bool ok = fscanf(f, "%64s", srv_fp) == 1 && strlen(srv_fp) == 64;
  fclose(f);
  return ok;
}

/* ---- environment -------------------------------------------------------- */

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
} env_t;

static void env_init(env_t *e, unsigned handshake_ms) {
  ms_options_t d;
  tu_opts_default(&d);
  if (handshake_ms) d.handshake_timeout_ms = handshake_ms;
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, &d), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, &d), 0);
}

static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
}

static ms_popts_t *server_opts(const char *cert, const char *key) {
  ms_popts_t *po = NULL;
  CHECK_INT(ms_popts_new(&po), 0);
  if (cert) CHECK_INT(ms_popts_set(po, "tls", "cert", cert), 0);
  if (key) CHECK_INT(ms_popts_set(po, "tls", "key", key), 0);
  return po;
}

static ms_popts_t *client_opts(const char *ca) {
  ms_popts_t *po = NULL;
  CHECK_INT(ms_popts_new(&po), 0);
  if (ca) CHECK_INT(ms_popts_set(po, "tls", "ca", ca), 0);
  return po;
}

static ms_listener_t *listen_with(ms_t *ms, const char *addr, const ms_popts_t *po,
                                  ms_connection_cb cb, void *arg, tu_lerr_t *lerr) {
  ms_listener_t *l = NULL;
  char why[512] = "";
  int rc = ms_listen_with(ms, addr, po, cb, arg, &l, why, sizeof why);
  CHECK_INT(rc, 0);
  if (rc != 0) {
    fprintf(stderr, "  listen %s: %s (%s)\n", addr, ms_err_name(rc), why);
    return NULL;
  }
  if (lerr) ms_listener_on_error(l, tu_on_listen_error, lerr);
  return l;
}

static int port_of(const char *addr) {
  const char *p = strstr(addr, "127.0.0.1:");
  return p ? atoi(p + strlen("127.0.0.1:")) : -1;
}

static void connect_with(ms_t *ms, const char *addr, const ms_popts_t *po, tu_conn_t *r) {
  memset(r, 0, sizeof *r);
  CHECK_INT(ms_connect_with(ms, addr, po, tu_on_conn, r, NULL), 0);
}

/* ---- a small reader: collects bytes and the end status ------------------ */

typedef struct {
  uint8_t buf[4096];
  size_t len;
  int ended;
  int status;
} rd_t;

static void rd_cb(ms_stream_t *s, int status, const uint8_t *data, size_t len, void *arg) {
  (void)s;
  rd_t *r = arg;
  if (status == 0) {
    size_t take = len < sizeof r->buf - r->len ? len : sizeof r->buf - r->len;
    memcpy(r->buf + r->len, data, take);
    r->len += take;
    return;
  }
  r->status = status;
  r->ended++;
}

/* ======================================================================== */

static void test_echo_tls_shs(void) {
  env_t e;
  env_init(&e, 0);
  tu_echo_t echo = {0};
  ms_popts_t *so = server_opts(srv_pem, srv_key), *co = client_opts(ca_pem);
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls~shs", so, tu_echo_on_connection,
                                 &echo, NULL);
  if (l) {
    char a[512];
    const char *la = ms_listener_address(l);
    CHECK_HAS(la, "~tls~shs:");
    snprintf(a, sizeof a, "net:localhost:%d~tls%s", port_of(la), strstr(la, "~shs:"));
    size_t total = 4u << 20;
    uint8_t *data = malloc(total);
    randombytes_buf(data, total);
    tu_bulk_cfg_t cfg = {.data = data,
                         .total = total,
                         .queue_limit = 1u << 20,
                         .timeout_ms = 60000,
                         .close_timeout_ms = 10000,
                         .opts = co};
    tu_bulk_t b;
    tu_bulk_echo(&e.loop, e.cli, a, &cfg, &echo, &b);
    CHECK_HAS(b.address, "~tls~shs:");
    CHECK(b.has_key && memcmp(b.remote_key, ms_keys(e.srv)->public_key, 32) == 0);
    CHECK_HAS(echo.last_address, "~tls~shs:");
    free(data);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  ms_popts_free(co);
  env_done(&e);
}

static void test_metadata(void) {
  env_t e;
  env_init(&e, 0);
  tu_accept_t acc = {0};
  ms_popts_t *so = server_opts(srv_pem, srv_key), *co = client_opts(ca_pem);
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls", so, tu_on_accept, &acc, NULL);
  if (l) {
    CHECK_STR(ms_listener_address(l) + strlen(ms_listener_address(l)) - 4, "~tls");
    char a[256];
    snprintf(a, sizeof a, "net:localhost:%d~tls", port_of(ms_listener_address(l)));
    tu_conn_t r;
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "tls connect");
    CHECK_INT(r.status, 0);
    if (r.status) fprintf(stderr, "  %s\n", r.reason);
    WAIT(&e.loop, acc.n, 1, "tls accept");
    if (r.s) {
      ms_stream_t *s = r.s;
      const char *addr = ms_stream_address(s);
      CHECK_STR(addr + strlen(addr) - 4, "~tls");
      CHECK_STR(ms_stream_meta(s, "tls.version", NULL), "TLSv1.3");
      const char *cipher = ms_stream_meta(s, "tls.cipher", NULL);
      CHECK(cipher && strlen(cipher) > 0);
      CHECK_STR(ms_stream_meta(s, "tls.peer_cert_sha256", NULL), srv_fp);
      CHECK_STR(ms_stream_meta(s, "tls.servername", NULL), "localhost");
      CHECK_STR(ms_stream_meta(s, "host", NULL), "localhost"); /* inherited */
      const char *kind = NULL;
      size_t len = 0;
      const uint8_t *id = ms_stream_remote_id(s, &kind, &len);
      CHECK(id != NULL);
      CHECK_STR(kind, "x509-sha256");
      CHECK_INT(len, 32);
      uint8_t want[32];
      CHECK_INT(mst_unhex(srv_fp, want, sizeof want), 32);
      if (id && len == 32) CHECK_MEM(id, want, 32);
      CHECK(ms_stream_remote_key(s) == NULL);
      CHECK(!ms_stream_is_server(s));
    }
    if (acc.n) {
      ms_stream_t *s = acc.s[0];
      CHECK(ms_stream_is_server(s));
      CHECK_STR(ms_stream_meta(s, "tls.version", NULL), "TLSv1.3");
      CHECK_STR(ms_stream_meta(s, "tls.servername", NULL), "localhost"); /* the SNI */
      CHECK(ms_stream_meta(s, "tls.peer_cert_sha256", NULL) == NULL);
      CHECK(ms_stream_remote_id(s, NULL, NULL) == NULL);
    }
    /* an IP literal is checked against the IP SAN (and sends no SNI) */
    snprintf(a, sizeof a, "net:127.0.0.1:%d~tls", port_of(ms_listener_address(l)));
    tu_conn_t r2;
    connect_with(e.cli, a, co, &r2);
    WAIT(&e.loop, r2.done, 1, "tls connect by IP");
    CHECK_INT(r2.status, 0);
    if (r2.status) fprintf(stderr, "  %s\n", r2.reason);
    WAIT(&e.loop, acc.n, 2, "tls accept by IP");
    if (acc.n >= 2) CHECK(ms_stream_meta(acc.s[1], "tls.servername", NULL) == NULL);
    /* TLS 1.2 when the peer goes no higher: python would test it too, but
     * a CTX option is not reachable from here; tls.version covers 1.3. */
    ms_stream_t *v[4] = {r.s, acc.n > 0 ? acc.s[0] : NULL, r2.s, acc.n > 1 ? acc.s[1] : NULL};
    tu_close_streams(&e.loop, v, 4, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  ms_popts_free(co);
  env_done(&e);
}

static void test_wrong_ca_no_fallback(void) {
  env_t e;
  env_init(&e, 0);
  tu_accept_t acc = {0}, plain = {0};
  tu_lerr_t lerr = {0};
  ms_popts_t *so = server_opts(srv_pem, srv_key), *co = client_opts(ca2_pem);
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls", so, tu_on_accept, &acc, &lerr);
  /* The second alternative: a plain TCP listener that counts connections. */
  ms_listener_t *l2 = listen_with(e.srv, "net:127.0.0.1:0", NULL, tu_on_accept, &plain, NULL);
  if (l && l2) {
    char a[512];
    snprintf(a, sizeof a, "net:localhost:%d~tls;net:localhost:%d~tls",
             port_of(ms_listener_address(l)), port_of(ms_listener_address(l2)));
    tu_conn_t r;
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "wrong-CA connect");
    CHECK_INT(r.status, MS_EHANDSHAKE);
    CHECK_HAS(r.reason, "verify");
    CHECK_HAS(r.reason, "certificate");
    fprintf(stderr, "  wrong CA: %s\n", r.reason);
    WAIT(&e.loop, lerr.count, 1, "server sees the client's alert");
    CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
    CHECK_HAS(lerr.last_reason, "alert");
    tu_sleep_loop(&e.loop, 200);
    CHECK_INT(plain.n, 0); /* no fallback after an authentication failure */
    CHECK_INT(acc.n, 0);
    /* tls.verify=0 (tests only) accepts it */
    CHECK_INT(ms_popts_set(co, "tls", "verify", "0"), 0);
    snprintf(a, sizeof a, "net:localhost:%d~tls", port_of(ms_listener_address(l)));
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "verify=0 connect");
    CHECK_INT(r.status, 0);
    WAIT(&e.loop, acc.n, 1, "verify=0 accept");
    ms_stream_t *v[2] = {r.s, acc.n ? acc.s[0] : NULL};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    /* no tls.ca: the system CAs do not know our test CA */
    ms_popts_t *none = client_opts(NULL);
    connect_with(e.cli, a, none, &r);
    WAIT(&e.loop, r.done, 1, "system-CA connect");
    CHECK_INT(r.status, MS_EHANDSHAKE);
    CHECK_HAS(r.reason, "certificate verify failed");
    ms_popts_free(none);
  }
  if (l) tu_close_listener(&e.loop, l, WAIT_MS);
  if (l2) tu_close_listener(&e.loop, l2, WAIT_MS);
  ms_popts_free(so);
  ms_popts_free(co);
  env_done(&e);
}

static void test_hostname_mismatch(void) {
  env_t e;
  env_init(&e, 0);
  tu_accept_t acc = {0};
  ms_popts_t *so = server_opts(other_pem, other_key), *co = client_opts(ca_pem);
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls", so, tu_on_accept, &acc, NULL);
  if (l) {
    char a[256];
    int port = port_of(ms_listener_address(l));
    snprintf(a, sizeof a, "net:localhost:%d~tls", port);
    tu_conn_t r;
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "wrong-name connect");
    CHECK_INT(r.status, MS_EHANDSHAKE);
    CHECK_HAS(r.reason, "certificate verify failed: hostname mismatch");
    CHECK_HAS(r.reason, "localhost");
    fprintf(stderr, "  wrong name: %s\n", r.reason);
    CHECK_INT(ms_error_class(r.status), MS_FAIL_AUTH);
    snprintf(a, sizeof a, "net:127.0.0.1:%d~tls", port);
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "wrong-IP connect");
    CHECK_INT(r.status, MS_EHANDSHAKE);
    CHECK_HAS(r.reason, "mismatch");
    /* tls.servername names what to expect */
    CHECK_INT(ms_popts_set(co, "tls", "servername", "other.example"), 0);
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "servername connect");
    CHECK_INT(r.status, 0);
    if (r.s) CHECK_STR(ms_stream_meta(r.s, "tls.servername", NULL), "other.example");
    WAIT(&e.loop, acc.n, 1, "servername accept");
    if (acc.n) CHECK_STR(ms_stream_meta(acc.s[0], "tls.servername", NULL), "other.example");
    ms_stream_t *v[2] = {r.s, acc.n ? acc.s[0] : NULL};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  ms_popts_free(co);
  env_done(&e);
}

static void test_options(void) {
  env_t e;
  env_init(&e, 0);
  tu_accept_t acc = {0};
  tu_lerr_t lerr = {0};
  /* serving without tls.cert: each handshake fails naming the option */
  ms_popts_t *so = server_opts(NULL, srv_key), *co = client_opts(ca_pem);
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls", so, tu_on_accept, &acc, &lerr);
  if (l) {
    char a[256];
    snprintf(a, sizeof a, "net:localhost:%d~tls", port_of(ms_listener_address(l)));
    tu_conn_t r;
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, lerr.count, 1, "missing-cert error");
    CHECK_INT(lerr.last_status, MS_EINVAL);
    CHECK_HAS(lerr.last_reason, "tls.cert");
    fprintf(stderr, "  missing cert: %s\n", lerr.last_reason);
    WAIT(&e.loop, r.done, 1, "client of a misconfigured server");
    CHECK(r.status != 0);
    CHECK_INT(ms_error_class(r.status) == MS_FAIL_AUTH ? 0 : 1, 1); /* a hang-up: path */
    CHECK_HAS(r.reason, "hung up");
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  /* a misspelt option fails the call naming it */
  ms_popts_t *bad = client_opts(NULL);
  CHECK_INT(ms_popts_set(bad, "tls", "certt", "x"), 0);
  tu_conn_t r;
  connect_with(e.cli, "net:localhost:1~tls", bad, &r);
  WAIT(&e.loop, r.done, 1, "misspelt option");
  CHECK_INT(r.status, MS_EINVAL);
  CHECK_HAS(r.reason, "certt");
  ms_popts_free(bad);
  /* an unreadable file is named */
  so = server_opts("/nonexistent/cert.pem", srv_key);
  l = listen_with(e.srv, "net:127.0.0.1:0~tls", so, tu_on_accept, &acc, &lerr);
  if (l) {
    char a[256];
    snprintf(a, sizeof a, "net:localhost:%d~tls", port_of(ms_listener_address(l)));
    int n0 = lerr.count;
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, lerr.count, n0 + 1, "unreadable-cert error");
    CHECK_HAS(lerr.last_reason, "/nonexistent/cert.pem");
    WAIT(&e.loop, r.done, 1, "client of a misconfigured server");
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  /* fields are refused */
  char why[256] = "";
  CHECK_INT(ms_address_check("net:localhost:1~tls:x", false, NULL, why, sizeof why), MS_EADDRESS);
  CHECK_HAS(why, "no fields");
  CHECK_INT(ms_address_check("net:localhost:1~tls", false, NULL, why, sizeof why), 0);
  ms_popts_free(co);
  CHECK_INT(acc.n, 0);
  env_done(&e);
}

static void close_after_write(ms_stream_t *s, int status, void *arg) {
  (void)status;
  (void)arg;
  ms_stream_close(s, NULL, NULL);
}

/* A server that writes "bye" and then closes TCP without close_notify
 * (closing a tls stream sends none): a truncation. */
static void truncating_accept(ms_stream_t *s, void *arg) {
  (void)arg;
  static const char bye[] = "bye";
  ms_buf_t b = {bye, 3};
  CHECK_INT(ms_stream_write(s, &b, 1, close_after_write, NULL), 0);
}

static void clean_accept(ms_stream_t *s, void *arg) {
  (void)arg;
  static const char bye[] = "bye";
  ms_buf_t b = {bye, 3};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  CHECK_INT(ms_stream_shutdown(s, close_after_write, NULL), 0);
}

static void test_truncation(void) {
  env_t e;
  env_init(&e, 0);
  ms_popts_t *so = server_opts(srv_pem, srv_key), *co = client_opts(ca_pem);
  for (int clean = 0; clean < 2; clean++) {
    ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls", so,
                                   clean ? clean_accept : truncating_accept, NULL, NULL);
    if (!l) break;
    char a[256];
    snprintf(a, sizeof a, "net:localhost:%d~tls", port_of(ms_listener_address(l)));
    tu_conn_t r;
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "connect");
    CHECK_INT(r.status, 0);
    if (r.s) {
      rd_t rd = {0};
      CHECK_INT(ms_stream_read_start(r.s, rd_cb, &rd), 0);
      WAIT(&e.loop, rd.ended, 1, "end of the stream");
      CHECK_INT(rd.len, 3);
      CHECK_MEM(rd.buf, "bye", 3);
      CHECK_INT(rd.status, clean ? MS_EOF : MS_EHANGUP);
      ms_stream_t *v[1] = {r.s};
      tu_close_streams(&e.loop, v, 1, WAIT_MS);
    }
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  ms_popts_free(co);
  env_done(&e);
}

static void test_garbage_client(void) {
  env_t e;
  env_init(&e, 0);
  tu_echo_t echo = {0};
  tu_lerr_t lerr = {0};
  ms_popts_t *so = server_opts(srv_pem, srv_key), *co = client_opts(ca_pem);
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls", so, tu_echo_on_connection,
                                 &echo, &lerr);
  if (l) {
    int port = port_of(ms_listener_address(l));
    char a[256];
    snprintf(a, sizeof a, "net:127.0.0.1:%d", port);
    tu_conn_t r;
    connect_with(e.cli, a, NULL, &r);
    WAIT(&e.loop, r.done, 1, "plain connect");
    CHECK_INT(r.status, 0);
    if (r.s) {
      static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
      ms_buf_t b = {junk, sizeof junk - 1};
      rd_t rd = {0};
      CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), 0);
      CHECK_INT(ms_stream_read_start(r.s, rd_cb, &rd), 0);
      WAIT(&e.loop, lerr.count, 1, "server reports the garbage");
      CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
      fprintf(stderr, "  garbage: %s\n", lerr.last_reason);
      WAIT(&e.loop, rd.ended, 1, "server hangs up on the plain client");
      CHECK(rd.len == 0 || rd.buf[0] == 0x15); /* nothing, or a TLS alert record */
      ms_stream_t *v[1] = {r.s};
      tu_close_streams(&e.loop, v, 1, WAIT_MS);
    }
    /* the server keeps serving */
    snprintf(a, sizeof a, "net:localhost:%d~tls", port);
    static uint8_t data[100000];
    randombytes_buf(data, sizeof data);
    tu_bulk_cfg_t cfg = {.data = data,
                         .total = sizeof data,
                         .timeout_ms = 20000,
                         .close_timeout_ms = 10000,
                         .opts = co};
    tu_bulk_t b;
    tu_bulk_echo(&e.loop, e.cli, a, &cfg, &echo, &b);
    CHECK_INT(lerr.count, 1);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  ms_popts_free(co);
  env_done(&e);
}

static void test_timeout(void) {
  env_t e;
  env_init(&e, 0);
  tu_accept_t plain = {0};
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0", NULL, tu_on_accept, &plain, NULL);
  if (l) {
    ms_popts_t *co = client_opts(ca_pem);
    CHECK_INT(ms_popts_set(co, "tls", "handshake_timeout_ms", "300"), 0);
    char a[256];
    snprintf(a, sizeof a, "net:localhost:%d~tls", port_of(ms_listener_address(l)));
    tu_conn_t r;
    uint64_t t0 = tu_now_ms();
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "silent server");
    CHECK_INT(r.status, MS_ETIMEDOUT);
    CHECK_HAS(r.reason, "timed out");
    CHECK(tu_now_ms() - t0 < 5000);
    ms_popts_free(co);
    tu_close_streams(&e.loop, plain.s, plain.n, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  env_done(&e);
}

/* ---- ms_stream_wrap: tls over a plain net stream, both roles ------------- */

typedef struct {
  ms_stream_t *top;
  int status;
  int done;
  char reason[512];
} wrapped_t;

static void on_wrapped(ms_stream_t *s, int status, const char *reason, void *arg) {
  wrapped_t *w = arg;
  w->top = s;
  w->status = status;
  snprintf(w->reason, sizeof w->reason, "%s", reason ? reason : "");
  w->done++;
}

static wrapped_t srv_wrap;
static ms_popts_t *srv_wrap_opts;

static void wrap_on_connection(ms_stream_t *s, void *arg) {
  ms_t *ms = arg;
  char why[256] = "";
  int rc = ms_stream_wrap(ms, s, "tls", MS_ROLE_SERVER, srv_wrap_opts, on_wrapped, &srv_wrap,
                          NULL, why, sizeof why);
  CHECK_INT(rc, 0);
  if (rc != 0) ms_stream_close(s, NULL, NULL);
}

static void test_stream_wrap(void) {
  env_t e;
  env_init(&e, 0);
  ms_popts_t *so = server_opts(srv_pem, srv_key), *co = client_opts(ca_pem);
  /* client side: a plain net stream (host metadata "localhost"), then tls */
  tu_accept_t acc = {0};
  ms_listener_t *l = listen_with(e.srv, "net:127.0.0.1:0~tls", so, tu_on_accept, &acc, NULL);
  if (l) {
    char a[256];
    snprintf(a, sizeof a, "net:localhost:%d", port_of(ms_listener_address(l)));
    tu_conn_t r;
    connect_with(e.cli, a, NULL, &r);
    WAIT(&e.loop, r.done, 1, "plain connect");
    CHECK_INT(r.status, 0);
    if (r.s) {
      wrapped_t w = {0};
      char why[256] = "";
      CHECK_INT(ms_stream_wrap(e.cli, r.s, "tls", MS_ROLE_CLIENT, co, on_wrapped, &w, NULL, why,
                               sizeof why),
                0);
      CHECK_INT(w.done, 0); /* never inside the call */
      WAIT(&e.loop, w.done, 1, "client-side wrap");
      CHECK_INT(w.status, 0);
      if (w.status) fprintf(stderr, "  %s\n", w.reason);
      WAIT(&e.loop, acc.n, 1, "tls accept");
      if (w.top && acc.n) {
        CHECK_HAS(ms_stream_address(w.top), "~tls");
        CHECK_STR(ms_stream_meta(w.top, "tls.peer_cert_sha256", NULL), srv_fp);
        static const char ping[] = "ping over nested tls";
        ms_buf_t b = {ping, sizeof ping - 1};
        rd_t rd = {0};
        CHECK_INT(ms_stream_read_start(acc.s[0], rd_cb, &rd), 0);
        CHECK_INT(ms_stream_write(w.top, &b, 1, NULL, NULL), 0);
        CHECK_INT(ms_stream_shutdown(w.top, NULL, NULL), 0);
        WAIT(&e.loop, rd.ended, 1, "server reads the ping");
        CHECK_INT(rd.status, MS_EOF);
        CHECK_INT(rd.len, sizeof ping - 1);
        CHECK_MEM(rd.buf, ping, sizeof ping - 1);
      }
      ms_stream_t *v[2] = {w.top, acc.n ? acc.s[0] : NULL};
      tu_close_streams(&e.loop, v, 2, WAIT_MS);
    }
    /* a stream without host metadata and no tls.servername: a clear error */
    memset(&acc, 0, sizeof acc);
    tu_accept_t pl = {0};
    ms_listener_t *l2 = listen_with(e.srv, "net:127.0.0.1:0", NULL, tu_on_accept, &pl, NULL);
    if (l2) {
      /* the accepted (server) side of a plain stream has no host metadata */
      snprintf(a, sizeof a, "net:127.0.0.1:%d", port_of(ms_listener_address(l2)));
      connect_with(e.cli, a, NULL, &r);
      WAIT(&e.loop, r.done, 1, "plain connect");
      WAIT(&e.loop, pl.n, 1, "plain accept");
      if (pl.n) {
        wrapped_t w = {0};
        char why[256] = "";
        CHECK_INT(ms_stream_wrap(e.srv, pl.s[0], "tls", MS_ROLE_CLIENT, co, on_wrapped, &w, NULL,
                                 why, sizeof why),
                  0);
        WAIT(&e.loop, w.done, 1, "wrap without a name");
        CHECK_INT(w.status, MS_EINVAL);
        CHECK_HAS(w.reason, "tls.servername");
      }
      ms_stream_t *v[1] = {r.s};
      tu_close_streams(&e.loop, v, 1, WAIT_MS);
      tu_close_listener(&e.loop, l2, WAIT_MS);
    }
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  /* server side: a plain listener whose connections are wrapped in tls */
  memset(&srv_wrap, 0, sizeof srv_wrap);
  srv_wrap_opts = so;
  l = listen_with(e.srv, "net:127.0.0.1:0", NULL, wrap_on_connection, e.srv, NULL);
  if (l) {
    char a[256];
    snprintf(a, sizeof a, "net:localhost:%d~tls", port_of(ms_listener_address(l)));
    tu_conn_t r;
    connect_with(e.cli, a, co, &r);
    WAIT(&e.loop, r.done, 1, "client over the wrapped server");
    CHECK_INT(r.status, 0);
    WAIT(&e.loop, srv_wrap.done, 1, "server-side wrap");
    CHECK_INT(srv_wrap.status, 0);
    if (srv_wrap.top) {
      CHECK_HAS(ms_stream_address(srv_wrap.top), "~tls");
      CHECK_STR(ms_stream_meta(srv_wrap.top, "tls.version", NULL), "TLSv1.3");
    }
    ms_stream_t *v[2] = {r.s, srv_wrap.top};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  ms_popts_free(so);
  ms_popts_free(co);
  env_done(&e);
}

int main(int argc, char **argv) {
  if (system("openssl version >/dev/null 2>&1") != 0) {
    printf("tls: skipped (no openssl CLI to make test certificates)\n");
    printf("tls: 0 passed, 0 failed\n");
    return 0;
  }
  if (!make_certs()) {
    CHECK(false);
    return mst_done("tls");
  }
  const tu_test_t tests[] = {
      {"echo_tls_shs", test_echo_tls_shs},
      {"metadata", test_metadata},
      {"wrong_ca_no_fallback", test_wrong_ca_no_fallback},
      {"hostname_mismatch", test_hostname_mismatch},
      {"options", test_options},
      {"truncation", test_truncation},
      {"garbage_client", test_garbage_client},
      {"timeout", test_timeout},
      {"stream_wrap", test_stream_wrap},
  };
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  tu_rmtree(dir);
  return mst_done("tls");
}
