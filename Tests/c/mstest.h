/* Minimal test harness for the C tests: CHECK macros, hex helpers, and a
 * closing "N passed, N failed" line (read by CI). The two counters are one
 * pair per test binary (defined in util_mstest.c, which the Makefile links
 * into every test), so a CHECK in a shared helper (util_net.c) counts
 * towards the suite that called it. */
#ifndef MSTEST_H
#define MSTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

extern int mst_pass, mst_fail;

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (cond) {                                                               \
      mst_pass++;                                                             \
    } else {                                                                  \
      mst_fail++;                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                         \
  } while (0)

#define CHECK_INT(a, b)                                                       \
  do {                                                                        \
    long long mst_a = (long long)(a), mst_b = (long long)(b);                 \
    if (mst_a == mst_b) {                                                     \
      mst_pass++;                                                             \
    } else {                                                                  \
      mst_fail++;                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n",      \
              __FILE__, __LINE__, #a, #b, mst_a, mst_b);                      \
    }                                                                         \
  } while (0)

#define CHECK_STR(a, b)                                                       \
  do {                                                                        \
    const char *mst_a = (a), *mst_b = (b);                                    \
    if (mst_a && mst_b && strcmp(mst_a, mst_b) == 0) {                        \
      mst_pass++;                                                             \
    } else {                                                                  \
      mst_fail++;                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" vs \"%s\")\n",  \
              __FILE__, __LINE__, #a, #b, mst_a ? mst_a : "(null)",           \
              mst_b ? mst_b : "(null)");                                      \
    }                                                                         \
  } while (0)

#define CHECK_MEM(a, b, n)                                                    \
  do {                                                                        \
    if (memcmp((a), (b), (n)) == 0) {                                         \
      mst_pass++;                                                             \
    } else {                                                                  \
      mst_fail++;                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%zu bytes)\n",         \
              __FILE__, __LINE__, #a, #b, (size_t)(n));                       \
    }                                                                         \
  } while (0)

/* hay contains needle, ignoring case (strcasestr: needs _GNU_SOURCE). */
#define CHECK_HAS(hay, needle)                                                \
  do {                                                                        \
    const char *mst_h = (hay), *mst_n = (needle);                             \
    if (mst_h && mst_n && strcasestr(mst_h, mst_n)) {                         \
      mst_pass++;                                                             \
    } else {                                                                  \
      mst_fail++;                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: \"%s\" contains \"%s\"\n",        \
              __FILE__, __LINE__, mst_h ? mst_h : "(null)",                   \
              mst_n ? mst_n : "(null)");                                      \
    }                                                                         \
  } while (0)

/* Decode hex into out (capacity cap). Returns the byte count, or -1. */
static inline long mst_unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = strlen(hex);
  if (n % 2 || n / 2 > cap) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
    out[i] = (uint8_t)v;
  }
  return (long)(n / 2);
}

/* Print the closing line and return the process exit status. */
static inline int mst_done(const char *suite) {
  printf("%s: %d passed, %d failed\n", suite, mst_pass, mst_fail);
  fflush(stdout);
  return mst_fail ? 1 : 0;
}

#endif
