/* Keys: generation, seeds, base64/@id forms, ~/.ssb/secret files. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "multiserver.h"
#include "mstest.h"
#include "util_json.h"

/* Internal parser in keys.c (also fuzzed). */
#include "keys.h"

static char tmpdir[] = "/tmp/ms_test_keys_XXXXXX";

static void write_file(const char *path, const char *text, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  if (fd < 0) return;
  CHECK_INT(write(fd, text, len), (long long)len);
  close(fd);
}

static void test_sizes_and_appkey(void) {
  char b64[45];
  CHECK_INT(ms_publickeybytes(), 32);
  CHECK_INT(ms_secretkeybytes(), 64);
  CHECK_INT(ms_key_to_base64(ms_appkey_scuttlebutt(), b64, sizeof(b64)), 0);
  CHECK_STR(b64, "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=");
}

static void test_generate_and_seed(const mj_t *trace) {
  ms_keypair_t kp, kp2;
  uint8_t seed[32];
  size_t seen = 0;
  CHECK_INT(ms_keypair_generate(&kp), 0);
  CHECK_MEM(kp.secret_key + 32, kp.public_key, 32);
  CHECK_INT(ms_keypair_from_seed(&kp2, kp.secret_key), 0);
  CHECK_MEM(kp2.secret_key, kp.secret_key, 64);
  CHECK_MEM(kp2.public_key, kp.public_key, 32);
  ms_keypair_wipe(&kp);
  CHECK(sodium_is_zero((uint8_t *)&kp, sizeof(kp)));
  /* JS ssb-keys/toKeys from the trace: seed → key pair. */
  for (size_t i = 0; trace && i < mj_count(trace); i++) {
    const mj_t *e = mj_at(trace, i);
    const char *n = mj_str(e, "name");
    uint8_t want[64];
    if (!n || strcmp(n, "toKeys") != 0) continue;
    /* toKeys(seed) or toKeys(keypair): the seed is the first 32 bytes. */
    if (mj_str(e, "args.0"))
      CHECK_INT(mj_hex(e, "args.0", seed, 32), 32);
    else {
      CHECK_INT(mj_hex(e, "args.0.secretKey", want, 64), 64);
      memcpy(seed, want, 32);
    }
    CHECK_INT(ms_keypair_from_seed(&kp, seed), 0);
    CHECK_INT(mj_hex(e, "result.publicKey", want, 32), 32);
    CHECK_MEM(kp.public_key, want, 32);
    CHECK_INT(mj_hex(e, "result.secretKey", want, 64), 64);
    CHECK_MEM(kp.secret_key, want, 64);
    seen++;
  }
  CHECK_INT(seen, 2);
  CHECK_INT(ms_keypair_from_seed(NULL, seed), MS_EINVAL);
}

static void test_base64_and_id(const mj_t *ref) {
  uint8_t pk[32], back[32];
  char b64[45], id[MS_ID_LEN + 1], small[44];
  const char *want_b64 = "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=";

  CHECK_INT(ms_key_from_base64(back, want_b64, strlen(want_b64)), 0);
  CHECK_MEM(back, ms_appkey_scuttlebutt(), 32);
  /* wrong lengths / missing padding / bad chars / non-canonical */
  CHECK_INT(ms_key_from_base64(back, want_b64, 43), MS_EKEY);
  CHECK_INT(ms_key_from_base64(back, "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s==", 45), MS_EKEY);
  CHECK_INT(ms_key_from_base64(back, "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s", 43), MS_EKEY);
  CHECK_INT(ms_key_from_base64(back, "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan_s=", 44), MS_EKEY);
  CHECK_INT(ms_key_from_base64(back, "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/t=", 44), MS_EKEY);
  CHECK_INT(ms_key_from_base64(back, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 48), MS_EKEY);
  CHECK_INT(ms_key_to_base64(pk, small, sizeof(small)), MS_EINVAL);

  CHECK_INT(mj_hex(ref, "vectors.0.inputs.client_longterm_pk", pk, 32), 32);
  CHECK_INT(ms_key_to_base64(pk, b64, sizeof(b64)), 0);
  CHECK_INT(strlen(b64), 44);
  CHECK_INT(ms_key_to_id(pk, id, sizeof(id)), 0);
  CHECK_INT(strlen(id), MS_ID_LEN);
  CHECK(id[0] == '@' && strcmp(id + 45, ".ed25519") == 0);
  CHECK(memcmp(id + 1, b64, 44) == 0);
  CHECK_INT(ms_key_to_id(pk, id, MS_ID_LEN), MS_EINVAL);
  CHECK_INT(ms_key_to_id(pk, id, sizeof(id)), 0);
  memset(back, 0, 32);
  CHECK_INT(ms_key_from_id(back, id), 0);
  CHECK_MEM(back, pk, 32);
  memset(back, 0, 32);
  CHECK_INT(ms_key_from_id(back, b64), 0);
  CHECK_MEM(back, pk, 32);
  {
    char bad[64];
    snprintf(bad, sizeof(bad), "%s", id);
    bad[MS_ID_LEN - 1] = '8';
    CHECK_INT(ms_key_from_id(back, bad), MS_EKEY); /* .ed25518 */
    snprintf(bad, sizeof(bad), "%%%s", id + 1);
    CHECK_INT(ms_key_from_id(back, bad), MS_EKEY); /* %...: a message id */
    snprintf(bad, sizeof(bad), "@%s.sha256", b64);
    CHECK_INT(ms_key_from_id(back, bad), MS_EKEY);
    CHECK_INT(ms_key_from_id(back, ""), MS_EKEY);
    CHECK_INT(ms_key_from_id(back, "@.ed25519"), MS_EKEY);
  }
}

static void test_secret_file(void) {
  ms_keypair_t kp, got;
  char path[256], id[MS_ID_LEN + 1];
  struct stat sb;
  char *text;
  FILE *f;
  size_t len;

  snprintf(path, sizeof(path), "%s/secret", tmpdir);
  CHECK_INT(ms_keypair_generate(&kp), 0);
  CHECK_INT(ms_keypair_save(&kp, path), 0);
  CHECK_INT(stat(path, &sb), 0);
  CHECK_INT(sb.st_mode & 0777, 0600);
  CHECK_INT(ms_keypair_save(&kp, path), MS_EEXIST); /* never overwrites */
  CHECK_INT(ms_keypair_load(&got, path), 0);
  CHECK_MEM(got.public_key, kp.public_key, 32);
  CHECK_MEM(got.secret_key, kp.secret_key, 64);

  /* Content: comments, then JSON with the ssb-keys fields. */
  text = calloc(1, 8192);
  f = fopen(path, "rb");
  CHECK(f != NULL);
  len = f ? fread(text, 1, 8191, f) : 0;
  if (f) fclose(f);
  CHECK(len > 0 && text[0] == '#');
  CHECK(strstr(text, "\"curve\": \"ed25519\"") != NULL);
  CHECK_INT(ms_key_to_id(kp.public_key, id, sizeof(id)), 0);
  CHECK(strstr(text, id) != NULL);
  CHECK(strstr(text, "\"private\": \"") != NULL);
  CHECK(strstr(text, ".ed25519\"") != NULL);
  /* The JSON part parses with the test JSON reader too. */
  {
    char *brace = strchr(text, '{'), *end = strrchr(text, '}');
    mj_t *j = brace && end ? mj_parse(brace, (size_t)(end - brace + 1)) : NULL;
    char pub[64];
    CHECK(j != NULL);
    CHECK_STR(mj_str(j, "curve"), "ed25519");
    CHECK_STR(mj_str(j, "id"), id);
    snprintf(pub, sizeof(pub), "%s", id + 1);
    CHECK_STR(mj_str(j, "public"), pub);
    mj_free(j);
  }

  /* Malformed variants of the file must fail cleanly. */
  {
    char *brace = strchr(text, '{');
    size_t blen = strlen(brace);
    char *mut = malloc(blen + 512);
    static const char *const bad[] = {
        "", "{", "{}", "[]", "null", "{\"private\": 5}",
        "{\"private\": \"\"}", "{\"private\": \"AAAA.ed25519\"}",
        "{\"curve\": \"ed25519\"}", "{\"private\": {\"x\": 1}}",
        "\"private\"", "{\"private\" \"x\"}", "{\"a\":1,}",
    };
    ms_keypair_t z;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
      CHECK_INT(ms__keypair_parse(&z, bad[i], strlen(bad[i])),
                MS_ESECRETFILE);
    /* Every truncation of the real file fails (until the closing brace). */
    for (size_t cut = 0; cut < (size_t)(strrchr(brace, '}') - brace);
         cut += 3)
      CHECK_INT(ms__keypair_parse(&z, brace, cut), MS_ESECRETFILE);
    CHECK_INT(ms__keypair_parse(&z, brace, blen), 0);
    /* public that does not match private */
    {
      char *p = strstr(brace, "\"public\": \"");
      memcpy(mut, brace, blen + 1);
      p = mut + (p - brace) + 11;
      *p = *p == 'A' ? 'B' : 'A';
      CHECK_INT(ms__keypair_parse(&z, mut, blen), MS_ESECRETFILE);
    }
    /* private whose embedded pk does not match its seed */
    {
      char *p = strstr(brace, "\"private\": \"");
      memcpy(mut, brace, blen + 1);
      p = mut + (p - brace) + 12 + 60;
      *p = *p == 'A' ? 'B' : 'A';
      CHECK_INT(ms__keypair_parse(&z, mut, blen), MS_ESECRETFILE);
    }
    /* wrong curve */
    {
      char *p = strstr(brace, "ed25519\",");
      memcpy(mut, brace, blen + 1);
      mut[(p - brace) + 2] = '4';
      CHECK_INT(ms__keypair_parse(&z, mut, blen), MS_ESECRETFILE);
    }
    /* trailing garbage */
    snprintf(mut, blen + 512, "%s x", brace);
    CHECK_INT(ms__keypair_parse(&z, mut, strlen(mut)), MS_ESECRETFILE);
    /* Comment lines anywhere (indented too) and unknown fields are fine;
     * only "private" is required. */
    {
      char *p = strstr(brace, "\"private\": \"");
      char *q = strchr(p + 12, '"');
      int n = snprintf(mut, blen + 512,
                       "  # comment\n{\n# inside\n \"unknown_and_rather_long_"
                       "field_name\": \"%0200d\", \"n\": -1.5e3, \"t\": true,"
                       "\n  %.*s\n   # last }\n}\n# tail",
                       0, (int)(q - p + 1), p);
      CHECK_INT(ms__keypair_parse(&z, mut, (size_t)n), 0);
      CHECK_MEM(z.public_key, kp.public_key, 32);
      /* "private" without the .ed25519 suffix */
      n = snprintf(mut, blen + 512, "{\"private\": \"%.*s\"}",
                   (int)(q - p - 12 - 8), p + 12);
      CHECK_INT(ms__keypair_parse(&z, mut, (size_t)n), 0);
      /* duplicate private */
      n = snprintf(mut, blen + 512, "{%.*s, %.*s}", (int)(q - p + 1), p,
                   (int)(q - p + 1), p);
      CHECK_INT(ms__keypair_parse(&z, mut, (size_t)n), MS_ESECRETFILE);
    }
    free(mut);
  }
  free(text);

  /* Files: too big, not regular, missing. */
  {
    char big_path[256];
    size_t n = 70 * 1024;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    snprintf(big_path, sizeof(big_path), "%s/big", tmpdir);
    write_file(big_path, big, n);
    CHECK_INT(ms_keypair_load(&got, big_path), MS_ESECRETFILE);
    free(big);
    CHECK_INT(ms_keypair_load(&got, tmpdir), MS_ESECRETFILE);
    snprintf(big_path, sizeof(big_path), "%s/missing", tmpdir);
    CHECK_INT(ms_keypair_load(&got, big_path), -ENOENT);
    /* random garbage never crashes */
    for (int i = 0; i < 2000; i++) {
      uint8_t junk[256];
      size_t jl = randombytes_uniform(sizeof(junk));
      randombytes_buf(junk, jl);
      if (i % 2) junk[0] = '{';
      CHECK_INT(ms__keypair_parse(&got, (const char *)junk, jl),
                MS_ESECRETFILE);
    }
  }
  /* A pair that does not belong together is not saved. */
  {
    char p2[256];
    snprintf(p2, sizeof(p2), "%s/secret2", tmpdir);
    kp.public_key[0] ^= 1;
    CHECK_INT(ms_keypair_save(&kp, p2), MS_EKEY);
    CHECK(access(p2, F_OK) != 0);
  }
  ms_keypair_wipe(&kp);
  ms_keypair_wipe(&got);
}

int main(void) {
  mj_t *trace, *ref;
  char cmd[128];
  if (sodium_init() < 0) return 1;
  CHECK(mkdtemp(tmpdir) != NULL);
  trace = mj_load("Tests/vectors/test-secret-handshake_data.json");
  ref = mj_load("Tests/vectors/ref_handshake.json");
  CHECK(trace && ref);
  test_sizes_and_appkey();
  test_generate_and_seed(trace);
  if (ref) test_base64_and_id(ref);
  test_secret_file();
  mj_free(trace);
  mj_free(ref);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  CHECK_INT(system(cmd), 0);
  return mst_done("keys");
}
