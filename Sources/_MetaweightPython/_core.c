/*
 * metaweight._core — the CPython extension over the metaweight C ABI (metaweight.h).
 *
 * Arrays cross by the buffer protocol (C-contiguous float32 features, int64 labels); the public
 * Python package converts user input to those types before it gets here. This layer checks only
 * what the buffer protocol needs (format, contiguity, writability, and lengths passed on in
 * items); values, shapes against the model and every other rule are checked once, by the core
 * (metaweight.h), whose messages name the argument. Status codes become exceptions of the
 * package's hierarchy. The GIL is released around every compute call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "metaweight.h"

static PyObject *MetaweightError, *InvalidArgumentError, *ShapeError, *LabelError, *NonFiniteError,
    *DTypeError, *ClosedError, *StateError, *CheckpointError, *BusyError, *ResourceError;

/* The exception an all-reduce hook raised in this thread's last failing step (data-parallel
 * steps): raise_status makes it the __cause__ of the step's error. */
static _Thread_local PyObject *hook_exception = NULL;

static void chain_hook_exception(void) {
  if (hook_exception == NULL) return;
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value != NULL) PyException_SetCause(value, hook_exception); /* steals the reference */
  else Py_DECREF(hook_exception);
  hook_exception = NULL;
  PyErr_Restore(type, value, tb);
}

static PyObject *raise_status(mw_status s) {
  PyObject *type = MetaweightError;
  switch (s) {
    case MW_E_ARGUMENT: type = InvalidArgumentError; break;
    case MW_E_SHAPE: type = ShapeError; break;
    case MW_E_LABEL: type = LabelError; break;
    case MW_E_NONFINITE: type = NonFiniteError; break;
    case MW_E_HANDLE: type = ClosedError; break;
    case MW_E_STATE: type = StateError; break;
    case MW_E_IO: type = CheckpointError; break;
    case MW_E_BUSY: type = BusyError; break;
    case MW_E_INTERRUPTED: type = PyExc_KeyboardInterrupt; break;
    case MW_E_RESOURCE: type = ResourceError; break;
    default: break;
  }
  const char *msg = mw_last_error();
  PyErr_SetString(type, (msg && msg[0]) ? msg : "metaweight: unknown error");
  chain_hook_exception();
  return NULL;
}

#define CHECK(call)                    \
  do {                                 \
    mw_status _s;                      \
    Py_BEGIN_ALLOW_THREADS _s = (call); \
    Py_END_ALLOW_THREADS if (_s != MW_OK) return raise_status(_s); \
  } while (0)

/* Gets a C-contiguous buffer of the given item format ('f' float32, 'q' int64). */
static int get_buffer(PyObject *obj, Py_buffer *view, char fmt, int writable, const char *name) {
  int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, view, flags) != 0) {
    PyErr_Clear();
    PyErr_Format(DTypeError, "%s: expected a C-contiguous%s %s array, got %.100s", name,
                 writable ? " writable" : "", fmt == 'f' ? "float32" : "int64", Py_TYPE(obj)->tp_name);
    return -1;
  }
  const char *f = view->format ? view->format : "B";
  if (*f == '<' || *f == '=' || *f == '@') f++;
  int ok;
  if (fmt == 'f') ok = (f[0] == 'f' && f[1] == 0 && view->itemsize == 4);
  else ok = ((f[0] == 'q' || f[0] == 'l') && f[1] == 0 && view->itemsize == 8);
  if (!ok) {
    PyErr_Format(DTypeError, "%s: expected %s items, got buffer format '%s' (itemsize %zd)", name,
                 fmt == 'f' ? "float32" : "int64", view->format ? view->format : "B", view->itemsize);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

static int shape_of_named(Py_buffer *v, int64_t *shape, int32_t *rank, const char *name) {
  if (v->ndim < 1 || v->ndim > 8) {
    PyErr_Format(ShapeError, "%s: expected a 2-d (N, D) or 4-d (N, C, H, W) array, got %d-d", name, v->ndim);
    return -1;
  }
  for (int i = 0; i < v->ndim; i++) shape[i] = (int64_t)v->shape[i];
  *rank = v->ndim;
  return 0;
}

static int shape_of(Py_buffer *v, int64_t *shape, int32_t *rank) { return shape_of_named(v, shape, rank, "x"); }

static int handle_arg(PyObject *o, uint64_t *h) {
  unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (PyErr_Occurred()) return -1;
  *h = (uint64_t)v;
  return 0;
}

/* ---- library ---- */

static PyObject *py_version(PyObject *self, PyObject *args) { return PyUnicode_FromString(mw_version()); }
static PyObject *py_blas_core(PyObject *self, PyObject *args) { return PyUnicode_FromString(mw_blas_core()); }
static PyObject *py_blas_config(PyObject *self, PyObject *args) { return PyUnicode_FromString(mw_blas_config()); }
static PyObject *py_get_threads(PyObject *self, PyObject *args) { return PyLong_FromLong(mw_get_threads()); }
static PyObject *py_calls_in_flight_peak(PyObject *self, PyObject *args) {
  int reset = 0;
  if (!PyArg_ParseTuple(args, "|p", &reset)) return NULL;
  return PyLong_FromLongLong(mw_calls_in_flight_peak(reset ? 1 : 0));
}
static PyObject *py_set_threads(PyObject *self, PyObject *args) {
  int n;
  if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
  CHECK(mw_set_threads(n));
  Py_RETURN_NONE;
}

/* ---- networks ---- */

/* Reads an input_shape tuple (1 to 8 ints) into shape; returns its rank, or -1 with an exception. */
static Py_ssize_t parse_input_shape(PyObject *shape_obj, int64_t shape[8]) {
  PyObject *seq = PySequence_Fast(shape_obj, "input_shape: expected a tuple of ints");
  if (!seq) return -1;
  Py_ssize_t rank = PySequence_Fast_GET_SIZE(seq);
  if (rank < 1 || rank > 8) {
    Py_DECREF(seq);
    PyErr_Format(ShapeError, "input_shape: expected (D,) or (C, H, W), got %zd dimensions", rank);
    return -1;
  }
  for (Py_ssize_t i = 0; i < rank; i++) {
    shape[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
    if (PyErr_Occurred()) { Py_DECREF(seq); return -1; }
  }
  Py_DECREF(seq);
  return rank;
}

static PyObject *py_network_create(PyObject *self, PyObject *args) {
  const char *spec;
  PyObject *shape_obj;
  unsigned long long seed;
  if (!PyArg_ParseTuple(args, "sOK", &spec, &shape_obj, &seed)) return NULL;
  int64_t shape[8] = {0};
  Py_ssize_t rank = parse_input_shape(shape_obj, shape);
  if (rank < 0) return NULL;
  mw_network h = 0;
  CHECK(mw_network_create(spec, shape, (int32_t)rank, (uint64_t)seed, &h));
  return PyLong_FromUnsignedLongLong(h);
}

static PyObject *py_network_free(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_network_free(h));
  Py_RETURN_NONE;
}

static PyObject *py_network_info(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0;
  CHECK(mw_network_info(h, &a, &b, &c, &d, &e));
  return Py_BuildValue("(LLLLL)", (long long)a, (long long)b, (long long)c, (long long)d, (long long)e);
}

static PyObject *py_network_input_shape(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t s[3] = {0}; int32_t r = 0;
  CHECK(mw_network_input_shape(h, s, &r));
  if (r == 1) return Py_BuildValue("(L)", (long long)s[0]);
  return Py_BuildValue("(LLL)", (long long)s[0], (long long)s[1], (long long)s[2]);
}

static PyObject *py_network_block(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; int is_state; long long index;
  if (!PyArg_ParseTuple(args, "OiL", &ho, &is_state, &index) || handle_arg(ho, &h)) return NULL;
  char name[512]; int64_t offset = 0, shape[8] = {0}; int32_t rank = 0;
  CHECK(mw_network_block(h, is_state, index, name, sizeof name, &offset, shape, &rank));
  PyObject *t = PyTuple_New(rank);
  if (!t) return NULL;
  for (int i = 0; i < rank; i++) PyTuple_SET_ITEM(t, i, PyLong_FromLongLong(shape[i]));
  return Py_BuildValue("(sLN)", name, (long long)offset, t);
}

static PyObject *py_network_get_flat(PyObject *self, PyObject *args) {
  PyObject *ho, *out; uint64_t h; int is_state;
  if (!PyArg_ParseTuple(args, "OiO", &ho, &is_state, &out) || handle_arg(ho, &h)) return NULL;
  Py_buffer v;
  if (get_buffer(out, &v, 'f', 1, "out")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_network_get_flat(h, is_state, (float *)v.buf, (int64_t)(v.len / 4));
  Py_END_ALLOW_THREADS PyBuffer_Release(&v);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_network_set_flat(PyObject *self, PyObject *args) {
  PyObject *ho, *in; uint64_t h; int is_state;
  if (!PyArg_ParseTuple(args, "OiO", &ho, &is_state, &in) || handle_arg(ho, &h)) return NULL;
  Py_buffer v;
  if (get_buffer(in, &v, 'f', 0, "values")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_network_set_flat(h, is_state, (const float *)v.buf, (int64_t)(v.len / 4));
  Py_END_ALLOW_THREADS PyBuffer_Release(&v);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

typedef mw_status (*string_getter)(uint64_t, char *, int64_t, int64_t *);

static PyObject *get_string(PyObject *args, string_getter fn) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t len = 0;
  CHECK(fn(h, NULL, 0, &len));
  char *buf = PyMem_Malloc((size_t)len + 1);
  if (!buf) return PyErr_NoMemory();
  mw_status s = fn(h, buf, len + 1, &len);
  if (s != MW_OK) { PyMem_Free(buf); return raise_status(s); }
  PyObject *r = PyUnicode_FromStringAndSize(buf, (Py_ssize_t)len);
  PyMem_Free(buf);
  return r;
}
static PyObject *py_network_summary(PyObject *self, PyObject *args) { return get_string(args, mw_network_summary); }
static PyObject *py_network_signature(PyObject *self, PyObject *args) { return get_string(args, mw_network_signature); }

static PyObject *py_network_set_conv_algorithm(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; int algorithm;
  if (!PyArg_ParseTuple(args, "Oi", &ho, &algorithm) || handle_arg(ho, &h)) return NULL;
  int64_t count = 0;
  CHECK(mw_network_set_conv_algorithm(h, algorithm, &count));
  return PyLong_FromLongLong(count);
}

static PyObject *py_network_conv_algorithms(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t count = 0;
  CHECK(mw_network_conv_algorithms(h, NULL, 0, &count));
  int32_t *buf = PyMem_Malloc(sizeof(int32_t) * (size_t)(count + 1));
  if (!buf) return PyErr_NoMemory();
  mw_status st;
  Py_BEGIN_ALLOW_THREADS st = mw_network_conv_algorithms(h, buf, count, &count);
  Py_END_ALLOW_THREADS
  if (st != MW_OK) { PyMem_Free(buf); return raise_status(st); }
  PyObject *list = PyList_New((Py_ssize_t)count);
  for (int64_t i = 0; list && i < count; i++) PyList_SET_ITEM(list, (Py_ssize_t)i, PyLong_FromLong(buf[i]));
  PyMem_Free(buf);
  return list;
}

static PyObject *py_network_activation_bytes(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; long long batch;
  if (!PyArg_ParseTuple(args, "OL", &ho, &batch) || handle_arg(ho, &h)) return NULL;
  int64_t bytes = 0;
  CHECK(mw_network_activation_bytes(h, batch, &bytes));
  return PyLong_FromLongLong(bytes);
}

/* ---- trainers ---- */

/* Converts a schedule tuple (kind, milestones, gamma, total, min_lr, warmup) into *sc; the
 * milestones go to a PyMem buffer in *ms that the caller frees (also on success). */
static int schedule_arg(PyObject *t, mw_schedule_config *sc, int64_t **ms) {
  int skind; float gamma, min_lr; long long total, warmup; PyObject *milestones;
  *ms = NULL;
  if (!PyArg_ParseTuple(t, "iOfLfL", &skind, &milestones, &gamma, &total, &min_lr, &warmup)) return -1;
  PyObject *seq = PySequence_Fast(milestones, "milestones: expected a sequence of ints");
  if (!seq) return -1;
  Py_ssize_t nm = PySequence_Fast_GET_SIZE(seq);
  *ms = PyMem_Malloc(sizeof(int64_t) * (size_t)(nm + 1));
  if (!*ms) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
  for (Py_ssize_t i = 0; i < nm; i++) {
    (*ms)[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
    if (PyErr_Occurred()) { Py_DECREF(seq); return -1; }
  }
  Py_DECREF(seq);
  mw_schedule_config c = {skind, *ms, (int32_t)nm, gamma, total, min_lr, warmup};
  *sc = c;
  return 0;
}

static PyObject *py_trainer_create(PyObject *self, PyObject *args) {
  PyObject *ho, *so; uint64_t h; unsigned long long seed;
  mw_optimizer_config o; memset(&o, 0, sizeof o);
  int kind, nesterov, decoupled;
  if (!PyArg_ParseTuple(args, "O(iffififff)OK", &ho, &kind, &o.lr, &o.momentum, &nesterov,
                        &o.weight_decay, &decoupled, &o.beta1, &o.beta2, &o.eps, &so, &seed) ||
      handle_arg(ho, &h))
    return NULL;
  o.kind = kind; o.nesterov = nesterov; o.decoupled = decoupled;
  mw_schedule_config sc; int64_t *ms;
  if (schedule_arg(so, &sc, &ms)) { PyMem_Free(ms); return NULL; }
  mw_trainer t = 0;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_create(h, &o, &sc, (uint64_t)seed, &t);
  Py_END_ALLOW_THREADS PyMem_Free(ms);
  if (s != MW_OK) return raise_status(s);
  return PyLong_FromUnsignedLongLong(t);
}

static PyObject *py_trainer_set_schedule(PyObject *self, PyObject *args) {
  PyObject *ho, *so; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &so) || handle_arg(ho, &h)) return NULL;
  mw_schedule_config sc; int64_t *ms;
  if (schedule_arg(so, &sc, &ms)) { PyMem_Free(ms); return NULL; }
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_set_schedule(h, &sc);
  Py_END_ALLOW_THREADS PyMem_Free(ms);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* handle -> the Python all-reduce hook set on it (keeps the callable alive while the core
 * holds it as the callback's context). */
static PyObject *allreduce_hooks = NULL;

static PyObject *py_trainer_free(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_trainer_free(h));
  if (allreduce_hooks != NULL && PyDict_Contains(allreduce_hooks, ho) == 1) PyDict_DelItem(allreduce_hooks, ho);
  PyErr_Clear();
  Py_RETURN_NONE;
}

/* The C all-reduce callback of a Python hook: with the GIL, calls hook(values, sync_point_name)
 * on a writable float32 memoryview of a copy of the buffer and copies the copy back. A Python
 * exception fails the step (MW_E_STATE naming the sync point and the exception) and becomes the
 * __cause__ of the step's error. */
static int32_t allreduce_trampoline(void *context, float *buffer, int64_t count, int32_t point) {
  PyGILState_STATE g = PyGILState_Ensure();
  int32_t rc = 1;
  Py_CLEAR(hook_exception);
  PyObject *bytes = PyByteArray_FromStringAndSize((const char *)buffer, (Py_ssize_t)(count * 4));
  PyObject *raw = bytes ? PyMemoryView_FromObject(bytes) : NULL;
  PyObject *values = raw ? PyObject_CallMethod(raw, "cast", "s", "f") : NULL;
  PyObject *r = values ? PyObject_CallFunction((PyObject *)context, "Os", values, mw_sync_point_name(point)) : NULL;
  if (r != NULL) {
    PyObject *rel = PyObject_CallMethod(values, "release", NULL);
    if (rel == NULL) PyErr_Clear(); /* the hook kept an export of the copy: harmless */
    Py_XDECREF(rel);
    if (PyByteArray_GET_SIZE(bytes) == (Py_ssize_t)(count * 4)) {
      memcpy(buffer, PyByteArray_AS_STRING(bytes), (size_t)(count * 4));
      rc = 0;
    } else {
      PyErr_SetString(StateError, "the all-reduce hook resized its buffer");
    }
  }
  if (rc != 0) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) PyException_SetTraceback(value, tb);
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *t = text ? PyUnicode_AsUTF8(text) : NULL;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %s", type ? ((PyTypeObject *)type)->tp_name : "error", t ? t : "?");
    PyErr_Clear();
    mw_set_last_error(msg);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    hook_exception = value; /* owned; chained by raise_status */
  }
  Py_XDECREF(r);
  Py_XDECREF(values);
  Py_XDECREF(raw);
  Py_XDECREF(bytes);
  PyGILState_Release(g);
  return rc;
}

static PyObject *py_trainer_set_batch_norm_sync(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; int on;
  if (!PyArg_ParseTuple(args, "Op", &ho, &on) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_trainer_set_batch_norm_sync(h, on));
  Py_RETURN_NONE;
}

static PyObject *py_trainer_set_allreduce(PyObject *self, PyObject *args) {
  PyObject *ho, *hook; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &hook) || handle_arg(ho, &h)) return NULL;
  if (hook != Py_None && !PyCallable_Check(hook)) {
    PyErr_Format(InvalidArgumentError, "hook: expected a callable hook(values, sync_point) or None, got %.100s",
                 Py_TYPE(hook)->tp_name);
    return NULL;
  }
  if (allreduce_hooks == NULL && (allreduce_hooks = PyDict_New()) == NULL) return NULL;
  mw_status s;
  if (hook == Py_None) {
    Py_BEGIN_ALLOW_THREADS s = mw_trainer_set_allreduce(h, NULL, NULL);
    Py_END_ALLOW_THREADS if (s != MW_OK) return raise_status(s);
    if (PyDict_Contains(allreduce_hooks, ho) == 1 && PyDict_DelItem(allreduce_hooks, ho) < 0) return NULL;
    Py_RETURN_NONE;
  }
  /* The previous hook (if any) stays referenced until the core holds the new one. */
  PyObject *previous = PyDict_GetItem(allreduce_hooks, ho);
  Py_XINCREF(previous);
  if (PyDict_SetItem(allreduce_hooks, ho, hook) < 0) { Py_XDECREF(previous); return NULL; }
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_set_allreduce(h, allreduce_trampoline, (void *)hook);
  Py_END_ALLOW_THREADS
  if (s != MW_OK) {
    if (previous != NULL) PyDict_SetItem(allreduce_hooks, ho, previous);
    else PyDict_DelItem(allreduce_hooks, ho);
    Py_XDECREF(previous);
    return raise_status(s);
  }
  Py_XDECREF(previous);
  Py_RETURN_NONE;
}

static PyObject *py_trainer_set_augmentation(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; int pad, flip;
  if (!PyArg_ParseTuple(args, "Oii", &ho, &pad, &flip) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_trainer_set_augmentation(h, pad, flip));
  Py_RETURN_NONE;
}

static PyObject *py_trainer_predict(PyObject *self, PyObject *args) {
  PyObject *ho, *xo, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OOO", &ho, &xo, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer x, o;
  if (get_buffer(xo, &x, 'f', 0, "x")) return NULL;
  if (get_buffer(oo, &o, 'f', 1, "out")) { PyBuffer_Release(&x); return NULL; }
  int64_t shape[8]; int32_t rank; mw_status s = MW_OK;
  if (shape_of(&x, shape, &rank)) s = -1;
  else {
    Py_BEGIN_ALLOW_THREADS s = mw_trainer_predict(h, (const float *)x.buf, shape, rank, (float *)o.buf, (int64_t)(o.len / 4));
    Py_END_ALLOW_THREADS
  }
  PyBuffer_Release(&x); PyBuffer_Release(&o);
  if (s == -1) return NULL;
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_trainer_losses(PyObject *self, PyObject *args) {
  PyObject *ho, *xo, *yo, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OOOO", &ho, &xo, &yo, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer x, y, o;
  if (get_buffer(xo, &x, 'f', 0, "x")) return NULL;
  if (get_buffer(yo, &y, 'q', 0, "y")) { PyBuffer_Release(&x); return NULL; }
  if (get_buffer(oo, &o, 'f', 1, "out")) { PyBuffer_Release(&x); PyBuffer_Release(&y); return NULL; }
  int64_t shape[8]; int32_t rank; mw_status s = MW_OK;
  if (shape_of(&x, shape, &rank)) s = -1;
  else if (o.len / 4 != y.len / 8) {
    PyErr_Format(ShapeError, "out: expected %zd floats, got %zd", y.len / 8, o.len / 4);
    s = -1;
  } else {
    Py_BEGIN_ALLOW_THREADS s = mw_trainer_losses(h, (const float *)x.buf, shape, rank, (const int64_t *)y.buf,
                                                 (int64_t)(y.len / 8), (float *)o.buf);
    Py_END_ALLOW_THREADS
  }
  PyBuffer_Release(&x); PyBuffer_Release(&y); PyBuffer_Release(&o);
  if (s == -1) return NULL;
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_trainer_permutation(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o;
  if (get_buffer(oo, &o, 'q', 1, "out")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_permutation(h, (int64_t)(o.len / 8), (int64_t *)o.buf);
  Py_END_ALLOW_THREADS PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_trainer_state(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t steps = 0; double lr = 0;
  CHECK(mw_trainer_state(h, &steps, &lr));
  return Py_BuildValue("(Ld)", (long long)steps, lr);
}

static PyObject *py_trainer_network(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  mw_network n = 0;
  CHECK(mw_trainer_network(h, &n));
  return PyLong_FromUnsignedLongLong(n);
}

static PyObject *py_trainer_save(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; PyObject *path;
  if (!PyArg_ParseTuple(args, "OO&", &ho, PyUnicode_FSConverter, &path) || handle_arg(ho, &h)) return NULL;
  mw_status s;
  const char *p = PyBytes_AS_STRING(path);
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_save(h, p);
  Py_END_ALLOW_THREADS Py_DECREF(path);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_trainer_load(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; PyObject *path;
  if (!PyArg_ParseTuple(args, "OO&", &ho, PyUnicode_FSConverter, &path) || handle_arg(ho, &h)) return NULL;
  mw_status s;
  const char *p = PyBytes_AS_STRING(path);
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_load(h, p);
  Py_END_ALLOW_THREADS Py_DECREF(path);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* ---- weighting methods ---- */

static PyObject *py_trainer_set_method(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; const char *spec; unsigned long long seed;
  if (!PyArg_ParseTuple(args, "OsK", &ho, &spec, &seed) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_trainer_set_method(h, spec, (uint64_t)seed));
  Py_RETURN_NONE;
}

static PyObject *py_trainer_method(PyObject *self, PyObject *args) { return get_string(args, mw_trainer_method); }

/* trainer_step(h, x, y, sample_weights|None, x_meta=None, y_meta=None, weights_out=None,
 * class_weights_out=None) -> (loss, acc, lr, step, meta_loss, diagnostics): the one step entry
 * (mw_trainer_step). Only buffers are handled here (format, contiguity, lengths in items); every
 * value, length and method rule is checked by the core. */
static PyObject *py_trainer_step(PyObject *self, PyObject *args) {
  PyObject *ho, *xo, *yo, *swo, *xmo = Py_None, *ymo = Py_None, *wo = Py_None, *cwo = Py_None; uint64_t h;
  if (!PyArg_ParseTuple(args, "OOOO|OOOO", &ho, &xo, &yo, &swo, &xmo, &ymo, &wo, &cwo) || handle_arg(ho, &h))
    return NULL;
  Py_buffer x, y, sw, xm, ym, w, cw;
  int has_sw = (swo != Py_None), has_xm = (xmo != Py_None), has_ym = (ymo != Py_None), has_w = (wo != Py_None),
      has_cw = (cwo != Py_None);
  int got_x = 0, got_y = 0, got_sw = 0, got_xm = 0, got_ym = 0, got_w = 0, got_cw = 0;
  mw_status s = -1;
  int64_t shape[8], mshape[8] = {0}; int32_t rank = 0, mrank = 0;
  mw_step_result r; memset(&r, 0, sizeof r);
  if (get_buffer(xo, &x, 'f', 0, "x")) goto done;
  got_x = 1;
  if (get_buffer(yo, &y, 'q', 0, "y")) goto done;
  got_y = 1;
  if (has_sw) { if (get_buffer(swo, &sw, 'f', 0, "sample_weights")) goto done; got_sw = 1; }
  if (has_xm) { if (get_buffer(xmo, &xm, 'f', 0, "x_meta")) goto done; got_xm = 1; }
  if (has_ym) { if (get_buffer(ymo, &ym, 'q', 0, "y_meta")) goto done; got_ym = 1; }
  if (has_w) { if (get_buffer(wo, &w, 'f', 1, "weights_out")) goto done; got_w = 1; }
  if (has_cw) { if (get_buffer(cwo, &cw, 'f', 1, "class_weights_out")) goto done; got_cw = 1; }
  if (shape_of(&x, shape, &rank)) goto done;
  if (has_xm && shape_of_named(&xm, mshape, &mrank, "x_meta")) goto done;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_step(
      h, (const float *)x.buf, shape, rank, (const int64_t *)y.buf, (int64_t)(y.len / 8),
      has_sw ? (const float *)sw.buf : NULL, has_sw ? (int64_t)(sw.len / 4) : 0,
      has_xm ? (const float *)xm.buf : NULL, has_xm ? mshape : NULL, mrank,
      has_ym ? (const int64_t *)ym.buf : NULL, has_ym ? (int64_t)(ym.len / 8) : 0, &r,
      has_w ? (float *)w.buf : NULL, has_w ? (int64_t)(w.len / 4) : 0,
      has_cw ? (float *)cw.buf : NULL, has_cw ? (int64_t)(cw.len / 4) : 0);
  Py_END_ALLOW_THREADS
done:
  if (got_x) PyBuffer_Release(&x);
  if (got_y) PyBuffer_Release(&y);
  if (got_sw) PyBuffer_Release(&sw);
  if (got_xm) PyBuffer_Release(&xm);
  if (got_ym) PyBuffer_Release(&ym);
  if (got_w) PyBuffer_Release(&w);
  if (got_cw) PyBuffer_Release(&cw);
  if (s == -1) return NULL;
  if (s != MW_OK) return raise_status(s);
  return Py_BuildValue("(dddLd(dddddd))", r.loss, r.accuracy, r.lr, (long long)r.step, r.meta_loss, r.weight_ess,
                       r.saturated_low, r.saturated_high, r.prediction_majority, r.label_majority,
                       r.weight_loss_corr);
}

static PyObject *py_trainer_weight_function(PyObject *self, PyObject *args) {
  PyObject *ho, *lo, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OOO", &ho, &lo, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer l, o;
  if (get_buffer(lo, &l, 'f', 0, "losses")) return NULL;
  if (get_buffer(oo, &o, 'f', 1, "out")) { PyBuffer_Release(&l); return NULL; }
  mw_status s;
  if (o.len != l.len) {
    PyBuffer_Release(&l); PyBuffer_Release(&o);
    PyErr_SetString(ShapeError, "out: expected as many floats as losses");
    return NULL;
  }
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_weight_function(h, (const float *)l.buf, (int64_t)(l.len / 4), (float *)o.buf);
  Py_END_ALLOW_THREADS PyBuffer_Release(&l); PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* trainer_weight_net_get(h, out|None) -> hidden: V's flat parameters (3h+1 float32) into out. */
static PyObject *py_trainer_weight_net_get(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o; int has_o = (oo != Py_None);
  if (has_o && get_buffer(oo, &o, 'f', 1, "out")) return NULL;
  mw_status s; int64_t hidden = 0;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_weight_net_get(h, &hidden, has_o ? (float *)o.buf : NULL,
                                                       has_o ? (int64_t)(o.len / 4) : 0);
  Py_END_ALLOW_THREADS if (has_o) PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  return PyLong_FromLongLong((long long)hidden);
}

/* trainer_weight_net_set(h, params): V's flat parameters (3h+1 float32; copied, then checked). */
static PyObject *py_trainer_weight_net_set(PyObject *self, PyObject *args) {
  PyObject *ho, *po; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &po) || handle_arg(ho, &h)) return NULL;
  Py_buffer p;
  if (get_buffer(po, &p, 'f', 0, "params")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_weight_net_set(h, (const float *)p.buf, (int64_t)(p.len / 4));
  Py_END_ALLOW_THREADS PyBuffer_Release(&p);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* trainer_set_step_diagnostics(h, on): keep the method's raw step arrays from the next step on. */
static PyObject *py_trainer_set_step_diagnostics(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; int on;
  if (!PyArg_ParseTuple(args, "Op", &ho, &on) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_trainer_set_step_diagnostics(h, (int32_t)on));
  Py_RETURN_NONE;
}

/* trainer_step_diagnostics(h, name, out|None) -> (length, rows): the last step's raw array. */
static PyObject *py_trainer_step_diagnostics(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h; const char *name;
  if (!PyArg_ParseTuple(args, "OsO", &ho, &name, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o; int has_o = (oo != Py_None);
  if (has_o && get_buffer(oo, &o, 'f', 1, "out")) return NULL;
  mw_status s; int64_t length = 0, rows = 0;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_step_diagnostics(h, name, has_o ? (float *)o.buf : NULL,
                                                         has_o ? (int64_t)(o.len / 4) : 0, &length, &rows);
  Py_END_ALLOW_THREADS if (has_o) PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  return Py_BuildValue("(LL)", (long long)length, (long long)rows);
}

/* ---- LAW: searches and strategies ---- */

/* A C-contiguous buffer with items of format `fmt` ('d' float64, 'B' uint8/bool) and size `itemsize`. */
static int law_buffer(PyObject *obj, Py_buffer *view, char fmt, Py_ssize_t itemsize, int writable, const char *name,
                      const char *what) {
  int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, view, flags) != 0) {
    PyErr_Clear();
    PyErr_Format(DTypeError, "%s: expected a C-contiguous%s %s array, got %.100s", name, writable ? " writable" : "",
                 what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  const char *f = view->format ? view->format : "B";
  if (*f == '<' || *f == '=' || *f == '@' || *f == '|') f++;
  int ok = view->itemsize == itemsize && f[1] == 0 && (f[0] == fmt || (fmt == 'B' && f[0] == '?'));
  if (!ok) {
    PyErr_Format(DTypeError, "%s: expected %s items, got buffer format '%s' (itemsize %zd)", name, what,
                 view->format ? view->format : "B", view->itemsize);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

static PyObject *py_law_create(PyObject *self, PyObject *args) {
  const char *config, *spec;
  PyObject *shape_obj;
  unsigned long long seed;
  if (!PyArg_ParseTuple(args, "ssOK", &config, &spec, &shape_obj, &seed)) return NULL;
  int64_t shape[8] = {0};
  Py_ssize_t rank = parse_input_shape(shape_obj, shape);
  if (rank < 0) return NULL;
  mw_law h = 0;
  CHECK(mw_law_create(config, spec, shape, (int32_t)rank, (uint64_t)seed, &h));
  return PyLong_FromUnsignedLongLong(h);
}

static PyObject *py_law_free(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_law_free(h));
  Py_RETURN_NONE;
}

static PyObject *py_law_info(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0, f = 0, g = 0;
  CHECK(mw_law_info(h, &a, &b, &c, &d, &e, &f, &g));
  return Py_BuildValue("(LLLLLLL)", (long long)a, (long long)b, (long long)c, (long long)d, (long long)e,
                       (long long)f, (long long)g);
}

static PyObject *py_law_config(PyObject *self, PyObject *args) { return get_string(args, mw_law_config); }

static PyObject *py_law_set_data(PyObject *self, PyObject *args) {
  PyObject *ho, *xo, *yo, *co, *xvo, *yvo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OOOOOO", &ho, &xo, &yo, &co, &xvo, &yvo) || handle_arg(ho, &h)) return NULL;
  Py_buffer x, y, c, xv, yv;
  int got_x = 0, got_y = 0, got_c = 0, got_xv = 0, got_yv = 0, has_c = (co != Py_None);
  mw_status s = -1;
  int64_t shape[8], vshape[8]; int32_t rank = 0, vrank = 0;
  if (get_buffer(xo, &x, 'f', 0, "x")) goto done;
  got_x = 1;
  if (get_buffer(yo, &y, 'q', 0, "y")) goto done;
  got_y = 1;
  if (has_c) { if (law_buffer(co, &c, 'B', 1, 0, "corrupted", "bool/uint8")) goto done; got_c = 1; }
  if (get_buffer(xvo, &xv, 'f', 0, "x_val")) goto done;
  got_xv = 1;
  if (get_buffer(yvo, &yv, 'q', 0, "y_val")) goto done;
  got_yv = 1;
  if (shape_of(&x, shape, &rank) || shape_of(&xv, vshape, &vrank)) goto done;
  Py_BEGIN_ALLOW_THREADS s = mw_law_set_data(
      h, (const float *)x.buf, shape, rank, (const int64_t *)y.buf, (int64_t)(y.len / 8),
      has_c ? (const uint8_t *)c.buf : NULL, has_c ? (int64_t)c.len : 0, (const float *)xv.buf, vshape, vrank,
      (const int64_t *)yv.buf, (int64_t)(yv.len / 8));
  Py_END_ALLOW_THREADS
done:
  if (got_x) PyBuffer_Release(&x);
  if (got_y) PyBuffer_Release(&y);
  if (got_c) PyBuffer_Release(&c);
  if (got_xv) PyBuffer_Release(&xv);
  if (got_yv) PyBuffer_Release(&yv);
  if (s == -1) return NULL;
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *law_stage_log_dict(const mw_law_stage_log *lp);

static PyObject *py_law_run_stage(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  mw_law_stage_log l; memset(&l, 0, sizeof l);
  CHECK(mw_law_run_stage(h, &l));
  return law_stage_log_dict(&l);
}

static PyObject *law_stage_log_dict(const mw_law_stage_log *lp) {
  mw_law_stage_log l = *lp;
  return Py_BuildValue(
      "{s:L,s:i,s:O,s:O,s:i,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:L,s:L,s:d,s:d}", "round", (long long)l.round, "stage",
      (int)l.stage, "round_done", l.round_done ? Py_True : Py_False, "warmup", l.warmup ? Py_True : Py_False,
      "parallel", (int)l.parallel, "reward", l.reward, "target_acc", l.target_acc, "reference_acc", l.reference_acc,
      "loss_gap", l.loss_gap, "weight_corrupted", l.weight_corrupted, "weight_clean", l.weight_clean, "noise_sigma",
      l.noise_sigma, "critic_loss", l.critic_loss, "actor_q", l.actor_q, "fdu_updates", (long long)l.fdu_updates,
      "buffer_size", (long long)l.buffer_size, "seconds", l.seconds, "fdu_seconds", l.fdu_seconds);
}

/* ---- LAW: remote episodes (the driver's calls, then an episode's) ---- */

/* law_remote_begin_round(h, out int64[N_a]): the round's global episode indices. */
static PyObject *py_law_remote_begin_round(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o;
  if (get_buffer(oo, &o, 'q', 1, "out")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_remote_begin_round(h, (int64_t *)o.buf, (int64_t)(o.len / 8));
  Py_END_ALLOW_THREADS PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* law_remote_start_round(h, states float64[N_a*3]). */
static PyObject *py_law_remote_start_round(PyObject *self, PyObject *args) {
  PyObject *ho, *so; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &so) || handle_arg(ho, &h)) return NULL;
  Py_buffer b;
  if (law_buffer(so, &b, 'd', 8, 0, "states", "float64")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_remote_start_round(h, (const double *)b.buf, (int64_t)(b.len / 8));
  Py_END_ALLOW_THREADS PyBuffer_Release(&b);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* law_remote_actions(h, out float32[N_a*A], mask uint8[N_a]). */
static PyObject *py_law_remote_actions(PyObject *self, PyObject *args) {
  PyObject *ho, *oo, *mo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OOO", &ho, &oo, &mo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o, m;
  if (get_buffer(oo, &o, 'f', 1, "out")) return NULL;
  if (law_buffer(mo, &m, 'B', 1, 1, "mask", "uint8")) { PyBuffer_Release(&o); return NULL; }
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_remote_actions(h, (float *)o.buf, (int64_t)(o.len / 4), (uint8_t *)m.buf,
                                                   (int64_t)m.len);
  Py_END_ALLOW_THREADS PyBuffer_Release(&o); PyBuffer_Release(&m);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* law_remote_finish_stage(h, outcomes float64[N_a*12], seconds) -> stage log dict. */
static PyObject *py_law_remote_finish_stage(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h; double seconds;
  if (!PyArg_ParseTuple(args, "OOd", &ho, &oo, &seconds) || handle_arg(ho, &h)) return NULL;
  Py_buffer b;
  if (law_buffer(oo, &b, 'd', 8, 0, "outcomes", "float64")) return NULL;
  mw_law_stage_log l; memset(&l, 0, sizeof l);
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_remote_finish_stage(h, (const double *)b.buf, (int64_t)(b.len / 8), seconds, &l);
  Py_END_ALLOW_THREADS PyBuffer_Release(&b);
  if (s != MW_OK) return raise_status(s);
  return law_stage_log_dict(&l);
}

static PyObject *py_law_remote_abandon_round(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_law_remote_abandon_round(h));
  Py_RETURN_NONE;
}

/* law_episode_create(h, round, slot) -> episode handle. */
static PyObject *py_law_episode_create(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; long long round; int slot;
  if (!PyArg_ParseTuple(args, "OLi", &ho, &round, &slot) || handle_arg(ho, &h)) return NULL;
  mw_law_episode e = 0;
  CHECK(mw_law_episode_create(h, (int64_t)round, (int32_t)slot, &e));
  return PyLong_FromUnsignedLongLong(e);
}

static PyObject *py_law_episode_free(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_law_episode_free(h));
  Py_RETURN_NONE;
}

/* law_episode_begin(e, out float64[3]). */
static PyObject *py_law_episode_begin(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o;
  if (law_buffer(oo, &o, 'd', 8, 1, "out", "float64")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_episode_begin(h, (double *)o.buf, (int64_t)(o.len / 8));
  Py_END_ALLOW_THREADS PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* law_episode_run_stage(e, stage, action float32|None, out float64[12]). */
static PyObject *py_law_episode_run_stage(PyObject *self, PyObject *args) {
  PyObject *ho, *ao, *oo; uint64_t h; int stage;
  if (!PyArg_ParseTuple(args, "OiOO", &ho, &stage, &ao, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer a, o; int has_a = (ao != Py_None);
  if (has_a && get_buffer(ao, &a, 'f', 0, "action")) return NULL;
  if (law_buffer(oo, &o, 'd', 8, 1, "out", "float64")) { if (has_a) PyBuffer_Release(&a); return NULL; }
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_episode_run_stage(h, (int32_t)stage, has_a ? (const float *)a.buf : NULL,
                                                      has_a ? (int64_t)(a.len / 4) : 0, (double *)o.buf,
                                                      (int64_t)(o.len / 8));
  Py_END_ALLOW_THREADS if (has_a) PyBuffer_Release(&a);
  PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* law_episode_snapshot(e) -> bytes. */
static PyObject *py_law_episode_snapshot(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t n = 0;
  CHECK(mw_law_episode_snapshot(h, NULL, 0, &n));
  PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
  if (!out) return NULL;
  int64_t n2 = 0;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_episode_snapshot(h, (uint8_t *)PyBytes_AS_STRING(out), n, &n2);
  Py_END_ALLOW_THREADS if (s != MW_OK) { Py_DECREF(out); return raise_status(s); }
  if (n2 != n) { Py_DECREF(out); PyErr_SetString(StateError, "episode snapshot: its size changed between calls"); return NULL; }
  return out;
}

/* law_episode_restore(e, bytes-like). */
static PyObject *py_law_episode_restore(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; Py_buffer b;
  if (!PyArg_ParseTuple(args, "Oy*", &ho, &b)) return NULL;
  if (handle_arg(ho, &h)) { PyBuffer_Release(&b); return NULL; }
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_episode_restore(h, (const uint8_t *)b.buf, (int64_t)b.len);
  Py_END_ALLOW_THREADS PyBuffer_Release(&b);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

/* law_episode_info(e) -> (episode, round, slot, stages_done, examples). */
static PyObject *py_law_episode_info(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0;
  CHECK(mw_law_episode_info(h, &a, &b, &c, &d, &e));
  return Py_BuildValue("(LLLLL)", (long long)a, (long long)b, (long long)c, (long long)d, (long long)e);
}

/* law_episode_get_log(e, table float64, actions float32, weights float32|None). */
static PyObject *py_law_episode_get_log(PyObject *self, PyObject *args) {
  PyObject *ho, *to, *ao, *wo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OOOO", &ho, &to, &ao, &wo) || handle_arg(ho, &h)) return NULL;
  Py_buffer t, a, w; int has_w = (wo != Py_None);
  if (law_buffer(to, &t, 'd', 8, 1, "table", "float64")) return NULL;
  if (get_buffer(ao, &a, 'f', 1, "actions")) { PyBuffer_Release(&t); return NULL; }
  if (has_w && get_buffer(wo, &w, 'f', 1, "weights")) { PyBuffer_Release(&t); PyBuffer_Release(&a); return NULL; }
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_episode_get_log(h, (double *)t.buf, (int64_t)(t.len / 8), (float *)a.buf,
                                                    (int64_t)(a.len / 4), has_w ? (float *)w.buf : NULL,
                                                    has_w ? (int64_t)(w.len / 4) : 0);
  Py_END_ALLOW_THREADS PyBuffer_Release(&t); PyBuffer_Release(&a);
  if (has_w) PyBuffer_Release(&w);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_law_episode_log(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h; int slot;
  if (!PyArg_ParseTuple(args, "OiO", &ho, &slot, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o;
  if (law_buffer(oo, &o, 'd', 8, 1, "out", "float64")) return NULL;
  int64_t ep = 0, rd = 0, done = 0;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_law_episode_log(h, (int32_t)slot, &ep, &rd, &done, (double *)o.buf, (int64_t)(o.len / 8));
  Py_END_ALLOW_THREADS PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  return Py_BuildValue("(LLL)", (long long)ep, (long long)rd, (long long)done);
}

typedef mw_status (*law_float_getter)(uint64_t, int32_t, float *, int64_t);

static PyObject *law_get_floats(PyObject *args, law_float_getter fn) {
  PyObject *ho, *oo; uint64_t h; int slot;
  if (!PyArg_ParseTuple(args, "OiO", &ho, &slot, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o;
  if (get_buffer(oo, &o, 'f', 1, "out")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = fn(h, (int32_t)slot, (float *)o.buf, (int64_t)(o.len / 4));
  Py_END_ALLOW_THREADS PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}
static PyObject *py_law_episode_actions(PyObject *self, PyObject *args) { return law_get_floats(args, mw_law_episode_actions); }
static PyObject *py_law_episode_weights(PyObject *self, PyObject *args) { return law_get_floats(args, mw_law_episode_weights); }

typedef mw_status (*law_path_fn)(uint64_t, const char *);

static PyObject *law_with_path(PyObject *args, law_path_fn fn) {
  PyObject *ho; uint64_t h; PyObject *path;
  if (!PyArg_ParseTuple(args, "OO&", &ho, PyUnicode_FSConverter, &path)) return NULL;
  if (handle_arg(ho, &h)) { Py_DECREF(path); return NULL; }
  mw_status s;
  const char *p = PyBytes_AS_STRING(path);
  Py_BEGIN_ALLOW_THREADS s = fn(h, p);
  Py_END_ALLOW_THREADS Py_DECREF(path);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}
static PyObject *py_law_save_strategy(PyObject *self, PyObject *args) { return law_with_path(args, mw_law_save_strategy); }
static PyObject *py_law_load_strategy(PyObject *self, PyObject *args) { return law_with_path(args, mw_law_load_strategy); }
static PyObject *py_strategy_save(PyObject *self, PyObject *args) { return law_with_path(args, mw_strategy_save); }
static PyObject *py_law_save(PyObject *self, PyObject *args) { return law_with_path(args, mw_law_save); }
static PyObject *py_law_load(PyObject *self, PyObject *args) { return law_with_path(args, mw_law_load); }

static PyObject *py_law_cancel(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h; int on;
  if (!PyArg_ParseTuple(args, "Op", &ho, &on) || handle_arg(ho, &h)) return NULL;
  mw_status s = mw_law_cancel(h, on ? 1 : 0); /* never blocks: no GIL release needed */
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_live_handles(PyObject *self, PyObject *args) {
  int64_t n = 0;
  mw_status s = mw_live_handles(&n);
  if (s != MW_OK) return raise_status(s);
  return PyLong_FromLongLong((long long)n);
}

/* A string result of a (const char *, const char *) call into buf: NULL a second argument to skip it. */
typedef mw_status (*text_query)(const char *, const char *, char *, int64_t, int64_t *);

static mw_status call_text_query(text_query fn, const char *a, const char *b, char *buf, int64_t cap, int64_t *len) {
  return fn ? fn(a, b, buf, cap, len) : mw_settings_table(a, buf, cap, len);
}

static PyObject *text_result(text_query fn, const char *a, const char *b) {
  int64_t len = 0;
  mw_status s = call_text_query(fn, a, b, NULL, 0, &len);
  if (s != MW_OK) return raise_status(s);
  char *buf = PyMem_Malloc((size_t)len + 1);
  if (!buf) return PyErr_NoMemory();
  s = call_text_query(fn, a, b, buf, len + 1, &len);
  if (s != MW_OK) { PyMem_Free(buf); return raise_status(s); }
  PyObject *r = PyUnicode_FromStringAndSize(buf, (Py_ssize_t)len);
  PyMem_Free(buf);
  return r;
}

/* settings_table(kind) -> str: the core's settings table of "methods" or "law" as JSON. */
static PyObject *py_settings_table(PyObject *self, PyObject *args) {
  const char *kind;
  if (!PyArg_ParseTuple(args, "s", &kind)) return NULL;
  return text_result(NULL, kind, NULL);
}

/* spec_check(kind, spec) -> str: the canonical spec, or the core's error naming the key. */
static PyObject *py_spec_check(PyObject *self, PyObject *args) {
  const char *kind, *spec;
  if (!PyArg_ParseTuple(args, "ss", &kind, &spec)) return NULL;
  return text_result(mw_spec_check, kind, spec);
}

static PyObject *py_law_strategy(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  mw_strategy st = 0;
  CHECK(mw_law_strategy(h, &st));
  return PyLong_FromUnsignedLongLong(st);
}

static PyObject *py_strategy_load(PyObject *self, PyObject *args) {
  PyObject *path;
  if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path)) return NULL;
  mw_strategy st = 0;
  mw_status s;
  const char *p = PyBytes_AS_STRING(path);
  Py_BEGIN_ALLOW_THREADS s = mw_strategy_load(p, &st);
  Py_END_ALLOW_THREADS Py_DECREF(path);
  if (s != MW_OK) return raise_status(s);
  return PyLong_FromUnsignedLongLong(st);
}

static PyObject *py_strategy_free(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  CHECK(mw_strategy_free(h));
  Py_RETURN_NONE;
}

static PyObject *py_strategy_info(PyObject *self, PyObject *args) {
  PyObject *ho; uint64_t h;
  if (!PyArg_ParseTuple(args, "O", &ho) || handle_arg(ho, &h)) return NULL;
  int64_t a = 0, b = 0, c = 0, d = 0; int32_t e = 0, f = 0;
  CHECK(mw_strategy_info(h, &a, &b, &c, &d, &e, &f));
  return Py_BuildValue("(LLLLii)", (long long)a, (long long)b, (long long)c, (long long)d, (int)e, (int)f);
}

static PyObject *py_strategy_config(PyObject *self, PyObject *args) { return get_string(args, mw_strategy_config); }

static PyObject *py_strategy_action(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h; int stage; float loss, acc;
  if (!PyArg_ParseTuple(args, "OiffO", &ho, &stage, &loss, &acc, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer o;
  if (get_buffer(oo, &o, 'f', 1, "out")) return NULL;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_strategy_action(h, (int32_t)stage, loss, acc, (float *)o.buf, (int64_t)(o.len / 4));
  Py_END_ALLOW_THREADS PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_strategy_weights(PyObject *self, PyObject *args) {
  PyObject *ho, *lo, *yo, *oo; uint64_t h; int stage; float loss, acc;
  if (!PyArg_ParseTuple(args, "OiffOOO", &ho, &stage, &loss, &acc, &lo, &yo, &oo) || handle_arg(ho, &h)) return NULL;
  Py_buffer l, y, o;
  if (get_buffer(lo, &l, 'f', 0, "logits")) return NULL;
  if (get_buffer(yo, &y, 'q', 0, "labels")) { PyBuffer_Release(&l); return NULL; }
  if (get_buffer(oo, &o, 'f', 1, "out")) { PyBuffer_Release(&l); PyBuffer_Release(&y); return NULL; }
  mw_status s = MW_OK;
  int64_t n = (int64_t)(y.len / 8);
  if (l.ndim != 2) {
    PyErr_Format(ShapeError, "logits: expected a 2-d array (N, classes), got %d-d", l.ndim);
    s = -1;
  } else if ((int64_t)l.shape[0] != n || (int64_t)(o.len / 4) != n) {
    PyErr_Format(ShapeError, "labels, out: expected %zd entries (one per row of logits), got %lld and %zd",
                 l.shape[0], (long long)n, o.len / 4);
    s = -1;
  } else {
    Py_BEGIN_ALLOW_THREADS s = mw_strategy_weights(h, (int32_t)stage, loss, acc, (const float *)l.buf, n,
                                                   (int64_t)l.shape[1], (const int64_t *)y.buf, (float *)o.buf);
    Py_END_ALLOW_THREADS
  }
  PyBuffer_Release(&l); PyBuffer_Release(&y); PyBuffer_Release(&o);
  if (s == -1) return NULL;
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_trainer_set_strategy(PyObject *self, PyObject *args) {
  PyObject *ho, *so, *xvo, *yvo; uint64_t h, sh; long long total;
  if (!PyArg_ParseTuple(args, "OOLOO", &ho, &so, &total, &xvo, &yvo) || handle_arg(ho, &h) || handle_arg(so, &sh))
    return NULL;
  int has_v = (xvo != Py_None);
  if (has_v != (yvo != Py_None)) {
    PyErr_SetString(InvalidArgumentError, "x_val, y_val: expected both or neither");
    return NULL;
  }
  Py_buffer xv, yv;
  int64_t vshape[8] = {0}; int32_t vrank = 0;
  mw_status s;
  if (!has_v) {
    Py_BEGIN_ALLOW_THREADS s = mw_trainer_set_strategy(h, sh, (int64_t)total, NULL, NULL, 0, NULL, 0);
    Py_END_ALLOW_THREADS
    if (s != MW_OK) return raise_status(s);
    Py_RETURN_NONE;
  }
  if (get_buffer(xvo, &xv, 'f', 0, "x_val")) return NULL;
  if (get_buffer(yvo, &yv, 'q', 0, "y_val")) { PyBuffer_Release(&xv); return NULL; }
  if (shape_of(&xv, vshape, &vrank)) { PyBuffer_Release(&xv); PyBuffer_Release(&yv); return NULL; }
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_set_strategy(h, sh, (int64_t)total, (const float *)xv.buf, vshape, vrank,
                                                     (const int64_t *)yv.buf, (int64_t)(yv.len / 8));
  Py_END_ALLOW_THREADS PyBuffer_Release(&xv); PyBuffer_Release(&yv);
  if (s != MW_OK) return raise_status(s);
  Py_RETURN_NONE;
}

static PyObject *py_trainer_strategy_state(PyObject *self, PyObject *args) {
  PyObject *ho, *oo; uint64_t h;
  if (!PyArg_ParseTuple(args, "OO", &ho, &oo) || handle_arg(ho, &h)) return NULL;
  int has_o = (oo != Py_None);
  Py_buffer o;
  if (has_o && get_buffer(oo, &o, 'f', 1, "weights_out")) return NULL;
  int32_t stage = -1; double loss = 0, acc = 0; int64_t nw = 0;
  mw_status s;
  Py_BEGIN_ALLOW_THREADS s = mw_trainer_strategy_state(h, &stage, &loss, &acc, has_o ? (float *)o.buf : NULL,
                                                       has_o ? (int64_t)(o.len / 4) : 0, &nw);
  Py_END_ALLOW_THREADS if (has_o) PyBuffer_Release(&o);
  if (s != MW_OK) return raise_status(s);
  return Py_BuildValue("(iddL)", (int)stage, loss, acc, (long long)nw);
}


/* ---- Hold: one object's lock held for one call, released in C ----------------------------------
 *
 * Hold(lock, on_busy, owner=None, on_closed=None) is the context manager around every native call of
 * a Network or Trainer. __enter__ takes `lock` (a threading.Lock) without blocking; when another
 * thread holds it, it raises on_busy() (a BusyError naming the call). With an owner it then reads
 * owner._handle: None (closed meanwhile) releases the lock and raises on_closed(); otherwise
 * __enter__ returns the handle. __exit__ releases the lock.
 *
 * Both are C, so no Python bytecode runs between a call's end and the release: a KeyboardInterrupt
 * (whose handler runs only between bytecodes) can land before or after the with block, never inside
 * its exit with the lock still held. A generator context manager's __exit__ is Python code, and an
 * interrupt landing there left the lock held and every later call of the object failing with
 * BusyError.
 */
typedef struct {
  PyObject_HEAD
  PyObject *lock, *on_busy, *owner, *on_closed;
  int held;
} HoldObject;

static void hold_dealloc(HoldObject *self) {
  PyObject_GC_UnTrack(self);
  Py_CLEAR(self->lock);
  Py_CLEAR(self->on_busy);
  Py_CLEAR(self->owner);
  Py_CLEAR(self->on_closed);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int hold_traverse(HoldObject *self, visitproc visit, void *arg) {
  Py_VISIT(self->lock);
  Py_VISIT(self->on_busy);
  Py_VISIT(self->owner);
  Py_VISIT(self->on_closed);
  return 0;
}

static int hold_clear(HoldObject *self) {
  Py_CLEAR(self->lock);
  Py_CLEAR(self->on_busy);
  Py_CLEAR(self->owner);
  Py_CLEAR(self->on_closed);
  return 0;
}

static int hold_init(HoldObject *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"lock", "on_busy", "owner", "on_closed", NULL};
  PyObject *lock, *on_busy, *owner = Py_None, *on_closed = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OO:Hold", kwlist, &lock, &on_busy, &owner, &on_closed)) return -1;
  if (!PyCallable_Check(on_busy)) {
    PyErr_SetString(PyExc_TypeError, "Hold: on_busy must be callable");
    return -1;
  }
  if (owner != Py_None && !PyCallable_Check(on_closed)) {
    PyErr_SetString(PyExc_TypeError, "Hold: on_closed must be callable when an owner is given");
    return -1;
  }
  if (self->held) {
    PyErr_SetString(PyExc_RuntimeError, "Hold: cannot re-initialise a held lock");
    return -1;
  }
  Py_INCREF(lock); Py_XSETREF(self->lock, lock);
  Py_INCREF(on_busy); Py_XSETREF(self->on_busy, on_busy);
  Py_INCREF(owner); Py_XSETREF(self->owner, owner);
  Py_INCREF(on_closed); Py_XSETREF(self->on_closed, on_closed);
  return 0;
}

/* Raises the exception factory() returns (a TypeError when it returns something else). */
static PyObject *raise_made(PyObject *factory) {
  PyObject *e = PyObject_CallNoArgs(factory);
  if (e == NULL) return NULL;
  if (PyExceptionInstance_Check(e)) PyErr_SetObject((PyObject *)Py_TYPE(e), e);
  else PyErr_SetString(PyExc_TypeError, "Hold: the error factory did not return an exception");
  Py_DECREF(e);
  return NULL;
}

static int hold_release(HoldObject *self) {
  if (!self->held) return 0;
  PyObject *r = PyObject_CallMethod(self->lock, "release", NULL);
  if (r == NULL) return -1;
  Py_DECREF(r);
  self->held = 0;
  return 0;
}

static PyObject *hold_enter(HoldObject *self, PyObject *unused) {
  if (self->lock == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "Hold: not initialised");
    return NULL;
  }
  if (self->held) {
    PyErr_SetString(PyExc_RuntimeError, "Hold: already entered");
    return NULL;
  }
  PyObject *got = PyObject_CallMethod(self->lock, "acquire", "O", Py_False);
  if (got == NULL) return NULL;
  int ok = PyObject_IsTrue(got);
  Py_DECREF(got);
  if (ok < 0) return NULL;
  if (!ok) return raise_made(self->on_busy);
  self->held = 1;
  if (self->owner == Py_None) Py_RETURN_NONE;
  PyObject *h = PyObject_GetAttrString(self->owner, "_handle");
  if (h != NULL && h != Py_None) return h;
  /* Closed meanwhile (or the attribute failed): release first, then raise. */
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  Py_XDECREF(h);
  if (hold_release(self) < 0) {
    Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
    return NULL;
  }
  if (type != NULL) {
    PyErr_Restore(type, value, tb);
    return NULL;
  }
  return raise_made(self->on_closed);
}

static PyObject *hold_exit(HoldObject *self, PyObject *args) {
  if (hold_release(self) < 0) return NULL;
  Py_RETURN_FALSE;
}

static PyMethodDef hold_methods[] = {
    {"__enter__", (PyCFunction)hold_enter, METH_NOARGS, "Takes the lock (BusyError when taken); returns the handle."},
    {"__exit__", (PyCFunction)hold_exit, METH_VARARGS, "Releases the lock."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject HoldType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "metaweight._core.Hold",
    .tp_basicsize = sizeof(HoldObject),
    .tp_dealloc = (destructor)hold_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Hold(lock, on_busy, owner=None, on_closed=None): one object's lock for one call, released in C.",
    .tp_traverse = (traverseproc)hold_traverse,
    .tp_clear = (inquiry)hold_clear,
    .tp_methods = hold_methods,
    .tp_init = (initproc)hold_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef methods[] = {
    {"version", py_version, METH_NOARGS, "Library version."},
    {"blas_core", py_blas_core, METH_NOARGS, "OpenBLAS core in use."},
    {"blas_config", py_blas_config, METH_NOARGS, "OpenBLAS configuration."},
    {"get_threads", py_get_threads, METH_NOARGS, "Kernel thread count."},
    {"calls_in_flight_peak", py_calls_in_flight_peak, METH_VARARGS,
     "calls_in_flight_peak(reset=False) -> most handle calls running at once since the last reset."},
    {"live_handles", py_live_handles, METH_NOARGS, "Number of live native handles (leak checks)."},
    {"settings_table", py_settings_table, METH_VARARGS, "settings_table(kind) -> JSON of the core's settings table."},
    {"spec_check", py_spec_check, METH_VARARGS, "spec_check(kind, spec) -> the canonical spec (checked by the core)."},
    {"set_threads", py_set_threads, METH_VARARGS, "Set kernel and BLAS thread count."},
    {"network_create", py_network_create, METH_VARARGS, "network_create(spec, input_shape, seed) -> handle"},
    {"network_free", py_network_free, METH_VARARGS, "Free a network handle."},
    {"network_info", py_network_info, METH_VARARGS, "(n_params, n_state, n_classes, n_blocks, n_state_blocks)"},
    {"network_input_shape", py_network_input_shape, METH_VARARGS, "Per-example input shape."},
    {"network_block", py_network_block, METH_VARARGS, "(name, offset, shape) of a block."},
    {"network_get_flat", py_network_get_flat, METH_VARARGS, "Copy parameters/state out."},
    {"network_set_flat", py_network_set_flat, METH_VARARGS, "Copy parameters/state in."},
    {"network_summary", py_network_summary, METH_VARARGS, "Layer summary."},
    {"network_signature", py_network_signature, METH_VARARGS, "Architecture signature."},
    {"network_activation_bytes", py_network_activation_bytes, METH_VARARGS, "Activation bytes for a batch."},
    {"network_set_conv_algorithm", py_network_set_conv_algorithm, METH_VARARGS,
     "network_set_conv_algorithm(h, algorithm) -> number of convolutions (0 auto, 1 gemm, 2 winograd)."},
    {"network_conv_algorithms", py_network_conv_algorithms, METH_VARARGS,
     "network_conv_algorithms(h) -> the algorithm each convolution runs (1 gemm, 2 winograd)."},
    {"trainer_create", py_trainer_create, METH_VARARGS, "trainer_create(net, opt, sched, seed) -> handle"},
    {"trainer_set_schedule", py_trainer_set_schedule, METH_VARARGS, "trainer_set_schedule(h, sched)"},
    {"trainer_free", py_trainer_free, METH_VARARGS, "Free a trainer handle."},
    {"trainer_set_augmentation", py_trainer_set_augmentation, METH_VARARGS, "Crop padding and flip."},
    {"trainer_step", py_trainer_step, METH_VARARGS,
     "trainer_step(h, x, y, sample_weights, x_meta=None, y_meta=None, weights_out=None, class_weights_out=None)"
     " -> (loss, acc, lr, step, meta_loss, diagnostics): the one training step."},
    {"trainer_predict", py_trainer_predict, METH_VARARGS, "Eval-mode logits into out."},
    {"trainer_losses", py_trainer_losses, METH_VARARGS, "Eval-mode per-example losses into out."},
    {"trainer_permutation", py_trainer_permutation, METH_VARARGS, "Random permutation into out."},
    {"trainer_state", py_trainer_state, METH_VARARGS, "(steps, next_lr)"},
    {"trainer_network", py_trainer_network, METH_VARARGS, "New handle to the trainer's network."},
    {"trainer_save", py_trainer_save, METH_VARARGS, "Atomic checkpoint save."},
    {"trainer_load", py_trainer_load, METH_VARARGS, "Checkpoint load."},
    {"trainer_set_method", py_trainer_set_method, METH_VARARGS, "trainer_set_method(h, spec, seed)"},
    {"trainer_method", py_trainer_method, METH_VARARGS, "The current method's name."},
    {"trainer_set_batch_norm_sync", py_trainer_set_batch_norm_sync, METH_VARARGS,
     "trainer_set_batch_norm_sync(h, on) -- synchronised batch norm in data-parallel steps."},
    {"trainer_set_allreduce", py_trainer_set_allreduce, METH_VARARGS,
     "trainer_set_allreduce(h, hook) -- hook(values, sync_point) sums values over the workers in place; None detaches."},
    {"trainer_weight_function", py_trainer_weight_function, METH_VARARGS, "V(losses) into out."},
    {"trainer_weight_net_get", py_trainer_weight_net_get, METH_VARARGS,
     "trainer_weight_net_get(h, out|None) -> hidden; V's 3*hidden+1 parameters into out."},
    {"trainer_weight_net_set", py_trainer_weight_net_set, METH_VARARGS,
     "trainer_weight_net_set(h, params): set V's 3*hidden+1 parameters (optimizer state kept)."},
    {"trainer_set_step_diagnostics", py_trainer_set_step_diagnostics, METH_VARARGS,
     "trainer_set_step_diagnostics(h, on): keep the method's raw step arrays (opt-in)."},
    {"trainer_step_diagnostics", py_trainer_step_diagnostics, METH_VARARGS,
     "trainer_step_diagnostics(h, name, out|None) -> (length, rows): the last step's raw array into out."},
    {"law_create", py_law_create, METH_VARARGS, "law_create(config_spec, network_spec, input_shape, seed) -> handle"},
    {"law_free", py_law_free, METH_VARARGS, "Free a LAW search."},
    {"law_info", py_law_info, METH_VARARGS,
     "(stages, parallel, classes, action_dim, rounds_done, next_stage, buffer_size)"},
    {"law_config", py_law_config, METH_VARARGS, "The search's configuration spec."},
    {"law_set_data", py_law_set_data, METH_VARARGS, "law_set_data(h, x, y, corrupted|None, x_val, y_val)"},
    {"law_run_stage", py_law_run_stage, METH_VARARGS, "Run one stage of all parallel episodes + FDU -> dict."},
    {"law_episode_log", py_law_episode_log, METH_VARARGS,
     "law_episode_log(h, slot, out float64[stages*11]) -> (episode, round, stages_done)"},
    {"law_episode_actions", py_law_episode_actions, METH_VARARGS, "Actions [stages x action_dim] into out."},
    {"law_remote_begin_round", py_law_remote_begin_round, METH_VARARGS,
     "law_remote_begin_round(h, out int64[N_a]): a remote round's global episode indices."},
    {"law_remote_start_round", py_law_remote_start_round, METH_VARARGS,
     "law_remote_start_round(h, states float64[N_a*3]): the episodes' initial states."},
    {"law_remote_actions", py_law_remote_actions, METH_VARARGS,
     "law_remote_actions(h, out float32[N_a*A], mask uint8[N_a]): the stage's actions."},
    {"law_remote_finish_stage", py_law_remote_finish_stage, METH_VARARGS,
     "law_remote_finish_stage(h, outcomes float64[N_a*12], seconds) -> stage log dict."},
    {"law_remote_abandon_round", py_law_remote_abandon_round, METH_VARARGS, "Abandon the remote round in progress."},
    {"law_episode_create", py_law_episode_create, METH_VARARGS, "law_episode_create(h, round, slot) -> episode"},
    {"law_episode_free", py_law_episode_free, METH_VARARGS, "Free an episode."},
    {"law_episode_begin", py_law_episode_begin, METH_VARARGS, "law_episode_begin(e, out float64[3])"},
    {"law_episode_run_stage", py_law_episode_run_stage, METH_VARARGS,
     "law_episode_run_stage(e, stage, action|None, out float64[12])"},
    {"law_episode_snapshot", py_law_episode_snapshot, METH_VARARGS, "law_episode_snapshot(e) -> bytes"},
    {"law_episode_restore", py_law_episode_restore, METH_VARARGS, "law_episode_restore(e, bytes)"},
    {"law_episode_info", py_law_episode_info, METH_VARARGS,
     "law_episode_info(e) -> (episode, round, slot, stages_done, examples)"},
    {"law_episode_get_log", py_law_episode_get_log, METH_VARARGS,
     "law_episode_get_log(e, table float64, actions float32, weights float32|None)"},
    {"law_episode_weights", py_law_episode_weights, METH_VARARGS, "Per-example weights [stages x N] into out."},
    {"law_cancel", py_law_cancel, METH_VARARGS, "law_cancel(h, on): request/clear cancellation (thread-safe)."},
    {"law_save", py_law_save, METH_VARARGS, "Save the whole search state (atomic)."},
    {"law_load", py_law_load, METH_VARARGS, "Restore a saved search state."},
    {"law_save_strategy", py_law_save_strategy, METH_VARARGS, "Save the current strategy (atomic)."},
    {"law_load_strategy", py_law_load_strategy, METH_VARARGS, "Load a strategy file into the search's actor."},
    {"law_strategy", py_law_strategy, METH_VARARGS, "Snapshot of the current strategy -> strategy handle."},
    {"strategy_load", py_strategy_load, METH_VARARGS, "strategy_load(path) -> handle"},
    {"strategy_save", py_strategy_save, METH_VARARGS, "strategy_save(h, path)"},
    {"strategy_free", py_strategy_free, METH_VARARGS, "Free a strategy handle."},
    {"strategy_info", py_strategy_info, METH_VARARGS,
     "(stages, classes, action_dim, warmup_stages, label_encoding, density)"},
    {"strategy_config", py_strategy_config, METH_VARARGS, "The search configuration it came from."},
    {"strategy_action", py_strategy_action, METH_VARARGS, "strategy_action(h, stage, loss, acc, out)"},
    {"strategy_weights", py_strategy_weights, METH_VARARGS,
     "strategy_weights(h, stage, loss, acc, logits, labels, out)"},
    {"trainer_set_strategy", py_trainer_set_strategy, METH_VARARGS,
     "trainer_set_strategy(tr, strategy|0, total_steps, x_val|None, y_val|None)"},
    {"trainer_strategy_state", py_trainer_strategy_state, METH_VARARGS,
     "trainer_strategy_state(tr, weights_out|None) -> (stage, loss_smooth, acc_smooth, n_weights)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_core", "metaweight's Swift core.", -1, methods};

static PyObject *new_error(PyObject *m, const char *name, PyObject *bases, const char *doc) {
  char full[128];
  snprintf(full, sizeof full, "metaweight.%s", name);
  PyObject *e = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
  if (e && PyModule_AddObjectRef(m, name, e) < 0) { Py_DECREF(e); return NULL; }
  return e;
}

static PyObject *bases2(PyObject *a, PyObject *b) { return PyTuple_Pack(2, a, b); }

PyMODINIT_FUNC PyInit__core(void) {
  PyObject *m = PyModule_Create(&moduledef);
  if (!m) return NULL;
  MetaweightError = new_error(m, "MetaweightError", NULL, "Base class of every metaweight error.");
  if (!MetaweightError) return NULL;
  PyObject *b;
  b = bases2(MetaweightError, PyExc_ValueError);
  InvalidArgumentError = new_error(m, "InvalidArgumentError", b, "An argument is out of range or malformed.");
  Py_XDECREF(b);
  ShapeError = new_error(m, "ShapeError", InvalidArgumentError, "An array has the wrong rank or size, or is empty.");
  LabelError = new_error(m, "LabelError", InvalidArgumentError, "A label is negative or not below the number of classes.");
  b = bases2(MetaweightError, PyExc_FloatingPointError);
  NonFiniteError = new_error(m, "NonFiniteError", b, "NaN or infinity in an input, loss, gradient or weight.");
  Py_XDECREF(b);
  b = bases2(MetaweightError, PyExc_TypeError);
  DTypeError = new_error(m, "DTypeError", b, "An array has an unsupported dtype or layout.");
  Py_XDECREF(b);
  b = bases2(MetaweightError, PyExc_RuntimeError);
  StateError = new_error(m, "StateError", b, "The call is not allowed in the object's current state.");
  Py_XDECREF(b);
  ClosedError = new_error(m, "ClosedError", StateError, "The object was closed or freed.");
  BusyError = new_error(m, "BusyError", StateError, "The object is in use by another thread.");
  b = bases2(MetaweightError, PyExc_OSError);
  CheckpointError = new_error(m, "CheckpointError", b, "A checkpoint is missing, unreadable, corrupt or does not match.");
  Py_XDECREF(b);
  b = bases2(MetaweightError, PyExc_MemoryError);
  ResourceError = new_error(m, "ResourceError", b, "An allocation whose size the caller controls is over its limit or failed.");
  Py_XDECREF(b);
  if (!InvalidArgumentError || !ShapeError || !LabelError || !NonFiniteError || !DTypeError || !StateError ||
      !ClosedError || !BusyError || !CheckpointError || !ResourceError)
    return NULL;
  if (PyType_Ready(&HoldType) < 0 || PyModule_AddObjectRef(m, "Hold", (PyObject *)&HoldType) < 0) return NULL;
  return m;
}
