/* Shared helpers of the CPython/NumPy glue. Only csrc/python/ includes Python.h. */
#ifndef LN_GLUE_H
#define LN_GLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef LN_NO_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#define PY_ARRAY_UNIQUE_SYMBOL ln_numpy_api
#include <numpy/arrayobject.h>

#include "ln_common.h"
#include "ln_decode.h"
#include "ln_geometry.h"
#include "ln_image.h"
#include "ln_lora.h"
#include "ln_resample.h"

/* Raise the Python exception matching a core error (NativeError, MemoryError, OSError, ValueError).
 * `module` is the _native module (the `self` of every module function). */
PyObject *ln_py_raise(PyObject *module, const ln_error *err);
/* lora_native.errors.NativeError, held in the module state. */
PyObject *ln_py_native_error(PyObject *module);
/* lora_native.errors.ConfigError, held in the module state. */
PyObject *ln_py_config_error(PyObject *module);

/* The outcome of a batch of per-file jobs: a list of None (status LN_OK) or the job's error
 * message, in job order; MemoryError (NULL) when a job ran out of memory. */
PyObject *ln_py_job_messages(const int *status, const ln_error *errors, Py_ssize_t n);
/* threads= argument: None or int >= 0 (0 = all cores). */
int ln_py_threads_arg(PyObject *obj, int *out);

/* A uint8 array of shape (H, W) or (H, W, C), C in {1, 3, 4}, as an ln_image view.
 * *holder receives a new reference keeping the pixels alive (the array itself,
 * or a C-contiguous copy when its strides are not ours); `what` names it in error messages. */
int ln_py_image_arg(PyObject *obj, const char *what, ln_image *img, PyObject **holder);
/* A new HxWxC (HxW when C == 1) uint8 array holding a copy of img. */
PyObject *ln_py_array_from_image(const ln_image *img);
/* filter= argument: "lanczos" (or "antialias"), "bicubic", "bilinear", "box"; NULL (not given) -> dflt. */
int ln_py_filter_arg(PyObject *obj, ln_filter dflt, ln_filter *out);
/* size= argument: a pair of ints (width, height), each 1..2^20. */
int ln_py_size_arg(PyObject *obj, int *w, int *h);
/* Path argument (str, bytes, os.PathLike) -> new bytes object (os.fsencode). */
PyObject *ln_py_fspath_bytes(PyObject *obj);

/* n encoded paths kept alive for a batch, with the C strings the core reads. */
typedef struct {
    PyObject *list;    /* the bytes objects */
    const char **ptrs; /* ptrs[i] points into list[i] */
    Py_ssize_t n;
} ln_py_paths;

/* Room for n paths (set each with ln_py_paths_set), or -1 with MemoryError. */
int ln_py_paths_init(ln_py_paths *p, Py_ssize_t n);
/* Encodes `path` (os.fsencode, NUL bytes refused) into slot i; -1 with an exception set. */
int ln_py_paths_set(ln_py_paths *p, Py_ssize_t i, PyObject *path);
/* Every item of a PySequence_Fast sequence; -1 with an exception set. */
int ln_py_paths_from_seq(ln_py_paths *p, PyObject *fast_seq);
void ln_py_paths_free(ln_py_paths *p);

/* Decode options from the keyword arguments every file-reading function takes
 * (max_pixels, jpeg_decoder, jpeg_draft_min_side, apply_orientation, header_only). */
int ln_py_decode_opts(PyObject *max_pixels, const char *jpeg_decoder, int draft, int orient, int header_only,
                      ln_decode_opts *opts);
/* The decode record as a dict: format, reason, message, notes, width/height as stored, ... */
PyObject *ln_py_decode_info_dict(const ln_decode_info *info);

/* A plan dict as plan_crop/plan_bucket/plan_pad return it ({"out_size", "box"[, "inner_size", "offset"]})
 * -> ln_plan; -1 with an exception set. */
int ln_py_plan_from_dict(PyObject *d, ln_plan *p);

/* Per-area registration: each glue file adds its functions to the module. */
int ln_py_register_info(PyObject *m);
int ln_py_register_decode(PyObject *m);
int ln_py_register_resample(PyObject *m);
int ln_py_register_encode(PyObject *m);
int ln_py_register_hash(PyObject *m);
int ln_py_register_group(PyObject *m);
int ln_py_register_pipeline(PyObject *m);
int ln_py_register_config(PyObject *m);
int ln_py_register_loader(PyObject *m);
int ln_py_register_prep(PyObject *m);
int ln_py_register_lora(PyObject *m);
/* The tables the CPU and CUDA LoRA functions share (lora.c): a sequence of (up_ptr, up_dtype,
 * down_ptr, down_dtype, rank, scale) / (param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, n, lr,
 * weight_decay, step) tuples -> a PyMem array the caller frees; -1 with an exception set. */
int ln_py_lora_terms(PyObject *obj, ln_lora_term **out, Py_ssize_t *count);
int ln_py_adamw_tensors(PyObject *obj, ln_adamw_tensor **out, Py_ssize_t *count);
/* The CUDA LoRA kernels (lora_cuda.c); adds nothing in a build without CUDA. */
int ln_py_register_lora_cuda(PyObject *m);

#endif
