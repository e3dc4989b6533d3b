/*
 * nw.h: pneumo's weight importers (weights/): pretrained Keras .h5 weights copied onto an
 * nt_model built by libnet (nt_resnet50_new). Model files of our own (safetensors) are in
 * libnet/nt.h; this layer only reads other people's formats. Tests: tests/test_h5import.c with
 * fixtures from tests/gen_h5.py.
 */
#ifndef NW_H
#define NW_H

#include "libnet/nt.h"

#ifdef __cplusplus
extern "C" {
#endif

// Which layer names a Keras file uses.
typedef enum {
    NW_NAMING_NONE    = 0, // no weighted layer of the file matched the model
    NW_NAMING_CURRENT = 1, // conv1_conv, conv1_bn, conv2_block1_1_conv, conv2_block1_0_bn, ...
                           // (keras.applications' resnet50 weights as released since 2019)
    NW_NAMING_2017 = 2,    // conv1, bn_conv1, res2a_branch2a, bn2a_branch1, ... (the 2017
                           // release used by keras-applications' resnet50.py)
    NW_NAMING_MIXED = 3,   // some layers of each
} nw_naming;

// "current", "2017", "mixed" or "none".
const char *nw_naming_str(nw_naming n);

// What an import found and did. Counts refer to the file unless they say model.
typedef struct nw_import_report {
    int tensors;             // datasets copied into model parameters
    int layers;              // model layers that received weights
    const char *naming;      // nw_naming_str(naming_kind): "current", "2017", "mixed" or "none"
    nw_naming naming_kind;   // which layer names the file uses
    int layers_in_file;      // entries of layer_names (weight-less layers included)
    int layers_with_weights; // layers whose weight_names is not empty
    int layers_skipped;      // weighted file layers with no model layer (e.g. fc1000), ignored
    int tensors_in_file;     // datasets listed by all weight_names
    int params_untouched;    // model parameters the file did not provide (head parameters only)
    int64_t values;          // floats copied
    char skipped_first[96];  // the first skipped layer's name, "" when none
    char keras_version[32];  // the root attribute keras_version, "" when absent
} nw_import_report;

// Copies the weights of a Keras .h5 weights file (`model.save_weights` / keras.applications
// format: root attribute layer_names, one group per layer with attribute weight_names naming its
// datasets; a whole-model file's /model_weights group works too) into the parameters of m.
//
// Each dataset is matched by name, not by position: its layer (the part of the weight name before
// "/", or the group for Keras 1 names such as "res2a_branch2a_W:0") is mapped onto a model layer
// of the same name, or through the 2017 names (conv1 -> conv1_conv, bn_conv1 -> conv1_bn,
// res{S}{B}_branch{2a,2b,2c,1} -> conv{S}_block{B}_{1,2,3,0}_conv, bn... -> ..._bn, block a = 1),
// and its role (kernel/W, bias/b, gamma, beta, moving_mean/running_mean,
// moving_variance/running_std) picks the parameter. So the file's layer order does not matter.
// Weight-less layers are skipped, as are weighted layers the model does not have (counted in
// rep). Every shape must equal the model's; values are read as float32 and must be finite. Every
// parameter of the backbone (layers before nt_model_head_start) must be provided exactly once;
// head parameters the file does not hold stay as they are. Nothing in m changes unless the whole
// import succeeds.
//
// Returns NT_OK; NT_EIO when the file cannot be opened (path and errno text); NT_EFORMAT when it
// is not HDF5, is truncated or corrupt, is not a Keras weights file, or does not fit m (the
// message names the HDF5 layer, the dataset and both shapes, or the missing parameter);
// NT_ENOMEM. rep (may be NULL) is filled as far as the import got.
//
// Not thread-safe with respect to other HDF5 users in the process (libhdf5 serial); HDF5's own
// error printing is switched off during the call and restored after it.
nt_status nw_import_keras_h5(nt_ctx *ctx, nt_model *m, const char *path, nw_import_report *rep);

#ifdef __cplusplus
}
#endif
#endif
