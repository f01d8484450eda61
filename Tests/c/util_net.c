/* Socket-test helpers (see util.h). */
#include "util.h"

#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  uv_timer_t t;
  bool fired;
} guard_t;

static void on_guard(uv_timer_t *t) {
  guard_t *g = (guard_t *)t;
  g->fired = true;
  uv_stop(t->loop);
}

static void noop_close(uv_handle_t *h) { (void)h; }

bool tu_wait(uv_loop_t *loop, const int *counter, int target,
             unsigned timeout_ms, const char *what) {
  guard_t g = {.fired = false};
  uv_timer_init(loop, &g.t);
  uv_timer_start(&g.t, on_guard, timeout_ms, 0);
  while (*counter < target && !g.fired) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&g.t, noop_close);
  uv_run(loop, UV_RUN_NOWAIT); /* the guard's close callback */
  if (*counter < target) {
    fprintf(stderr, "TIMEOUT after %u ms waiting for %s (%d of %d)\n",
            timeout_ms, what, *counter, target);
    return false;
  }
  return true;
}

bool tu_drain(uv_loop_t *loop, unsigned timeout_ms) {
  guard_t g = {.fired = false};
  uv_timer_init(loop, &g.t);
  uv_timer_start(&g.t, on_guard, timeout_ms, 0);
  uv_unref((uv_handle_t *)&g.t);
  uv_run(loop, UV_RUN_DEFAULT);
  bool ok = !g.fired;
  uv_close((uv_handle_t *)&g.t, noop_close);
  uv_run(loop, UV_RUN_NOWAIT);
  if (!ok) fprintf(stderr, "loop still busy after %u ms (leaked handle?)\n", timeout_ms);
  return ok;
}

void tu_sleep_loop(uv_loop_t *loop, unsigned ms) {
  int never = 0;
  guard_t g = {.fired = false};
  uv_timer_init(loop, &g.t);
  uv_timer_start(&g.t, on_guard, ms, 0);
  while (!never && !g.fired) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&g.t, noop_close);
  uv_run(loop, UV_RUN_NOWAIT);
}

int tu_closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &n) != 0) {
    if (fd >= 0) close(fd);
    return 1; /* tcpmux: nobody listens there in a test box */
  }
  close(fd);
  return ntohs(sa.sin_port);
}

uint64_t tu_now_ms(void) { return uv_hrtime() / 1000000u; }

char *tu_mkdtemp(void) {
  static char buf[64];
  snprintf(buf, sizeof buf, "/tmp/mstest-XXXXXX");
  return mkdtemp(buf);
}

void tu_rmtree(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(dir);
}

char *tu_alt_string(const ms_addr_t *a, size_t alt) {
  size_t cap = 4096, len = 0;
  char *out = malloc(cap);
  if (out == NULL) return NULL;
  out[0] = '\0';
  for (size_t s = 0; s < ms_addr_sections(a, alt); s++) {
    len += (size_t)snprintf(out + len, cap - len, "%s%s", s ? "~" : "",
                            ms_addr_name(a, alt, s));
    for (size_t f = 0; f < ms_addr_fields(a, alt, s); f++) {
      size_t flen;
      const char *fd = ms_addr_field(a, alt, s, f, &flen);
      out[len++] = ':';
      len += ms_addr_escape(fd, flen, out + len, cap - len);
    }
  }
  return out;
}

size_t tu_split(const char *address, char ***out) {
  ms_addr_t *a;
  *out = NULL;
  if (ms_addr_parse(address, strlen(address), &a, NULL) != 0) return 0;
  size_t n = ms_addr_alternatives(a);
  char **v = calloc(n, sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = tu_alt_string(a, i);
  ms_addr_free(a);
  *out = v;
  return n;
}

void tu_split_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

const char *tu_b64(const uint8_t key[32]) {
  static char buf[64];
  ms_key_to_base64(key, buf, sizeof buf);
  return buf;
}

/* ---- echo server ------------------------------------------------------ */

typedef struct {
  tu_echo_t *st;
  bool eof;
  bool closing;
} echo_conn_t;

static void echo_closed(ms_stream_t *s, void *arg) {
  (void)s;
  echo_conn_t *c = arg;
  c->st->closed++;
  free(c);
}

static void echo_close(ms_stream_t *s, echo_conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  ms_stream_close(s, echo_closed, c);
}

static void echo_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  free(arg);
}

static void echo_shut(ms_stream_t *s, int status, void *arg) {
  echo_conn_t *c = arg;
  if (status != 0) {
    c->st->errors++;
    c->st->last_error = status;
  }
  echo_close(s, c);
}

static void echo_read(ms_stream_t *s, int status, const uint8_t *data,
                      size_t len, void *arg) {
  echo_conn_t *c = arg;
  if (status == 0) {
    if (len == 0) return;
    uint8_t *copy = malloc(len);
    memcpy(copy, data, len);
    ms_buf_t b = {copy, len};
    c->st->bytes += len;
    int rc = ms_stream_write(s, &b, 1, echo_written, copy);
    if (rc != 0) {
      free(copy);
      c->st->errors++;
      c->st->last_error = rc;
      echo_close(s, c);
      return;
    }
    if (!ms_stream_writable(s)) ms_stream_read_stop(s);
    return;
  }
  if (status == MS_EOF) {
    c->eof = true;
    c->st->eof++;
    if (ms_stream_shutdown(s, echo_shut, c) != 0) echo_close(s, c);
    return;
  }
  c->st->errors++;
  c->st->last_error = status;
  echo_close(s, c);
}

static void echo_drain(ms_stream_t *s, void *arg) {
  echo_conn_t *c = arg;
  if (!c->eof && !c->closing) ms_stream_read_start(s, echo_read, c);
}

void tu_echo_on_connection(ms_stream_t *s, void *arg) {
  tu_echo_t *st = arg;
  echo_conn_t *c = calloc(1, sizeof *c);
  c->st = st;
  st->accepted++;
  snprintf(st->last_stack, sizeof st->last_stack, "%s",
           ms_stream_stack(s) ? ms_stream_stack(s) : "(null)");
  snprintf(st->last_address, sizeof st->last_address, "%s", ms_stream_address(s));
  ms_stream_on_drain(s, echo_drain, c);
  if (ms_stream_read_start(s, echo_read, c) != 0) {
    st->errors++;
    echo_close(s, c);
  }
}

void tu_on_listen_error(const char *stack, int status, const char *reason,
                        void *arg) {
  tu_lerr_t *e = arg;
  e->count++;
  e->last_status = status;
  snprintf(e->last_reason, sizeof e->last_reason, "%s", reason ? reason : "(null)");
  snprintf(e->last_stack, sizeof e->last_stack, "%s", stack ? stack : "(null)");
}

void tu_on_listener_closed(ms_listener_t *l, void *arg) {
  (void)l;
  (*(int *)arg)++;
}

void tu_on_stream_closed(ms_stream_t *s, void *arg) {
  (void)s;
  if (arg) (*(int *)arg)++;
}
