/* Private part of keys.c: the secret-file parser, exposed for tests and the
 * fuzz target. */
#ifndef MS_KEYS_H
#define MS_KEYS_H

#include <stddef.h>

#include "multiserver.h"

/* Parse the ~/.ssb/secret format from memory ('#' comment lines, then one
 * JSON object). Returns 0 or MS_ESECRETFILE; never reads past len. */
int ms__keypair_parse(ms_keypair_t *kp, const char *text, size_t len);

#endif
