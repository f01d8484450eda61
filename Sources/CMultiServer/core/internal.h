/* Private declarations shared by the library's modules. Never installed. */
#ifndef MS_INTERNAL_H
#define MS_INTERNAL_H

#include <uv.h>
#include "multiserver.h"
#include "multiserver_plugin.h"
#include "multiserver_uv.h"

#define MS_MAX_PROTOCOLS 32
#define MS_READ_SLAB (64 * 1024)
#define MS_DEFAULT_HIGH_WATER (1024 * 1024)
#define MS_REASON_LEN 256

typedef struct ms_call_s ms_call_t;
struct ms_call_s {
  void (*fn)(void *arg);
  void *arg;
  ms_call_t *next;
};

typedef struct {
  const ms_protocol_t *proto;
  void *pdata;
} ms_proto_entry_t;

struct ms_s {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  bool owns_loop;
  ms_options_t opts;    /* opts.keys/app_key point at the copies below */
  ms_keypair_t keys;
  uint8_t app_key[MS_APPKEYBYTES];
  ms_proto_entry_t protos[MS_MAX_PROTOCOLS];
  size_t nprotos;
  /* Cross-thread command queue (ms_call). */
  uv_async_t async;
  uv_mutex_t qlock;
  ms_call_t *qhead, *qtail;
  /* Same-thread deferred calls (ms__defer): an idle handle that is active,
   * so keeps the loop alive, only while calls are pending. */
  uv_idle_t idle;
  ms_call_t *dhead, *dtail;
  uv_thread_t thread;
  bool thread_started;
  /* Streams, listeners and connects not yet finished: ms_delete refuses
   * while any are alive. */
  size_t live;
  /* One read buffer per loop: libuv reads into it and the bytes are handed
   * on synchronously, so an idle connection holds no read buffer. */
  uint8_t *slab;
  /* net.c: getaddrinfo lookups in the threadpool (those orphaned by a dial
   * that finished first included), and lookups waiting for a slot, oldest
   * first. */
  unsigned dns_running;
  struct net_lookup_s *dns_head, *dns_tail;
};

/* Write request: pooled per stream, so the steady state allocates nothing. */
#define MS_WRITE_REQ_IMPL_SIZE MS_WRITE_REQ_SCRATCH
struct ms_write_req_s {
  ms_stream_t *s;
  ms_write_cb cb;
  void *arg;
  size_t size;
  bool in_submit;   /* inside ops->write() */
  bool early;       /* completed inside ops->write(): reported deferred */
  int early_status;
  ms_write_req_t *next;
  union {
    uv_write_t uv;
    uint8_t bytes[MS_WRITE_REQ_IMPL_SIZE];
    void *align;
  } impl;
};

enum { MS_SHUT_NONE, MS_SHUT_WAIT, MS_SHUT_RUNNING, MS_SHUT_DONE };

struct ms_stream_s {
  ms_t *ms;
  const ms_stream_ops_t *ops;
  void *impl;
  char *address;
  char *stack;
  void *data;
  void *auth;
  uint8_t remote_key[MS_PUBLICKEYBYTES];
  bool has_remote_key;
  bool is_server;
  bool reading;
  bool closing;
  bool impl_closed;
  bool in_close;
  bool finishing;
  bool in_shutdown;  /* inside ops->shutdown() */
  bool shut_early;   /* shutdown finished inside it: reported deferred */
  int shut_status;
  bool auth_owned;   /* auth came from ms_authorize_done: free it with us */
  ms_read_cb read_cb;
  void *read_arg;
  size_t queued;       /* bytes of not yet completed writes */
  size_t pending;      /* not yet completed write requests */
  size_t high_water;
  bool above_high_water;
  ms_drain_cb drain_cb;
  void *drain_arg;
  ms_write_req_t *free_reqs;
  size_t nfree;
  int shut_state;
  ms_shutdown_cb shut_cb;
  void *shut_arg;
  ms_close_cb close_cb;
  void *close_arg;
};

/* Scratch space inside a write request for the implementation. */
static inline void *ms__write_req_impl(ms_write_req_t *req) {
  return req->impl.bytes;
}

/* stream.c */
int ms__stream_set_stack(ms_stream_t *s, const char *stack);
/* Attach an authorize value the stream owns (authorize_free at its end). */
void ms__stream_own_auth(ms_stream_t *s, void *auth);
/* A transform's new stream takes over what it did not set itself: remote
 * key, authorize value (with its ownership) and the server flag. */
void ms__stream_inherit(ms_stream_t *upper, ms_stream_t *lower);
/* Hand an accepted authorize value to the user's authorize_free. */
void ms__auth_free(ms_t *ms, void *value);

/* uvstream.c: an ms_stream over a libuv stream handle (TCP or pipe). The
 * handle lives inside the container; initialise it in place, then start. */
typedef struct ms_uvstream_s ms_uvstream_t;
ms_uvstream_t *ms__uvstream_alloc(void);
uv_tcp_t *ms__uvstream_tcp(ms_uvstream_t *u);
uv_pipe_t *ms__uvstream_pipe(ms_uvstream_t *u);
/* Close an un-started container's handle and free it. */
void ms__uvstream_discard(ms_uvstream_t *u);
/* Wrap the (initialised, connected) handle into a new stream. */
ms_stream_t *ms__uvstream_start(ms_uvstream_t *u, ms_t *ms,
                                const char *address);
/* Accept one pending connection of a listening TCP (tcp = true) or pipe
 * handle into a new stream; name() tunes the accepted handle and formats
 * the stream's address. Returns 0 with *out, or an error (nothing leaks). */
typedef int (*ms_uv_name_fn)(ms_uvstream_t *u, char *buf, size_t len,
                             void *arg);
int ms__uvstream_accept(ms_t *ms, uv_stream_t *server, bool tcp,
                        ms_uv_name_fn name, void *arg, ms_stream_t **out);

/* multiserver.c */
/* Run fn(arg) on a later turn of the loop. Loop thread only. Unlike a
 * cross-thread ms_call(), a pending deferred call keeps ms_run() going. */
int ms__defer(ms_t *ms, void (*fn)(void *arg), void *arg);
void ms__live_inc(ms_t *ms);
void ms__live_dec(ms_t *ms);
const ms_proto_entry_t *ms__find_protocol(const ms_t *ms, const char *name);
/* Error message helper: snprintf into a reason buffer (may be NULL). */
void ms__reason(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Built-in protocols. */
extern const ms_protocol_t ms__proto_net;
extern const ms_protocol_t ms__proto_unix;
extern const ms_protocol_t ms__proto_noauth;

/* stack.c: parse an address, wording a grammar error as "bad address at
 * offset N (alternative A, section S): what" for reason. */
int ms__addr_parse_reason(const char *address, ms_addr_t **out, char *reason,
                          size_t reason_len);

/* stack.c: one ;-alternative resolved against the registry. Section views
 * point into the ms_addr_t, which must outlive the stack. */
typedef struct {
  size_t nsec;
  ms_section_t secs[MS_ADDR_MAX_SECTIONS];
  const ms_proto_entry_t *protos[MS_ADDR_MAX_SECTIONS];
  bool is_device;
} ms_stack_t;

/* MS_EPROTO_UNKNOWN, MS_ESTACK, MS_EADDRESS/MS_EKEY (validation) or
 * MS_ENOAUTH_REMOTE, each with a reason. */
int ms__stack_resolve(ms_t *ms, const ms_addr_t *a, size_t alt, int role,
                      ms_stack_t *st, char *reason, size_t reason_len);

/* Runs a stack's transforms (sections 1..n) over a transport stream. The
 * chain starts on a later loop turn, so cb never fires from inside
 * ms__chain_start; it fires exactly once with the final stream or an error
 * (the lower stream then closed). pw is freed right after cb returns. */
typedef struct ms_pwrap_s ms_pwrap_t;
typedef void (*ms_chain_cb)(ms_pwrap_t *pw, ms_stream_t *s, int status,
                            const char *reason, void *arg);
struct ms_pwrap_s {
  ms_t *ms;
  const ms_stack_t *stack;
  size_t idx;      /* section being applied */
  int role;
  void *impl;
  ms_stream_t *handoff; /* stream passed between steps */
  ms_stream_t *lower;   /* stream below the transform being applied */
  bool in_wrap;    /* inside proto->wrap() */
  bool sync_done;  /* ms_pwrap_done fired inside wrap() */
  int sync_status;
  char sync_reason[MS_REASON_LEN];
  bool in_flight;  /* a transform's wrap is pending */
  bool canceled;
  ms_chain_cb cb;
  void *arg;
  ms_pwrap_t *next, *prev; /* owner's list */
};
/* NULL (and lower closed) only on ENOMEM. */
ms_pwrap_t *ms__chain_start(ms_t *ms, const ms_stack_t *st, ms_stream_t *lower,
                            int role, ms_chain_cb cb, void *arg);
void ms__chain_cancel(ms_pwrap_t *pw);

#endif /* MS_INTERNAL_H */
