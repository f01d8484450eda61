/* User protocols through the public plugin interface only (multiserver.h,
 * multiserver_plugin.h, multiserver_uv.h — no library-private header):
 *
 *   mem:NAME   an in-process transport: a duplex in-memory pipe with
 *              asynchronous delivery, read_stop backpressure, half-close and
 *              close semantics like a socket;
 *   xor:HEX    a transform that XORs every byte in both directions.
 *
 * Both are registered with ms_register and run by the real library: listen,
 * connect with fallback, chains with the built-in shs and net, cancel,
 * half-close. Every wait is bounded, and every case ends with ms_delete()
 * == 0 and no live mem pipe end, dial or listen entry. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "multiserver.h"
#include "multiserver_plugin.h"
#include "multiserver_uv.h"

#include "mstest.h"
#include "util.h"

#define WAIT_MS 10000

#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

static void set_reason(char *reason, size_t len, const char *fmt, const char *arg) {
  if (reason && len) snprintf(reason, len, fmt, arg);
}

/* ======================================================================== */
/* The "mem" transport                                                      */
/* ======================================================================== */

#define MEM_INLINE 160                /* writes up to this size: no malloc */
#define MEM_EMIT_MAX (64 * 1024)      /* largest single read callback */
#define MEM_PUMP_BUDGET (256 * 1024)  /* bytes per pump turn, then yield */
#define MEM_TAP 4096

typedef struct mem_listen_s mem_listen_t;

/* The shared "network" (the protocol's pdata): one table of listening names
 * for every multiserver it is registered with, all on one loop. It also
 * records what clients put on the wire, for the tests. */
typedef struct {
  uv_loop_t *loop;
  mem_listen_t *listeners;
  unsigned dial_delay_ms;
  bool sync_dial; /* finish dials inside dial() */
  int ends;     /* live pipe ends */
  int dials;    /* dials whose timer is not closed yet */
  int nlisten;  /* names in the table */
  size_t c2s_bytes, s2c_bytes;
  uint8_t tap[MEM_TAP]; /* the first bytes clients wrote */
  size_t tap_len;
  int inline_writes, heap_writes;
} mem_net_t;

struct mem_listen_s {
  mem_listen_t *next;
  mem_net_t *net;
  ms_plisten_t *pl;
  size_t nlen;
  char name[];
};

/* One write request in flight: kept in the request's own scratch space. */
typedef struct mem_chunk_s mem_chunk_t;
struct mem_chunk_s {
  mem_chunk_t *next;
  ms_write_req_t *req;
  uint8_t *data; /* small[] or a heap copy */
  size_t len, off;
  int status;
  bool heap;
  uint8_t small[MEM_INLINE];
};
_Static_assert(sizeof(mem_chunk_t) <= MS_WRITE_REQ_SCRATCH,
               "a mem chunk fits the write request scratch");

typedef struct {
  mem_chunk_t *head, *tail;
} mem_q_t;

static void q_push(mem_q_t *q, mem_chunk_t *c) {
  c->next = NULL;
  if (q->tail)
    q->tail->next = c;
  else
    q->head = c;
  q->tail = c;
}

static mem_chunk_t *q_pop(mem_q_t *q) {
  mem_chunk_t *c = q->head;
  if (c) {
    q->head = c->next;
    if (q->head == NULL) q->tail = NULL;
  }
  return c;
}

/* Move every chunk; those not (completely) delivered get `status`, those
 * the reader already took (the one being emitted) complete with 0. */
static void q_move(mem_q_t *to, mem_q_t *from, int status) {
  mem_chunk_t *c;
  while ((c = q_pop(from)) != NULL) {
    c->status = c->len && c->off == c->len ? 0 : status;
    q_push(to, c);
  }
}

static bool q_unread(const mem_q_t *q) {
  for (const mem_chunk_t *c = q->head; c; c = c->next)
    if (c->off < c->len) return true;
  return false;
}

typedef struct mem_end_s mem_end_t;
struct mem_end_s {
  mem_net_t *net;
  ms_stream_t *s;
  mem_end_t *peer; /* NULL once either end closed */
  bool client;
  mem_q_t in;      /* the peer's writes, waiting for our reader */
  mem_q_t done;    /* our own writes, to complete with c->status */
  int end_status;  /* MS_EOF or an error, delivered after the data in `in` */
  bool end_sent;
  bool shut_pending;
  int shut_status;
  bool reset;      /* the peer closed with our data unread */
  bool closing;
  uv_idle_t pump;  /* active only while there is something to do */
};

static bool mem_has_work(const mem_end_t *e) {
  if (e->closing) return false;
  if (e->done.head || e->shut_pending) return true;
  if (e->in.head && e->in.head->off == e->in.head->len) return true;
  if (!ms_stream_is_reading(e->s)) return false;
  return e->in.head != NULL || (e->end_status != 0 && !e->end_sent);
}

static void mem_pump_cb(uv_idle_t *h);

static void mem_kick(mem_end_t *e) {
  if (mem_has_work(e)) uv_idle_start(&e->pump, mem_pump_cb);
}

static void chunk_release(mem_chunk_t *c) {
  if (c->heap) free(c->data);
  c->heap = false;
  c->data = NULL;
}

/* Runs on the loop, never inside a caller's ms_stream_* call. Every user
 * callback may close either end or start/stop reading: nothing is held
 * across one (re-read the queue head, re-check closing/reading). */
static void mem_pump(mem_end_t *e) {
  size_t budget = MEM_PUMP_BUDGET;
  mem_chunk_t *c;
  while (!e->closing && (c = q_pop(&e->done)) != NULL) {
    ms_write_req_t *req = c->req;
    int status = c->status;
    chunk_release(c);
    ms_write_req_done(req, status); /* c (scratch) is gone now */
  }
  if (!e->closing && e->shut_pending) {
    e->shut_pending = false;
    ms_stream_shutdown_done(e->s, e->shut_status);
  }
  while (!e->closing) {
    c = e->in.head;
    if (c && c->off == c->len) {
      /* Fully delivered: now the writer's request completes — even if the
       * reader stopped inside the callback that took the last bytes. */
      q_pop(&e->in);
      ms_write_req_t *req = c->req;
      chunk_release(c);
      ms_write_req_done(req, 0);
      continue;
    }
    if (!ms_stream_is_reading(e->s) || budget == 0) break;
    if (c == NULL) {
      if (e->end_status != 0 && !e->end_sent) {
        e->end_sent = true;
        ms_stream_emit_read(e->s, e->end_status, NULL, 0);
      }
      break;
    }
    size_t n = c->len - c->off;
    if (n > MEM_EMIT_MAX) n = MEM_EMIT_MAX;
    if (n > budget) n = budget;
    uint8_t *p = c->data + c->off;
    c->off += n; /* first: the callback may cancel c (writer closes) */
    budget -= n;
    /* Our own copy, so writable as the emit contract requires; a transform
     * above may transform it in place. */
    ms_stream_emit_read(e->s, 0, p, n);
  }
  if (e->closing) return;
  if (!mem_has_work(e)) uv_idle_stop(&e->pump);
}

static void mem_pump_cb(uv_idle_t *h) { mem_pump(h->data); }

static int mem_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                     unsigned nbufs) {
  mem_end_t *w = ms_stream_impl(s);
  mem_chunk_t *c = ms_write_req_scratch(req);
  memset(c, 0, offsetof(mem_chunk_t, small));
  c->req = req;
  c->len = ms_write_req_size(req);
  if (w->peer == NULL) {
    /* The peer is gone: fail like a socket would. Completing inside
     * write() is allowed; the base reports it later. */
    ms_write_req_done(req, UV_EPIPE);
    return 0;
  }
  if (c->len <= MEM_INLINE) {
    c->data = c->small;
    w->net->inline_writes++;
  } else {
    c->data = malloc(c->len);
    if (c->data == NULL) return MS_ENOMEM;
    c->heap = true;
    w->net->heap_writes++;
  }
  size_t off = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    if (bufs[i].len) memcpy(c->data + off, bufs[i].base, bufs[i].len);
    off += bufs[i].len;
  }
  mem_net_t *net = w->net;
  if (w->client) {
    net->c2s_bytes += c->len;
    size_t room = MEM_TAP - net->tap_len;
    size_t n = c->len < room ? c->len : room;
    memcpy(net->tap + net->tap_len, c->data, n);
    net->tap_len += n;
  } else {
    net->s2c_bytes += c->len;
  }
  q_push(&w->peer->in, c);
  mem_kick(w->peer);
  return 0;
}

static int mem_read_start(ms_stream_t *s) {
  mem_kick(ms_stream_impl(s));
  return 0;
}

static int mem_read_stop(ms_stream_t *s) {
  (void)s; /* the pump checks ms_stream_is_reading() before each delivery */
  return 0;
}

/* Called by the base once every earlier write completed, i.e. was
 * delivered: the peer's EOF can follow at once. Reported on our pump. */
static int mem_shutdown(ms_stream_t *s) {
  mem_end_t *e = ms_stream_impl(s);
  if (e->peer) {
    if (e->peer->end_status == 0) e->peer->end_status = MS_EOF;
    mem_kick(e->peer);
    e->shut_status = 0;
  } else {
    /* Like TCP: ending the write side after the peer closed cleanly is
     * fine; after it reset the connection it is not. */
    e->shut_status = e->reset ? UV_EPIPE : 0;
  }
  e->shut_pending = true;
  mem_kick(e);
  return 0;
}

static void mem_end_closed(uv_handle_t *h) {
  mem_end_t *e = h->data;
  mem_chunk_t *c;
  /* Our requests still owed: canceled at close (or failed earlier). */
  while ((c = q_pop(&e->done)) != NULL) {
    ms_write_req_t *req = c->req;
    int status = c->status;
    chunk_release(c);
    ms_write_req_done(req, status);
  }
  ms_stream_t *s = e->s;
  e->net->ends--;
  free(e);
  if (s) ms_stream_closed(s);
}

static void mem_close(ms_stream_t *s) {
  mem_end_t *e = ms_stream_impl(s);
  e->closing = true;
  mem_end_t *p = e->peer;
  if (p) {
    /* Our undelivered writes: canceled (completed from our close callback,
     * never from inside ms_stream_close). */
    q_move(&e->done, &p->in, MS_ECANCELED);
    /* The peer's writes we never read: like a socket closed with unread
     * data, the peer sees a reset; otherwise a clean EOF. */
    bool unread = q_unread(&e->in);
    q_move(&p->done, &e->in, UV_ECONNRESET);
    if (p->end_status == 0) p->end_status = unread ? UV_ECONNRESET : MS_EOF;
    p->reset = unread;
    p->peer = NULL;
    e->peer = NULL;
    mem_kick(p);
  }
  uv_close((uv_handle_t *)&e->pump, mem_end_closed);
}

static const ms_stream_ops_t mem_ops = {
    .write = mem_write,
    .read_start = mem_read_start,
    .read_stop = mem_read_stop,
    .shutdown = mem_shutdown,
    .close = mem_close,
};

static mem_end_t *mem_end_new(mem_net_t *net, bool client) {
  mem_end_t *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->net = net;
  e->client = client;
  uv_idle_init(net->loop, &e->pump);
  e->pump.data = e;
  net->ends++;
  return e;
}

/* An end whose stream was never created. */
static void mem_end_discard(mem_end_t *e) {
  if (e) uv_close((uv_handle_t *)&e->pump, mem_end_closed);
}

static mem_listen_t *mem_find(mem_net_t *net, const char *name, size_t nlen) {
  for (mem_listen_t *m = net->listeners; m; m = m->next)
    if (m->nlen == nlen && memcmp(m->name, name, nlen) == 0) return m;
  return NULL;
}

static int mem_validate(const ms_section_t *sec, int role, void *pdata,
                        char *reason, size_t reason_len) {
  (void)role;
  (void)pdata;
  if (sec->nfields != 1 || sec->field_lens[0] == 0) {
    set_reason(reason, reason_len, "%s: expected mem:NAME (one non-empty field)",
               sec->name);
    return MS_EADDRESS;
  }
  return 0;
}

static bool mem_is_device(const ms_section_t *sec, void *pdata) {
  (void)sec;
  (void)pdata;
  return true;
}

static int mem_listen(ms_plisten_t *pl, const ms_section_t *sec, void *pdata) {
  mem_net_t *net = pdata;
  if (ms_loop(ms_plisten_ms(pl)) != net->loop) {
    ms_plisten_error(pl, UV_EINVAL, "mem: the multiserver runs on another loop");
    return UV_EINVAL;
  }
  const char *name = sec->fields[0];
  size_t nlen = sec->field_lens[0];
  if (mem_find(net, name, nlen)) {
    char why[256];
    snprintf(why, sizeof why, "mem:%s: name already in use", name);
    ms_plisten_error(pl, UV_EADDRINUSE, why);
    return UV_EADDRINUSE;
  }
  /* The advertised section: the name escaped. */
  size_t elen = ms_addr_escape(name, nlen, NULL, 0);
  char *adv = malloc(elen + 5);
  mem_listen_t *m = malloc(sizeof *m + nlen + 1);
  if (adv == NULL || m == NULL) {
    free(adv);
    free(m);
    return MS_ENOMEM;
  }
  memcpy(adv, "mem:", 4);
  ms_addr_escape(name, nlen, adv + 4, elen + 1);
  int rc = ms_plisten_set_address(pl, adv);
  free(adv);
  if (rc != 0) {
    free(m);
    return rc;
  }
  m->net = net;
  m->pl = pl;
  m->nlen = nlen;
  memcpy(m->name, name, nlen);
  m->name[nlen] = '\0';
  m->next = net->listeners;
  net->listeners = m;
  net->nlisten++;
  ms_plisten_set_impl(pl, m);
  return 0;
}

static void mem_listen_close(ms_plisten_t *pl) {
  mem_listen_t *m = ms_plisten_impl(pl);
  mem_net_t *net = m->net;
  for (mem_listen_t **pp = &net->listeners; *pp; pp = &(*pp)->next)
    if (*pp == m) {
      *pp = m->next;
      break;
    }
  net->nlisten--;
  free(m);
  ms_plisten_closed(pl); /* "now or later": now */
}

typedef struct {
  mem_net_t *net;
  ms_pdial_t *pd; /* NULL once done */
  uv_timer_t timer;
  bool canceled;
  size_t nlen;
  char name[];
} mem_dial_t;

static void mem_dial_freed(uv_handle_t *h) {
  mem_dial_t *d = h->data;
  d->net->dials--;
  free(d);
}

static void mem_dial_fire(uv_timer_t *t) {
  mem_dial_t *d = t->data;
  ms_pdial_t *pd = d->pd;
  mem_net_t *net = d->net;
  d->pd = NULL;
  ms_pdial_set_impl(pd, NULL);
  uv_close((uv_handle_t *)&d->timer, mem_dial_freed);
  if (d->canceled) {
    ms_pdial_done(pd, MS_ECANCELED, NULL, "mem: canceled");
    return;
  }
  mem_listen_t *m = mem_find(net, d->name, d->nlen);
  if (m == NULL) {
    char why[256];
    snprintf(why, sizeof why, "mem:%s: nobody listens on that name", d->name);
    ms_pdial_done(pd, UV_ECONNREFUSED, NULL, why);
    return;
  }
  /* The address both ends report: the listener's advertised section. */
  char addr[512];
  size_t elen = ms_addr_escape(d->name, d->nlen, NULL, 0);
  if (elen + 5 > sizeof addr) {
    ms_pdial_done(pd, MS_ELIMIT, NULL, "mem: name too long");
    return;
  }
  memcpy(addr, "mem:", 4);
  ms_addr_escape(d->name, d->nlen, addr + 4, sizeof addr - 4);
  mem_end_t *ce = mem_end_new(net, true), *se = mem_end_new(net, false);
  ms_stream_t *cs = NULL, *ss = NULL;
  if (ce && se) {
    cs = ms_stream_new(ms_pdial_ms(pd), &mem_ops, ce, addr);
    ss = ms_stream_new(ms_plisten_ms(m->pl), &mem_ops, se, addr);
  }
  if (cs == NULL || ss == NULL) {
    /* A created stream is closed through its ops (which closes its end). */
    if (cs) {
      ce->s = cs;
      ms_stream_close(cs, NULL, NULL);
    } else {
      mem_end_discard(ce);
    }
    if (ss) {
      se->s = ss;
      ms_stream_close(ss, NULL, NULL);
    } else {
      mem_end_discard(se);
    }
    ms_pdial_done(pd, MS_ENOMEM, NULL, "mem: out of memory");
    return;
  }
  ce->s = cs;
  se->s = ss;
  ce->peer = se;
  se->peer = ce;
  ms_plisten_incoming(m->pl, ss);
  ms_pdial_done(pd, 0, cs, NULL);
}

static int mem_dial(ms_pdial_t *pd, const ms_section_t *sec, void *pdata) {
  mem_net_t *net = pdata;
  if (ms_loop(ms_pdial_ms(pd)) != net->loop) return UV_EINVAL;
  size_t nlen = sec->field_lens[0];
  mem_dial_t *d = calloc(1, sizeof *d + nlen + 1);
  if (d == NULL) return MS_ENOMEM;
  d->net = net;
  d->pd = pd;
  d->nlen = nlen;
  memcpy(d->name, sec->fields[0], nlen);
  int rc = uv_timer_init(net->loop, &d->timer);
  if (rc != 0) {
    free(d);
    return rc;
  }
  d->timer.data = d;
  net->dials++;
  ms_pdial_set_impl(pd, d);
  if (net->sync_dial) {
    mem_dial_fire(&d->timer); /* ms_pdial_done from inside dial() */
    return 0;
  }
  /* The name is looked up when the timer fires. */
  uv_timer_start(&d->timer, mem_dial_fire, net->dial_delay_ms, 0);
  return 0;
}

static void mem_dial_cancel(ms_pdial_t *pd) {
  mem_dial_t *d = ms_pdial_impl(pd);
  if (d == NULL || d->pd == NULL) return;
  d->canceled = true;
  uv_timer_start(&d->timer, mem_dial_fire, 0, 0); /* finish soon */
}

static const ms_protocol_t mem_proto = {
    .name = "mem",
    .kind = MS_PROTO_TRANSPORT,
    .validate = mem_validate,
    .is_device = mem_is_device,
    .listen = mem_listen,
    .listen_close = mem_listen_close,
    .dial = mem_dial,
    .dial_cancel = mem_dial_cancel,
};

/* ======================================================================== */
/* The "xor" transform                                                      */
/* ======================================================================== */

typedef struct {
  int wraps;
  int live;       /* xor streams not yet closed */
  int inline_writes, heap_writes;
  bool bare;      /* only what the plugin header requires: no carrying over */
} xor_stats_t;

typedef struct {
  xor_stats_t *st;
  ms_stream_t *lower, *upper;
  uint8_t key;
} xor_t;

/* Per-write state in the upper request's scratch. */
#define XOR_INLINE 200
typedef struct {
  uint8_t *heap;
  uint8_t small[XOR_INLINE];
} xor_w_t;
_Static_assert(sizeof(xor_w_t) <= MS_WRITE_REQ_SCRATCH, "xor state fits scratch");

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int xor_parse(const ms_section_t *sec, uint8_t *key) {
  if (sec->nfields != 1 || sec->field_lens[0] != 2) return MS_EADDRESS;
  int hi = hexval(sec->fields[0][0]), lo = hexval(sec->fields[0][1]);
  if (hi < 0 || lo < 0) return MS_EADDRESS;
  *key = (uint8_t)(hi << 4 | lo);
  return 0;
}

static int xor_validate(const ms_section_t *sec, int role, void *pdata,
                        char *reason, size_t reason_len) {
  (void)role;
  (void)pdata;
  uint8_t k;
  if (xor_parse(sec, &k) != 0) {
    set_reason(reason, reason_len, "%s: expected xor:HEXBYTE (two hex digits)",
               sec->name);
    return MS_EADDRESS;
  }
  return 0;
}

static void xor_lower_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  ms_write_req_t *req = arg;
  xor_w_t *w = ms_write_req_scratch(req);
  free(w->heap);
  w->heap = NULL;
  ms_write_req_done(req, status);
}

static int xor_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                     unsigned nbufs) {
  xor_t *x = ms_stream_impl(s);
  xor_w_t *w = ms_write_req_scratch(req);
  size_t n = ms_write_req_size(req);
  uint8_t *out = w->small;
  w->heap = NULL;
  if (n > sizeof w->small) {
    out = w->heap = malloc(n);
    if (out == NULL) return MS_ENOMEM;
    x->st->heap_writes++;
  } else {
    x->st->inline_writes++;
  }
  size_t off = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    const uint8_t *p = bufs[i].base;
    for (size_t k = 0; k < bufs[i].len; k++) out[off++] = p[k] ^ x->key;
  }
  ms_buf_t b = {out, n};
  int rc = ms_stream_write(x->lower, &b, 1, xor_lower_written, req);
  if (rc != 0) {
    free(w->heap);
    w->heap = NULL;
  }
  return rc;
}

static void xor_on_read(ms_stream_t *lower, int status, const uint8_t *data,
                        size_t len, void *arg) {
  (void)lower;
  xor_t *x = arg;
  if (status != 0) {
    ms_stream_emit_read(x->upper, status, NULL, 0);
    return;
  }
  /* Writable by the emit contract (multiserver_plugin.h): in place. */
  uint8_t *p = (uint8_t *)data;
  for (size_t i = 0; i < len; i++) p[i] ^= x->key;
  ms_stream_emit_read(x->upper, 0, p, len);
}

static int xor_read_start(ms_stream_t *s) {
  xor_t *x = ms_stream_impl(s);
  return ms_stream_read_start(x->lower, xor_on_read, x);
}

static int xor_read_stop(ms_stream_t *s) {
  xor_t *x = ms_stream_impl(s);
  return ms_stream_read_stop(x->lower);
}

static void xor_lower_shut(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  xor_t *x = arg;
  ms_stream_shutdown_done(x->upper, status);
}

static int xor_shutdown(ms_stream_t *s) {
  xor_t *x = ms_stream_impl(s);
  return ms_stream_shutdown(x->lower, xor_lower_shut, x);
}

static void xor_lower_closed(ms_stream_t *lower, void *arg) {
  (void)lower;
  xor_t *x = arg;
  ms_stream_t *up = x->upper;
  x->st->live--;
  free(x);
  ms_stream_closed(up);
}

static void xor_close(ms_stream_t *s) {
  xor_t *x = ms_stream_impl(s);
  /* Lower's queued writes complete (MS_ECANCELED) before its close
   * callback, and with them ours; then we report closed. */
  ms_stream_close(x->lower, xor_lower_closed, x);
}

static const ms_stream_ops_t xor_ops = {
    .write = xor_write,
    .read_start = xor_read_start,
    .read_stop = xor_read_stop,
    .shutdown = xor_shutdown,
    .close = xor_close,
};

static int xor_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
                    int role, void *pdata) {
  xor_stats_t *st = pdata;
  uint8_t key;
  if (xor_parse(sec, &key) != 0) return MS_EADDRESS;
  const char *la = ms_stream_address(lower);
  size_t n = strlen(la) + sizeof "~xor:" + 2;
  char *addr = malloc(n);
  xor_t *x = calloc(1, sizeof *x);
  if (addr == NULL || x == NULL) {
    free(addr);
    free(x);
    return MS_ENOMEM;
  }
  snprintf(addr, n, "%s~xor:%s", la, sec->fields[0]);
  ms_stream_t *up = ms_stream_new(ms_pwrap_ms(pw), &xor_ops, x, addr);
  free(addr);
  if (up == NULL) {
    free(x);
    return MS_ENOMEM;
  }
  x->st = st;
  x->lower = lower;
  x->upper = up;
  x->key = key;
  st->wraps++;
  st->live++;
  /* What the stream below established carries over. */
  if (!st->bare) {
    ms_stream_set_server(up, role == MS_ROLE_SERVER);
    ms_stream_set_remote_key(up, ms_stream_remote_key(lower));
    ms_stream_set_auth(up, ms_stream_auth(lower));
  }
  ms_pwrap_done(pw, 0, up, NULL); /* synchronously, inside wrap() */
  return 0;
}

static const ms_protocol_t xor_proto = {
    .name = "xor",
    .kind = MS_PROTO_TRANSFORM,
    .validate = xor_validate,
    .wrap = xor_wrap,
};

/* ======================================================================== */
/* Environment: a server and a client multiserver on one loop, one mem net  */
/* ======================================================================== */

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
  mem_net_t net;
  xor_stats_t xs;
} env_t;

static void env_register(env_t *e, ms_t *ms) {
  CHECK_INT(ms_register(ms, &mem_proto, &e->net), 0);
  CHECK_INT(ms_register(ms, &xor_proto, &e->xs), 0);
}

static void env_init(env_t *e, const ms_options_t *so, const ms_options_t *co) {
  ms_options_t d;
  tu_opts_default(&d);
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  e->net.loop = &e->loop;
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, so ? so : &d), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, co ? co : &d), 0);
  env_register(e, e->srv);
  env_register(e, e->cli);
}

static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(e->net.ends, 0);
  CHECK_INT(e->net.dials, 0);
  CHECK_INT(e->net.nlisten, 0);
  CHECK(e->net.listeners == NULL);
  CHECK_INT(e->xs.live, 0);
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
}

/* ---- bulk echo client ---------------------------------------------------- */

#define BULK (1024u * 1024)

static uint8_t *bulk_data;

/* Echo `total` bytes of bulk_data through addr (an echo listener) and check
 * everything a clean round trip implies; with a high-water mark, that it
 * engaged and held. */
static void bulk_echo(env_t *e, const char *addr, size_t total, size_t high_water,
                      tu_echo_t *echo, tu_bulk_t *b) {
  const tu_bulk_cfg_t cfg = {.data = bulk_data,
                             .total = total,
                             .high_water = high_water,
                             .queue_limit = high_water,
                             .timeout_ms = 60000,
                             .close_timeout_ms = WAIT_MS};
  tu_bulk_echo(&e->loop, e->cli, addr, &cfg, echo, b);
  CHECK(!b->is_server);
}

/* ======================================================================== */
/* 1. registration and validation                                           */
/* ======================================================================== */

static int dummy_listen(ms_plisten_t *pl, const ms_section_t *sec, void *pdata) {
  (void)pl;
  (void)sec;
  (void)pdata;
  return UV_EINVAL;
}

static void test_registration(void) {
  env_t e;
  env_init(&e, NULL, NULL);

  /* The same protocol again, another struct with a taken name (ours or a
   * built-in's): MS_EEXIST. */
  CHECK_INT(ms_register(e.srv, &mem_proto, &e.net), MS_EEXIST);
  CHECK_INT(ms_register(e.srv, &xor_proto, &e.xs), MS_EEXIST);
  ms_protocol_t copy = mem_proto;
  CHECK_INT(ms_register(e.srv, &copy, NULL), MS_EEXIST);
  static ms_protocol_t fake_shs;
  fake_shs = xor_proto;
  fake_shs.name = "shs";
  CHECK_INT(ms_register(e.srv, &fake_shs, NULL), MS_EEXIST);
  static ms_protocol_t fake_net;
  fake_net = mem_proto;
  fake_net.name = "net";
  CHECK_INT(ms_register(e.srv, &fake_net, NULL), MS_EEXIST);

  /* Incomplete protocols: MS_EINVAL, and nothing is registered. */
  static const ms_protocol_t no_hooks = {.name = "bad", .kind = MS_PROTO_TRANSPORT};
  static const ms_protocol_t listen_only = {
      .name = "bad", .kind = MS_PROTO_TRANSPORT, .listen = dummy_listen};
  static const ms_protocol_t dial_only = {
      .name = "bad", .kind = MS_PROTO_TRANSPORT, .dial = mem_dial};
  static const ms_protocol_t no_wrap = {.name = "bad", .kind = MS_PROTO_TRANSFORM};
  static const ms_protocol_t no_kind = {.name = "bad", .wrap = xor_wrap};
  static const ms_protocol_t no_name = {.kind = MS_PROTO_TRANSFORM, .wrap = xor_wrap};
  CHECK_INT(ms_register(e.srv, &no_hooks, NULL), MS_EINVAL);
  CHECK_INT(ms_register(e.srv, &listen_only, NULL), MS_EINVAL);
  /* A dial-only transport is a client-only one: registered, never listens. */
  CHECK_INT(ms_register(e.srv, &dial_only, NULL), 0);
  CHECK_INT(ms_register(e.srv, &no_wrap, NULL), MS_EINVAL);
  CHECK_INT(ms_register(e.srv, &no_kind, NULL), MS_EINVAL);
  CHECK_INT(ms_register(e.srv, &no_name, NULL), MS_EINVAL);
  CHECK_INT(ms_register(e.srv, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_register(NULL, &mem_proto, NULL), MS_EINVAL);
  char reason[512] = "";
  ms_listener_t *l = NULL;
  tu_accept_t acc = {0};
  CHECK_INT(ms_listen(e.srv, "bad:x", tu_on_accept, &acc, &l, reason, sizeof reason),
            MS_ESTACK);
  CHECK_HAS(reason, "client-only");
  CHECK_INT(ms_listen(e.srv, "worse:x", tu_on_accept, &acc, &l, reason, sizeof reason),
            MS_EPROTO_UNKNOWN);
  CHECK_HAS(reason, "worse");

  /* The user's validate hook runs for listen and dial. */
  static const struct {
    const char *addr;
    int rc;
    const char *word;
  } bad[] = {
      {"mem:", MS_EADDRESS, "mem:NAME"},
      {"mem", MS_EADDRESS, "mem:NAME"},
      {"mem:a:b", MS_EADDRESS, "mem:NAME"},
      {"mem:a~xor", MS_EADDRESS, "xor:HEXBYTE"},
      {"mem:a~xor:5", MS_EADDRESS, "xor:HEXBYTE"},
      {"mem:a~xor:zz", MS_EADDRESS, "xor:HEXBYTE"},
      {"mem:a~xor:5a:5a", MS_EADDRESS, "xor:HEXBYTE"},
      {"xor:5a~mem:a", MS_ESTACK, "transform"},
      {"mem:a~mem:b", MS_ESTACK, "transport"},
      {"mem:a~xor:5a~net:127.0.0.1:1", MS_ESTACK, "transport"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    reason[0] = '\0';
    l = NULL;
    int rc = ms_listen(e.srv, bad[i].addr, tu_on_accept, &acc, &l, reason, sizeof reason);
    CHECK_INT(rc, bad[i].rc);
    CHECK(l == NULL);
    if (rc != bad[i].rc) fprintf(stderr, "  listen %s: %s\n", bad[i].addr, ms_err_name(rc));
    CHECK_HAS(reason, bad[i].word);
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, bad[i].addr, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect to a bad address");
    CHECK_INT(r.status, bad[i].rc);
    CHECK_HAS(r.reason, bad[i].word);
  }
  CHECK_INT(e.net.nlisten, 0);

  /* A name is taken once per net; ms_listen is all or none. */
  l = tu_listen_ok(e.srv, "mem:dup", tu_on_accept, &acc);
  if (l) CHECK_STR(ms_listener_address(l), "mem:dup");
  ms_listener_t *l2 = NULL;
  reason[0] = '\0';
  CHECK_INT(ms_listen(e.cli, "mem:dup", tu_on_accept, &acc, &l2, reason, sizeof reason),
            UV_EADDRINUSE);
  CHECK_HAS(reason, "already in use");
  reason[0] = '\0';
  CHECK_INT(ms_listen(e.srv, "mem:x1;mem:x1", tu_on_accept, &acc, &l2, reason,
                      sizeof reason),
            UV_EADDRINUSE);
  CHECK_HAS(reason, "stack 2");
  tu_sleep_loop(&e.loop, 20);
  CHECK_INT(e.net.nlisten, 1); /* the first mem:x1 was released again */
  ms_listener_t *lx = tu_listen_ok(e.srv, "mem:x1", tu_on_accept, &acc);

  /* Escaped names round-trip: the advertised form reaches the listener. */
  ms_listener_t *lw = tu_listen_ok(e.srv, "mem:we!:ird!;name", tu_on_accept, &acc);
  if (lw) {
    CHECK_STR(ms_listener_address(lw), "mem:we!:ird!;name");
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, ms_listener_address(lw), &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect to an escaped name");
    CHECK_INT(r.status, 0);
    WAIT(&e.loop, acc.n, 1, "accept on an escaped name");
    if (r.s) CHECK_STR(ms_stream_address(r.s), "mem:we!:ird!;name");
    if (acc.n == 1) {
      CHECK_STR(ms_stream_stack(acc.s[0]), "mem:we!:ird!;name");
      CHECK(ms_stream_is_server(acc.s[0]));
    }
    ms_stream_t *v[2] = {r.s, acc.n ? acc.s[0] : NULL};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    acc.n = 0;
  }

  /* Unknown name: UV_ECONNREFUSED with the transport's reason. */
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, "mem:nobody", &r, NULL), 0);
  CHECK(!r.fired_in_call);
  WAIT(&e.loop, r.done, 1, "refused mem dial");
  CHECK_INT(r.status, UV_ECONNREFUSED);
  CHECK_HAS(r.reason, "mem:nobody");
  CHECK_HAS(r.reason, "nobody listens");
  CHECK(r.s == NULL);

  /* Another net (another pdata) does not see this one's names. */
  {
    ms_t *other;
    mem_net_t net2;
    memset(&net2, 0, sizeof net2);
    net2.loop = &e.loop;
    ms_options_t o;
    tu_opts_default(&o);
    CHECK_INT(ms_new_on_loop(&other, &e.loop, &o), 0);
    CHECK_INT(ms_register(other, &mem_proto, &net2), 0);
    CHECK_INT(tu_connect(other, "mem:dup", &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "dial on another net");
    CHECK_INT(r.status, UV_ECONNREFUSED);
    tu_sleep_loop(&e.loop, 20);
    CHECK_INT(net2.dials, 0);
    CHECK_INT(ms_delete(other), 0);
  }

  /* Grammar-only check for protocols the library does not know. */
  char *canon = NULL;
  CHECK_INT(ms_address_check("mem:a~xor:5a", false, &canon, NULL, 0), 0);
  if (canon) CHECK_STR(canon, "mem:a~xor:5a");
  ms_free(canon);

  if (l) tu_close_listener(&e.loop, l, WAIT_MS);
  if (lx) tu_close_listener(&e.loop, lx, WAIT_MS);
  if (lw) tu_close_listener(&e.loop, lw, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 2. mem echo; 3. read_stop backpressure                                   */
/* ======================================================================== */

static void test_mem_echo(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "mem:a", tu_echo_on_connection, &echo);
  if (l == NULL) return;
  CHECK_STR(ms_listener_address(l), "mem:a");
  tu_bulk_t b;
  bulk_echo(&e, "mem:a", BULK, 256 * 1024, &echo, &b);
  CHECK_STR(b.address, "mem:a");
  CHECK(!b.has_key);
  CHECK_STR(echo.last_stack, "mem:a");
  CHECK_STR(echo.last_address, "mem:a");
  /* The wire carried the plain bytes, both ways. */
  CHECK_INT(e.net.c2s_bytes, BULK);
  CHECK_INT(e.net.s2c_bytes, BULK);
  CHECK_INT(e.net.tap_len, MEM_TAP);
  CHECK_MEM(e.net.tap, bulk_data, MEM_TAP);
  /* Small writes went through the request scratch. */
  bulk_echo(&e, "mem:a", 100, 0, &echo, &b);
  CHECK(e.net.inline_writes >= 2);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

typedef struct {
  ms_stream_t *s;
  size_t got;
  int reads;
  int end;  /* MS_EOF or the error */
  int ends; /* how many ends (a counter to wait on) */
  bool stop_each; /* read_stop after every callback */
  bool bad;
  const uint8_t *want;
} slow_t;

static void slow_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                      void *arg) {
  slow_t *r = arg;
  if (status != 0) {
    r->end = status;
    r->ends++;
    return;
  }
  if (!ms_stream_is_reading(s)) r->bad = true; /* delivered while stopped */
  if (r->want && memcmp(data, r->want + r->got, len) != 0) r->bad = true;
  r->got += len;
  r->reads++;
  if (r->stop_each) ms_stream_read_stop(s);
}

typedef struct {
  int cbs, ok, canceled, other, last;
} wcount_t;

static void count_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  wcount_t *w = arg;
  w->cbs++;
  w->last = status;
  if (status == 0)
    w->ok++;
  else if (status == MS_ECANCELED)
    w->canceled++;
  else
    w->other++;
}

static void test_backpressure(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  const char *addrs[2] = {"mem:bp", "mem:bp~xor:a5"};
  for (int k = 0; k < 2; k++) {
    tu_accept_t acc = {0};
    ms_listener_t *l = tu_listen_ok(e.srv, addrs[k], tu_on_accept, &acc);
    if (l == NULL) return;
    e.net.tap_len = 0;
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, addrs[k], &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect");
    WAIT(&e.loop, acc.n, 1, "accept");
    if (r.s == NULL || acc.n != 1) return;
    ms_stream_t *c = r.s, *s = acc.s[0];
    /* 300 KiB queued to a server that does not read: nothing moves, no
     * write completes, the writer's queue holds it all. */
    wcount_t wc = {0};
    ms_buf_t b = {bulk_data, 100 * 1024};
    for (int i = 0; i < 3; i++) {
      b.base = bulk_data + i * 100 * 1024;
      CHECK_INT(ms_stream_write(c, &b, 1, count_written, &wc), 0);
    }
    /* An empty write queues behind them and completes in order. */
    CHECK_INT(ms_stream_write(c, NULL, 0, count_written, &wc), 0);
    ms_stream_set_high_water(c, 200 * 1024);
    CHECK(!ms_stream_writable(c));
    tu_sleep_loop(&e.loop, 60);
    CHECK_INT(wc.cbs, 0);
    CHECK_INT(ms_stream_write_queue_size(c), 300 * 1024);
    /* A reader that stops after every callback gets one piece per start. */
    slow_t sr = {.s = s, .stop_each = true, .want = bulk_data};
    CHECK_INT(ms_stream_read_start(s, slow_read, &sr), 0);
    WAIT(&e.loop, sr.reads, 1, "first piece");
    tu_sleep_loop(&e.loop, 40);
    CHECK_INT(sr.reads, 1);
    CHECK(sr.got > 0 && sr.got <= MEM_EMIT_MAX);
    CHECK_INT(wc.cbs, 0); /* the first write is not delivered completely */
    /* Now read everything. */
    sr.stop_each = false;
    CHECK_INT(ms_stream_read_start(s, slow_read, &sr), 0);
    WAIT(&e.loop, wc.cbs, 4, "writes complete once delivered");
    CHECK_INT(wc.ok, 4);
    CHECK_INT(sr.got, 300 * 1024);
    CHECK(!sr.bad);
    CHECK_INT(ms_stream_write_queue_size(c), 0);
    CHECK(ms_stream_writable(c));
    /* What went over the pipe: plain, or XORed below the transform. */
    uint8_t x[64];
    for (int i = 0; i < 64; i++) x[i] = bulk_data[i] ^ (k == 1 ? 0xa5 : 0);
    CHECK(e.net.tap_len >= 64);
    CHECK_MEM(e.net.tap, x, 64);
    /* Shutdown: the reader sees EOF after the data. */
    CHECK_INT(ms_stream_shutdown(c, NULL, NULL), 0);
    WAIT(&e.loop, sr.ends, 1, "EOF");
    CHECK_INT(sr.end, MS_EOF);
    ms_stream_t *v[2] = {c, s};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  env_done(&e);
}

/* ======================================================================== */
/* 4. mem~xor echo: the transform really changes the wire                   */
/* ======================================================================== */

static void test_xor_echo(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "mem:a~xor:5a", tu_echo_on_connection, &echo);
  if (l == NULL) return;
  CHECK_STR(ms_listener_address(l), "mem:a~xor:5a");
  tu_bulk_t b;
  bulk_echo(&e, ms_listener_address(l), BULK, 256 * 1024, &echo, &b);
  CHECK_STR(b.address, "mem:a~xor:5a");
  CHECK_STR(echo.last_address, "mem:a~xor:5a");
  CHECK_STR(echo.last_stack, "mem:a~xor:5a");
  CHECK_INT(e.xs.wraps, 2);
  CHECK_INT(e.net.c2s_bytes, BULK);
  CHECK_INT(e.net.tap_len, MEM_TAP);
  uint8_t want[MEM_TAP];
  for (size_t i = 0; i < MEM_TAP; i++) want[i] = bulk_data[i] ^ 0x5a;
  CHECK_MEM(e.net.tap, want, MEM_TAP);
  CHECK(memcmp(e.net.tap, bulk_data, 64) != 0);
  CHECK(e.xs.heap_writes > 0);
  /* Small writes use the request scratch, no allocation. */
  int inl = e.xs.inline_writes;
  bulk_echo(&e, ms_listener_address(l), 150, 0, &echo, &b);
  CHECK(e.xs.inline_writes >= inl + 2);
  tu_close_listener(&e.loop, l, WAIT_MS);

  /* A transform that sets nothing but what the plugin header asks for:
   * the library still reports what it promises about accepted streams
   * (ms_stream_is_server, ms_stream_stack). */
  e.xs.bare = true;
  tu_accept_t acc = {0};
  l = tu_listen_ok(e.srv, "mem:bare~xor:01", tu_on_accept, &acc);
  if (l) {
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, "mem:bare~xor:01", &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect bare");
    WAIT(&e.loop, acc.n, 1, "accept bare");
    CHECK_INT(r.status, 0);
    if (acc.n == 1) {
      CHECK(ms_stream_is_server(acc.s[0]));
      CHECK_STR(ms_stream_stack(acc.s[0]), "mem:bare~xor:01");
    }
    if (r.s) CHECK(!ms_stream_is_server(r.s));
    ms_stream_t *v[2] = {r.s, acc.n ? acc.s[0] : NULL};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  e.xs.bare = false;
  env_done(&e);
}

/* ======================================================================== */
/* 5. mem~shs: the built-in shs over the user transport                     */
/* ======================================================================== */

static void test_mem_shs(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  tu_lerr_t lerr = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "mem:b~shs", tu_echo_on_connection, &echo);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  char want[256];
  snprintf(want, sizeof want, "mem:b~shs:%s", tu_b64(ms_keys(e.srv)->public_key));
  CHECK_STR(ms_listener_address(l), want);
  tu_bulk_t b;
  bulk_echo(&e, ms_listener_address(l), BULK, 256 * 1024, &echo, &b);
  CHECK_STR(b.address, want);
  CHECK(b.has_key && memcmp(b.remote_key, ms_keys(e.srv)->public_key, 32) == 0);
  char want_srv[256];
  snprintf(want_srv, sizeof want_srv, "mem:b~shs:%s", tu_b64(ms_keys(e.cli)->public_key));
  CHECK_STR(echo.last_address, want_srv);
  CHECK_STR(echo.last_stack, want);
  /* Encrypted on the wire: more bytes than the payload, not the plaintext. */
  CHECK(e.net.c2s_bytes > BULK);
  CHECK(memmem(e.net.tap, e.net.tap_len, bulk_data, 32) == NULL);

  /* The server's view of the client key. */
  tu_accept_t acc = {0};
  ms_listener_t *l2 = tu_listen_ok(e.srv, "mem:b2~shs", tu_on_accept, &acc);
  if (l2) {
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, ms_listener_address(l2), &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect mem~shs");
    WAIT(&e.loop, acc.n, 1, "accept mem~shs");
    CHECK_INT(r.status, 0);
    if (acc.n == 1) {
      const uint8_t *k = ms_stream_remote_key(acc.s[0]);
      CHECK(k && memcmp(k, ms_keys(e.cli)->public_key, 32) == 0);
      CHECK(ms_stream_is_server(acc.s[0]));
    }
    if (r.s) CHECK(!ms_stream_is_server(r.s));
    ms_stream_t *v[2] = {r.s, acc.n ? acc.s[0] : NULL};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    tu_close_listener(&e.loop, l2, WAIT_MS);
  }

  /* Wrong server key: the handshake fails on both sides. */
  ms_keypair_t other;
  ms_keypair_generate(&other);
  char bad[256];
  snprintf(bad, sizeof bad, "mem:b~shs:%s", tu_b64(other.public_key));
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, bad, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "wrong server key");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "shs");
  CHECK(r.s == NULL);
  WAIT(&e.loop, lerr.count, 1, "server reports the failed handshake");
  CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
  CHECK_STR(lerr.last_stack, want);
  /* And a good one still works afterwards. */
  bulk_echo(&e, ms_listener_address(l), 1000, 0, &echo, &b);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 6. user and built-in stacks in one listener, one callback                */
/* ======================================================================== */

static void test_mixed(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  const char *la = "mem:c~xor:11~shs;net:127.0.0.1:0~xor:7f;net:127.0.0.1:0;mem:d~shs";
  ms_listener_t *l = tu_listen_ok(e.srv, la, tu_echo_on_connection, &echo);
  if (l == NULL) return;
  char **alts;
  size_t n = tu_split(ms_listener_address(l), &alts);
  CHECK_INT(n, 4);
  if (n != 4) return;
  char key[64];
  snprintf(key, sizeof key, "%s", tu_b64(ms_keys(e.srv)->public_key));
  char want0[256], want3[256];
  snprintf(want0, sizeof want0, "mem:c~xor:11~shs:%s", key);
  snprintf(want3, sizeof want3, "mem:d~shs:%s", key);
  CHECK_STR(alts[0], want0);
  CHECK(strncmp(alts[1], "net:127.0.0.1:", 14) == 0);
  CHECK(strstr(alts[1], "~xor:7f") != NULL);
  CHECK(strncmp(alts[2], "net:127.0.0.1:", 14) == 0 && strchr(alts[2], '~') == NULL);
  CHECK_STR(alts[3], want3);
  for (size_t i = 0; i < n; i++) {
    tu_bulk_t b;
    int wraps = e.xs.wraps;
    bulk_echo(&e, alts[i], 200 * 1024, 0, &echo, &b);
    CHECK_STR(b.address, alts[i]);
    CHECK_STR(echo.last_stack, alts[i]); /* the one callback saw this stack */
    bool shs = i == 0 || i == 3;
    CHECK(b.has_key == shs);
    if (shs) CHECK(memcmp(b.remote_key, ms_keys(e.srv)->public_key, 32) == 0);
    CHECK_INT(e.xs.wraps - wraps, (i <= 1) ? 2 : 0);
  }
  CHECK_INT(echo.accepted, 4);
  /* Only the mem stacks used the mem net; the first was XORed below shs. */
  CHECK(e.net.c2s_bytes > 2 * 200 * 1024);
  tu_split_free(alts, n);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 7. connect with fallback over user stacks                                */
/* ======================================================================== */

static void test_fallback(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "mem:d~shs", tu_on_accept, &acc);
  if (l == NULL) return;
  const char *good = ms_listener_address(l);
  char a[1024];

  /* mem:nobody refuses; the second alternative connects. */
  snprintf(a, sizeof a, "mem:nobody;%s", good);
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "fallback connect");
  CHECK_INT(r.status, 0);
  if (r.status) fprintf(stderr, "  fallback: %s\n", r.reason);
  WAIT(&e.loop, acc.n, 1, "fallback accept");
  if (r.s) {
    CHECK_STR(ms_stream_address(r.s), good);
    CHECK(ms_stream_remote_key(r.s) &&
          memcmp(ms_stream_remote_key(r.s), ms_keys(e.srv)->public_key, 32) == 0);
  }
  ms_stream_t *v[2] = {r.s, acc.n ? acc.s[0] : NULL};
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  acc.n = 0;

  /* Unknown protocols and malformed mem sections are skipped too. */
  snprintf(a, sizeof a, "nope:x;mem:;mem:nobody~xor:01;%s", good);
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "fallback past bad alternatives");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, 1, "accept");
  ms_stream_t *v2[2] = {r.s, acc.n ? acc.s[0] : NULL};
  tu_close_streams(&e.loop, v2, 2, WAIT_MS);
  acc.n = 0;

  /* All fail: MS_EALLFAILED naming each. */
  CHECK_INT(tu_connect(e.cli, "mem:nobody;mem:nobody2", &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "all alternatives fail");
  CHECK_INT(r.status, MS_EALLFAILED);
  CHECK_HAS(r.reason, "alternative 1: mem:nobody:");
  CHECK_HAS(r.reason, "alternative 2: mem:nobody2:");

  /* The same with the transport finishing inside dial(). */
  e.net.sync_dial = true;
  CHECK_INT(tu_connect(e.cli, "mem:nobody;mem:nobody2", &r, NULL), 0);
  CHECK(!r.fired_in_call);
  WAIT(&e.loop, r.done, 1, "all alternatives fail (sync dial)");
  CHECK_INT(r.status, MS_EALLFAILED);
  CHECK_HAS(r.reason, "alternative 2: mem:nobody2:");
  snprintf(a, sizeof a, "mem:nobody;%s", good);
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  CHECK(!r.fired_in_call);
  WAIT(&e.loop, r.done, 1, "fallback (sync dial)");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, 1, "accept (sync dial)");
  ms_stream_t *v3[2] = {r.s, acc.n ? acc.s[0] : NULL};
  tu_close_streams(&e.loop, v3, 2, WAIT_MS);
  acc.n = 0;
  CHECK_INT(tu_connect(e.cli, "mem:nobody3", &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "refused (sync dial)");
  CHECK_INT(r.status, UV_ECONNREFUSED);
  e.net.sync_dial = false;

  /* A server that hangs up during the handshake (here: the key is not its
   * own) is a path failure: it could be a middlebox, so the next
   * alternative is tried. (Authentication failures that stop are tested
   * with the seam's test transform in test_seam.c.) */
  ms_keypair_t other;
  ms_keypair_generate(&other);
  snprintf(a, sizeof a, "mem:d~shs:%s;%s", tu_b64(other.public_key), good);
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "hang-up falls back");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, 1, "accept after the hang-up");
  ms_stream_t *v4[2] = {r.s, acc.n ? acc.s[0] : NULL};
  tu_close_streams(&e.loop, v4, 2, WAIT_MS);
  acc.n = 0;

  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 8. half-close                                                            */
/* ======================================================================== */

/* This suite's own check on the half-closing client: the shutdown callback
 * never runs inside ms_stream_shutdown. */
static void hc_shut_not_yet(ms_stream_t *s, const tu_shut_t *shut) {
  (void)s;
  CHECK_INT(shut->done, 0);
}

static void half_close_over(const char *listen_addr, int mode, int want_end) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_half_close(&e.loop, e.srv, e.cli, listen_addr, mode, want_end, WAIT_MS,
                hc_shut_not_yet);
  env_done(&e);
}

static void test_half_close(void) {
  half_close_over("mem:h", 0, MS_EOF);
  half_close_over("mem:h", 1, MS_EOF);
  half_close_over("mem:h~shs", 0, MS_EOF); /* goodbye, then EOF */
  /* Closed without the goodbye: box-stream tells. */
  half_close_over("mem:h~shs", 1, MS_EHANGUP);
  half_close_over("mem:h~xor:3c~shs", 0, MS_EOF);
  half_close_over("mem:h~xor:3c", 0, MS_EOF);
}

/* ======================================================================== */
/* 9. cancel over mem~shs                                                   */
/* ======================================================================== */

typedef struct {
  int calls;
  ms_authorize_t *held;
  uint8_t key[32];
} auth_t;

static void authorize_never(const uint8_t remote_key[32], ms_authorize_t *req,
                            void *arg) {
  auth_t *a = arg;
  a->calls++;
  memcpy(a->key, remote_key, 32);
  a->held = req;
}

static void test_cancel(void) {
  ms_options_t so, co;
  tu_opts_default(&so);
  tu_opts_default(&co);
  auth_t au = {0};
  so.authorize = authorize_never;
  so.authorize_arg = &au;
  so.handshake_timeout_ms = 300;
  env_t e;
  env_init(&e, &so, &co);
  tu_lerr_t lerr = {0};
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "mem:k~shs", tu_on_accept, &acc);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  const char *good = ms_listener_address(l);

  /* (a) right after ms_connect */
  tu_conn_t r;
  ms_connect_t *req = NULL;
  CHECK_INT(tu_connect(e.cli, good, &r, &req), 0);
  tu_cancel(&r, req);
  WAIT(&e.loop, r.done, 1, "cancel right away");
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(r.s == NULL);
  CHECK(!r.fired_in_call);

  /* (b) while the mem dial is pending: dial_cancel finishes it early */
  e.net.dial_delay_ms = 2000;
  tu_cancel_arg_t ca;
  uint64_t t0 = tu_now_ms();
  CHECK_INT(tu_connect(e.cli, good, &r, &ca.req), 0);
  tu_sleep_loop(&e.loop, 20);
  CHECK_INT(e.net.dials, 1);
  CHECK_INT(ms_call(e.cli, tu_cancel_now, &ca), 0);
  WAIT(&e.loop, r.done, 1, "cancel while dialing");
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(tu_now_ms() - t0 < 1500);
  e.net.dial_delay_ms = 0;
  tu_sleep_loop(&e.loop, 20);
  CHECK_INT(e.net.dials, 0);
  CHECK_INT(au.calls, 0);

  /* (c) during the handshake: the server's authorize never answers */
  CHECK_INT(tu_connect(e.cli, good, &r, &req), 0);
  WAIT(&e.loop, au.calls, 1, "authorize hook called");
  CHECK(memcmp(au.key, ms_keys(e.cli)->public_key, 32) == 0);
  CHECK_INT(r.done, 0);
  tu_cancel(&r, req);
  CHECK(!r.fired_in_call);
  WAIT(&e.loop, r.done, 1, "cancel during handshake");
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(r.s == NULL);
  /* The server side gives up after its (short) handshake timeout. */
  WAIT(&e.loop, lerr.count, 1, "server handshake timeout");
  CHECK_INT(lerr.last_status, MS_ETIMEDOUT);
  CHECK_HAS(lerr.last_reason, "authorize");
  CHECK_INT(acc.n, 0);
  ms_authorize_done(au.held, true, NULL); /* answering late is harmless */
  au.held = NULL;

  /* (d) listener closed while a handshake waits for authorize */
  au.calls = 0;
  CHECK_INT(tu_connect(e.cli, good, &r, &req), 0);
  WAIT(&e.loop, au.calls, 1, "authorize hook called");
  int before = lerr.count;
  tu_close_listener(&e.loop, l, WAIT_MS);
  WAIT(&e.loop, r.done, 1, "client sees the hang-up");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_INT(lerr.count, before); /* a cancel is not an error */
  ms_authorize_done(au.held, false, NULL);
  au.held = NULL;
  CHECK_INT(acc.n, 0);
  env_done(&e);
}

/* ======================================================================== */
/* 10. close semantics of the mem pipe (and through xor)                    */
/* ======================================================================== */

static void test_close(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  const char *addrs[2] = {"mem:z", "mem:z~xor:01"};
  for (int k = 0; k < 2; k++) {
    tu_accept_t acc = {0};
    ms_listener_t *l = tu_listen_ok(e.srv, addrs[k], tu_on_accept, &acc);
    if (l == NULL) return;

    /* (a) the writer closes with writes queued (peer not reading): they
     * complete with MS_ECANCELED before the close callback; the peer,
     * reading later, sees a clean end (nothing of ours was left unread by
     * us) and gets none of the canceled bytes. */
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, addrs[k], &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect");
    WAIT(&e.loop, acc.n, 1, "accept");
    if (r.s == NULL || acc.n != 1) return;
    wcount_t wc = {0};
    ms_buf_t b = {bulk_data, 5000};
    for (int i = 0; i < 4; i++) CHECK_INT(ms_stream_write(r.s, &b, 1, count_written, &wc), 0);
    int closed = 0;
    ms_stream_close(r.s, tu_on_stream_closed, &closed);
    CHECK_INT(wc.cbs, 0); /* never from inside ms_stream_close */
    CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), MS_ECLOSED);
    WAIT(&e.loop, closed, 1, "writer closed");
    CHECK_INT(wc.cbs, 4);
    CHECK_INT(wc.canceled, 4);
    slow_t sr = {0};
    CHECK_INT(ms_stream_read_start(acc.s[0], slow_read, &sr), 0);
    WAIT(&e.loop, sr.ends, 1, "peer sees the end");
    CHECK_INT(sr.end, MS_EOF);
    CHECK_INT(sr.got, 0);
    /* Writing to a closed peer fails, later, like a socket. */
    wcount_t wp = {0};
    CHECK_INT(ms_stream_write(acc.s[0], &b, 1, count_written, &wp), 0);
    CHECK_INT(wp.cbs, 0); /* completed inside write(), reported later */
    WAIT(&e.loop, wp.cbs, 1, "write to a closed peer");
    CHECK_INT(wp.last, UV_EPIPE);
    tu_close_streams(&e.loop, acc.s, 1, WAIT_MS);
    acc.n = 0;

    /* (b) the reader closes with unread data: the writer's pending writes
     * fail with a reset and its reader sees UV_ECONNRESET. */
    CHECK_INT(tu_connect(e.cli, addrs[k], &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect");
    WAIT(&e.loop, acc.n, 1, "accept");
    if (r.s == NULL || acc.n != 1) return;
    wcount_t wc2 = {0};
    CHECK_INT(ms_stream_write(r.s, &b, 1, count_written, &wc2), 0);
    slow_t cr = {0};
    CHECK_INT(ms_stream_read_start(r.s, slow_read, &cr), 0);
    tu_sleep_loop(&e.loop, 20);
    CHECK_INT(wc2.cbs, 0);
    tu_close_streams(&e.loop, acc.s, 1, WAIT_MS);
    acc.n = 0;
    WAIT(&e.loop, wc2.cbs, 1, "pending write fails");
    CHECK_INT(wc2.last, UV_ECONNRESET);
    WAIT(&e.loop, cr.ends, 1, "reader sees the reset");
    CHECK_INT(cr.end, UV_ECONNRESET);
    tu_close_streams(&e.loop, &r.s, 1, WAIT_MS);

    /* (c) a shutdown still pending at close: its callback gets ECANCELED
     * (the base stream's doing) and the pipe is released. */
    CHECK_INT(tu_connect(e.cli, addrs[k], &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect");
    WAIT(&e.loop, acc.n, 1, "accept");
    if (r.s == NULL || acc.n != 1) return;
    CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), 0);
    tu_shut_t hs = {0};
    CHECK_INT(ms_stream_shutdown(r.s, tu_on_shut, &hs), 0);
    ms_stream_t *v[2] = {r.s, acc.s[0]};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    CHECK_INT(hs.done, 1);
    CHECK_INT(hs.status, MS_ECANCELED);
    acc.n = 0;
    tu_close_listener(&e.loop, l, WAIT_MS);
  }
  env_done(&e);
}

/* ======================================================================== */

/* ======================================================================== */
/* sync: an implementation that finishes writes and shutdown inside the    */
/* call; the base still reports later, in order, never inside the call.    */
/* ======================================================================== */

typedef struct {
  bool in_call;
  int writes_done, writes_in_call, shut_done, shut_in_call, closed;
  int order[4];
  int norder;
} sync_obs_t;

static int sync_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                      unsigned nbufs) {
  (void)s;
  (void)bufs;
  (void)nbufs;
  ms_write_req_done(req, 0);
  return 0;
}
static int sync_noop(ms_stream_t *s) {
  (void)s;
  return 0;
}
static int sync_shutdown(ms_stream_t *s) {
  ms_stream_shutdown_done(s, 0);
  return 0;
}
static void sync_close(ms_stream_t *s) { ms_stream_closed(s); }

static const ms_stream_ops_t sync_ops = {
    .write = sync_write,
    .read_start = sync_noop,
    .read_stop = sync_noop,
    .shutdown = sync_shutdown,
    .close = sync_close,
};

static void sync_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  sync_obs_t *o = ms_stream_data(s);
  CHECK_INT(status, 0);
  o->writes_done++;
  if (o->in_call) o->writes_in_call++;
  if (o->norder < 4) o->order[o->norder++] = (int)(intptr_t)arg;
}
static void sync_shut(ms_stream_t *s, int status, void *arg) {
  (void)arg;
  sync_obs_t *o = ms_stream_data(s);
  CHECK_INT(status, 0);
  o->shut_done++;
  if (o->in_call) o->shut_in_call++;
}
static void sync_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((sync_obs_t *)arg)->closed++;
}

static void test_sync_completion(void) {
  ms_t *ms;
  CHECK_INT(ms_new(&ms, NULL), 0);
  sync_obs_t o = {0};
  ms_stream_t *s = ms_stream_new(ms, &sync_ops, NULL, "sync:x");
  CHECK(s != NULL);
  if (s == NULL) return;
  ms_stream_set_data(s, &o);
  ms_buf_t b = {"ab", 2};
  o.in_call = true;
  CHECK_INT(ms_stream_write(s, &b, 1, sync_written, (void *)1), 0);
  CHECK_INT(ms_stream_write(s, &b, 1, sync_written, (void *)2), 0);
  CHECK_INT(ms_stream_shutdown(s, sync_shut, NULL), 0);
  o.in_call = false;
  CHECK_INT(o.writes_done, 0);
  CHECK_INT(o.shut_done, 0);
  ms_run(ms, MS_RUN_DEFAULT);
  CHECK_INT(o.writes_done, 2);
  CHECK_INT(o.writes_in_call, 0);
  CHECK_INT(o.order[0], 1);
  CHECK_INT(o.order[1], 2);
  CHECK_INT(o.shut_done, 1);
  CHECK_INT(o.shut_in_call, 0);
  o.in_call = true;
  ms_stream_close(s, sync_closed, &o);
  o.in_call = false;
  CHECK_INT(o.closed, 0); /* never from inside ms_stream_close */
  ms_run(ms, MS_RUN_DEFAULT);
  CHECK_INT(o.closed, 1);
  CHECK_INT(ms_delete(ms), 0);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"registration", test_registration},
      {"mem_echo", test_mem_echo},
      {"backpressure", test_backpressure},
      {"xor_echo", test_xor_echo},
      {"mem_shs", test_mem_shs},
      {"mixed", test_mixed},
      {"fallback", test_fallback},
      {"half_close", test_half_close},
      {"cancel", test_cancel},
      {"close", test_close},
      {"sync_completion", test_sync_completion},
  };
  if (sodium_init() < 0) return 1;
  bulk_data = malloc(BULK);
  randombytes_buf(bulk_data, BULK);
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  free(bulk_data);
  return mst_done("plugin");
}
