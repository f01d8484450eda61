/* Socket-test helpers shared by the C test binaries (util_net.c): bounded
 * loop runs, free ports, temp dirs, address splitting and an echo server.
 * The helpers never CHECK (mstest.h counters are per file): they return
 * values for the caller to check. */
#ifndef MS_TEST_UTIL_H
#define MS_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
