/*
 * tblog.h: TensorBoard event files (scalars only) for `pneumo train`: TFRecord framing
 * (length, masked CRC32C of the length, data, masked CRC32C of the data) around hand-encoded
 * Event protocol buffers. Checked by an independent parser, tests/tb_check.py.
 */
#ifndef TBLOG_H
#define TBLOG_H

#include <stdint.h>
#include <stdio.h>

typedef struct tb_writer tb_writer;

// Creates DIR/events.out.tfevents.<time>.<host>.<pid>.pneumo and writes the file_version event.
// Returns NULL and fills err on failure.
tb_writer *tb_open(const char *dir, char *err, size_t errlen);
// Appends one scalar (tag, step, value) with the current wall time; flushed at once so that a
// live TensorBoard sees it. Returns 0, or -1 on a write error (errno kept).
int tb_scalar(tb_writer *w, const char *tag, int64_t step, double value);
// Closes (fsyncs) the file. NULL is fine. Returns 0 or -1.
int tb_close(tb_writer *w);
const char *tb_path(const tb_writer *w);

// CRC-32C (Castagnoli), as TFRecord uses, and TFRecord's mask. Exposed for tests.
uint32_t tb_crc32c(const void *data, size_t n);
uint32_t tb_masked_crc(uint32_t crc);

#endif
