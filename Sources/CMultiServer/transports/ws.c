/*
 * ws, wss: WebSocket (RFC 6455) as a transport. `ws://HOST[:PORT][/PATH]`
 * is one section (name "ws", fields "//HOST" and "PORT/PATH" as the ':'
 * splits them); wss is the same over TLS (the "tls" transform).
 *
 * Built on the library itself, through public interfaces only:
 *  - dialing: a nested ms_connect("net:HOST:PORT") (resolution, timeouts,
 *    the host/port metadata), for wss ms_stream_wrap(…, "tls", …), then the
 *    upgrade request (wire/http1.c) and a ws stream over that stream;
 *  - listening: a nested ms_listen("net:HOST:PORT"); each connection (for
 *    wss first wrapped in tls) has its request head parsed with limits,
 *    answered 101 or 400/403/404/426/431, the bytes read past the head
 *    pushed back (ms_stream_unread), and a ws stream handed to
 *    ms_plisten_incoming. A request that is no upgrade goes to the
 *    multiserver's HTTP handler (multiserver_ws.h) if there is one.
 *
 * The ws stream carries the byte stream in binary messages (text messages
 * received are delivered as their bytes), answers pings, and maps the close
 * handshake onto half-close: shutdown sends a close frame (1000); the
 * peer's close frame ends reading (MS_EOF); a TCP end without one is
 * MS_EHANGUP; a protocol violation sends the RFC's close code (1002, 1007,
 * 1009) and ends reading with the decoder's error. Writes of one loop turn
 * are framed into one buffer that goes down in one lower write (the flush
 * hook). Client frames are masked with keys from a ChaCha20 keystream
 * (seeded from libsodium) taken 4 bytes at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "multiserver_ws.h"
#include "http1.h"
#include "netaddr.h"
#include "wsframe.h"

#define WS_URL_MAX 2048
#define WS_PATH_MAX 1024
#define WS_REASON_LEN 256
#define WS_DEFAULT_MAX_MESSAGE (16u << 20)
#define WS_DEFAULT_TIMEOUT_MS 15000
#define WS_FRAME_PAYLOAD (256u * 1024) /* our data frames' largest payload */
#define WS_RNG_BYTES 1024
#define WS_MAX_HEADERS 64

/* ---- per-multiserver instance (shared by ws and wss) --------------------- */

typedef struct {
  ms_t *ms;
  int refs;
  ms_http_handler_fn http_cb;
  void *http_arg;
  /* Masking keys: a ChaCha20 keystream under a random key, refilled in
   * blocks, 4 bytes per frame. Keys must be unpredictable to the page
   * (RFC 6455 §10.3), not secret forever: one libsodium call per kilobyte. */
  uint8_t rng_key[crypto_stream_chacha20_KEYBYTES];
  uint64_t rng_nonce;
  uint8_t rng[WS_RNG_BYTES];
  size_t rng_pos;
} ws_inst_t;

static void rng_mask_key(ws_inst_t *in, uint8_t out[MS_WS_MASK_KEYBYTES]) {
  if (in->rng_pos + MS_WS_MASK_KEYBYTES > sizeof in->rng) {
    uint8_t nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
    uint64_t n = in->rng_nonce++;
    for (int i = 0; i < 8; i++) nonce[i] = (uint8_t)(n >> (8 * i));
    crypto_stream_chacha20(in->rng, sizeof in->rng, nonce, in->rng_key);
    in->rng_pos = 0;
  }
  memcpy(out, in->rng + in->rng_pos, MS_WS_MASK_KEYBYTES);
  in->rng_pos += MS_WS_MASK_KEYBYTES;
}

static ws_inst_t *inst_new(ms_t *ms) {
  ws_inst_t *in = calloc(1, sizeof(*in));
  if (in == NULL) return NULL;
  in->ms = ms;
  in->refs = 1;
  randombytes_buf(in->rng_key, sizeof in->rng_key);
  in->rng_pos = sizeof in->rng; /* fill on first use */
  return in;
}

static int ws_init(ms_t *ms, void *pdata, void **instance) {
  (void)pdata;
  ws_inst_t *in = inst_new(ms);
  if (in == NULL) return MS_ENOMEM;
  *instance = in;
  return 0;
}

/* wss shares ws's instance (one HTTP handler, one keystream) when ws is
 * registered on this multiserver, as it is for the built-ins. */
static int wss_init(ms_t *ms, void *pdata, void **instance) {
  (void)pdata;
  void *ws = NULL;
  if (ms_protocol_find(ms, "ws", &ws) == 0 && ws != NULL) {
    ((ws_inst_t *)ws)->refs++;
    *instance = ws;
    return 0;
  }
  return ws_init(ms, pdata, instance);
}

static void ws_destroy(ms_t *ms, void *instance) {
  (void)ms;
  ws_inst_t *in = instance;
  if (--in->refs > 0) return;
  sodium_memzero(in, sizeof(*in));
  free(in);
}

int ms_ws_set_http_handler(ms_t *ms, ms_http_handler_fn cb, void *arg) {
  if (ms == NULL) return MS_EINVAL;
  void *p = NULL;
  int rc = ms_protocol_find(ms, "ws", &p);
  if (rc != 0) return rc;
  ws_inst_t *in = p;
  in->http_cb = cb;
  in->http_arg = cb ? arg : NULL;
  return 0;
}

/* ---- addresses ----------------------------------------------------------- */

typedef struct {
  bool secure;
  char host[MS__NET_HOST_MAX]; /* no brackets */
  int port;                    /* the effective port (default filled in) */
  char path[WS_PATH_MAX];      /* origin-form target, "/" by default */
} ws_url_t;

static int default_port(bool secure) { return secure ? 443 : 80; }

/* Parse a ws/wss section: the fields re-joined with ':' are the URL after
 * the scheme's ':' ("//host:port/path"). */
static int url_parse(const ms_section_t *sec, bool listen, ws_url_t *u,
                     char *reason, size_t rlen) {
  const char *name = sec->name;
  char s[WS_URL_MAX];
  size_t n = 0;
  memset(u, 0, sizeof(*u));
  u->secure = strcmp(name, "wss") == 0;
  for (size_t i = 0; i < sec->nfields; i++) {
    size_t fl = sec->field_lens[i];
    if (n + fl + 2 > sizeof s) {
      ms_reasonf(reason, rlen, "%s: address too long", name);
      return MS_EADDRESS;
    }
    if (i) s[n++] = ':';
    memcpy(s + n, sec->fields[i], fl);
    n += fl;
  }
  s[n] = '\0';
  if (n < 3 || s[0] != '/' || s[1] != '/') {
    ms_reasonf(reason, rlen, "%s: expected %s://HOST[:PORT][/PATH]", name, name);
    return MS_EADDRESS;
  }
  if (memchr(s, '\0', n)) {
    ms_reasonf(reason, rlen, "%s: NUL in address", name);
    return MS_EADDRESS;
  }
  const char *auth = s + 2;
  const char *slash = strchr(auth, '/');
  size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
  const char *hs = auth, *ps = NULL;
  size_t hl;
  if (alen && auth[0] == '[') {
    const char *rb = memchr(auth, ']', alen);
    if (rb == NULL) {
      ms_reasonf(reason, rlen, "%s: unterminated '[' in host", name);
      return MS_EADDRESS;
    }
    hs = auth + 1;
    hl = (size_t)(rb - hs);
    const char *after = rb + 1;
    size_t rest = alen - (size_t)(after - auth);
    if (rest) {
      if (after[0] != ':') {
        ms_reasonf(reason, rlen, "%s: expected ':PORT' after ']'", name);
        return MS_EADDRESS;
      }
      ps = after + 1;
    }
    if (memchr(hs, ':', hl) == NULL) {
      ms_reasonf(reason, rlen, "%s: brackets are for IPv6 hosts only", name);
      return MS_EADDRESS;
    }
  } else {
    const char *colon = memchr(auth, ':', alen);
    hl = colon ? (size_t)(colon - auth) : alen;
    if (colon) {
      ps = colon + 1;
      if (memchr(ps, ':', alen - hl - 1)) {
        ms_reasonf(reason, rlen, "%s: an IPv6 host goes in brackets (%s://[::1]:8989)",
                   name, name);
        return MS_EADDRESS;
      }
    }
  }
  if (hl == 0 || hl >= sizeof u->host) {
    ms_reasonf(reason, rlen, "%s: %s host", name, hl ? "over-long" : "empty");
    return MS_EADDRESS;
  }
  memcpy(u->host, hs, hl);
  u->host[hl] = '\0';
  u->port = default_port(u->secure);
  if (ps) {
    size_t pl = (size_t)(auth + alen - ps);
    long v = 0;
    if (pl == 0 || pl > 5) {
      ms_reasonf(reason, rlen, "%s: port must be 1-65535%s", name, listen ? " (or 0)" : "");
      return MS_EADDRESS;
    }
    for (size_t i = 0; i < pl; i++) {
      if (ps[i] < '0' || ps[i] > '9') {
        ms_reasonf(reason, rlen, "%s: port is not a number", name);
        return MS_EADDRESS;
      }
      v = v * 10 + (ps[i] - '0');
    }
    if (v > 65535 || (v == 0 && !listen)) {
      ms_reasonf(reason, rlen, "%s: port must be 1-65535%s", name, listen ? " (or 0)" : "");
      return MS_EADDRESS;
    }
    u->port = (int)v;
  }
  /* The host's syntax is net's. */
  char portbuf[8];
  snprintf(portbuf, sizeof portbuf, "%d", u->port ? u->port : 1);
  const char *nf[2] = {u->host, portbuf};
  size_t nl[2] = {strlen(u->host), strlen(portbuf)};
  ms_section_t ns = {"net", 2, nf, nl};
  char why[WS_REASON_LEN];
  if (ms__net_parse(&ns, 1, NULL, 0, NULL, why, sizeof why) != 0) {
    ms_reasonf(reason, rlen, "%s: bad host %s", name, u->host);
    return MS_EADDRESS;
  }
  const char *path = slash ? slash : "/";
  size_t pl = strlen(path);
  if (pl >= sizeof u->path) {
    ms_reasonf(reason, rlen, "%s: path longer than %d bytes", name, WS_PATH_MAX - 1);
    return MS_EADDRESS;
  }
  for (size_t i = 0; i < pl; i++) {
    unsigned char c = (unsigned char)path[i];
    if (c < 0x21 || c > 0x7e || c == '#') {
      ms_reasonf(reason, rlen, "%s: path holds a byte not allowed in a request target", name);
      return MS_EADDRESS;
    }
    if (listen && c == '?') {
      ms_reasonf(reason, rlen, "%s: a listen path has no query", name);
      return MS_EADDRESS;
    }
  }
  memcpy(u->path, path, pl + 1);
  return 0;
}

/* Printed section: ws://HOST[:PORT][PATH], IPv6 in brackets, the default
 * port and the path "/" omitted, '!', ';' and '~' escaped. */
static size_t url_format(const ws_url_t *u, int port, char *buf, size_t size) {
  char tmp[WS_URL_MAX + 64];
  bool v6 = strchr(u->host, ':') != NULL;
  int n = snprintf(tmp, sizeof tmp, "%s://%s%s%s", u->secure ? "wss" : "ws",
                   v6 ? "[" : "", u->host, v6 ? "]" : "");
  if (port != default_port(u->secure))
    n += snprintf(tmp + n, sizeof tmp - (size_t)n, ":%d", port);
  if (strcmp(u->path, "/") != 0)
    for (const char *p = u->path; *p && (size_t)n + 3 < sizeof tmp; p++) {
      if (*p == '!' || *p == ';' || *p == '~') tmp[n++] = '!';
      tmp[n++] = *p;
    }
  tmp[n] = '\0';
  return (size_t)snprintf(buf, size, "%s", tmp);
}

/* "net:HOST:PORT" for the nested TCP listen/connect. */
static void url_net(const ws_url_t *u, char *buf, size_t size) {
  bool v6 = strchr(u->host, ':') != NULL;
  snprintf(buf, size, "net:%s%s%s:%d", v6 ? "[" : "", u->host, v6 ? "]" : "",
           u->port);
}

/* A ws section for a peer, from its net stream address "net:IP:PORT". */
static void peer_address(const char *net, bool secure, const char *path,
                         char *buf, size_t size) {
  ws_url_t u;
  memset(&u, 0, sizeof u);
  u.secure = secure;
  snprintf(u.path, sizeof u.path, "%s", path ? path : "/");
  const char *h = strncmp(net, "net:", 4) == 0 ? net + 4 : net;
  const char *tilde = strchr(h, '~');
  size_t hl = tilde ? (size_t)(tilde - h) : strlen(h);
  const char *colon = NULL;
  for (size_t i = 0; i < hl; i++)
    if (h[i] == ':') colon = h + i;
  int port = 0;
  if (colon && (size_t)(colon - h) < sizeof u.host) {
    memcpy(u.host, h, (size_t)(colon - h));
    port = atoi(colon + 1);
  } else {
    snprintf(u.host, sizeof u.host, "unknown");
  }
  url_format(&u, port, buf, size);
}

static int ws_validate(const ms_section_t *sec, int role, void *pdata,
                       char *reason, size_t reason_len) {
  (void)pdata;
  ws_url_t u;
  return url_parse(sec, role == MS_ROLE_SERVER, &u, reason, reason_len);
}

/* Like net's host: a loopback literal is loopback scope, a name public.
 * noauth is refused over ws/wss whatever the scope and options (any web
 * page can open a WebSocket to localhost): see core/stack.c. */
static int ws_scope(const ms_section_t *sec, void *pdata) {
  (void)pdata;
  ws_url_t u;
  if (url_parse(sec, true, &u, NULL, 0) != 0) return MS_SCOPE_PUBLIC;
  return ms__host_scope(u.host);
}

/* ---- small helpers ------------------------------------------------------- */

static void free_arg_on_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  free(arg);
}

/* Write a copy of data[0..len) to s. */
static int write_copy(ms_stream_t *s, const void *data, size_t len,
                      ms_write_cb cb, void *cb_arg_unused) {
  (void)cb_arg_unused;
  uint8_t *b = malloc(len ? len : 1);
  if (b == NULL) return MS_ENOMEM;
  memcpy(b, data, len);
  ms_buf_t buf = {b, len};
  int rc = ms_stream_write(s, &buf, 1, cb ? cb : free_arg_on_written, b);
  if (rc != 0) free(b);
  return rc;
}

static bool list_has_exact(const char *list, const char *v, size_t vl) {
  size_t pos = 0;
  const char *e;
  size_t el;
  if (list == NULL) return false;
  while (ms_http_list_next(list, strlen(list), &pos, &e, &el))
    if (el == vl && memcmp(e, v, vl) == 0) return true;
  return false;
}

/* ---- the ws stream -------------------------------------------------------- */

typedef struct ws_conn_s ws_conn_t;

/* The frames queued in one loop turn, and the upper requests they carry. */
typedef struct {
  ws_conn_t *c;
  uint8_t *buf;
  size_t len, cap;
  ms_write_req_t **reqs;
  size_t nreqs, capreqs;
} ws_batch_t;

struct ws_conn_s {
  ms_t *ms;
  ws_inst_t *inst;
  ms_stream_t *lower;
  ms_stream_t *upper;
  bool client;
  ms_ws_decoder_t dec;
  ws_batch_t *cur;   /* this turn's frames, not yet written */
  ws_batch_t *spare; /* one recycled batch */
  int write_error;
  bool close_sent;
  bool ended; /* reading ended (EOF or error emitted) */
  bool peer_closed; /* the peer's close frame came */
  ms_defer_t shut_defer;
};

static void batch_free(ws_batch_t *b) {
  if (b == NULL) return;
  free(b->buf);
  free(b->reqs);
  free(b);
}

static void batch_recycle(ws_conn_t *c, ws_batch_t *b) {
  b->len = 0;
  b->nreqs = 0;
  if (c->spare == NULL && b->cap <= 4 * WS_FRAME_PAYLOAD) {
    c->spare = b;
    return;
  }
  batch_free(b);
}

static ws_batch_t *batch_get(ws_conn_t *c) {
  if (c->cur) return c->cur;
  ws_batch_t *b = c->spare;
  if (b) {
    c->spare = NULL;
  } else if ((b = calloc(1, sizeof(*b))) == NULL) {
    return NULL;
  }
  b->c = c;
  c->cur = b;
  return b;
}

static int batch_reserve(ws_batch_t *b, size_t more) {
  if (b->cap - b->len >= more) return 0;
  size_t want = b->cap ? b->cap : 4096;
  while (want - b->len < more) {
    if (want > SIZE_MAX / 2) return MS_ENOMEM;
    want *= 2;
  }
  uint8_t *nb = realloc(b->buf, want);
  if (nb == NULL) return MS_ENOMEM;
  b->buf = nb;
  b->cap = want;
  return 0;
}

static void batch_complete(ws_batch_t *b, int status) {
  /* A completion may queue new writes: those go to a new batch. */
  for (size_t i = 0; i < b->nreqs; i++) ms_write_req_done(b->reqs[i], status);
  b->nreqs = 0;
}

static void on_batch_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  ws_batch_t *b = arg;
  ws_conn_t *c = b->c;
  if (status != 0 && c->write_error == 0) c->write_error = status;
  batch_complete(b, status);
  batch_recycle(c, b);
}

static void ws_flush(ms_stream_t *s) {
  ws_conn_t *c = ms_stream_impl(s);
  ws_batch_t *b = c->cur;
  if (b == NULL) return;
  c->cur = NULL;
  ms_buf_t out = {b->buf, b->len};
  int rc = ms_stream_write(c->lower, &out, b->len ? 1 : 0, on_batch_written, b);
  if (rc != 0) {
    if (c->write_error == 0) c->write_error = rc;
    batch_complete(b, rc);
    batch_recycle(c, b);
  }
}

static int ws_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                    unsigned nbufs) {
  ws_conn_t *c = ms_stream_impl(s);
  if (c->write_error) return c->write_error;
  if (c->close_sent) return MS_ESHUTDOWN;
  size_t total = 0;
  for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
  ws_batch_t *b = batch_get(c);
  if (b == NULL) return MS_ENOMEM;
  size_t frames = total ? (total + WS_FRAME_PAYLOAD - 1) / WS_FRAME_PAYLOAD : 0;
  if (frames > (SIZE_MAX - total) / MS_WS_MAX_HEADER ||
      batch_reserve(b, total + frames * MS_WS_MAX_HEADER) != 0)
    return MS_ENOMEM;
  if (b->nreqs == b->capreqs) {
    size_t nc = b->capreqs ? b->capreqs * 2 : 16;
    ms_write_req_t **nr = realloc(b->reqs, nc * sizeof(*nr));
    if (nr == NULL) return MS_ENOMEM;
    b->reqs = nr;
    b->capreqs = nc;
  }
  unsigned bi = 0;
  size_t boff = 0, left = total;
  while (left > 0) {
    size_t n = left < WS_FRAME_PAYLOAD ? left : WS_FRAME_PAYLOAD;
    uint8_t key[MS_WS_MASK_KEYBYTES];
    if (c->client) rng_mask_key(c->inst, key);
    int h = ms_ws_frame_header(b->buf + b->len, true, MS_WS_OP_BINARY, n,
                               c->client ? key : NULL);
    if (h < 0) return h;
    b->len += (size_t)h;
    uint8_t *payload = b->buf + b->len;
    size_t got = 0;
    while (got < n) {
      while (bufs[bi].len - boff == 0) {
        bi++;
        boff = 0;
      }
      size_t take = bufs[bi].len - boff;
      if (take > n - got) take = n - got;
      memcpy(payload + got, (const uint8_t *)bufs[bi].base + boff, take);
      got += take;
      boff += take;
    }
    if (c->client) ms_ws_mask(payload, n, key, 0);
    b->len += n;
    left -= n;
  }
  b->reqs[b->nreqs++] = req;
  ms_stream_want_flush(s);
  return 0;
}

/* A control frame of ours (pong, close): its own small lower write. */
static int send_control(ws_conn_t *c, int opcode, uint16_t code,
                        const uint8_t *payload, size_t len, const char *reason,
                        ms_write_cb cb, void *arg) {
  uint8_t f[MS_WS_MAX_CONTROL_FRAME];
  uint8_t key[MS_WS_MASK_KEYBYTES];
  if (c->client) rng_mask_key(c->inst, key);
  int n;
  if (opcode == MS_WS_OP_CLOSE) {
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > MS_WS_MAX_CLOSE_REASON) rl = MS_WS_MAX_CLOSE_REASON;
    n = ms_ws_close_frame(f, sizeof f, code, reason, rl, c->client ? key : NULL);
  } else {
    n = ms_ws_control_frame(f, sizeof f, opcode, payload, len, c->client ? key : NULL);
  }
  if (n < 0) return n;
  /* Frames of this turn that are queued go first. */
  if (c->cur && c->upper) ws_flush(c->upper);
  if (cb == NULL) return write_copy(c->lower, f, (size_t)n, NULL, NULL);
  uint8_t *copy = malloc((size_t)n);
  if (copy == NULL) return MS_ENOMEM;
  memcpy(copy, f, (size_t)n);
  (void)arg;
  ms_buf_t b = {copy, (size_t)n};
  int rc = ms_stream_write(c->lower, &b, 1, cb, copy);
  if (rc != 0) free(copy);
  return rc;
}

static void on_fail_close_written(ms_stream_t *lower, int status, void *arg) {
  free(arg);
  if (status == 0) (void)ms_stream_shutdown(lower, NULL, NULL);
}

/* The peer broke the protocol: send the RFC's close code, end TCP's write
 * side after it, and end reading with the error. */
static void protocol_fail(ws_conn_t *c, int err) {
  ms_stream_read_stop(c->lower);
  if (!c->close_sent) {
    c->close_sent = true;
    uint16_t code = ms_ws_decoder_close_code(&c->dec);
    const char *why = ms_ws_decoder_reason(&c->dec);
    (void)send_control(c, MS_WS_OP_CLOSE, code ? code : MS_WS_CLOSE_PROTOCOL, NULL, 0,
                       why, on_fail_close_written, NULL);
  }
  if (!c->ended) {
    c->ended = true;
    ms_stream_emit_read(c->upper, err, NULL, 0);
  }
}

static void on_peer_close(ws_conn_t *c, const ms_ws_event_t *ev) {
  ms_stream_read_stop(c->lower);
  char code[8];
  snprintf(code, sizeof code, "%u", ev->close_code);
  if (ms_stream_set_meta_str(c->upper, "ws.close_code", code) != 0 ||
      (ev->reason_len &&
       ms_stream_set_meta(c->upper, "ws.close_reason", ev->reason, ev->reason_len) != 0)) {
    /* out of memory: the metadata is a courtesy, the close goes on */
  }
  bool normal = ev->close_code == MS_WS_CLOSE_NORMAL ||
                ev->close_code == MS_WS_CLOSE_GOING_AWAY ||
                ev->close_code == MS_WS_CLOSE_NO_STATUS;
  if (!normal && !c->close_sent) {
    /* The peer failed the connection: answer at once, nothing follows. */
    c->close_sent = true;
    (void)send_control(c, MS_WS_OP_CLOSE, ev->close_code, NULL, 0, NULL,
                       on_fail_close_written, NULL);
  }
  c->peer_closed = true;
  /* A normal close is the peer's half-close: our side answers with its own
   * close frame when the application shuts down (it may still write). */
  c->ended = true;
  ms_stream_emit_read(c->upper, normal ? MS_EOF : MS_EHANGUP, NULL, 0);
}

static void on_lower_read(ms_stream_t *lower, int status, const uint8_t *data,
                          size_t len, void *arg) {
  (void)lower;
  ws_conn_t *c = arg;
  if (c->ended) return;
  if (status != 0) {
    int r = status == MS_EOF ? ms_ws_decoder_eof(&c->dec) : status;
    c->ended = true;
    ms_stream_emit_read(c->upper, r == 0 ? MS_EOF : r, NULL, 0);
    return;
  }
  uint8_t *p = (uint8_t *)data; /* writable by the emit contract */
  while (len > 0) {
    size_t used = 0;
    ms_ws_event_t ev;
    int r = ms_ws_decode(&c->dec, p, len, &used, &ev);
    p += used;
    len -= used;
    if (r == 0) return;
    if (r < 0) {
      protocol_fail(c, r);
      return;
    }
    switch (ev.type) {
      case MS_WS_EV_DATA:
        if (ev.len == 0) break;
        ms_stream_emit_read(c->upper, 0, ev.data, ev.len);
        if (ms_stream_is_closing(c->upper)) return;
        if (!ms_stream_is_reading(c->upper)) {
          ms_stream_read_stop(c->lower);
          if (len && ms_stream_unread(c->lower, p, len) != 0) {
            c->ended = true;
            ms_stream_emit_read(c->upper, MS_ENOMEM, NULL, 0);
          }
          return;
        }
        break;
      case MS_WS_EV_PING:
        if (!c->close_sent)
          (void)send_control(c, MS_WS_OP_PONG, 0, ev.data, ev.len, NULL, NULL, NULL);
        break;
      case MS_WS_EV_PONG:
        break;
      case MS_WS_EV_CLOSE:
        on_peer_close(c, &ev);
        return;
    }
  }
}

static int ws_read_start(ms_stream_t *s) {
  ws_conn_t *c = ms_stream_impl(s);
  if (c->ended) return 0;
  return ms_stream_read_start(c->lower, on_lower_read, c);
}

static int ws_read_stop(ms_stream_t *s) {
  ws_conn_t *c = ms_stream_impl(s);
  return ms_stream_read_stop(c->lower);
}

/* Once the peer's close frame came, the close handshake is complete when
 * ours is handed on: the peer may hang up at once (most do), so a failure
 * of what follows below (TCP's FIN, TLS's close_notify) is no error. */
static int after_peer_close(const ws_conn_t *c, int status) {
  return c->ended && c->peer_closed ? 0 : status;
}

static void on_lower_shutdown(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  ws_conn_t *c = arg;
  /* Our close frame is out: the ws half-close is done whatever the layer
   * below says about its own end marker (the peer may be gone already). */
  (void)status;
  if (c->upper) ms_stream_shutdown_done(c->upper, 0);
}

static void on_close_frame_written(ms_stream_t *lower, int status, void *arg) {
  ws_conn_t *c = *(ws_conn_t **)arg;
  free(arg);
  status = after_peer_close(c, status);
  if (status != 0) {
    if (c->upper) ms_stream_shutdown_done(c->upper, status);
    return;
  }
  if (ms_stream_shutdown(lower, on_lower_shutdown, c) != 0 && c->upper)
    ms_stream_shutdown_done(c->upper, 0); /* our close frame is out */
}

static void shut_already(void *arg) {
  ws_conn_t *c = arg;
  if (c->upper) ms_stream_shutdown_done(c->upper, 0);
}

static int ws_shutdown(ms_stream_t *s) {
  ws_conn_t *c = ms_stream_impl(s);
  if (c->close_sent) { /* a protocol failure sent ours already */
    ms_defer(c->ms, &c->shut_defer, shut_already, c);
    return 0;
  }
  uint8_t f[MS_WS_MAX_CONTROL_FRAME];
  uint8_t key[MS_WS_MASK_KEYBYTES];
  if (c->client) rng_mask_key(c->inst, key);
  int n = ms_ws_close_frame(f, sizeof f, MS_WS_CLOSE_NORMAL, NULL, 0,
                            c->client ? key : NULL);
  if (n < 0) return n;
  /* The write callback gets a block holding c, then the frame. */
  uint8_t *blk = malloc(sizeof(ws_conn_t *) + (size_t)n);
  if (blk == NULL) return MS_ENOMEM;
  memcpy(blk, &c, sizeof c);
  memcpy(blk + sizeof c, f, (size_t)n);
  ms_buf_t b = {blk + sizeof c, (size_t)n};
  int rc = ms_stream_write(c->lower, &b, 1, on_close_frame_written, blk);
  if (rc != 0) {
    free(blk);
    return rc;
  }
  c->close_sent = true;
  return 0;
}

static void on_conn_lower_closed(ms_stream_t *lower, void *arg) {
  (void)lower;
  ws_conn_t *c = arg;
  ms_stream_t *up = c->upper;
  ms_defer_cancel(c->ms, &c->shut_defer);
  batch_free(c->spare);
  batch_free(c->cur);
  free(c);
  ms_stream_closed(up);
}

static void ws_close(ms_stream_t *s) {
  ws_conn_t *c = ms_stream_impl(s);
  ws_batch_t *b = c->cur;
  if (b) {
    c->cur = NULL;
    batch_complete(b, MS_ECANCELED);
    batch_recycle(c, b);
  }
  ms_defer_cancel(c->ms, &c->shut_defer);
  ms_stream_close(c->lower, on_conn_lower_closed, c);
}

static const ms_stream_ops_t ws_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = ws_write,
    .read_start = ws_read_start,
    .read_stop = ws_read_stop,
    .shutdown = ws_shutdown,
    .close = ws_close,
    .flush = ws_flush,
};

/* A ws stream over lower (reading stopped; bytes past the handshake pushed
 * back already). NULL on ENOMEM (lower still the caller's). */
static ms_stream_t *conn_new(ms_t *ms, ws_inst_t *in, ms_stream_t *lower,
                             bool client, uint64_t max_message,
                             const char *address) {
  ws_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  ms_ws_decoder_config_t cfg;
  ms_ws_decoder_config_default(&cfg, client ? MS_WS_ROLE_CLIENT : MS_WS_ROLE_SERVER);
  cfg.max_frame = cfg.max_message = max_message;
  if (ms_ws_decoder_init(&c->dec, &cfg) != 0) {
    free(c);
    return NULL;
  }
  c->ms = ms;
  c->inst = in;
  c->lower = lower;
  c->client = client;
  c->upper = ms_stream_new(ms, &ws_ops, c, address);
  if (c->upper == NULL) {
    free(c);
    return NULL;
  }
  ms_stream_set_caps(c->upper, ms_stream_caps(lower));
  return c->upper;
}

/* Options shared by listen and dial. */
static int opt_max_message(const char *v, uint64_t *out) {
  *out = WS_DEFAULT_MAX_MESSAGE;
  if (v == NULL) return 0;
  if (ms_opt_uint(v, (uint64_t)1 << 62, out) != 0 || *out == 0) return MS_EINVAL;
  return 0;
}

static uint64_t opt_timeout(ms_t *ms, const char *v) {
  uint64_t t = ms_options(ms)->handshake_timeout_ms;
  if (v && ms_opt_uint(v, UINT32_MAX, &t) != 0) t = 0;
  return t ? t : WS_DEFAULT_TIMEOUT_MS;
}

/* tls.* options for wss from wss.cert/key/ca/servername/verify. */
static int tls_popts(const char *(*get)(const void *, const char *),
                     const void *obj, ms_popts_t **out) {
  static const char *const keys[] = {"cert", "key", "ca", "servername", "verify", NULL};
  int rc = ms_popts_new(out);
  for (size_t i = 0; rc == 0 && keys[i]; i++) {
    const char *v = get(obj, keys[i]);
    if (v) rc = ms_popts_set(*out, "tls", keys[i], v);
  }
  if (rc != 0) {
    ms_popts_free(*out);
    *out = NULL;
  }
  return rc;
}

static const char *get_lopt(const void *pl, const char *k) {
  return ms_plisten_opt(pl, k);
}
static const char *get_dopt(const void *pd, const char *k) {
  return ms_pdial_opt(pd, k);
}

/* A heap timer holding ms alive while open (freed in its close callback),
 * so that its owner can go at once. */
static void timer_free(uv_handle_t *h) {
  ms_t *ms = h->data;
  free(h);
  ms_unref(ms);
}

static uv_timer_t *timer_start(ms_t *ms, uint64_t ms_timeout, uv_timer_cb cb,
                               void *owner) {
  uv_timer_t *t = malloc(sizeof(*t));
  if (t == NULL) return NULL;
  if (uv_timer_init(ms_loop(ms), t) != 0) {
    free(t);
    return NULL;
  }
  ms_ref(ms);
  t->data = owner;
  uv_timer_start(t, cb, ms_timeout, 0);
  return t;
}

static void timer_stop(ms_t *ms, uv_timer_t **tp) {
  uv_timer_t *t = *tp;
  if (t == NULL) return;
  *tp = NULL;
  uv_timer_stop(t);
  t->data = ms;
  uv_close((uv_handle_t *)t, timer_free);
}

/* ---- listening ------------------------------------------------------------ */

typedef struct ws_listener_s ws_listener_t;

enum { HS_WRAPPING, HS_READING, HS_ANSWERING, HS_HTTP };

/* One accepted connection before it is a ws stream (or while a plain HTTP
 * request is answered). It is also the HTTP request object. */
struct ms_http_request_s {
  ms_http_request_t *next, *prev; /* in the listener's pending list */
  ws_listener_t *l;               /* NULL once detached */
  ms_t *ms;
  ws_inst_t *inst;
  bool secure;
  int state;
  ms_stream_t *tcp;
  ms_wrap_t *wrap;
  uv_timer_t *timer;
  char peer[128];
  ms_http_parser_t p;
  char *buf;
  ms_http_header_t hdrs[WS_MAX_HEADERS];
  char *path; /* HTTP: the target up to '?' */
};
typedef ms_http_request_t ws_hs_t;

struct ws_listener_s {
  ms_plisten_t *pl;
  ms_t *ms;
  ws_inst_t *inst;
  ws_url_t url;
  ms_listener_t *inner;
  bool inner_open;
  bool closing;
  char *origins;   /* ws.origins: allowed Origin values, NULL = any */
  char *protocols; /* ws.protocols: subprotocols we speak */
  uint64_t max_message;
  uint64_t timeout_ms;
  ms_popts_t *tls_opts;
  ws_hs_t *pending;
};

static void listener_maybe_done(ws_listener_t *l) {
  if (!l->closing || l->inner_open || l->pending) return;
  ms_plisten_t *pl = l->pl;
  free(l->origins);
  free(l->protocols);
  ms_popts_free(l->tls_opts);
  free(l);
  ms_plisten_closed(pl);
}

static void hs_detach(ws_hs_t *h) {
  ws_listener_t *l = h->l;
  timer_stop(h->ms, &h->timer);
  if (l == NULL) return;
  if (h->prev)
    h->prev->next = h->next;
  else
    l->pending = h->next;
  if (h->next) h->next->prev = h->prev;
  h->next = h->prev = NULL;
  h->l = NULL;
  listener_maybe_done(l);
}

static void hs_free(ws_hs_t *h) {
  hs_detach(h);
  free(h->buf);
  free(h->path);
  free(h);
}

static void on_hs_tcp_closed(ms_stream_t *s, void *arg) {
  (void)s;
  hs_free(arg);
}

static void hs_error(ws_hs_t *h, int status, const char *reason) {
  if (h->l && !h->l->closing) ms_plisten_error(h->l->pl, status, reason);
}

/* Drop the connection now. */
static void hs_abort(ws_hs_t *h) {
  if (h->wrap) { /* its callback closes the stream and frees h */
    ms_wrap_cancel(h->wrap);
    return;
  }
  if (h->tcp) {
    ms_stream_t *t = h->tcp;
    h->tcp = NULL;
    ms_stream_close(t, on_hs_tcp_closed, h);
    return;
  }
  hs_free(h);
}

/* After an answer that ends the connection: read and drop until the peer
 * closes, so that closing does not reset the answer away. */
static void on_drain_read(ms_stream_t *s, int status, const uint8_t *data,
                          size_t len, void *arg) {
  (void)s;
  (void)data;
  (void)len;
  if (status != 0) hs_abort(arg);
}

static void on_answer_shut(ms_stream_t *s, int status, void *arg) {
  ws_hs_t *h = arg;
  if (status != 0 || ms_stream_read_start(s, on_drain_read, h) != 0) hs_abort(h);
}

static void on_answer_written(ms_stream_t *s, int status, void *arg) {
  ws_hs_t *h = *(ws_hs_t **)arg;
  free(arg);
  if (h->tcp == NULL) return;
  if (status != 0 || ms_stream_shutdown(s, on_answer_shut, h) != 0) hs_abort(h);
}

/* Send the answer (copied), then end the connection. */
static int hs_answer(ws_hs_t *h, const void *data, size_t len) {
  h->state = HS_ANSWERING;
  ms_stream_read_stop(h->tcp);
  uint8_t *blk = malloc(sizeof(ws_hs_t *) + len);
  if (blk == NULL) {
    hs_abort(h);
    return MS_ENOMEM;
  }
  memcpy(blk, &h, sizeof h);
  memcpy(blk + sizeof h, data, len);
  ms_buf_t b = {blk + sizeof h, len};
  int rc = ms_stream_write(h->tcp, &b, 1, on_answer_written, blk);
  if (rc != 0) {
    free(blk);
    hs_abort(h);
  }
  return rc;
}

static void hs_refuse(ws_hs_t *h, int status, const char *why) {
  char reason[WS_REASON_LEN];
  ms_reasonf(reason, sizeof reason, "%s: %d from %s: %s", h->secure ? "wss" : "ws",
             status, h->peer, why ? why : "refused");
  hs_error(h, status == 426 || status == 403 ? MS_EHANDSHAKE : MS_EFRAME, reason);
  char out[256];
  int n = ms_http_build_error(out, sizeof out, status);
  if (n < 0) n = ms_http_build_error(out, sizeof out, 400);
  if (n < 0) {
    hs_abort(h);
    return;
  }
  (void)hs_answer(h, out, (size_t)n);
}

static void on_hs_timeout(uv_timer_t *t) {
  ws_hs_t *h = t->data;
  char reason[WS_REASON_LEN];
  ms_reasonf(reason, sizeof reason, "%s: no complete request from %s in time",
             h->secure ? "wss" : "ws", h->peer);
  hs_error(h, MS_ETIMEDOUT, reason);
  timer_stop(h->ms, &h->timer);
  hs_abort(h);
}

/* ---- plain HTTP requests (multiserver_ws.h) ---- */

const char *ms_http_request_method(const ms_http_request_t *r) {
  return r->p.msg.method;
}
const char *ms_http_request_target(const ms_http_request_t *r) {
  return r->p.msg.target;
}
const char *ms_http_request_path(const ms_http_request_t *r) { return r->path; }
const char *ms_http_request_header(const ms_http_request_t *r, const char *name) {
  const ms_http_header_t *f = ms_http_header_find(&r->p.msg, name);
  return f ? f->value : NULL;
}
const char *ms_http_request_peer(const ms_http_request_t *r) { return r->peer; }

static const char *status_text(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

int ms_http_respond(ms_http_request_t *r, int status, const char *ctype,
                    const void *body, size_t len) {
  if (r == NULL) return MS_EINVAL;
  int rc = 0;
  if (status < 200 || status > 599 || (len && body == NULL)) rc = MS_EINVAL;
  for (const char *p = ctype; rc == 0 && p && *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) rc = MS_EINVAL;
  if (rc != 0) {
    hs_abort(r);
    return rc;
  }
  bool head = strcmp(r->p.msg.method, "HEAD") == 0;
  char hdr[512];
  int hn = snprintf(hdr, sizeof hdr,
                    "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\n"
                    "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
                    "Connection: close\r\n\r\n",
                    status, status_text(status), ctype ? "Content-Type: " : "",
                    ctype ? ctype : "", ctype ? "\r\n" : "", len);
  if (hn < 0 || (size_t)hn >= sizeof hdr) {
    hs_abort(r);
    return MS_EINVAL;
  }
  size_t blen = (size_t)hn + (head ? 0 : len);
  uint8_t *out = malloc(blen);
  if (out == NULL) {
    hs_abort(r);
    return MS_ENOMEM;
  }
  memcpy(out, hdr, (size_t)hn);
  if (!head && len) memcpy(out + hn, body, len);
  /* Bound the wait for the peer to close after the answer. */
  if (r->timer == NULL) r->timer = timer_start(r->ms, WS_DEFAULT_TIMEOUT_MS, on_hs_timeout, r);
  rc = hs_answer(r, out, blen);
  free(out);
  return rc;
}

static void hs_http(ws_hs_t *h) {
  const ms_http_msg_t *m = &h->p.msg;
  const ms_http_header_t *cl = ms_http_header_find(m, "content-length");
  if (ms_http_header_find(m, "transfer-encoding") ||
      (cl && strcmp(cl->value, "0") != 0)) {
    hs_refuse(h, 400, "a request body is not accepted");
    return;
  }
  const char *q = strchr(m->target, '?');
  size_t pl = q ? (size_t)(q - m->target) : strlen(m->target);
  h->path = malloc(pl + 1);
  if (h->path == NULL) {
    hs_abort(h);
    return;
  }
  memcpy(h->path, m->target, pl);
  h->path[pl] = '\0';
  h->state = HS_HTTP;
  hs_detach(h); /* the handler owns it until it answers */
  h->inst->http_cb(h, h->inst->http_arg);
}

/* ---- the upgrade ---- */

static void hs_upgrade(ws_hs_t *h, const uint8_t *rest, size_t rest_len) {
  ws_listener_t *l = h->l;
  const ms_http_msg_t *m = &h->p.msg;
  if (!ms_http_header_has_token(m, "upgrade", "websocket") && h->inst->http_cb) {
    hs_http(h);
    return;
  }
  ms_ws_upgrade_t info;
  int st = ms_ws_upgrade_evaluate(m, l->url.path, &info);
  if (st != 101) {
    hs_refuse(h, st < 0 ? 400 : st, info.reason);
    return;
  }
  if (l->origins && info.origin && strcmp(l->origins, "*") != 0 &&
      !list_has_exact(l->origins, info.origin, info.origin_len)) {
    char why[WS_REASON_LEN];
    ms_reasonf(why, sizeof why, "Origin %.*s not allowed", (int)info.origin_len,
               info.origin);
    hs_refuse(h, 403, why);
    return;
  }
  /* The subprotocols offered, and the first one we speak. */
  char offered[512] = "";
  size_t on = 0;
  const char *proto = NULL, *chosen = NULL;
  size_t plen = 0;
  for (size_t i = 0; ms_ws_upgrade_protocol(m, i, &proto, &plen); i++) {
    if (on + plen + 3 < sizeof offered)
      on += (size_t)snprintf(offered + on, sizeof offered - on, "%s%.*s", on ? ", " : "",
                             (int)plen, proto);
    if (chosen == NULL && list_has_exact(l->protocols, proto, plen)) chosen = proto;
  }
  char chosen_buf[128] = "";
  if (chosen) {
    size_t i = 0;
    while (chosen[i] && chosen[i] != ',' && chosen[i] != ' ' && chosen[i] != '\t' &&
           i + 1 < sizeof chosen_buf) {
      chosen_buf[i] = chosen[i];
      i++;
    }
    chosen_buf[i] = '\0';
  }
  char resp[512];
  int n = ms_ws_build_101(resp, sizeof resp, info.key, info.key_len,
                          chosen ? chosen_buf : NULL);
  if (n < 0) {
    hs_refuse(h, 400, "cannot answer this key");
    return;
  }
  char path[WS_PATH_MAX];
  snprintf(path, sizeof path, "%.*s", (int)info.path_len, info.path);
  char addr[WS_URL_MAX + 64];
  peer_address(h->peer, h->secure, path, addr, sizeof addr);
  ms_stream_t *tcp = h->tcp;
  if (rest_len && ms_stream_unread(tcp, rest, rest_len) != 0) {
    hs_abort(h);
    return;
  }
  ms_stream_t *ws = conn_new(h->ms, h->inst, tcp, false, l->max_message, addr);
  int rc = ws ? 0 : MS_ENOMEM;
  if (rc == 0) rc = ms_stream_set_meta_str(ws, "ws.path", path);
  if (rc == 0 && info.origin) rc = ms_stream_set_meta(ws, "ws.origin", info.origin, info.origin_len);
  if (rc == 0 && on) rc = ms_stream_set_meta_str(ws, "ws.protocols", offered);
  if (rc == 0 && chosen) rc = ms_stream_set_meta_str(ws, "ws.protocol", chosen_buf);
  if (rc == 0 && info.query)
    rc = ms_stream_set_meta(ws, "ws.query", info.query, info.query_len);
  if (rc == 0) rc = write_copy(tcp, resp, (size_t)n, NULL, NULL);
  if (rc != 0) {
    if (ws) {
      h->tcp = NULL; /* the ws stream owns it now and closes it */
      ms_stream_close(ws, NULL, NULL);
      hs_free(h);
    } else {
      hs_abort(h);
    }
    return;
  }
  ms_stream_set_server(ws, true);
  ms_plisten_t *pl = l->pl;
  h->tcp = NULL;
  hs_free(h);
  ms_plisten_incoming(pl, ws);
}

static void on_hs_read(ms_stream_t *s, int status, const uint8_t *data,
                       size_t len, void *arg) {
  ws_hs_t *h = arg;
  if (status != 0) {
    char reason[WS_REASON_LEN];
    ms_reasonf(reason, sizeof reason, "%s: %s hung up before a complete request (%s)",
               h->secure ? "wss" : "ws", h->peer, ms_strerror(status));
    hs_error(h, status == MS_EOF ? MS_EHANGUP : status, reason);
    hs_abort(h);
    return;
  }
  size_t used = 0;
  int r = ms_http_parse(&h->p, data, len, &used);
  if (r == MS_HTTP_NEED_MORE) return;
  ms_stream_read_stop(s);
  if (r < 0) {
    hs_refuse(h, ms_http_error_status(&h->p), ms_http_error_reason(&h->p));
    return;
  }
  if (h->l == NULL || h->l->closing) {
    hs_abort(h);
    return;
  }
  hs_upgrade(h, data + used, len - used);
}

static void hs_start_reading(ws_hs_t *h) {
  h->state = HS_READING;
  h->buf = malloc(MS_HTTP_DEFAULT_MAX_HEAD);
  if (h->buf == NULL ||
      ms_http_parser_init(&h->p, MS_HTTP_REQUEST, h->buf, MS_HTTP_DEFAULT_MAX_HEAD,
                          h->hdrs, WS_MAX_HEADERS) != 0 ||
      ms_stream_read_start(h->tcp, on_hs_read, h) != 0)
    hs_abort(h);
}

static void on_tls_wrapped(ms_stream_t *s, int status, const char *reason, void *arg) {
  ws_hs_t *h = arg;
  h->wrap = NULL;
  if (status != 0) {
    char why[WS_REASON_LEN];
    ms_reasonf(why, sizeof why, "wss: TLS with %s failed: %s", h->peer,
               reason ? reason : ms_strerror(status));
    if (status != MS_ECANCELED) hs_error(h, status, why);
    h->tcp = NULL; /* closed by the wrap */
    hs_free(h);
    return;
  }
  h->tcp = s;
  if (h->l == NULL || h->l->closing) {
    hs_abort(h);
    return;
  }
  hs_start_reading(h);
}

static void on_tcp_connection(ms_stream_t *s, void *arg) {
  ws_listener_t *l = arg;
  if (l->closing) {
    ms_stream_close(s, NULL, NULL);
    return;
  }
  ws_hs_t *h = calloc(1, sizeof(*h));
  if (h == NULL) {
    ms_stream_close(s, NULL, NULL);
    return;
  }
  h->l = l;
  h->ms = l->ms;
  h->inst = l->inst;
  h->secure = l->url.secure;
  h->tcp = s;
  snprintf(h->peer, sizeof h->peer, "%s", ms_stream_address(s));
  h->next = l->pending;
  if (l->pending) l->pending->prev = h;
  l->pending = h;
  h->timer = timer_start(l->ms, l->timeout_ms, on_hs_timeout, h);
  if (h->timer == NULL) {
    hs_abort(h);
    return;
  }
  if (!h->secure) {
    hs_start_reading(h);
    return;
  }
  h->state = HS_WRAPPING;
  char reason[WS_REASON_LEN] = "";
  int rc = ms_stream_wrap(l->ms, s, "tls", MS_ROLE_SERVER, l->tls_opts, on_tls_wrapped,
                          h, &h->wrap, reason, sizeof reason);
  if (rc != 0) {
    char why[WS_REASON_LEN];
    ms_reasonf(why, sizeof why, "wss: cannot start TLS: %s", reason[0] ? reason : ms_strerror(rc));
    hs_error(h, rc, why);
    h->wrap = NULL;
    if (rc == MS_ENOMEM) { /* lower closed already */
      h->tcp = NULL;
      hs_free(h);
    } else {
      hs_abort(h);
    }
  }
}

static void on_inner_closed(ms_listener_t *inner, void *arg) {
  (void)inner;
  ws_listener_t *l = arg;
  l->inner_open = false;
  listener_maybe_done(l);
}

static void on_inner_error(const char *stack, int status, const char *reason, void *arg) {
  (void)stack;
  ws_listener_t *l = arg;
  if (!l->closing) ms_plisten_error(l->pl, status, reason);
}

static char *dup_opt(const char *v) { return v ? strdup(v) : NULL; }

static int ws_listen(ms_plisten_t *pl, const ms_section_t *sec, void *pdata) {
  ms_t *ms = ms_plisten_ms(pl);
  char reason[WS_REASON_LEN] = "";
  ws_listener_t *l = calloc(1, sizeof(*l));
  if (l == NULL) return MS_ENOMEM;
  l->pl = pl;
  l->ms = ms;
  l->inst = pdata;
  int rc = url_parse(sec, true, &l->url, reason, sizeof reason);
  if (rc == 0 && opt_max_message(ms_plisten_opt(pl, "max_message"), &l->max_message) != 0) {
    ms_reasonf(reason, sizeof reason, "%s.max_message: a byte count > 0", sec->name);
    rc = MS_EINVAL;
  }
  l->timeout_ms = opt_timeout(ms, ms_plisten_opt(pl, "handshake_timeout_ms"));
  l->origins = dup_opt(ms_plisten_opt(pl, "origins"));
  l->protocols = dup_opt(ms_plisten_opt(pl, "protocols"));
  if (rc == 0 && l->url.secure) {
    if (ms_protocol_find(ms, "tls", NULL) != 0) {
      ms_reasonf(reason, sizeof reason, "wss: needs the tls transform, which this build lacks");
      rc = MS_EPROTO_UNKNOWN;
    } else if (ms_plisten_opt(pl, "cert") == NULL || ms_plisten_opt(pl, "key") == NULL) {
      ms_reasonf(reason, sizeof reason, "wss: a listener needs wss.cert=FILE and wss.key=FILE");
      rc = MS_EINVAL;
    } else {
      rc = tls_popts(get_lopt, pl, &l->tls_opts);
    }
  }
  if (rc == 0) {
    char net[WS_URL_MAX];
    url_net(&l->url, net, sizeof net);
    char why[WS_REASON_LEN] = "";
    rc = ms_listen(ms, net, on_tcp_connection, l, &l->inner, why, sizeof why);
    if (rc != 0)
      ms_reasonf(reason, sizeof reason, "%s: %s", sec->name, why[0] ? why : ms_strerror(rc));
  }
  if (rc == 0) {
    l->inner_open = true;
    ms_listener_on_error(l->inner, on_inner_error, l);
    /* The real host (a wildcard replaced as net does) and port, from
     * "net:HOST:PORT". */
    const char *a = ms_listener_address(l->inner);
    const char *colon = strrchr(a, ':');
    int port = colon ? atoi(colon + 1) : l->url.port;
    ws_url_t adv_url = l->url;
    if (colon && strncmp(a, "net:", 4) == 0 && (size_t)(colon - a - 4) < sizeof adv_url.host) {
      memcpy(adv_url.host, a + 4, (size_t)(colon - a - 4));
      adv_url.host[colon - a - 4] = '\0';
    }
    char adv[WS_URL_MAX + 64];
    url_format(&adv_url, port, adv, sizeof adv);
    rc = ms_plisten_set_address(pl, adv);
    if (rc != 0) {
      ms_listener_close(l->inner, NULL, NULL);
      l->inner_open = false;
    }
  }
  if (rc != 0) {
    ms_plisten_error(pl, rc, reason[0] ? reason : ms_strerror(rc));
    free(l->origins);
    free(l->protocols);
    ms_popts_free(l->tls_opts);
    free(l);
    return rc;
  }
  ms_plisten_set_impl(pl, l);
  return 0;
}

static void ws_listen_close(ms_plisten_t *pl) {
  ws_listener_t *l = ms_plisten_impl(pl);
  l->closing = true;
  if (l->inner_open) ms_listener_close(l->inner, on_inner_closed, l);
  /* Handshakes in progress end now; a listener_maybe_done may free l once
   * the last one is gone, so take them off one by one. */
  for (ws_hs_t *h = l->pending, *next; h; h = next) {
    next = h->next; /* a canceled wrap may report (and free h) at once */
    if (h->tcp || h->wrap) hs_abort(h);
  }
  listener_maybe_done(l);
}

/* ---- dialing --------------------------------------------------------------- */

typedef struct {
  ms_pdial_t *pd;
  ms_t *ms;
  ws_inst_t *inst;
  ws_url_t url;
  ms_connect_t *creq;
  ms_wrap_t *wrap;
  ms_stream_t *tcp;
  uv_timer_t *timer;
  uint64_t timeout_ms, max_message;
  char *origin, *protocols;
  ms_popts_t *tls_opts;
  bool canceled;
  char key[MS_WS_KEY_LEN + 1];
  char tcp_addr[128];
  ms_http_parser_t p;
  char buf[MS_HTTP_DEFAULT_MAX_HEAD];
  ms_http_header_t hdrs[WS_MAX_HEADERS];
} ws_dial_t;

static void dial_free(ws_dial_t *d) {
  timer_stop(d->ms, &d->timer);
  free(d->origin);
  free(d->protocols);
  ms_popts_free(d->tls_opts);
  free(d);
}

static void dial_fail(ws_dial_t *d, int status, int fclass, const char *reason) {
  ms_pdial_t *pd = d->pd;
  if (d->tcp) {
    ms_stream_close(d->tcp, NULL, NULL);
    d->tcp = NULL;
  }
  char why[WS_REASON_LEN];
  ms_reasonf(why, sizeof why, "%s", reason ? reason : ms_strerror(status));
  dial_free(d);
  ms_pdial_fail(pd, status, fclass, why);
}

static void on_dial_timeout(uv_timer_t *t) {
  ws_dial_t *d = t->data;
  timer_stop(d->ms, &d->timer);
  if (d->wrap) { /* its callback reports */
    ms_wrap_cancel(d->wrap);
    return;
  }
  char why[WS_REASON_LEN];
  ms_reasonf(why, sizeof why, "%s: no upgrade answer from %s in time",
             d->url.secure ? "wss" : "ws", d->url.host);
  dial_fail(d, MS_ETIMEDOUT, MS_FAIL_PATH, why);
}

static void on_resp_read(ms_stream_t *s, int status, const uint8_t *data,
                         size_t len, void *arg) {
  ws_dial_t *d = arg;
  const char *name = d->url.secure ? "wss" : "ws";
  char why[WS_REASON_LEN];
  if (status != 0) {
    ms_reasonf(why, sizeof why, "%s: %s hung up before answering the upgrade (%s)", name,
               d->url.host, ms_strerror(status));
    dial_fail(d, status == MS_EOF ? MS_EHANGUP : status, MS_FAIL_PATH, why);
    return;
  }
  size_t used = 0;
  int r = ms_http_parse(&d->p, data, len, &used);
  if (r == MS_HTTP_NEED_MORE) return;
  ms_stream_read_stop(s);
  if (r < 0) {
    ms_reasonf(why, sizeof why, "%s: malformed answer to the upgrade: %s", name,
               ms_http_error_reason(&d->p));
    dial_fail(d, MS_EHANDSHAKE, MS_FAIL_PATH, why);
    return;
  }
  const ms_http_msg_t *m = ms_http_message(&d->p);
  const char *proto = NULL, *bad = NULL;
  if (m->status != 101) {
    ms_reasonf(why, sizeof why, "%s: the server answered %d %s (not 101) for %s", name,
               m->status, m->reason, d->url.path);
    dial_fail(d, MS_EHANDSHAKE, MS_FAIL_PATH, why);
    return;
  }
  if (ms_ws_check_response(m, d->key, d->protocols, &proto, &bad) != 0) {
    ms_reasonf(why, sizeof why, "%s: bad upgrade answer: %s", name, bad ? bad : "?");
    dial_fail(d, MS_EHANDSHAKE, MS_FAIL_PATH, why);
    return;
  }
  if (len - used && ms_stream_unread(s, data + used, len - used) != 0) {
    dial_fail(d, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory");
    return;
  }
  char addr[WS_URL_MAX + 64];
  peer_address(d->tcp_addr, d->url.secure, d->url.path, addr, sizeof addr);
  ms_stream_t *ws = conn_new(d->ms, d->inst, s, true, d->max_message, addr);
  if (ws == NULL) {
    dial_fail(d, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory");
    return;
  }
  d->tcp = NULL; /* ws owns it */
  char port[8];
  snprintf(port, sizeof port, "%d", d->url.port);
  int rc = ms_stream_set_meta_str(ws, "host", d->url.host);
  if (rc == 0) rc = ms_stream_set_meta_str(ws, "port", port);
  if (rc == 0) rc = ms_stream_set_meta_str(ws, "ws.path", d->url.path);
  if (rc == 0 && proto) rc = ms_stream_set_meta_str(ws, "ws.protocol", proto);
  if (rc != 0) {
    ms_stream_close(ws, NULL, NULL);
    dial_fail(d, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory");
    return;
  }
  ms_pdial_t *pd = d->pd;
  dial_free(d);
  ms_pdial_done(pd, 0, ws, NULL);
}

static void send_upgrade(ws_dial_t *d) {
  uint8_t nonce[MS_WS_KEY_NONCEBYTES];
  randombytes_buf(nonce, sizeof nonce);
  ms_ws_key_encode(nonce, d->key);
  ms_ws_client_request_t rq = {
      .host = d->url.host,
      .port = (uint16_t)d->url.port,
      .secure = d->url.secure,
      .path = d->url.path,
      .key = d->key,
      .origin = d->origin,
      .protocols = d->protocols,
  };
  char req[WS_URL_MAX + 1024];
  int n = ms_ws_build_request(req, sizeof req, &rq);
  int rc = n < 0 ? n : 0;
  if (rc == 0)
    rc = ms_http_parser_init(&d->p, MS_HTTP_RESPONSE, d->buf, sizeof d->buf, d->hdrs,
                             WS_MAX_HEADERS);
  if (rc == 0) rc = write_copy(d->tcp, req, (size_t)n, NULL, NULL);
  if (rc == 0) rc = ms_stream_read_start(d->tcp, on_resp_read, d);
  if (rc != 0) {
    char why[WS_REASON_LEN];
    ms_reasonf(why, sizeof why, "%s: cannot send the upgrade request: %s",
               d->url.secure ? "wss" : "ws", ms_strerror(rc));
    dial_fail(d, rc, MS_FAIL_DEFAULT, why);
  }
}

static void on_dial_tls(ms_stream_t *s, int status, const char *reason, void *arg) {
  ws_dial_t *d = arg;
  d->wrap = NULL;
  if (status != 0) {
    d->tcp = NULL; /* closed by the wrap */
    char why[WS_REASON_LEN];
    if (d->canceled) status = MS_ECANCELED;
    else if (d->timer == NULL && status == MS_ECANCELED) status = MS_ETIMEDOUT;
    ms_reasonf(why, sizeof why, "wss: TLS with %s: %s", d->url.host,
               status == MS_ETIMEDOUT ? "timed out" : reason ? reason : ms_strerror(status));
    dial_fail(d, status, MS_FAIL_DEFAULT, why);
    return;
  }
  d->tcp = s;
  if (d->canceled) {
    dial_fail(d, MS_ECANCELED, MS_FAIL_DEFAULT, "canceled");
    return;
  }
  send_upgrade(d);
}

static void on_dial_tcp(ms_stream_t *s, int status, const char *reason, void *arg) {
  ws_dial_t *d = arg;
  d->creq = NULL;
  if (status != 0) {
    /* The nested connect has one alternative: drop its "alternative 1: ". */
    const char *r = reason ? reason : ms_strerror(status);
    if (strncmp(r, "alternative 1: ", 15) == 0) r += 15;
    char why[WS_REASON_LEN];
    ms_reasonf(why, sizeof why, "%s: %s", d->url.secure ? "wss" : "ws", r);
    dial_fail(d, d->canceled ? MS_ECANCELED : status, MS_FAIL_DEFAULT, why);
    return;
  }
  d->tcp = s;
  snprintf(d->tcp_addr, sizeof d->tcp_addr, "%s", ms_stream_address(s));
  if (d->canceled) {
    dial_fail(d, MS_ECANCELED, MS_FAIL_DEFAULT, "canceled");
    return;
  }
  d->timer = timer_start(d->ms, d->timeout_ms, on_dial_timeout, d);
  if (d->timer == NULL) {
    dial_fail(d, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory");
    return;
  }
  if (!d->url.secure) {
    send_upgrade(d);
    return;
  }
  char why[WS_REASON_LEN] = "";
  int rc = ms_stream_wrap(d->ms, s, "tls", MS_ROLE_CLIENT, d->tls_opts, on_dial_tls, d,
                          &d->wrap, why, sizeof why);
  if (rc != 0) {
    if (rc == MS_ENOMEM) d->tcp = NULL;
    d->wrap = NULL;
    char r2[WS_REASON_LEN];
    ms_reasonf(r2, sizeof r2, "wss: cannot start TLS: %s", why[0] ? why : ms_strerror(rc));
    dial_fail(d, rc, MS_FAIL_DEFAULT, r2);
  }
}

static int ws_dial(ms_pdial_t *pd, const ms_section_t *sec, void *pdata) {
  ms_t *ms = ms_pdial_ms(pd);
  ws_dial_t *d = calloc(1, sizeof(*d));
  if (d == NULL) return MS_ENOMEM;
  d->pd = pd;
  d->ms = ms;
  d->inst = pdata;
  int rc = url_parse(sec, false, &d->url, NULL, 0);
  if (rc == 0) rc = opt_max_message(ms_pdial_opt(pd, "max_message"), &d->max_message);
  d->timeout_ms = opt_timeout(ms, ms_pdial_opt(pd, "handshake_timeout_ms"));
  d->origin = dup_opt(ms_pdial_opt(pd, "origin"));
  d->protocols = dup_opt(ms_pdial_opt(pd, "protocols"));
  if (rc == 0 && d->url.secure) {
    if (ms_protocol_find(ms, "tls", NULL) != 0) rc = MS_EPROTO_UNKNOWN;
    else rc = tls_popts(get_dopt, pd, &d->tls_opts);
  }
  ms_popts_t *nopts = NULL;
  const char *ct = ms_pdial_opt(pd, "connect_timeout_ms");
  if (rc == 0 && ct) {
    rc = ms_popts_new(&nopts);
    if (rc == 0) rc = ms_popts_set(nopts, "net", "connect_timeout_ms", ct);
  }
  if (rc == 0) {
    char net[WS_URL_MAX];
    url_net(&d->url, net, sizeof net);
    rc = ms_connect_with(ms, net, nopts, on_dial_tcp, d, &d->creq);
  }
  ms_popts_free(nopts);
  if (rc != 0) {
    free(d->origin);
    free(d->protocols);
    ms_popts_free(d->tls_opts);
    free(d);
    return rc;
  }
  ms_pdial_set_impl(pd, d);
  return 0;
}

static void ws_dial_cancel(ms_pdial_t *pd) {
  ws_dial_t *d = ms_pdial_impl(pd);
  if (d->canceled) return;
  d->canceled = true;
  if (d->creq) {
    ms_connect_cancel(d->creq);
  } else if (d->wrap) {
    ms_wrap_cancel(d->wrap);
  } else {
    dial_fail(d, MS_ECANCELED, MS_FAIL_DEFAULT, "canceled");
  }
}

static const char *const ws_option_keys[] = {
    "origins", "origin", "protocols", "max_message", "handshake_timeout_ms",
    "connect_timeout_ms", NULL};
static const char *const wss_option_keys[] = {
    "origins", "origin", "protocols", "max_message", "handshake_timeout_ms",
    "connect_timeout_ms", "cert", "key", "ca", "servername", "verify", NULL};

const ms_protocol_t ms__proto_ws = {
    .size = sizeof(ms_protocol_t),
    .name = "ws",
    .kind = MS_PROTO_TRANSPORT,
    .validate = ws_validate,
    .scope = ws_scope,
    .init = ws_init,
    .destroy = ws_destroy,
    .option_keys = ws_option_keys,
    .listen = ws_listen,
    .listen_close = ws_listen_close,
    .dial = ws_dial,
    .dial_cancel = ws_dial_cancel,
};

const ms_protocol_t ms__proto_wss = {
    .size = sizeof(ms_protocol_t),
    .name = "wss",
    .kind = MS_PROTO_TRANSPORT,
    .validate = ws_validate,
    .scope = ws_scope,
    .init = wss_init,
    .destroy = ws_destroy,
    .option_keys = wss_option_keys,
    .listen = ws_listen,
    .listen_close = ws_listen_close,
    .dial = ws_dial,
    .dial_cancel = ws_dial_cancel,
};
