/* Tiny JSON reader for the test vectors. Recursive descent with a depth
 * limit; enough of JSON for data files (strings with escapes, numbers kept
 * as text, literals, arrays, objects). */
#include "util_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MJ_MAX_DEPTH 64

typedef struct {
  const char *p, *end;
} mj_cur_t;

static mj_t *parse_value(mj_cur_t *c, int depth);

static void ws(mj_cur_t *c) {
  while (c->p < c->end &&
         (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static int hexval(char h) {
  if (h >= '0' && h <= '9') return h - '0';
  if (h >= 'a' && h <= 'f') return h - 'a' + 10;
  if (h >= 'A' && h <= 'F') return h - 'A' + 10;
  return -1;
}

/* Parses a string literal; returns malloc'd UTF-8 text or NULL. */
static char *parse_string(mj_cur_t *c, size_t *outlen) {
  const char *start;
  char *out;
  size_t n = 0;
  if (c->p >= c->end || *c->p != '"') return NULL;
  start = ++c->p;
  while (c->p < c->end && *c->p != '"') {
    if (*c->p == '\\') c->p++;
    c->p++;
  }
  if (c->p >= c->end) return NULL;
  out = malloc((size_t)(c->p - start) + 1);
  if (!out) return NULL;
  for (const char *q = start; q < c->p; q++) {
    if (*q != '\\') {
      out[n++] = *q;
      continue;
    }
    q++;
    switch (*q) {
      case 'n': out[n++] = '\n'; break;
      case 't': out[n++] = '\t'; break;
      case 'r': out[n++] = '\r'; break;
      case 'b': out[n++] = '\b'; break;
      case 'f': out[n++] = '\f'; break;
      case 'u': {
        unsigned v = 0;
        if (c->p - q < 5) goto bad;
        for (int i = 1; i <= 4; i++) {
          int h = hexval(q[i]);
          if (h < 0) goto bad;
          v = v << 4 | (unsigned)h;
        }
        q += 4;
        /* BMP only; enough for test data. */
        if (v < 0x80) {
          out[n++] = (char)v;
        } else if (v < 0x800) {
          out[n++] = (char)(0xc0 | v >> 6);
          out[n++] = (char)(0x80 | (v & 0x3f));
        } else {
          out[n++] = (char)(0xe0 | v >> 12);
          out[n++] = (char)(0x80 | ((v >> 6) & 0x3f));
          out[n++] = (char)(0x80 | (v & 0x3f));
        }
        break;
      }
      default: out[n++] = *q; break; /* " \ / */
    }
  }
  c->p++; /* closing quote */
  out[n] = '\0';
  *outlen = n;
  return out;
bad:
  free(out);
  return NULL;
}

static mj_t *new_value(mj_type_t t) {
  mj_t *v = calloc(1, sizeof(*v));
  if (v) v->type = t;
  return v;
}

static int push(mj_t *v, char *key, mj_t *item) {
  size_t n = v->len + 1;
  mj_t **items = realloc(v->items, n * sizeof(*items));
  if (!items) return -1;
  v->items = items;
  if (v->type == MJ_OBJ) {
    char **keys = realloc(v->keys, n * sizeof(*keys));
    if (!keys) return -1;
    v->keys = keys;
    keys[v->len] = key;
  }
  items[v->len] = item;
  v->len = n;
  return 0;
}

static mj_t *parse_container(mj_cur_t *c, int depth, int is_obj) {
  mj_t *v = new_value(is_obj ? MJ_OBJ : MJ_ARR);
  char close = is_obj ? '}' : ']';
  if (!v) return NULL;
  c->p++;
  ws(c);
  if (c->p < c->end && *c->p == close) {
    c->p++;
    return v;
  }
  for (;;) {
    char *key = NULL;
    size_t klen;
    mj_t *item;
    ws(c);
    if (is_obj) {
      if (!(key = parse_string(c, &klen))) goto bad;
      ws(c);
      if (c->p >= c->end || *c->p != ':') {
        free(key);
        goto bad;
      }
      c->p++;
    }
    item = parse_value(c, depth + 1);
    if (!item || push(v, key, item) != 0) {
      free(key);
      mj_free(item);
      goto bad;
    }
    ws(c);
    if (c->p < c->end && *c->p == ',') {
      c->p++;
      continue;
    }
    if (c->p < c->end && *c->p == close) {
      c->p++;
      return v;
    }
    goto bad;
  }
bad:
  mj_free(v);
  return NULL;
}

static mj_t *parse_value(mj_cur_t *c, int depth) {
  mj_t *v;
  if (depth > MJ_MAX_DEPTH) return NULL;
  ws(c);
  if (c->p >= c->end) return NULL;
  switch (*c->p) {
    case '{': return parse_container(c, depth, 1);
    case '[': return parse_container(c, depth, 0);
    case '"':
      if (!(v = new_value(MJ_STR))) return NULL;
      if (!(v->str = parse_string(c, &v->len))) {
        free(v);
        return NULL;
      }
      return v;
    default: break;
  }
  if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) {
    c->p += 4;
    return new_value(MJ_NULL);
  }
  if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) {
    c->p += 4;
    if ((v = new_value(MJ_BOOL))) v->boolean = 1;
    return v;
  }
  if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) {
    c->p += 5;
    return new_value(MJ_BOOL);
  }
  {
    const char *s = c->p;
    while (c->p < c->end && strchr("0123456789+-.eE", *c->p)) c->p++;
    if (c->p == s || !(v = new_value(MJ_NUM))) return NULL;
    v->len = (size_t)(c->p - s);
    if (!(v->str = malloc(v->len + 1))) {
      free(v);
      return NULL;
    }
    memcpy(v->str, s, v->len);
    v->str[v->len] = '\0';
    return v;
  }
}

mj_t *mj_parse(const char *text, size_t len) {
  mj_cur_t c = {text, text + len};
  mj_t *v = parse_value(&c, 0);
  ws(&c);
  if (v && c.p != c.end) {
    mj_free(v);
    return NULL;
  }
  return v;
}

mj_t *mj_load(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t len = 0, cap = 0;
  mj_t *v;
  if (!f) {
    fprintf(stderr, "mj_load: cannot open %s (run from the repo root)\n",
            path);
    return NULL;
  }
  for (;;) {
    size_t n;
    if (len == cap) {
      char *nb = realloc(buf, cap = cap ? cap * 2 : 65536);
      if (!nb) break;
      buf = nb;
    }
    n = fread(buf + len, 1, cap - len, f);
    if (n == 0) break;
    len += n;
  }
  fclose(f);
  v = buf ? mj_parse(buf, len) : NULL;
  free(buf);
  if (!v) fprintf(stderr, "mj_load: cannot parse %s\n", path);
  return v;
}

void mj_free(mj_t *v) {
  if (!v) return;
  for (size_t i = 0; i < v->len && (v->type == MJ_ARR || v->type == MJ_OBJ);
       i++) {
    mj_free(v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->str);
  free(v);
}

const mj_t *mj_get(const mj_t *v, const char *path) {
  while (v && path && *path) {
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    const mj_t *next = NULL;
    if (v->type == MJ_OBJ) {
      for (size_t i = 0; i < v->len; i++)
        if (strlen(v->keys[i]) == n && memcmp(v->keys[i], path, n) == 0)
          next = v->items[i];
    } else if (v->type == MJ_ARR) {
      char *endp;
      unsigned long idx = strtoul(path, &endp, 10);
      if (endp == path + n && idx < v->len) next = v->items[idx];
    }
    v = next;
    path = dot ? dot + 1 : NULL;
  }
  return v;
}

const char *mj_str(const mj_t *v, const char *path) {
  const mj_t *s = mj_get(v, path);
  return s && s->type == MJ_STR ? s->str : NULL;
}

long mj_hex(const mj_t *v, const char *path, uint8_t *out, size_t cap) {
  const char *s = mj_str(v, path);
  size_t n;
  if (!s) return -1;
  n = strlen(s);
  if (n % 2 || n / 2 > cap) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return (long)(n / 2);
}

uint8_t *mj_hex_alloc(const mj_t *v, const char *path, size_t *len) {
  const char *s = mj_str(v, path);
  uint8_t *out;
  long n;
  if (!s) return NULL;
  out = malloc(strlen(s) / 2 + 1);
  if (!out) return NULL;
  n = mj_hex(v, path, out, strlen(s) / 2 + 1);
  if (n < 0) {
    free(out);
    return NULL;
  }
  *len = (size_t)n;
  return out;
}

size_t mj_count(const mj_t *v) {
  return v && (v->type == MJ_ARR || v->type == MJ_OBJ) ? v->len : 0;
}

const mj_t *mj_at(const mj_t *v, size_t i) {
  return v && (v->type == MJ_ARR || v->type == MJ_OBJ) && i < v->len
             ? v->items[i]
             : NULL;
}
