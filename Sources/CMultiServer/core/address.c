/* Address codec: parse and print multiserver addresses (spec/address.md).
 *
 *   multiaddress = address ( ";" address )*
 *   address      = protocol ( "~" protocol )*
 *   protocol     = name ( ":" data )*
 *
 * One strict codec for all three separators: "!" escapes "!", ":", ";" and
 * "~" everywhere inside data, so printing the parsed form gives back exactly
 * the input (there is only one way to spell any value) and print/parse
 * round-trip. Pure C, no I/O.
 *
 * Parsing runs the same scanner twice: the first pass validates and counts
 * (alternatives, sections, fields, bytes of unescaped text), then one block
 * is allocated for everything, and the second pass fills it in. The second
 * pass cannot fail, so there is no partially built state to unwind. */
#include "address.h"

#include <stdalign.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  size_t first_sec; /* index into ms_addr_s.secs */
  size_t nsecs;
} ms__alt_t;

typedef struct {
  const char *name;   /* NUL-terminated, inside data */
  size_t first_field; /* index into ms_addr_s.fields / field_lens */
  size_t nfields;
} ms__sec_t;

struct ms_addr_s {
  size_t nalts, nsecs, nfields, ndata;
  ms__alt_t *alts;
  ms__sec_t *secs;
  const char **fields; /* unescaped, NUL-terminated, inside data */
  size_t *field_lens;
  char *data; /* names and fields, each followed by a NUL */
};

void ms_free(void *p) { free(p); }

/* ------------------------------------------------------------------ */
/* Output with snprintf semantics                                      */
/* ------------------------------------------------------------------ */

typedef struct {
  char *buf;
  size_t size; /* capacity including the NUL; 0 = measure only */
  size_t len;  /* bytes the full output needs so far */
} ms__out_t;

static void out_init(ms__out_t *o, char *buf, size_t size) {
  o->buf = buf;
  o->size = buf ? size : 0;
  o->len = 0;
}

static void out_byte(ms__out_t *o, char c) {
  /* Keep one byte for the NUL; count past the end so callers learn the
   * size they need. */
  if (o->size > 0 && o->len < o->size - 1) o->buf[o->len] = c;
  o->len++;
}

static void out_str(ms__out_t *o, const char *s) {
  for (; *s; s++) out_byte(o, *s);
}

static void out_escaped(ms__out_t *o, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '!' || c == ':' || c == ';' || c == '~') out_byte(o, '!');
    out_byte(o, c);
  }
}

static size_t out_finish(ms__out_t *o) {
  if (o->size > 0) o->buf[o->len < o->size ? o->len : o->size - 1] = '\0';
  return o->len;
}

size_t ms_addr_escape(const char *in, size_t len, char *buf, size_t size) {
  ms__out_t o;
  out_init(&o, buf, size);
  if (in) out_escaped(&o, in, len);
  return out_finish(&o);
}

/* ------------------------------------------------------------------ */
/* Character classes                                                   */
/* ------------------------------------------------------------------ */

/* Locale-independent on purpose: the grammar is ASCII, and <ctype.h> would
 * accept more under some locales (and is UB for negative chars). */
static bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
static bool is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_name_char(unsigned char c) {
  return is_lower(c) || is_digit(c) || c == '-';
}
/* Literal data bytes: printable ASCII except space and the four specials. */
static bool is_data_char(unsigned char c) {
  return (c >= 0x22 && c <= 0x39) || (c >= 0x3C && c <= 0x7D);
}
static bool is_special(unsigned char c) {
  return c == '!' || c == ':' || c == ';' || c == '~';
}
static bool is_printable(unsigned char c) { return c > 0x20 && c < 0x7F; }

/* ------------------------------------------------------------------ */
/* Scanner                                                             */
/* ------------------------------------------------------------------ */

typedef struct {
  const unsigned char *s;
  size_t len;
  size_t i;          /* current offset */
  ms_addr_error_t *err;
  struct ms_addr_s *a; /* NULL in the counting pass */
  /* running totals; after pass 1 they size the allocation */
  size_t nalts, nsecs, nfields, ndata;
  int alt, sec; /* position for error reports */
} ms__scan_t;

static int scan_fail(ms__scan_t *sc, size_t offset, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int scan_fail(ms__scan_t *sc, size_t offset, const char *fmt, ...) {
  if (sc->err) {
    sc->err->offset = offset;
    sc->err->alternative = sc->alt;
    sc->err->section = sc->sec;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->err->message, sizeof sc->err->message, fmt, ap);
    va_end(ap);
  }
  return MS_EADDRESS;
}

/* Describe a byte that may not appear where it was found. */
static int fail_char(ms__scan_t *sc, size_t at, const char *where) {
  unsigned char c = sc->s[at];
  if (c >= 0x80)
    return scan_fail(sc, at, "invalid character 0x%02x (non-ASCII)%s", c,
                     where);
  if (!is_printable(c))
    return scan_fail(sc, at, "invalid character 0x%02x%s", c, where);
  return scan_fail(sc, at, "invalid character '%c'%s", c, where);
}

/* Append one unescaped byte to the data area (pass 2) and count it. */
static void emit(ms__scan_t *sc, unsigned char c) {
  if (sc->a) sc->a->data[sc->ndata] = (char)c;
  sc->ndata++;
}

/* name = [a-z] [a-z0-9-]+ */
static int scan_name(ms__scan_t *sc) {
  size_t start = sc->i;
  if (start == sc->len || sc->s[start] == '~' || sc->s[start] == ';') {
    /* Nothing before the next separator. Say which kind of empty thing it
     * is, and call out the trailing separator case explicitly. */
    bool alt_start = sc->sec == 0;
    if (start == sc->len && start > 0)
      return scan_fail(sc, start, "%s (trailing \"%c\")",
                       alt_start ? "empty alternative" : "empty section",
                       sc->s[start - 1]);
    return scan_fail(sc, start, "%s",
                     alt_start ? "empty alternative" : "empty section");
  }
  unsigned char c = sc->s[start];
  if (c == ':') return scan_fail(sc, start, "missing protocol name");
  if (!is_lower(c)) {
    if (is_printable(c)) /* capital, digit, '-', punctuation */
      return scan_fail(sc, start,
                       "protocol name must start with a lowercase letter");
    return fail_char(sc, start, " in protocol name");
  }
  while (sc->i < sc->len && is_name_char(sc->s[sc->i])) sc->i++;
  if (sc->i < sc->len) {
    c = sc->s[sc->i];
    if (is_upper(c))
      return scan_fail(sc, sc->i, "protocol name must be lowercase");
    if (c != ':' && c != '~' && c != ';')
      return fail_char(sc, sc->i, " in protocol name");
  }
  if (sc->i - start < 2)
    return scan_fail(sc, start,
                     "protocol name must have at least 2 characters");
  for (size_t k = start; k < sc->i; k++) emit(sc, sc->s[k]);
  emit(sc, '\0');
  return 0;
}

/* data = ( char | "!" special )*, ending at a separator or the end. */
static int scan_data(ms__scan_t *sc) {
  while (sc->i < sc->len) {
    unsigned char c = sc->s[sc->i];
    if (c == ':' || c == ';' || c == '~') break;
    if (c == '!') {
      if (sc->i + 1 == sc->len)
        return scan_fail(sc, sc->i, "lone \"!\" at end of input");
      unsigned char d = sc->s[sc->i + 1];
      if (!is_special(d)) {
        if (is_printable(d))
          return scan_fail(sc, sc->i,
                           "bad escape \"!%c\" (only !!, !:, !; and !~)", d);
        return scan_fail(sc, sc->i,
                         "bad escape: \"!\" followed by 0x%02x "
                         "(only !!, !:, !; and !~)",
                         d);
      }
      emit(sc, d);
      sc->i += 2;
    } else if (is_data_char(c)) {
      emit(sc, c);
      sc->i++;
    } else {
      return fail_char(sc, sc->i, "");
    }
  }
  emit(sc, '\0');
  return 0;
}

static int scan_section(ms__scan_t *sc) {
  size_t name_at = sc->ndata;
  size_t first_field = sc->nfields;
  int rc = scan_name(sc);
  if (rc) return rc;
  size_t nf = 0;
  while (sc->i < sc->len && sc->s[sc->i] == ':') {
    if (nf == MS_ADDR_MAX_FIELDS)
      return scan_fail(sc, sc->i, "too many fields in a section (max %d)",
                       MS_ADDR_MAX_FIELDS);
    sc->i++; /* the ':' */
    size_t data_at = sc->ndata;
    rc = scan_data(sc);
    if (rc) return rc;
    if (sc->a) {
      sc->a->fields[sc->nfields] = sc->a->data + data_at;
      sc->a->field_lens[sc->nfields] = sc->ndata - data_at - 1; /* no NUL */
    }
    sc->nfields++;
    nf++;
  }
  if (sc->a) {
    ms__sec_t *s = &sc->a->secs[sc->nsecs];
    s->name = sc->a->data + name_at;
    s->first_field = first_field;
    s->nfields = nf;
  }
  sc->nsecs++;
  return 0;
}

static int scan_address(ms__scan_t *sc) {
  for (;;) { /* one ;-alternative per iteration */
    if (sc->nalts == MS_ADDR_MAX_ALTS)
      return scan_fail(sc, sc->i, "too many alternatives (max %d)",
                       MS_ADDR_MAX_ALTS);
    size_t first_sec = sc->nsecs;
    sc->sec = 0;
    for (;;) { /* one ~-section per iteration */
      if (sc->sec == MS_ADDR_MAX_SECTIONS)
        return scan_fail(sc, sc->i, "too many sections (max %d)",
                         MS_ADDR_MAX_SECTIONS);
      int rc = scan_section(sc);
      if (rc) return rc;
      /* scan_section stops only at the end, '~' or ';'. */
      if (sc->i < sc->len && sc->s[sc->i] == '~') {
        sc->i++;
        sc->sec++;
        continue;
      }
      break;
    }
    if (sc->a) {
      sc->a->alts[sc->nalts].first_sec = first_sec;
      sc->a->alts[sc->nalts].nsecs = sc->nsecs - first_sec;
    }
    sc->nalts++;
    if (sc->i == sc->len) return 0;
    sc->i++; /* the ';' */
    sc->alt++;
  }
}

static void scan_init(ms__scan_t *sc, const char *str, size_t len,
                      ms_addr_error_t *err, struct ms_addr_s *a) {
  memset(sc, 0, sizeof *sc);
  sc->s = (const unsigned char *)str;
  sc->len = len;
  sc->err = err;
  sc->a = a;
}

/* Round up to a multiple of align (a power of two). */
static size_t align_up(size_t n, size_t align) {
  return (n + align - 1) & ~(align - 1);
}

int ms_addr_parse(const char *str, size_t len, ms_addr_t **out,
                  ms_addr_error_t *err) {
  if (!out || (!str && len > 0)) return MS_EINVAL;
  *out = NULL;
  ms__scan_t sc;
  scan_init(&sc, str, len, err, NULL);
  if (err) {
    memset(err, 0, sizeof *err);
    err->alternative = -1;
    err->section = -1;
  }
  sc.alt = -1;
  sc.sec = -1;
  if (len == 0) return scan_fail(&sc, 0, "empty address");
  if (len > MS_ADDR_MAX_LEN)
    return scan_fail(&sc, MS_ADDR_MAX_LEN,
                     "address longer than %d bytes", MS_ADDR_MAX_LEN);
  sc.alt = 0;
  sc.sec = 0;
  int rc = scan_address(&sc);
  if (rc) return rc;

  /* Pass 1 succeeded: lay out one block. The counts are bounded by the
   * limits and the input length (<= 8 KiB), so none of this can overflow. */
  size_t off_alts = align_up(sizeof(struct ms_addr_s), alignof(ms__alt_t));
  size_t off_secs = align_up(off_alts + sc.nalts * sizeof(ms__alt_t),
                             alignof(ms__sec_t));
  size_t off_fields = align_up(off_secs + sc.nsecs * sizeof(ms__sec_t),
                               alignof(const char *));
  size_t off_lens = align_up(off_fields + sc.nfields * sizeof(const char *),
                             alignof(size_t));
  size_t off_data = off_lens + sc.nfields * sizeof(size_t);
  size_t total = off_data + sc.ndata;
  char *block = malloc(total);
  if (!block) return MS_ENOMEM;

  /* malloc's alignment suits every member and each offset was aligned
   * above; going through void * says so to -Wcast-align. */
  struct ms_addr_s *a = (void *)block;
  a->nalts = sc.nalts;
  a->nsecs = sc.nsecs;
  a->nfields = sc.nfields;
  a->ndata = sc.ndata;
  a->alts = (void *)(block + off_alts);
  a->secs = (void *)(block + off_secs);
  a->fields = (void *)(block + off_fields);
  a->field_lens = (void *)(block + off_lens);
  a->data = block + off_data;

  scan_init(&sc, str, len, NULL, a);
  rc = scan_address(&sc);
  if (rc) { /* cannot happen: same input, same path as pass 1 */
    free(block);
    return rc;
  }
  *out = a;
  return 0;
}

void ms_addr_free(ms_addr_t *addr) { free(addr); }

/* ------------------------------------------------------------------ */
/* Accessors                                                           */
/* ------------------------------------------------------------------ */

static const ms__sec_t *get_sec(const ms_addr_t *a, size_t alt, size_t sec) {
  if (!a || alt >= a->nalts || sec >= a->alts[alt].nsecs) return NULL;
  return &a->secs[a->alts[alt].first_sec + sec];
}

size_t ms_addr_alternatives(const ms_addr_t *addr) {
  return addr ? addr->nalts : 0;
}

size_t ms_addr_sections(const ms_addr_t *addr, size_t alt) {
  if (!addr || alt >= addr->nalts) return 0;
  return addr->alts[alt].nsecs;
}

const char *ms_addr_name(const ms_addr_t *addr, size_t alt, size_t sec) {
  const ms__sec_t *s = get_sec(addr, alt, sec);
  return s ? s->name : NULL;
}

size_t ms_addr_fields(const ms_addr_t *addr, size_t alt, size_t sec) {
  const ms__sec_t *s = get_sec(addr, alt, sec);
  return s ? s->nfields : 0;
}

const char *ms_addr_field(const ms_addr_t *addr, size_t alt, size_t sec,
                          size_t field, size_t *len) {
  const ms__sec_t *s = get_sec(addr, alt, sec);
  if (!s || field >= s->nfields) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = addr->field_lens[s->first_field + field];
  return addr->fields[s->first_field + field];
}

int ms__addr_section(const ms_addr_t *a, size_t alt, size_t sec,
                     ms_section_t *out) {
  const ms__sec_t *s = get_sec(a, alt, sec);
  if (!s || !out) return MS_EINVAL;
  out->name = s->name;
  out->nfields = s->nfields;
  /* first_field <= a->nfields, so this stays inside (or one past) the
   * arrays even for a section without fields. */
  out->fields = a->fields + s->first_field;
  out->field_lens = a->field_lens + s->first_field;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Printing                                                            */
/* ------------------------------------------------------------------ */

static void out_section(ms__out_t *o, const ms_section_t *sec) {
  if (sec->name) out_str(o, sec->name);
  for (size_t f = 0; f < sec->nfields; f++) {
    out_byte(o, ':');
    const char *v = sec->fields ? sec->fields[f] : NULL;
    if (!v) continue;
    /* field_lens is optional for hand-built sections. */
    size_t n = sec->field_lens ? sec->field_lens[f] : strlen(v);
    out_escaped(o, v, n);
  }
}

size_t ms__section_print(const ms_section_t *sec, char *buf, size_t size) {
  ms__out_t o;
  out_init(&o, buf, size);
  if (sec) out_section(&o, sec);
  return out_finish(&o);
}

size_t ms_addr_print(const ms_addr_t *addr, char *buf, size_t size) {
  ms__out_t o;
  out_init(&o, buf, size);
  for (size_t alt = 0; addr && alt < addr->nalts; alt++) {
    if (alt > 0) out_byte(&o, ';');
    for (size_t sec = 0; sec < addr->alts[alt].nsecs; sec++) {
      if (sec > 0) out_byte(&o, '~');
      ms_section_t view;
      if (ms__addr_section(addr, alt, sec, &view) == 0) out_section(&o, &view);
    }
  }
  return out_finish(&o);
}

char *ms_addr_to_string(const ms_addr_t *addr) {
  size_t n = ms_addr_print(addr, NULL, 0);
  char *s = malloc(n + 1);
  if (!s) return NULL;
  ms_addr_print(addr, s, n + 1);
  return s;
}
