/*
 * The log hook (multiserver_log.h): one callback per multiserver, lines
 * formatted into a stack buffer only when a hook is set and the level
 * passes.
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"
#include "multiserver_log.h"

int ms_set_log(ms_t *ms, ms_log_fn fn, void *arg, int min_level) {
  if (ms == NULL || min_level < MS_LOG_ERROR || min_level > MS_LOG_DEBUG) return MS_EINVAL;
  ms->log_fn = fn;
  ms->log_arg = fn ? arg : NULL;
  ms->log_min = min_level;
  return 0;
}

static void vlog(ms_t *ms, int level, const char *subsystem, const char *fmt, va_list ap) {
  char line[MS_LOG_LINE];
  vsnprintf(line, sizeof line, fmt, ap);
  ms->log_fn(level, subsystem ? subsystem : "", line, ms->log_arg);
}

void ms__log(ms_t *ms, int level, const char *subsystem, const char *fmt, ...) {
  if (!ms__log_on(ms, level)) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(ms, level, subsystem, fmt, ap);
  va_end(ap);
}

void ms_log(ms_t *ms, int level, const char *subsystem, const char *fmt, ...) {
  if (ms == NULL || fmt == NULL || !ms__log_on(ms, level)) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(ms, level, subsystem, fmt, ap);
  va_end(ap);
}
