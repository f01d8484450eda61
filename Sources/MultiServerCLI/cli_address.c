/* multiserver address [--listen] ADDRESS: canonical form, or exit 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_address(int argc, char **argv) {
  const char *addr = NULL;
  bool listen = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0)
      listen = true;
    else if (addr == NULL)
      addr = argv[i];
    else {
      cli_err("address: one ADDRESS expected");
      return 2;
    }
  }
  if (addr == NULL) {
    cli_err("address: ADDRESS expected");
    return 2;
  }
  char reason[512];
  char *canon = NULL;
  int rc = ms_address_check(addr, listen, &canon, reason, sizeof reason);
  if (rc != 0) {
    cli_err("%s", reason);
    return 2;
  }
  printf("%s\n", canon);
  ms_free(canon);
  return 0;
}
