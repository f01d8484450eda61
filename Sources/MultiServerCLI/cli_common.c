/* Options and stdio plumbing shared by the multiserver subcommands. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "cli.h"

void cli_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("multiserver: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
}

int cli_write_all(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static const char *value(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) {
    cli_err("%s needs a value", argv[*i]);
    return NULL;
  }
  return argv[++*i];
}

int cli_common_option(cli_opts_t *o, int argc, char **argv, int *i,
                      bool allow_authorize) {
  const char *a = argv[*i];
  const char *v;
  if (strcmp(a, "--keys") == 0) {
    if ((v = value(argc, argv, i)) == NULL) return -1;
    int rc = ms_keypair_load(&o->keys, v);
    if (rc != 0) {
      cli_err("cannot load keys from %s: %s", v, ms_strerror(rc));
      return -1;
    }
    o->have_keys = true;
    return 1;
  }
  if (strcmp(a, "--app-key") == 0) {
    if ((v = value(argc, argv, i)) == NULL) return -1;
    if (ms_key_from_base64(o->app_key, v, strlen(v)) != 0) {
      cli_err("--app-key: not base64 of 32 bytes: %s", v);
      return -1;
    }
    o->have_app_key = true;
    return 1;
  }
  if (allow_authorize && strcmp(a, "--authorize") == 0) {
    if ((v = value(argc, argv, i)) == NULL) return -1;
    if (o->nallow == CLI_MAX_AUTH) {
      cli_err("--authorize: at most %d keys", CLI_MAX_AUTH);
      return -1;
    }
    if (ms_key_from_id(o->allow[o->nallow], v) != 0) {
      cli_err("--authorize: not an ed25519 id (@<base64>.ed25519): %s", v);
      return -1;
    }
    o->nallow++;
    return 1;
  }
  if (strcmp(a, "--allow-remote-noauth") == 0) {
    o->allow_remote_noauth = true;
    return 1;
  }
  if (strcmp(a, "--allow-loopback-noauth") == 0) {
    o->allow_loopback_noauth = true;
    return 1;
  }
  if (strcmp(a, "--opt") == 0) {
    if ((v = value(argc, argv, i)) == NULL) return -1;
    int rc = o->popts ? 0 : ms_popts_new(&o->popts);
    if (rc == 0) rc = ms_popts_parse(o->popts, v);
    if (rc != 0) {
      cli_err("--opt: expected PROTOCOL.KEY=VALUE (e.g. shs.handshake_timeout_ms=5000), got %s", v);
      return -1;
    }
    return 1;
  }
  if (strcmp(a, "--allow-origin") == 0) {
    /* Sugar for the option ws.origins (and wss.origins): a list of the
     * Origin values a ws/wss listener accepts. */
    if ((v = value(argc, argv, i)) == NULL) return -1;
    if (*v == '\0' || strchr(v, ',')) {
      cli_err("--allow-origin: one origin per flag (e.g. https://example.com), got %s", v);
      return -1;
    }
    int rc = o->popts ? 0 : ms_popts_new(&o->popts);
    const char *cur = rc == 0 ? ms_popts_get(o->popts, "ws", "origins") : NULL;
    size_t n = (cur ? strlen(cur) + 1 : 0) + strlen(v) + 1;
    char *list = rc == 0 ? malloc(n) : NULL;
    if (list == NULL) return -1;
    snprintf(list, n, "%s%s%s", cur ? cur : "", cur ? "," : "", v);
    rc = ms_popts_set(o->popts, "ws", "origins", list);
    if (rc == 0) rc = ms_popts_set(o->popts, "wss", "origins", list);
    free(list);
    if (rc != 0) {
      cli_err("--allow-origin: %s", ms_strerror(rc));
      return -1;
    }
    return 1;
  }
  if (strcmp(a, "--timeout") == 0) {
    if ((v = value(argc, argv, i)) == NULL) return -1;
    char *end;
    unsigned long t = strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || t == 0 || t > 3600000) {
      cli_err("--timeout: milliseconds 1..3600000, got %s", v);
      return -1;
    }
    o->timeout_ms = (unsigned)t;
    return 1;
  }
  return 0;
}

static void authorize_hook(const uint8_t key[MS_PUBLICKEYBYTES],
                           ms_authorize_t *req, void *arg) {
  cli_opts_t *o = arg;
  for (size_t i = 0; i < o->nallow; i++) {
    if (memcmp(o->allow[i], key, MS_PUBLICKEYBYTES) == 0) {
      ms_authorize_done(req, true, NULL);
      return;
    }
  }
  char id[MS_ID_LEN + 1];
  ms_key_to_id(key, id, sizeof id);
  cli_err("refused %s: not in the --authorize list", id);
  ms_authorize_done(req, false, NULL);
}

void cli_ms_options(cli_opts_t *o, ms_options_t *mo) {
  ms_options_init(mo);
  if (o->have_keys) mo->keys = &o->keys;
  if (o->have_app_key) mo->app_key = o->app_key;
  if (o->nallow) {
    mo->authorize = authorize_hook;
    mo->authorize_arg = o;
  }
  mo->allow_remote_noauth = o->allow_remote_noauth;
  mo->allow_loopback_noauth = o->allow_loopback_noauth;
  if (o->timeout_ms) {
    mo->connect_timeout_ms = o->timeout_ms;
    mo->handshake_timeout_ms = o->timeout_ms;
  }
}

/* ---- stdin pump -------------------------------------------------------- */

/* A ring of chunks: the thread reads into a free one while the loop writes
 * the others, so reading and sending overlap; at most STDIN_CHUNKS chunks
 * are in flight (bounded memory, natural backpressure). */
#define STDIN_CHUNK (64 * 1024)
#define STDIN_CHUNKS 4

static struct {
  uv_mutex_t lock; /* guards ms against cli_stdin_stop */
  ms_t *ms;
  cli_stdin_cb cb;
  void *arg;
  uv_sem_t free_chunks;
  uv_thread_t thread;
  uint8_t buf[STDIN_CHUNKS][STDIN_CHUNK];
  ssize_t n[STDIN_CHUNKS];
  int err;
  bool started;
} in;

static void deliver(void *arg) {
  size_t i = (size_t)(uintptr_t)arg;
  if (in.n[i] > 0)
    in.cb(in.buf[i], (size_t)in.n[i], 0, in.arg);
  else
    in.cb(NULL, 0, in.n[i] < 0 ? in.err : 0, in.arg);
}

static void reader(void *unused) {
  (void)unused;
  for (size_t i = 0;; i = (i + 1) % STDIN_CHUNKS) {
    uv_sem_wait(&in.free_chunks);
    ssize_t n;
    do {
      n = read(0, in.buf[i], STDIN_CHUNK);
    } while (n < 0 && errno == EINTR);
    in.n[i] = n;
    if (n < 0) in.err = -errno;
    uv_mutex_lock(&in.lock);
    int rc = in.ms ? ms_call(in.ms, deliver, (void *)(uintptr_t)i) : -1;
    uv_mutex_unlock(&in.lock);
    if (rc != 0 || n <= 0) return;
  }
}

int cli_stdin_start(ms_t *ms, cli_stdin_cb cb, void *arg) {
  in.ms = ms;
  in.cb = cb;
  in.arg = arg;
  int rc = uv_mutex_init(&in.lock);
  if (rc == 0) rc = uv_sem_init(&in.free_chunks, STDIN_CHUNKS);
  if (rc != 0) return rc;
  rc = uv_thread_create(&in.thread, reader, NULL);
  if (rc == 0) in.started = true;
  return rc;
}

void cli_stdin_stop(void) {
  if (!in.started) return;
  uv_mutex_lock(&in.lock);
  in.ms = NULL;
  uv_mutex_unlock(&in.lock);
}

void cli_stdin_done(void) { uv_sem_post(&in.free_chunks); }
