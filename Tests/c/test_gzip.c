/* The gzip transform over real sockets: 16 MiB echo of random and text data
 * over net~gzip, net~shs~gzip, net~gzip~shs and unix~shs~gzip; one lower
 * write per loop turn (counted by a pass-through test transform); half-close;
 * a truncated stream (MS_EHANGUP); corrupt data and a bad CRC (MS_EFRAME,
 * the listener keeps serving); a decompression bomb (1 GiB of zeros, about
 * 1 MiB on the wire) received by a slow reader in bounded chunks with the
 * process's RSS bounded; the gzip.max_bytes / gzip.max_ratio limits
 * (MS_ELIMIT); address and option validation. Every wait is bounded. */
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mstest.h"
#include "util.h"
#include "multiserver_plugin.h"
#include "gzip_core.h"

#define WAIT_MS 30000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
} env_t;

static void env_init(env_t *e) {
  ms_options_t d;
  tu_opts_default(&d);
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

/* The listener's transport section alone ("net:127.0.0.1:PORT"): a raw
 * client that speaks gzip by hand. */
static void raw_addr(const ms_listener_t *l, char *out, size_t n) {
  snprintf(out, n, "%s", ms_listener_address(l));
  char *t = strchr(out, '~');
  if (t) *t = '\0';
}

/* Resident set size of this process in KiB (VmRSS), or 0. */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return 0;
  char line[256];
  long kib = 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kib = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kib;
}

/* A whole gzip member of data (or, with finish false, a sync-flushed
 * prefix without trailer). malloc'd into *out. */
static size_t gz_make(const uint8_t *data, size_t len, bool finish, uint8_t **out) {
  ms_gzip_t gz;
  ms_gzbuf_t b = {0};
  CHECK_INT(ms_gzip_init(&gz, 6), 0);
  CHECK_INT(ms_gzip_write(&gz, data, len, &b), 0);
  CHECK_INT(finish ? ms_gzip_finish(&gz, &b) : ms_gzip_flush(&gz, &b), 0);
  ms_gzip_free(&gz);
  *out = b.data;
  return b.len;
}

/* ======================================================================== */
/* bulk echo                                                                */
/* ======================================================================== */

#define BULK (16u * 1024 * 1024)

static void bulk_over(const uint8_t *data, const char *listen_addr) {
  env_t e;
  env_init(&e);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, listen_addr, tu_echo_on_connection, &echo);
  if (l == NULL) {
    env_done(&e);
    return;
  }
  const tu_bulk_cfg_t cfg = {.data = data,
                             .total = BULK,
                             .queue_limit = 1024 * 1024,
                             .timeout_ms = 180000,
                             .close_timeout_ms = WAIT_MS};
  tu_bulk_t b;
  tu_bulk_echo(&e.loop, e.cli, ms_listener_address(l), &cfg, &echo, &b);
  CHECK(strstr(b.address, "gzip") != NULL);
  CHECK(strstr(echo.last_address, "gzip") != NULL);
  if (echo.errors) fprintf(stderr, "  echo error: %s\n", ms_err_name(echo.last_error));
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void fill_text(uint8_t *p, size_t n) {
  static const char *const words[] = {
      "the",   "stream", "of",    "gossip", "flows", "between", "peers",
      "and",   "every",  "feed",  "is",     "a",     "signed",  "log",
      "with",  "{\"type\":\"post\",", "\"text\":", "hello", "world", "\n"};
  size_t nw = sizeof words / sizeof words[0], off = 0;
  while (off < n) {
    const char *w = words[randombytes_uniform((uint32_t)nw)];
    size_t k = strlen(w);
    if (k > n - off) k = n - off;
    memcpy(p + off, w, k);
    off += k;
    if (off < n) p[off++] = ' ';
  }
}

static uint8_t *bulk_rnd, *bulk_txt;

static void bulk_data(void) {
  if (bulk_rnd) return;
  bulk_rnd = malloc(BULK);
  bulk_txt = malloc(BULK);
  randombytes_buf(bulk_rnd, BULK);
  fill_text(bulk_txt, BULK);
}

static void bulk_both(const char *addr) {
  bulk_data();
  bulk_over(bulk_rnd, addr);
  bulk_over(bulk_txt, addr);
}

static void test_bulk_gzip(void) { bulk_both("net:127.0.0.1:0~gzip"); }
static void test_bulk_shs_gzip(void) { bulk_both("net:127.0.0.1:0~shs~gzip"); }
static void test_bulk_gzip_shs(void) { bulk_both("net:127.0.0.1:0~gzip~shs"); }
static void test_bulk_unix(void) {
  char dir[64], a[128];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(a, sizeof a, "unix:%s/gz.sock~shs~gzip", dir);
  bulk_both(a);
  tu_rmtree(dir);
}

/* ======================================================================== */
/* a recording server: echoes, records the end of the read side            */
/* ======================================================================== */

typedef struct {
  int accepted, ends, closed;
  int status;           /* how the last read side ended */
  char reason[256];     /* its gzip.error */
  size_t bytes, chunks, max_chunk;
  bool echo;            /* write back what arrives */
  size_t pause_every;   /* non-zero: stop reading every so many bytes */
  size_t next_pause;
  bool check_zero;      /* every byte must be 0 */
  bool nonzero;
  long rss_max;         /* sampled every 16 MiB */
  size_t next_sample;
  ms_stream_t *s;
  uv_timer_t timer;
} rec_t;

static const uint8_t zeros[MS_GUNZIP_OUT_RECOMMENDED];

static void rec_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((rec_t *)arg)->closed++;
}
static void rec_shut(ms_stream_t *s, int status, void *arg) {
  (void)status;
  ms_stream_close(s, rec_closed, arg);
}
static void rec_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  free(arg);
}
static void rec_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                     void *arg);
static void rec_resume(uv_timer_t *t) {
  rec_t *r = t->data;
  if (r->s) ms_stream_read_start(r->s, rec_read, r);
}
static void rec_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                     void *arg) {
  rec_t *r = arg;
  if (status == 0) {
    r->bytes += len;
    r->chunks++;
    if (len > r->max_chunk) r->max_chunk = len;
    if (r->check_zero && len && (len > sizeof zeros || memcmp(data, zeros, len) != 0))
      r->nonzero = true;
    if (r->bytes >= r->next_sample) {
      long k = rss_kib();
      if (k > r->rss_max) r->rss_max = k;
      r->next_sample += 16u << 20;
    }
    if (r->echo && len) {
      uint8_t *copy = malloc(len);
      memcpy(copy, data, len);
      ms_buf_t b = {copy, len};
      if (ms_stream_write(s, &b, 1, rec_written, copy) != 0) free(copy);
    }
    if (r->pause_every && r->bytes >= r->next_pause) {
      r->next_pause += r->pause_every;
      ms_stream_read_stop(s);
      uv_timer_start(&r->timer, rec_resume, 1, 0);
    }
    return;
  }
  r->ends++;
  r->status = status;
  size_t n = 0;
  const char *why = ms_stream_meta(s, "gzip.error", &n);
  snprintf(r->reason, sizeof r->reason, "%s", why ? why : "");
  r->s = NULL;
  if (status == MS_EOF && ms_stream_shutdown(s, rec_shut, r) == 0) return;
  ms_stream_close(s, rec_closed, r);
}
static void rec_accept(ms_stream_t *s, void *arg) {
  rec_t *r = arg;
  r->accepted++;
  r->s = s;
  ms_stream_read_start(s, rec_read, r);
}
static void rec_init(env_t *e, rec_t *r) {
  memset(r, 0, sizeof *r);
  CHECK_INT(uv_timer_init(&e->loop, &r->timer), 0);
  r->timer.data = r;
}
static void rec_reset(rec_t *r) {
  int acc = r->accepted, ends = r->ends, closed = r->closed;
  bool echo = r->echo;
  uv_timer_t t = r->timer;
  memset(r, 0, sizeof *r);
  r->timer = t;
  r->accepted = acc;
  r->ends = ends;
  r->closed = closed;
  r->echo = echo;
}
static void rec_done(rec_t *r, uv_loop_t *loop) {
  uv_close((uv_handle_t *)&r->timer, NULL);
  tu_drain(loop, 1000);
}

/* A raw client: writes bytes (by reference), optionally shuts down, reads
 * whatever comes back until the end, then closes. */
typedef struct {
  const uint8_t *data;
  size_t len;
  bool shutdown;
  int status, done, closed;
  size_t got;
  uint8_t *back; /* what came back (raw), up to backcap */
  size_t backcap;
} raw_t;

static void raw_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((raw_t *)arg)->closed++;
}
static void raw_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                     void *arg) {
  raw_t *w = arg;
  if (status == 0) {
    if (w->back && w->got + len <= w->backcap) memcpy(w->back + w->got, data, len);
    w->got += len;
    return;
  }
  w->done++;
  ms_stream_close(s, raw_closed, w);
}
static void raw_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  raw_t *w = arg;
  w->status = status;
  if (status != 0) {
    fprintf(stderr, "  raw connect: %s\n", reason);
    w->done++;
    w->closed++;
    return;
  }
  ms_buf_t b = {w->data, w->len};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  if (w->shutdown) CHECK_INT(ms_stream_shutdown(s, NULL, NULL), 0);
  ms_stream_read_start(s, raw_read, w);
}
static void raw_send(env_t *e, const char *addr, raw_t *w) {
  CHECK_INT(ms_connect(e->cli, addr, raw_connected, w, NULL), 0);
  WAIT(&e->loop, w->closed, 1, "raw client done");
}

/* A gzip client that sends one message, shuts down and expects the echo. */
static void echo_once(env_t *e, const char *addr, rec_t *r) {
  static const uint8_t ping[] = "ping over gzip";
  uint8_t back[64];
  raw_t w = {.data = ping, .len = sizeof ping, .shutdown = true, .back = back,
             .backcap = sizeof back};
  int c0 = r->closed;
  raw_send(e, addr, &w);
  CHECK_INT(w.status, 0);
  CHECK_INT(w.got, sizeof ping);
  CHECK_MEM(back, ping, sizeof ping);
  WAIT(&e->loop, r->closed, c0 + 1, "echo side closed");
  CHECK_INT(r->status, MS_EOF);
}

/* ======================================================================== */
/* truncated, corrupt, bad CRC                                              */
/* ======================================================================== */

static void test_errors(void) {
  env_t e;
  env_init(&e);
  rec_t r;
  rec_init(&e, &r);
  r.echo = true;
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~gzip", rec_accept, &r);
  if (l == NULL) return;
  char raw[128];
  raw_addr(l, raw, sizeof raw);
  uint8_t msg[5000];
  fill_text(msg, sizeof msg);

  /* Truncated: a decodable prefix, then the TCP stream ends. */
  uint8_t *z;
  size_t zn = gz_make(msg, sizeof msg, false, &z);
  raw_t w = {.data = z, .len = zn, .shutdown = true};
  rec_reset(&r);
  raw_send(&e, raw, &w);
  WAIT(&e.loop, r.ends, 1, "truncated: read side ended");
  CHECK_INT(r.status, MS_EHANGUP);
  CHECK_INT(r.bytes, sizeof msg); /* the prefix was delivered first */
  CHECK_HAS(r.reason, "ended before the gzip trailer");
  free(z);

  /* Corrupt: a valid start, then garbage. */
  zn = gz_make(msg, sizeof msg, false, &z);
  uint8_t *bad = malloc(zn + 64);
  memcpy(bad, z, zn);
  memset(bad + zn, 0xff, 64);
  w = (raw_t){.data = bad, .len = zn + 64, .shutdown = true};
  int ends0 = r.ends;
  rec_reset(&r);
  raw_send(&e, raw, &w);
  WAIT(&e.loop, r.ends, ends0 + 1, "corrupt: read side ended");
  CHECK_INT(r.status, MS_EFRAME);
  CHECK_HAS(r.reason, "gzip:");
  free(bad);
  free(z);

  /* Not gzip at all. */
  static const uint8_t http[] = "GET / HTTP/1.1\r\n\r\n";
  w = (raw_t){.data = http, .len = sizeof http - 1, .shutdown = true};
  ends0 = r.ends;
  raw_send(&e, raw, &w);
  WAIT(&e.loop, r.ends, ends0 + 1, "not gzip: read side ended");
  CHECK_INT(r.status, MS_EFRAME);
  CHECK_HAS(r.reason, "header");

  /* A whole member whose CRC-32 does not match. */
  zn = gz_make(msg, sizeof msg, true, &z);
  z[zn - 8] ^= 0x01;
  w = (raw_t){.data = z, .len = zn, .shutdown = true};
  ends0 = r.ends;
  raw_send(&e, raw, &w);
  WAIT(&e.loop, r.ends, ends0 + 1, "bad crc: read side ended");
  CHECK_INT(r.status, MS_EFRAME);
  CHECK_HAS(r.reason, "check");
  free(z);

  /* Bytes after the trailer. */
  zn = gz_make(msg, sizeof msg, true, &z);
  uint8_t *extra = malloc(zn + 3);
  memcpy(extra, z, zn);
  memcpy(extra + zn, "xyz", 3);
  w = (raw_t){.data = extra, .len = zn + 3, .shutdown = false};
  ends0 = r.ends;
  raw_send(&e, raw, &w);
  WAIT(&e.loop, r.ends, ends0 + 1, "trailing data: read side ended");
  CHECK_INT(r.status, MS_EFRAME);
  CHECK_HAS(r.reason, "after the end");
  free(extra);
  free(z);

  /* The listener still serves gzip clients. */
  echo_once(&e, ms_listener_address(l), &r);

  tu_close_listener(&e.loop, l, WAIT_MS);
  rec_done(&r, &e.loop);
  env_done(&e);
}

/* ======================================================================== */
/* half-close                                                               */
/* ======================================================================== */

static void half_close_over(const char *addr, int mode, int want_end) {
  env_t e;
  env_init(&e);
  tu_half_close(&e.loop, e.srv, e.cli, addr, mode, want_end, WAIT_MS, NULL);
  env_done(&e);
}

static void test_half_close(void) {
  half_close_over("net:127.0.0.1:0~gzip", 0, MS_EOF);
  half_close_over("net:127.0.0.1:0~shs~gzip", 0, MS_EOF);
  half_close_over("net:127.0.0.1:0~gzip~shs", 0, MS_EOF);
  /* Closed without shutdown: no trailer, so the reader can tell. */
  half_close_over("net:127.0.0.1:0~gzip", 1, MS_EHANGUP);
}

/* ======================================================================== */
/* one lower write per loop turn                                            */
/* ======================================================================== */

/* "count": a pass-through transform that counts the writes made to it. */
typedef struct {
  int writes;
  size_t bytes;
  bool no_half_close; /* "nohc": clear MS_CAP_HALF_CLOSE, refuse shutdown */
} count_stats_t;

typedef struct {
  ms_stream_t *lower, *upper;
  count_stats_t *st;
} count_t;

static void count_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  ms_write_req_done(arg, status);
}
static int count_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                       unsigned nbufs) {
  count_t *c = ms_stream_impl(s);
  c->st->writes++;
  c->st->bytes += ms_write_req_size(req);
  return ms_stream_write(c->lower, bufs, nbufs, count_written, req);
}
static void count_read(ms_stream_t *lower, int status, const uint8_t *data,
                       size_t len, void *arg) {
  (void)lower;
  count_t *c = arg;
  ms_stream_emit_read(c->upper, status, (uint8_t *)data, len);
}
static int count_read_start(ms_stream_t *s) {
  count_t *c = ms_stream_impl(s);
  return ms_stream_read_start(c->lower, count_read, c);
}
static int count_read_stop(ms_stream_t *s) {
  count_t *c = ms_stream_impl(s);
  return ms_stream_read_stop(c->lower);
}
static void count_shut(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  count_t *c = arg;
  ms_stream_shutdown_done(c->upper, status);
}
static int count_shutdown(ms_stream_t *s) {
  count_t *c = ms_stream_impl(s);
  if (c->st->no_half_close) return MS_ENOTSUP;
  return ms_stream_shutdown(c->lower, count_shut, c);
}
static void count_lower_closed(ms_stream_t *lower, void *arg) {
  (void)lower;
  count_t *c = arg;
  ms_stream_t *up = c->upper;
  free(c);
  ms_stream_closed(up);
}
static void count_close(ms_stream_t *s) {
  count_t *c = ms_stream_impl(s);
  ms_stream_close(c->lower, count_lower_closed, c);
}
static const ms_stream_ops_t count_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = count_write,
    .read_start = count_read_start,
    .read_stop = count_read_stop,
    .shutdown = count_shutdown,
    .close = count_close,
};
static int count_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
                      int role, void *pdata) {
  (void)sec;
  (void)role;
  count_t *c = calloc(1, sizeof *c);
  c->lower = lower;
  c->st = pdata;
  char addr[512];
  snprintf(addr, sizeof addr, "%s~count", ms_stream_address(lower));
  c->upper = ms_stream_new(ms_pwrap_ms(pw), &count_ops, c, addr);
  if (c->st->no_half_close) ms_stream_set_caps(c->upper, MS_CAP_RELIABLE | MS_CAP_ORDERED);
  ms_pwrap_done(pw, 0, c->upper, NULL);
  return 0;
}
static const ms_protocol_t count_proto = {
    .size = sizeof(ms_protocol_t),
    .name = "count",
    .kind = MS_PROTO_TRANSFORM,
    .wrap = count_wrap,
};
static const ms_protocol_t nohc_proto = {
    .size = sizeof(ms_protocol_t),
    .name = "nohc",
    .kind = MS_PROTO_TRANSFORM,
    .wrap = count_wrap,
};

/* Over a lower stream that cannot half-close, the trailer alone ends a
 * direction: shutdown writes it and reports done, the reader ends at it. */
static void test_no_half_close(void) {
  for (int mode = 0; mode < 2; mode++) {
    env_t e;
    env_init(&e);
    count_stats_t st = {.no_half_close = true};
    CHECK_INT(ms_register(e.srv, &nohc_proto, &st), 0);
    CHECK_INT(ms_register(e.cli, &nohc_proto, &st), 0);
    tu_half_close(&e.loop, e.srv, e.cli, "net:127.0.0.1:0~nohc~gzip", mode,
                  mode == 0 ? MS_EOF : MS_EHANGUP, WAIT_MS, NULL);
    env_done(&e);
  }
}

#define SMALL_N 200
#define SMALL_LEN 37

typedef struct {
  ms_stream_t *s;
  int connected, completed;
  bool out_of_order;
  int writes_at_write; /* lower writes when the burst was written */
  uint8_t msgs[2 * SMALL_N][SMALL_LEN];
  size_t sent;
} burst_t;

static void burst_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  burst_t *b = arg;
  if (status != 0) b->out_of_order = true;
  b->completed++;
}

/* Writes SMALL_N messages in this turn; completion order is checked by
 * numbering them through the callback count. */
static void burst(burst_t *b) {
  for (int i = 0; i < SMALL_N; i++) {
    uint8_t *m = b->msgs[b->sent / SMALL_LEN];
    randombytes_buf(m, SMALL_LEN);
    ms_buf_t buf = {m, SMALL_LEN};
    CHECK_INT(ms_stream_write(b->s, &buf, 1, burst_written, b), 0);
    b->sent += SMALL_LEN;
  }
}
static void burst_connected(ms_stream_t *s, int status, const char *reason,
                            void *arg) {
  burst_t *b = arg;
  if (status != 0) fprintf(stderr, "  burst connect: %s\n", reason);
  b->s = s;
  b->connected++;
}

typedef struct {
  size_t got;
  uint8_t data[2 * SMALL_N * SMALL_LEN];
  ms_stream_t *s;
} sink_t;
static void sink_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                      void *arg) {
  (void)s;
  sink_t *k = arg;
  if (status == 0 && k->got + len <= sizeof k->data) memcpy(k->data + k->got, data, len);
  if (status == 0) k->got += len;
}
static void sink_accept(ms_stream_t *s, void *arg) {
  sink_t *k = arg;
  k->s = s;
  ms_stream_read_start(s, sink_read, k);
}

static void test_one_write_per_turn(void) {
  env_t e;
  env_init(&e);
  count_stats_t st = {0};
  CHECK_INT(ms_register(e.cli, &count_proto, &st), 0);
  sink_t *k = calloc(1, sizeof *k);
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~gzip", sink_accept, k);
  if (l == NULL) return;
  char raw[128], addr[160];
  raw_addr(l, raw, sizeof raw);
  snprintf(addr, sizeof addr, "%s~count~gzip", raw);
  burst_t *b = calloc(1, sizeof *b);
  CHECK_INT(ms_connect(e.cli, addr, burst_connected, b, NULL), 0);
  WAIT(&e.loop, b->connected, 1, "burst connect");
  if (b->s == NULL) return;
  CHECK_INT(st.writes, 0);

  /* Turn 1: SMALL_N writes, one lower write. No shutdown: the sync flush
   * alone makes every byte decodable at the peer. */
  burst(b);
  CHECK_INT(st.writes, 0);    /* nothing before the end of the turn */
  CHECK_INT(b->completed, 0); /* completions come with the lower write */
  WAIT(&e.loop, b->completed, SMALL_N, "first burst completes");
  CHECK_INT(st.writes, 1);
  CHECK(!b->out_of_order);
  int got = 0;
  while (k->got < (size_t)SMALL_N * SMALL_LEN && got++ < 200) tu_sleep_loop(&e.loop, 10);
  CHECK_INT(k->got, SMALL_N * SMALL_LEN);
  CHECK(st.bytes < (size_t)SMALL_N * SMALL_LEN + 64); /* header + deflate */

  /* Turn 2: another burst, another single write. */
  burst(b);
  WAIT(&e.loop, b->completed, 2 * SMALL_N, "second burst completes");
  CHECK_INT(st.writes, 2);
  got = 0;
  while (k->got < 2u * SMALL_N * SMALL_LEN && got++ < 200) tu_sleep_loop(&e.loop, 10);
  CHECK_INT(k->got, 2 * SMALL_N * SMALL_LEN);
  CHECK_MEM(k->data, b->msgs, sizeof k->data);

  /* An idle turn writes nothing. */
  tu_sleep_loop(&e.loop, 20);
  CHECK_INT(st.writes, 2);

  ms_stream_t *v[2] = {b->s, k->s};
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  free(b);
  free(k);
  env_done(&e);
}

/* ======================================================================== */
/* the bomb, and the limits                                                 */
/* ======================================================================== */

#define BOMB_PLAIN (1024ull * 1024 * 1024)

static uint8_t *bomb;
static size_t bomb_len;

static void make_bomb(void) {
  if (bomb) return;
  ms_gzip_t gz;
  ms_gzbuf_t b = {0};
  CHECK_INT(ms_gzip_init(&gz, 9), 0);
  uint8_t *z = calloc(1, 1 << 20);
  for (uint64_t done = 0; done < BOMB_PLAIN; done += 1 << 20)
    CHECK_INT(ms_gzip_write(&gz, z, 1 << 20, &b), 0);
  CHECK_INT(ms_gzip_finish(&gz, &b), 0);
  ms_gzip_free(&gz);
  free(z);
  bomb = b.data;
  bomb_len = b.len;
  fprintf(stderr, "  bomb: %llu bytes of zeros in %zu bytes\n",
          (unsigned long long)BOMB_PLAIN, bomb_len);
}

/* Send the bomb raw to a `net~gzip` listener (with opts) and let a slow
 * reader take it. */
static void bomb_run(const ms_popts_t *opts, rec_t *r, long *rss_growth) {
  env_t e;
  env_init(&e);
  rec_init(&e, r);
  r->pause_every = 8u << 20;
  r->next_pause = r->pause_every;
  r->check_zero = true;
  r->next_sample = 0;
  ms_listener_t *l = NULL;
  char reason[256] = "";
  CHECK_INT(ms_listen_with(e.srv, "net:127.0.0.1:0~gzip", opts, rec_accept, r, &l,
                           reason, sizeof reason),
            0);
  if (l == NULL) {
    fprintf(stderr, "  listen: %s\n", reason);
    return;
  }
  char raw[128];
  raw_addr(l, raw, sizeof raw);
  long before = rss_kib();
  r->rss_max = before;
  uint64_t t0 = tu_now_ms();
  raw_t w = {.data = bomb, .len = bomb_len, .shutdown = true};
  CHECK_INT(ms_connect(e.cli, raw, raw_connected, &w, NULL), 0);
  CHECK(tu_wait(&e.loop, &r->ends, 1, 300000, "bomb received"));
  CHECK(tu_wait(&e.loop, &w.closed, 1, WAIT_MS, "bomb sender done"));
  long after = rss_kib();
  if (after > r->rss_max) r->rss_max = after;
  *rss_growth = r->rss_max - before;
  fprintf(stderr,
          "  bomb: %zu bytes in %zu chunks (max %zu) in %llu ms, VmRSS %ld KiB before, "
          "max %ld KiB (+%ld KiB)\n",
          r->bytes, r->chunks, r->max_chunk, (unsigned long long)(tu_now_ms() - t0),
          before, r->rss_max, *rss_growth);
  tu_close_listener(&e.loop, l, WAIT_MS);
  rec_done(r, &e.loop);
  env_done(&e);
}

/* RSS bound for receiving 1 GiB: the connection's fixed buffers and zlib's
 * state are well under 1 MiB; the rest is slack for the allocator (and
 * ASan's quarantine of the freed stash buffers). */
#define BOMB_RSS_BOUND_KIB (16 * 1024)

static void test_bomb(void) {
  make_bomb();
  CHECK(bomb_len < 2u * 1024 * 1024);
  rec_t r;
  long growth = 0;
  bomb_run(NULL, &r, &growth);
  CHECK_INT(r.status, MS_EOF);
  CHECK_INT(r.bytes, BOMB_PLAIN);
  CHECK(!r.nonzero);
  CHECK(r.max_chunk <= MS_GUNZIP_OUT_RECOMMENDED);
  CHECK(growth < BOMB_RSS_BOUND_KIB);
}

static void test_limits(void) {
  make_bomb();
  ms_popts_t *o = NULL;
  rec_t r;
  long growth = 0;

  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_set(o, "gzip", "max_bytes", "10485760"), 0);
  bomb_run(o, &r, &growth);
  CHECK_INT(r.status, MS_ELIMIT);
  CHECK_INT(r.bytes, 10485760); /* exactly up to the limit */
  CHECK_HAS(r.reason, "limit");
  ms_popts_free(o);

  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_set(o, "gzip", "max_ratio", "100"), 0);
  bomb_run(o, &r, &growth);
  CHECK_INT(r.status, MS_ELIMIT);
  CHECK(r.bytes < 8u * 1024 * 1024);
  CHECK_HAS(r.reason, "ratio");
  ms_popts_free(o);

  /* A ratio limit that ordinary text stays under. */
  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_set(o, "gzip", "max_ratio", "50"), 0);
  CHECK_INT(ms_popts_set(o, "gzip", "max_bytes", "20000000"), 0);
  env_t e;
  env_init(&e);
  tu_echo_t echo = {0};
  ms_listener_t *l = NULL;
  char reason[256] = "";
  CHECK_INT(ms_listen_with(e.srv, "net:127.0.0.1:0~gzip", o, tu_echo_on_connection,
                           &echo, &l, reason, sizeof reason),
            0);
  ms_popts_free(o);
  if (l) {
    uint8_t *txt = malloc(4u << 20);
    fill_text(txt, 4u << 20);
    const tu_bulk_cfg_t cfg = {.data = txt, .total = 4u << 20, .timeout_ms = 60000,
                               .close_timeout_ms = WAIT_MS};
    tu_bulk_t b;
    tu_bulk_echo(&e.loop, e.cli, ms_listener_address(l), &cfg, &echo, &b);
    free(txt);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }

  /* A misspelt option key fails the listen, naming the known ones. */
  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_set(o, "gzip", "maxbytes", "1"), 0);
  l = NULL;
  int rc = ms_listen_with(e.srv, "net:127.0.0.1:0~gzip", o, tu_echo_on_connection,
                          &echo, &l, reason, sizeof reason);
  CHECK(rc != 0);
  CHECK_HAS(reason, "max_bytes");
  if (l) tu_close_listener(&e.loop, l, WAIT_MS);
  ms_popts_free(o);
  env_done(&e);
}

static void test_address(void) {
  char reason[256] = "", *canon = NULL;
  CHECK_INT(ms_address_check("net:127.0.0.1:1~gzip", false, &canon, reason, sizeof reason), 0);
  if (canon) CHECK_STR(canon, "net:127.0.0.1:1~gzip");
  ms_free(canon);
  CHECK_INT(ms_address_check("net:127.0.0.1:0~shs~gzip", true, NULL, reason, sizeof reason), 0);
  CHECK_INT(ms_address_check("net:127.0.0.1:1~gzip:9", false, NULL, reason, sizeof reason),
            MS_EADDRESS);
  CHECK_HAS(reason, "no arguments");
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"address", test_address},
      {"bomb", test_bomb},
      {"limits", test_limits},
      {"one_write", test_one_write_per_turn},
      {"errors", test_errors},
      {"half_close", test_half_close},
      {"no_half_close", test_no_half_close},
      {"bulk_gzip", test_bulk_gzip},
      {"bulk_shs_gzip", test_bulk_shs_gzip},
      {"bulk_gzip_shs", test_bulk_gzip_shs},
      {"bulk_unix", test_bulk_unix},
  };
  if (sodium_init() < 0) return 1;
  signal(SIGPIPE, SIG_IGN); /* a write to a socket the peer closed: EPIPE */
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  free(bomb);
  free(bulk_rnd);
  free(bulk_txt);
  return mst_done("gzip");
}
