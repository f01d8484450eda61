/* libFuzzer target for the tor control exchange (wire/torctl.c).
 *   byte 0: bit 0 password, bit 1 a saved key, bit 2 delete once
 *     published; the rest is tor's bytes, fed in PRNG-cut pieces.
 * Checks: counts in bounds, commands end in CRLF and hold no other line
 * end, a publish yields a valid service id (and a valid key for NEW), the
 * result is a documented code, and feeding everything at once ends the
 * same way after the same bytes. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "torctl.h"

#define KEY "ED25519-V3:+ApWB3rfN7XdvFDgEq0HRPYgp4x8lagWUtCdXWVfh1KnIpLhXeQ6fh1U/0MBMR85vuzrnHeoAeG3Yz1jQo5MJQ=="

static uint32_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

typedef struct {
  int status;
  size_t used; /* bytes consumed when it ended */
  size_t sent;
  int published, deleted;
} result_t;

static void take(ms_torctl_t *t, result_t *r) {
  const uint8_t *p;
  size_t n = ms_torctl_output(t, &p);
  if (n == 0) return;
  assert(n <= MS_TORCTL_OUT_MAX && n >= 2);
  assert(p[n - 2] == '\r' && p[n - 1] == '\n');
  for (size_t i = 0; i + 2 < n; i++) assert(p[i] != '\r' && p[i] != '\n' && p[i] != 0);
  r->sent += n;
}

static result_t drive(uint8_t mode, const uint8_t *in, size_t len, int chunked) {
  ms_torctl_t t;
  result_t r = {MS_TORCTL_NEED_MORE, 0, 0, 0, 0};
  size_t off = 0;
  int rc = ms_torctl_init(&t, mode & 1 ? "pass \"word\\" : NULL, 8008,
                          "127.0.0.1:41234", mode & 2 ? KEY : NULL);
  assert(rc == 0);
  take(&t, &r);
  while (off < len) {
    size_t n = chunked ? 1 + rnd() % 64 : len - off, c;
    if (n > len - off) n = len - off;
    uint8_t *piece = malloc(n), *q = piece;
    memcpy(piece, in + off, n);
    off += n;
    int stop = 0;
    while (n > 0 && !stop) {
      int res = ms_torctl_feed(&t, q, n, &c);
      assert(c <= n);
      q += c;
      n -= c;
      switch (res) {
        case MS_TORCTL_NEED_MORE:
          assert(n == 0);
          break;
        case MS_TORCTL_NEED_COOKIE: {
          uint8_t cookie[32] = {1, 2, 3};
          assert(ms_torctl_set_cookie(&t, cookie, 32) == 0);
        } /* fall through */
        case MS_TORCTL_SEND:
          take(&t, &r);
          break;
        case MS_TORCTL_PUBLISHED: {
          const char *id = ms_torctl_service_id(&t);
          assert(ms_torctl_check_service_id(id, strlen(id)));
          if (!(mode & 2)) {
            const char *k = ms_torctl_private_key(&t);
            assert(ms_torctl_check_key(k, strlen(k)));
          }
          r.published++;
          if (mode & 4) {
            assert(ms_torctl_delete(&t) == 0);
            take(&t, &r);
          }
          break;
        }
        case MS_TORCTL_DELETED:
          r.deleted++;
          r.status = res;
          stop = 1;
          break;
        default:
          assert(res == MS_EUNAUTHORIZED || res == MS_EPROXY || res == MS_EFRAME);
          assert(ms_torctl_reason(&t)[0] != '\0');
          assert(ms_torctl_stage(&t) == MS_TORCTL_FAILED);
          r.status = res;
          stop = 1;
          break;
      }
    }
    free(piece);
    if (stop) {
      r.used = off - n;
      break;
    }
  }
  int e = ms_torctl_eof(&t);
  if (r.status < 0) assert(e == r.status);
  else if (r.deleted) assert(e == 0);
  else assert(e == MS_EHANGUP);
  assert(r.published <= 1 && r.deleted <= 1);
  ms_torctl_wipe(&t);
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t mode = data[0];
  rng_state = mode * 2654435761u + (uint32_t)size;
  result_t a = drive(mode, data + 1, size - 1, 1);
  result_t b = drive(mode, data + 1, size - 1, 0);
  assert(a.status == b.status);
  assert(a.used == b.used);
  assert(a.sent == b.sent);
  assert(a.published == b.published && a.deleted == b.deleted);
  return 0;
}
