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

/* Provided by the shs transform (shs.c). */
extern const ms_protocol_t ms__proto_shs;

void ms_options_init(ms_options_t *opts) {
  memset(opts, 0, sizeof(*opts));
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

void ms__live_inc(ms_t *ms) { ms->live++; }
void ms__live_dec(ms_t *ms) { ms->live--; }

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

static void run_deferred(uv_idle_t *h) {
  ms_t *ms = h->data;
  ms_call_t *c = ms->dhead;
  ms->dhead = ms->dtail = NULL;
  while (c) {
    ms_call_t *next = c->next;
    c->fn(c->arg);
    free(c);
    c = next;
  }
  if (ms->dhead == NULL) uv_idle_stop(&ms->idle);
}

int ms__defer(ms_t *ms, void (*fn)(void *arg), void *arg) {
  ms_call_t *c = malloc(sizeof(*c));
  if (c == NULL) return MS_ENOMEM;
  c->fn = fn;
  c->arg = arg;
  c->next = NULL;
  if (ms->dtail)
    ms->dtail->next = c;
  else
    ms->dhead = c;
  ms->dtail = c;
  return uv_idle_start(&ms->idle, run_deferred);
}

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
  if (opts) ms->opts = *opts;
  if (!ms->opts.keep_sigpipe) ignore_default_sigpipe();
  if (opts && opts->keys)
    ms->keys = *opts->keys;
  else if (ms_keypair_generate(&ms->keys) != 0)
    return MS_EKEY;
  memcpy(ms->app_key, opts && opts->app_key ? opts->app_key : ms_appkey_scuttlebutt(),
         MS_APPKEYBYTES);
  ms->opts.keys = &ms->keys;
  ms->opts.app_key = ms->app_key;
  if (ms->opts.handshake_timeout_ms == 0) ms->opts.handshake_timeout_ms = 15000;
  if (ms->opts.connect_timeout_ms == 0) ms->opts.connect_timeout_ms = 10000;
  ms->slab = malloc(MS_READ_SLAB);
  if (ms->slab == NULL) return MS_ENOMEM;
  int rc = uv_mutex_init(&ms->qlock);
  if (rc != 0) return rc;
  rc = uv_async_init(ms->loop, &ms->async, drain_calls);
  if (rc != 0) {
    uv_mutex_destroy(&ms->qlock);
    return rc;
  }
  ms->async.data = ms;
  uv_idle_init(ms->loop, &ms->idle);
  ms->idle.data = ms;
  /* The queue alone must not keep ms_run() going. */
  uv_unref((uv_handle_t *)&ms->async);
  ms_register(ms, &ms__proto_net, NULL);
  ms_register(ms, &ms__proto_unix, NULL);
  ms_register(ms, &ms__proto_noauth, NULL);
  ms_register(ms, &ms__proto_shs, ms); /* shs_validate checks listen keys */
  return 0;
}

static void wipe_free(ms_t *ms) {
  /* The slab last held decrypted bytes (box-stream opens in place). */
  if (ms->slab) sodium_memzero(ms->slab, MS_READ_SLAB);
  free(ms->slab);
  sodium_memzero(ms, sizeof(*ms));
  free(ms);
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
    wipe_free(ms);
    return rc;
  }
  *out = ms;
  return 0;
}

static void on_async_closed(uv_handle_t *h) {
  ms_t *ms = h->data;
  ms->async.data = NULL;
}

int ms_delete(ms_t *ms) {
  if (ms == NULL) return MS_EINVAL;
  if (ms->live != 0) return MS_EEXIST;
  if (ms->thread_started) return MS_EEXIST;
  /* Run what is still queued (e.g. deferred close callbacks). */
  drain_calls(&ms->async);
  while (ms->dhead) run_deferred(&ms->idle);
  if (ms->live != 0) return MS_EEXIST;
  uv_close((uv_handle_t *)&ms->idle, NULL);
  uv_close((uv_handle_t *)&ms->async, on_async_closed);
  while (ms->async.data != NULL) uv_run(ms->loop, UV_RUN_NOWAIT);
  uv_mutex_destroy(&ms->qlock);
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
  return uv_run(ms->loop, m);
}

void ms_stop(ms_t *ms) { uv_stop(ms->loop); }
uv_loop_t *ms_loop(const ms_t *ms) { return ms->loop; }
const ms_keypair_t *ms_keys(const ms_t *ms) { return &ms->keys; }
const uint8_t *ms_app_key(const ms_t *ms) { return ms->app_key; }
const ms_options_t *ms_options(const ms_t *ms) { return &ms->opts; }

/* ---- threads ---------------------------------------------------------- */

static void loop_thread(void *arg) {
  ms_t *ms = arg;
  uv_run(ms->loop, UV_RUN_DEFAULT);
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

int ms_register(ms_t *ms, const ms_protocol_t *proto, void *pdata) {
  if (ms == NULL || proto == NULL || proto->name == NULL) return MS_EINVAL;
  if (proto->kind == MS_PROTO_TRANSPORT && (!proto->listen || !proto->dial))
    return MS_EINVAL;
  if (proto->kind == MS_PROTO_TRANSFORM && !proto->wrap) return MS_EINVAL;
  if (proto->kind != MS_PROTO_TRANSPORT && proto->kind != MS_PROTO_TRANSFORM)
    return MS_EINVAL;
  if (ms__find_protocol(ms, proto->name)) return MS_EEXIST;
  if (ms->nprotos == MS_MAX_PROTOCOLS) return MS_ELIMIT;
  ms->protos[ms->nprotos].proto = proto;
  ms->protos[ms->nprotos].pdata = pdata;
  ms->nprotos++;
  return 0;
}

const ms_proto_entry_t *ms__find_protocol(const ms_t *ms, const char *name) {
  for (size_t i = 0; i < ms->nprotos; i++)
    if (strcmp(ms->protos[i].proto->name, name) == 0) return &ms->protos[i];
  return NULL;
}
