/* The plugin seam (0.2) proved by a user's plugins, written against the
 * public headers only (multiserver.h, multiserver_plugin.h,
 * multiserver_uv.h, uv.h, sodium.h) plus the test utilities:
 *
 *   udpt:HOST:PORT  a toy reliable transport over UDP. One protocol instance
 *                   per ms_t (init/destroy) owns ONE uv_udp_t bound to
 *                   127.0.0.1 that serves listening and dialing; connection
 *                   ids demultiplex; SYN/SYN-ACK, a small selective-repeat
 *                   window with ACKs and retransmission on a uv_timer_t,
 *                   FIN for half-close, RST. A test knob (drop_every) drops
 *                   every Nth datagram sent.
 *   ~tag[:NAME]     a transform with a hello/verdict handshake that asks the
 *                   application's authorize hook about the client's name,
 *                   sets metadata and the remote identity, pushes back bytes
 *                   read past its verdict and corks the writes of one loop
 *                   turn into one lower write (ops.flush).
 *
 * Cases (real sockets, UDP on 127.0.0.1; each ends with ms_delete() == 0 and
 * uv_loop_close() == 0): the ABI (struct sizes, ms_version, a client-only
 * transport), one deferral turn, a 1 MiB echo with drops, concurrent
 * connections on one socket, half-close, metadata / remote identity /
 * authorize values over ~tag and ~tag~shs, refusal (stops) vs path failure
 * (falls back), late authorize answers (H2) also across ms_close, option
 * checking, push-back with read_start never calling back, the one-write
 * flush, and ms_close from inside callbacks. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "multiserver.h"
#include "multiserver_plugin.h"
#include "multiserver_uv.h"

#include "mstest.h"
#include "util.h"

#define WAIT_MS 20000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

/* ======================================================================== */
/* udpt                                                                     */
/* ======================================================================== */

#define UDPT_MSS 1200
#define UDPT_WIN 64
#define UDPT_HDR 13
#define UDPT_TICK_MS 5
#define UDPT_RTO_DEFAULT 20
#define UDPT_TIMEOUT_DEFAULT 3000

enum { P_SYN = 1, P_SYNACK, P_DATA, P_ACK, P_FIN, P_RST };
#define P_FROM_DIALER 0x80

static struct {
  int inits, destroys, sock_closed;
  int retransmits, drops;
  int conns, max_conns; /* conn entries alive over all instances */
  int dial_timeouts;
} us;

typedef struct udpt_conn_s udpt_conn_t;

typedef struct {
  ms_t *ms;
  uv_udp_t sock;
  uv_timer_t tick;
  int handles; /* open libuv handles; ms_ref held while > 0 */
  bool bound;
  int port;
  ms_plisten_t *pl; /* the one listen this socket serves */
  unsigned l_rto, l_drop;
  udpt_conn_t *conns;
  int nconns, max_nconns;
  uint32_t next_cid;
  uint8_t rbuf[2048];
} udpt_inst_t;

typedef struct {
  uint8_t *buf;
  uint16_t len;
  uint8_t type;
  bool used, acked;
  uint64_t sent_at;
} udpt_slot_t;

/* A write request's bytes, kept in its scratch space until packetized. */
typedef struct udpt_wq_s udpt_wq_t;
struct udpt_wq_s {
  udpt_wq_t *next;
  ms_write_req_t *req;
  uint8_t *data;
  size_t len, off;
};
_Static_assert(sizeof(udpt_wq_t) <= MS_WRITE_REQ_SCRATCH, "wq fits scratch");

struct udpt_conn_s {
  udpt_conn_t *next;
  udpt_inst_t *in;
  ms_stream_t *s;
  ms_pdial_t *pd;
  bool dialer, established, dead, closed, reset, reset_told;
  struct sockaddr_in peer;
  uint32_t cid;
  unsigned rto, drop_every;
  uint64_t sends, syn_at, deadline, linger_until;
  char host[64];
  int port;
  udpt_slot_t snd[UDPT_WIN];
  uint32_t snd_una, snd_nxt;
  udpt_wq_t *wq_head, *wq_tail;
  bool fin_queued, fin_sent;
  udpt_slot_t rcv[UDPT_WIN];
  uint32_t rcv_nxt;
  bool eof_delivered;
  ms_defer_t close_node;
};

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void raw_send(udpt_inst_t *in, const struct sockaddr_in *to, uint8_t type,
                     uint32_t cid, uint32_t seq, uint32_t ack, const uint8_t *p,
                     size_t len) {
  uint8_t d[UDPT_HDR + UDPT_MSS];
  d[0] = type;
  put32(d + 1, cid);
  put32(d + 5, seq);
  put32(d + 9, ack);
  if (len) memcpy(d + UDPT_HDR, p, len);
  uv_buf_t b = uv_buf_init((char *)d, (unsigned)(UDPT_HDR + len));
  (void)uv_udp_try_send(&in->sock, &b, 1, (const struct sockaddr *)to);
  /* EAGAIN: as if lost; retransmission covers it */
}

static void csend(udpt_conn_t *c, uint8_t type, uint32_t seq, const uint8_t *p,
                  size_t len) {
  if (c->drop_every && ++c->sends % c->drop_every == 0) {
    us.drops++;
    return;
  }
  raw_send(c->in, &c->peer, (uint8_t)(type | (c->dialer ? P_FROM_DIALER : 0)),
           c->cid, seq, c->rcv_nxt, p, len);
}

static void slot_clear(udpt_slot_t *sl) {
  free(sl->buf);
  memset(sl, 0, sizeof *sl);
}

static void udpt_tick(uv_timer_t *t);

static void tick_start(udpt_inst_t *in) {
  if (!uv_is_active((uv_handle_t *)&in->tick))
    uv_timer_start(&in->tick, udpt_tick, UDPT_TICK_MS, UDPT_TICK_MS);
}

static udpt_conn_t *conn_new(udpt_inst_t *in, bool dialer,
                             const struct sockaddr_in *peer, uint32_t cid) {
  udpt_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->in = in;
  c->dialer = dialer;
  c->peer = *peer;
  c->cid = cid;
  c->next = in->conns;
  in->conns = c;
  if (++in->nconns > in->max_nconns) in->max_nconns = in->nconns;
  if (++us.conns > us.max_conns) us.max_conns = us.conns;
  tick_start(in);
  return c;
}

static void conn_free(udpt_conn_t *c) {
  for (int i = 0; i < UDPT_WIN; i++) {
    slot_clear(&c->snd[i]);
    slot_clear(&c->rcv[i]);
  }
  c->in->nconns--;
  us.conns--;
  free(c);
}

/* In-order bytes (and then EOF or a reset) to a reading stream. */
static void deliver(udpt_conn_t *c) {
  ms_t *ms = c->in->ms;
  while (c->s && !c->closed && ms_stream_is_reading(c->s)) {
    udpt_slot_t *sl = &c->rcv[c->rcv_nxt % UDPT_WIN];
    if (!sl->used) {
      if (c->reset && !c->reset_told && !c->eof_delivered) {
        c->reset_told = true;
        ms_stream_emit_read(c->s, UV_ECONNRESET, NULL, 0);
      }
      return;
    }
    if (sl->type == P_FIN) {
      slot_clear(sl);
      c->rcv_nxt++;
      c->eof_delivered = true;
      ms_stream_emit_read(c->s, MS_EOF, NULL, 0);
      return;
    }
    size_t cap, n = 0;
    uint8_t *slab = ms_read_slab(ms, &cap);
    while (sl->used && sl->type == P_DATA && n + sl->len <= cap) {
      memcpy(slab + n, sl->buf, sl->len);
      n += sl->len;
      slot_clear(sl);
      c->rcv_nxt++;
      sl = &c->rcv[c->rcv_nxt % UDPT_WIN];
    }
    ms_stream_emit_read(c->s, 0, slab, n);
  }
}

/* Fill the window from the write queue (then the FIN); complete requests
 * whose bytes are all handed to the window. */
static void pump_send(udpt_conn_t *c) {
  udpt_wq_t *done = NULL, **dtail = &done;
  uint64_t now = uv_now(ms_loop(c->in->ms));
  while (!c->dead && !c->reset && c->established &&
         c->snd_nxt - c->snd_una < UDPT_WIN) {
    udpt_slot_t *sl = &c->snd[c->snd_nxt % UDPT_WIN];
    if (c->wq_head) {
      uint8_t *b = malloc(UDPT_MSS);
      size_t n = 0;
      while (c->wq_head && n < UDPT_MSS) {
        udpt_wq_t *w = c->wq_head;
        size_t k = w->len - w->off;
        if (k > UDPT_MSS - n) k = UDPT_MSS - n;
        memcpy(b + n, w->data + w->off, k);
        n += k;
        w->off += k;
        if (w->off == w->len) {
          c->wq_head = w->next;
          if (c->wq_head == NULL) c->wq_tail = NULL;
          w->next = NULL;
          *dtail = w;
          dtail = &w->next;
        }
      }
      *sl = (udpt_slot_t){.buf = b, .len = (uint16_t)n, .type = P_DATA, .used = true};
    } else if (c->fin_queued && !c->fin_sent) {
      *sl = (udpt_slot_t){.type = P_FIN, .used = true};
      c->fin_sent = true;
    } else {
      break;
    }
    sl->sent_at = now;
    csend(c, sl->type, c->snd_nxt, sl->buf, sl->len);
    c->snd_nxt++;
  }
  while (done) {
    udpt_wq_t *w = done;
    done = w->next;
    ms_write_req_t *req = w->req;
    free(w->data);
    ms_write_req_done(req, 0); /* w (scratch) is gone now */
  }
}

static void on_ack(udpt_conn_t *c, uint32_t seq, uint32_t cum) {
  for (uint32_t q = c->snd_una; q != c->snd_nxt; q++) {
    udpt_slot_t *sl = &c->snd[q % UDPT_WIN];
    if ((int32_t)(cum - q) > 0 || q == seq) sl->acked = true;
  }
  while (c->snd_una != c->snd_nxt && c->snd[c->snd_una % UDPT_WIN].acked) {
    slot_clear(&c->snd[c->snd_una % UDPT_WIN]);
    c->snd_una++;
  }
  if (c->s && !c->closed) pump_send(c);
}

/* Requests never packetized: canceled. */
static void cancel_wq(udpt_conn_t *c, int status) {
  while (c->wq_head) {
    udpt_wq_t *w = c->wq_head;
    c->wq_head = w->next;
    ms_write_req_t *req = w->req;
    free(w->data);
    ms_write_req_done(req, status);
  }
  c->wq_tail = NULL;
}

/* ---- stream ops ---- */

static int udpt_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                      unsigned nbufs) {
  udpt_conn_t *c = ms_stream_impl(s);
  if (c->reset) {
    ms_write_req_done(req, UV_EPIPE);
    return 0;
  }
  size_t n = ms_write_req_size(req);
  udpt_wq_t *w = ms_write_req_scratch(req);
  w->next = NULL;
  w->req = req;
  w->len = n;
  w->off = 0;
  w->data = malloc(n ? n : 1);
  if (w->data == NULL) return MS_ENOMEM;
  size_t off = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    if (bufs[i].len) memcpy(w->data + off, bufs[i].base, bufs[i].len);
    off += bufs[i].len;
  }
  if (n == 0) {
    free(w->data);
    ms_write_req_done(req, 0);
    return 0;
  }
  if (c->wq_tail)
    c->wq_tail->next = w;
  else
    c->wq_head = w;
  c->wq_tail = w;
  pump_send(c);
  return 0;
}

static int udpt_read_start(ms_stream_t *s) {
  /* Buffered bytes go out at once: the base holds what is emitted inside
   * read_start and delivers it on a later turn. */
  deliver(ms_stream_impl(s));
  return 0;
}

static int udpt_read_stop(ms_stream_t *s) {
  (void)s; /* deliver() checks ms_stream_is_reading() */
  return 0;
}

static int udpt_shutdown(ms_stream_t *s) {
  udpt_conn_t *c = ms_stream_impl(s);
  if (c->reset) return UV_EPIPE;
  c->fin_queued = true;
  pump_send(c);
  ms_stream_shutdown_done(s, 0);
  return 0;
}

static bool rcv_unread(const udpt_conn_t *c) {
  for (int i = 0; i < UDPT_WIN; i++)
    if (c->rcv[i].used && c->rcv[i].type == P_DATA) return true;
  return false;
}

static void udpt_close_later(void *arg) {
  udpt_conn_t *c = arg;
  ms_stream_t *s = c->s;
  cancel_wq(c, MS_ECANCELED);
  c->s = NULL;
  if (c->reset || rcv_unread(c)) { /* like TCP with unread data: reset */
    if (!c->reset) csend(c, P_RST, 0, NULL, 0);
    c->dead = true;
  } else {
    c->fin_queued = true; /* a graceful close ends with a FIN */
    pump_send(c);
    c->linger_until = uv_now(ms_loop(c->in->ms)) + 100u * c->rto;
  }
  ms_stream_closed(s);
}

static void udpt_close(ms_stream_t *s) {
  udpt_conn_t *c = ms_stream_impl(s);
  c->closed = true;
  /* Write completions come later, never inside ms_stream_close. */
  ms_defer(c->in->ms, &c->close_node, udpt_close_later, c);
}

static const ms_stream_ops_t udpt_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = udpt_write,
    .read_start = udpt_read_start,
    .read_stop = udpt_read_stop,
    .shutdown = udpt_shutdown,
    .close = udpt_close,
};

static ms_stream_t *conn_stream(udpt_conn_t *c) {
  char addr[96], num[32];
  snprintf(addr, sizeof addr, "udpt:127.0.0.1:%d", ntohs(c->peer.sin_port));
  ms_stream_t *s = ms_stream_new(c->in->ms, &udpt_ops, c, addr);
  if (s == NULL) return NULL;
  ms_stream_set_caps(s, MS_CAP_HALF_CLOSE | MS_CAP_RELIABLE | MS_CAP_ORDERED);
  int rc = 0;
  snprintf(num, sizeof num, "%u", (unsigned)c->cid);
  rc |= ms_stream_set_meta_str(s, "udpt.cid", num);
  snprintf(num, sizeof num, "%d", c->in->port);
  rc |= ms_stream_set_meta_str(s, "udpt.local_port", num);
  if (c->dialer) {
    snprintf(num, sizeof num, "%d", c->port);
    rc |= ms_stream_set_meta_str(s, "host", c->host);
    rc |= ms_stream_set_meta_str(s, "port", num);
  }
  if (rc != 0) {
    ms_stream_close(s, NULL, NULL); /* its close handles c */
    return NULL;
  }
  c->s = s;
  return s;
}

static void establish(udpt_conn_t *c) {
  if (c->established) return;
  c->established = true;
  ms_pdial_t *pd = c->pd;
  c->pd = NULL;
  if (pd == NULL) return;
  ms_pdial_set_impl(pd, NULL);
  ms_stream_t *s = conn_stream(c);
  if (s == NULL) {
    c->dead = true;
    ms_pdial_done(pd, MS_ENOMEM, NULL, "udpt: out of memory");
    return;
  }
  ms_pdial_done(pd, 0, s, NULL);
}

static void on_reset(udpt_conn_t *c) {
  c->reset = true;
  if (c->pd) {
    ms_pdial_t *pd = c->pd;
    c->pd = NULL;
    c->dead = true;
    ms_pdial_done(pd, UV_ECONNREFUSED, NULL, "udpt: connection refused (RST)");
    return;
  }
  if (c->s == NULL) {
    c->dead = true;
    return;
  }
  cancel_wq(c, UV_ECONNRESET);
  deliver(c);
}

static void udpt_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  (void)sz;
  udpt_inst_t *in = h->data;
  *b = uv_buf_init((char *)in->rbuf, sizeof in->rbuf);
}

static udpt_conn_t *conn_find(udpt_inst_t *in, bool dialer,
                              const struct sockaddr_in *a, uint32_t cid) {
  for (udpt_conn_t *c = in->conns; c; c = c->next)
    if (!c->dead && c->dialer == dialer && c->cid == cid &&
        c->peer.sin_port == a->sin_port && c->peer.sin_addr.s_addr == a->sin_addr.s_addr)
      return c;
  return NULL;
}

static void udpt_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                      const struct sockaddr *addr, unsigned flags) {
  (void)flags;
  udpt_inst_t *in = h->data;
  if (nread < UDPT_HDR || addr == NULL || addr->sa_family != AF_INET) return;
  const uint8_t *d = (const uint8_t *)buf->base;
  const struct sockaddr_in *from = (const struct sockaddr_in *)addr;
  bool from_dialer = d[0] & P_FROM_DIALER;
  uint8_t type = d[0] & 0x7f;
  uint32_t cid = get32(d + 1), seq = get32(d + 5), ack = get32(d + 9);
  const uint8_t *p = d + UDPT_HDR;
  size_t len = (size_t)nread - UDPT_HDR;
  udpt_conn_t *c = conn_find(in, !from_dialer, from, cid);
  if (c == NULL) {
    if (from_dialer && type == P_SYN && in->pl) {
      c = conn_new(in, false, from, cid);
      if (c == NULL) return;
      c->established = true;
      c->rto = in->l_rto;
      c->drop_every = in->l_drop;
      ms_stream_t *s = conn_stream(c);
      if (s == NULL) {
        c->dead = true;
        return;
      }
      csend(c, P_SYNACK, 0, NULL, 0);
      ms_plisten_incoming(in->pl, s);
    } else if (type != P_RST) {
      raw_send(in, from, (uint8_t)(P_RST | (from_dialer ? 0 : P_FROM_DIALER)), cid,
               0, 0, NULL, 0);
    }
    return;
  }
  if (type == P_RST) {
    on_reset(c);
    return;
  }
  if (type == P_SYN) {
    if (!c->dialer) csend(c, P_SYNACK, 0, NULL, 0);
    return;
  }
  if (c->dialer && !c->established) {
    establish(c);
    if (c->dead) return;
  }
  if (type == P_SYNACK) return;
  if (type == P_ACK) {
    on_ack(c, seq, ack);
    return;
  }
  if (type != P_DATA && type != P_FIN) return;
  if (len > UDPT_MSS || (type == P_FIN && len)) return;
  on_ack(c, UINT32_MAX, ack); /* a data packet carries the cumulative ack too */
  if (c->dead) return;
  if ((int32_t)(seq - c->rcv_nxt) < 0) { /* a duplicate: ack again */
    csend(c, P_ACK, seq, NULL, 0);
    return;
  }
  if (seq - c->rcv_nxt >= UDPT_WIN) return; /* outside the window */
  if (c->closed) { /* new data for a closed stream: reset */
    csend(c, P_RST, 0, NULL, 0);
    c->dead = true;
    return;
  }
  udpt_slot_t *sl = &c->rcv[seq % UDPT_WIN];
  if (!sl->used) {
    sl->used = true;
    sl->type = type;
    sl->len = (uint16_t)len;
    if (len) {
      sl->buf = malloc(len);
      memcpy(sl->buf, p, len);
    }
  }
  csend(c, P_ACK, seq, NULL, 0);
  deliver(c);
}

static void udpt_tick(uv_timer_t *t) {
  udpt_inst_t *in = t->data;
  uint64_t now = uv_now(t->loop);
  for (udpt_conn_t **pp = &in->conns, *c; (c = *pp) != NULL;) {
    if (c->dead) {
      *pp = c->next;
      conn_free(c);
      continue;
    }
    pp = &c->next;
    if (c->dialer && !c->established) {
      if (now >= c->deadline) {
        ms_pdial_t *pd = c->pd;
        c->pd = NULL;
        c->dead = true;
        us.dial_timeouts++;
        if (pd) ms_pdial_done(pd, MS_ETIMEDOUT, NULL, "udpt: no SYN-ACK (timed out)");
      } else if (now - c->syn_at >= c->rto) {
        c->syn_at = now;
        csend(c, P_SYN, 0, NULL, 0);
      }
      continue;
    }
    if (c->reset) continue;
    for (uint32_t q = c->snd_una; q != c->snd_nxt; q++) {
      udpt_slot_t *sl = &c->snd[q % UDPT_WIN];
      if (sl->acked || now - sl->sent_at < c->rto) continue;
      sl->sent_at = now;
      us.retransmits++;
      csend(c, sl->type, q, sl->buf, sl->len);
    }
    if (c->closed && c->s == NULL && c->linger_until) {
      if (c->fin_sent && c->snd_una == c->snd_nxt) {
        c->dead = true; /* everything acked: done */
      } else if (now >= c->linger_until) {
        csend(c, P_RST, 0, NULL, 0);
        c->dead = true;
      }
    }
  }
  if (in->conns == NULL) uv_timer_stop(&in->tick);
}

static void udpt_handle_closed(uv_handle_t *h) {
  udpt_inst_t *in = h->data;
  if (--in->handles > 0) return;
  us.sock_closed++;
  ms_t *ms = in->ms;
  free(in);
  ms_unref(ms);
}

static int udpt_init(ms_t *ms, void *pdata, void **instance) {
  (void)pdata;
  udpt_inst_t *in = calloc(1, sizeof *in);
  if (in == NULL) return MS_ENOMEM;
  in->ms = ms;
  int rc = uv_udp_init(ms_loop(ms), &in->sock);
  if (rc != 0) {
    free(in);
    return rc;
  }
  in->sock.data = in;
  uv_timer_init(ms_loop(ms), &in->tick);
  in->tick.data = in;
  in->handles = 2;
  in->next_cid = randombytes_uniform(1u << 30) + 1;
  ms_ref(ms); /* until both handles have closed */
  us.inits++;
  *instance = in;
  return 0;
}

static void udpt_destroy(ms_t *ms, void *instance) {
  (void)ms;
  udpt_inst_t *in = instance;
  us.destroys++;
  while (in->conns) { /* lingering ends (no stream, no dial is left) */
    udpt_conn_t *c = in->conns;
    in->conns = c->next;
    conn_free(c);
  }
  uv_close((uv_handle_t *)&in->sock, udpt_handle_closed);
  uv_close((uv_handle_t *)&in->tick, udpt_handle_closed);
}

static int udpt_parse(const ms_section_t *sec, bool dial, int *port) {
  if (sec->nfields != 2 || strcmp(sec->fields[0], "127.0.0.1") != 0) return MS_EADDRESS;
  uint64_t v;
  if (ms_opt_uint(sec->fields[1], 65535, &v) != 0 || (dial && v == 0)) return MS_EADDRESS;
  *port = (int)v;
  return 0;
}

static int udpt_validate(const ms_section_t *sec, int role, void *pdata, char *reason,
                         size_t reason_len) {
  (void)pdata;
  int port;
  if (udpt_parse(sec, role == MS_ROLE_CLIENT, &port) != 0) {
    ms_reasonf(reason, reason_len, "udpt: expected udpt:127.0.0.1:PORT");
    return MS_EADDRESS;
  }
  return 0;
}

static int udpt_scope(const ms_section_t *sec, void *pdata) {
  (void)sec;
  (void)pdata;
  return MS_SCOPE_LOOPBACK;
}

static int ensure_bound(udpt_inst_t *in, int port) {
  if (in->bound) return port == 0 || port == in->port ? 0 : UV_EADDRINUSE;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  int rc = uv_udp_bind(&in->sock, (const struct sockaddr *)&a, 0);
  if (rc != 0) return rc;
  int alen = sizeof a;
  rc = uv_udp_getsockname(&in->sock, (struct sockaddr *)&a, &alen);
  if (rc != 0) return rc;
  in->port = ntohs(a.sin_port);
  rc = uv_udp_recv_start(&in->sock, udpt_alloc, udpt_recv);
  if (rc != 0) return rc;
  uv_unref((uv_handle_t *)&in->sock); /* the tick keeps the loop for conns */
  in->bound = true;
  return 0;
}

static int opt_uint(const char *v, unsigned dflt, unsigned *out) {
  uint64_t x = dflt;
  if (v && (ms_opt_uint(v, 1000000, &x) != 0)) return MS_EINVAL;
  *out = (unsigned)x;
  return 0;
}

static int udpt_listen(ms_plisten_t *pl, const ms_section_t *sec, void *pdata) {
  udpt_inst_t *in = pdata;
  int port = 0;
  char why[128];
  if (udpt_parse(sec, false, &port) != 0) return MS_EADDRESS;
  if (in->pl) {
    ms_plisten_error(pl, UV_EADDRINUSE, "udpt: this multiserver's socket already listens");
    return UV_EADDRINUSE;
  }
  if (opt_uint(ms_plisten_opt(pl, "rto_ms"), UDPT_RTO_DEFAULT, &in->l_rto) != 0 ||
      opt_uint(ms_plisten_opt(pl, "drop_every"), 0, &in->l_drop) != 0 || in->l_rto == 0) {
    ms_plisten_error(pl, MS_EINVAL, "udpt: bad rto_ms or drop_every");
    return MS_EINVAL;
  }
  int rc = ensure_bound(in, port);
  if (rc != 0) {
    ms_reasonf(why, sizeof why, "udpt: cannot bind 127.0.0.1:%d: %s", port, ms_strerror(rc));
    ms_plisten_error(pl, rc, why);
    return rc;
  }
  ms_reasonf(why, sizeof why, "udpt:127.0.0.1:%d", in->port);
  rc = ms_plisten_set_address(pl, why);
  if (rc != 0) return rc;
  in->pl = pl;
  ms_plisten_set_impl(pl, in);
  return 0;
}

static void udpt_listen_close(ms_plisten_t *pl) {
  udpt_inst_t *in = ms_plisten_impl(pl);
  in->pl = NULL;
  ms_plisten_closed(pl);
}

static int udpt_dial(ms_pdial_t *pd, const ms_section_t *sec, void *pdata) {
  udpt_inst_t *in = pdata;
  int port;
  if (udpt_parse(sec, true, &port) != 0) return MS_EADDRESS;
  unsigned rto, drop, timeout;
  if (opt_uint(ms_pdial_opt(pd, "rto_ms"), UDPT_RTO_DEFAULT, &rto) != 0 || rto == 0 ||
      opt_uint(ms_pdial_opt(pd, "drop_every"), 0, &drop) != 0 ||
      opt_uint(ms_pdial_opt(pd, "timeout_ms"), UDPT_TIMEOUT_DEFAULT, &timeout) != 0)
    return MS_EINVAL;
  int rc = ensure_bound(in, 0);
  if (rc != 0) return rc;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  udpt_conn_t *c = conn_new(in, true, &a, in->next_cid++);
  if (c == NULL) return MS_ENOMEM;
  snprintf(c->host, sizeof c->host, "%s", sec->fields[0]);
  c->port = port;
  c->rto = rto;
  c->drop_every = drop;
  c->pd = pd;
  uint64_t now = uv_now(ms_loop(in->ms));
  c->syn_at = now;
  c->deadline = now + timeout;
  ms_pdial_set_impl(pd, c);
  csend(c, P_SYN, 0, NULL, 0);
  return 0;
}

static void udpt_dial_cancel(ms_pdial_t *pd) {
  udpt_conn_t *c = ms_pdial_impl(pd);
  if (c == NULL || c->pd != pd) return;
  c->pd = NULL;
  c->dead = true;
  csend(c, P_RST, 0, NULL, 0);
  ms_pdial_done(pd, MS_ECANCELED, NULL, "udpt: canceled");
}

static const char *const udpt_keys[] = {"rto_ms", "drop_every", "timeout_ms", NULL};

static const ms_protocol_t udpt_proto = {
    .size = sizeof(ms_protocol_t),
    .name = "udpt",
    .kind = MS_PROTO_TRANSPORT,
    .validate = udpt_validate,
    .listen = udpt_listen,
    .listen_close = udpt_listen_close,
    .dial = udpt_dial,
    .dial_cancel = udpt_dial_cancel,
    .init = udpt_init,
    .destroy = udpt_destroy,
    .scope = udpt_scope,
    .option_keys = udpt_keys,
};

/* ======================================================================== */
/* tag                                                                      */
/* ======================================================================== */

static struct {
  int wraps, live, opened, failed;
  int upper_writes, lower_writes; /* writes into tag streams / their flushes */
  int pushed_back;                /* bytes handed back with ms_stream_unread */
  int timeouts;
  int cb_inside; /* an authorize outcome inside ms_pwrap_authorize/_done */
} ts;

static bool g_in_done; /* the application is inside ms_authorize_done */

#define TAG_NAME_MAX 63

typedef struct tag_w_s tag_w_t;
struct tag_w_s {
  tag_w_t *next;
  ms_write_req_t *req;
};
_Static_assert(sizeof(tag_w_t) <= MS_WRITE_REQ_SCRATCH, "tag_w fits scratch");

typedef struct {
  tag_w_t *head;
  uint8_t *buf;
  size_t len;
} tag_batch_t;

typedef struct {
  ms_t *ms;
  ms_pwrap_t *pw; /* NULL once the wrap finished */
  ms_stream_t *lower, *upper;
  int role;
  char name[TAG_NAME_MAX + 1], peer[TAG_NAME_MAX + 1];
  char greeting[TAG_NAME_MAX + 1], peer_greeting[TAG_NAME_MAX + 1];
  uint8_t in[512];
  size_t in_len;
  uv_timer_t timer;
  bool timer_closed, lower_closed, open, refusing, in_ask;
  /* the cork: this turn's writes */
  uint8_t *cork;
  size_t cork_len, cork_cap;
  tag_w_t *ch, *ct;
  int upper_writes, lower_writes; /* this stream's */
} tag_t;

static void tag_maybe_free(tag_t *t) {
  if (!t->timer_closed || !t->lower_closed) return;
  free(t->cork);
  free(t);
  ts.live--;
}

static void tag_timer_closed(uv_handle_t *h) {
  tag_t *t = h->data;
  t->timer_closed = true;
  ms_unref(t->ms);
  tag_maybe_free(t);
}

static void tag_stop_timer(tag_t *t) {
  if (!uv_is_closing((uv_handle_t *)&t->timer))
    uv_close((uv_handle_t *)&t->timer, tag_timer_closed);
}

static int cork_add(tag_t *t, const void *p, size_t n) {
  if (t->cork_len + n > t->cork_cap) {
    size_t cap = (t->cork_len + n) * 2 + 64;
    uint8_t *b = realloc(t->cork, cap);
    if (b == NULL) return MS_ENOMEM;
    t->cork = b;
    t->cork_cap = cap;
  }
  if (n) memcpy(t->cork + t->cork_len, p, n);
  t->cork_len += n;
  return 0;
}

static void tag_batch_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  tag_batch_t *b = arg;
  for (tag_w_t *w = b->head, *next; w; w = next) {
    next = w->next;
    ms_write_req_done(w->req, status); /* in order */
  }
  free(b->buf);
  free(b);
}

/* ops.flush: the turn's writes as ONE lower write. */
static void tag_flush(ms_stream_t *s) {
  tag_t *t = ms_stream_impl(s);
  if (t->cork_len == 0 && t->ch == NULL) return;
  tag_batch_t *b = calloc(1, sizeof *b);
  int rc = MS_ENOMEM;
  if (b) {
    b->head = t->ch;
    b->buf = t->cork;
    b->len = t->cork_len;
    t->ch = t->ct = NULL;
    t->cork = NULL;
    t->cork_len = t->cork_cap = 0;
    ms_buf_t mb = {b->buf, b->len};
    ts.lower_writes++;
    t->lower_writes++;
    rc = ms_stream_write(t->lower, &mb, 1, tag_batch_written, b);
    if (rc == 0) return;
    tag_batch_written(t->lower, rc, b);
    return;
  }
  for (tag_w_t *w = t->ch, *next; w; w = next) {
    next = w->next;
    ms_write_req_done(w->req, rc);
  }
  t->ch = t->ct = NULL;
}

static int tag_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                     unsigned nbufs) {
  tag_t *t = ms_stream_impl(s);
  size_t len0 = t->cork_len;
  for (unsigned i = 0; i < nbufs; i++)
    if (cork_add(t, bufs[i].base, bufs[i].len) != 0) {
      t->cork_len = len0;
      return MS_ENOMEM;
    }
  tag_w_t *w = ms_write_req_scratch(req);
  w->next = NULL;
  w->req = req;
  if (t->ct)
    t->ct->next = w;
  else
    t->ch = w;
  t->ct = w;
  ts.upper_writes++;
  t->upper_writes++;
  ms_stream_want_flush(s);
  return 0;
}

static void tag_up_read(ms_stream_t *lower, int status, const uint8_t *data,
                        size_t len, void *arg) {
  (void)lower;
  tag_t *t = arg;
  ms_stream_emit_read(t->upper, status, (uint8_t *)data, len);
}

static int tag_read_start(ms_stream_t *s) {
  tag_t *t = ms_stream_impl(s);
  return ms_stream_read_start(t->lower, tag_up_read, t);
}

static int tag_read_stop(ms_stream_t *s) {
  tag_t *t = ms_stream_impl(s);
  return ms_stream_read_stop(t->lower);
}

static void tag_lower_shut(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  tag_t *t = arg;
  ms_stream_shutdown_done(t->upper, status);
}

static int tag_shutdown(ms_stream_t *s) {
  tag_t *t = ms_stream_impl(s);
  tag_flush(s); /* a corked verdict goes before the end */
  return ms_stream_shutdown(t->lower, tag_lower_shut, t);
}

static void tag_lower_closed_open(ms_stream_t *lower, void *arg) {
  (void)lower;
  tag_t *t = arg;
  ms_stream_t *up = t->upper;
  for (tag_w_t *w = t->ch, *next; w; w = next) { /* never flushed */
    next = w->next;
    ms_write_req_done(w->req, MS_ECANCELED);
  }
  t->ch = t->ct = NULL;
  t->lower_closed = true;
  t->lower = NULL;
  ms_stream_closed(up);
  tag_maybe_free(t);
}

static void tag_close(ms_stream_t *s) {
  tag_t *t = ms_stream_impl(s);
  ms_stream_close(t->lower, tag_lower_closed_open, t);
}

static const ms_stream_ops_t tag_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = tag_write,
    .read_start = tag_read_start,
    .read_stop = tag_read_stop,
    .shutdown = tag_shutdown,
    .close = tag_close,
    .flush = tag_flush,
};

static void tag_lower_closed_fail(ms_stream_t *lower, void *arg) {
  (void)lower;
  tag_t *t = arg;
  t->lower_closed = true;
  t->lower = NULL;
  tag_maybe_free(t);
}

static void tag_fail(tag_t *t, int status, int fclass, const char *reason) {
  if (t->pw == NULL) return;
  ms_pwrap_t *pw = t->pw;
  t->pw = NULL;
  ts.failed++;
  tag_stop_timer(t);
  if (!t->refusing) ms_stream_close(t->lower, tag_lower_closed_fail, t);
  ms_pwrap_fail(pw, status, fclass, reason); /* withdraws a pending request */
}

static void tag_open(tag_t *t) {
  const char *la = ms_stream_address(t->lower);
  char addr[512];
  snprintf(addr, sizeof addr, "%s~tag%s%s", la, t->role == MS_ROLE_CLIENT ? ":" : "",
           t->role == MS_ROLE_CLIENT ? t->name : "");
  ms_stream_t *up = ms_stream_new(t->ms, &tag_ops, t, addr);
  if (up == NULL) {
    tag_fail(t, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory");
    return;
  }
  t->upper = up;
  /* What this layer knows: the peer's name (its identity), the stack below
   * and the transport's own metadata. */
  const ms_section_t *sec0 = ms_pwrap_section(t->pw, 0);
  char below[128], pos[16];
  snprintf(below, sizeof below, "%s:%s", sec0->name, sec0->nfields ? sec0->fields[0] : "");
  snprintf(pos, sizeof pos, "%zu/%zu", ms_pwrap_position(t->pw), ms_pwrap_nsections(t->pw));
  const char *cid = ms_stream_meta(t->lower, "udpt.cid", NULL);
  int rc = ms_stream_set_meta_str(up, "tag.name", t->peer);
  if (rc == 0) rc = ms_stream_set_meta_str(up, "tag.greeting", t->peer_greeting);
  if (rc == 0) rc = ms_stream_set_meta_str(up, "tag.below", below);
  if (rc == 0) rc = ms_stream_set_meta_str(up, "tag.position", pos);
  if (rc == 0 && cid) rc = ms_stream_set_meta_str(up, "tag.transport_cid", cid);
  if (rc == 0) rc = ms_stream_set_remote_id(up, "tag-name", t->peer, strlen(t->peer));
  if (rc != 0) {
    ms_stream_close(up, NULL, NULL);
    t->upper = NULL;
    return;
  }
  ms_stream_set_caps(up, ms_stream_caps(t->lower));
  ms_stream_set_server(up, t->role == MS_ROLE_SERVER);
  t->open = true;
  ts.opened++;
  tag_stop_timer(t);
  ms_pwrap_t *pw = t->pw;
  t->pw = NULL;
  ms_pwrap_done(pw, 0, up, NULL);
}

static void tag_refused_shut(ms_stream_t *lower, int status, void *arg) {
  (void)status;
  ms_stream_close(lower, tag_lower_closed_fail, arg);
}

static void tag_authorized(ms_pwrap_t *pw, bool accepted, void *arg) {
  (void)pw;
  tag_t *t = arg;
  if (t->in_ask || g_in_done) ts.cb_inside++;
  uint8_t v[2 + TAG_NAME_MAX];
  size_t gl = strlen(t->greeting);
  v[0] = accepted ? 'A' : 'R';
  v[1] = (uint8_t)gl;
  memcpy(v + 2, t->greeting, gl);
  if (!accepted) {
    /* Tell the client, then hang up: the verdict goes out before the end. */
    ms_buf_t b = {v, 2};
    t->refusing = ms_stream_write(t->lower, &b, 1, NULL, NULL) == 0 &&
                  ms_stream_shutdown(t->lower, tag_refused_shut, t) == 0;
    if (!t->refusing) ms_stream_close(t->lower, tag_lower_closed_fail, t);
    t->refusing = true;
    tag_fail(t, MS_EUNAUTHORIZED, MS_FAIL_AUTH, "tag: the server refused the name");
    return;
  }
  /* The verdict is corked: it leaves with what the application writes in
   * its connection callback (this very turn), in one lower write. */
  if (cork_add(t, v, 2 + gl) != 0) {
    tag_fail(t, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory");
    return;
  }
  tag_open(t);
  if (t->upper) ms_stream_want_flush(t->upper);
}

/* Server: hello = 'T' len name glen greeting. */
static void tag_srv_read(ms_stream_t *lower, int status, const uint8_t *data,
                         size_t len, void *arg) {
  tag_t *t = arg;
  if (status != 0) {
    tag_fail(t, status == MS_EOF ? MS_EHANGUP : status, MS_FAIL_DEFAULT,
             "tag: hung up in the hello");
    return;
  }
  size_t take = len < sizeof t->in - t->in_len ? len : sizeof t->in - t->in_len;
  memcpy(t->in + t->in_len, data, take);
  t->in_len += take;
  if (t->in_len < 2) return;
  if (t->in[0] != 'T' || t->in[1] > TAG_NAME_MAX) {
    tag_fail(t, MS_EHANDSHAKE, MS_FAIL_AUTH, "tag: bad hello");
    return;
  }
  size_t nl = t->in[1];
  if (t->in_len < 3 + nl) return;
  size_t gl = t->in[2 + nl];
  if (gl > TAG_NAME_MAX) {
    tag_fail(t, MS_EHANDSHAKE, MS_FAIL_AUTH, "tag: bad hello");
    return;
  }
  size_t hl = 3 + nl + gl;
  if (t->in_len < hl) return;
  memcpy(t->peer, t->in + 2, nl);
  t->peer[nl] = '\0';
  memcpy(t->peer_greeting, t->in + 3 + nl, gl);
  t->peer_greeting[gl] = '\0';
  ms_stream_read_stop(lower);
  size_t extra = t->in_len - hl + (len - take);
  if (extra) {
    /* Session bytes behind the hello: give them back, in order. */
    uint8_t *x = malloc(extra);
    memcpy(x, t->in + hl, t->in_len - hl);
    memcpy(x + (t->in_len - hl), data + take, len - take);
    if (ms_stream_unread(lower, x, extra) == 0) ts.pushed_back += (int)extra;
    free(x);
  }
  t->in_ask = true;
  int rc = ms_pwrap_authorize(t->pw, "tag-name", t->peer, nl ? nl : 1, tag_authorized, t);
  t->in_ask = false;
  if (rc != 0) tag_fail(t, rc, MS_FAIL_DEFAULT, "tag: cannot ask the authorize hook");
}

/* Client: verdict = 'A'|'R' glen greeting, then session bytes. */
static void tag_cli_read(ms_stream_t *lower, int status, const uint8_t *data,
                         size_t len, void *arg) {
  tag_t *t = arg;
  if (status != 0) {
    tag_fail(t, status == MS_EOF ? MS_EHANGUP : status, MS_FAIL_DEFAULT,
             "tag: hung up before the verdict");
    return;
  }
  size_t take = len < sizeof t->in - t->in_len ? len : sizeof t->in - t->in_len;
  memcpy(t->in + t->in_len, data, take);
  t->in_len += take;
  if (t->in_len < 2) return;
  size_t gl = t->in[1];
  if ((t->in[0] != 'A' && t->in[0] != 'R') || gl > TAG_NAME_MAX) {
    tag_fail(t, MS_EHANDSHAKE, MS_FAIL_AUTH, "tag: bad verdict");
    return;
  }
  if (t->in[0] == 'R') {
    tag_fail(t, MS_EUNAUTHORIZED, MS_FAIL_AUTH, "tag: the server refused our name");
    return;
  }
  if (t->in_len < 2 + gl) return;
  memcpy(t->peer_greeting, t->in + 2, gl);
  t->peer_greeting[gl] = '\0';
  snprintf(t->peer, sizeof t->peer, "server");
  ms_stream_read_stop(lower);
  size_t vl = 2 + gl, extra = t->in_len - vl + (len - take);
  if (extra) {
    uint8_t *x = malloc(extra);
    memcpy(x, t->in + vl, t->in_len - vl);
    memcpy(x + (t->in_len - vl), data + take, len - take);
    if (ms_stream_unread(lower, x, extra) == 0) ts.pushed_back += (int)extra;
    free(x);
  }
  tag_open(t);
}

static void tag_on_timeout(uv_timer_t *h) {
  tag_t *t = h->data;
  ts.timeouts++;
  tag_fail(t, MS_ETIMEDOUT, MS_FAIL_PATH, "tag: handshake timed out");
}

static int tag_validate(const ms_section_t *sec, int role, void *pdata, char *reason,
                        size_t reason_len) {
  (void)role;
  (void)pdata;
  if (sec->nfields > 1 || (sec->nfields == 1 && (sec->field_lens[0] == 0 ||
                                                 sec->field_lens[0] > TAG_NAME_MAX))) {
    ms_reasonf(reason, reason_len, "tag: expected tag or tag:NAME");
    return MS_EADDRESS;
  }
  return 0;
}

static int tag_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
                    int role, void *pdata) {
  (void)pdata;
  ms_t *ms = ms_pwrap_ms(pw);
  unsigned timeout = 5000;
  const char *g = ms_pwrap_opt(pw, "greeting");
  if (opt_uint(ms_pwrap_opt(pw, "timeout_ms"), 5000, &timeout) != 0 || timeout == 0)
    return MS_EINVAL;
  if (g && strlen(g) > TAG_NAME_MAX) return MS_EINVAL;
  tag_t *t = calloc(1, sizeof *t);
  if (t == NULL) return MS_ENOMEM;
  t->ms = ms;
  t->pw = pw;
  t->lower = lower;
  t->role = role;
  snprintf(t->name, sizeof t->name, "%s", sec->nfields ? sec->fields[0] : "anon");
  snprintf(t->greeting, sizeof t->greeting, "%s", g ? g : "");
  uv_timer_init(ms_loop(ms), &t->timer);
  t->timer.data = t;
  ms_ref(ms); /* the timer is ours beyond the wrap */
  uv_timer_start(&t->timer, tag_on_timeout, timeout, 0);
  ts.wraps++;
  ts.live++;
  ms_pwrap_set_impl(pw, t);
  int rc = ms_stream_read_start(lower, role == MS_ROLE_SERVER ? tag_srv_read : tag_cli_read, t);
  if (rc == 0 && role == MS_ROLE_CLIENT) {
    uint8_t h[3 + 2 * TAG_NAME_MAX];
    size_t nl = strlen(t->name), gl = strlen(t->greeting);
    h[0] = 'T';
    h[1] = (uint8_t)nl;
    memcpy(h + 2, t->name, nl);
    h[2 + nl] = (uint8_t)gl;
    memcpy(h + 3 + nl, t->greeting, gl);
    ms_buf_t b = {h, 3 + nl + gl};
    rc = ms_stream_write(lower, &b, 1, NULL, NULL); /* copied by udpt */
  }
  if (rc != 0) tag_fail(t, rc, MS_FAIL_DEFAULT, "tag: cannot start");
  return 0;
}

static void tag_wrap_cancel(ms_pwrap_t *pw) {
  tag_t *t = ms_pwrap_impl(pw);
  if (t) tag_fail(t, MS_ECANCELED, MS_FAIL_DEFAULT, "canceled");
}

static const char *const tag_keys[] = {"greeting", "timeout_ms", NULL};

static const ms_protocol_t tag_proto = {
    .size = sizeof(ms_protocol_t),
    .name = "tag",
    .kind = MS_PROTO_TRANSFORM,
    .validate = tag_validate,
    .wrap = tag_wrap,
    .wrap_cancel = tag_wrap_cancel,
    .option_keys = tag_keys,
};

/* ======================================================================== */
/* Environment: server and client multiservers on one loop                  */
/* ======================================================================== */

typedef struct {
  uint32_t magic;
  char what[64];
} auth_val_t;
#define AUTH_MAGIC 0x41555448u

typedef struct env_s env_t;

typedef struct {
  uv_timer_t t;
  env_t *e;
  ms_authorize_t *req;
  bool accept;
  char name[64];
} late_t;

struct env_s {
  uv_loop_t loop;
  ms_t *srv, *cli;
  ms_options_t so;
  int auth_calls, shs_auth_calls, frees, bad_frees;
  int late_answers, closed_cbs, late_at_close;
  bool in_done;        /* inside ms_authorize_done */
  bool conn_in_done;   /* a connection callback came from inside it */
  unsigned shs_late_ms; /* answer ed25519 requests from a timer after this */
  char last_kind[32], last_proto[32], last_addr[128], last_name[64];
  /* what the server's connection callback saw */
  tu_echo_t echo;
  int accepted;
  ms_stream_t *acc;
  char meta[1024];
  char rid_kind[32];
  uint8_t rid[64];
  size_t rid_len;
  void *auth;
  unsigned caps;
  bool is_server;
};

static void on_auth_free(void *value, void *arg) {
  env_t *e = arg;
  auth_val_t *v = value;
  if (v->magic != AUTH_MAGIC) e->bad_frees++;
  v->magic = 0;
  free(v);
  e->frees++;
}

static auth_val_t *auth_val(const char *what) {
  auth_val_t *v = calloc(1, sizeof *v);
  v->magic = AUTH_MAGIC;
  snprintf(v->what, sizeof v->what, "%s", what);
  return v;
}

static void late_closed(uv_handle_t *h) { free(h->data); }

static void late_fire(uv_timer_t *t) {
  late_t *l = t->data;
  env_t *e = l->e;
  e->late_answers++;
  e->in_done = g_in_done = true;
  ms_authorize_done(l->req, l->accept, l->accept ? auth_val(l->name) : NULL);
  e->in_done = g_in_done = false;
  uv_close((uv_handle_t *)&l->t, late_closed);
}

static void answer_later(env_t *e, ms_authorize_t *req, bool accept, const char *name,
                         unsigned ms) {
  late_t *l = calloc(1, sizeof *l);
  l->e = e;
  l->req = req;
  l->accept = accept;
  snprintf(l->name, sizeof l->name, "%s", name);
  uv_timer_init(&e->loop, &l->t);
  l->t.data = l;
  uv_timer_start(&l->t, late_fire, ms, 0);
}

static void app_authorize(const uint8_t rk[MS_PUBLICKEYBYTES], ms_authorize_t *req,
                          void *arg) {
  env_t *e = arg;
  e->auth_calls++;
  const char *kind;
  size_t len;
  const uint8_t *id = ms_authorize_remote_id(req, &kind, &len);
  snprintf(e->last_kind, sizeof e->last_kind, "%s", kind);
  snprintf(e->last_proto, sizeof e->last_proto, "%s", ms_authorize_protocol(req));
  snprintf(e->last_addr, sizeof e->last_addr, "%s", ms_authorize_address(req));
  if (strcmp(kind, "ed25519") == 0) {
    e->shs_auth_calls++;
    CHECK(rk != NULL && len == 32 && memcmp(rk, id, 32) == 0);
    if (e->shs_late_ms) {
      answer_later(e, req, true, "shs-late", e->shs_late_ms);
      return;
    }
    e->in_done = g_in_done = true;
    ms_authorize_done(req, true, auth_val("shs"));
    e->in_done = g_in_done = false;
    return;
  }
  CHECK(rk == NULL); /* not an ed25519 identity */
  char name[64];
  snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), (const char *)id);
  snprintf(e->last_name, sizeof e->last_name, "%s", name);
  if (strcmp(name, "mallory") == 0) {
    e->in_done = g_in_done = true;
    ms_authorize_done(req, false, NULL); /* refused from inside the hook */
    e->in_done = g_in_done = false;
  } else if (strcmp(name, "bob") == 0) {
    answer_later(e, req, true, name, 20); /* accepted from a timer */
  } else if (strcmp(name, "slow") == 0) {
    answer_later(e, req, true, name, 400); /* after the handshake timed out */
  } else {
    e->in_done = g_in_done = true;
    ms_authorize_done(req, true, auth_val(name)); /* accepted inside the hook */
    e->in_done = g_in_done = false;
  }
}

static void srv_record(env_t *e, ms_stream_t *s) {
  e->accepted++;
  if (e->in_done) e->conn_in_done = true;
  e->acc = s;
  e->meta[0] = '\0';
  size_t n = ms_stream_meta_count(s);
  for (size_t i = 0; i < n; i++) {
    const void *v;
    const char *k = ms_stream_meta_at(s, i, &v, NULL);
    size_t l = strlen(e->meta);
    snprintf(e->meta + l, sizeof e->meta - l, "%s=%s;", k, (const char *)v);
  }
  const char *kind = NULL;
  size_t len = 0;
  const void *id = ms_stream_remote_id(s, &kind, &len);
  snprintf(e->rid_kind, sizeof e->rid_kind, "%s", kind ? kind : "");
  e->rid_len = len;
  if (id && len <= sizeof e->rid) memcpy(e->rid, id, len);
  e->auth = ms_stream_auth(s);
  e->caps = ms_stream_caps(s);
  e->is_server = ms_stream_is_server(s);
}

static void srv_echo(ms_stream_t *s, void *arg) {
  env_t *e = arg;
  srv_record(e, s);
  tu_echo_on_connection(s, &e->echo);
}

static void env_init(env_t *e) {
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  tu_opts_default(&e->so);
  e->so.authorize = app_authorize;
  e->so.authorize_arg = e;
  e->so.authorize_free = on_auth_free;
  ms_options_t co;
  tu_opts_default(&co);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, &e->so), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, &co), 0);
  int i0 = us.inits;
  CHECK_INT(ms_register(e->srv, &udpt_proto, NULL), 0);
  CHECK_INT(ms_register(e->cli, &udpt_proto, NULL), 0);
  CHECK_INT(us.inits - i0, 2); /* one instance per ms */
  CHECK_INT(ms_register(e->srv, &tag_proto, NULL), 0);
  CHECK_INT(ms_register(e->cli, &tag_proto, NULL), 0);
}

static void env_done(env_t *e) {
  int d0 = us.destroys, c0 = us.sock_closed;
  /* lingering conns finish on their own */
  for (int i = 0; i < 400 && us.conns > 0; i++) tu_sleep_loop(&e->loop, 10);
  CHECK_INT(us.conns, 0);
  CHECK_INT(ts.live, 0);
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK_INT(us.destroys - d0, 2);
  CHECK_INT(us.sock_closed - c0, 2);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
  CHECK_INT(e->bad_frees, 0);
  CHECK_INT(ts.cb_inside, 0);
  CHECK(!e->conn_in_done);
}

static ms_listener_t *listen_with(env_t *e, const char *addr, const char *const *opts,
                                  ms_connection_cb cb) {
  ms_popts_t *o = NULL;
  CHECK_INT(ms_popts_new(&o), 0);
  for (size_t i = 0; opts && opts[i]; i++) CHECK_INT(ms_popts_parse(o, opts[i]), 0);
  ms_listener_t *l = NULL;
  char reason[512] = "";
  int rc = ms_listen_with(e->srv, addr, o, cb, e, &l, reason, sizeof reason);
  CHECK_INT(rc, 0);
  if (rc != 0) fprintf(stderr, "  listen %s: %s\n", addr, reason);
  ms_popts_free(o);
  return l;
}

static int connect_with(ms_t *ms, const char *addr, const char *const *opts,
                        tu_conn_t *r) {
  ms_popts_t *o = NULL;
  CHECK_INT(ms_popts_new(&o), 0);
  for (size_t i = 0; opts && opts[i]; i++) CHECK_INT(ms_popts_parse(o, opts[i]), 0);
  memset(r, 0, sizeof *r);
  r->in_call = true;
  int rc = ms_connect_with(ms, addr, o, tu_on_conn, r, NULL);
  r->in_call = false;
  ms_popts_free(o);
  return rc;
}

static uint8_t *bulk_data;
#define BULK (1024u * 1024)

/* ======================================================================== */
/* Tests                                                                    */
/* ======================================================================== */

static void test_echo_drops(void) {
  env_t e;
  env_init(&e);
  const char *opts[] = {"udpt.drop_every=7", "udpt.rto_ms=10", NULL};
  ms_listener_t *l = listen_with(&e, "udpt:127.0.0.1:0", opts, srv_echo);
  if (l == NULL) return;
  const char *la = ms_listener_address(l);
  CHECK(strncmp(la, "udpt:127.0.0.1:", 15) == 0 && strcmp(la, "udpt:127.0.0.1:0") != 0);
  int r0 = us.retransmits, d0 = us.drops;
  tu_bulk_t b;
  const tu_bulk_cfg_t cfg = {.data = bulk_data, .total = BULK, .timeout_ms = 60000,
                             .close_timeout_ms = WAIT_MS};
  tu_bulk_echo(&e.loop, e.cli, la, &cfg, &e.echo, &b);
  CHECK(us.drops - d0 > 100);       /* the knob dropped datagrams */
  CHECK(us.retransmits - r0 > 50);  /* and retransmission made up for them */
  CHECK_STR(b.address, la);
  CHECK_INT(e.caps, MS_CAP_HALF_CLOSE | MS_CAP_RELIABLE | MS_CAP_ORDERED);
  CHECK(e.is_server);
  fprintf(stderr, "  drops %d, retransmits %d\n", us.drops - d0, us.retransmits - r0);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* Several connections at once over the client's one socket. */
#define NCONC 6
#define CONC_BYTES (96 * 1024)
typedef struct {
  ms_stream_t *s;
  const uint8_t *data;
  size_t got;
  bool bad;
  int eof, closed, status;
  char local_port[16];
} conc_t;

static void conc_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((conc_t *)arg)->closed++;
}
static void conc_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                      void *arg) {
  conc_t *c = arg;
  if (status == 0) {
    if (c->got + len > CONC_BYTES || memcmp(data, c->data + c->got, len) != 0) c->bad = true;
    c->got += len;
    return;
  }
  if (status == MS_EOF) c->eof++; else c->status = status;
  ms_stream_close(s, conc_closed, c);
}
static void conc_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  conc_t *c = arg;
  c->status = status;
  if (status != 0) {
    fprintf(stderr, "  conc connect: %s\n", reason);
    c->closed++;
    return;
  }
  c->s = s;
  snprintf(c->local_port, sizeof c->local_port, "%s",
           (const char *)ms_stream_meta(s, "udpt.local_port", NULL));
  ms_buf_t b = {c->data, CONC_BYTES};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  CHECK_INT(ms_stream_shutdown(s, NULL, NULL), 0);
  ms_stream_read_start(s, conc_read, c);
}

static void test_concurrent(void) {
  env_t e;
  env_init(&e);
  /* A generous dial deadline: under ASan on a loaded machine the SYNs of
   * many dials over one lossy socket can take seconds. */
  const char *opts[] = {"udpt.drop_every=11", "udpt.rto_ms=10", "udpt.timeout_ms=30000", NULL};
  ms_listener_t *l = listen_with(&e, "udpt:127.0.0.1:0", opts, srv_echo);
  if (l == NULL) return;
  conc_t c[NCONC];
  memset(c, 0, sizeof c);
  int closed = 0;
  const char *copts[] = {"udpt.drop_every=13", "udpt.rto_ms=10", "udpt.timeout_ms=30000", NULL};
  ms_popts_t *o;
  CHECK_INT(ms_popts_new(&o), 0);
  for (int i = 0; copts[i]; i++) CHECK_INT(ms_popts_parse(o, copts[i]), 0);
  for (int i = 0; i < NCONC; i++) {
    c[i].data = bulk_data + (size_t)i * 1000;
    CHECK_INT(ms_connect_with(e.cli, ms_listener_address(l), o, conc_connected, &c[i], NULL), 0);
  }
  ms_popts_free(o);
  uint64_t t0 = tu_now_ms();
  while (tu_now_ms() - t0 < WAIT_MS) {
    closed = 0;
    for (int i = 0; i < NCONC; i++) closed += c[i].closed;
    if (closed == NCONC) break;
    tu_sleep_loop(&e.loop, 5);
  }
  CHECK_INT(closed, NCONC);
  for (int i = 0; i < NCONC; i++) {
    CHECK_INT(c[i].status, 0);
    CHECK_INT(c[i].got, CONC_BYTES);
    CHECK(!c[i].bad);
    CHECK_INT(c[i].eof, 1);
    CHECK_STR(c[i].local_port, c[0].local_port); /* one socket */
  }
  CHECK_INT(e.echo.accepted, NCONC);
  CHECK(us.max_conns >= NCONC);
  tu_sleep_loop(&e.loop, 50);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_half_close(void) {
  for (int mode = 0; mode < 2; mode++) {
    env_t e;
    env_init(&e);
    tu_half_close(&e.loop, e.srv, e.cli, "udpt:127.0.0.1:0", mode, MS_EOF, WAIT_MS, NULL);
    env_done(&e);
  }
}

/* ---- metadata, identity, authorization values ---- */

static void test_tag_meta(void) {
  env_t e;
  env_init(&e);
  const char *opts[] = {"tag.greeting=hi-from-server", NULL};
  ms_listener_t *l = listen_with(&e, "udpt:127.0.0.1:0~tag", opts, srv_echo);
  if (l == NULL) return;
  CHECK_HAS(ms_listener_address(l), "~tag");
  char addr[256];
  snprintf(addr, sizeof addr, "%s:alice", ms_listener_address(l));
  tu_conn_t r;
  const char *copts[] = {"tag.greeting=hello-from-alice", NULL};
  CHECK_INT(connect_with(e.cli, addr, copts, &r), 0);
  WAIT(&e.loop, r.done, 1, "tag connect");
  CHECK_INT(r.status, 0);
  CHECK(!r.fired_in_call);
  WAIT(&e.loop, e.accepted, 1, "tag accept");
  CHECK(!e.conn_in_done);
  CHECK_HAS(e.meta, "udpt.cid=");         /* the transport's */
  CHECK_HAS(e.meta, "udpt.local_port=");
  CHECK_HAS(e.meta, "tag.name=alice;");   /* the transform's */
  CHECK_HAS(e.meta, "tag.greeting=hello-from-alice;");
  CHECK_HAS(e.meta, "tag.below=udpt:127.0.0.1;");
  CHECK_HAS(e.meta, "tag.position=1/2;");
  CHECK_HAS(e.meta, "tag.transport_cid=");
  CHECK_STR(e.rid_kind, "tag-name");
  CHECK(e.rid_len == 5 && memcmp(e.rid, "alice", 5) == 0);
  CHECK(e.auth != NULL && strcmp(((auth_val_t *)e.auth)->what, "alice") == 0);
  CHECK_STR(e.last_proto, "tag");
  CHECK_HAS(e.last_addr, "udpt:127.0.0.1:");
  CHECK_STR(e.last_kind, "tag-name");
  if (r.s) {
    CHECK_STR((const char *)ms_stream_meta(r.s, "tag.greeting", NULL), "hi-from-server");
    CHECK_STR((const char *)ms_stream_meta(r.s, "host", NULL), "127.0.0.1");
    CHECK(ms_stream_meta(r.s, "port", NULL) != NULL);
    CHECK_HAS(ms_stream_address(r.s), "~tag:alice");
    const char *k = NULL;
    size_t kl = 0;
    const void *id = ms_stream_remote_id(r.s, &k, &kl);
    CHECK_STR(k, "tag-name");
    CHECK(id && kl == 6 && memcmp(id, "server", 6) == 0);
    CHECK(!ms_stream_is_server(r.s));
  }
  CHECK_INT(e.frees, 0);
  /* bob is answered from a timer */
  snprintf(addr, sizeof addr, "%s:bob", ms_listener_address(l));
  tu_conn_t r2;
  CHECK_INT(connect_with(e.cli, addr, NULL, &r2), 0);
  WAIT(&e.loop, r2.done, 1, "tag connect bob");
  CHECK_INT(r2.status, 0);
  WAIT(&e.loop, e.accepted, 2, "tag accept bob");
  CHECK(!e.conn_in_done);
  CHECK(e.auth != NULL && strcmp(((auth_val_t *)e.auth)->what, "bob") == 0);
  CHECK_INT(e.frees, 0);
  ms_stream_t *v[2] = {r.s, r2.s};
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  WAIT(&e.loop, e.echo.closed, 2, "echo closed");
  CHECK_INT(e.frees, 2); /* each value once, after its stream closed */
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
  CHECK_INT(e.frees, 2);
}

static void test_tag_shs(void) {
  env_t e;
  env_init(&e);
  ms_listener_t *l = listen_with(&e, "udpt:127.0.0.1:0~tag~shs", NULL, srv_echo);
  if (l == NULL) return;
  /* the listener advertises "udpt:127.0.0.1:P~tag~shs:KEY": name the client */
  const char *la = ms_listener_address(l);
  const char *sh = strstr(la, "~shs:");
  CHECK(sh != NULL);
  if (sh == NULL) return;
  char addr[256];
  snprintf(addr, sizeof addr, "%.*s:alice%s", (int)(sh - la), la, sh);
  tu_conn_t r;
  CHECK_INT(connect_with(e.cli, addr, NULL, &r), 0);
  WAIT(&e.loop, r.done, 1, "tag~shs connect");
  CHECK_INT(r.status, 0);
  if (r.status) fprintf(stderr, "  %s\n", r.reason);
  WAIT(&e.loop, e.accepted, 1, "tag~shs accept");
  CHECK_INT(e.shs_auth_calls, 1);
  CHECK_INT(e.auth_calls, 2); /* tag asked about the name, shs about the key */
  CHECK_HAS(e.meta, "udpt.cid=");
  CHECK_HAS(e.meta, "tag.name=alice;");
  CHECK_STR(e.rid_kind, "ed25519"); /* shs's identity above tag's */
  CHECK(e.rid_len == 32 && memcmp(e.rid, ms_keys(e.cli)->public_key, 32) == 0);
  CHECK(e.acc && ms_stream_remote_key(e.acc) != NULL);
  CHECK(e.auth != NULL && strcmp(((auth_val_t *)e.auth)->what, "shs") == 0);
  /* the name's value belongs to the tag stream, which is still open */
  CHECK_INT(e.frees, 0);
  if (r.s) CHECK(ms_stream_remote_key(r.s) &&
                 memcmp(ms_stream_remote_key(r.s), ms_keys(e.srv)->public_key, 32) == 0);
  /* data through udpt~tag~shs */
  tu_bulk_t b;
  const tu_bulk_cfg_t cfg = {.data = bulk_data, .total = 256 * 1024, .timeout_ms = 60000,
                             .close_timeout_ms = WAIT_MS};
  tu_bulk_echo(&e.loop, e.cli, addr, &cfg, &e.echo, &b);
  ms_stream_t *v[1] = {r.s};
  tu_close_streams(&e.loop, v, 1, WAIT_MS);
  WAIT(&e.loop, e.echo.closed, 2, "echo closed");
  CHECK_INT(e.frees, 4); /* two connections, two values each, once each */
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
  CHECK_INT(e.frees, 4);
}

/* ---- refusal stops, a path failure falls back ---- */

static void test_auth_fallback(void) {
  env_t e;
  env_init(&e);
  tu_lerr_t le = {0};
  ms_listener_t *l = listen_with(&e, "udpt:127.0.0.1:0~tag", NULL, srv_echo);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  const char *la = ms_listener_address(l);
  char addr[512];
  snprintf(addr, sizeof addr, "%s:mallory;%s:alice", la, la);
  tu_conn_t r;
  CHECK_INT(connect_with(e.cli, addr, NULL, &r), 0);
  WAIT(&e.loop, r.done, 1, "refused connect");
  CHECK_INT(r.status, MS_EUNAUTHORIZED); /* not MS_EALLFAILED: it stopped */
  CHECK_HAS(r.reason, "refused");
  CHECK(r.s == NULL);
  CHECK_INT(e.auth_calls, 1);
  CHECK_STR(e.last_name, "mallory");
  WAIT(&e.loop, le.count, 1, "listener error");
  CHECK_INT(le.last_status, MS_EUNAUTHORIZED);
  CHECK_INT(e.accepted, 0);
  /* a closed port first: a path failure, so the next alternative is tried */
  int closed = tu_closed_port();
  snprintf(addr, sizeof addr, "udpt:127.0.0.1:%d~tag:alice;%s:alice", closed, la);
  /* strictly in order (no stagger): the first must time out before the second */
  const char *copts[] = {"udpt.rto_ms=20", "udpt.timeout_ms=250", "connect.stagger_ms=0", NULL};
  int t0 = us.dial_timeouts;
  uint64_t ms0 = tu_now_ms();
  CHECK_INT(connect_with(e.cli, addr, copts, &r), 0);
  WAIT(&e.loop, r.done, 1, "fallback connect");
  CHECK_INT(r.status, 0);
  CHECK_INT(us.dial_timeouts - t0, 1); /* nobody answered on the closed port */
  CHECK(tu_now_ms() - ms0 >= 240);
  WAIT(&e.loop, e.accepted, 1, "fallback accept");
  CHECK_STR(e.last_name, "alice");
  ms_stream_t *v[1] = {r.s};
  tu_close_streams(&e.loop, v, 1, WAIT_MS);
  WAIT(&e.loop, e.echo.closed, 1, "echo closed");
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
  CHECK_INT(e.frees, 1);
}

/* ---- H2: an answer after the handshake timed out ---- */

static void test_late_answer(void) {
  env_t e;
  env_init(&e);
  tu_lerr_t le = {0};
  const char *opts[] = {"tag.timeout_ms=100", NULL};
  ms_listener_t *l = listen_with(&e, "udpt:127.0.0.1:0~tag", opts, srv_echo);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  char addr[256];
  snprintf(addr, sizeof addr, "%s:slow", ms_listener_address(l));
  tu_conn_t r;
  CHECK_INT(connect_with(e.cli, addr, NULL, &r), 0);
  WAIT(&e.loop, r.done, 1, "slow connect");
  CHECK(r.status != 0);
  WAIT(&e.loop, le.count, 1, "server timeout");
  CHECK_INT(le.last_status, MS_ETIMEDOUT);
  CHECK_INT(e.frees, 0);
  WAIT(&e.loop, e.late_answers, 1, "late answer");
  CHECK_INT(e.frees, 1); /* the late value, freed once */
  CHECK_INT(e.accepted, 0);
  tu_close_listener(&e.loop, l, WAIT_MS);

  /* shs's own authorization, answered after shs.handshake_timeout_ms */
  e.shs_late_ms = 500;
  const char *opts2[] = {"shs.handshake_timeout_ms=200", NULL};
  le.count = 0;
  l = listen_with(&e, "udpt:127.0.0.1:0~tag~shs", opts2, srv_echo);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  const char *la = ms_listener_address(l);
  const char *sh = strstr(la, "~shs:");
  snprintf(addr, sizeof addr, "%.*s:alice%s", (int)(sh - la), la, sh);
  CHECK_INT(connect_with(e.cli, addr, NULL, &r), 0);
  WAIT(&e.loop, le.count, 1, "shs timeout");
  CHECK_INT(le.last_status, MS_ETIMEDOUT);
  WAIT(&e.loop, r.done, 1, "shs slow connect");
  CHECK(r.status != 0);
  WAIT(&e.loop, e.frees, 2, "alice's value freed with the tag stream");
  WAIT(&e.loop, e.late_answers, 2, "late shs answer");
  CHECK_INT(e.frees, 3); /* and the late one, once */
  CHECK_INT(e.accepted, 0);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
  CHECK_INT(e.frees, 3);
}

/* ms_close while the application still holds an authorize request whose
 * handshake timed out: its answer must find the multiserver alive. */
static void pa_closed(ms_t *ms, void *arg) {
  (void)ms;
  env_t *e = arg;
  e->closed_cbs++;
  e->late_at_close = e->late_answers;
}

static void test_close_pending_auth(void) {
  env_t e;
  env_init(&e);
  tu_lerr_t le = {0};
  const char *opts[] = {"tag.timeout_ms=100", NULL};
  ms_listener_t *l = listen_with(&e, "udpt:127.0.0.1:0~tag", opts, srv_echo);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  char addr[256];
  snprintf(addr, sizeof addr, "%s:slow", ms_listener_address(l));
  tu_conn_t r;
  CHECK_INT(connect_with(e.cli, addr, NULL, &r), 0);
  WAIT(&e.loop, le.count, 1, "server timeout");
  WAIT(&e.loop, r.done, 1, "slow connect");
  tu_close_listener(&e.loop, l, WAIT_MS);
  CHECK_INT(e.late_answers, 0); /* the application still holds the request */
  CHECK_INT(ms_close(e.srv, pa_closed, &e), 0);
  CHECK_INT(ms_close(e.cli, pa_closed, &e), 0);
  WAIT(&e.loop, e.closed_cbs, 2, "both closed");
  CHECK_INT(e.late_at_close, 1); /* ms_close waited for the answer */
  CHECK_INT(ms_delete(e.srv), 0);
  CHECK_INT(ms_delete(e.cli), 0);
  WAIT(&e.loop, e.late_answers, 1, "late answer");
  CHECK_INT(e.frees, 1);
  CHECK(tu_drain(&e.loop, 10000));
  CHECK_INT(uv_loop_close(&e.loop), 0);
  CHECK_INT(us.conns, 0);
  CHECK_INT(ts.live, 0);
}

/* ---- per-stack options ---- */

static void test_options(void) {
  env_t e;
  env_init(&e);
  ms_popts_t *o;
  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_parse(o, "tag.greting=x"), 0);
  ms_listener_t *l = NULL;
  char reason[512] = "";
  CHECK_INT(ms_listen_with(e.srv, "udpt:127.0.0.1:0~tag", o, srv_echo, &e, &l, reason,
                           sizeof reason),
            MS_EINVAL);
  CHECK(l == NULL);
  CHECK_HAS(reason, "greting");
  CHECK_HAS(reason, "greeting");
  CHECK_HAS(reason, "timeout_ms");
  ms_popts_free(o);
  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_parse(o, "udpt.rto=5"), 0);
  CHECK_INT(ms_listen_with(e.srv, "udpt:127.0.0.1:0", o, srv_echo, &e, &l, reason,
                           sizeof reason),
            MS_EINVAL);
  CHECK_HAS(reason, "rto_ms");
  CHECK_HAS(reason, "drop_every");
  ms_popts_free(o);
  /* options for protocols the address does not use are ignored */
  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_parse(o, "shs.handshake_timeout_ms=5"), 0);
  CHECK_INT(ms_popts_parse(o, "nosuch.key=1"), 0);
  CHECK_INT(ms_popts_parse(o, "tag.greeting=ok"), 0);
  CHECK_INT(ms_listen_with(e.srv, "udpt:127.0.0.1:0~tag", o, srv_echo, &e, &l, reason,
                           sizeof reason),
            0);
  ms_popts_free(o);
  /* a misspelt connect option is reported through the callback */
  CHECK_INT(ms_popts_new(&o), 0);
  CHECK_INT(ms_popts_parse(o, "tag.greting=x"), 0);
  tu_conn_t r = {0};
  CHECK_INT(ms_connect_with(e.cli, ms_listener_address(l), o, tu_on_conn, &r, NULL), 0);
  ms_popts_free(o);
  WAIT(&e.loop, r.done, 1, "bad option connect");
  CHECK(r.status == MS_EINVAL || r.status == MS_EALLFAILED);
  CHECK_HAS(r.reason, "greeting");
  if (l) tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ---- push-back, the flush and read_start ---- */

typedef struct {
  env_t *e;
  ms_stream_t *s;
  int phase;
  uint8_t *want;
  size_t want_len, got;
  bool bad, in_start, fired_in_start;
  int eof, closed, writes_done, order_bad, writes_in_call;
  bool in_write;
  uv_timer_t t;
  int lw0, uw0;
} pb_t;

#define PB_FIRST "WELCOME-0123456789"
#define PB_MORE (40 * 1024)

static void pb_srv_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((pb_t *)arg)->closed++;
}
static void pb_srv_shut(ms_stream_t *s, int status, void *arg) {
  CHECK_INT(status, 0);
  ms_stream_close(s, pb_srv_closed, arg);
}
static void pb_srv_more(uv_timer_t *t) {
  pb_t *p = t->data;
  ms_buf_t b = {p->want + strlen(PB_FIRST), PB_MORE};
  CHECK_INT(ms_stream_write(p->s, &b, 1, NULL, NULL), 0);
  CHECK_INT(ms_stream_shutdown(p->s, pb_srv_shut, p), 0);
  uv_close((uv_handle_t *)t, NULL);
}
static void pb_srv_conn(ms_stream_t *s, void *arg) {
  pb_t *p = arg;
  srv_record(p->e, s);
  p->s = s;
  /* This turn: coalesced with tag's verdict into one lower write, so the
   * client reads the verdict and these bytes at once. */
  ms_buf_t b = {PB_FIRST, strlen(PB_FIRST)};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  uv_timer_init(&p->e->loop, &p->t);
  p->t.data = p;
  uv_timer_start(&p->t, pb_srv_more, 10, 0);
}

typedef struct {
  pb_t *p;
  uv_timer_t t;
  tu_conn_t r;
  int reads;
} pb_cli_t;

static void pb_cli_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((pb_t *)arg)->closed++;
}
static void pb_cli_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                        void *arg) {
  pb_cli_t *c = arg;
  pb_t *p = c->p;
  if (p->in_start) p->fired_in_start = true;
  c->reads++;
  if (status == 0) {
    if (p->got + len > p->want_len || memcmp(data, p->want + p->got, len) != 0) p->bad = true;
    p->got += len;
    if (c->reads == 2) {
      /* stop/start toggles inside the callback: still never inside */
      ms_stream_read_stop(s);
      p->in_start = true;
      ms_stream_read_start(s, pb_cli_read, c);
      ms_stream_read_stop(s);
      ms_stream_read_start(s, pb_cli_read, c);
      p->in_start = false;
    }
    return;
  }
  if (status == MS_EOF) p->eof++;
  ms_stream_close(s, pb_cli_closed, p);
}
static void pb_cli_go(uv_timer_t *t) {
  pb_cli_t *c = t->data;
  pb_t *p = c->p;
  ms_stream_t *s = c->r.s;
  p->in_start = true;
  CHECK_INT(ms_stream_read_start(s, pb_cli_read, c), 0);
  CHECK_INT(ms_stream_read_stop(s), 0);
  CHECK_INT(ms_stream_read_start(s, pb_cli_read, c), 0);
  p->in_start = false;
  uv_close((uv_handle_t *)t, NULL);
}

static void pb_written(ms_stream_t *s, int status, void *arg) {
  pb_t *p = ms_stream_data(s);
  CHECK_INT(status, 0);
  if (p->in_write) p->writes_in_call++;
  if ((intptr_t)arg != p->writes_done) p->order_bad++;
  p->writes_done++;
}

static uint8_t fl_got[600];
static size_t fl_got_len;
static void fl_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                    void *arg) {
  (void)s;
  (void)arg;
  if (status != 0) return;
  size_t n = len < sizeof fl_got - fl_got_len ? len : sizeof fl_got - fl_got_len;
  memcpy(fl_got + fl_got_len, data, n);
  fl_got_len += n;
}

static void test_pushback_flush(void) {
  env_t e;
  env_init(&e);
  pb_t p = {.e = &e};
  p.want_len = strlen(PB_FIRST) + PB_MORE;
  p.want = malloc(p.want_len);
  memcpy(p.want, PB_FIRST, strlen(PB_FIRST));
  memcpy(p.want + strlen(PB_FIRST), bulk_data, PB_MORE);
  ms_listener_t *l = NULL;
  char reason[256];
  CHECK_INT(ms_listen(e.srv, "udpt:127.0.0.1:0~tag", pb_srv_conn, &p, &l, reason,
                      sizeof reason),
            0);
  if (l == NULL) return;
  char addr[256];
  snprintf(addr, sizeof addr, "%s:alice", ms_listener_address(l));
  pb_cli_t c = {.p = &p};
  int pb0 = ts.pushed_back;
  CHECK_INT(connect_with(e.cli, addr, NULL, &c.r), 0);
  WAIT(&e.loop, c.r.done, 1, "push-back connect");
  CHECK_INT(c.r.status, 0);
  if (c.r.s == NULL) return;
  CHECK(ts.pushed_back - pb0 >= (int)strlen(PB_FIRST)); /* read with the verdict */
  /* Start reading only once the rest sits buffered in the transport. */
  uv_timer_init(&e.loop, &c.t);
  c.t.data = &c;
  uv_timer_start(&c.t, pb_cli_go, 150, 0);
  WAIT(&e.loop, p.closed, 2, "push-back streams closed");
  CHECK_INT(p.got, p.want_len);
  CHECK(!p.bad);
  CHECK_INT(p.eof, 1);
  CHECK(!p.fired_in_start);
  CHECK(c.reads >= 2);

  /* The flush: 100 small writes in one turn are one lower write. */
  tu_conn_t r;
  snprintf(addr, sizeof addr, "%s:bob", ms_listener_address(l));
  CHECK_INT(ms_listener_address(l) != NULL, 1);
  tu_close_listener(&e.loop, l, WAIT_MS);
  l = listen_with(&e, "udpt:127.0.0.1:0~tag", NULL, srv_echo);
  if (l == NULL) return;
  snprintf(addr, sizeof addr, "%s:alice", ms_listener_address(l));
  CHECK_INT(connect_with(e.cli, addr, NULL, &r), 0);
  WAIT(&e.loop, r.done, 1, "flush connect");
  CHECK_INT(r.status, 0);
  if (r.s == NULL) return;
  ms_stream_set_data(r.s, &p);
  p.writes_done = 0;
  tag_t *tg = ms_stream_impl(r.s); /* our own plugin's stream */
  int lw0 = tg->lower_writes, uw0 = tg->upper_writes;
  static char small[100][16];
  p.in_write = true;
  for (int i = 0; i < 100; i++) {
    snprintf(small[i], sizeof small[i], "w%03d;", i);
    ms_buf_t b = {small[i], 5};
    CHECK_INT(ms_stream_write(r.s, &b, 1, pb_written, (void *)(intptr_t)i), 0);
  }
  p.in_write = false;
  CHECK_INT(tg->upper_writes - uw0, 100);
  CHECK_INT(tg->lower_writes - lw0, 0); /* corked until the end of the turn */
  WAIT(&e.loop, p.writes_done, 100, "100 writes");
  CHECK_INT(tg->lower_writes - lw0, 1);
  CHECK_INT(p.order_bad, 0);
  CHECK_INT(p.writes_in_call, 0);
  /* the echo comes back whole and in order */
  fl_got_len = 0;
  CHECK_INT(ms_stream_read_start(r.s, fl_read, NULL), 0);
  int want = 500;
  uint64_t t1 = tu_now_ms();
  while (fl_got_len < (size_t)want && tu_now_ms() - t1 < WAIT_MS) tu_sleep_loop(&e.loop, 5);
  CHECK_INT(fl_got_len, want);
  for (int i = 0; i < 100 && fl_got_len == (size_t)want; i++)
    CHECK_MEM(fl_got + 5 * i, small[i], 5);
  tu_close_streams(&e.loop, &r.s, 1, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  free(p.want);
  env_done(&e);
}

/* ---- ms_close from inside a callback ---- */

typedef struct {
  env_t *e;
  int srv_closed_cb, cli_closed_cb, streams_closed, got;
  bool bad_ms;
  ms_listener_t *l;
} mc_t;

static void mc_ms_closed(ms_t *ms, void *arg) {
  mc_t *m = arg;
  if (ms == m->e->srv) m->srv_closed_cb++;
  else if (ms == m->e->cli) m->cli_closed_cb++;
  else m->bad_ms = true;
}
static void mc_cli_closed(ms_stream_t *s, void *arg) {
  mc_t *m = arg;
  m->streams_closed++;
  /* the client's last stream: close the whole multiserver from in here */
  CHECK_INT(ms_close(ms_stream_ms(s), mc_ms_closed, m), 0);
  CHECK_INT(ms_close(ms_stream_ms(s), mc_ms_closed, m), MS_EINVAL);
  CHECK_INT(m->cli_closed_cb, 0);
}
static void mc_cli_read(ms_stream_t *s, int status, const uint8_t *d, size_t len, void *arg) {
  (void)d;
  mc_t *m = arg;
  if (status == 0) {
    m->got += (int)len;
    return;
  }
  ms_stream_close(s, mc_cli_closed, m);
}
static void mc_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  (void)reason;
  mc_t *m = arg;
  CHECK_INT(status, 0);
  if (s == NULL) return;
  ms_buf_t b = {"ping", 4};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  CHECK_INT(ms_stream_shutdown(s, NULL, NULL), 0);
  ms_stream_read_start(s, mc_cli_read, m);
}
static void mc_listener_closed(ms_listener_t *l, void *arg) {
  (void)l;
  mc_t *m = arg;
  /* from the listener's close callback, with an echo stream still open */
  CHECK_INT(ms_close(m->e->srv, mc_ms_closed, m), 0);
}
static void mc_srv_conn(ms_stream_t *s, void *arg) {
  mc_t *m = arg;
  tu_echo_on_connection(s, &m->e->echo);
  ms_listener_close(m->l, mc_listener_closed, m);
}

static void test_close_inside(void) {
  env_t e;
  env_init(&e);
  mc_t m = {.e = &e};
  char reason[256];
  CHECK_INT(ms_listen(e.srv, "udpt:127.0.0.1:0~tag", mc_srv_conn, &m, &m.l, reason,
                      sizeof reason),
            0);
  if (m.l == NULL) return;
  char addr[256];
  snprintf(addr, sizeof addr, "%s:alice", ms_listener_address(m.l));
  CHECK_INT(ms_connect(e.cli, addr, mc_connected, &m, NULL), 0);
  int d0 = us.destroys, c0 = us.sock_closed;
  WAIT(&e.loop, m.cli_closed_cb, 1, "client ms closed");
  WAIT(&e.loop, m.srv_closed_cb, 1, "server ms closed");
  CHECK_INT(m.got, 4);
  CHECK(!m.bad_ms);
  CHECK_INT(us.destroys - d0, 2);
  CHECK_INT(us.sock_closed - c0, 2);
  CHECK_INT(ms_live(e.srv), 0);
  CHECK_INT(ms_live(e.cli), 0);
  CHECK_INT(ms_delete(e.srv), 0);
  CHECK_INT(ms_delete(e.cli), 0);
  CHECK(tu_drain(&e.loop, 10000));
  CHECK_INT(uv_loop_close(&e.loop), 0);
  CHECK_INT(e.frees, 1);
  CHECK_INT(ts.live, 0);
  CHECK_INT(us.conns, 0);
}

/* ---- deferred calls: one turn runs only what was queued before it ---- */

typedef struct {
  ms_t *ms;
  ms_defer_t a, b, c;
  int a_runs, b_runs, c_runs;
} dq_t;

static void dq_c(void *arg) {
  dq_t *q = arg;
  if (++q->c_runs < 1000) ms_defer(q->ms, &q->c, dq_c, q); /* polls each turn */
}
static void dq_b(void *arg) { ((dq_t *)arg)->b_runs++; }
static void dq_a(void *arg) {
  dq_t *q = arg;
  q->a_runs++;
  ms_defer_cancel(q->ms, &q->b); /* the turn's last node goes away */
  ms_defer(q->ms, &q->c, dq_c, q);
}

static void test_defer_turn(void) {
  dq_t q;
  memset(&q, 0, sizeof q);
  CHECK_INT(ms_new(&q.ms, NULL), 0);
  ms_defer(q.ms, &q.a, dq_a, &q);
  ms_defer(q.ms, &q.b, dq_b, &q);
  ms_run(q.ms, MS_RUN_NOWAIT);
  CHECK_INT(q.a_runs, 1);
  CHECK_INT(q.b_runs, 0);
  CHECK(q.c_runs <= 1); /* queued in this turn: runs on a later one */
  ms_run(q.ms, MS_RUN_NOWAIT);
  CHECK(q.c_runs >= 1 && q.c_runs <= 2);
  ms_run(q.ms, MS_RUN_DEFAULT);
  CHECK_INT(q.c_runs, 1000);
  CHECK_INT(ms_delete(q.ms), 0);
}

/* ---- ABI and a client-only transport ---- */

static int old_inits, old_dials, old_validates;
static int old_init(ms_t *ms, void *pdata, void **inst) {
  (void)ms;
  (void)pdata;
  (void)inst;
  old_inits++;
  return 0;
}
static int old_validate(const ms_section_t *sec, int role, void *pdata, char *reason,
                        size_t reason_len) {
  (void)sec;
  (void)role;
  (void)reason;
  (void)reason_len;
  old_validates++;
  return pdata == (void *)&old_dials ? 0 : MS_EINVAL;
}
static int old_dial(ms_pdial_t *pd, const ms_section_t *sec, void *pdata) {
  (void)sec;
  (void)pdata;
  old_dials++;
  ms_pdial_done(pd, UV_ECONNREFUSED, NULL, "old: nobody home");
  return 0;
}

static void test_abi(void) {
  CHECK_INT(ms_version(), MS_VERSION_HEX);
  CHECK_STR(ms_version_string(), "0.2.0");
  ms_t *ms;
  CHECK_INT(ms_new(&ms, NULL), 0);
  struct {
    ms_protocol_t p;
    uint8_t pad[8];
  } big;
  memset(&big, 0, sizeof big);
  big.p = udpt_proto;
  big.p.name = "udpt-big";
  big.p.size = sizeof(ms_protocol_t) + 8;
  int i0 = us.inits;
  CHECK_INT(ms_register(ms, &big.p, NULL), MS_EINVAL);
  CHECK_INT(us.inits, i0);
  /* size 0: the first layout; the hooks from init on are not read */
  ms_protocol_t old = {.size = 0,
                       .name = "old",
                       .kind = MS_PROTO_TRANSPORT,
                       .validate = old_validate,
                       .dial = old_dial,
                       .init = old_init};
  CHECK_INT(ms_register(ms, &old, &old_dials), 0);
  CHECK_INT(old_inits, 0);
  tu_conn_t r;
  CHECK_INT(tu_connect(ms, "old:x", &r, NULL), 0);
  uint64_t t0 = tu_now_ms();
  while (!r.done && tu_now_ms() - t0 < WAIT_MS) ms_run(ms, MS_RUN_ONCE);
  CHECK_INT(r.done, 1);
  CHECK_INT(r.status, UV_ECONNREFUSED);
  CHECK_HAS(r.reason, "nobody home");
  CHECK_INT(old_dials, 1);
  CHECK(old_validates >= 1);
  /* a client-only transport cannot listen */
  ms_listener_t *l = NULL;
  char reason[256] = "";
  CHECK_INT(ms_listen(ms, "old:x", srv_echo, NULL, &l, reason, sizeof reason), MS_ESTACK);
  CHECK_HAS(reason, "client-only");
  CHECK(l == NULL);
  /* an ops struct larger than the library knows is refused */
  struct {
    ms_stream_ops_t o;
    uint8_t pad[8];
  } bigops;
  memset(&bigops, 0, sizeof bigops);
  bigops.o = udpt_ops;
  bigops.o.size = sizeof(ms_stream_ops_t) + 8;
  CHECK(ms_stream_new(ms, &bigops.o, NULL, "x") == NULL);
  ms_run(ms, MS_RUN_DEFAULT);
  CHECK_INT(ms_delete(ms), 0);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"abi", test_abi},
      {"defer_turn", test_defer_turn},
      {"echo_drops", test_echo_drops},
      {"concurrent", test_concurrent},
      {"half_close", test_half_close},
      {"tag_meta", test_tag_meta},
      {"tag_shs", test_tag_shs},
      {"auth_fallback", test_auth_fallback},
      {"late_answer", test_late_answer},
      {"close_pending_auth", test_close_pending_auth},
      {"options", test_options},
      {"pushback_flush", test_pushback_flush},
      {"close_inside", test_close_inside},
  };
  if (sodium_init() < 0) return 1;
  bulk_data = malloc(BULK);
  randombytes_buf(bulk_data, BULK);
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  free(bulk_data);
  return mst_done("seam");
}
