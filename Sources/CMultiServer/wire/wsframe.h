/*
 * WebSocket framing (RFC 6455 §5), I/O-free: an encoder for frame headers
 * and control frames, a masking function, an incremental UTF-8 validator,
 * and an incremental decoder that unmasks in place in the caller's buffer.
 *
 * Wire format (§5.2):
 *   byte 0   FIN(0x80) RSV1-3(0x70) opcode(0x0f)
 *   byte 1   MASK(0x80) len7(0x7f)
 *   len7 126 -> 16-bit big-endian length follows; 127 -> 64-bit (MSB 0)
 *   MASK     -> 4-byte masking key follows; payload[i] ^= key[i % 4]
 * A header is 2..14 bytes (MS_WS_MAX_HEADER).
 *
 * Decisions (all enforced by the decoder, reported as close code 1002
 * "protocol error" unless noted):
 *  - the length must use the minimal encoding (§5.2 "the minimal number of
 *    bytes MUST be used"): 126 with a value < 126, or 127 with a value
 *    < 65536, is rejected; so is a 64-bit length with the top bit set;
 *  - RSV bits not enabled by cfg.rsv_allowed (no extension negotiated: 0);
 *  - unknown opcodes (3-7, 11-15);
 *  - control frames (close/ping/pong) without FIN or with payload > 125;
 *  - a continuation frame with no message open; a text/binary frame while a
 *    fragmented message is open (control frames may come in between);
 *  - the server role receiving an unmasked frame, the client role receiving
 *    a masked frame (§5.1);
 *  - a close payload of 1 byte; a close code that is not allowed on the
 *    wire. Valid: 1000-1003, 1007-1011, 3000-4999. Everything else is
 *    rejected as this library's policy: 1004-1006 and 1015 (reserved, never
 *    sent), 1012-1014 (registered with IANA after RFC 6455; a peer using
 *    them gets 1002), 1016-2999 and anything below 1000 or above 4999;
 *  - 1007 "invalid payload": a text message (across all its fragments and
 *    read boundaries) or a close reason that is not well-formed UTF-8
 *    (overlongs, surrogates U+D800..DFFF, values > U+10FFFF, or a sequence
 *    left unfinished at the end of the message);
 *  - 1009 "message too big": a data frame longer than cfg.max_frame, or a
 *    message whose frames add up to more than cfg.max_message. Both are
 *    checked from the header, before any payload is delivered.
 * Every decoder error is final: the connection must be failed by sending a
 * close frame with ms_ws_decoder_close_code() and closing the TCP stream.
 *
 * No heap allocation anywhere in this module. Lifetimes: a data event's
 * payload points into the caller's input buffer (unmasked there, in place);
 * a control event's payload points into the decoder (control frames can be
 * split across reads, so they are gathered in a 125-byte buffer). Both are
 * valid until the next call on the decoder, or until the caller reuses the
 * input buffer, whichever comes first.
 */
#ifndef MS_WSFRAME_H
#define MS_WSFRAME_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opcodes (§5.2, §11.8). */
#define MS_WS_OP_CONT 0x0
#define MS_WS_OP_TEXT 0x1
#define MS_WS_OP_BINARY 0x2
#define MS_WS_OP_CLOSE 0x8
#define MS_WS_OP_PING 0x9
#define MS_WS_OP_PONG 0xa

#define MS_WS_MAX_HEADER 14          /* 2 + 8 (64-bit length) + 4 (key) */
#define MS_WS_MASK_KEYBYTES 4
#define MS_WS_MAX_CONTROL_PAYLOAD 125
#define MS_WS_MAX_CLOSE_REASON 123   /* 125 - the 2-byte code */
/* A whole control frame on the wire: 2-byte header + key + 125 bytes. */
#define MS_WS_MAX_CONTROL_FRAME (2 + MS_WS_MASK_KEYBYTES + \
                                 MS_WS_MAX_CONTROL_PAYLOAD)
/* RSV bits in byte 0 (for cfg.rsv_allowed). */
#define MS_WS_RSV1 0x40
#define MS_WS_RSV2 0x20
#define MS_WS_RSV3 0x10

/* Close codes (§7.4.1). 1005 and 1006 are never sent: 1005 is what the
 * decoder reports for a close frame without a payload, 1006 is for the
 * application when the TCP stream ends without a close frame. */
#define MS_WS_CLOSE_NORMAL 1000
#define MS_WS_CLOSE_GOING_AWAY 1001
#define MS_WS_CLOSE_PROTOCOL 1002
#define MS_WS_CLOSE_UNSUPPORTED 1003
#define MS_WS_CLOSE_NO_STATUS 1005
#define MS_WS_CLOSE_ABNORMAL 1006
#define MS_WS_CLOSE_INVALID_DATA 1007
#define MS_WS_CLOSE_POLICY 1008
#define MS_WS_CLOSE_TOO_BIG 1009
#define MS_WS_CLOSE_EXTENSION 1010
#define MS_WS_CLOSE_INTERNAL 1011

/* ------------------------------------------------------------------ */
/* UTF-8 (RFC 3629; Unicode Table 3-7 well-formed byte sequences)      */
/* ------------------------------------------------------------------ */

/* Incremental validator: feed any split of a byte stream. Zero-initialise
 * or call ms_ws_utf8_init. Treat the fields as private. */
typedef struct {
  uint8_t need; /* continuation bytes still expected (0..3) */
  uint8_t lo;   /* allowed range of the next continuation byte */
  uint8_t hi;
  uint8_t bad;  /* sticky: an invalid byte was seen */
} ms_ws_utf8_t;

void ms_ws_utf8_init(ms_ws_utf8_t *v);
/* Validate the next n bytes. Returns 0 while the stream so far is a valid
 * prefix of UTF-8, MS_EFRAME from the first invalid byte on (sticky). */
MS_WUR int ms_ws_utf8_update(ms_ws_utf8_t *v, const uint8_t *p, size_t n);
/* True when the stream so far is valid and ends on a character boundary
 * (no sequence left unfinished). */
bool ms_ws_utf8_complete(const ms_ws_utf8_t *v);
/* One-shot: true iff p[0..n) is well-formed UTF-8. */
bool ms_ws_utf8_valid(const uint8_t *p, size_t n);

/* ------------------------------------------------------------------ */
/* Encoder                                                             */
/* ------------------------------------------------------------------ */

/* Write a frame header into out (2..14 bytes): FIN bit `fin`, `opcode`,
 * the payload length `len` in the shortest form, and, when mask_key is not
 * NULL, the MASK bit and the 4-byte key (the caller then masks the payload
 * with ms_ws_mask using the same key, starting at offset 0). A client must
 * mask every frame with a fresh random key (§5.3); a server must not mask.
 * Returns the header length, or MS_EINVAL for an unknown opcode, a control
 * frame with fin == false or len > 125, or len >= 2^63. No RSV bits are
 * set (no extensions). */
MS_WUR int ms_ws_frame_header(uint8_t out[MS_WS_MAX_HEADER], bool fin,
                              int opcode, uint64_t len,
                              const uint8_t *mask_key);

/* XOR buf[0..len) with the masking key, in place, as bytes
 * offset..offset+len of the payload (so a payload can be masked piece by
 * piece: pass the returned value as the next offset). Masking twice
 * unmasks. Returns offset + len. */
uint64_t ms_ws_mask(uint8_t *buf, size_t len,
                    const uint8_t key[MS_WS_MASK_KEYBYTES], uint64_t offset);

/* Build a whole control frame (header, key, masked payload) into out.
 * opcode is MS_WS_OP_PING or MS_WS_OP_PONG (for a close frame use
 * ms_ws_close_frame); payload may be NULL when len == 0. A pong answering
 * a ping carries the ping's payload unchanged (§5.5.3): pass the event's
 * data. mask_key as for ms_ws_frame_header. Returns the frame length
 * (<= MS_WS_MAX_CONTROL_FRAME), MS_EINVAL (bad opcode, len > 125) or
 * MS_ELIMIT (cap too small). out must not overlap payload. */
MS_WUR int ms_ws_control_frame(uint8_t *out, size_t cap, int opcode,
                               const uint8_t *payload, size_t len,
                               const uint8_t *mask_key);
/* Shorthand for ms_ws_control_frame(out, cap, MS_WS_OP_PONG, ...). */
MS_WUR int ms_ws_pong_frame(uint8_t *out, size_t cap,
                            const uint8_t *ping_payload, size_t len,
                            const uint8_t *mask_key);

/* Build a close frame. code == MS_WS_CLOSE_NO_STATUS (1005) sends an empty
 * payload (reason must then be empty); otherwise code must be valid on the
 * wire (ms_ws_close_code_valid) and reason (reason_len bytes, may be NULL
 * when 0) must be UTF-8 of at most 123 bytes. Returns the frame length,
 * MS_EINVAL (code not sendable, reason not UTF-8, reason with 1005) or
 * MS_ELIMIT (reason > 123 bytes, or cap too small). */
MS_WUR int ms_ws_close_frame(uint8_t *out, size_t cap, uint16_t code,
                             const char *reason, size_t reason_len,
                             const uint8_t *mask_key);

/* True for the codes an endpoint may put on the wire (see the top). */
bool ms_ws_close_code_valid(unsigned code);

/* ------------------------------------------------------------------ */
/* Decoder                                                             */
/* ------------------------------------------------------------------ */

typedef enum {
  MS_WS_ROLE_SERVER = 1, /* expects masked frames (from a client) */
  MS_WS_ROLE_CLIENT = 2  /* expects unmasked frames (from a server) */
} ms_ws_role_t;

/* Decoder configuration; copied by ms_ws_decoder_init. */
typedef struct {
  ms_ws_role_t role;
  uint64_t max_frame;   /* largest data-frame payload; UINT64_MAX: none */
  uint64_t max_message; /* largest message (sum of its frames) */
  uint8_t rsv_allowed;  /* RSV bits a negotiated extension uses; 0 */
  bool no_utf8_check;   /* skip the text check (e.g. when RSV1 compression
                           is on: validate after inflating instead) */
} ms_ws_decoder_config_t;

/* Fill cfg with defaults for role: max_frame = max_message = 16 MiB,
 * rsv_allowed = 0, UTF-8 checked. */
void ms_ws_decoder_config_default(ms_ws_decoder_config_t *cfg,
                                  ms_ws_role_t role);

typedef enum {
  MS_WS_EV_DATA = 1, /* a piece of a text/binary message */
  MS_WS_EV_PING,     /* a whole ping: answer with ms_ws_pong_frame */
  MS_WS_EV_PONG,     /* a whole pong */
  MS_WS_EV_CLOSE     /* a whole, valid close frame; decoding stops */
} ms_ws_event_type_t;

typedef struct {
  ms_ws_event_type_t type;
  /* DATA: the frame's opcode as on the wire (TEXT, BINARY or CONT) and the
   * message's type (TEXT or BINARY, also for continuation frames). For
   * control events: MS_WS_OP_CLOSE/PING/PONG in both. */
  int opcode;
  int msg_opcode;
  /* DATA: frame_end is set on the last piece of a frame; fin on the last
   * piece of the message (the frame had FIN and this piece ends it). A
   * frame with an empty payload gives one piece of length 0. Control
   * events: both true. */
  bool frame_end;
  bool fin;
  /* Payload (unmasked). DATA: inside the caller's input buffer. Control:
   * inside the decoder (for CLOSE, the raw payload: code + reason). */
  uint8_t *data;
  size_t len;
  /* CLOSE only: the code (MS_WS_CLOSE_NO_STATUS for an empty payload) and
   * the UTF-8 reason (points into data, not NUL-terminated). */
  uint16_t close_code;
  const char *reason;
  size_t reason_len;
  /* RSV bits of the frame (only those in cfg.rsv_allowed can be set); an
   * extension checks where they may appear. */
  uint8_t rsv;
} ms_ws_event_t;

/* Caller-embedded state; treat the fields as private. */
typedef struct {
  ms_ws_decoder_config_t cfg;
  int stage;              /* header, payload, closed, failed */
  uint8_t hdr[MS_WS_MAX_HEADER];
  uint8_t hdr_len;        /* header bytes gathered */
  uint8_t hdr_need;       /* header bytes of the current frame (2..14) */
  bool fin;               /* current frame */
  uint8_t opcode;         /* current frame */
  bool masked;
  uint8_t key[MS_WS_MASK_KEYBYTES];
  uint64_t remaining;     /* payload bytes of the current frame still due */
  uint64_t mask_off;      /* payload bytes of the current frame so far */
  bool msg_open;          /* a fragmented data message is in progress */
  uint8_t msg_opcode;     /* its type */
  uint64_t msg_len;       /* its bytes so far (frames' lengths) */
  ms_ws_utf8_t utf8;      /* text validation across fragments */
  uint8_t ctrl[MS_WS_MAX_CONTROL_PAYLOAD];
  uint8_t ctrl_len;
  int err;                /* final error (negative) or 0 */
  uint16_t close_code;    /* code to send for err: 1002, 1007, 1009 */
  const char *reason;     /* static human reason for err */
} ms_ws_decoder_t;

/* Initialise (or reset) a decoder. cfg may be NULL for the server role
 * defaults. Returns 0, or MS_EINVAL for a bad role, a zero limit, or RSV
 * bits outside 0x70. */
MS_WUR int ms_ws_decoder_init(ms_ws_decoder_t *d,
                              const ms_ws_decoder_config_t *cfg);

/*
 * Iterator. Consumes bytes of in[0..len) until one event is complete.
 *  1   an event in *ev (see ms_ws_event_t for lifetimes). Data payload
 *      bytes are unmasked IN PLACE in `in`, which is why it is not const.
 *  0   all of `in` was consumed; more input is needed.
 *  MS_EFRAME  protocol violation (close code 1002) or invalid UTF-8 (1007);
 *  MS_ELIMIT  frame/message over the configured limits (1009).
 *      Final: every later call returns the same error and consumes nothing.
 *      ms_ws_decoder_close_code() is the code to send, ms_ws_decoder_reason()
 *      says why. Data already delivered for the failing message stays
 *      delivered; the piece that failed the UTF-8 check is not delivered.
 *  MS_ECLOSED after a CLOSE event: the decoder takes nothing more (the peer
 *      must not send after its close, §5.5.1); *consumed is 0.
 * *consumed is always set: bytes of `in` used by this call. After a CLOSE
 * event the bytes past *consumed are not part of the WebSocket stream.
 * Typical use:
 *     while (n > 0 && (r = ms_ws_decode(d, p, n, &c, &ev)) >= 0) {
 *       p += c; n -= c;
 *       if (r == 1) handle(&ev);
 *     }
 * A data event is produced for every non-empty run of payload bytes that
 * is in the input, so one frame may give several events (one per read).
 * in may be NULL when len == 0.
 */
MS_WUR int ms_ws_decode(ms_ws_decoder_t *d, uint8_t *in, size_t len,
                        size_t *consumed, ms_ws_event_t *ev);

/* Close code to send for the final error (1002, 1007 or 1009), 0 if the
 * decoder has not failed. */
uint16_t ms_ws_decoder_close_code(const ms_ws_decoder_t *d);
/* Static human reason for the final error ("unmasked frame from client"),
 * NULL if the decoder has not failed. Fits a close reason (<= 123 bytes,
 * ASCII). */
const char *ms_ws_decoder_reason(const ms_ws_decoder_t *d);
/* At end of the TCP stream: 0 if a close frame was received, the final
 * error if the decoder failed, else MS_EHANGUP (the application reports
 * 1006, abnormal closure). */
MS_WUR int ms_ws_decoder_eof(const ms_ws_decoder_t *d);

#ifdef __cplusplus
}
#endif
#endif /* MS_WSFRAME_H */
