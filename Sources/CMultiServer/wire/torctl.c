/* Tor control-port exchange for ADD_ONION / DEL_ONION (see torctl.h). */
#include "torctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Through a volatile pointer, so the compiler cannot drop the wipe. */
static void *(*volatile wipe_memset)(void *, int, size_t) = memset;

static void wipe(void *p, size_t n) { wipe_memset(p, 0, n); }

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(ms_torctl_t *t, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->reason, sizeof t->reason, fmt, ap);
  va_end(ap);
  t->error = err;
  t->stage = MS_TORCTL_FAILED;
  wipe(t->password, sizeof t->password);
  wipe(t->cookie, sizeof t->cookie);
  return err;
}

static int is_b64(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int ms_torctl_check_key(const char *s, size_t len) {
  const size_t pre = sizeof MS_TORCTL_KEY_PREFIX - 1;
  if (s == NULL || len != MS_TORCTL_KEY_LEN) return 0;
  if (memcmp(s, MS_TORCTL_KEY_PREFIX, pre) != 0) return 0;
  /* 64 bytes: 21 groups of 3 (84 characters), then one byte (2 characters
   * and "=="). */
  for (size_t i = pre; i < len - 2; i++)
    if (!is_b64(s[i])) return 0;
  return s[len - 2] == '=' && s[len - 1] == '=';
}

int ms_torctl_check_service_id(const char *s, size_t len) {
  if (s == NULL || len != MS_TORCTL_SERVICE_ID_LEN) return 0;
  for (size_t i = 0; i < len; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '2' && s[i] <= '7')))
      return 0;
  return 1;
}

int ms_torctl_init(ms_torctl_t *t, const char *password, uint16_t virt_port,
                   const char *target, const char *key) {
  if (t == NULL) return MS_EINVAL;
  memset(t, 0, sizeof *t);
  t->stage = MS_TORCTL_SEND_PROTOCOLINFO;
  if (password) {
    size_t n = strlen(password);
    if (n < 1 || n > MS_TORCTL_PASSWORD_MAX || strpbrk(password, "\r\n"))
      return fail(t, MS_EINVAL, "tor control: password must be 1-%d bytes without CR or LF",
                  MS_TORCTL_PASSWORD_MAX);
    memcpy(t->password, password, n);
    t->have_password = 1;
  }
  if (virt_port == 0) return fail(t, MS_EINVAL, "tor control: virtual port 0");
  t->virt_port = virt_port;
  size_t tn = target ? strlen(target) : 0;
  if (tn < 1 || tn > MS_TORCTL_TARGET_MAX)
    return fail(t, MS_EINVAL, "tor control: target must be 1-%d bytes",
                MS_TORCTL_TARGET_MAX);
  for (size_t i = 0; i < tn; i++) {
    unsigned char c = (unsigned char)target[i];
    if (c <= 0x20 || c >= 0x7f)
      return fail(t, MS_EINVAL, "tor control: target contains a space or control character");
  }
  memcpy(t->target, target, tn);
  if (key) {
    size_t kn = strlen(key);
    if (!ms_torctl_check_key(key, kn))
      return fail(t, MS_EINVAL, "tor control: key is not \"ED25519-V3:<base64 of 64 bytes>\"");
    memcpy(t->key, key, kn);
  }
  return 0;
}

static void set_out(ms_torctl_t *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(t->out, sizeof t->out, fmt, ap);
  va_end(ap);
  t->out_len = n < 0 ? 0 : (size_t)n >= sizeof t->out ? sizeof t->out - 1 : (size_t)n;
}

size_t ms_torctl_output(ms_torctl_t *t, const uint8_t **out) {
  static const char hex[] = "0123456789ABCDEF";
  if (out) *out = NULL;
  if (t == NULL) return 0;
  switch (t->stage) {
    case MS_TORCTL_SEND_PROTOCOLINFO:
      set_out(t, "PROTOCOLINFO 1\r\n");
      t->stage = MS_TORCTL_WAIT_PROTOCOLINFO;
      break;
    case MS_TORCTL_SEND_AUTH:
      if (t->have_password) {
        /* QuotedString: backslash before '"' and '\'. */
        size_t n = 0;
        n += (size_t)snprintf(t->out, sizeof t->out, "AUTHENTICATE \"");
        for (const char *p = t->password; *p; p++) {
          if (*p == '"' || *p == '\\') t->out[n++] = '\\';
          t->out[n++] = *p;
        }
        memcpy(t->out + n, "\"\r\n", 3);
        t->out_len = n + 3;
        wipe(t->password, sizeof t->password);
      } else if (t->have_cookie) {
        size_t n = (size_t)snprintf(t->out, sizeof t->out, "AUTHENTICATE ");
        for (size_t i = 0; i < MS_TORCTL_COOKIE_LEN; i++) {
          t->out[n++] = hex[t->cookie[i] >> 4];
          t->out[n++] = hex[t->cookie[i] & 15];
        }
        memcpy(t->out + n, "\r\n", 2);
        t->out_len = n + 2;
        wipe(t->cookie, sizeof t->cookie);
      } else {
        set_out(t, "AUTHENTICATE\r\n");
      }
      t->stage = MS_TORCTL_WAIT_AUTH;
      break;
    case MS_TORCTL_SEND_ADD:
      set_out(t, "ADD_ONION %s Port=%u,%s\r\n",
              t->key[0] ? t->key : "NEW:ED25519-V3", (unsigned)t->virt_port,
              t->target);
      t->stage = MS_TORCTL_WAIT_ADD;
      break;
    case MS_TORCTL_SEND_DEL:
      set_out(t, "DEL_ONION %s\r\n", t->service_id);
      t->stage = MS_TORCTL_WAIT_DEL;
      break;
    default:
      return 0;
  }
  if (out) *out = (const uint8_t *)t->out;
  return t->out_len;
}

/* ---- PROTOCOLINFO's AUTH line ----------------------------------------- */

/* Decode a QuotedString starting at *p (at the opening quote) into out;
 * advances *p past the closing quote. 0, or -1 if malformed. */
static int unquote(const char **p, const char *end, char *out, size_t cap) {
  const char *s = *p;
  size_t n = 0;
  if (s >= end || *s != '"') return -1;
  for (s++; s < end && *s != '"'; s++) {
    char c = *s;
    if (c == '\\') {
      if (++s >= end) return -1;
      c = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s == 'r' ? '\r' : *s;
    }
    if (n + 1 >= cap) return -1;
    out[n++] = c;
  }
  if (s >= end) return -1;
  out[n] = '\0';
  *p = s + 1;
  return 0;
}

static void parse_auth_line(ms_torctl_t *t, const char *s, const char *end) {
  /* s: after "AUTH " — SP-separated key=value, values bare or quoted. */
  while (s < end) {
    while (s < end && *s == ' ') s++;
    const char *k = s;
    while (s < end && *s != '=' && *s != ' ') s++;
    size_t klen = (size_t)(s - k);
    if (s >= end || *s != '=') continue;
    s++;
    if (klen == 7 && memcmp(k, "METHODS", 7) == 0) {
      while (s < end && *s != ' ') {
        const char *m = s;
        while (s < end && *s != ',' && *s != ' ') s++;
        size_t ml = (size_t)(s - m);
        if (ml == 4 && memcmp(m, "NULL", 4) == 0) t->methods |= MS_TORCTL_METHOD_NULL;
        if (ml == 14 && memcmp(m, "HASHEDPASSWORD", 14) == 0)
          t->methods |= MS_TORCTL_METHOD_HASHEDPASSWORD;
        if (ml == 6 && memcmp(m, "COOKIE", 6) == 0) t->methods |= MS_TORCTL_METHOD_COOKIE;
        if (ml == 10 && memcmp(m, "SAFECOOKIE", 10) == 0)
          t->methods |= MS_TORCTL_METHOD_SAFECOOKIE;
        if (s < end && *s == ',') s++;
      }
    } else if (s < end && *s == '"') {
      char buf[MS_TORCTL_PATH_MAX + 1];
      if (unquote(&s, end, buf, sizeof buf) != 0) return;
      if (klen == 10 && memcmp(k, "COOKIEFILE", 10) == 0)
        memcpy(t->cookie_file, buf, strlen(buf) + 1);
    } else {
      while (s < end && *s != ' ') s++;
    }
  }
}

static void method_names(unsigned m, char *buf, size_t len) {
  snprintf(buf, len, "%s%s%s%s", m & MS_TORCTL_METHOD_NULL ? " NULL" : "",
           m & MS_TORCTL_METHOD_HASHEDPASSWORD ? " HASHEDPASSWORD" : "",
           m & MS_TORCTL_METHOD_COOKIE ? " COOKIE" : "",
           m & MS_TORCTL_METHOD_SAFECOOKIE ? " SAFECOOKIE" : "");
  if (buf[0] == '\0') snprintf(buf, len, " none");
}

/* PROTOCOLINFO ended with 250: pick the authentication. */
static int choose_auth(ms_torctl_t *t) {
  char names[80];
  method_names(t->methods, names, sizeof names);
  if (t->have_password) {
    if (t->methods & MS_TORCTL_METHOD_HASHEDPASSWORD) {
      t->stage = MS_TORCTL_SEND_AUTH;
      return MS_TORCTL_SEND;
    }
    return fail(t, MS_EUNAUTHORIZED,
                "tor control: a password was given but tor does not take one "
                "(methods:%s)", names);
  }
  if (t->methods & MS_TORCTL_METHOD_NULL) {
    t->stage = MS_TORCTL_SEND_AUTH;
    return MS_TORCTL_SEND;
  }
  if (t->methods & MS_TORCTL_METHOD_COOKIE) {
    t->stage = MS_TORCTL_WANT_COOKIE;
    return MS_TORCTL_NEED_COOKIE;
  }
  return fail(t, MS_EUNAUTHORIZED,
              "tor control: no authentication method this client can use "
              "(methods:%s; give a password for HASHEDPASSWORD)", names);
}

/* ---- one reply line -------------------------------------------------- */

static int digit3(const char *s) {
  return s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' &&
         s[2] >= '0' && s[2] <= '9';
}

static const char *stage_command(ms_torctl_stage_t st) {
  switch (st) {
    case MS_TORCTL_WAIT_PROTOCOLINFO: return "PROTOCOLINFO";
    case MS_TORCTL_WAIT_AUTH: return "AUTHENTICATE";
    case MS_TORCTL_WAIT_ADD: return "ADD_ONION";
    case MS_TORCTL_WAIT_DEL: return "DEL_ONION";
    default: return "(none)";
  }
}

/* Handle one complete line (without its line end). Returns a feed result,
 * or MS_TORCTL_NEED_MORE to go on. */
static int on_line(ms_torctl_t *t, const char *s, size_t n) {
  if (t->in_data) {
    if (n == 1 && s[0] == '.') t->in_data = 0;
    return MS_TORCTL_NEED_MORE;
  }
  if (n < 4 || !digit3(s) || (s[3] != ' ' && s[3] != '-' && s[3] != '+'))
    return fail(t, MS_EFRAME, "tor control: not a control-protocol reply line (\"%.40s\")", s);
  int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
  char sep = s[3];
  const char *body = s + 4, *end = s + n;
  size_t blen = n - 4;
  if (sep == '+') t->in_data = 1;
  if (code == 650) return MS_TORCTL_NEED_MORE; /* asynchronous event */
  if (t->stage == MS_TORCTL_PUBLISHED_STAGE || t->stage == MS_TORCTL_DELETED_STAGE)
    return MS_TORCTL_NEED_MORE; /* nothing asked: ignore */
  if (code / 100 != 2) {
    if (sep != ' ') return MS_TORCTL_NEED_MORE; /* wait for its end line */
    const char *cmd = stage_command(t->stage);
    if (t->stage == MS_TORCTL_WAIT_AUTH || code == 514 || code == 515)
      return fail(t, MS_EUNAUTHORIZED, "tor control: %s refused: %d %.*s", cmd,
                  code, (int)(blen > 160 ? 160 : blen), body);
    return fail(t, MS_EPROXY, "tor control: %s refused: %d %.*s", cmd, code,
                (int)(blen > 160 ? 160 : blen), body);
  }
  if (t->stage == MS_TORCTL_WAIT_PROTOCOLINFO && blen > 5 &&
      memcmp(body, "AUTH ", 5) == 0)
    parse_auth_line(t, body + 5, end);
  if (t->stage == MS_TORCTL_WAIT_ADD) {
    if (blen > 10 && memcmp(body, "ServiceID=", 10) == 0) {
      if (!ms_torctl_check_service_id(body + 10, blen - 10))
        return fail(t, MS_EFRAME, "tor control: malformed ServiceID in the ADD_ONION reply");
      memcpy(t->service_id, body + 10, blen - 10);
      t->service_id[blen - 10] = '\0';
    } else if (blen > 11 && memcmp(body, "PrivateKey=", 11) == 0) {
      if (!ms_torctl_check_key(body + 11, blen - 11))
        return fail(t, MS_EFRAME, "tor control: malformed PrivateKey in the ADD_ONION reply");
      memcpy(t->private_key, body + 11, blen - 11);
      t->private_key[blen - 11] = '\0';
    }
  }
  if (sep != ' ') return MS_TORCTL_NEED_MORE;
  /* End of a 2xx reply. */
  switch (t->stage) {
    case MS_TORCTL_WAIT_PROTOCOLINFO:
      return choose_auth(t);
    case MS_TORCTL_WAIT_AUTH:
      t->stage = MS_TORCTL_SEND_ADD;
      return MS_TORCTL_SEND;
    case MS_TORCTL_WAIT_ADD:
      if (t->service_id[0] == '\0')
        return fail(t, MS_EFRAME, "tor control: ADD_ONION succeeded without a ServiceID");
      if (t->key[0] == '\0' && t->private_key[0] == '\0')
        return fail(t, MS_EFRAME, "tor control: ADD_ONION NEW returned no PrivateKey");
      t->stage = MS_TORCTL_PUBLISHED_STAGE;
      return MS_TORCTL_PUBLISHED;
    case MS_TORCTL_WAIT_DEL:
      t->stage = MS_TORCTL_DELETED_STAGE;
      return MS_TORCTL_DELETED;
    default:
      return MS_TORCTL_NEED_MORE;
  }
}

int ms_torctl_feed(ms_torctl_t *t, const uint8_t *in, size_t len,
                   size_t *consumed) {
  size_t i = 0;
  if (consumed) *consumed = 0;
  if (t == NULL || (in == NULL && len > 0)) return MS_EINVAL;
  if (t->stage == MS_TORCTL_FAILED) return t->error;
  if (t->stage == MS_TORCTL_SEND_PROTOCOLINFO || t->stage == MS_TORCTL_SEND_AUTH ||
      t->stage == MS_TORCTL_SEND_ADD || t->stage == MS_TORCTL_SEND_DEL ||
      t->stage == MS_TORCTL_WANT_COOKIE)
    return MS_EINVAL;
  while (i < len) {
    uint8_t c = in[i++];
    if (c == '\n') {
      size_t n = t->line_len;
      if (n > 0 && t->line[n - 1] == '\r') n--;
      t->line[n] = '\0';
      t->line_len = 0;
      int r = on_line(t, t->line, n);
      if (r != MS_TORCTL_NEED_MORE) {
        if (consumed) *consumed = i;
        return r;
      }
      continue;
    }
    if (c == '\0' && !t->in_data) {
      if (consumed) *consumed = i;
      return fail(t, MS_EFRAME, "tor control: NUL byte in a reply");
    }
    if (t->line_len + 1 >= sizeof t->line) {
      if (t->in_data) continue; /* skipped body: length does not matter */
      if (consumed) *consumed = i;
      return fail(t, MS_EFRAME, "tor control: reply line longer than %d bytes",
                  MS_TORCTL_LINE_MAX);
    }
    t->line[t->line_len++] = (char)c;
  }
  if (consumed) *consumed = i;
  return MS_TORCTL_NEED_MORE;
}

int ms_torctl_set_cookie(ms_torctl_t *t, const uint8_t *cookie, size_t len) {
  if (t == NULL || t->stage != MS_TORCTL_WANT_COOKIE) return MS_EINVAL;
  if (cookie == NULL || len != MS_TORCTL_COOKIE_LEN)
    return fail(t, MS_EINVAL, "tor control: the cookie file holds %zu bytes, not %d",
                len, MS_TORCTL_COOKIE_LEN);
  memcpy(t->cookie, cookie, len);
  t->have_cookie = 1;
  t->stage = MS_TORCTL_SEND_AUTH;
  return 0;
}

const char *ms_torctl_cookie_file(const ms_torctl_t *t) { return t->cookie_file; }
unsigned ms_torctl_methods(const ms_torctl_t *t) { return t->methods; }

int ms_torctl_delete(ms_torctl_t *t) {
  if (t == NULL || t->stage != MS_TORCTL_PUBLISHED_STAGE) return MS_EINVAL;
  t->stage = MS_TORCTL_SEND_DEL;
  return 0;
}

int ms_torctl_eof(ms_torctl_t *t) {
  if (t->stage == MS_TORCTL_DELETED_STAGE) return 0;
  if (t->stage == MS_TORCTL_FAILED) return t->error;
  return fail(t, MS_EHANGUP, "tor control: connection closed %s",
              t->stage == MS_TORCTL_PUBLISHED_STAGE
                  ? "while the service was published (it is gone)"
                  : "before the exchange ended");
}

ms_torctl_stage_t ms_torctl_stage(const ms_torctl_t *t) { return t->stage; }
int ms_torctl_error(const ms_torctl_t *t) { return t->error; }
const char *ms_torctl_reason(const ms_torctl_t *t) { return t->reason; }
const char *ms_torctl_service_id(const ms_torctl_t *t) { return t->service_id; }
const char *ms_torctl_private_key(const ms_torctl_t *t) { return t->private_key; }

void ms_torctl_wipe(ms_torctl_t *t) {
  if (t) wipe(t, sizeof *t);
}
