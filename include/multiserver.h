/*
 * multiserver — one interface that serves and connects over many protocol
 * stacks at once (net, unix, …, each optionally wrapped by transforms such as
 * shs). Public C API.
 *
 * Conventions (libuv style):
 *  - every function returns 0 (or a non-negative value) on success and a
 *    negative MS_E* / libuv error code on failure; ms_strerror() names it;
 *  - when a function that takes a callback returns an error, that callback
 *    never fires;
 *  - all handles belong to one loop and are used from that loop's thread
 *    only; ms_call() is the one thread-safe entry point;
 *  - memory of a handle is freed only after its close callback.
 */
#ifndef MULTISERVER_H
#define MULTISERVER_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MS_EXTERN __attribute__((visibility("default")))
#define MS_WUR __attribute__((warn_unused_result))
#else
#define MS_EXTERN
#define MS_WUR
#endif

/* ------------------------------------------------------------------ */
/* Version                                                             */
/* ------------------------------------------------------------------ */

#define MS_VERSION_MAJOR 0
#define MS_VERSION_MINOR 2
#define MS_VERSION_PATCH 0
#define MS_VERSION_HEX \
  ((MS_VERSION_MAJOR << 16) | (MS_VERSION_MINOR << 8) | MS_VERSION_PATCH)
/* The version of the library linked at run time (MS_VERSION_HEX layout),
 * and as text ("0.2.0"). */
MS_EXTERN unsigned ms_version(void);
MS_EXTERN const char *ms_version_string(void);

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* Our own codes live in [-40099, -40000]; everything else is a libuv code
 * (negative errno, or UV_EAI_* for name resolution). Conditions libuv
 * already names keep libuv's value, so one condition has one code:
 * MS_EOF == UV_EOF, MS_ENOMEM == UV_ENOMEM, MS_EINVAL == UV_EINVAL,
 * MS_ETIMEDOUT == UV_ETIMEDOUT, MS_ECANCELED == UV_ECANCELED,
 * MS_EBUSY == UV_EBUSY, MS_ENOTSUP == UV_ENOTSUP. */
#define MS_ERRNO_MAP(XX)                                                     \
  XX(EADDRESS, -40000, "malformed address")                                  \
  XX(EPROTO_UNKNOWN, -40001, "no known protocol for this address")           \
  XX(ESTACK, -40002, "stack does not match the transport's sections")        \
  XX(EKEY, -40003, "bad key")                                                \
  XX(EHANDSHAKE, -40004, "handshake failed")                                 \
  XX(EUNAUTHORIZED, -40005, "peer not authorized")                           \
  XX(EBOXHEADER, -40006, "box-stream: invalid header")                       \
  XX(EBOXBODY, -40007, "box-stream: invalid body")                           \
  XX(EHANGUP, -40008, "unexpected hang-up (stream ended without goodbye)")  \
  XX(ECLOSED, -40011, "stream is closed")                                    \
  XX(ESHUTDOWN, -40012, "write side already shut down")                      \
  XX(ENOAUTH_REMOTE, -40013, "noauth refused on a non-device stack")         \
  XX(EALLFAILED, -40014, "every alternative address failed")                 \
  XX(EFRAME, -40015, "malformed frame")                                      \
  XX(ESECRETFILE, -40016, "malformed secret file")                           \
  XX(EEXIST, -40020, "already exists")                                       \
  XX(ELIMIT, -40021, "limit exceeded")                                       \
  XX(EDECRYPT, -40022, "message does not authenticate (corrupt or forged)")  \
  XX(EPROXY, -40023, "proxy refused the request")

typedef enum {
#define MS__ERR_ENUM(name, val, msg) MS_##name = (val),
  MS_ERRNO_MAP(MS__ERR_ENUM)
#undef MS__ERR_ENUM
  /* libuv's values (uv-errno.h): libuv defines them as -errno on Unix. */
  MS_EOF = -4095,
  MS_ENOMEM = -ENOMEM,
  MS_EINVAL = -EINVAL,
  MS_ETIMEDOUT = -ETIMEDOUT,
  MS_ECANCELED = -ECANCELED,
  MS_EBUSY = -EBUSY,
  MS_ENOTSUP = -ENOTSUP,
  MS__ERR_MAX = -40099
} ms_errno_t;

/* Human-readable message for any error code this library returns (ours or
 * libuv's). Never NULL; static storage (valid forever, do not free). */
MS_EXTERN const char *ms_strerror(int err);
/* Symbolic name ("MS_EHANDSHAKE", "ECONNREFUSED"). Never NULL; static
 * storage, like ms_strerror's. */
MS_EXTERN const char *ms_err_name(int err);

/* ------------------------------------------------------------------ */
/* Sizes                                                               */
/* ------------------------------------------------------------------ */

#define MS_PUBLICKEYBYTES 32
#define MS_SECRETKEYBYTES 64 /* ed25519: seed ‖ public key */
#define MS_SEEDBYTES 32
#define MS_APPKEYBYTES 32
/* The same sizes as functions, for bindings that cannot read macros
 * (MS_PUBLICKEYBYTES, MS_SECRETKEYBYTES). */
MS_EXTERN size_t ms_publickeybytes(void);
MS_EXTERN size_t ms_secretkeybytes(void);

/* ------------------------------------------------------------------ */
/* Address codec (pure, no I/O)                                        */
/* ------------------------------------------------------------------ */

/* A parsed multiaddress: alternatives (;) of stacks (~) of sections, each a
 * protocol name plus data fields (:), stored unescaped. Immutable after
 * parse; free with ms_addr_free(). */
typedef struct ms_addr_s ms_addr_t;

/* Parse error detail. */
typedef struct {
  size_t offset;      /* byte offset in the input where the problem is
                         (MS_ADDR_MAX_LEN for an over-long input) */
  int alternative;    /* 0-based index of the ;-alternative; -1 for errors
                         of the whole input (empty, too long) */
  int section;        /* 0-based index of the ~-section, -1 if n/a */
  char message[160];  /* e.g. "empty section", "protocol name must start …" */
} ms_addr_error_t;

#define MS_ADDR_MAX_LEN 8192    /* longest accepted address string */
#define MS_ADDR_MAX_ALTS 64     /* ;-alternatives */
#define MS_ADDR_MAX_SECTIONS 16 /* ~-sections in one stack */
#define MS_ADDR_MAX_FIELDS 32   /* :-fields in one section */

/* Grammar only (spec/address.md); reads exactly len bytes (no NUL needed).
 * err may be NULL. Returns 0, MS_EADDRESS (err says what and where),
 * MS_ENOMEM, or MS_EINVAL for NULL arguments. */
MS_EXTERN MS_WUR int ms_addr_parse(const char *str, size_t len,
                                   ms_addr_t **out, ms_addr_error_t *err);
/* Free a parsed address (NULL is a no-op). Every pointer its accessors
 * returned becomes invalid. */
MS_EXTERN void ms_addr_free(ms_addr_t *addr);
/* Canonical printed form into buf (NUL-terminated). Returns the length it
 * needs (excluding NUL), like snprintf; the output is truncated if larger
 * than size. */
MS_EXTERN size_t ms_addr_print(const ms_addr_t *addr, char *buf, size_t size);
/* Canonical form as a malloc'd string (free with ms_free), NULL on ENOMEM. */
MS_EXTERN char *ms_addr_to_string(const ms_addr_t *addr);

/* Accessors. An index out of range gives 0 or NULL (and *len = 0).
 * Returned strings are owned by addr: valid until ms_addr_free(). */
MS_EXTERN size_t ms_addr_alternatives(const ms_addr_t *addr);
MS_EXTERN size_t ms_addr_sections(const ms_addr_t *addr, size_t alt);
/* Protocol name of a section ("net", "shs"). */
MS_EXTERN const char *ms_addr_name(const ms_addr_t *addr, size_t alt,
                                   size_t sec);
/* Number of ':'-separated fields of a section after its name
 * ("net:host:8008" has 2). */
MS_EXTERN size_t ms_addr_fields(const ms_addr_t *addr, size_t alt, size_t sec);
/* Unescaped field data (NUL-terminated; the length is in *len if non-NULL). */
MS_EXTERN const char *ms_addr_field(const ms_addr_t *addr, size_t alt,
                                    size_t sec, size_t field, size_t *len);

/* One section, as handed to a protocol's hooks. Borrowed: valid during the
 * call only. */
typedef struct {
  const char *name;
  size_t nfields;
  const char *const *fields;    /* unescaped, NUL-terminated */
  const size_t *field_lens;
} ms_section_t;

/* Escape one field for printing (! before ! : ; ~). snprintf semantics:
 * returns the length needed (excluding the NUL), writes at most size bytes
 * NUL included; buf may be NULL with size 0 to measure. */
MS_EXTERN size_t ms_addr_escape(const char *in, size_t len, char *buf,
                                size_t size);

/* Free memory the library allocated for the caller (ms_addr_to_string,
 * ms_address_check's *canonical, ms_listener_addresses). NULL is a no-op. */
MS_EXTERN void ms_free(void *p);

/* Check an address without a multiserver: the grammar, and for the protocols
 * built into the library (net, unix, onion, noauth, shs, noise, gzip) their
 * own rules for the role (listen or dial) and the shape of each stack (a
 * transport, then transforms). Alternatives naming other protocols are checked for grammar
 * only. On success *canonical (if non-NULL) receives the canonical form, to
 * free with ms_free. Returns 0, MS_EADDRESS, MS_EKEY, MS_ESTACK or
 * MS_ENOAUTH_REMOTE with a reason naming the alternative and offset,
 * MS_ENOMEM, or MS_EINVAL for a NULL address. reason may be NULL. No I/O. */
MS_EXTERN int ms_address_check(const char *address, bool listen,
                               char **canonical, char *reason,
                               size_t reason_len);

/* ------------------------------------------------------------------ */
/* Keys (ed25519, Scuttlebutt formats)                                 */
/* ------------------------------------------------------------------ */

typedef struct {
  uint8_t public_key[MS_PUBLICKEYBYTES];
  uint8_t secret_key[MS_SECRETKEYBYTES];
} ms_keypair_t;

/* A fresh key pair from the system CSPRNG. 0, MS_EINVAL for NULL, MS_EKEY,
 * or MS_ENOMEM (libsodium could not initialise); kp is wiped on MS_EKEY. */
MS_EXTERN int ms_keypair_generate(ms_keypair_t *kp);
/* The key pair of a 32-byte seed (deterministic). 0, MS_EINVAL (NULL),
 * MS_EKEY, or MS_ENOMEM (libsodium could not initialise). */
MS_EXTERN MS_WUR int ms_keypair_from_seed(ms_keypair_t *kp,
                                   const uint8_t seed[MS_SEEDBYTES]);
/* Wipe a key pair (sodium_memzero); NULL is a no-op. */
MS_EXTERN void ms_keypair_wipe(ms_keypair_t *kp);
/* Read/write the ~/.ssb/secret format (JSON with curve, public, private, id;
 * '#' comment lines). Written files are created 0600. */
/* load: 0, -errno (libuv's values: UV_ENOENT, UV_EACCES …), MS_ESECRETFILE
 * for a malformed file, MS_EINVAL; kp is wiped on failure. save: 0,
 * MS_EEXIST if path exists (never overwritten), -errno. */
MS_EXTERN MS_WUR int ms_keypair_load(ms_keypair_t *kp, const char *path);
MS_EXTERN MS_WUR int ms_keypair_save(const ms_keypair_t *kp, const char *path);
/* "@<base64>.ed25519"; buf needs MS_ID_LEN + 1 bytes. 0, MS_EINVAL (NULL
 * arguments, size under MS_ID_LEN + 1), or MS_ENOMEM (libsodium could not
 * initialise). */
#define MS_ID_LEN 53
MS_EXTERN int ms_key_to_id(const uint8_t pk[MS_PUBLICKEYBYTES], char *buf,
                           size_t size);
/* Accepts "@<base64>.ed25519" or bare standard base64 (44 chars). */
/* 0, MS_EKEY for anything else, MS_EINVAL for NULL arguments. */
MS_EXTERN MS_WUR int ms_key_from_id(uint8_t pk[MS_PUBLICKEYBYTES], const char *id);
/* Standard base64 with padding of 32 bytes; buf needs 45 bytes. */
/* to: 0, MS_EINVAL for NULL arguments or a buffer under 45 bytes, MS_ENOMEM
 * as for ms_key_to_id. from:
 * len bytes of canonical padded base64 of exactly 32 bytes: 0, MS_EKEY, or
 * MS_EINVAL for NULL arguments. */
MS_EXTERN int ms_key_to_base64(const uint8_t key[32], char *buf, size_t size);
MS_EXTERN MS_WUR int ms_key_from_base64(uint8_t key[32], const char *b64, size_t len);

/* The main Scuttlebutt network key, 1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s= */
MS_EXTERN const uint8_t *ms_appkey_scuttlebutt(void); /* static storage */

/* ------------------------------------------------------------------ */
/* Streams                                                             */
/* ------------------------------------------------------------------ */

typedef struct ms_stream_s ms_stream_t;
typedef struct ms_s ms_t;
typedef struct ms_listener_s ms_listener_t;
typedef struct ms_connect_s ms_connect_t;

typedef struct {
  const void *base;
  size_t len;
} ms_buf_t;

/* Completion of a write: status 0, or an error (the stream failed or was
 * closed; MS_ECANCELED for writes still queued at close). */
typedef void (*ms_write_cb)(ms_stream_t *s, int status, void *arg);
/* Incoming bytes: status 0 with data valid only during the call; MS_EOF once
 * the remote has finished writing (clean end); another negative code on
 * error (after which no more reads arrive). The bytes belong to the library
 * (a read slab shared by the loop): copy what you keep. Transforms, which
 * read their lower stream through this callback, may modify them in place
 * (see ms_stream_emit_read in multiserver_plugin.h). */
typedef void (*ms_read_cb)(ms_stream_t *s, int status, const uint8_t *data,
                           size_t len, void *arg);
typedef void (*ms_close_cb)(ms_stream_t *s, void *arg);
/* Shutdown outcome; never called from inside ms_stream_shutdown(). */
typedef void (*ms_shutdown_cb)(ms_stream_t *s, int status, void *arg);
typedef void (*ms_drain_cb)(ms_stream_t *s, void *arg);

/* Queue bytes. The buffers must stay valid until cb fires (cb may be NULL);
 * cb never fires from inside ms_stream_write(), and writes complete in order.
 * Never fails for backpressure: compare ms_stream_write_queue_size() with the
 * high-water mark, or wait for the drain callback. Buffers may point into
 * bytes a read callback received (an echo): the library copies what it must.
 * Errors: MS_EINVAL (NULL stream or buffer, lengths that overflow),
 * MS_ECLOSED, MS_ESHUTDOWN, MS_ENOMEM, or an error of the layer below
 * (a dead socket gives UV_EPIPE / UV_ECONNRESET, never SIGPIPE: see
 * ms_options_t.keep_sigpipe). */
MS_EXTERN MS_WUR int ms_stream_write(ms_stream_t *s, const ms_buf_t *bufs,
                              unsigned nbufs, ms_write_cb cb, void *arg);
/* Bytes accepted by ms_stream_write and not yet completed. */
MS_EXTERN size_t ms_stream_write_queue_size(const ms_stream_t *s);
/* Default 1 MiB. */
MS_EXTERN void ms_stream_set_high_water(ms_stream_t *s, size_t bytes);
MS_EXTERN size_t ms_stream_high_water(const ms_stream_t *s);
/* true while write_queue_size < high water mark. */
MS_EXTERN bool ms_stream_writable(const ms_stream_t *s);
/* Called each time the queue falls below the high-water mark after having
 * reached it (from a write completion, so never inside ms_stream_write).
 * Replaces an earlier cb/arg; cb NULL removes it. */
MS_EXTERN void ms_stream_on_drain(ms_stream_t *s, ms_drain_cb cb, void *arg);

/* Deliver incoming bytes to cb until ms_stream_read_stop(), MS_EOF or an
 * error. cb is never called from inside ms_stream_read_start(); calling it
 * again replaces cb/arg. Errors: MS_EINVAL (NULL stream or cb), MS_ECLOSED
 * (closing), the error the stream already failed with, or the layer's
 * (libuv's uv_read_start code for net/unix); cb never fires then. */
MS_EXTERN int ms_stream_read_start(ms_stream_t *s, ms_read_cb cb, void *arg);
/* Stop delivering (effective at once, also inside the read callback).
 * 0 (also when not reading or closing), MS_EINVAL for NULL, or the layer's
 * read_stop error. */
MS_EXTERN int ms_stream_read_stop(ms_stream_t *s);

/* Half-close: after every queued write has completed, end the write side
 * (transforms send their end marker, e.g. the box-stream goodbye). cb (may
 * be NULL) fires once, on a later turn, never inside this call: 0, the
 * layer's error (MS_ENOTSUP for a stream without MS_CAP_HALF_CLOSE that
 * cannot end its session), or MS_ECANCELED if the stream is closed first
 * (before its close callback). Later writes fail with MS_ESHUTDOWN.
 * Returns 0, MS_EINVAL (NULL), MS_ECLOSED, MS_ESHUTDOWN (already called),
 * or the error the stream already failed with (cb never fires then). */
MS_EXTERN int ms_stream_shutdown(ms_stream_t *s, ms_shutdown_cb cb, void *arg);
/* Close now: queued writes complete with MS_ECANCELED, then cb (may be
 * NULL) fires, never inside this call, and the handle is freed. Further
 * calls (and NULL) are ignored until cb has fired; after that the handle
 * is gone and any call on it is a use after free (as in libuv). */
MS_EXTERN void ms_stream_close(ms_stream_t *s, ms_close_cb cb, void *arg);

/* Full address of the stack, e.g. "net:127.0.0.1:52311~shs:KEY". Owned by
 * the stream: valid until it is freed (after its close callback). Never
 * NULL. The same lifetime holds for every pointer a stream accessor
 * returns below. */
MS_EXTERN const char *ms_stream_address(const ms_stream_t *s);
/* Name of the transport/stack this came from as given to ms_listen (the
 * canonical listen address of its stack); NULL for outgoing streams. */
MS_EXTERN const char *ms_stream_stack(const ms_stream_t *s);
/* Remote long-term public key (32 bytes) when the remote identity is an
 * ed25519 key, else NULL. */
MS_EXTERN const uint8_t *ms_stream_remote_key(const ms_stream_t *s);
/* The remote identity in whatever scheme established it: *kind ("ed25519",
 * "x509-sha256", "unix-uid"; may be NULL to ignore) and *len; NULL when the
 * stream is unauthenticated. */
MS_EXTERN const void *ms_stream_remote_id(const ms_stream_t *s,
                                          const char **kind, size_t *len);
/* Metadata set by any layer of the stack ("ws.origin", "ws.path",
 * "unix.peer_uid", "host", "port"; see docs/plugins.md): the value (with a
 * NUL after its len bytes) or NULL. len may be NULL. */
MS_EXTERN const void *ms_stream_meta(const ms_stream_t *s, const char *key,
                                     size_t *len);
/* Enumerate: the i-th key (NULL past the end) and its value. */
MS_EXTERN size_t ms_stream_meta_count(const ms_stream_t *s);
MS_EXTERN const char *ms_stream_meta_at(const ms_stream_t *s, size_t i,
                                        const void **value, size_t *len);
/* What the stream can do. */
enum {
  MS_CAP_HALF_CLOSE = 1, /* ms_stream_shutdown ends one direction only */
  MS_CAP_RELIABLE = 2,   /* no byte lost */
  MS_CAP_ORDERED = 4     /* bytes arrive in order */
};
MS_EXTERN unsigned ms_stream_caps(const ms_stream_t *s);
/* Bytes this stream delivered to its reader and completed writing, as the
 * application sees them (above every transform). Either pointer may be
 * NULL. How long connecting took is in the metadata (time.connect_ms,
 * time.<transform>_ms, time.total_ms). */
MS_EXTERN void ms_stream_bytes(const ms_stream_t *s, uint64_t *in,
                               uint64_t *out);
/* Value the server's authorize hook attached, or NULL. */
MS_EXTERN void *ms_stream_auth(const ms_stream_t *s);
/* true for streams accepted by a listener. */
MS_EXTERN bool ms_stream_is_server(const ms_stream_t *s);
MS_EXTERN void ms_stream_set_data(ms_stream_t *s, void *data);
MS_EXTERN void *ms_stream_data(const ms_stream_t *s);

/* ------------------------------------------------------------------ */
/* The multiserver                                                     */
/* ------------------------------------------------------------------ */

typedef struct ms_authorize_s ms_authorize_t;
/* Server-side authorize hook, called on the loop by a security transform
 * (shs after msg3, noise after msg1, or a plugin's) once it verified the
 * client's identity. remote_key is the request's own copy of an ed25519
 * identity (NULL for other kinds: see ms_authorize_remote_id), valid until
 * ms_authorize_done(). Answer (now or later, on the loop) with
 * ms_authorize_done(); it must be called exactly once per invocation. */
typedef void (*ms_authorize_fn)(const uint8_t remote_key[MS_PUBLICKEYBYTES],
                                ms_authorize_t *req, void *arg);
/* accept=false hangs up (shs: without msg4); value is attached to the stream
 * (ms_stream_auth) on accept and handed to authorize_free when done with.
 * Answering after the handshake failed or timed out is harmless. Nothing
 * is called back from inside this function: the handshake continues on a
 * later turn. req is freed by this call. */
MS_EXTERN void ms_authorize_done(ms_authorize_t *req, bool accept,
                                 void *value);
/* The identity being asked about (the request's copy, valid until
 * ms_authorize_done): its bytes, *kind and *len. */
MS_EXTERN const void *ms_authorize_remote_id(const ms_authorize_t *req,
                                             const char **kind, size_t *len);
/* The ed25519 key being asked about, or NULL for another kind (valid until
 * ms_authorize_done, like every pointer these accessors return). */
MS_EXTERN const uint8_t *ms_authorize_remote_key(const ms_authorize_t *req);
/* The name of the transform asking ("shs", "noise") and the address of the
 * stream below it ("net:127.0.0.1:51234"). */
MS_EXTERN const char *ms_authorize_protocol(const ms_authorize_t *req);
MS_EXTERN const char *ms_authorize_address(const ms_authorize_t *req);

typedef struct {
  /* sizeof(ms_options_t), set by ms_options_init; 0 is read as this
   * header's size. Lets a newer library accept an older caller's struct. */
  size_t size;
  /* Long-term identity for shs. If NULL, a fresh key pair is generated. */
  const ms_keypair_t *keys;
  /* Network key for shs; NULL means ms_appkey_scuttlebutt(). */
  const uint8_t *app_key;
  /* shs handshake timeout in ms; 0 means 15000. */
  uint32_t handshake_timeout_ms;
  /* TCP connect timeout in ms; 0 means 10000. */
  uint32_t connect_timeout_ms;
  /* Server-side authorize hook; NULL accepts everyone. */
  ms_authorize_fn authorize;
  void *authorize_arg;
  /* Called exactly once, on the loop, for every non-NULL value accepted with
   * ms_authorize_done(): after the close callback of the stream carrying it,
   * or as soon as the library drops it (the handshake failed or was canceled
   * first, or answered too late). May be NULL. */
  void (*authorize_free)(void *value, void *authorize_arg);
  /* noauth gives no confidentiality and no authentication. By default it is
   * allowed on unix sockets only, where both sides check the peer's uid
   * (SO_PEERCRED) and accept their own uid (per-stack option
   * noauth.uids=any or a comma list of uids widens that). Loopback TCP
   * (127.0.0.0/8, ::1 as literals; never a host name) needs
   * allow_loopback_noauth, anything else allow_remote_noauth (which implies
   * the loopback permission). */
  bool allow_remote_noauth;
  bool allow_loopback_noauth;
  /* Leave SIGPIPE alone. By default ms_new()/ms_new_on_loop() set SIGPIPE to
   * SIG_IGN if it is at SIG_DFL (a disposition the application chose is
   * never changed): a peer that resets during a write would otherwise kill
   * the process. Writes to a dead socket then fail with UV_EPIPE or
   * UV_ECONNRESET through the write callback. Set this if the application
   * manages SIGPIPE itself; with SIGPIPE at SIG_DFL a reset peer then ends
   * the process. */
  bool keep_sigpipe;
  /* Limits, 0 = none; each can be set per listen stack with the per-stack
   * option limits.<name> (e.g. limits.max_connections=100). At a limit a
   * listener closes the new connection at once, before any handshake work,
   * reports MS_ELIMIT through the listen error callback, and accepts again
   * when load falls. ms_stats() counts what happened. */
  uint32_t max_connections;           /* open accepted connections */
  uint32_t max_handshakes;            /* accepted connections still in their transforms */
  uint32_t max_handshakes_per_source; /* the same from one peer address (IP) */
  uint32_t idle_timeout_ms;           /* accepted streams with no byte either way
                                         this long end with MS_ETIMEDOUT */
  size_t max_write_queue;             /* per stream: ms_stream_write past it
                                         returns MS_ELIMIT */
} ms_options_t;

/* Zero every field (the defaults) and set size. */
MS_EXTERN void ms_options_init(ms_options_t *opts);

/* Counters of a multiserver (ms_stats). */
typedef struct {
  size_t size;                 /* set by ms_stats to sizeof(ms_stats_t) */
  uint64_t connections;        /* accepted connections open now */
  uint64_t handshakes;         /* accepted connections in their transforms now */
  uint64_t accepted;           /* connections handed to the application, ever */
  uint64_t refused_connections;/* closed at once: max_connections */
  uint64_t refused_handshakes; /* closed at once: max_handshakes */
  uint64_t refused_per_source; /* closed at once: max_handshakes_per_source */
  uint64_t handshake_failures; /* transforms that failed on accepted connections */
  uint64_t idle_timeouts;      /* streams ended by idle_timeout_ms */
} ms_stats_t;
/* A snapshot of the counters (loop thread, or through ms_call). */
MS_EXTERN void ms_stats(const ms_t *ms, ms_stats_t *out);

/* ------------------------------------------------------------------ */
/* Per-stack options                                                   */
/* ------------------------------------------------------------------ */

/* Options for named protocols of a listen or connect (certificate files for
 * TLS, a proxy list for onion, limits, timeouts): "protocol.key=value"
 * strings, copied by the call that takes them. The ms_options_t of the
 * multiserver stays the default for whatever is not given. Known keys of
 * the built-ins: net.connect_timeout_ms, shs.handshake_timeout_ms,
 * noise.handshake_timeout_ms, gzip.max_bytes, gzip.max_ratio, gzip.level,
 * noauth.uids, onion.proxy/.user/.password/.timeout_ms, limits.*
 * (docs/plugins.md lists every protocol's). An option naming a protocol the
 * address uses but a key it does not know fails the call
 * (MS_EINVAL with a reason); options for protocols the address does not
 * use are ignored, so one set can serve many addresses. */
typedef struct ms_popts_s ms_popts_t;
/* An empty set, to free with ms_popts_free. 0, MS_EINVAL (out NULL),
 * MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_popts_new(ms_popts_t **out);
/* Set (or replace) protocol.key; the strings are copied. MS_EINVAL for a
 * NULL argument or an empty or malformed name, MS_ELIMIT when the set is
 * full, MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_popts_set(ms_popts_t *o, const char *protocol,
                                  const char *key, const char *value);
/* Parse "protocol.key=value" (the CLI's --opt). MS_EINVAL (NULL, no '.'
 * before the '=', a bad name), MS_ELIMIT, MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_popts_parse(ms_popts_t *o, const char *assignment);
/* The value of protocol.key, or NULL. Owned by o: valid until the key is
 * set again or o is freed. */
MS_EXTERN const char *ms_popts_get(const ms_popts_t *o, const char *protocol,
                                   const char *key);
/* NULL is a no-op. */
MS_EXTERN void ms_popts_free(ms_popts_t *o);

/* A multiserver owning its own event loop. Registers the built-in protocols
 * (net, unix, onion, noauth, shs, noise, gzip). opts (NULL: defaults) is
 * copied, except what its pointers point to: keys is copied, app_key too,
 * authorize_arg is kept. 0 and *out, or MS_EINVAL (out NULL, opts->size
 * larger than this library knows or too small), MS_ENOMEM, MS_EKEY (no key
 * pair could be generated), libuv's error from uv_loop_init or
 * uv_async_init; nothing to free then. */
MS_EXTERN int ms_new(ms_t **out, const ms_options_t *opts);
/* Two-phase teardown, safe from any callback on the loop: ms_close() waits
 * until every listener, connect and stream the application opened has
 * closed and every authorize request it was given is answered, destroys
 * the protocol instances, waits for their handles, closes the library's
 * own handles and then calls cb (on the loop). After cb,
 * ms_delete() frees the memory (for an owned loop, call it once ms_run has
 * returned, as ms_run returns when nothing is left). cb (may be NULL) never fires
 * inside this call; calls still queued with ms_call() run before it. Once
 * closing, ms_listen, ms_connect and friends fail with MS_ECLOSED.
 * MS_EINVAL for NULL or a second call. */
typedef void (*ms_closed_cb)(ms_t *ms, void *arg);
MS_EXTERN int ms_close(ms_t *ms, ms_closed_cb cb, void *arg);
/* Frees the multiserver. After ms_close()'s callback it only frees. Without
 * ms_close it closes the library's handles itself, running the loop briefly
 * to do so, and must then not be called from inside a callback (MS_EBUSY
 * from inside ms_run). Every listener, connect and stream must be closed
 * and every authorize request the application was given answered first:
 * MS_EEXIST (and nothing freed) otherwise. It waits (running the loop)
 * while a protocol still holds handles (ms_ref: a socket closing, a name
 * lookup orphaned in the thread pool by a timeout). Also MS_EINVAL for NULL,
 * MS_EBUSY while ms_close() is under way, MS_EEXIST while the thread of
 * ms_thread_start runs (ms_thread_join first). 0: ms is gone. */
MS_EXTERN int ms_delete(ms_t *ms);
/* Run the loop: MS_RUN_DEFAULT until no work is left, MS_RUN_ONCE, or
 * MS_RUN_NOWAIT (libuv's uv_run modes; another value runs DEFAULT). Returns
 * uv_run's value: non-zero when work is left. Not while the thread of
 * ms_thread_start runs the loop. */
enum { MS_RUN_DEFAULT = 0, MS_RUN_ONCE = 1, MS_RUN_NOWAIT = 2 };
MS_EXTERN int ms_run(ms_t *ms, int mode);
/* Stop ms_run at the next opportunity (loop thread only). */
MS_EXTERN void ms_stop(ms_t *ms);
/* The multiserver's key pair and network key: owned by ms, valid until
 * ms_delete(). */
MS_EXTERN const ms_keypair_t *ms_keys(const ms_t *ms);
MS_EXTERN const uint8_t *ms_app_key(const ms_t *ms);

/* Threading: run the loop on a thread the library starts. While it runs,
 * use the handles only from callbacks or through ms_call(). 0, MS_EINVAL
 * (NULL), MS_EEXIST (already started), or uv_thread_create's error. */
MS_EXTERN int ms_thread_start(ms_t *ms);
/* Ask the loop thread to finish (after closing everything you opened) and
 * join it. Call from another thread. 0, MS_EINVAL (NULL, or no thread
 * started), MS_ENOMEM, or libuv's error (uv_async_send, uv_thread_join). */
MS_EXTERN int ms_thread_join(ms_t *ms);
/* Run fn(arg) on the loop thread soon. Thread-safe; callable from any thread
 * (including the loop thread, where it runs on the next iteration); fn never
 * runs inside ms_call. Calls in order; those still queued when ms_close()
 * finishes run before its callback. Only until then: later calls are a use
 * of a closed handle. 0, MS_EINVAL (NULL ms or fn), MS_ENOMEM, or
 * uv_async_send's error (fn then still queued). */
MS_EXTERN int ms_call(ms_t *ms, void (*fn)(void *arg), void *arg);

/* Incoming connection on any listened stack. The stream is handed over: the
 * callee owns it and must eventually ms_stream_close() it. */
typedef void (*ms_connection_cb)(ms_stream_t *s, void *arg);
/* A listener-level failure after listening started, e.g. an incoming
 * connection whose transform handshake failed (for logging). */
typedef void (*ms_listen_error_cb)(const char *stack, int status,
                                   const char *reason, void *arg);

/* Listen on every stack of a (;-joined) address. Either all listen or none
 * (the error says which stack failed in reason, if non-NULL). cb never
 * fires inside this call; *out is valid until its close callback.
 * Errors: MS_EINVAL (NULL ms, address, cb or out; a bad per-stack option),
 * MS_ECLOSED (ms closing), MS_EADDRESS, MS_EPROTO_UNKNOWN, MS_ESTACK (also
 * a client-only transport), MS_EKEY, MS_ENOAUTH_REMOTE, a transport's
 * error (libuv's: UV_EADDRINUSE, UV_EACCES, UV_EADDRNOTAVAIL …), MS_ELIMIT
 * (an advertised section over 1 KiB), MS_ENOMEM. */
MS_EXTERN MS_WUR int ms_listen(ms_t *ms, const char *address,
                               ms_connection_cb cb, void *arg,
                               ms_listener_t **out, char *reason,
                               size_t reason_len);
/* ms_listen with per-stack options (may be NULL; copied). */
MS_EXTERN MS_WUR int ms_listen_with(ms_t *ms, const char *address,
                                    const ms_popts_t *opts,
                                    ms_connection_cb cb, void *arg,
                                    ms_listener_t **out, char *reason,
                                    size_t reason_len);
/* Receive listener-level failures (handshakes that failed, limits reached,
 * accept errors); stack and reason are valid during the call only.
 * Replaces an earlier cb/arg; cb NULL removes it. */
MS_EXTERN void ms_listener_on_error(ms_listener_t *l, ms_listen_error_cb cb,
                                    void *arg);
/* The multiaddress that reaches this listener: ;-joined, actual ports,
 * transforms carrying the server's public key (net:127.0.0.1:41234~shs:KEY).
 * Owned by the listener: valid until it is freed (after its close
 * callback). Never NULL. */
MS_EXTERN const char *ms_listener_address(const ms_listener_t *l);
/* What a peer in scope can dial (MS_SCOPE_DEVICE, MS_SCOPE_LOCAL or
 * MS_SCOPE_PUBLIC, from multiserver_plugin.h; 1, 3, 4): the ;-joined
 * addresses of the stacks that serve that scope, each with its transforms
 * and the server's key. A stack serves the scopes of its listen address
 * (unix and loopback: device; a private address: local; anything else:
 * public) or those the per-stack option listen.scopes=device,local,public
 * names; a wildcard host (net:0.0.0.0:P, net:::P) expands to this machine's
 * interface addresses of that scope, read on each call, zones dropped, and
 * listen.external=HOST replaces them for public. Never 0.0.0.0 or ::.
 * malloc'd, free with ms_free; "" when no stack serves the scope; NULL for
 * a bad scope or ENOMEM. */
MS_EXTERN char *ms_listener_addresses(const ms_listener_t *l, int scope);
typedef void (*ms_listener_close_cb)(ms_listener_t *l, void *arg);
/* Stop listening on every stack; cb (may be NULL) fires when all are
 * closed, on a later turn, never inside this call; the listener is freed
 * after it. Handshakes still in progress are canceled; accepted streams
 * are not affected. NULL or a second call is ignored. */
MS_EXTERN void ms_listener_close(ms_listener_t *l, ms_listener_close_cb cb,
                                 void *arg);

/* Outcome of ms_connect: status 0 and a stream (now owned by the callee), or
 * an error with a one-line reason naming each alternative's failure. */
typedef void (*ms_connect_cb)(ms_stream_t *s, int status, const char *reason,
                              void *arg);
/* Connect to a multiaddress. The ;-alternatives are ranked — device scope
 * (unix) before loopback before local before public, then the per-stack
 * option connect.prefer=unix,net,… (transport names), then as written —
 * and started staggered: the next one connect.stagger_ms (default 250;
 * 0 = strictly one after another) after the previous unless that one
 * failed first. The first whose whole stack completes wins; the others are
 * canceled and their half-done handshakes closed. Unknown protocols and
 * malformed stacks are skipped; a path failure (refused, unreachable,
 * reset, a timeout, a hang-up during a handshake) moves on; an
 * authentication failure (a protocol's verdict that the peer is not who
 * the address names, or refused us: by default MS_EHANDSHAKE,
 * MS_EUNAUTHORIZED, MS_EKEY) stops the whole connect. With several
 * alternatives the final error is MS_EALLFAILED and the reason names each
 * one's failure. The stream carries timings as metadata: time.connect_ms
 * (the transport), time.<transform>_ms for each transform, time.total_ms.
 * cb always fires later, never from inside ms_connect(). req (may be NULL)
 * allows cancellation until cb fires, and is invalid after. reason is
 * valid during cb only. Returns 0, MS_EINVAL (NULL ms, address or cb),
 * MS_ECLOSED (ms closing) or MS_ENOMEM, and cb never fires then; a
 * malformed address is reported through cb (MS_EADDRESS). */
MS_EXTERN MS_WUR int ms_connect(ms_t *ms, const char *address,
                                ms_connect_cb cb, void *arg,
                                ms_connect_t **req);
/* ms_connect with per-stack options (may be NULL; copied). An option error
 * is reported through cb (MS_EINVAL with a reason naming the option). */
MS_EXTERN MS_WUR int ms_connect_with(ms_t *ms, const char *address,
                                     const ms_popts_t *opts, ms_connect_cb cb,
                                     void *arg, ms_connect_t **req);
/* Cancel a pending connect: cb fires (later, not from inside this call)
 * with MS_ECANCELED, or with the outcome if that was already decided.
 * NULL or a second call is ignored; not after cb fired (req is freed). */
MS_EXTERN void ms_connect_cancel(ms_connect_t *req);


/* ------------------------------------------------------------------ */
/* Onion services (through a tor daemon's control port)                */
/* ------------------------------------------------------------------ */

/* Publish a listener as a Tor onion service (v3): connect to tor's control
 * port, authenticate, ADD_ONION, and keep that control connection open
 * while the service lives (tor removes a service its controller leaves);
 * ms_onion_close() sends DEL_ONION. Clients then reach the listener at
 * onion:<id>.onion:<virt_port> (append the listener's transforms:
 * ~shs:KEY). docs/protocols/onion.md. */
typedef struct ms_onion_s ms_onion_t;

typedef struct {
  /* sizeof(ms_onion_opts_t), set by ms_onion_opts_init. */
  size_t size;
  /* The control port as an address: "net:127.0.0.1:9051" (the default when
   * NULL) or "unix:/run/tor/control". */
  const char *control;
  /* HASHEDPASSWORD authentication with this password; NULL: NULL or COOKIE
   * authentication, as tor offers. */
  const char *password;
  /* The cookie file to read; NULL: the one tor names (PROTOCOLINFO). */
  const char *cookie_file;
  /* Where tor forwards the service's connections: a local listener,
   * "net:127.0.0.1:8008" (a listener's address works: the net section of
   * its first alternative is used) or "127.0.0.1:8008". Required. */
  const char *target;
  /* The onion service's port (what clients dial); 0 means the target's. */
  uint16_t virt_port;
  /* NULL: a fresh key (a new .onion address) each time. Else the key is
   * loaded from this file when it exists and saved to it (0600) when it
   * does not, so the address survives restarts. */
  const char *key_file;
  /* Control exchange timeout in ms (connect to publish, and DEL_ONION);
   * 0 means 30000. */
  uint32_t timeout_ms;
} ms_onion_opts_t;

/* Set size and every other field to zero or NULL, which selects each
 * field's default above. Call before setting fields, so that a field added
 * in a later version keeps its default. */
MS_EXTERN void ms_onion_opts_init(ms_onion_opts_t *opts);

/* Outcome of ms_onion_publish: status 0 and the service's address
 * ("<56 base32 chars>.onion", valid until the handle is freed), or an
 * error with a reason (MS_EUNAUTHORIZED: tor refused the authentication;
 * MS_EPROXY: tor refused ADD_ONION; MS_EKEY: the key file; MS_EHANGUP,
 * MS_ETIMEDOUT, connection errors; MS_ECANCELED after an early
 * ms_onion_close). After an error the handle is freed once cb returns. */
typedef void (*ms_onion_cb)(ms_onion_t *o, int status,
                            const char *onion_address, const char *reason,
                            void *arg);
/* Start publishing. Returns 0 (cb fires later, never inside this call),
 * or MS_EINVAL / MS_EADDRESS / MS_EKEY / MS_ECLOSED / MS_ENOMEM with a
 * reason (cb never fires). */
MS_EXTERN MS_WUR int ms_onion_publish(ms_t *ms, const ms_onion_opts_t *opts,
                                      ms_onion_cb cb, void *arg,
                                      ms_onion_t **out, char *reason,
                                      size_t reason_len);
/* "<id>.onion" once published, else "". Owned by o: valid until it is
 * freed. Never NULL. */
MS_EXTERN const char *ms_onion_address(const ms_onion_t *o);
/* Withdraw the service (DEL_ONION) and close the control connection; cb
 * (may be NULL) gets 0, or why DEL_ONION could not be done (the control
 * connection was lost: tor dropped the service with it). Before the
 * publish callback fired, that callback fires first with MS_ECANCELED.
 * The handle is freed after cb. ms_close() waits for open handles. */
typedef void (*ms_onion_close_cb)(ms_onion_t *o, int status, void *arg);
MS_EXTERN void ms_onion_close(ms_onion_t *o, ms_onion_close_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* MULTISERVER_H */
