/* Hostile and broken peers over real sockets (loopback only). A raw peer in
 * a thread (blocking sockets, the IO-free protocol cores of wire/ to speak
 * the handshakes) hangs up at every stage of every handshake and inside
 * packets, or sends garbage in every position; our side (server or client)
 * must end that one connection with the right code and a reason naming
 * the stage, leak nothing (make test-asan, make test-valgrind), and keep
 * serving: a legitimate client follows every case. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "boxstream.h"
#include "multiserver.h"
#include "multiserver_uv.h"
#include "mstest.h"
#include "noise_core.h"
#include "shs_core.h"
#include "util.h"

#define WAIT_MS 10000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

/* ---- environment ---------------------------------------------------------- */

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
  ms_keypair_t skeys, ckeys;
} env_t;

static void env_init(env_t *e) {
  memset(e, 0, sizeof *e);
  ms_keypair_generate(&e->skeys);
  ms_keypair_generate(&e->ckeys);
  ms_options_t so, co;
  tu_opts_default(&so);
  tu_opts_default(&co);
  so.keys = &e->skeys;
  co.keys = &e->ckeys;
  so.handshake_timeout_ms = co.handshake_timeout_ms = 3000;
  CHECK_INT(uv_loop_init(&e->loop), 0);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, &so), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, &co), 0);
}

static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
}

static int port_of(const char *addr) {
  const char *tilde = strchr(addr, '~');
  const char *end = tilde ? tilde : addr + strlen(addr);
  const char *p = end;
  while (p > addr && p[-1] != ':') p--;
  return atoi(p);
}

/* ---- the application side of accepted streams: a recording sink ---------- */

typedef struct {
  int accepted;
  int ended;      /* streams that ended (EOF or error) */
  int clean;      /* ... with MS_EOF */
  int last_status;
  size_t bytes;   /* of the last stream */
  int closed;
} sink_t;

typedef struct {
  sink_t *st;
  size_t bytes;
} sink_conn_t;

static void sink_closed(ms_stream_t *s, void *arg) {
  (void)s;
  sink_conn_t *c = arg;
  c->st->closed++;
  free(c);
}

static void sink_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)d;
  sink_conn_t *c = arg;
  if (status == 0) {
    c->bytes += n;
    return;
  }
  c->st->ended++;
  c->st->last_status = status;
  c->st->bytes = c->bytes;
  if (status == MS_EOF) c->st->clean++;
  ms_stream_close(s, sink_closed, c);
}

static void sink_on_connection(ms_stream_t *s, void *arg) {
  sink_t *st = arg;
  sink_conn_t *c = calloc(1, sizeof *c);
  c->st = st;
  st->accepted++;
  if (ms_stream_read_start(s, sink_read, c) != 0) ms_stream_close(s, sink_closed, c);
}

/* A legitimate client after a hostile one: connects, sends 5 bytes, shuts
 * down; the sink must see them and a clean end. */
static void legit(env_t *e, const char *addr, sink_t *sink, const char *what) {
  int ended = sink->ended, clean = sink->clean;
  tu_conn_t r;
  CHECK_INT(tu_connect(e->cli, addr, &r, NULL), 0);
  CHECK(tu_wait(&e->loop, &r.done, 1, WAIT_MS, what));
  if (r.status != 0) {
    fprintf(stderr, "  legitimate client after %s: %s\n", what, r.reason);
    CHECK_INT(r.status, 0);
    return;
  }
  ms_buf_t b = {"hello", 5};
  CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), 0);
  CHECK_INT(ms_stream_shutdown(r.s, NULL, NULL), 0);
  CHECK(tu_wait(&e->loop, &sink->ended, ended + 1, WAIT_MS, what));
  CHECK_INT(sink->clean, clean + 1);
  CHECK_INT(sink->bytes, 5);
  int closed = 0;
  ms_stream_close(r.s, tu_on_stream_closed, &closed);
  CHECK(tu_wait(&e->loop, &closed, 1, WAIT_MS, "legit client closed"));
}

/* ---- the raw peer: a thread with a blocking socket ------------------------ */

typedef struct peer_s peer_t;
typedef void (*script_fn)(peer_t *p, int fd);

struct peer_s {
  uv_async_t async;
  int done; /* set on the loop by the async callback */
  atomic_int finished;
  pthread_t th;
  int lfd;  /* raw server: the listening socket */
  int port; /* raw client: where to connect */
  script_fn fn;
  int stage, cut, how; /* the script's parameters */
  const env_t *e;
  uint8_t remote_pk[32]; /* the key of the ms side */
  size_t got;            /* bytes the script read (for its checks) */
  bool closed_by_us_peer; /* the ms side closed the socket (EOF/reset) */
  char note[128];
};

static void on_async(uv_async_t *a) {
  peer_t *p = a->data;
  if (atomic_load(&p->finished)) p->done = 1;
}

static void set_timeouts(int fd) {
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static bool wr(int fd, const void *b, size_t n) {
  const uint8_t *q = b;
  while (n > 0) {
    ssize_t k = send(fd, q, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    q += k;
    n -= (size_t)k;
  }
  return true;
}

static bool rd(int fd, void *b, size_t n) {
  uint8_t *q = b;
  while (n > 0) {
    ssize_t k = recv(fd, q, n, 0);
    if (k <= 0) return false;
    q += k;
    n -= (size_t)k;
  }
  return true;
}

/* Read until the other side closes (true) or 5 s pass (false). */
static bool until_closed(int fd) {
  uint8_t b[4096];
  for (;;) {
    ssize_t k = recv(fd, b, sizeof b, 0);
    if (k == 0) return true;
    if (k < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

static void *peer_main(void *arg) {
  peer_t *p = arg;
  int fd;
  if (p->lfd >= 0) {
    fd = accept(p->lfd, NULL, NULL);
  } else {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)p->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) {
    set_timeouts(fd);
    p->fn(p, fd);
    close(fd);
  } else {
    snprintf(p->note, sizeof p->note, "no connection: %s", strerror(errno));
  }
  atomic_store(&p->finished, 1);
  uv_async_send(&p->async);
  return NULL;
}

/* Start a raw peer: a client of port (port > 0), or a server (port == 0:
 * *listen_port gets where it listens). */
static void peer_start(env_t *e, peer_t *p, script_fn fn, int stage, int cut, int how, int port,
                       int *listen_port) {
  memset(p, 0, sizeof *p);
  p->e = e;
  memcpy(p->remote_pk, e->skeys.public_key, 32); /* the key of our server */
  p->fn = fn;
  p->stage = stage;
  p->cut = cut;
  p->how = how;
  p->port = port;
  p->lfd = -1;
  if (port == 0) {
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof sa;
    CHECK_INT(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_INT(listen(p->lfd, 4), 0);
    CHECK_INT(getsockname(p->lfd, (struct sockaddr *)&sa, &n), 0);
    *listen_port = ntohs(sa.sin_port);
  }
  uv_async_init(&e->loop, &p->async, on_async);
  p->async.data = p;
  CHECK_INT(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static void peer_join(env_t *e, peer_t *p) {
  CHECK(tu_wait(&e->loop, &p->done, 1, 15000, "raw peer"));
  pthread_join(p->th, NULL);
  if (p->lfd >= 0) close(p->lfd);
  uv_close((uv_handle_t *)&p->async, NULL);
  uv_run(&e->loop, UV_RUN_NOWAIT);
  if (p->note[0]) fprintf(stderr, "  raw peer: %s\n", p->note);
}

/* What the peer does at the point it stops. */
enum { CUT = 0, GARBAGE = 1, FLIP_HEADER = 2, FLIP_BODY = 3, OVERSIZE = 4, SHORT_FRAME = 5 };

/* Send the first `cut` bytes of msg (or all of it randomized for GARBAGE);
 * true if the script should stop here. */
static bool stop_in(peer_t *p, int fd, int stage, const uint8_t *msg, size_t len) {
  if (p->stage != stage) return false;
  if (p->how == GARBAGE) {
    uint8_t g[256];
    randombytes_buf(g, len);
    wr(fd, g, len);
    p->closed_by_us_peer = until_closed(fd);
  } else {
    wr(fd, msg, (size_t)p->cut < len ? (size_t)p->cut : len);
  }
  return true;
}

/* ---- shs: a raw client against our server --------------------------------- */

enum { SH_MSG1 = 1, SH_MSG3, SH_AFTER_MSG3, SH_BOX };

static void box_attack(peer_t *p, int fd, ms_box_t *box) {
  /* One good packet first, then the broken one. */
  uint8_t pkt[2 * (MS_BOX_HEADER_LEN + 100)];
  uint8_t body[100];
  randombytes_buf(body, sizeof body);
  size_t n = ms_box_seal(box, pkt, body, sizeof body);
  wr(fd, pkt, n);
  n = ms_box_seal(box, pkt, body, sizeof body);
  switch (p->how) {
    case CUT: /* cut bytes into the next packet (< 34: its header) */
      wr(fd, pkt, (size_t)p->cut);
      return;
    case FLIP_HEADER:
      pkt[p->cut % MS_BOX_HEADER_LEN] ^= 0x10;
      break;
    case FLIP_BODY:
      pkt[MS_BOX_HEADER_LEN + p->cut % 100] ^= 0x01;
      break;
    case OVERSIZE: {
      /* A header that authenticates and announces 5000 bytes. */
      uint8_t plain[MS_BOX_HEADER_PLAIN_LEN] = {5000 >> 8, 5000 & 0xff};
      crypto_secretbox_easy(pkt, plain, sizeof plain, box->nonce, box->key);
      n = MS_BOX_HEADER_LEN;
      break;
    }
  }
  wr(fd, pkt, n);
  p->closed_by_us_peer = until_closed(fd);
}

static void shs_client_script(peer_t *p, int fd) {
  ms_shs_t hs;
  ms_keypair_t kp;
  ms_keypair_generate(&kp);
  uint8_t m[128];
  if (ms_shs_client_init(&hs, ms_appkey_scuttlebutt(), kp.secret_key, kp.public_key, p->remote_pk,
                         NULL) != 0) {
    snprintf(p->note, sizeof p->note, "shs init");
    return;
  }
  if (ms_shs_client_hello(&hs, m) != 0) goto out;
  if (stop_in(p, fd, SH_MSG1, m, MS_SHS_MSG1_LEN)) goto out;
  wr(fd, m, MS_SHS_MSG1_LEN);
  if (!rd(fd, m, MS_SHS_MSG2_LEN) || ms_shs_client_verify_hello(&hs, m) != 0) {
    snprintf(p->note, sizeof p->note, "msg2");
    goto out;
  }
  if (ms_shs_client_auth(&hs, m) != 0) goto out;
  if (stop_in(p, fd, SH_MSG3, m, MS_SHS_MSG3_LEN)) goto out;
  wr(fd, m, MS_SHS_MSG3_LEN);
  if (p->stage == SH_AFTER_MSG3) goto out;
  if (!rd(fd, m, MS_SHS_MSG4_LEN) || ms_shs_client_verify_accept(&hs, m) != 0) {
    snprintf(p->note, sizeof p->note, "msg4");
    goto out;
  }
  ms_shs_outcome_t o;
  if (ms_shs_outcome(&hs, &o) != 0) goto out;
  ms_box_t box;
  ms_box_init(&box, o.encrypt_key, o.encrypt_nonce);
  box_attack(p, fd, &box);
  ms_box_wipe(&box);
  sodium_memzero(&o, sizeof o);
out:
  ms_shs_wipe(&hs);
  ms_keypair_wipe(&kp);
}

typedef struct {
  const char *name;
  int stage, cut, how;
  int status;         /* expected status (listen error, or 0: on the stream) */
  int stream_status;  /* expected on the accepted stream when status == 0 */
  const char *reason; /* in the listen error's reason */
  int alt;            /* also accepted instead of status / stream_status: a
                         hang-up with our bytes unread is a reset (RST) */
} hcase_t;

static void check_status(int got, int want, int alt, const char *what) {
  if (got == want || (alt && got == alt)) {
    mst_pass++;
  } else {
    mst_fail++;
    fprintf(stderr, "  %s: got %s, want %s%s%s\n", what, ms_err_name(got), ms_err_name(want),
            alt ? " or " : "", alt ? ms_err_name(alt) : "");
  }
}

static void test_shs_server(void) {
  env_t e;
  env_init(&e);
  sink_t sink = {0};
  tu_lerr_t le = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", sink_on_connection, &sink);
  if (!l) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  const char *addr = ms_listener_address(l);
  int port = port_of(addr);
  const hcase_t cases[] = {
      {"hang up before msg1", SH_MSG1, 0, CUT, MS_EHANDSHAKE, 0, "before msg1", 0},
      {"hang up after 1 byte of msg1", SH_MSG1, 1, CUT, MS_EHANDSHAKE, 0, "inside msg1 (client hello) (1 of 64", 0},
      {"hang up mid-msg1", SH_MSG1, 32, CUT, MS_EHANDSHAKE, 0, "inside msg1 (client hello) (32 of 64 bytes)", 0},
      {"hang up after 63 bytes of msg1", SH_MSG1, 63, CUT, MS_EHANDSHAKE, 0, "(63 of 64", 0},
      {"hang up after msg2", SH_MSG3, 0, CUT, MS_EHANDSHAKE, 0, "before msg3", 0},
      {"hang up mid-msg3", SH_MSG3, 56, CUT, MS_EHANDSHAKE, 0, "inside msg3 (client auth) (56 of 112 bytes)", 0},
      {"random msg1", SH_MSG1, 0, GARBAGE, MS_EHANDSHAKE, 0, "msg1", 0},
      {"random msg3", SH_MSG3, 0, GARBAGE, MS_EHANDSHAKE, 0, "msg3", 0},
      {"hang up after msg3, msg4 unread", SH_AFTER_MSG3, 0, CUT, 0, MS_EHANGUP, NULL, UV_ECONNRESET},
      {"hang up between packets", SH_BOX, 0, CUT, 0, MS_EHANGUP, NULL, 0},
      {"hang up mid box header", SH_BOX, 17, CUT, 0, MS_EHANGUP, NULL, 0},
      {"hang up mid box body", SH_BOX, MS_BOX_HEADER_LEN + 50, CUT, 0, MS_EHANGUP, NULL, 0},
      {"bit flip in a box header (mac)", SH_BOX, 3, FLIP_HEADER, 0, MS_EBOXHEADER, NULL, 0},
      {"bit flip in a box header (length)", SH_BOX, 17, FLIP_HEADER, 0, MS_EBOXHEADER, NULL, 0},
      {"bit flip in a box body", SH_BOX, 42, FLIP_BODY, 0, MS_EBOXBODY, NULL, 0},
      {"oversized box packet", SH_BOX, 0, OVERSIZE, 0, MS_EBOXHEADER, NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const hcase_t *c = &cases[i];
    int lerrs = le.count, ended = sink.ended, acc = sink.accepted;
    peer_t p;
    peer_start(&e, &p, shs_client_script, c->stage, c->cut, c->how, port, NULL);
    if (c->status) {
      CHECK(tu_wait(&e.loop, &le.count, lerrs + 1, WAIT_MS, c->name));
      check_status(le.last_status, c->status, c->alt, c->name);
      CHECK_HAS(le.last_reason, c->reason);
      CHECK_INT(sink.accepted, acc);
    } else {
      CHECK(tu_wait(&e.loop, &sink.ended, ended + 1, WAIT_MS, c->name));
      check_status(sink.last_status, c->stream_status, c->alt, c->name);
      CHECK_INT(le.count, lerrs);
    }
    peer_join(&e, &p);
    if (c->how != CUT) CHECK(p.closed_by_us_peer); /* we hung up on garbage */
    fprintf(stderr, "  %-40s -> %s %s\n", c->name,
            ms_err_name(c->status ? le.last_status : sink.last_status),
            c->status ? le.last_reason : "");
    legit(&e, addr, &sink, c->name);
  }
  ms_stats_t st;
  ms_stats(e.srv, &st);
  CHECK_INT(st.handshakes, 0);
  CHECK_INT(st.connections, 0);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ---- shs: a raw server against our client --------------------------------- */

enum { SS_MSG2 = 1, SS_AFTER_MSG1, SS_MSG4, SS_AFTER_MSG3, SS_BOX };

static void shs_server_script(peer_t *p, int fd) {
  ms_shs_t hs;
  ms_keypair_t kp;
  memcpy(&kp, &p->e->skeys, sizeof kp); /* the key our client dials */
  uint8_t m[128];
  if (ms_shs_server_init(&hs, ms_appkey_scuttlebutt(), kp.secret_key, kp.public_key, NULL) != 0)
    goto out;
  if (p->stage == SS_MSG2 && p->cut == 0 && p->how == CUT) goto out; /* before msg1 arrives */
  if (!rd(fd, m, MS_SHS_MSG1_LEN) || ms_shs_server_verify_hello(&hs, m) != 0) {
    snprintf(p->note, sizeof p->note, "msg1");
    goto out;
  }
  if (p->stage == SS_AFTER_MSG1) goto out;
  if (ms_shs_server_hello(&hs, m) != 0) goto out;
  if (stop_in(p, fd, SS_MSG2, m, MS_SHS_MSG2_LEN)) goto out;
  wr(fd, m, MS_SHS_MSG2_LEN);
  if (!rd(fd, m, MS_SHS_MSG3_LEN) || ms_shs_server_verify_auth(&hs, m) != 0) {
    snprintf(p->note, sizeof p->note, "msg3");
    goto out;
  }
  if (p->stage == SS_AFTER_MSG3) goto out;
  if (ms_shs_server_accept(&hs, m) != 0) goto out;
  if (stop_in(p, fd, SS_MSG4, m, MS_SHS_MSG4_LEN)) goto out;
  wr(fd, m, MS_SHS_MSG4_LEN);
  ms_shs_outcome_t o;
  if (ms_shs_outcome(&hs, &o) != 0) goto out;
  ms_box_t box;
  ms_box_init(&box, o.encrypt_key, o.encrypt_nonce);
  box_attack(p, fd, &box);
  ms_box_wipe(&box);
  sodium_memzero(&o, sizeof o);
out:
  ms_shs_wipe(&hs);
  sodium_memzero(&kp, sizeof kp);
}

/* A client-side case: the connect fails with status and a reason, or
 * (status 0) succeeds and the stream then ends with stream_status. */
static void client_case(env_t *e, const char *addr, const ms_popts_t *po, const hcase_t *c,
                        peer_t *p) {
  tu_conn_t r;
  memset(&r, 0, sizeof r);
  CHECK_INT(ms_connect_with(e->cli, addr, po, tu_on_conn, &r, NULL), 0);
  CHECK(tu_wait(&e->loop, &r.done, 1, WAIT_MS, c->name));
  int got = r.status;
  if (c->status) {
    check_status(r.status, c->status, c->alt, c->name);
    CHECK_HAS(r.reason, c->reason);
    CHECK(r.s == NULL);
  } else {
    CHECK_INT(r.status, 0);
    if (r.s) {
      sink_t sk = {0};
      sink_conn_t *sc = calloc(1, sizeof *sc);
      sc->st = &sk;
      CHECK_INT(ms_stream_read_start(r.s, sink_read, sc), 0);
      CHECK(tu_wait(&e->loop, &sk.ended, 1, WAIT_MS, c->name));
      check_status(sk.last_status, c->stream_status, c->alt, c->name);
      got = sk.last_status;
      CHECK(tu_wait(&e->loop, &sk.closed, 1, WAIT_MS, c->name));
    }
  }
  peer_join(e, p);
  if (c->how != CUT && c->how != SHORT_FRAME) CHECK(p->closed_by_us_peer);
  fprintf(stderr, "  %-40s -> %s%s%s\n", c->name, ms_err_name(got),
          r.reason[0] ? ": " : "", r.reason);
}

/* A real server for the legitimate connections between client cases. */
typedef struct {
  sink_t sink;
  ms_listener_t *l;
  char addr[512];
} realsrv_t;

static void realsrv_start(env_t *e, realsrv_t *rs, const char *listen) {
  memset(rs, 0, sizeof *rs);
  rs->l = tu_listen_ok(e->srv, listen, sink_on_connection, &rs->sink);
  if (rs->l) snprintf(rs->addr, sizeof rs->addr, "%s", ms_listener_address(rs->l));
}

static void test_shs_client(void) {
  env_t e;
  env_init(&e);
  realsrv_t rs;
  realsrv_start(&e, &rs, "net:127.0.0.1:0~shs");
  if (!rs.l) return;
  const hcase_t cases[] = {
      {"accept and hang up", SS_MSG2, 0, CUT, MS_EHANDSHAKE, 0, "after msg1", UV_ECONNRESET},
      {"hang up after reading msg1", SS_AFTER_MSG1, 0, CUT, MS_EHANDSHAKE, 0, "after msg1", 0},
      {"hang up mid-msg2", SS_MSG2, 20, CUT, MS_EHANDSHAKE, 0, "inside msg2 (server hello) (20 of 64 bytes)", 0},
      {"random msg2", SS_MSG2, 0, GARBAGE, MS_EHANDSHAKE, 0, "msg2", 0},
      {"hang up after msg3", SS_AFTER_MSG3, 0, CUT, MS_EHANDSHAKE, 0, "after msg3", 0},
      {"hang up mid-msg4", SS_MSG4, 40, CUT, MS_EHANDSHAKE, 0, "inside msg4 (server accept) (40 of 80 bytes)", 0},
      {"random msg4", SS_MSG4, 0, GARBAGE, MS_EHANDSHAKE, 0, "msg4", 0},
      {"hang up between packets", SS_BOX, 0, CUT, 0, MS_EHANGUP, NULL, 0},
      {"hang up mid box header", SS_BOX, 10, CUT, 0, MS_EHANGUP, NULL, 0},
      {"hang up mid box body", SS_BOX, MS_BOX_HEADER_LEN + 1, CUT, 0, MS_EHANGUP, NULL, 0},
      {"bit flip in a box header", SS_BOX, 20, FLIP_HEADER, 0, MS_EBOXHEADER, NULL, 0},
      {"bit flip in a box body", SS_BOX, 99, FLIP_BODY, 0, MS_EBOXBODY, NULL, 0},
      {"oversized box packet", SS_BOX, 0, OVERSIZE, 0, MS_EBOXHEADER, NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    peer_t p;
    int lport = 0;
    peer_start(&e, &p, shs_server_script, cases[i].stage, cases[i].cut, cases[i].how, 0, &lport);
    char addr[256];
    snprintf(addr, sizeof addr, "net:127.0.0.1:%d~shs:%s", lport, tu_b64(e.skeys.public_key));
    client_case(&e, addr, NULL, &cases[i], &p);
    legit(&e, rs.addr, &rs.sink, cases[i].name);
  }
  tu_close_listener(&e.loop, rs.l, WAIT_MS);
  env_done(&e);
}

/* ---- noise: both roles ------------------------------------------------------ */

enum { NZ_MSG1 = 1, NZ_AFTER_MSG1, NZ_MSG2, NZ_FRAME };

static void noise_attack(peer_t *p, int fd, ms_noise_cipher_t *cs) {
  uint8_t body[100], pkt[2 * (100 + MS_NOISE_FRAME_OVERHEAD)];
  size_t n = 0;
  randombytes_buf(body, sizeof body);
  if (ms_noise_seal(cs, pkt, body, sizeof body, &n) != 0) return;
  wr(fd, pkt, n);
  if (ms_noise_seal(cs, pkt, body, sizeof body, &n) != 0) return;
  switch (p->how) {
    case CUT:
      wr(fd, pkt, (size_t)p->cut);
      return;
    case FLIP_HEADER: /* the length prefix, shorter (116 -> 112): the frame
                         no longer authenticates */
      pkt[1] ^= 0x04;
      break;
    case FLIP_BODY:
      pkt[MS_NOISE_LENBYTES + p->cut % 100] ^= 0x80;
      break;
    case SHORT_FRAME: /* a frame too short for its tag */
      pkt[0] = 0;
      pkt[1] = 5;
      n = 7;
      break;
  }
  wr(fd, pkt, n);
  p->closed_by_us_peer = until_closed(fd);
}

static void noise_client_script(peer_t *p, int fd) {
  ms_noise_t hs;
  ms_keypair_t kp;
  ms_keypair_generate(&kp);
  uint8_t m[MS_NOISE_MSG1_FRAMED_LEN];
  if (ms_noise_client_init(&hs, ms_appkey_scuttlebutt(), kp.secret_key, kp.public_key,
                           p->remote_pk, NULL) != 0)
    goto out;
  if (ms_noise_client_hello(&hs, m) != 0) goto out;
  if (stop_in(p, fd, NZ_MSG1, m, MS_NOISE_MSG1_FRAMED_LEN)) goto out;
  wr(fd, m, MS_NOISE_MSG1_FRAMED_LEN);
  if (p->stage == NZ_AFTER_MSG1) goto out;
  if (!rd(fd, m, MS_NOISE_MSG2_FRAMED_LEN) ||
      ms_noise_client_read_accept(&hs, m, MS_NOISE_MSG2_FRAMED_LEN) != 0) {
    snprintf(p->note, sizeof p->note, "msg2");
    goto out;
  }
  ms_noise_outcome_t o;
  if (ms_noise_outcome(&hs, &o) != 0) goto out;
  noise_attack(p, fd, &o.send);
  ms_noise_outcome_wipe(&o);
out:
  ms_noise_wipe(&hs);
  ms_keypair_wipe(&kp);
}

static void noise_server_script(peer_t *p, int fd) {
  ms_noise_t hs;
  ms_keypair_t kp;
  memcpy(&kp, &p->e->skeys, sizeof kp);
  uint8_t m[MS_NOISE_MSG1_FRAMED_LEN];
  if (ms_noise_server_init(&hs, ms_appkey_scuttlebutt(), kp.secret_key, kp.public_key, NULL) != 0)
    goto out;
  if (p->stage == NZ_MSG2 && p->cut == 0 && p->how == CUT) goto out;
  if (!rd(fd, m, MS_NOISE_MSG1_FRAMED_LEN) ||
      ms_noise_server_read_hello(&hs, m, MS_NOISE_MSG1_FRAMED_LEN) != 0) {
    snprintf(p->note, sizeof p->note, "msg1");
    goto out;
  }
  if (p->stage == NZ_AFTER_MSG1) goto out;
  if (ms_noise_server_accept(&hs, m) != 0) goto out;
  if (stop_in(p, fd, NZ_MSG2, m, MS_NOISE_MSG2_FRAMED_LEN)) goto out;
  wr(fd, m, MS_NOISE_MSG2_FRAMED_LEN);
  ms_noise_outcome_t o;
  if (ms_noise_outcome(&hs, &o) != 0) goto out;
  noise_attack(p, fd, &o.send);
  ms_noise_outcome_wipe(&o);
out:
  ms_noise_wipe(&hs);
  sodium_memzero(&kp, sizeof kp);
}

static void test_noise_server(void) {
  env_t e;
  env_init(&e);
  sink_t sink = {0};
  tu_lerr_t le = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~noise", sink_on_connection, &sink);
  if (!l) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  const char *addr = ms_listener_address(l);
  int port = port_of(addr);
  const hcase_t cases[] = {
      {"hang up before msg1", NZ_MSG1, 0, CUT, MS_EHANDSHAKE, 0, "before msg1", 0},
      {"hang up inside the msg1 prefix", NZ_MSG1, 1, CUT, MS_EHANDSHAKE, 0, "inside msg1", 0},
      {"hang up mid-msg1", NZ_MSG1, 60, CUT, MS_EHANDSHAKE, 0, "inside msg1", 0},
      {"random msg1", NZ_MSG1, 0, GARBAGE, MS_EHANDSHAKE, 0, "msg1", 0},
      {"hang up after msg1, msg2 unread", NZ_AFTER_MSG1, 0, CUT, 0, MS_EHANGUP, NULL, UV_ECONNRESET},
      {"hang up between frames", NZ_FRAME, 0, CUT, 0, MS_EHANGUP, NULL, 0},
      {"hang up inside a frame prefix", NZ_FRAME, 1, CUT, 0, MS_EHANGUP, NULL, 0},
      {"hang up mid-frame", NZ_FRAME, 50, CUT, 0, MS_EHANGUP, NULL, 0},
      {"bit flip in a frame length", NZ_FRAME, 0, FLIP_HEADER, 0, MS_EDECRYPT, NULL, 0},
      {"bit flip in a frame body", NZ_FRAME, 33, FLIP_BODY, 0, MS_EDECRYPT, NULL, 0},
      {"frame shorter than its tag", NZ_FRAME, 0, SHORT_FRAME, 0, MS_EFRAME, NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const hcase_t *c = &cases[i];
    int lerrs = le.count, ended = sink.ended, acc = sink.accepted;
    peer_t p;
    peer_start(&e, &p, noise_client_script, c->stage, c->cut, c->how, port, NULL);
    if (c->status) {
      CHECK(tu_wait(&e.loop, &le.count, lerrs + 1, WAIT_MS, c->name));
      check_status(le.last_status, c->status, c->alt, c->name);
      CHECK_HAS(le.last_reason, c->reason);
      CHECK_INT(sink.accepted, acc);
    } else {
      CHECK(tu_wait(&e.loop, &sink.ended, ended + 1, WAIT_MS, c->name));
      check_status(sink.last_status, c->stream_status, c->alt, c->name);
      CHECK_INT(le.count, lerrs);
    }
    peer_join(&e, &p);
    if (c->how != CUT) CHECK(p.closed_by_us_peer);
    fprintf(stderr, "  %-40s -> %s %s\n", c->name,
            ms_err_name(c->status ? le.last_status : sink.last_status),
            c->status ? le.last_reason : "");
    legit(&e, addr, &sink, c->name);
  }
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_noise_client(void) {
  env_t e;
  env_init(&e);
  realsrv_t rs;
  realsrv_start(&e, &rs, "net:127.0.0.1:0~noise");
  if (!rs.l) return;
  const hcase_t cases[] = {
      {"accept and hang up", NZ_MSG2, 0, CUT, MS_EHANDSHAKE, 0, "after msg1", UV_ECONNRESET},
      {"hang up after reading msg1", NZ_AFTER_MSG1, 0, CUT, MS_EHANDSHAKE, 0, "after msg1", 0},
      {"hang up mid-msg2", NZ_MSG2, 20, CUT, MS_EHANDSHAKE, 0, "inside msg2", 0},
      {"random msg2", NZ_MSG2, 0, GARBAGE, MS_EHANDSHAKE, 0, "msg2", 0},
      {"hang up mid-frame", NZ_FRAME, 30, CUT, 0, MS_EHANGUP, NULL, 0},
      {"bit flip in a frame body", NZ_FRAME, 7, FLIP_BODY, 0, MS_EDECRYPT, NULL, 0},
      {"frame shorter than its tag", NZ_FRAME, 0, SHORT_FRAME, 0, MS_EFRAME, NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    peer_t p;
    int lport = 0;
    peer_start(&e, &p, noise_server_script, cases[i].stage, cases[i].cut, cases[i].how, 0, &lport);
    char addr[256];
    snprintf(addr, sizeof addr, "net:127.0.0.1:%d~noise:%s", lport, tu_b64(e.skeys.public_key));
    client_case(&e, addr, NULL, &cases[i], &p);
    legit(&e, rs.addr, &rs.sink, cases[i].name);
  }
  tu_close_listener(&e.loop, rs.l, WAIT_MS);
  env_done(&e);
}

/* ---- onion: a fake SOCKS5 proxy ---------------------------------------------- */

enum {
  SK_AT_ONCE = 1, /* accept and hang up */
  SK_GREETING,    /* read the greeting, then hang up / answer cut bytes of `reply` */
  SK_CONNECT,     /* answer the method, read CONNECT, then the reply */
};

typedef struct {
  const char *name;
  int stage;
  uint8_t method_reply[2];
  uint8_t reply[12];
  int reply_len; /* bytes of reply to send; -1: none */
  int status;
  const char *reason;
  int alt;
} scase_t;

static const scase_t *cur_scase;

static void socks_script(peer_t *p, int fd) {
  const scase_t *c = cur_scase;
  uint8_t b[600];
  if (c->stage == SK_AT_ONCE) return;
  if (recv(fd, b, sizeof b, 0) < 3) return; /* greeting */
  if (c->stage == SK_GREETING) {
    if (c->reply_len > 0) wr(fd, c->reply, (size_t)c->reply_len);
    if (c->reply_len >= 2) p->closed_by_us_peer = until_closed(fd); /* else: hang up */
    return;
  }
  wr(fd, c->method_reply, 2);
  if (recv(fd, b, sizeof b, 0) < 7) return; /* CONNECT */
  if (c->reply_len > 0) wr(fd, c->reply, (size_t)c->reply_len);
  if (c->reply_len >= 10 && c->reply[1] == 0) return; /* success, then hang up */
  if (c->reply_len >= 7) p->closed_by_us_peer = until_closed(fd); /* else: hang up */
}

static void test_socks5_proxy(void) {
  env_t e;
  env_init(&e);
  realsrv_t rs;
  realsrv_start(&e, &rs, "net:127.0.0.1:0~shs");
  if (!rs.l) return;
  static const scase_t cases[] = {
      {"accept and hang up", SK_AT_ONCE, {0}, {0}, -1, MS_EHANGUP, "before choosing a method",
       UV_ECONNRESET},
      {"hang up after the greeting", SK_GREETING, {0}, {0}, -1, MS_EHANGUP,
       "before choosing a method", 0},
      {"hang up mid method reply", SK_GREETING, {0}, {5}, 1, MS_EHANGUP,
       "before choosing a method", 0},
      /* Not SOCKS5 or breaking it: MS_EFRAME; refusing us: MS_EUNAUTHORIZED. */
      {"method reply version 4", SK_GREETING, {0}, {4, 0}, 2, MS_EFRAME, "not 5", 0},
      {"no acceptable method", SK_GREETING, {0}, {5, 0xff}, 2, MS_EUNAUTHORIZED,
       "none of the offered", 0},
      {"method not offered", SK_GREETING, {0}, {5, 2}, 2, MS_EFRAME, "not offered", 0},
      {"hang up after CONNECT", SK_CONNECT, {5, 0}, {0}, -1, MS_EHANGUP, "before the CONNECT reply", 0},
      {"hang up mid CONNECT reply", SK_CONNECT, {5, 0}, {5, 0, 0, 1, 127}, 5, MS_EHANGUP,
       "before the CONNECT reply", 0},
      {"CONNECT reply version 4", SK_CONNECT, {5, 0}, {4, 0, 0, 1, 127, 0, 0, 1, 0, 80}, 10,
       MS_EFRAME, "version 4", 0},
      {"CONNECT general failure", SK_CONNECT, {5, 0}, {5, 1, 0, 1, 0, 0, 0, 0, 0, 0}, 10, MS_EPROXY,
       "REP 0x01", 0},
      {"CONNECT unassigned code", SK_CONNECT, {5, 0}, {5, 0x99, 0, 1, 0, 0, 0, 0, 0, 0}, 10,
       MS_EPROXY, "REP 0x99", 0},
      {"CONNECT reserved byte", SK_CONNECT, {5, 0}, {5, 0, 7, 1, 0, 0, 0, 0, 0, 0}, 10, MS_EFRAME,
       "reserved byte", 0},
      {"CONNECT unknown address type", SK_CONNECT, {5, 0}, {5, 0, 0, 9, 0, 0, 0, 0, 0, 0}, 10,
       MS_EFRAME, "address type", 0},
      {"CONNECT empty domain", SK_CONNECT, {5, 0}, {5, 0, 0, 3, 0, 0, 0}, 7, MS_EFRAME,
       "empty domain", 0},
      {"success, then a hang-up in msg2", SK_CONNECT, {5, 0}, {5, 0, 0, 1, 1, 2, 3, 4, 0, 80}, 10,
       MS_EHANDSHAKE, "shs: server hung up after msg1", UV_ECONNRESET /* msg1 unread: a reset */},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cur_scase = &cases[i];
    peer_t p;
    int lport = 0;
    peer_start(&e, &p, socks_script, cases[i].stage, 0, CUT, 0, &lport);
    char px[64], addr[256];
    snprintf(px, sizeof px, "127.0.0.1:%d", lport);
    snprintf(addr, sizeof addr, "onion:localhost:9~shs:%s", tu_b64(e.skeys.public_key));
    ms_popts_t *po = NULL;
    CHECK_INT(ms_popts_new(&po), 0);
    CHECK_INT(ms_popts_set(po, "onion", "proxy", px), 0);
    hcase_t hc = {cases[i].name, 0, 0, CUT, cases[i].status, 0, cases[i].reason, cases[i].alt};
    client_case(&e, addr, po, &hc, &p);
    ms_popts_free(po);
    legit(&e, rs.addr, &rs.sink, cases[i].name);
  }
  tu_close_listener(&e.loop, rs.l, WAIT_MS);
  env_done(&e);
}

/* ---- gzip: both roles -------------------------------------------------------- */

/* A gzip member header (RFC 1952): magic, deflate, no flags, mtime, xfl, OS. */
static const uint8_t gz_header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};

enum { GZ_HALF_HEADER = 1, GZ_BAD_MAGIC, GZ_BAD_METHOD, GZ_BAD_DEFLATE, GZ_NO_TRAILER };

static void gzip_script(peer_t *p, int fd) {
  uint8_t b[64];
  memcpy(b, gz_header, 10);
  switch (p->stage) {
    case GZ_HALF_HEADER:
      wr(fd, b, 5);
      return;
    case GZ_BAD_MAGIC:
      b[1] = 0x8c;
      wr(fd, b, 10);
      break;
    case GZ_BAD_METHOD:
      b[2] = 7;
      wr(fd, b, 10);
      break;
    case GZ_BAD_DEFLATE:
      b[10] = 0xff; /* BTYPE 11: reserved */
      b[11] = 0xff;
      wr(fd, b, 12);
      break;
    case GZ_NO_TRAILER:
      b[10] = 0x01; /* a final stored block of 1 byte: "x", no trailer */
      b[11] = 1;
      b[12] = 0;
      b[13] = 0xfe;
      b[14] = 0xff;
      b[15] = 'x';
      wr(fd, b, 16);
      return;
  }
  p->closed_by_us_peer = until_closed(fd);
}

static void test_gzip_both(void) {
  env_t e;
  env_init(&e);
  sink_t sink = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~gzip", sink_on_connection, &sink);
  if (!l) return;
  const char *addr = ms_listener_address(l);
  int port = port_of(addr);
  const hcase_t cases[] = {
      {"hang up mid gzip header", GZ_HALF_HEADER, 0, CUT, 0, MS_EHANGUP, NULL, 0},
      {"bad gzip magic", GZ_BAD_MAGIC, 0, GARBAGE, 0, MS_EFRAME, NULL, 0},
      {"bad gzip method", GZ_BAD_METHOD, 0, GARBAGE, 0, MS_EFRAME, NULL, 0},
      {"bad deflate block", GZ_BAD_DEFLATE, 0, GARBAGE, 0, MS_EFRAME, NULL, 0},
      {"end without the trailer", GZ_NO_TRAILER, 0, CUT, 0, MS_EHANGUP, NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const hcase_t *c = &cases[i];
    /* our server */
    int ended = sink.ended;
    peer_t p;
    peer_start(&e, &p, gzip_script, c->stage, 0, c->how, port, NULL);
    CHECK(tu_wait(&e.loop, &sink.ended, ended + 1, WAIT_MS, c->name));
    CHECK_INT(sink.last_status, c->stream_status);
    peer_join(&e, &p);
    if (c->how != CUT) CHECK(p.closed_by_us_peer);
    fprintf(stderr, "  server: %-32s -> %s\n", c->name, ms_err_name(sink.last_status));
    legit(&e, addr, &sink, c->name);
    /* our client */
    int lport = 0;
    peer_start(&e, &p, gzip_script, c->stage, 0, c->how, 0, &lport);
    char caddr[128];
    snprintf(caddr, sizeof caddr, "net:127.0.0.1:%d~gzip", lport);
    client_case(&e, caddr, NULL, c, &p);
  }
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}


int main(int argc, char **argv) {
  if (sodium_init() < 0) return 1;
  const tu_test_t tests[] = {
      {"shs_server", test_shs_server},   {"shs_client", test_shs_client},
      {"noise_server", test_noise_server}, {"noise_client", test_noise_client},
      {"socks5_proxy", test_socks5_proxy}, {"gzip", test_gzip_both},
  };
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("hostile");
}
