/* Glue for csrc/hash/group.c: near-duplicate grouping by Hamming distance. */
#include "glue.h"

#include "ln_group.h"

/* hashes: any 1-D integer array (signed values are taken bit for bit, two's complement),
 * returned as a C-contiguous uint64 array. */
static PyArrayObject *hashes_arg(PyObject *obj)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!arr)
        return NULL;
    if (PyArray_NDIM(arr) != 1) {
        PyErr_Format(PyExc_ValueError, "hashes must be a 1-D array, got %d dimensions", PyArray_NDIM(arr));
        Py_DECREF(arr);
        return NULL;
    }
    int empty = PyArray_SIZE(arr) == 0;
    if (!empty && (!PyArray_ISINTEGER(arr) || PyArray_ISBOOL(arr))) {
        PyObject *name = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyErr_Format(PyExc_TypeError, "hashes must be 64-bit integers (uint64), got dtype %S",
                     name ? name : Py_None);
        Py_XDECREF(name);
        Py_DECREF(arr);
        return NULL;
    }
    PyArrayObject *u64 = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)arr, NPY_UINT64,
                                                          NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(arr);
    return u64;
}

static int t_arg(PyObject *obj, int *out)
{
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "t must be an int, got %s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *idx = PyNumber_Index(obj);
    if (!idx)
        return -1;
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0 || v > 64) {
        PyErr_SetString(PyExc_ValueError, "t must be between 0 and 64 bits");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Both entry points: convert, run the core without the GIL, wrap the labels. reference
 * selects the O(n^2) brute force (threads and blocks unused). */
static PyObject *group_call(PyObject *self, PyObject *hashes_obj, int t, int threads, int blocks, int reference)
{
    PyArrayObject *hashes = hashes_arg(hashes_obj);
    if (!hashes)
        return NULL;
    npy_intp n = PyArray_SIZE(hashes);
    PyArrayObject *labels = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_INT64);
    if (!labels) {
        Py_DECREF(hashes);
        return NULL;
    }
    const uint64_t *h = (const uint64_t *)PyArray_DATA(hashes);
    int64_t *out = (int64_t *)PyArray_DATA(labels);
    ln_error err;
    ln_error_clear(&err);
    uint64_t candidates = 0;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL: no os.environ change can race with it */
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = reference ? ln_group_hamming_bruteforce(h, (size_t)n, t, out, &err)
                   : ln_group_hamming_ex(h, (size_t)n, t, threads, blocks, &settings, out, &candidates, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(hashes);
    if (rc != LN_OK) {
        Py_DECREF(labels);
        return ln_py_raise(self, &err);
    }
    if (reference)
        return (PyObject *)labels;
    return Py_BuildValue("(NK)", labels, (unsigned long long)candidates);
}

static PyObject *py_group_hamming(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"hashes", "t", "threads", "blocks", NULL};
    PyObject *hashes_obj, *t_obj, *threads_obj = Py_None;
    int blocks = 0, t, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O$i:group_hamming", kwlist, &hashes_obj, &t_obj,
                                     &threads_obj, &blocks))
        return NULL;
    if (t_arg(t_obj, &t) < 0 || ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    return group_call(self, hashes_obj, t, threads, blocks, 0);
}

static PyObject *py_group_hamming_bruteforce(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"hashes", "t", NULL};
    PyObject *hashes_obj, *t_obj;
    int t;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:group_hamming_bruteforce", kwlist, &hashes_obj, &t_obj))
        return NULL;
    if (t_arg(t_obj, &t) < 0)
        return NULL;
    return group_call(self, hashes_obj, t, 0, 0, 1);
}

static PyObject *py_group_hamming_plan(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t n_distinct;
    PyObject *t_obj;
    int t;
    if (!PyArg_ParseTuple(args, "nO:group_hamming_plan", &n_distinct, &t_obj))
        return NULL;
    if (t_arg(t_obj, &t) < 0)
        return NULL;
    if (n_distinct < 0) {
        PyErr_SetString(PyExc_ValueError, "n_distinct must be >= 0");
        return NULL;
    }
    return PyLong_FromLong(ln_group_plan_blocks((size_t)n_distinct, t));
}

static PyMethodDef group_methods[] = {
    {"group_hamming", (PyCFunction)(void (*)(void))py_group_hamming, METH_VARARGS | METH_KEYWORDS,
     "group_hamming(hashes, t, threads=None, *, blocks=0) -> (labels, candidates_checked)\n\n"
     "Connected components of 'Hamming distance <= t' over 64-bit hashes (multi-index hashing).\n"
     "labels[i] is the smallest index in i's group (int64). candidates_checked counts the pairs\n"
     "verified with a full popcount. blocks forces the strategy (0 automatic, 1 all pairs,\n"
     "3..64 MIH blocks), for tests and benchmarks."},
    {"group_hamming_bruteforce", (PyCFunction)(void (*)(void))py_group_hamming_bruteforce,
     METH_VARARGS | METH_KEYWORDS,
     "group_hamming_bruteforce(hashes, t) -> labels\n\nO(N^2) reference of group_hamming (single thread)."},
    {"group_hamming_plan", py_group_hamming_plan, METH_VARARGS,
     "group_hamming_plan(n_distinct, t) -> int\n\nBlocks the cost model picks: 0 none needed, 1 all pairs, else m."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_group(PyObject *m)
{
    return PyModule_AddFunctions(m, group_methods);
}
