/* Address codec tests: grammar (valid and invalid tables), canonical
 * printing and round-trip, error positions, escaping, limits, and the
 * net:/unix: field helpers. */
#include "address.h"
#include "mstest.h"
#include "multiserver.h"
#include "netaddr.h"

#include <stdbool.h>

#define KEY "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s="

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* Dump the parsed structure in a test-only notation: sections joined with
 * '~', alternatives with ';', a section as name(f1,f2) with the unescaped
 * fields; no parentheses at all means "no fields", so "shs" and "shs()"
 * (one empty field) stay distinct. */
static void dump(const ms_addr_t *a, char *buf, size_t size) {
  size_t n = 0;
#define PUT(c)                          \
  do {                                  \
    if (n + 1 < size) buf[n] = (c);     \
    n++;                                \
  } while (0)
  for (size_t alt = 0; alt < ms_addr_alternatives(a); alt++) {
    if (alt) PUT(';');
    for (size_t s = 0; s < ms_addr_sections(a, alt); s++) {
      if (s) PUT('~');
      for (const char *p = ms_addr_name(a, alt, s); *p; p++) PUT(*p);
      size_t nf = ms_addr_fields(a, alt, s);
      if (nf == 0) continue;
      PUT('(');
      for (size_t f = 0; f < nf; f++) {
        if (f) PUT(',');
        size_t len;
        const char *v = ms_addr_field(a, alt, s, f, &len);
        for (size_t i = 0; i < len; i++) PUT(v[i]);
      }
      PUT(')');
    }
  }
#undef PUT
  buf[n < size ? n : size - 1] = '\0';
}

/* Structural equality, field bytes included. */
static bool same_addr(const ms_addr_t *a, const ms_addr_t *b) {
  if (ms_addr_alternatives(a) != ms_addr_alternatives(b)) return false;
  for (size_t alt = 0; alt < ms_addr_alternatives(a); alt++) {
    if (ms_addr_sections(a, alt) != ms_addr_sections(b, alt)) return false;
    for (size_t s = 0; s < ms_addr_sections(a, alt); s++) {
      if (strcmp(ms_addr_name(a, alt, s), ms_addr_name(b, alt, s)) != 0)
        return false;
      if (ms_addr_fields(a, alt, s) != ms_addr_fields(b, alt, s)) return false;
      for (size_t f = 0; f < ms_addr_fields(a, alt, s); f++) {
        size_t la, lb;
        const char *fa = ms_addr_field(a, alt, s, f, &la);
        const char *fb = ms_addr_field(b, alt, s, f, &lb);
        if (la != lb || memcmp(fa, fb, la) != 0) return false;
      }
    }
  }
  return true;
}

static int parse_str(const char *s, ms_addr_t **out, ms_addr_error_t *err) {
  return ms_addr_parse(s, strlen(s), out, err);
}

/* ------------------------------------------------------------------ */
/* Valid addresses                                                     */
/* ------------------------------------------------------------------ */

typedef struct {
  const char *in;
  const char *dump;
} valid_case;

static const valid_case valid[] = {
    {"net:example.org:8008", "net(example.org,8008)"},
    {"shs", "shs"},
    {"shs:", "shs()"},
    {"shs::", "shs(,)"},
    {"noauth", "noauth"},
    {"ab", "ab"},
    {"a1", "a1"},
    {"a-", "a-"},
    {"a-b-c9", "a-b-c9"},
    {"z0-9z:x", "z0-9z(x)"},
    {"net:fe80::1:8008", "net(fe80,,1,8008)"},
    {"net:[::1]:8008", "net([,,1],8008)"},
    {"net::::8008", "net(,,,8008)"},
    {"ws://example.org:8989", "ws(//example.org,8989)"},
    {"wss://example.org/ws", "wss(//example.org/ws)"},
    {"ws://[::1]:8989/p", "ws(//[,,1],8989/p)"},
    {"net:example.org:8008~shs:" KEY ";ws://example.org:8989~shs:" KEY,
     "net(example.org,8008)~shs(" KEY ");ws(//example.org,8989)~shs(" KEY
     ")"},
    {"unix:/tmp/a!:b", "unix(/tmp/a:b)"},
    {"xx:!!", "xx(!)"},
    {"xx:!:", "xx(:)"},
    {"xx:!;", "xx(;)"},
    {"xx:!~", "xx(~)"},
    {"xx:!!!!", "xx(!!)"},
    {"xx:a!!b!:c!;d!~e", "xx(a!b:c;d~e)"},
    {"xx:!:!:", "xx(::)"},
    {"aa;bb", "aa;bb"},
    {"aa~bb~cc", "aa~bb~cc"},
    {"aa:1~bb:2;cc:3~dd:4", "aa(1)~bb(2);cc(3)~dd(4)"},
    {"onion:abc.onion:8008", "onion(abc.onion,8008)"},
    {"shs:" KEY ":" KEY, "shs(" KEY "," KEY ")"},
    {"net:1.2.3.4:0", "net(1.2.3.4,0)"},
    {"xx:\"#$%&'()*+,-./0123456789<=>?@ABCXYZ[\\]^_`abcxyz{|}",
     "xx(\"#$%&'()*+,-./0123456789<=>?@ABCXYZ[\\]^_`abcxyz{|})"},
    {"xx:a:", "xx(a,)"},
    {"xx::a", "xx(,a)"},
    {"xx:a;yy", "xx(a);yy"},
    {"gzip~shs:k", "gzip~shs(k)"},
    {"net:localhost:8008~noauth", "net(localhost,8008)~noauth"},
    {"xx:@", "xx(@)"},
    {"xx:}", "xx(})"},
    {"xx:\"", "xx(\")"},
    {"xx:A", "xx(A)"},
    {"shs;shs:", "shs;shs()"},
    {"ab:!;;cd:!~~ef", "ab(;);cd(~)~ef"},
    {"net:fe80::1%eth0:8008", "net(fe80,,1%eth0,8008)"},
};

static void test_valid(void) {
  char d[2048], p[2048], p2[2048];
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    const valid_case *c = &valid[i];
    ms_addr_t *a = NULL, *b = NULL;
    ms_addr_error_t err;
    int rc = parse_str(c->in, &a, &err);
    if (rc != 0) fprintf(stderr, "valid[%zu] %s: %s\n", i, c->in, err.message);
    CHECK_INT(rc, 0);
    if (rc) continue;
    dump(a, d, sizeof d);
    CHECK_STR(d, c->dump);
    /* Canonical form is unique, so printing returns the input exactly. */
    size_t n = ms_addr_print(a, p, sizeof p);
    CHECK_INT(n, strlen(c->in));
    CHECK_STR(p, c->in);
    /* Reparse gives the same structure and printing is idempotent. */
    CHECK_INT(parse_str(p, &b, NULL), 0);
    if (b) {
      CHECK(same_addr(a, b));
      ms_addr_print(b, p2, sizeof p2);
      CHECK_STR(p2, p);
    }
    char *s = ms_addr_to_string(a);
    CHECK_STR(s, c->in);
    ms_free(s);
    ms_addr_free(a);
    ms_addr_free(b);
  }
}

/* ------------------------------------------------------------------ */
/* Invalid addresses                                                   */
/* ------------------------------------------------------------------ */

typedef struct {
  const char *in;
  size_t len; /* 0: strlen(in) */
  const char *msg; /* substring of the message */
  size_t offset;
  int alt, sec;
} invalid_case;

static const invalid_case invalid[] = {
    {"", 0, "empty address", 0, -1, -1},
    {";", 0, "empty alternative", 0, 0, 0},
    {"aa;", 0, "empty alternative (trailing \";\")", 3, 1, 0},
    {"aa~", 0, "empty section (trailing \"~\")", 3, 0, 1},
    {"aa;;bb", 0, "empty alternative", 3, 1, 0},
    {"aa~~bb", 0, "empty section", 3, 0, 1},
    {"~aa", 0, "empty alternative", 0, 0, 0},
    {"aa;~bb", 0, "empty alternative", 3, 1, 0},
    {"Net:x", 0, "protocol name must start with a lowercase letter", 0, 0, 0},
    {"1net", 0, "protocol name must start with a lowercase letter", 0, 0, 0},
    {"-a", 0, "protocol name must start with a lowercase letter", 0, 0, 0},
    {"!!aa", 0, "protocol name must start with a lowercase letter", 0, 0, 0},
    {"nEt", 0, "protocol name must be lowercase", 1, 0, 0},
    {"a", 0, "at least 2 characters", 0, 0, 0},
    {"a:b", 0, "at least 2 characters", 0, 0, 0},
    {":ab", 0, "missing protocol name", 0, 0, 0},
    {"net:exa mple", 0, "invalid character 0x20", 7, 0, 0},
    {"net:a\tb", 0, "invalid character 0x09", 5, 0, 0},
    {"net:\x7f", 0, "invalid character 0x7f", 4, 0, 0},
    {"net:caf\xc3\xa9", 0, "invalid character 0xc3 (non-ASCII)", 7, 0, 0},
    {"net:a!", 0, "lone \"!\"", 5, 0, 0},
    {"net:a!x", 0, "bad escape \"!x\"", 5, 0, 0},
    {"net:!a", 0, "bad escape \"!a\"", 4, 0, 0},
    {"net:! ", 0, "bad escape: \"!\" followed by 0x20", 4, 0, 0},
    {"ne t", 0, "invalid character 0x20 in protocol name", 2, 0, 0},
    {"ne.t:x", 0, "invalid character '.' in protocol name", 2, 0, 0},
    {"ne_t", 0, "invalid character '_' in protocol name", 2, 0, 0},
    {"aa!b", 0, "invalid character '!' in protocol name", 2, 0, 0},
    {"n\xc3\xa9", 0, "invalid character 0xc3 (non-ASCII) in protocol name", 1,
     0, 0},
    {" net", 0, "invalid character 0x20 in protocol name", 0, 0, 0},
    {"net:a\0b", 7, "invalid character 0x00", 5, 0, 0},
    {"aa:b~", 0, "empty section (trailing \"~\")", 5, 0, 1},
    {"aa:b;", 0, "empty alternative (trailing \";\")", 5, 1, 0},
    {"net:example.org:8008~shs:" KEY ";", 0, "empty alternative", 70, 1, 0},
    {"aa:b~Cc", 0, "must start with a lowercase letter", 5, 0, 1},
    {"aa;bb:x~c", 0, "at least 2 characters", 8, 1, 1},
    {"aa:~", 0, "empty section (trailing \"~\")", 4, 0, 1},
    {"\n", 0, "invalid character 0x0a", 0, 0, 0},
    {"aa:b\r\n", 0, "invalid character 0x0d", 4, 0, 0},
    {"aa:!!!", 0, "lone \"!\"", 5, 0, 0},
    {"aa\xff", 0, "invalid character 0xff (non-ASCII)", 2, 0, 0},
    {"ws://example.org:8989;~shs:x", 0, "empty alternative", 22, 1, 0},
    {"aa;bb;cc~dd~ee:x y", 0, "invalid character 0x20", 16, 2, 2},
    {"aa:b:c~dd:\x01", 0, "invalid character 0x01", 10, 0, 1},
    {"shs:" KEY "~", 0, "trailing", 49, 0, 1},
    {"aa~Bb", 0, "must start with a lowercase letter", 3, 0, 1},
};

static void test_invalid(void) {
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
    const invalid_case *c = &invalid[i];
    size_t len = c->len ? c->len : strlen(c->in);
    ms_addr_t *a = (ms_addr_t *)&a; /* must be reset to NULL */
    ms_addr_error_t err;
    memset(&err, 0x55, sizeof err);
    int rc = ms_addr_parse(c->in, len, &a, &err);
    CHECK_INT(rc, MS_EADDRESS);
    CHECK(a == NULL);
    if (rc != MS_EADDRESS) {
      ms_addr_free(a);
      continue;
    }
    bool ok = strstr(err.message, c->msg) != NULL &&
              err.offset == c->offset && err.alternative == c->alt &&
              err.section == c->sec;
    if (!ok)
      fprintf(stderr,
              "invalid[%zu] \"%s\": got \"%s\" at %zu alt %d sec %d, want "
              "\"%s\" at %zu alt %d sec %d\n",
              i, c->in, err.message, err.offset, err.alternative, err.section,
              c->msg, c->offset, c->alt, c->sec);
    CHECK(ok);
    /* NULL err is allowed. */
    CHECK_INT(ms_addr_parse(c->in, len, &a, NULL), MS_EADDRESS);
  }
}

/* ------------------------------------------------------------------ */
/* Limits                                                              */
/* ------------------------------------------------------------------ */

static void test_limits(void) {
  static char buf[MS_ADDR_MAX_LEN + 64];
  char *p;
  ms_addr_t *a = NULL;
  ms_addr_error_t err;

  /* 64 alternatives pass, 65 do not. */
  p = buf;
  for (int i = 0; i < MS_ADDR_MAX_ALTS; i++) p += sprintf(p, "%saa", i ? ";" : "");
  CHECK_INT(parse_str(buf, &a, &err), 0);
  CHECK_INT(ms_addr_alternatives(a), MS_ADDR_MAX_ALTS);
  ms_addr_free(a);
  size_t at = strlen(buf) + 1;
  strcat(buf, ";aa");
  CHECK_INT(parse_str(buf, &a, &err), MS_EADDRESS);
  CHECK(strstr(err.message, "too many alternatives") != NULL);
  CHECK_INT(err.offset, at);
  CHECK_INT(err.alternative, MS_ADDR_MAX_ALTS);

  /* 16 sections pass, 17 do not. */
  p = buf;
  for (int i = 0; i < MS_ADDR_MAX_SECTIONS; i++)
    p += sprintf(p, "%saa", i ? "~" : "");
  CHECK_INT(parse_str(buf, &a, &err), 0);
  CHECK_INT(ms_addr_sections(a, 0), MS_ADDR_MAX_SECTIONS);
  ms_addr_free(a);
  at = strlen(buf) + 1;
  strcat(buf, "~aa");
  CHECK_INT(parse_str(buf, &a, &err), MS_EADDRESS);
  CHECK(strstr(err.message, "too many sections") != NULL);
  CHECK_INT(err.offset, at);
  CHECK_INT(err.section, MS_ADDR_MAX_SECTIONS);
  /* The limit is per alternative. */
  buf[at - 1] = ';';
  CHECK_INT(parse_str(buf, &a, &err), 0);
  ms_addr_free(a);

  /* 32 fields pass, 33 do not. */
  p = buf + sprintf(buf, "aa");
  for (int i = 0; i < MS_ADDR_MAX_FIELDS; i++) p += sprintf(p, ":%d", i);
  CHECK_INT(parse_str(buf, &a, &err), 0);
  CHECK_INT(ms_addr_fields(a, 0, 0), MS_ADDR_MAX_FIELDS);
  CHECK_STR(ms_addr_field(a, 0, 0, 31, NULL), "31");
  ms_addr_free(a);
  at = strlen(buf);
  strcat(buf, ":x");
  CHECK_INT(parse_str(buf, &a, &err), MS_EADDRESS);
  CHECK(strstr(err.message, "too many fields") != NULL);
  CHECK_INT(err.offset, at);

  /* Exactly MS_ADDR_MAX_LEN bytes pass, one more does not. */
  memset(buf, 'x', MS_ADDR_MAX_LEN);
  memcpy(buf, "aa:", 3);
  buf[MS_ADDR_MAX_LEN] = 'x';
  CHECK_INT(ms_addr_parse(buf, MS_ADDR_MAX_LEN, &a, &err), 0);
  size_t flen = 0;
  ms_addr_field(a, 0, 0, 0, &flen);
  CHECK_INT(flen, MS_ADDR_MAX_LEN - 3);
  CHECK_INT(ms_addr_print(a, NULL, 0), MS_ADDR_MAX_LEN);
  ms_addr_free(a);
  CHECK_INT(ms_addr_parse(buf, MS_ADDR_MAX_LEN + 1, &a, &err), MS_EADDRESS);
  CHECK(strstr(err.message, "longer than 8192") != NULL);
  CHECK_INT(err.alternative, -1);
  CHECK_INT(err.section, -1);

  /* Bad arguments. */
  CHECK_INT(ms_addr_parse("aa", 2, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_addr_parse(NULL, 2, &a, NULL), MS_EINVAL);
  CHECK_INT(ms_addr_parse(NULL, 0, &a, &err), MS_EADDRESS);
  /* Input need not be NUL-terminated: only len bytes are read. */
  CHECK_INT(ms_addr_parse("aa:bZZZ", 4, &a, NULL), 0);
  CHECK_STR(ms_addr_field(a, 0, 0, 0, NULL), "b");
  ms_addr_free(a);
}

/* ------------------------------------------------------------------ */
/* Printing, escaping, accessors, section views                        */
/* ------------------------------------------------------------------ */

static void test_print_and_escape(void) {
  char buf[64];
  /* ms_addr_escape: exactly the four specials. */
  CHECK_INT(ms_addr_escape("a:b", 3, buf, sizeof buf), 4);
  CHECK_STR(buf, "a!:b");
  CHECK_INT(ms_addr_escape("!:;~", 4, buf, sizeof buf), 8);
  CHECK_STR(buf, "!!!:!;!~");
  CHECK_INT(ms_addr_escape("/x=+ ", 5, buf, sizeof buf), 5);
  CHECK_STR(buf, "/x=+ ");
  CHECK_INT(ms_addr_escape("", 0, buf, sizeof buf), 0);
  CHECK_STR(buf, "");
  CHECK_INT(ms_addr_escape("a:b", 3, NULL, 0), 4);
  memset(buf, 'Q', sizeof buf);
  CHECK_INT(ms_addr_escape("a:b", 3, buf, 3), 4);
  CHECK_STR(buf, "a!");
  CHECK(buf[3] == 'Q'); /* never writes past size */
  /* Embedded NUL is data as far as escaping goes (len decides). */
  CHECK_INT(ms_addr_escape("a\0b", 3, buf, sizeof buf), 3);

  /* Truncated printing: every size gives a NUL-terminated prefix. */
  const char *in = "net:h:1~shs:a!:b;unix:/x!~y";
  ms_addr_t *a = NULL;
  CHECK_INT(parse_str(in, &a, NULL), 0);
  size_t n = strlen(in);
  bool all = true;
  for (size_t size = 0; size <= n + 2; size++) {
    memset(buf, 'Q', sizeof buf);
    size_t r = ms_addr_print(a, size ? buf : NULL, size);
    if (r != n) all = false;
    if (size == 0) {
      if (buf[0] != 'Q') all = false;
      continue;
    }
    size_t w = size - 1 < n ? size - 1 : n;
    if (strlen(buf) != w || memcmp(buf, in, w) != 0 || buf[w + 1] != 'Q')
      all = false;
  }
  CHECK(all);

  /* Accessors, out of range. */
  CHECK_INT(ms_addr_alternatives(a), 2);
  CHECK_INT(ms_addr_sections(a, 0), 2);
  CHECK_INT(ms_addr_sections(a, 2), 0);
  CHECK(ms_addr_name(a, 0, 2) == NULL);
  CHECK(ms_addr_name(a, 2, 0) == NULL);
  CHECK_STR(ms_addr_name(a, 1, 0), "unix");
  CHECK_INT(ms_addr_fields(a, 0, 5), 0);
  size_t len = 99;
  CHECK(ms_addr_field(a, 0, 0, 2, &len) == NULL);
  CHECK_INT(len, 0);
  CHECK_STR(ms_addr_field(a, 0, 1, 0, &len), "a:b");
  CHECK_INT(len, 3);
  CHECK_STR(ms_addr_field(a, 1, 0, 0, NULL), "/x~y");
  CHECK_INT(ms_addr_alternatives(NULL), 0);
  CHECK(ms_addr_name(NULL, 0, 0) == NULL);

  /* Section views. */
  ms_section_t sec;
  CHECK_INT(ms__addr_section(a, 0, 1, &sec), 0);
  CHECK_STR(sec.name, "shs");
  CHECK_INT(sec.nfields, 1);
  CHECK_STR(sec.fields[0], "a:b");
  CHECK_INT(sec.field_lens[0], 3);
  CHECK_INT(ms__section_print(&sec, buf, sizeof buf), 8);
  CHECK_STR(buf, "shs:a!:b");
  CHECK_INT(ms__addr_section(a, 0, 2, &sec), MS_EINVAL);
  CHECK_INT(ms__addr_section(a, 2, 0, &sec), MS_EINVAL);
  CHECK_INT(ms__addr_section(NULL, 0, 0, &sec), MS_EINVAL);
  CHECK_INT(ms__addr_section(a, 0, 0, NULL), MS_EINVAL);
  ms_addr_free(a);

  CHECK_INT(parse_str("shs", &a, NULL), 0);
  CHECK_INT(ms__addr_section(a, 0, 0, &sec), 0);
  CHECK_INT(sec.nfields, 0);
  CHECK_INT(ms__section_print(&sec, buf, sizeof buf), 3);
  CHECK_STR(buf, "shs");
  ms_addr_free(a);

  /* A hand-built section with every special prints escaped and parses
   * back to the same bytes. */
  const char *fv[] = {"!", ":", ";", "~", "", "a!b:c;d~e"};
  size_t fl[] = {1, 1, 1, 1, 0, 9};
  ms_section_t hs = {"xy", 6, fv, fl};
  char pb[128];
  n = ms__section_print(&hs, pb, sizeof pb);
  CHECK_STR(pb, "xy:!!:!::!;:!~::a!!b!:c!;d!~e");
  CHECK_INT(n, strlen(pb));
  CHECK_INT(parse_str(pb, &a, NULL), 0);
  CHECK_INT(ms_addr_fields(a, 0, 0), 6);
  bool same = true;
  for (size_t i = 0; i < 6; i++) {
    size_t l;
    const char *v = ms_addr_field(a, 0, 0, i, &l);
    if (!v || l != fl[i] || memcmp(v, fv[i], l) != 0) same = false;
  }
  CHECK(same);
  ms_addr_free(a);
  /* field_lens may be NULL in a hand-built view (strlen is used). */
  ms_section_t hs2 = {"xy", 2, fv, NULL};
  CHECK_INT(ms__section_print(&hs2, pb, 4), 8);
  CHECK_STR(pb, "xy:");

  ms_addr_free(NULL); /* no-op */
  ms_free(NULL);
}

/* ------------------------------------------------------------------ */
/* net: and unix:                                                      */
/* ------------------------------------------------------------------ */

typedef struct {
  const char *in; /* one section */
  int listen;
  int rc;
  const char *host; /* expected host, or reason substring on error */
  int port;
} net_case;

static const net_case net_cases[] = {
    {"net:example.org:8008", 0, 0, "example.org", 8008},
    {"net:127.0.0.1:1", 0, 0, "127.0.0.1", 1},
    {"net:fe80::1:8008", 0, 0, "fe80::1", 8008},
    {"net:[::1]:8008", 0, 0, "::1", 8008},
    {"net:::1:8008", 0, 0, "::1", 8008},
    {"net::::8008", 1, 0, "::", 8008},
    {"net:[::ffff:1.2.3.4]:80", 0, 0, "::ffff:1.2.3.4", 80},
    {"net:fe80::1%eth0:80", 0, 0, "fe80::1%eth0", 80},
    {"net:example.org.:80", 0, 0, "example.org.", 80},
    {"net:my_host:80", 0, 0, "my_host", 80},
    {"net:host:65535", 0, 0, "host", 65535},
    {"net:host:08008", 0, 0, "host", 8008},
    {"net:0.0.0.0:0", 1, 0, "0.0.0.0", 0},
    {"net:localhost:0", 1, 0, "localhost", 0},
    {"net:host:65536", 0, MS_EADDRESS, "net: port 65536 out of range 1-65535",
     0},
    {"net:host:70000", 0, MS_EADDRESS, "net: port 70000 out of range 1-65535",
     0},
    {"net:host:70000", 1, MS_EADDRESS, "out of range 0-65535", 0},
    {"net:host:99999999999999999999999", 0, MS_EADDRESS, "out of range", 0},
    {"net:host:-1", 0, MS_EADDRESS, "net: port \"-1\" is not a decimal number",
     0},
    {"net:host:abc", 0, MS_EADDRESS, "is not a decimal number", 0},
    {"net:host:+80", 0, MS_EADDRESS, "is not a decimal number", 0},
    {"net:host:", 0, MS_EADDRESS, "net: missing port", 0},
    {"net:host:0", 0, MS_EADDRESS,
     "net: port 0 is only valid in a listen address", 0},
    {"net:host:00", 0, MS_EADDRESS, "only valid in a listen address", 0},
    {"net:8008", 0, MS_EADDRESS, "net: missing port", 0},
    {"net:example.org", 0, MS_EADDRESS, "net: missing port", 0},
    {"net", 0, MS_EADDRESS, "missing host and port", 0},
    {"net::8008", 0, MS_EADDRESS, "net: missing host", 0},
    {"net:[example.org]:8008", 0, MS_EADDRESS, "is not an IPv6 address", 0},
    {"net:[1.2.3.4]:80", 0, MS_EADDRESS, "is not an IPv6 address", 0},
    {"net:[]:80", 0, MS_EADDRESS, "unbalanced", 0},
    {"net:[::1:80", 0, MS_EADDRESS, "unbalanced", 0},
    {"net:a:b:80", 0, MS_EADDRESS, "not an IPv6 address", 0},
    {"net:fe80::1%:80", 0, MS_EADDRESS, "not an IPv6 address", 0},
    {"net:999.1.1.1:80", 0, MS_EADDRESS, "invalid IPv4 address", 0},
    {"net:127.1:80", 0, MS_EADDRESS, "invalid IPv4 address", 0},
    {"net:2130706433:80", 0, MS_EADDRESS, "invalid IPv4 address", 0},
    {"net:exa$mple:80", 0, MS_EADDRESS, "invalid character '$' in host name",
     0},
    {"net:exa/mple:80", 0, MS_EADDRESS, "invalid character '/'", 0},
    {"net:a..b:80", 0, MS_EADDRESS, "empty label", 0},
    {"net:.a:80", 0, MS_EADDRESS, "empty label", 0},
    {"net:1.2.3.4%x:80", 0, MS_EADDRESS, "invalid character '%'", 0},
    {"net:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b:1",
     0, MS_EADDRESS, "label longer than 63", 0},
};

/* Parse a one-section address and hand its view to fn's caller. */
static ms_addr_t *section_of(const char *in, ms_section_t *sec) {
  ms_addr_t *a = NULL;
  if (parse_str(in, &a, NULL) != 0) return NULL;
  if (ms__addr_section(a, 0, 0, sec) != 0) {
    ms_addr_free(a);
    return NULL;
  }
  return a;
}

static void test_net(void) {
  for (size_t i = 0; i < sizeof net_cases / sizeof net_cases[0]; i++) {
    const net_case *c = &net_cases[i];
    ms_section_t sec;
    ms_addr_t *a = section_of(c->in, &sec);
    CHECK(a != NULL);
    if (!a) continue;
    char host[MS__NET_HOST_MAX], reason[160];
    int port = -7;
    reason[0] = '\0';
    int rc = ms__net_parse(&sec, c->listen, host, sizeof host, &port, reason,
                           sizeof reason);
    bool ok;
    if (c->rc == 0)
      ok = rc == 0 && strcmp(host, c->host) == 0 && port == c->port;
    else
      ok = rc == c->rc && strstr(reason, c->host) != NULL;
    if (!ok)
      fprintf(stderr, "net[%zu] %s listen=%d: rc %d host \"%s\" port %d "
              "reason \"%s\"\n", i, c->in, c->listen, rc,
              rc ? "" : host, port, reason);
    CHECK(ok);
    /* Validate-only mode agrees. */
    CHECK_INT(ms__net_parse(&sec, c->listen, NULL, 0, NULL, NULL, 0), c->rc);

    if (c->rc == 0) {
      /* format -> parse gives the same host and port back. */
      char text[300];
      size_t n = ms__net_format(host, port, text, sizeof text);
      CHECK_INT(n, strlen(text));
      ms_section_t s2;
      ms_addr_t *b = section_of(text, &s2);
      CHECK(b != NULL);
      char host2[MS__NET_HOST_MAX];
      int port2 = -1;
      if (b) {
        CHECK_INT(ms__net_parse(&s2, c->listen, host2, sizeof host2, &port2,
                                NULL, 0), 0);
        CHECK_STR(host2, host);
        CHECK_INT(port2, port);
        ms_addr_free(b);
      }
    }
    ms_addr_free(a);
  }

  /* Buffer too small for the host. */
  ms_section_t sec;
  ms_addr_t *a = section_of("net:example.org:80", &sec);
  char small[11], reason[100];
  CHECK_INT(ms__net_parse(&sec, 0, small, sizeof small, NULL, reason,
                          sizeof reason), MS_EADDRESS);
  char exact[12];
  CHECK_INT(ms__net_parse(&sec, 0, exact, sizeof exact, NULL, NULL, 0), 0);
  CHECK_STR(exact, "example.org");
  /* A tiny reason buffer is truncated, not overrun. */
  ms_addr_free(a);
  a = section_of("net:h:0", &sec);
  char r4[4] = "zzz";
  CHECK_INT(ms__net_parse(&sec, 0, NULL, 0, NULL, r4, sizeof r4), MS_EADDRESS);
  CHECK_STR(r4, "net");
  ms_addr_free(a);
  CHECK_INT(ms__net_parse(NULL, 0, NULL, 0, NULL, NULL, 0), MS_EINVAL);

  /* Host longer than any valid name. */
  char big[400];
  strcpy(big, "net:");
  for (int i = 0; i < 30; i++) strcat(big, "abcdefghi.");
  strcat(big, "x:80");
  a = section_of(big, &sec);
  CHECK_INT(ms__net_parse(&sec, 0, NULL, 0, NULL, reason, sizeof reason),
            MS_EADDRESS);
  CHECK(strstr(reason, "longer than") != NULL);
  ms_addr_free(a);

  /* ms__net_format. */
  char buf[128];
  CHECK_INT(ms__net_format("example.org", 8008, buf, sizeof buf), 20);
  CHECK_STR(buf, "net:example.org:8008");
  ms__net_format("fe80::1", 8008, buf, sizeof buf);
  CHECK_STR(buf, "net:fe80::1:8008");
  ms__net_format("[::1]", 8008, buf, sizeof buf);
  CHECK_STR(buf, "net:::1:8008");
  ms__net_format("FE80:0:0::0001", 1, buf, sizeof buf);
  CHECK_STR(buf, "net:fe80::1:1");
  ms__net_format("fe80::1%eth0", 5, buf, sizeof buf);
  CHECK_STR(buf, "net:fe80::1%eth0:5");
  ms__net_format("::", 8008, buf, sizeof buf);
  CHECK_STR(buf, "net::::8008");
  ms__net_format("127.0.0.1", 0, buf, sizeof buf);
  CHECK_STR(buf, "net:127.0.0.1:0");
  /* Junk never breaks out of its section. */
  ms__net_format("a;b~c!d", 1, buf, sizeof buf);
  CHECK_STR(buf, "net:a!;b!~c!!d:1");
  memset(buf, 'Q', sizeof buf);
  CHECK_INT(ms__net_format("example.org", 8008, buf, 8), 20);
  CHECK_STR(buf, "net:exa");
  CHECK(buf[8] == 'Q');
  CHECK_INT(ms__net_format("example.org", 8008, NULL, 0), 20);

  /* Loopback. */
  CHECK(ms__host_is_loopback("127.0.0.1"));
  CHECK(ms__host_is_loopback("127.255.1.2"));
  CHECK(ms__host_is_loopback("::1"));
  CHECK(ms__host_is_loopback("[::1]"));
  CHECK(ms__host_is_loopback("0:0:0:0:0:0:0:1"));
  CHECK(ms__host_is_loopback("::ffff:127.0.0.1"));
  CHECK(!ms__host_is_loopback("localhost")); /* names never count */
  CHECK(!ms__host_is_loopback("LocalHost")); /* names never count */
  CHECK(!ms__host_is_loopback("localhost.")); /* names never count */
  CHECK(!ms__host_is_loopback("localhost.evil.example"));
  CHECK(!ms__host_is_loopback("localhostx"));
  CHECK(!ms__host_is_loopback("128.0.0.1"));
  CHECK(!ms__host_is_loopback("126.255.255.255"));
  CHECK(!ms__host_is_loopback("0.0.0.0"));
  CHECK(!ms__host_is_loopback("::"));
  CHECK(!ms__host_is_loopback("::2"));
  CHECK(!ms__host_is_loopback("::ffff:10.0.0.1"));
  CHECK(!ms__host_is_loopback("127.1"));
  CHECK(!ms__host_is_loopback("example.org"));
  CHECK(!ms__host_is_loopback(""));
  CHECK(!ms__host_is_loopback(NULL));
}

static void test_unix(void) {
  char path[256], reason[160];
  ms_section_t sec;
  ms_addr_t *a;

  a = section_of("unix:/tmp/ms.sock", &sec);
  CHECK_INT(ms__unix_parse(&sec, path, sizeof path, reason, sizeof reason), 0);
  CHECK_STR(path, "/tmp/ms.sock");
  ms_addr_free(a);

  a = section_of("unix:/tmp/a!:b!~c", &sec);
  CHECK_INT(ms__unix_parse(&sec, path, sizeof path, reason, sizeof reason), 0);
  CHECK_STR(path, "/tmp/a:b~c");
  ms_addr_free(a);

  a = section_of("unix:rel/sock", &sec);
  CHECK_INT(ms__unix_parse(&sec, path, sizeof path, NULL, 0), 0);
  CHECK_STR(path, "rel/sock");
  ms_addr_free(a);

  const char *bad[][2] = {
      {"unix", "unix: missing path"},
      {"unix:", "unix: missing path"},
      {"unix:/tmp/a:b", "single field"},
      {"unix::", "single field"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    a = section_of(bad[i][0], &sec);
    CHECK(a != NULL);
    if (!a) continue;
    reason[0] = '\0';
    CHECK_INT(ms__unix_parse(&sec, path, sizeof path, reason, sizeof reason),
              MS_EADDRESS);
    CHECK(strstr(reason, bad[i][1]) != NULL);
    ms_addr_free(a);
  }

  /* sun_path limit: 107 bytes on Linux. */
  char in[300];
  size_t max = MS__UNIX_PATH_MAX;
  strcpy(in, "unix:/");
  memset(in + 6, 'p', max - 1);
  in[5 + max] = '\0';
  a = section_of(in, &sec);
  CHECK_INT(ms__unix_parse(&sec, path, sizeof path, reason, sizeof reason), 0);
  CHECK_INT(strlen(path), max);
  /* Output buffer exactly one short. */
  CHECK_INT(ms__unix_parse(&sec, path, max, reason, sizeof reason),
            MS_EADDRESS);
  ms_addr_free(a);
  in[5 + max] = 'p';
  in[6 + max] = '\0';
  a = section_of(in, &sec);
  CHECK_INT(ms__unix_parse(&sec, path, sizeof path, reason, sizeof reason),
            MS_EADDRESS);
  CHECK(strstr(reason, "longer than") != NULL);
  ms_addr_free(a);
#ifdef __linux__
  CHECK_INT(MS__UNIX_PATH_MAX, 107);
#endif
  CHECK_INT(ms__unix_parse(NULL, path, sizeof path, NULL, 0), MS_EINVAL);

  /* Hand-built view with a NUL inside the path. */
  const char *fv[] = {"/a\0b"};
  size_t fl[] = {4};
  ms_section_t hs = {"unix", 1, fv, fl};
  CHECK_INT(ms__unix_parse(&hs, path, sizeof path, reason, sizeof reason),
            MS_EADDRESS);
  CHECK(strstr(reason, "NUL") != NULL);
}

int main(void) {
  test_valid();
  test_invalid();
  test_limits();
  test_print_and_escape();
  test_net();
  test_unix();
  return mst_done("address");
}
