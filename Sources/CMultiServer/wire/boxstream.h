/*
 * Box-stream (spec/shs-boxstream.md §4): the framing that Scuttlebutt puts on
 * top of a secret handshake. I/O-free: the encoder turns plaintext into wire
 * bytes, the decoder turns wire bytes into plaintext packets.
 *
 * One direction = one key + one 24-byte big-endian nonce counter. A packet is
 *   box_N(u16be(L) ‖ body_mac)  (34 bytes)  ‖  body ciphertext (L bytes)
 * where body_mac ‖ ciphertext = box_{N+1}(body); then N += 2. The goodbye is
 * box_N(18 zero bytes).
 */
#ifndef MS_BOXSTREAM_H
#define MS_BOXSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_BOX_MAX_BODY 4096
#define MS_BOX_KEYBYTES 32
#define MS_BOX_NONCEBYTES 24
#define MS_BOX_MACBYTES 16
/* u16be length + body MAC */
#define MS_BOX_HEADER_PLAIN_LEN (2 + MS_BOX_MACBYTES)
/* boxed header on the wire: tag + 18 encrypted bytes */
#define MS_BOX_HEADER_LEN (MS_BOX_MACBYTES + MS_BOX_HEADER_PLAIN_LEN)
#define MS_BOX_GOODBYE_LEN MS_BOX_HEADER_LEN

/* Key and current nonce of one direction, and the XSalsa20 subkey
 * (HSalsa20 of the key and the nonce's first 16 bytes): it is the same for
 * every packet until the nonce's low 64 bits wrap, so it is derived once
 * per prefix rather than twice per packet. */
typedef struct {
  uint8_t key[MS_BOX_KEYBYTES];
  uint8_t nonce[MS_BOX_NONCEBYTES];
  uint8_t subkey[MS_BOX_KEYBYTES];
  uint8_t sub_prefix[16]; /* the nonce prefix subkey belongs to */
  bool sub_valid;
} ms_box_t;

void ms_box_init(ms_box_t *box, const uint8_t key[MS_BOX_KEYBYTES],
                 const uint8_t nonce[MS_BOX_NONCEBYTES]);
/* sodium_memzero the key and nonce. */
void ms_box_wipe(ms_box_t *box);
/* Big-endian increment of a 24-byte nonce, wrapping mod 2^192. */
void ms__box_nonce_increment(uint8_t nonce[MS_BOX_NONCEBYTES]);

/* ------------------------------------------------------------------ */
/* Encoder                                                             */
/* ------------------------------------------------------------------ */

/* Wire size of one write of len bytes: len + 34 per started 4096-byte
 * piece; 0 for len == 0; SIZE_MAX when that does not fit a size_t. */
size_t ms_box_sealed_size(size_t len);
/* Seal a whole write into consecutive packets of at most MS_BOX_MAX_BODY
 * plaintext bytes each. out must hold ms_box_sealed_size(len) bytes and must
 * not overlap in. A zero-length write writes nothing (like JS, which drops
 * empty writes). Advances the nonce by 2 per packet. Returns bytes written. */
size_t ms_box_seal(ms_box_t *box, uint8_t *out, const uint8_t *in,
                   size_t len);
/* Seal one packet of n (1..MS_BOX_MAX_BODY) bytes whose plaintext already
 * lies at out + MS_BOX_HEADER_LEN, in place: out receives the boxed header
 * and the body is encrypted where it is. Returns MS_BOX_HEADER_LEN + n. */
size_t ms_box_seal_packet_inplace(ms_box_t *box, uint8_t *out, size_t n);
/* The goodbye under the current nonce. Nothing may be sealed afterwards. */
void ms_box_goodbye(ms_box_t *box, uint8_t out[MS_BOX_GOODBYE_LEN]);

/* ------------------------------------------------------------------ */
/* Decoder                                                             */
/* ------------------------------------------------------------------ */

typedef struct {
  ms_box_t box;
  /* Partial packet (header or body) split across inputs. Allocated only
   * while such a partial packet is pending (or the last packet was delivered
   * from it), freed once drained. */
  uint8_t *part;
  size_t part_len;
  size_t part_hi; /* bytes of part ever written (wiped on release) */
  /* Unconsumed input kept by ms_unbox_stash(); processed before new input.
   * Allocated only while non-empty (freed at the call after it drains). */
  uint8_t *stash;
  size_t stash_off, stash_len;
  /* 0: waiting for a header; 1: header opened, waiting for the body. */
  int in_body;
  uint16_t body_len;
  uint8_t body_mac[MS_BOX_MACBYTES];
  /* 0 while running, 2 after the goodbye, or the final negative error. */
  int state;
} ms_unbox_t;

void ms_unbox_init(ms_unbox_t *u, const uint8_t key[MS_BOX_KEYBYTES],
                   const uint8_t nonce[MS_BOX_NONCEBYTES]);
/* Wipe the key/nonce and any pending bytes, free the buffers. The decoder may
 * be re-initialised afterwards. */
void ms_unbox_free(ms_unbox_t *u);

/*
 * Iterator. Consumes bytes of in[0..len) until one packet is complete.
 *  1  a packet: *out, *outlen is its plaintext (outlen 0 for an authentic
 *     empty packet). It is decrypted IN PLACE in the caller's `in` buffer when
 *     the packet lies wholly in it, else inside the decoder; either way it is
 *     valid until the next call on this decoder (or until `in` is reused).
 *  0  all of `in` consumed, more is needed (a partial packet was kept).
 *  2  the goodbye: the stream ended cleanly. Later calls with len == 0 return
 *     2 again; any later non-empty input is an error (MS_EBOXHEADER).
 *  <0 MS_EBOXHEADER (header does not open, or L > MS_BOX_MAX_BODY),
 *     MS_EBOXBODY (body does not open). Final: every later call returns it.
 *     MS_ENOMEM (buffer allocation failed) is not final; retry with the
 *     unconsumed rest.
 * *consumed is always set: bytes of `in` used by this call (the stash is not
 * counted). Typical use:
 *     while ((r = ms_unbox_next(u, p, n, &c, &o, &ol)) == 1) {
 *       p += c; n -= c; deliver(o, ol);
 *       if (paused) { r = ms_unbox_stash(u, p, n); break; }
 *     }
 * When the reader resumes, call ms_unbox_next(u, NULL, 0, ...) until it
 * returns 0 to drain the stash, then carry on with fresh input.
 * No allocation happens while packets arrive whole in each input.
 */
MS_WUR int ms_unbox_next(ms_unbox_t *u, uint8_t *in, size_t len,
                         size_t *consumed, uint8_t **out, size_t *outlen);
/* Keep unconsumed wire bytes (copied) to be processed before the next input,
 * for a reader that paused in the middle of an input buffer. Any plaintext
 * previously returned by ms_unbox_next may be invalid after this call.
 * Returns 0 or MS_ENOMEM. */
MS_WUR int ms_unbox_stash(ms_unbox_t *u, const uint8_t *in, size_t len);
/* Bytes kept by ms_unbox_stash and not yet processed. */
size_t ms_unbox_stashed(const ms_unbox_t *u);
/* At end of input: 0 if the goodbye was seen; the final error if the decoder
 * already failed; else MS_EHANGUP (EOF without goodbye, also mid-packet). */
MS_WUR int ms_unbox_eof(const ms_unbox_t *u);

#ifdef __cplusplus
}
#endif
#endif /* MS_BOXSTREAM_H */
