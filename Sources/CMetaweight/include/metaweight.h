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
 * - Every input array is copied into core-owned memory once, then checked; the core never reads
 *   the caller's memory again during the call (another thread rewriting it cannot make a checked
 *   label out of range). Labels must lie in [0, classes) (MW_E_LABEL).
 * - NaN or infinite inputs are rejected with MW_E_NONFINITE. A step whose loss or gradient, or a
 *   batch-norm running statistic, becomes NaN/infinite fails with MW_E_NONFINITE and leaves the
 *   parameters, optimizer state and running statistics unchanged.
 * - Allocations whose size a caller controls are checked against a limit (16 GiB or the machine's
 *   physical memory, if less) first; over it, or when the system refuses, the call fails with
 *   MW_E_RESOURCE instead of aborting.
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
#define MW_E_INTERRUPTED 9 /* stopped by a cancellation request (mw_law_cancel)     */
#define MW_E_RESOURCE 10  /* a caller-sized allocation is over its limit or failed  */
#define MW_E_INTERNAL 99  /* a bug: please report                                    */

typedef uint64_t mw_network; /* a network: architecture, parameters, running statistics */
typedef uint64_t mw_trainer; /* a network with optimizer, schedule, method and RNG state */

/* ---- library ---------------------------------------------------------------------------- */

/* The last error message of this thread ("" when none). Valid until the next failing call. */
const char *mw_last_error(void);
/* The library's version: the one place it is written. mw_version() returns it, Python's
 * metaweight.__version__ reads it through mw_version(), and setup.py reads it from this line for the
 * package metadata. */
#define MW_VERSION "0.1.0"
/* Library version (MW_VERSION). */
const char *mw_version(void);
/* The OpenBLAS core in use (e.g. "SkylakeX") and its configuration string. */
const char *mw_blas_core(void);
const char *mw_blas_config(void);
/* Threads used by metaweight's kernels and OpenBLAS (n >= 1). */
mw_status mw_set_threads(int32_t n);
int32_t mw_get_threads(void);
/* Diagnostics: the most calls on handles that were running at the same moment (in any threads)
 * since the last reset; reset != 0 sets it back to the number running now. Two threads that
 * each call into the library concurrently push it to >= 2 (shows that callers overlap). */
int64_t mw_calls_in_flight_peak(int32_t reset);
/* Sets the thread-local error (used by the Python extension for its own checks). */
void mw_set_last_error(const char *message);
/* Number of live handles of every kind (networks, trainers, searches, strategies), for leak
 * checks: it returns to its earlier value once every handle created since was freed. */
mw_status mw_live_handles(int64_t *out);

/* ---- settings tables and specs ---------------------------------------------------------- */

/*
 * The core's settings tables, the one place every setting is declared, as JSON into buf
 * (capacity bytes, NUL-terminated; the needed length without the NUL in *length):
 *   kind "methods": {"kind": "methods", "methods": [{"name", "doc", "needs_meta", "weight_net",
 *                   "class_weights", "sample_weights", "settings": [...]}, ...]}
 *   kind "law":     {"kind": "law", "settings": [...]}
 * A setting: {"name", "type" (int|float|bool|enum|ints|floats), "default" (null: "none"),
 * "doc", "expected" (the range in words), "minimum"/"maximum" with "minimum_inclusive"/
 * "maximum_inclusive" when bounded, "choices" (enum), "count"/"max_count" (lists), "none" (what
 * the value none means, or null when none is not allowed), "aliases" (other accepted keys)}.
 * Every spec (method, LAW, network) has one grammar: name(key=value, ...).
 */
mw_status mw_settings_table(const char *kind, char *buf, int64_t capacity, int64_t *length);
/*
 * Parses and checks a spec without creating anything: kind "method" (a method spec as
 * mw_trainer_set_method takes) or "law" (a LAW configuration as mw_law_create takes). Writes the
 * canonical spec (every setting, table order) into buf (needed length in *length); a bad spec is
 * MW_E_ARGUMENT naming the key, what was expected and what came. Checks that need a network
 * (class_counts against its classes) happen when the method is set.
 */
mw_status mw_spec_check(const char *kind, const char *spec, char *buf, int64_t capacity, int64_t *length);

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
/* Sets the algorithm preference of every convolution: 0 auto (Winograd on 3x3 stride-1 layers of
 * at least 16 channels, F(4x4,3x3), else im2col + GEMM), 1 gemm, 2 winograd (where eligible: 3x3, stride 1,
 * padding <= 2). The maths and parameters are unchanged; *count (optional) receives the number of
 * convolutions. The spec's `algo=0|1|2` on a conv layer or preset sets the same preference. */
mw_status mw_network_set_conv_algorithm(mw_network net, int32_t algorithm, int64_t *count);
/* The algorithm each convolution runs (1 gemm, 2 winograd), depth first, into out (up to capacity
 * entries; out may be NULL); *count receives the number of convolutions. */
mw_status mw_network_conv_algorithms(mw_network net, int32_t *out, int64_t capacity, int64_t *count);

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
  /* Collapse and saturation diagnostics of the step (cheap; they never change the step). */
  double weight_ess;          /* (Σw)²/(n·Σw²) of the per-example weights, in [0, 1]; 0 if all are 0 */
  double saturated_low;       /* fraction with V(loss) < 0.05 (MW-Net/GDW), else with w <= 1% of mean(w) */
  double saturated_high;      /* fraction with V(loss) > 0.95 (MW-Net/GDW), else 0 */
  double prediction_majority; /* share of the batch predicted as its most frequently predicted class */
  double label_majority;      /* share of the batch carrying its most frequent label */
  double weight_loss_corr;    /* Pearson correlation of weights and losses over the batch (NaN if constant) */
} mw_step_result;

/* A trainer owns a reference to the network (freeing the network handle keeps it alive). */
mw_status mw_trainer_create(mw_network net, const mw_optimizer_config *opt,
                            const mw_schedule_config *schedule, uint64_t seed, mw_trainer *out);
mw_status mw_trainer_free(mw_trainer tr);
/*
 * Replaces a live trainer's learning-rate schedule (the base rate stays the one it was created
 * with); parameters, optimizer state, step count, random generators and the method's state are
 * kept. Used to resolve an epoch-based schedule once fit() knows the steps per epoch. The whole
 * config is validated first: on an error nothing changes.
 */
mw_status mw_trainer_set_schedule(mw_trainer tr, const mw_schedule_config *schedule);
/* Random crop with zero padding `crop_padding` and horizontal flip (image inputs only). */
mw_status mw_trainer_set_augmentation(mw_trainer tr, int32_t crop_padding, int32_t flip);
/*
 * One training step (one optimizer update), of the trainer's method (mw_trainer_set_method) or, for
 * erm, a plain step: the one step entry. x: [N, ...input shape], labels: N int64 in [0, classes).
 * sample_weights: NULL, or n_sample_weights = N finite non-negative floats (loss = Σ wᵢ lᵢ / N;
 * erm only). Without sample weights an attached LAW strategy (mw_trainer_set_strategy) weights an
 * erm step. x_meta/meta_labels: the meta batch, required by l2rw, mwnet and gdw (NULL otherwise).
 * out: NULL or the step's result. weights_out: NULL or N floats receiving the per-example weights
 * (GDW: ω′ at the label; erm: the sample weights, the strategy's K, or 1). class_weights_out: NULL
 * or N×classes floats (GDW's ω′; other methods: NULL). Every array is copied, then checked once.
 */
mw_status mw_trainer_step(mw_trainer tr, const float *x, const int64_t *x_shape, int32_t x_rank,
                          const int64_t *labels, int64_t n_labels, const float *sample_weights,
                          int64_t n_sample_weights, const float *x_meta, const int64_t *meta_shape,
                          int32_t meta_rank, const int64_t *meta_labels, int64_t n_meta_labels,
                          mw_step_result *out, float *weights_out, int64_t weights_count,
                          float *class_weights_out, int64_t class_weights_count);
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
/* Checkpoints: atomic write (a later save to the path removes temporaries left by a killed save);
 * load reads only regular files (a FIFO, device, directory or /proc file is MW_E_IO naming the
 * path, without blocking), no more than the file's size, and checks format, checksum,
 * architecture and values (finite, Adam second moments >= 0, step counters in 0..2^53);
 * nothing changes when it fails. */
mw_status mw_trainer_save(mw_trainer tr, const char *path);
mw_status mw_trainer_load(mw_trainer tr, const char *path);

/* ---- weighting methods ------------------------------------------------------------------ */

/*
 * Selects the trainer's weighting method from a spec "name(key=value, ...)"; resets the method's
 * state (weight net, its optimizer). seed seeds V's initialisation and random baselines.
 * Methods: erm l2rw mwnet gdw focal class_balanced inverse_frequency hard_mining random_gaussian
 * self_paced bootstrap_soft bootstrap_hard. Their settings (names, types, ranges, defaults from
 * ALGORITHMS.md, docs) are declared once, in the core's table: read them with
 * mw_settings_table("methods"); e.g. gdw(eta=100, clip=0.2, clamp=1e-6x1e6). A value "none"
 * selects a setting's automatic value where the table allows it (e.g. virtual_lr=none: the
 * classifier's current learning rate).
 */
mw_status mw_trainer_set_method(mw_trainer tr, const char *spec, uint64_t seed);
/* The current method's name into buf (needed length in *length). */
mw_status mw_trainer_method(mw_trainer tr, char *buf, int64_t capacity, int64_t *length);
/* MW-Net/GDW: V(loss) for n losses (the learned loss -> weight function). */
mw_status mw_trainer_weight_function(mw_trainer tr, const float *losses, int64_t n, float *out);
/*
 * MW-Net/GDW: the weighting net V's parameters Θ, 3h+1 floats laid out as
 * [W1 (h), b1 (h), W2 (h), b2 (1)] for V(l) = sigmoid(W2 relu(W1 l + b1) + b2): in PyTorch's
 * names for the official VNet, linear1.weight (h x 1), linear1.bias (h), linear2.weight (1 x h),
 * linear2.bias (1), in that order. Any other method is MW_E_STATE naming the call and the method.
 * get: *hidden (may be NULL) receives h; out may be NULL, else count must be 3h+1 (MW_E_SHAPE).
 * set: params (count floats) is copied into core memory first, then checked: count must be 3h+1
 * (MW_E_SHAPE) and every value finite (MW_E_NONFINITE naming the entry); nothing changes on
 * failure. Only Θ changes: V's optimizer state (Adam moments or momentum buffer, step count) is
 * kept, as loading a module's state in PyTorch keeps its optimizer's. Θ is part of checkpoints.
 */
mw_status mw_trainer_weight_net_get(mw_trainer tr, int64_t *hidden, float *out, int64_t count);
mw_status mw_trainer_weight_net_set(mw_trainer tr, const float *params, int64_t count);
/*
 * Opt-in raw step diagnostics: what a step of L2RW, MW-Net or GDW computes before its weights.
 * set_step_diagnostics(on != 0): every later step of the trainer's method keeps its raw arrays
 * until turned off (off by default; off, a step copies nothing extra, and a step takes
 * bit-identical values either way). The setting belongs to the method: mw_trainer_set_method and
 * a new trainer start with it off, and it is not part of checkpoints. Other methods: a no-op.
 * step_diagnostics(name): the last step's raw array `name`, row-major, copied into out (NULL, or
 * exactly *length floats, else MW_E_SHAPE); *length (may be NULL) receives its float count and
 * *rows (may be NULL) its rows n (the batch size):
 *   l2rw:  "u"            the scores u_i = <grad L_meta, grad l_i> (n), negative ones included,
 *                         before max(u, 0) and the normalisation;
 *   mwnet: "v_before"     V(l_i) before V's update (n);
 *          "v_after"      V(l_i) after it, the step's weights (n);
 *   gdw:   "g"            g = dL_meta/d(omega) (n x classes);
 *          "omega"        omega before the second stage, after the first zero-mean constraint
 *                         (n x classes);
 *          "omega_prime"  omega', the class-level weights used (n x classes).
 * A name the method does not have is MW_E_ARGUMENT (naming the method's names); MW_E_STATE when
 * the last step was not recorded (diagnostics off, no step yet, or the step failed).
 */
mw_status mw_trainer_set_step_diagnostics(mw_trainer tr, int32_t on);
mw_status mw_trainer_step_diagnostics(mw_trainer tr, const char *name, float *out, int64_t count,
                                      int64_t *length, int64_t *rows);

/* ---- data-parallel steps ----------------------------------------------------------------- */

/*
 * Exact synchronous data parallelism: K trainers (one per worker, same network, optimizer, method
 * and seed) each step on a shard of the train batch and of the meta batch; at every sync point of
 * a step the core calls the trainer's all-reduce callback, which must replace buffer[0..count) by
 * its sum over all K workers, identical bit for bit on every worker, and return 0 (nonzero: the
 * step fails with MW_E_STATE naming the sync point and, when the callback set one with
 * mw_set_last_error, its message; parameters, optimizer state, running statistics, generators
 * and V are then unchanged). Every worker reaches the same points in the same order; the callback
 * runs on the thread of the step call, inside it. Sync points, in the order a step reaches them:
 *   MW_SYNC_COUNTS               [n, m] -> [N, M], the global batch sizes (every step, first)
 *   MW_SYNC_META_GRADIENT        v = grad L_meta (sum over the global meta batch / M)   l2rw mwnet gdw
 *   MW_SYNC_L2RW_NORMALIZER      sum_i max(u_i, 0)                                      l2rw
 *   MW_SYNC_WEIGHT_SUMS          [sum v_i, sum v_i l_i] (normalised weights)            mwnet
 *   MW_SYNC_VIRTUAL_GRADIENT     the virtual step's weighted gradient                   mwnet gdw
 *   MW_SYNC_CHAIN_SUMS           sums of the chain to V's outputs (normalised weights)  mwnet
 *   MW_SYNC_GRADIENT_NORM        ||g||_1 of GDW's second stage                          gdw
 *   MW_SYNC_WEIGHT_NET_GRADIENT  V's gradient (3h+1)                                    mwnet gdw
 *   MW_SYNC_GRADIENT             the real step's gradient (parameter count)             all
 *   MW_SYNC_METRICS              [sum loss, sum correct, sum meta loss]                 all
 * The per-example losses, JVPs and weights stay local; the step's loss, accuracy and meta loss
 * are the global means; weights_out holds the worker's own examples' weights. Batch-norm
 * statistics are per worker by default (as in PyTorch's DDP), so the K-worker step equals the
 * single step on the concatenated batch only for networks without batch norm; with
 * mw_trainer_set_batch_norm_sync(tr, 1) every batch-norm layer in a training mode also sums its
 * per-channel statistics (MW_SYNC_BATCH_NORM_STATISTICS: [sum x..., count], then
 * [sum (x - mean)^2...]), backward sums (MW_SYNC_BATCH_NORM_GRADIENT: [sum dy..., sum dy*xhat...])
 * and tangent sums (MW_SYNC_BATCH_NORM_TANGENT), so the step equals the concatenated one for
 * networks with batch norm too (running statistics from the global batch, identical on every
 * worker).
 * set_allreduce: callback NULL detaches it (a single-process trainer again, the default). Only
 * ERM and l2rw, mwnet, gdw are exact data-parallel: another method, or an attached LAW strategy,
 * is MW_E_STATE here and in the step. The context pointer is passed back unchanged; the caller
 * keeps it valid while it is set.
 */
#define MW_SYNC_COUNTS 0
#define MW_SYNC_VIRTUAL_GRADIENT 1
#define MW_SYNC_META_GRADIENT 2
#define MW_SYNC_L2RW_NORMALIZER 3
#define MW_SYNC_WEIGHT_SUMS 4
#define MW_SYNC_CHAIN_SUMS 5
#define MW_SYNC_GRADIENT_NORM 6
#define MW_SYNC_WEIGHT_NET_GRADIENT 7
#define MW_SYNC_GRADIENT 8
#define MW_SYNC_METRICS 9
#define MW_SYNC_BATCH_NORM_STATISTICS 10
#define MW_SYNC_BATCH_NORM_GRADIENT 11
#define MW_SYNC_BATCH_NORM_TANGENT 12
typedef int32_t (*mw_allreduce_fn)(void *context, float *buffer, int64_t count, int32_t sync_point);
mw_status mw_trainer_set_allreduce(mw_trainer tr, mw_allreduce_fn callback, void *context);
/* Synchronised batch norm in data-parallel steps (on != 0; off by default; no effect without an
 * all-reduce callback). */
mw_status mw_trainer_set_batch_norm_sync(mw_trainer tr, int32_t on);
/* The sync point's name ("counts", "virtual_gradient", "meta_gradient", "l2rw_normalizer",
 * "weight_sums", "chain_sums", "gradient_norm", "weight_net_gradient", "gradient", "metrics",
 * "batch_norm_statistics", "batch_norm_gradient", "batch_norm_tangent");
 * "" for an unknown value. Static storage. */
const char *mw_sync_point_name(int32_t sync_point);

/* ---- LAW: learning to auto weight (Li et al. 2020) -------------------------------------- */

typedef uint64_t mw_law;      /* a LAW search: shared strategy model, replay buffer, episodes */
typedef uint64_t mw_strategy; /* a learned LAW strategy (actor + stage embedding + settings)  */

/* Columns of mw_law_episode_log's [stages x MW_LAW_LOG_COLUMNS] table (NaN = stage not run):
 * reward, target_acc, reference_acc (validation accuracy at the stage end), loss_gap (mean
 * train-batch loss target - reference), weight_corrupted, weight_clean, weight_mean (mean K over
 * the stage; NaN without a corrupted mask), target_loss, reference_loss, state_loss, state_acc
 * (the state's smoothed loss / accuracy at the stage start). */
#define MW_LAW_LOG_COLUMNS 11

typedef struct {
  int64_t round;           /* episode round; its episodes are round*parallel .. +parallel-1 */
  int32_t stage;           /* stage just run (0-based) */
  int32_t round_done;      /* 1 when this stage ended the round */
  int32_t warmup;          /* 1 for a warm-up stage (K = 1, no transition, no FDU) */
  int32_t parallel;        /* N_a */
  double reward;           /* means over the N_a episodes: */
  double target_acc;
  double reference_acc;
  double loss_gap;
  double weight_corrupted; /* NaN without a corrupted mask */
  double weight_clean;
  double noise_sigma;      /* exploration noise sigma used (0 in warm-up) */
  double critic_loss;      /* mean critic loss over the FDU's last epoch (NaN: no update) */
  double actor_q;          /* mean Q(s, mu(s)) over the FDU's last epoch (NaN: no update) */
  int64_t fdu_updates;     /* FDU minibatch updates = fdu_epochs * ceil(buffer / fdu_batch) */
  int64_t buffer_size;     /* transitions in the replay buffer */
  double seconds;          /* wall time of the call */
  double fdu_seconds;      /* of which the FDU took */
} mw_law_stage_log;

/*
 * Creates a search. config_spec: "law(key=value, ...)" or just "key=value, ..." (empty = defaults);
 * the keys, types, ranges and defaults are the core's table, mw_settings_table("law")
 * (Sources/MetaweightLAW/README.md explains each.) network_spec / input_shape: the
 * classifier, as mw_network_create.
 */
mw_status mw_law_create(const char *config_spec, const char *network_spec, const int64_t *input_shape,
                        int32_t input_rank, uint64_t seed, mw_law *out);
mw_status mw_law_free(mw_law law);
/* Sizes and progress: stages, N_a, classes, action size (F + 1), rounds completed, next stage,
 * transitions in the buffer. Any pointer may be NULL. */
mw_status mw_law_info(mw_law law, int64_t *stages, int64_t *parallel, int64_t *classes,
                      int64_t *action_dim, int64_t *rounds_done, int64_t *next_stage, int64_t *buffer_size);
/* The configuration in effect as a spec string (needed length in *length). */
mw_status mw_law_config(mw_law law, char *buf, int64_t capacity, int64_t *length);
/*
 * Training data (x [N, ...], y N labels, corrupted NULL or N bytes 0/1 used only for the logs)
 * and validation data (the DNR reward's accuracy), copied in. Discards a round in progress.
 */
mw_status mw_law_set_data(mw_law law, const float *x, const int64_t *x_shape, int32_t x_rank,
                          const int64_t *y, int64_t n_y, const uint8_t *corrupted, int64_t n_corrupted,
                          const float *x_val, const int64_t *val_shape, int32_t val_rank,
                          const int64_t *y_val, int64_t n_val);
/*
 * Runs one stage of all N_a parallel episodes of the current round (one thread each; while
 * N_a > 1 the process-wide kernel/BLAS thread count is 1, restored afterwards), stores their
 * transitions and runs the FDU. A new
 * round starts automatically after the last stage. A diverging classifier fails the call with
 * MW_E_NONFINITE and abandons the round. When mw_law_cancel(law, 1) is called from another thread
 * during the call, every episode stops before its next optimizer step and the call fails with
 * MW_E_INTERRUPTED; the stage's progress is kept, and the next call (after mw_law_cancel(law, 0))
 * continues it, bit-identically to an uninterrupted run.
 */
mw_status mw_law_run_stage(mw_law law, mw_law_stage_log *out);
/* Requests (on != 0) or clears (on == 0) cancellation of the search's running or next stage.
 * Thread-safe: meant to be called while another thread is inside mw_law_run_stage. */
mw_status mw_law_cancel(mw_law law, int32_t on);
/* Saves the whole search state (strategy model, critic, optimizers, replay buffer, generators,
 * counters and, mid-round, every episode's classifiers and progress; not the data): atomic,
 * versioned, checksummed. */
mw_status mw_law_save(mw_law law, const char *path);
/* Restores a mw_law_save file into a search with the same configuration, network spec, input
 * shape and seed (MW_E_IO naming the mismatch otherwise). A round in progress continues after
 * mw_law_set_data with the same data. */
mw_status mw_law_load(mw_law law, const char *path);
/* Episode `slot` (0..N_a-1) of the current or last completed round: its global index and round,
 * and its [stages x MW_LAW_LOG_COLUMNS] log (count must equal stages*MW_LAW_LOG_COLUMNS). */
mw_status mw_law_episode_log(mw_law law, int32_t slot, int64_t *episode, int64_t *round, int64_t *stages_done,
                             double *out, int64_t count);
/* Its actions [stages x action_dim] (zeros in warm-up stages). */
mw_status mw_law_episode_actions(mw_law law, int32_t slot, float *out, int64_t count);
/* Mean weight K of every training example in every stage [stages x N] (NaN: not drawn). */
mw_status mw_law_episode_weights(mw_law law, int32_t slot, float *out, int64_t count);
/*
 * Remote episodes (e.g. Ray actors): the driver's search keeps the strategy model, the replay
 * buffer, the FDU and each episode's exploration noise; each episode runs where it lives, made by
 * a search with the same configuration, network spec, input shape, seed and data. One round, in
 * this order (the threaded mw_law_run_stage's, so the strategy is bit-identical for the same seed
 * and N_a when each episode runs single-threaded, mw_set_threads(1), as the threads do for N_a > 1):
 *   mw_law_remote_begin_round (at stage 0: the round's global episode indices; out[N_a]);
 *   each episode: mw_law_episode_create(its search, round, slot), mw_law_episode_begin;
 *   mw_law_remote_start_round with their initial states [N_a x 3] (stage, loss_smooth, acc_smooth);
 *   every stage: mw_law_remote_actions (out [N_a x action_dim], mask[N_a]: 0 = warm-up, pass NULL;
 *   drawn once per stage), each episode's mw_law_episode_run_stage, then
 *   mw_law_remote_finish_stage with their outcomes [N_a x MW_LAW_OUTCOME_VALUES] in slot order.
 * An outcome: before (stage, loss_smooth, acc_smooth), after (same), reward, target_acc,
 * reference_acc, loss_gap, weight_corrupted, weight_clean. MW_E_STATE for a call out of order.
 * mw_law_save refuses (MW_E_STATE) while a remote round is in progress.
 */
#define MW_LAW_OUTCOME_VALUES 12
typedef uint64_t mw_law_episode; /* one LAW episode: target and reference networks, batches, log */
mw_status mw_law_remote_begin_round(mw_law law, int64_t *out, int64_t count);
mw_status mw_law_remote_start_round(mw_law law, const double *states, int64_t count);
mw_status mw_law_remote_actions(mw_law law, float *out, int64_t count, uint8_t *mask, int64_t mask_count);
mw_status mw_law_remote_finish_stage(mw_law law, const double *outcomes, int64_t count, double seconds,
                                     mw_law_stage_log *out);
/* Abandons the remote round in progress (an episode diverged): its transitions in the buffer stay. */
mw_status mw_law_remote_abandon_round(mw_law law);
/* Episode `slot` of round `round` of the search (after mw_law_set_data), seeded as the search's. */
mw_status mw_law_episode_create(mw_law law, int64_t round, int32_t slot, mw_law_episode *out);
mw_status mw_law_episode_free(mw_law_episode e);
/* Measures the untrained network: the initial state (stage 0, 1, acc) into out[3]. */
mw_status mw_law_episode_begin(mw_law_episode e, double *out, int64_t count);
/* Runs the next stage (stages run in order; MW_E_STATE otherwise) with its action (NULL in a
 * warm-up stage); its outcome into out[MW_LAW_OUTCOME_VALUES]. MW_E_NONFINITE if it diverges. */
mw_status mw_law_episode_run_stage(mw_law_episode e, int32_t stage, const float *action, int64_t count, double *out,
                                   int64_t out_count);
/* The episode's state (networks, optimizers, generators, log) as checkpoint bytes: length first
 * (out NULL), then the bytes (capacity >= length). Restore with mw_law_episode_restore (into an
 * episode of the same search settings, round and slot): the restored episode continues
 * bit-identically. */
mw_status mw_law_episode_snapshot(mw_law_episode e, uint8_t *out, int64_t capacity, int64_t *length);
mw_status mw_law_episode_restore(mw_law_episode e, const uint8_t *data, int64_t length);
mw_status mw_law_episode_info(mw_law_episode e, int64_t *episode, int64_t *round, int64_t *slot, int64_t *stages_done,
                              int64_t *examples);
/* Its log: table [stages x MW_LAW_LOG_COLUMNS], actions [stages x action_dim], example weights
 * [stages x N] (any may be NULL; counts must match). */
mw_status mw_law_episode_get_log(mw_law_episode e, double *table, int64_t table_count, float *actions,
                                 int64_t actions_count, float *weights, int64_t weights_count);
/* Saves the current strategy (deterministic actor + embedding + settings): atomic, checksummed. */
mw_status mw_law_save_strategy(mw_law law, const char *path);
/* Loads a strategy file into the search's actor (and target actor); sizes must match. */
mw_status mw_law_load_strategy(mw_law law, const char *path);
/* A snapshot of the current strategy as a new strategy handle. */
mw_status mw_law_strategy(mw_law law, mw_strategy *out);

mw_status mw_strategy_load(const char *path, mw_strategy *out);
mw_status mw_strategy_save(mw_strategy s, const char *path);
mw_status mw_strategy_free(mw_strategy s);
/* stages, classes, action_dim, warmup_stages, label_encoding (0 one-hot, 1 scalar), density (0
 * cosine, 1 dot); any pointer may be NULL. */
mw_status mw_strategy_info(mw_strategy s, int64_t *stages, int64_t *classes, int64_t *action_dim,
                           int64_t *warmup_stages, int32_t *label_encoding, int32_t *density);
/* The search configuration it was learned with (needed length in *length). */
mw_status mw_strategy_config(mw_strategy s, char *buf, int64_t capacity, int64_t *length);
/* theta_T = mu(s_T) for the state (stage, smoothed ln C-normalised loss, smoothed accuracy). */
mw_status mw_strategy_action(mw_strategy s, int32_t stage, float loss_smooth, float acc_smooth, float *out,
                             int64_t count);
/* Weights K (1 in warm-up stages) of a batch from its logits [n x classes] and labels. */
mw_status mw_strategy_weights(mw_strategy s, int32_t stage, float loss_smooth, float acc_smooth,
                              const float *logits, int64_t n, int64_t classes, const int64_t *labels,
                              float *out);
/*
 * Makes mw_trainer_step (without sample_weights) weight every batch with the strategy: the run
 * of total_steps steps is split into the strategy's stages; the state uses the validation set
 * (x_val/y_val, copied; NULL: the mean training-batch accuracy instead). s = 0 removes it.
 */
mw_status mw_trainer_set_strategy(mw_trainer tr, mw_strategy s, int64_t total_steps, const float *x_val,
                                  const int64_t *val_shape, int32_t val_rank, const int64_t *y_val,
                                  int64_t n_val);
/* The strategy's current stage (-1 before the first step), state, and the weights of the last
 * step (weights_out: NULL or count floats; *n_weights receives how many there are). */
mw_status mw_trainer_strategy_state(mw_trainer tr, int32_t *stage, double *loss_smooth, double *acc_smooth,
                                    float *weights_out, int64_t count, int64_t *n_weights);

#ifdef __cplusplus
}
#endif
#endif /* METAWEIGHT_H */
