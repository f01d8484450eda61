/* onion: the SOCKS5 client transport against real proxies from Debian
 * (microsocks, dante-server's danted) and the onion-service driver against
 * a real tor daemon (control port, DisableNetwork 1), all started by this
 * test on loopback and stopped before it ends. A missing binary skips its
 * tests (counted as skipped, never as passed). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "mstest.h"
#include "util.h"
#include "multiserver_plugin.h"

extern char **environ;

#define WAIT_MS 20000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

static int skipped;

static void skip(const char *what, const char *why) {
  skipped++;
  fprintf(stderr, "SKIP %s: %s\n", what, why);
  printf("skip: %s (%s)\n", what, why);
}

/* ---- daemons ------------------------------------------------------------- */

static const char *find_bin(const char *name) {
  static char buf[4][256];
  static int k;
  const char *dirs[] = {"/usr/bin", "/usr/sbin", "/usr/local/bin",
                        "/usr/local/sbin", "/bin", "/sbin"};
  char *b = buf[k++ % 4];
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    snprintf(b, 256, "%s/%s", dirs[i], name);
    if (access(b, X_OK) == 0) return b;
  }
  return NULL;
}

/* A port in 20000-32000 (below the usual ephemeral range, so a port the
 * kernel hands out for an outgoing connection cannot take it meanwhile)
 * that nobody listens on and that we could bind a moment ago. */
static int free_port(void) {
  static unsigned next;
  if (next == 0) next = 20000 + (unsigned)getpid() % 12000;
  for (int tries = 0; tries < 12000; tries++) {
    int port = 20000 + (int)(next++ % 12000);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    if (ok) return port;
  }
  return 0;
}

static bool port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)port);
  bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

/* Start argv (output to log), wait until it listens on port (0: don't
 * wait). Returns the pid, or -1. */
static pid_t spawn_daemon(char *const argv[], const char *log, int port) {
  posix_spawn_file_actions_t fa;
  pid_t pid;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    fprintf(stderr, "spawn %s: %s\n", argv[0], strerror(rc));
    return -1;
  }
  for (int i = 0; port && i < 300; i++) {
    if (port_open(port)) return pid;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "%s exited early (status %d); log %s\n", argv[0], st, log);
      return -1;
    }
    usleep(20000);
  }
  if (port && !port_open(port)) {
    fprintf(stderr, "%s never listened on %d; log %s\n", argv[0], port, log);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
  }
  return pid;
}

static void stop_daemon(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  for (int i = 0; i < 250; i++) {
    if (waitpid(pid, NULL, WNOHANG) == pid) return;
    usleep(20000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

static char tmpdir[64];

static void tmp_path(char *buf, size_t len, const char *name) {
  snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* microsocks on a free port (user/pass may be NULL). */
static pid_t start_microsocks(int *port, const char *user, const char *pass) {
  const char *bin = find_bin("microsocks");
  char p[8], log[128];
  if (bin == NULL) return -1;
  *port = free_port();
  snprintf(p, sizeof p, "%d", *port);
  tmp_path(log, sizeof log, "microsocks.log");
  if (user) {
    char *argv[] = {(char *)bin, "-i", "127.0.0.1", "-p", p, "-u", (char *)user,
                    "-P", (char *)pass, NULL};
    return spawn_daemon(argv, log, *port);
  }
  char *argv[] = {(char *)bin, "-i", "127.0.0.1", "-p", p, NULL};
  return spawn_daemon(argv, log, *port);
}

/* danted with a config written here: method none, or username (system
 * users: the test's throwaway account). */
static pid_t start_danted(int *port, bool username) {
  const char *bin = find_bin("danted");
  char conf[128], log[128], pidf[128], dlog[128];
  if (bin == NULL) return -1;
  *port = free_port();
  tmp_path(conf, sizeof conf, username ? "danted-user.conf" : "danted.conf");
  tmp_path(log, sizeof log, "danted.out");
  tmp_path(dlog, sizeof dlog, "danted.log");
  tmp_path(pidf, sizeof pidf, "danted.pid");
  FILE *f = fopen(conf, "w");
  if (f == NULL) return -1;
  fprintf(f,
          "logoutput: %s\n"
          "internal: 127.0.0.1 port = %d\n"
          "external: 127.0.0.1\n"
          "clientmethod: none\n"
          "socksmethod: %s\n"
          "user.privileged: root\n"
          "user.unprivileged: nobody\n"
          "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
          "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }\n",
          dlog, *port, username ? "username" : "none");
  fclose(f);
  char *argv[] = {(char *)bin, "-f", conf, "-p", pidf, "-N", "1", NULL};
  return spawn_daemon(argv, log, *port);
}

/* Remove the test's directory tree (tor's data directories included). */
static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}
static void rm_tree(const char *dir) {
  if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    fprintf(stderr, "could not remove all of %s\n", dir);
}

/* ---- environment ------------------------------------------------------ */

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
  tu_echo_t echo;
  ms_listener_t *l;
  char key[64];   /* server key, base64 */
  int port;       /* the echo listener's port */
} env_t;

static void env_init(env_t *e) {
  ms_options_t d;
  tu_opts_default(&d);
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, &d), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, &d), 0);
  e->l = tu_listen_ok(e->srv, "net:127.0.0.1:0~shs", tu_echo_on_connection,
                      &e->echo);
  if (e->l) {
    const char *a = ms_listener_address(e->l);
    const char *k = strstr(a, "~shs:");
    sscanf(a, "net:127.0.0.1:%d", &e->port);
    snprintf(e->key, sizeof e->key, "%s", k ? k + 5 : "");
  }
}

static void env_done(env_t *e) {
  if (e->l) tu_close_listener(&e->loop, e->l, WAIT_MS);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
}

static ms_popts_t *popts(const char *proxy, const char *user,
                         const char *pass, const char *timeout) {
  ms_popts_t *o = NULL;
  CHECK_INT(ms_popts_new(&o), 0);
  if (proxy) CHECK_INT(ms_popts_set(o, "onion", "proxy", proxy), 0);
  if (user) CHECK_INT(ms_popts_set(o, "onion", "user", user), 0);
  if (pass) CHECK_INT(ms_popts_set(o, "onion", "password", pass), 0);
  if (timeout) CHECK_INT(ms_popts_set(o, "onion", "timeout_ms", timeout), 0);
  return o;
}

static int connect_with(env_t *e, const char *addr, const ms_popts_t *o,
                        tu_conn_t *r, ms_connect_t **req) {
  memset(r, 0, sizeof *r);
  return ms_connect_with(e->cli, addr, o, tu_on_conn, r, req);
}

/* ---- echo of N bytes: write all, read all back, close (no half-close:
 * microsocks closes both directions when one ends) -------------------- */

typedef struct {
  ms_stream_t *s;
  uint8_t *data, *got;
  size_t n, recvd;
  int done, status, closed;
} xfer_t;

static void xfer_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((xfer_t *)arg)->closed++;
}

static void xfer_read(ms_stream_t *s, int status, const uint8_t *data,
                      size_t len, void *arg) {
  xfer_t *x = arg;
  if (status < 0) {
    x->status = status;
    x->done = 1;
    ms_stream_read_stop(s);
    return;
  }
  if (x->recvd + len > x->n) len = x->n - x->recvd;
  memcpy(x->got + x->recvd, data, len);
  x->recvd += len;
  if (x->recvd == x->n) {
    x->done = 1;
    ms_stream_read_stop(s);
  }
}

/* CHECKs: n random bytes echo back intact over s; closes s. */
static void echo_over(env_t *e, ms_stream_t *s, size_t n, const char *what) {
  xfer_t x;
  memset(&x, 0, sizeof x);
  x.s = s;
  x.n = n;
  x.data = malloc(n);
  x.got = malloc(n);
  randombytes_buf(x.data, n);
  ms_buf_t b = {x.data, n};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  CHECK_INT(ms_stream_read_start(s, xfer_read, &x), 0);
  WAIT(&e->loop, x.done, 1, what);
  CHECK_INT(x.status, 0);
  CHECK_INT(x.recvd, n);
  CHECK(x.recvd == n && memcmp(x.data, x.got, n) == 0);
  ms_stream_close(s, xfer_closed, &x);
  WAIT(&e->loop, x.closed, 1, what);
  free(x.data);
  free(x.got);
}

static const char *meta(ms_stream_t *s, const char *k) {
  const char *v = ms_stream_meta(s, k, NULL);
  return v ? v : "(none)";
}

/* Connect to onion:localhost:PORT~shs:KEY through proxy list, expect
 * success through want_proxy, echo n bytes. */
static void through(env_t *e, const char *proxy, const char *user,
                    const char *pass, const char *want_proxy, size_t n,
                    const char *what) {
  char addr[256], want[256];
  tu_conn_t r;
  ms_popts_t *o = popts(proxy, user, pass, NULL);
  snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s", e->port, e->key);
  CHECK_INT(connect_with(e, addr, o, &r, NULL), 0);
  ms_popts_free(o);
  WAIT(&e->loop, r.done, 1, what);
  CHECK_INT(r.status, 0);
  if (r.status) {
    fprintf(stderr, "  %s: %s\n", what, r.reason);
    return;
  }
  snprintf(want, sizeof want, "onion:localhost:%d~shs:%s", e->port, e->key);
  CHECK_STR(ms_stream_address(r.s), want);
  CHECK_STR(meta(r.s, "host"), "localhost");
  snprintf(want, sizeof want, "%d", e->port);
  CHECK_STR(meta(r.s, "port"), want);
  CHECK_STR(meta(r.s, "onion.proxy"), want_proxy);
  CHECK(ms_stream_remote_key(r.s) != NULL);
  echo_over(e, r.s, n, what);
}

/* ======================================================================== */

static void test_microsocks(void) {
  int sp;
  pid_t pid = start_microsocks(&sp, NULL, NULL);
  if (pid == -1 && find_bin("microsocks") == NULL) {
    skip("microsocks", "microsocks not installed (apt-get install microsocks)");
    return;
  }
  CHECK(pid > 0);
  if (pid <= 0) return;
  env_t e;
  env_init(&e);
  char px[64], dead[64], list[160];
  snprintf(px, sizeof px, "127.0.0.1:%d", sp);
  through(&e, px, NULL, NULL, px, 1000, "microsocks small echo");
  through(&e, px, NULL, NULL, px, 1u << 20, "microsocks 1 MiB echo");

  /* The first proxy is down: the second one carries it. */
  snprintf(dead, sizeof dead, "127.0.0.1:%d", tu_closed_port());
  snprintf(list, sizeof list, "%s,%s", dead, px);
  through(&e, list, NULL, NULL, px, 4096, "fallback to the second proxy");

  /* Destination refused: the proxy's REP 0x05, a path failure. */
  char addr[512];
  tu_conn_t r;
  ms_popts_t *o = popts(px, NULL, NULL, NULL);
  snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s", tu_closed_port(), e.key);
  CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "refused destination");
  CHECK_INT(r.status, -ECONNREFUSED);
  CHECK_HAS(r.reason, "connection refused");
  CHECK_HAS(r.reason, "REP 0x05");
  CHECK_HAS(r.reason, px);
  CHECK(r.s == NULL);
  /* ... which falls back to the next alternative. */
  snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s;net:localhost:%d~shs:%s" /* same scope: kept in order */,
           tu_closed_port(), e.key, e.port, e.key);
  CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "refused destination, then net");
  CHECK_INT(r.status, 0);
  if (r.s) {
    CHECK(strncmp(ms_stream_address(r.s), "net:127.0.0.1:", 14) == 0);
    echo_over(&e, r.s, 100, "net after onion");
  }
  ms_popts_free(o);

  /* Every proxy down: a path failure, so the next alternative is tried. */
  snprintf(list, sizeof list, "%s,127.0.0.1:%d", dead, tu_closed_port());
  o = popts(list, NULL, NULL, NULL);
  snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s;net:localhost:%d~shs:%s" /* same scope: kept in order */,
           e.port, e.key, e.port, e.key);
  CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "proxies down, then net");
  CHECK_INT(r.status, 0);
  if (r.s) echo_over(&e, r.s, 100, "net after dead proxies");
  snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s", e.port, e.key);
  CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "proxies down");
  CHECK_INT(r.status, -ECONNREFUSED);
  CHECK_HAS(r.reason, dead);
  CHECK_HAS(r.reason, "connection refused");
  ms_popts_free(o);

  /* Default proxy list (127.0.0.1:9050, :9150) when nothing listens there. */
  if (!port_open(9050) && !port_open(9150)) {
    CHECK_INT(connect_with(&e, addr, NULL, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "default proxies");
    CHECK(r.status != 0);
    CHECK_HAS(r.reason, "127.0.0.1:9050");
    CHECK_HAS(r.reason, "127.0.0.1:9150");
  }
  env_done(&e);
  stop_daemon(pid);
}

static void test_microsocks_auth(void) {
  int sp;
  if (find_bin("microsocks") == NULL) {
    skip("microsocks_auth", "microsocks not installed");
    return;
  }
  pid_t pid = start_microsocks(&sp, "alice", "s3cret");
  CHECK(pid > 0);
  if (pid <= 0) return;
  env_t e;
  env_init(&e);
  char px[64], addr[512];
  snprintf(px, sizeof px, "127.0.0.1:%d", sp);
  through(&e, px, "alice", "s3cret", px, 1u << 20, "microsocks with credentials");

  /* Wrong password: MS_EUNAUTHORIZED, and no fallback (neither to another
   * proxy nor to the next alternative). */
  tu_conn_t r;
  char list[160];
  snprintf(list, sizeof list, "%s,%s", px, px);
  ms_popts_t *o = popts(list, "alice", "wrong", NULL);
  CHECK_INT(ms_popts_set(o, "connect", "stagger_ms", "0"), 0); /* in order */
  snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s;net:localhost:%d~shs:%s" /* same scope: kept in order */,
           e.port, e.key, e.port, e.key);
  int accepted = e.echo.accepted;
  CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "wrong credentials");
  CHECK_INT(r.status, MS_EUNAUTHORIZED);
  CHECK(r.s == NULL);
  CHECK_HAS(r.reason, "alternative 1");
  CHECK(strstr(r.reason, "alternative 2") == NULL);
  CHECK_INT(e.echo.accepted, accepted);
  ms_popts_free(o);

  /* No credentials for a proxy that needs them: no acceptable method. */
  o = popts(px, NULL, NULL, NULL);
  CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "missing credentials");
  CHECK_INT(r.status, MS_EUNAUTHORIZED);
  ms_popts_free(o);
  env_done(&e);
  stop_daemon(pid);
}

static void test_danted(void) {
  int sp;
  if (find_bin("danted") == NULL) {
    skip("danted", "danted not installed (apt-get install dante-server)");
    return;
  }
  pid_t pid = start_danted(&sp, false);
  CHECK(pid > 0);
  if (pid <= 0) return;
  env_t e;
  env_init(&e);
  char px[64];
  snprintf(px, sizeof px, "127.0.0.1:%d", sp);
  through(&e, px, NULL, NULL, px, 1000, "danted small echo");
  through(&e, px, NULL, NULL, px, 1u << 20, "danted 1 MiB echo");
  env_done(&e);
  stop_daemon(pid);
}

/* dante's username method checks system users: a throwaway account. */
static void test_danted_auth(void) {
  const char *useradd = find_bin("useradd"), *userdel = find_bin("userdel");
  if (find_bin("danted") == NULL) {
    skip("danted_auth", "danted not installed");
    return;
  }
  if (geteuid() != 0 || useradd == NULL || userdel == NULL) {
    skip("danted_auth", "needs root and useradd for a throwaway system user");
    return;
  }
  char user[32], cmd[256];
  snprintf(user, sizeof user, "msonion%d", (int)getpid() % 100000);
  snprintf(cmd, sizeof cmd,
           "%s -M -N -s /usr/sbin/nologin %s >/dev/null 2>&1 && "
           "echo '%s:Pa55word' | chpasswd", useradd, user, user);
  if (system(cmd) != 0) {
    skip("danted_auth", "could not create a throwaway user");
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", userdel, user);
    if (system(cmd) != 0) { /* nothing to undo */ }
    return;
  }
  int sp;
  pid_t pid = start_danted(&sp, true);
  CHECK(pid > 0);
  if (pid > 0) {
    env_t e;
    env_init(&e);
    char px[64], addr[512];
    snprintf(px, sizeof px, "127.0.0.1:%d", sp);
    through(&e, px, user, "Pa55word", px, 1u << 20, "danted username");
    tu_conn_t r;
    ms_popts_t *o = popts(px, user, "nope", NULL);
    /* dante checks passwords slowly: without a stagger the second
     * alternative would start (and win) before the refusal arrives. */
    CHECK_INT(ms_popts_set(o, "connect", "stagger_ms", "0"), 0);
    snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s;net:localhost:%d~shs:%s" /* same scope: kept in order */,
             e.port, e.key, e.port, e.key);
    CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "danted wrong password");
    CHECK_INT(r.status, MS_EUNAUTHORIZED);
    CHECK(r.s == NULL);
    ms_popts_free(o);
    env_done(&e);
    stop_daemon(pid);
  }
  snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", userdel, user);
  CHECK_INT(system(cmd), 0);
}

/* ---- a silent proxy: accepts TCP (the kernel's backlog) and never
 * answers, for the timeout and cancel at the exchange stage ------------- */

static int silent_proxy(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  socklen_t n = sizeof sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &n) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

typedef struct {
  ms_connect_t *req;
  uv_timer_t t;
  int closed;
} later_t;

static void later_cancel(uv_timer_t *t) {
  later_t *l = t->data;
  ms_connect_cancel(l->req);
}
static void later_closed(uv_handle_t *h) { ((later_t *)h->data)->closed++; }

static void test_timeout_and_cancel(void) {
  env_t e;
  env_init(&e);
  int qp = 0, sp = 0;
  int qfd = silent_proxy(&qp);
  CHECK(qfd >= 0);
  pid_t pid = start_microsocks(&sp, NULL, NULL);
  char list[160], addr[512];
  tu_conn_t r;

  /* The circuit-setup timeout: the silent proxy times out, the next one
   * (if microsocks is here) carries the connection. */
  snprintf(addr, sizeof addr, "onion:localhost:%d~shs:%s", e.port, e.key);
  snprintf(list, sizeof list, "127.0.0.1:%d", qp);
  ms_popts_t *o = popts(list, NULL, NULL, "300");
  uint64_t t0 = tu_now_ms();
  CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "circuit timeout");
  CHECK_INT(r.status, MS_ETIMEDOUT);
  CHECK_HAS(r.reason, "timed out");
  CHECK(tu_now_ms() - t0 >= 250 && tu_now_ms() - t0 < 5000);
  ms_popts_free(o);
  if (pid > 0) {
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", qp, sp);
    o = popts(list, NULL, NULL, "300");
    CHECK_INT(connect_with(&e, addr, o, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "timeout, then the next proxy");
    CHECK_INT(r.status, 0);
    if (r.s) {
      char want[64];
      snprintf(want, sizeof want, "127.0.0.1:%d", sp);
      CHECK_STR(meta(r.s, "onion.proxy"), want);
      echo_over(&e, r.s, 1000, "after timeout");
    }
    ms_popts_free(o);
  } else {
    skip("timeout_then_next_proxy", "microsocks not installed");
  }

  /* Cancel at every stage: before the dial, while resolving / connecting
   * to the proxy, during the exchange with the silent proxy. */
  const unsigned delays[] = {0, 1, 2, 5, 10, 30, 100};
  for (int which = 0; which < 2; which++) {
    snprintf(list, sizeof list, which ? "localhost:%d" : "127.0.0.1:%d", qp);
    o = popts(list, NULL, NULL, NULL);
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
      later_t l;
      memset(&l, 0, sizeof l);
      CHECK_INT(connect_with(&e, addr, o, &r, &l.req), 0);
      if (delays[i] == 0) {
        tu_cancel(&r, l.req);
      } else {
        uv_timer_init(&e.loop, &l.t);
        l.t.data = &l;
        uv_timer_start(&l.t, later_cancel, delays[i], 0);
      }
      WAIT(&e.loop, r.done, 1, "cancel");
      CHECK_INT(r.status, MS_ECANCELED);
      CHECK(!r.fired_in_call);
      if (r.s) ms_stream_close(r.s, NULL, NULL);
      if (delays[i] != 0) {
        uv_close((uv_handle_t *)&l.t, later_closed);
        WAIT(&e.loop, l.closed, 1, "timer");
      }
    }
    ms_popts_free(o);
  }
  /* Nothing of the dials stays alive. */
  tu_sleep_loop(&e.loop, 50);
  CHECK_INT(ms_live(e.cli), 0);
  env_done(&e);
  close(qfd);
  stop_daemon(pid);
}

static void test_address_rules(void) {
  char reason[256], *canon = NULL;
  const char *key = "yhCInEZ+93ItNluTW3NV4vWcMMhmpbF8r2AplLbUVhs=";
  char a[256];
  snprintf(a, sizeof a,
           "onion:abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion:8008~shs:%s",
           key);
  CHECK_INT(ms_address_check(a, false, &canon, reason, sizeof reason), 0);
  if (canon) CHECK_STR(canon, a);
  ms_free(canon);
  CHECK_INT(ms_address_check(a, true, NULL, reason, sizeof reason), MS_ESTACK);
  CHECK_HAS(reason, "client-only");
  CHECK_INT(ms_address_check("onion:x.onion:80~noauth", false, NULL, reason,
                             sizeof reason), MS_ENOAUTH_REMOTE);
  CHECK_INT(ms_address_check("onion:127.0.0.1:80~noauth", false, NULL, reason,
                             sizeof reason), MS_ENOAUTH_REMOTE);
  CHECK_INT(ms_address_check("onion:x.onion:0", false, NULL, reason,
                             sizeof reason), MS_EADDRESS);
  CHECK_HAS(reason, "onion");
  CHECK_INT(ms_address_check("onion:x.onion", false, NULL, reason,
                             sizeof reason), MS_EADDRESS);

  env_t e;
  env_init(&e);
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen(e.srv, "onion:x.onion:80", tu_echo_on_connection, &e.echo,
                      &l, reason, sizeof reason), MS_ESTACK);
  CHECK(l == NULL);
  /* Option errors name the option. */
  tu_conn_t r;
  ms_popts_t *o = popts("nonsense", NULL, NULL, NULL);
  CHECK_INT(connect_with(&e, "onion:x.onion:80", o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "bad proxy list");
  CHECK_INT(r.status, MS_EINVAL);
  CHECK_HAS(r.reason, "onion.proxy");
  ms_popts_free(o);
  o = popts("127.0.0.1:9", "onlyuser", NULL, NULL);
  CHECK_INT(connect_with(&e, "onion:x.onion:80", o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "user without password");
  CHECK_INT(r.status, MS_EINVAL);
  CHECK_HAS(r.reason, "onion.password");
  ms_popts_free(o);
  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_set(o, "onion", "proxies", "127.0.0.1:9"), 0);
  CHECK_INT(connect_with(&e, "onion:x.onion:80", o, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "unknown option");
  CHECK_INT(r.status, MS_EINVAL);
  CHECK_HAS(r.reason, "proxies");
  ms_popts_free(o);
  env_done(&e);
}

/* ---- onion services through a real tor (DisableNetwork 1) ------------- */

/* tor on a free control port with cookie authentication (or, with
 * hashed non-NULL, HashedControlPassword). */
static pid_t start_tor(int *port, const char *datadir, const char *hashed) {
  const char *bin = find_bin("tor");
  char conf[160], log[160], p[8];
  if (bin == NULL) return -1;
  *port = free_port();
  snprintf(p, sizeof p, "%d", *port);
  snprintf(conf, sizeof conf, "%s/torrc", datadir);
  snprintf(log, sizeof log, "%s.log", datadir);
  FILE *f = fopen(conf, "w");
  if (f == NULL) return -1;
  fprintf(f,
          "SocksPort 0\n"
          "ControlPort 127.0.0.1:%d\n"
          "%s%s\n"
          "DataDirectory %s/data\n"
          "DisableNetwork 1\n"
          "AvoidDiskWrites 1\n"
          "Log notice stdout\n",
          *port, hashed ? "HashedControlPassword " : "CookieAuthentication 1",
          hashed ? hashed : "", datadir);
  fclose(f);
  char *argv[] = {(char *)bin, "-f", conf, "--RunAsDaemon", "0", NULL};
  return spawn_daemon(argv, log, *port);
}

typedef struct {
  int done, status;
  char address[128];
  char reason[512];
  ms_onion_t *o;
  int closed, close_status;
} pub_t;

static void on_pub(ms_onion_t *o, int status, const char *address,
                   const char *reason, void *arg) {
  pub_t *p = arg;
  p->done++;
  p->status = status;
  p->o = o;
  snprintf(p->address, sizeof p->address, "%s", address ? address : "");
  snprintf(p->reason, sizeof p->reason, "%s", reason ? reason : "");
}

static void on_unpub(ms_onion_t *o, int status, void *arg) {
  (void)o;
  pub_t *p = arg;
  p->closed++;
  p->close_status = status;
}

static bool is_onion_v3(const char *a) {
  size_t n = strlen(a);
  if (n != 56 + 6 || strcmp(a + 56, ".onion") != 0) return false;
  for (size_t i = 0; i < 56; i++)
    if (!((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= '2' && a[i] <= '7'))) return false;
  return true;
}

/* Publish, expect success; returns the handle (address into p). */
static ms_onion_t *publish_ok(env_t *e, ms_onion_opts_t *oo, pub_t *p,
                              const char *what) {
  char reason[256] = "";
  ms_onion_t *o = NULL;
  memset(p, 0, sizeof *p);
  int rc = ms_onion_publish(e->srv, oo, on_pub, p, &o, reason, sizeof reason);
  CHECK_INT(rc, 0);
  if (rc != 0) {
    fprintf(stderr, "  %s: %s\n", what, reason);
    return NULL;
  }
  WAIT(&e->loop, p->done, 1, what);
  CHECK_INT(p->status, 0);
  if (p->status != 0) {
    fprintf(stderr, "  %s: %s\n", what, p->reason);
    return NULL;
  }
  CHECK(is_onion_v3(p->address));
  CHECK_STR(ms_onion_address(o), p->address);
  return o;
}

static void unpublish_ok(env_t *e, ms_onion_t *o, pub_t *p, const char *what) {
  ms_onion_close(o, on_unpub, p);
  WAIT(&e->loop, p->closed, 1, what);
  CHECK_INT(p->close_status, 0);
}

/* A raw control session, for checks the library does not expose: GETINFO
 * onions/current lists this connection's services only, so a second
 * controller sees none; instead check that ADD_ONION with the same key now
 * succeeds (it fails with 550 while the service exists). */
static int ctl_add_with_key(int port, const char *cookie_path, const char *key) {
  uint8_t cookie[32];
  FILE *f = fopen(cookie_path, "rb");
  if (f == NULL) return -1;
  size_t n = fread(cookie, 1, sizeof cookie, f);
  fclose(f);
  if (n != 32) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)port);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  char cmd[512], buf[4096];
  size_t k = (size_t)snprintf(cmd, sizeof cmd, "AUTHENTICATE ");
  for (int i = 0; i < 32; i++) k += (size_t)snprintf(cmd + k, sizeof cmd - k, "%02x", cookie[i]);
  k += (size_t)snprintf(cmd + k, sizeof cmd - k,
                        "\r\nADD_ONION %s Port=1,127.0.0.1:1\r\nQUIT\r\n", key);
  if (write(fd, cmd, k) != (ssize_t)k) {
    close(fd);
    return -1;
  }
  size_t got = 0;
  ssize_t r;
  while (got + 1 < sizeof buf && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
    got += (size_t)r;
  buf[got] = '\0';
  close(fd);
  /* Replies: AUTHENTICATE's, then ADD_ONION's. */
  char *second = strstr(buf, "\r\n");
  if (second == NULL) return -1;
  return atoi(second + 2);
}

static void test_tor_service(void) {
  if (find_bin("tor") == NULL) {
    skip("tor_service", "tor not installed (apt-get install tor)");
    return;
  }
  char dir[160], data[192], keyfile[192], cookie[224];
  snprintf(dir, sizeof dir, "%s/tor", tmpdir);
  snprintf(data, sizeof data, "%s/data", dir);
  mkdir(dir, 0700);
  mkdir(data, 0700);
  int cport;
  pid_t pid = start_tor(&cport, dir, NULL);
  CHECK(pid > 0);
  if (pid <= 0) return;
  snprintf(cookie, sizeof cookie, "%s/control_auth_cookie", data);
  env_t e;
  env_init(&e);
  char control[64], target[64];
  snprintf(control, sizeof control, "net:127.0.0.1:%d", cport);
  snprintf(target, sizeof target, "net:127.0.0.1:%d", e.port);
  ms_onion_opts_t oo;
  ms_onion_opts_init(&oo);
  oo.control = control;
  oo.target = ms_listener_address(e.l); /* a listener's address works */
  oo.virt_port = 8008;
  oo.timeout_ms = 10000;
  pub_t p, q;

  /* A fresh key each time without a key file: different addresses. */
  ms_onion_t *o = publish_ok(&e, &oo, &p, "ADD_ONION NEW");
  char first[128];
  snprintf(first, sizeof first, "%s", p.address);
  oo.target = target;
  ms_onion_t *o2 = publish_ok(&e, &oo, &q, "ADD_ONION NEW again");
  if (o && o2) CHECK(strcmp(p.address, q.address) != 0);
  if (o2) unpublish_ok(&e, o2, &q, "DEL_ONION 2");
  if (o) unpublish_ok(&e, o, &p, "DEL_ONION");

  /* A key file: created on first use (0600), the same id afterwards. */
  snprintf(keyfile, sizeof keyfile, "%s/onion.key", dir);
  oo.key_file = keyfile;
  o = publish_ok(&e, &oo, &p, "key file, first");
  struct stat st;
  CHECK_INT(stat(keyfile, &st), 0);
  CHECK_INT(st.st_mode & 0777, 0600);
  char key[256] = "";
  FILE *f = fopen(keyfile, "r");
  if (f) {
    if (fgets(key, sizeof key, f) == NULL) key[0] = '\0';
    fclose(f);
  }
  key[strcspn(key, "\n")] = '\0';
  CHECK(strncmp(key, "ED25519-V3:", 11) == 0);
  snprintf(first, sizeof first, "%s", p.address);
  /* While published, the key is in use: tor refuses it to another
   * controller (550); after DEL_ONION it accepts it again. */
  CHECK_INT(ctl_add_with_key(cport, cookie, key), 550);
  if (o) unpublish_ok(&e, o, &p, "key file, DEL_ONION");
  CHECK_INT(ctl_add_with_key(cport, cookie, key), 250);
  o = publish_ok(&e, &oo, &q, "key file, second");
  CHECK_STR(q.address, first);
  if (o) unpublish_ok(&e, o, &q, "key file, second DEL_ONION");
  oo.key_file = NULL;

  /* The address a client dials: onion:ID.onion:VPORT~shs:KEY. */
  if (p.address[0]) {
    char a[256], reason[128];
    snprintf(a, sizeof a, "onion:%s:8008~shs:%s", first, e.key);
    CHECK_INT(ms_address_check(a, false, NULL, reason, sizeof reason), 0);
  }

  /* A malformed key file is refused before anything is sent. */
  char badkey[200], reason[256];
  snprintf(badkey, sizeof badkey, "%s/bad.key", dir);
  f = fopen(badkey, "w");
  if (f) {
    fputs("not a key\n", f);
    fclose(f);
  }
  oo.key_file = badkey;
  ms_onion_t *ob = NULL;
  CHECK_INT(ms_onion_publish(e.srv, &oo, on_pub, &p, &ob, reason, sizeof reason),
            MS_EKEY);
  CHECK_HAS(reason, "bad.key");
  oo.key_file = NULL;

  /* A password where tor takes cookies only. */
  oo.password = "hunter2";
  memset(&p, 0, sizeof p);
  CHECK_INT(ms_onion_publish(e.srv, &oo, on_pub, &p, &ob, reason, sizeof reason), 0);
  WAIT(&e.loop, p.done, 1, "password, cookie-only tor");
  CHECK_INT(p.status, MS_EUNAUTHORIZED);
  CHECK_HAS(p.reason, "COOKIE");
  oo.password = NULL;

  /* A wrong cookie: 515. */
  char fake[200];
  snprintf(fake, sizeof fake, "%s/fake_cookie", dir);
  f = fopen(fake, "wb");
  if (f) {
    fwrite("0123456789abcdef0123456789abcdef", 1, 32, f);
    fclose(f);
  }
  oo.cookie_file = fake;
  memset(&p, 0, sizeof p);
  CHECK_INT(ms_onion_publish(e.srv, &oo, on_pub, &p, &ob, reason, sizeof reason), 0);
  WAIT(&e.loop, p.done, 1, "wrong cookie");
  CHECK_INT(p.status, MS_EUNAUTHORIZED);
  CHECK_HAS(p.reason, "515");
  oo.cookie_file = NULL;

  /* Close before it is published: the publish callback says canceled. */
  memset(&p, 0, sizeof p);
  CHECK_INT(ms_onion_publish(e.srv, &oo, on_pub, &p, &ob, reason, sizeof reason), 0);
  ms_onion_close(ob, on_unpub, &p);
  WAIT(&e.loop, p.closed, 1, "early close");
  CHECK_INT(p.done, 1);
  CHECK_INT(p.status, MS_ECANCELED);

  /* tor goes away while published: close reports the loss. */
  o = publish_ok(&e, &oo, &p, "before tor stops");
  stop_daemon(pid);
  pid = -1;
  tu_sleep_loop(&e.loop, 200);
  if (o) {
    ms_onion_close(o, on_unpub, &p);
    WAIT(&e.loop, p.closed, 1, "close after tor stopped");
    CHECK(p.close_status != 0);
  }

  /* Nothing listens: a connection error. */
  memset(&p, 0, sizeof p);
  CHECK_INT(ms_onion_publish(e.srv, &oo, on_pub, &p, &ob, reason, sizeof reason), 0);
  WAIT(&e.loop, p.done, 1, "no tor");
  CHECK_INT(p.status, -ECONNREFUSED);
  CHECK_HAS(p.reason, "control port");
  env_done(&e);
}

/* HASHEDPASSWORD: tor --hash-password makes the torrc line. */
static void test_tor_password(void) {
  const char *bin = find_bin("tor");
  if (bin == NULL) {
    skip("tor_password", "tor not installed");
    return;
  }
  char cmd[512], hashed[256] = "", dir[160], data[192];
  snprintf(cmd, sizeof cmd, "%s --quiet --hash-password 'pass word\"x' 2>/dev/null | tail -1", bin);
  FILE *f = popen(cmd, "r");
  if (f) {
    if (fgets(hashed, sizeof hashed, f) == NULL) hashed[0] = '\0';
    pclose(f);
  }
  hashed[strcspn(hashed, "\r\n")] = '\0';
  CHECK(strncmp(hashed, "16:", 3) == 0);
  if (strncmp(hashed, "16:", 3) != 0) return;
  snprintf(dir, sizeof dir, "%s/torpw", tmpdir);
  snprintf(data, sizeof data, "%s/data", dir);
  mkdir(dir, 0700);
  mkdir(data, 0700);
  int cport;
  pid_t pid = start_tor(&cport, dir, hashed);
  CHECK(pid > 0);
  if (pid <= 0) return;
  env_t e;
  env_init(&e);
  char control[64], target[64], reason[256];
  snprintf(control, sizeof control, "net:127.0.0.1:%d", cport);
  snprintf(target, sizeof target, "127.0.0.1:%d", e.port);
  ms_onion_opts_t oo;
  ms_onion_opts_init(&oo);
  oo.control = control;
  oo.target = target;
  oo.password = "pass word\"x"; /* a space and a quote: QuotedString */
  pub_t p;
  ms_onion_t *o = publish_ok(&e, &oo, &p, "HASHEDPASSWORD");
  if (o) unpublish_ok(&e, o, &p, "HASHEDPASSWORD DEL_ONION");
  oo.password = "wrong";
  memset(&p, 0, sizeof p);
  CHECK_INT(ms_onion_publish(e.srv, &oo, on_pub, &p, &o, reason, sizeof reason), 0);
  WAIT(&e.loop, p.done, 1, "wrong password");
  CHECK_INT(p.status, MS_EUNAUTHORIZED);
  oo.password = NULL;
  memset(&p, 0, sizeof p);
  CHECK_INT(ms_onion_publish(e.srv, &oo, on_pub, &p, &o, reason, sizeof reason), 0);
  WAIT(&e.loop, p.done, 1, "no password");
  CHECK_INT(p.status, MS_EUNAUTHORIZED);
  CHECK_HAS(p.reason, "HASHEDPASSWORD");
  env_done(&e);
  stop_daemon(pid);
}


int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"address_rules", test_address_rules},
      {"microsocks", test_microsocks},
      {"microsocks_auth", test_microsocks_auth},
      {"danted", test_danted},
      {"danted_auth", test_danted_auth},
      {"timeout_and_cancel", test_timeout_and_cancel},
      {"tor_service", test_tor_service},
      {"tor_password", test_tor_password},
  };
  if (sodium_init() < 0) return 1;
  snprintf(tmpdir, sizeof tmpdir, "%s", tu_mkdtemp());
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  rm_tree(tmpdir);
  printf("onion: %d passed, %d failed, %d skipped\n", mst_pass, mst_fail, skipped);
  return mst_fail ? 1 : 0;
}
