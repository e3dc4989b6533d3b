/*
 * nt.h: the public API of libnet, pneumo's deep-learning library.
 * Contexts, tensors, status codes, layer graphs (the Keras ResNet50 v1 builder among them),
 * forward/backward, losses, optimizers and safetensors model files. Math lives in kernels/;
 * this layer checks shapes, owns memory and dispatches. Tests: tests/test_model.c,
 * tests/test_fixtures.c, tests/test_safetensors.c.
 */
#ifndef NT_H
#define NT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NT_VERSION "0.1.0"

// ---- status codes ----
typedef enum {
    NT_OK      = 0,
    NT_EINVAL  = -1, // a bad argument, flag value or option
    NT_ENOMEM  = -2, // an allocation failed (the message gives the byte count)
    NT_EIO     = -3, // a file could not be read or written
    NT_EDEVICE = -4, // the device (CUDA) failed or is missing
    NT_ESHAPE  = -5, // shapes do not fit (the message names the layer and both shapes)
    NT_EFORMAT = -6, // a file is corrupt, truncated or of the wrong architecture
} nt_status;

// A fixed name for a status, e.g. "shape mismatch". Never NULL.
const char *nt_status_str(nt_status s);

// ---- context ----
typedef struct nt_ctx nt_ctx;

typedef enum { NT_DEV_CPU = 0, NT_DEV_CUDA = 1 } nt_device;

// Which kernels the context dispatches to: the fastest this CPU supports, or the plain
// references in kernels/ref (for tests and debugging).
typedef enum { NT_IMPL_AUTO = 0, NT_IMPL_REF = 1, NT_IMPL_AVX2 = 2 } nt_impl;

typedef enum { NT_LOG_DEBUG = 0, NT_LOG_INFO = 1, NT_LOG_WARN = 2, NT_LOG_ERROR = 3 } nt_log_level;
typedef void (*nt_log_fn)(void *user, nt_log_level level, const char *msg);

typedef struct nt_ctx_opts {
    nt_device device; // NT_DEV_CPU for now
    int nthreads;     // 0: all online CPUs
    uint64_t seed;    // seeds dropout and weight initialisation
    nt_impl impl;
    nt_log_fn log; // NULL: silent
    void *log_user;
    // Compute type of inference convolutions. NT_DTYPE_BF16: inputs and weights rounded to
    // bfloat16, products summed in float32, bias/BN/ReLU/residual in float32; the weights are
    // packed to bf16 once and cached in the model (see nt_model_weights_changed). In training,
    // only the frozen layers before the first trainable one run in bf16 (the features a
    // fine-tune starts from); every trainable layer, its gradients and the float32 master
    // weights stay float32. Needs a CPU with AVX512_BF16 unless
    // impl is NT_IMPL_REF (then the plain bf16 references run); otherwise nt_ctx_new fails with
    // NT_EDEVICE and says so. Typical effect on a probability: |dp| ~ 1e-3. Inference-form 3x3
    // convolutions that Winograd takes (no_winograd unset, AVX-512) compute in float32 Winograd
    // on their bf16 activations and float32 weights instead.
    int dtype; // an nt_dtype; 0 (NT_DTYPE_F32) is the default
    // 3x3 stride-1 convolutions: 0 (the default) runs them by Winograd F(4x4, 3x3) where the CPU
    // has AVX-512 (float32 inference, the three float32 training passes and bf16 inference's
    // 3x3s; 2.2-2.5x faster per convolution; float32 error about 10x the direct sum's, a logit
    // moves by under 1e-6 relative); 1 keeps every convolution an implicit GEMM.
    int no_winograd;
} nt_ctx_opts;

// Fills *o with the defaults (CPU, all threads, seed 0, NT_IMPL_AUTO, no log).
void nt_ctx_opts_default(nt_ctx_opts *o);
// Creates a context. Returns NT_OK, NT_EINVAL (bad options; *out is still set so that the
// message can be read, and must be freed) or NT_ENOMEM.
nt_status nt_ctx_new(const nt_ctx_opts *o, nt_ctx **out);
void nt_ctx_free(nt_ctx *ctx);
// The last error message, one line, never NULL ("" when none).
const char *nt_ctx_errmsg(const nt_ctx *ctx);
// Records an error message (printf-style) and returns s, so that callers can write
// `return nt_ctx_seterr(ctx, NT_EINVAL, "...", ...)`. Used by libnet, data/ and weights/.
nt_status nt_ctx_seterr(nt_ctx *ctx, nt_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Logs through the context's callback (no-op without one).
void nt_ctx_log(const nt_ctx *ctx, nt_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int nt_ctx_nthreads(const nt_ctx *ctx);
// Name of the kernel set in use, e.g. "avx512", "avx2" or "ref"; with NT_DTYPE_BF16 the bf16
// unit is appended, e.g. "avx512+avx512bf16".
const char *nt_ctx_impl_name(const nt_ctx *ctx);

// ---- tensors ----
// Tensors are float32; NT_DTYPE_BF16 names a compute type (nt_ctx_opts.dtype), not a storage one.
typedef enum { NT_DTYPE_F32 = 0, NT_DTYPE_BF16 = 1 } nt_dtype;
// "f32" / "bf16"; nt_dtype_parse accepts those names (and "fp32", "float32", "bfloat16") and
// returns NT_EINVAL for anything else.
const char *nt_dtype_name(nt_dtype t);
// The compute type the context runs inference in (nt_ctx_opts.dtype).
nt_dtype nt_ctx_dtype(const nt_ctx *ctx);
nt_status nt_dtype_parse(const char *s, nt_dtype *out);

#define NT_MAX_DIMS 4

// A tensor is a plain view: shape plus data pointer. Who owns data is said where the tensor
// comes from (model parameters belong to the model; nt_tensor_new allocates and
// nt_tensor_free frees).
typedef struct nt_tensor {
    nt_dtype dtype;
    nt_device device;
    int ndim;
    int64_t shape[NT_MAX_DIMS];
    float *data;
} nt_tensor;

int64_t nt_tensor_numel(const nt_tensor *t);
// Allocates a zeroed CPU float32 tensor (64-byte aligned). Returns NT_ENOMEM or NT_EINVAL.
nt_status nt_tensor_new(nt_ctx *ctx, int ndim, const int64_t *shape, nt_tensor *out);
// Frees data allocated by nt_tensor_new and clears t. NULL or empty tensors are fine.
void nt_tensor_free(nt_tensor *t);
// The library's own allocation (tensors, activations, workspace): 64-byte aligned; blocks of 4
// MiB and more are whole 2 MiB pages advised as transparent huge pages. NULL when out of memory.
// Release with nt_free.
void *nt_alloc(size_t bytes);
void nt_free(void *p);
// Writes "[2,224,224,3]" into buf (always terminated).
const char *nt_shape_str(const nt_tensor *t, char *buf, size_t len);

// ---- layer graphs ----
//
// A model is a list of layers in Keras order; each layer reads the outputs of earlier layers.
// Layer 0 is always the input layer. Builders return the new layer's index, or -1 after
// recording an error in the context (bad shape, duplicate name, ...).
typedef struct nt_model nt_model;

typedef enum {
    NT_LAYER_INPUT = 0,
    NT_LAYER_ZEROPAD,
    NT_LAYER_CONV,
    NT_LAYER_BN,
    NT_LAYER_RELU,
    NT_LAYER_MAXPOOL,
    NT_LAYER_ADD,
    NT_LAYER_GAP,
    NT_LAYER_DENSE,
    NT_LAYER_DROPOUT,
} nt_layer_type;

typedef enum { NT_ACT_NONE = 0, NT_ACT_RELU = 1, NT_ACT_SIGMOID = 2 } nt_act;

// An empty model with an input layer of size H x W x C named `input_name`.
nt_status nt_model_new(nt_ctx *ctx, const char *input_name, int H, int W, int C, nt_model **out);
void nt_model_free(nt_model *m);

int nt_layer_zeropad(nt_model *m, const char *name, int in, int pt, int pb, int pl, int pr);
// Conv2D with bias; pad_h/pad_w as in nk_conv_desc (0 = Keras "valid"; (R-1)/2 for "same" at
// stride 1).
int nt_layer_conv(nt_model *m, const char *name, int in, int K, int R, int S, int stride, int pad_h,
                  int pad_w);
// BatchNormalization(axis=-1, momentum 0.99, epsilon 1.001e-5).
int nt_layer_bn(nt_model *m, const char *name, int in);
int nt_layer_relu(nt_model *m, const char *name, int in);
int nt_layer_maxpool(nt_model *m, const char *name, int in, int R, int stride);
int nt_layer_add(nt_model *m, const char *name, int a, int b);
int nt_layer_gap(nt_model *m, const char *name, int in);
// Dense(units, activation). A sigmoid layer must be the last one: its logits are the model
// output and nt_model_loss applies the sigmoid fused with the loss.
int nt_layer_dense(nt_model *m, const char *name, int in, int units, nt_act act);
int nt_layer_dropout(nt_model *m, const char *name, int in, float rate);

// ---- Keras ResNet50 v1 ----
typedef enum {
    NT_PRE_RESCALE = 0, // x / 255
    NT_PRE_CAFFE   = 1, // RGB->BGR, minus [103.939, 116.779, 123.68]
    NT_PRE_TORCH   = 2, // x/255, minus ImageNet mean, over ImageNet std
} nt_preprocess;

typedef struct nt_resnet_cfg {
    int img_size;  // square input, default 224 (must be >= 32)
    int head1;     // units of the first head Dense (ReLU), default 256
    int head2;     // units of the second head Dense (ReLU), default 128
    float dropout; // rate of the head Dropout, default 0.5
    int with_head; // 0: the 175-layer backbone only (output conv5_block3_out)
    int width_div; // 1 (default): Keras's widths. k > 1 divides every channel count by k, for
                   // small test networks of the same topology and names (64 must divide by k)
} nt_resnet_cfg;

void nt_resnet_cfg_default(nt_resnet_cfg *cfg);

// Appends one Keras ResNet v1 bottleneck block named `prefix` (e.g. "conv3_block1") reading
// layer `in`: 1x1 conv (f1, stride) -> BN -> ReLU -> 3x3 conv (f2, "same") -> BN -> ReLU ->
// 1x1 conv (f3) -> BN, plus the shortcut (a 1x1 conv (f3, stride) + BN when `projection`, else
// the identity), then add and ReLU. Layers come in Keras's order: _1_conv, _1_bn, _1_relu,
// _2_conv, _2_bn, _2_relu, [_0_conv], _3_conv, [_0_bn], _3_bn, _add, _out. Returns the index of
// the _out layer, or -1 (error in the context).
int nt_resnet_block(nt_model *m, const char *prefix, int in, int f1, int f2, int f3, int stride,
                    int projection);
// Builds keras.applications.ResNet50(include_top=False) with Keras's layer names and order
// (input_1, conv1_pad, conv1_conv, ..., conv5_block3_out: 175 layers, 23,587,712 parameters)
// and, when with_head, GAP "global_average_pooling2d" -> Dense "dense" (ReLU) -> Dropout
// "dropout" -> Dense "dense_1" (ReLU) -> Dense "dense_2" (1, sigmoid). Weights are zero until
// nt_model_init or a load. Everything is trainable until nt_model_set_trainable_last.
nt_status nt_resnet50_new(nt_ctx *ctx, const nt_resnet_cfg *cfg, nt_model **out);

// ---- introspection ----
typedef struct nt_layer_info {
    const char *name;
    nt_layer_type type;
    const char *type_name; // Keras class name: "Conv2D", "BatchNormalization", ...
    int ninputs;
    int inputs[2];
    int64_t out_shape[4]; // [N or -1, H, W, C] for maps, [N or -1, C] (ndim 2) for vectors
    int out_ndim;
    int64_t nparams; // all parameters, BN moving statistics included
    int64_t ntrain;  // trainable parameters (0 when frozen)
    int trainable;
    int out_bf16; // the last forward stored the output in bf16 (NT_DTYPE_BF16: only convs read it)
} nt_layer_info;

int nt_model_num_layers(const nt_model *m);
void nt_model_layer(const nt_model *m, int i, nt_layer_info *info);
// Index of the layer named `name`, or -1.
int nt_model_find_layer(const nt_model *m, const char *name);

// Parameters, in layer order. Names are Keras weight names without ":0":
// "conv1_conv/kernel", "conv1_conv/bias", "conv1_bn/gamma", "conv1_bn/beta",
// "conv1_bn/moving_mean", "conv1_bn/moving_variance", "dense/kernel", "dense/bias", ...
// Shapes: conv kernel [R,S,C,K] (HWIO), dense kernel [C,K], vectors [K].
typedef struct nt_param {
    const char *name;
    int layer;
    nt_tensor *value; // owned by the model
    nt_tensor *grad;  // owned by the model; NULL when the parameter is not trainable
    int trainable;    // moving statistics are never trainable
} nt_param;

int nt_model_num_params(const nt_model *m);
// Parameter i. Writing through p->value is how weights are set; because of that, this call also
// drops the model's cached bf16 copy of the weights (NT_DTYPE_BF16), which the next inference
// forward rebuilds. A caller that keeps value pointers and writes through them later must call
// nt_model_weights_changed afterwards (a training forward does it too).
void nt_model_param(const nt_model *m, int i, nt_param *p);
// Parameter i's value, read-only: unlike nt_model_param it keeps the cached packed weights
// (for readers on the inference path, e.g. Grad-CAM's head).
const nt_tensor *nt_model_param_value(const nt_model *m, int i);
// Drops derived copies of the weights (the bf16 packing); cheap, idempotent.
void nt_model_weights_changed(nt_model *m);
// Index of the parameter named `name`, or -1.
int nt_model_find_param(const nt_model *m, const char *name);
int64_t nt_model_count_params(const nt_model *m, int64_t *trainable);

// Keras-style freezing: the last n layers of the backbone (every layer except input and the
// head, in Keras order) become trainable, plus the head; all earlier layers are frozen. n < 0
// means all. Frozen BN layers run in inference mode, and nothing a frozen layer computes is kept
// for backward. For models without a head (tests), "backbone" means every layer.
nt_status nt_model_set_trainable_last(nt_model *m, int n);
// The head's first layer index (the GAP), or nt_model_num_layers when there is no head.
int nt_model_head_start(const nt_model *m);

// ---- initialisation ----
typedef enum {
    NT_INIT_KERAS = 0, // glorot-uniform kernels, zero biases, gamma 1, beta 0, mean 0, var 1
    NT_INIT_TEST  = 1, // He-uniform kernels, and small random biases, gammas, betas and
                       // moving statistics, so that tests exercise every parameter
} nt_init;

// Deterministic initialisation. Parameter number p (in nt_model_param order), element i, draws
// u = nk_u01(nk_mix64(seed + NK_GOLDEN * (p + 1)), i) and sets
//   kernel:           (2u-1) * a, a = sqrt(6/(fan_in+fan_out)) for KERAS, sqrt(6/fan_in) for TEST
//                     (conv fan_in = R*S*C, fan_out = R*S*K; dense fan_in = C, fan_out = K)
//   bias:             0                | TEST: 0.1 * (2u-1)
//   gamma:            1                | TEST: 1 + 0.2 * (2u-1)
//   beta:             0                | TEST: 0.1 * (2u-1)
//   moving_mean:      0                | TEST: 0.1 * (2u-1)
//   moving_variance:  1                | TEST: 0.5 + u
// tests/gen_fixtures.py reproduces this exactly.
nt_status nt_model_init(nt_model *m, nt_init kind, uint64_t seed);

// Keeps the output of `layer` alive after every forward (for reading it with
// nt_model_layer_output, e.g. Grad-CAM's feature map), even where it would be reused.
void nt_model_keep_output(nt_model *m, int layer, int on);

// ---- Grad-CAM (libnet/gradcam.c) ----
//
// The gradient of the logit with respect to the GAP features for the pneumo head
// (GAP -> Dense "dense" ReLU -> Dropout -> Dense "dense_1" ReLU -> Dense "dense_2", dropout being
// the identity at inference), computed by hand in double from the head's parameters.
// feat [n, C] (C = the GAP width), grad [n, C] out, logit [n] out (may be NULL). NT_EINVAL when the
// model lacks that head, NT_ESHAPE when its kernels do not chain, NT_ENOMEM. Thread-safe as long
// as nobody changes the parameters.
nt_status nt_model_head_grad(nt_model *m, const float *feat, int n, double *logit, float *grad);
// Grad-CAM of the last forward (inference, batch N) at `layer` (e.g. conv5_block3_out, whose
// output must have been kept with nt_model_keep_output before the forward): with A [N,h,w,C] the
// layer's output and g = d logit / d GAP(A), alpha_c = g_c / (h w) and
// cam = ReLU(sum_c alpha_c A[:,:,c]), divided by its maximum per image (all zeros when the map is
// zero everywhere). cam receives N*h*w floats in [0,1], row-major; *h and *w (may be NULL) get the
// map's size. With cam == NULL only *h and *w are set (to size the buffer). NT_EINVAL (bad layer,
// output not kept, no pneumo head), NT_ESHAPE, NT_ENOMEM. Uses only the model, not the context's
// kernels; call it from the thread that runs the model.
nt_status nt_model_gradcam(nt_model *m, int layer, float *cam, int *h, int *w);
// Draws a CAM [h,w] (values in [0,1]) over an image rgb [H,W,3]: the map is upsampled bilinearly
// (half-pixel centres) to H x W, coloured with the Turbo colour map and blended over the image's
// grey level with weight 0.6 * cam, into out [H,W,3] (8-bit). Cannot fail; thread-safe.
void nt_gradcam_overlay(const float *cam, int h, int w, const uint8_t *rgb, int W, int H,
                        uint8_t *out);

// ---- running ----
//
// Forward over x [N,H,W,C] (already preprocessed). training != 0 uses batch statistics in
// trainable BN layers (updating their moving averages), applies dropout and keeps what backward
// needs; training == 0 is inference. The output (the last layer's: logits for a model with a
// head) stays valid until the next forward and is read with nt_model_output.
// `step` keys the dropout masks: layer l in step s keeps element i when
// nk_u01(nk_mix64(seed + NK_GOLDEN * (s + 1)) ^ (l + 1), i) >= rate, where seed is the
// context's (nt_ctx_opts.seed), not nt_model_init's.
nt_status nt_model_forward(nt_model *m, const nt_tensor *x, int training, uint64_t step);
// Does ahead of time what the first forward over `batch` images would: plans the activation
// memory, packs the weights for the kernels (BN folded, GEMM panels, Winograd transforms) and
// touches the buffers. A command calls it while opening the model, so that its first batch is
// not the slow one; a later forward at another batch size plans again.
nt_status nt_model_prepare(nt_model *m, int batch, int training);
// The last forward's output of the final layer (a view owned by the model).
const nt_tensor *nt_model_output(const nt_model *m);
// The last forward's output of layer `layer`, or NULL when it was not kept (frozen inference
// buffers are reused as soon as they are dead).
const nt_tensor *nt_model_layer_output(const nt_model *m, int layer);
// Bytes of activations (and gradients) that the last forward's memory plan holds: every live
// buffer at its peak, after reuse and fusion; with NT_DTYPE_BF16 the outputs that only convs read
// count 2 bytes an element. 0 before the first forward (or nt_model_prepare).
size_t nt_model_activation_bytes(const nt_model *m);

// Sigmoid + class-weighted BCE on the last forward's logits (N x 1): Keras reduction
// sum(w_i l_i)/N with p clipped to [1e-7, 1-1e-7]. labels [N] (NULL: only probs are computed,
// loss and dlogits are left alone); weights [N] or NULL (all 1).
// probs [N] (may be NULL) receives sigmoid(z), unclipped (the clip is the loss's business).
// dlogits [N] (may be NULL) receives the gradient. Errors go to the model's context.
nt_status nt_model_loss(nt_model *m, const float *labels, const float *weights, double *loss,
                        float *probs, float *dlogits);

// Backward from dy (same shape as the model output) after a training forward: fills the grad
// tensor of every trainable parameter (overwriting) and, when dx != NULL (shape of the input),
// the gradient with respect to the input. Needs want_input_grad for dx (so that the frozen
// prefix keeps what it must).
nt_status nt_model_backward(nt_model *m, const nt_tensor *dy, nt_tensor *dx);
void nt_model_set_want_input_grad(nt_model *m, int on);

// Per-layer timing: while on, forward and backward add each layer's wall time (seconds) to its
// counters; turning it on (again) zeroes them. nt_model_layer_time reads them.
void nt_model_set_profile(nt_model *m, int on);
void nt_model_layer_time(const nt_model *m, int layer, double *fwd_s, double *bwd_s);

// ---- optimizers ----
typedef enum { NT_OPT_SGD = 0, NT_OPT_ADAM = 1 } nt_opt_kind;

typedef struct nt_optim_cfg {
    nt_opt_kind kind;
    float lr;
    float momentum;     // SGD
    int nesterov;       // SGD
    float beta1, beta2; // Adam: 0.9, 0.999 (Keras)
    float eps;          // Adam: 1e-7 (Keras)
    float weight_decay; // decoupled (AdamW-style / Keras `weight_decay`): w -= lr * wd * w
} nt_optim_cfg;

typedef struct nt_optim nt_optim;

void nt_optim_cfg_default(nt_optim_cfg *cfg, nt_opt_kind kind);
// State (momentum / moments) for every trainable parameter of m at this moment.
nt_status nt_optim_new(nt_ctx *ctx, const nt_optim_cfg *cfg, nt_model *m, nt_optim **out);
void nt_optim_free(nt_optim *o);
// One update from the grads in m, with Keras's formulas:
//  SGD:      v = momentum*v - lr*g; w += v (nesterov: w += momentum*v - lr*g)
//  Adam:     t += 1; lr_t = lr*sqrt(1-b2^t)/(1-b1^t); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//            w -= lr_t * m / (sqrt(v) + eps)
nt_status nt_optim_step(nt_optim *o);
void nt_optim_set_lr(nt_optim *o, float lr);
float nt_optim_lr(const nt_optim *o);

// Optimizer state, for checkpoints that resume exactly: state tensor i is named
// "optimizer/<parameter>/m" or ".../v" (Adam moments) or ".../momentum" (SGD), and *view points
// at the optimizer's own buffer (writable: a resume copies the saved values in). The Adam step
// count is nt_optim_iterations.
int nt_optim_num_state(const nt_optim *o);
void nt_optim_state_at(const nt_optim *o, int i, char *name, size_t len, nt_tensor *view);
int64_t nt_optim_iterations(const nt_optim *o);
void nt_optim_set_iterations(nt_optim *o, int64_t t);

// ---- metrics (binary classification) ----
//
// Accumulates (probability, label) pairs over an epoch and reports what Keras's metrics report:
// mean loss (as given), binary accuracy, precision and recall at a threshold, and ROC AUC.
// AUC here is exact (the Mann-Whitney statistic, ties counted half), where Keras's AUC metric
// approximates it with 200 thresholds; they agree to about 1e-3 on real data.
typedef struct nt_metrics nt_metrics;

typedef struct nt_metric_values {
    int64_t n, pos, neg;
    double loss; // mean of the per-batch losses added, weighted by batch size
    double accuracy, precision, recall, specificity, f1, auc;
    int64_t tp, fp, tn, fn;
    float threshold;
} nt_metric_values;

nt_status nt_metrics_new(nt_ctx *ctx, nt_metrics **out);
void nt_metrics_free(nt_metrics *mt);
void nt_metrics_reset(nt_metrics *mt);
// Adds n predictions (probabilities in [0,1]) and labels (0 or 1); batch_loss is the batch's
// mean loss (NaN when there is none). NT_ENOMEM or NT_EINVAL (a label that is not 0 or 1).
nt_status nt_metrics_add(nt_metrics *mt, const float *probs, const float *labels, int n,
                         double batch_loss);
// Computes the values at `threshold` (p >= threshold is positive). A metric whose denominator is
// 0 is 0, as Keras reports it; AUC is NaN with only one class present.
void nt_metrics_compute(const nt_metrics *mt, float threshold, nt_metric_values *v);
int64_t nt_metrics_count(const nt_metrics *mt);
// The accumulated pairs (for curves and reports): valid until the next add/reset.
void nt_metrics_data(const nt_metrics *mt, const float **probs, const float **labels);

// Threshold choice on validation data: Youden's J (maximise sensitivity + specificity - 1) when
// target_sensitivity <= 0, else the highest threshold whose sensitivity is >= the target.
// Candidates lie halfway between neighbouring distinct scores; among equal J the lowest wins.
float nt_metrics_choose_threshold(const nt_metrics *mt, double target_sensitivity);
// ROC AUC with a percentile bootstrap interval (n_boot resamples, deterministic from seed).
void nt_metrics_auc_ci(const nt_metrics *mt, int n_boot, uint64_t seed, double level, double *lo,
                       double *hi);

// ---- callbacks (Keras 3 rules) ----
//
// mode: NT_MIN for losses (improvement: cur < best - min_delta), NT_MAX for AUC/accuracy
// (cur > best + min_delta).
typedef enum { NT_MODE_MIN = 0, NT_MODE_MAX = 1 } nt_mode;

typedef struct nt_early_stopping {
    nt_mode mode;
    double min_delta; // >= 0
    int patience;
    int restore_best; // the caller snapshots weights when nt_es_update reports an improvement
    // state
    double best;
    int wait, best_epoch, stopped_epoch;
} nt_early_stopping;

void nt_es_init(nt_early_stopping *es, nt_mode mode, double min_delta, int patience,
                int restore_best);
// Feeds the epoch's monitored value (epochs count from 0). Returns 1 when training should stop
// after this epoch. *improved (may be NULL) is set when this epoch is the new best.
int nt_es_update(nt_early_stopping *es, int epoch, double value, int *improved);

typedef struct nt_reduce_lr {
    nt_mode mode;
    double factor, min_delta, lr_min;
    int patience, cooldown;
    // state
    double best;
    int wait, cooldown_counter;
} nt_reduce_lr;

// Keras defaults: factor 0.1, patience 10, min_delta 1e-4, cooldown 0, min_lr 0.
void nt_rlr_init(nt_reduce_lr *r, nt_mode mode, double factor, int patience, double min_delta,
                 int cooldown, double lr_min);
// Feeds the epoch's value and the current learning rate; returns the learning rate to use next
// (lr itself, or max(lr * factor, lr_min) when the plateau lasted `patience` epochs).
double nt_rlr_update(nt_reduce_lr *r, double value, double lr);

// ModelCheckpoint(save_best_only): true when value improves on *best (no min_delta, as Keras);
// updates *best. Start *best at nt_mode_worst(mode).
int nt_checkpoint_improved(nt_mode mode, double value, double *best);
double nt_mode_worst(nt_mode mode);

// ---- model files (safetensors) ----
//
// Writes every parameter of m (as F32, or F16 when fp16 != 0) under its Keras weight name,
// with `metadata` (string key/value pairs, may be NULL/0) in "__metadata__". The write is atomic:
// path.tmp, fsync, rename. Returns NT_EIO with the path and errno text on failure.
typedef struct nt_kv {
    const char *key;
    const char *value;
} nt_kv;

// Errors (NT_EIO, NT_EINVAL, NT_ENOMEM) go to the context the model was created with.
nt_status nt_model_save(nt_model *m, const char *path, const nt_kv *metadata, int nmeta, int fp16);

// A parsed safetensors file: its metadata and tensors (widened to F32 on load).
typedef struct nt_st_file nt_st_file;

// Reads and validates a whole safetensors file (header JSON, dtypes F32/F16/BF16, offsets within
// the data, no overlaps). NT_EIO (cannot open/read), NT_EFORMAT (what is wrong, where),
// NT_ENOMEM, or NT_EINVAL for a NULL path. Not thread-safe on one ctx (the error buffer).
nt_status nt_st_open(nt_ctx *ctx, const char *path, nt_st_file **out);
void nt_st_close(nt_st_file *f);
// Metadata value for key, or NULL.
const char *nt_st_meta(const nt_st_file *f, const char *key);
int nt_st_num_meta(const nt_st_file *f);
// Metadata entry i (0 <= i < nt_st_num_meta; an index out of range is a caller bug and aborts).
void nt_st_meta_at(const nt_st_file *f, int i, const char **key, const char **value);
int nt_st_num_tensors(const nt_st_file *f);
// Tensor i (0 <= i < nt_st_num_tensors, in data order): name, dtype name as stored ("F32",
// "F16", "BF16"), shape, data widened to F32 (owned by f).
void nt_st_tensor_at(const nt_st_file *f, int i, const char **name, const char **dtype, int *ndim,
                     const int64_t **shape, const float **data);
// Index of tensor `name`, or -1.
int nt_st_find(const nt_st_file *f, const char *name);

// Copies every parameter of m from f, by name. Every parameter must be present with the same
// shape (NT_EFORMAT names the first missing or mismatched one); extra tensors are an error too
// unless allow_extra. Everything is checked before anything is copied, so a refused file leaves
// the model unchanged. Errors (NT_EFORMAT, NT_ENOMEM) go to the model's context.
nt_status nt_model_load_st(nt_model *m, const nt_st_file *f, int allow_extra);

// Safetensors writer for arbitrary named tensors (used by nt_model_save and by tools).
typedef struct nt_st_entry {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
} nt_st_entry;
nt_status nt_st_write(nt_ctx *ctx, const char *path, const nt_st_entry *t, int nt,
                      const nt_kv *metadata, int nmeta, int fp16);

// ---- pneumo model files: a ResNet50 plus what predict and serve need to use it ----
//
// The metadata keys written to "__metadata__" (all values are strings, as safetensors wants):
//   format "pneumo-model", format_version "1", architecture "resnet50_keras_v1",
//   img_size, head1, head2, dropout, width_div, preprocess (rescale|caffe|torch),
//   class_names (a JSON array of two names), threshold, and provenance (free text: command,
//   version, date) when given.
typedef struct nt_model_meta {
    nt_resnet_cfg cfg;
    nt_preprocess preprocess;
    char class_names[2][64];
    float threshold;
    char provenance[1024];
} nt_model_meta;

void nt_model_meta_default(nt_model_meta *meta);
const char *nt_preprocess_name(nt_preprocess p);
// Parses "rescale", "caffe" or "torch". NT_EINVAL otherwise (message lists the choices).
nt_status nt_preprocess_parse(nt_ctx *ctx, const char *s, nt_preprocess *out);
// Applies preprocessing to n pixels of interleaved 8-bit RGB, writing n*3 floats (NHWC order).
void nt_preprocess_apply(nt_preprocess p, const uint8_t *rgb, int64_t n, float *out);
// The same from float RGB on the 0..255 scale (augmented images); in-place (out == rgb) is fine.
void nt_preprocess_apply_f32(nt_preprocess p, const float *rgb, int64_t n, float *out);

// Saves m with meta's metadata (atomic; see nt_model_save). fp16 stores F16 tensors.
nt_status nt_model_save_file(nt_model *m, const nt_model_meta *meta, const char *path, int fp16);
// Opens a pneumo model file: checks the metadata (format, architecture, sizes), builds the
// ResNet50 it describes and loads every tensor with shape checks. On success *out is the model
// and *meta its metadata (meta may be NULL). NT_EIO / NT_EFORMAT name the file and what is wrong.
nt_status nt_model_load_file(nt_ctx *ctx, const char *path, nt_model **out, nt_model_meta *meta);

// Checkpoints: a model file plus `extra` tensors (optimizer state, ...) and metadata entries
// (epoch, RNG and callback state, ...), written in the same atomic way.
nt_status nt_model_save_file_ex(nt_model *m, const nt_model_meta *meta, const char *path, int fp16,
                                const nt_st_entry *extra, int nextra, const nt_kv *extra_meta,
                                int nextra_meta);
// Opens a model file that may carry extra tensors (allow_extra) and, when file_out != NULL,
// hands the parsed file to the caller (close it with nt_st_close) to read them.
nt_status nt_model_load_file_ex(nt_ctx *ctx, const char *path, int allow_extra, nt_model **out,
                                nt_model_meta *meta, nt_st_file **file_out);

#ifdef __cplusplus
}
#endif
#endif
