/* libFuzzer target for the address codec: anything that parses must print,
 * reparse to the same structure, and print identically again; the net: and
 * unix: helpers must survive every section. Aborts on any mismatch. */
#include "address.h"
#include "multiserver.h"
#include "netaddr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int same_addr(const ms_addr_t *a, const ms_addr_t *b) {
  size_t na = ms_addr_alternatives(a);
  if (na != ms_addr_alternatives(b)) return 0;
  for (size_t alt = 0; alt < na; alt++) {
    size_t ns = ms_addr_sections(a, alt);
    if (ns != ms_addr_sections(b, alt)) return 0;
    for (size_t s = 0; s < ns; s++) {
      if (strcmp(ms_addr_name(a, alt, s), ms_addr_name(b, alt, s)) != 0)
        return 0;
      size_t nf = ms_addr_fields(a, alt, s);
      if (nf != ms_addr_fields(b, alt, s)) return 0;
      for (size_t f = 0; f < nf; f++) {
        size_t la, lb;
        const char *fa = ms_addr_field(a, alt, s, f, &la);
        const char *fb = ms_addr_field(b, alt, s, f, &lb);
        if (!fa || !fb || la != lb || memcmp(fa, fb, la) != 0) return 0;
        if (fa[la] != '\0') return 0; /* fields are NUL-terminated */
      }
    }
  }
  return 1;
}

/* Every section through the transport helpers, in both roles; a section
 * they accept must format and parse back to the same host and port. */
static void exercise_sections(const ms_addr_t *a) {
  for (size_t alt = 0; alt < ms_addr_alternatives(a); alt++) {
    for (size_t s = 0; s < ms_addr_sections(a, alt); s++) {
      ms_section_t sec;
      if (ms__addr_section(a, alt, s, &sec) != 0) abort();
      char sp[64];
      size_t need = ms__section_print(&sec, NULL, 0);
      if (ms__section_print(&sec, sp, sizeof sp) != need) abort();

      char host[MS__NET_HOST_MAX], reason[160], path[256];
      int port = -1;
      for (int listen = 0; listen < 2; listen++) {
        if (ms__net_parse(&sec, listen, host, sizeof host, &port, reason,
                          sizeof reason) == 0) {
          if (port < (listen ? 0 : 1) || port > 65535) abort();
          (void)ms__host_is_loopback(host);
          char text[MS__NET_HOST_MAX + 32];
          size_t n = ms__net_format(host, port, text, sizeof text);
          if (n >= sizeof text) abort();
          ms_addr_t *b = NULL;
          if (ms_addr_parse(text, n, &b, NULL) != 0) abort();
          ms_section_t s2;
          char host2[MS__NET_HOST_MAX];
          int port2 = -1;
          if (ms__addr_section(b, 0, 0, &s2) != 0) abort();
          if (ms__net_parse(&s2, listen, host2, sizeof host2, &port2, NULL,
                            0) != 0)
            abort();
          if (port2 != port) abort();
          /* IPv6 text is normalised by format, so compare again after a
           * second format instead of against the raw input. */
          char text2[MS__NET_HOST_MAX + 32];
          ms__net_format(host2, port2, text2, sizeof text2);
          if (strcmp(text, text2) != 0) abort();
          ms_addr_free(b);
        }
      }
      (void)ms__unix_parse(&sec, path, sizeof path, reason, sizeof reason);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_addr_t *a = NULL, *b = NULL;
  ms_addr_error_t err;
  int rc = ms_addr_parse((const char *)data, size, &a, &err);
  if (rc != 0) {
    if (rc != MS_EADDRESS || a) abort();
    if (size > 0 && size <= MS_ADDR_MAX_LEN && err.offset > size) abort();
    if (memchr(err.message, '\0', sizeof err.message) == NULL) abort();
    return 0;
  }
  if (size == 0 || size > MS_ADDR_MAX_LEN) abort();

  char *p1 = ms_addr_to_string(a);
  if (!p1) abort();
  /* Canonical form is unique: the printed text is the input itself. */
  if (strlen(p1) != size || memcmp(p1, data, size) != 0) abort();
  if (ms_addr_parse(p1, strlen(p1), &b, NULL) != 0) abort();
  char *p2 = ms_addr_to_string(b);
  if (!p2 || strcmp(p1, p2) != 0) abort();
  if (!same_addr(a, b)) abort();

  /* A truncated print is a prefix of the full one. */
  char small[17];
  size_t need = ms_addr_print(a, small, sizeof small);
  if (need != size) abort();
  size_t w = need < sizeof small - 1 ? need : sizeof small - 1;
  if (strlen(small) != w || memcmp(small, p1, w) != 0) abort();

  exercise_sections(a);
  ms_free(p1);
  ms_free(p2);
  ms_addr_free(a);
  ms_addr_free(b);
  return 0;
}
