/* multiserver serve [--echo | --sink] ADDRESS...: listen on every stack. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "multiserver_uv.h"
#include "multiserver_ws.h"

enum { MODE_BRIDGE, MODE_ECHO, MODE_SINK };

typedef struct conn_s conn_t;
struct conn_s {
  ms_stream_t *s;
  conn_t *next, *prev;
  bool closing;
};

static struct {
  ms_t *ms;
  ms_listener_t *listener;
  int mode;
  conn_t *conns;
  bool bridged;
  bool stopping;
  int exit_code;
  uv_signal_t sigint, sigterm;
  uv_timer_t stats_timer;
  bool stats_on;
} sv;

/* --stats: the counters, one line a second on stderr (and at exit). */
static void print_stats(void) {
  ms_stats_t st;
  ms_stats(sv.ms, &st);
  fprintf(stderr,
          "multiserver: stats connections=%llu handshakes=%llu accepted=%llu "
          "refused_connections=%llu refused_handshakes=%llu refused_per_source=%llu "
          "handshake_failures=%llu idle_timeouts=%llu\n",
          (unsigned long long)st.connections, (unsigned long long)st.handshakes,
          (unsigned long long)st.accepted, (unsigned long long)st.refused_connections,
          (unsigned long long)st.refused_handshakes, (unsigned long long)st.refused_per_source,
          (unsigned long long)st.handshake_failures, (unsigned long long)st.idle_timeouts);
}

static void on_stats(uv_timer_t *t) {
  (void)t;
  print_stats();
}

static void stop_all(void);

static void on_conn_closed(ms_stream_t *s, void *arg) {
  (void)s;
  conn_t *c = arg;
  if (c->prev) c->prev->next = c->next; else sv.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  ms_stream_close(c->s, on_conn_closed, c);
}

/* ---- echo and sink ----------------------------------------------------- */

static void on_echo_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  free(arg);
}

static void on_shutdown(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  conn_close(arg);
}

static void on_conn_read(ms_stream_t *s, int status, const uint8_t *data,
                         size_t len, void *arg);

static void on_drain(ms_stream_t *s, void *arg) {
  conn_t *c = arg;
  if (!c->closing) ms_stream_read_start(s, on_conn_read, c);
}

static void on_conn_read(ms_stream_t *s, int status, const uint8_t *data,
                         size_t len, void *arg) {
  conn_t *c = arg;
  if (status == 0) {
    if (sv.mode == MODE_SINK) return;
    /* Read bytes are only valid during this callback: copy for the write. */
    uint8_t *copy = malloc(len);
    if (copy == NULL) {
      conn_close(c);
      return;
    }
    memcpy(copy, data, len);
    ms_buf_t b = {copy, len};
    if (ms_stream_write(s, &b, 1, on_echo_written, copy) != 0) {
      free(copy);
      conn_close(c);
      return;
    }
    if (!ms_stream_writable(s)) ms_stream_read_stop(s); /* backpressure */
    return;
  }
  if (status == MS_EOF) {
    /* Remote finished: finish ours after what is queued, then close. */
    if (ms_stream_shutdown(s, on_shutdown, c) != 0) conn_close(c);
    return;
  }
  cli_err("connection %s: %s", ms_stream_address(s), ms_strerror(status));
  conn_close(c);
}

/* ---- bridge ------------------------------------------------------------- */

static void on_bridge_done(int status, const char *reason, void *arg) {
  (void)arg;
  if (status != 0) {
    cli_err("connection failed: %s", reason ? reason : ms_strerror(status));
    sv.exit_code = 1;
  }
  sv.conns = NULL; /* the bridge closed (and owned) the stream */
  stop_all();
}

/* ---- listener ------------------------------------------------------------ */

static void on_connection(ms_stream_t *s, void *arg) {
  (void)arg;
  cli_err("connection %s on %s", ms_stream_address(s),
          ms_stream_stack(s) ? ms_stream_stack(s) : "?");
  if (sv.stopping) {
    ms_stream_close(s, NULL, NULL);
    return;
  }
  if (sv.mode == MODE_BRIDGE) {
    if (sv.bridged) {
      cli_err("busy: closing %s", ms_stream_address(s));
      ms_stream_close(s, NULL, NULL);
      return;
    }
    sv.bridged = true;
    if (cli_bridge_start(sv.ms, s, on_bridge_done, NULL) != 0) {
      ms_stream_close(s, NULL, NULL);
      sv.exit_code = 1;
      stop_all();
    }
    return;
  }
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    ms_stream_close(s, NULL, NULL);
    return;
  }
  c->s = s;
  c->next = sv.conns;
  if (sv.conns) sv.conns->prev = c;
  sv.conns = c;
  ms_stream_on_drain(s, on_drain, c);
  if (ms_stream_read_start(s, on_conn_read, c) != 0) conn_close(c);
}

static void on_listen_error(const char *stack, int status, const char *reason,
                            void *arg) {
  (void)arg;
  cli_err("error on %s: %s (%s)", stack ? stack : "?", reason ? reason : "",
          ms_err_name(status));
}

static void stop_all(void) {
  if (sv.stopping) return;
  sv.stopping = true;
  uv_close((uv_handle_t *)&sv.sigint, NULL);
  uv_close((uv_handle_t *)&sv.sigterm, NULL);
  if (sv.stats_on) {
    print_stats();
    uv_close((uv_handle_t *)&sv.stats_timer, NULL);
    sv.stats_on = false;
  }
  if (sv.listener) ms_listener_close(sv.listener, NULL, NULL);
  sv.listener = NULL;
  for (conn_t *c = sv.conns; c; c = c->next) conn_close(c);
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  (void)signum;
  stop_all();
}

int cli_serve(int argc, char **argv) {
  static cli_opts_t o;
  size_t cap = 1, len = 0;
  static char http_root[PATH_MAX];
  bool have_root = false;
  int scope = 0;
  bool stats = false;
  char *joined = calloc(1, 1);
  sv.mode = MODE_BRIDGE;
  for (int i = 1; i < argc; i++) {
    int r = cli_common_option(&o, argc, argv, &i, true);
    if (r < 0) { free(joined); return 2; }
    if (r > 0) continue;
    if (strcmp(argv[i], "--echo") == 0) {
      sv.mode = MODE_ECHO;
      continue;
    }
    if (strcmp(argv[i], "--http-root") == 0) {
      if (i + 1 >= argc) {
        cli_err("--http-root needs a directory");
        { free(joined); return 2; }
      }
      if (realpath(argv[++i], http_root) == NULL) {
        cli_err("--http-root: %s: %s", argv[i], strerror(errno));
        { free(joined); return 2; }
      }
      have_root = true;
      continue;
    }
    if (strcmp(argv[i], "--sink") == 0) {
      sv.mode = MODE_SINK;
      continue;
    }
    if (strcmp(argv[i], "--scope") == 0) {
      const char *v = i + 1 < argc ? argv[++i] : "";
      scope = strcmp(v, "device") == 0   ? 1
              : strcmp(v, "local") == 0  ? 3
              : strcmp(v, "public") == 0 ? 4
                                         : -1;
      if (scope < 0) {
        cli_err("--scope: device, local or public, got \"%s\"", v);
        { free(joined); return 2; }
      }
      continue;
    }
    if (strcmp(argv[i], "--stats") == 0) {
      stats = true;
      continue;
    }
    if (argv[i][0] == '-' && argv[i][1] == '-') {
      cli_err("serve: unknown option %s", argv[i]);
      { free(joined); return 2; }
    }
    size_t n = strlen(argv[i]);
    cap = len + n + 2;
    char *nj = realloc(joined, cap);
    if (nj == NULL) return 1;
    joined = nj;
    if (len) joined[len++] = ';';
    memcpy(joined + len, argv[i], n + 1);
    len += n;
  }
  if (len == 0) {
    cli_err("serve: at least one ADDRESS expected");
    free(joined);
    return 2;
  }
  ms_options_t mo;
  cli_ms_options(&o, &mo);
  int rc = ms_new(&sv.ms, &mo);
  if (rc != 0) {
    cli_err("cannot start: %s", ms_strerror(rc));
    return 1;
  }
  if (have_root && (rc = ms_ws_set_http_handler(sv.ms, cli_http_handler, http_root)) != 0) {
    cli_err("--http-root: %s", ms_strerror(rc));
    ms_delete(sv.ms);
    return 1;
  }
  char reason[512] = "";
  rc = ms_listen_with(sv.ms, joined, o.popts, on_connection, NULL, &sv.listener, reason,
                      sizeof reason);
  free(joined);
  if (rc != 0) {
    cli_err("cannot listen: %s", reason[0] ? reason : ms_strerror(rc));
    ms_run(sv.ms, MS_RUN_DEFAULT);
    ms_delete(sv.ms);
    return 1;
  }
  ms_listener_on_error(sv.listener, on_listen_error, NULL);
  uv_signal_init(ms_loop(sv.ms), &sv.sigint);
  uv_signal_init(ms_loop(sv.ms), &sv.sigterm);
  uv_signal_start(&sv.sigint, on_signal, SIGINT);
  uv_signal_start(&sv.sigterm, on_signal, SIGTERM);
  if (scope) {
    /* What a peer in that scope can dial, one line as ever. */
    char *a = ms_listener_addresses(sv.listener, scope);
    printf("%s\n", a ? a : "");
    ms_free(a);
  } else {
    printf("%s\n", ms_listener_address(sv.listener));
  }
  if (stats) {
    sv.stats_on = true;
    uv_timer_init(ms_loop(sv.ms), &sv.stats_timer);
    uv_timer_start(&sv.stats_timer, on_stats, 1000, 1000);
    uv_unref((uv_handle_t *)&sv.stats_timer);
  }
  fflush(stdout);
  ms_run(sv.ms, MS_RUN_DEFAULT);
  cli_stdin_stop();
  rc = ms_delete(sv.ms);
  if (rc != 0) cli_err("shutdown: %s", ms_strerror(rc));
  ms_keypair_wipe(&o.keys);
  ms_popts_free(o.popts);
  return sv.exit_code;
}
