/* Glue for csrc/hash/: aHash/dHash/pHash bit-identical to imagehash, the exact-DCT test
 * hook and XXH64. */
#include "glue.h"
#include "ln_hash.h"

#include <string.h>

static PyObject *hashes_tuple(const ln_image_hashes *h)
{
    return Py_BuildValue("(KKK)", (unsigned long long)h->ahash, (unsigned long long)h->dhash,
                         (unsigned long long)h->phash);
}

static PyObject *py_image_hashes(PyObject *self, PyObject *arr_obj)
{
    ln_image img;
    PyObject *holder;
    if (ln_py_image_arg(arr_obj, "array", &img, &holder) < 0)
        return NULL;
    ln_image_hashes h;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_image_hashes_compute(&img, &h, &settings, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(holder);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    return hashes_tuple(&h);
}

static PyObject *py_image_hashes_batch(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"arrays", "threads", NULL};
    PyObject *arrays, *threads_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:image_hashes_batch", kwlist, &arrays, &threads_obj))
        return NULL;
    int threads;
    if (ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(arrays, "arrays must be a sequence of numpy uint8 arrays");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    ln_image *imgs = PyMem_Calloc((size_t)n + 1, sizeof *imgs);
    PyObject **holders = PyMem_Calloc((size_t)n + 1, sizeof *holders);
    ln_image_hashes *hashes = PyMem_Calloc((size_t)n + 1, sizeof *hashes);
    PyObject *res = NULL;
    Py_ssize_t held = 0;
    if (!imgs || !holders || !hashes) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < n; held++) {
        char what[48];
        snprintf(what, sizeof what, "arrays[%zd]", held);
        if (ln_py_image_arg(PySequence_Fast_GET_ITEM(seq, held), what, &imgs[held], &holders[held]) < 0)
            goto done;
    }
    npy_intp dims[2] = {n, 3};
    res = PyArray_SimpleNew(2, dims, NPY_UINT64);
    if (!res)
        goto done;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_image_hashes_batch(imgs, (size_t)n, threads, &settings, hashes, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK) {
        Py_CLEAR(res);
        ln_py_raise(self, &err);
        goto done;
    }
    npy_uint64 *dst = PyArray_DATA((PyArrayObject *)res);
    for (Py_ssize_t i = 0; i < n; i++) {
        dst[3 * i + 0] = hashes[i].ahash;
        dst[3 * i + 1] = hashes[i].dhash;
        dst[3 * i + 2] = hashes[i].phash;
    }
done:
    for (Py_ssize_t i = 0; i < held; i++)
        Py_XDECREF(holders[i]);
    PyMem_Free(imgs);
    PyMem_Free(holders);
    PyMem_Free(hashes);
    Py_DECREF(seq);
    return res;
}

static PyObject *py_dct2_32x32(PyObject *self, PyObject *arr_obj)
{
    if (!PyArray_Check(arr_obj) || PyArray_TYPE((PyArrayObject *)arr_obj) != NPY_DOUBLE) {
        PyErr_SetString(PyExc_TypeError, "dct2_32x32 needs a float64 numpy array of shape (32, 32)");
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)arr_obj;
    if (PyArray_NDIM(arr) != 2 || PyArray_DIM(arr, 0) != 32 || PyArray_DIM(arr, 1) != 32) {
        PyErr_SetString(PyExc_ValueError, "dct2_32x32 needs shape (32, 32)");
        return NULL;
    }
    PyObject *res = PyArray_NewCopy(arr, NPY_CORDER);
    if (!res)
        return NULL;
    ln_error err;
    ln_error_clear(&err);
    if (ln_dct2_32x32((double *)PyArray_DATA((PyArrayObject *)res), &err) != LN_OK) {
        Py_DECREF(res);
        return ln_py_raise(self, &err);
    }
    return res;
}

static PyObject *py_xxh64(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"data", "seed", NULL};
    PyObject *data, *seed_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:xxh64", kwlist, &data, &seed_obj))
        return NULL;
    unsigned long long seed = 0;
    if (seed_obj) {
        if (!PyLong_Check(seed_obj)) {
            PyErr_SetString(PyExc_TypeError, "seed must be an integer in [0, 2**64)");
            return NULL;
        }
        seed = PyLong_AsUnsignedLongLong(seed_obj);
        if (seed == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "seed must be an integer in [0, 2**64)");
            return NULL;
        }
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    uint64_t h;
    if (view.len > (1 << 16)) {
        Py_BEGIN_ALLOW_THREADS
        h = ln_xxh64(view.buf, (size_t)view.len, seed);
        Py_END_ALLOW_THREADS
    } else {
        h = ln_xxh64(view.buf, (size_t)view.len, seed);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(h);
}

static PyMethodDef hash_methods[] = {
    {"image_hashes", py_image_hashes, METH_O,
     "image_hashes(array) -> (ahash, dhash, phash) ints, bit-identical to imagehash's average_hash,\n"
     "dhash and phash (hash_size 8) of Image.fromarray(array); array is uint8 (H, W) or (H, W, 1/3/4)."},
    {"image_hashes_batch", (PyCFunction)(void (*)(void))py_image_hashes_batch, METH_VARARGS | METH_KEYWORDS,
     "image_hashes_batch(arrays, threads=None) -> uint64 array (N, 3) of (ahash, dhash, phash) rows,\n"
     "computed on `threads` threads (None or 0: all cores)."},
    {"dct2_32x32", py_dct2_32x32, METH_O,
     "dct2_32x32(block) -> scipy.fftpack.dct(dct(block, axis=0), axis=1) with pocketfft's exact rounding."},
    {"xxh64", (PyCFunction)(void (*)(void))py_xxh64, METH_VARARGS | METH_KEYWORDS,
     "xxh64(data, seed=0) -> int: XXH64 of a C-contiguous bytes-like object."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_hash(PyObject *m)
{
    return PyModule_AddFunctions(m, hash_methods);
}
