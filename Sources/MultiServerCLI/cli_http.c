/* multiserver serve --http-root DIR: static files for plain HTTP requests on
 * ws/wss listeners (multiserver_ws.h), so a server can deliver the page
 * that opens a WebSocket back to it. GET and HEAD only; the path is
 * percent-decoded and must stay inside DIR (no "..", no "." segments, no
 * backslash, no NUL; symlinks are resolved and checked against DIR). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "multiserver_ws.h"

#define HTTP_MAX_FILE (64u << 20)

static const char *content_type(const char *path) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"}, {".htm", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"}, {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
      {".png", "image/png"},                 {".wasm", "application/wasm"},
      {".txt", "text/plain; charset=utf-8"}, {".svg", "image/svg+xml"},
      {".ico", "image/x-icon"},
  };
  const char *dot = strrchr(path, '.');
  const char *slash = strrchr(path, '/');
  if (dot && (!slash || dot > slash))
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
      if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
  return "application/octet-stream";
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decode p into out and check it names something inside the root:
 * starts with '/', no NUL, no backslash, no "." or ".." segment. */
static bool decode_path(const char *p, char *out, size_t cap) {
  size_t n = 0;
  if (p[0] != '/') return false;
  for (; *p; p++) {
    char c = *p;
    if (c == '%') {
      int h = hexval(p[1]), l = h < 0 ? -1 : hexval(p[2]);
      if (l < 0) return false;
      c = (char)(h * 16 + l);
      p += 2;
    }
    if (c == '\0' || c == '\\' || n + 1 >= cap) return false;
    out[n++] = c;
  }
  out[n] = '\0';
  for (const char *s = out; *s;) {
    s++; /* past '/' */
    const char *e = strchr(s, '/');
    size_t sl = e ? (size_t)(e - s) : strlen(s);
    if ((sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.')) return false;
    s += sl;
  }
  return true;
}

static void answer(ms_http_request_t *req, int status, const char *msg) {
  const char *method = ms_http_request_method(req);
  cli_err("http %s %s %d", method, ms_http_request_path(req), status);
  if (ms_http_respond(req, status, "text/plain; charset=utf-8", msg, strlen(msg)) != 0)
    cli_err("http: cannot answer");
}

void cli_http_handler(ms_http_request_t *req, void *arg) {
  const char *root = arg; /* realpath'd by the caller */
  const char *method = ms_http_request_method(req);
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    answer(req, 405, "method not allowed\n");
    return;
  }
  char rel[PATH_MAX], full[PATH_MAX * 2], real[PATH_MAX];
  if (!decode_path(ms_http_request_path(req), rel, sizeof rel)) {
    answer(req, 403, "forbidden\n");
    return;
  }
  snprintf(full, sizeof full, "%s%s%s", root, rel,
           rel[strlen(rel) - 1] == '/' ? "index.html" : "");
  struct stat st;
  if (realpath(full, real) == NULL || stat(real, &st) != 0) {
    answer(req, errno == EACCES ? 403 : 404, "not found\n");
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    snprintf(full, sizeof full, "%s/index.html", real);
    if (realpath(full, real) == NULL || stat(real, &st) != 0) {
      answer(req, 404, "not found\n");
      return;
    }
  }
  size_t rl = strlen(root);
  if (strncmp(real, root, rl) != 0 || real[rl] != '/') {
    answer(req, 403, "forbidden\n");
    return;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > (off_t)HTTP_MAX_FILE) {
    answer(req, 403, "forbidden\n");
    return;
  }
  FILE *f = fopen(real, "rb");
  if (f == NULL) {
    answer(req, 403, "forbidden\n");
    return;
  }
  size_t size = (size_t)st.st_size;
  char *body = malloc(size ? size : 1);
  size_t got = body ? fread(body, 1, size, f) : 0;
  fclose(f);
  if (body == NULL || got != size) {
    free(body);
    answer(req, 500, "cannot read the file\n");
    return;
  }
  cli_err("http %s %s 200", method, ms_http_request_path(req));
  if (ms_http_respond(req, 200, content_type(real), body, size) != 0)
    cli_err("http: cannot answer");
  free(body);
}
