/* Conversions shared by the glue files: NumPy arrays <-> ln_image, path arguments. */
#include "glue.h"

#include <string.h>

int ln_py_image_view(PyObject *obj, PyArrayObject **keep, ln_image *view)
{
    *keep = NULL;
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected a numpy uint8 array of shape (H, W) or (H, W, C), got %s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_UINT8) {
        PyErr_Format(PyExc_TypeError, "expected a uint8 image array, got dtype %s",
                     PyArray_DESCR(arr)->typeobj->tp_name);
        return -1;
    }
    int nd = PyArray_NDIM(arr);
    if (nd != 2 && nd != 3) {
        PyErr_Format(PyExc_ValueError, "expected an image of shape (H, W) or (H, W, C), got %d dimensions", nd);
        return -1;
    }
    npy_intp *shape = PyArray_DIMS(arr);
    int channels = nd == 3 ? (int)shape[2] : 1;
    if (channels != 1 && channels != 3 && channels != 4) {
        PyErr_Format(PyExc_ValueError, "expected 1, 3 or 4 channels, got %d", channels);
        return -1;
    }
    if (shape[0] < 1 || shape[1] < 1 || shape[0] > 0x7fffffff || shape[1] > 0x7fffffff) {
        PyErr_Format(PyExc_ValueError, "image must be at least 1x1, got %ldx%ld", (long)shape[1], (long)shape[0]);
        return -1;
    }
    /* Packed pixels, any row stride: otherwise make a C-contiguous copy. */
    npy_intp *strides = PyArray_STRIDES(arr);
    int packed = strides[0] > 0 && (nd == 2 ? strides[1] == 1 : strides[1] == channels && strides[2] == 1);
    if (packed) {
        Py_INCREF(arr);
    } else {
        arr = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_UINT8, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
        if (!arr)
            return -1;
    }
    *keep = arr;
    *view = ln_image_view(PyArray_BYTES(arr), (int)shape[1], (int)shape[0], channels,
                          (size_t)PyArray_STRIDES(arr)[0]);
    return 0;
}

PyObject *ln_py_array_from_image(const ln_image *img)
{
    npy_intp dims[3] = {img->height, img->width, img->channels};
    PyObject *arr = PyArray_SimpleNew(img->channels == 1 ? 2 : 3, dims, NPY_UINT8);
    if (!arr)
        return NULL;
    size_t row = (size_t)img->width * (size_t)img->channels;
    uint8_t *dst = PyArray_BYTES((PyArrayObject *)arr);
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
