/*
 * make bench: throughput figures with their units and the ratio to the
 * relevant limit. The "crypto limit" is raw XSalsa20-Poly1305
 * (crypto_secretbox_detached) over 4096-byte blocks on this machine — the
 * work box-stream cannot avoid; everything else is overhead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "multiserver.h"
#include "boxstream.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define MB (1024.0 * 1024.0)

static double crypto_limit(void) {
  uint8_t key[32], nonce[24], mac[16];
  static uint8_t block[4096];
  randombytes_buf(key, sizeof key);
  randombytes_buf(nonce, sizeof nonce);
  size_t total = 0;
  double t0 = now();
  while (now() - t0 < 1.0) {
    for (int i = 0; i < 256; i++) {
      crypto_secretbox_detached(block, mac, block, sizeof block, nonce, key);
      total += sizeof block;
    }
  }
  return total / MB / (now() - t0);
}

static void box_codec(double limit) {
  size_t len = 1 << 20;
  uint8_t *in = malloc(len), *wire = malloc(ms_box_sealed_size(len));
  uint8_t key[32], nonce[24];
  randombytes_buf(key, sizeof key);
  randombytes_buf(nonce, sizeof nonce);
  randombytes_buf(in, len);
  ms_box_t enc;
  ms_box_init(&enc, key, nonce);
  size_t total = 0, n = 0;
  double t0 = now();
  while (now() - t0 < 1.0) {
    n = ms_box_seal(&enc, wire, in, len);
    total += len;
  }
  double seal = total / MB / (now() - t0);
  printf("box-stream seal   %8.1f MiB/s  (%.0f%% of the crypto limit)\n", seal, 100 * seal / limit);

  /* open: re-seal each round under a fresh decoder so the nonces line up */
  ms_unbox_t dec;
  total = 0;
  double spent = 0;
  while (spent < 1.0) {
    ms_box_init(&enc, key, nonce);
    n = ms_box_seal(&enc, wire, in, len);
    ms_unbox_init(&dec, key, nonce);
    double t1 = now();
    uint8_t *p = wire;
    size_t left = n;
    for (;;) {
      size_t used = 0, outlen = 0;
      uint8_t *out;
      int r = ms_unbox_next(&dec, p, left, &used, &out, &outlen);
      p += used;
      left -= used;
      if (r != 1) break;
    }
    spent += now() - t1;
    total += len;
    ms_unbox_free(&dec);
  }
  double open = total / MB / spent;
  printf("box-stream open   %8.1f MiB/s  (%.0f%% of the crypto limit)\n", open, 100 * open / limit);
  free(in);
  free(wire);
}

/* ---- end to end: net~shs over loopback, one process, one loop ---------- */

#define E2E_BYTES ((size_t)256 << 20)
#define E2E_CHUNK (256 * 1024)

static struct {
  ms_t *ms;
  ms_listener_t *l;
  ms_stream_t *client, *server;
  uint8_t *chunk;
  size_t sent, received;
  double t0, t1;
} e2e;

static void pump(ms_stream_t *s);

static void on_drain(ms_stream_t *s, void *arg) {
  (void)arg;
  pump(s);
}

static void pump(ms_stream_t *s) {
  while (e2e.sent < E2E_BYTES && ms_stream_writable(s)) {
    ms_buf_t b = {e2e.chunk, E2E_CHUNK};
    if (ms_stream_write(s, &b, 1, NULL, NULL) != 0) return;
    e2e.sent += E2E_CHUNK;
  }
}

static void closed(ms_stream_t *s, void *arg) {
  (void)s;
  (void)arg;
}

static void on_server_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)d;
  (void)arg;
  if (status != 0) return;
  e2e.received += n;
  if (e2e.received == E2E_BYTES) {
    e2e.t1 = now();
    ms_stream_close(s, closed, NULL);
    ms_stream_close(e2e.client, closed, NULL);
    ms_listener_close(e2e.l, NULL, NULL);
  }
}

static void on_conn(ms_stream_t *s, void *arg) {
  (void)arg;
  e2e.server = s;
  ms_stream_read_start(s, on_server_read, NULL);
}

static void on_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  (void)arg;
  if (status != 0) {
    fprintf(stderr, "bench: connect failed: %s\n", reason);
    ms_listener_close(e2e.l, NULL, NULL);
    return;
  }
  e2e.client = s;
  ms_stream_on_drain(s, on_drain, NULL);
  e2e.t0 = now();
  pump(s);
}

static void end_to_end(const char *stack, double limit) {
  memset(&e2e, 0, sizeof e2e);
  e2e.chunk = calloc(1, E2E_CHUNK);
  char why[256];
  if (ms_new(&e2e.ms, NULL) != 0 ||
      ms_listen(e2e.ms, stack, on_conn, NULL, &e2e.l, why, sizeof why) != 0) {
    fprintf(stderr, "bench: listen failed\n");
    exit(1);
  }
  ms_connect(e2e.ms, ms_listener_address(e2e.l), on_connected, NULL, NULL);
  ms_run(e2e.ms, MS_RUN_DEFAULT);
  ms_delete(e2e.ms);
  free(e2e.chunk);
  double rate = e2e.received / MB / (e2e.t1 - e2e.t0);
  printf("%-17s %8.1f MiB/s  (%.0f%% of the crypto limit; 256 MiB, both ends in one thread)\n",
         stack, rate, 100 * rate / limit);
}

int main(void) {
  if (sodium_init() < 0) return 1;
  double limit = crypto_limit();
  printf("crypto limit      %8.1f MiB/s  (crypto_secretbox_detached, 4096-byte blocks, one core)\n", limit);
  box_codec(limit);
  end_to_end("net:127.0.0.1:0", limit);
  end_to_end("net:127.0.0.1:0~shs", limit);
  printf("note: end-to-end shs seals and opens every byte on the same core, so its\n"
         "      ceiling in this single-thread setup is half the crypto limit (50%%).\n");
  return 0;
}
