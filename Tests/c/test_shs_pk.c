/* Each side of a secret handshake converts the peer's ed25519 key to
 * curve25519 once: the client at init (the server key it dials), keeping
 * the result for msg2/msg3; the server after msg3 (the client's key). The
 * conversion costs a subgroup check (about 50 us), so it is counted:
 * crypto_sign_ed25519_pk_to_curve25519 is defined here, which the static
 * library's shs core links against, and forwards to libsodium's through
 * dlsym(RTLD_NEXT). The known-answer vectors are in test_shs_core. */
#include <dlfcn.h>
#include <sodium.h>
#include <string.h>

#include "mstest.h"
#include "shs_core.h"

static int pk_calls;

typedef int (*pk_fn)(unsigned char *, const unsigned char *);

__attribute__((visibility("default"))) int
crypto_sign_ed25519_pk_to_curve25519(unsigned char *curve25519_pk,
                                     const unsigned char *ed25519_pk) {
  pk_fn real;
  *(void **)&real = dlsym(RTLD_NEXT, "crypto_sign_ed25519_pk_to_curve25519");
  pk_calls++;
  return real(curve25519_pk, ed25519_pk);
}

static void test_once_per_side(void) {
  uint8_t k[32], a_pk[32], a_sk[64], b_pk[32], b_sk[64];
  uint8_t m1[MS_SHS_MSG1_LEN], m2[MS_SHS_MSG2_LEN], m3[MS_SHS_MSG3_LEN],
      m4[MS_SHS_MSG4_LEN];
  randombytes_buf(k, sizeof k);
  crypto_sign_keypair(a_pk, a_sk);
  crypto_sign_keypair(b_pk, b_sk);
  ms_shs_t cl, sv;

  /* The real one works through the wrapper. */
  uint8_t curve[32];
  pk_calls = 0;
  CHECK_INT(crypto_sign_ed25519_pk_to_curve25519(curve, b_pk), 0);
  CHECK_INT(pk_calls, 1);

  int client = 0, server = 0;
  pk_calls = 0;
  CHECK_INT(ms_shs_client_init(&cl, k, a_sk, a_pk, b_pk, NULL), 0);
  client += pk_calls, pk_calls = 0;
  CHECK_INT(ms_shs_server_init(&sv, k, b_sk, b_pk, NULL), 0);
  server += pk_calls, pk_calls = 0;
  CHECK_INT(ms_shs_client_hello(&cl, m1), 0);
  client += pk_calls, pk_calls = 0;
  CHECK_INT(ms_shs_server_verify_hello(&sv, m1), 0);
  CHECK_INT(ms_shs_server_hello(&sv, m2), 0);
  server += pk_calls, pk_calls = 0;
  CHECK_INT(ms_shs_client_verify_hello(&cl, m2), 0);
  CHECK_INT(ms_shs_client_auth(&cl, m3), 0);
  client += pk_calls, pk_calls = 0;
  CHECK_INT(ms_shs_server_verify_auth(&sv, m3), 0);
  CHECK_INT(ms_shs_server_accept(&sv, m4), 0);
  server += pk_calls, pk_calls = 0;
  CHECK_INT(ms_shs_client_verify_accept(&cl, m4), 0);
  client += pk_calls, pk_calls = 0;
  fprintf(stderr, "  ed25519 pk -> curve25519: client %d, server %d\n", client,
          server);
  CHECK_INT(client, 1);
  CHECK_INT(server, 1);

  ms_shs_outcome_t oc, os;
  CHECK_INT(ms_shs_outcome(&cl, &oc), 0);
  CHECK_INT(ms_shs_outcome(&sv, &os), 0);
  CHECK_MEM(oc.encrypt_key, os.decrypt_key, 32);
  CHECK_MEM(oc.decrypt_key, os.encrypt_key, 32);
  CHECK_MEM(oc.remote_pk, b_pk, 32);
  CHECK_MEM(os.remote_pk, a_pk, 32);

  /* A failed handshake wipes the state, the cached form included. */
  uint8_t zero[sizeof(ms_shs_t)];
  memset(zero, 0, sizeof zero);
  CHECK_INT(ms_shs_client_init(&cl, k, a_sk, a_pk, b_pk, NULL), 0);
  CHECK_INT(ms_shs_client_hello(&cl, m1), 0);
  m2[0] ^= 1;
  CHECK_INT(ms_shs_client_verify_hello(&cl, m2), MS_EHANDSHAKE);
  CHECK_MEM(cl.remote_pk, zero, sizeof cl.remote_pk);
  CHECK_MEM(cl.remote_curve_pk, zero, sizeof cl.remote_curve_pk);
  ms_shs_wipe(&cl);
  ms_shs_wipe(&sv);
  CHECK_MEM(&cl, zero, sizeof cl);
}

int main(void) {
  if (sodium_init() < 0) return 1;
  test_once_per_side();
  return mst_done("shs_pk");
}
