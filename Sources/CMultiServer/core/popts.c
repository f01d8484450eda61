/*
 * Per-stack options: "protocol.key=value" strings a listen or connect hands
 * to the protocols of its stacks (ms_listen_with, ms_connect_with), checked
 * against each protocol's option_keys so a misspelt key is an error.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define POPTS_MAX 256
#define POPT_NAME_MAX 64

int ms_popts_new(ms_popts_t **out) {
  if (out == NULL) return MS_EINVAL;
  *out = calloc(1, sizeof(**out));
  return *out ? 0 : MS_ENOMEM;
}

void ms_popts_free(ms_popts_t *o) {
  if (o == NULL) return;
  for (size_t i = 0; i < o->n; i++) {
    free(o->proto[i]);
    free(o->key[i]);
    free(o->value[i]);
  }
  free(o->proto);
  free(o->key);
  free(o->value);
  free(o);
}

static bool name_ok(const char *s, size_t len) {
  if (len == 0 || len > POPT_NAME_MAX) return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return false;
  }
  return true;
}

static char *dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static int set_n(ms_popts_t *o, const char *proto, size_t plen, const char *key,
                 size_t klen, const char *value) {
  if (o == NULL || value == NULL || !name_ok(proto, plen) || !name_ok(key, klen))
    return MS_EINVAL;
  char *v = dupn(value, strlen(value));
  if (v == NULL) return MS_ENOMEM;
  for (size_t i = 0; i < o->n; i++)
    if (strlen(o->proto[i]) == plen && memcmp(o->proto[i], proto, plen) == 0 &&
        strlen(o->key[i]) == klen && memcmp(o->key[i], key, klen) == 0) {
      free(o->value[i]);
      o->value[i] = v;
      return 0;
    }
  if (o->n == POPTS_MAX) {
    free(v);
    return MS_ELIMIT;
  }
  if (o->n == o->cap) {
    size_t cap = o->cap ? 2 * o->cap : 8;
    char **a = realloc(o->proto, cap * sizeof(char *));
    if (a) o->proto = a;
    char **b = a ? realloc(o->key, cap * sizeof(char *)) : NULL;
    if (b) o->key = b;
    char **c = b ? realloc(o->value, cap * sizeof(char *)) : NULL;
    if (c) o->value = c;
    if (c == NULL) {
      free(v);
      return MS_ENOMEM;
    }
    o->cap = cap;
  }
  char *p = dupn(proto, plen), *k = dupn(key, klen);
  if (p == NULL || k == NULL) {
    free(p);
    free(k);
    free(v);
    return MS_ENOMEM;
  }
  o->proto[o->n] = p;
  o->key[o->n] = k;
  o->value[o->n] = v;
  o->n++;
  return 0;
}

int ms_popts_set(ms_popts_t *o, const char *protocol, const char *key,
                 const char *value) {
  if (protocol == NULL || key == NULL) return MS_EINVAL;
  return set_n(o, protocol, strlen(protocol), key, strlen(key), value);
}

int ms_popts_parse(ms_popts_t *o, const char *a) {
  if (a == NULL) return MS_EINVAL;
  const char *dot = strchr(a, '.');
  const char *eq = strchr(a, '=');
  if (dot == NULL || eq == NULL || dot > eq) return MS_EINVAL;
  return set_n(o, a, (size_t)(dot - a), dot + 1, (size_t)(eq - dot - 1), eq + 1);
}

const char *ms_popts_get(const ms_popts_t *o, const char *protocol,
                         const char *key) {
  if (o == NULL || protocol == NULL || key == NULL) return NULL;
  for (size_t i = 0; i < o->n; i++)
    if (strcmp(o->proto[i], protocol) == 0 && strcmp(o->key[i], key) == 0)
      return o->value[i];
  return NULL;
}

int ms__popts_copy(const ms_popts_t *in, ms_popts_t **out) {
  *out = NULL;
  if (in == NULL || in->n == 0) return 0;
  int rc = ms_popts_new(out);
  for (size_t i = 0; rc == 0 && i < in->n; i++)
    rc = ms_popts_set(*out, in->proto[i], in->key[i], in->value[i]);
  if (rc != 0) {
    ms_popts_free(*out);
    *out = NULL;
  }
  return rc;
}

static const char *const limit_keys[] = {
    "max_connections", "max_handshakes", "max_handshakes_per_source",
    "idle_timeout_ms", "max_write_queue", NULL};

int ms__popts_check(const ms_popts_t *o, const ms_stack_t *st, char *reason,
                    size_t reason_len) {
  if (o == NULL) return 0;
  for (size_t i = 0; i < o->n; i++) {
    if (strcmp(o->proto[i], "listen") == 0 && strcmp(o->key[i], "scopes") != 0 &&
        strcmp(o->key[i], "external") != 0) {
      ms__reason(reason, reason_len, "option listen.%s: unknown (known: scopes, external)",
                 o->key[i]);
      return MS_EINVAL;
    }
    if (strcmp(o->proto[i], "limits") != 0) continue;
    bool known = false;
    for (const char *const *k = limit_keys; *k && !known; k++)
      known = strcmp(*k, o->key[i]) == 0;
    uint64_t v;
    if (!known || ms_opt_uint(o->value[i], UINT64_MAX, &v) != 0) {
      ms__reason(reason, reason_len,
                 "option limits.%s: %s (known: max_connections, max_handshakes, "
                 "max_handshakes_per_source, idle_timeout_ms, max_write_queue)",
                 o->key[i], known ? "not a number" : "unknown");
      return MS_EINVAL;
    }
  }
  for (size_t i = 0; i < o->n; i++) {
    for (size_t j = 0; j < st->nsec; j++) {
      if (st->protos[j] == NULL) continue; /* ms_stream_wrap's stand-in */
      const ms_protocol_t *p = &st->protos[j]->proto;
      if (strcmp(p->name, o->proto[i]) != 0 || p->option_keys == NULL) continue;
      bool known = false;
      for (const char *const *k = p->option_keys; *k && !known; k++)
        known = strcmp(*k, o->key[i]) == 0;
      if (known) break;
      char list[160] = "";
      size_t len = 0;
      for (const char *const *k = p->option_keys; *k; k++) {
        int n = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", *k);
        if (n < 0 || (size_t)n >= sizeof list - len) break;
        len += (size_t)n;
      }
      ms__reason(reason, reason_len, "option %s.%s: %s does not know it (known: %s)",
                 o->proto[i], o->key[i], p->name, len ? list : "none");
      return MS_EINVAL;
    }
  }
  return 0;
}
