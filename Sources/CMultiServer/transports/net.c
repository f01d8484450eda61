/*
 * net: TCP over IPv4 and IPv6. `net:HOST:PORT` (the last field is the port,
 * so bare IPv6 works). Listening on port 0 advertises the chosen port;
 * dialing resolves names asynchronously, tries each resolved address in
 * turn and gives up after the connect timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "netaddr.h"

#define NET_HOST_MAX 256
#define NET_REASON_LEN 256
#define NET_BACKLOG 511
#define NET_KEEPALIVE_S 60

static int sockaddr_host(const struct sockaddr *sa, char *host, size_t len,
                         int *port) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    *port = ntohs(in->sin_port);
    return uv_ip4_name(in, host, len);
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    *port = ntohs(in6->sin6_port);
    return uv_ip6_name(in6, host, len);
  }
  return UV_EAFNOSUPPORT;
}

/* "net:IP:PORT" for a socket's peer or own name. */
static int tcp_name(uv_tcp_t *tcp, bool peer, char *buf, size_t len) {
  struct sockaddr_storage ss;
  int n = sizeof(ss), port = 0;
  char host[INET6_ADDRSTRLEN];
  int rc = peer ? uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n)
                : uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &n);
  if (rc == 0) rc = sockaddr_host((struct sockaddr *)&ss, host, sizeof host, &port);
  if (rc != 0) return rc;
  ms__net_format(host, port, buf, len);
  return 0;
}

static void tune(uv_tcp_t *tcp) {
  uv_tcp_nodelay(tcp, 1);
  uv_tcp_keepalive(tcp, 1, NET_KEEPALIVE_S);
}

static int net_validate(const ms_section_t *sec, int role, void *pdata,
                        char *reason, size_t reason_len) {
  (void)pdata;
  char host[NET_HOST_MAX];
  int port;
  return ms__net_parse(sec, role == MS_ROLE_SERVER, host, sizeof host, &port,
                       reason, reason_len);
}

/* Loopback only for a loopback IP literal, never for a name. */
static int net_scope(const ms_section_t *sec, void *pdata) {
  (void)pdata;
  char host[NET_HOST_MAX];
  int port;
  if (ms__net_parse(sec, 1, host, sizeof host, &port, NULL, 0) != 0)
    return MS_SCOPE_PUBLIC;
  return ms__host_scope(host);
}

/* ---- listen ---------------------------------------------------------- */

typedef struct {
  uv_tcp_t tcp;
  ms_plisten_t *pl;
} net_listener_t;

/* An address a client can dial for a wildcard listen host: the first
 * external interface of that family, else loopback. (Scopes refine this.) */
static void wildcard_host(int family, char *host, size_t len) {
  uv_interface_address_t *ifs;
  int n;
  snprintf(host, len, "%s", family == AF_INET6 ? "::1" : "127.0.0.1");
  if (uv_interface_addresses(&ifs, &n) != 0) return;
  for (int i = 0; i < n; i++) {
    if (ifs[i].is_internal) continue;
    if (family == AF_INET && ifs[i].address.address4.sin_family == AF_INET) {
      uv_ip4_name(&ifs[i].address.address4, host, len);
      break;
    }
    if (family == AF_INET6 &&
        ifs[i].address.address6.sin6_family == AF_INET6 &&
        !IN6_IS_ADDR_LINKLOCAL(&ifs[i].address.address6.sin6_addr)) {
      uv_ip6_name(&ifs[i].address.address6, host, len);
      break;
    }
  }
  uv_free_interface_addresses(ifs, n);
}

static void on_listener_closed(uv_handle_t *h) {
  net_listener_t *l = h->data;
  ms_plisten_t *pl = l->pl;
  free(l);
  if (pl) ms_plisten_closed(pl);
}

static int accepted_name(ms_uvstream_t *u, char *buf, size_t len, void *arg) {
  (void)arg;
  tune(ms_uvstream_tcp(u));
  return tcp_name(ms_uvstream_tcp(u), true, buf, len);
}

static void on_connection(uv_stream_t *server, int status) {
  net_listener_t *l = server->data;
  ms_stream_t *s = NULL;
  int rc = status < 0 ? status
                      : ms_uvstream_accept(ms_plisten_ms(l->pl), server, true,
                                            accepted_name, NULL, &s);
  if (rc != 0) {
    ms_plisten_error(l->pl, rc, "net: accept failed");
    return;
  }
  ms_plisten_incoming(l->pl, s);
}

static int resolve_sync(uv_loop_t *loop, const char *host, int port,
                        struct sockaddr_storage *out) {
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  if (uv_ip4_addr(host, port, &in4) == 0) {
    memcpy(out, &in4, sizeof in4);
    return 0;
  }
  if (uv_ip6_addr(host, port, &in6) == 0) {
    memcpy(out, &in6, sizeof in6);
    return 0;
  }
  uv_getaddrinfo_t req;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  int rc = uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints);
  if (rc != 0) return rc;
  if (req.addrinfo == NULL) return UV_EAI_NONAME;
  memcpy(out, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
  uv_freeaddrinfo(req.addrinfo);
  if (out->ss_family == AF_INET)
    ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
  return 0;
}

static int net_listen(ms_plisten_t *pl, const ms_section_t *sec, void *pdata) {
  (void)pdata;
  ms_t *ms = ms_plisten_ms(pl);
  char host[NET_HOST_MAX], reason[NET_REASON_LEN], adv[NET_HOST_MAX + 16];
  int port;
  int rc = ms__net_parse(sec, 1, host, sizeof host, &port, reason, sizeof reason);
  if (rc != 0) {
    ms_plisten_error(pl, rc, reason);
    return rc;
  }
  struct sockaddr_storage ss;
  rc = resolve_sync(ms_loop(ms), host, port, &ss);
  if (rc != 0) {
    ms_reasonf(reason, sizeof reason, "net: cannot resolve %s: %s", host,
               ms_strerror(rc));
    ms_plisten_error(pl, rc, reason);
    return rc;
  }
  net_listener_t *l = calloc(1, sizeof(*l));
  if (l == NULL) return MS_ENOMEM;
  rc = uv_tcp_init(ms_loop(ms), &l->tcp);
  if (rc != 0) {
    free(l);
    return rc;
  }
  l->tcp.data = l;
  rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&l->tcp, NET_BACKLOG, on_connection);
  if (rc == 0) {
    struct sockaddr_storage bound;
    int n = sizeof bound, bport = 0;
    char bhost[INET6_ADDRSTRLEN];
    rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &n);
    if (rc == 0) rc = sockaddr_host((struct sockaddr *)&bound, bhost, sizeof bhost, &bport);
    if (rc == 0) {
      const char *ahost = host;
      char wild[INET6_ADDRSTRLEN];
      if (strcmp(bhost, "0.0.0.0") == 0 || strcmp(bhost, "::") == 0) {
        wildcard_host(bound.ss_family, wild, sizeof wild);
        ahost = wild;
      }
      ms__net_format(ahost, bport, adv, sizeof adv);
      rc = ms_plisten_set_address(pl, adv);
    }
  }
  if (rc != 0) {
    ms_reasonf(reason, sizeof reason, "net: cannot listen on %s:%d: %s", host,
               port, ms_strerror(rc));
    ms_plisten_error(pl, rc, reason);
    l->pl = NULL;
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    return rc;
  }
  l->pl = pl;
  ms_plisten_set_impl(pl, l);
  return 0;
}

static void net_listen_close(ms_plisten_t *pl) {
  net_listener_t *l = ms_plisten_impl(pl);
  uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

/* ---- dial ------------------------------------------------------------ */

typedef struct net_lookup_s net_lookup_t;

typedef struct {
  ms_pdial_t *pd;
  ms_t *ms;
  char host[NET_HOST_MAX];
  int port;
  net_lookup_t *lookup; /* while resolving (queued or running) */
  struct addrinfo *res, *cur;
  struct sockaddr_storage lit; /* a literal IP: resolved without a lookup */
  struct addrinfo lit_ai;
  ms_uvstream_t *u;
  uv_connect_t conn;
  uv_timer_t timer;
  int stop; /* 0, MS_ETIMEDOUT or MS_ECANCELED */
  int status;
  ms_stream_t *result;
  char reason[NET_REASON_LEN];
} net_dial_t;

static void dial_free_and_report(uv_handle_t *h) {
  net_dial_t *d = h->data;
  ms_pdial_t *pd = d->pd;
  int status = d->status;
  ms_stream_t *s = d->result;
  char reason[NET_REASON_LEN];
  memcpy(reason, d->reason, sizeof reason);
  if (d->res) uv_freeaddrinfo(d->res);
  free(d);
  ms_pdial_done(pd, status, s, status ? reason : NULL);
}

static void dial_finish(net_dial_t *d, int status, ms_stream_t *s) {
  d->status = status;
  d->result = s;
  if (status != 0 && d->reason[0] == '\0')
    ms_reasonf(d->reason, sizeof d->reason, "net:%s:%d: %s", d->host, d->port,
               ms_strerror(status));
  uv_timer_stop(&d->timer);
  uv_close((uv_handle_t *)&d->timer, dial_free_and_report);
}

/* A getaddrinfo request on the heap, so that a dial can finish (timeout,
 * cancel) while a threadpool thread still runs it: the dial lets go of it
 * (d = NULL) and on_resolved then only frees it. It holds the multiserver
 * live until then. */
struct net_lookup_s {
  uv_getaddrinfo_t req;
  struct net_inst_s *inst;
  net_dial_t *d;      /* NULL once orphaned */
  bool queued;        /* waiting for a slot, in inst->head */
  net_lookup_t *next; /* wait queue */
};

/* The protocol's per-multiserver instance (init/destroy hooks): lookups in
 * the threadpool (those orphaned by a dial that finished first included)
 * and lookups waiting for a slot, oldest first. Each lookup holds a
 * reference on the multiserver (ms_ref), so ms_close waits for orphans;
 * the instance outlives destroy until its last lookup is gone. */
typedef struct net_inst_s {
  ms_t *ms;
  unsigned running;
  net_lookup_t *head, *tail;
  bool destroyed;
} net_inst_t;

static void inst_maybe_free(net_inst_t *n) {
  if (n->destroyed && n->running == 0 && n->head == NULL) free(n);
}

static int net_init(ms_t *ms, void *pdata, void **instance) {
  (void)pdata;
  net_inst_t *n = calloc(1, sizeof(*n));
  if (n == NULL) return MS_ENOMEM;
  n->ms = ms;
  *instance = n;
  return 0;
}

static void net_destroy(ms_t *ms, void *instance) {
  (void)ms;
  net_inst_t *n = instance;
  n->destroyed = true;
  inst_maybe_free(n);
}

#define NET_DNS_MAX 2

/* Lookups one multiserver runs at once; the rest wait in a FIFO queue.
 * libuv runs at most (threads + 1) / 2 getaddrinfo jobs at once, its "slow
 * I/O" share of the threadpool (UV_THREADPOOL_SIZE, 4 threads by default:
 * 2 jobs). Staying below that means slow names a peer chose never hold every
 * slot: other lookups of the process go on, as does all fs work. */
static unsigned dns_cap(void) {
  const char *v = getenv("UV_THREADPOOL_SIZE");
  long n = v ? strtol(v, NULL, 10) : 4;
  if (n < 1) n = 1;
  if (n > 1024) n = 1024;
  long slow = (n + 1) / 2;
  if (slow - 1 < 1) return 1;
  return slow - 1 < NET_DNS_MAX ? (unsigned)(slow - 1) : NET_DNS_MAX;
}

static void lookup_free(net_lookup_t *l) {
  net_inst_t *n = l->inst;
  free(l);
  ms_unref(n->ms);
  inst_maybe_free(n);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

static int lookup_start(net_lookup_t *l) {
  net_dial_t *d = l->d;
  char service[8];
  snprintf(service, sizeof service, "%d", d->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  l->req.data = l;
  int rc = uv_getaddrinfo(ms_loop(l->inst->ms), &l->req, on_resolved, d->host,
                          service, &hints);
  if (rc == 0) l->inst->running++;
  return rc;
}

static void dial_finish(net_dial_t *d, int status, ms_stream_t *s);

/* Start waiting lookups while there is a free slot. */
static void lookup_start_queued(net_inst_t *n) {
  while (n->head && n->running < dns_cap()) {
    net_lookup_t *l = n->head;
    n->head = l->next;
    if (n->head == NULL) n->tail = NULL;
    l->next = NULL;
    l->queued = false;
    int rc = lookup_start(l);
    if (rc != 0) {
      net_dial_t *d = l->d;
      d->lookup = NULL;
      lookup_free(l);
      ms_reasonf(d->reason, sizeof d->reason,
                 "net:%s:%d: cannot resolve host: %s", d->host, d->port,
                 ms_strerror(rc));
      dial_finish(d, rc, NULL);
    }
  }
}

static void lookup_unqueue(net_lookup_t *l) {
  net_inst_t *n = l->inst;
  net_lookup_t **p = &n->head, *prev = NULL;
  while (*p && *p != l) {
    prev = *p;
    p = &(*p)->next;
  }
  if (*p == NULL) return;
  *p = l->next;
  if (n->tail == l) n->tail = prev;
  l->next = NULL;
  l->queued = false;
}

static void try_next(net_dial_t *d);

static void on_connect(uv_connect_t *c, int status) {
  net_dial_t *d = c->data;
  if (d->u == NULL) {
    /* Discarded by a timeout or cancel: its handle is already closing. */
    dial_finish(d, d->stop, NULL);
    return;
  }
  if (status == 0) {
    char addr[128];
    ms_uvstream_t *u = d->u;
    d->u = NULL;
    tune(ms_uvstream_tcp(u));
    if (tcp_name(ms_uvstream_tcp(u), true, addr, sizeof addr) != 0)
      ms__net_format(d->host, d->port, addr, sizeof addr);
    ms_stream_t *s = ms_uvstream_start(u, d->ms, addr);
    if (s == NULL) {
      ms_uvstream_discard(u);
      dial_finish(d, MS_ENOMEM, NULL);
      return;
    }
    /* The host and port as the address wrote them (the stream's address is
     * the resolved IP): what TLS checks a certificate against. */
    char port[8];
    snprintf(port, sizeof port, "%d", d->port);
    if (ms_stream_set_meta_str(s, "host", d->host) != 0 ||
        ms_stream_set_meta_str(s, "port", port) != 0) {
      ms_stream_close(s, NULL, NULL);
      dial_finish(d, MS_ENOMEM, NULL);
      return;
    }
    dial_finish(d, 0, s);
    return;
  }
  ms_uvstream_discard(d->u);
  d->u = NULL;
  d->status = status;
  d->cur = d->cur ? d->cur->ai_next : NULL;
  if (d->cur) {
    try_next(d);
    return;
  }
  dial_finish(d, status, NULL);
}

static void try_next(net_dial_t *d) {
  for (; d->cur; d->cur = d->cur->ai_next) {
    if (d->cur->ai_family != AF_INET && d->cur->ai_family != AF_INET6) continue;
    ms_uvstream_t *u = ms_uvstream_alloc();
    if (u == NULL) {
      dial_finish(d, MS_ENOMEM, NULL);
      return;
    }
    int rc = uv_tcp_init(ms_loop(d->ms), ms_uvstream_tcp(u));
    if (rc != 0) {
      free(u);
      d->status = rc;
      continue;
    }
    d->conn.data = d;
    rc = uv_tcp_connect(&d->conn, ms_uvstream_tcp(u), d->cur->ai_addr, on_connect);
    if (rc != 0) {
      ms_uvstream_discard(u);
      d->status = rc;
      continue;
    }
    d->u = u;
    return;
  }
  dial_finish(d, d->status ? d->status : UV_EAI_NONAME, NULL);
}

/* Alternate the address families, starting with the first the resolver
 * gave (RFC 8305 §4), so a broken IPv6 path costs one attempt, not all of
 * a name's IPv6 addresses. Relinks the list in place; every node stays. */
static struct addrinfo *interleave(struct addrinfo *res) {
  struct addrinfo *a = NULL, **at = &a, *b = NULL, **bt = &b;
  int fam = res ? res->ai_family : 0;
  for (struct addrinfo *p = res, *next; p; p = next) {
    next = p->ai_next;
    p->ai_next = NULL;
    if (p->ai_family == fam) {
      *at = p;
      at = &p->ai_next;
    } else {
      *bt = p;
      bt = &p->ai_next;
    }
  }
  struct addrinfo *out = NULL, **ot = &out;
  while (a || b) {
    if (a) {
      struct addrinfo *n = a->ai_next;
      *ot = a;
      ot = &a->ai_next;
      a->ai_next = NULL;
      a = n;
    }
    if (b) {
      struct addrinfo *n = b->ai_next;
      *ot = b;
      ot = &b->ai_next;
      b->ai_next = NULL;
      b = n;
    }
  }
  return out;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  net_lookup_t *l = req->data;
  net_dial_t *d = l->d;
  net_inst_t *n = l->inst;
  n->running--;
  lookup_start_queued(n);
  lookup_free(l); /* may free n, after a destroy */
  if (d == NULL) { /* orphaned: its dial already finished */
    if (res) uv_freeaddrinfo(res);
    return;
  }
  d->lookup = NULL;
  d->res = res = interleave(res);
  if (d->stop) {
    dial_finish(d, d->stop, NULL);
    return;
  }
  if (status != 0) {
    ms_reasonf(d->reason, sizeof d->reason, "net:%s:%d: cannot resolve host: %s",
               d->host, d->port, ms_strerror(status));
    dial_finish(d, status, NULL);
    return;
  }
  d->cur = res;
  try_next(d);
}

static void dial_stop(net_dial_t *d, int why) {
  if (d->stop) return;
  d->stop = why;
  if (why == MS_ETIMEDOUT)
    ms_reasonf(d->reason, sizeof d->reason, "net:%s:%d: connect timed out",
               d->host, d->port);
  if (d->lookup) {
    /* Finish now. A queued lookup goes; a running one cannot be stopped
     * once a thread took it (uv_cancel fails then), so it is orphaned and
     * frees itself in on_resolved. */
    net_lookup_t *l = d->lookup;
    d->lookup = NULL;
    if (l->queued) {
      lookup_unqueue(l);
      lookup_free(l);
    } else {
      l->d = NULL;
      uv_cancel((uv_req_t *)&l->req);
    }
    dial_finish(d, why, NULL);
  } else if (d->u) {
    ms_uvstream_discard(d->u); /* on_connect fires with UV_ECANCELED */
    d->u = NULL;
  }
}

static void on_timeout(uv_timer_t *t) { dial_stop(t->data, MS_ETIMEDOUT); }

static int net_dial(ms_pdial_t *pd, const ms_section_t *sec, void *pdata) {
  net_inst_t *n = pdata;
  ms_t *ms = ms_pdial_ms(pd);
  net_dial_t *d = calloc(1, sizeof(*d));
  if (d == NULL) return MS_ENOMEM;
  d->pd = pd;
  d->ms = ms;
  int rc = ms__net_parse(sec, 0, d->host, sizeof d->host, &d->port, NULL, 0);
  if (rc != 0) {
    free(d);
    return rc;
  }
  /* A literal IP needs no lookup (and no threadpool slot). */
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  bool literal = true;
  if (uv_ip4_addr(d->host, d->port, &in4) == 0) {
    memcpy(&d->lit, &in4, sizeof in4);
    d->lit_ai.ai_family = AF_INET;
    d->lit_ai.ai_addrlen = sizeof in4;
  } else if (uv_ip6_addr(d->host, d->port, &in6) == 0) {
    memcpy(&d->lit, &in6, sizeof in6);
    d->lit_ai.ai_family = AF_INET6;
    d->lit_ai.ai_addrlen = sizeof in6;
  } else {
    literal = false;
  }
  if (!literal) {
    net_lookup_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
      free(d);
      return MS_ENOMEM;
    }
    l->inst = n;
    l->d = d;
    if (n->running < dns_cap()) {
      rc = lookup_start(l);
      if (rc != 0) {
        free(l);
        free(d);
        return rc;
      }
    } else {
      l->queued = true;
      if (n->tail)
        n->tail->next = l;
      else
        n->head = l;
      n->tail = l;
    }
    ms_ref(ms);
    d->lookup = l;
  }
  uv_timer_init(ms_loop(ms), &d->timer);
  d->timer.data = d;
  uint64_t ms_timeout = ms_options(ms)->connect_timeout_ms;
  const char *topt = ms_pdial_opt(pd, "connect_timeout_ms");
  if (topt && ms_opt_uint(topt, UINT32_MAX, &ms_timeout) != 0) ms_timeout = 0;
  uv_timer_start(&d->timer, on_timeout, ms_timeout ? ms_timeout : 10000, 0);
  ms_pdial_set_impl(pd, d);
  if (literal) {
    d->lit_ai.ai_socktype = SOCK_STREAM;
    d->lit_ai.ai_addr = (struct sockaddr *)&d->lit;
    d->cur = &d->lit_ai;
    try_next(d); /* reports later, never from inside net_dial */
  }
  return 0;
}

static void net_dial_cancel(ms_pdial_t *pd) {
  dial_stop(ms_pdial_impl(pd), MS_ECANCELED);
}

static const char *const net_option_keys[] = {"connect_timeout_ms", NULL};

const ms_protocol_t ms__proto_net = {
    .size = sizeof(ms_protocol_t),
    .name = "net",
    .kind = MS_PROTO_TRANSPORT,
    .validate = net_validate,
    .scope = net_scope,
    .init = net_init,
    .destroy = net_destroy,
    .option_keys = net_option_keys,
    .listen = net_listen,
    .listen_close = net_listen_close,
    .dial = net_dial,
    .dial_cancel = net_dial_cancel,
};
