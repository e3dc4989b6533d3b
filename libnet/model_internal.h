/*
 * model_internal.h: the fields of nt_model and its layers, shared by model.c (building,
 * parameters), run.c (planning, forward, backward), resnet.c and optim.c. Not public.
 */
#ifndef MODEL_INTERNAL_H
#define MODEL_INTERNAL_H

#include "libnet/nt_internal.h"

typedef enum {
    NT_PK_KERNEL = 0,
    NT_PK_BIAS,
    NT_PK_GAMMA,
    NT_PK_BETA,
    NT_PK_MEAN, // BN moving statistics: parameters of the file, never trained
    NT_PK_VAR,
} nt_param_kind;

static inline int param_is_trainable_kind(nt_param_kind k)
{
    return k != NT_PK_MEAN && k != NT_PK_VAR;
}

typedef struct nt_model_param_ {
    char name[96];
    int layer;
    nt_param_kind kind;
    nt_tensor value;
    nt_tensor grad; // data == NULL while not trainable
} nt_model_param_;

typedef struct nt_layer {
    char name[64];
    nt_layer_type type;
    int index;
    int nin, in[2];
    // Output per sample: H x W x C, or C when flat (H = W = 1).
    int H, W, C, flat;
    // Hyper-parameters.
    int R, S, stride, pad_h, pad_w; // conv, maxpool
    int pt, pb, pl, pr;             // zeropad
    nt_act act;                     // dense
    float rate;                     // dropout
    int param0, nparam;
    int trainable;
    int keep; // output kept alive after forward (nt_model_keep_output)
    // Batch statistics of the last training forward (BN), for backward.
    float *bn_mean, *bn_invstd;
    // Inference BN folded into the conv before it: scale and shift per channel (BN only).
    float *fold_scale, *fold_shift;
    // Fusion decided by the plan (inference parts only): a conv computes the BN (fuse_bn) and
    // the ReLU (fuse_relu) after it in its epilogue; an add computes the ReLU after it. Layers
    // computed by another one have `fused` set and are skipped; their values land in the last
    // fused layer's buffer. -1 when none.
    int fuse_bn, fuse_relu, fused;
    // A conv whose BN feeds a residual add also computes the add (fuse_add) in its epilogue,
    // reading the add's other input, layer fuse_res; -1 when none.
    int fuse_add, fuse_res;
    // Training fusion (backward region): a batch-statistics BN whose gradient is that of ReLU
    // layer gsrc masked by the ReLU's output (the ReLU right after it, fuse_relu set too, or the
    // one after the residual add it feeds): its backward reads that directly, and the BN's own
    // gradient buffer never exists. -1 when none.
    int gsrc;
    // On a ReLU fused into the residual add before it, set by the add's backward (per step): the
    // layer whose gradient buffer holds the ReLU's gradient masked by its output, the ReLU itself
    // (masked in place: both inputs are BNs that read it) or the add's other input (the first
    // gradient written there: a shortcut's); -1 when none. The BNs that read the ReLU's
    // gradient take it from there instead of masking it again (masked_grad_at in run.c).
    int gm_at;
    // A max-pool that reads through the ZeroPadding2D in front of it (its layer index; -1: none):
    // the pool takes the pad's input with the padding as its own (the pad's output, all >= 0
    // after a ReLU, is never written, and the zeros would never win a window), the pad layer is
    // fused (skipped) both ways.
    int fold_pad;
    // Conv weights packed once for inference: bf16 pairs (nk_gemm_bf16_pack_b) for the bf16
    // convs, else float32 micro-kernel panels or Winograd's transform (nt_ops.conv_pack); which
    // of the two is wpack_bf16, the allocation wpack_bytes. Valid while wpack_ok is set (cleared
    // whenever the weights may have changed).
    void *wpack;
    size_t wpack_bytes;
    int wpack_ok, wpack_bf16;
    // Set per forward: did this BN use batch statistics?
    int bn_batch_mode;
    // Planned buffers (offsets in floats into m->buf; -1 when none: out_off is -1 for an
    // output that is never materialised because a fused epilogue skipped it).
    int64_t out_off, grad_off;
    int64_t out_death; // last plan step the output is alive
    int out_bf16;      // the output buffer holds bf16 (see choose_bf16 in run.c)
    int out_whole;     // in a chunked prefix: the buffer holds the whole batch
    int grad_ready;    // the grad buffer has been written in this backward
    // A batch-statistics BN whose input is a trainable conv read by nothing else: its backward
    // also sums its dx (the conv's output gradient) into the conv's bias gradient (set by the
    // plan), and db_done tells that conv so (per backward).
    int sum_dx, db_done;
    double prof_fwd, prof_bwd; // seconds spent, summed since nt_model_set_profile
} nt_layer;

struct nt_model {
    nt_ctx *ctx;
    nt_layer *layers;
    int nlayers, cap_layers;
    nt_model_param_ *params;
    int nparams, cap_params;
    int head_start; // first head layer (the GAP), -1 when none
    int want_input_grad;
    int profile;

    // Memory plan for batch planned_n in mode planned_training (0: not planned).
    int planned_n, planned_training;
    int bstart; // first layer whose backward runs (nlayers: none)
    // Chunked forward (see chunk_plan in run.c): layers [0, chunk_end) run chunk_b images at a
    // time; 0 when the whole batch runs layer by layer.
    int chunk_b, chunk_end;
    float *buf;
    int64_t buf_floats;
    int64_t plan_floats; // what the current plan uses of buf
    int64_t scratch_off; // backward scratch (max activation size), -1 when none
    size_t ws_floats;    // kernel workspace needed
    void *plan;          // run.c's plan items, kept for reuse

    // State of the last forward.
    int last_n, last_training, have_forward, have_backward_data;
    uint64_t last_step;
    nt_tensor out_view, layer_view;
};

nt_layer *model_add_layer(nt_model *m, const char *name, nt_layer_type type);
nt_status model_sync_grads(nt_model *m);

#endif
