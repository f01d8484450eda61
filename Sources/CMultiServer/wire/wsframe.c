/* WebSocket framing (RFC 6455 §5): encoder, masking, UTF-8 validation and
 * an in-place incremental decoder. No I/O, no allocation. */
#include "wsframe.h"

#include <string.h>

_Static_assert(MS_WS_MAX_CONTROL_PAYLOAD <= 255, "ctrl_len is a uint8_t");
_Static_assert(MS_WS_MAX_HEADER <= 255, "hdr_len is a uint8_t");

enum { ST_HEADER = 0, ST_PAYLOAD, ST_CLOSED, ST_FAILED };

#define WS_DEFAULT_LIMIT ((uint64_t)16 * 1024 * 1024)


/* ------------------------------------------------------------------ */
/* UTF-8                                                               */
/* ------------------------------------------------------------------ */

void ms_ws_utf8_init(ms_ws_utf8_t *v) {
  memset(v, 0, sizeof(*v));
}


int ms_ws_utf8_update(ms_ws_utf8_t *v, const uint8_t *p, size_t n) {
  size_t i = 0;

  if (v->bad) return MS_EFRAME;
  while (i < n) {
    uint8_t c = p[i];
    if (v->need > 0) {
      if (c < v->lo || c > v->hi) goto bad;
      v->lo = 0x80;
      v->hi = 0xbf;
      v->need--;
      i++;
      continue;
    }
    if (c < 0x80) {
      /* ASCII run: eight bytes at a time while none has the top bit. */
      i++;
      while (n - i >= 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & UINT64_C(0x8080808080808080)) break;
        i += 8;
      }
      continue;
    }
    /* Lead byte: sequence length and the range of the second byte
     * (Unicode Table 3-7). C0, C1 and F5..FF never occur; the narrowed
     * second-byte ranges exclude overlongs (E0, F0), surrogates (ED) and
     * values above U+10FFFF (F4). */
    v->lo = 0x80;
    v->hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      v->need = 1;
    } else if (c == 0xe0) {
      v->need = 2;
      v->lo = 0xa0;
    } else if (c == 0xed) {
      v->need = 2;
      v->hi = 0x9f;
    } else if (c >= 0xe1 && c <= 0xef) {
      v->need = 2;
    } else if (c == 0xf0) {
      v->need = 3;
      v->lo = 0x90;
    } else if (c >= 0xf1 && c <= 0xf3) {
      v->need = 3;
    } else if (c == 0xf4) {
      v->need = 3;
      v->hi = 0x8f;
    } else {
      goto bad;
    }
    i++;
  }
  return 0;

bad:
  v->bad = 1;
  return MS_EFRAME;
}


bool ms_ws_utf8_complete(const ms_ws_utf8_t *v) {
  return !v->bad && v->need == 0;
}


bool ms_ws_utf8_valid(const uint8_t *p, size_t n) {
  ms_ws_utf8_t v;
  ms_ws_utf8_init(&v);
  return ms_ws_utf8_update(&v, p, n) == 0 && ms_ws_utf8_complete(&v);
}


/* ------------------------------------------------------------------ */
/* Encoder                                                             */
/* ------------------------------------------------------------------ */

static bool opcode_known(int op) {
  return op == MS_WS_OP_CONT || op == MS_WS_OP_TEXT ||
         op == MS_WS_OP_BINARY || op == MS_WS_OP_CLOSE ||
         op == MS_WS_OP_PING || op == MS_WS_OP_PONG;
}


static bool opcode_control(int op) {
  return (op & 0x8) != 0;
}


int ms_ws_frame_header(uint8_t out[MS_WS_MAX_HEADER], bool fin, int opcode,
                       uint64_t len, const uint8_t *mask_key) {
  size_t n = 2;

  if (!opcode_known(opcode)) return MS_EINVAL;
  if (opcode_control(opcode) && (!fin || len > MS_WS_MAX_CONTROL_PAYLOAD))
    return MS_EINVAL;
  if (len >> 63) return MS_EINVAL;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  if (len < 126) {
    out[1] = (uint8_t)len;
  } else if (len <= 0xffff) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    n = 4;
  } else {
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    n = 10;
  }
  if (mask_key) {
    out[1] |= 0x80;
    memcpy(out + n, mask_key, MS_WS_MASK_KEYBYTES);
    n += MS_WS_MASK_KEYBYTES;
  }
  return (int)n;
}


uint64_t ms_ws_mask(uint8_t *buf, size_t len,
                    const uint8_t key[MS_WS_MASK_KEYBYTES], uint64_t offset) {
  uint8_t k[8];
  size_t i = 0;

  /* The key rotated to this offset, twice, so eight bytes go at a time. */
  for (unsigned j = 0; j < 8; j++) k[j] = key[(offset + j) & 3];
  if (len >= 8) {
    uint64_t kw, w;
    memcpy(&kw, k, 8);
    for (; len - i >= 8; i += 8) {
      memcpy(&w, buf + i, 8);
      w ^= kw;
      memcpy(buf + i, &w, 8);
    }
  }
  for (; i < len; i++) buf[i] ^= k[i & 7];
  return offset + len;
}


int ms_ws_control_frame(uint8_t *out, size_t cap, int opcode,
                        const uint8_t *payload, size_t len,
                        const uint8_t *mask_key) {
  uint8_t hdr[MS_WS_MAX_HEADER];
  int h;

  if (opcode != MS_WS_OP_PING && opcode != MS_WS_OP_PONG &&
      opcode != MS_WS_OP_CLOSE)
    return MS_EINVAL;
  if (len > MS_WS_MAX_CONTROL_PAYLOAD || (len > 0 && !payload))
    return MS_EINVAL;
  h = ms_ws_frame_header(hdr, true, opcode, len, mask_key);
  if (h < 0) return h;
  if (cap < (size_t)h + len) return MS_ELIMIT;
  memcpy(out, hdr, (size_t)h);
  if (len > 0) memcpy(out + h, payload, len);
  if (mask_key) (void)ms_ws_mask(out + h, len, mask_key, 0);
  return h + (int)len;
}


int ms_ws_pong_frame(uint8_t *out, size_t cap, const uint8_t *ping_payload,
                     size_t len, const uint8_t *mask_key) {
  return ms_ws_control_frame(out, cap, MS_WS_OP_PONG, ping_payload, len,
                             mask_key);
}


bool ms_ws_close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
         (code >= 3000 && code <= 4999);
}


int ms_ws_close_frame(uint8_t *out, size_t cap, uint16_t code,
                      const char *reason, size_t reason_len,
                      const uint8_t *mask_key) {
  uint8_t payload[MS_WS_MAX_CONTROL_PAYLOAD];

  if (reason_len > 0 && !reason) return MS_EINVAL;
  if (code == MS_WS_CLOSE_NO_STATUS) {
    if (reason_len > 0) return MS_EINVAL;
    return ms_ws_control_frame(out, cap, MS_WS_OP_CLOSE, NULL, 0, mask_key);
  }
  if (!ms_ws_close_code_valid(code)) return MS_EINVAL;
  if (reason_len > MS_WS_MAX_CLOSE_REASON) return MS_ELIMIT;
  if (!ms_ws_utf8_valid((const uint8_t *)reason, reason_len))
    return MS_EINVAL;
  payload[0] = (uint8_t)(code >> 8);
  payload[1] = (uint8_t)code;
  if (reason_len > 0) memcpy(payload + 2, reason, reason_len);
  return ms_ws_control_frame(out, cap, MS_WS_OP_CLOSE, payload,
                             2 + reason_len, mask_key);
}


/* ------------------------------------------------------------------ */
/* Decoder                                                             */
/* ------------------------------------------------------------------ */

void ms_ws_decoder_config_default(ms_ws_decoder_config_t *cfg,
                                  ms_ws_role_t role) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->role = role;
  cfg->max_frame = WS_DEFAULT_LIMIT;
  cfg->max_message = WS_DEFAULT_LIMIT;
}


static void next_frame(ms_ws_decoder_t *d) {
  d->stage = ST_HEADER;
  d->hdr_len = 0;
  d->hdr_need = 2;
}


int ms_ws_decoder_init(ms_ws_decoder_t *d, const ms_ws_decoder_config_t *cfg) {
  ms_ws_decoder_config_t def;

  if (!cfg) {
    ms_ws_decoder_config_default(&def, MS_WS_ROLE_SERVER);
    cfg = &def;
  }
  if ((cfg->role != MS_WS_ROLE_SERVER && cfg->role != MS_WS_ROLE_CLIENT) ||
      cfg->max_frame == 0 || cfg->max_message == 0 ||
      (cfg->rsv_allowed & ~0x70) != 0)
    return MS_EINVAL;
  memset(d, 0, sizeof(*d));
  d->cfg = *cfg;
  next_frame(d);
  return 0;
}


static int fail(ms_ws_decoder_t *d, int err, uint16_t code,
                const char *reason) {
  d->stage = ST_FAILED;
  d->err = err;
  d->close_code = code;
  d->reason = reason;
  return err;
}


static int protocol_error(ms_ws_decoder_t *d, const char *reason) {
  return fail(d, MS_EFRAME, MS_WS_CLOSE_PROTOCOL, reason);
}


/* The first two header bytes are in: check everything they decide, and
 * work out the header's full length. */
static int header_start(ms_ws_decoder_t *d) {
  uint8_t b0 = d->hdr[0], b1 = d->hdr[1];
  uint8_t op = b0 & 0x0f, len7 = b1 & 0x7f;
  bool masked = (b1 & 0x80) != 0;

  if ((b0 & 0x70) & ~d->cfg.rsv_allowed)
    return protocol_error(d, "reserved bits set");
  if (!opcode_known(op)) return protocol_error(d, "unknown opcode");
  if (opcode_control(op)) {
    if (!(b0 & 0x80)) return protocol_error(d, "fragmented control frame");
    if (len7 > MS_WS_MAX_CONTROL_PAYLOAD)
      return protocol_error(d, "control frame payload over 125 bytes");
  } else if (op == MS_WS_OP_CONT) {
    if (!d->msg_open)
      return protocol_error(d, "continuation frame without a message");
  } else if (d->msg_open) {
    return protocol_error(d, "new data frame inside a fragmented message");
  }
  if (d->cfg.role == MS_WS_ROLE_SERVER && !masked)
    return protocol_error(d, "unmasked frame from client");
  if (d->cfg.role == MS_WS_ROLE_CLIENT && masked)
    return protocol_error(d, "masked frame from server");
  d->fin = (b0 & 0x80) != 0;
  d->opcode = op;
  d->masked = masked;
  d->hdr_need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) +
                          (masked ? MS_WS_MASK_KEYBYTES : 0));
  return 0;
}


/* The whole header is in: length rules, limits, message bookkeeping. */
static int header_end(ms_ws_decoder_t *d) {
  uint8_t len7 = d->hdr[1] & 0x7f;
  uint64_t len = len7;
  size_t pos = 2;

  if (len7 == 126) {
    len = ((uint64_t)d->hdr[2] << 8) | d->hdr[3];
    pos = 4;
    if (len < 126) return protocol_error(d, "non-minimal length encoding");
  } else if (len7 == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) len = (len << 8) | d->hdr[2 + i];
    pos = 10;
    if (len >> 63) return protocol_error(d, "64-bit length with top bit set");
    if (len <= 0xffff)
      return protocol_error(d, "non-minimal length encoding");
  }
  if (d->masked) memcpy(d->key, d->hdr + pos, MS_WS_MASK_KEYBYTES);
  if (!opcode_control(d->opcode)) {
    if (len > d->cfg.max_frame)
      return fail(d, MS_ELIMIT, MS_WS_CLOSE_TOO_BIG, "frame too big");
    if (d->opcode != MS_WS_OP_CONT) {
      d->msg_open = true;
      d->msg_opcode = d->opcode;
      d->msg_len = 0;
      ms_ws_utf8_init(&d->utf8);
    }
    if (len > d->cfg.max_message - d->msg_len)
      return fail(d, MS_ELIMIT, MS_WS_CLOSE_TOO_BIG, "message too big");
    d->msg_len += len;
  }
  d->remaining = len;
  d->mask_off = 0;
  d->ctrl_len = 0;
  d->stage = ST_PAYLOAD;
  return 0;
}


/* A whole control frame is in d->ctrl: fill ev, or fail. */
static int control_event(ms_ws_decoder_t *d, ms_ws_event_t *ev) {
  memset(ev, 0, sizeof(*ev));
  ev->opcode = ev->msg_opcode = d->opcode;
  ev->frame_end = ev->fin = true;
  ev->data = d->ctrl;
  ev->len = d->ctrl_len;
  ev->rsv = d->hdr[0] & 0x70;
  if (d->opcode == MS_WS_OP_PING) {
    ev->type = MS_WS_EV_PING;
  } else if (d->opcode == MS_WS_OP_PONG) {
    ev->type = MS_WS_EV_PONG;
  } else {
    ev->type = MS_WS_EV_CLOSE;
    if (d->ctrl_len == 1) return protocol_error(d, "1-byte close payload");
    if (d->ctrl_len == 0) {
      ev->close_code = MS_WS_CLOSE_NO_STATUS;
      ev->reason = (const char *)d->ctrl;
    } else {
      ev->close_code = (uint16_t)((d->ctrl[0] << 8) | d->ctrl[1]);
      if (!ms_ws_close_code_valid(ev->close_code))
        return protocol_error(d, "invalid close code");
      if (!ms_ws_utf8_valid(d->ctrl + 2, d->ctrl_len - 2u))
        return fail(d, MS_EFRAME, MS_WS_CLOSE_INVALID_DATA,
                    "close reason is not UTF-8");
      ev->reason = (const char *)d->ctrl + 2;
      ev->reason_len = d->ctrl_len - 2u;
    }
    d->stage = ST_CLOSED;
    return 1;
  }
  next_frame(d);
  return 1;
}


int ms_ws_decode(ms_ws_decoder_t *d, uint8_t *in, size_t len,
                 size_t *consumed, ms_ws_event_t *ev) {
  size_t off = 0;
  int r;

  *consumed = 0;
  if (d->stage == ST_FAILED) return d->err;
  if (d->stage == ST_CLOSED) return MS_ECLOSED;
  for (;;) {
    if (d->stage == ST_HEADER) {
      while (d->hdr_len < d->hdr_need && off < len) {
        d->hdr[d->hdr_len++] = in[off++];
        if (d->hdr_len == 2 && (r = header_start(d)) < 0) goto out;
      }
      if (d->hdr_len < d->hdr_need) {
        r = 0;
        goto out;
      }
      if ((r = header_end(d)) < 0) goto out;
    }

    if (opcode_control(d->opcode)) {
      size_t n = len - off;
      if (n > d->remaining) n = (size_t)d->remaining;
      if (n > 0) {
        memcpy(d->ctrl + d->ctrl_len, in + off, n);
        if (d->masked)
          d->mask_off = ms_ws_mask(d->ctrl + d->ctrl_len, n, d->key,
                                   d->mask_off);
        d->ctrl_len = (uint8_t)(d->ctrl_len + n);
        d->remaining -= n;
        off += n;
      }
      if (d->remaining > 0) {
        r = 0;
        goto out;
      }
      r = control_event(d, ev);
      goto out;
    }

    /* Data frame payload: deliver what this input holds, in place. */
    {
      size_t n = len - off;
      uint8_t *p = in ? in + off : NULL;
      bool frame_end, msg_end;
      if (n > d->remaining) n = (size_t)d->remaining;
      if (n == 0 && d->remaining > 0) {
        r = 0;
        goto out;
      }
      frame_end = d->remaining == n;
      msg_end = frame_end && d->fin;
      if (d->masked) d->mask_off = ms_ws_mask(p, n, d->key, d->mask_off);
      if (d->msg_opcode == MS_WS_OP_TEXT && !d->cfg.no_utf8_check) {
        if (ms_ws_utf8_update(&d->utf8, p, n) < 0 ||
            (msg_end && !ms_ws_utf8_complete(&d->utf8))) {
          r = fail(d, MS_EFRAME, MS_WS_CLOSE_INVALID_DATA,
                   "text message is not UTF-8");
          goto out;
        }
      }
      memset(ev, 0, sizeof(*ev));
      ev->type = MS_WS_EV_DATA;
      ev->opcode = d->opcode;
      ev->msg_opcode = d->msg_opcode;
      ev->frame_end = frame_end;
      ev->fin = msg_end;
      ev->data = p;
      ev->len = n;
      ev->rsv = d->hdr[0] & 0x70;
      d->remaining -= n;
      off += n;
      if (frame_end) {
        if (msg_end) d->msg_open = false;
        next_frame(d);
      }
      r = 1;
      goto out;
    }
  }

out:
  *consumed = off;
  return r;
}


uint16_t ms_ws_decoder_close_code(const ms_ws_decoder_t *d) {
  return d->stage == ST_FAILED ? d->close_code : 0;
}


const char *ms_ws_decoder_reason(const ms_ws_decoder_t *d) {
  return d->stage == ST_FAILED ? d->reason : NULL;
}


int ms_ws_decoder_eof(const ms_ws_decoder_t *d) {
  if (d->stage == ST_CLOSED) return 0;
  if (d->stage == ST_FAILED) return d->err;
  return MS_EHANGUP;
}
