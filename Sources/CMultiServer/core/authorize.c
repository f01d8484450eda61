/*
 * Authorization as a service: a security transform that verified a peer's
 * identity asks the application (ms_options_t.authorize) through
 * ms_pwrap_authorize(). The request carries its own copy of the identity,
 * so an answer that comes after the handshake timed out reads nothing
 * freed; the answer reaches the transform on a later turn, never inside
 * ms_authorize_done(); an accepted value is owned by the wrap until the
 * stream it produces takes it (authorize_free when that stream is freed, or
 * at once if the wrap fails). A request counts as live until answered, so a
 * late answer never finds its multiserver gone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"

static void answer(void *arg) {
  ms_pwrap_t *pw = arg;
  ms_authorized_cb cb = pw->acb;
  pw->acb = NULL;
  if (cb) cb(pw, pw->aaccepted, pw->aarg);
}

static void req_free(ms_authorize_t *req) {
  free(req->address);
  sodium_memzero(req, sizeof(*req) + req->len);
  free(req);
}

int ms_pwrap_authorize(ms_pwrap_t *pw, const char *kind, const void *id,
                       size_t len, ms_authorized_cb cb, void *arg) {
  if (pw == NULL || kind == NULL || id == NULL || len == 0 ||
      len > MS_REMOTE_ID_MAX || cb == NULL || strlen(kind) >= 32)
    return MS_EINVAL;
  if (pw->areq || pw->acb) return MS_EEXIST;
  ms_t *ms = pw->ms;
  const ms_options_t *o = ms_options(ms);
  pw->acb = cb;
  pw->aarg = arg;
  if (o->authorize == NULL) { /* nobody to ask: everyone is welcome */
    pw->aaccepted = true;
    ms_defer(ms, &pw->anode, answer, pw);
    return 0;
  }
  ms_authorize_t *req = calloc(1, sizeof(*req) + len);
  if (req == NULL) {
    pw->acb = NULL;
    return MS_ENOMEM;
  }
  req->pw = pw;
  req->ms = ms;
  req->len = len;
  memcpy(req->id, id, len);
  snprintf(req->kind, sizeof req->kind, "%s", kind);
  snprintf(req->proto, sizeof req->proto, "%s", pw->stack->protos[pw->idx]->proto.name);
  const char *la = pw->lower ? ms_stream_address(pw->lower) : "";
  req->address = malloc(strlen(la) + 1);
  if (req->address == NULL) {
    req_free(req);
    pw->acb = NULL;
    return MS_ENOMEM;
  }
  memcpy(req->address, la, strlen(la) + 1);
  pw->areq = req;
  ms__live_inc(ms); /* until answered: ms_close waits, ms_delete refuses */
  o->authorize(ms_authorize_remote_key(req), req, o->authorize_arg);
  return 0;
}

void ms_authorize_done(ms_authorize_t *req, bool accept, void *value) {
  if (req == NULL) return;
  ms_pwrap_t *pw = req->pw;
  ms_t *ms = req->ms;
  req_free(req);
  if (pw == NULL) { /* the handshake already failed, timed out or withdrew */
    if (accept) ms__auth_free(ms, value);
    ms__live_dec(ms);
    return;
  }
  pw->areq = NULL;
  pw->aaccepted = accept;
  if (accept) {
    if (pw->has_avalue) ms__auth_free(ms, pw->avalue);
    pw->avalue = value;
    pw->has_avalue = value != NULL;
  }
  ms_defer(ms, &pw->anode, answer, pw);
  ms__live_dec(ms);
}

void ms_pwrap_authorize_cancel(ms_pwrap_t *pw) {
  if (pw == NULL) return;
  if (pw->areq) {
    pw->areq->pw = NULL; /* the application's answer frees it */
    pw->areq = NULL;
  }
  ms_defer_cancel(pw->ms, &pw->anode);
  pw->acb = NULL;
}


const void *ms_authorize_remote_id(const ms_authorize_t *req, const char **kind,
                                   size_t *len) {
  if (kind) *kind = req ? req->kind : NULL;
  if (len) *len = req ? req->len : 0;
  return req ? req->id : NULL;
}

const uint8_t *ms_authorize_remote_key(const ms_authorize_t *req) {
  if (req == NULL || req->len != MS_PUBLICKEYBYTES || strcmp(req->kind, "ed25519") != 0)
    return NULL;
  return req->id;
}

const char *ms_authorize_protocol(const ms_authorize_t *req) {
  return req ? req->proto : "";
}
const char *ms_authorize_address(const ms_authorize_t *req) {
  return req && req->address ? req->address : "";
}
