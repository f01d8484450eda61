/*
 * The base duplex stream. Implementations (uvstream.c, transforms) move the
 * bytes; this file owns what every stream must get right the same way:
 * write accounting and backpressure, pooled write requests, shutdown only
 * after earlier writes, and the close protocol (write callbacks, then the
 * close callback, then free — never from inside ms_stream_close()).
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"

_Static_assert(sizeof(uv_write_t) <= MS_WRITE_REQ_SCRATCH,
               "uv_write_t must fit a write request's scratch space");

/* Pooled requests kept per stream beyond which completed ones are freed. */
#define MS_REQ_POOL_MAX 16

static char *dupstr(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s);
  char *d = malloc(n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

ms_stream_t *ms_stream_new(ms_t *ms, const ms_stream_ops_t *ops, void *impl,
                           const char *address) {
  if (ms == NULL || ops == NULL) return NULL;
  ms_stream_t *s = calloc(1, sizeof(*s));
  if (s == NULL) return NULL;
  s->ms = ms;
  s->ops = ops;
  s->impl = impl;
  s->high_water = MS_DEFAULT_HIGH_WATER;
  if (address && (s->address = dupstr(address)) == NULL) {
    free(s);
    return NULL;
  }
  ms__live_inc(ms);
  return s;
}

void *ms_stream_impl(const ms_stream_t *s) { return s->impl; }
ms_t *ms_stream_ms(const ms_stream_t *s) { return s->ms; }

int ms_stream_set_address(ms_stream_t *s, const char *address) {
  char *d = dupstr(address);
  if (address && d == NULL) return MS_ENOMEM;
  free(s->address);
  s->address = d;
  return 0;
}

int ms__stream_set_stack(ms_stream_t *s, const char *stack) {
  char *d = dupstr(stack);
  if (stack && d == NULL) return MS_ENOMEM;
  free(s->stack);
  s->stack = d;
  return 0;
}

void ms_stream_set_remote_key(ms_stream_t *s,
                              const uint8_t pk[MS_PUBLICKEYBYTES]) {
  if (pk == NULL) {
    s->has_remote_key = false;
    return;
  }
  memcpy(s->remote_key, pk, MS_PUBLICKEYBYTES);
  s->has_remote_key = true;
}

void ms_stream_set_auth(ms_stream_t *s, void *auth) {
  if (s->auth_owned && s->auth != auth) {
    ms__auth_free(s->ms, s->auth);
    s->auth_owned = false;
  }
  s->auth = auth;
}

void ms__stream_own_auth(ms_stream_t *s, void *auth) {
  ms_stream_set_auth(s, auth);
  s->auth_owned = auth != NULL;
}

void ms__stream_inherit(ms_stream_t *upper, ms_stream_t *lower) {
  if (upper == lower) return;
  if (!upper->has_remote_key && lower->has_remote_key)
    ms_stream_set_remote_key(upper, lower->remote_key);
  if (upper->auth == NULL && lower->auth != NULL) {
    upper->auth = lower->auth;
    upper->auth_owned = lower->auth_owned;
    lower->auth_owned = false;
  }
  if (lower->is_server) upper->is_server = true;
}
void ms_stream_set_server(ms_stream_t *s, bool v) { s->is_server = v; }
bool ms_stream_is_reading(const ms_stream_t *s) { return s->reading; }
bool ms_stream_is_closing(const ms_stream_t *s) { return s->closing; }

const char *ms_stream_address(const ms_stream_t *s) {
  return s->address ? s->address : "";
}
const char *ms_stream_stack(const ms_stream_t *s) { return s->stack; }
const uint8_t *ms_stream_remote_key(const ms_stream_t *s) {
  return s->has_remote_key ? s->remote_key : NULL;
}
void *ms_stream_auth(const ms_stream_t *s) { return s->auth; }
bool ms_stream_is_server(const ms_stream_t *s) { return s->is_server; }
void ms_stream_set_data(ms_stream_t *s, void *data) { s->data = data; }
void *ms_stream_data(const ms_stream_t *s) { return s->data; }

/* ---- writes ---------------------------------------------------------- */

size_t ms_stream_write_queue_size(const ms_stream_t *s) { return s->queued; }
void ms_stream_set_high_water(ms_stream_t *s, size_t bytes) {
  s->high_water = bytes ? bytes : 1;
}
size_t ms_stream_high_water(const ms_stream_t *s) { return s->high_water; }
bool ms_stream_writable(const ms_stream_t *s) {
  return !s->closing && s->shut_state == MS_SHUT_NONE &&
         s->queued < s->high_water;
}
void ms_stream_on_drain(ms_stream_t *s, ms_drain_cb cb, void *arg) {
  s->drain_cb = cb;
  s->drain_arg = arg;
}

size_t ms_write_req_size(const ms_write_req_t *req) { return req->size; }
void *ms_write_req_scratch(ms_write_req_t *req) { return req->impl.bytes; }

static ms_write_req_t *req_get(ms_stream_t *s) {
  ms_write_req_t *r = s->free_reqs;
  if (r) {
    s->free_reqs = r->next;
    s->nfree--;
  } else {
    r = malloc(sizeof(*r));
    if (r == NULL) return NULL;
  }
  memset(r, 0, offsetof(ms_write_req_t, impl));
  return r;
}

static void req_put(ms_stream_t *s, ms_write_req_t *r) {
  if (s->nfree >= MS_REQ_POOL_MAX) {
    free(r);
    return;
  }
  r->next = s->free_reqs;
  s->free_reqs = r;
  s->nfree++;
}

static void maybe_shutdown(ms_stream_t *s);
static void complete_early(void *arg);
static void maybe_finish(ms_stream_t *s);

int ms_stream_write(ms_stream_t *s, const ms_buf_t *bufs, unsigned nbufs,
                    ms_write_cb cb, void *arg) {
  if (s == NULL || (nbufs && bufs == NULL)) return MS_EINVAL;
  if (s->closing) return MS_ECLOSED;
  if (s->shut_state != MS_SHUT_NONE) return MS_ESHUTDOWN;
  size_t size = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    if (bufs[i].len && bufs[i].base == NULL) return MS_EINVAL;
    if (bufs[i].len > SIZE_MAX - size) return MS_EINVAL; /* sum overflows */
    size += bufs[i].len;
  }
  if (size > SIZE_MAX - s->queued) return MS_EINVAL;
  ms_write_req_t *r = req_get(s);
  if (r == NULL) return MS_ENOMEM;
  r->s = s;
  r->cb = cb;
  r->arg = arg;
  r->size = size;
  s->queued += size;
  s->pending++;
  if (s->queued >= s->high_water) s->above_high_water = true;
  r->in_submit = true;
  int rc = s->ops->write(s, r, bufs, nbufs);
  r->in_submit = false;
  if (rc != 0) {
    s->queued -= size;
    s->pending--;
    req_put(s, r);
    return rc;
  }
  /* Completed inside ops->write(): the callback must still come later, or
   * it could run inside the caller's frame and overtake earlier writes. */
  if (r->early && ms__defer(s->ms, complete_early, r) != 0)
    complete_early(r);
  return 0;
}

static void complete_early(void *arg) {
  ms_write_req_t *r = arg;
  r->early = false;
  ms_write_req_done(r, r->early_status);
}

void ms_write_req_done(ms_write_req_t *r, int status) {
  if (r->in_submit) {
    r->early = true;
    r->early_status = status;
    return;
  }
  ms_stream_t *s = r->s;
  ms_write_cb cb = r->cb;
  void *arg = r->arg;
  s->queued -= r->size;
  s->pending--;
  req_put(s, r);
  if (cb) cb(s, status, arg);
  if (s->above_high_water && s->queued < s->high_water) {
    s->above_high_water = false;
    if (s->drain_cb && !s->closing) s->drain_cb(s, s->drain_arg);
  }
  maybe_shutdown(s);
  maybe_finish(s);
}

/* ---- reads ----------------------------------------------------------- */

int ms_stream_read_start(ms_stream_t *s, ms_read_cb cb, void *arg) {
  if (s == NULL || cb == NULL) return MS_EINVAL;
  if (s->closing) return MS_ECLOSED;
  s->read_cb = cb;
  s->read_arg = arg;
  if (s->reading) return 0;
  s->reading = true;
  int rc = s->ops->read_start(s);
  if (rc != 0) s->reading = false;
  return rc;
}

int ms_stream_read_stop(ms_stream_t *s) {
  if (s == NULL) return MS_EINVAL;
  if (!s->reading) return 0;
  s->reading = false;
  return s->closing ? 0 : s->ops->read_stop(s);
}

void ms_stream_emit_read(ms_stream_t *s, int status, uint8_t *data,
                         size_t len) {
  if (s->closing || s->read_cb == NULL) return;
  if (status != 0) s->reading = false;
  s->read_cb(s, status, data, len, s->read_arg);
}

/* ---- shutdown -------------------------------------------------------- */

static void shutdown_early(void *arg) {
  ms_stream_t *s = arg;
  s->shut_early = false;
  s->pending--; /* the hold taken in maybe_shutdown */
  ms_stream_shutdown_done(s, s->shut_status);
  maybe_finish(s);
}

static void maybe_shutdown(ms_stream_t *s) {
  if (s->shut_state != MS_SHUT_WAIT || s->pending != 0 || s->closing) return;
  s->shut_state = MS_SHUT_RUNNING;
  s->in_shutdown = true;
  int rc = s->ops->shutdown(s);
  s->in_shutdown = false;
  if (rc != 0) {
    s->shut_early = true;
    s->shut_status = rc;
  }
  if (s->shut_early) {
    /* Never report from inside the caller's ms_stream_shutdown (or write
     * completion): defer, holding the stream open until then. */
    s->pending++;
    if (ms__defer(s->ms, shutdown_early, s) != 0) shutdown_early(s);
  }
}

int ms_stream_shutdown(ms_stream_t *s, ms_shutdown_cb cb, void *arg) {
  if (s == NULL) return MS_EINVAL;
  if (s->closing) return MS_ECLOSED;
  if (s->shut_state != MS_SHUT_NONE) return MS_ESHUTDOWN;
  s->shut_state = MS_SHUT_WAIT;
  s->shut_cb = cb;
  s->shut_arg = arg;
  maybe_shutdown(s);
  return 0;
}

void ms_stream_shutdown_done(ms_stream_t *s, int status) {
  if (s->in_shutdown) {
    s->shut_early = true;
    s->shut_status = status;
    return;
  }
  if (s->shut_state == MS_SHUT_DONE) return;
  s->shut_state = MS_SHUT_DONE;
  ms_shutdown_cb cb = s->shut_cb;
  s->shut_cb = NULL;
  if (cb) cb(s, status, s->shut_arg);
}

/* ---- close ----------------------------------------------------------- */

static void finish_close(ms_stream_t *s) {
  ms_t *ms = s->ms;
  if (s->shut_state == MS_SHUT_WAIT || s->shut_state == MS_SHUT_RUNNING)
    ms_stream_shutdown_done(s, MS_ECANCELED);
  if (s->close_cb) s->close_cb(s, s->close_arg);
  if (s->auth_owned) ms__auth_free(ms, s->auth);
  while (s->free_reqs) {
    ms_write_req_t *r = s->free_reqs;
    s->free_reqs = r->next;
    free(r);
  }
  free(s->address);
  free(s->stack);
  sodium_memzero(s, sizeof(*s));
  free(s);
  ms__live_dec(ms);
}

/* Free once the implementation is done and no write completion is still
 * owed to the user (a deferred early completion holds the stream). */
static void maybe_finish(ms_stream_t *s) {
  if (!s->impl_closed || s->in_close || s->pending != 0 || s->finishing) return;
  s->finishing = true;
  finish_close(s);
}

static void finish_deferred(void *arg) {
  ms_stream_t *s = arg;
  s->in_close = false;
  maybe_finish(s);
}

void ms_stream_close(ms_stream_t *s, ms_close_cb cb, void *arg) {
  if (s == NULL || s->closing) return;
  s->closing = true;
  s->reading = false;
  s->close_cb = cb;
  s->close_arg = arg;
  s->in_close = true;
  s->ops->close(s);
  /* The implementation finished synchronously: still never call back from
   * inside ms_stream_close(). in_close stays set until the deferred turn. */
  if (s->impl_closed) {
    if (ms__defer(s->ms, finish_deferred, s) != 0) finish_deferred(s);
    return;
  }
  s->in_close = false;
}

void ms_stream_closed(ms_stream_t *s) {
  if (s->impl_closed) return;
  s->impl_closed = true;
  maybe_finish(s);
}
