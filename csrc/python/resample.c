/* Glue for csrc/image/resample.c: Pillow-exact resize and grayscale conversion. */
#include "glue.h"
#include "ln_resample.h"

#include "../image/resample_internal.h" /* resample_weights(): the table test hook */

#include <limits.h>
#include <string.h>

int ln_py_filter_arg(PyObject *obj, ln_filter dflt, ln_filter *out)
{
    static const struct {
        const char *name;
        ln_filter filter;
    } names[] = {{"lanczos", LN_FILTER_LANCZOS}, {"antialias", LN_FILTER_LANCZOS}, {"bicubic", LN_FILTER_BICUBIC},
                 {"bilinear", LN_FILTER_BILINEAR}, {"box", LN_FILTER_BOX}};
    if (obj == NULL) {
        *out = dflt;
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "filter must be a string (lanczos, bicubic, bilinear or box), got %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].filter;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown filter %R; expected lanczos, bicubic, bilinear or box", obj);
    return -1;
}

int ln_py_size_arg(PyObject *obj, int *w, int *h)
{
    PyObject *seq = PySequence_Check(obj) && !PyUnicode_Check(obj) ? PySequence_Fast(obj, "") : NULL;
    if (!seq || PySequence_Fast_GET_SIZE(seq) != 2) {
        Py_XDECREF(seq);
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "size must be a pair of integers (width, height)");
        return -1;
    }
    long v[2];
    for (int i = 0; i < 2; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyLong_Check(item)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "size must be a pair of integers (width, height)");
            return -1;
        }
        v[i] = PyLong_AsLong(item);
        if (v[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    if (v[0] < 1 || v[1] < 1 || v[0] > (1 << 20) || v[1] > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "size must be positive (width, height) up to 1048576, got (%ld, %ld)", v[0],
                     v[1]);
        return -1;
    }
    *w = (int)v[0];
    *h = (int)v[1];
    return 0;
}

static int parse_box(PyObject *obj, float box[4])
{
    PyObject *seq = PySequence_Check(obj) && !PyUnicode_Check(obj) ? PySequence_Fast(obj, "") : NULL;
    if (!seq || PySequence_Fast_GET_SIZE(seq) != 4) {
        Py_XDECREF(seq);
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "box must be None or four numbers (x0, y0, x1, y1)");
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        double d = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (d == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        box[i] = (float)d; /* Pillow parses the box as C floats */
    }
    Py_DECREF(seq);
    return 0;
}

static PyObject *py_resize(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"array", "size", "filter", "box", NULL};
    PyObject *arr_obj, *size_obj, *filter_obj = NULL, *box_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OO:resize", kwlist, &arr_obj, &size_obj, &filter_obj,
                                     &box_obj))
        return NULL;
    int w, h;
    ln_filter filter;
    float box[4];
    if (ln_py_size_arg(size_obj, &w, &h) < 0 || ln_py_filter_arg(filter_obj, LN_FILTER_LANCZOS, &filter) < 0)
        return NULL;
    if (box_obj != Py_None && parse_box(box_obj, box) < 0)
        return NULL;
    ln_image in;
    PyObject *holder;
    if (ln_py_image_arg(arr_obj, "array", &in, &holder) < 0)
        return NULL;
    int nd = PyArray_NDIM((PyArrayObject *)holder);
    npy_intp dims[3] = {h, w, in.channels};
    PyObject *res = PyArray_SimpleNew(nd, dims, NPY_UINT8);
    if (!res) {
        Py_DECREF(holder);
        return NULL;
    }
    ln_image out = ln_image_view((uint8_t *)PyArray_DATA((PyArrayObject *)res), w, h, in.channels,
                                 (size_t)w * (size_t)in.channels);
    ln_error err;
    ln_error_clear(&err);
    int rc;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_resample(&in, &out, box_obj == Py_None ? NULL : box, filter, &settings, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(holder);
    if (rc != LN_OK) {
        Py_DECREF(res);
        return ln_py_raise(self, &err);
    }
    return res;
}

static PyObject *py_to_gray(PyObject *self, PyObject *arr_obj)
{
    ln_image in;
    PyObject *holder;
    if (ln_py_image_arg(arr_obj, "array", &in, &holder) < 0)
        return NULL;
    npy_intp dims[2] = {in.height, in.width};
    PyObject *res = PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (!res) {
        Py_DECREF(holder);
        return NULL;
    }
    ln_image out = ln_image_view((uint8_t *)PyArray_DATA((PyArrayObject *)res), in.width, in.height, 1,
                                 (size_t)in.width);
    ln_error err;
    ln_error_clear(&err);
    int rc;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_to_gray(&in, &out, &settings, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(holder);
    if (rc != LN_OK) {
        Py_DECREF(res);
        return ln_py_raise(self, &err);
    }
    return res;
}

static PyObject *py_resample_weights(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"in_size", "out_size", "filter", "box", "fast", NULL};
    int in_size, out_size, fast = 1;
    PyObject *filter_obj = NULL, *box_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii|OOp:resample_weights", kwlist, &in_size, &out_size,
                                     &filter_obj, &box_obj, &fast))
        return NULL;
    ln_filter filter;
    if (ln_py_filter_arg(filter_obj, LN_FILTER_LANCZOS, &filter) < 0)
        return NULL;
    float span[2] = {0.0f, (float)in_size};
    if (box_obj != Py_None) {
        double a, b;
        if (!PyArg_ParseTuple(box_obj, "dd:box", &a, &b))
            return NULL;
        span[0] = (float)a;
        span[1] = (float)b;
    }
    if (in_size < 1 || out_size < 1 || in_size > (1 << 20) || out_size > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "sizes must be between 1 and 1048576");
        return NULL;
    }
    ln_kernels kt;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_kernels_build_ex(&kt, in_size, span[0], span[1], out_size, filter, fast && ln_use_avx2(&settings),
                             &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    npy_intp n = out_size, kdims[2] = {out_size, kt.kstride};
    PyObject *start = PyArray_SimpleNew(1, &n, NPY_INT);
    PyObject *count = PyArray_SimpleNew(1, &n, NPY_INT);
    PyObject *weights = PyArray_SimpleNew(2, kdims, NPY_INT32);
    PyObject *res = NULL;
    if (start && count && weights) {
        memcpy(PyArray_DATA((PyArrayObject *)start), kt.start, (size_t)n * sizeof(int));
        memcpy(PyArray_DATA((PyArrayObject *)count), kt.count, (size_t)n * sizeof(int));
        memcpy(PyArray_DATA((PyArrayObject *)weights), kt.k, (size_t)n * (size_t)kt.kstride * sizeof(int32_t));
        res = Py_BuildValue("(OOOi)", start, count, weights, kt.libm_rows);
    }
    Py_XDECREF(start);
    Py_XDECREF(count);
    Py_XDECREF(weights);
    ln_kernels_free(&kt);
    return res;
}

static PyMethodDef resample_methods[] = {
    {"resize", (PyCFunction)(void (*)(void))py_resize, METH_VARARGS | METH_KEYWORDS,
     "resize(array, size, filter='lanczos', box=None) -> uint8 array\n\n"
     "Pillow-exact Image.resize(size, filter, box) of a uint8 (H, W) or (H, W, C) array, C in 1/3/4;\n"
     "size is (width, height); filter is lanczos, bicubic, bilinear or box; box is (x0, y0, x1, y1)."},
    {"to_gray", py_to_gray, METH_O,
     "to_gray(array) -> (H, W) uint8 array: Pillow's convert('L') (ITU-R 601-2 luma, 16-bit fixed point)."},
    {"resample_weights", (PyCFunction)(void (*)(void))py_resample_weights, METH_VARARGS | METH_KEYWORDS,
     "resample_weights(in_size, out_size, filter='lanczos', box=None, fast=True) -> (start, count, weights,\n"
     "libm_rows): Pillow's fixed-point weights of one axis (box = (in0, in1)). Test hook: fast=False\n"
     "forces every weight through libm; libm_rows counts outputs that took that path."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_resample(PyObject *m)
{
    return PyModule_AddFunctions(m, resample_methods);
}
