/*
 * ms_stream over a libuv stream handle: the byte mover under net and unix.
 * Reads land in the loop's shared slab (no per-connection read buffer);
 * writes go straight to uv_write with the request's scratch space holding
 * the uv_write_t (no allocation per write).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct ms_uvstream_s {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_shutdown_t shut;
  ms_stream_t *s;
};

ms_uvstream_t *ms_uvstream_alloc(void) {
  ms_uvstream_t *u = calloc(1, sizeof(*u));
  if (u) u->h.handle.data = u;
  return u;
}

uv_tcp_t *ms_uvstream_tcp(ms_uvstream_t *u) { return &u->h.tcp; }
uv_pipe_t *ms_uvstream_pipe(ms_uvstream_t *u) { return &u->h.pipe; }

static void free_on_close(uv_handle_t *h) { free(h->data); }

void ms_uvstream_discard(ms_uvstream_t *u) {
  if (u == NULL) return;
  if (u->h.handle.loop && !uv_is_closing(&u->h.handle))
    uv_close(&u->h.handle, free_on_close);
  else if (u->h.handle.loop == NULL)
    free(u);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  ms_uvstream_t *u = h->data;
  buf->base = (char *)u->s->ms->slab;
  buf->len = MS_READ_SLAB;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  ms_uvstream_t *u = st->data;
  if (nread > 0) {
    ms_stream_emit_read(u->s, 0, (uint8_t *)buf->base, (size_t)nread);
  } else if (nread == UV_EOF) {
    uv_read_stop(st);
    ms_stream_emit_read(u->s, MS_EOF, NULL, 0);
  } else if (nread < 0) {
    uv_read_stop(st);
    ms_stream_emit_read(u->s, (int)nread, NULL, 0);
  }
}

static int us_read_start(ms_stream_t *s) {
  ms_uvstream_t *u = ms_stream_impl(s);
  return uv_read_start(&u->h.stream, on_alloc, on_read);
}

static int us_read_stop(ms_stream_t *s) {
  ms_uvstream_t *u = ms_stream_impl(s);
  return uv_read_stop(&u->h.stream);
}

/* The write request's scratch space: the uv request, and the bytes copied
 * out of the read slab for it (usually none). */
typedef struct {
  uv_write_t w;
  void *copy;
} us_write_t;

_Static_assert(sizeof(us_write_t) <= MS_WRITE_REQ_SCRATCH,
               "us_write_t must fit a write request's scratch space");
/* uv_buf_init() takes an unsigned length, which would truncate a buffer
 * over 4 GiB; the field itself is a size_t on unix: fill it directly. */
_Static_assert(sizeof(((uv_buf_t *)0)->len) == sizeof(size_t),
               "uv_buf_t.len must hold any ms_buf_t length");

static void on_write(uv_write_t *w, int status) {
  us_write_t *uw = (us_write_t *)w;
  ms_write_req_t *req = w->data;
  free(uw->copy);
  uw->copy = NULL;
  /* The contract promises MS_ECANCELED for writes cut off by a close. */
  ms_write_req_done(req, status == UV_ECANCELED ? MS_ECANCELED : status);
}

static bool in_slab(const uint8_t *slab, const uv_buf_t *b) {
  uintptr_t p = (uintptr_t)b->base, s0 = (uintptr_t)slab;
  uintptr_t s1 = s0 + MS_READ_SLAB;
  return b->len != 0 && p < s1 && (p >= s0 || s0 - p < b->len);
}

/* Bytes written by reference from the loop's read slab (an echo of what was
 * just read) would be overwritten by the next read while queued: send what
 * the socket takes now (uv_try_write, which refuses while earlier writes
 * are queued, so order holds) and copy the slab part of the rest into one
 * block, freed at completion. Trims ub/nbufs to what is left (none: all was
 * sent) and says in *sent how much went out. 0 or MS_ENOMEM. */
static int unslab(ms_uvstream_t *u, us_write_t *uw, uv_buf_t *ub,
                  unsigned *nbufs, size_t *sent) {
  const uint8_t *slab = u->s->ms->slab;
  int n = uv_try_write(&u->h.stream, ub, *nbufs);
  size_t skip = n > 0 ? (size_t)n : 0, need = 0;
  unsigned j = 0;
  *sent = skip;
  for (unsigned i = 0; i < *nbufs; i++) {
    uv_buf_t b = ub[i];
    if (b.len <= skip) {
      skip -= b.len;
      continue;
    }
    b.base += skip;
    b.len -= skip;
    skip = 0;
    ub[j++] = b;
    if (in_slab(slab, &b)) need += b.len;
  }
  *nbufs = j;
  if (need == 0) return 0;
  uint8_t *p = malloc(need);
  if (p == NULL) return MS_ENOMEM;
  uw->copy = p;
  for (unsigned i = 0; i < j; i++) {
    if (!in_slab(slab, &ub[i])) continue;
    memcpy(p, ub[i].base, ub[i].len);
    ub[i].base = (char *)p;
    p += ub[i].len;
  }
  return 0;
}

static int us_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                    unsigned nbufs) {
  ms_uvstream_t *u = ms_stream_impl(s);
  static char nothing[1];
  uv_buf_t small[16];
  uv_buf_t *ub = small;
  us_write_t *uw = ms_write_req_scratch(req);
  uw->w.data = req;
  uw->copy = NULL;
  if (nbufs == 0) { /* libuv asserts nbufs > 0: write one empty buffer */
    small[0] = uv_buf_init(nothing, 0);
    return uv_write(&uw->w, &u->h.stream, small, 1, on_write);
  }
  if (nbufs > 16) {
    ub = malloc(nbufs * sizeof(*ub));
    if (ub == NULL) return MS_ENOMEM;
  }
  bool slab = false;
  for (unsigned i = 0; i < nbufs; i++) {
    ub[i].base = (char *)bufs[i].base;
    ub[i].len = bufs[i].len;
    if (in_slab(s->ms->slab, &ub[i])) slab = true;
  }
  int rc = 0;
  if (slab) {
    size_t sent;
    rc = unslab(u, uw, ub, &nbufs, &sent);
    if (rc != 0 && sent != 0) {
      /* Part went out already: the write has begun, so it fails later. */
      ms_write_req_done(req, rc);
      rc = 0;
      goto out;
    }
    if (rc != 0) goto out;
    if (nbufs == 0) {
      ms_write_req_done(req, 0); /* all sent: reported on a later turn */
      goto out;
    }
  }
  /* uv_write copies the uv_buf_t array, so ub may go now. */
  rc = uv_write(&uw->w, &u->h.stream, ub, nbufs, on_write);
  if (rc != 0) {
    free(uw->copy);
    uw->copy = NULL;
  }
out:
  if (ub != small) free(ub);
  return rc;
}

static void on_shutdown(uv_shutdown_t *sh, int status) {
  ms_uvstream_t *u = sh->data;
  if (u->s)
    ms_stream_shutdown_done(u->s, status == UV_ECANCELED ? MS_ECANCELED : status);
}

static int us_shutdown(ms_stream_t *s) {
  ms_uvstream_t *u = ms_stream_impl(s);
  u->shut.data = u;
  return uv_shutdown(&u->shut, &u->h.stream, on_shutdown);
}

static void on_close(uv_handle_t *h) {
  ms_uvstream_t *u = h->data;
  ms_stream_t *s = u->s;
  u->s = NULL;
  free(u);
  ms_stream_closed(s);
}

static void us_close(ms_stream_t *s) {
  ms_uvstream_t *u = ms_stream_impl(s);
  /* libuv completes pending writes and the shutdown with UV_ECANCELED before
   * the close callback. */
  uv_close(&u->h.handle, on_close);
}

static const ms_stream_ops_t uvstream_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = us_write,
    .read_start = us_read_start,
    .read_stop = us_read_stop,
    .shutdown = us_shutdown,
    .close = us_close,
};

uv_stream_t *ms_uvstream_handle(ms_stream_t *s) {
  if (s == NULL || s->ops.close != us_close) return NULL;
  ms_uvstream_t *u = ms_stream_impl(s);
  return &u->h.stream;
}

ms_stream_t *ms_uvstream_start(ms_uvstream_t *u, ms_t *ms,
                                const char *address) {
  ms_stream_t *s = ms_stream_new(ms, &uvstream_ops, u, address);
  if (s == NULL) return NULL;
  u->s = s;
  u->h.handle.data = u;
  return s;
}

/* A pending connection that cannot become a stream must still be taken:
 * libuv has accepted its fd already and stops polling the listening socket
 * until uv_accept() takes it, so the listener would stall for ever. It goes
 * into a throwaway handle that is closed at once. That handle must live
 * until its close callback; when not even it can be allocated, a spare per
 * thread stands in (free again by the end of this loop turn, on this
 * thread: libuv runs close callbacks in the turn that polled). */
typedef union {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} us_any_t;

static _Thread_local us_any_t spare;
static _Thread_local bool spare_busy;

static void spare_closed(uv_handle_t *h) {
  (void)h;
  spare_busy = false;
}

static void drop_pending(ms_t *ms, uv_stream_t *server, bool tcp) {
  us_any_t *h = malloc(sizeof(*h));
  uv_close_cb done = free_on_close;
  if (h == NULL) {
    if (spare_busy) return; /* a second failure in one turn: nothing left */
    h = &spare;
    spare_busy = true;
    done = spare_closed;
  }
  int rc = tcp ? uv_tcp_init(ms_loop(ms), &h->tcp)
               : uv_pipe_init(ms_loop(ms), &h->pipe, 0);
  if (rc != 0) {
    if (h == &spare)
      spare_busy = false;
    else
      free(h);
    return;
  }
  h->handle.data = h == &spare ? NULL : h;
  uv_accept(server, &h->stream); /* closes the connection with the handle */
  uv_close(&h->handle, done);
}

int ms_uvstream_accept(ms_t *ms, uv_stream_t *server, bool tcp,
                        ms_uv_name_fn name, void *arg, ms_stream_t **out) {
  char addr[256];
  ms_uvstream_t *u = ms_uvstream_alloc();
  if (u == NULL) {
    drop_pending(ms, server, tcp);
    return MS_ENOMEM;
  }
  int rc = tcp ? uv_tcp_init(ms_loop(ms), &u->h.tcp)
               : uv_pipe_init(ms_loop(ms), &u->h.pipe, 0);
  if (rc != 0) {
    free(u);
    drop_pending(ms, server, tcp);
    return rc;
  }
  u->h.handle.data = u;
  rc = uv_accept(server, &u->h.stream);
  if (rc == 0) rc = name(u, addr, sizeof addr, arg);
  if (rc == 0 && (*out = ms_uvstream_start(u, ms, addr)) == NULL) rc = MS_ENOMEM;
  if (rc != 0) ms_uvstream_discard(u);
  return rc;
}
