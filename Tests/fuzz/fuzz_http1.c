/* libFuzzer target for the HTTP/1.1 upgrade parser and helpers.
 *   byte 0: bit 0 request/response, bit 1 small limits, the rest seeds the
 *   PRNG that cuts the input into reads.
 *   The rest is parsed whole and in PRNG-cut pieces: both must agree on the
 *   result and the offset where the head ends. A parsed head must hold only
 *   well-formed pieces (token names, no CR/LF/NUL in values, NUL-terminated
 *   in place). A request is then evaluated; a 101 verdict must give a 101
 *   response that parses and passes the client's check with the same key.
 *   Any other verdict must give a refusal that parses as a response.
 *   Also a round trip: request options taken from the input, when the
 *   builder accepts them, must parse back to a 101 verdict with the same
 *   path, key and subprotocols. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

static uint32_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

static ms_http_header_t hdrs_a[64], hdrs_b[64], hdrs_c[64];
static char buf_a[8192], buf_b[8192], buf_c[8192];

static void check_msg(const ms_http_msg_t *m) {
  for (size_t i = 0; i < m->nheaders; i++) {
    const ms_http_header_t *h = &m->headers[i];
    assert(ms_http_is_token(h->name, h->name_len));
    assert(h->name[h->name_len] == '\0' && h->value[h->value_len] == '\0');
    assert(strlen(h->value) == h->value_len);
    assert(!memchr(h->value, '\r', h->value_len) &&
           !memchr(h->value, '\n', h->value_len));
    if (h->value_len)
      assert(h->value[0] != ' ' && h->value[h->value_len - 1] != ' ');
    assert(ms_http_header_find(m, h->name) != NULL);
  }
  if (m->kind == MS_HTTP_REQUEST) {
    assert(ms_http_is_token(m->method, m->method_len));
    assert(strlen(m->target) == m->target_len && m->target_len > 0);
  } else {
    assert(m->status >= 100 && m->status <= 999);
  }
}

/* Parse in pieces; returns the result and the total consumed. */
static int parse(ms_http_parser_t *p, ms_http_kind_t kind, char *buf,
                 size_t cap, ms_http_header_t *hdrs, size_t maxh,
                 const uint8_t *in, size_t len, int whole, size_t *total) {
  size_t off = 0;
  int r = MS_HTTP_NEED_MORE;
  assert(ms_http_parser_init(p, kind, buf, cap, hdrs, maxh) == 0);
  *total = 0;
  while (off < len && r == MS_HTTP_NEED_MORE) {
    size_t n = whole ? len - off : 1 + rnd() % 64, c;
    uint8_t *piece;
    if (n > len - off) n = len - off;
    piece = malloc(n);
    memcpy(piece, in + off, n);
    r = ms_http_parse(p, piece, n, &c);
    assert(c <= n);
    assert(r != MS_HTTP_NEED_MORE || c == n);
    *total += c;
    off += n;
    free(piece);
  }
  return r;
}

static void roundtrip(const uint8_t *data, size_t size) {
  char host[64], path[64], protos[64], key[MS_WS_KEY_LEN + 1], req[512];
  uint8_t nonce[16] = {0};
  ms_ws_client_request_t rq = {0};
  ms_http_parser_t p;
  ms_ws_upgrade_t info;
  size_t c;
  int n;

  if (size < 20) return;
  memcpy(nonce, data, 16);
  ms_ws_key_encode(nonce, key);
  assert(ms_ws_key_valid(key, strlen(key)));
  data += 16;
  size -= 16;
  {
    size_t hl = data[0] % 40, pl = data[1] % 40, ql = data[2] % 40, o = 3;
    rq.port = (uint16_t)(data[3] * 257);
    rq.secure = data[3] & 1;
    o = 4;
    if (hl > size - o) hl = size - o;
    memcpy(host, data + o, hl);
    host[hl] = 0;
    o += hl;
    if (pl > size - o) pl = size - o;
    memcpy(path, data + o, pl);
    path[pl] = 0;
    o += pl;
    if (ql > size - o) ql = size - o;
    memcpy(protos, data + o, ql);
    protos[ql] = 0;
  }
  rq.host = host;
  rq.path = path;
  rq.key = key;
  rq.protocols = protos[0] ? protos : NULL;
  rq.origin = (rq.port & 2) ? "null" : NULL;
  n = ms_ws_build_request(req, sizeof(req), &rq);
  if (n < 0) {
    assert(n == MS_EINVAL || n == MS_ELIMIT);
    return;
  }
  assert((size_t)n == strlen(req));
  assert(parse(&p, MS_HTTP_REQUEST, buf_c, sizeof(buf_c), hdrs_c, 64,
               (const uint8_t *)req, (size_t)n, 0, &c) == MS_HTTP_DONE);
  assert(c == (size_t)n);
  {
    const ms_http_msg_t *m = ms_http_message(&p);
    char served[64];
    const char *q = strchr(path, '?');
    size_t sl = q ? (size_t)(q - path) : strlen(path);
    memcpy(served, path, sl);
    served[sl] = 0;
    assert(ms_ws_upgrade_evaluate(m, served, &info) == 101);
    assert(info.key_len == 24 && memcmp(info.key, key, 24) == 0);
    if (rq.protocols) assert(info.protocols > 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_http_parser_t pa, pb;
  ms_http_kind_t kind;
  size_t ca, cb, cap, maxh;
  int ra, rb;
  uint8_t mode;

  if (size < 1) return 0;
  mode = data[0];
  rng_state = mode * 2654435761u + (uint32_t)size;
  kind = (mode & 1) ? MS_HTTP_RESPONSE : MS_HTTP_REQUEST;
  cap = (mode & 2) ? 16 + mode % 200 : sizeof(buf_a);
  maxh = (mode & 2) ? mode % 5 : 64;
  data++;
  size--;

  ra = parse(&pa, kind, buf_a, cap, hdrs_a, maxh, data, size, 1, &ca);
  rb = parse(&pb, kind, buf_b, cap, hdrs_b, maxh, data, size, 0, &cb);
  assert(ra == rb);
  assert(ra == MS_HTTP_NEED_MORE || ra == MS_HTTP_DONE || ra == MS_EFRAME ||
         ra == MS_ELIMIT);
  if (ra < 0) {
    assert(ms_http_error_status(&pa) == (ra == MS_ELIMIT ? 431 : 400));
    assert(ms_http_error_reason(&pa) != NULL);
    assert(ms_http_message(&pa) == NULL);
  }
  if (ra == MS_HTTP_DONE) {
    const ms_http_msg_t *m = ms_http_message(&pa), *mb = ms_http_message(&pb);
    ms_ws_upgrade_t info;
    char out[512];
    assert(ca == cb && m->head_len == ca && mb->head_len == cb);
    assert(m->nheaders == mb->nheaders);
    assert(ca >= 4 && memcmp(data + ca - 4, "\r\n\r\n", 4) == 0);
    check_msg(m);
    if (kind == MS_HTTP_REQUEST) {
      static const char *const sup[] = {"chat", "superchat", "a"};
      int v = ms_ws_upgrade_evaluate(m, (mode & 4) ? NULL : "/", &info);
      int sel = ms_ws_select_protocol(m, sup, 3);
      assert(v == 101 || v == 400 || v == 404 || v == 426);
      assert((v == 101) == (info.reason == NULL));
      assert(sel >= -1 && sel < 3);
      if (v == 101) {
        char key[MS_WS_KEY_LEN + 1];
        int n;
        assert(ms_ws_key_valid(info.key, info.key_len));
        memcpy(key, info.key, MS_WS_KEY_LEN);
        key[MS_WS_KEY_LEN] = 0;
        n = ms_ws_build_101(out, sizeof(out), info.key, info.key_len,
                            sel >= 0 ? sup[sel] : NULL);
        assert(n > 0);
        assert(parse(&pb, MS_HTTP_RESPONSE, buf_b, sizeof(buf_b), hdrs_b, 64,
                     (const uint8_t *)out, (size_t)n, 0, &cb) ==
               MS_HTTP_DONE);
        assert(ms_ws_check_response(ms_http_message(&pb), key,
                                    "chat, superchat, a", NULL, NULL) == 0);
      } else {
        int n = ms_http_build_error(out, sizeof(out), v);
        assert(n > 0);
        assert(parse(&pb, MS_HTTP_RESPONSE, buf_b, sizeof(buf_b), hdrs_b, 64,
                     (const uint8_t *)out, (size_t)n, 0, &cb) ==
               MS_HTTP_DONE);
        assert(ms_http_message(&pb)->status == v);
      }
    } else {
      const char *proto, *why;
      int r = ms_ws_check_response(m, "dGhlIHNhbXBsZSBub25jZQ==", "chat",
                                   &proto, &why);
      assert(r == 0 || (r == MS_EHANDSHAKE && why != NULL));
      if (r == 0) assert(m->status == 101);
    }
  }
  roundtrip(data, size);
  return 0;
}
