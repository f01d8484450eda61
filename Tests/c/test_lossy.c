/* A lossy, slow network: two network namespaces this test creates, joined
 * by a veth pair with addresses in 10.250.N.0/30 (made here, nothing else
 * is touched), 5 % of the packets leaving each end dropped at random
 * (nftables numgen) and the rate capped (tbf). A server in one namespace
 * and a client in the other (fork + setns); MS_LOSSY_BYTES bytes (default
 * 4 MB; make soak sends 100 MB) go through net~shs and must arrive intact
 * (BLAKE2b of the stream, sent back by the server) on a connection that
 * survives. The namespaces are removed on every exit path. Needs root,
 * ip (iproute2), tc and nft; skipped with a message otherwise. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "multiserver.h"
#include "mstest.h"
#include "util.h"

#define PORT 8008
#define CHUNK (64u * 1024)

static char ns_a[32], ns_b[32], ip_a[32], ip_b[32], if_a[16], if_b[16];
static bool made;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  if (rc != 0) fprintf(stderr, "  command failed (%d): %s\n", rc, cmd);
  return rc;
}

static void cleanup(void) {
  if (!made) return;
  made = false;
  /* Deleting the namespaces deletes the veth pair, its qdiscs and the
   * nftables tables inside them. */
  if (system("true") == 0) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", ns_a, ns_b);
    if (system(cmd) != 0) fprintf(stderr, "  cleanup: %s failed\n", cmd);
  }
}

static void on_signal(int sig) {
  cleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

static bool have(const char *bin) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", bin);
  return system(cmd) == 0;
}

static bool setup(void) {
  unsigned n = (unsigned)getpid() % 250 + 1;
  snprintf(ns_a, sizeof ns_a, "ms-lossy-a-%d", (int)getpid());
  snprintf(ns_b, sizeof ns_b, "ms-lossy-b-%d", (int)getpid());
  snprintf(if_a, sizeof if_a, "msla%u", n);
  snprintf(if_b, sizeof if_b, "mslb%u", n);
  snprintf(ip_a, sizeof ip_a, "10.250.%u.1", n);
  snprintf(ip_b, sizeof ip_b, "10.250.%u.2", n);
  made = true;
  atexit(cleanup);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGABRT, on_signal);
  signal(SIGSEGV, on_signal);
  if (sh("ip netns add %s && ip netns add %s", ns_a, ns_b)) return false;
  if (sh("ip link add %s netns %s type veth peer name %s netns %s", if_a, ns_a, if_b, ns_b))
    return false;
  const char *ns[2] = {ns_a, ns_b}, *ifn[2] = {if_a, if_b}, *ip[2] = {ip_a, ip_b};
  for (int i = 0; i < 2; i++) {
    if (sh("ip -n %s addr add %s/30 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
           ns[i], ip[i], ifn[i], ns[i], ifn[i], ns[i]))
      return false;
    /* One TCP segment per packet (no GSO/TSO super-packets), so that the
     * drop rule loses segments, not 64 KiB bursts of them. */
    if (sh("ip -n %s link set %s gso_max_segs 1 && "
           "{ ! command -v ethtool >/dev/null || "
           "ip netns exec %s ethtool -K %s tso off gso off gro off 2>/dev/null || true; }",
           ns[i], ifn[i], ns[i], ifn[i]))
      return false;
    /* 40 Mbit/s with a short queue */
    if (sh("tc -n %s qdisc add dev %s root tbf rate 40mbit burst 64kbit latency 40ms", ns[i], ifn[i]))
      return false;
    if (sh("ip netns exec %s nft -f - <<'NFT'\n"
           "table inet ms_lossy {\n"
           "  chain out {\n"
           "    type filter hook output priority 0; policy accept;\n"
           "    oifname \"%s\" numgen random mod 20 0 counter drop\n"
           "  }\n"
           "}\n"
           "NFT",
           ns[i], ifn[i]))
      return false;
  }
  return true;
}

static int enter(const char *ns) {
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
  char path[128];
  snprintf(path, sizeof path, "/run/netns/%s", ns);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    fprintf(stderr, "  setns %s: %s\n", ns, strerror(errno));
    return -1;
  }
  close(fd);
  return 0;
}

/* ---- the server (namespace A): hash what arrives, send the hash back ---- */

typedef struct {
  ms_t *ms;
  ms_listener_t *l;
  crypto_generichash_state h;
  uint64_t got;
  uint8_t digest[32];
  int status;
  bool done;
} srv_t;

static void srv_closed_l(ms_listener_t *l, void *arg) {
  (void)l;
  (void)arg;
}
static void srv_closed(ms_stream_t *s, void *arg) {
  (void)s;
  srv_t *v = arg;
  v->done = true;
  ms_listener_close(v->l, srv_closed_l, v);
}
static void srv_shut(ms_stream_t *s, int status, void *arg) {
  srv_t *v = arg;
  if (status != 0) v->status = status;
  ms_stream_close(s, srv_closed, v);
}
static void srv_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  srv_t *v = arg;
  if (status == 0) {
    crypto_generichash_update(&v->h, d, n);
    v->got += n;
    return;
  }
  if (status != MS_EOF) {
    fprintf(stderr, "  server: read ended with %s after %llu bytes\n", ms_err_name(status),
            (unsigned long long)v->got);
    v->status = status;
    ms_stream_close(s, srv_closed, v);
    return;
  }
  crypto_generichash_final(&v->h, v->digest, 32);
  ms_buf_t b = {v->digest, 32};
  int rc = ms_stream_write(s, &b, 1, NULL, NULL);
  if (rc == 0) rc = ms_stream_shutdown(s, srv_shut, v);
  if (rc != 0) {
    v->status = rc;
    ms_stream_close(s, srv_closed, v);
  }
}
static void srv_conn(ms_stream_t *s, void *arg) {
  srv_t *v = arg;
  crypto_generichash_init(&v->h, NULL, 0, 32);
  if (ms_stream_read_start(s, srv_read, v) != 0) ms_stream_close(s, srv_closed, v);
}

static int run_server(const ms_keypair_t *kp, int ready_fd) {
  if (enter(ns_a) != 0) return 2;
  ms_options_t o;
  ms_options_init(&o);
  o.keys = kp;
  o.handshake_timeout_ms = 60000;
  srv_t v;
  memset(&v, 0, sizeof v);
  if (ms_new(&v.ms, &o) != 0) return 3;
  char addr[128], why[256] = "";
  snprintf(addr, sizeof addr, "net:%s:%d~shs", ip_a, PORT);
  if (ms_listen(v.ms, addr, srv_conn, &v, &v.l, why, sizeof why) != 0) {
    fprintf(stderr, "  server: listen %s: %s\n", addr, why);
    return 4;
  }
  if (write(ready_fd, "r", 1) != 1) return 5;
  close(ready_fd);
  ms_run(v.ms, MS_RUN_DEFAULT);
  ms_delete(v.ms);
  return v.status == 0 && v.done ? 0 : 6;
}

/* ---- the client (namespace B): a keystream, its hash, the echo of it ---- */

typedef struct {
  ms_t *ms;
  ms_stream_t *s;
  uint64_t total, sent;
  uint8_t key[32];
  crypto_generichash_state h;
  uint8_t want[32], reply[32];
  size_t reply_len;
  int status;
  bool eof;
  uint64_t t0;
} cli_t;

static void cli_pump(cli_t *c);

static void cli_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  free(arg);
  (void)status;
}
static void cli_drain(ms_stream_t *s, void *arg) {
  (void)s;
  cli_pump(arg);
}
static void cli_pump(cli_t *c) {
  while (c->sent < c->total && ms_stream_writable(c->s)) {
    size_t n = c->total - c->sent < CHUNK ? (size_t)(c->total - c->sent) : CHUNK;
    uint8_t *b = malloc(n);
    uint8_t nonce[8] = {0};
    uint64_t i = c->sent / CHUNK;
    memcpy(nonce, &i, sizeof nonce);
    crypto_stream_chacha20(b, n, nonce, c->key);
    crypto_generichash_update(&c->h, b, n);
    ms_buf_t buf = {b, n};
    int rc = ms_stream_write(c->s, &buf, 1, cli_written, b);
    if (rc != 0) {
      free(b);
      c->status = rc;
      ms_stream_close(c->s, NULL, NULL);
      return;
    }
    c->sent += n;
  }
  if (c->sent == c->total && c->total) {
    c->total = 0; /* once */
    crypto_generichash_final(&c->h, c->want, 32);
    int rc = ms_stream_shutdown(c->s, NULL, NULL);
    if (rc != 0) c->status = rc;
  }
}
static void cli_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  cli_t *c = arg;
  if (status == 0) {
    size_t k = n < 32 - c->reply_len ? n : 32 - c->reply_len;
    memcpy(c->reply + c->reply_len, d, k);
    c->reply_len += k;
    return;
  }
  if (status == MS_EOF)
    c->eof = true;
  else {
    fprintf(stderr, "  client: read ended with %s\n", ms_err_name(status));
    c->status = status;
  }
  ms_stream_close(s, NULL, NULL);
}
static void cli_conn(ms_stream_t *s, int status, const char *reason, void *arg) {
  cli_t *c = arg;
  if (status != 0) {
    fprintf(stderr, "  client: connect: %s\n", reason);
    c->status = status;
    return;
  }
  c->s = s;
  ms_stream_on_drain(s, cli_drain, c);
  if (ms_stream_read_start(s, cli_read, c) != 0) c->status = MS_EINVAL;
  cli_pump(c);
}

static int run_client(const ms_keypair_t *kp, uint64_t bytes) {
  if (enter(ns_b) != 0) return 2;
  ms_options_t o;
  ms_options_init(&o);
  o.handshake_timeout_ms = 60000;
  o.connect_timeout_ms = 30000;
  cli_t c;
  memset(&c, 0, sizeof c);
  c.total = bytes;
  randombytes_buf(c.key, sizeof c.key);
  crypto_generichash_init(&c.h, NULL, 0, 32);
  if (ms_new(&c.ms, &o) != 0) return 3;
  char addr[256];
  snprintf(addr, sizeof addr, "net:%s:%d~shs:%s", ip_a, PORT, tu_b64(kp->public_key));
  uint64_t t0 = tu_now_ms();
  if (ms_connect(c.ms, addr, cli_conn, &c, NULL) != 0) return 4;
  ms_run(c.ms, MS_RUN_DEFAULT);
  ms_delete(c.ms);
  uint64_t ms = tu_now_ms() - t0;
  if (c.status != 0 || !c.eof) return 5;
  if (c.reply_len != 32 || memcmp(c.reply, c.want, 32) != 0) {
    fprintf(stderr, "  client: the server's hash of the stream differs\n");
    return 6;
  }
  fprintf(stderr, "  %llu bytes through net~shs with 5%% loss each way in %llu ms (%.2f MB/s), hash matches\n",
          (unsigned long long)bytes, (unsigned long long)ms, ms ? (double)bytes / 1000.0 / (double)ms : 0.0);
  return 0;
}

static int wait_child(pid_t pid, uint64_t deadline) {
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (r < 0) return -1;
    if (tu_now_ms() > deadline) {
      fprintf(stderr, "  child %d timed out; killing it\n", (int)pid);
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -2;
    }
    usleep(20000);
  }
}

static void test_lossy(void) {
  if (geteuid() != 0) {
    fprintf(stderr, "  SKIP lossy: needs root (network namespaces)\n");
    return;
  }
  if (!have("ip") || !have("tc") || !have("nft")) {
    fprintf(stderr, "  SKIP lossy: needs ip, tc and nft (apt-get install iproute2 nftables)\n");
    return;
  }
  uint64_t bytes = 4000000;
  const char *env = getenv("MS_LOSSY_BYTES");
  if (env && strtoull(env, NULL, 10) > 0) bytes = strtoull(env, NULL, 10);
  if (!setup()) {
    /* A container without CAP_SYS_ADMIN, or a kernel without veth, tbf or
     * nftables: the command that failed is printed above. */
    fprintf(stderr, "  SKIP lossy: cannot build the namespaces, veth pair, qdisc or drop rule here\n");
    cleanup();
    return;
  }
  ms_keypair_t kp;
  ms_keypair_generate(&kp);
  int pfd[2];
  CHECK_INT(pipe(pfd), 0);
  fflush(NULL);
  pid_t srv = fork();
  if (srv == 0) {
    close(pfd[0]);
    made = false; /* the parent cleans up */
    _exit(run_server(&kp, pfd[1]));
  }
  close(pfd[1]);
  char c;
  CHECK_INT(read(pfd[0], &c, 1), 1); /* listening */
  close(pfd[0]);
  /* about 1 MB/s at worst, plus a minute */
  uint64_t deadline = tu_now_ms() + 60000 + bytes / 1000;
  pid_t cli = fork();
  if (cli == 0) {
    made = false;
    _exit(run_client(&kp, bytes));
  }
  int rc = wait_child(cli, deadline);
  CHECK_INT(rc, 0);
  int rs = wait_child(srv, rc == 0 ? tu_now_ms() + 10000 : 0);
  if (rc == 0) CHECK_INT(rs, 0);
  /* The loss was real: each end dropped packets. */
  for (int i = 0; i < 2; i++) {
    char cmd[256], line[256];
    snprintf(cmd, sizeof cmd, "ip netns exec %s nft list chain inet ms_lossy out", i ? ns_b : ns_a);
    FILE *f = popen(cmd, "r");
    long pk = -1;
    while (f && fgets(line, sizeof line, f)) {
      char *q = strstr(line, "counter packets ");
      if (q) pk = atol(q + 16);
    }
    if (f) pclose(f);
    fprintf(stderr, "  %s dropped %ld packets\n", i ? "client end" : "server end", pk);
    CHECK(pk > 0);
  }
  sodium_memzero(&kp, sizeof kp);
  cleanup();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "ip netns list | grep -q %s", ns_a);
  CHECK(system(cmd) != 0); /* gone */
}

int main(int argc, char **argv) {
  if (sodium_init() < 0) return 1;
  const tu_test_t tests[] = {{"lossy", test_lossy}};
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("lossy");
}
