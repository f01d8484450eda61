/*
 * multiserver — the interface protocols plug into. The built-in transports
 * (net, unix) and transforms (noauth, shs) are written against exactly this
 * header; so can yours (ms_register).
 *
 *  - A *stream implementation* fills an ms_stream_ops_t and creates streams
 *    with ms_stream_new(). The base stream (stream.c) owns the write queue
 *    accounting, backpressure, shutdown ordering and the close protocol; the
 *    implementation only moves bytes.
 *  - A *transport* listens and dials: it produces streams.
 *  - A *transform* wraps a stream and produces a new stream over it.
 */
#ifndef MULTISERVER_PLUGIN_H
#define MULTISERVER_PLUGIN_H

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Stream implementations                                              */
/* ------------------------------------------------------------------ */

typedef struct ms_write_req_s ms_write_req_t;

typedef struct {
  /* Queue bufs for writing (copying or referencing them; referenced buffers
   * stay valid until the request is completed). Complete the request with
   * ms_write_req_done() exactly once, possibly from inside write(). A
   * non-zero return means the request was not taken (and is not completed). */
  int (*write)(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
               unsigned nbufs);
  /* Begin/stop delivering bytes with ms_stream_emit_read(). */
  int (*read_start)(ms_stream_t *s);
  int (*read_stop)(ms_stream_t *s);
  /* End the write side. Called by the base only once every earlier write has
   * completed. Report with ms_stream_shutdown_done(). */
  int (*shutdown)(ms_stream_t *s);
  /* Tear down: complete any pending write requests (MS_ECANCELED), then call
   * ms_stream_closed() once nothing of the implementation can call back any
   * more (now or later). */
  void (*close)(ms_stream_t *s);
} ms_stream_ops_t;

/* A new stream bound to ms's loop. address is copied (may be NULL). */
MS_EXTERN ms_stream_t *ms_stream_new(ms_t *ms, const ms_stream_ops_t *ops,
                                     void *impl, const char *address);
MS_EXTERN void *ms_stream_impl(const ms_stream_t *s);
MS_EXTERN ms_t *ms_stream_ms(const ms_stream_t *s);
/* Metadata. Addresses are printed (escaped) text: a transport's stream is
 * its own section for the peer (net: the remote IP and port), a transform
 * appends "~" and its section. pk NULL clears the remote key. A transform's
 * new stream inherits the remote key, the authorize value and the server
 * flag of the stream below unless it sets its own. */
MS_EXTERN int ms_stream_set_address(ms_stream_t *s, const char *address);
MS_EXTERN void ms_stream_set_remote_key(ms_stream_t *s,
                                        const uint8_t pk[MS_PUBLICKEYBYTES]);
MS_EXTERN void ms_stream_set_auth(ms_stream_t *s, void *auth);
MS_EXTERN void ms_stream_set_server(ms_stream_t *s, bool is_server);
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
MS_EXTERN void ms_write_req_done(ms_write_req_t *req, int status);
/* Bytes a write request carries (sum of its buffers). */
MS_EXTERN size_t ms_write_req_size(const ms_write_req_t *req);
/* Scratch space of MS_WRITE_REQ_SCRATCH bytes (pointer-aligned) that the
 * implementation may use until it completes the request: requests are pooled,
 * so keeping per-write state here costs no allocation. */
#define MS_WRITE_REQ_SCRATCH 256
MS_EXTERN void *ms_write_req_scratch(ms_write_req_t *req);
MS_EXTERN void ms_stream_shutdown_done(ms_stream_t *s, int status);
MS_EXTERN void ms_stream_closed(ms_stream_t *s);

/* ------------------------------------------------------------------ */
/* Protocols                                                           */
/* ------------------------------------------------------------------ */

enum { MS_PROTO_TRANSPORT = 1, MS_PROTO_TRANSFORM = 2 };
enum { MS_ROLE_CLIENT = 0, MS_ROLE_SERVER = 1 };

typedef struct ms_plisten_s ms_plisten_t; /* one listening transport section */
typedef struct ms_pdial_s ms_pdial_t;     /* one outgoing transport dial */
typedef struct ms_pwrap_s ms_pwrap_t;     /* one transform being applied */

typedef struct {
  const char *name; /* the section name in addresses: "net", "shs" */
  int kind;         /* MS_PROTO_TRANSPORT or MS_PROTO_TRANSFORM */

  /* Check a section's fields for a role (listen = server, dial = client).
   * Return 0, or MS_EADDRESS / MS_EKEY with a reason. NULL accepts all. */
  int (*validate)(const ms_section_t *sec, int role, void *pdata,
                  char *reason, size_t reason_len);
  /* Transports: does this section stay on this machine (unix, loopback)?
   * Used to refuse noauth elsewhere. NULL means "no". */
  bool (*is_device)(const ms_section_t *sec, void *pdata);

  /* Transports. listen(): start listening, set the advertised section with
   * ms_plisten_set_address(), hand connections to ms_plisten_incoming(); on
   * failure return the error after ms_plisten_error(pl, rc, reason), whose
   * reason then becomes ms_listen()'s. listen_close(): stop, then call
   * ms_plisten_closed() (now or later). */
  int (*listen)(ms_plisten_t *pl, const ms_section_t *sec, void *pdata);
  void (*listen_close)(ms_plisten_t *pl);
  /* dial(): start connecting; finish with ms_pdial_done() exactly once,
   * possibly from inside dial(); pd is invalid after it. A non-zero return
   * means done never fires. dial_cancel(): make it finish soon with
   * MS_ECANCELED. */
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
} ms_protocol_t;

/* Register a protocol (proto must outlive ms). MS_EEXIST if the name is
 * taken. */
MS_EXTERN int ms_register(ms_t *ms, const ms_protocol_t *proto, void *pdata);

MS_EXTERN ms_t *ms_plisten_ms(const ms_plisten_t *pl);
MS_EXTERN void ms_plisten_set_impl(ms_plisten_t *pl, void *impl);
MS_EXTERN void *ms_plisten_impl(const ms_plisten_t *pl);
/* The printed transport section a client uses to reach this listener, e.g.
 * "net:127.0.0.1:41234" (escaped). Call from listen(). */
MS_EXTERN int ms_plisten_set_address(ms_plisten_t *pl, const char *section);
MS_EXTERN void ms_plisten_incoming(ms_plisten_t *pl, ms_stream_t *s);
/* A failure that is not fatal to the listener (e.g. accept failed). */
MS_EXTERN void ms_plisten_error(ms_plisten_t *pl, int status,
                                const char *reason);
MS_EXTERN void ms_plisten_closed(ms_plisten_t *pl);

MS_EXTERN ms_t *ms_pdial_ms(const ms_pdial_t *pd);
MS_EXTERN void ms_pdial_set_impl(ms_pdial_t *pd, void *impl);
MS_EXTERN void *ms_pdial_impl(const ms_pdial_t *pd);
MS_EXTERN void ms_pdial_done(ms_pdial_t *pd, int status, ms_stream_t *s,
                             const char *reason);

MS_EXTERN ms_t *ms_pwrap_ms(const ms_pwrap_t *pw);
MS_EXTERN void ms_pwrap_set_impl(ms_pwrap_t *pw, void *impl);
MS_EXTERN void *ms_pwrap_impl(const ms_pwrap_t *pw);
/* true when the stack under this transform stays on the device. */
MS_EXTERN bool ms_pwrap_is_device(const ms_pwrap_t *pw);
MS_EXTERN void ms_pwrap_done(ms_pwrap_t *pw, int status, ms_stream_t *s,
                             const char *reason);

/* Options the multiserver was created with (for transforms). */
MS_EXTERN const ms_options_t *ms_options(const ms_t *ms);

#ifdef __cplusplus
}
#endif
#endif /* MULTISERVER_PLUGIN_H */
