/* Orderly close delivers everything, on every built-in stack: each side
 * writes random bytes and shuts down, the peer reads all of them and then
 * a clean MS_EOF (both directions at once); half-close (one side keeps
 * writing after the other shut down, both ways round); and a close without
 * the protocol's end marker is an error on the other side, never a clean
 * end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "multiserver.h"
#include "multiserver_uv.h"
#include "mstest.h"
#include "util.h"

#define WAIT_MS 30000
#define CHUNK (64u * 1024)

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
  char dir[64];
} env_t;

static void env_init(env_t *e) {
  ms_options_t o;
  tu_opts_default(&o);
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, &o), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, &o), 0);
  snprintf(e->dir, sizeof e->dir, "%s", tu_mkdtemp());
}

static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
  tu_rmtree(e->dir);
}

/* One end of an exchange: writes out[0..nout) (at once, or only once it
 * has read the peer's end), then shuts down (or closes without shutdown);
 * hashes what it reads until the end. */
enum { SHUT = 0, CLOSE_NO_MARKER = 1 };

typedef struct {
  ms_stream_t *s;
  const uint8_t *out;
  size_t nout, sent;
  int acked; /* completed writes */
  bool wait_eof; /* start writing only after the peer's end */
  int finish;    /* SHUT or CLOSE_NO_MARKER */
  bool writing, shut_called;
  crypto_generichash_state h;
  size_t got;
  int end;  /* read end status, 0 until then */
  int ends; /* counter for tu_wait */
  int shut_status, shut_done;
  int write_errors;
  int closed;
} end_t;

static void pump_writes(end_t *x);

static void on_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  end_t *x = arg;
  if (status != 0) {
    x->write_errors++;
    return;
  }
  x->acked++;
}

static void on_shut(ms_stream_t *s, int status, void *arg) {
  (void)s;
  end_t *x = arg;
  x->shut_status = status;
  x->shut_done++;
}

static void on_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((end_t *)arg)->closed++;
}

static void on_drain(ms_stream_t *s, void *arg) {
  (void)s;
  pump_writes(arg);
}

static size_t writes_for(size_t n) { return (n + CHUNK - 1) / CHUNK; }

static void pump_writes(end_t *x) {
  if (!x->writing || x->shut_called || x->closed) return;
  while (x->sent < x->nout && ms_stream_writable(x->s)) {
    size_t n = x->nout - x->sent < CHUNK ? x->nout - x->sent : CHUNK;
    ms_buf_t b = {x->out + x->sent, n};
    if (ms_stream_write(x->s, &b, 1, on_written, x) != 0) {
      x->write_errors++;
      return;
    }
    x->sent += n;
  }
  if (x->sent == x->nout && x->finish == SHUT) {
    x->shut_called = true;
    CHECK_INT(ms_stream_shutdown(x->s, on_shut, x), 0);
  }
}

static void on_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)s;
  end_t *x = arg;
  if (status == 0) {
    crypto_generichash_update(&x->h, d, n);
    x->got += n;
    return;
  }
  x->end = status;
  x->ends++;
  if (x->wait_eof && status == MS_EOF && !x->writing) {
    x->writing = true;
    pump_writes(x);
  }
}

static void end_start(end_t *x, ms_stream_t *s, const uint8_t *out, size_t nout, bool wait_eof,
                      int finish) {
  memset(x, 0, sizeof *x);
  x->s = s;
  x->out = out;
  x->nout = nout;
  x->wait_eof = wait_eof;
  x->finish = finish;
  crypto_generichash_init(&x->h, NULL, 0, 32);
  ms_stream_on_drain(s, on_drain, x);
  CHECK_INT(ms_stream_read_start(s, on_read, x), 0);
  if (!wait_eof) {
    x->writing = true;
    pump_writes(x);
  }
}

static void hash_of(const uint8_t *d, size_t n, uint8_t out[32]) {
  crypto_generichash(out, 32, d, n, NULL, 0);
}

/* The accepted stream, for the exchange. */
typedef struct {
  ms_stream_t *s;
  int n;
} acc_t;

static void on_acc(ms_stream_t *s, void *arg) {
  acc_t *a = arg;
  if (a->s) {
    ms_stream_close(s, NULL, NULL);
    return;
  }
  a->s = s;
  a->n++;
}

/* One exchange over listen: the client sends nc bytes, the server ns.
 * mode 0: both at once; 1: the server writes only after the client's end
 * (the client shut down first); 2: the client writes after the server's
 * end; 3: the client closes without shutdown once its bytes are written:
 * the server must see an error, not MS_EOF (stacks with an end marker). */
static void exchange(env_t *e, const char *listen, int mode, size_t nc, size_t ns,
                     const uint8_t *data) {
  char what[320];
  snprintf(what, sizeof what, "%s mode %d", listen, mode);
  acc_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e->srv, listen, on_acc, &acc);
  if (!l) return;
  tu_conn_t r;
  CHECK_INT(tu_connect(e->cli, ms_listener_address(l), &r, NULL), 0);
  CHECK(tu_wait(&e->loop, &r.done, 1, WAIT_MS, what));
  CHECK(tu_wait(&e->loop, &acc.n, 1, WAIT_MS, what));
  if (r.status != 0 || !acc.s) {
    fprintf(stderr, "  %s: %s\n", what, r.reason);
    CHECK_INT(r.status, 0);
    tu_close_listener(&e->loop, l, WAIT_MS);
    return;
  }
  const uint8_t *cdata = data, *sdata = data + 1; /* two different byte streams */
  end_t c, s;
  end_start(&s, acc.s, sdata, ns, mode == 1, SHUT);
  end_start(&c, r.s, cdata, nc, mode == 2, mode == 3 ? CLOSE_NO_MARKER : SHUT);
  uint8_t want[32], got[32];
  if (mode == 3) {
    /* every write completed (handed to the layers below), then close */
    int target = (int)writes_for(nc);
    CHECK(tu_wait(&e->loop, &c.acked, target, WAIT_MS, what));
    ms_stream_close(r.s, on_closed, &c);
    CHECK(tu_wait(&e->loop, &s.ends, 1, WAIT_MS, what));
    CHECK(s.end != 0 && s.end != MS_EOF);
    fprintf(stderr, "  %-32s close without the end marker -> %s (after %zu of %zu bytes)\n",
            listen, ms_err_name(s.end), s.got, nc);
    CHECK(tu_wait(&e->loop, &c.closed, 1, WAIT_MS, what));
    ms_stream_close(acc.s, on_closed, &s);
    CHECK(tu_wait(&e->loop, &s.closed, 1, WAIT_MS, what));
    tu_close_listener(&e->loop, l, WAIT_MS);
    return;
  }
  CHECK(tu_wait(&e->loop, &s.ends, 1, WAIT_MS, what));
  CHECK(tu_wait(&e->loop, &c.ends, 1, WAIT_MS, what));
  CHECK(tu_wait(&e->loop, &s.shut_done, 1, WAIT_MS, what));
  CHECK(tu_wait(&e->loop, &c.shut_done, 1, WAIT_MS, what));
  CHECK_INT(s.end, MS_EOF);
  CHECK_INT(c.end, MS_EOF);
  CHECK_INT(s.got, nc);
  CHECK_INT(c.got, ns);
  CHECK_INT(s.shut_status, 0);
  CHECK_INT(c.shut_status, 0);
  CHECK_INT(s.write_errors + c.write_errors, 0);
  crypto_generichash_final(&s.h, got, 32);
  hash_of(cdata, nc, want);
  CHECK_MEM(got, want, 32);
  crypto_generichash_final(&c.h, got, 32);
  hash_of(sdata, ns, want);
  CHECK_MEM(got, want, 32);
  if (s.end != MS_EOF || c.end != MS_EOF || s.got != nc || c.got != ns)
    fprintf(stderr, "  %s: server read %zu/%zu (%s), client read %zu/%zu (%s)\n", what, s.got, nc,
            ms_err_name(s.end), c.got, ns, ms_err_name(c.end));
  ms_stream_close(r.s, on_closed, &c);
  ms_stream_close(acc.s, on_closed, &s);
  CHECK(tu_wait(&e->loop, &c.closed, 1, WAIT_MS, what));
  CHECK(tu_wait(&e->loop, &s.closed, 1, WAIT_MS, what));
  tu_close_listener(&e->loop, l, WAIT_MS);
}

static const char *stacks[] = {
    "net:127.0.0.1:0",          "unix:%s/a.sock",        "net:127.0.0.1:0~shs",
    "unix:%s/b.sock~shs",       "net:127.0.0.1:0~noise", "net:127.0.0.1:0~shs~gzip",
    "net:127.0.0.1:0~gzip~shs", "net:127.0.0.1:0~noise~gzip",
};
#define NSTACKS (sizeof stacks / sizeof stacks[0])

static void run_mode(int mode, size_t nc, size_t ns) {
  env_t e;
  env_init(&e);
  size_t n = (nc > ns ? nc : ns) + 1;
  uint8_t *data = malloc(n);
  randombytes_buf(data, n);
  for (size_t i = 0; i < NSTACKS; i++) {
    if (mode == 3 && i < 2) continue; /* net, unix: no end marker, EOF is the end */
    char addr[256];
    snprintf(addr, sizeof addr, stacks[i], e.dir);
    exchange(&e, addr, mode, nc, ns, data);
  }
  free(data);
  env_done(&e);
}

/* Odd sizes: not a multiple of any packet, frame or write size. */
static void test_both_ways(void) { run_mode(0, (1u << 20) + 4097, (1u << 20) + 65519 + 3); }
static void test_client_first(void) { run_mode(1, 300001, 700003); }
static void test_server_first(void) { run_mode(2, 700003, 300001); }
static void test_one_byte(void) { run_mode(0, 1, 1); }
static void test_empty(void) { run_mode(0, 0, 0); }
static void test_no_marker(void) { run_mode(3, 200003, 0); }

int main(int argc, char **argv) {
  if (sodium_init() < 0) return 1;
  const tu_test_t tests[] = {
      {"both_ways", test_both_ways},       {"client_first", test_client_first},
      {"server_first", test_server_first}, {"one_byte", test_one_byte},
      {"empty", test_empty},               {"no_marker", test_no_marker},
  };
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("close");
}
