/*
 * ms_listen: one listener over many stacks, one connection callback. Each
 * ;-alternative gets its transport listening; every accepted stream runs
 * through that stack's transforms (server role) before it is handed over.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "address.h"
#include "netaddr.h"

struct ms_plisten_s {
  ms_listener_t *l;
  ms_stack_t stack;
  void *impl;
  char *tsection;   /* transport section as advertised */
  char *advertised; /* whole stack as advertised */
  bool listening;
};

struct ms_listener_s {
  ms_t *ms;
  ms_addr_t *addr;
  ms_popts_t *opts;
  ms_defer_t node;
  size_t n;
  ms_plisten_t *pls;
  ms_connection_cb cb;
  void *arg;
  ms_listen_error_cb ecb;
  void *earg;
  char *address;
  ms_pwrap_t *chains; /* handshakes in flight */
  size_t nchains;
  ms_pcount_t *pcount; /* open connections handed over */
  size_t open;        /* transport listeners not closed yet */
  bool starting;
  bool closing;
  bool finishing; /* free scheduled */
  ms_listener_close_cb close_cb;
  void *close_arg;
  char reason[MS_REASON_LEN];
};

ms_t *ms_plisten_ms(const ms_plisten_t *pl) { return pl->l->ms; }
const char *ms_plisten_opt(const ms_plisten_t *pl, const char *key) {
  return ms_popts_get(pl->l->opts, pl->stack.protos[0]->proto.name, key);
}
void ms_plisten_set_impl(ms_plisten_t *pl, void *impl) { pl->impl = impl; }
void *ms_plisten_impl(const ms_plisten_t *pl) { return pl->impl; }

int ms_plisten_set_address(ms_plisten_t *pl, const char *section) {
  char *d = strdup(section);
  if (d == NULL) return MS_ENOMEM;
  free(pl->tsection);
  pl->tsection = d;
  return 0;
}

void ms_plisten_error(ms_plisten_t *pl, int status, const char *reason) {
  ms_listener_t *l = pl->l;
  if (l->starting) {
    ms__reason(l->reason, sizeof l->reason, "%s", reason ? reason : ms_strerror(status));
    return;
  }
  if (l->ecb) l->ecb(pl->advertised, status, reason ? reason : ms_strerror(status), l->earg);
}

static void finish_free(void *p) {
  ms_listener_t *l = p;
  ms_listener_close_cb cb = l->close_cb;
  void *arg = l->close_arg;
  ms_t *ms = l->ms;
  if (cb) cb(l, arg);
  for (size_t i = 0; i < l->n; i++) {
    free(l->pls[i].tsection);
    free(l->pls[i].advertised);
  }
  free(l->pls);
  free(l->address);
  ms_addr_free(l->addr);
  ms_popts_free(l->opts);
  if (l->pcount) {
    l->pcount->orphan = true;
    if (l->pcount->n == 0) free(l->pcount);
  }
  free(l);
  ms__live_dec(ms);
}

/* Free once closed with nothing left running; always on a later loop turn,
 * so no caller's frame still holds l or a chain. */
static void maybe_free(ms_listener_t *l) {
  if (!l->closing || l->open != 0 || l->chains != NULL || l->finishing) return;
  l->finishing = true;
  ms_defer(l->ms, &l->node, finish_free, l);
}

void ms_plisten_closed(ms_plisten_t *pl) {
  ms_listener_t *l = pl->l;
  pl->listening = false;
  l->open--;
  maybe_free(l);
}

/* Hand a finished stream (transport's, or the top transform's) to the
 * user, marked as accepted and labelled with its stack. */
static void hand_over(ms_plisten_t *pl, ms_stream_t *s) {
  ms_listener_t *l = pl->l;
  ms_t *ms = l->ms;
  ms_stream_set_server(s, true);
  ms__stream_set_stack(s, pl->advertised);
  s->counted = true;
  ms->stats.connections++;
  ms->stats.accepted++;
  s->pcount = l->pcount;
  l->pcount->n++;
  s->max_queue = (size_t)ms__limit(ms, l->opts, "max_write_queue");
  ms__idle_track(s, (uint32_t)ms__limit(ms, l->opts, "idle_timeout_ms"));
  l->cb(s, l->arg);
}

/* The peer of an accepted transport stream: its address less the port
 * ("net:127.0.0.1:5123" → "net:127.0.0.1"). */
static void source_of(ms_stream_t *s, char *buf, size_t len) {
  const char *a = ms_stream_address(s);
  const char *end = strchr(a, '~');
  size_t n = end ? (size_t)(end - a) : strlen(a);
  const char *colon = memrchr(a, ':', n);
  if (colon && colon > a && memchr(a, ':', (size_t)(colon - a))) n = (size_t)(colon - a);
  if (n >= len) n = len - 1;
  memcpy(buf, a, n);
  buf[n] = '\0';
}

/* A per-stack limit (the listener's option) wins over the multiserver's. */
static bool over(const ms_listener_t *l, const char *key, uint64_t here, uint64_t all,
                 uint64_t *limit) {
  const char *v = ms_popts_get(l->opts, "limits", key);
  uint64_t n;
  if (v && ms_opt_uint(v, UINT64_MAX, &n) == 0) {
    *limit = n;
    return n && here >= n;
  }
  *limit = ms__limit(l->ms, NULL, key);
  return *limit && all >= *limit;
}

/* Refuse at once, before any handshake work. */
static void refuse(ms_plisten_t *pl, ms_stream_t *s, uint64_t *counter, const char *what,
                   uint64_t limit) {
  ms_listener_t *l = pl->l;
  (*counter)++;
  if (ms__log_on(l->ms, MS_LOG_WARN)) {
    char source[80];
    source_of(s, source, sizeof source);
    ms__log(l->ms, MS_LOG_WARN, "listen", "%s: %s (%llu) reached: connection from %s closed",
            pl->advertised, what, (unsigned long long)limit, source);
  }
  ms_stream_close(s, NULL, NULL);
  if (l->ecb) {
    char why[MS_REASON_LEN];
    ms__reason(why, sizeof why, "%s (%llu) reached: connection closed", what,
               (unsigned long long)limit);
    l->ecb(pl->advertised, MS_ELIMIT, why, l->earg);
  }
}

static void on_chain(ms_pwrap_t *pw, ms_stream_t *s, int status, int fclass,
                     const char *reason, void *arg) {
  (void)fclass;
  ms_plisten_t *pl = arg;
  ms_listener_t *l = pl->l;
  if (pw->prev) pw->prev->next = pw->next; else l->chains = pw->next;
  if (pw->next) pw->next->prev = pw->prev;
  l->nchains--;
  if (l->ms->stats.handshakes) l->ms->stats.handshakes--;
  if (status == 0) {
    hand_over(pl, s);
  } else {
    if (status != MS_ECANCELED) {
      l->ms->stats.handshake_failures++;
      ms__log(l->ms, MS_LOG_WARN, "listen", "%s: handshake failed: %s (%s)", pl->advertised,
              reason ? reason : ms_strerror(status), ms_strerror(status));
    }
    if (status != MS_ECANCELED && l->ecb) l->ecb(pl->advertised, status, reason, l->earg);
  }
  maybe_free(l);
}

void ms_plisten_incoming(ms_plisten_t *pl, ms_stream_t *s) {
  ms_listener_t *l = pl->l;
  ms_stream_set_server(s, true);
  if (l->closing) {
    ms_stream_close(s, NULL, NULL);
    return;
  }
  ms_t *ms = l->ms;
  ms_stats_t *st = &ms->stats;
  uint64_t limit;
  if (over(l, "max_connections", l->pcount->n + l->nchains, st->connections + st->handshakes,
           &limit)) {
    refuse(pl, s, &st->refused_connections, "max_connections", limit);
    return;
  }
  if (pl->stack.nsec == 1) {
    hand_over(pl, s);
    return;
  }
  if (over(l, "max_handshakes", l->nchains, st->handshakes, &limit)) {
    refuse(pl, s, &st->refused_handshakes, "max_handshakes", limit);
    return;
  }
  char source[80];
  source_of(s, source, sizeof source);
  uint64_t per = ms__limit(ms, l->opts, "max_handshakes_per_source");
  if (per) {
    uint64_t n = 0;
    for (ms_pwrap_t *c = l->chains; c; c = c->next) n += strcmp(c->source, source) == 0;
    if (n >= per) {
      refuse(pl, s, &st->refused_per_source, "max_handshakes_per_source", per);
      return;
    }
  }
  ms_pwrap_t *pw = ms__chain_start(l->ms, &pl->stack, s, MS_ROLE_SERVER, on_chain, pl);
  if (pw == NULL) {
    ms__log(ms, MS_LOG_ERROR, "listen", "%s: out of memory starting a handshake",
            pl->advertised);
    if (l->ecb) l->ecb(pl->advertised, MS_ENOMEM, "out of memory", l->earg);
    return;
  }
  snprintf(pw->source, sizeof pw->source, "%s", source);
  l->nchains++;
  st->handshakes++;
  pw->next = l->chains;
  if (l->chains) l->chains->prev = pw;
  l->chains = pw;
}

void ms_listener_on_error(ms_listener_t *l, ms_listen_error_cb cb, void *arg) {
  l->ecb = cb;
  l->earg = arg;
}

const char *ms_listener_address(const ms_listener_t *l) {
  return l->address ? l->address : "";
}

/* ---- addresses per scope ------------------------------------------------ */

/* Which scopes a stack serves: listen.scopes, else what its listen section
 * says (a wildcard net host serves every scope its interfaces have). */
static unsigned stack_scopes(const ms_listener_t *l, const ms_plisten_t *pl, bool *wild) {
  const ms_section_t *sec = &pl->stack.secs[0];
  *wild = false;
  if (strcmp(sec->name, "net") == 0 && sec->nfields >= 2) {
    const char *h = sec->fields[0];
    *wild = sec->nfields == 2 &&
            (strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0 || strcmp(h, "[::]") == 0);
    if (sec->nfields > 2) { /* bare IPv6: every field but the port is host */
      bool zeros = true;
      for (size_t i = 0; i + 1 < sec->nfields; i++)
        if (sec->field_lens[i] != 0) zeros = false;
      *wild = zeros;
    }
  }
  const char *opt = ms_popts_get(l->opts, "listen", "scopes");
  if (opt) {
    unsigned set = 0;
    if (strstr(opt, "device")) set |= 1u << MS_SCOPE_DEVICE;
    if (strstr(opt, "local")) set |= 1u << MS_SCOPE_LOCAL;
    if (strstr(opt, "public")) set |= 1u << MS_SCOPE_PUBLIC;
    return set;
  }
  if (*wild) return (1u << MS_SCOPE_DEVICE) | (1u << MS_SCOPE_LOCAL) | (1u << MS_SCOPE_PUBLIC);
  int sc = ms__transport_scope(&pl->stack.protos[0]->proto, sec, pl->stack.protos[0]->pdata);
  if (sc == MS_SCOPE_LOOPBACK) sc = MS_SCOPE_DEVICE;
  return 1u << sc;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s) {
  size_t n = strlen(s);
  if (*len + n + 2 > *cap) {
    size_t nc = 2 * (*len + n + 2);
    char *b = realloc(*buf, nc);
    if (b == NULL) return MS_ENOMEM;
    *buf = b;
    *cap = nc;
  }
  if (*len) (*buf)[(*len)++] = ';';
  memcpy(*buf + *len, s, n + 1);
  *len += n;
  return 0;
}

char *ms_listener_addresses(const ms_listener_t *l, int scope) {
  if (l == NULL) return NULL;
  if (scope == MS_SCOPE_LOOPBACK) scope = MS_SCOPE_DEVICE;
  if (scope < MS_SCOPE_DEVICE || scope > MS_SCOPE_PUBLIC) return NULL;
  size_t len = 0, cap = 256;
  char *buf = malloc(cap);
  if (buf == NULL) return NULL;
  buf[0] = '\0';
  const char *external = ms_popts_get(l->opts, "listen", "external");
  int rc = 0;
  for (size_t i = 0; i < l->n && rc == 0; i++) {
    const ms_plisten_t *pl = &l->pls[i];
    bool wild;
    if (!(stack_scopes(l, pl, &wild) & (1u << scope))) continue;
    const char *adv = pl->advertised ? pl->advertised : "";
    const char *tail = strchr(adv, '~');
    if (tail == NULL) tail = "";
    const char *port = pl->tsection ? strrchr(pl->tsection, ':') : NULL;
    if (scope == MS_SCOPE_PUBLIC && external && port &&
        strcmp(pl->stack.secs[0].name, "net") == 0) {
      char one[1024];
      snprintf(one, sizeof one, "net:%s%s%s", external, port, tail);
      rc = append(&buf, &len, &cap, one);
      continue;
    }
    if (!wild || port == NULL) {
      rc = append(&buf, &len, &cap, adv);
      continue;
    }
    /* A wildcard host: this machine's interface addresses of that scope,
     * read now (an interface change shows on the next call). */
    bool v6 = strchr(pl->stack.secs[0].fields[0], ':') != NULL || pl->stack.secs[0].nfields > 2;
    uv_interface_address_t *ifs;
    int n;
    if (uv_interface_addresses(&ifs, &n) != 0) continue;
    for (int k = 0; k < n && rc == 0; k++) {
      char ip[INET6_ADDRSTRLEN];
      int fam = ifs[k].address.address4.sin_family;
      if (fam == AF_INET)
        uv_ip4_name(&ifs[k].address.address4, ip, sizeof ip);
      else if (fam == AF_INET6 && v6)
        uv_ip6_name(&ifs[k].address.address6, ip, sizeof ip);
      else
        continue;
      char *pct = strchr(ip, '%');
      if (pct) *pct = '\0'; /* zones are not printed */
      int sc = ms__host_scope(ip);
      if (sc == MS_SCOPE_LOOPBACK) sc = MS_SCOPE_DEVICE;
      if (sc != scope) continue;
      char one[1024];
      snprintf(one, sizeof one, "net:%s%s%s", ip, port, tail);
      if (strstr(buf, one) == NULL) rc = append(&buf, &len, &cap, one);
    }
    uv_free_interface_addresses(ifs, n);
  }
  if (rc != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* Advertised form of one stack: transport section + each transform's. */
static int build_advertised(ms_listener_t *l, ms_plisten_t *pl) {
  size_t cap = 256, len = 0;
  char *buf = malloc(cap);
  if (buf == NULL) return MS_ENOMEM;
  for (size_t i = 0; i < pl->stack.nsec; i++) {
    char sec[1024];
    size_t n;
    const ms_protocol_t *p = &pl->stack.protos[i]->proto;
    if (i == 0 && pl->tsection)
      n = (size_t)snprintf(sec, sizeof sec, "%s", pl->tsection);
    else if (i > 0 && p->advertise)
      n = p->advertise(l->ms, &pl->stack.secs[i], pl->stack.protos[i]->pdata, sec, sizeof sec);
    else
      n = ms__section_print(&pl->stack.secs[i], sec, sizeof sec);
    if (n >= sizeof sec) {
      free(buf);
      return MS_ELIMIT;
    }
    if (len + n + 2 > cap) {
      cap = 2 * (len + n + 2);
      char *nb = realloc(buf, cap);
      if (nb == NULL) {
        free(buf);
        return MS_ENOMEM;
      }
      buf = nb;
    }
    if (i > 0) buf[len++] = '~';
    memcpy(buf + len, sec, n);
    len += n;
    buf[len] = '\0';
  }
  pl->advertised = buf;
  return 0;
}

static int join_addresses(ms_listener_t *l) {
  size_t total = 1;
  for (size_t i = 0; i < l->n; i++) total += strlen(l->pls[i].advertised) + 1;
  l->address = malloc(total);
  if (l->address == NULL) return MS_ENOMEM;
  l->address[0] = '\0';
  for (size_t i = 0; i < l->n; i++) {
    if (i) strcat(l->address, ";");
    strcat(l->address, l->pls[i].advertised);
  }
  return 0;
}

void ms_listener_close(ms_listener_t *l, ms_listener_close_cb cb, void *arg) {
  if (l == NULL || l->closing) return;
  l->closing = true;
  l->close_cb = cb;
  l->close_arg = arg;
  l->open++; /* hold: transports (and canceled chains) may finish synchronously */
  /* A cancel may finish its chain at once (on_chain unlinks and frees it):
   * take the next link first. */
  for (ms_pwrap_t *pw = l->chains, *next; pw; pw = next) {
    next = pw->next;
    ms__chain_cancel(pw);
  }
  for (size_t i = 0; i < l->n; i++) {
    ms_plisten_t *pl = &l->pls[i];
    if (pl->listening) pl->stack.protos[0]->proto.listen_close(pl);
  }
  l->open--;
  maybe_free(l);
}

int ms_listen_with(ms_t *ms, const char *address, const ms_popts_t *opts,
                   ms_connection_cb cb, void *arg, ms_listener_t **out,
                   char *reason, size_t reason_len) {
  if (ms == NULL || address == NULL || cb == NULL || out == NULL) return MS_EINVAL;
  if (ms->state != MS_STATE_OPEN) return MS_ECLOSED;
  ms_addr_t *a;
  int rc = ms__addr_parse_reason(address, &a, reason, reason_len);
  if (rc != 0) return rc;
  ms_listener_t *l = calloc(1, sizeof(*l));
  size_t n = ms_addr_alternatives(a);
  if (l == NULL || (l->pls = calloc(n, sizeof(*l->pls))) == NULL ||
      (l->pcount = calloc(1, sizeof(*l->pcount))) == NULL ||
      ms__popts_copy(opts, &l->opts) != 0) {
    if (l) {
      free(l->pls);
      free(l->pcount);
    }
    free(l);
    ms_addr_free(a);
    return MS_ENOMEM;
  }
  l->ms = ms;
  l->addr = a;
  l->n = n;
  l->cb = cb;
  l->arg = arg;
  l->starting = true;
  ms__live_inc(ms);
  for (size_t i = 0; i < n; i++) {
    ms_plisten_t *pl = &l->pls[i];
    pl->l = l;
    char why[MS_REASON_LEN] = "";
    rc = ms__stack_resolve(ms, a, i, MS_ROLE_SERVER, l->opts, &pl->stack, why, sizeof why);
    if (rc != 0) {
      ms__reason(reason, reason_len, "stack %zu: %s", i + 1, why);
      break;
    }
    l->reason[0] = '\0';
    rc = pl->stack.protos[0]->proto.listen(pl, &pl->stack.secs[0], pl->stack.protos[0]->pdata);
    if (rc != 0) {
      ms__reason(reason, reason_len, "stack %zu: %s", i + 1,
                 l->reason[0] ? l->reason : ms_strerror(rc));
      break;
    }
    pl->listening = true;
    l->open++;
    rc = build_advertised(l, pl);
    if (rc != 0) {
      ms__reason(reason, reason_len, "stack %zu: %s", i + 1, ms_strerror(rc));
      break;
    }
  }
  if (rc == 0) rc = join_addresses(l);
  l->starting = false;
  if (rc != 0) {
    /* Undo: close what listens; the listener frees itself when done. */
    ms_listener_close(l, NULL, NULL);
    return rc;
  }
  *out = l;
  return 0;
}

int ms_listen(ms_t *ms, const char *address, ms_connection_cb cb, void *arg,
              ms_listener_t **out, char *reason, size_t reason_len) {
  return ms_listen_with(ms, address, NULL, cb, arg, out, reason, reason_len);
}
