/*
 * make bench: the figures of issue 11, one line each:
 *
 *     name  value  unit  [ratio to its limit]
 *
 * Limits are measured by this program in the same run, on one core, in
 * memory: box-stream seal/open (4096-byte bodies), the Noise transport
 * seal/open at its message size (65519 bytes), and the in-memory handshake
 * rate of shs and noise (both sides on one core; the client's and the
 * server's share are timed apart, which gives the 2-core bound
 * 1 / max(client, server)).
 *
 * Everything over sockets runs in TWO processes (fork): the receiver or
 * server in a child, the sender or client in the parent, each with its own
 * multiserver and loop, so a 2-core machine shows both ends at once.
 *
 *   ms_bench [--smoke] [--data FILE] [--only bulk|hs|accepts|mem] [--stack NAME]
 *     --smoke  short runs (CI: well under a minute); the figures are rough;
 *              every bulk run also checks the bytes (CRC-32) end to end
 *     --only   run one section (the limits always run); --stack: bulk runs
 *              of one stack (as named in the output, e.g. net~shs)
 *     --data   also write the bulk figures as TSV (stack, write size, MiB/s)
 *              for Tests/bench/plot_bulk.py
 *
 * Exit status: 0 when every measurement ran (targets missed are reported,
 * not failures: the machine decides them), 1 when one could not run.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <zlib.h>

#include "multiserver.h"
#include "multiserver_uv.h"
#include "boxstream.h"
#include "noise_core.h"
#include "shs_core.h"

#define MIB (1024.0 * 1024.0)

static int smoke;
static FILE *data_out;
static const char *only; /* --only: run just this section (limits always run) */

static const char *only_stack; /* --stack: bulk runs of this stack only */
static size_t mem_n;            /* --mem-n: idle connections for the memory figure */
static size_t bulk_mib;         /* --bulk-mib: bytes of each non-gzip bulk run */

static bool want(const char *section) { return only == NULL || strcmp(only, section) == 0; }
static int failures;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) of this process, and of another one. */
static double cpu_self(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the command may hold spaces */
  if (p == NULL) return -1;
  unsigned long ut = 0, st = 0;
  /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt
   * majflt cmajflt utime stime */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Limits run this long (CPU seconds: a limit is the rate of one core the
 * process has to itself, also on a busy machine). */
static double limit_seconds(void) { return smoke ? 0.1 : 0.3; }

/* One figure. ratio_of: the limit's value (0: none) and name. */
static void fig(const char *name, double value, const char *unit, double limit,
                const char *limit_name) {
  if (limit > 0)
    printf("%-26s %10.1f %-9s %6.1f%% of %s\n", name, value, unit, 100 * value / limit,
           limit_name);
  else
    printf("%-26s %10.1f %-9s\n", name, value, unit);
  fflush(stdout);
}

static void skipped(const char *name, const char *why) {
  printf("%-26s    skipped (%s)\n", name, why);
  fflush(stdout);
}

/* ---- targets ----------------------------------------------------------- */

#define MAX_TARGETS 32
static struct {
  char text[160];
  double got, want;
} targets[MAX_TARGETS];
static int ntargets;

static void target(double got, double want, const char *fmt, ...) {
  if (ntargets == MAX_TARGETS) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(targets[ntargets].text, sizeof targets[ntargets].text, fmt, ap);
  va_end(ap);
  targets[ntargets].got = got;
  targets[ntargets].want = want;
  ntargets++;
}

/* ---- limits: box-stream, noise transport ------------------------------- */

static double box_seal_limit, box_open_limit;

/* Reference only: raw crypto_secretbox_detached over 4096-byte blocks, the
 * body crypto box-stream cannot avoid (a packet also boxes its header). */
static void ref_secretbox(void) {
  uint8_t key[32], nonce[24], mac[16];
  static uint8_t block[4096];
  randombytes_buf(key, sizeof key);
  randombytes_buf(nonce, sizeof nonce);
  size_t total = 0;
  double t0 = cpu_self();
  while (cpu_self() - t0 < limit_seconds()) {
    for (int i = 0; i < 256; i++) {
      crypto_secretbox_detached(block, mac, block, sizeof block, nonce, key);
      total += sizeof block;
    }
  }
  fig("ref secretbox-4096", total / MIB / (cpu_self() - t0), "MiB/s", 0, NULL);
}

static void limit_box_once(void) {
  size_t len = 1 << 20; /* 256 packets of 4096 */
  uint8_t *in = malloc(len), *wire = malloc(ms_box_sealed_size(len));
  uint8_t key[32], nonce[24];
  randombytes_buf(key, sizeof key);
  randombytes_buf(nonce, sizeof nonce);
  randombytes_buf(in, len);
  ms_box_t enc;
  ms_box_init(&enc, key, nonce);
  size_t total = 0;
  double t0 = cpu_self();
  while (cpu_self() - t0 < limit_seconds()) {
    (void)ms_box_seal(&enc, wire, in, len);
    total += len;
  }
  double r_seal = total / MIB / (cpu_self() - t0);
  if (r_seal > box_seal_limit) box_seal_limit = r_seal;

  /* open: each round is sealed (untimed) under the running encoder, so the
   * decoder's nonces line up; only ms_unbox_next is timed. */
  ms_box_init(&enc, key, nonce);
  ms_unbox_t dec;
  ms_unbox_init(&dec, key, nonce);
  total = 0;
  double spent = 0;
  while (spent < limit_seconds()) {
    size_t n = ms_box_seal(&enc, wire, in, len);
    double t1 = cpu_self();
    uint8_t *p = wire;
    size_t left = n;
    for (;;) {
      size_t used = 0, outlen = 0;
      uint8_t *out;
      int r = ms_unbox_next(&dec, p, left, &used, &out, &outlen);
      p += used;
      left -= used;
      if (r != 1) break;
    }
    spent += cpu_self() - t1;
    if (left != 0) {
      fprintf(stderr, "bench: box-stream open failed\n");
      failures++;
      break;
    }
    total += len;
  }
  double r_open = total / MIB / spent;
  if (r_open > box_open_limit) box_open_limit = r_open;
  ms_unbox_free(&dec);
  free(in);
  free(wire);
}

/* The best of three trials: a limit is what one core can do. */
static void limit_box(void) {
  for (int i = 0; i < 3; i++) limit_box_once();
  fig("limit box-seal", box_seal_limit, "MiB/s", 0, NULL);
  fig("limit box-open", box_open_limit, "MiB/s", 0, NULL);
}

static double noise_seal_limit, noise_open_limit;

static void limit_noise_once(void) {
  const size_t msg = MS_NOISE_MAX_PAYLOAD, nmsg = 16;
  size_t len = msg * nmsg;
  uint8_t *in = malloc(len), *wire = malloc(ms_noise_sealed_size(msg) * nmsg);
  uint8_t key[32];
  randombytes_buf(key, sizeof key);
  randombytes_buf(in, len);
  ms_noise_cipher_t enc;
  ms_noise_cipher_init(&enc, key);
  size_t total = 0, w = 0, n = 0;
  double t0 = cpu_self();
  while (cpu_self() - t0 < limit_seconds()) {
    n = 0;
    for (size_t i = 0; i < nmsg; i++) {
      if (ms_noise_seal(&enc, wire + n, in + i * msg, msg, &w) != 0) abort();
      n += w;
    }
    total += len;
  }
  double r_seal = total / MIB / (cpu_self() - t0);
  if (r_seal > noise_seal_limit) noise_seal_limit = r_seal;

  ms_noise_cipher_init(&enc, key);
  ms_noise_rx_t rx;
  ms_noise_rx_init(&rx, &enc);
  total = 0;
  double spent = 0;
  while (spent < limit_seconds()) {
    n = 0;
    for (size_t i = 0; i < nmsg; i++) {
      if (ms_noise_seal(&enc, wire + n, in + i * msg, msg, &w) != 0) abort();
      n += w;
    }
    double t1 = cpu_self();
    uint8_t *p = wire;
    size_t left = n;
    for (;;) {
      size_t used = 0, outlen = 0;
      uint8_t *out;
      int r = ms_noise_rx_next(&rx, p, left, &used, &out, &outlen);
      p += used;
      left -= used;
      if (r != 1) break;
    }
    spent += cpu_self() - t1;
    if (left != 0) {
      fprintf(stderr, "bench: noise open failed\n");
      failures++;
      break;
    }
    total += len;
  }
  double r_open = total / MIB / spent;
  if (r_open > noise_open_limit) noise_open_limit = r_open;
  ms_noise_rx_free(&rx);
  free(in);
  free(wire);
}

/* The best of three trials: a limit is what one core can do. */
static void limit_noise(void) {
  for (int i = 0; i < 3; i++) limit_noise_once();
  fig("limit noise-seal", noise_seal_limit, "MiB/s", 0, NULL);
  fig("limit noise-open", noise_open_limit, "MiB/s", 0, NULL);
}

/* ---- limits: handshakes in memory -------------------------------------- */

typedef struct {
  double per_core;   /* whole handshakes per second, both sides on one core */
  double client_us, server_us;
  double two_core;   /* 1 / max(client, server) */
} hs_limit_t;

static hs_limit_t shs_limit, noise_limit;

static void limit_shs(void) {
  ms_keypair_t ck, sk;
  if (ms_keypair_generate(&ck) != 0 || ms_keypair_generate(&sk) != 0) abort();
  const uint8_t *app = ms_appkey_scuttlebutt();
  double tc = 0, ts = 0;
  size_t n = 0;
  double t0 = cpu_self();
  while (cpu_self() - t0 < 2 * limit_seconds()) {
    ms_shs_t c, s;
    uint8_t m1[MS_SHS_MSG1_LEN], m2[MS_SHS_MSG2_LEN], m3[MS_SHS_MSG3_LEN],
        m4[MS_SHS_MSG4_LEN];
    ms_shs_outcome_t oc, os;
    int rc = 0;
    double a = cpu_self();
    rc |= ms_shs_client_init(&c, app, ck.secret_key, ck.public_key, sk.public_key, NULL);
    rc |= ms_shs_client_hello(&c, m1);
    double b = cpu_self();
    rc |= ms_shs_server_init(&s, app, sk.secret_key, sk.public_key, NULL);
    rc |= ms_shs_server_verify_hello(&s, m1);
    rc |= ms_shs_server_hello(&s, m2);
    double d = cpu_self();
    rc |= ms_shs_client_verify_hello(&c, m2);
    rc |= ms_shs_client_auth(&c, m3);
    double e = cpu_self();
    rc |= ms_shs_server_verify_auth(&s, m3);
    rc |= ms_shs_server_accept(&s, m4);
    rc |= ms_shs_outcome(&s, &os);
    ms_shs_wipe(&s);
    double f = cpu_self();
    rc |= ms_shs_client_verify_accept(&c, m4);
    rc |= ms_shs_outcome(&c, &oc);
    ms_shs_wipe(&c);
    double g = cpu_self();
    if (rc != 0) {
      fprintf(stderr, "bench: in-memory shs handshake failed\n");
      failures++;
      return;
    }
    tc += (b - a) + (e - d) + (g - f);
    ts += (d - b) + (f - e);
    n++;
  }
  shs_limit.client_us = 1e6 * tc / n;
  shs_limit.server_us = 1e6 * ts / n;
  shs_limit.per_core = n / (tc + ts);
  double mx = tc > ts ? tc : ts;
  shs_limit.two_core = n / mx;
  fig("limit shs-hs-mem", shs_limit.per_core, "hs/s", 0, NULL);
  printf("%-26s %10.1f %-9s (client %.0f us, server %.0f us per handshake)\n",
         "limit shs-hs-2core", shs_limit.two_core, "hs/s", shs_limit.client_us,
         shs_limit.server_us);
}

static void limit_noise_hs(void) {
  ms_keypair_t ck, sk;
  if (ms_keypair_generate(&ck) != 0 || ms_keypair_generate(&sk) != 0) abort();
  const uint8_t *app = ms_appkey_scuttlebutt();
  double tc = 0, ts = 0;
  size_t n = 0;
  double t0 = cpu_self();
  while (cpu_self() - t0 < 2 * limit_seconds()) {
    ms_noise_t c, s;
    uint8_t m1[MS_NOISE_MSG1_FRAMED_LEN], m2[MS_NOISE_MSG2_FRAMED_LEN];
    ms_noise_outcome_t oc, os;
    int rc = 0;
    double a = cpu_self();
    rc |= ms_noise_client_init(&c, app, ck.secret_key, ck.public_key, sk.public_key, NULL);
    rc |= ms_noise_client_hello(&c, m1);
    double b = cpu_self();
    rc |= ms_noise_server_init(&s, app, sk.secret_key, sk.public_key, NULL);
    rc |= ms_noise_server_read_hello(&s, m1, sizeof m1);
    rc |= ms_noise_server_accept(&s, m2);
    rc |= ms_noise_outcome(&s, &os);
    ms_noise_outcome_wipe(&os);
    ms_noise_wipe(&s);
    double d = cpu_self();
    rc |= ms_noise_client_read_accept(&c, m2, sizeof m2);
    rc |= ms_noise_outcome(&c, &oc);
    ms_noise_outcome_wipe(&oc);
    ms_noise_wipe(&c);
    double e = cpu_self();
    if (rc != 0) {
      fprintf(stderr, "bench: in-memory noise handshake failed\n");
      failures++;
      return;
    }
    tc += (b - a) + (e - d);
    ts += d - b;
    n++;
  }
  noise_limit.client_us = 1e6 * tc / n;
  noise_limit.server_us = 1e6 * ts / n;
  noise_limit.per_core = n / (tc + ts);
  double mx = tc > ts ? tc : ts;
  noise_limit.two_core = n / mx;
  fig("limit noise-hs-mem", noise_limit.per_core, "hs/s", 0, NULL);
  printf("%-26s %10.1f %-9s (client %.0f us, server %.0f us per handshake)\n",
         "limit noise-hs-2core", noise_limit.two_core, "hs/s", noise_limit.client_us,
         noise_limit.server_us);
}

/* ---- two processes ----------------------------------------------------- */

typedef struct {
  pid_t pid;
  int rfd; /* child -> parent */
} child_t;

static void raise_nofile(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &r);
  }
}

static size_t nofile(void) {
  struct rlimit r;
  return getrlimit(RLIMIT_NOFILE, &r) == 0 ? (size_t)r.rlim_cur : 1024;
}

static int wfd_child = -1; /* in the child: its end of the pipe */

static void child_send(const void *p, size_t n) {
  const uint8_t *b = p;
  while (n) {
    ssize_t w = write(wfd_child, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(3);
    b += w;
    n -= (size_t)w;
  }
}

static int parent_recv(child_t *ch, void *p, size_t n) {
  uint8_t *b = p;
  while (n) {
    ssize_t r = read(ch->rfd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    b += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Fork; the child runs fn(arg) and exits. */
static int spawn(child_t *ch, void (*fn)(void *), void *arg) {
  int p[2];
  if (pipe(p) != 0) return -1;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(p[0]);
    wfd_child = p[1];
    fn(arg);
    _exit(0);
  }
  close(p[1]);
  ch->pid = pid;
  ch->rfd = p[0];
  return 0;
}

static void reap(child_t *ch, bool kill_it) {
  if (kill_it) kill(ch->pid, SIGKILL);
  int st;
  while (waitpid(ch->pid, &st, 0) < 0 && errno == EINTR) {
  }
  close(ch->rfd);
}

/* The child sends its listener's address first: a length and the text. */
static void child_send_address(ms_listener_t *l) {
  const char *a = ms_listener_address(l);
  uint32_t n = (uint32_t)strlen(a);
  child_send(&n, sizeof n);
  child_send(a, n);
}

static char *parent_recv_address(child_t *ch) {
  uint32_t n;
  if (parent_recv(ch, &n, sizeof n) != 0 || n > 4096) return NULL;
  char *a = malloc(n + 1);
  if (parent_recv(ch, a, n) != 0) {
    free(a);
    return NULL;
  }
  a[n] = 0;
  return a;
}

static ms_t *new_ms(void) {
  ms_t *ms;
  ms_options_t o;
  ms_options_init(&o);
  o.allow_loopback_noauth = true;
  if (ms_new(&ms, &o) != 0) {
    fprintf(stderr, "bench: ms_new failed\n");
    exit(1);
  }
  return ms;
}

static void closed_noop(ms_stream_t *s, void *arg) {
  (void)s;
  (void)arg;
}

static void conn_close(ms_stream_t *s, void *arg) {
  (void)arg;
  ms_stream_close(s, closed_noop, NULL);
}

static char unix_path[64];

/* ---- bulk: one connection, receiver in the child ----------------------- */

#define DATA_SPAN ((size_t)1 << 20)

static uint8_t *data_random, *data_text;

static void make_data(void) {
  data_random = malloc(DATA_SPAN + 65536);
  data_text = malloc(DATA_SPAN + 65536);
  randombytes_buf(data_random, DATA_SPAN + 65536);
  static const char *words[] = {
      "the", "feed", "message", "of", "and", "peer", "to", "a", "replication",
      "in", "is", "log", "that", "signed", "author", "sequence", "for", "with",
      "network", "key", "hash", "content", "type", "post", "scuttlebutt", "gossip",
      "channel", "root", "branch", "mention", "timestamp", "previous", "this",
      "from", "by", "on", "an", "offline", "first", "protocol"};
  uint32_t x = 12345;
  size_t off = 0;
  while (off < DATA_SPAN + 65536) {
    x = x * 1103515245u + 12345u;
    const char *w = words[(x >> 16) % (sizeof words / sizeof *words)];
    size_t n = strlen(w);
    for (size_t i = 0; i < n && off < DATA_SPAN + 65536; i++) data_text[off++] = (uint8_t)w[i];
    if (off < DATA_SPAN + 65536) data_text[off++] = ((x >> 8) % 13 == 0) ? '\n' : ' ';
  }
}

typedef struct {
  const char *stack;
  size_t total;
} bulk_arg_t;

static struct {
  ms_listener_t *l;
  size_t received, total;
  uLong crc; /* --smoke: of everything received, checked by the sender */
} brx;

static void brx_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)arg;
  if (status != 0) {
    ms_stream_close(s, closed_noop, NULL);
    return;
  }
  brx.received += n;
  if (smoke) brx.crc = crc32(brx.crc, d, (uInt)n);
  if (brx.received >= brx.total) {
    double t = now();
    child_send(&t, sizeof t);
    uint64_t crc = brx.crc;
    child_send(&crc, sizeof crc);
    ms_stream_read_stop(s);
    ms_stream_close(s, closed_noop, NULL);
    ms_listener_close(brx.l, NULL, NULL);
  }
}

static void brx_conn(ms_stream_t *s, void *arg) {
  (void)arg;
  if (ms_stream_read_start(s, brx_read, NULL) != 0) ms_stream_close(s, closed_noop, NULL);
}

static void bulk_child(void *argp) {
  bulk_arg_t *a = argp;
  ms_t *ms = new_ms();
  char why[256];
  brx.total = a->total;
  brx.crc = crc32(0L, Z_NULL, 0);
  if (ms_listen(ms, a->stack, brx_conn, NULL, &brx.l, why, sizeof why) != 0) {
    fprintf(stderr, "bench: listen %s: %s\n", a->stack, why);
    _exit(2);
  }
  child_send_address(brx.l);
  ms_run(ms, MS_RUN_DEFAULT);
  ms_delete(ms);
}

static struct {
  ms_stream_t *s;
  const uint8_t *data;
  size_t wsize, sent, total, done;
  double t0, cpu0, child_cpu0;
  pid_t child;
  int error;
  uLong crc;
} btx;

static void btx_pump(ms_stream_t *s);

static void btx_written(ms_stream_t *s, int status, void *arg) {
  (void)arg;
  if (status != 0 && !btx.error) btx.error = status;
  btx.done = 1;
  ms_stream_close(s, closed_noop, NULL);
}

static void btx_drain(ms_stream_t *s, void *arg) {
  (void)arg;
  btx_pump(s);
}

static void btx_pump(ms_stream_t *s) {
  while (btx.sent < btx.total && ms_stream_writable(s)) {
    size_t n = btx.total - btx.sent < btx.wsize ? btx.total - btx.sent : btx.wsize;
    ms_buf_t b = {btx.data + btx.sent % DATA_SPAN, n};
    bool last = btx.sent + n == btx.total;
    if (smoke) btx.crc = crc32(btx.crc, b.base, (uInt)n);
    int rc = ms_stream_write(s, &b, 1, last ? btx_written : NULL, NULL);
    if (rc != 0) {
      btx.error = rc;
      ms_stream_close(s, closed_noop, NULL);
      return;
    }
    btx.sent += n;
  }
}

static void btx_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  (void)arg;
  if (status != 0) {
    fprintf(stderr, "bench: connect failed: %s\n", reason);
    btx.error = status;
    return;
  }
  btx.s = s;
  ms_stream_on_drain(s, btx_drain, NULL);
  btx.t0 = now();
  btx.cpu0 = cpu_self();
  btx.child_cpu0 = cpu_of(btx.child);
  btx_pump(s);
}

/* MiB/s of application bytes (wall clock), or -1; *cpu_rate: the bytes
 * over the CPU time of the busier side (what two cores of its own would
 * give when both ends keep busy). */
static double last_send_cpu, last_recv_cpu; /* of the last bulk run, seconds */

static double bulk_run(const char *stack, size_t wsize, size_t total, const uint8_t *data,
                       double *cpu_rate) {
  bulk_arg_t a = {stack, total};
  child_t ch;
  if (spawn(&ch, bulk_child, &a) != 0) return -1;
  char *addr = parent_recv_address(&ch);
  if (addr == NULL) {
    reap(&ch, true);
    return -1;
  }
  memset(&btx, 0, sizeof btx);
  btx.data = data;
  btx.wsize = wsize;
  btx.total = total;
  btx.child = ch.pid;
  btx.crc = crc32(0L, Z_NULL, 0);
  ms_t *ms = new_ms();
  if (ms_connect(ms, addr, btx_connected, NULL, NULL) != 0) btx.error = -1;
  ms_run(ms, MS_RUN_DEFAULT);
  double pcpu = cpu_self() - btx.cpu0;
  ms_delete(ms);
  free(addr);
  double t1 = 0;
  uint64_t crc = 0;
  int rc = btx.error ? -1 : parent_recv(&ch, &t1, sizeof t1);
  if (rc == 0) rc = parent_recv(&ch, &crc, sizeof crc);
  if (rc == 0 && smoke && crc != btx.crc) {
    fprintf(stderr, "bench: %s: the receiver got other bytes than were sent\n", stack);
    rc = -1;
  }
  double ccpu = cpu_of(ch.pid) - btx.child_cpu0;
  reap(&ch, rc != 0);
  if (rc != 0 || btx.error) return -1;
  *cpu_rate = total / MIB / (pcpu > ccpu ? pcpu : ccpu);
  last_send_cpu = pcpu;
  last_recv_cpu = ccpu;
  return total / MIB / (t1 - btx.t0);
}

/* Can this build listen on the stack? (ms_address_check does not know the
 * registered protocols, so try to listen.) why: the reason if not. */
static bool proto_available(const char *addr, char *why, size_t why_len) {
  ms_t *ms = new_ms();
  ms_listener_t *l = NULL;
  int rc = ms_listen(ms, addr, conn_close, NULL, &l, why, why_len);
  if (rc == 0) {
    ms_listener_close(l, NULL, NULL);
    ms_run(ms, MS_RUN_DEFAULT);
  }
  ms_delete(ms);
  return rc == 0;
}

static double bulk64[8], cpu64[8];

static void bulk_stack(int idx, const char *name, const char *listen, const uint8_t *data,
                       size_t total, double limit, const char *limit_name) {
  static const size_t sizes[] = {65536, 4096, 1024};
  static const char *labels[] = {"64K", "4K", "1K"};
  if (only_stack && strcmp(only_stack, name) != 0) return;
  for (int i = 0; i < 3; i++) {
    char fname[96], cname[96];
    snprintf(fname, sizeof fname, "bulk %s/%s", name, labels[i]);
    snprintf(cname, sizeof cname, "bulk-cpu %s/%s", name, labels[i]);
    double cr = 0, r = bulk_run(listen, sizes[i], total, data, &cr);
    if (r < 0) {
      printf("%-26s    FAILED\n", fname);
      failures++;
      continue;
    }
    if (i == 0) {
      bulk64[idx] = r;
      cpu64[idx] = cr;
    }
    char cpu[64];
    snprintf(cpu, sizeof cpu, " (CPU s: send %.2f, recv %.2f)", last_send_cpu, last_recv_cpu);
    if (i == 0) {
      fig(fname, r, "MiB/s", limit, limit_name);
      if (limit > 0)
        printf("%-26s %10.1f %-9s %6.1f%% of %s%s\n", cname, cr, "MiB/s", 100 * cr / limit,
               limit_name, cpu);
      else
        printf("%-26s %10.1f %-9s%s\n", cname, cr, "MiB/s", cpu);
    } else {
      printf("%-26s %10.1f %-9s %6.1f%% of bulk %s/64K\n", fname, r, "MiB/s",
             100 * r / bulk64[idx], name);
      printf("%-26s %10.1f %-9s %6.1f%% of bulk-cpu %s/64K%s\n", cname, cr, "MiB/s",
             100 * cr / cpu64[idx], name, cpu);
    }
    fflush(stdout);
    if (data_out) fprintf(data_out, "%s\t%zu\t%.1f\t%.1f\n", name, sizes[i], r, cr);
    if (idx == 1 && i > 0) {
      int want = i == 1 ? 85 : 60;
      target(100 * r / bulk64[idx], want, "net~shs %s writes >= %d%% of 64K (wall)", labels[i],
             want);
      target(100 * cr / cpu64[idx], want, "net~shs %s writes >= %d%% of 64K (cpu)", labels[i],
             want);
    }
  }
}

/* ---- handshakes / accepts per second ----------------------------------- */

static struct {
  ms_listener_t *l;
  size_t accepted;
  double t_first;
  size_t want; /* accepts-mode: report after this many */
} hsrv;

static void hsrv_conn(ms_stream_t *s, void *arg) {
  (void)arg;
  if (hsrv.accepted++ == 0) hsrv.t_first = now();
  ms_stream_close(s, closed_noop, NULL);
  if (hsrv.want && hsrv.accepted == hsrv.want) {
    double t[2] = {hsrv.t_first, now()};
    child_send(t, sizeof t);
  }
}

static void hsrv_error(const char *stack, int status, const char *reason, void *arg) {
  (void)stack;
  (void)status;
  (void)reason;
  (void)arg;
}

typedef struct {
  const char *stack;
  size_t want;
} hs_arg_t;

static void hs_child(void *argp) {
  hs_arg_t *a = argp;
  raise_nofile();
  ms_t *ms = new_ms();
  char why[256];
  hsrv.want = a->want;
  if (ms_listen(ms, a->stack, hsrv_conn, NULL, &hsrv.l, why, sizeof why) != 0) {
    fprintf(stderr, "bench: listen %s: %s\n", a->stack, why);
    _exit(2);
  }
  ms_listener_on_error(hsrv.l, hsrv_error, NULL);
  child_send_address(hsrv.l);
  ms_run(ms, MS_RUN_DEFAULT); /* until killed */
}

static struct {
  ms_t *ms;
  const char *addr;
  int inflight, conc;
  size_t done, failed, limit;
  double t0, t_end, duration;
  bool wait_eof;
} hcli;

static void hcli_start(void);

static void hcli_finish_one(bool ok) {
  hcli.inflight--;
  if (ok)
    hcli.done++;
  else
    hcli.failed++;
  double t = now();
  if (t - hcli.t0 < hcli.duration && (!hcli.limit || hcli.done + hcli.inflight < hcli.limit) &&
      hcli.failed < 100)
    hcli_start();
  else if (hcli.inflight == 0)
    hcli.t_end = t;
}

static void hcli_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)d;
  (void)n;
  (void)arg;
  if (status == 0) return;
  ms_stream_close(s, closed_noop, NULL);
  hcli_finish_one(true);
}

static void hcli_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  (void)arg;
  if (status != 0) {
    if (hcli.failed == 0) fprintf(stderr, "bench: handshake failed: %s\n", reason);
    hcli_finish_one(false);
    return;
  }
  if (hcli.wait_eof && ms_stream_read_start(s, hcli_read, NULL) == 0) return;
  ms_stream_close(s, closed_noop, NULL);
  hcli_finish_one(true);
}

static void hcli_start(void) {
  hcli.inflight++;
  if (ms_connect(hcli.ms, hcli.addr, hcli_connected, NULL, NULL) != 0) {
    hcli.inflight--;
    hcli.failed++;
  }
}

/* Per second; with want > 0 the server's accept rate is returned.
 * cpu_sum, cpu_max (may be NULL): completed connections over the two
 * processes' CPU time added up, and over the busier one's. */
static double hs_run(const char *stack, int conc, double duration, bool wait_eof, size_t want,
                     double *cpu_sum, double *cpu_max) {
  hs_arg_t a = {stack, want};
  child_t ch;
  if (spawn(&ch, hs_child, &a) != 0) return -1;
  char *addr = parent_recv_address(&ch);
  if (addr == NULL) {
    reap(&ch, true);
    return -1;
  }
  memset(&hcli, 0, sizeof hcli);
  hcli.ms = new_ms();
  hcli.addr = addr;
  hcli.conc = conc;
  hcli.duration = duration;
  hcli.wait_eof = wait_eof;
  hcli.limit = want;
  hcli.t0 = now();
  double pc0 = cpu_self(), cc0 = cpu_of(ch.pid);
  for (int i = 0; i < conc; i++) hcli_start();
  ms_run(hcli.ms, MS_RUN_DEFAULT);
  double pc = cpu_self() - pc0, cc = cpu_of(ch.pid) - cc0;
  if (cpu_sum) *cpu_sum = hcli.done / (pc + cc);
  if (cpu_max) *cpu_max = hcli.done / (pc > cc ? pc : cc);
  ms_delete(hcli.ms);
  free(addr);
  double rate = hcli.done / (hcli.t_end - hcli.t0);
  if (want) {
    double t[2];
    if (hcli.done < want || parent_recv(&ch, t, sizeof t) != 0)
      rate = -1;
    else
      rate = (want - 1) / (t[1] - t[0]);
  }
  reap(&ch, true);
  if (hcli.failed) {
    fprintf(stderr, "bench: %zu handshakes failed on %s\n", hcli.failed, stack);
    if (hcli.done == 0) return -1;
  }
  return rate;
}

static void handshakes(const char *name, const char *listen, const hs_limit_t *lim) {
  double dur = smoke ? 0.4 : 1.5;
  char fname[96];
  double csum = 0, cmax = 0;
  snprintf(fname, sizeof fname, "hs %s seq", name);
  double seq = hs_run(listen, 1, dur, false, 0, &csum, NULL);
  if (seq < 0) {
    printf("%-26s    FAILED\n", fname);
    failures++;
  } else {
    fig(fname, seq, "hs/s", lim->per_core, "1-core in-memory rate");
    snprintf(fname, sizeof fname, "hs-cpu %s seq", name);
    fig(fname, csum, "hs/s", lim->per_core, "1-core in-memory rate");
    target(100 * seq / lim->per_core, 80, "%s sequential hs >= 80%% of 1-core rate (wall)", name);
    target(100 * csum / lim->per_core, 80, "%s sequential hs >= 80%% of 1-core rate (cpu)", name);
  }
  snprintf(fname, sizeof fname, "hs %s 64-conc", name);
  double par = hs_run(listen, 64, dur, false, 0, NULL, &cmax);
  if (par < 0) {
    printf("%-26s    FAILED\n", fname);
    failures++;
  } else {
    fig(fname, par, "hs/s", lim->two_core, "2-core crypto bound");
    snprintf(fname, sizeof fname, "hs-cpu %s 64-conc", name);
    fig(fname, cmax, "hs/s", lim->two_core, "2-core crypto bound");
    target(100 * par / lim->two_core, 90, "%s 64-concurrent hs >= 90%% of 2-core bound (wall)",
           name);
    target(100 * cmax / lim->two_core, 90, "%s 64-concurrent hs >= 90%% of 2-core bound (cpu)",
           name);
  }
}

/* ---- memory per idle authenticated connection ------------------------- */

#define MEM_WARM 16

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
  }
  return res * (size_t)sysconf(_SC_PAGESIZE);
}

static size_t heap_bytes(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

static struct {
  size_t n, accepted;
  size_t rss0, heap0;
  uv_timer_t timer;
} msrv;

static void msrv_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)d;
  (void)n;
  (void)arg;
  if (status != 0) ms_stream_close(s, closed_noop, NULL);
}

static void msrv_report(uv_timer_t *t) {
  (void)t;
  size_t v[4] = {msrv.rss0, rss_bytes(), msrv.heap0, heap_bytes()};
  child_send(v, sizeof v);
}

static void msrv_baseline(uv_timer_t *t) {
  (void)t;
  msrv.rss0 = rss_bytes();
  msrv.heap0 = heap_bytes();
}

static void msrv_conn(ms_stream_t *s, void *arg) {
  ms_t *ms = arg;
  if (ms_stream_read_start(s, msrv_read, NULL) != 0) ms_stream_close(s, closed_noop, NULL);
  msrv.accepted++;
  if (msrv.accepted == MEM_WARM) {
    /* the baseline once the warm-up connections are idle (the client
     * waits before it opens the rest) */
    uv_timer_init(ms_loop(ms), &msrv.timer);
    uv_timer_start(&msrv.timer, msrv_baseline, 200, 0);
  }
  if (msrv.accepted == MEM_WARM + msrv.n) {
    /* let closing timers and handshake state go first */
    uv_timer_start(&msrv.timer, msrv_report, 300, 0);
  }
}

static void mem_child_run(size_t n);

/* The server is a fresh process (exec), so that its heap does not reuse
 * pages the bench already touched and RSS grows by what connections take. */
static void mem_child(void *argp) {
  size_t *n = argp;
  char fd[16], count[32];
  snprintf(fd, sizeof fd, "%d", wfd_child);
  snprintf(count, sizeof count, "%zu", *n);
  execl("/proc/self/exe", "ms_bench", "--mem-child", fd, count, (char *)NULL);
  _exit(4);
}

static void mem_child_run(size_t n) {
  raise_nofile();
  ms_t *ms = new_ms();
  char why[256];
  ms_listener_t *l;
  msrv.n = n;
  if (ms_listen(ms, "net:127.0.0.1:0~shs", msrv_conn, ms, &l, why, sizeof why) != 0) {
    fprintf(stderr, "bench: listen: %s\n", why);
    _exit(2);
  }
  ms_listener_on_error(l, hsrv_error, NULL);
  child_send_address(l);
  ms_run(ms, MS_RUN_DEFAULT); /* until killed */
}

static struct {
  ms_t *ms;
  const char *addr;
  ms_stream_t **streams;
  size_t want, started, connected, failed;
  uv_timer_t pause;
} mcli;

static void mcli_start(void);

static void mcli_resume(uv_timer_t *t) {
  (void)t;
  for (int i = 0; i < 64 && mcli.started < mcli.want; i++) mcli_start();
}

static void mcli_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  (void)arg;
  if (status != 0) {
    if (mcli.failed++ == 0) fprintf(stderr, "bench: memory: connect failed: %s\n", reason);
  } else {
    mcli.streams[mcli.connected++] = s;
  }
  if (mcli.connected + mcli.failed == MEM_WARM && mcli.started == MEM_WARM) {
    /* warm-up done: give the server time to take its baseline */
    uv_timer_start(&mcli.pause, mcli_resume, 500, 0);
    return;
  }
  if (mcli.started > MEM_WARM && mcli.started < mcli.want && mcli.failed < 10) mcli_start();
  if (mcli.connected + mcli.failed == mcli.want) {
    uv_close((uv_handle_t *)&mcli.pause, NULL);
    ms_stop(mcli.ms);
  }
}

static void mcli_start(void) {
  mcli.started++;
  if (ms_connect(mcli.ms, mcli.addr, mcli_connected, NULL, NULL) != 0) mcli.failed++;
}

static void memory(void) {
  raise_nofile();
  size_t n = mem_n ? mem_n : smoke ? 300 : 4000;
  size_t lim = nofile();
  if (n + MEM_WARM + 64 > lim) n = lim > MEM_WARM + 128 ? lim - MEM_WARM - 128 : 0;
  if (n < 100) {
    skipped("mem shs idle/conn", "RLIMIT_NOFILE too low");
    return;
  }
  size_t total = n + MEM_WARM;
  child_t ch;
  if (spawn(&ch, mem_child, &n) != 0) {
    failures++;
    return;
  }
  char *addr = parent_recv_address(&ch);
  if (addr == NULL) {
    reap(&ch, true);
    failures++;
    return;
  }
  memset(&mcli, 0, sizeof mcli);
  mcli.ms = new_ms();
  mcli.addr = addr;
  mcli.want = total;
  mcli.streams = calloc(total, sizeof *mcli.streams);
  uv_timer_init(ms_loop(mcli.ms), &mcli.pause);
  for (int i = 0; i < MEM_WARM; i++) mcli_start();
  ms_run(mcli.ms, MS_RUN_DEFAULT); /* stopped once all are connected */
  size_t v[4] = {0};
  int rc = mcli.connected == total ? parent_recv(&ch, v, sizeof v) : -1;
  reap(&ch, true);
  for (size_t i = 0; i < mcli.connected; i++) ms_stream_close(mcli.streams[i], closed_noop, NULL);
  ms_run(mcli.ms, MS_RUN_DEFAULT);
  ms_delete(mcli.ms);
  free(mcli.streams);
  free(addr);
  if (rc != 0) {
    printf("%-26s    FAILED (%zu of %zu connected)\n", "mem shs idle/conn", mcli.connected,
           total);
    failures++;
    return;
  }
  double rss = ((double)v[1] - (double)v[0]) / n, heap = ((double)v[3] - (double)v[2]) / n;
  char fname[64];
  snprintf(fname, sizeof fname, "mem shs idle/conn");
  printf("%-26s %10.0f %-9s (RSS delta / %zu connections; heap in use %.0f B/conn)\n", fname,
         rss, "B", n, heap);
  target(rss, 2048, "<= 2 KiB server memory per idle net~shs connection (B)");
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--mem-child") == 0) {
    if (sodium_init() < 0) return 1;
    wfd_child = atoi(argv[2]);
    mem_child_run((size_t)strtoull(argv[3], NULL, 10));
    return 0;
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--smoke") == 0) {
      smoke = 1;
    } else if (strcmp(argv[i], "--bulk-mib") == 0 && i + 1 < argc) {
      bulk_mib = (size_t)strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--mem-n") == 0 && i + 1 < argc) {
      mem_n = (size_t)strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--stack") == 0 && i + 1 < argc) {
      only_stack = argv[++i];
    } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      only = argv[++i];
    } else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
      data_out = fopen(argv[++i], "w");
      if (data_out == NULL) {
        perror(argv[i]);
        return 1;
      }
    } else {
      fprintf(stderr, "usage: ms_bench [--smoke] [--data FILE] [--only bulk|hs|accepts|mem] [--stack NAME] [--mem-n N] [--bulk-mib N]\n");
      return 1;
    }
  }
  if (sodium_init() < 0) return 1;
  signal(SIGPIPE, SIG_IGN);
  double t_start = now();
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  double load[3] = {0};
  (void)getloadavg(load, 3);
  printf("# ms_bench%s: %ld cores, load %.2f; limits: one core, in memory, per CPU second;\n"
         "# sockets: two processes; bulk-cpu/hs-cpu: the same runs over the CPU time used\n",
         smoke ? " --smoke" : "", ncpu, load[0]);

  ref_secretbox();
  limit_box();
  limit_noise();
  limit_shs();
  limit_noise_hs();

  make_data();
  size_t big = bulk_mib ? bulk_mib << 20 : smoke ? (size_t)64 << 20 : (size_t)1 << 30;
  /* gzip is deflate-bound (15-40 MiB/s per core): 1 GiB would take minutes */
  size_t gz = smoke ? (size_t)8 << 20 : (size_t)64 << 20;
  snprintf(unix_path, sizeof unix_path, "/tmp/ms-bench-%d.sock", (int)getpid());
  char unix_addr[96];
  snprintf(unix_addr, sizeof unix_addr, "unix:%s~shs", unix_path);

  if (want("bulk")) {
  if (data_out) fprintf(data_out, "stack\twrite\twall_MiBps\tcpu_MiBps\n");
  bulk_stack(0, "net", "net:127.0.0.1:0", data_random, big, 0, NULL);
  bulk_stack(1, "net~shs", "net:127.0.0.1:0~shs", data_random, big, box_open_limit,
             "box-open");
  bulk_stack(2, "unix~shs", unix_addr, data_random, big, box_open_limit, "box-open");
  unlink(unix_path);
  bulk_stack(3, "net~noise", "net:127.0.0.1:0~noise", data_random, big, noise_open_limit,
             "noise-open");
  bulk_stack(4, "net~shs~gzip(random)", "net:127.0.0.1:0~shs~gzip", data_random, gz,
             box_open_limit, "box-open");
  bulk_stack(5, "net~shs~gzip(text)", "net:127.0.0.1:0~shs~gzip", data_text, gz, box_open_limit,
             "box-open");
  char why[256];
  if (proto_available("ws://127.0.0.1:0~shs", why, sizeof why))
    bulk_stack(6, "ws~shs", "ws://127.0.0.1:0~shs", data_random, big, box_open_limit,
               "box-open");
  else
    skipped("bulk ws~shs", why);
  if (proto_available("wss://127.0.0.1:0", why, sizeof why))
    bulk_stack(7, "wss", "wss://127.0.0.1:0", data_random, big, 0, NULL);
  else
    skipped("bulk wss", why);
  skipped("bulk swift-api", "Swift module being reworked; C API only");

  if (bulk64[1] > 0) {
    target(100 * bulk64[1] / box_open_limit, 80, "net~shs 64K >= 80%% of box-open (wall)");
    target(100 * cpu64[1] / box_open_limit, 80, "net~shs 64K >= 80%% of box-open (cpu)");
    if (bulk64[2] > 0) {
      target(100 * bulk64[2] / bulk64[1], 100, "unix~shs >= net~shs, 64K (wall)");
      target(100 * cpu64[2] / cpu64[1], 100, "unix~shs >= net~shs, 64K (cpu)");
    }
    if (bulk64[3] > 0) {
      target(100 * bulk64[3] / bulk64[1], 130, "net~noise >= 1.3 x net~shs, 64K (wall)");
      target(100 * cpu64[3] / cpu64[1], 130, "net~noise >= 1.3 x net~shs, 64K (cpu)");
    }
  }
  }

  if (want("hs")) {
    handshakes("shs", "net:127.0.0.1:0~shs", &shs_limit);
    handshakes("noise", "net:127.0.0.1:0~noise", &noise_limit);
  }
  size_t nacc = smoke ? 2000 : 10000;
  double acc = want("accepts") ? hs_run("net:127.0.0.1:0", 64, 30, true, nacc, NULL, NULL) : 0;
  if (!want("accepts")) {
  } else if (acc < 0) {
    printf("%-26s    FAILED\n", "accepts net 64-conc");
    failures++;
  } else {
    printf("%-26s %10.1f %-9s (server side, %zu accepts)\n", "accepts net 64-conc", acc,
           "conn/s", nacc);
  }

  if (want("mem")) memory();

  printf("# targets (ratios in this run)\n");
  for (int i = 0; i < ntargets; i++) {
    bool mem = strstr(targets[i].text, "(B)") != NULL;
    bool met = mem ? targets[i].got <= targets[i].want : targets[i].got >= targets[i].want;
    printf("target %-62s %7.1f%s %s\n", targets[i].text, targets[i].got, mem ? " B" : "%",
           met ? "met" : "NOT MET");
  }
  (void)getloadavg(load, 3);
  printf("# %d failure(s); %.0f s; load %.2f\n", failures, now() - t_start, load[0]);
  if (data_out) fclose(data_out);
  return failures ? 1 : 0;
}
