/* Glue for training batches: decode + crop/resize many images into one array on the thread pool. */
#include "glue.h"

#include <stdlib.h>
#include <string.h>

#include "ln_dataset.h"

/* Parses one (path, (w, h), plan, file_hash | None) job; the path goes into paths slot i. */
static int parse_job(PyObject *item, Py_ssize_t i, ln_py_paths *paths, ln_load_job *job)
{
    PyObject *path, *plan, *file_hash = Py_None;
    if (!PyTuple_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "each job must be a tuple (path, (width, height), plan, file_hash or None)");
        return -1;
    }
    if (!PyArg_ParseTuple(item, "O(ii)O|O:load_images job", &path, &job->expect_width, &job->expect_height, &plan,
                          &file_hash))
        return -1;
    if (file_hash != Py_None) {
        job->expect_file_hash = PyLong_AsUnsignedLongLong(file_hash);
        if (PyErr_Occurred())
            return -1;
        job->check_file_hash = 1;
    }
    if (ln_py_paths_set(paths, i, path) < 0 || ln_py_plan_from_dict(plan, &job->plan) < 0)
        return -1;
    job->path = paths->ptrs[i];
    return 0;
}

static PyObject *py_load_images(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"jobs", "threads", "max_pixels", NULL};
    PyObject *jobs_obj, *threads_obj = Py_None, *max_pixels = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:load_images", kwlist, &jobs_obj, &threads_obj, &max_pixels))
        return NULL;
    int threads;
    ln_load_opts opts;
    ln_load_opts_init(&opts);
    ln_settings_from_env(&opts.settings); /* under the GIL: workers never read the environment */
    if (ln_py_threads_arg(threads_obj, &threads) < 0 ||
        ln_py_decode_opts(max_pixels, "libjpeg", 0, 1, 0, &opts.decode) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(jobs_obj, "jobs must be a sequence of (path, (width, height), plan, file_hash)");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    ln_py_paths paths = {0};
    if (ln_py_paths_init(&paths, n) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    ln_load_job *jobs = calloc((size_t)n + 1, sizeof *jobs);
    int *status = calloc((size_t)n + 1, sizeof *status);
    ln_error *errors = calloc((size_t)n + 1, sizeof *errors);
    PyObject *pixels = NULL, *result = NULL;
    if (!jobs || !status || !errors) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (parse_job(PySequence_Fast_GET_ITEM(seq, i), i, &paths, &jobs[i]) < 0)
            goto done;
    int w = n ? jobs[0].plan.out_width : 0, h = n ? jobs[0].plan.out_height : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (jobs[i].plan.out_width <= 0 || jobs[i].plan.out_height <= 0) {
            PyErr_Format(PyExc_ValueError, "job %zd: plan output size %dx%d", i, jobs[i].plan.out_width,
                         jobs[i].plan.out_height);
            goto done;
        }
        if (jobs[i].plan.out_width != w || jobs[i].plan.out_height != h) {
            PyErr_Format(PyExc_ValueError,
                         "all plans of a batch must have one output size: job %zd is %dx%d, job 0 is %dx%d", i,
                         jobs[i].plan.out_width, jobs[i].plan.out_height, w, h);
            goto done;
        }
    }
    npy_intp dims[4] = {n, h, w, 3};
    pixels = PyArray_EMPTY(4, dims, NPY_UINT8, 0);
    if (!pixels)
        goto done;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    uint8_t *out = (uint8_t *)PyArray_DATA((PyArrayObject *)pixels);
    /* The array is new and not shared yet: the workers may write it without the GIL. */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_load_batch(jobs, (size_t)n, &opts, threads, out, status, errors, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK) {
        ln_py_raise(self, &err);
        goto done;
    }
    PyObject *messages = ln_py_job_messages(status, errors, n);
    if (messages)
        result = Py_BuildValue("(ON)", pixels, messages);
done:
    Py_XDECREF(pixels);
    free(jobs);
    free(status);
    free(errors);
    ln_py_paths_free(&paths);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef loader_methods[] = {
    {"load_images", (PyCFunction)(void (*)(void))py_load_images, METH_VARARGS | METH_KEYWORDS,
     "load_images(jobs, threads=None, max_pixels=None) -> (uint8 array (N, H, W, 3), list of None | error "
     "message).\n\nEach job is (path, (width, height), plan, file_hash or None): the file is decoded (EXIF "
     "orientation applied, alpha on white), refused when its size after orientation or (when given) the XXH64 of "
     "its bytes differs from the scan, and its plan (plan_crop/plan_bucket/plan_pad) is resampled (Lanczos) into "
     "row i. Every plan must have the same output size. A failed row is zero-filled and its message returned; "
     "decoding runs on native threads with the GIL released."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_loader(PyObject *m)
{
    return PyModule_AddFunctions(m, loader_methods);
}
