/* Glue for csrc/lora/: the CPU LoRA kernels on raw pointers (torch's tensor.data_ptr()).
 * lora_native/ops.py guarantees the buffers (valid, contiguous, the right size); here the
 * scalar arguments are checked and the GIL is released around the native work. */
#include "glue.h"
#include "ln_lora.h"

#include <limits.h>

/* A pointer argument: a Python int (0 = NULL, refused when required). */
static int ptr_arg(PyObject *obj, const char *name, int required, void **out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int (a data_ptr()), got %.100s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be an address in [0, 2**64), got %R", name, obj);
        return -1;
    }
    if (v > UINTPTR_MAX || (required && v == 0)) {
        PyErr_Format(PyExc_ValueError, "%s must be a non-null address, got %R", name, obj);
        return -1;
    }
    *out = (void *)(uintptr_t)v;
    return 0;
}

static int dtype_arg(int v, const char *name, ln_dtype *out)
{
    if (v < 0 || v > 2) {
        PyErr_Format(PyExc_ValueError, "%s must be 0 (f32), 1 (f16) or 2 (bf16), got %d", name, v);
        return -1;
    }
    *out = (ln_dtype)v;
    return 0;
}

int ln_py_lora_terms(PyObject *terms_obj, ln_lora_term **out, Py_ssize_t *count)
{
    PyObject *seq = PySequence_Fast(terms_obj, "terms must be a sequence of (up_ptr, up_dtype, down_ptr, "
                                               "down_dtype, rank, scale) tuples");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > INT_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many terms");
        return -1;
    }
    ln_lora_term *terms = PyMem_Calloc((size_t)n + 1, sizeof *terms);
    if (!terms) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *up_obj, *down_obj;
        int up_dt, down_dt;
        long long rank;
        float scale;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OiOiLf", &up_obj, &up_dt, &down_obj, &down_dt, &rank,
                                                      &scale)) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "terms[%zd] must be a tuple (up_ptr, up_dtype, down_ptr, down_dtype, rank, scale)", i);
            }
            goto fail;
        }
        void *up, *down;
        if (ptr_arg(up_obj, "up_ptr", 1, &up) < 0 || ptr_arg(down_obj, "down_ptr", 1, &down) < 0 ||
            dtype_arg(up_dt, "up_dtype", &terms[i].up_dtype) < 0 ||
            dtype_arg(down_dt, "down_dtype", &terms[i].down_dtype) < 0)
            goto fail;
        terms[i].up = up;
        terms[i].down = down;
        terms[i].rank = (int64_t)rank;
        terms[i].scale = scale;
    }
    Py_DECREF(seq);
    *out = terms;
    *count = n;
    return 0;
fail:
    Py_DECREF(seq);
    PyMem_Free(terms);
    return -1;
}

int ln_py_adamw_tensors(PyObject *tensors_obj, ln_adamw_tensor **out, Py_ssize_t *count)
{
    PyObject *seq = PySequence_Fast(tensors_obj, "tensors must be a sequence of (param_ptr, grad_ptr, exp_avg_ptr, "
                                                 "exp_avg_sq_ptr, n, lr, weight_decay, step) tuples");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > INT_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many tensors");
        return -1;
    }
    ln_adamw_tensor *ts = PyMem_Calloc((size_t)n + 1, sizeof *ts);
    if (!ts) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *po, *go, *mo, *vo;
        long long cnt, step;
        float lr, wd;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OOOOLffL", &po, &go, &mo, &vo, &cnt, &lr, &wd, &step)) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "tensors[%zd] must be a tuple (param_ptr, grad_ptr, exp_avg_ptr, "
                                              "exp_avg_sq_ptr, n, lr, weight_decay, step)", i);
            }
            goto fail;
        }
        void *p, *g, *m, *v;
        if (ptr_arg(po, "param_ptr", 1, &p) < 0 || ptr_arg(go, "grad_ptr", 1, &g) < 0 ||
            ptr_arg(mo, "exp_avg_ptr", 1, &m) < 0 || ptr_arg(vo, "exp_avg_sq_ptr", 1, &v) < 0)
            goto fail;
        ts[i] = (ln_adamw_tensor){p, g, m, v, (int64_t)cnt, lr, wd, (int64_t)step};
    }
    Py_DECREF(seq);
    *out = ts;
    *count = n;
    return 0;
fail:
    Py_DECREF(seq);
    PyMem_Free(ts);
    return -1;
}

static PyObject *py_lora_merge(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"w_ptr", "w_dtype", "rows", "cols", "terms", "backup_ptr", "threads", NULL};
    PyObject *w_obj, *terms_obj, *backup_obj, *threads_obj = Py_None;
    int w_dt;
    long long rows, cols;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiLLOO|O:lora_merge", kwlist, &w_obj, &w_dt, &rows, &cols,
                                     &terms_obj, &backup_obj, &threads_obj))
        return NULL;
    void *w, *backup;
    ln_dtype wdt = LN_DT_F32;
    int threads;
    if (ptr_arg(w_obj, "w_ptr", 1, &w) < 0 || ptr_arg(backup_obj, "backup_ptr", 0, &backup) < 0 ||
        dtype_arg(w_dt, "w_dtype", &wdt) < 0 || ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    ln_lora_term *terms;
    Py_ssize_t n;
    if (ln_py_lora_terms(terms_obj, &terms, &n) < 0)
        return NULL;
    ln_settings settings;
    ln_settings_from_env(&settings); /* under the GIL */
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_lora_merge(w, wdt, rows, cols, terms, (int)n, backup, threads, &settings, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(terms);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyObject *py_lora_branch_forward(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"x_ptr", "x_dtype", "m", "in_features", "out_features", "rank", "down_ptr",
                             "up_ptr", "mask_ptr", "scale", "y_ptr", "y_dtype", "h_ptr", "threads", NULL};
    PyObject *x_obj, *down_obj, *up_obj, *mask_obj, *y_obj, *h_obj, *threads_obj = Py_None;
    int x_dt, y_dt;
    long long m, in, out, r;
    float scale;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiLLLLOOOfOiO|O:lora_branch_forward", kwlist, &x_obj, &x_dt, &m,
                                     &in, &out, &r, &down_obj, &up_obj, &mask_obj, &scale, &y_obj, &y_dt, &h_obj,
                                     &threads_obj))
        return NULL;
    void *x, *down, *up, *mask, *y, *h;
    ln_dtype xdt = LN_DT_F32, ydt = LN_DT_F32;
    int threads;
    if (ptr_arg(x_obj, "x_ptr", 1, &x) < 0 || ptr_arg(down_obj, "down_ptr", 1, &down) < 0 ||
        ptr_arg(up_obj, "up_ptr", 1, &up) < 0 || ptr_arg(mask_obj, "mask_ptr", 0, &mask) < 0 ||
        ptr_arg(y_obj, "y_ptr", 1, &y) < 0 || ptr_arg(h_obj, "h_ptr", 0, &h) < 0 ||
        dtype_arg(x_dt, "x_dtype", &xdt) < 0 || dtype_arg(y_dt, "y_dtype", &ydt) < 0 ||
        ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    ln_settings settings;
    ln_settings_from_env(&settings);
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_lora_branch_forward(x, xdt, m, in, out, r, down, up, mask, scale, y, ydt, h, threads, &settings, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyObject *py_lora_branch_backward(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"dy_ptr", "dy_dtype", "x_ptr", "x_dtype", "m", "in_features", "out_features", "rank",
                             "down_ptr", "up_ptr", "h_ptr", "mask_ptr", "scale", "ddown_ptr", "dup_ptr", "dx_ptr",
                             "dx_dtype", "dx_accumulate", "threads", NULL};
    PyObject *dy_obj, *x_obj, *down_obj, *up_obj, *h_obj, *mask_obj, *ddown_obj, *dup_obj, *dx_obj;
    PyObject *threads_obj = Py_None;
    int dy_dt, x_dt, dx_dt, dx_acc;
    long long m, in, out, r;
    float scale;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiOiLLLLOOOOfOOOip|O:lora_branch_backward", kwlist, &dy_obj,
                                     &dy_dt, &x_obj, &x_dt, &m, &in, &out, &r, &down_obj, &up_obj, &h_obj, &mask_obj,
                                     &scale, &ddown_obj, &dup_obj, &dx_obj, &dx_dt, &dx_acc, &threads_obj))
        return NULL;
    void *dy, *x, *down, *up, *h, *mask, *ddown, *dup, *dx;
    ln_dtype dydt = LN_DT_F32, xdt = LN_DT_F32, dxdt = LN_DT_F32;
    int threads;
    if (ptr_arg(dy_obj, "dy_ptr", 1, &dy) < 0 || ptr_arg(x_obj, "x_ptr", 1, &x) < 0 ||
        ptr_arg(down_obj, "down_ptr", 1, &down) < 0 || ptr_arg(up_obj, "up_ptr", 1, &up) < 0 ||
        ptr_arg(h_obj, "h_ptr", 1, &h) < 0 || ptr_arg(mask_obj, "mask_ptr", 0, &mask) < 0 ||
        ptr_arg(ddown_obj, "ddown_ptr", 1, &ddown) < 0 || ptr_arg(dup_obj, "dup_ptr", 1, &dup) < 0 ||
        ptr_arg(dx_obj, "dx_ptr", 0, &dx) < 0 || dtype_arg(dy_dt, "dy_dtype", &dydt) < 0 ||
        dtype_arg(x_dt, "x_dtype", &xdt) < 0 || dtype_arg(dx_dt, "dx_dtype", &dxdt) < 0 ||
        ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    ln_settings settings;
    ln_settings_from_env(&settings);
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_lora_branch_backward(dy, dydt, x, xdt, m, in, out, r, down, up, h, mask, scale, ddown, dup, dx, dxdt,
                                 dx_acc, threads, &settings, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyObject *py_adamw_step(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"tensors", "beta1", "beta2", "eps", "grad_scale", "threads", NULL};
    PyObject *tensors_obj, *threads_obj = Py_None;
    float beta1, beta2, eps, grad_scale;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Offff|O:adamw_step", kwlist, &tensors_obj, &beta1, &beta2, &eps,
                                     &grad_scale, &threads_obj))
        return NULL;
    int threads;
    if (ln_py_threads_arg(threads_obj, &threads) < 0)
        return NULL;
    ln_adamw_tensor *ts;
    Py_ssize_t n;
    if (ln_py_adamw_tensors(tensors_obj, &ts, &n) < 0)
        return NULL;
    ln_settings settings;
    ln_settings_from_env(&settings);
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_adamw_step(ts, (int)n, beta1, beta2, eps, grad_scale, threads, &settings, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(ts);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyMethodDef lora_methods[] = {
    {"lora_merge", (PyCFunction)(void (*)(void))py_lora_merge, METH_VARARGS | METH_KEYWORDS,
     "lora_merge(w_ptr, w_dtype, rows, cols, terms, backup_ptr, threads=None)\n\n"
     "W[rows, cols] += sum scale * up @ down in place (one pass, fp32 accumulation, one rounding).\n"
     "terms: (up_ptr, up_dtype, down_ptr, down_dtype, rank, scale) tuples; dtypes 0=f32 1=f16 2=bf16;\n"
     "backup_ptr (0 = none) receives W's old values."},
    {"lora_branch_forward", (PyCFunction)(void (*)(void))py_lora_branch_forward, METH_VARARGS | METH_KEYWORDS,
     "lora_branch_forward(x_ptr, x_dtype, m, in_features, out_features, rank, down_ptr, up_ptr, mask_ptr, scale,\n"
     "y_ptr, y_dtype, h_ptr, threads=None)\n\n"
     "h = x @ down^T (fp32, into h_ptr unless 0); y += scale * (h * mask) @ up^T. mask_ptr 0 = no mask."},
    {"lora_branch_backward", (PyCFunction)(void (*)(void))py_lora_branch_backward, METH_VARARGS | METH_KEYWORDS,
     "lora_branch_backward(dy_ptr, dy_dtype, x_ptr, x_dtype, m, in_features, out_features, rank, down_ptr, up_ptr,\n"
     "h_ptr, mask_ptr, scale, ddown_ptr, dup_ptr, dx_ptr, dx_dtype, dx_accumulate, threads=None)\n\n"
     "Backward of lora_branch_forward: dup and ddown (fp32) overwritten; dx (+)= g @ down unless dx_ptr is 0."},
    {"adamw_step", (PyCFunction)(void (*)(void))py_adamw_step, METH_VARARGS | METH_KEYWORDS,
     "adamw_step(tensors, beta1, beta2, eps, grad_scale, threads=None)\n\n"
     "torch.optim.AdamW's update for fp32 tensors given as (param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr,\n"
     "n, lr, weight_decay, step) tuples; step is the step number after this update; grads are divided\n"
     "by grad_scale first."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_lora(PyObject *m)
{
    return PyModule_AddFunctions(m, lora_methods);
}
