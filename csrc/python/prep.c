/* Glue for model-input preprocessing (csrc/dataset/prep.c): files or one array -> float32 slots. */
#include "glue.h"
#include "ln_prep.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The keyword arguments prepare_images and prepare_image share. */
typedef struct {
    PyObject *size, *mode, *filter, *layout, *scale, *mean, *std;
    int short_side;
} prep_args;

static int parse_choice(PyObject *obj, const char *what, const char *const *names, int count, const char *expected,
                        int *out)
{
    if (obj == NULL)
        return 0; /* keep the default */
    const char *s = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
    if (!s) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "%s must be a string, got %.100s", what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    for (int i = 0; i < count; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown %s %R; expected %s", what, obj, expected);
    return -1;
}

/* A number, or three numbers (R, G, B), as finite floats. */
static int parse_triple(PyObject *obj, const char *what, float out[3])
{
    if (obj == NULL)
        return 0;
    if (PyFloat_Check(obj) || PyLong_Check(obj)) {
        double d = PyFloat_AsDouble(obj);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        out[0] = out[1] = out[2] = (float)d;
    } else {
        PyObject *seq = PySequence_Check(obj) && !PyUnicode_Check(obj) ? PySequence_Fast(obj, "") : NULL;
        if (!seq || PySequence_Fast_GET_SIZE(seq) != 3) {
            Py_XDECREF(seq);
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a number or three numbers (R, G, B)", what);
            return -1;
        }
        for (int c = 0; c < 3; c++) {
            double d = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, c));
            if (d == -1.0 && PyErr_Occurred()) {
                Py_DECREF(seq);
                if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    PyErr_Format(PyExc_TypeError, "%s must be a number or three numbers (R, G, B)", what);
                }
                return -1;
            }
            out[c] = (float)d;
        }
        Py_DECREF(seq);
    }
    for (int c = 0; c < 3; c++)
        if (!isfinite(out[c])) {
            PyErr_Format(PyExc_ValueError, "%s must be finite float32 numbers", what);
            return -1;
        }
    return 0;
}

/* Fills o (already ln_prep_opts_init'ed) from the shared arguments; -1 with an exception set. */
static int parse_prep_args(const prep_args *a, ln_prep_opts *o)
{
    static const char *const modes[] = {"resize", "short_crop", "pad_square"};
    static const char *const layouts[] = {"nchw", "nhwc_bgr"};
    ln_filter filter;
    if ((a->size && ln_py_size_arg(a->size, &o->width, &o->height) < 0) ||
        parse_choice(a->mode, "mode", modes, 3, "'resize', 'short_crop' or 'pad_square'", &o->mode) < 0 ||
        ln_py_filter_arg(a->filter, LN_FILTER_BICUBIC, &filter) < 0 ||
        parse_choice(a->layout, "layout", layouts, 2, "'nchw' or 'nhwc_bgr'", &o->layout) < 0 ||
        parse_triple(a->mean, "mean", o->mean) < 0 || parse_triple(a->std, "std", o->std) < 0)
        return -1;
    o->filter = filter;
    if (a->scale) {
        double d = PyFloat_AsDouble(a->scale);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        if (!isfinite((float)d)) {
            PyErr_SetString(PyExc_ValueError, "scale must be a finite float32 number");
            return -1;
        }
        o->scale = (float)d;
    }
    for (int c = 0; c < 3; c++)
        if (o->std[c] == 0.0f) {
            PyErr_Format(PyExc_ValueError, "std must be non-zero (channel %d is 0)", c);
            return -1;
        }
    if (a->short_side < 0 || a->short_side > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "short_side must be between 1 and 1048576, got %d", a->short_side);
        return -1;
    }
    if (o->mode == LN_PREP_SHORT_CROP && a->short_side == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "mode='short_crop' needs short_side > 0 (the length the shortest edge is resized to)");
        return -1;
    }
    o->short_side = a->short_side;
    return 0;
}

/* The float32 result array: (n, 3, h, w) or (n, h, w, 3); without the leading n when `batch` is 0. */
static PyObject *new_slots(const ln_prep_opts *o, npy_intp n, int batch)
{
    npy_intp dims[4], *d = dims;
    if (batch)
        *d++ = n;
    if (o->layout == LN_PREP_NCHW_RGB) {
        d[0] = 3, d[1] = o->height, d[2] = o->width;
    } else {
        d[0] = o->height, d[1] = o->width, d[2] = 3;
    }
    return PyArray_EMPTY(batch ? 4 : 3, dims, NPY_FLOAT32, 0);
}

static PyObject *py_prepare_images(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"paths", "size",  "mode", "short_side", "filter",     "layout",
                             "scale", "mean",  "std",  "threads",    "max_pixels", NULL};
    PyObject *paths_obj, *threads_obj = Py_None, *max_pixels = Py_None;
    prep_args a = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOiOOOOOOO:prepare_images", kwlist, &paths_obj, &a.size,
                                     &a.mode, &a.short_side, &a.filter, &a.layout, &a.scale, &a.mean, &a.std,
                                     &threads_obj, &max_pixels))
        return NULL;
    ln_prep_opts opts;
    ln_prep_opts_init(&opts);
    ln_settings_from_env(&opts.settings); /* under the GIL: workers never read the environment */
    int threads;
    if (parse_prep_args(&a, &opts) < 0 || ln_py_threads_arg(threads_obj, &threads) < 0 ||
        ln_py_decode_opts(max_pixels, "libjpeg", 0, 1, 0, &opts.decode) < 0)
        return NULL;
    if (PyUnicode_Check(paths_obj) || PyBytes_Check(paths_obj)) {
        PyErr_SetString(PyExc_TypeError, "paths must be a sequence of paths, not a single str or bytes");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(paths_obj, "paths must be a sequence of str, bytes or os.PathLike");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    ln_py_paths paths = {0};
    int *status = calloc((size_t)n + 1, sizeof *status);
    ln_error *errors = calloc((size_t)n + 1, sizeof *errors);
    PyObject *slots = NULL, *result = NULL;
    if (!status || !errors) {
        PyErr_NoMemory();
        goto done;
    }
    if (ln_py_paths_from_seq(&paths, seq) < 0 || !(slots = new_slots(&opts, n, 1)))
        goto done;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    float *out = (float *)PyArray_DATA((PyArrayObject *)slots);
    /* The array is new and not shared yet: the workers may write it without the GIL. */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_prep_files(paths.ptrs, (size_t)n, &opts, threads, out, status, errors, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK) {
        ln_py_raise(self, &err);
        goto done;
    }
    PyObject *messages = ln_py_job_messages(status, errors, n);
    if (messages)
        result = Py_BuildValue("(ON)", slots, messages);
done:
    Py_XDECREF(slots);
    free(status);
    free(errors);
    ln_py_paths_free(&paths);
    Py_DECREF(seq);
    return result;
}

static PyObject *py_prepare_image(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"array", "size", "mode", "short_side", "filter", "layout", "scale", "mean", "std", NULL};
    PyObject *arr_obj;
    prep_args a = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOiOOOOO:prepare_image", kwlist, &arr_obj, &a.size, &a.mode,
                                     &a.short_side, &a.filter, &a.layout, &a.scale, &a.mean, &a.std))
        return NULL;
    ln_prep_opts opts;
    ln_prep_opts_init(&opts);
    ln_settings_from_env(&opts.settings); /* under the GIL */
    if (parse_prep_args(&a, &opts) < 0)
        return NULL;
    ln_image in;
    PyObject *holder;
    if (ln_py_image_arg(arr_obj, "array", &in, &holder) < 0)
        return NULL;
    if (PyArray_NDIM((PyArrayObject *)holder) != 3 || in.channels != 3) {
        Py_DECREF(holder);
        PyErr_SetString(PyExc_ValueError, "array must be an RGB image of shape (H, W, 3)");
        return NULL;
    }
    PyObject *slot = new_slots(&opts, 1, 0);
    if (!slot) {
        Py_DECREF(holder);
        return NULL;
    }
    ln_error err;
    ln_error_clear(&err);
    int rc;
    float *out = (float *)PyArray_DATA((PyArrayObject *)slot);
    Py_BEGIN_ALLOW_THREADS
    rc = ln_prep_image(&in, &opts, out, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(holder);
    if (rc != LN_OK) {
        Py_DECREF(slot);
        return ln_py_raise(self, &err);
    }
    return slot;
}

static PyMethodDef prep_methods[] = {
    {"prepare_images", (PyCFunction)(void (*)(void))py_prepare_images, METH_VARARGS | METH_KEYWORDS,
     "prepare_images(paths, size=(224, 224), mode='resize', short_side=0, filter='bicubic', layout='nchw',\n"
     "               scale=1/255, mean=(0, 0, 0), std=(1, 1, 1), threads=None, max_pixels=None)\n"
     "-> (float32 array (N, 3, H, W) or (N, H, W, 3), list of None | error message)\n\n"
     "Decodes each file (EXIF orientation applied, alpha on white) and writes it into slot i as a vision model\n"
     "expects it: mode 'resize' (BLIP), 'short_crop' (CLIP: shortest edge to short_side, center crop of size)\n"
     "or 'pad_square' (WD14: white square pad, then resize); value = (pixel * scale - mean[c]) / std[c] in\n"
     "float32; layout 'nchw' (RGB) or 'nhwc_bgr'. A file that cannot be used gets its message and a\n"
     "zero-filled slot. Runs on native threads with the GIL released."},
    {"prepare_image", (PyCFunction)(void (*)(void))py_prepare_image, METH_VARARGS | METH_KEYWORDS,
     "prepare_image(array, size=(224, 224), mode='resize', short_side=0, filter='bicubic', layout='nchw',\n"
     "              scale=1/255, mean=(0, 0, 0), std=(1, 1, 1)) -> float32 array (3, H, W) or (H, W, 3)\n\n"
     "prepare_images for one (H, W, 3) uint8 RGB array already in memory."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_prep(PyObject *m)
{
    return PyModule_AddFunctions(m, prep_methods);
}
