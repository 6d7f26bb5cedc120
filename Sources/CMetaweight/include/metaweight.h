/*
 * metaweight.h — the C contract of the metaweight Swift core.
 *
 * Conventions
 * - Every function returns an mw_status; MW_OK (0) is success. On failure a message naming the
 *   argument, what was expected and what came is stored per thread: read it with
 *   mw_last_error(). Nothing a caller passes traps the library; bad input is an error code.
 * - Objects are opaque 64-bit handles with create/free pairs. A freed or unknown handle is
 *   MW_E_HANDLE. An object used from two threads at once is MW_E_BUSY for the second caller.
 * - Arrays are C-contiguous. Features are float32; labels are int64. Image batches are
 *   [N, C, H, W]; flat batches are [N, D]. Shapes are passed as (const int64_t* shape, rank).
 * - NaN or infinite inputs are rejected with MW_E_NONFINITE. A step whose loss or gradient
 *   becomes NaN/infinite fails with MW_E_NONFINITE and leaves the parameters unchanged.
 * - Compute calls hold no global lock; callers may run them concurrently on different objects.
 */
#ifndef METAWEIGHT_H
#define METAWEIGHT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t mw_status;
#define MW_OK 0
#define MW_E_ARGUMENT 1   /* a value is out of range or malformed                  */
#define MW_E_SHAPE 2      /* an array has the wrong rank, size or is empty           */
#define MW_E_LABEL 3      /* a label is negative or >= the number of classes        */
#define MW_E_NONFINITE 4  /* NaN or infinity in an input, loss, gradient or weight   */
#define MW_E_HANDLE 5     /* freed, unknown or wrong-kind handle                     */
#define MW_E_STATE 6      /* call not allowed in the object's current state          */
#define MW_E_IO 7         /* file missing, unreadable, truncated, corrupt, mismatch  */
#define MW_E_BUSY 8       /* the object is in use by another thread                  */
#define MW_E_INTERNAL 99  /* a bug: please report                                    */

typedef uint64_t mw_network; /* a network: architecture, parameters, running statistics */
typedef uint64_t mw_trainer; /* a network with optimizer, schedule, method and RNG state */

/* ---- library ---------------------------------------------------------------------------- */

/* The last error message of this thread ("" when none). Valid until the next failing call. */
const char *mw_last_error(void);
/* Library version, e.g. "0.1.0". */
const char *mw_version(void);
/* The OpenBLAS core in use (e.g. "SkylakeX") and its configuration string. */
const char *mw_blas_core(void);
const char *mw_blas_config(void);
/* Threads used by metaweight's kernels and OpenBLAS (n >= 1). */
mw_status mw_set_threads(int32_t n);
int32_t mw_get_threads(void);
/* Sets the thread-local error (used by the Python extension for its own checks). */
void mw_set_last_error(const char *message);

/* ---- networks --------------------------------------------------------------------------- */

/*
 * Builds a network from a spec string for inputs of per-example shape input_shape
 * (rank 1: [D]; rank 3: [C, H, W]) and initialises it from seed.
 *   spec  := item (';' item)*
 *   item  := name ['(' key '=' value (',' key '=' value)* ')']
 *          | 'residual' '{' spec ['|' spec] '}'     (body | shortcut; identity when omitted)
 *   value := number | int 'x' int 'x' ...          (a list, e.g. hidden=256x256)
 * Layers: linear(out, bias=1, kaiming=0) conv2d(out, k, s=1, p=0, bias=0) batchnorm relu
 *   maxpool(k, s=k) avgpool(k, s=k) gap flatten dropout(p) shortcut_a(out, s)
 * Presets: mlp(hidden=AxB.., classes, bn=0, dropout=0) lenet5(classes) resnet32(classes)
 *   resnet(n, classes) wrn(depth=28, widen=10, classes, dropout=0)
 */
mw_status mw_network_create(const char *spec, const int64_t *input_shape, int32_t input_rank,
                            uint64_t seed, mw_network *out);
mw_status mw_network_free(mw_network net);
/* Counts: trainable parameters, state values, classes, parameter blocks, state blocks. */
mw_status mw_network_info(mw_network net, int64_t *n_params, int64_t *n_state, int64_t *n_classes,
                          int64_t *n_param_blocks, int64_t *n_state_blocks);
/* Per-example input shape (rank 1 or 3) into shape[0..2]. */
mw_status mw_network_input_shape(mw_network net, int64_t *shape, int32_t *rank);
/* Name, offset and shape (up to 8 dims) of parameter block `index` (state block when is_state). */
mw_status mw_network_block(mw_network net, int32_t is_state, int64_t index, char *name,
                           int64_t name_capacity, int64_t *offset, int64_t *shape, int32_t *rank);
/* Copy all parameters (or state when is_state) out of / into a float buffer of exactly count. */
mw_status mw_network_get_flat(mw_network net, int32_t is_state, float *out, int64_t count);
mw_status mw_network_set_flat(mw_network net, int32_t is_state, const float *values, int64_t count);
/* A textual summary of the layers (into buf; needed size in *length). */
mw_status mw_network_summary(mw_network net, char *buf, int64_t capacity, int64_t *length);
/* Bytes of activation memory a training batch of `batch` examples needs. */
mw_status mw_network_activation_bytes(mw_network net, int64_t batch, int64_t *bytes);
/* The architecture signature (for checkpoints). */
mw_status mw_network_signature(mw_network net, char *buf, int64_t capacity, int64_t *length);

/* ---- trainers --------------------------------------------------------------------------- */

typedef struct {
  int32_t kind;          /* 0 = SGD, 1 = Adam */
  float lr;              /* base learning rate */
  float momentum;        /* SGD */
  int32_t nesterov;      /* SGD */
  float weight_decay;    /* L2 (added to the gradient), or decoupled for Adam when set */
  int32_t decoupled;     /* Adam: AdamW-style decay */
  float beta1, beta2, eps;
} mw_optimizer_config;

typedef struct {
  int32_t kind;              /* 0 = constant, 1 = multi-step, 2 = cosine */
  const int64_t *milestones; /* multi-step: steps at which lr *= gamma */
  int32_t n_milestones;
  float gamma;
  int64_t total_steps;       /* cosine */
  float min_lr;              /* cosine floor */
  int64_t warmup_steps;      /* linear warm-up */
} mw_schedule_config;

typedef struct {
  double loss;      /* mean unweighted cross-entropy of the batch (before the update) */
  double accuracy;  /* batch accuracy (before the update) */
  double lr;        /* learning rate used */
  int64_t step;     /* updates taken so far */
  double meta_loss; /* meta methods: meta-batch loss at the look-ahead θ̂ (else 0) */
} mw_step_result;

/* A trainer owns a reference to the network (freeing the network handle keeps it alive). */
mw_status mw_trainer_create(mw_network net, const mw_optimizer_config *opt,
                            const mw_schedule_config *schedule, uint64_t seed, mw_trainer *out);
mw_status mw_trainer_free(mw_trainer tr);
/* Random crop with zero padding `crop_padding` and horizontal flip (image inputs only). */
mw_status mw_trainer_set_augmentation(mw_trainer tr, int32_t crop_padding, int32_t flip);
/*
 * One training step (one optimizer update). x: [N, ...input shape], labels: N int64 in
 * [0, classes). sample_weights: NULL or N finite non-negative floats (loss = Σ wᵢ lᵢ / N).
 */
mw_status mw_trainer_step(mw_trainer tr, const float *x, const int64_t *x_shape, int32_t x_rank,
                          const int64_t *labels, int64_t n_labels, const float *sample_weights,
                          mw_step_result *out);
/* Eval-mode logits [N, classes] into out (count = N·classes). */
mw_status mw_trainer_predict(mw_trainer tr, const float *x, const int64_t *x_shape, int32_t x_rank,
                             float *out, int64_t count);
/* Eval-mode per-example cross-entropy losses (N floats) without updating anything. */
mw_status mw_trainer_losses(mw_trainer tr, const float *x, const int64_t *x_shape, int32_t x_rank,
                            const int64_t *labels, int64_t n_labels, float *losses_out);
/* A random permutation of 0..n-1 from the trainer's data generator (epoch shuffling). */
mw_status mw_trainer_permutation(mw_trainer tr, int64_t n, int64_t *out);
/* Updates taken and the learning rate of the next update. */
mw_status mw_trainer_state(mw_trainer tr, int64_t *steps, double *next_lr);
/* The network the trainer trains (a new handle; free it when done). */
mw_status mw_trainer_network(mw_trainer tr, mw_network *out);
/* Checkpoints: atomic write; load checks format, checksum and architecture. */
mw_status mw_trainer_save(mw_trainer tr, const char *path);
mw_status mw_trainer_load(mw_trainer tr, const char *path);

/* ---- weighting methods ------------------------------------------------------------------ */

/*
 * Selects the trainer's weighting method from a spec "name(key=value, ...)"; resets the method's
 * state (weight net, its optimizer). seed seeds V's initialisation and random baselines.
 * Methods and options (defaults from ALGORITHMS.md):
 *   erm                                   plain ERM (sample weights allowed in mw_trainer_step)
 *   l2rw(virtual_momentum=0, virtual_lr=0)
 *   mwnet(normalize=0, detach=1, hidden=100, wn_opt=adam, wn_lr=1e-3, wn_wd=1e-4, wn_momentum=0,
 *         virtual_momentum=0, virtual_lr=0)
 *   gdw(eta=auto: 100 for <= 10 classes else 1000, clip=0.2, clamp_min=1e-6, clamp_max=1e6,
 *       prob_clamp=0.999, + the mwnet options but normalize/detach)
 *   focal(gamma=2)  class_balanced(beta=0.9999, counts=AxBx...)  inverse_frequency(counts=...)
 *   hard_mining(fraction=0.5)  random_gaussian  self_paced(threshold=ln C, growth=1.1, interval=100)
 *   bootstrap_soft(beta=0.95)  bootstrap_hard(beta=0.8)
 * virtual_lr <= 0 means the classifier's current learning rate; virtual_momentum=1 includes the
 * optimizer's momentum and weight decay in the virtual step.
 */
mw_status mw_trainer_set_method(mw_trainer tr, const char *spec, uint64_t seed);
/* The current method's name into buf (needed length in *length). */
mw_status mw_trainer_method(mw_trainer tr, char *buf, int64_t capacity, int64_t *length);
/*
 * One step of the trainer's method. x_meta/y_meta: the meta batch, required by l2rw, mwnet and
 * gdw (NULL otherwise). weights_out: NULL or N floats receiving the per-example weights (GDW: ω′
 * at the label). class_weights_out: NULL or N×classes floats (GDW's ω′; other methods: NULL).
 */
mw_status mw_trainer_step_method(mw_trainer tr, const float *x, const int64_t *x_shape, int32_t x_rank,
                                 const int64_t *labels, int64_t n_labels, const float *x_meta,
                                 const int64_t *meta_shape, int32_t meta_rank, const int64_t *meta_labels,
                                 int64_t n_meta_labels, mw_step_result *out, float *weights_out,
                                 int64_t weights_count, float *class_weights_out, int64_t class_weights_count);
/* MW-Net/GDW: V(loss) for n losses (the learned loss -> weight function). */
mw_status mw_trainer_weight_function(mw_trainer tr, const float *losses, int64_t n, float *out);

#ifdef __cplusplus
}
#endif
#endif /* METAWEIGHT_H */
