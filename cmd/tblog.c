/*
 * tblog.c: TensorBoard scalar event files: TFRecord records whose payload is an Event message
 * (wall_time = 1: double, step = 2: int64, file_version = 3: string, summary = 5: Summary with
 * Value { tag = 1: string, simple_value = 2: float }), encoded by hand. Test: tests/test_tblog.c
 * with the independent parser tests/tb_check.py.
 */
#include "cmd/tblog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct tb_writer {
    FILE *f;
    char path[1024];
};

uint32_t tb_crc32c(const void *data, size_t n)
{
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) { // reflected Castagnoli polynomial
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const uint8_t *p = data;
    uint32_t c       = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t tb_masked_crc(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

// ---- protobuf encoding into a small buffer ----

typedef struct pbuf {
    uint8_t b[1024];
    size_t n;
} pbuf;

static void put_varint(pbuf *p, uint64_t v)
{
    while (v >= 0x80 && p->n < sizeof(p->b)) {
        p->b[p->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    if (p->n < sizeof(p->b)) p->b[p->n++] = (uint8_t)v;
}

static void put_bytes(pbuf *p, const void *d, size_t n)
{
    if (p->n + n > sizeof(p->b)) n = sizeof(p->b) - p->n;
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

static void put_le(pbuf *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        put_bytes(p, &c, 1);
    }
}

static void put_len_field(pbuf *p, int field, const void *d, size_t n)
{
    put_varint(p, (uint64_t)field << 3 | 2);
    put_varint(p, n);
    put_bytes(p, d, n);
}

static double wall_time(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}

static int write_record(tb_writer *w, const pbuf *ev)
{
    uint8_t hdr[8];
    uint64_t len = ev->n;
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)(len >> (8 * i));
    uint32_t c1 = tb_masked_crc(tb_crc32c(hdr, 8)), c2 = tb_masked_crc(tb_crc32c(ev->b, ev->n));
    uint8_t b1[4], b2[4];
    for (int i = 0; i < 4; i++)
        b1[i] = (uint8_t)(c1 >> (8 * i)), b2[i] = (uint8_t)(c2 >> (8 * i));
    if (fwrite(hdr, 1, 8, w->f) != 8 || fwrite(b1, 1, 4, w->f) != 4 ||
        fwrite(ev->b, 1, ev->n, w->f) != ev->n || fwrite(b2, 1, 4, w->f) != 4 || fflush(w->f))
        return -1;
    return 0;
}

static void put_header(pbuf *ev, int64_t step)
{
    double t;
    t = wall_time();
    uint64_t bits;
    memcpy(&bits, &t, 8);
    put_varint(ev, 1 << 3 | 1); // wall_time, fixed64
    put_le(ev, bits, 8);
    put_varint(ev, 2 << 3 | 0); // step, varint
    put_varint(ev, (uint64_t)step);
}

tb_writer *tb_open(const char *dir, char *err, size_t errlen)
{
    tb_writer *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    snprintf(w->path, sizeof(w->path), "%s/events.out.tfevents.%ld.%s.%d.pneumo", dir,
             (long)time(NULL), host, (int)getpid());
    w->f = fopen(w->path, "wb");
    if (!w->f) {
        snprintf(err, errlen, "%s: %s", w->path, strerror(errno));
        free(w);
        return NULL;
    }
    pbuf ev = {.n = 0};
    put_header(&ev, 0);
    put_len_field(&ev, 3, "brain.Event:2", 13);
    if (write_record(w, &ev)) {
        snprintf(err, errlen, "%s: %s", w->path, strerror(errno));
        fclose(w->f);
        free(w);
        return NULL;
    }
    return w;
}

int tb_scalar(tb_writer *w, const char *tag, int64_t step, double value)
{
    pbuf val = {.n = 0}, sum = {.n = 0}, ev = {.n = 0};
    size_t tl = strlen(tag);
    if (tl > 256) tl = 256;
    put_len_field(&val, 1, tag, tl);
    float f = (float)value;
    uint32_t fb;
    memcpy(&fb, &f, 4);
    put_varint(&val, 2 << 3 | 5); // simple_value, fixed32
    put_le(&val, fb, 4);
    put_len_field(&sum, 1, val.b, val.n);
    put_header(&ev, step);
    put_len_field(&ev, 5, sum.b, sum.n);
    return write_record(w, &ev);
}

int tb_close(tb_writer *w)
{
    if (!w) return 0;
    int rc = fflush(w->f) || fsync(fileno(w->f)) ? -1 : 0;
    if (fclose(w->f)) rc = -1;
    free(w);
    return rc;
}

const char *tb_path(const tb_writer *w)
{
    return w->path;
}
