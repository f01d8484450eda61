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
 * after ms_delete(). */
MS_EXTERN int ms_new_on_loop(ms_t **out, uv_loop_t *loop,
                             const ms_options_t *opts);
/* The loop a multiserver runs on. */
MS_EXTERN uv_loop_t *ms_loop(const ms_t *ms);

#ifdef __cplusplus
}
#endif
#endif /* MULTISERVER_UV_H */
