/* HTTP/1.1 heads for the WebSocket opening handshake (RFC 6455 §4,
 * RFC 9112 syntax). No I/O, no allocation. */
#include "http1.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sha1.h"

enum { ST_START = 0, ST_HEADERS, ST_DONE, ST_FAILED };

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* ------------------------------------------------------------------ */
/* Character classes                                                   */
/* ------------------------------------------------------------------ */

/* tchar (RFC 9110 §5.6.2). */
static bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return true;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}


static bool is_ows(unsigned char c) {
  return c == ' ' || c == '\t';
}


/* field-vchar / SP / HTAB: anything but CTLs (0x00-0x1f, 0x7f) except
 * HTAB. obs-text (0x80-0xff) is allowed. */
static bool is_field_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}


static bool is_vchar(unsigned char c) {
  return c >= 0x21 && c <= 0x7e;
}


static unsigned char ascii_lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}


static bool ieq(const char *a, size_t alen, const char *b, size_t blen) {
  if (alen != blen) return false;
  for (size_t i = 0; i < alen; i++) {
    if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
      return false;
  }
  return true;
}


bool ms_http_is_token(const char *s, size_t len) {
  if (!s || len == 0) return false;
  for (size_t i = 0; i < len; i++) {
    if (!is_tchar((unsigned char)s[i])) return false;
  }
  return true;
}


/* ------------------------------------------------------------------ */
/* Parser                                                              */
/* ------------------------------------------------------------------ */

int ms_http_parser_init(ms_http_parser_t *p, ms_http_kind_t kind, char *buf,
                        size_t cap, ms_http_header_t *headers,
                        size_t max_headers) {
  if (!p || (kind != MS_HTTP_REQUEST && kind != MS_HTTP_RESPONSE) || !buf ||
      cap < 16 || (!headers && max_headers > 0))
    return MS_EINVAL;
  memset(p, 0, sizeof(*p));
  p->msg.kind = kind;
  p->msg.headers = headers;
  p->buf = buf;
  p->cap = cap;
  p->hdrs = headers;
  p->max_headers = max_headers;
  p->state = ST_START;
  return 0;
}


static int fail(ms_http_parser_t *p, int err, const char *reason) {
  p->state = ST_FAILED;
  p->err = err;
  p->err_status = err == MS_ELIMIT ? 431 : 400;
  p->reason = reason;
  return err;
}


/* method SP request-target SP HTTP/1.1, in buf[s..e). */
static int request_line(ms_http_parser_t *p, size_t s, size_t e) {
  char *b = p->buf;
  size_t sp1 = s, sp2;

  while (sp1 < e && b[sp1] != ' ') sp1++;
  if (sp1 == e) return fail(p, MS_EFRAME, "malformed request line");
  if (!ms_http_is_token(b + s, sp1 - s))
    return fail(p, MS_EFRAME, "invalid method");
  sp2 = sp1 + 1;
  while (sp2 < e && b[sp2] != ' ') sp2++;
  if (sp2 == e || sp2 == sp1 + 1)
    return fail(p, MS_EFRAME, "malformed request line");
  for (size_t i = sp1 + 1; i < sp2; i++) {
    if (!is_vchar((unsigned char)b[i]))
      return fail(p, MS_EFRAME, "invalid byte in request-target");
  }
  if (e - (sp2 + 1) != 8 || memcmp(b + sp2 + 1, "HTTP/1.1", 8) != 0) {
    if (e - (sp2 + 1) >= 5 && memcmp(b + sp2 + 1, "HTTP/", 5) == 0)
      return fail(p, MS_EFRAME, "HTTP version is not 1.1");
    return fail(p, MS_EFRAME, "malformed request line");
  }
  b[sp1] = '\0';
  b[sp2] = '\0';
  p->msg.method = b + s;
  p->msg.method_len = sp1 - s;
  p->msg.target = b + sp1 + 1;
  p->msg.target_len = sp2 - sp1 - 1;
  return 0;
}


/* HTTP/1.1 SP 3DIGIT [SP reason], in buf[s..e). */
static int status_line(ms_http_parser_t *p, size_t s, size_t e) {
  char *b = p->buf;
  size_t n = e - s;
  int status = 0;

  if (n < 12 || memcmp(b + s, "HTTP/", 5) != 0)
    return fail(p, MS_EFRAME, "malformed status line");
  if (memcmp(b + s, "HTTP/1.1 ", 9) != 0)
    return fail(p, MS_EFRAME, "HTTP version is not 1.1");
  for (size_t i = 9; i < 12; i++) {
    unsigned char c = (unsigned char)b[s + i];
    if (c < '0' || c > '9') return fail(p, MS_EFRAME, "malformed status code");
    status = status * 10 + (c - '0');
  }
  if (status < 100) return fail(p, MS_EFRAME, "malformed status code");
  if (n > 12 && b[s + 12] != ' ')
    return fail(p, MS_EFRAME, "malformed status line");
  for (size_t i = s + 13; i < e; i++) {
    if (!is_field_char((unsigned char)b[i]))
      return fail(p, MS_EFRAME, "invalid byte in reason phrase");
  }
  p->msg.status = status;
  p->msg.reason = n > 12 ? b + s + 13 : b + e;
  p->msg.reason_len = n > 12 ? n - 13 : 0;
  b[e] = '\0';
  return 0;
}


/* name ":" OWS value OWS, in buf[s..e). */
static int header_line(ms_http_parser_t *p, size_t s, size_t e) {
  char *b = p->buf;
  size_t colon = s, vs, ve;
  ms_http_header_t *h;

  if (is_ows((unsigned char)b[s]))
    return fail(p, MS_EFRAME, "obsolete line folding");
  while (colon < e && b[colon] != ':') colon++;
  if (colon == e) return fail(p, MS_EFRAME, "header line without a colon");
  if (colon == s) return fail(p, MS_EFRAME, "empty header name");
  if (is_ows((unsigned char)b[colon - 1]))
    return fail(p, MS_EFRAME, "whitespace before the colon");
  if (!ms_http_is_token(b + s, colon - s))
    return fail(p, MS_EFRAME, "invalid header name");
  vs = colon + 1;
  while (vs < e && is_ows((unsigned char)b[vs])) vs++;
  ve = e;
  while (ve > vs && is_ows((unsigned char)b[ve - 1])) ve--;
  for (size_t i = vs; i < ve; i++) {
    if (!is_field_char((unsigned char)b[i]))
      return fail(p, MS_EFRAME, "invalid byte in header value");
  }
  if (p->msg.nheaders >= p->max_headers)
    return fail(p, MS_ELIMIT, "too many header fields");
  b[colon] = '\0';
  b[ve] = '\0';
  h = &p->hdrs[p->msg.nheaders++];
  h->name = b + s;
  h->name_len = colon - s;
  h->value = b + vs;
  h->value_len = ve - vs;
  return 0;
}


/* A complete line ending in LF is at buf[p->line..p->len). */
static int line(ms_http_parser_t *p) {
  size_t s = p->line, e = p->len - 1; /* e: the LF */
  int r;

  if (e == s || p->buf[e - 1] != '\r')
    return fail(p, MS_EFRAME, "line not ended by CRLF (bare LF)");
  e--; /* the CR */
  if (memchr(p->buf + s, '\r', e - s))
    return fail(p, MS_EFRAME, "bare CR inside a line");
  p->line = p->len;
  if (p->state == ST_START) {
    if (e == s) return fail(p, MS_EFRAME, "empty line before the start line");
    r = p->msg.kind == MS_HTTP_REQUEST ? request_line(p, s, e)
                                       : status_line(p, s, e);
    if (r == 0) p->state = ST_HEADERS;
    return r;
  }
  if (e == s) {
    p->buf[s] = '\0';
    p->state = ST_DONE;
    p->msg.head_len = p->len;
    return MS_HTTP_DONE;
  }
  return header_line(p, s, e);
}


int ms_http_parse(ms_http_parser_t *p, const uint8_t *in, size_t len,
                  size_t *consumed) {
  size_t off = 0;

  *consumed = 0;
  if (p->state == ST_DONE) return MS_HTTP_DONE;
  if (p->state == ST_FAILED) return p->err;
  while (off < len) {
    const uint8_t *lf = memchr(in + off, '\n', len - off);
    size_t n = lf ? (size_t)(lf - (in + off)) + 1 : len - off;
    int r;
    if (n > p->cap - p->len) {
      *consumed = off;
      return fail(p, MS_ELIMIT, "request head too large");
    }
    memcpy(p->buf + p->len, in + off, n);
    p->len += n;
    off += n;
    if (!lf) break;
    r = line(p);
    if (r != 0) {
      *consumed = off;
      return r;
    }
  }
  *consumed = off;
  return MS_HTTP_NEED_MORE;
}


const ms_http_msg_t *ms_http_message(const ms_http_parser_t *p) {
  return p->state == ST_DONE ? &p->msg : NULL;
}


const char *ms_http_error_reason(const ms_http_parser_t *p) {
  return p->state == ST_FAILED ? p->reason : NULL;
}


int ms_http_error_status(const ms_http_parser_t *p) {
  return p->state == ST_FAILED ? p->err_status : 0;
}


/* ------------------------------------------------------------------ */
/* Header helpers                                                      */
/* ------------------------------------------------------------------ */

const ms_http_header_t *ms_http_header_find(const ms_http_msg_t *m,
                                            const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < m->nheaders; i++) {
    if (ieq(m->headers[i].name, m->headers[i].name_len, name, n))
      return &m->headers[i];
  }
  return NULL;
}


size_t ms_http_header_count(const ms_http_msg_t *m, const char *name) {
  size_t n = strlen(name), count = 0;
  for (size_t i = 0; i < m->nheaders; i++) {
    if (ieq(m->headers[i].name, m->headers[i].name_len, name, n)) count++;
  }
  return count;
}


bool ms_http_list_next(const char *list, size_t len, size_t *pos,
                       const char **elem, size_t *elem_len) {
  while (*pos < len) {
    size_t s = *pos, e;
    const char *comma = memchr(list + s, ',', len - s);
    e = comma ? (size_t)(comma - list) : len;
    *pos = comma ? e + 1 : len;
    while (s < e && is_ows((unsigned char)list[s])) s++;
    while (e > s && is_ows((unsigned char)list[e - 1])) e--;
    if (e > s) {
      *elem = list + s;
      *elem_len = e - s;
      return true;
    }
  }
  return false;
}


bool ms_http_list_has(const char *list, size_t len, const char *token) {
  size_t pos = 0, tl = strlen(token), el;
  const char *e;
  while (ms_http_list_next(list, len, &pos, &e, &el)) {
    if (ieq(e, el, token, tl)) return true;
  }
  return false;
}


bool ms_http_header_has_token(const ms_http_msg_t *m, const char *name,
                              const char *token) {
  size_t n = strlen(name);
  for (size_t i = 0; i < m->nheaders; i++) {
    const ms_http_header_t *h = &m->headers[i];
    if (ieq(h->name, h->name_len, name, n) &&
        ms_http_list_has(h->value, h->value_len, token))
      return true;
  }
  return false;
}


const char *ms_http_status_text(int status) {
  switch (status) {
  case 101: return "Switching Protocols";
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 426: return "Upgrade Required";
  case 431: return "Request Header Fields Too Large";
  default: return NULL;
  }
}


/* ------------------------------------------------------------------ */
/* WebSocket handshake                                                 */
/* ------------------------------------------------------------------ */

static int b64_value(unsigned char c) {
  const char *q;
  if (c == 0) return -1;
  q = strchr(b64_alphabet, c);
  return q ? (int)(q - b64_alphabet) : -1;
}


/* Standard base64 with padding; out holds 4 * ceil(n / 3) + 1 bytes. */
static void b64_encode(char *out, const uint8_t *in, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n) v |= in[i + 2];
    out[o++] = b64_alphabet[(v >> 18) & 63];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
  }
  out[o] = '\0';
}


bool ms_ws_key_valid(const char *key, size_t len) {
  int last;
  if (!key || len != MS_WS_KEY_LEN || key[22] != '=' || key[23] != '=')
    return false;
  for (size_t i = 0; i < 21; i++) {
    if (b64_value((unsigned char)key[i]) < 0) return false;
  }
  /* 16 bytes = 128 bits: the 22nd character carries 2 bits + 4 zero bits. */
  last = b64_value((unsigned char)key[21]);
  return last >= 0 && (last & 0x0f) == 0;
}


void ms_ws_key_encode(const uint8_t nonce[MS_WS_KEY_NONCEBYTES],
                      char out[MS_WS_KEY_LEN + 1]) {
  b64_encode(out, nonce, MS_WS_KEY_NONCEBYTES);
}


int ms_ws_accept(const char *key, size_t key_len,
                 char out[MS_WS_ACCEPT_LEN + 1]) {
  ms_sha1_t h;
  uint8_t digest[MS_SHA1_DIGESTBYTES];

  if (!key) return MS_EINVAL;
  ms_sha1_init(&h);
  ms_sha1_update(&h, key, key_len);
  ms_sha1_update(&h, MS_WS_GUID, sizeof(MS_WS_GUID) - 1);
  ms_sha1_final(&h, digest);
  b64_encode(out, digest, sizeof(digest));
  return 0;
}


static int verdict(ms_ws_upgrade_t *info, int status, const char *reason) {
  info->reason = reason;
  return status;
}


#define H_PROTOCOL "Sec-WebSocket-Protocol"

/* Walks the elements of every Sec-WebSocket-Protocol field in order, in
 * one pass (a head of thousands of elements stays linear). */
typedef struct {
  const ms_http_msg_t *m;
  size_t h, pos;
} proto_iter_t;


static bool proto_next(proto_iter_t *it, const char **e, size_t *el) {
  for (; it->h < it->m->nheaders; it->h++, it->pos = 0) {
    const ms_http_header_t *h = &it->m->headers[it->h];
    if (!ieq(h->name, h->name_len, H_PROTOCOL, sizeof(H_PROTOCOL) - 1))
      continue;
    if (ms_http_list_next(h->value, h->value_len, &it->pos, e, el))
      return true;
  }
  return false;
}

int ms_ws_upgrade_evaluate(const ms_http_msg_t *req, const char *served_path,
                           ms_ws_upgrade_t *info) {
  const ms_http_header_t *h;
  const char *q;
  size_t pl;
  bool bad_proto = false;
  proto_iter_t it;

  if (!req || !info || req->kind != MS_HTTP_REQUEST || !req->target)
    return MS_EINVAL;
  memset(info, 0, sizeof(*info));
  info->target = req->target;
  info->target_len = req->target_len;
  if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0)
    return verdict(info, 400, "method is not GET");
  if (req->target[0] != '/')
    return verdict(info, 400, "request-target is not in origin-form");
  q = memchr(req->target, '?', req->target_len);
  info->path = req->target;
  info->path_len = q ? (size_t)(q - req->target) : req->target_len;
  if (q) {
    info->query = q + 1;
    info->query_len = req->target_len - info->path_len - 1;
  }
  if ((h = ms_http_header_find(req, "Host"))) {
    info->host = h->value;
    info->host_len = h->value_len;
  }
  if ((h = ms_http_header_find(req, "Origin"))) {
    info->origin = h->value;
    info->origin_len = h->value_len;
  }
  if ((h = ms_http_header_find(req, "Sec-WebSocket-Key"))) {
    info->key = h->value;
    info->key_len = h->value_len;
  }
  it = (proto_iter_t){req, 0, 0};
  while (proto_next(&it, &q, &pl)) {
    info->protocols++;
    bad_proto |= !ms_http_is_token(q, pl);
  }

  if (served_path && (strlen(served_path) != info->path_len ||
                      memcmp(served_path, info->path, info->path_len) != 0))
    return verdict(info, 404, "no WebSocket endpoint at this path");
  if (ms_http_header_count(req, "Host") != 1 || info->host_len == 0)
    return verdict(info, 400, "missing or repeated Host");
  if (ms_http_header_count(req, "Origin") > 1)
    return verdict(info, 400, "repeated Origin");
  if (ms_http_header_find(req, "Transfer-Encoding"))
    return verdict(info, 400, "request has a body");
  h = ms_http_header_find(req, "Content-Length");
  if (h && (ms_http_header_count(req, "Content-Length") != 1 ||
            h->value_len != 1 || h->value[0] != '0'))
    return verdict(info, 400, "request has a body");
  if (!ms_http_header_has_token(req, "Upgrade", "websocket"))
    return verdict(info, 400, "Upgrade does not list websocket");
  if (!ms_http_header_has_token(req, "Connection", "upgrade"))
    return verdict(info, 400, "Connection does not list upgrade");
  if (ms_http_header_count(req, "Sec-WebSocket-Version") != 1)
    return verdict(info, 400, "missing or repeated Sec-WebSocket-Version");
  h = ms_http_header_find(req, "Sec-WebSocket-Version");
  if (h->value_len != 2 || memcmp(h->value, "13", 2) != 0)
    return verdict(info, 426, "unsupported Sec-WebSocket-Version");
  if (ms_http_header_count(req, "Sec-WebSocket-Key") != 1)
    return verdict(info, 400, "missing or repeated Sec-WebSocket-Key");
  if (!ms_ws_key_valid(info->key, info->key_len))
    return verdict(info, 400, "invalid Sec-WebSocket-Key");
  if (bad_proto)
    return verdict(info, 400, "invalid subprotocol in Sec-WebSocket-Protocol");
  return 101;
}


bool ms_ws_upgrade_protocol(const ms_http_msg_t *req, size_t index,
                            const char **proto, size_t *proto_len) {
  proto_iter_t it = {req, 0, 0};
  size_t seen = 0;
  while (proto_next(&it, proto, proto_len)) {
    if (seen++ == index) return true;
  }
  return false;
}


int ms_ws_select_protocol(const ms_http_msg_t *req,
                          const char *const *supported, size_t n) {
  proto_iter_t it = {req, 0, 0};
  const char *p;
  size_t pl;
  while (proto_next(&it, &p, &pl)) {
    for (size_t j = 0; j < n; j++) {
      if (supported[j] && strlen(supported[j]) == pl &&
          memcmp(supported[j], p, pl) == 0)
        return (int)j;
    }
  }
  return -1;
}


/* Bounded string builder: records overflow instead of truncating. */
typedef struct {
  char *out;
  size_t cap, len;
  bool over;
} sb_t;


static void sb_add(sb_t *sb, const char *fmt, ...) {
  va_list ap;
  int n;
  if (sb->over) return;
  va_start(ap, fmt);
  n = vsnprintf(sb->out + sb->len, sb->cap - sb->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sb->cap - sb->len) {
    sb->over = true;
    return;
  }
  sb->len += (size_t)n;
}


static int sb_done(sb_t *sb) {
  if (sb->over) {
    if (sb->cap > 0) sb->out[0] = '\0';
    return MS_ELIMIT;
  }
  return (int)sb->len;
}


int ms_ws_build_101(char *out, size_t cap, const char *key, size_t key_len,
                    const char *protocol) {
  char accept[MS_WS_ACCEPT_LEN + 1];
  sb_t sb = {out, cap, 0, cap == 0};

  if (!out || !ms_ws_key_valid(key, key_len)) return MS_EINVAL;
  if (protocol && !ms_http_is_token(protocol, strlen(protocol)))
    return MS_EINVAL;
  if (ms_ws_accept(key, key_len, accept) < 0) return MS_EINVAL;
  sb_add(&sb, "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Accept: %s\r\n", accept);
  if (protocol) sb_add(&sb, "Sec-WebSocket-Protocol: %s\r\n", protocol);
  sb_add(&sb, "\r\n");
  return sb_done(&sb);
}


int ms_http_build_error(char *out, size_t cap, int status) {
  sb_t sb = {out, cap, 0, cap == 0};
  const char *text = ms_http_status_text(status);

  if (!out || !text || status == 101) return MS_EINVAL;
  sb_add(&sb, "HTTP/1.1 %d %s\r\n", status, text);
  if (status == 426)
    sb_add(&sb, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
  sb_add(&sb, "Connection: close\r\nContent-Length: 0\r\n\r\n");
  return sb_done(&sb);
}


/* reg-name / IPv4 characters allowed in our Host header: unreserved,
 * sub-delims and '%' (pct-encoding). */
static bool is_host_char(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return true;
  return c != 0 && strchr("-._~!$&'()*+,;=%", c) != NULL;
}


static bool is_ipv6_char(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F') || c == ':' || c == '.';
}


int ms_ws_build_request(char *out, size_t cap,
                        const ms_ws_client_request_t *req) {
  sb_t sb = {out, cap, 0, cap == 0};
  const char *host, *path;
  size_t hl, i;
  bool v6 = false;
  uint16_t def;

  if (!out || !req || !req->host || !req->key) return MS_EINVAL;
  if (!ms_ws_key_valid(req->key, strlen(req->key))) return MS_EINVAL;
  host = req->host;
  hl = strlen(host);
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
    host++;
    hl -= 2;
    v6 = true;
  } else if (memchr(host, ':', hl)) {
    v6 = true;
  }
  if (v6) {
    const char *zone = memchr(host, '%', hl);
    if (zone) hl = (size_t)(zone - host);
    if (!memchr(host, ':', hl)) return MS_EINVAL;
    for (i = 0; i < hl; i++) {
      if (!is_ipv6_char((unsigned char)host[i])) return MS_EINVAL;
    }
  } else {
    for (i = 0; i < hl; i++) {
      if (!is_host_char((unsigned char)host[i])) return MS_EINVAL;
    }
  }
  if (hl == 0) return MS_EINVAL;
  path = req->path ? req->path : "/";
  if (path[0] != '/') return MS_EINVAL;
  for (i = 0; path[i]; i++) {
    if (!is_vchar((unsigned char)path[i])) return MS_EINVAL;
  }
  if (req->origin) {
    if (!req->origin[0]) return MS_EINVAL;
    for (i = 0; req->origin[i]; i++) {
      if (!is_field_char((unsigned char)req->origin[i])) return MS_EINVAL;
    }
  }
  if (req->protocols) {
    size_t pos = 0, pl = strlen(req->protocols), el, count = 0;
    const char *e;
    for (i = 0; i < pl; i++) {
      unsigned char c = (unsigned char)req->protocols[i];
      if (!is_tchar(c) && c != ',' && !is_ows(c)) return MS_EINVAL;
    }
    while (ms_http_list_next(req->protocols, pl, &pos, &e, &el)) {
      if (!ms_http_is_token(e, el)) return MS_EINVAL;
      count++;
    }
    if (count == 0) return MS_EINVAL;
  }

  def = req->secure ? 443 : 80;
  sb_add(&sb, "GET %s HTTP/1.1\r\nHost: %s%.*s%s", path, v6 ? "[" : "",
         (int)hl, host, v6 ? "]" : "");
  if (req->port != 0 && req->port != def) sb_add(&sb, ":%u", req->port);
  sb_add(&sb, "\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Key: %s\r\n"
              "Sec-WebSocket-Version: 13\r\n", req->key);
  if (req->origin) sb_add(&sb, "Origin: %s\r\n", req->origin);
  if (req->protocols)
    sb_add(&sb, "Sec-WebSocket-Protocol: %s\r\n", req->protocols);
  sb_add(&sb, "\r\n");
  return sb_done(&sb);
}


static int refuse(const char **reason, const char *why) {
  if (reason) *reason = why;
  return MS_EHANDSHAKE;
}


int ms_ws_check_response(const ms_http_msg_t *resp, const char *key,
                         const char *offered, const char **protocol,
                         const char **reason) {
  char accept[MS_WS_ACCEPT_LEN + 1];
  const ms_http_header_t *h;
  bool found = false;

  if (protocol) *protocol = NULL;
  if (reason) *reason = NULL;
  if (!resp || resp->kind != MS_HTTP_RESPONSE || !key ||
      !ms_ws_key_valid(key, strlen(key)))
    return MS_EINVAL;
  if (resp->status != 101)
    return refuse(reason, "server did not answer 101 Switching Protocols");
  if (!ms_http_header_has_token(resp, "Upgrade", "websocket"))
    return refuse(reason, "Upgrade does not list websocket");
  if (!ms_http_header_has_token(resp, "Connection", "upgrade"))
    return refuse(reason, "Connection does not list upgrade");
  if (ms_http_header_count(resp, "Sec-WebSocket-Accept") != 1)
    return refuse(reason, "missing or repeated Sec-WebSocket-Accept");
  h = ms_http_header_find(resp, "Sec-WebSocket-Accept");
  if (ms_ws_accept(key, strlen(key), accept) < 0) return MS_EINVAL;
  if (h->value_len != MS_WS_ACCEPT_LEN ||
      memcmp(h->value, accept, MS_WS_ACCEPT_LEN) != 0)
    return refuse(reason, "Sec-WebSocket-Accept does not match the key");
  if (ms_http_header_find(resp, "Sec-WebSocket-Extensions"))
    return refuse(reason, "server chose an extension we did not offer");
  switch (ms_http_header_count(resp, H_PROTOCOL)) {
  case 0:
    return 0;
  case 1:
    break;
  default:
    return refuse(reason, "repeated Sec-WebSocket-Protocol");
  }
  h = ms_http_header_find(resp, H_PROTOCOL);
  if (!ms_http_is_token(h->value, h->value_len))
    return refuse(reason, "server chose an invalid subprotocol");
  if (offered) {
    size_t pos = 0, el;
    const char *e;
    while (!found && ms_http_list_next(offered, strlen(offered), &pos, &e,
                                       &el)) {
      found = el == h->value_len && memcmp(e, h->value, el) == 0;
    }
  }
  if (!found)
    return refuse(reason, "server chose a subprotocol we did not offer");
  if (protocol) *protocol = h->value;
  return 0;
}
