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

static void on_write(uv_write_t *w, int status) {
  ms_write_req_t *req = w->data;
  /* The contract promises MS_ECANCELED for writes cut off by a close. */
  ms_write_req_done(req, status == UV_ECANCELED ? MS_ECANCELED : status);
}

static int us_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                    unsigned nbufs) {
  ms_uvstream_t *u = ms_stream_impl(s);
  static char nothing[1];
  uv_buf_t small[16];
  uv_buf_t *ub = small;
  if (nbufs == 0) { /* libuv asserts nbufs > 0: write one empty buffer */
    small[0] = uv_buf_init(nothing, 0);
    uv_write_t *w = ms_write_req_scratch(req);
    w->data = req;
    return uv_write(w, &u->h.stream, small, 1, on_write);
  }
  if (nbufs > 16) {
    ub = malloc(nbufs * sizeof(*ub));
    if (ub == NULL) return MS_ENOMEM;
  }
  for (unsigned i = 0; i < nbufs; i++)
    ub[i] = uv_buf_init((char *)bufs[i].base, (unsigned)bufs[i].len);
  uv_write_t *w = ms_write_req_scratch(req);
  w->data = req;
  /* uv_write copies the uv_buf_t array, so ub may go now. */
  int rc = uv_write(w, &u->h.stream, ub, nbufs, on_write);
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

int ms_uvstream_accept(ms_t *ms, uv_stream_t *server, bool tcp,
                        ms_uv_name_fn name, void *arg, ms_stream_t **out) {
  char addr[256];
  ms_uvstream_t *u = ms_uvstream_alloc();
  if (u == NULL) return MS_ENOMEM;
  int rc = tcp ? uv_tcp_init(ms_loop(ms), &u->h.tcp)
               : uv_pipe_init(ms_loop(ms), &u->h.pipe, 0);
  if (rc != 0) {
    free(u);
    return rc;
  }
  u->h.handle.data = u;
  rc = uv_accept(server, &u->h.stream);
  if (rc == 0) rc = name(u, addr, sizeof addr, arg);
  if (rc == 0 && (*out = ms_uvstream_start(u, ms, addr)) == NULL) rc = MS_ENOMEM;
  if (rc != 0) ms_uvstream_discard(u);
  return rc;
}
