/* multiserver keygen [--out FILE]: new ed25519 identity. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_keygen(int argc, char **argv) {
  const char *out = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
      out = argv[++i];
    } else {
      cli_err("keygen: unexpected argument \"%s\"", argv[i]);
      return 2;
    }
  }
  ms_keypair_t kp;
  int rc = ms_keypair_generate(&kp);
  if (rc == 0 && out) rc = ms_keypair_save(&kp, out);
  if (rc != 0) {
    cli_err("keygen: %s%s%s", out ? out : "", out ? ": " : "", ms_strerror(rc));
    ms_keypair_wipe(&kp);
    return 1;
  }
  char id[MS_ID_LEN + 1];
  ms_key_to_id(kp.public_key, id, sizeof id);
  ms_keypair_wipe(&kp);
  printf("%s\n", id);
  return 0;
}
