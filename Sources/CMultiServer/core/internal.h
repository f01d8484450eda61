/* Private declarations shared by the core's modules (core/). Never installed;
 * protocols (transports/, transforms/) do not include it: they use the
 * public plugin headers only. */
#ifndef MS_INTERNAL_H
#define MS_INTERNAL_H

#include <uv.h>
#include "multiserver.h"
#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "multiserver_log.h"

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
  ms_protocol_t proto; /* the registered struct, normalised to our size */
  void *pdata;         /* the instance (init) or the registration's pdata */
  bool has_instance;
} ms_proto_entry_t;

enum { MS_STATE_OPEN, MS_STATE_CLOSING, MS_STATE_CLOSED };

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
  /* Same-thread deferred calls (ms_defer): an idle handle that is active,
   * so keeps the loop alive, only while calls are pending. */
  uv_idle_t idle;
  ms_defer_t *dhead, *dtail;
  ms_defer_t *dlast; /* last node of the turn run_deferred is running */
  bool dlast_gone;   /* it was canceled with nothing of the turn before it */
  /* End-of-turn flushes (ms_stream_want_flush): a check handle runs them
   * after the poll phase; the idle handle keeps the poll from blocking. */
  uv_check_t check;
  ms_stream_t *fhead;
  uv_thread_t thread;
  bool thread_started;
  bool in_run;
  /* What the application opened and has not seen close (streams,
   * listeners, connects) and what plugins hold (ms_ref). */
  size_t live;
  size_t refs;
  /* Two-phase teardown (ms_close). */
  int state;
  bool destroyed;
  bool free_when_closed;
  int handles_open;
  ms_closed_cb closed_cb;
  void *closed_arg;
  ms_defer_t close_node;
  /* One read buffer per loop: libuv reads into it and the bytes are handed
   * on synchronously, so an idle connection holds no read buffer. */
  uint8_t *slab;
  /* Limits and counters (ms_stats). */
  ms_stats_t stats;
  uv_timer_t idle_timer; /* one ticker for every idle-tracked stream */
  bool idle_timer_on;
  ms_stream_t *idle_head;
  /* Log hook (log.c, multiserver_log.h). */
  ms_log_fn log_fn;
  void *log_arg;
  int log_min;
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
  ms_defer_t node;
  ms_write_req_t *next;
  union {
    uv_write_t uv;
    uint8_t bytes[MS_WRITE_REQ_IMPL_SIZE];
    void *align;
  } impl;
};

enum { MS_SHUT_NONE, MS_SHUT_WAIT, MS_SHUT_RUNNING, MS_SHUT_DONE };

typedef struct ms_meta_s ms_meta_t;
struct ms_meta_s {
  ms_meta_t *next;
  char *key;
  size_t len;
  uint8_t value[]; /* len bytes and a NUL */
};

struct ms_stream_s {
  ms_t *ms;
  ms_stream_ops_t ops; /* normalised copy */
  void *impl;
  char *address;
  char *stack;
  void *data;
  void *auth;
  char *id_kind;       /* remote identity; NULL when unauthenticated */
  uint8_t *id;
  size_t id_len;
  ms_meta_t *meta;
  unsigned caps;
  bool is_server;
  bool reading;
  bool impl_reading;   /* ops->read_start called and not stopped */
  bool in_read_start;  /* inside ops->read_start() */
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
  /* Push-back: bytes delivered before the implementation's (ms_stream_unread
   * and bytes emitted inside ops->read_start), then a held status. */
  uint8_t *pb;
  size_t pb_len;
  int pb_status;
  ms_defer_t pb_node;
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
  ms_defer_t shut_node;
  ms_close_cb close_cb;
  void *close_arg;
  ms_defer_t close_node;
  bool flush_queued;
  ms_stream_t *fnext;
  /* Limits. */
  bool impl_close_called;
  int aborted;          /* the library ended it (idle timeout): the status */
  size_t max_queue;     /* 0: no cap on queued writes */
  uint32_t idle_ms;     /* 0: not tracked */
  uint64_t last_active; /* loop time of the last byte either way */
  ms_stream_t *inext, *iprev;
  bool counted;         /* an accepted connection in ms->stats */
  uint64_t bytes_in, bytes_out;
  struct ms_pcount_s *pcount;
};

/* A per-listener-stack count of open connections that outlives the
 * listener while its connections stay open. */
typedef struct ms_pcount_s {
  size_t n;
  bool orphan; /* the listener is gone: free at n == 0 */
} ms_pcount_t;

/* stream.c */
int ms__stream_set_stack(ms_stream_t *s, const char *stack);
/* Attach an authorize value the stream owns (authorize_free at its end). */
void ms__stream_own_auth(ms_stream_t *s, void *auth);
/* A transform's new stream takes over what it did not set itself: remote
 * identity, authorize value (with its ownership), the server flag and the
 * metadata. MS_ENOMEM (copying metadata). */
int ms__stream_inherit(ms_stream_t *upper, ms_stream_t *lower);
/* Hand an accepted authorize value to the user's authorize_free. */
void ms__auth_free(ms_t *ms, void *value);
/* limits.c */
void ms__stream_abort(ms_stream_t *s, int status);
void ms__idle_track(ms_stream_t *s, uint32_t idle_ms);
void ms__idle_untrack(ms_stream_t *s);
void ms__conn_uncount(ms_stream_t *s);
/* The effective limit: the per-stack option limits.KEY, else the
 * multiserver's option (0 = none). */
uint64_t ms__limit(const ms_t *ms, const ms_popts_t *o, const char *key);
void ms__idle_timer_closed(uv_handle_t *h);

/* Run the end-of-turn flushes (multiserver.c's check handle). */
void ms__run_flushes(ms_t *ms);
/* multiserver.c: a flush is queued; run ms__run_flushes at the end of the
 * turn (and keep the poll from blocking until then). */
void ms__flush_wanted(ms_t *ms);

/* multiserver.c */
void ms__live_inc(ms_t *ms);
void ms__live_dec(ms_t *ms);
const ms_proto_entry_t *ms__find_protocol(const ms_t *ms, const char *name);
/* Error message helper: snprintf into a reason buffer (may be NULL). */
void ms__reason(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* stack.c: ws and wss never carry noauth, whatever the options. */
bool ms__browser_reachable(const char *transport);
extern const char ms__noauth_ws_refusal[];

/* Built-in protocols. */
extern const ms_protocol_t ms__proto_net;
extern const ms_protocol_t ms__proto_unix;
extern const ms_protocol_t ms__proto_noauth;
extern const ms_protocol_t ms__proto_shs;
extern const ms_protocol_t ms__proto_noise;
extern const ms_protocol_t ms__proto_gzip;
extern const ms_protocol_t ms__proto_onion;
extern const ms_protocol_t ms__proto_tls;
extern const ms_protocol_t ms__proto_ws;
extern const ms_protocol_t ms__proto_wss;
/* builtins.c: every built-in protocol, NULL-terminated. */
extern const ms_protocol_t *const ms__builtins[];

/* Normalise a protocol struct of any published size into *out (our size;
 * missing hooks NULL). MS_EINVAL for an unknown larger size. */
int ms__proto_copy(const ms_protocol_t *in, ms_protocol_t *out);

/* popts.c: per-stack options. */
struct ms_popts_s {
  size_t n, cap;
  char **proto, **key, **value;
};
int ms__popts_copy(const ms_popts_t *in, ms_popts_t **out);
/* Check the options that name protocols of the stack against their
 * option_keys. MS_EINVAL with a reason. */
struct ms_stack_s;
int ms__popts_check(const ms_popts_t *o, const struct ms_stack_s *st,
                    char *reason, size_t reason_len);

/* stack.c: parse an address, wording a grammar error as "bad address at
 * offset N (alternative A, section S): what" for reason. */
int ms__addr_parse_reason(const char *address, ms_addr_t **out, char *reason,
                          size_t reason_len);

/* stack.c: one ;-alternative resolved against the registry. Section views
 * point into the ms_addr_t, which must outlive the stack. */
typedef struct ms_stack_s {
  size_t nsec;
  ms_section_t secs[MS_ADDR_MAX_SECTIONS];
  const ms_proto_entry_t *protos[MS_ADDR_MAX_SECTIONS];
  int scope;
  const ms_popts_t *opts; /* owned by the listener or connect; may be NULL */
} ms_stack_t;

/* The scope of a transport section (MS_SCOPE_*). */
int ms__transport_scope(const ms_protocol_t *p, const ms_section_t *sec,
                        void *pdata);
/* Is noauth allowed over this scope by the options? */
bool ms__noauth_scope_ok(const ms_options_t *o, int scope);

/* MS_EPROTO_UNKNOWN, MS_ESTACK, MS_EADDRESS/MS_EKEY (validation),
 * MS_ENOAUTH_REMOTE or MS_EINVAL (options), each with a reason. */
int ms__stack_resolve(ms_t *ms, const ms_addr_t *a, size_t alt, int role,
                      const ms_popts_t *opts, ms_stack_t *st, char *reason,
                      size_t reason_len);

/* Runs a stack's transforms (sections 1..n) over a transport stream. The
 * chain starts on a later loop turn, so cb never fires from inside
 * ms__chain_start; it fires exactly once with the final stream or an error
 * of a class (MS_FAIL_PATH / MS_FAIL_AUTH; the lower stream then closed).
 * pw is freed right after cb returns. */
typedef void (*ms_chain_cb)(ms_pwrap_t *pw, ms_stream_t *s, int status,
                            int fclass, const char *reason, void *arg);
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
  int sync_class;
  char sync_reason[MS_REASON_LEN];
  bool in_flight;  /* a transform's wrap is pending */
  bool canceled;
  /* Authorization (ms_pwrap_authorize) of the transform being applied. */
  ms_authorize_t *areq;  /* pending application request */
  ms_authorized_cb acb;
  void *aarg;
  bool aaccepted;
  ms_defer_t anode;      /* delivers the answer on a later turn */
  void *avalue;          /* accepted value not yet attached to a stream */
  bool has_avalue;
  ms_defer_t start_node;
  char source[80];       /* the peer (transport address less its port), for limits */
  uint64_t t_step;       /* loop time the current transform started */
  ms_chain_cb cb;
  void *arg;
  ms_pwrap_t *next, *prev; /* owner's list */
};
/* NULL (and lower closed) only on ENOMEM. */
ms_pwrap_t *ms__chain_start(ms_t *ms, const ms_stack_t *st, ms_stream_t *lower,
                            int role, ms_chain_cb cb, void *arg);
void ms__chain_cancel(ms_pwrap_t *pw);

/* authorize.c */
struct ms_authorize_s {
  ms_pwrap_t *pw; /* NULL once the wrap has gone or withdrew the request */
  ms_t *ms;
  char kind[32];
  char proto[32];
  char *address;
  size_t len;
  uint8_t id[]; /* len bytes */
};

/* log.c: a line through the log hook (multiserver_log.h), formatted into a
 * stack buffer only when a hook is set and level passes its minimum. */
void ms__log(ms_t *ms, int level, const char *subsystem, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline bool ms__log_on(const ms_t *ms, int level) {
  return ms->log_fn != NULL && level <= ms->log_min;
}

#endif /* MS_INTERNAL_H */
