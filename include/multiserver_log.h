/*
 * multiserver — a log hook.
 *
 * The core says what an operator wants to know (a connection refused by a
 * limit, a handshake that failed on an accepted connection, a connect
 * alternative that failed and the connect's outcome, an idle timeout)
 * through one callback per multiserver. Nothing is formatted unless a hook
 * is set and the line's level passes the hook's minimum, so a multiserver
 * without a hook pays one comparison per would-be line.
 *
 * The hook runs on the loop thread, synchronously, inside whatever the core
 * was doing: it must not call back into the multiserver (close a stream,
 * connect, ...) and should return quickly. `subsystem` and `message` are
 * valid for the call only. Lines longer than MS_LOG_LINE - 1 bytes are
 * truncated.
 */
#ifndef MULTISERVER_LOG_H
#define MULTISERVER_LOG_H

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Levels, most severe first: a hook with min_level MS_LOG_INFO gets
 * errors, warnings and info lines, no debug lines. */
enum {
  MS_LOG_ERROR = 0,
  MS_LOG_WARN = 1,
  MS_LOG_INFO = 2,
  MS_LOG_DEBUG = 3,
};

/* The longest line (with its NUL) handed to a hook. */
#define MS_LOG_LINE 512

typedef void (*ms_log_fn)(int level, const char *subsystem,
                          const char *message, void *arg);

/* Set (or with fn NULL remove) the log hook of ms; lines with a level above
 * min_level (less severe) are dropped before formatting. Call it on the
 * loop thread (before ms_thread_start, or through ms_call). MS_EINVAL for a
 * NULL ms or a level outside MS_LOG_ERROR..MS_LOG_DEBUG. */
MS_EXTERN int ms_set_log(ms_t *ms, ms_log_fn fn, void *arg, int min_level);

/* Log a line through ms's hook (printf-style), for protocols and plugins;
 * on the loop thread. Does nothing (formats nothing) without a hook or
 * when level is below the hook's minimum. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 4, 5)))
#endif
MS_EXTERN void ms_log(ms_t *ms, int level, const char *subsystem,
                      const char *fmt, ...);

#ifdef __cplusplus
}
#endif

#endif /* MULTISERVER_LOG_H */
