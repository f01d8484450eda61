/*
 * Tor control-port exchange (control-spec.txt, protocol version 1) for
 * publishing an onion service: I/O-free, no libuv, no allocation; the state
 * is one caller-owned struct.
 *
 *   controller                                     tor
 *   PROTOCOLINFO 1                        -->
 *                                         <--  250-PROTOCOLINFO 1
 *                                              250-AUTH METHODS=COOKIE,SAFECOOKIE
 *                                                   COOKIEFILE="/…/control_auth_cookie"
 *                                              250-VERSION Tor="0.4.9.11"
 *                                              250 OK
 *   AUTHENTICATE <cookie hex> | "password" | (nothing, for NULL)  -->
 *                                         <--  250 OK   (or 515 Authentication failed)
 *   ADD_ONION NEW:ED25519-V3 | ED25519-V3:<key>  Port=VPORT,TARGET  -->
 *                                         <--  250-ServiceID=<56 base32 chars>
 *                                              250-PrivateKey=ED25519-V3:<base64>  (NEW only)
 *                                              250 OK
 *   ... the service lives as long as this control connection ...
 *   DEL_ONION <ServiceID>                 -->
 *                                         <--  250 OK
 *
 * Authentication: with a password, HASHEDPASSWORD must be among the methods
 * tor offers (the torrc's HashedControlPassword; the password is sent as a
 * quoted string); without one, NULL if offered, else COOKIE: feed stops
 * with MS_TORCTL_NEED_COOKIE, the caller reads the cookie file (tor's path:
 * ms_torctl_cookie_file(), or its own) and hands its 32 bytes to
 * ms_torctl_set_cookie(). SAFECOOKIE alone (without COOKIE) is not
 * supported.
 *
 * Replies are parsed line by line (CRLF, a bare LF accepted), split
 * anywhere; asynchronous 650 events and the bodies of data replies
 * ("250+…" up to a lone ".") are skipped. Errors are final: every later
 * feed returns the same code, and ms_torctl_reason() says what happened.
 *   MS_EUNAUTHORIZED  authentication refused (515, 514), or no method this
 *                     client can use with what it was given.
 *   MS_EPROXY         tor refused a command (another 4xx/5xx reply: 512
 *                     bad argument, 550 key in use, 552 unknown service).
 *   MS_EFRAME         not a control-protocol reply (no 3-digit code, a line
 *                     longer than MS_TORCTL_LINE_MAX, a malformed ServiceID
 *                     or PrivateKey, a 250 ADD_ONION without ServiceID).
 *   MS_EHANGUP        tor closed the connection before the exchange ended.
 */
#ifndef MS_TORCTL_H
#define MS_TORCTL_H

#include <stddef.h>
#include <stdint.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_TORCTL_LINE_MAX 4096
#define MS_TORCTL_COOKIE_LEN 32
#define MS_TORCTL_SERVICE_ID_LEN 56 /* v3: base32 of key ‖ checksum ‖ version */
#define MS_TORCTL_KEY_PREFIX "ED25519-V3:"
/* "ED25519-V3:" + base64 (padded) of the 64-byte expanded secret key. */
#define MS_TORCTL_KEY_LEN (11 + 88)
#define MS_TORCTL_TARGET_MAX 300
#define MS_TORCTL_PASSWORD_MAX 255
#define MS_TORCTL_PATH_MAX 1024
#define MS_TORCTL_OUT_MAX 1024
#define MS_TORCTL_REASON_LEN 256

/* Authentication methods named in PROTOCOLINFO (bits). */
enum {
  MS_TORCTL_METHOD_NULL = 1,
  MS_TORCTL_METHOD_HASHEDPASSWORD = 2,
  MS_TORCTL_METHOD_COOKIE = 4,
  MS_TORCTL_METHOD_SAFECOOKIE = 8
};

typedef enum {
  MS_TORCTL_SEND_PROTOCOLINFO = 1,
  MS_TORCTL_WAIT_PROTOCOLINFO,
  MS_TORCTL_WANT_COOKIE, /* next: ms_torctl_set_cookie */
  MS_TORCTL_SEND_AUTH,
  MS_TORCTL_WAIT_AUTH,
  MS_TORCTL_SEND_ADD,
  MS_TORCTL_WAIT_ADD,
  MS_TORCTL_PUBLISHED_STAGE, /* next (eventually): ms_torctl_delete */
  MS_TORCTL_SEND_DEL,
  MS_TORCTL_WAIT_DEL,
  MS_TORCTL_DELETED_STAGE,
  MS_TORCTL_FAILED
} ms_torctl_stage_t;

/* Results of ms_torctl_feed (errors are negative). */
enum {
  MS_TORCTL_NEED_MORE = 0,   /* all input consumed, no reply completed */
  MS_TORCTL_SEND = 1,        /* a reply ended: ms_torctl_output has the next command */
  MS_TORCTL_NEED_COOKIE = 2, /* read the cookie file, ms_torctl_set_cookie */
  MS_TORCTL_PUBLISHED = 3,   /* ADD_ONION succeeded: ms_torctl_service_id */
  MS_TORCTL_DELETED = 4      /* DEL_ONION succeeded */
};

/* Caller-owned state; treat the fields as private. */
typedef struct {
  ms_torctl_stage_t stage;
  int error;
  unsigned methods;
  int have_password;
  char password[MS_TORCTL_PASSWORD_MAX + 1]; /* wiped once sent */
  uint16_t virt_port;
  char target[MS_TORCTL_TARGET_MAX + 1];
  char key[MS_TORCTL_KEY_LEN + 1]; /* given key, "" for NEW */
  uint8_t cookie[MS_TORCTL_COOKIE_LEN];
  int have_cookie;
  char cookie_file[MS_TORCTL_PATH_MAX + 1];
  char service_id[MS_TORCTL_SERVICE_ID_LEN + 1];
  char private_key[MS_TORCTL_KEY_LEN + 1];
  int reply_code; /* of the reply being read, 0 between replies */
  int in_data;    /* inside a "+" data body */
  char line[MS_TORCTL_LINE_MAX];
  size_t line_len;
  char out[MS_TORCTL_OUT_MAX];
  size_t out_len;
  char reason[MS_TORCTL_REASON_LEN];
} ms_torctl_t;

/*
 * password: NULL for cookie (or NULL) authentication, else 1-255 bytes
 * without CR, LF or NUL. virt_port: the onion service's port, 1-65535.
 * target: where tor forwards, "127.0.0.1:8008" (HOST:PORT or a port; no
 * space or control character, at most MS_TORCTL_TARGET_MAX bytes). key:
 * NULL for a new key (tor returns it: ms_torctl_private_key), else a saved
 * "ED25519-V3:<base64>" (ms_torctl_check_key). 0, or MS_EINVAL (state
 * FAILED, reason set).
 */
MS_WUR int ms_torctl_init(ms_torctl_t *t, const char *password,
                          uint16_t virt_port, const char *target,
                          const char *key);

/* The next command in a SEND stage (moves to its WAIT stage), its length;
 * 0 and *out NULL otherwise. The bytes stay valid until the next
 * ms_torctl_output or ms_torctl_wipe. */
size_t ms_torctl_output(ms_torctl_t *t, const uint8_t **out);

/* Parse tor's bytes in[0, len). Stops at the end of each reply that moves
 * the exchange on (*consumed, always set, says where). Returns one of the
 * results above or the final error. MS_EINVAL (not final) when called in a
 * SEND stage or while waiting for the cookie; bytes fed while PUBLISHED
 * (events) are consumed and ignored. */
MS_WUR int ms_torctl_feed(ms_torctl_t *t, const uint8_t *in, size_t len,
                          size_t *consumed);

/* The cookie (exactly 32 bytes) in the WANT_COOKIE stage: 0 (stage
 * SEND_AUTH), or MS_EINVAL (wrong length: final; wrong stage: not). */
MS_WUR int ms_torctl_set_cookie(ms_torctl_t *t, const uint8_t *cookie,
                                size_t len);
/* The cookie file tor named in PROTOCOLINFO ("" if none). */
const char *ms_torctl_cookie_file(const ms_torctl_t *t);
/* The methods tor offered (MS_TORCTL_METHOD_* bits). */
unsigned ms_torctl_methods(const ms_torctl_t *t);

/* After PUBLISHED: queue DEL_ONION (stage SEND_DEL). 0 or MS_EINVAL. */
MS_WUR int ms_torctl_delete(ms_torctl_t *t);

/* tor closed the connection: 0 once DELETED, the final error if failed,
 * else fails now with MS_EHANGUP. */
MS_WUR int ms_torctl_eof(ms_torctl_t *t);

ms_torctl_stage_t ms_torctl_stage(const ms_torctl_t *t);
int ms_torctl_error(const ms_torctl_t *t);
const char *ms_torctl_reason(const ms_torctl_t *t);
/* After PUBLISHED: the 56-character service id (without ".onion"), and the
 * new key tor generated ("" when a key was given). */
const char *ms_torctl_service_id(const ms_torctl_t *t);
const char *ms_torctl_private_key(const ms_torctl_t *t);

/* 1 if s[0, len) is a well-formed "ED25519-V3:<88 base64 chars>" key. */
int ms_torctl_check_key(const char *s, size_t len);
/* 1 if s[0, len) is 56 characters of lowercase base32 (a-z, 2-7). */
int ms_torctl_check_service_id(const char *s, size_t len);

/* Wipe the whole state (password, cookie, key). */
void ms_torctl_wipe(ms_torctl_t *t);

#ifdef __cplusplus
}
#endif
#endif /* MS_TORCTL_H */
