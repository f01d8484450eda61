/*
 * multiserver on a libuv loop of your own. Kept apart from multiserver.h so
 * that header needs no uv.h.
 */
#ifndef MULTISERVER_UV_H
#define MULTISERVER_UV_H

#include <uv.h>
#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Like ms_new(), on an existing loop that the caller runs (uv_run) and closes
 * after ms_delete(). Same errors as ms_new (MS_EINVAL also for a NULL
 * loop). A failure after the library's handles were made on loop leaves
 * them closing: the memory is freed the next time the caller runs loop. */
MS_EXTERN int ms_new_on_loop(ms_t **out, uv_loop_t *loop,
                             const ms_options_t *opts);
/* The loop a multiserver runs on. Plugins create their libuv handles
 * (UDP sockets, timers) on it, close them before their instance is
 * destroyed, and hold ms_ref() while any is open. Valid until ms_delete(). */
MS_EXTERN uv_loop_t *ms_loop(const ms_t *ms);

/* ---- an ms_stream over a libuv stream handle (TCP, pipe) ----
 * What net and unix are built on, for transports of your own: reads land in
 * the loop's read slab, writes go straight to uv_write with no allocation
 * (a buffer inside the read slab, as an echo writes, is copied first). */
typedef struct ms_uvstream_s ms_uvstream_t;
/* A container holding the handle; initialise the handle in place
 * (uv_tcp_init(ms_loop(ms), ms_uvstream_tcp(u))), connect it, then start.
 * NULL on ENOMEM. */
MS_EXTERN ms_uvstream_t *ms_uvstream_alloc(void);
MS_EXTERN uv_tcp_t *ms_uvstream_tcp(ms_uvstream_t *u);
MS_EXTERN uv_pipe_t *ms_uvstream_pipe(ms_uvstream_t *u);
/* Close an un-started container's handle (if initialised) and free it
 * (once the close has run on the loop). */
MS_EXTERN void ms_uvstream_discard(ms_uvstream_t *u);
/* Wrap the (initialised, connected) handle into a new stream that owns the
 * container (address copied, may be NULL); NULL on ENOMEM (the container
 * is then still the caller's). */
MS_EXTERN ms_stream_t *ms_uvstream_start(ms_uvstream_t *u, ms_t *ms,
                                         const char *address);
/* Accept one pending connection of a listening TCP (tcp = true) or pipe
 * handle into a new stream; name() tunes the accepted handle and formats
 * the stream's address into buf. Returns 0 with *out, or an error: nothing
 * leaks, and the pending connection is taken off the queue even then, so
 * the listener keeps going. Errors: MS_ENOMEM, libuv's (uv_tcp_init,
 * uv_pipe_init, uv_accept), or what name() returned. */
typedef int (*ms_uv_name_fn)(ms_uvstream_t *u, char *buf, size_t len,
                             void *arg);
MS_EXTERN int ms_uvstream_accept(ms_t *ms, uv_stream_t *server, bool tcp,
                                 ms_uv_name_fn name, void *arg,
                                 ms_stream_t **out);
/* The libuv handle under a stream made by ms_uvstream_start, or NULL for
 * any other stream (for socket options, peer credentials). */
MS_EXTERN uv_stream_t *ms_uvstream_handle(ms_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif /* MULTISERVER_UV_H */
