/*
 * noauth: no encryption, no authentication. The stream passes through
 * unchanged; only its address gains "~noauth". Like the reference, the
 * remote identity claimed is the local key. Refused on stacks that leave the
 * device unless ms_options_t.allow_remote_noauth is set.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int noauth_validate(const ms_section_t *sec, int role, void *pdata,
                           char *reason, size_t reason_len) {
  (void)role;
  (void)pdata;
  if (sec->nfields != 0) {
    ms__reason(reason, reason_len, "noauth takes no arguments");
    return MS_EADDRESS;
  }
  return 0;
}

static int noauth_wrap(ms_pwrap_t *pw, ms_stream_t *lower,
                       const ms_section_t *sec, int role, void *pdata) {
  (void)sec;
  (void)role;
  (void)pdata;
  ms_t *ms = ms_pwrap_ms(pw);
  if (!ms_pwrap_is_device(pw) && !ms_options(ms)->allow_remote_noauth)
    return MS_ENOAUTH_REMOTE;
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

const ms_protocol_t ms__proto_noauth = {
    .name = "noauth",
    .kind = MS_PROTO_TRANSFORM,
    .validate = noauth_validate,
    .wrap = noauth_wrap,
};
