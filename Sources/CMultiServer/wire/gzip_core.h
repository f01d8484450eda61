/*
 * gzip codec for the `gzip` transform (…~shs:KEY~gzip): one compressed byte
 * stream per direction. I/O-free, no libuv.
 *
 * Format: each direction is ONE gzip member (RFC 1952: the 10-byte gzip
 * header, raw deflate data, CRC-32 and ISIZE trailer), as zlib writes it with
 * deflateInit2(windowBits 15 + 16). This is the gzip wrapper, not raw deflate
 * and not the zlib (RFC 1950) wrapper; it is what the JS multiserver's gzip
 * transform puts on the wire with zlib's gzip streams. The inflater accepts
 * only a gzip header (windowBits 15 + 16, no auto-detection of zlib streams)
 * and exactly one member: bytes after the trailer are an error.
 *
 * Deflate side (ms_gzip_t): writes are compressed with Z_NO_FLUSH and may stay
 * inside zlib; ms_gzip_flush() (Z_SYNC_FLUSH) pushes everything written so far
 * onto the wire so that the peer can decode up to that point. The driver
 * corks: many writes per loop turn, one flush at the end of the turn.
 * ms_gzip_finish() (Z_FINISH) writes the trailer; nothing may be written after.
 *
 * Inflate side (ms_gunzip_t): the caller supplies a fixed-size output buffer
 * on every call and gets back consumed/produced counts, so memory stays
 * bounded (zlib's ~40 KiB state plus the caller's buffer) whatever the peer
 * sends: a decompression bomb only makes the caller loop more often. An
 * optional limit on the total decompressed size turns a bomb into MS_ELIMIT.
 *
 * Memory: zlib allocates through this module, which wipes every block
 * (sodium_memzero) before freeing it, so the history windows, which hold
 * plaintext, do not outlive the codec.
 *
 * Errors are final unless stated otherwise: the codec releases zlib's state
 * and every later call returns the same error.
 */
#ifndef MS_GZIP_CORE_H
#define MS_GZIP_CORE_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

#include "multiserver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Room for "gzip: " plus zlib's message (zlib's are all short). */
#define MS_GZIP_REASON_LEN 96
/* Growth step of ms_gzbuf_t, and the recommended inflate output size. */
#define MS_GZIP_CHUNK 16384
#define MS_GUNZIP_OUT_RECOMMENDED 65536
/* Smallest output buffer for a bounded SYNC_FLUSH step. */
#define MS_GZIP_FLUSH_MIN_OUT 64

/* ------------------------------------------------------------------ */
/* Growable output buffer                                              */
/* ------------------------------------------------------------------ */

/* Bytes [0, len) of data are valid; cap is the allocation. Start from
 * {0} (all zero). The caller may consume the bytes and set len = 0 to reuse
 * the allocation, or take ownership of data (free() it) and zero the struct.
 * Grows by at least MS_GZIP_CHUNK; never shrinks on its own. */
typedef struct {
  uint8_t *data;
  size_t len;
  size_t cap;
} ms_gzbuf_t;

/* Wipe [0, cap) and free; the buffer is {0} afterwards. */
void ms_gzbuf_free(ms_gzbuf_t *buf);

/* ------------------------------------------------------------------ */
/* Deflate (compress one direction)                                    */
/* ------------------------------------------------------------------ */

typedef enum {
  MS_GZIP_NO_FLUSH = 0, /* compress; output may stay inside zlib */
  MS_GZIP_SYNC_FLUSH,   /* Z_SYNC_FLUSH: all input so far becomes decodable */
  MS_GZIP_FINISH        /* Z_FINISH: end the stream (trailer) */
} ms_gzip_flush_t;

/* Caller-owned state; treat the fields as private. */
typedef struct {
  z_stream zs;
  /* 0 running, 2 finished, or the final negative error; 1 never used. */
  int state;
  int zinit;          /* deflateInit2 succeeded, deflateEnd still due */
  int flushing;       /* a SYNC_FLUSH or FINISH is half done (output full) */
  size_t unflushed;   /* input bytes since the last completed flush */
  uint64_t total_in;  /* uncompressed bytes accepted */
  uint64_t total_out; /* compressed bytes produced */
} ms_gzip_t;

/* level: 0-9, or -1 for zlib's default (6). Allocates zlib's deflate state
 * (about 256 KiB with windowBits 15, memLevel 8).
 * Returns 0, MS_EINVAL (bad level) or MS_ENOMEM. On failure nothing is held
 * and ms_gzip_free() is still safe. */
MS_WUR int ms_gzip_init(ms_gzip_t *gz, int level);
/* deflateEnd (wiping zlib's blocks) and zero the state. Safe on a failed,
 * finished or zeroed state, and twice. */
void ms_gzip_free(ms_gzip_t *gz);

/*
 * Bounded step: compress in[0, len) into out[0, cap).
 * *consumed and *produced are always set.
 *  0  the operation is complete: all of `in` was consumed and, for
 *     SYNC_FLUSH/FINISH, the flush is wholly in the output.
 *  1  out is full: call again with more room, the rest of the input
 *     (in + *consumed) and the same flush mode.
 *  <0 MS_ESHUTDOWN: called after FINISH completed (not final, nothing
 *     changes); MS_EINVAL: cap == 0, cap < MS_GZIP_FLUSH_MIN_OUT with
 *     SYNC_FLUSH, or a NULL buffer with a non-zero length (not final);
 *     MS_EFRAME: zlib reported an internal error (final).
 * A SYNC_FLUSH when nothing was written since the last completed flush
 * produces nothing (an idle loop turn puts no bytes on the wire). A FINISH
 * always writes the trailer, also for an empty stream. A SYNC_FLUSH needs
 * cap >= MS_GZIP_FLUSH_MIN_OUT: zlib starts a fresh flush marker whenever a
 * flush ends on a full buffer, so with a tiny buffer it would never end
 * (with this minimum a repeated call adds at most one empty stored block,
 * which decoders skip).
 * After a NO_FLUSH returns 0, zlib may still hold output (the cork); it
 * comes out with a later call.
 */
MS_WUR int ms_gzip_deflate(ms_gzip_t *gz, const uint8_t *in, size_t len,
                           size_t *consumed, uint8_t *out, size_t cap,
                           size_t *produced, ms_gzip_flush_t flush);

/* Growable forms: append every byte zlib produces to *out (growing it).
 * ms_gzip_write: Z_NO_FLUSH; usually appends little or nothing (the cork).
 * ms_gzip_flush: Z_SYNC_FLUSH; afterwards out holds a prefix the peer can
 *   decode up to the last byte written. No-op when nothing is unflushed.
 * ms_gzip_finish: Z_FINISH; the stream is complete after it.
 * Returns 0, MS_ESHUTDOWN (after finish; not final), MS_EINVAL (NULL
 * in with len > 0; not final), MS_ENOMEM (growing out failed: final, since
 * zlib has taken input that can no longer be delivered), MS_EFRAME (final).
 * Bytes already appended stay in out on error. */
MS_WUR int ms_gzip_write(ms_gzip_t *gz, const uint8_t *in, size_t len,
                         ms_gzbuf_t *out);
MS_WUR int ms_gzip_flush(ms_gzip_t *gz, ms_gzbuf_t *out);
MS_WUR int ms_gzip_finish(ms_gzip_t *gz, ms_gzbuf_t *out);

/* Uncompressed bytes written since the last completed flush (0 after a
 * flush or finish). Non-zero means the driver owes a flush this turn. */
size_t ms_gzip_pending(const ms_gzip_t *gz);
/* 1 once FINISH completed, else 0. */
int ms_gzip_finished(const ms_gzip_t *gz);

/* ------------------------------------------------------------------ */
/* Inflate (decompress one direction)                                  */
/* ------------------------------------------------------------------ */

typedef struct {
  z_stream zs;
  /* 0 running, 2 after the trailer, or the final negative error. */
  int state;
  int zinit;
  uint64_t max_total; /* 0: no limit */
  uint64_t total_out;
  /* Unconsumed input kept by ms_gunzip_stash(); processed before new
   * input. Allocated only while non-empty. */
  uint8_t *stash;
  size_t stash_off, stash_len;
  char reason[MS_GZIP_REASON_LEN];
} ms_gunzip_t;

/* max_total: limit on the total decompressed bytes of the stream (an
 * expansion cap; 0 for none). Memory is bounded either way.
 * Returns 0 or MS_ENOMEM; ms_gunzip_free() is safe after either. */
MS_WUR int ms_gunzip_init(ms_gunzip_t *gz, uint64_t max_total);
/* inflateEnd (wiping zlib's window), wipe and free the stash, zero the
 * state. Safe on a failed or zeroed state, and twice. */
void ms_gunzip_free(ms_gunzip_t *gz);

/*
 * Decompress: input is the stash (if any) first, then in[0, len).
 * Writes at most cap bytes into out. *consumed (bytes of `in`, the stash is
 * not counted) and *produced are always set; deliver out[0, *produced) on
 * every return >= 0, even when the return is 1 or 2.
 *  0  all input consumed and no more output pending: feed more input.
 *  1  out filled up: deliver, then call again with in + *consumed and the
 *     remaining length (possibly 0), since zlib may hold more output.
 *  2  the gzip trailer was read and verified (CRC-32 and length): clean end.
 *     *consumed ends exactly at the trailer. Later calls with no input
 *     return 2 again with nothing produced.
 *  <0 MS_EFRAME: corrupt data (reason: "gzip: " + zlib's message, e.g.
 *     "incorrect header check", "invalid block type", "incorrect data
 *     check"), or data after the trailer ("gzip: data after the end of the
 *     stream", also for later non-empty input); MS_ELIMIT: more than
 *     max_total bytes would be produced; MS_ENOMEM: zlib could not
 *     allocate its window. All
 *     final. On these, out[0, *produced) still holds what was decoded
 *     before the problem was found (for MS_ELIMIT exactly up to the limit);
 *     deliver or drop it. MS_EINVAL: out is NULL or cap == 0, or in is NULL
 *     with len > 0 (not final, nothing changes).
 * No allocation happens apart from zlib's own window on first output.
 * Typical use, with a 64 KiB out:
 *     do {
 *       r = ms_gunzip_next(g, p, n, &c, out, sizeof out, &k);
 *       p += c; n -= c;
 *       if (r >= 0) deliver(out, k);
 *       if (paused && r >= 0 && r != 2) { r = ms_gunzip_stash(g, p, n); break; }
 *     } while (r == 1);
 * When the reader resumes, call ms_gunzip_next(g, NULL, 0, ...) while it
 * returns 1 to drain the stash, then carry on with fresh input.
 */
MS_WUR int ms_gunzip_next(ms_gunzip_t *gz, const uint8_t *in, size_t len,
                          size_t *consumed, uint8_t *out, size_t cap,
                          size_t *produced);
/* Keep unconsumed input (copied) for a reader that paused mid-buffer; it is
 * processed before the next input. Returns 0, MS_ENOMEM (not final; nothing
 * changes), or the final error if the codec has failed. */
MS_WUR int ms_gunzip_stash(ms_gunzip_t *gz, const uint8_t *in, size_t len);
/* Bytes kept by ms_gunzip_stash and not yet processed. */
size_t ms_gunzip_stashed(const ms_gunzip_t *gz);
/* At end of input: 0 if the trailer was seen (clean end); the final error
 * if the codec already failed; else MS_EHANGUP (the stream ended before the
 * trailer, also when nothing arrived at all). */
MS_WUR int ms_gunzip_eof(const ms_gunzip_t *gz);
/* Why the codec failed: a static or state-held string; "" while running.
 * Valid until ms_gunzip_free. */
const char *ms_gunzip_reason(const ms_gunzip_t *gz);
/* Decompressed bytes produced so far. */
uint64_t ms_gunzip_total_out(const ms_gunzip_t *gz);

#ifdef __cplusplus
}
#endif
#endif /* MS_GZIP_CORE_H */
