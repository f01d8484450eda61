/* SOCKS5 client exchange (RFC 1928 + RFC 1929). No I/O, no allocation. */
#include "socks5.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

_Static_assert(MS_SOCKS5_MAX_MSG == 513, "RFC 1929 request: 3 + 255 + 255");
_Static_assert(MS_SOCKS5_MAX_REPLY == 262, "reply: 4 + 1 + 255 + 2");
_Static_assert(MS_SOCKS5_MAX_MSG >= 4 + 1 + MS_SOCKS5_MAX_FIELD + 2,
               "the CONNECT request fits the message buffer");


/* ------------------------------------------------------------------ */
/* Reply codes                                                         */
/* ------------------------------------------------------------------ */

typedef struct {
  int rep;
  int err;
  int path; /* 1: path failure, 0: fatal */
  const char *str;
} rep_info_t;

/* RFC 1928 §6, then Tor's extended errors. The descriptions of the Tor
 * codes follow Tor's own names for them. */
static const rep_info_t rep_table[] = {
    {0x00, 0, 0, "succeeded"},
    {0x01, MS_EPROXY, 1, "general SOCKS server failure"},
    {0x02, MS_EPROXY, 0, "connection not allowed by ruleset"},
    {0x03, -ENETUNREACH, 1, "network unreachable"},
    {0x04, -EHOSTUNREACH, 1, "host unreachable"},
    {0x05, -ECONNREFUSED, 1, "connection refused"},
    {0x06, MS_ETIMEDOUT, 1, "TTL expired"},
    {0x07, MS_EPROXY, 0, "command not supported"},
    {0x08, MS_EPROXY, 0, "address type not supported"},
    {0xf0, -EHOSTUNREACH, 1, "onion service descriptor can not be found"},
    {0xf1, MS_EPROXY, 1, "onion service descriptor is invalid"},
    {0xf2, -EHOSTUNREACH, 1, "onion service introduction failed"},
    {0xf3, -EHOSTUNREACH, 1, "onion service rendezvous failed"},
    {0xf4, MS_EUNAUTHORIZED, 0, "onion service missing client authorization"},
    {0xf5, MS_EUNAUTHORIZED, 0, "onion service wrong client authorization"},
    {0xf6, MS_EADDRESS, 0, "onion service invalid address"},
    {0xf7, MS_ETIMEDOUT, 1, "onion service introduction timed out"},
};

/* Any code not in the table: treated like a general failure. */
static const rep_info_t rep_unassigned = {-1, MS_EPROXY, 1,
                                          "unassigned reply code"};


static const rep_info_t *rep_lookup(int rep) {
  for (size_t i = 0; i < sizeof(rep_table) / sizeof(rep_table[0]); i++)
    if (rep_table[i].rep == rep) return &rep_table[i];
  return &rep_unassigned;
}


int ms_socks5_rep_error(int rep) {
  return rep_lookup(rep)->err;
}


const char *ms_socks5_rep_str(int rep) {
  return rep_lookup(rep)->str;
}


int ms_socks5_rep_is_path_failure(int rep) {
  return rep_lookup(rep)->path;
}


/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

static void wipe_creds(ms_socks5_t *s) {
  sodium_memzero(s->user, sizeof(s->user));
  sodium_memzero(s->pass, sizeof(s->pass));
  s->user_len = 0;
  s->pass_len = 0;
}


static int fail(ms_socks5_t *s, int err, int path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(ms_socks5_t *s, int err, int path, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
  va_end(ap);
  s->stage = MS_SOCKS5_FAILED;
  s->error = err;
  s->path_failure = path;
  wipe_creds(s);
  return err;
}


/* Length of a NUL-terminated credential, or -1 if outside 1-255. */
static int cred_len(const char *c) {
  size_t n = strnlen(c, MS_SOCKS5_MAX_FIELD + 1);
  return n >= 1 && n <= MS_SOCKS5_MAX_FIELD ? (int)n : -1;
}


int ms_socks5_init(ms_socks5_t *s, const char *host, size_t host_len,
                   uint16_t port, const char *user, const char *pass) {
  char lit[MS_SOCKS5_MAX_FIELD + 1];
  int ul = 0, pl = 0;

  memset(s, 0, sizeof(*s));
  s->method = -1;
  s->rep = -1;
  s->stage = MS_SOCKS5_FAILED;
  s->error = MS_EINVAL;
  if (host == NULL || host_len == 0 || host_len > MS_SOCKS5_MAX_FIELD ||
      memchr(host, '\0', host_len) != NULL) {
    snprintf(s->reason, sizeof(s->reason),
             "socks5: the host must be 1-255 bytes without NUL");
    return MS_EINVAL;
  }
  if (port == 0) {
    snprintf(s->reason, sizeof(s->reason), "socks5: port 0");
    return MS_EINVAL;
  }
  if ((user == NULL) != (pass == NULL) ||
      (user != NULL && ((ul = cred_len(user)) < 0 ||
                        (pl = cred_len(pass)) < 0))) {
    snprintf(s->reason, sizeof(s->reason),
             "socks5: user name and password must both be 1-255 bytes");
    return MS_EINVAL;
  }

  memcpy(lit, host, host_len);
  lit[host_len] = '\0';
  if (inet_pton(AF_INET, lit, s->host) == 1) {
    s->atyp = MS_SOCKS5_ATYP_IPV4;
    s->host_len = 4;
  } else if (inet_pton(AF_INET6, lit, s->host) == 1) {
    s->atyp = MS_SOCKS5_ATYP_IPV6;
    s->host_len = 16;
  } else if (host_len > 2 && lit[0] == '[' && lit[host_len - 1] == ']' &&
             (lit[host_len - 1] = '\0',
              inet_pton(AF_INET6, lit + 1, s->host) == 1)) {
    s->atyp = MS_SOCKS5_ATYP_IPV6;
    s->host_len = 16;
  } else {
    s->atyp = MS_SOCKS5_ATYP_DOMAIN;
    s->host_len = (uint8_t)host_len;
    memcpy(s->host, host, host_len);
  }
  sodium_memzero(lit, sizeof(lit));
  s->port = port;
  if (user != NULL) {
    s->has_creds = 1;
    s->user_len = (uint8_t)ul;
    s->pass_len = (uint8_t)pl;
    memcpy(s->user, user, (size_t)ul);
    memcpy(s->pass, pass, (size_t)pl);
  }
  s->error = 0;
  s->stage = MS_SOCKS5_SEND_GREETING;
  return 0;
}


void ms_socks5_wipe(ms_socks5_t *s) {
  sodium_memzero(s, sizeof(*s));
}


/* ------------------------------------------------------------------ */
/* Client messages                                                     */
/* ------------------------------------------------------------------ */

/* RFC 1928 §3: VER NMETHODS METHODS. */
static size_t build_greeting(ms_socks5_t *s) {
  uint8_t *o = s->out;
  size_t n = 0;
  o[n++] = MS_SOCKS5_VERSION;
  o[n++] = s->has_creds ? 2 : 1;
  o[n++] = MS_SOCKS5_METHOD_NONE;
  if (s->has_creds) o[n++] = MS_SOCKS5_METHOD_USERPASS;
  return n;
}


/* RFC 1929 §2: VER ULEN UNAME PLEN PASSWD. */
static size_t build_auth(ms_socks5_t *s) {
  uint8_t *o = s->out;
  size_t n = 0;
  o[n++] = MS_SOCKS5_AUTH_VERSION;
  o[n++] = s->user_len;
  memcpy(o + n, s->user, s->user_len);
  n += s->user_len;
  o[n++] = s->pass_len;
  memcpy(o + n, s->pass, s->pass_len);
  n += s->pass_len;
  wipe_creds(s);
  return n;
}


/* RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT. */
static size_t build_connect(ms_socks5_t *s) {
  uint8_t *o = s->out;
  size_t n = 0;
  o[n++] = MS_SOCKS5_VERSION;
  o[n++] = MS_SOCKS5_CMD_CONNECT;
  o[n++] = 0x00;
  o[n++] = s->atyp;
  if (s->atyp == MS_SOCKS5_ATYP_DOMAIN) o[n++] = s->host_len;
  memcpy(o + n, s->host, s->host_len);
  n += s->host_len;
  o[n++] = (uint8_t)(s->port >> 8);
  o[n++] = (uint8_t)(s->port & 0xff);
  return n;
}


size_t ms_socks5_output(ms_socks5_t *s, const uint8_t **out) {
  size_t n;
  ms_socks5_stage_t next;

  *out = NULL;
  /* The previous message may have held the credentials. */
  sodium_memzero(s->out, sizeof(s->out));
  s->out_len = 0;
  switch (s->stage) {
    case MS_SOCKS5_SEND_GREETING:
      n = build_greeting(s);
      next = MS_SOCKS5_WAIT_METHOD;
      s->in_need = 2;
      break;
    case MS_SOCKS5_SEND_AUTH:
      n = build_auth(s);
      next = MS_SOCKS5_WAIT_AUTH;
      s->in_need = 2;
      break;
    case MS_SOCKS5_SEND_CONNECT:
      n = build_connect(s);
      next = MS_SOCKS5_WAIT_REPLY;
      s->in_need = 4; /* until ATYP says more */
      break;
    default:
      return 0;
  }
  s->in_len = 0;
  s->out_len = n;
  s->stage = next;
  *out = s->out;
  return n;
}


/* ------------------------------------------------------------------ */
/* Proxy answers                                                       */
/* ------------------------------------------------------------------ */

static const char *offered(const ms_socks5_t *s) {
  return s->has_creds ? "no authentication, username/password"
                      : "no authentication";
}


/* The method choice (RFC 1928 §3): VER METHOD. One byte was appended. */
static int step_method(ms_socks5_t *s) {
  uint8_t b = s->in[s->in_len - 1];

  if (s->in_len == 1) {
    if (b != MS_SOCKS5_VERSION)
      return fail(s, MS_EFRAME, 0,
                  "socks5: the proxy answered with version %u, not 5 "
                  "(not a SOCKS5 proxy?)", b);
    return MS_SOCKS5_NEED_MORE;
  }
  s->method = b;
  if (b == MS_SOCKS5_METHOD_UNACCEPTABLE)
    return fail(s, MS_EUNAUTHORIZED, 0,
                "socks5: the proxy accepts none of the offered "
                "authentication methods (%s)", offered(s));
  if (b == MS_SOCKS5_METHOD_NONE) {
    wipe_creds(s);
    s->stage = MS_SOCKS5_SEND_CONNECT;
    return MS_SOCKS5_SEND;
  }
  if (b == MS_SOCKS5_METHOD_USERPASS && s->has_creds) {
    s->stage = MS_SOCKS5_SEND_AUTH;
    return MS_SOCKS5_SEND;
  }
  return fail(s, MS_EFRAME, 0,
              "socks5: the proxy chose authentication method 0x%02x, which "
              "was not offered", b);
}


/* The RFC 1929 reply: VER STATUS. */
static int step_auth(ms_socks5_t *s) {
  uint8_t b = s->in[s->in_len - 1];

  if (s->in_len == 1) {
    if (b != MS_SOCKS5_AUTH_VERSION)
      return fail(s, MS_EFRAME, 0,
                  "socks5: username/password reply has version %u, not 1",
                  b);
    return MS_SOCKS5_NEED_MORE;
  }
  if (b != 0x00)
    return fail(s, MS_EUNAUTHORIZED, 0,
                "socks5: the proxy rejected the username/password "
                "(status 0x%02x)", b);
  s->stage = MS_SOCKS5_SEND_CONNECT;
  return MS_SOCKS5_SEND;
}


/* The CONNECT reply (RFC 1928 §6): VER REP RSV ATYP BND.ADDR BND.PORT. */
static int step_reply(ms_socks5_t *s) {
  uint8_t b = s->in[s->in_len - 1];

  switch (s->in_len) {
    case 1:
      if (b != MS_SOCKS5_VERSION)
        return fail(s, MS_EFRAME, 0,
                    "socks5: CONNECT reply has version %u, not 5", b);
      return MS_SOCKS5_NEED_MORE;
    case 2: {
      const rep_info_t *ri = rep_lookup(b);
      s->rep = b;
      if (b == MS_SOCKS5_REP_SUCCEEDED) return MS_SOCKS5_NEED_MORE;
      return fail(s, ri->err, ri->path,
                  "socks5: CONNECT failed: %s (REP 0x%02x)", ri->str, b);
    }
    case 3:
      if (b != 0x00)
        return fail(s, MS_EFRAME, 0,
                    "socks5: CONNECT reply has reserved byte 0x%02x, not 0",
                    b);
      return MS_SOCKS5_NEED_MORE;
    case 4:
      switch (b) {
        case MS_SOCKS5_ATYP_IPV4: s->in_need = 4 + 4 + 2; break;
        case MS_SOCKS5_ATYP_IPV6: s->in_need = 4 + 16 + 2; break;
        case MS_SOCKS5_ATYP_DOMAIN: s->in_need = 5; break; /* length next */
        default:
          return fail(s, MS_EFRAME, 0,
                      "socks5: CONNECT reply has unknown address type 0x%02x",
                      b);
      }
      return MS_SOCKS5_NEED_MORE;
    case 5:
      if (s->in[3] == MS_SOCKS5_ATYP_DOMAIN) {
        if (b == 0)
          return fail(s, MS_EFRAME, 0,
                      "socks5: CONNECT reply has an empty domain name");
        s->in_need = 5 + (size_t)b + 2;
        return MS_SOCKS5_NEED_MORE;
      }
      break;
    default:
      break;
  }
  if (s->in_len < s->in_need) return MS_SOCKS5_NEED_MORE;
  s->stage = MS_SOCKS5_CONNECTED_STAGE;
  return MS_SOCKS5_CONNECTED;
}


int ms_socks5_feed(ms_socks5_t *s, const uint8_t *in, size_t len,
                   size_t *consumed) {
  size_t i = 0;
  int r = MS_SOCKS5_NEED_MORE;

  *consumed = 0;
  switch (s->stage) {
    case MS_SOCKS5_FAILED: return s->error;
    case MS_SOCKS5_CONNECTED_STAGE: return MS_SOCKS5_CONNECTED;
    case MS_SOCKS5_WAIT_METHOD:
    case MS_SOCKS5_WAIT_AUTH:
    case MS_SOCKS5_WAIT_REPLY: break;
    default: return MS_EINVAL; /* a message is waiting to be sent */
  }
  if (in == NULL && len > 0) return MS_EINVAL;

  /* Byte by byte: answers are at most 262 bytes, and each field is checked
   * the moment it is complete. in_len < in_need <= MS_SOCKS5_MAX_REPLY
   * holds before every append. */
  while (i < len) {
    s->in[s->in_len++] = in[i++];
    switch (s->stage) {
      case MS_SOCKS5_WAIT_METHOD: r = step_method(s); break;
      case MS_SOCKS5_WAIT_AUTH: r = step_auth(s); break;
      default: r = step_reply(s); break;
    }
    if (r != MS_SOCKS5_NEED_MORE) break;
  }
  *consumed = i;
  return r;
}


const char *ms_socks5_stage_str(const ms_socks5_t *s) {
  switch (s->stage) {
    case MS_SOCKS5_CONNECTED_STAGE: return "after the CONNECT reply";
    case MS_SOCKS5_FAILED: return "after a failure";
    case MS_SOCKS5_SEND_GREETING: return "before the greeting";
    case MS_SOCKS5_WAIT_METHOD: return "before choosing a method";
    case MS_SOCKS5_SEND_AUTH:
    case MS_SOCKS5_WAIT_AUTH: return "during username/password authentication";
    default: return "before the CONNECT reply";
  }
}

int ms_socks5_eof(ms_socks5_t *s) {
  if (s->stage == MS_SOCKS5_CONNECTED_STAGE) return 0;
  if (s->stage == MS_SOCKS5_FAILED) return s->error;
  return fail(s, MS_EHANGUP, 1, "socks5: the proxy closed the connection %s",
              ms_socks5_stage_str(s));
}


ms_socks5_stage_t ms_socks5_stage(const ms_socks5_t *s) {
  return s->stage;
}


int ms_socks5_error(const ms_socks5_t *s) {
  return s->error;
}


const char *ms_socks5_reason(const ms_socks5_t *s) {
  return s->reason;
}


int ms_socks5_path_failure(const ms_socks5_t *s) {
  return s->stage == MS_SOCKS5_FAILED && s->path_failure;
}


int ms_socks5_rep(const ms_socks5_t *s) {
  return s->rep;
}


int ms_socks5_bound(const ms_socks5_t *s, uint8_t *atyp,
                    const uint8_t **addr, size_t *addr_len, uint16_t *port) {
  size_t off, n;

  if (s->stage != MS_SOCKS5_CONNECTED_STAGE) return MS_EINVAL;
  *atyp = s->in[3];
  if (*atyp == MS_SOCKS5_ATYP_DOMAIN) {
    off = 5;
    n = s->in[4];
  } else {
    off = 4;
    n = *atyp == MS_SOCKS5_ATYP_IPV4 ? 4 : 16;
  }
  *addr = s->in + off;
  *addr_len = n;
  *port = (uint16_t)((s->in[off + n] << 8) | s->in[off + n + 1]);
  return 0;
}
