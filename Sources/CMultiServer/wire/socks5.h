/*
 * SOCKS5 client exchange (RFC 1928, with RFC 1929 username/password), for
 * the `onion` transport, which dials a local Tor SOCKS port. I/O-free, no
 * libuv, no allocation: the state is one caller-owned struct.
 *
 *   client                                    proxy
 *   greeting  05 N methods…          -->
 *                                    <--  05 METHOD           (method choice)
 *   [RFC 1929, when METHOD is 02:]
 *   auth      01 ULEN UNAME PLEN PASSWD -->
 *                                    <--  01 STATUS
 *   connect   05 01 00 ATYP ADDR PORT  -->
 *                                    <--  05 REP 00 ATYP BND.ADDR BND.PORT
 *
 * Offered methods: 00 (no authentication), plus 02 (username/password) when
 * credentials are given (Tor uses them for stream isolation). The CONNECT
 * target is sent as an IPv4 (ATYP 01) or IPv6 (ATYP 04) address when the
 * host is such a literal, else as a domain name (ATYP 03) exactly as given,
 * so the proxy resolves it (names are never resolved locally, which .onion
 * names require).
 *
 * Driving it:
 *     ms_socks5_init(&s, host, host_len, port, user, pass);
 *     send(ms_socks5_output(&s, &p), p);               // the greeting
 *     on bytes (in, n):
 *       while (n > 0) {
 *         r = ms_socks5_feed(&s, in, n, &c); in += c; n -= c;
 *         if (r == MS_SOCKS5_SEND) { len = ms_socks5_output(&s, &p); send(p, len); }
 *         else if (r == MS_SOCKS5_CONNECTED) { hand in[0..n) to the next layer; break; }
 *         else if (r < 0) { fail(r, ms_socks5_reason(&s), ms_socks5_path_failure(&s)); break; }
 *       }
 *     on EOF: r = ms_socks5_eof(&s);
 *
 * Errors are final: every later feed returns the same code, and
 * ms_socks5_reason() says what happened. Codes:
 *   MS_EFRAME         malformed answer (wrong version, reserved byte not 0,
 *                     unknown address type, empty domain name, a method that
 *                     was not offered): not a SOCKS5 proxy, or a broken one.
 *   MS_EUNAUTHORIZED  no acceptable method (0xFF), credentials rejected, or
 *                     Tor's missing/wrong onion-service client authorization.
 *   MS_EHANGUP        the proxy closed before the exchange ended (eof).
 *   reply codes       see ms_socks5_rep_error(): -ENETUNREACH,
 *                     -EHOSTUNREACH, -ECONNREFUSED (errno.h values, equal to
 *                     libuv's UV_E* on Linux and the BSDs), MS_ETIMEDOUT,
 *                     MS_EADDRESS, MS_EPROXY (other refusals).
 * Each failure is also classed as a *path failure* (this route to the
 * target failed; another alternative, or a retry later, may succeed) or
 * *fatal* (the proxy is misconfigured or misbehaving, or the request itself
 * is wrong: report it rather than paper over it).
 */
#ifndef MS_SOCKS5_H
#define MS_SOCKS5_H

#include <stddef.h>
#include <stdint.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_SOCKS5_VERSION 0x05
#define MS_SOCKS5_AUTH_VERSION 0x01 /* RFC 1929 sub-negotiation version */
#define MS_SOCKS5_CMD_CONNECT 0x01

#define MS_SOCKS5_METHOD_NONE 0x00
#define MS_SOCKS5_METHOD_USERPASS 0x02
#define MS_SOCKS5_METHOD_UNACCEPTABLE 0xff

#define MS_SOCKS5_ATYP_IPV4 0x01
#define MS_SOCKS5_ATYP_DOMAIN 0x03
#define MS_SOCKS5_ATYP_IPV6 0x04

/* REP values: RFC 1928 §6, then Tor's extended errors (0xF0-0xF7, Tor's
 * socks-extensions.txt / proposal 304; sent only with the SocksPort flag
 * ExtendedErrors). */
#define MS_SOCKS5_REP_SUCCEEDED 0x00
#define MS_SOCKS5_REP_GENERAL_FAILURE 0x01
#define MS_SOCKS5_REP_NOT_ALLOWED 0x02
#define MS_SOCKS5_REP_NET_UNREACHABLE 0x03
#define MS_SOCKS5_REP_HOST_UNREACHABLE 0x04
#define MS_SOCKS5_REP_CONN_REFUSED 0x05
#define MS_SOCKS5_REP_TTL_EXPIRED 0x06
#define MS_SOCKS5_REP_CMD_UNSUPPORTED 0x07
#define MS_SOCKS5_REP_ATYP_UNSUPPORTED 0x08
#define MS_SOCKS5_REP_TOR_HS_DESC_NOT_FOUND 0xf0
#define MS_SOCKS5_REP_TOR_HS_DESC_INVALID 0xf1
#define MS_SOCKS5_REP_TOR_HS_INTRO_FAILED 0xf2
#define MS_SOCKS5_REP_TOR_HS_REND_FAILED 0xf3
#define MS_SOCKS5_REP_TOR_HS_MISSING_CLIENT_AUTH 0xf4
#define MS_SOCKS5_REP_TOR_HS_BAD_CLIENT_AUTH 0xf5
#define MS_SOCKS5_REP_TOR_HS_BAD_ADDRESS 0xf6
#define MS_SOCKS5_REP_TOR_HS_INTRO_TIMEDOUT 0xf7

#define MS_SOCKS5_MAX_FIELD 255 /* host name, user name, password */
/* Largest client message: 01 ULEN UNAME(255) PLEN PASSWD(255). */
#define MS_SOCKS5_MAX_MSG (3 + 2 * MS_SOCKS5_MAX_FIELD)
/* Largest CONNECT reply: 05 REP 00 03 LEN NAME(255) PORT(2). */
#define MS_SOCKS5_MAX_REPLY (5 + MS_SOCKS5_MAX_FIELD + 2)
#define MS_SOCKS5_REASON_LEN 128

typedef enum {
  MS_SOCKS5_SEND_GREETING = 1, /* next: ms_socks5_output */
  MS_SOCKS5_WAIT_METHOD,       /* next: ms_socks5_feed */
  MS_SOCKS5_SEND_AUTH,         /* next: ms_socks5_output */
  MS_SOCKS5_WAIT_AUTH,         /* next: ms_socks5_feed */
  MS_SOCKS5_SEND_CONNECT,      /* next: ms_socks5_output */
  MS_SOCKS5_WAIT_REPLY,        /* next: ms_socks5_feed */
  MS_SOCKS5_CONNECTED_STAGE,   /* the tunnel is up */
  MS_SOCKS5_FAILED
} ms_socks5_stage_t;

/* Results of ms_socks5_feed (errors are negative). */
enum {
  MS_SOCKS5_NEED_MORE = 0, /* all input consumed; the answer is incomplete */
  MS_SOCKS5_SEND = 1,      /* an answer ended: ms_socks5_output has the next
                              message; *consumed marks the answer's end */
  MS_SOCKS5_CONNECTED = 2  /* success reply ended at *consumed: later bytes
                              belong to the tunnelled stream */
};

/* Caller-owned state; treat the fields as private. */
typedef struct {
  ms_socks5_stage_t stage;
  int error;        /* final error, 0 while none */
  int path_failure; /* meaningful once error != 0 */
  int method;       /* the proxy's choice, -1 before it */
  int rep;          /* REP of the CONNECT reply, -1 before it */
  uint16_t port;
  uint8_t atyp;      /* of the target */
  uint8_t host_len;  /* address bytes: 4, 16, or the name's length */
  uint8_t host[MS_SOCKS5_MAX_FIELD];
  uint8_t has_creds;
  uint8_t user_len, pass_len;
  uint8_t user[MS_SOCKS5_MAX_FIELD]; /* wiped once the auth message is built */
  uint8_t pass[MS_SOCKS5_MAX_FIELD];
  uint8_t out[MS_SOCKS5_MAX_MSG];    /* last message handed out */
  size_t out_len;
  uint8_t in[MS_SOCKS5_MAX_REPLY];   /* the answer being parsed */
  size_t in_len, in_need;
  char reason[MS_SOCKS5_REASON_LEN];
} ms_socks5_t;

/*
 * host[0, host_len): the CONNECT target, a name (sent as ATYP 03, as given)
 * or an IPv4 / IPv6 literal (ATYP 01 / 04; an IPv6 literal may be in
 * brackets). port: 1-65535. user/pass: NUL-terminated, 1-255 bytes each
 * (RFC 1929), both or neither (NULL); they are copied, and wiped from the
 * state once the authentication message is built.
 * Returns 0, or MS_EINVAL (empty or over-long host or credential, a NUL in
 * host, port 0, only one of user/pass); on MS_EINVAL the state is FAILED.
 */
MS_WUR int ms_socks5_init(ms_socks5_t *s, const char *host, size_t host_len,
                          uint16_t port, const char *user, const char *pass);

/*
 * The next message to send: in a SEND stage, builds it, sets *out to it and
 * moves to the matching WAIT stage; returns its length (> 0). In any other
 * stage returns 0 and sets *out to NULL. The bytes live in the state and
 * stay valid until the next ms_socks5_output or ms_socks5_wipe (so an
 * asynchronous write may reference them).
 */
size_t ms_socks5_output(ms_socks5_t *s, const uint8_t **out);

/*
 * Parse received bytes in[0, len) (split anywhere). Stops at the end of
 * each answer, so *consumed (always set) says where it ended.
 *  MS_SOCKS5_NEED_MORE  everything consumed; wait for more bytes.
 *  MS_SOCKS5_SEND       the answer was accepted: call ms_socks5_output and
 *                       send its bytes, then feed in + *consumed, if any.
 *  MS_SOCKS5_CONNECTED  the success reply ended at in + *consumed; anything
 *                       after it is tunnelled data for the next layer. Later
 *                       calls return MS_SOCKS5_CONNECTED with *consumed 0.
 *  <0                   the final error (see the top of this file); a
 *                       failure reply is reported as soon as its REP byte
 *                       arrives. *consumed counts the bytes looked at.
 *  MS_EINVAL            misuse, not final: called in a SEND stage (take the
 *                       output first), or in NULL with len > 0.
 */
MS_WUR int ms_socks5_feed(ms_socks5_t *s, const uint8_t *in, size_t len,
                          size_t *consumed);

/* The proxy closed the connection: 0 if connected, the final error if
 * failed, else fails now with MS_EHANGUP (a path failure) and a reason
 * naming the answer that was awaited. */
MS_WUR int ms_socks5_eof(ms_socks5_t *s);

ms_socks5_stage_t ms_socks5_stage(const ms_socks5_t *s);
/* The final error, or 0. */
int ms_socks5_error(const ms_socks5_t *s);
/* One line saying why the exchange failed ("" while it has not), e.g.
 * "socks5: CONNECT failed: host unreachable (REP 0x04)". Valid as long as
 * the state. */
const char *ms_socks5_reason(const ms_socks5_t *s);
/* Where the exchange is, for a reason ("before choosing a method"). */
const char *ms_socks5_stage_str(const ms_socks5_t *s);
/* 1 if the exchange failed and the failure is a path failure, else 0. */
int ms_socks5_path_failure(const ms_socks5_t *s);
/* REP of the CONNECT reply, or -1 before it arrived. */
int ms_socks5_rep(const ms_socks5_t *s);

/* After MS_SOCKS5_CONNECTED: the proxy's bound address (BND.ADDR: 4 or 16
 * bytes, or a name of 1-255 bytes, not NUL-terminated; points into the
 * state) and port. Returns 0, or MS_EINVAL before the connection is up. */
MS_WUR int ms_socks5_bound(const ms_socks5_t *s, uint8_t *atyp,
                           const uint8_t **addr, size_t *addr_len,
                           uint16_t *port);

/* Wipe the whole state (credentials, messages, replies). */
void ms_socks5_wipe(ms_socks5_t *s);

/* Reply code tables, usable without a state. For any rep 0x01-0xff:
 * the error code (see the top of this file), a static description ("host
 * unreachable", "onion service descriptor can not be found", "unassigned
 * reply code" for codes with no meaning), and 1 for a path failure or 0 for
 * a fatal one. For 0x00: 0, "succeeded", 0. */
int ms_socks5_rep_error(int rep);
const char *ms_socks5_rep_str(int rep);
int ms_socks5_rep_is_path_failure(int rep);

#ifdef __cplusplus
}
#endif
#endif /* MS_SOCKS5_H */
