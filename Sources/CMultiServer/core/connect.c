/*
 * ms_connect: dial a multiaddress. The ;-alternatives are ranked (device
 * before local before public, then a preferred transport order, then as
 * written) and started staggered — the next one after connect.stagger_ms
 * (250 ms) unless an earlier one finished first — so a black-holed first
 * alternative costs a stagger, not a connect timeout. The first whose whole
 * stack completes wins and the others are canceled (their half-done
 * handshakes closed). A path failure (refused, reset, hang-up, timeout)
 * starts the next alternative at once; an authentication failure (a
 * protocol's verdict: wrong key, not authorized) stops everything, since
 * another path will not fix it. Unknown protocols and malformed stacks are
 * skipped. The callback never fires from inside ms_connect() or
 * ms_connect_cancel(); the reason names every alternative's failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "address.h"

#define CONNECT_REASONS 2048
#define DEFAULT_STAGGER_MS 250

typedef struct attempt_s attempt_t;

struct ms_pdial_s {
  attempt_t *a;
  void *impl;
};

struct attempt_s {
  ms_connect_t *c;
  size_t alt; /* index in the address, for reasons */
  ms_stack_t stack;
  ms_pdial_t pd;
  bool dialing;
  ms_pwrap_t *chain;
  bool running;
  uint64_t t0; /* loop time the dial started */
  int rank;
};

struct ms_connect_s {
  ms_t *ms;
  ms_addr_t *addr;
  ms_popts_t *opts;
  ms_defer_t node;
  ms_defer_t free_node;
  int pre_status; /* an option error found by ms_connect_with */
  size_t nalts;
  attempt_t *att;
  size_t natt, next, running;
  char **why; /* per alternative, NULL if it has nothing to say */
  uv_timer_t timer;
  bool timer_open;
  uint64_t stagger_ms;
  int last_status;
  bool canceled;
  bool finished;  /* the outcome is decided */
  bool delivered; /* the callback has fired */
  bool freeing;
  bool in_cancel; /* inside ms_connect_cancel: defer the callback */
  ms_stream_t *fin_s;
  int fin_status;
  ms_connect_cb cb;
  void *arg;
  char reasons[CONNECT_REASONS];
};

ms_t *ms_pdial_ms(const ms_pdial_t *pd) { return pd->a->c->ms; }
const char *ms_pdial_opt(const ms_pdial_t *pd, const char *key) {
  return ms_popts_get(pd->a->c->opts, pd->a->stack.protos[0]->proto.name, key);
}
void ms_pdial_set_impl(ms_pdial_t *pd, void *impl) { pd->impl = impl; }
void *ms_pdial_impl(const ms_pdial_t *pd) { return pd->impl; }

static void set_why(ms_connect_t *c, size_t alt, const char *why) {
  if (c->why == NULL || alt >= c->nalts || c->why[alt]) return;
  size_t n = strlen(why);
  c->why[alt] = malloc(n + 1);
  if (c->why[alt]) memcpy(c->why[alt], why, n + 1);
}

/* "alternative 1: …; alternative 2: …" in the address's order. */
static void compose_reasons(ms_connect_t *c) {
  size_t len = strlen(c->reasons);
  for (size_t i = 0; c->why && i < c->nalts; i++) {
    if (c->why[i] == NULL) continue;
    if (len + 4 >= sizeof c->reasons) break;
    ms__reason(c->reasons + len, sizeof c->reasons - len, "%salternative %zu: %s",
               len ? "; " : "", i + 1, c->why[i]);
    len = strlen(c->reasons);
  }
}

static void on_timer_closed(uv_handle_t *h) {
  ms_connect_t *c = h->data;
  ms_t *ms = c->ms;
  for (size_t i = 0; c->why && i < c->nalts; i++) free(c->why[i]);
  free(c->why);
  free(c->att);
  ms_addr_free(c->addr);
  ms_popts_free(c->opts);
  free(c);
  ms__live_dec(ms);
}

static void do_free(void *arg) {
  ms_connect_t *c = arg;
  if (c->timer_open) {
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
  } else {
    c->timer.data = c;
    on_timer_closed((uv_handle_t *)&c->timer);
  }
}

/* Free once the callback fired and no attempt can call back any more; on
 * a later turn, so no frame of ours still holds c. */
static void maybe_free(ms_connect_t *c) {
  if (!c->delivered || c->running != 0 || c->freeing) return;
  c->freeing = true;
  ms_defer(c->ms, &c->free_node, do_free, c);
}

/* An alternative failed (INFO: the connect may still succeed). */
static void log_alt(ms_connect_t *c, const attempt_t *a, int status, const char *why) {
  if (!ms__log_on(c->ms, MS_LOG_INFO)) return;
  char sec[256];
  ms__section_print(&a->stack.secs[0], sec, sizeof sec);
  ms__log(c->ms, MS_LOG_INFO, "connect", "alternative %zu (%s) failed: %s", a->alt + 1, sec,
          why ? why : ms_strerror(status));
}

/* The outcome: DEBUG when connected or canceled, WARN when it failed. */
static void log_outcome(ms_connect_t *c, ms_stream_t *s, int status) {
  if (status == 0)
    ms__log(c->ms, MS_LOG_DEBUG, "connect", "connected: %s", s ? ms_stream_address(s) : "");
  else if (status == MS_ECANCELED)
    ms__log(c->ms, MS_LOG_DEBUG, "connect", "canceled");
  else
    ms__log(c->ms, MS_LOG_WARN, "connect", "failed: %s (%s)", c->reasons, ms_strerror(status));
}

static void deliver(void *arg) {
  ms_connect_t *c = arg;
  if (c->delivered) return;
  c->delivered = true;
  int status = c->fin_status;
  if (status != 0 && c->reasons[0] == '\0') compose_reasons(c);
  if (status != 0 && c->reasons[0] == '\0')
    ms__reason(c->reasons, sizeof c->reasons, "%s", ms_strerror(status));
  log_outcome(c, c->fin_s, status);
  c->cb(c->fin_s, status, status ? c->reasons : NULL, c->arg);
  maybe_free(c);
}

static void cancel_attempt(attempt_t *a) {
  if (!a->running) return;
  if (a->dialing) {
    const ms_protocol_t *t = &a->stack.protos[0]->proto;
    if (t->dial_cancel) t->dial_cancel(&a->pd);
  } else if (a->chain) {
    ms__chain_cancel(a->chain);
  }
}

/* The outcome is decided: stop the others, then tell the caller. */
static void finish(ms_connect_t *c, ms_stream_t *s, int status) {
  if (c->finished) {
    if (s) ms_stream_close(s, NULL, NULL);
    return;
  }
  c->finished = true;
  c->fin_s = s;
  c->fin_status = status;
  if (c->timer_open) uv_timer_stop(&c->timer);
  bool was = c->in_cancel;
  c->in_cancel = true; /* an attempt may finish its cancel synchronously */
  for (size_t i = 0; i < c->natt; i++) cancel_attempt(&c->att[i]);
  c->in_cancel = was;
  /* Never from inside ms_connect_cancel (or an attempt's cancel). */
  if (c->in_cancel)
    ms_defer(c->ms, &c->node, deliver, c);
  else
    deliver(c);
}

static void launch_next(ms_connect_t *c);

static void all_done_check(ms_connect_t *c) {
  if (c->finished || c->running != 0 || c->next < c->natt) return;
  int status = c->canceled ? MS_ECANCELED
               : c->last_status ? c->last_status
                                : MS_EPROTO_UNKNOWN;
  if (!c->canceled && c->nalts > 1) status = MS_EALLFAILED;
  finish(c, NULL, status);
}

static void attempt_over(attempt_t *a) {
  ms_connect_t *c = a->c;
  a->running = false;
  a->dialing = false;
  a->chain = NULL;
  c->running--;
}

static void attempt_failed(attempt_t *a, int status, int fclass, const char *why) {
  ms_connect_t *c = a->c;
  attempt_over(a);
  if (c->finished) { /* canceled after another won (or a stop) */
    maybe_free(c);
    return;
  }
  if (c->canceled || status == MS_ECANCELED) {
    all_done_check(c);
    maybe_free(c);
    return;
  }
  set_why(c, a->alt, why ? why : ms_strerror(status));
  c->last_status = status;
  log_alt(c, a, status, why);
  if (fclass == MS_FAIL_AUTH) {
    finish(c, NULL, status); /* another path will not fix it */
    maybe_free(c);
    return;
  }
  /* A path failure: the next alternative need not wait for the stagger. */
  if (c->next < c->natt) launch_next(c);
  all_done_check(c);
  maybe_free(c);
}

static void set_time(ms_stream_t *s, const char *key, uint64_t ms) {
  char v[24];
  snprintf(v, sizeof v, "%llu", (unsigned long long)ms);
  if (ms_stream_set_meta_str(s, key, v) != 0) return; /* timings are best effort */
}

static void on_chain(ms_pwrap_t *pw, ms_stream_t *s, int status, int fclass,
                     const char *reason, void *arg) {
  (void)pw;
  attempt_t *a = arg;
  ms_connect_t *c = a->c;
  a->chain = NULL;
  if (status != 0) {
    attempt_failed(a, status, fclass, reason);
    return;
  }
  attempt_over(a);
  set_time(s, "time.total_ms", uv_now(c->ms->loop) - a->t0);
  finish(c, s, 0); /* closes s if another won already */
  maybe_free(c);
}

static void dial_finish(ms_pdial_t *pd, int status, int fclass, ms_stream_t *s,
                        const char *reason) {
  attempt_t *a = pd->a;
  ms_connect_t *c = a->c;
  a->dialing = false;
  if (status == 0 && s == NULL) status = MS_EINVAL;
  if (status != 0) {
    if (s) ms_stream_close(s, NULL, NULL);
    if (fclass == MS_FAIL_DEFAULT) fclass = MS_FAIL_PATH; /* a transport's */
    attempt_failed(a, status, fclass, reason);
    return;
  }
  if (c->finished || c->canceled) {
    ms_stream_close(s, NULL, NULL);
    attempt_failed(a, MS_ECANCELED, MS_FAIL_PATH, NULL);
    return;
  }
  s->max_queue = (size_t)ms__limit(c->ms, c->opts, "max_write_queue");
  set_time(s, "time.connect_ms", uv_now(c->ms->loop) - a->t0);
  if (a->stack.nsec == 1) {
    attempt_over(a);
    set_time(s, "time.total_ms", uv_now(c->ms->loop) - a->t0);
    finish(c, s, 0);
    maybe_free(c);
    return;
  }
  a->chain = ms__chain_start(c->ms, &a->stack, s, MS_ROLE_CLIENT, on_chain, a);
  if (a->chain == NULL) attempt_failed(a, MS_ENOMEM, MS_FAIL_PATH, "out of memory");
}

void ms_pdial_done(ms_pdial_t *pd, int status, ms_stream_t *s,
                   const char *reason) {
  dial_finish(pd, status, MS_FAIL_DEFAULT, s, reason);
}

void ms_pdial_fail(ms_pdial_t *pd, int status, int fclass, const char *reason) {
  dial_finish(pd, status ? status : MS_EINVAL, fclass, NULL, reason);
}

static void on_stagger(uv_timer_t *t) {
  ms_connect_t *c = t->data;
  if (!c->finished && c->next < c->natt) launch_next(c);
}

/* Start the next ranked attempt; arm the stagger for the one after. */
static void launch_next(ms_connect_t *c) {
  while (!c->finished && c->next < c->natt) {
    attempt_t *a = &c->att[c->next++];
    const ms_proto_entry_t *t = a->stack.protos[0];
    a->c = c;
    a->pd.a = a;
    a->pd.impl = NULL;
    a->dialing = true;
    a->running = true;
    a->t0 = uv_now(c->ms->loop);
    c->running++;
    int rc = t->proto.dial(&a->pd, &a->stack.secs[0], t->pdata);
    if (rc != 0) {
      a->dialing = false;
      a->running = false;
      c->running--;
      set_why(c, a->alt, ms_strerror(rc));
      c->last_status = rc;
      log_alt(c, a, rc, NULL);
      continue;
    }
    if (c->next < c->natt && c->timer_open) {
      uv_timer_stop(&c->timer);
      uv_timer_start(&c->timer, on_stagger, c->stagger_ms, 0);
    }
    return;
  }
}

/* Rank: scope (device first), then the connect.prefer order of transport
 * names, then the address's own order. */
static int prefer_rank(const char *prefer, const char *name) {
  if (prefer == NULL) return 0;
  size_t n = strlen(name);
  int idx = 1;
  for (const char *p = prefer; *p; idx++) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return idx;
    if (!e) break;
    p = e + 1;
  }
  return 1000;
}

static int cmp_attempt(const void *x, const void *y) {
  const attempt_t *a = x, *b = y;
  if (a->rank != b->rank) return a->rank < b->rank ? -1 : 1;
  return a->alt < b->alt ? -1 : a->alt > b->alt;
}

static void start(void *arg) {
  ms_connect_t *c = arg;
  if (c->canceled) {
    finish(c, NULL, MS_ECANCELED);
    maybe_free(c);
    return;
  }
  c->att = calloc(c->nalts ? c->nalts : 1, sizeof(*c->att));
  c->why = calloc(c->nalts ? c->nalts : 1, sizeof(char *));
  if (c->att == NULL || c->why == NULL) {
    finish(c, NULL, MS_ENOMEM);
    maybe_free(c);
    return;
  }
  const char *prefer = ms_popts_get(c->opts, "connect", "prefer");
  for (size_t i = 0; i < c->nalts; i++) {
    attempt_t *a = &c->att[c->natt];
    char why[MS_REASON_LEN] = "";
    int rc = ms__stack_resolve(c->ms, c->addr, i, MS_ROLE_CLIENT, c->opts, &a->stack, why,
                               sizeof why);
    if (rc != 0) {
      set_why(c, i, why);
      c->last_status = rc;
      continue;
    }
    a->alt = i;
    a->rank = a->stack.scope * 10000 + prefer_rank(prefer, a->stack.secs[0].name);
    c->natt++;
  }
  qsort(c->att, c->natt, sizeof(*c->att), cmp_attempt);
  /* stack.secs point into c->addr, not into the attempt: moving is fine. */
  if (c->natt > 1 && c->stagger_ms > 0) {
    if (uv_timer_init(c->ms->loop, &c->timer) == 0) {
      c->timer.data = c;
      c->timer_open = true;
    }
  }
  launch_next(c);
  all_done_check(c);
  maybe_free(c);
}

static void parse_failed(void *arg) {
  ms_connect_t *c = arg;
  finish(c, NULL, c->pre_status ? c->pre_status : MS_EADDRESS);
  maybe_free(c);
}

static const char *const connect_keys[] = {"stagger_ms", "prefer", NULL};

int ms_connect_with(ms_t *ms, const char *address, const ms_popts_t *opts,
                    ms_connect_cb cb, void *arg, ms_connect_t **req) {
  if (ms == NULL || address == NULL || cb == NULL) return MS_EINVAL;
  if (ms->state != MS_STATE_OPEN) return MS_ECLOSED;
  ms_connect_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return MS_ENOMEM;
  if (ms__popts_copy(opts, &c->opts) != 0) {
    free(c);
    return MS_ENOMEM;
  }
  c->ms = ms;
  c->cb = cb;
  c->arg = arg;
  c->stagger_ms = DEFAULT_STAGGER_MS;
  void (*first)(void *) = start;
  const char *sv = ms_popts_get(c->opts, "connect", "stagger_ms");
  for (size_t i = 0; c->opts && i < c->opts->n; i++) {
    if (strcmp(c->opts->proto[i], "connect") != 0) continue;
    bool known = false;
    for (const char *const *k = connect_keys; *k; k++) known |= strcmp(*k, c->opts->key[i]) == 0;
    if (!known) {
      ms__reason(c->reasons, sizeof c->reasons,
                 "option connect.%s: unknown (known: stagger_ms, prefer)", c->opts->key[i]);
      c->fin_status = MS_EINVAL;
    }
  }
  if (sv && ms_opt_uint(sv, 600000, &c->stagger_ms) != 0) {
    ms__reason(c->reasons, sizeof c->reasons, "option connect.stagger_ms: not a number");
    c->fin_status = MS_EINVAL;
  }
  if (c->fin_status == 0 &&
      ms__addr_parse_reason(address, &c->addr, c->reasons, sizeof c->reasons) != 0) {
    c->addr = NULL;
    first = parse_failed;
  } else if (c->fin_status == 0) {
    c->nalts = ms_addr_alternatives(c->addr);
  }
  if (c->fin_status != 0) {
    c->pre_status = c->fin_status;
    c->fin_status = 0;
    first = parse_failed; /* reported through cb, with the reason */
    c->nalts = 0;
  }
  ms_defer(ms, &c->node, first, c);
  ms__live_inc(ms);
  if (req) *req = c;
  return 0;
}

int ms_connect(ms_t *ms, const char *address, ms_connect_cb cb, void *arg,
               ms_connect_t **req) {
  return ms_connect_with(ms, address, NULL, cb, arg, req);
}

void ms_connect_cancel(ms_connect_t *c) {
  if (c == NULL || c->canceled || c->finished) return;
  c->canceled = true;
  if (c->att == NULL) return; /* start or parse_failed is queued and sees the flag */
  c->in_cancel = true;
  finish(c, NULL, MS_ECANCELED); /* delivers on a later turn */
  c->in_cancel = false;
  maybe_free(c);
}
