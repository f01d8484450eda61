/*
 * multiserver — plain HTTP beside WebSocket on the same port.
 *
 * A `ws://` or `wss://` listener answers WebSocket upgrade requests itself.
 * Any other request (one without "Upgrade: websocket") goes to the HTTP
 * handler set here, so a server can deliver the web page that connects back
 * to it; without a handler such a request gets 400.
 *
 * The handler is per multiserver (not per listen call) because a callback is
 * no string, and per-stack options are strings: one handler serves every ws
 * and wss listener of the multiserver (the CLI's `serve --http-root DIR`
 * uses this API).
 *
 * One request per connection: the answer carries "Connection: close" and
 * the connection closes once it is written. Only the request head is read
 * (a request with a body is refused with 400 before the handler runs).
 */
#ifndef MULTISERVER_WS_H
#define MULTISERVER_WS_H

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_http_request_s ms_http_request_t;

/* Called on the loop for each plain HTTP request. Answer it exactly once
 * with ms_http_respond(), inside the call or later; until then the request
 * and the strings its accessors return stay valid. */
typedef void (*ms_http_handler_fn)(ms_http_request_t *req, void *arg);

/* Set (or with cb NULL remove) the handler of every ws/wss listener of ms.
 * MS_EINVAL for a NULL ms, MS_EPROTO_UNKNOWN if ms has no ws protocol. */
MS_EXTERN int ms_ws_set_http_handler(ms_t *ms, ms_http_handler_fn cb,
                                     void *arg);

/* Accessors: strings owned by req, valid until ms_http_respond(); never
 * NULL except ms_http_request_header's miss. */
/* "GET", "HEAD", ... */
MS_EXTERN const char *ms_http_request_method(const ms_http_request_t *req);
/* The request-target as sent ("/index.html?x=1"). */
MS_EXTERN const char *ms_http_request_target(const ms_http_request_t *req);
/* The target up to '?' ("/index.html"), not percent-decoded. */
MS_EXTERN const char *ms_http_request_path(const ms_http_request_t *req);
/* The first header of that name (case-insensitive), or NULL. */
MS_EXTERN const char *ms_http_request_header(const ms_http_request_t *req,
                                             const char *name);
/* The peer, as a transport section ("net:127.0.0.1:50123"). */
MS_EXTERN const char *ms_http_request_peer(const ms_http_request_t *req);

/* Answer with status (200, 403, 404, 405, 500, ...), a Content-Type
 * (NULL: none) and a body of len bytes (copied; NULL when len is 0). For a
 * HEAD request the body is not sent (its Content-Length is). Frees req:
 * do not use it after this call, whatever it returns. MS_EINVAL (status
 * outside 200-599, a content type with control bytes), MS_ENOMEM, or the
 * connection's write error (the connection is closed then). Nothing is
 * called back from inside this call. */
MS_EXTERN int ms_http_respond(ms_http_request_t *req, int status,
                              const char *content_type, const void *body,
                              size_t len);

#ifdef __cplusplus
}
#endif
#endif /* MULTISERVER_WS_H */
