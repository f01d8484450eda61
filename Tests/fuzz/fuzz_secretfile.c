/* libFuzzer target for the ~/.ssb/secret parser (keys.c). A file that
 * parses must hold a consistent key pair. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "multiserver.h"

/* Internal parser in keys.c. */
#include "keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_keypair_t kp, check;
  int r = ms__keypair_parse(&kp, (const char *)data, size);
  assert(r == 0 || r == MS_ESECRETFILE);
  if (r == 0) {
    r = ms_keypair_from_seed(&check, kp.secret_key);
    assert(r == 0);
    assert(memcmp(check.public_key, kp.public_key, 32) == 0);
    assert(memcmp(check.secret_key, kp.secret_key, 64) == 0);
  }
  return 0;
}
