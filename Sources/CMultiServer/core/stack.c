/*
 * A stack is one ;-alternative of an address: a transport section followed
 * by transform sections. This file checks a stack against the registry and
 * runs its transforms, in order, over a transport's stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "address.h"

int ms__transport_scope(const ms_protocol_t *p, const ms_section_t *sec,
                        void *pdata) {
  if (p->scope) {
    int sc = p->scope(sec, pdata);
    return sc >= MS_SCOPE_DEVICE && sc <= MS_SCOPE_PUBLIC ? sc : MS_SCOPE_PUBLIC;
  }
  if (p->is_device && p->is_device(sec, pdata)) return MS_SCOPE_DEVICE;
  return MS_SCOPE_PUBLIC;
}

/* Any web page a user opens can make the browser open a WebSocket to any
 * address, localhost included, so no option lets noauth run over ws/wss. */
bool ms__browser_reachable(const char *transport) {
  return strcmp(transport, "ws") == 0 || strcmp(transport, "wss") == 0;
}
const char ms__noauth_ws_refusal[] =
    "noauth is never allowed over %s: any web page can open a WebSocket to this "
    "address (localhost included); use shs";

bool ms__noauth_scope_ok(const ms_options_t *o, int scope) {
  if (scope == MS_SCOPE_DEVICE) return true;
  if (o->allow_remote_noauth) return true;
  return scope == MS_SCOPE_LOOPBACK && o->allow_loopback_noauth;
}

static const char *noauth_refusal(int scope) {
  return scope == MS_SCOPE_LOOPBACK
             ? "noauth refused on loopback TCP, where any local user can connect "
               "(%s); set allow_loopback_noauth to permit it, or use a unix socket"
             : "noauth refused on a stack that leaves this device (%s); "
               "set allow_remote_noauth to permit it";
}

int ms__stack_resolve(ms_t *ms, const ms_addr_t *a, size_t alt, int role,
                      const ms_popts_t *opts, ms_stack_t *st, char *reason,
                      size_t reason_len) {
  memset(st, 0, sizeof(*st));
  st->opts = opts;
  st->nsec = ms_addr_sections(a, alt);
  if (st->nsec == 0 || st->nsec > MS_ADDR_MAX_SECTIONS) {
    ms__reason(reason, reason_len, "empty stack");
    return MS_ESTACK;
  }
  for (size_t i = 0; i < st->nsec; i++) {
    ms__addr_section(a, alt, i, &st->secs[i]);
    const ms_proto_entry_t *e = ms__find_protocol(ms, st->secs[i].name);
    if (e == NULL) {
      ms__reason(reason, reason_len, "unknown protocol \"%s\"", st->secs[i].name);
      return MS_EPROTO_UNKNOWN;
    }
    int want = i == 0 ? MS_PROTO_TRANSPORT : MS_PROTO_TRANSFORM;
    if (e->proto.kind != want) {
      ms__reason(reason, reason_len,
                 i == 0 ? "\"%s\" is a transform: a stack starts with a transport"
                        : "\"%s\" is a transport: only transforms may follow the first section",
                 st->secs[i].name);
      return MS_ESTACK;
    }
    st->protos[i] = e;
  }
  if (role == MS_ROLE_SERVER && st->protos[0]->proto.listen == NULL) {
    ms__reason(reason, reason_len, "\"%s\" is a client-only transport: it cannot listen",
               st->secs[0].name);
    return MS_ESTACK;
  }
  for (size_t i = 0; i < st->nsec; i++) {
    const ms_protocol_t *p = &st->protos[i]->proto;
    if (p->validate == NULL) continue;
    char why[MS_REASON_LEN] = "";
    int rc = p->validate(&st->secs[i], role, st->protos[i]->pdata, why, sizeof why);
    if (rc != 0) {
      ms__reason(reason, reason_len, "%s", why[0] ? why : ms_strerror(rc));
      return rc;
    }
  }
  const ms_protocol_t *t = &st->protos[0]->proto;
  st->scope = ms__transport_scope(t, &st->secs[0], st->protos[0]->pdata);
  if (ms__browser_reachable(st->secs[0].name)) {
    for (size_t i = 1; i < st->nsec; i++)
      if (strcmp(st->secs[i].name, "noauth") == 0) {
        ms__reason(reason, reason_len, ms__noauth_ws_refusal, st->secs[0].name);
        return MS_ENOAUTH_REMOTE;
      }
  }
  if (!ms__noauth_scope_ok(ms_options(ms), st->scope)) {
    for (size_t i = 1; i < st->nsec; i++)
      if (strcmp(st->secs[i].name, "noauth") == 0) {
        ms__reason(reason, reason_len, noauth_refusal(st->scope), st->secs[0].name);
        return MS_ENOAUTH_REMOTE;
      }
  }
  return ms__popts_check(opts, st, reason, reason_len);
}

/* ---- transform chain --------------------------------------------------- */

ms_t *ms_pwrap_ms(const ms_pwrap_t *pw) { return pw->ms; }
void ms_pwrap_set_impl(ms_pwrap_t *pw, void *impl) { pw->impl = impl; }
void *ms_pwrap_impl(const ms_pwrap_t *pw) { return pw->impl; }
bool ms_pwrap_is_device(const ms_pwrap_t *pw) {
  return pw->stack->scope == MS_SCOPE_DEVICE;
}
int ms_pwrap_scope(const ms_pwrap_t *pw) { return pw->stack->scope; }
size_t ms_pwrap_nsections(const ms_pwrap_t *pw) { return pw->stack->nsec; }
size_t ms_pwrap_position(const ms_pwrap_t *pw) { return pw->idx; }
const ms_section_t *ms_pwrap_section(const ms_pwrap_t *pw, size_t i) {
  return i < pw->stack->nsec ? &pw->stack->secs[i] : NULL;
}
const char *ms_pwrap_opt(const ms_pwrap_t *pw, const char *key) {
  return ms_popts_get(pw->stack->opts, pw->stack->protos[pw->idx]->proto.name, key);
}

/* The transform being applied is done with authorization. */
static void drop_auth(ms_pwrap_t *pw) {
  ms_pwrap_authorize_cancel(pw);
  if (pw->has_avalue) {
    ms__auth_free(pw->ms, pw->avalue);
    pw->has_avalue = false;
    pw->avalue = NULL;
  }
}

static void chain_finish(ms_pwrap_t *pw, ms_stream_t *s, int status, int fclass,
                         const char *reason) {
  drop_auth(pw);
  pw->cb(pw, s, status, fclass, reason, pw->arg);
  free(pw);
}

static void chain_fail(ms_pwrap_t *pw, int status, int fclass, const char *reason) {
  char buf[MS_REASON_LEN];
  const char *name = pw->stack->protos[pw->idx]->proto.name;
  ms__reason(buf, sizeof buf, "%s: %s", name, reason ? reason : ms_strerror(status));
  if (pw->canceled) status = MS_ECANCELED;
  if (fclass == MS_FAIL_DEFAULT) fclass = ms_error_class(status);
  chain_finish(pw, NULL, status, fclass, buf);
}

/* Apply transforms from pw->idx on, with s the stream below; returns when
 * one is in flight or the chain has finished. */
static void chain_step(ms_pwrap_t *pw, ms_stream_t *s) {
  for (;;) {
    if (pw->canceled) {
      ms_stream_close(s, NULL, NULL);
      chain_finish(pw, NULL, MS_ECANCELED, MS_FAIL_AUTH, "canceled");
      return;
    }
    if (pw->idx >= pw->stack->nsec) {
      chain_finish(pw, s, 0, MS_FAIL_DEFAULT, NULL);
      return;
    }
    const ms_proto_entry_t *e = pw->stack->protos[pw->idx];
    pw->impl = NULL;
    pw->handoff = NULL;
    pw->sync_done = false;
    pw->sync_status = 0;
    pw->sync_class = MS_FAIL_DEFAULT;
    pw->in_wrap = true;
    pw->lower = s;
    pw->t_step = uv_now(pw->ms->loop);
    int rc = e->proto.wrap(pw, s, &pw->stack->secs[pw->idx], pw->role, e->pdata);
    pw->in_wrap = false;
    if (rc != 0) {
      if (!pw->sync_done) ms_stream_close(s, NULL, NULL);
      chain_fail(pw, rc, MS_FAIL_DEFAULT, pw->sync_done ? pw->sync_reason : NULL);
      return;
    }
    if (!pw->sync_done) { /* in flight: ms_pwrap_done continues */
      pw->in_flight = true;
      return;
    }
    if (pw->sync_status != 0) {
      chain_fail(pw, pw->sync_status, pw->sync_class, pw->sync_reason);
      return;
    }
    s = pw->handoff;
  }
}

/* A transform's new stream: inherit from below, take the accepted value. */
static int adopt(ms_pwrap_t *pw, ms_stream_t *s) {
  /* This transform's own value first: then the stream below keeps (and
   * frees after its close) the value it carries, rather than handing it up
   * only to have it replaced and freed while it still points at it. */
  ms_pwrap_authorize_cancel(pw);
  if (pw->has_avalue) {
    ms__stream_own_auth(s, pw->avalue);
    pw->has_avalue = false;
    pw->avalue = NULL;
  }
  int rc = ms__stream_inherit(s, pw->lower);
  if (rc != 0) return rc;
  /* How long this transform took, for the application (time.shs_ms). */
  char key[48], v[24];
  snprintf(key, sizeof key, "time.%s_ms", pw->stack->protos[pw->idx]->proto.name);
  snprintf(v, sizeof v, "%llu", (unsigned long long)(uv_now(pw->ms->loop) - pw->t_step));
  return ms_stream_set_meta_str(s, key, v);
}

static void pwrap_finish(ms_pwrap_t *pw, int status, int fclass, ms_stream_t *s,
                         const char *reason) {
  if (status == 0 && s == NULL) status = MS_EINVAL;
  if (status == 0 && (status = adopt(pw, s)) != 0) {
    ms_stream_close(s, NULL, NULL); /* its close closes the stream below */
    s = NULL;
    reason = "out of memory";
  }
  if (status != 0) drop_auth(pw);
  if (pw->in_wrap) {
    pw->sync_done = true;
    if (status != 0) { /* chain_step finishes after wrap() returns */
      pw->sync_status = status;
      pw->sync_class = fclass;
      ms__reason(pw->sync_reason, sizeof pw->sync_reason, "%s",
                 reason ? reason : ms_strerror(status));
      return;
    }
    pw->handoff = s;
    pw->idx++;
    return;
  }
  pw->in_flight = false;
  if (status != 0) {
    chain_fail(pw, status, fclass, reason);
    return;
  }
  pw->idx++;
  chain_step(pw, s);
}

void ms_pwrap_done(ms_pwrap_t *pw, int status, ms_stream_t *s,
                   const char *reason) {
  pwrap_finish(pw, status, MS_FAIL_DEFAULT, s, reason);
}

void ms_pwrap_fail(ms_pwrap_t *pw, int status, int fclass, const char *reason) {
  pwrap_finish(pw, status ? status : MS_EINVAL, fclass, NULL, reason);
}

static void chain_begin(void *arg) {
  ms_pwrap_t *pw = arg;
  chain_step(pw, pw->handoff);
}

ms_pwrap_t *ms__chain_start(ms_t *ms, const ms_stack_t *st, ms_stream_t *lower,
                            int role, ms_chain_cb cb, void *arg) {
  ms_pwrap_t *pw = calloc(1, sizeof(*pw));
  if (pw == NULL) {
    ms_stream_close(lower, NULL, NULL);
    return NULL;
  }
  pw->ms = ms;
  pw->stack = st;
  pw->idx = 1;
  pw->role = role;
  pw->cb = cb;
  pw->arg = arg;
  pw->handoff = lower;
  ms_defer(ms, &pw->start_node, chain_begin, pw);
  return pw;
}

void ms__chain_cancel(ms_pwrap_t *pw) {
  if (pw->canceled) return;
  pw->canceled = true;
  if (!pw->in_flight) return; /* chain_step sees the flag */
  const ms_protocol_t *p = &pw->stack->protos[pw->idx]->proto;
  if (p->wrap_cancel) p->wrap_cancel(pw);
}

int ms__addr_parse_reason(const char *address, ms_addr_t **out, char *reason,
                          size_t reason_len) {
  ms_addr_error_t e;
  int rc = ms_addr_parse(address, strlen(address), out, &e);
  if (rc == MS_EADDRESS) {
    char where[64] = "";
    if (e.alternative >= 0 && e.section >= 0)
      snprintf(where, sizeof where, " (alternative %d, section %d)",
               e.alternative + 1, e.section + 1);
    else if (e.alternative >= 0)
      snprintf(where, sizeof where, " (alternative %d)", e.alternative + 1);
    ms__reason(reason, reason_len, "bad address at offset %zu%s: %s", e.offset,
               where, e.message);
  } else if (rc != 0) {
    ms__reason(reason, reason_len, "%s", ms_strerror(rc));
  }
  return rc;
}

/* ---- registry-free check of an address ----------------------------------- */

static const ms_protocol_t *builtin(const char *name, ms_protocol_t *out) {
  for (size_t i = 0; ms__builtins[i]; i++)
    if (strcmp(ms__builtins[i]->name, name) == 0 && ms__proto_copy(ms__builtins[i], out) == 0)
      return out;
  return NULL;
}

int ms_address_check(const char *address, bool listen, char **canonical,
                     char *reason, size_t reason_len) {
  if (address == NULL) return MS_EINVAL;
  ms_addr_t *a;
  int rc = ms__addr_parse_reason(address, &a, reason, reason_len);
  if (rc != 0) return rc;
  int role = listen ? MS_ROLE_SERVER : MS_ROLE_CLIENT;
  for (size_t alt = 0; alt < ms_addr_alternatives(a) && rc == 0; alt++) {
    size_t n = ms_addr_sections(a, alt);
    ms_section_t secs[MS_ADDR_MAX_SECTIONS];
    ms_protocol_t copies[MS_ADDR_MAX_SECTIONS];
    const ms_protocol_t *protos[MS_ADDR_MAX_SECTIONS] = {0};
    bool all_known = true;
    for (size_t i = 0; i < n; i++) {
      ms__addr_section(a, alt, i, &secs[i]);
      protos[i] = builtin(secs[i].name, &copies[i]);
      if (protos[i] == NULL) all_known = false;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
      if (protos[i] == NULL) continue;
      int want = i == 0 ? MS_PROTO_TRANSPORT : MS_PROTO_TRANSFORM;
      if (all_known && protos[i]->kind != want) {
        ms__reason(reason, reason_len, "alternative %zu: \"%s\" is a %s and cannot be section %zu",
                   alt + 1, secs[i].name,
                   protos[i]->kind == MS_PROTO_TRANSPORT ? "transport" : "transform", i + 1);
        rc = MS_ESTACK;
        break;
      }
      char why[MS_REASON_LEN] = "";
      rc = protos[i]->validate ? protos[i]->validate(&secs[i], role, NULL, why, sizeof why) : 0;
      if (rc != 0)
        ms__reason(reason, reason_len, "alternative %zu: %s", alt + 1,
                   why[0] ? why : ms_strerror(rc));
    }
    if (rc == 0 && n > 0 && ms__browser_reachable(secs[0].name))
      for (size_t i = 1; i < n && rc == 0; i++)
        if (strcmp(secs[i].name, "noauth") == 0) {
          char why[MS_REASON_LEN];
          ms__reason(why, sizeof why, ms__noauth_ws_refusal, secs[0].name);
          ms__reason(reason, reason_len, "alternative %zu: %s", alt + 1, why);
          rc = MS_ENOAUTH_REMOTE;
        }
    if (rc == 0 && all_known && n > 0) {
      int scope = ms__transport_scope(protos[0], &secs[0], NULL);
      for (size_t i = 1; i < n && scope != MS_SCOPE_DEVICE; i++)
        if (strcmp(secs[i].name, "noauth") == 0) {
          ms__reason(reason, reason_len,
                     scope == MS_SCOPE_LOOPBACK
                         ? "alternative %zu: noauth on loopback TCP needs allow_loopback_noauth"
                         : "alternative %zu: noauth on a stack that leaves this device",
                     alt + 1);
          rc = MS_ENOAUTH_REMOTE;
        }
      if (rc == 0 && listen && protos[0]->listen == NULL) {
        ms__reason(reason, reason_len, "alternative %zu: \"%s\" is a client-only transport",
                   alt + 1, secs[0].name);
        rc = MS_ESTACK;
      }
    }
  }
  if (rc == 0 && canonical) {
    *canonical = ms_addr_to_string(a);
    if (*canonical == NULL) rc = MS_ENOMEM;
  }
  ms_addr_free(a);
  return rc;
}
