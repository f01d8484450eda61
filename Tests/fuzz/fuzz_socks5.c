/* libFuzzer target for the SOCKS5 client exchange.
 *   byte 0: bit 0 offers credentials; bits 1-2 pick the target (name,
 *     IPv4, IPv6, 255-byte name); bit 3 selects structured mode.
 *   raw mode: the rest is the proxy's bytes, fed in PRNG-cut pieces. The
 *     counts stay in bounds, the result is a documented code, and a run fed
 *     in one piece ends the same way at the same offset.
 *   structured mode: the rest shapes a well-formed conversation (method,
 *     auth status, REP, ATYP, address, port, trailing data); a success must
 *     connect exactly at the end of the reply with the bound address as
 *     sent, and a failure REP must give ms_socks5_rep_error(). */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "socks5.h"

static uint32_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

typedef struct {
  int status;
  size_t tunnel_at; /* offset in the proxy bytes, when connected */
  size_t sent;      /* client bytes sent */
} result_t;

static void init(ms_socks5_t *s, uint8_t mode) {
  static char big[256];
  const char *host = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuv.onion";
  int r;
  switch ((mode >> 1) & 3) {
    case 1: host = "10.1.2.3"; break;
    case 2: host = "[fe80::1]"; break;
    case 3:
      memset(big, 'z', 255);
      host = big;
      break;
    default: break;
  }
  r = ms_socks5_init(s, host, strlen(host), 9050, mode & 1 ? "user" : NULL,
                     mode & 1 ? "pass" : NULL);
  assert(r == 0);
}

static result_t drive(uint8_t mode, const uint8_t *proxy, size_t len,
                      int chunked) {
  ms_socks5_t s;
  result_t res = {MS_SOCKS5_NEED_MORE, 0, 0};
  const uint8_t *p;
  size_t off = 0;

  init(&s, mode);
  res.sent += ms_socks5_output(&s, &p);
  while (off < len && res.status == MS_SOCKS5_NEED_MORE) {
    size_t n = chunked ? 1 + rnd() % 40 : len - off, c;
    uint8_t *piece, *q;
    if (n > len - off) n = len - off;
    piece = malloc(n);
    memcpy(piece, proxy + off, n);
    q = piece;
    off += n;
    while (n > 0) {
      int r = ms_socks5_feed(&s, q, n, &c);
      assert(c <= n);
      q += c;
      n -= c;
      if (r == MS_SOCKS5_SEND) {
        size_t m = ms_socks5_output(&s, &p);
        assert(m > 0 && m <= MS_SOCKS5_MAX_MSG);
        res.sent += m;
        continue;
      }
      res.status = r;
      if (r == MS_SOCKS5_CONNECTED) res.tunnel_at = off - n;
      break;
    }
    free(piece);
  }
  if (res.status == MS_SOCKS5_CONNECTED) {
    uint8_t atyp;
    const uint8_t *addr;
    size_t alen;
    uint16_t port;
    assert(ms_socks5_bound(&s, &atyp, &addr, &alen, &port) == 0);
    assert(alen >= 1 && alen <= MS_SOCKS5_MAX_FIELD);
    assert(ms_socks5_eof(&s) == 0);
  } else if (res.status == MS_SOCKS5_NEED_MORE) {
    assert(ms_socks5_eof(&s) == MS_EHANGUP);
    assert(ms_socks5_path_failure(&s));
  } else {
    int e = res.status;
    assert(e == MS_EFRAME || e == MS_EUNAUTHORIZED || e == MS_EPROXY ||
           e == MS_ETIMEDOUT || e == MS_EADDRESS || e == -ENETUNREACH ||
           e == -EHOSTUNREACH || e == -ECONNREFUSED);
    assert(ms_socks5_reason(&s)[0] != '\0');
    assert(ms_socks5_eof(&s) == e);
  }
  ms_socks5_wipe(&s);
  return res;
}

static void raw_mode(uint8_t mode, const uint8_t *data, size_t size) {
  result_t a = drive(mode, data, size, 1), b = drive(mode, data, size, 0);
  assert(a.status == b.status);
  assert(a.tunnel_at == b.tunnel_at);
  assert(a.sent == b.sent);
}

static uint8_t take(const uint8_t **d, size_t *n) {
  uint8_t b = 0;
  if (*n > 0) {
    b = **d;
    (*d)++;
    (*n)--;
  }
  return b;
}

static void structured_mode(uint8_t mode, const uint8_t *d, size_t n) {
  uint8_t wire[2 + 2 + MS_SOCKS5_MAX_REPLY + 64], rep, atyp, alen = 0;
  uint8_t addr[255];
  size_t len = 0, reply_end;
  int creds = mode & 1, pick = take(&d, &n);
  uint16_t port;
  result_t r;

  wire[len++] = 5;
  wire[len++] = creds && (pick & 1) ? MS_SOCKS5_METHOD_USERPASS
                                    : MS_SOCKS5_METHOD_NONE;
  if (wire[1] == MS_SOCKS5_METHOD_USERPASS) {
    wire[len++] = 1;
    wire[len++] = 0;
  }
  rep = pick & 2 ? take(&d, &n) : 0;
  wire[len++] = 5;
  wire[len++] = rep;
  wire[len++] = 0;
  switch (take(&d, &n) % 3) {
    case 0: atyp = MS_SOCKS5_ATYP_IPV4; alen = 4; break;
    case 1: atyp = MS_SOCKS5_ATYP_IPV6; alen = 16; break;
    default: atyp = MS_SOCKS5_ATYP_DOMAIN; alen = take(&d, &n) | 1; break;
  }
  wire[len++] = atyp;
  if (atyp == MS_SOCKS5_ATYP_DOMAIN) wire[len++] = alen;
  for (size_t i = 0; i < alen; i++) addr[i] = take(&d, &n);
  memcpy(wire + len, addr, alen);
  len += alen;
  port = (uint16_t)(take(&d, &n) << 8 | take(&d, &n));
  wire[len++] = (uint8_t)(port >> 8);
  wire[len++] = (uint8_t)port;
  reply_end = len;
  while (n > 0 && len < sizeof(wire)) wire[len++] = take(&d, &n);

  r = drive(mode, wire, len, 1);
  if (rep == 0) {
    ms_socks5_t s;
    const uint8_t *p, *ba;
    size_t c, bl;
    uint8_t bt;
    uint16_t bp;
    assert(r.status == MS_SOCKS5_CONNECTED);
    assert(r.tunnel_at == reply_end);
    /* Whole, checking the bound address. */
    init(&s, mode);
    (void)ms_socks5_output(&s, &p);
    {
      size_t off = 0;
      int k;
      while ((k = ms_socks5_feed(&s, wire + off, len - off, &c)) ==
             MS_SOCKS5_SEND) {
        off += c;
        (void)ms_socks5_output(&s, &p);
      }
      assert(k == MS_SOCKS5_CONNECTED);
      assert(off + c == reply_end);
    }
    assert(ms_socks5_bound(&s, &bt, &ba, &bl, &bp) == 0);
    assert(bt == atyp && bl == alen && bp == port);
    assert(memcmp(ba, addr, alen) == 0);
    ms_socks5_wipe(&s);
  } else {
    assert(r.status == ms_socks5_rep_error(rep));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t mode;
  if (size < 1) return 0;
  mode = data[0];
  rng_state = mode * 2654435761u + (uint32_t)size;
  if (mode & 8)
    structured_mode(mode, data + 1, size - 1);
  else
    raw_mode(mode, data + 1, size - 1);
  return 0;
}
