/*
 * The multiserver object: its loop, options and keys, the protocol registry,
 * and the cross-thread command queue (ms_call). Listening is in listener.c,
 * connecting in connect.c.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"

unsigned ms_version(void) { return MS_VERSION_HEX; }

#define MS__STR2(x) #x
#define MS__STR(x) MS__STR2(x)
const char *ms_version_string(void) {
  return MS__STR(MS_VERSION_MAJOR) "." MS__STR(MS_VERSION_MINOR) "." MS__STR(
      MS_VERSION_PATCH);
}

void ms_options_init(ms_options_t *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->size = sizeof(*opts);
}

int ms_error_class(int status) {
  switch (status) {
    case MS_EHANDSHAKE:
    case MS_EUNAUTHORIZED:
    case MS_EKEY:
      return MS_FAIL_AUTH;
    default:
      return MS_FAIL_PATH;
  }
}

int ms_opt_uint(const char *value, uint64_t max, uint64_t *out) {
  if (value == NULL || *value == '\0' || out == NULL) return MS_EINVAL;
  uint64_t v = 0;
  for (const char *p = value; *p; p++) {
    if (*p < '0' || *p > '9') return MS_EINVAL;
    unsigned d = (unsigned)(*p - '0');
    if (v > (max - d) / 10) return MS_EINVAL;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

void ms_reasonf(char *buf, size_t len, const char *fmt, ...) {
  if (buf == NULL || len == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
}

void ms__reason(char *buf, size_t len, const char *fmt, ...) {
  if (buf == NULL || len == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
}

void ms__auth_free(ms_t *ms, void *value) {
  if (value && ms->opts.authorize_free)
    ms->opts.authorize_free(value, ms->opts.authorize_arg);
}

static void close_progress(void *arg);

static void maybe_progress(ms_t *ms) {
  if (ms->state == MS_STATE_CLOSING && ms->live == 0)
    ms_defer(ms, &ms->close_node, close_progress, ms);
}

void ms__live_inc(ms_t *ms) { ms->live++; }
void ms__live_dec(ms_t *ms) {
  ms->live--;
  maybe_progress(ms);
}
void ms_ref(ms_t *ms) { ms->refs++; }
void ms_unref(ms_t *ms) {
  if (ms->refs == 0) return;
  ms->refs--;
  if (ms->refs == 0) maybe_progress(ms);
}
size_t ms_live(const ms_t *ms) { return ms->live + ms->refs; }

uint8_t *ms_read_slab(ms_t *ms, size_t *len) {
  if (len) *len = MS_READ_SLAB;
  return ms->slab;
}

static void drain_calls(uv_async_t *a) {
  ms_t *ms = a->data;
  for (;;) {
    uv_mutex_lock(&ms->qlock);
    ms_call_t *c = ms->qhead;
    ms->qhead = ms->qtail = NULL;
    uv_mutex_unlock(&ms->qlock);
    if (c == NULL) break;
    while (c) {
      ms_call_t *next = c->next;
      c->fn(c->arg);
      free(c);
      c = next;
    }
  }
}

int ms_call(ms_t *ms, void (*fn)(void *arg), void *arg) {
  if (ms == NULL || fn == NULL) return MS_EINVAL;
  ms_call_t *c = malloc(sizeof(*c));
  if (c == NULL) return MS_ENOMEM;
  c->fn = fn;
  c->arg = arg;
  c->next = NULL;
  uv_mutex_lock(&ms->qlock);
  if (ms->qtail)
    ms->qtail->next = c;
  else
    ms->qhead = c;
  ms->qtail = c;
  uv_mutex_unlock(&ms->qlock);
  return uv_async_send(&ms->async);
}

/* Runs the calls queued before this turn; calls they queue run next turn. */
static void run_deferred(uv_idle_t *h) {
  ms_t *ms = h->data;
  /* The turn ends at its last node; ms_defer_cancel() moves that mark when
   * it unlinks the node, so a canceled last node cannot extend the turn to
   * calls queued during it. Saved and restored for a nested run. */
  ms_defer_t *saved_last = ms->dlast;
  bool saved_gone = ms->dlast_gone;
  ms->dlast = ms->dtail;
  ms->dlast_gone = false;
  while (ms->dhead && !ms->dlast_gone) {
    ms_defer_t *d = ms->dhead;
    ms->dhead = d->next;
    if (ms->dhead == NULL) ms->dtail = NULL;
    d->queued = false;
    d->next = NULL;
    bool was_last = d == ms->dlast; /* fn may free d */
    d->fn(d->arg);
    if (was_last) break;
  }
  ms->dlast = saved_last;
  ms->dlast_gone = saved_gone;
  if (ms->dhead == NULL && ms->fhead == NULL) uv_idle_stop(&ms->idle);
}

void ms_defer(ms_t *ms, ms_defer_t *node, void (*fn)(void *arg), void *arg) {
  if (node->queued) return;
  node->fn = fn;
  node->arg = arg;
  node->next = NULL;
  node->queued = true;
  if (ms->dtail)
    ms->dtail->next = node;
  else
    ms->dhead = node;
  ms->dtail = node;
  uv_idle_start(&ms->idle, run_deferred); /* cannot fail with a callback */
}

void ms_defer_cancel(ms_t *ms, ms_defer_t *node) {
  if (node == NULL || !node->queued) return;
  ms_defer_t *prev = NULL;
  for (ms_defer_t *d = ms->dhead; d; prev = d, d = d->next) {
    if (d != node) continue;
    if (prev)
      prev->next = d->next;
    else
      ms->dhead = d->next;
    if (ms->dtail == d) ms->dtail = prev;
    if (ms->dlast == d) { /* the running turn now ends before it */
      ms->dlast = prev;
      if (prev == NULL) ms->dlast_gone = true;
    }
    break;
  }
  node->queued = false;
  node->next = NULL;
}

static void on_check(uv_check_t *h) {
  ms_t *ms = h->data;
  ms__run_flushes(ms);
  if (ms->fhead == NULL) uv_check_stop(&ms->check);
}

void ms__flush_wanted(ms_t *ms) {
  uv_check_start(&ms->check, on_check);
  /* An active idle handle makes the poll phase return at once, so the
   * check phase (and the flush) comes in this turn even when the writes
   * were made from a timer. */
  uv_idle_start(&ms->idle, run_deferred);
}

/* The caller's options, whatever header they were compiled with. */
static int copy_options(ms_options_t *dst, const ms_options_t *src) {
  ms_options_init(dst);
  if (src == NULL) return 0;
  size_t n = src->size ? src->size : sizeof(*src);
  if (n > sizeof(*src) || n < offsetof(ms_options_t, keys)) return MS_EINVAL;
  memcpy(dst, src, n);
  dst->size = sizeof(*dst);
  return 0;
}

static void handle_closed(uv_handle_t *h);

/* libuv writes with write()/writev(), which raise SIGPIPE on a socket the
 * peer reset: at SIG_DFL that kills the process. Ignore it then, so the
 * write fails with EPIPE/ECONNRESET instead; a disposition the application
 * chose (a handler, or SIG_IGN already) is left alone. */
static void ignore_default_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL ||
      (sa.sa_flags & SA_SIGINFO))
    return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
}

static int setup(ms_t *ms, const ms_options_t *opts) {
  if (sodium_init() < 0) return MS_ENOMEM;
  int rc = copy_options(&ms->opts, opts);
  if (rc != 0) return rc;
  if (!ms->opts.keep_sigpipe) ignore_default_sigpipe();
  if (ms->opts.keys)
    ms->keys = *ms->opts.keys;
  else if (ms_keypair_generate(&ms->keys) != 0)
    return MS_EKEY;
  memcpy(ms->app_key, ms->opts.app_key ? ms->opts.app_key : ms_appkey_scuttlebutt(),
         MS_APPKEYBYTES);
  ms->opts.keys = &ms->keys;
  ms->opts.app_key = ms->app_key;
  if (ms->opts.handshake_timeout_ms == 0) ms->opts.handshake_timeout_ms = 15000;
  if (ms->opts.connect_timeout_ms == 0) ms->opts.connect_timeout_ms = 10000;
  ms->slab = malloc(MS_READ_SLAB);
  if (ms->slab == NULL) return MS_ENOMEM;
  rc = uv_mutex_init(&ms->qlock);
  if (rc != 0) return rc;
  rc = uv_async_init(ms->loop, &ms->async, drain_calls);
  if (rc != 0) {
    uv_mutex_destroy(&ms->qlock);
    return rc;
  }
  ms->async.data = ms;
  uv_idle_init(ms->loop, &ms->idle);
  ms->idle.data = ms;
  uv_check_init(ms->loop, &ms->check);
  ms->check.data = ms;
  uv_unref((uv_handle_t *)&ms->check); /* idle keeps the loop going */
  uv_timer_init(ms->loop, &ms->idle_timer);
  ms->idle_timer.data = ms;
  uv_unref((uv_handle_t *)&ms->idle_timer); /* the streams it watches do */
  ms->handles_open = 4;
  /* The queue alone must not keep ms_run() going. */
  uv_unref((uv_handle_t *)&ms->async);
  /* pdata is the ms_t (shs's validate checks a listen key against ours). */
  for (size_t i = 0; ms__builtins[i]; i++)
    if ((rc = ms_register(ms, ms__builtins[i], ms)) != 0) return rc;
  return 0;
}

static void wipe_free(ms_t *ms) {
  /* The slab last held decrypted bytes (box-stream opens in place). */
  if (ms->slab) sodium_memzero(ms->slab, MS_READ_SLAB);
  free(ms->slab);
  sodium_memzero(ms, sizeof(*ms));
  free(ms);
}

/* Close the library's own handles; the last close callback finishes. */
static void close_handles(ms_t *ms) {
  uv_close((uv_handle_t *)&ms->idle, handle_closed);
  uv_close((uv_handle_t *)&ms->check, handle_closed);
  uv_close((uv_handle_t *)&ms->idle_timer, handle_closed);
  uv_close((uv_handle_t *)&ms->async, handle_closed);
}

int ms_new(ms_t **out, const ms_options_t *opts) {
  if (out == NULL) return MS_EINVAL;
  ms_t *ms = calloc(1, sizeof(*ms));
  if (ms == NULL) return MS_ENOMEM;
  int rc = uv_loop_init(&ms->own_loop);
  if (rc != 0) {
    free(ms);
    return rc;
  }
  ms->loop = &ms->own_loop;
  ms->owns_loop = true;
  rc = setup(ms, opts);
  if (rc != 0) {
    if (ms->handles_open) {
      close_handles(ms);
      uv_run(ms->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&ms->own_loop);
    wipe_free(ms);
    return rc;
  }
  *out = ms;
  return 0;
}

int ms_new_on_loop(ms_t **out, uv_loop_t *loop, const ms_options_t *opts) {
  if (out == NULL || loop == NULL) return MS_EINVAL;
  ms_t *ms = calloc(1, sizeof(*ms));
  if (ms == NULL) return MS_ENOMEM;
  ms->loop = loop;
  int rc = setup(ms, opts);
  if (rc != 0) {
    if (ms->handles_open) {
      /* A foreign loop: the handles close when the caller runs it; keep
       * the memory until then rather than free it under libuv. */
      ms->state = MS_STATE_CLOSED;
      ms->free_when_closed = true;
      close_handles(ms);
      return rc;
    }
    wipe_free(ms);
    return rc;
  }
  *out = ms;
  return 0;
}

/* ---- teardown --------------------------------------------------------- */

static void destroy_instances(ms_t *ms) {
  if (ms->destroyed) return;
  ms->destroyed = true;
  for (size_t i = ms->nprotos; i-- > 0;) {
    ms_proto_entry_t *e = &ms->protos[i];
    if (e->proto.destroy) e->proto.destroy(ms, e->pdata);
  }
}

static void handle_closed(uv_handle_t *h) {
  ms_t *ms = h->data;
  if (--ms->handles_open > 0) return;
  uv_mutex_destroy(&ms->qlock);
  if (ms->free_when_closed) {
    wipe_free(ms); /* a failed ms_new_on_loop */
    return;
  }
  ms->state = MS_STATE_CLOSED;
  ms_closed_cb cb = ms->closed_cb;
  ms->closed_cb = NULL;
  if (cb) cb(ms, ms->closed_arg);
}

static void close_progress(void *arg) {
  ms_t *ms = arg;
  if (ms->state != MS_STATE_CLOSING || ms->live != 0) return;
  destroy_instances(ms);
  if (ms->refs != 0 || ms->live != 0) return; /* ms_unref comes back here */
  if (ms->dhead) { /* let what the instances deferred run first */
    ms_defer(ms, &ms->close_node, close_progress, ms);
    return;
  }
  ms->state = MS_STATE_CLOSED; /* set before the handles go: no more defers */
  drain_calls(&ms->async);
  close_handles(ms);
}

int ms_close(ms_t *ms, ms_closed_cb cb, void *arg) {
  if (ms == NULL || ms->state != MS_STATE_OPEN) return MS_EINVAL;
  ms->state = MS_STATE_CLOSING;
  ms->closed_cb = cb;
  ms->closed_arg = arg;
  ms_defer(ms, &ms->close_node, close_progress, ms);
  return 0;
}

int ms_delete(ms_t *ms) {
  if (ms == NULL) return MS_EINVAL;
  if (ms->thread_started) return MS_EEXIST;
  if (ms->state == MS_STATE_CLOSED) {
    if (ms->handles_open != 0) return MS_EBUSY; /* ms_close not finished */
    if (ms->owns_loop) {
      uv_run(ms->loop, UV_RUN_NOWAIT);
      uv_loop_close(ms->loop);
    }
    wipe_free(ms);
    return 0;
  }
  if (ms->state == MS_STATE_CLOSING) return MS_EBUSY;
  if (ms->in_run) return MS_EBUSY; /* from a callback: use ms_close */
  if (ms->live != 0) return MS_EEXIST;
  /* Run what is still queued (e.g. deferred close callbacks). */
  drain_calls(&ms->async);
  while (ms->dhead) run_deferred(&ms->idle);
  if (ms->live != 0) return MS_EEXIST;
  destroy_instances(ms);
  /* ms_delete waits for the live count: plugin handles still closing (a
   * socket), or a lookup orphaned in the threadpool by a timeout. */
  while (ms->refs != 0 || ms->dhead) {
    if (ms->dhead)
      run_deferred(&ms->idle);
    else
      uv_run(ms->loop, UV_RUN_ONCE);
  }
  if (ms->live != 0) return MS_EEXIST;
  ms->state = MS_STATE_CLOSED;
  close_handles(ms);
  while (ms->handles_open != 0) uv_run(ms->loop, UV_RUN_NOWAIT);
  if (ms->owns_loop) {
    uv_run(ms->loop, UV_RUN_DEFAULT);
    uv_loop_close(ms->loop);
  }
  wipe_free(ms);
  return 0;
}

int ms_run(ms_t *ms, int mode) {
  uv_run_mode m = mode == MS_RUN_ONCE     ? UV_RUN_ONCE
                  : mode == MS_RUN_NOWAIT ? UV_RUN_NOWAIT
                                          : UV_RUN_DEFAULT;
  bool outer = !ms->in_run;
  ms->in_run = true;
  int rc = uv_run(ms->loop, m);
  if (outer) ms->in_run = false;
  return rc;
}

void ms_stop(ms_t *ms) { uv_stop(ms->loop); }
uv_loop_t *ms_loop(const ms_t *ms) { return ms->loop; }
const ms_keypair_t *ms_keys(const ms_t *ms) { return &ms->keys; }
const uint8_t *ms_app_key(const ms_t *ms) { return ms->app_key; }
const ms_options_t *ms_options(const ms_t *ms) { return &ms->opts; }

/* ---- threads ---------------------------------------------------------- */

static void loop_thread(void *arg) {
  ms_t *ms = arg;
  ms->in_run = true;
  uv_run(ms->loop, UV_RUN_DEFAULT);
  ms->in_run = false;
}

int ms_thread_start(ms_t *ms) {
  if (ms == NULL) return MS_EINVAL;
  if (ms->thread_started) return MS_EEXIST;
  /* Keep the loop alive while the thread is meant to run. */
  uv_ref((uv_handle_t *)&ms->async);
  int rc = uv_thread_create(&ms->thread, loop_thread, ms);
  if (rc != 0) {
    uv_unref((uv_handle_t *)&ms->async);
    return rc;
  }
  ms->thread_started = true;
  return 0;
}

static void release_loop(void *arg) {
  ms_t *ms = arg;
  uv_unref((uv_handle_t *)&ms->async);
}

int ms_thread_join(ms_t *ms) {
  if (ms == NULL || !ms->thread_started) return MS_EINVAL;
  int rc = ms_call(ms, release_loop, ms);
  if (rc != 0) return rc;
  rc = uv_thread_join(&ms->thread);
  ms->thread_started = false;
  return rc;
}

/* ---- registry --------------------------------------------------------- */

/* The first published layout: name .. advertise. */
#define PROTO_V1_SIZE (offsetof(ms_protocol_t, init))

int ms__proto_copy(const ms_protocol_t *in, ms_protocol_t *out) {
  size_t n = in->size ? in->size : PROTO_V1_SIZE;
  if (n > sizeof(*in) || n < offsetof(ms_protocol_t, validate)) return MS_EINVAL;
  memset(out, 0, sizeof(*out));
  memcpy(out, in, n);
  out->size = sizeof(*out);
  return 0;
}

int ms_register(ms_t *ms, const ms_protocol_t *proto, void *pdata) {
  if (ms == NULL || proto == NULL || ms->state != MS_STATE_OPEN) return MS_EINVAL;
  ms_protocol_t p;
  if (ms__proto_copy(proto, &p) != 0 || p.name == NULL || p.name[0] == '\0')
    return MS_EINVAL;
  if (p.kind == MS_PROTO_TRANSPORT &&
      (!p.dial || (p.listen == NULL) != (p.listen_close == NULL)))
    return MS_EINVAL;
  if (p.kind == MS_PROTO_TRANSFORM && !p.wrap) return MS_EINVAL;
  if (p.kind != MS_PROTO_TRANSPORT && p.kind != MS_PROTO_TRANSFORM)
    return MS_EINVAL;
  if (ms__find_protocol(ms, p.name)) return MS_EEXIST;
  if (ms->nprotos == MS_MAX_PROTOCOLS) return MS_ELIMIT;
  ms_proto_entry_t *e = &ms->protos[ms->nprotos];
  e->proto = p;
  e->pdata = pdata;
  e->has_instance = false;
  if (p.init) {
    void *inst = NULL;
    int rc = p.init(ms, pdata, &inst);
    if (rc != 0) return rc;
    e->pdata = inst;
    e->has_instance = true;
  }
  ms->nprotos++;
  return 0;
}

int ms_protocol_find(const ms_t *ms, const char *name, void **instance) {
  if (ms == NULL || name == NULL) return MS_EINVAL;
  const ms_proto_entry_t *e = ms__find_protocol(ms, name);
  if (e == NULL) return MS_EPROTO_UNKNOWN;
  if (instance) *instance = e->pdata;
  return 0;
}

const ms_proto_entry_t *ms__find_protocol(const ms_t *ms, const char *name) {
  for (size_t i = 0; i < ms->nprotos; i++)
    if (strcmp(ms->protos[i].proto.name, name) == 0) return &ms->protos[i];
  return NULL;
}
