/*
 * dataset.h: image datasets with flow_from_directory semantics (class folders sorted by name,
 * files sorted, the listed extensions) from a folder or an S3 prefix; a patient-grouped,
 * stratified validation split; an in-memory cache of decoded, resized 8-bit images; and loader
 * threads that prefetch preprocessed (and augmented) batches while compute runs.
 * Tests: tests/test_dataset.c, tests/s3.sh; speed: `pneumo bench data`.
 */
#ifndef ND_DATASET_H
#define ND_DATASET_H

#include "data/augment.h"
#include "data/nd.h"
#include "data/s3.h"

// Image extensions flow_from_directory accepts (case-insensitive).
#define ND_EXTENSIONS "png,jpg,jpeg,bmp,ppm,tif,tiff"

typedef struct nd_item {
    char *source; // a path, or "s3://bucket/key"
    int label;    // class index
    int64_t size; // bytes (0 when unknown)
} nd_item;

typedef struct nd_dataset {
    char *root; // the folder or s3:// prefix it was read from
    nd_item *items;
    int n;
    char **class_names; // sorted
    int nclasses;
    int *class_counts;
} nd_dataset;

// Lists a dataset: `uri` is a folder or "s3://bucket/prefix/" holding one sub-folder per class.
// s3 may be NULL for folders (and is needed for s3:// URIs). Files with other extensions are
// ignored (counted in *ignored when not NULL); an empty dataset or a missing folder/bucket is an
// error that says what was expected.
nt_status nd_dataset_open(nt_ctx *ctx, const char *uri, nd_s3 *s3, nd_dataset **out,
                          int *ignored);
void nd_dataset_free(nd_dataset *ds);

// Carves a validation split: about `frac` of each class goes to val, whole patient groups at a
// time. A file's group is the first non-empty capture group (or else the whole match) of
// `group_regex` (POSIX extended) on its file name; files that do not match are their own group.
// The default ND_KERMANY_GROUPS knows the Kermany names: personNNN_... -> "personNNN",
// IM-NNNN-... -> "IM-NNNN", NORMAL2-IM-NNNN-... -> "NORMAL2-IM-NNNN". Deterministic from seed;
// the counts per class go to the log. Both outputs are new datasets (sharing nothing with ds).
#define ND_KERMANY_GROUPS "^(person[0-9]+)_|^((NORMAL2-)?IM-[0-9]+)-"
nt_status nd_dataset_split(nt_ctx *ctx, const nd_dataset *ds, double frac, uint64_t seed,
                           const char *group_regex, nd_dataset **train, nd_dataset **val);

// ---- loader ----

typedef struct nd_loader_opts {
    int img_size;        // square target
    nd_resize resize;    // default ND_RESIZE_AREA
    int batch;           // images per batch
    int threads;         // loader threads (1..64)
    int shuffle;         // reshuffle each epoch (from seed, epoch)
    uint64_t seed;       // order and augmentation
    nd_aug_cfg aug;      // nd_aug_cfg_default: none
    nt_preprocess preprocess;
    int cache;           // keep decoded, resized 8-bit images in memory after first use
    double max_bad_frac; // stop (NT_EFORMAT) when more than this fraction failed to load
    const nd_s3_opts *s3; // for s3:// items (each thread opens its own client); may be NULL
} nd_loader_opts;

void nd_loader_opts_default(nd_loader_opts *o);

typedef struct nd_loader nd_loader;

// Starts the loader threads over ds (borrowed: must outlive the loader).
nt_status nd_loader_new(nt_ctx *ctx, const nd_dataset *ds, const nd_loader_opts *o,
                        nd_loader **out);
void nd_loader_free(nd_loader *ld);
// Begins an epoch (the order is a function of seed and epoch). Batches of the previous epoch
// not yet taken are dropped.
nt_status nd_loader_start_epoch(nd_loader *ld, int epoch);
// Takes the next batch: x [batch, S, S, 3] preprocessed floats (preallocated for opts.batch),
// labels [batch], idx [batch] (dataset indices, may be NULL), *n = images in it (the last batch
// may be partial; 0 at the end of the epoch). Images that fail to load are skipped and counted;
// NT_EFORMAT once they exceed max_bad_frac (the message names the last one and why).
nt_status nd_loader_next(nd_loader *ld, nt_tensor *x, float *labels, int *idx, int *n);

typedef struct nd_loader_stats {
    int64_t loaded, cache_hits, bad;
    double decode_s; // summed over threads
} nd_loader_stats;
void nd_loader_stats_get(const nd_loader *ld, nd_loader_stats *st);

#endif
