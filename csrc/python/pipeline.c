/* Glue for the batch pipeline (csrc/dataset) and the geometry it uses (csrc/image/geometry.c). */
#include "glue.h"

#include <stdlib.h>
#include <string.h>

#include "ln_dataset.h"

static PyObject *analysis_dict(const ln_analysis *a)
{
    PyObject *info = ln_py_decode_info_dict(&a->info);
    if (!info)
        return NULL;
    PyObject *thumb = Py_None, *error = Py_None;
    Py_INCREF(thumb);
    Py_INCREF(error);
    if (a->thumb.len) {
        Py_SETREF(thumb, PyBytes_FromStringAndSize((const char *)a->thumb.data, (Py_ssize_t)a->thumb.len));
    }
    if (a->status != LN_OK) {
        Py_SETREF(error, PyUnicode_DecodeUTF8(a->error.msg, (Py_ssize_t)strlen(a->error.msg), "replace"));
    }
    if (!thumb || !error) {
        Py_DECREF(info);
        Py_XDECREF(thumb);
        Py_XDECREF(error);
        return NULL;
    }
    const ln_quality *q = &a->quality;
    return Py_BuildValue("{s:N,s:K,s:K,s:O,s:i,s:i,s:d,s:d,s:i,s:i,s:d,s:d,s:K,s:K,s:K,s:K,s:N,s:N}", "info", info,
                         "file_size", (unsigned long long)a->file_size, "file_hash",
                         (unsigned long long)a->file_hash, "decoded", a->decoded ? Py_True : Py_False, "width",
                         a->width, "height", a->height, "blur", q->blur, "mean_luma", q->mean_luma, "p1_luma",
                         q->p1_luma, "p99_luma", q->p99_luma, "entropy", q->entropy, "color_fraction",
                         q->color_fraction, "ahash", (unsigned long long)a->hashes.ahash, "dhash",
                         (unsigned long long)a->hashes.dhash, "phash", (unsigned long long)a->hashes.phash,
                         "pixel_hash", (unsigned long long)a->pixel_hash, "thumb", thumb, "error", error);
}

static void free_results(ln_analysis *res, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        ln_analysis_free(&res[i]);
    free(res);
}

/* Runs ln_analyze_files over `paths_obj` with the GIL released; results (n of them) are
 * allocated here and must be released with free_results. */
static int run_analysis(PyObject *self, PyObject *paths_obj, const ln_analyze_opts *opts, int threads,
                        ln_analysis **results, Py_ssize_t *count)
{
    *results = NULL;
    *count = 0;
    PyObject *seq = PySequence_Fast(paths_obj, "paths must be a sequence of paths");
    if (!seq)
        return -1;
    ln_py_paths pl = {0};
    int ok = -1;
    if (ln_py_paths_from_seq(&pl, seq) < 0)
        goto done;
    Py_ssize_t n = pl.n;
    ln_analysis *res = calloc((size_t)n + 1, sizeof(ln_analysis));
    if (!res) {
        PyErr_NoMemory();
        goto done;
    }
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_analyze_files(pl.ptrs, (size_t)n, opts, threads, res, &err);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; rc == LN_OK && i < n; i++)
        if (res[i].status == LN_ERR_NOMEM)
            rc = ln_fail(&err, LN_ERR_NOMEM, "out of memory analysing images");
    if (rc != LN_OK) {
        ln_py_raise(self, &err);
        free_results(res, n);
        goto done;
    }
    *results = res;
    *count = n;
    ok = 0;
done:
    ln_py_paths_free(&pl);
    Py_DECREF(seq);
    return ok;
}

static PyObject *py_analyze_files(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"paths", "threads", "max_pixels", "jpeg_decoder", "apply_orientation", "thumb_size",
                             "header_only", NULL};
    PyObject *paths_obj, *threads_obj = Py_None, *max_pixels = Py_None;
    const char *jpeg_decoder = "libjpeg";
    int apply_orientation = 1, thumb_size = 0, header_only = 0, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOspip:analyze_files", kwlist, &paths_obj, &threads_obj,
                                     &max_pixels, &jpeg_decoder, &apply_orientation, &thumb_size, &header_only))
        return NULL;
    ln_analyze_opts opts;
    ln_analyze_opts_init(&opts);
    ln_settings_from_env(&opts.settings);
    if (ln_py_threads_arg(threads_obj, &threads) < 0 ||
        ln_py_decode_opts(max_pixels, jpeg_decoder, 0, apply_orientation, header_only, &opts.decode) < 0)
        return NULL;
    if (thumb_size < 0 || thumb_size > LN_CHECKS_SIDE) {
        PyErr_Format(PyExc_ValueError, "thumb_size must be between 0 and %d", LN_CHECKS_SIDE);
        return NULL;
    }
    opts.thumb_size = thumb_size;
    ln_analysis *res;
    Py_ssize_t n;
    if (run_analysis(self, paths_obj, &opts, threads, &res, &n) < 0)
        return NULL;
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *d = analysis_dict(&res[i]);
        if (!d)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, d);
    }
    free_results(res, n);
    return out;
}

static PyObject *py_hash_files(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"paths", "threads", "max_pixels", "jpeg_decoder", "jpeg_draft_min_side",
                             "apply_orientation", NULL};
    PyObject *paths_obj, *threads_obj = Py_None, *max_pixels = Py_None;
    const char *jpeg_decoder = "libjpeg";
    int draft = 0, apply_orientation = 1, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOsip:hash_files", kwlist, &paths_obj, &threads_obj,
                                     &max_pixels, &jpeg_decoder, &draft, &apply_orientation))
        return NULL;
    ln_analyze_opts opts;
    ln_analyze_opts_init(&opts);
    ln_settings_from_env(&opts.settings);
    if (ln_py_threads_arg(threads_obj, &threads) < 0 ||
        ln_py_decode_opts(max_pixels, jpeg_decoder, draft, apply_orientation, 0, &opts.decode) < 0)
        return NULL;
    opts.hashes_only = 1;
    ln_analysis *res;
    Py_ssize_t n;
    if (run_analysis(self, paths_obj, &opts, threads, &res, &n) < 0)
        return NULL;
    npy_intp dims[2] = {n, 3};
    PyObject *hashes = PyArray_ZEROS(2, dims, NPY_UINT64, 0);
    PyObject *reasons = PyList_New(n);
    if (hashes && reasons) {
        uint64_t *h = (uint64_t *)PyArray_DATA((PyArrayObject *)hashes);
        for (Py_ssize_t i = 0; i < n; i++) {
            h[3 * i] = res[i].hashes.ahash;
            h[3 * i + 1] = res[i].hashes.dhash;
            h[3 * i + 2] = res[i].hashes.phash;
            PyObject *r = PyUnicode_FromString(ln_reason_name(res[i].info.reason));
            if (!r) {
                Py_CLEAR(reasons);
                break;
            }
            PyList_SET_ITEM(reasons, i, r);
        }
    }
    free_results(res, n);
    if (!hashes || !reasons) {
        Py_XDECREF(hashes);
        Py_XDECREF(reasons);
        return NULL;
    }
    return Py_BuildValue("(NN)", hashes, reasons);
}

/* ---- plans: {"out_size": (w, h), "box": (x0, y0, x1, y1), "inner_size": (w, h), "offset": (x, y)} ---- */

static PyObject *plan_dict(const ln_plan *p)
{
    return Py_BuildValue("{s:(ii),s:(dddd),s:(ii),s:(ii)}", "out_size", p->out_width, p->out_height, "box",
                         (double)p->box[0], (double)p->box[1], (double)p->box[2], (double)p->box[3], "inner_size",
                         p->inner_width, p->inner_height, "offset", p->offset_x, p->offset_y);
}

int ln_py_plan_from_dict(PyObject *d, ln_plan *p)
{
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "a plan must be a dict as returned by plan_crop/plan_bucket/plan_pad");
        return -1;
    }
    PyObject *out_size = PyDict_GetItemString(d, "out_size"), *box = PyDict_GetItemString(d, "box");
    PyObject *inner = PyDict_GetItemString(d, "inner_size"), *offset = PyDict_GetItemString(d, "offset");
    if (!out_size || !box) {
        PyErr_SetString(PyExc_KeyError, "a plan needs 'out_size' and 'box'");
        return -1;
    }
    double b[4];
    if (!PyArg_ParseTuple(out_size, "ii", &p->out_width, &p->out_height) ||
        !PyArg_ParseTuple(box, "dddd", &b[0], &b[1], &b[2], &b[3]))
        return -1;
    for (int i = 0; i < 4; i++)
        p->box[i] = (float)b[i];
    p->inner_width = p->out_width;
    p->inner_height = p->out_height;
    p->offset_x = p->offset_y = 0;
    if (inner && !PyArg_ParseTuple(inner, "ii", &p->inner_width, &p->inner_height))
        return -1;
    if (offset && !PyArg_ParseTuple(offset, "ii", &p->offset_x, &p->offset_y))
        return -1;
    return 0;
}

static PyObject *py_plan_crop(PyObject *self, PyObject *args)
{
    int w, h, ow, oh;
    if (!PyArg_ParseTuple(args, "(ii)(ii):plan_crop", &w, &h, &ow, &oh))
        return NULL;
    ln_plan p;
    ln_error err;
    if (ln_plan_crop(w, h, ow, oh, &p, &err) != LN_OK)
        return ln_py_raise(self, &err);
    return plan_dict(&p);
}

static PyObject *py_plan_pad(PyObject *self, PyObject *args)
{
    int w, h, ow, oh;
    if (!PyArg_ParseTuple(args, "(ii)(ii):plan_pad", &w, &h, &ow, &oh))
        return NULL;
    ln_plan p;
    ln_error err;
    if (ln_plan_pad(w, h, ow, oh, &p, &err) != LN_OK)
        return ln_py_raise(self, &err);
    return plan_dict(&p);
}

static PyObject *py_plan_bucket(PyObject *self, PyObject *args)
{
    int w, h;
    ln_size bucket, resized;
    if (!PyArg_ParseTuple(args, "(ii)(ii)(ii):plan_bucket", &w, &h, &bucket.width, &bucket.height, &resized.width,
                          &resized.height))
        return NULL;
    ln_plan p;
    ln_error err;
    if (ln_plan_bucket(w, h, bucket, resized, &p, &err) != LN_OK)
        return ln_py_raise(self, &err);
    return plan_dict(&p);
}

static PyObject *py_bucket_resolutions(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"resolution", "min_size", "max_size", "step", NULL};
    int mw, mh, min_size = 256, max_size = 1024, step = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "(ii)|iii:bucket_resolutions", kwlist, &mw, &mh, &min_size,
                                     &max_size, &step))
        return NULL;
    ln_error err;
    int count = 0;
    if (ln_bucket_resolutions(mw, mh, min_size, max_size, step, NULL, 0, &count, &err) != LN_OK)
        return ln_py_raise(self, &err);
    ln_size *resos = malloc(sizeof(ln_size) * (size_t)(count ? count : 1));
    if (!resos)
        return PyErr_NoMemory();
    if (ln_bucket_resolutions(mw, mh, min_size, max_size, step, resos, count, &count, &err) != LN_OK) {
        free(resos);
        return ln_py_raise(self, &err);
    }
    PyObject *list = PyList_New(count);
    for (int i = 0; list && i < count; i++) {
        PyObject *t = Py_BuildValue("(ii)", resos[i].width, resos[i].height);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, t);
    }
    free(resos);
    return list;
}

static PyObject *py_bucket_select(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"size", "resolutions", "no_upscale", "max_area", "step", NULL};
    int w, h, no_upscale = 0, step = 64;
    long long max_area = 0;
    PyObject *resos_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "(ii)O|pLi:bucket_select", kwlist, &w, &h, &resos_obj,
                                     &no_upscale, &max_area, &step))
        return NULL;
    PyObject *seq = PySequence_Fast(resos_obj, "resolutions must be a sequence of (width, height)");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    ln_size *resos = malloc(sizeof(ln_size) * (size_t)(n ? n : 1));
    if (!resos) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "ii", &resos[i].width, &resos[i].height)) {
            free(resos);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    ln_size bucket, resized;
    ln_error err;
    int rc = ln_bucket_select(w, h, resos, (int)n, no_upscale, (int64_t)max_area, step, &bucket, &resized, &err);
    free(resos);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    return Py_BuildValue("((ii)(ii))", bucket.width, bucket.height, resized.width, resized.height);
}

static PyObject *py_apply_plan(PyObject *self, PyObject *args)
{
    PyObject *array, *plan_obj;
    if (!PyArg_ParseTuple(args, "OO:apply_plan", &array, &plan_obj))
        return NULL;
    ln_plan plan;
    if (ln_py_plan_from_dict(plan_obj, &plan) < 0)
        return NULL;
    PyObject *keep;
    ln_image view, out;
    if (ln_py_image_arg(array, "array", &view, &keep) < 0)
        return NULL;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_apply_plan(&view, &plan, &settings, &out, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    PyObject *result = ln_py_array_from_image(&out);
    ln_image_free(&out);
    return result;
}

static PyObject *py_export_files(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"jobs", "threads", "format", "quality", "max_pixels", "jpeg_decoder",
                             "apply_orientation", NULL};
    PyObject *jobs_obj, *threads_obj = Py_None, *max_pixels = Py_None;
    const char *format = "png", *jpeg_decoder = "libjpeg";
    int quality = 95, apply_orientation = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OsiOsp:export_files", kwlist, &jobs_obj, &threads_obj, &format,
                                     &quality, &max_pixels, &jpeg_decoder, &apply_orientation))
        return NULL;
    int threads;
    if (ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    ln_export_opts opts;
    ln_export_opts_init(&opts);
    ln_settings_from_env(&opts.settings);
    if (ln_py_decode_opts(max_pixels, jpeg_decoder, 0, apply_orientation, 0, &opts.decode) < 0)
        return NULL;
    if (strcmp(format, "png") == 0) {
        opts.format = LN_OUTPUT_PNG;
    } else if (strcmp(format, "jpg") == 0 || strcmp(format, "jpeg") == 0) {
        opts.format = LN_OUTPUT_JPEG;
    } else {
        PyErr_Format(PyExc_ValueError, "format must be 'png' or 'jpg', got '%s'", format);
        return NULL;
    }
    if (quality < 1 || quality > 100) {
        PyErr_SetString(PyExc_ValueError, "quality must be between 1 and 100");
        return NULL;
    }
    opts.quality = quality;

    PyObject *seq = PySequence_Fast(jobs_obj, "jobs must be a sequence of (src, dst, (width, height), plan)");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    /* Two path lists: sources at [0, n), destinations at [n, 2n). */
    ln_py_paths pl = {0};
    if (ln_py_paths_init(&pl, 2 * n) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    ln_export_job *jobs = calloc((size_t)n + 1, sizeof(ln_export_job));
    int *status = calloc((size_t)n + 1, sizeof(int));
    ln_error *errors = calloc((size_t)n + 1, sizeof(ln_error));
    PyObject *out = NULL;
    if (!jobs || !status || !errors) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *src, *dst, *plan_obj, *file_hash = Py_None;
        int ew, eh;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "OO(ii)O|O", &src, &dst, &ew, &eh, &plan_obj,
                              &file_hash))
            goto done;
        if (file_hash != Py_None) {
            jobs[i].expect_file_hash = PyLong_AsUnsignedLongLong(file_hash);
            if (PyErr_Occurred())
                goto done;
            jobs[i].check_file_hash = 1;
        }
        if (ln_py_paths_set(&pl, i, src) < 0 || ln_py_paths_set(&pl, n + i, dst) < 0 ||
            ln_py_plan_from_dict(plan_obj, &jobs[i].plan) < 0)
            goto done;
        jobs[i].src = pl.ptrs[i];
        jobs[i].dst = pl.ptrs[n + i];
        jobs[i].expect_width = ew;
        jobs[i].expect_height = eh;
    }
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_export_files(jobs, (size_t)n, &opts, threads, status, errors, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK) {
        ln_py_raise(self, &err);
        goto done;
    }
    out = ln_py_job_messages(status, errors, n);
done:
    free(jobs);
    free(status);
    free(errors);
    ln_py_paths_free(&pl);
    Py_DECREF(seq);
    return out;
}

static PyObject *py_quality_metrics(PyObject *self, PyObject *array)
{
    PyObject *keep;
    ln_image view;
    if (ln_py_image_arg(array, "array", &view, &keep) < 0)
        return NULL;
    if (view.channels != 3) {
        Py_DECREF(keep);
        PyErr_SetString(PyExc_ValueError, "quality_metrics needs an RGB image (H, W, 3)");
        return NULL;
    }
    ln_quality q;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    Py_BEGIN_ALLOW_THREADS
    rc = ln_quality_compute(&view, &q, &settings, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    return Py_BuildValue("{s:d,s:d,s:i,s:i,s:d,s:d}", "blur", q.blur, "mean_luma", q.mean_luma, "p1_luma", q.p1_luma,
                         "p99_luma", q.p99_luma, "entropy", q.entropy, "color_fraction", q.color_fraction);
}

static PyMethodDef pipeline_methods[] = {
    {"quality_metrics", py_quality_metrics, METH_O,
     "quality_metrics(rgb_array) -> dict: blur, mean_luma, p1_luma, p99_luma, entropy, color_fraction "
     "(measured on the 256-px box downscale)."},
    {"analyze_files", (PyCFunction)(void (*)(void))py_analyze_files, METH_VARARGS | METH_KEYWORDS,
     "analyze_files(paths, threads=None, max_pixels=None, jpeg_decoder='libjpeg', apply_orientation=True, "
     "thumb_size=0, header_only=False) -> list of dicts (reason, metrics, hashes, thumbnail) in the order of "
     "paths. header_only: read, hash and check the structure without decoding pixels (decoded is False; width "
     "and height are the header's size after EXIF orientation)."},
    {"hash_files", (PyCFunction)(void (*)(void))py_hash_files, METH_VARARGS | METH_KEYWORDS,
     "hash_files(paths, threads=None, max_pixels=None, jpeg_decoder='libjpeg', jpeg_draft_min_side=0, "
     "apply_orientation=True) -> (uint64 array (N, 3) of aHash, dHash, pHash; list of reasons). Rows of files "
     "that could not be decoded are 0 with their reason."},
    {"export_files", (PyCFunction)(void (*)(void))py_export_files, METH_VARARGS | METH_KEYWORDS,
     "export_files(jobs, threads=None, format='png', quality=95, ...) -> list of None or error message. "
     "Each job is (src, dst, (width, height), plan[, file_hash]); a source whose size or (when given) XXH64 "
     "differs from the analysis is refused. Outputs are written atomically."},
    {"bucket_resolutions", (PyCFunction)(void (*)(void))py_bucket_resolutions, METH_VARARGS | METH_KEYWORDS,
     "bucket_resolutions((w, h), min_size=256, max_size=1024, step=64) -> sorted list of (w, h)."},
    {"bucket_select", (PyCFunction)(void (*)(void))py_bucket_select, METH_VARARGS | METH_KEYWORDS,
     "bucket_select((w, h), resolutions, no_upscale=False, max_area=0, step=64) -> (bucket, resized)."},
    {"plan_crop", py_plan_crop, METH_VARARGS, "plan_crop((w, h), (out_w, out_h)) -> plan (cover + center crop)."},
    {"plan_pad", py_plan_pad, METH_VARARGS, "plan_pad((w, h), (out_w, out_h)) -> plan (fit + white padding)."},
    {"plan_bucket", py_plan_bucket, METH_VARARGS,
     "plan_bucket((w, h), bucket, resized) -> plan (resize to `resized`, center-trim to `bucket`)."},
    {"apply_plan", py_apply_plan, METH_VARARGS, "apply_plan(array, plan) -> resized array (Lanczos)."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_pipeline(PyObject *m)
{
    return PyModule_AddFunctions(m, pipeline_methods);
}
