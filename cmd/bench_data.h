/*
 * bench_data.h: `pneumo bench data`, the data pipeline's speed (decode + resize (+ augment) +
 * preprocess, images/s) from files or S3 (first pass) and from the in-memory cache (second pass),
 * through the real loader threads. Implemented in cmd/bench_data.c.
 */
#ifndef BENCH_DATA_H
#define BENCH_DATA_H

// Runs `pneumo bench data`: argv holds the words after "data" (options only). Prints one line
// per pass, `op=data source=files|s3|cache set=NAME threads=N ... images_per_s=R`, and returns
// an exit code (0, 1 runtime failure, 2 usage error).
int bench_data(int argc, char **argv);

#endif
