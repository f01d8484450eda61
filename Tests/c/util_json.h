/* Tiny JSON reader for the test vectors (Tests/vectors, *.json). Tests run
 * with the repository root as cwd. Linked into every test binary. */
#ifndef MS_UTIL_JSON_H
#define MS_UTIL_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MJ_NULL, MJ_BOOL, MJ_NUM, MJ_STR, MJ_ARR, MJ_OBJ } mj_type_t;

typedef struct mj_s mj_t;
struct mj_s {
  mj_type_t type;
  char *str;       /* MJ_STR: unescaped, NUL-terminated; MJ_NUM: raw text */
  size_t len;      /* MJ_STR length; MJ_ARR/MJ_OBJ member count */
  char **keys;     /* MJ_OBJ member names */
  mj_t **items;    /* MJ_ARR/MJ_OBJ members */
  int boolean;
};

/* Parse a whole file; NULL (with a message on stderr) on failure. */
mj_t *mj_load(const char *path);
mj_t *mj_parse(const char *text, size_t len);
void mj_free(mj_t *v);
/* Path lookup: dot-separated member names and array indices, e.g.
 * "vectors.0.handshake.msg1". NULL if absent. v may be NULL. */
const mj_t *mj_get(const mj_t *v, const char *path);
/* String at path, or NULL. */
const char *mj_str(const mj_t *v, const char *path);
/* Decode the hex string at path into out (capacity cap): byte count or -1. */
long mj_hex(const mj_t *v, const char *path, uint8_t *out, size_t cap);
/* Same, malloc'd (free()); NULL if absent/bad. *len gets the byte count. */
uint8_t *mj_hex_alloc(const mj_t *v, const char *path, size_t *len);
/* Members of an array/object (0 otherwise); mj_at: i-th member or NULL. */
size_t mj_count(const mj_t *v);
const mj_t *mj_at(const mj_t *v, size_t i);

#endif
