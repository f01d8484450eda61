/*
 * HTTP/1.1 for the WebSocket opening handshake (RFC 6455 §4, message syntax
 * of RFC 9112), I/O-free: an incremental parser for one request head
 * (server side) or one response head (client side), header helpers, and
 * builders/checkers for the upgrade messages.
 *
 * Parser contract. Feed bytes as they arrive; the parser copies the head
 * into a caller-owned buffer whose size is the head-size limit, and records
 * up to max_headers header fields in a caller-owned array. It answers:
 *   MS_HTTP_NEED_MORE (0)  everything given was consumed, the head is not
 *                          finished;
 *   MS_HTTP_DONE (1)       the head ended inside this input; *consumed is
 *                          the offset just past its final CRLF CRLF, and
 *                          in[*consumed..len) belongs to the next layer (the
 *                          first WebSocket frames): hand it on;
 *   negative               MS_EFRAME (malformed: answer 400) or MS_ELIMIT
 *                          (head larger than the buffer, or more header
 *                          fields than the array: answer 431). Final.
 *                          ms_http_error_reason() says why and
 *                          ms_http_error_status() gives the status to send.
 * Only heads are parsed: a body is never read (an upgrade request carrying
 * one is refused by ms_ws_upgrade_evaluate).
 *
 * Strictness (a deliberate policy: the peer is a WebSocket endpoint, not a
 * browser-era web server):
 *  - lines end in CRLF only: a bare LF, or a CR not followed by LF, is
 *    rejected (MS_EFRAME), as are empty lines before the start line;
 *  - request line: token SP request-target SP "HTTP/1.1", exactly single
 *    spaces; the target is visible ASCII (0x21-0x7e);
 *  - status line: "HTTP/1.1" SP 3DIGIT [SP reason]; the reason may hold
 *    SP, HTAB, visible ASCII and obs-text;
 *  - header field: token ":" OWS value OWS; no whitespace before the colon,
 *    no obs-fold (a line starting with SP/HTAB), no empty names; a value
 *    holds HTAB, SP, visible ASCII and obs-text (0x80-0xff), no other
 *    control bytes (NUL included). Leading/trailing OWS is trimmed;
 *  - only HTTP/1.1 is accepted (WebSocket needs it, RFC 6455 §4.1).
 *
 * The parsed pieces point into the caller's buffer, which the parser
 * modifies in place: every piece (method, target, reason, header names and
 * values) is also NUL-terminated there. They stay valid while that buffer
 * lives and the parser is not re-initialised.
 *
 * Field names are matched case-insensitively (ASCII) by every helper here.
 */
#ifndef MS_HTTP1_H
#define MS_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_HTTP_NEED_MORE 0
#define MS_HTTP_DONE 1

#define MS_HTTP_DEFAULT_MAX_HEAD 8192  /* a suggested buffer size */
#define MS_HTTP_DEFAULT_MAX_HEADERS 64 /* a suggested array size */

/* The WebSocket handshake values (RFC 6455 §1.3, §4.1). */
#define MS_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MS_WS_KEY_NONCEBYTES 16 /* random bytes behind Sec-WebSocket-Key */
#define MS_WS_KEY_LEN 24        /* base64 of 16 bytes, with "==" */
#define MS_WS_ACCEPT_LEN 28     /* base64 of a 20-byte SHA-1 */

typedef enum {
  MS_HTTP_REQUEST = 1, /* server side: parse a request head */
  MS_HTTP_RESPONSE = 2 /* client side: parse a response head */
} ms_http_kind_t;

/* One header field. name/value are NUL-terminated at *_len. */
typedef struct {
  const char *name;
  size_t name_len;
  const char *value; /* OWS-trimmed; may be empty */
  size_t value_len;
} ms_http_header_t;

/* A parsed head; read-only for the caller. Request fields are NULL/0 in a
 * response and the other way round. */
typedef struct {
  ms_http_kind_t kind;
  const char *method;   /* request */
  size_t method_len;
  const char *target;   /* request: the request-target as sent */
  size_t target_len;
  int status;           /* response: 100..999 */
  const char *reason;   /* response: reason phrase, may be empty */
  size_t reason_len;
  const ms_http_header_t *headers; /* in arrival order */
  size_t nheaders;
  size_t head_len;      /* bytes of the head, final CRLF CRLF included */
} ms_http_msg_t;

/* Caller-embedded state; treat the fields as private. */
typedef struct {
  ms_http_msg_t msg;
  char *buf;            /* caller's: the head is stored here */
  size_t cap;           /* head-size limit */
  size_t len;           /* bytes stored */
  size_t line;          /* start of the current line in buf */
  ms_http_header_t *hdrs; /* caller's array */
  size_t max_headers;
  int state;            /* start line, headers, done, failed */
  int err;
  int err_status;       /* 400 or 431 */
  const char *reason;
} ms_http_parser_t;

/* Prepare p to parse one head of the given kind. buf (cap bytes; cap is
 * the head-size limit, e.g. MS_HTTP_DEFAULT_MAX_HEAD) and headers
 * (max_headers entries) are the caller's and must outlive every use of
 * the parsed message. Returns 0 or MS_EINVAL (bad kind, NULL buf, cap < 16,
 * NULL headers with max_headers > 0). */
MS_WUR int ms_http_parser_init(ms_http_parser_t *p, ms_http_kind_t kind,
                               char *buf, size_t cap,
                               ms_http_header_t *headers, size_t max_headers);

/* Feed in[0..len) (in may be NULL when len == 0). Returns MS_HTTP_NEED_MORE,
 * MS_HTTP_DONE or a final error as described at the top; *consumed is
 * always set (bytes of in taken into the head). After MS_HTTP_DONE, further
 * calls return MS_HTTP_DONE and consume nothing. */
MS_WUR int ms_http_parse(ms_http_parser_t *p, const uint8_t *in, size_t len,
                         size_t *consumed);

/* The parsed head once ms_http_parse returned MS_HTTP_DONE, else NULL. */
const ms_http_msg_t *ms_http_message(const ms_http_parser_t *p);
/* Static reason of the final error, NULL if none. */
const char *ms_http_error_reason(const ms_http_parser_t *p);
/* Status a server sends for the final error: 400 (malformed) or 431 (too
 * large / too many fields); 0 if there was no error. */
int ms_http_error_status(const ms_http_parser_t *p);

/* ------------------------------------------------------------------ */
/* Header helpers                                                      */
/* ------------------------------------------------------------------ */

/* First field named name (ASCII case-insensitive), or NULL. */
const ms_http_header_t *ms_http_header_find(const ms_http_msg_t *m,
                                            const char *name);
/* How many fields are named name. */
size_t ms_http_header_count(const ms_http_msg_t *m, const char *name);

/* Iterator over the elements of a comma-separated list (RFC 9110 §5.6.1):
 * elements are OWS-trimmed and empty ones are skipped. Set *pos = 0 first;
 * each call yields the next element in *elem / *elem_len and returns true,
 * or returns false at the end. Works on any bytes (list not modified). */
bool ms_http_list_next(const char *list, size_t len, size_t *pos,
                       const char **elem, size_t *elem_len);
/* True when the list holds token (ASCII case-insensitive), e.g.
 * ms_http_list_has("keep-alive, Upgrade", n, "upgrade"). */
bool ms_http_list_has(const char *list, size_t len, const char *token);
/* True when any field named name holds token in its list (several fields
 * of one name form one list, RFC 9110 §5.3). */
bool ms_http_header_has_token(const ms_http_msg_t *m, const char *name,
                              const char *token);
/* True when s[0..len) is a non-empty token (RFC 9110 §5.6.2 tchar). */
bool ms_http_is_token(const char *s, size_t len);

/* Status lines for the codes this module builds ("Switching Protocols"),
 * or NULL for others. */
const char *ms_http_status_text(int status);

/* ------------------------------------------------------------------ */
/* WebSocket handshake                                                 */
/* ------------------------------------------------------------------ */

/* True when key[0..len) is a valid Sec-WebSocket-Key: exactly 24 base64
 * characters (standard alphabet) ending in "==" that decode to 16 bytes,
 * in canonical form (the unused low bits of the last character are zero). */
bool ms_ws_key_valid(const char *key, size_t len);
/* Encode the caller's 16 random bytes as a Sec-WebSocket-Key (24 chars +
 * NUL). The caller supplies fresh randomness (e.g. randombytes_buf) for
 * every connection (RFC 6455 §4.1). */
void ms_ws_key_encode(const uint8_t nonce[MS_WS_KEY_NONCEBYTES],
                      char out[MS_WS_KEY_LEN + 1]);
/* Sec-WebSocket-Accept for key: base64(SHA-1(key ‖ MS_WS_GUID)), 28 chars
 * + NUL. The key is used as given (not validated: call ms_ws_key_valid).
 * Returns 0, or MS_EINVAL when key is NULL. */
MS_WUR int ms_ws_accept(const char *key, size_t key_len,
                        char out[MS_WS_ACCEPT_LEN + 1]);

/* What ms_ws_upgrade_evaluate found; pointers into the message (lengths
 * given, also NUL-terminated unless said otherwise). */
typedef struct {
  const char *target;  /* the request-target */
  size_t target_len;
  const char *path;    /* target up to '?' (NOT NUL-terminated) */
  size_t path_len;
  const char *query;   /* after '?', NULL if none */
  size_t query_len;
  const char *host;    /* Host value, NULL if absent */
  size_t host_len;
  const char *origin;  /* Origin value, NULL if absent */
  size_t origin_len;
  const char *key;     /* Sec-WebSocket-Key, NULL if absent */
  size_t key_len;
  size_t protocols;    /* number of subprotocols offered (see
                          ms_ws_upgrade_protocol / ms_ws_select_protocol) */
  const char *reason;  /* static reason when the verdict is not 101 */
} ms_ws_upgrade_t;

/*
 * Decide the answer to an upgrade request (RFC 6455 §4.2.1-§4.2.2). Checks,
 * in order, giving the first failure:
 *   method GET                                      else 400
 *   origin-form target ("/..."; absolute-form is refused)  else 400
 *   path (target before '?') == served_path, byte for byte; served_path
 *     NULL accepts any path                         else 404
 *   exactly one Host                                else 400
 *   no Transfer-Encoding, Content-Length absent or 0  else 400
 *   Upgrade lists "websocket", Connection lists "upgrade"  else 400
 *   exactly one Sec-WebSocket-Version               else 400
 *   ... equal to "13"                               else 426
 *   exactly one Sec-WebSocket-Key, valid            else 400
 *   every Sec-WebSocket-Protocol element a token    else 400
 * Returns 101, 400, 404 or 426 (info filled as far as parsed, with
 * info->reason set when not 101), or MS_EINVAL for a NULL argument or a
 * message that is not a request. Origin is reported, not checked: the
 * caller decides whom to serve (answer 403 itself if it refuses one).
 * Sec-WebSocket-Extensions is ignored: no extension is ever accepted.
 */
MS_WUR int ms_ws_upgrade_evaluate(const ms_http_msg_t *req,
                                  const char *served_path,
                                  ms_ws_upgrade_t *info);
/* The index-th offered subprotocol (in the client's order of preference,
 * across all Sec-WebSocket-Protocol fields), or false past the end. */
bool ms_ws_upgrade_protocol(const ms_http_msg_t *req, size_t index,
                            const char **proto, size_t *proto_len);
/* Pick the first subprotocol, in the client's order, that is in
 * supported[0..n) (exact, case-sensitive match, RFC 6455 §4.1). Returns
 * its index in supported, or -1 if none matches (then send no
 * Sec-WebSocket-Protocol). */
int ms_ws_select_protocol(const ms_http_msg_t *req,
                          const char *const *supported, size_t n);

/* Build "HTTP/1.1 101 Switching Protocols" with Upgrade, Connection,
 * Sec-WebSocket-Accept (computed from key) and, if protocol is not NULL,
 * Sec-WebSocket-Protocol. Writes a NUL after it. Returns the length (NUL
 * excluded), MS_ELIMIT if cap is too small (256 is always enough with a
 * subprotocol under 100 bytes), MS_EINVAL for an invalid key or a protocol
 * that is not a token. */
MS_WUR int ms_ws_build_101(char *out, size_t cap, const char *key,
                           size_t key_len, const char *protocol);
/* Build a refusal: 400, 403, 404, 426 (with Upgrade: websocket and
 * Sec-WebSocket-Version: 13) or 431; all with Connection: close and
 * Content-Length: 0. Writes a NUL. Returns the length, MS_ELIMIT (cap too
 * small; 192 is always enough) or MS_EINVAL (another status). */
MS_WUR int ms_http_build_error(char *out, size_t cap, int status);

/* Client request options. Strings are NUL-terminated; optional ones NULL. */
typedef struct {
  const char *host;      /* DNS name, IPv4, or IPv6 literal with or
                            without brackets; an IPv6 zone ("%eth0") is
                            dropped from the Host header */
  uint16_t port;         /* omitted from Host when it is the default;
                            0 means the default */
  bool secure;           /* wss: default port 443, else 80 */
  const char *path;      /* origin-form target with optional query;
                            NULL means "/" */
  const char *key;       /* from ms_ws_key_encode, fresh per connection */
  const char *origin;    /* Origin header, or NULL */
  const char *protocols; /* Sec-WebSocket-Protocol list ("a, b"), or NULL */
} ms_ws_client_request_t;

/* Build the client's GET upgrade request (RFC 6455 §4.1) with Host,
 * Upgrade, Connection, Sec-WebSocket-Key, Sec-WebSocket-Version: 13 and
 * the optional Origin and Sec-WebSocket-Protocol. Writes a NUL. Returns
 * the length, MS_ELIMIT (cap too small), MS_EINVAL (key invalid, path not
 * starting with '/' or holding bytes outside 0x21-0x7e, host empty or
 * holding bytes unfit for a Host header, origin with control bytes,
 * protocols not a list of tokens). */
MS_WUR int ms_ws_build_request(char *out, size_t cap,
                               const ms_ws_client_request_t *req);

/* Check the server's answer to our request (RFC 6455 §4.1, client steps
 * 1-6): status 101, Upgrade lists "websocket", Connection lists "upgrade",
 * exactly one Sec-WebSocket-Accept equal to ms_ws_accept(key), no
 * Sec-WebSocket-Extensions (we offer none), and at most one
 * Sec-WebSocket-Protocol which must be a single element of the list we
 * offered (offered may be NULL: then none may come). *protocol (if not
 * NULL) gets the chosen subprotocol (NUL-terminated, in the message) or
 * NULL. Returns 0, MS_EHANDSHAKE with *reason (if not NULL) set to a
 * static explanation, or MS_EINVAL for NULL/invalid arguments. */
MS_WUR int ms_ws_check_response(const ms_http_msg_t *resp, const char *key,
                                const char *offered, const char **protocol,
                                const char **reason);

#ifdef __cplusplus
}
#endif
#endif /* MS_HTTP1_H */
