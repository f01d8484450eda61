/* net:HOST:PORT and unix:PATH field parsing (see netaddr.h). */
#include "netaddr.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void set_reason(char *reason, size_t reason_len, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void set_reason(char *reason, size_t reason_len, const char *fmt,
                       ...) {
  if (!reason || reason_len == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, reason_len, fmt, ap);
  va_end(ap);
}

/* Field i of a section, tolerating a hand-built view without field_lens. */
static const char *field_at(const ms_section_t *sec, size_t i, size_t *len) {
  const char *f = sec->fields ? sec->fields[i] : NULL;
  if (!f) {
    *len = 0;
    return "";
  }
  *len = sec->field_lens ? sec->field_lens[i] : strlen(f);
  return f;
}

static bool is_alpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* IPv6 literal, optionally with a "%zone" suffix (fe80::1%eth0), which
 * inet_pton does not know but libuv's uv_ip6_addr and getaddrinfo do.
 * On success the address bytes go to *out if non-NULL. */
static bool parse_ip6(const char *s, struct in6_addr *out, size_t *addr_len) {
  char tmp[INET6_ADDRSTRLEN + 1];
  const char *pct = strchr(s, '%');
  size_t n = pct ? (size_t)(pct - s) : strlen(s);
  if (n == 0 || n >= sizeof tmp) return false;
  if (pct) {
    const unsigned char *z = (const unsigned char *)pct + 1;
    if (!*z) return false;
    for (; *z; z++)
      if (!is_alpha(*z) && !is_digit(*z) && *z != '-' && *z != '.' &&
          *z != '_')
        return false;
  }
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  struct in6_addr a;
  if (inet_pton(AF_INET6, tmp, &a) != 1) return false;
  if (out) *out = a;
  if (addr_len) *addr_len = n;
  return true;
}

/* DNS-ish name: labels of 1-63 bytes from [A-Za-z0-9_-] separated by dots,
 * at most 253 bytes, an optional trailing dot (fully qualified). Returns
 * NULL or a static description of the problem. '_' is allowed because
 * hosts files and service names use it, even if DNS host names do not. */
static const char *check_hostname(const char *h, size_t n, size_t *bad) {
  if (n > 0 && h[n - 1] == '.') n--; /* trailing dot of an FQDN */
  if (n == 0) return "empty host name";
  if (n > 253) return "host name longer than 253 characters";
  size_t label = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)h[i];
    if (c == '.') {
      if (label == 0) {
        *bad = i;
        return "empty label in host name";
      }
      label = 0;
      continue;
    }
    if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_') {
      *bad = i;
      return "invalid character in host name";
    }
    if (++label > 63) return "host name label longer than 63 characters";
  }
  if (label == 0) return "empty label in host name";
  return NULL;
}

/* Parse the port field. *err gets a reason on failure. */
static int parse_port(const char *pfx, const char *p, size_t n, int listen,
                      int *out, char *reason, size_t reason_len) {
  if (n == 0) {
    set_reason(reason, reason_len, "%s: missing port", pfx);
    return MS_EADDRESS;
  }
  /* Show at most 16 bytes of a bogus port; it came from the network. */
  int shown = n > 16 ? 16 : (int)n;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (!is_digit(c)) {
      set_reason(reason, reason_len,
                 "%s: port \"%.*s%s\" is not a decimal number", pfx, shown, p,
                 n > 16 ? "..." : "");
      return MS_EADDRESS;
    }
    /* Saturate instead of overflowing on long digit strings. */
    if (v <= 65535) v = v * 10 + (c - '0');
  }
  if (v > 65535) {
    set_reason(reason, reason_len, "%s: port %.*s%s out of range %d-65535",
               pfx, shown, p, n > 16 ? "..." : "", listen ? 0 : 1);
    return MS_EADDRESS;
  }
  if (v == 0 && !listen) {
    set_reason(reason, reason_len,
               "%s: port 0 is only valid in a listen address", pfx);
    return MS_EADDRESS;
  }
  *out = (int)v;
  return 0;
}

int ms__net_parse(const ms_section_t *sec, int listen, char *host,
                  size_t hostlen, int *port, char *reason, size_t reason_len) {
  if (!sec) return MS_EINVAL;
  const char *pfx = sec->name ? sec->name : "net";
  if (sec->nfields < 2) {
    set_reason(reason, reason_len, "%s: missing %s (expected %s:HOST:PORT)",
               pfx, sec->nfields == 0 ? "host and port" : "port", pfx);
    return MS_EADDRESS;
  }

  size_t plen;
  const char *pstr = field_at(sec, sec->nfields - 1, &plen);
  int p = 0;
  int rc = parse_port(pfx, pstr, plen, listen, &p, reason, reason_len);
  if (rc) return rc;

  /* Re-join every field before the port with ':' — the fields of a bare
   * IPv6 literal, or just one for a name or IPv4 address. */
  char h[MS__NET_HOST_MAX];
  size_t n = 0;
  for (size_t i = 0; i + 1 < sec->nfields; i++) {
    size_t flen;
    const char *f = field_at(sec, i, &flen);
    size_t need = flen + (i > 0 ? 1 : 0);
    if (need >= sizeof h - n) {
      set_reason(reason, reason_len, "%s: host longer than %d bytes", pfx,
                 MS__NET_HOST_MAX - 1);
      return MS_EADDRESS;
    }
    if (i > 0) h[n++] = ':';
    if (memchr(f, '\0', flen)) {
      set_reason(reason, reason_len, "%s: NUL byte in host", pfx);
      return MS_EADDRESS;
    }
    memcpy(h + n, f, flen);
    n += flen;
  }
  h[n] = '\0';
  if (n == 0) {
    set_reason(reason, reason_len, "%s: missing host", pfx);
    return MS_EADDRESS;
  }

  const char *hv = h; /* the host value handed back */
  size_t hn = n;
  if (h[0] == '[') {
    /* [v6] as in URLs: must be a real IPv6 literal, nothing else. */
    if (n < 3 || h[n - 1] != ']') {
      set_reason(reason, reason_len, "%s: unbalanced '[' in host \"%s\"", pfx,
                 h);
      return MS_EADDRESS;
    }
    h[n - 1] = '\0';
    if (!parse_ip6(h + 1, NULL, NULL)) {
      h[n - 1] = ']';
      set_reason(reason, reason_len,
                 "%s: bracketed host \"%s\" is not an IPv6 address", pfx, h);
      return MS_EADDRESS;
    }
    hv = h + 1;
    hn = n - 2;
  } else if (memchr(h, ':', n)) {
    if (!parse_ip6(h, NULL, NULL)) {
      set_reason(reason, reason_len,
                 "%s: host \"%s\" contains ':' but is not an IPv6 address",
                 pfx, h);
      return MS_EADDRESS;
    }
  } else if (strspn(h, "0123456789.") == n) {
    /* Only digits and dots: no real name looks like that (top-level domains
     * are not numeric), and resolvers would read "127.1" or "2130706433"
     * as inet_aton shorthands. Demand a strict dotted quad. */
    struct in_addr a4;
    if (inet_pton(AF_INET, h, &a4) != 1) {
      set_reason(reason, reason_len, "%s: invalid IPv4 address \"%s\"", pfx,
                 h);
      return MS_EADDRESS;
    }
  } else {
    size_t bad = 0;
    const char *why = check_hostname(h, n, &bad);
    if (why) {
      unsigned char c = (unsigned char)h[bad];
      if (strcmp(why, "invalid character in host name") == 0 &&
          (c <= 0x20 || c >= 0x7F))
        set_reason(reason, reason_len,
                   "%s: invalid character 0x%02x in host name", pfx, c);
      else if (strcmp(why, "invalid character in host name") == 0)
        set_reason(reason, reason_len,
                   "%s: invalid character '%c' in host name \"%s\"", pfx, c,
                   h);
      else
        set_reason(reason, reason_len, "%s: %s \"%s\"", pfx, why, h);
      return MS_EADDRESS;
    }
  }

  if (host) {
    if (hostlen <= hn) {
      set_reason(reason, reason_len, "%s: host too long for the buffer", pfx);
      return MS_EADDRESS;
    }
    memcpy(host, hv, hn);
    host[hn] = '\0';
  }
  if (port) *port = p;
  return 0;
}

size_t ms__net_format(const char *host, int port, char *buf, size_t size) {
  if (!host) host = "";
  size_t n = strlen(host);
  /* Accept "[v6]" from callers (e.g. URL-style input) and print it bare. */
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    host++;
    n -= 2;
  }
  char tmp[MS__NET_HOST_MAX];
  char norm[INET6_ADDRSTRLEN + MS__NET_HOST_MAX];
  const char *out = host;
  size_t outn = n;
  if (n < sizeof tmp && memchr(host, ':', n)) {
    memcpy(tmp, host, n);
    tmp[n] = '\0';
    struct in6_addr a6;
    size_t alen;
    /* Canonical IPv6 text (lower case, longest zero run compressed) so
     * that equal addresses print equal; keep any %zone as given. */
    if (parse_ip6(tmp, &a6, &alen) &&
        inet_ntop(AF_INET6, &a6, norm, INET6_ADDRSTRLEN)) {
      size_t nl = strlen(norm);
      size_t zl = n - alen;
      memcpy(norm + nl, tmp + alen, zl);
      norm[nl + zl] = '\0';
      out = norm;
      outn = nl + zl;
    }
  }

  char portstr[16];
  int pl = snprintf(portstr, sizeof portstr, "%d", port);
  size_t portn = pl > 0 ? (size_t)pl : 0;

  /* Manual snprintf-style assembly: the host is not NUL-terminated when
   * brackets were stripped. */
  size_t len = 0;
  const char *parts[3] = {"net:", out, portstr};
  size_t lens[3] = {4, outn, portn};
  for (int k = 0; k < 3; k++) {
    for (size_t i = 0; i < lens[k]; i++) {
      char c = parts[k][i];
      /* Never valid in a host; escape so the result stays one section. */
      bool esc = k == 1 && (c == '!' || c == ';' || c == '~');
      for (int e = esc ? 0 : 1; e < 2; e++) {
        char ch = e == 0 ? '!' : c;
        if (buf && size > 0 && len < size - 1) buf[len] = ch;
        len++;
      }
    }
    if (k == 1) {
      if (buf && size > 0 && len < size - 1) buf[len] = ':';
      len++;
    }
  }
  if (buf && size > 0) buf[len < size ? len : size - 1] = '\0';
  return len;
}

/* ASCII case-insensitive equality of a (length n) with lower-case b. */

bool ms__host_is_loopback(const char *host) {
  if (!host) return false;
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    host++;
    n -= 2;
  }
  /* Names, "localhost" included, are never loopback here: what a name
   * resolves to is the resolver's word, not the address's. */
  char tmp[INET6_ADDRSTRLEN + 1];
  if (n == 0 || n >= sizeof tmp) return false;
  memcpy(tmp, host, n);
  tmp[n] = '\0';
  struct in_addr a4;
  if (inet_pton(AF_INET, tmp, &a4) == 1)
    return ((const unsigned char *)&a4)[0] == 127;
  /* No zone here on purpose: a scoped address is link-local, not ::1. */
  struct in6_addr a6;
  if (inet_pton(AF_INET6, tmp, &a6) == 1) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0,
                                             0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *b = a6.s6_addr;
    if (memcmp(b, &in6addr_loopback, 16) == 0) return true;
    return memcmp(b, mapped, 12) == 0 && b[12] == 127;
  }
  return false;
}

int ms__unix_parse(const ms_section_t *sec, char *path, size_t pathlen,
                   char *reason, size_t reason_len) {
  if (!sec) return MS_EINVAL;
  const char *pfx = sec->name ? sec->name : "unix";
  if (sec->nfields == 0) {
    set_reason(reason, reason_len, "%s: missing path", pfx);
    return MS_EADDRESS;
  }
  if (sec->nfields > 1) {
    set_reason(reason, reason_len,
               "%s: path must be a single field (write ':' in a path as "
               "\"!:\")",
               pfx);
    return MS_EADDRESS;
  }
  size_t n;
  const char *f = field_at(sec, 0, &n);
  if (n == 0) {
    set_reason(reason, reason_len, "%s: missing path", pfx);
    return MS_EADDRESS;
  }
  if (memchr(f, '\0', n)) {
    set_reason(reason, reason_len, "%s: NUL byte in path", pfx);
    return MS_EADDRESS;
  }
  if (n > MS__UNIX_PATH_MAX) {
    set_reason(reason, reason_len, "%s: path is %zu bytes, longer than %zu",
               pfx, n, (size_t)MS__UNIX_PATH_MAX);
    return MS_EADDRESS;
  }
  if (path) {
    if (pathlen <= n) {
      set_reason(reason, reason_len, "%s: path too long for the buffer", pfx);
      return MS_EADDRESS;
    }
    memcpy(path, f, n);
    path[n] = '\0';
  }
  return 0;
}

int ms__host_scope(const char *host) {
  if (ms__host_is_loopback(host)) return MS_SCOPE_LOOPBACK;
  if (!host) return MS_SCOPE_PUBLIC;
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    host++;
    n -= 2;
  }
  char tmp[INET6_ADDRSTRLEN + 1];
  if (n == 0 || n >= sizeof tmp) return MS_SCOPE_PUBLIC;
  memcpy(tmp, host, n);
  tmp[n] = '\0';
  char *pct = strchr(tmp, '%');
  if (pct) *pct = '\0'; /* a zone: link-local */
  struct in_addr a4;
  if (inet_pton(AF_INET, tmp, &a4) == 1) {
    const unsigned char *b = (const unsigned char *)&a4;
    if (b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) ||
        (b[0] == 192 && b[1] == 168) || (b[0] == 169 && b[1] == 254))
      return MS_SCOPE_LOCAL;
    return MS_SCOPE_PUBLIC;
  }
  struct in6_addr a6;
  if (inet_pton(AF_INET6, tmp, &a6) == 1) {
    const unsigned char *b = a6.s6_addr;
    if ((b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80))
      return MS_SCOPE_LOCAL;
  }
  return MS_SCOPE_PUBLIC;
}
