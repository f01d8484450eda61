/*
 * Limits that keep a server standing whatever its peers do: open
 * connections and pending handshakes (global and per source address),
 * idle streams, and what one stream may queue for writing; and the
 * counters that show them (ms_stats).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define IDLE_TICK_MS 100

void ms_stats(const ms_t *ms, ms_stats_t *out) {
  if (ms == NULL || out == NULL) return;
  *out = ms->stats;
  out->size = sizeof(*out);
}

uint64_t ms__limit(const ms_t *ms, const ms_popts_t *o, const char *key) {
  const char *v = ms_popts_get(o, "limits", key);
  uint64_t n;
  if (v && ms_opt_uint(v, UINT64_MAX, &n) == 0) return n;
  const ms_options_t *mo = &ms->opts;
  if (strcmp(key, "max_connections") == 0) return mo->max_connections;
  if (strcmp(key, "max_handshakes") == 0) return mo->max_handshakes;
  if (strcmp(key, "max_handshakes_per_source") == 0) return mo->max_handshakes_per_source;
  if (strcmp(key, "idle_timeout_ms") == 0) return mo->idle_timeout_ms;
  if (strcmp(key, "max_write_queue") == 0) return mo->max_write_queue;
  return 0;
}

void ms__conn_uncount(ms_stream_t *s) {
  s->counted = false;
  if (s->ms->stats.connections) s->ms->stats.connections--;
  ms_pcount_t *pc = s->pcount;
  s->pcount = NULL;
  if (pc) {
    pc->n--;
    if (pc->orphan && pc->n == 0) free(pc);
  }
}

/* ---- idle timeout: one ticker per multiserver -------------------------- */

static void on_idle_tick(uv_timer_t *t) {
  ms_t *ms = t->data;
  uint64_t now = uv_now(ms->loop);
  for (ms_stream_t *s = ms->idle_head, *next; s; s = next) {
    next = s->inext;
    if (now - s->last_active < s->idle_ms) continue;
    ms->stats.idle_timeouts++;
    ms__log(ms, MS_LOG_INFO, "limits", "%s: idle for %u ms: closed", ms_stream_address(s),
            (unsigned)s->idle_ms);
    ms__stream_abort(s, MS_ETIMEDOUT); /* untracks s */
  }
  if (ms->idle_head == NULL && ms->idle_timer_on) {
    uv_timer_stop(&ms->idle_timer);
    ms->idle_timer_on = false;
  }
}

void ms__idle_track(ms_stream_t *s, uint32_t idle_ms) {
  if (idle_ms == 0 || s->idle_ms) return;
  ms_t *ms = s->ms;
  s->idle_ms = idle_ms;
  s->last_active = uv_now(ms->loop);
  s->iprev = NULL;
  s->inext = ms->idle_head;
  if (ms->idle_head) ms->idle_head->iprev = s;
  ms->idle_head = s;
  if (!ms->idle_timer_on) {
    uint64_t tick = idle_ms / 4 < IDLE_TICK_MS ? (idle_ms / 4 ? idle_ms / 4 : 1) : IDLE_TICK_MS;
    uv_timer_start(&ms->idle_timer, on_idle_tick, tick, tick);
    ms->idle_timer_on = true;
  }
}

void ms__idle_untrack(ms_stream_t *s) {
  if (s->idle_ms == 0) return;
  ms_t *ms = s->ms;
  if (s->iprev)
    s->iprev->inext = s->inext;
  else
    ms->idle_head = s->inext;
  if (s->inext) s->inext->iprev = s->iprev;
  s->inext = s->iprev = NULL;
  s->idle_ms = 0;
}
