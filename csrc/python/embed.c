/* Glue for csrc/hash/embed_search.c: exact all-pairs similarity search over embeddings. */
#include "glue.h"

#include "ln_embed.h"

#include <stdlib.h>

/* embeddings: a C-contiguous, aligned, native-order 2-D float32 or float16 array, taken as is
 * (no copy: a cast would change the values the search is exact about). */
static int embeddings_arg(PyObject *obj, int *dtype)
{
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "embeddings must be a numpy array (float32 or float16), got %s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    int type = PyArray_TYPE(arr);
    if ((type != NPY_FLOAT32 && type != NPY_FLOAT16) || !PyArray_ISNOTSWAPPED(arr)) {
        PyObject *name = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyErr_Format(PyExc_TypeError, "embeddings must be float32 or float16 in native byte order, got dtype %S "
                     "(convert with .astype(numpy.float32))", name ? name : Py_None);
        Py_XDECREF(name);
        return -1;
    }
    if (PyArray_NDIM(arr) != 2) {
        PyErr_Format(PyExc_ValueError, "embeddings must be a 2-D array (n, dim), got %d dimensions",
                     PyArray_NDIM(arr));
        return -1;
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr)) {
        PyErr_SetString(PyExc_ValueError, "embeddings must be C-contiguous and aligned "
                                          "(use numpy.ascontiguousarray)");
        return -1;
    }
    *dtype = type == NPY_FLOAT32 ? LN_EMBED_F32 : LN_EMBED_F16;
    return 0;
}

static PyObject *py_similar_pairs(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"embeddings", "threshold", "threads", NULL};
    PyObject *emb_obj, *threads_obj = Py_None;
    double threshold;
    int threads, dtype;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Od|O:similar_pairs", kwlist, &emb_obj, &threshold, &threads_obj))
        return NULL;
    if (embeddings_arg(emb_obj, &dtype) < 0 || ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    PyArrayObject *arr = (PyArrayObject *)emb_obj;
    size_t n = (size_t)PyArray_DIM(arr, 0), dim = (size_t)PyArray_DIM(arr, 1);
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL: no os.environ change can race with it */
    ln_pair *pairs = NULL;
    size_t count = 0;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_INCREF(arr); /* the rows stay alive while the GIL is released */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_similar_pairs(PyArray_DATA(arr), dtype, n, dim, threshold, threads, &settings, &pairs, &count, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(arr);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    npy_intp len = (npy_intp)count;
    PyArrayObject *ia = (PyArrayObject *)PyArray_SimpleNew(1, &len, NPY_INT64);
    PyArrayObject *ja = ia ? (PyArrayObject *)PyArray_SimpleNew(1, &len, NPY_INT64) : NULL;
    PyArrayObject *sa = ja ? (PyArrayObject *)PyArray_SimpleNew(1, &len, NPY_FLOAT32) : NULL;
    if (!sa) {
        Py_XDECREF(ia);
        Py_XDECREF(ja);
        free(pairs);
        return NULL;
    }
    int64_t *pi = (int64_t *)PyArray_DATA(ia), *pj = (int64_t *)PyArray_DATA(ja);
    float *ps = (float *)PyArray_DATA(sa);
    for (size_t k = 0; k < count; k++) {
        pi[k] = pairs[k].i;
        pj[k] = pairs[k].j;
        ps[k] = pairs[k].sim;
    }
    free(pairs);
    return Py_BuildValue("(NNN)", ia, ja, sa);
}

static PyMethodDef embed_methods[] = {
    {"similar_pairs", (PyCFunction)(void (*)(void))py_similar_pairs, METH_VARARGS | METH_KEYWORDS,
     "similar_pairs(embeddings, threshold, threads=None) -> (i, j, sim)\n\n"
     "Every pair i < j of rows of a C-contiguous (n, dim) float32 or float16 array whose dot product\n"
     "is >= threshold (the cosine when rows are L2-normalised), exactly as a float64 brute force\n"
     "over the stored values decides it. i, j: int64 arrays sorted by (i, j); sim: the float64 dot\n"
     "rounded to float32. threads: None or 0 for all cores. ValueError for a row holding NaN/Inf."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_embed(PyObject *m)
{
    return PyModule_AddFunctions(m, embed_methods);
}
