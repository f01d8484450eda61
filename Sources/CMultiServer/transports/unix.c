/*
 * unix: unix domain sockets, `unix:PATH`. Device scope. The socket file is
 * created with mode 0600 (the socket's mode is set before bind, so the file
 * never exists with a wider one), a stale file (nobody accepting: connect is
 * refused) is replaced, and the file is removed when the listener closes.
 * Both ends record the peer's credentials (SO_PEERCRED) as stream metadata:
 * "unix.peer_uid", "unix.peer_gid", "unix.peer_pid".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "netaddr.h"

#define UNIX_REASON_LEN 256

#define UNIX_PATH_MAX 108
#define UNIX_BACKLOG 511

static int unix_validate(const ms_section_t *sec, int role, void *pdata,
                         char *reason, size_t reason_len) {
  (void)role;
  (void)pdata;
  char path[UNIX_PATH_MAX];
  return ms__unix_parse(sec, path, sizeof path, reason, reason_len);
}

static int unix_scope(const ms_section_t *sec, void *pdata) {
  (void)sec;
  (void)pdata;
  return MS_SCOPE_DEVICE;
}

/* The peer's credentials as metadata, for noauth's uid check. */
static int record_peer(ms_stream_t *s) {
  uv_stream_t *h = ms_uvstream_handle(s);
  uv_os_fd_t fd;
  if (h == NULL || uv_fileno((uv_handle_t *)h, &fd) != 0) return MS_EINVAL;
#ifdef SO_PEERCRED
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) return -errno;
  char v[24];
  int rc;
  snprintf(v, sizeof v, "%lu", (unsigned long)cr.uid);
  if ((rc = ms_stream_set_meta_str(s, "unix.peer_uid", v)) != 0) return rc;
  snprintf(v, sizeof v, "%lu", (unsigned long)cr.gid);
  if ((rc = ms_stream_set_meta_str(s, "unix.peer_gid", v)) != 0) return rc;
  snprintf(v, sizeof v, "%ld", (long)cr.pid);
  return ms_stream_set_meta_str(s, "unix.peer_pid", v);
#else
  uid_t uid;
  gid_t gid;
  if (getpeereid(fd, &uid, &gid) != 0) return -errno;
  char v[24];
  int rc;
  snprintf(v, sizeof v, "%lu", (unsigned long)uid);
  if ((rc = ms_stream_set_meta_str(s, "unix.peer_uid", v)) != 0) return rc;
  snprintf(v, sizeof v, "%lu", (unsigned long)gid);
  return ms_stream_set_meta_str(s, "unix.peer_gid", v);
#endif
}

static size_t unix_format(const char *path, char *buf, size_t size) {
  char esc[2 * UNIX_PATH_MAX + 1];
  ms_addr_escape(path, strlen(path), esc, sizeof esc);
  return (size_t)snprintf(buf, size, "unix:%s", esc);
}

/* ---- listen ---------------------------------------------------------- */

typedef struct {
  uv_pipe_t pipe;
  ms_plisten_t *pl;
  char path[UNIX_PATH_MAX];
  bool bound;
} unix_listener_t;

/* If path exists: a socket nobody accepts on is stale (remove it); a live one
 * or any other kind of file is an error. */
static int clear_stale(const char *path, char *reason, size_t len) {
  struct stat st;
  if (lstat(path, &st) != 0) return 0;
  if (!S_ISSOCK(st.st_mode)) {
    ms_reasonf(reason, len, "unix:%s: exists and is not a socket", path);
    return UV_EEXIST;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int rc;
  do {
    rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  } while (rc != 0 && errno == EINTR);
  int err = rc == 0 ? 0 : errno;
  close(fd);
  if (rc == 0) {
    ms_reasonf(reason, len, "unix:%s: another process is listening", path);
    return UV_EADDRINUSE;
  }
  if (err == ECONNREFUSED && unlink(path) != 0 && errno != ENOENT) return -errno;
  return 0;
}

static void on_listener_closed(uv_handle_t *h) {
  unix_listener_t *l = h->data;
  ms_plisten_t *pl = l->pl;
  if (l->bound) unlink(l->path);
  free(l);
  if (pl) ms_plisten_closed(pl);
}

static int accepted_name(ms_uvstream_t *u, char *buf, size_t len, void *arg) {
  (void)u;
  unix_listener_t *l = arg;
  unix_format(l->path, buf, len);
  return 0;
}

static void on_connection(uv_stream_t *server, int status) {
  unix_listener_t *l = server->data;
  ms_stream_t *s = NULL;
  int rc = status < 0 ? status
                      : ms_uvstream_accept(ms_plisten_ms(l->pl), server, false,
                                            accepted_name, l, &s);
  if (rc == 0 && (rc = record_peer(s)) != 0) ms_stream_close(s, NULL, NULL);
  if (rc != 0) {
    ms_plisten_error(l->pl, rc, "unix: accept failed");
    return;
  }
  ms_plisten_incoming(l->pl, s);
}

/* A bound socket whose file is created 0600 (masked by the umask, never
 * wider): the mode of the socket inode is set before bind(), which creates
 * the file from it, so no other user can connect in a window between bind
 * and a chmod. Returns the fd or a negative error. */
static int bind_private(const char *path) {
  struct sockaddr_un sa;
  size_t n = strlen(path);
  if (n >= sizeof sa.sun_path) return UV_ENAMETOOLONG;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, n + 1);
  int rc = 0;
  if (fchmod(fd, 0600) != 0 ||
      bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
    rc = -errno;
  if (rc == 0) {
    struct stat st;
    /* Where fchmod did not carry over (not Linux), tighten at once; the
     * file is not listening yet, so a connect in between is refused. */
    if (stat(path, &st) == 0 && (st.st_mode & 077) != 0 && chmod(path, 0600) != 0)
      rc = -errno;
  }
  if (rc != 0) {
    close(fd);
    return rc;
  }
  return fd;
}

static int unix_listen(ms_plisten_t *pl, const ms_section_t *sec, void *pdata) {
  (void)pdata;
  ms_t *ms = ms_plisten_ms(pl);
  char reason[UNIX_REASON_LEN] = "", adv[2 * UNIX_PATH_MAX + 8];
  unix_listener_t *l = calloc(1, sizeof(*l));
  if (l == NULL) return MS_ENOMEM;
  int rc = ms__unix_parse(sec, l->path, sizeof l->path, reason, sizeof reason);
  if (rc == 0) rc = clear_stale(l->path, reason, sizeof reason);
  if (rc != 0) {
    if (reason[0] == '\0')
      ms_reasonf(reason, sizeof reason, "unix:%s: %s", l->path, ms_strerror(rc));
    ms_plisten_error(pl, rc, reason);
    free(l);
    return rc;
  }
  rc = uv_pipe_init(ms_loop(ms), &l->pipe, 0);
  if (rc != 0) {
    free(l);
    return rc;
  }
  l->pipe.data = l;
  rc = bind_private(l->path);
  if (rc >= 0) {
    int fd = rc;
    l->bound = true;
    rc = uv_pipe_open(&l->pipe, fd);
    if (rc != 0) close(fd);
  }
  if (rc == 0) rc = uv_listen((uv_stream_t *)&l->pipe, UNIX_BACKLOG, on_connection);
  if (rc == 0) {
    unix_format(l->path, adv, sizeof adv);
    rc = ms_plisten_set_address(pl, adv);
  }
  if (rc != 0) {
    ms_reasonf(reason, sizeof reason, "unix:%s: cannot listen: %s", l->path,
               ms_strerror(rc));
    ms_plisten_error(pl, rc, reason);
    l->pl = NULL;
    uv_close((uv_handle_t *)&l->pipe, on_listener_closed);
    return rc;
  }
  l->pl = pl;
  ms_plisten_set_impl(pl, l);
  return 0;
}

static void unix_listen_close(ms_plisten_t *pl) {
  unix_listener_t *l = ms_plisten_impl(pl);
  uv_close((uv_handle_t *)&l->pipe, on_listener_closed);
}

/* ---- dial ------------------------------------------------------------ */

typedef struct {
  ms_pdial_t *pd;
  ms_uvstream_t *u;
  uv_connect_t conn;
  char path[UNIX_PATH_MAX];
  bool canceled;
} unix_dial_t;

static void on_connect(uv_connect_t *c, int status) {
  unix_dial_t *d = c->data;
  ms_pdial_t *pd = d->pd;
  ms_t *ms = ms_pdial_ms(pd);
  char reason[UNIX_REASON_LEN];
  ms_stream_t *s = NULL;
  if (d->canceled) {
    status = MS_ECANCELED;
  } else if (status == 0) {
    char addr[2 * UNIX_PATH_MAX + 8];
    unix_format(d->path, addr, sizeof addr);
    s = ms_uvstream_start(d->u, ms, addr);
    if (s == NULL) {
      status = MS_ENOMEM;
      ms_uvstream_discard(d->u);
    } else if ((status = record_peer(s)) != 0) {
      ms_stream_close(s, NULL, NULL);
      s = NULL;
    }
  } else {
    ms_uvstream_discard(d->u);
  }
  if (status != 0)
    ms_reasonf(reason, sizeof reason, "unix:%s: %s", d->path, ms_strerror(status));
  free(d);
  ms_pdial_done(pd, status, s, status ? reason : NULL);
}

static int unix_dial(ms_pdial_t *pd, const ms_section_t *sec, void *pdata) {
  (void)pdata;
  ms_t *ms = ms_pdial_ms(pd);
  unix_dial_t *d = calloc(1, sizeof(*d));
  if (d == NULL) return MS_ENOMEM;
  int rc = ms__unix_parse(sec, d->path, sizeof d->path, NULL, 0);
  if (rc == 0 && (d->u = ms_uvstream_alloc()) == NULL) rc = MS_ENOMEM;
  if (rc == 0) rc = uv_pipe_init(ms_loop(ms), ms_uvstream_pipe(d->u), 0);
  if (rc != 0) {
    free(d->u);
    free(d);
    return rc;
  }
  d->pd = pd;
  d->conn.data = d;
  uv_pipe_connect(&d->conn, ms_uvstream_pipe(d->u), d->path, on_connect);
  ms_pdial_set_impl(pd, d);
  return 0;
}

static void unix_dial_cancel(ms_pdial_t *pd) {
  unix_dial_t *d = ms_pdial_impl(pd);
  if (d->canceled) return;
  d->canceled = true;
  /* on_connect then fires with UV_ECANCELED (or its real status). */
  ms_uvstream_discard(d->u);
}

const ms_protocol_t ms__proto_unix = {
    .size = sizeof(ms_protocol_t),
    .name = "unix",
    .kind = MS_PROTO_TRANSPORT,
    .validate = unix_validate,
    .scope = unix_scope,
    .listen = unix_listen,
    .listen_close = unix_listen_close,
    .dial = unix_dial,
    .dial_cancel = unix_dial_cancel,
};
