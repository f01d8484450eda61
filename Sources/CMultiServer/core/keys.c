/* Keys: ed25519 key pairs in Scuttlebutt's text formats (@id, base64,
 * the ~/.ssb/secret file of ssb-keys). */
#include "multiserver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

_Static_assert(MS_PUBLICKEYBYTES == crypto_sign_PUBLICKEYBYTES, "pk size");
_Static_assert(MS_SECRETKEYBYTES == crypto_sign_SECRETKEYBYTES, "sk size");
_Static_assert(MS_SEEDBYTES == crypto_sign_SEEDBYTES, "seed size");
_Static_assert(MS_APPKEYBYTES == crypto_auth_KEYBYTES, "app key size");
_Static_assert(MS_ID_LEN == 1 + 44 + 8, "@ + base64(32) + .ed25519");

#define B64_32_LEN 44 /* base64 of 32 bytes, with padding */
#define B64_64_LEN 88 /* base64 of 64 bytes, with padding */
#define ED25519_SUFFIX ".ed25519"
#define ED25519_SUFFIX_LEN (sizeof(ED25519_SUFFIX) - 1)
#define SECRET_FILE_MAX (64 * 1024)

_Static_assert(sodium_base64_ENCODED_LEN(MS_PUBLICKEYBYTES,
                                         sodium_base64_VARIANT_ORIGINAL) ==
                   B64_32_LEN + 1,
               "base64 of a public key");
_Static_assert(sodium_base64_ENCODED_LEN(MS_SECRETKEYBYTES,
                                         sodium_base64_VARIANT_ORIGINAL) ==
                   B64_64_LEN + 1,
               "base64 of a secret key");

/* Internal (fuzzed directly): parse the secret-file text. */
#include "keys.h"

static const uint8_t appkey_scuttlebutt[MS_APPKEYBYTES] = {
    0xd4, 0xa1, 0xcb, 0x88, 0xa6, 0x6f, 0x02, 0xf8, 0xdb, 0x63, 0x5c,
    0xe2, 0x64, 0x41, 0xcc, 0x5d, 0xac, 0x1b, 0x08, 0x42, 0x0c, 0xea,
    0xac, 0x23, 0x08, 0x39, 0xb7, 0x55, 0x84, 0x5a, 0x9f, 0xfb};


static int sodium_ready(void) {
  return sodium_init() < 0 ? MS_ENOMEM : 0;
}


size_t ms_publickeybytes(void) {
  return MS_PUBLICKEYBYTES;
}


size_t ms_secretkeybytes(void) {
  return MS_SECRETKEYBYTES;
}


const uint8_t *ms_appkey_scuttlebutt(void) {
  return appkey_scuttlebutt;
}


int ms_keypair_generate(ms_keypair_t *kp) {
  int r;
  if (kp == NULL) return MS_EINVAL;
  if ((r = sodium_ready()) < 0) return r;
  if (crypto_sign_keypair(kp->public_key, kp->secret_key) != 0) {
    ms_keypair_wipe(kp);
    return MS_EKEY;
  }
  return 0;
}


int ms_keypair_from_seed(ms_keypair_t *kp, const uint8_t seed[MS_SEEDBYTES]) {
  int r;
  if (kp == NULL || seed == NULL) return MS_EINVAL;
  if ((r = sodium_ready()) < 0) return r;
  if (crypto_sign_seed_keypair(kp->public_key, kp->secret_key, seed) != 0) {
    ms_keypair_wipe(kp);
    return MS_EKEY;
  }
  return 0;
}


void ms_keypair_wipe(ms_keypair_t *kp) {
  if (kp != NULL) sodium_memzero(kp, sizeof(*kp));
}


/* ------------------------------------------------------------------ */
/* Base64 and ids                                                      */
/* ------------------------------------------------------------------ */

/* Decode exactly outlen bytes from exactly len chars of padded standard
 * base64. */
static int b64_decode_exact(uint8_t *out, size_t outlen, const char *b64,
                            size_t len) {
  size_t got = 0;
  const char *end = NULL;
  if (len != sodium_base64_ENCODED_LEN(outlen, sodium_base64_VARIANT_ORIGINAL)
                 - 1)
    return -1;
  if (sodium_base642bin(out, outlen, b64, len, NULL, &got, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      got != outlen || end != b64 + len) {
    sodium_memzero(out, outlen);
    return -1;
  }
  return 0;
}


int ms_key_to_base64(const uint8_t key[32], char *buf, size_t size) {
  int r;
  if (key == NULL || buf == NULL) return MS_EINVAL;
  if (size < B64_32_LEN + 1) return MS_EINVAL;
  if ((r = sodium_ready()) < 0) return r;
  sodium_bin2base64(buf, size, key, 32, sodium_base64_VARIANT_ORIGINAL);
  return 0;
}


int ms_key_from_base64(uint8_t key[32], const char *b64, size_t len) {
  int r;
  if (key == NULL || b64 == NULL) return MS_EINVAL;
  if ((r = sodium_ready()) < 0) return r;
  if (b64_decode_exact(key, 32, b64, len) != 0) return MS_EKEY;
  return 0;
}


int ms_key_to_id(const uint8_t pk[MS_PUBLICKEYBYTES], char *buf,
                 size_t size) {
  int r;
  if (pk == NULL || buf == NULL) return MS_EINVAL;
  if (size < MS_ID_LEN + 1) return MS_EINVAL;
  buf[0] = '@';
  if ((r = ms_key_to_base64(pk, buf + 1, size - 1)) < 0) return r;
  memcpy(buf + 1 + B64_32_LEN, ED25519_SUFFIX, ED25519_SUFFIX_LEN + 1);
  return 0;
}


int ms_key_from_id(uint8_t pk[MS_PUBLICKEYBYTES], const char *id) {
  size_t len;
  if (pk == NULL || id == NULL) return MS_EINVAL;
  len = strlen(id);
  if (len == MS_ID_LEN && id[0] == '@' &&
      memcmp(id + 1 + B64_32_LEN, ED25519_SUFFIX, ED25519_SUFFIX_LEN) == 0)
    return ms_key_from_base64(pk, id + 1, B64_32_LEN);
  if (len == B64_32_LEN) return ms_key_from_base64(pk, id, len);
  return MS_EKEY;
}


/* ------------------------------------------------------------------ */
/* Secret file                                                         */
/* ------------------------------------------------------------------ */

/* A minimal reader for the one flat JSON object of the secret file. Values
 * may be strings, numbers, true, false or null; nested values are rejected
 * (ssb-keys never writes them). */
typedef struct {
  const char *p, *end;
} jcur_t;


static void jskip_ws(jcur_t *c) {
  while (c->p < c->end &&
         (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}


/* Read a JSON string into out (NUL-terminated, capacity cap). Escapes other
 * than \" \\ \/ and ASCII \u00XX are rejected: none occur in this format.
 * Returns the length, -1 on malformed input, or -2 when it is well formed
 * but does not fit (it is still consumed). */
static long jstring(jcur_t *c, char *out, size_t cap) {
  size_t n = 0;
  int overflow = 0;
  if (c->p >= c->end || *c->p != '"') return -1;
  c->p++;
  while (c->p < c->end) {
    char ch = *c->p++;
    if (ch == '"') {
      if (overflow || n >= cap) {
        if (cap > 0) out[0] = '\0';
        return -2;
      }
      out[n] = '\0';
      return (long)n;
    }
    if ((unsigned char)ch < 0x20) return -1;
    if (ch == '\\') {
      if (c->p >= c->end) return -1;
      ch = *c->p++;
      if (ch == 'u') {
        unsigned v = 0;
        if (c->end - c->p < 4) return -1;
        for (int i = 0; i < 4; i++) {
          char h = *c->p++;
          v <<= 4;
          if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
          else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
          else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
          else return -1;
        }
        if (v == 0 || v > 0x7f) return -1;
        ch = (char)v;
      } else if (ch != '"' && ch != '\\' && ch != '/') {
        return -1;
      }
    }
    if (n + 1 >= cap)
      overflow = 1;
    else
      out[n++] = ch;
  }
  return -1;
}


/* Skip a scalar that is not a string: number, true, false, null. */
static int jskip_scalar(jcur_t *c) {
  const char *start = c->p;
  while (c->p < c->end) {
    char ch = *c->p;
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || ch == '-' ||
        ch == '+' || ch == '.' || ch == 'E')
      c->p++;
    else
      break;
  }
  return c->p > start ? 0 : -1;
}


/* "<base64>.ed25519" (suffix optional) → exactly n bytes. */
static int decode_key_field(uint8_t *out, size_t n, const char *s) {
  size_t len = strlen(s);
  if (len > ED25519_SUFFIX_LEN &&
      strcmp(s + len - ED25519_SUFFIX_LEN, ED25519_SUFFIX) == 0)
    len -= ED25519_SUFFIX_LEN;
  return b64_decode_exact(out, n, s, len);
}


int ms__keypair_parse(ms_keypair_t *kp, const char *text, size_t len) {
  /* Comment lines (first non-blank char '#') are blanked out in a copy. */
  char *buf = NULL;
  char key[32], val[160];
  uint8_t pk[MS_PUBLICKEYBYTES], pk_check[MS_PUBLICKEYBYTES];
  uint8_t sk[MS_SECRETKEYBYTES], sk_check[MS_SECRETKEYBYTES];
  int have_private = 0, have_public = 0, have_id = 0, rc = MS_ESECRETFILE;
  uint8_t id_pk[MS_PUBLICKEYBYTES];
  jcur_t c;
  int line_start = 1, in_comment = 0;

  if (kp == NULL || text == NULL) return MS_EINVAL;
  if (len > SECRET_FILE_MAX) return MS_ESECRETFILE;
  if (sodium_ready() < 0) return MS_ENOMEM;
  buf = malloc(len ? len : 1);
  if (buf == NULL) return MS_ENOMEM;
  for (size_t i = 0; i < len; i++) {
    char ch = text[i];
    if (ch == '\n') {
      line_start = 1;
      in_comment = 0;
    } else if (line_start && ch == '#') {
      in_comment = 1;
      line_start = 0;
    } else if (ch != ' ' && ch != '\t' && ch != '\r') {
      line_start = 0;
    }
    buf[i] = in_comment ? ' ' : ch;
  }

  c.p = buf;
  c.end = buf + len;
  jskip_ws(&c);
  if (c.p >= c.end || *c.p != '{') goto out;
  c.p++;
  jskip_ws(&c);
  if (c.p < c.end && *c.p == '}') goto out; /* empty object: no key */
  for (;;) {
    long vl;
    jskip_ws(&c);
    if (jstring(&c, key, sizeof(key)) == -1) goto out; /* -2: unknown */
    jskip_ws(&c);
    if (c.p >= c.end || *c.p != ':') goto out;
    c.p++;
    jskip_ws(&c);
    if (c.p < c.end && *c.p == '"') {
      vl = jstring(&c, val, sizeof(val));
      if (vl == -1) goto out;
      if (vl == -2) {
        /* Too long for any field we read: fine only for unknown keys. */
        if (strcmp(key, "curve") == 0 || strcmp(key, "private") == 0 ||
            strcmp(key, "public") == 0 || strcmp(key, "id") == 0)
          goto out;
      } else if (strcmp(key, "curve") == 0) {
        if (strcmp(val, "ed25519") != 0) goto out;
      } else if (strcmp(key, "private") == 0) {
        if (have_private || decode_key_field(sk, sizeof(sk), val) != 0)
          goto out;
        have_private = 1;
      } else if (strcmp(key, "public") == 0) {
        if (have_public || decode_key_field(pk, sizeof(pk), val) != 0)
          goto out;
        have_public = 1;
      } else if (strcmp(key, "id") == 0) {
        if (have_id || ms_key_from_id(id_pk, val) != 0) goto out;
        have_id = 1;
      }
    } else if (c.p < c.end && (*c.p == '{' || *c.p == '[')) {
      goto out;
    } else if (jskip_scalar(&c) != 0) {
      goto out;
    }
    jskip_ws(&c);
    if (c.p >= c.end) goto out;
    if (*c.p == ',') {
      c.p++;
      continue;
    }
    if (*c.p == '}') {
      c.p++;
      break;
    }
    goto out;
  }
  jskip_ws(&c);
  if (c.p != c.end) goto out; /* trailing garbage */
  if (!have_private) goto out;

  /* The secret key must be seed ‖ pk with pk derived from the seed, and the
   * public/id fields (if present) must name the same key. */
  if (crypto_sign_seed_keypair(pk_check, sk_check, sk) != 0) goto out;
  if (sodium_memcmp(sk_check, sk, sizeof(sk)) != 0) goto out;
  if (have_public && memcmp(pk, pk_check, sizeof(pk)) != 0) goto out;
  if (have_id && memcmp(id_pk, pk_check, sizeof(id_pk)) != 0) goto out;
  memcpy(kp->public_key, pk_check, sizeof(kp->public_key));
  memcpy(kp->secret_key, sk, sizeof(kp->secret_key));
  rc = 0;

out:
  sodium_memzero(sk, sizeof(sk));
  sodium_memzero(sk_check, sizeof(sk_check));
  sodium_memzero(val, sizeof(val));
  sodium_memzero(buf, len);
  free(buf);
  return rc;
}


int ms_keypair_load(ms_keypair_t *kp, const char *path) {
  char *text;
  size_t len = 0;
  struct stat sb;
  int fd, rc;

  if (kp == NULL || path == NULL) return MS_EINVAL;
  do {
    fd = open(path, O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  if (fstat(fd, &sb) != 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  if (!S_ISREG(sb.st_mode) || sb.st_size > SECRET_FILE_MAX) {
    close(fd);
    return MS_ESECRETFILE;
  }
  /* One spare byte detects a file that grew past the limit. */
  text = malloc(SECRET_FILE_MAX + 1);
  if (text == NULL) {
    close(fd);
    return MS_ENOMEM;
  }
  for (;;) {
    ssize_t n = read(fd, text + len, SECRET_FILE_MAX + 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = -errno;
      goto out;
    }
    if (n == 0) break;
    len += (size_t)n;
    if (len > SECRET_FILE_MAX) {
      rc = MS_ESECRETFILE;
      goto out;
    }
  }
  rc = ms__keypair_parse(kp, text, len);
out:
  sodium_memzero(text, len);
  free(text);
  close(fd);
  return rc;
}


static int write_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}


int ms_keypair_save(const ms_keypair_t *kp, const char *path) {
  char pub[B64_32_LEN + 1], priv[B64_64_LEN + 1], id[MS_ID_LEN + 1];
  char *text;
  size_t cap = 2048;
  int fd, n, rc;

  if (kp == NULL || path == NULL) return MS_EINVAL;
  if ((rc = sodium_ready()) < 0) return rc;
  /* Refuse to write a pair that does not belong together. */
  if (sodium_memcmp(kp->secret_key + crypto_sign_SEEDBYTES, kp->public_key,
                    MS_PUBLICKEYBYTES) != 0)
    return MS_EKEY;
  text = malloc(cap);
  if (text == NULL) return MS_ENOMEM;
  sodium_bin2base64(pub, sizeof(pub), kp->public_key, MS_PUBLICKEYBYTES,
                    sodium_base64_VARIANT_ORIGINAL);
  sodium_bin2base64(priv, sizeof(priv), kp->secret_key, MS_SECRETKEYBYTES,
                    sodium_base64_VARIANT_ORIGINAL);
  (void)ms_key_to_id(kp->public_key, id, sizeof(id));
  n = snprintf(text, cap,
               "# this is your SECRET name.\n"
               "# this name gives you magical powers.\n"
               "# with it you can mark your messages so that your friends "
               "can verify\n"
               "# that they really did come from you.\n"
               "#\n"
               "# if any one learns this name, they can use it to destroy "
               "your identity\n"
               "# NEVER show this to anyone!!!\n"
               "\n"
               "{\n"
               "  \"curve\": \"ed25519\",\n"
               "  \"public\": \"%s" ED25519_SUFFIX "\",\n"
               "  \"private\": \"%s" ED25519_SUFFIX "\",\n"
               "  \"id\": \"%s\"\n"
               "}\n"
               "\n"
               "# WARNING! It's vital that you DO NOT edit OR share your "
               "secret name\n"
               "# instead, share your public name\n"
               "# your public name: %s\n",
               pub, priv, id, id);
  sodium_memzero(priv, sizeof(priv));
  if (n < 0 || (size_t)n >= cap) {
    rc = MS_ENOMEM;
    goto out;
  }
  do {
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
              0600);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    rc = errno == EEXIST ? MS_EEXIST : -errno;
    goto out;
  }
  rc = write_all(fd, text, (size_t)n);
  if (rc == 0 && fsync(fd) != 0) rc = -errno;
  if (close(fd) != 0 && rc == 0) rc = -errno;
  if (rc != 0) unlink(path);
out:
  sodium_memzero(text, cap);
  free(text);
  return rc;
}
