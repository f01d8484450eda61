/*
 * ms_connect: dial a multiaddress. The ;-alternatives are tried in order;
 * unknown protocols and malformed stacks are skipped, a path failure (of a
 * transport, or met during a transform: reset, hang-up, timeout) falls back
 * to the next alternative; an authentication failure (a protocol's verdict:
 * wrong key, not authorized) stops, since another path will not fix it. The
 * protocols say which is which (ms_pdial_fail, ms_pwrap_fail, else
 * ms_error_class). The callback never fires from inside ms_connect() or
 * ms_connect_cancel().
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "address.h"

#define CONNECT_REASONS 2048

struct ms_pdial_s {
  ms_connect_t *c;
  void *impl;
};

struct ms_connect_s {
  ms_t *ms;
  ms_addr_t *addr;
  ms_popts_t *opts;
  ms_defer_t node;
  size_t alt, nalts;
  int last_status;
  ms_stack_t stack;
  ms_pdial_t pd;
  bool dialing;
  ms_pwrap_t *chain;
  bool canceled;
  bool finished;
  bool in_cancel;     /* inside ms_connect_cancel: defer the callback */
  ms_stream_t *fin_s; /* outcome kept for a deferred callback */
  int fin_status;
  ms_connect_cb cb;
  void *arg;
  char reasons[CONNECT_REASONS];
};

ms_t *ms_pdial_ms(const ms_pdial_t *pd) { return pd->c->ms; }
const char *ms_pdial_opt(const ms_pdial_t *pd, const char *key) {
  return ms_popts_get(pd->c->opts, pd->c->stack.protos[0]->proto.name, key);
}
void ms_pdial_set_impl(ms_pdial_t *pd, void *impl) { pd->impl = impl; }
void *ms_pdial_impl(const ms_pdial_t *pd) { return pd->impl; }

static void note(ms_connect_t *c, const char *alt, const char *why) {
  size_t len = strlen(c->reasons);
  if (len + 4 >= sizeof c->reasons) return;
  ms__reason(c->reasons + len, sizeof c->reasons - len, "%s%s%s%s",
             len ? "; " : "", alt ? alt : "", alt ? ": " : "", why);
}

static void finish_now(void *arg) {
  ms_connect_t *c = arg;
  ms_stream_t *s = c->fin_s;
  int status = c->fin_status;
  ms_t *ms = c->ms;
  c->cb(s, status, status ? c->reasons : NULL, c->arg);
  ms_addr_free(c->addr);
  ms_popts_free(c->opts);
  free(c);
  ms__live_dec(ms);
}

static void finish(ms_connect_t *c, ms_stream_t *s, int status) {
  c->finished = true;
  if (status != 0 && c->reasons[0] == '\0')
    ms__reason(c->reasons, sizeof c->reasons, "%s", ms_strerror(status));
  c->fin_s = s;
  c->fin_status = status;
  /* A transform may finish its cancel synchronously: still never call back
   * from inside ms_connect_cancel(). */
  if (c->in_cancel) {
    ms_defer(c->ms, &c->node, finish_now, c);
    return;
  }
  finish_now(c);
}

static void next_alt(void *arg);
static void alt_failed(ms_connect_t *c, int status, const char *why);

/* An authentication verdict will not change on another path; a path
 * problem met during a handshake (reset, hang-up, timeout) may. */
static void on_chain(ms_pwrap_t *pw, ms_stream_t *s, int status, int fclass,
                     const char *reason, void *arg) {
  (void)pw;
  ms_connect_t *c = arg;
  c->chain = NULL;
  if (status != 0 && !c->canceled && status != MS_ECANCELED &&
      fclass != MS_FAIL_AUTH) {
    alt_failed(c, status, reason ? reason : ms_strerror(status));
    return;
  }
  if (status != 0) note(c, NULL, reason ? reason : ms_strerror(status));
  finish(c, s, status);
}

static void alt_failed(ms_connect_t *c, int status, const char *why) {
  char label[64];
  ms__reason(label, sizeof label, "alternative %zu", c->alt + 1);
  note(c, label, why);
  c->last_status = status;
  c->alt++;
  next_alt(c);
}

static void dial_finish(ms_pdial_t *pd, int status, int fclass, ms_stream_t *s,
                        const char *reason) {
  ms_connect_t *c = pd->c;
  c->dialing = false;
  if (c->canceled) {
    if (s) ms_stream_close(s, NULL, NULL);
    finish(c, NULL, MS_ECANCELED);
    return;
  }
  if (status != 0 || s == NULL) {
    if (status == 0) status = MS_EINVAL;
    if (fclass == MS_FAIL_DEFAULT) fclass = MS_FAIL_PATH; /* a transport's */
    if (fclass == MS_FAIL_AUTH) {
      char label[64];
      ms__reason(label, sizeof label, "alternative %zu", c->alt + 1);
      note(c, label, reason ? reason : ms_strerror(status));
      finish(c, NULL, status);
      return;
    }
    alt_failed(c, status, reason ? reason : ms_strerror(status));
    return;
  }
  if (c->stack.nsec == 1) {
    finish(c, s, 0);
    return;
  }
  c->chain = ms__chain_start(c->ms, &c->stack, s, MS_ROLE_CLIENT, on_chain, c);
  if (c->chain == NULL) finish(c, NULL, MS_ENOMEM);
}

void ms_pdial_done(ms_pdial_t *pd, int status, ms_stream_t *s,
                   const char *reason) {
  dial_finish(pd, status, MS_FAIL_DEFAULT, s, reason);
}

void ms_pdial_fail(ms_pdial_t *pd, int status, int fclass, const char *reason) {
  dial_finish(pd, status ? status : MS_EINVAL, fclass, NULL, reason);
}

static void next_alt(void *arg) {
  ms_connect_t *c = arg;
  if (c->canceled) {
    finish(c, NULL, MS_ECANCELED);
    return;
  }
  for (; c->alt < c->nalts; c->alt++) {
    char why[MS_REASON_LEN] = "", label[64];
    ms__reason(label, sizeof label, "alternative %zu", c->alt + 1);
    int rc = ms__stack_resolve(c->ms, c->addr, c->alt, MS_ROLE_CLIENT, c->opts,
                               &c->stack, why, sizeof why);
    if (rc != 0) {
      note(c, label, why);
      c->last_status = rc;
      continue;
    }
    const ms_proto_entry_t *t = c->stack.protos[0];
    c->pd.c = c;
    c->pd.impl = NULL;
    c->dialing = true;
    rc = t->proto.dial(&c->pd, &c->stack.secs[0], t->pdata);
    if (rc != 0) {
      c->dialing = false;
      note(c, label, ms_strerror(rc));
      c->last_status = rc;
      continue;
    }
    return; /* ms_pdial_done continues */
  }
  int status = c->last_status ? c->last_status : MS_EPROTO_UNKNOWN;
  if (c->nalts > 1) status = MS_EALLFAILED;
  finish(c, NULL, status);
}

static void parse_failed(void *arg) {
  ms_connect_t *c = arg;
  finish(c, NULL, MS_EADDRESS);
}

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
  void (*start)(void *) = next_alt;
  if (ms__addr_parse_reason(address, &c->addr, c->reasons, sizeof c->reasons) != 0) {
    c->addr = NULL;
    start = parse_failed;
  } else {
    c->nalts = ms_addr_alternatives(c->addr);
  }
  ms_defer(ms, &c->node, start, c);
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
  c->in_cancel = true;
  if (c->dialing) {
    const ms_protocol_t *t = &c->stack.protos[0]->proto;
    if (t->dial_cancel) t->dial_cancel(&c->pd);
  } else if (c->chain) {
    ms__chain_cancel(c->chain);
  }
  c->in_cancel = false; /* c is alive: a finish inside was deferred */
  /* else: next_alt or parse_failed is queued and sees the flag */
}
