/*
 * noauth: no encryption, no authentication. The stream passes through
 * unchanged; only its address gains "~noauth". Like the reference, the
 * remote identity claimed is the local key, so noauth is only served where
 * the peer is known to be this machine's own user:
 *  - unix sockets (MS_SCOPE_DEVICE): the transport records the peer's uid
 *    (SO_PEERCRED) as "unix.peer_uid", and both sides accept their own uid
 *    only, unless the per-stack option noauth.uids is "any" or a comma list
 *    of uids;
 *  - loopback TCP only with ms_options_t.allow_loopback_noauth, anything
 *    else only with allow_remote_noauth (the stack check refuses the address
 *    before anything opens; wrap checks again).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "multiserver_plugin.h"

static int noauth_validate(const ms_section_t *sec, int role, void *pdata,
                           char *reason, size_t reason_len) {
  (void)role;
  (void)pdata;
  if (sec->nfields != 0) {
    ms_reasonf(reason, reason_len, "noauth takes no arguments");
    return MS_EADDRESS;
  }
  return 0;
}

static bool scope_allowed(const ms_options_t *o, int scope) {
  if (scope == MS_SCOPE_DEVICE || o->allow_remote_noauth) return true;
  return scope == MS_SCOPE_LOOPBACK && o->allow_loopback_noauth;
}

/* Is uid in the option's list ("any", or "1000,1001")? Our own uid always
 * is. */
static bool uid_allowed(const char *opt, unsigned long uid) {
  if (uid == (unsigned long)geteuid()) return true;
  if (opt == NULL) return false;
  if (strcmp(opt, "any") == 0) return true;
  const char *p = opt;
  while (*p) {
    char *end;
    unsigned long v = strtoul(p, &end, 10);
    if (end == p) return false;
    if (v == uid) return true;
    p = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != '\0') return false;
  }
  return false;
}

static int noauth_wrap(ms_pwrap_t *pw, ms_stream_t *lower,
                       const ms_section_t *sec, int role, void *pdata) {
  (void)sec;
  (void)role;
  (void)pdata;
  ms_t *ms = ms_pwrap_ms(pw);
  if (!scope_allowed(ms_options(ms), ms_pwrap_scope(pw))) return MS_ENOAUTH_REMOTE;
  /* Never over ws/wss (the stack check refuses it first; this holds for
   * a stack built any other way too). */
  const ms_section_t *t = ms_pwrap_section(pw, 0);
  if (t && (strcmp(t->name, "ws") == 0 || strcmp(t->name, "wss") == 0))
    return MS_ENOAUTH_REMOTE;
  const char *uid = ms_stream_meta(lower, "unix.peer_uid", NULL);
  if (uid) {
    char *end;
    unsigned long v = strtoul(uid, &end, 10);
    if (*end != '\0' || !uid_allowed(ms_pwrap_opt(pw, "uids"), v)) {
      char why[128];
      ms_reasonf(why, sizeof why, "peer uid %s is not this user's (uid %lu)", uid,
               (unsigned long)geteuid());
      ms_stream_close(lower, NULL, NULL);
      ms_pwrap_fail(pw, MS_EUNAUTHORIZED, MS_FAIL_AUTH, why);
      return 0;
    }
  }
  const char *a = ms_stream_address(lower);
  size_t n = strlen(a) + sizeof("~noauth");
  char *addr = malloc(n);
  if (addr == NULL) return MS_ENOMEM;
  snprintf(addr, n, "%s~noauth", a);
  int rc = ms_stream_set_address(lower, addr);
  free(addr);
  if (rc != 0) return rc;
  ms_stream_set_remote_key(lower, ms_keys(ms)->public_key);
  ms_pwrap_done(pw, 0, lower, NULL);
  return 0;
}

static const char *const noauth_option_keys[] = {"uids", NULL};

const ms_protocol_t ms__proto_noauth = {
    .size = sizeof(ms_protocol_t),
    .name = "noauth",
    .kind = MS_PROTO_TRANSFORM,
    .validate = noauth_validate,
    .wrap = noauth_wrap,
    .option_keys = noauth_option_keys,
};
