/* libFuzzer target for the shs1 state machine. byte 0 picks the case:
 *   0 server: arbitrary msg1 then msg3
 *   1 server: msg1 with a valid HMAC over an arbitrary ephemeral key, then
 *     arbitrary msg3
 *   2 server: a real client's msg1/msg3, msg3 XORed with fuzz bytes
 *   3 client: arbitrary msg2 then msg4
 *   4 client: msg2 with a valid HMAC over an arbitrary key, arbitrary msg4
 *   5 client: a real server's msg2/msg4, msg4 XORed with fuzz bytes
 * Never crash; every step gives 0 or MS_EHANDSHAKE; a run that finishes
 * has an outcome, and an unmodified real run always finishes. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "shs_core.h"

static uint8_t k[32], a_sk[64], a_pk[32], b_sk[64], b_pk[32];
static const uint8_t a_eph[32] = {1, 2, 3}, b_eph[32] = {4, 5, 6};

static void setup(void) {
  static int done;
  uint8_t seed[32] = {7};
  if (done) return;
  done = 1;
  if (sodium_init() < 0) __builtin_trap();
  memset(k, 0x11, sizeof(k));
  crypto_sign_seed_keypair(a_pk, a_sk, seed);
  seed[0] = 8;
  crypto_sign_seed_keypair(b_pk, b_sk, seed);
}

/* Take n bytes of fuzz input, zero-padded. */
static void take(uint8_t *out, size_t n, const uint8_t **d, size_t *len) {
  size_t m = *len < n ? *len : n;
  memset(out, 0, n);
  memcpy(out, *d, m);
  *d += m;
  *len -= m;
}

static void check_result(int r) {
  assert(r == 0 || r == MS_EHANDSHAKE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_shs_t sv, cl;
  ms_shs_outcome_t o;
  uint8_t m1[64], m2[64], m3[112], m4[80], x[112];
  int mode, r;

  setup();
  if (size < 1) return 0;
  mode = data[0] % 6;
  data++;
  size--;
  if (mode <= 2) {
    int pristine = 0;
    r = ms_shs_server_init(&sv, k, b_sk, b_pk, b_eph);
    assert(r == 0);
    if (mode == 0) {
      take(m1, 64, &data, &size);
    } else if (mode == 1) {
      take(m1 + 32, 32, &data, &size);
      crypto_auth(m1, m1 + 32, 32, k);
    } else {
      r = ms_shs_client_init(&cl, k, a_sk, a_pk, b_pk, a_eph);
      assert(r == 0);
      r = ms_shs_client_hello(&cl, m1);
      assert(r == 0);
    }
    r = ms_shs_server_verify_hello(&sv, m1);
    check_result(r);
    if (r == 0) {
      r = ms_shs_server_hello(&sv, m2);
      assert(r == 0);
      if (mode == 2) {
        r = ms_shs_client_verify_hello(&cl, m2);
        assert(r == 0);
        r = ms_shs_client_auth(&cl, m3);
        assert(r == 0);
        take(x, 112, &data, &size);
        pristine = sodium_is_zero(x, 112);
        for (int i = 0; i < 112; i++) m3[i] ^= x[i];
      } else {
        take(m3, 112, &data, &size);
      }
      r = ms_shs_server_verify_auth(&sv, m3);
      check_result(r);
      if (pristine) assert(r == 0);
      if (r == 0) {
        assert(ms_shs_remote_key(&sv) != NULL);
        r = ms_shs_server_accept(&sv, m4);
        assert(r == 0);
        r = ms_shs_outcome(&sv, &o);
        assert(r == 0);
      } else {
        assert(ms_shs_error(&sv) != NULL);
        assert(ms_shs_outcome(&sv, &o) != 0);
      }
    }
    if (mode == 2) ms_shs_wipe(&cl);
    ms_shs_wipe(&sv);
  } else {
    int pristine = 0;
    r = ms_shs_client_init(&cl, k, a_sk, a_pk, b_pk, a_eph);
    assert(r == 0);
    r = ms_shs_client_hello(&cl, m1);
    assert(r == 0);
    if (mode == 3) {
      take(m2, 64, &data, &size);
    } else if (mode == 4) {
      take(m2 + 32, 32, &data, &size);
      crypto_auth(m2, m2 + 32, 32, k);
    } else {
      r = ms_shs_server_init(&sv, k, b_sk, b_pk, b_eph);
      assert(r == 0);
      r = ms_shs_server_verify_hello(&sv, m1);
      assert(r == 0);
      r = ms_shs_server_hello(&sv, m2);
      assert(r == 0);
    }
    r = ms_shs_client_verify_hello(&cl, m2);
    check_result(r);
    if (r == 0) {
      r = ms_shs_client_auth(&cl, m3);
      assert(r == 0);
      if (mode == 5) {
        r = ms_shs_server_verify_auth(&sv, m3);
        assert(r == 0);
        r = ms_shs_server_accept(&sv, m4);
        assert(r == 0);
        take(x, 80, &data, &size);
        pristine = sodium_is_zero(x, 80);
        for (int i = 0; i < 80; i++) m4[i] ^= x[i];
      } else {
        take(m4, 80, &data, &size);
      }
      r = ms_shs_client_verify_accept(&cl, m4);
      check_result(r);
      if (pristine) assert(r == 0);
      if (r == 0) {
        r = ms_shs_outcome(&cl, &o);
        assert(r == 0);
      } else {
        assert(ms_shs_error(&cl) != NULL);
      }
    }
    if (mode == 5) ms_shs_wipe(&sv);
    ms_shs_wipe(&cl);
  }
  return 0;
}
