/*
 * ms_onion_publish: an onion service through tor's control port. The
 * control connection is an ordinary ms_connect (net or unix) and the
 * protocol is wire/torctl.c's; this file moves bytes, reads the cookie
 * file and keeps the key file. The service lives as long as the control
 * connection (no Detach flag): closing the handle sends DEL_ONION, and a
 * process that dies takes its service with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "netaddr.h"
#include "torctl.h"

#define ONION_REASON_LEN 512
#define ONION_DEFAULT_CONTROL "net:127.0.0.1:9051"
#define ONION_DEFAULT_TIMEOUT_MS 30000

typedef enum {
  OS_CONNECTING = 1, /* nested connect to the control port */
  OS_EXCHANGE,       /* PROTOCOLINFO .. ADD_ONION */
  OS_PUBLISHED,
  OS_DELETING,       /* DEL_ONION sent */
  OS_CLOSING,        /* the control stream is closing */
  OS_LOST            /* published, then the control connection ended */
} os_state_t;

struct ms_onion_s {
  ms_t *ms;
  os_state_t state;
  char *control, *cookie_file, *key_file;
  uint64_t timeout_ms;
  ms_torctl_t tc;
  ms_connect_t *creq;
  ms_stream_t *s;
  uv_timer_t timer;
  bool published_cb_done; /* the publish callback fired */
  bool close_asked;
  bool key_is_new; /* save tor's PrivateKey to key_file */
  ms_onion_cb cb;
  void *arg;
  ms_onion_close_cb ccb;
  void *carg;
  int status; /* outcome reported when everything has stopped */
  char address[MS_TORCTL_SERVICE_ID_LEN + 8];
  char reason[ONION_REASON_LEN];
};

void ms_onion_opts_init(ms_onion_opts_t *opts) {
  if (opts == NULL) return;
  memset(opts, 0, sizeof *opts);
  opts->size = sizeof *opts;
}

const char *ms_onion_address(const ms_onion_t *o) { return o ? o->address : ""; }

static char *dup_str(const char *v) {
  if (v == NULL) return NULL;
  size_t n = strlen(v) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, v, n);
  return p;
}

/* ---- files --------------------------------------------------------------- */

/* Read up to cap bytes of path into buf: the length, or -errno. */
static long read_file(const char *path, uint8_t *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t n = 0;
  while (n < cap) {
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      return -e;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  return (long)n;
}

/* The key file's key (trailing whitespace ignored), into key. 1 loaded,
 * 0 absent, or an error with a reason. */
static int load_key(const char *path, char *key, size_t cap, char *reason,
                    size_t reason_len) {
  uint8_t buf[256];
  long n = read_file(path, buf, sizeof buf);
  if (n == -ENOENT) return 0;
  if (n < 0) {
    ms_reasonf(reason, reason_len, "onion: cannot read key file %s: %s", path,
               strerror((int)-n));
    return MS_EKEY;
  }
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                   buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    n--;
  if (!ms_torctl_check_key((const char *)buf, (size_t)n) || (size_t)n >= cap) {
    ms_reasonf(reason, reason_len,
               "onion: key file %s does not hold an \"ED25519-V3:<base64>\" key",
               path);
    sodium_memzero(buf, sizeof buf);
    return MS_EKEY;
  }
  memcpy(key, buf, (size_t)n);
  key[n] = '\0';
  sodium_memzero(buf, sizeof buf);
  return 1;
}

/* Write the key to path, 0600, atomically (a temp file renamed). */
static int save_key(const char *path, const char *key, char *reason,
                    size_t reason_len) {
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >=
      sizeof tmp)
    return MS_EINVAL;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) goto fail;
  size_t n = strlen(key);
  char line[MS_TORCTL_KEY_LEN + 2];
  memcpy(line, key, n);
  line[n++] = '\n';
  ssize_t w = write(fd, line, n);
  sodium_memzero(line, sizeof line);
  if (w != (ssize_t)n || fsync(fd) != 0) {
    close(fd);
    unlink(tmp);
    goto fail;
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    unlink(tmp);
    goto fail;
  }
  return 0;
fail:
  ms_reasonf(reason, reason_len, "onion: cannot save key file %s: %s", path,
             strerror(errno));
  return MS_EKEY;
}

/* ---- teardown ------------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h) {
  ms_onion_t *o = h->data;
  ms_t *ms = o->ms;
  if (!o->published_cb_done && o->cb)
    o->cb(o, o->status ? o->status : MS_ECANCELED, NULL, o->reason, o->arg);
  if (o->close_asked && o->ccb) o->ccb(o, o->status, o->carg);
  ms_torctl_wipe(&o->tc);
  free(o->control);
  free(o->cookie_file);
  free(o->key_file);
  free(o);
  ms_unref(ms);
}

/* Everything stopped: report and free. */
static void finish(ms_onion_t *o) {
  uv_timer_stop(&o->timer);
  uv_close((uv_handle_t *)&o->timer, on_timer_closed);
}

static void on_stream_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ms_onion_t *o = arg;
  o->s = NULL;
  if (o->state == OS_LOST && !o->close_asked) return; /* wait for close */
  finish(o);
}

/* Stop with status: close the control stream (if any), then finish. */
static void stop(ms_onion_t *o, int status, const char *why) {
  uv_timer_stop(&o->timer);
  if (o->state == OS_CLOSING) return;
  o->status = status;
  if (why) ms_reasonf(o->reason, sizeof o->reason, "%s", why);
  if (o->state == OS_PUBLISHED && !o->close_asked) {
    /* Lost while published: keep the handle until ms_onion_close. */
    o->state = OS_LOST;
    if (o->s) {
      ms_stream_read_stop(o->s);
      ms_stream_close(o->s, on_stream_closed, o);
    }
    return;
  }
  o->state = OS_CLOSING;
  if (o->s) {
    ms_stream_read_stop(o->s);
    ms_stream_close(o->s, on_stream_closed, o);
    return;
  }
  finish(o);
}

/* ---- the exchange ---------------------------------------------------------- */

static void on_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status; /* a failed write shows up as a read error */
  free(arg);
}

static int send_output(ms_onion_t *o) {
  const uint8_t *p;
  size_t n = ms_torctl_output(&o->tc, &p);
  if (n == 0) return 0;
  /* A copy per command, so a write still queued never points into o. */
  uint8_t *copy = malloc(n);
  if (copy == NULL) return MS_ENOMEM;
  memcpy(copy, p, n);
  ms_buf_t b = {copy, n};
  int rc = ms_stream_write(o->s, &b, 1, on_written, copy);
  if (rc != 0) free(copy);
  return rc;
}

static int provide_cookie(ms_onion_t *o) {
  const char *path = o->cookie_file ? o->cookie_file : ms_torctl_cookie_file(&o->tc);
  uint8_t buf[MS_TORCTL_COOKIE_LEN + 1];
  if (path[0] == '\0') {
    stop(o, MS_EUNAUTHORIZED, "tor control: COOKIE authentication, but tor names no cookie file");
    return -1;
  }
  long n = read_file(path, buf, sizeof buf);
  if (n < 0) {
    char why[ONION_REASON_LEN];
    ms_reasonf(why, sizeof why, "tor control: cannot read the cookie file %s: %s",
               path, strerror((int)-n));
    stop(o, MS_EUNAUTHORIZED, why);
    return -1;
  }
  int rc = ms_torctl_set_cookie(&o->tc, buf, (size_t)n);
  sodium_memzero(buf, sizeof buf);
  if (rc != 0) {
    stop(o, MS_EUNAUTHORIZED, ms_torctl_reason(&o->tc));
    return -1;
  }
  return 0;
}

static void published(ms_onion_t *o) {
  if (o->key_is_new && o->key_file) {
    char why[ONION_REASON_LEN];
    if (save_key(o->key_file, ms_torctl_private_key(&o->tc), why, sizeof why) != 0) {
      /* Without the key the address would not survive: give it up (the
       * service goes with the control connection). */
      stop(o, MS_EKEY, why);
      return;
    }
  }
  uv_timer_stop(&o->timer);
  snprintf(o->address, sizeof o->address, "%s.onion", ms_torctl_service_id(&o->tc));
  o->state = OS_PUBLISHED;
  o->published_cb_done = true;
  o->cb(o, 0, o->address, NULL, o->arg);
}

static void on_read(ms_stream_t *s, int status, const uint8_t *data,
                    size_t len, void *arg) {
  ms_onion_t *o = arg;
  (void)s;
  if (o->state == OS_CLOSING || o->state == OS_LOST) return;
  if (status < 0) {
    int rc = status == MS_EOF ? ms_torctl_eof(&o->tc) : status;
    if (rc == 0) return; /* deleted, then closed by tor: fine */
    char why[ONION_REASON_LEN];
    if (status == MS_EOF)
      ms_reasonf(why, sizeof why, "%s", ms_torctl_reason(&o->tc));
    else
      ms_reasonf(why, sizeof why, "tor control: %s", ms_strerror(status));
    stop(o, status == MS_EOF ? rc : status, why);
    return;
  }
  while (len > 0) {
    size_t c = 0;
    int r = ms_torctl_feed(&o->tc, data, len, &c);
    data += c;
    len -= c;
    if (r == MS_TORCTL_NEED_COOKIE) {
      if (provide_cookie(o) != 0) return;
      r = MS_TORCTL_SEND;
    }
    if (r == MS_TORCTL_SEND) {
      int rc = send_output(o);
      if (rc != 0) {
        stop(o, rc, "tor control: cannot write");
        return;
      }
      continue;
    }
    if (r == MS_TORCTL_PUBLISHED) {
      published(o);
      if (o->state != OS_PUBLISHED) return;
      continue;
    }
    if (r == MS_TORCTL_DELETED) {
      stop(o, 0, NULL);
      return;
    }
    if (r < 0) {
      stop(o, r, ms_torctl_reason(&o->tc));
      return;
    }
  }
}

static void on_control(ms_stream_t *s, int status, const char *reason,
                       void *arg) {
  ms_onion_t *o = arg;
  o->creq = NULL;
  if (o->state == OS_CLOSING) { /* canceled or timed out meanwhile */
    if (s) ms_stream_close(s, NULL, NULL);
    finish(o);
    return;
  }
  if (status != 0) {
    char why[ONION_REASON_LEN];
    ms_reasonf(why, sizeof why, "tor control port %s: %s", o->control,
               reason ? reason : ms_strerror(status));
    stop(o, status, why);
    return;
  }
  o->s = s;
  o->state = OS_EXCHANGE;
  int rc = send_output(o);
  if (rc == 0) rc = ms_stream_read_start(s, on_read, o);
  if (rc != 0) stop(o, rc, "tor control: cannot start the exchange");
}

static void on_timeout(uv_timer_t *t) {
  ms_onion_t *o = t->data;
  char why[128];
  ms_reasonf(why, sizeof why, "tor control: no answer within %llu ms",
             (unsigned long long)o->timeout_ms);
  if (o->creq) {
    o->status = MS_ETIMEDOUT;
    ms_reasonf(o->reason, sizeof o->reason, "%s", why);
    o->state = OS_CLOSING;
    ms_connect_cancel(o->creq); /* on_control finishes */
    return;
  }
  stop(o, MS_ETIMEDOUT, why);
}

/* target: "net:HOST:PORT[~…][;…]" or "HOST:PORT" → tor's "HOST:PORT"
 * ("[v6]:PORT"), and its port. */
static int parse_target(const char *target, char *out, size_t cap, int *port,
                        char *reason, size_t reason_len) {
  char buf[MS_TORCTL_TARGET_MAX + 8];
  const char *t = target;
  if (target == NULL) {
    ms_reasonf(reason, reason_len, "onion: no target (the local listener's net address)");
    return MS_EINVAL;
  }
  if (strncmp(target, "net:", 4) != 0) {
    if (strlen(target) + 5 > sizeof buf) goto bad;
    snprintf(buf, sizeof buf, "net:%s", target);
    t = buf;
  }
  ms_addr_t *a = NULL;
  if (ms_addr_parse(t, strlen(t), &a, NULL) != 0) goto bad;
  size_t nf = ms_addr_fields(a, 0, 0);
  const char *fields[MS_ADDR_MAX_FIELDS];
  size_t lens[MS_ADDR_MAX_FIELDS];
  for (size_t i = 0; i < nf; i++) fields[i] = ms_addr_field(a, 0, 0, i, &lens[i]);
  ms_section_t sec = {ms_addr_name(a, 0, 0), nf, fields, lens};
  char host[MS__NET_HOST_MAX];
  int rc = strcmp(sec.name, "net") == 0
               ? ms__net_parse(&sec, 0, host, sizeof host, port, NULL, 0)
               : MS_EADDRESS;
  ms_addr_free(a);
  if (rc != 0) goto bad;
  if ((size_t)snprintf(out, cap, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
                       *port) >= cap)
    goto bad;
  return 0;
bad:
  ms_reasonf(reason, reason_len,
             "onion: target must be a local net listener, net:HOST:PORT or "
             "HOST:PORT (got \"%.200s\")", target);
  return MS_EADDRESS;
}

int ms_onion_publish(ms_t *ms, const ms_onion_opts_t *opts, ms_onion_cb cb,
                     void *arg, ms_onion_t **out, char *reason,
                     size_t reason_len) {
  char target[MS_TORCTL_TARGET_MAX + 1], key[MS_TORCTL_KEY_LEN + 1] = "";
  int tport = 0, rc;
  if (ms == NULL || opts == NULL || cb == NULL || opts->size < sizeof *opts) {
    ms_reasonf(reason, reason_len, "onion: missing argument or options");
    return MS_EINVAL;
  }
  rc = parse_target(opts->target, target, sizeof target, &tport, reason, reason_len);
  if (rc != 0) return rc;
  int loaded = 0;
  if (opts->key_file) {
    loaded = load_key(opts->key_file, key, sizeof key, reason, reason_len);
    if (loaded < 0) return loaded;
  }
  ms_onion_t *o = calloc(1, sizeof *o);
  if (o == NULL) return MS_ENOMEM;
  o->ms = ms;
  o->cb = cb;
  o->arg = arg;
  o->timeout_ms = opts->timeout_ms ? opts->timeout_ms : ONION_DEFAULT_TIMEOUT_MS;
  o->control = dup_str(opts->control ? opts->control : ONION_DEFAULT_CONTROL);
  o->cookie_file = dup_str(opts->cookie_file);
  o->key_file = dup_str(opts->key_file);
  o->key_is_new = loaded == 0;
  rc = (o->control == NULL || (opts->cookie_file && !o->cookie_file) ||
        (opts->key_file && !o->key_file))
           ? MS_ENOMEM
           : ms_torctl_init(&o->tc, opts->password,
                            (uint16_t)(opts->virt_port ? opts->virt_port : tport),
                            target, loaded ? key : NULL);
  sodium_memzero(key, sizeof key);
  if (rc == 0) rc = ms_connect(ms, o->control, on_control, o, &o->creq);
  if (rc != 0) {
    if (rc == MS_EINVAL && ms_torctl_reason(&o->tc)[0])
      ms_reasonf(reason, reason_len, "%s", ms_torctl_reason(&o->tc));
    else
      ms_reasonf(reason, reason_len, "onion: %s", ms_strerror(rc));
    ms_torctl_wipe(&o->tc);
    free(o->control);
    free(o->cookie_file);
    free(o->key_file);
    free(o);
    return rc;
  }
  uv_timer_init(ms_loop(ms), &o->timer); /* cannot fail */
  o->timer.data = o;
  o->state = OS_CONNECTING;
  uv_timer_start(&o->timer, on_timeout, o->timeout_ms, 0);
  ms_ref(ms);
  if (out) *out = o;
  return 0;
}

void ms_onion_close(ms_onion_t *o, ms_onion_close_cb cb, void *arg) {
  if (o == NULL || o->close_asked) return;
  o->close_asked = true;
  o->ccb = cb;
  o->carg = arg;
  switch (o->state) {
    case OS_CONNECTING:
      o->status = MS_ECANCELED;
      o->state = OS_CLOSING;
      ms_reasonf(o->reason, sizeof o->reason, "closed before it was published");
      if (o->creq) ms_connect_cancel(o->creq); /* on_control finishes */
      return;
    case OS_EXCHANGE:
      stop(o, MS_ECANCELED, "closed before it was published");
      return;
    case OS_PUBLISHED: {
      int rc = ms_torctl_delete(&o->tc);
      if (rc == 0) rc = send_output(o);
      if (rc != 0) {
        stop(o, rc, "tor control: cannot send DEL_ONION");
        return;
      }
      o->state = OS_DELETING;
      uv_timer_start(&o->timer, on_timeout, o->timeout_ms, 0);
      return;
    }
    case OS_LOST:
      if (o->s == NULL) finish(o); /* else on_stream_closed finishes */
      return;
    default:
      return; /* deleting or closing already */
  }
}
