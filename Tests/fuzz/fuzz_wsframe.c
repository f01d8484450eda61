/* libFuzzer target for the WebSocket frame codec and UTF-8 validator.
 *   byte 0: bit 0 role (client/server), bit 1 mode, the rest seeds the PRNG
 *   that cuts the input into reads.
 *   mode 0 (raw): bytes 1-2 pick the limits; the rest is wire bytes, decoded
 *     whole and in PRNG-cut pieces: both runs must agree (status, close code,
 *     and, without error, the payloads); delivered text messages must be
 *     UTF-8 by an independent code-point check; the UTF-8 validator must
 *     agree with that check on the raw bytes too.
 *   mode 1 (round trip): the rest is a script for frames (fragmented
 *     messages, pings, a final close), encoded with the encoder (masked in
 *     pieces for the server role), decoded in PRNG-cut pieces; the decoder
 *     must give back exactly the payloads and the close. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsframe.h"

static uint32_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

/* Reference check: decode code points and test their ranges. */
static int ref_utf8(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint32_t cp, min;
    size_t len;
    uint8_t c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (n - i < len) return 0;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += len;
  }
  return 1;
}

typedef struct {
  uint8_t *data; /* concatenated data payloads */
  size_t len, cap;
  size_t messages, pings;
  int status;
  uint16_t close_code, got_close;
  uint8_t close_payload[125];
  size_t close_len;
} result_t;

static void add(result_t *r, const uint8_t *p, size_t n) {
  if (r->len + n > r->cap) {
    r->cap = (r->len + n) * 2 + 16;
    r->data = realloc(r->data, r->cap);
  }
  if (n) memcpy(r->data + r->len, p, n);
  r->len += n;
}

static void decode(const ms_ws_decoder_config_t *cfg, const uint8_t *wire,
                   size_t len, int whole, result_t *res) {
  ms_ws_decoder_t d;
  size_t off = 0, msg_start = 0;
  int r = 0, in_text = 0, in_msg = 0;

  memset(res, 0, sizeof(*res));
  assert(ms_ws_decoder_init(&d, cfg) == 0);
  while (off < len && r >= 0 && !res->got_close) {
    size_t n = whole ? len - off : 1 + rnd() % 200, c;
    uint8_t *piece, *p;
    if (!whole && rnd() % 8 == 0) n = len - off;
    if (n > len - off) n = len - off;
    piece = malloc(n);
    memcpy(piece, wire + off, n);
    off += n;
    p = piece;
    for (;;) {
      ms_ws_event_t ev;
      r = ms_ws_decode(&d, p, n, &c, &ev);
      assert(c <= n);
      p += c;
      n -= c;
      if (r != 1) break;
      switch (ev.type) {
      case MS_WS_EV_DATA:
        assert(ev.data >= piece && ev.data + ev.len <= p);
        if (!in_msg) {
          in_msg = 1;
          in_text = ev.msg_opcode == MS_WS_OP_TEXT;
          msg_start = res->len;
          assert(ev.opcode == ev.msg_opcode);
        } else {
          assert(ev.opcode == MS_WS_OP_CONT || !ev.frame_end || 1);
        }
        assert(!ev.fin || ev.frame_end);
        add(res, ev.data, ev.len);
        if (ev.fin) {
          if (in_text && !cfg->no_utf8_check)
            assert(ref_utf8(res->data + msg_start, res->len - msg_start));
          assert(res->len - msg_start <= cfg->max_message);
          in_msg = 0;
          res->messages++;
        }
        break;
      case MS_WS_EV_PING:
      case MS_WS_EV_PONG:
        assert(ev.len <= 125);
        res->pings++;
        break;
      case MS_WS_EV_CLOSE:
        assert(ev.len <= 125 && ev.len != 1);
        assert(ev.len == 0 ? ev.close_code == 1005
                           : ms_ws_close_code_valid(ev.close_code));
        assert(ref_utf8((const uint8_t *)ev.reason, ev.reason_len));
        res->got_close = ev.close_code;
        memcpy(res->close_payload, ev.data, ev.len);
        res->close_len = ev.len;
        break;
      }
      if (res->got_close) break;
    }
    free(piece);
  }
  res->status = r < 0 ? r : 0;
  res->close_code = ms_ws_decoder_close_code(&d);
  if (r < 0) {
    size_t c;
    ms_ws_event_t ev;
    assert(r == MS_EFRAME || r == MS_ELIMIT);
    assert(res->close_code == 1002 || res->close_code == 1007 ||
           res->close_code == 1009);
    assert((r == MS_ELIMIT) == (res->close_code == 1009));
    assert(ms_ws_decode(&d, (uint8_t *)"\x81", 1, &c, &ev) == r && c == 0);
    assert(ms_ws_decoder_eof(&d) == r);
  } else if (res->got_close) {
    assert(ms_ws_decoder_eof(&d) == 0);
  } else {
    assert(ms_ws_decoder_eof(&d) == MS_EHANGUP);
  }
}

static void raw_mode(ms_ws_role_t role, const uint8_t *data, size_t size) {
  ms_ws_decoder_config_t cfg;
  result_t a, b;

  if (size < 2) return;
  ms_ws_decoder_config_default(&cfg, role);
  if (data[0] & 1) cfg.max_frame = 1 + data[0] % 64;
  if (data[1] & 1) cfg.max_message = 1 + data[1] % 200;
  if ((data[0] & 6) == 6) cfg.rsv_allowed = MS_WS_RSV1;
  if ((data[1] & 6) == 6) cfg.no_utf8_check = true;
  data += 2;
  size -= 2;
  assert(ms_ws_utf8_valid(data, size) == (ref_utf8(data, size) != 0));
  decode(&cfg, data, size, 1, &a);
  decode(&cfg, data, size, 0, &b);
  assert(a.status == b.status && a.close_code == b.close_code);
  if (a.status == 0) {
    assert(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
    assert(a.messages == b.messages && a.pings == b.pings);
    assert(a.got_close == b.got_close);
  }
  free(a.data);
  free(b.data);
}

static void roundtrip_mode(ms_ws_role_t role, const uint8_t *data,
                           size_t size) {
  size_t cap = 16 * size + 4096, wl = 0, el = 0, pos = 0, msgs = 0;
  uint8_t *wire = malloc(cap), *expect = malloc(size + 1);
  ms_ws_decoder_config_t cfg;
  result_t res;
  const char *reason = "bye";
  int n;

  /* Script: each message takes a control byte c: bit 0 text/binary,
   * bits 1-2 number of frames - 1, bit 3 a ping after the first frame;
   * then per frame one length byte L (payload = the next L % 64 bytes,
   * or 200-2000 repeated bytes when L >= 250). */
  while (pos < size && wl + 8192 < cap) {
    uint8_t c = data[pos++];
    int text = c & 1;
    size_t frames = 1 + ((c >> 1) & 3);
    for (size_t f = 0; f < frames; f++) {
      uint8_t key[4];
      size_t len = 0, lpos;
      uint64_t moff = 0;
      int h;
      if (pos < size) {
        uint8_t l = data[pos++];
        len = l >= 250 ? 200 + (size_t)(l - 250) * 360 : l % 64;
      }
      lpos = pos;
      for (int i = 0; i < 4; i++) key[i] = (uint8_t)rnd();
      h = ms_ws_frame_header(wire + wl, f + 1 == frames,
                             f ? MS_WS_OP_CONT
                               : (text ? MS_WS_OP_TEXT : MS_WS_OP_BINARY),
                             len, role == MS_WS_ROLE_SERVER ? key : NULL);
      assert(h >= 2 && h <= MS_WS_MAX_HEADER);
      wl += (size_t)h;
      for (size_t i = 0; i < len; i++) {
        uint8_t b = lpos + i < size ? data[lpos + i] : (uint8_t)i;
        if (text) b = (uint8_t)(0x20 + b % 0x5f); /* ASCII keeps it UTF-8 */
        wire[wl + i] = b;
      }
      expect = realloc(expect, el + len + 1);
      memcpy(expect + el, wire + wl, len);
      el += len;
      if (role == MS_WS_ROLE_SERVER) {
        /* mask in random pieces with the running offset */
        size_t done = 0;
        while (done < len) {
          size_t k = 1 + rnd() % 17;
          if (k > len - done) k = len - done;
          moff = ms_ws_mask(wire + wl + done, k, key, moff);
          done += k;
        }
        assert(moff == len);
      }
      wl += len;
      pos = lpos + (len < 64 ? len : 0);
      if (pos > size) pos = size;
      if (f == 0 && (c & 8)) {
        n = ms_ws_control_frame(wire + wl, cap - wl, MS_WS_OP_PING,
                                data, size < 125 ? size : 125,
                                role == MS_WS_ROLE_SERVER ? key : NULL);
        assert(n > 0);
        wl += (size_t)n;
      }
    }
    msgs++;
  }
  {
    uint8_t key[4] = {(uint8_t)rnd(), 1, 2, 3};
    n = ms_ws_close_frame(wire + wl, cap - wl, 4000, reason, 3,
                          role == MS_WS_ROLE_SERVER ? key : NULL);
    assert(n > 0);
    wl += (size_t)n;
  }
  ms_ws_decoder_config_default(&cfg, role);
  decode(&cfg, wire, wl, 0, &res);
  assert(res.status == 0);
  assert(res.messages == msgs);
  assert(res.len == el && (el == 0 || memcmp(res.data, expect, el) == 0));
  assert(res.got_close == 4000);
  assert(res.close_len == 5 && memcmp(res.close_payload + 2, "bye", 3) == 0);
  free(res.data);
  free(wire);
  free(expect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t mode;
  ms_ws_role_t role;
  if (size < 1) return 0;
  mode = data[0];
  rng_state = mode * 2654435761u + (uint32_t)size;
  role = (mode & 1) ? MS_WS_ROLE_SERVER : MS_WS_ROLE_CLIENT;
  if (mode & 2)
    roundtrip_mode(role, data + 1, size - 1);
  else
    raw_mode(role, data + 1, size - 1);
  return 0;
}
