/* Conversions shared by the glue files: NumPy arrays <-> ln_image, path arguments. */
#include "glue.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

int ln_py_image_arg(PyObject *obj, const char *what, ln_image *img, PyObject **holder)
{
    *holder = NULL;
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray of dtype uint8, got %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_UINT8) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype uint8, got %S", what, (PyObject *)PyArray_DESCR(arr));
        return -1;
    }
    int nd = PyArray_NDIM(arr);
    npy_intp *dims = PyArray_DIMS(arr);
    npy_intp channels = nd == 3 ? dims[2] : 1;
    if (nd != 2 && nd != 3) {
        PyErr_Format(PyExc_ValueError, "%s must have shape (H, W) or (H, W, C), got %d dimensions", what, nd);
        return -1;
    }
    if (channels != 1 && channels != 3 && channels != 4) {
        PyErr_Format(PyExc_ValueError, "%s has %zd channels; expected 1 (L), 3 (RGB) or 4 (RGBA)", what,
                     (Py_ssize_t)channels);
        return -1;
    }
    if (dims[0] < 1 || dims[1] < 1 || dims[0] > INT_MAX || dims[1] > INT_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "%s has an unusable size %zd x %zd (height x width)", what,
                     (Py_ssize_t)dims[0], (Py_ssize_t)dims[1]);
        return -1;
    }
    npy_intp *st = PyArray_STRIDES(arr);
    npy_intp row = dims[1] * channels;
    int ours = (nd == 2 ? st[1] == 1 : (st[2] == 1 && st[1] == channels)) && (dims[0] == 1 || st[0] >= row);
    PyObject *keep;
    if (ours) {
        Py_INCREF(obj);
        keep = obj;
    } else {
        keep = PyArray_NewCopy(arr, NPY_CORDER);
        if (!keep)
            return -1;
    }
    PyArrayObject *k = (PyArrayObject *)keep;
    size_t stride = dims[0] == 1 ? (size_t)row : (size_t)PyArray_STRIDES(k)[0];
    *img = ln_image_view((uint8_t *)PyArray_DATA(k), (int)dims[1], (int)dims[0], (int)channels, stride);
    *holder = keep;
    return 0;
}

PyObject *ln_py_array_from_image(const ln_image *img)
{
    npy_intp dims[3] = {img->height, img->width, img->channels};
    PyObject *arr = PyArray_SimpleNew(img->channels == 1 ? 2 : 3, dims, NPY_UINT8);
    if (!arr)
        return NULL;
    size_t row = (size_t)img->width * (size_t)img->channels;
    uint8_t *dst = (uint8_t *)PyArray_DATA((PyArrayObject *)arr);
    for (int y = 0; y < img->height; y++)
        memcpy(dst + (size_t)y * row, img->data + (size_t)y * img->stride, row);
    return arr;
}

PyObject *ln_py_fspath_bytes(PyObject *obj)
{
    PyObject *out = NULL;
    if (!PyUnicode_FSConverter(obj, &out))
        return NULL;
    return out;
}

int ln_py_paths_init(ln_py_paths *p, Py_ssize_t n)
{
    p->n = n;
    p->list = PyList_New(n);
    p->ptrs = calloc((size_t)n + 1, sizeof *p->ptrs);
    if (!p->list || !p->ptrs) {
        ln_py_paths_free(p);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

int ln_py_paths_set(ln_py_paths *p, Py_ssize_t i, PyObject *path)
{
    PyObject *b = ln_py_fspath_bytes(path); /* rejects embedded NUL bytes */
    if (!b)
        return -1;
    PyList_SET_ITEM(p->list, i, b);
    p->ptrs[i] = PyBytes_AS_STRING(b);
    return 0;
}

int ln_py_paths_from_seq(ln_py_paths *p, PyObject *fast_seq)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast_seq);
    if (ln_py_paths_init(p, n) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (ln_py_paths_set(p, i, PySequence_Fast_GET_ITEM(fast_seq, i)) < 0)
            return -1;
    return 0;
}

void ln_py_paths_free(ln_py_paths *p)
{
    Py_CLEAR(p->list);
    free(p->ptrs);
    p->ptrs = NULL;
    p->n = 0;
}
