/* Socket-test helpers shared by the C test binaries (util_net.c): bounded
 * loop runs, free ports, temp dirs, address splitting, an echo server,
 * connect/accept recorders, and drivers for the exchanges that more than
 * one suite runs (bulk echo, half-close).
 *
 * Most helpers only return values for the caller to check. The ones marked
 * CHECKs assert themselves: mstest.h's counters are one pair per test
 * binary, so their CHECKs count towards the suite that calls them (a failure
 * names a line in util_net.c; the helper also prints what it was doing). */
#ifndef MS_TEST_UTIL_H
#define MS_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>
#include <uv.h>

#include "multiserver.h"
#include "multiserver_uv.h"

/* Run loop until *counter >= target; false (with a message) if timeout_ms
 * passed first. A guard timer keeps the loop alive meanwhile. */
bool tu_wait(uv_loop_t *loop, const int *counter, int target,
             unsigned timeout_ms, const char *what);
/* Let the loop run out of work (uv_run DEFAULT) with an unreferenced guard:
 * false if it was still busy after timeout_ms (something leaked a handle). */
bool tu_drain(uv_loop_t *loop, unsigned timeout_ms);
/* Run loop for about ms milliseconds. */
void tu_sleep_loop(uv_loop_t *loop, unsigned ms);

/* A suite's test table and runner: runs the tests named on the command line
 * (all when none) and prints "name ok|FAILED (N ms)" for each on stderr. */
typedef struct {
  const char *name;
  void (*fn)(void);
} tu_test_t;
void tu_run_tests(const tu_test_t *tests, size_t n, int argc, char **argv);

/* ms_options_init with 5 s handshake and connect timeouts. */
void tu_opts_default(ms_options_t *o);

/* A TCP port on 127.0.0.1 that was free a moment ago (nobody listens). */
int tu_closed_port(void);
uint64_t tu_now_ms(void);
/* mkdtemp under /tmp (static buffer per call: copy if you keep it). */
char *tu_mkdtemp(void);
/* Remove a directory and the files directly in it. */
void tu_rmtree(const char *dir);

/* Alternative alt of a parsed address, printed (malloc'd, ms_free). */
char *tu_alt_string(const ms_addr_t *a, size_t alt);
/* Number of ;-alternatives of an address string and each one printed. */
size_t tu_split(const char *address, char ***out); /* free with tu_split_free */
void tu_split_free(char **v, size_t n);

/* Base64 of a 32-byte key (static buffer). */
const char *tu_b64(const uint8_t key[32]);

/* Echo server: echoes every byte, respects backpressure (stops reading
 * above the high-water mark, resumes on drain), answers EOF with shutdown
 * and closes after it. */
typedef struct {
  int accepted;
  int eof;
  int closed;
  int errors;
  int last_error;
  size_t bytes;
  char last_stack[512];
  char last_address[512];
} tu_echo_t;
void tu_echo_on_connection(ms_stream_t *s, void *arg /* tu_echo_t */);

/* Listener error callback recording into tu_lerr_t. */
typedef struct {
  int count;
  int last_status;
  char last_reason[512];
  char last_stack[512];
} tu_lerr_t;
void tu_on_listen_error(const char *stack, int status, const char *reason,
                        void *arg);

/* Listener close callback: increments *(int *)arg. */
void tu_on_listener_closed(ms_listener_t *l, void *arg);
/* Stream close callback: increments *(int *)arg (may be NULL). */
void tu_on_stream_closed(ms_stream_t *s, void *arg);

/* ---- connect and accept recorders -------------------------------------- */

/* What an ms_connect callback reported. */
typedef struct {
  int done; /* callbacks so far */
  int status;
  char reason[2048];
  ms_stream_t *s;
  bool in_call;       /* set around ms_connect / ms_connect_cancel */
  bool fired_in_call; /* the callback fired from inside one of them */
  uint64_t at;        /* tu_now_ms() when it fired */
} tu_conn_t;
void tu_on_conn(ms_stream_t *s, int status, const char *reason, void *arg);
/* Reset r, then ms_connect(ms, addr) into it; returns ms_connect's result. */
int tu_connect(ms_t *ms, const char *addr, tu_conn_t *r, ms_connect_t **req);
/* ms_connect_cancel(req) with r->in_call set around it. */
void tu_cancel(tu_conn_t *r, ms_connect_t *req);
/* For ms_call: ms_connect_cancel(((tu_cancel_arg_t *)arg)->req). */
typedef struct {
  ms_connect_t *req;
} tu_cancel_arg_t;
void tu_cancel_now(void *arg);

/* Connection callback keeping up to 16 accepted streams (closes others). */
typedef struct {
  int n;
  ms_stream_t *s[16];
} tu_accept_t;
void tu_on_accept(ms_stream_t *s, void *arg /* tu_accept_t */);

/* Shutdown callback: done++ and the status, into a tu_shut_t. */
typedef struct {
  int done;
  int status;
} tu_shut_t;
void tu_on_shut(ms_stream_t *s, int status, void *arg);

/* CHECKs: ms_listen(ms, addr, cb, arg) succeeds (else it prints why);
 * returns the listener, or NULL. */
ms_listener_t *tu_listen_ok(ms_t *ms, const char *addr, ms_connection_cb cb,
                            void *arg);
/* CHECKs: close l and wait (up to wait_ms) for its close callback, which
 * must not run inside ms_listener_close. */
void tu_close_listener(uv_loop_t *loop, ms_listener_t *l, unsigned wait_ms);
/* CHECKs: close the non-NULL streams of v[0..n) and wait for all their
 * close callbacks, none of which may run inside ms_stream_close. */
void tu_close_streams(uv_loop_t *loop, ms_stream_t **v, int n, unsigned wait_ms);

/* ---- bulk echo --------------------------------------------------------- */

#define TU_BULK_CHUNK (64u * 1024) /* the bulk client's write size */

typedef struct {
  const uint8_t *data; /* what to send: total bytes */
  size_t total;
  size_t high_water;  /* set on the client stream when non-zero */
  size_t queue_limit; /* non-zero: CHECK that backpressure engaged (drain
                         callbacks) and the write queue never grew past
                         queue_limit + TU_BULK_CHUNK */
  unsigned timeout_ms;       /* for the whole round trip */
  unsigned close_timeout_ms; /* for the echo side's close after it */
  const ms_popts_t *opts;    /* per-stack options for the connect (may be NULL) */
} tu_bulk_cfg_t;

/* The bulk client: writes cfg.data in TU_BULK_CHUNK pieces while the stream
 * is writable (resuming on drain), then shuts down, and reads the echo back
 * into a running hash and a byte-by-byte comparison. */
typedef struct {
  tu_bulk_cfg_t cfg;
  ms_stream_t *s;
  size_t sent, recvd;
  crypto_generichash_state h;
  bool mismatch;
  int status;
  int done; /* closed, or the connect failed */
  int eof;
  int drains;
  int write_errors;
  int shut_status;
  bool shut;
  size_t max_queue;
  /* what the connected client stream reported */
  char address[512];
  bool has_key;
  uint8_t remote_key[32];
  bool is_server;
} tu_bulk_t;

/* CHECKs: echo cfg->total bytes through addr (a tu_echo_on_connection
 * listener whose counters are echo) from a bulk client on cli, and check
 * everything a clean round trip implies, on both sides. b keeps the
 * client's record for further checks. */
void tu_bulk_echo(uv_loop_t *loop, ms_t *cli, const char *addr,
                  const tu_bulk_cfg_t *cfg, tu_echo_t *echo, tu_bulk_t *b);

/* ---- half-close -------------------------------------------------------- */

#define TU_HC_REQ 200000   /* client to server, then the client shuts down */
#define TU_HC_REPLY 300000 /* server to client, after the server saw EOF */

/* CHECKs: srv listens on listen_addr; a client on cli sends TU_HC_REQ
 * random bytes and shuts down at once; the server, on EOF, replies
 * TU_HC_REPLY bytes, then (mode 0) shuts down and closes, or (mode 1) closes
 * without shutdown. Checks both sides, that the client's read ends with
 * want_end, and closes the listener. after_shutdown (may be NULL) runs on the
 * client right after its ms_stream_shutdown call, for a suite's own checks.
 * The waits are bounded by wait_ms. */
void tu_half_close(uv_loop_t *loop, ms_t *srv, ms_t *cli, const char *listen_addr,
                   int mode, int want_end, unsigned wait_ms,
                   void (*after_shutdown)(ms_stream_t *s, const tu_shut_t *shut));

#endif
