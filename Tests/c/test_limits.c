/* Size sums of a write are checked for overflow: buffer lengths that sum
 * past SIZE_MAX (pointers to a small real buffer with huge fake lengths),
 * or whose sealed (box-stream) size does, fail with MS_EINVAL before
 * anything is written, and the stream goes on working. Also: internal.h
 * can be included twice. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "internal.h" /* the include guard covers the whole header */

#include "boxstream.h"
#include "mstest.h"
#include "util.h"

typedef struct {
  int done;
  char got[64];
  size_t n;
} reader_t;

static void on_read(ms_stream_t *s, int status, const uint8_t *d, size_t n,
                    void *arg) {
  (void)s;
  reader_t *r = arg;
  if (status != 0) return;
  if (r->n + n <= sizeof r->got) memcpy(r->got + r->n, d, n);
  r->n += n;
  if (r->n >= 2) r->done++;
}

static void huge_writes(const char *listen_addr, bool sealed) {
  ms_t *ms;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&ms, &o), 0);
  uv_loop_t *loop = ms_loop(ms);
  tu_echo_t echo;
  memset(&echo, 0, sizeof echo);
  ms_listener_t *l = tu_listen_ok(ms, listen_addr, tu_echo_on_connection, &echo);
  if (l == NULL) return;
  tu_conn_t r;
  CHECK_INT(tu_connect(ms, ms_listener_address(l), &r, NULL), 0);
  CHECK(tu_wait(loop, &r.done, 1, 5000, "connect"));
  CHECK_INT(r.status, 0);
  ms_stream_t *s = r.s;
  if (s == NULL) return;
  reader_t rd;
  memset(&rd, 0, sizeof rd);
  CHECK_INT(ms_stream_read_start(s, on_read, &rd), 0);

  static uint8_t small[16];
  /* Lengths summing past SIZE_MAX. */
  ms_buf_t two[2] = {{small, SIZE_MAX / 2 + 1}, {small, SIZE_MAX / 2 + 1}};
  CHECK_INT(ms_stream_write(s, two, 2, NULL, NULL), MS_EINVAL);
  ms_buf_t three[3] = {{small, 1}, {small, SIZE_MAX}, {small, 1}};
  CHECK_INT(ms_stream_write(s, three, 3, NULL, NULL), MS_EINVAL);
  /* A length that fits, but whose sealed size (34 bytes per 4096) does
   * not. */
  if (sealed) {
    ms_buf_t one[1] = {{small, SIZE_MAX - 8}};
    CHECK_INT(ms_stream_write(s, one, 1, NULL, NULL), MS_EINVAL);
    ms_buf_t pair[2] = {{small, SIZE_MAX / 2}, {small, SIZE_MAX / 2}};
    CHECK_INT(ms_stream_write(s, pair, 2, NULL, NULL), MS_EINVAL);
  }
  CHECK_INT(ms_stream_write_queue_size(s), 0);

  /* Nothing was written: the next write arrives alone and intact. */
  ms_buf_t ok = {"ok", 2};
  CHECK_INT(ms_stream_write(s, &ok, 1, NULL, NULL), 0);
  CHECK(tu_wait(loop, &rd.done, 1, 5000, "echo of ok"));
  CHECK_INT(rd.n, 2);
  CHECK(memcmp(rd.got, "ok", 2) == 0);

  int closed = 0;
  ms_stream_close(s, tu_on_stream_closed, &closed);
  CHECK(tu_wait(loop, &closed, 1, 5000, "close"));
  CHECK(tu_wait(loop, &echo.closed, 1, 5000, "echo close"));
  tu_close_listener(loop, l, 5000);
  CHECK(tu_drain(loop, 5000));
  CHECK_INT(ms_delete(ms), 0);
}

static void test_net(void) { huge_writes("net:127.0.0.1:0", false); }
static void test_shs(void) { huge_writes("net:127.0.0.1:0~shs", true); }

static void test_sealed_size(void) {
  CHECK_INT(ms_box_sealed_size(0), 0);
  CHECK_INT(ms_box_sealed_size(1), 1 + MS_BOX_HEADER_LEN);
  CHECK_INT(ms_box_sealed_size(4096), 4096 + MS_BOX_HEADER_LEN);
  CHECK_INT(ms_box_sealed_size(4097), 4097 + 2 * MS_BOX_HEADER_LEN);
  /* Does not fit a size_t: saturates. */
  CHECK(ms_box_sealed_size(SIZE_MAX) == SIZE_MAX);
  CHECK(ms_box_sealed_size(SIZE_MAX - 8) == SIZE_MAX);
  size_t big = SIZE_MAX / 4130 * 4096; /* sealed: SIZE_MAX / 4130 * 4130 */
  CHECK(ms_box_sealed_size(big) != SIZE_MAX);
  CHECK(ms_box_sealed_size(big) > big);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"sealed_size", test_sealed_size},
      {"net", test_net},
      {"shs", test_shs},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("limits");
}
