/* `multiserver shs1-test server K SK PK` / `multiserver shs1-test client K PK`:
 * the shs1-testsuite stdio contract (spec/shs-boxstream.md §6). Plain
 * blocking stdio; no event loop. On any bad input: exit non-zero without
 * writing another byte. On success: write the 112-byte outcome, exit 0. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "multiserver.h"
#include "shs_core.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };


/* Returns 0 once all len bytes were read, -1 on EOF or error. */
static int read_exact(int fd, uint8_t *buf, size_t len) {
  while (len > 0) {
    ssize_t n = read(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}


static int write_all(int fd, const uint8_t *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}


/* Exactly 2*len hex digits into out. */
static int parse_hex(uint8_t *out, size_t len, const char *hex) {
  size_t bin_len = 0;
  const char *end = NULL;
  if (strlen(hex) != 2 * len) return -1;
  if (sodium_hex2bin(out, len, hex, 2 * len, NULL, &bin_len, &end) != 0 ||
      bin_len != len || *end != '\0')
    return -1;
  return 0;
}


static int fail(ms_shs_t *st, const char *what) {
  const char *e = ms_shs_error(st);
  fprintf(stderr, "shs1-test: %s%s%s\n", what, e ? ": " : "", e ? e : "");
  ms_shs_wipe(st);
  return EXIT_FAIL;
}


static int run_server(const uint8_t k[32], const uint8_t sk[64],
                      const uint8_t pk[32]) {
  ms_shs_t st;
  uint8_t msg1[MS_SHS_MSG1_LEN], msg2[MS_SHS_MSG2_LEN], msg3[MS_SHS_MSG3_LEN];
  uint8_t tail[MS_SHS_MSG4_LEN + MS_SHS_OUTCOME_WIRE_LEN];
  ms_shs_outcome_t o;
  int r;

  if (ms_shs_server_init(&st, k, sk, pk, NULL) != 0)
    return fail(&st, "bad server key");
  if (read_exact(STDIN_FILENO, msg1, sizeof(msg1)) != 0)
    return fail(&st, "short msg1");
  if (ms_shs_server_verify_hello(&st, msg1) != 0) return fail(&st, "msg1");
  if (ms_shs_server_hello(&st, msg2) != 0) return fail(&st, "msg2");
  if (write_all(STDOUT_FILENO, msg2, sizeof(msg2)) != 0)
    return fail(&st, "write msg2");
  if (read_exact(STDIN_FILENO, msg3, sizeof(msg3)) != 0)
    return fail(&st, "short msg3");
  if (ms_shs_server_verify_auth(&st, msg3) != 0) return fail(&st, "msg3");
  /* The test suite authorizes everyone. */
  if (ms_shs_server_accept(&st, tail) != 0) return fail(&st, "msg4");
  if (ms_shs_outcome(&st, &o) != 0) return fail(&st, "outcome");
  ms_shs_outcome_serialize(&o, tail + MS_SHS_MSG4_LEN);
  sodium_memzero(&o, sizeof(o));
  ms_shs_wipe(&st);
  r = write_all(STDOUT_FILENO, tail, sizeof(tail));
  sodium_memzero(tail, sizeof(tail));
  return r == 0 ? EXIT_OK : EXIT_FAIL;
}


static int run_client(const uint8_t k[32], const uint8_t server_pk[32]) {
  ms_shs_t st;
  ms_keypair_t kp;
  uint8_t msg1[MS_SHS_MSG1_LEN], msg2[MS_SHS_MSG2_LEN], msg3[MS_SHS_MSG3_LEN];
  uint8_t msg4[MS_SHS_MSG4_LEN], out[MS_SHS_OUTCOME_WIRE_LEN];
  ms_shs_outcome_t o;
  int r;

  if (ms_keypair_generate(&kp) != 0) {
    fprintf(stderr, "shs1-test: cannot generate a key pair\n");
    return EXIT_FAIL;
  }
  r = ms_shs_client_init(&st, k, kp.secret_key, kp.public_key, server_pk,
                         NULL);
  ms_keypair_wipe(&kp);
  if (r != 0) return fail(&st, "bad server key");
  if (ms_shs_client_hello(&st, msg1) != 0) return fail(&st, "msg1");
  if (write_all(STDOUT_FILENO, msg1, sizeof(msg1)) != 0)
    return fail(&st, "write msg1");
  if (read_exact(STDIN_FILENO, msg2, sizeof(msg2)) != 0)
    return fail(&st, "short msg2");
  if (ms_shs_client_verify_hello(&st, msg2) != 0) return fail(&st, "msg2");
  if (ms_shs_client_auth(&st, msg3) != 0) return fail(&st, "msg3");
  if (write_all(STDOUT_FILENO, msg3, sizeof(msg3)) != 0)
    return fail(&st, "write msg3");
  if (read_exact(STDIN_FILENO, msg4, sizeof(msg4)) != 0)
    return fail(&st, "short msg4");
  if (ms_shs_client_verify_accept(&st, msg4) != 0) return fail(&st, "msg4");
  if (ms_shs_outcome(&st, &o) != 0) return fail(&st, "outcome");
  ms_shs_outcome_serialize(&o, out);
  sodium_memzero(&o, sizeof(o));
  ms_shs_wipe(&st);
  r = write_all(STDOUT_FILENO, out, sizeof(out));
  sodium_memzero(out, sizeof(out));
  return r == 0 ? EXIT_OK : EXIT_FAIL;
}


static int usage(void) {
  fprintf(stderr,
          "usage: multiserver shs1-test server NETKEY_HEX SK_HEX(128) "
          "PK_HEX\n"
          "       multiserver shs1-test client NETKEY_HEX SERVER_PK_HEX\n");
  return EXIT_USAGE;
}


int cli_shs1_test(int argc, char **argv) {
  uint8_t k[MS_APPKEYBYTES], sk[MS_SECRETKEYBYTES], pk[MS_PUBLICKEYBYTES];
  int r;

  if (argc < 2) return usage();
  if (sodium_init() < 0) {
    fprintf(stderr, "shs1-test: libsodium unavailable\n");
    return EXIT_FAIL;
  }
  /* A vanished peer shows up as a write error, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  if (strcmp(argv[1], "server") == 0 && argc == 5) {
    if (parse_hex(k, sizeof(k), argv[2]) != 0 ||
        parse_hex(sk, sizeof(sk), argv[3]) != 0 ||
        parse_hex(pk, sizeof(pk), argv[4]) != 0)
      return usage();
    r = run_server(k, sk, pk);
    sodium_memzero(sk, sizeof(sk));
    return r;
  }
  if (strcmp(argv[1], "client") == 0 && argc == 4) {
    if (parse_hex(k, sizeof(k), argv[2]) != 0 ||
        parse_hex(pk, sizeof(pk), argv[3]) != 0)
      return usage();
    return run_client(k, pk);
  }
  return usage();
}
