/*
 * multiserver — the interface protocols plug into. The built-in transports
 * (net, unix) and transforms (noauth, shs, gzip) are written against this header
 * (and multiserver_uv.h for libuv handles) only; so can yours (ms_register).
 *
 *  - A *stream implementation* fills an ms_stream_ops_t and creates streams
 *    with ms_stream_new(). The base stream (core/stream.c) owns the write
 *    queue accounting, backpressure, shutdown ordering, push-back, flush
 *    scheduling and the close protocol; the implementation only moves bytes.
 *  - A *transport* listens and dials: it produces streams. It may be
 *    client-only (no listen hook).
 *  - A *transform* wraps a stream and produces a new stream over it. It may
 *    ask the application's authorize hook about the peer (ms_pwrap_authorize).
 *
 * Lifetimes: pointers passed to a hook (sections, option values) are valid
 * during the call only unless stated; strings returned by accessors are
 * owned by the object and valid until it is freed or the value is replaced.
 */
#ifndef MULTISERVER_PLUGIN_H
#define MULTISERVER_PLUGIN_H

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the structs a plugin fills (ms_protocol_t, ms_stream_ops_t).
 * Set their `size` field to sizeof the struct: the library accepts structs
 * from older headers (missing trailing hooks read as NULL) and refuses ones
 * larger than it knows (MS_EINVAL). */

/* ------------------------------------------------------------------ */
/* Deferred calls                                                      */
/* ------------------------------------------------------------------ */

/* A call to run on a later turn of the loop, embedded in the caller's own
 * object so that deferring never allocates and cannot fail. Treat the
 * fields as private. */
typedef struct ms_defer_s ms_defer_t;
struct ms_defer_s {
  void (*fn)(void *arg);
  void *arg;
  ms_defer_t *next;
  bool queued;
};

/* Run fn(arg) on a later loop turn (loop thread only). The node must stay
 * valid until fn runs or ms_defer_cancel(); deferring a queued node again
 * does nothing. A pending deferred call keeps ms_run() going. */
MS_EXTERN void ms_defer(ms_t *ms, ms_defer_t *node, void (*fn)(void *arg),
                        void *arg);
/* Unqueue node: its fn will not run (no-op if it is not queued). */
MS_EXTERN void ms_defer_cancel(ms_t *ms, ms_defer_t *node);

/* Live count: a plugin that keeps libuv handles (or anything that calls back
 * later) beyond the streams, listeners and dials it was given holds a
 * reference while they live. ms_close() waits for the count to reach zero;
 * ms_delete() waits for it too, running the loop. */
MS_EXTERN void ms_ref(ms_t *ms);
MS_EXTERN void ms_unref(ms_t *ms);
/* Everything alive: streams, listeners, connects, authorize requests not
 * yet answered, and plugin references. */
MS_EXTERN size_t ms_live(const ms_t *ms);

/* The loop-wide read buffer: bytes read into it must be handed on
 * synchronously (ms_stream_emit_read) before returning to the loop. Using it
 * keeps idle connections free of read buffers. Never NULL for a live ms;
 * owned by ms, valid until ms_delete(). *len gets its size. */
MS_EXTERN uint8_t *ms_read_slab(ms_t *ms, size_t *len);

/* ------------------------------------------------------------------ */
/* Stream implementations                                              */
/* ------------------------------------------------------------------ */

typedef struct ms_write_req_s ms_write_req_t;

typedef struct {
  /* sizeof(ms_stream_ops_t) as the plugin was compiled; 0 is read as the
   * first published layout (the five hooks write..close). */
  size_t size;
  /* Queue bufs for writing (copying or referencing them; referenced buffers
   * stay valid until the request is completed). Complete the request with
   * ms_write_req_done() exactly once, possibly from inside write(). A
   * non-zero return means the request was not taken (and is not completed). */
  int (*write)(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
               unsigned nbufs);
  /* Begin/stop delivering bytes with ms_stream_emit_read(). Bytes emitted
   * from inside read_start() are held back by the base and delivered on a
   * later turn, so the reader is never called inside ms_stream_read_start. */
  int (*read_start)(ms_stream_t *s);
  int (*read_stop)(ms_stream_t *s);
  /* End the write side. Called by the base only once every earlier write has
   * completed. Report with ms_stream_shutdown_done(). A stream without
   * MS_CAP_HALF_CLOSE may end its whole session here or return MS_ENOTSUP. */
  int (*shutdown)(ms_stream_t *s);
  /* Tear down: complete any pending write requests (MS_ECANCELED), then call
   * ms_stream_closed() once nothing of the implementation can call back any
   * more (now or later). */
  void (*close)(ms_stream_t *s);
  /* Optional. Called once at the end of a loop turn in which
   * ms_stream_want_flush(s) was called: put what the turn's writes queued
   * into as few lower writes as possible (the cork). */
  void (*flush)(ms_stream_t *s);
} ms_stream_ops_t;

/* A new stream bound to ms's loop. address is copied (may be NULL). Its
 * capabilities start as MS_CAP_HALF_CLOSE | MS_CAP_RELIABLE | MS_CAP_ORDERED.
 * NULL on ENOMEM or an ops struct larger than this library knows. */
MS_EXTERN ms_stream_t *ms_stream_new(ms_t *ms, const ms_stream_ops_t *ops,
                                     void *impl, const char *address);
/* The impl pointer given to ms_stream_new, and the stream's multiserver. */
MS_EXTERN void *ms_stream_impl(const ms_stream_t *s);
MS_EXTERN ms_t *ms_stream_ms(const ms_stream_t *s);
/* Metadata. Addresses are printed (escaped) text: a transport's stream is
 * its own section for the peer (net: the remote IP and port), a transform
 * appends "~" and its section. A transform's new stream inherits from the
 * stream below what it does not set itself: the remote identity, the
 * authorize value, the server flag and every metadata entry. */
/* Replace the address (copied; NULL clears). 0, or MS_ENOMEM (the old one
 * is kept). */
MS_EXTERN MS_WUR int ms_stream_set_address(ms_stream_t *s, const char *address);
/* Shorthand for ms_stream_set_remote_id(s, "ed25519", pk, 32); pk NULL
 * clears the identity. */
MS_EXTERN void ms_stream_set_remote_key(ms_stream_t *s,
                                        const uint8_t pk[MS_PUBLICKEYBYTES]);
/* The peer's identity as this layer established it: kind names the scheme
 * ("ed25519", "x509-sha256", "unix-uid"), id its bytes (copied, at most
 * MS_REMOTE_ID_MAX). id NULL clears. MS_EINVAL, MS_ENOMEM. */
#define MS_REMOTE_ID_MAX 1024
MS_EXTERN MS_WUR int ms_stream_set_remote_id(ms_stream_t *s, const char *kind,
                                             const void *id, size_t len);
/* Key/value metadata any layer sets ("ws.origin", "unix.peer_uid",
 * "tls.peer_cert"; by convention "<protocol>.<name>", and "host"/"port" for
 * the host and port a transport dialed, as written in the address). The
 * value is copied (binary allowed; a NUL is appended); NULL removes the key.
 * MS_EINVAL, MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_stream_set_meta(ms_stream_t *s, const char *key,
                                        const void *value, size_t len);
/* Convenience: a NUL-terminated string value. */
MS_EXTERN MS_WUR int ms_stream_set_meta_str(ms_stream_t *s, const char *key,
                                            const char *value);
/* Set what ms_stream_auth() returns (normally the value the server's
 * authorize hook attached; never freed by the base). */
MS_EXTERN void ms_stream_set_auth(ms_stream_t *s, void *auth);
/* Whether this end accepted (true) or dialed (false) the connection; set
 * by transports before handing the stream over (ms_stream_is_server()). */
MS_EXTERN void ms_stream_set_server(ms_stream_t *s, bool is_server);
/* Replace the stream's capabilities (MS_CAP_*, see below); a transform
 * usually copies its lower stream's and clears what it cannot keep. */
MS_EXTERN void ms_stream_set_caps(ms_stream_t *s, unsigned caps);
/* State the implementation may consult. */
MS_EXTERN bool ms_stream_is_reading(const ms_stream_t *s);
MS_EXTERN bool ms_stream_is_closing(const ms_stream_t *s);

/* Deliver data (status 0), MS_EOF, or an error to the reader. Ignored once
 * the stream is closing; it does not check ms_stream_is_reading(): deliver
 * only while reading (the reader may stop inside this call). The bytes must
 * be writable and are valid only during the call: a transform above may
 * decrypt them in place (so a reader that needs them later copies them).
 * Complete a write request as soon as its bytes are handed on, not when the
 * peer reads them: a reader may stop reading (shs does after a handshake
 * message or a goodbye) and must not stall the writer's close. */
MS_EXTERN void ms_stream_emit_read(ms_stream_t *s, int status, uint8_t *data,
                                   size_t len);
/* Push back bytes read past a prefix (a SOCKS5 reply, an HTTP upgrade, the
 * end of a handshake): they are delivered to s's reader before anything the
 * implementation emits, on a later turn once s is reading. Copied; pushed
 * back in front of bytes pushed back earlier and not yet delivered. Usually
 * called on a lower stream from inside its read callback, after
 * ms_stream_read_stop(). MS_EINVAL, MS_ECLOSED, MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_stream_unread(ms_stream_t *s, const void *data,
                                      size_t len);
/* Ask for ops->flush(s) at the end of this loop turn (once however often it
 * is asked). No-op for implementations without a flush hook. */
MS_EXTERN void ms_stream_want_flush(ms_stream_t *s);

/* Complete a write request (0 or an error) exactly once; req is invalid
 * after. Completed inside ops->write, the application's write callback is
 * still deferred to a later turn (never inside ms_stream_write). */
MS_EXTERN void ms_write_req_done(ms_write_req_t *req, int status);
/* Bytes a write request carries (sum of its buffers). */
MS_EXTERN size_t ms_write_req_size(const ms_write_req_t *req);
/* Scratch space of MS_WRITE_REQ_SCRATCH bytes (pointer-aligned) that the
 * implementation may use until it completes the request: requests are pooled,
 * so keeping per-write state here costs no allocation. */
#define MS_WRITE_REQ_SCRATCH 256
MS_EXTERN void *ms_write_req_scratch(ms_write_req_t *req);
/* Report the outcome of ops->shutdown once (later calls are ignored); from
 * inside ops->shutdown the shutdown callback is deferred to a later turn. */
MS_EXTERN void ms_stream_shutdown_done(ms_stream_t *s, int status);
/* Report that ops->close finished: nothing of the implementation calls back
 * any more. The base then fires the close callback (never inside
 * ms_stream_close) and frees s; later calls are ignored until then. */
MS_EXTERN void ms_stream_closed(ms_stream_t *s);

/* ------------------------------------------------------------------ */
/* Protocols                                                           */
/* ------------------------------------------------------------------ */

enum { MS_PROTO_TRANSPORT = 1, MS_PROTO_TRANSFORM = 2 };
enum { MS_ROLE_CLIENT = 0, MS_ROLE_SERVER = 1 };

/* How far a transport section reaches: the scope decides where noauth is
 * allowed (docs/architecture.md) and, later, which addresses a listener
 * advertises to whom. A host *name* never counts as loopback. */
enum {
  MS_SCOPE_DEVICE = 1,   /* never leaves this machine, peer checkable (unix) */
  MS_SCOPE_LOOPBACK = 2, /* loopback IP: this machine, but any local user */
  MS_SCOPE_LOCAL = 3,    /* private networks */
  MS_SCOPE_PUBLIC = 4    /* anything else, and the default */
};

/* Failure classes, for ms_connect's fallback over ;-alternatives. */
enum {
  MS_FAIL_DEFAULT = 0, /* classify by code: ms_error_class() */
  MS_FAIL_PATH = 1,    /* this path failed: try the next alternative */
  MS_FAIL_AUTH = 2     /* the peer is not who we want, or refused us: stop */
};
/* The default class of a code: MS_EHANDSHAKE, MS_EUNAUTHORIZED and MS_EKEY
 * are MS_FAIL_AUTH, everything else (resets, timeouts, EOF in a handshake,
 * refused connections) MS_FAIL_PATH. */
MS_EXTERN int ms_error_class(int status);

typedef struct ms_plisten_s ms_plisten_t; /* one listening transport section */
typedef struct ms_pdial_s ms_pdial_t;     /* one outgoing transport dial */
typedef struct ms_pwrap_s ms_pwrap_t;     /* one transform being applied */

typedef struct {
  /* sizeof(ms_protocol_t) as the plugin was compiled; 0 is read as the first
   * published layout (name .. advertise). */
  size_t size;
  const char *name; /* the section name in addresses: "net", "shs" */
  int kind;         /* MS_PROTO_TRANSPORT or MS_PROTO_TRANSFORM */

  /* Check a section's fields for a role (listen = server, dial = client).
   * Return 0, or MS_EADDRESS / MS_EKEY with a reason. NULL accepts all.
   * pdata is the protocol's instance (see init), or NULL when checked
   * without a multiserver (ms_address_check). */
  int (*validate)(const ms_section_t *sec, int role, void *pdata,
                  char *reason, size_t reason_len);
  /* Transports: does this section stay on this machine? Superseded by
   * scope (which wins when both are set); true means MS_SCOPE_DEVICE. */
  bool (*is_device)(const ms_section_t *sec, void *pdata);

  /* Transports. listen(): start listening, set the advertised section with
   * ms_plisten_set_address(), hand connections to ms_plisten_incoming(); on
   * failure return the error after ms_plisten_error(pl, rc, reason), whose
   * reason then becomes ms_listen()'s. listen_close(): stop, then call
   * ms_plisten_closed() (now or later). Both NULL: a client-only transport
   * (ms_listen refuses it with MS_ESTACK). */
  int (*listen)(ms_plisten_t *pl, const ms_section_t *sec, void *pdata);
  void (*listen_close)(ms_plisten_t *pl);
  /* dial(): start connecting; finish with ms_pdial_done() (or
   * ms_pdial_fail()) exactly once, possibly from inside dial(); pd is
   * invalid after it. A non-zero return means done never fires.
   * dial_cancel(): make it finish soon with MS_ECANCELED. */
  int (*dial)(ms_pdial_t *pd, const ms_section_t *sec, void *pdata);
  void (*dial_cancel)(ms_pdial_t *pd);

  /* Transforms. wrap(): take ownership of lower and finish with
   * ms_pwrap_done() exactly once (possibly from inside wrap()), handing over
   * the new stream, or an error having closed lower. A non-zero return means
   * lower was not taken (the caller closes it) and done never fires.
   * wrap_cancel(): finish soon with MS_ECANCELED. */
  int (*wrap)(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
              int role, void *pdata);
  void (*wrap_cancel)(ms_pwrap_t *pw);
  /* Transforms: the section a listener advertises for a listen section
   * (e.g. "shs" → "shs:<own key>"); printed, escaped. NULL: as given. */
  size_t (*advertise)(ms_t *ms, const ms_section_t *sec, void *pdata,
                      char *buf, size_t size);

  /* ---- since 0.2 ---- */

  /* Per-multiserver instance: init() runs in ms_register() and its
   * *instance becomes the pdata every other hook receives (default: the
   * pdata given to ms_register). destroy() runs once when the multiserver
   * closes (ms_close or ms_delete), after every stream, listener and connect
   * has gone; handles it still holds keep ms alive through ms_ref(). This is
   * where a datagram transport opens and closes the socket it shares
   * between listening and dialing. */
  int (*init)(ms_t *ms, void *pdata, void **instance);
  void (*destroy)(ms_t *ms, void *instance);
  /* Transports: the scope of a section (MS_SCOPE_*). NULL: is_device, else
   * MS_SCOPE_PUBLIC. */
  int (*scope)(const ms_section_t *sec, void *pdata);
  /* The option keys this protocol understands (NULL-terminated), so that a
   * misspelt per-stack option is an error rather than ignored. NULL: any. */
  const char *const *option_keys;
} ms_protocol_t;

/* Register a protocol (proto must outlive ms). MS_EEXIST if the name is
 * taken, MS_EINVAL for NULL ms or proto, a closing ms, a malformed struct (a transport without dial, a
 * transform without wrap, a size larger than this library knows),
 * MS_ELIMIT when the registry is full, or what init() returned. */
MS_EXTERN MS_WUR int ms_register(ms_t *ms, const ms_protocol_t *proto,
                                 void *pdata);

/* Per-stack options (ms_listen_with / ms_connect_with) given for the
 * protocol of the section being served: the value of key, or NULL. Owned
 * by the listen, dial or wrap: valid as long as pl, pd or pw is. */
MS_EXTERN const char *ms_plisten_opt(const ms_plisten_t *pl, const char *key);
MS_EXTERN const char *ms_pdial_opt(const ms_pdial_t *pd, const char *key);
MS_EXTERN const char *ms_pwrap_opt(const ms_pwrap_t *pw, const char *key);

/* The multiserver a listen belongs to, and a pointer of the plugin's own
 * kept with it (set in listen(), read in listen_close(); never freed by the
 * library). The same pair exists for dials and wraps below. */
MS_EXTERN ms_t *ms_plisten_ms(const ms_plisten_t *pl);
MS_EXTERN void ms_plisten_set_impl(ms_plisten_t *pl, void *impl);
MS_EXTERN void *ms_plisten_impl(const ms_plisten_t *pl);
/* The printed transport section a client uses to reach this listener, e.g.
 * "net:127.0.0.1:41234" (escaped; copied). Call from listen(). 0, or
 * MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_plisten_set_address(ms_plisten_t *pl,
                                            const char *section);
/* Hand over an accepted stream (ownership passes). */
MS_EXTERN void ms_plisten_incoming(ms_plisten_t *pl, ms_stream_t *s);
/* A failure that is not fatal to the listener (e.g. accept failed): goes
 * to the application's listen error callback. Inside listen() it instead
 * sets the reason ms_listen() reports. reason is copied or used during the
 * call only. */
MS_EXTERN void ms_plisten_error(ms_plisten_t *pl, int status,
                                const char *reason);
/* Report that listen_close() finished (now or later); pl is invalid after. */
MS_EXTERN void ms_plisten_closed(ms_plisten_t *pl);

/* As ms_plisten_ms / _set_impl / _impl, for a dial. */
MS_EXTERN ms_t *ms_pdial_ms(const ms_pdial_t *pd);
MS_EXTERN void ms_pdial_set_impl(ms_pdial_t *pd, void *impl);
MS_EXTERN void *ms_pdial_impl(const ms_pdial_t *pd);
/* Finish a dial: status 0 with the stream (ownership passes), or an error
 * (default class) with a reason. */
MS_EXTERN void ms_pdial_done(ms_pdial_t *pd, int status, ms_stream_t *s,
                             const char *reason);
/* Finish a dial with an error of a given class (MS_FAIL_*). */
MS_EXTERN void ms_pdial_fail(ms_pdial_t *pd, int status, int fclass,
                             const char *reason);

/* As ms_plisten_ms / _set_impl / _impl, for a wrap. */
MS_EXTERN ms_t *ms_pwrap_ms(const ms_pwrap_t *pw);
MS_EXTERN void ms_pwrap_set_impl(ms_pwrap_t *pw, void *impl);
MS_EXTERN void *ms_pwrap_impl(const ms_pwrap_t *pw);
/* The stack around this transform: its sections in order (0 = the
 * transport, as written in the address: a dialed host name stays a name),
 * and which one this transform is. NULL past the end. */
MS_EXTERN size_t ms_pwrap_nsections(const ms_pwrap_t *pw);
MS_EXTERN size_t ms_pwrap_position(const ms_pwrap_t *pw);
MS_EXTERN const ms_section_t *ms_pwrap_section(const ms_pwrap_t *pw, size_t i);
/* The scope of the transport under this transform (MS_SCOPE_*). */
MS_EXTERN int ms_pwrap_scope(const ms_pwrap_t *pw);
/* true when that scope is MS_SCOPE_DEVICE. */
MS_EXTERN bool ms_pwrap_is_device(const ms_pwrap_t *pw);
/* Finish: status 0 with the new stream, or an error (default class) after
 * closing lower. An accepted authorize value (ms_pwrap_authorize) is
 * attached to the new stream, which then owns it. */
MS_EXTERN void ms_pwrap_done(ms_pwrap_t *pw, int status, ms_stream_t *s,
                             const char *reason);
/* Finish with an error of a given class (MS_FAIL_*), lower closed. */
MS_EXTERN void ms_pwrap_fail(ms_pwrap_t *pw, int status, int fclass,
                             const char *reason);

/* ---- authorization, a service any security transform calls ---- */

/* Outcome of ms_pwrap_authorize: accepted or not. Never called inside
 * ms_pwrap_authorize() or inside the application's ms_authorize_done(). */
typedef void (*ms_authorized_cb)(ms_pwrap_t *pw, bool accepted, void *arg);
/* Ask the application (ms_options_t.authorize) whether the peer whose
 * identity this transform verified may connect. kind/id are copied into the
 * request the application sees (ms_authorize_remote_id). cb fires exactly
 * once on a later turn, unless the wrap finishes or
 * ms_pwrap_authorize_cancel() is called first; without a hook it accepts.
 * An accepted value is kept by pw, attached to the stream ms_pwrap_done()
 * hands over, and given to authorize_free if the wrap fails instead. One
 * request at a time per wrap: MS_EEXIST; MS_EINVAL; MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_pwrap_authorize(ms_pwrap_t *pw, const char *kind,
                                        const void *id, size_t len,
                                        ms_authorized_cb cb, void *arg);
/* Withdraw a pending request (a timeout): cb will not fire; the
 * application's later answer is harmless (a value is freed). */
MS_EXTERN void ms_pwrap_authorize_cancel(ms_pwrap_t *pw);

/* ---- running transforms over a stream you have ---- */

/* Apply a ~-joined list of transforms ("tls", "shs:KEY~gzip") to lower, in
 * a role (MS_ROLE_CLIENT dials, MS_ROLE_SERVER answers), with per-stack
 * options (may be NULL; copied). Takes ownership of lower on success: cb
 * fires exactly once on a later turn with the top stream, or an error and a
 * reason (lower then closed). What a transport uses to nest a layer (wss
 * runs tls over its TCP stream), and what an application uses to put shs on
 * a socket it got elsewhere. The stream below counts as public scope (noauth
 * refused unless allow_remote_noauth). Errors before anything starts (lower
 * stays the caller's): MS_EINVAL, MS_EADDRESS, MS_EPROTO_UNKNOWN, MS_ESTACK,
 * a transform's validation error, MS_ECLOSED, MS_ENOMEM, with a reason (an
 * MS_ENOMEM starting the chain has closed lower already). req
 * (may be NULL) allows ms_wrap_cancel() until cb fires (then MS_ECANCELED). */
typedef struct ms_wrap_s ms_wrap_t;
typedef void (*ms_wrap_cb)(ms_stream_t *s, int status, const char *reason,
                           void *arg);
MS_EXTERN MS_WUR int ms_stream_wrap(ms_t *ms, ms_stream_t *lower,
                                    const char *transforms, int role,
                                    const ms_popts_t *opts, ms_wrap_cb cb,
                                    void *arg, ms_wrap_t **req, char *reason,
                                    size_t reason_len);
/* Cancel: cb fires later with MS_ECANCELED (or the outcome already
 * decided). NULL is ignored; not after cb fired. */
MS_EXTERN void ms_wrap_cancel(ms_wrap_t *req);

/* A registered protocol by name: 0 and its instance (the pdata its hooks
 * receive; may be NULL) in *instance (if not NULL), or MS_EPROTO_UNKNOWN.
 * How a protocol finds a sibling it cooperates with (wss shares ws's
 * instance; ws checks that "tls" is there before listening on wss).
 * MS_EINVAL for a NULL ms or name. */
MS_EXTERN int ms_protocol_find(const ms_t *ms, const char *name,
                               void **instance);

/* Options the multiserver was created with (for transforms), defaults
 * filled in. Owned by ms: valid until ms_delete(). */
MS_EXTERN const ms_options_t *ms_options(const ms_t *ms);

/* Format a one-line reason into buf (printf-style; truncates, always
 * NUL-terminates; buf may be NULL or len 0 to do nothing). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
MS_EXTERN void ms_reasonf(char *buf, size_t len, const char *fmt, ...);

/* Parse a decimal option value in [0, max]: 0 and *out, or MS_EINVAL. */
MS_EXTERN MS_WUR int ms_opt_uint(const char *value, uint64_t max,
                                 uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* MULTISERVER_PLUGIN_H */
