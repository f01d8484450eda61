/*
 * ms_stream_wrap: run transforms over a stream the caller already has. A
 * transport that nests a layer uses it (wss runs "tls" over its TCP stream);
 * so can an application that got a socket elsewhere and wants shs on it. The
 * same chain runs the transforms as for a listen or a connect.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "address.h"

struct ms_wrap_s {
  ms_t *ms;
  ms_addr_t *addr;
  ms_popts_t *opts;
  ms_stack_t stack;
  ms_pwrap_t *chain;
  ms_wrap_cb cb;
  void *arg;
};

static const char *const no_fields[1] = {NULL};
static const size_t no_lens[1] = {0};

static void on_chain(ms_pwrap_t *pw, ms_stream_t *s, int status, int fclass,
                     const char *reason, void *arg) {
  (void)pw;
  (void)fclass;
  ms_wrap_t *w = arg;
  ms_t *ms = w->ms;
  ms_wrap_cb cb = w->cb;
  void *cb_arg = w->arg;
  ms_addr_free(w->addr);
  ms_popts_free(w->opts);
  free(w);
  cb(s, status, status ? reason : NULL, cb_arg);
  ms__live_dec(ms);
}

int ms_stream_wrap(ms_t *ms, ms_stream_t *lower, const char *transforms,
                   int role, const ms_popts_t *opts, ms_wrap_cb cb, void *arg,
                   ms_wrap_t **req, char *reason, size_t reason_len) {
  if (ms == NULL || lower == NULL || transforms == NULL || cb == NULL ||
      (role != MS_ROLE_CLIENT && role != MS_ROLE_SERVER))
    return MS_EINVAL;
  if (ms->state != MS_STATE_OPEN) return MS_ECLOSED;
  ms_wrap_t *w = calloc(1, sizeof(*w));
  if (w == NULL) return MS_ENOMEM;
  int rc = ms__addr_parse_reason(transforms, &w->addr, reason, reason_len);
  if (rc == 0 && ms_addr_alternatives(w->addr) != 1) {
    ms__reason(reason, reason_len, "one stack of transforms expected, not alternatives");
    rc = MS_ESTACK;
  }
  size_t n = rc == 0 ? ms_addr_sections(w->addr, 0) : 0;
  if (rc == 0 && n + 1 > MS_ADDR_MAX_SECTIONS) {
    ms__reason(reason, reason_len, "too many transforms");
    rc = MS_ESTACK;
  }
  if (rc == 0 && ms__popts_copy(opts, &w->opts) != 0) rc = MS_ENOMEM;
  ms_stack_t *st = &w->stack;
  /* Section 0 stands for the stream below, which is no section of ours. */
  st->nsec = n + 1;
  st->secs[0].name = "stream";
  st->secs[0].nfields = 0;
  st->secs[0].fields = no_fields;
  st->secs[0].field_lens = no_lens;
  st->scope = MS_SCOPE_PUBLIC; /* nothing known about the stream below */
  st->opts = w->opts;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    ms__addr_section(w->addr, 0, i, &st->secs[i + 1]);
    const ms_proto_entry_t *e = ms__find_protocol(ms, st->secs[i + 1].name);
    if (e == NULL) {
      ms__reason(reason, reason_len, "unknown protocol \"%s\"", st->secs[i + 1].name);
      rc = MS_EPROTO_UNKNOWN;
    } else if (e->proto.kind != MS_PROTO_TRANSFORM) {
      ms__reason(reason, reason_len, "\"%s\" is a transport, not a transform",
                 st->secs[i + 1].name);
      rc = MS_ESTACK;
    } else {
      st->protos[i + 1] = e;
      char why[MS_REASON_LEN] = "";
      if (e->proto.validate &&
          (rc = e->proto.validate(&st->secs[i + 1], role, e->pdata, why, sizeof why)) != 0)
        ms__reason(reason, reason_len, "%s", why[0] ? why : ms_strerror(rc));
      else if (!ms__noauth_scope_ok(ms_options(ms), st->scope) &&
               strcmp(e->proto.name, "noauth") == 0) {
        ms__reason(reason, reason_len, "noauth refused over a stream of unknown reach");
        rc = MS_ENOAUTH_REMOTE;
      }
    }
  }
  if (rc == 0) rc = ms__popts_check(w->opts, st, reason, reason_len);
  if (rc != 0) {
    ms_addr_free(w->addr);
    ms_popts_free(w->opts);
    free(w);
    return rc;
  }
  w->ms = ms;
  w->cb = cb;
  w->arg = arg;
  ms__live_inc(ms);
  w->chain = ms__chain_start(ms, st, lower, role, on_chain, w);
  if (w->chain == NULL) { /* lower closed by the chain */
    ms_addr_free(w->addr);
    ms_popts_free(w->opts);
    free(w);
    ms__live_dec(ms);
    return MS_ENOMEM;
  }
  if (req) *req = w;
  return 0;
}

void ms_wrap_cancel(ms_wrap_t *w) {
  if (w && w->chain) ms__chain_cancel(w->chain);
}
