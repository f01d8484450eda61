/*
 * onion: `onion:HOST:PORT` through a SOCKS5 proxy (Tor's SocksPort, or any
 * RFC 1928 proxy), client only. The proxy is dialed with the library's own
 * ms_connect("net:PROXY") (resolver, connect timeout and address fallback
 * come with it), the SOCKS5 exchange of wire/socks5.c runs over that stream
 * with the host sent as written (ATYP 03 for names: the proxy resolves), and
 * the same stream is handed over renamed `onion:HOST:PORT`, bytes the proxy
 * sent past its reply pushed back.
 *
 * Per-stack options: onion.proxy (comma list of HOST:PORT, tried in order;
 * default 127.0.0.1:9050,127.0.0.1:9150), onion.user / onion.password (RFC
 * 1929), onion.timeout_ms (each proxy's circuit setup, default 60 s).
 *
 * Failure classes: a proxy that cannot be reached, hangs up, times out or
 * does not speak SOCKS5 moves on to the next proxy; when none is left the
 * dial is a path failure. A proxy that answered decides for this
 * alternative: a reply the socks5 core calls a path failure (refused,
 * unreachable, onion descriptor not found) is MS_FAIL_PATH, rejected
 * credentials and the other refusals are MS_FAIL_AUTH (stop: another path
 * will not fix them).
 *
 * The server side (ms_onion_publish, the tor control port) is in
 * onion_service.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "netaddr.h"
#include "socks5.h"

#define ONION_MAX_PROXIES 8
#define ONION_REASON_LEN 1024
#define ONION_DEFAULT_PROXIES "127.0.0.1:9050,127.0.0.1:9150"
#define ONION_DEFAULT_TIMEOUT_MS 60000

typedef struct {
  char text[MS__NET_HOST_MAX + 8]; /* as listed: "127.0.0.1:9050" */
  char net[MS__NET_HOST_MAX + 16]; /* "net:127.0.0.1:9050" */
} onion_proxy_t;

typedef struct {
  ms_pdial_t *pd;
  ms_t *ms;
  char host[MS__NET_HOST_MAX];
  int port;
  char section[MS__NET_HOST_MAX + 16]; /* "onion:HOST:PORT" */
  onion_proxy_t proxies[ONION_MAX_PROXIES];
  size_t nproxies, cur;
  char *user, *pass;
  uint64_t timeout_ms;
  uv_timer_t timer;
  ms_connect_t *creq;  /* the nested connect to the proxy */
  ms_stream_t *s;      /* the proxy stream during the exchange */
  bool s_closing;      /* waiting for s's close callback */
  int writes;          /* our writes not yet completed */
  ms_socks5_t s5;
  int stop;            /* MS_ECANCELED once canceled */
  bool reporting;      /* the timer is closing: the outcome is decided */
  bool timed_out;      /* this attempt's timer fired */
  bool connected;      /* success reply seen, waiting for writes */
  /* outcome */
  int status, fclass;
  bool final;          /* stop after this attempt (no next proxy) */
  char reason[ONION_REASON_LEN];
} onion_dial_t;

/* ---- section ----------------------------------------------------------- */

/* The fields as net's (HOST:PORT, last field the port), with reasons that
 * name onion. */
static int onion_parse(const ms_section_t *sec, char *host, size_t hostlen,
                       int *port, char *reason, size_t reason_len) {
  char why[256] = "";
  int rc = ms__net_parse(sec, 0, host, hostlen, port, why, sizeof why);
  if (rc != 0 && reason) {
    const char *w = strncmp(why, "net: ", 5) == 0 ? why + 5 : why;
    ms_reasonf(reason, reason_len, "onion: %s", w);
  }
  return rc;
}

static int onion_validate(const ms_section_t *sec, int role, void *pdata,
                          char *reason, size_t reason_len) {
  (void)role;
  (void)pdata;
  char host[MS__NET_HOST_MAX];
  int port;
  return onion_parse(sec, host, sizeof host, &port, reason, reason_len);
}

/* Whatever the host, the bytes go through a proxy onto the internet (or the
 * Tor network): never loopback, never device. */
static int onion_scope(const ms_section_t *sec, void *pdata) {
  (void)sec;
  (void)pdata;
  return MS_SCOPE_PUBLIC;
}

/* "HOST:PORT[,HOST:PORT]..." (IPv6 as [::1]:9050 or bare, the last ':'
 * separating the port). 0 or MS_EINVAL with a reason. */
static int parse_proxies(onion_dial_t *d, const char *list, char *reason,
                         size_t reason_len) {
  const char *p = list;
  d->nproxies = 0;
  while (*p) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    char item[MS__NET_HOST_MAX + 8], host[MS__NET_HOST_MAX];
    const char *fields[2];
    size_t lens[2];
    ms_section_t sec = {"net", 2, fields, lens};
    int port;
    if (n == 0 || n >= sizeof item) goto bad;
    if (d->nproxies == ONION_MAX_PROXIES) {
      ms_reasonf(reason, reason_len, "onion.proxy: more than %d proxies",
                 ONION_MAX_PROXIES);
      return MS_EINVAL;
    }
    memcpy(item, p, n);
    item[n] = '\0';
    char *colon = strrchr(item, ':');
    if (colon == NULL || colon == item) goto bad;
    *colon = '\0';
    fields[0] = item;
    lens[0] = strlen(item);
    fields[1] = colon + 1;
    lens[1] = strlen(colon + 1);
    if (ms__net_parse(&sec, 0, host, sizeof host, &port, NULL, 0) != 0) {
      *colon = ':';
      goto bad;
    }
    *colon = ':';
    onion_proxy_t *px = &d->proxies[d->nproxies++];
    snprintf(px->text, sizeof px->text, "%s", item);
    ms__net_format(host, port, px->net, sizeof px->net);
    p += n;
    if (*p == ',') p++;
    continue;
  bad:
    ms_reasonf(reason, reason_len,
               "onion.proxy: expected HOST:PORT[,HOST:PORT...], got \"%.*s\"",
               (int)(n > 200 ? 200 : n), p);
    return MS_EINVAL;
  }
  if (d->nproxies == 0) {
    ms_reasonf(reason, reason_len, "onion.proxy: empty proxy list");
    return MS_EINVAL;
  }
  return 0;
}

/* ---- dial ---------------------------------------------------------------- */

static void attempt(onion_dial_t *d);

static void add_reason(onion_dial_t *d, const char *fmt, const char *a,
                       const char *b) {
  size_t len = strlen(d->reason);
  if (len + 4 >= sizeof d->reason) return;
  char piece[ONION_REASON_LEN];
  ms_reasonf(piece, sizeof piece, fmt, a, b);
  ms_reasonf(d->reason + len, sizeof d->reason - len, "%s%s",
             len ? "; " : "", piece);
}

static void on_timer_closed(uv_handle_t *h) {
  onion_dial_t *d = h->data;
  ms_pdial_t *pd = d->pd;
  ms_stream_t *s = d->status == 0 ? d->s : NULL;
  int status = d->status, fclass = d->fclass;
  char reason[ONION_REASON_LEN + 300];
  ms_reasonf(reason, sizeof reason, "%s: %s", d->section, d->reason);
  ms_socks5_wipe(&d->s5);
  free(d->user);
  if (d->pass) {
    sodium_memzero(d->pass, strlen(d->pass));
    free(d->pass);
  }
  free(d);
  if (status == 0)
    ms_pdial_done(pd, 0, s, NULL);
  else
    ms_pdial_fail(pd, status, fclass, reason);
}

/* Everything of this dial has stopped: report. */
static void report(onion_dial_t *d) {
  d->reporting = true;
  uv_timer_stop(&d->timer);
  uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

/* The attempt on proxy d->cur ended (its stream, if any, is closed): go on
 * to the next proxy or report. */
static void attempt_over(onion_dial_t *d) {
  if (d->stop) {
    d->status = d->stop;
    d->fclass = MS_FAIL_DEFAULT;
    d->reason[0] = '\0';
    add_reason(d, "%s%s", "canceled", "");
    report(d);
    return;
  }
  if (d->status == 0 || d->final) {
    report(d);
    return;
  }
  d->cur++;
  if (d->cur < d->nproxies) {
    attempt(d);
    return;
  }
  d->fclass = MS_FAIL_PATH; /* every proxy down or unusable */
  report(d);
}

static void on_stream_closed(ms_stream_t *s, void *arg) {
  (void)s;
  onion_dial_t *d = arg;
  d->s = NULL;
  d->s_closing = false;
  d->writes = 0;
  attempt_over(d);
}

/* End the current attempt with an error; final: no other proxy. */
static void attempt_fail(onion_dial_t *d, int status, int fclass, bool final,
                         const char *why) {
  uv_timer_stop(&d->timer);
  d->status = status;
  d->fclass = fclass;
  d->final = final;
  add_reason(d, "proxy %s: %s", d->proxies[d->cur].text, why);
  if (d->s && !d->s_closing) {
    d->s_closing = true;
    ms_stream_read_stop(d->s);
    ms_stream_close(d->s, on_stream_closed, d);
    return;
  }
  if (!d->s_closing) attempt_over(d);
}

/* The SOCKS5 exchange failed with the core's final error. */
static void socks_failed(onion_dial_t *d) {
  int err = ms_socks5_error(&d->s5);
  const char *why = ms_socks5_reason(&d->s5);
  if (err == MS_EUNAUTHORIZED) {
    attempt_fail(d, err, MS_FAIL_AUTH, true, why); /* credentials: stop */
  } else if (ms_socks5_rep(&d->s5) > 0) {
    /* The proxy answered for the destination: its verdict stands. */
    attempt_fail(d, err,
                 ms_socks5_path_failure(&d->s5) ? MS_FAIL_PATH : MS_FAIL_AUTH,
                 true, why);
  } else {
    attempt_fail(d, err, MS_FAIL_PATH, false, why); /* not a SOCKS5 proxy */
  }
}

static void succeed(onion_dial_t *d) {
  ms_stream_t *s = d->s;
  char port[8];
  uv_timer_stop(&d->timer);
  snprintf(port, sizeof port, "%d", d->port);
  if (ms_stream_set_address(s, d->section) != 0 ||
      ms_stream_set_meta_str(s, "host", d->host) != 0 ||
      ms_stream_set_meta_str(s, "port", port) != 0 ||
      ms_stream_set_meta_str(s, "onion.proxy", d->proxies[d->cur].text) != 0) {
    attempt_fail(d, MS_ENOMEM, MS_FAIL_PATH, true, "out of memory");
    return;
  }
  d->status = 0;
  report(d); /* hands d->s over */
}

static void on_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status; /* a failed write shows as a read error or EOF */
  onion_dial_t *d = arg;
  d->writes--;
  if (d->connected && d->writes == 0 && !d->s_closing) succeed(d);
}

static int send_output(onion_dial_t *d) {
  const uint8_t *p;
  size_t n = ms_socks5_output(&d->s5, &p);
  if (n == 0) return 0;
  ms_buf_t b = {p, n};
  int rc = ms_stream_write(d->s, &b, 1, on_written, d);
  if (rc == 0) d->writes++;
  return rc;
}

static void on_read(ms_stream_t *s, int status, const uint8_t *data,
                    size_t len, void *arg) {
  onion_dial_t *d = arg;
  if (d->s_closing || d->connected) return;
  if (status == MS_EOF) {
    if (ms_socks5_eof(&d->s5) == 0) return; /* cannot happen: not connected */
    socks_failed(d);
    return;
  }
  if (status < 0) {
    char why[256];
    ms_reasonf(why, sizeof why, "socks5: %s %s", ms_strerror(status),
               ms_socks5_stage_str(&d->s5));
    attempt_fail(d, status, MS_FAIL_PATH, false, why);
    return;
  }
  while (len > 0) {
    size_t c = 0;
    int r = ms_socks5_feed(&d->s5, data, len, &c);
    data += c;
    len -= c;
    if (r == MS_SOCKS5_SEND) {
      int rc = send_output(d);
      if (rc != 0) {
        attempt_fail(d, rc, MS_FAIL_PATH, false, ms_strerror(rc));
        return;
      }
      continue;
    }
    if (r == MS_SOCKS5_CONNECTED) {
      ms_stream_read_stop(s);
      if (len > 0 && ms_stream_unread(s, data, len) != 0) {
        attempt_fail(d, MS_ENOMEM, MS_FAIL_PATH, true, "out of memory");
        return;
      }
      d->connected = true;
      if (d->writes == 0) succeed(d);
      return;
    }
    if (r < 0) {
      socks_failed(d);
      return;
    }
  }
}

static void on_proxy(ms_stream_t *s, int status, const char *reason,
                     void *arg) {
  onion_dial_t *d = arg;
  d->creq = NULL;
  if (d->stop || d->timed_out) {
    if (s) ms_stream_close(s, NULL, NULL);
    if (d->stop) {
      attempt_over(d);
      return;
    }
    attempt_fail(d, MS_ETIMEDOUT, MS_FAIL_PATH, false,
                 "timed out connecting to the proxy");
    return;
  }
  if (status != 0) {
    const char *why = reason ? reason : ms_strerror(status);
    if (strncmp(why, "alternative 1: ", 15) == 0) why += 15; /* one alt */
    attempt_fail(d, status, MS_FAIL_PATH, false, why);
    return;
  }
  d->s = s;
  int rc = ms_socks5_init(&d->s5, d->host, strlen(d->host), (uint16_t)d->port,
                          d->user, d->pass);
  if (rc == 0) rc = send_output(d);
  if (rc == 0) rc = ms_stream_read_start(s, on_read, d);
  if (rc != 0) {
    const char *why = ms_socks5_reason(&d->s5);
    attempt_fail(d, rc, MS_FAIL_PATH, rc == MS_EINVAL,
                 why[0] ? why : ms_strerror(rc));
  }
}

static void on_timeout(uv_timer_t *t) {
  onion_dial_t *d = t->data;
  char why[128];
  if (d->creq) {
    d->timed_out = true;
    ms_connect_cancel(d->creq); /* on_proxy reports */
    return;
  }
  if (d->s && !d->s_closing) {
    ms_reasonf(why, sizeof why,
               "socks5: no answer within %llu ms (circuit setup timed out)",
               (unsigned long long)d->timeout_ms);
    attempt_fail(d, MS_ETIMEDOUT, MS_FAIL_PATH, false, why);
  }
}

static void attempt(onion_dial_t *d) {
  d->timed_out = false;
  d->connected = false;
  d->status = 0;
  uv_timer_start(&d->timer, on_timeout, d->timeout_ms, 0);
  int rc = ms_connect(d->ms, d->proxies[d->cur].net, on_proxy, d, &d->creq);
  if (rc != 0) {
    d->creq = NULL;
    attempt_fail(d, rc, MS_FAIL_PATH, true, ms_strerror(rc));
  }
}

static char *dup_opt(const char *v) {
  if (v == NULL) return NULL;
  size_t n = strlen(v) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, v, n);
  return p;
}

static int onion_dial(ms_pdial_t *pd, const ms_section_t *sec, void *pdata) {
  (void)pdata;
  ms_t *ms = ms_pdial_ms(pd);
  char why[512] = "";
  onion_dial_t *d = calloc(1, sizeof(*d));
  if (d == NULL) return MS_ENOMEM;
  d->pd = pd;
  d->ms = ms;
  int rc = onion_parse(sec, d->host, sizeof d->host, &d->port, why, sizeof why);
  if (rc != 0) {
    free(d);
    return rc;
  }
  ms__net_format(d->host, d->port, d->section + 2, sizeof d->section - 2);
  memcpy(d->section, "onion", 5); /* "net:H:P" written at +2 → "onion:H:P" */

  const char *list = ms_pdial_opt(pd, "proxy");
  const char *user = ms_pdial_opt(pd, "user");
  const char *pass = ms_pdial_opt(pd, "password");
  const char *topt = ms_pdial_opt(pd, "timeout_ms");
  d->timeout_ms = ONION_DEFAULT_TIMEOUT_MS;
  rc = parse_proxies(d, list ? list : ONION_DEFAULT_PROXIES, why, sizeof why);
  if (rc == 0 && topt &&
      (ms_opt_uint(topt, UINT32_MAX, &d->timeout_ms) != 0 || d->timeout_ms == 0)) {
    ms_reasonf(why, sizeof why, "onion.timeout_ms: expected 1-%u, got \"%s\"",
               (unsigned)UINT32_MAX, topt);
    rc = MS_EINVAL;
  }
  if (rc == 0 && (user == NULL) != (pass == NULL)) {
    ms_reasonf(why, sizeof why,
               "onion.user and onion.password: give both or neither");
    rc = MS_EINVAL;
  }
  if (rc == 0 && user &&
      (strlen(user) < 1 || strlen(user) > MS_SOCKS5_MAX_FIELD ||
       strlen(pass) < 1 || strlen(pass) > MS_SOCKS5_MAX_FIELD)) {
    ms_reasonf(why, sizeof why,
               "onion.user and onion.password: 1-%d bytes each (RFC 1929)",
               MS_SOCKS5_MAX_FIELD);
    rc = MS_EINVAL;
  }
  if (rc == 0 && user) {
    d->user = dup_opt(user);
    d->pass = dup_opt(pass);
    if (d->user == NULL || d->pass == NULL) rc = MS_ENOMEM;
  }
  if (rc != 0) {
    char r2[ONION_REASON_LEN];
    ms_reasonf(r2, sizeof r2, "%s: %s", d->section, why[0] ? why : ms_strerror(rc));
    free(d->user);
    free(d->pass);
    free(d);
    ms_pdial_fail(pd, rc, MS_FAIL_PATH, r2);
    return 0;
  }
  rc = uv_timer_init(ms_loop(ms), &d->timer);
  if (rc != 0) {
    free(d->user);
    free(d->pass);
    free(d);
    return rc;
  }
  d->timer.data = d;
  ms_pdial_set_impl(pd, d);
  attempt(d);
  return 0;
}

static void onion_dial_cancel(ms_pdial_t *pd) {
  onion_dial_t *d = ms_pdial_impl(pd);
  if (d == NULL || d->stop || d->reporting) return;
  d->stop = MS_ECANCELED;
  if (d->creq) {
    ms_connect_cancel(d->creq); /* on_proxy finishes */
    return;
  }
  if (d->s && !d->s_closing) {
    uv_timer_stop(&d->timer);
    d->s_closing = true;
    ms_stream_read_stop(d->s);
    ms_stream_close(d->s, on_stream_closed, d);
  }
  /* else: a close (or the report) is under way and sees d->stop */
}

static const char *const onion_option_keys[] = {"proxy", "user", "password",
                                                "timeout_ms", NULL};

const ms_protocol_t ms__proto_onion = {
    .size = sizeof(ms_protocol_t),
    .name = "onion",
    .kind = MS_PROTO_TRANSPORT,
    .validate = onion_validate,
    .scope = onion_scope,
    .option_keys = onion_option_keys,
    .dial = onion_dial,
    .dial_cancel = onion_dial_cancel,
};
