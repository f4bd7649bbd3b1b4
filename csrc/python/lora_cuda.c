/* Glue for the CUDA LoRA kernels (the .cu files in csrc/lora/): merge, fused branch forward/backward and the
 * multi-tensor AdamW step, on device pointers given as Python ints (torch's tensor.data_ptr())
 * and a stream given as an int (torch.cuda.current_stream().cuda_stream; 0 = legacy default).
 * The calls only enqueue work; the GIL is released around them. Without LN_WITH_CUDA this
 * file registers nothing. */
#include "glue.h"

#ifdef LN_WITH_CUDA

#include "ln_lora.h"

/* O& converter: int (0 = NULL) or None -> void *. */
static int ptr_conv(PyObject *obj, void *out)
{
    void **p = out;
    if (obj == Py_None) {
        *p = NULL;
        return 1;
    }
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected a pointer as int (tensor.data_ptr()) or None, got %.80s",
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    void *v = PyLong_AsVoidPtr(obj);
    if (!v && PyErr_Occurred())
        return 0;
    *p = v;
    return 1;
}

/* O& converter: dtype code 0 (float32), 1 (float16) or 2 (bfloat16). */
static int dtype_conv(PyObject *obj, void *out)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return 0;
    if (v < LN_DT_F32 || v > LN_DT_BF16) {
        PyErr_Format(PyExc_ValueError, "dtype must be 0 (float32), 1 (float16) or 2 (bfloat16), got %ld", v);
        return 0;
    }
    *(ln_dtype *)out = (ln_dtype)v;
    return 1;
}

static PyObject *py_lora_merge_cuda(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"w_ptr", "w_dtype", "rows", "cols", "terms", "backup_ptr", "stream", NULL};
    void *w, *backup, *stream;
    ln_dtype w_dtype;
    long long rows, cols;
    PyObject *terms_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&LLOO&O&:lora_merge_cuda", kwlist, ptr_conv, &w, dtype_conv,
                                     &w_dtype, &rows, &cols, &terms_obj, ptr_conv, &backup, ptr_conv, &stream))
        return NULL;
    ln_lora_term *terms;
    Py_ssize_t n;
    if (ln_py_lora_terms(terms_obj, &terms, &n) < 0)
        return NULL;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_lora_merge_cuda(w, w_dtype, rows, cols, terms, (int)n, backup, stream, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(terms);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyObject *py_lora_branch_forward_cuda(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"x_ptr", "x_dtype", "m", "in_features", "out_features", "rank", "down_ptr",
                             "up_ptr", "mask_ptr", "scale", "y_ptr", "y_dtype", "h_ptr", "stream", NULL};
    void *x, *down, *up, *mask, *y, *h, *stream;
    ln_dtype x_dtype, y_dtype;
    long long m, in, out, r;
    float scale;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&LLLLO&O&O&fO&O&O&O&:lora_branch_forward_cuda", kwlist,
                                     ptr_conv, &x, dtype_conv, &x_dtype, &m, &in, &out, &r, ptr_conv, &down,
                                     ptr_conv, &up, ptr_conv, &mask, &scale, ptr_conv, &y, dtype_conv, &y_dtype,
                                     ptr_conv, &h, ptr_conv, &stream))
        return NULL;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_lora_branch_forward_cuda(x, x_dtype, m, in, out, r, down, up, mask, scale, y, y_dtype, h, stream, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyObject *py_lora_branch_backward_cuda(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"dy_ptr",  "dy_dtype", "x_ptr",     "x_dtype", "m",        "in_features",
                             "out_features", "rank", "down_ptr", "up_ptr",  "h_ptr",    "mask_ptr",
                             "scale",   "ddown_ptr", "dup_ptr",  "dx_ptr",  "dx_dtype", "dx_accumulate",
                             "stream",  NULL};
    void *dy, *x, *down, *up, *h, *mask, *ddown, *dup, *dx, *stream;
    ln_dtype dy_dtype, x_dtype, dx_dtype;
    long long m, in, out, r;
    float scale;
    int dx_accumulate;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&O&O&LLLLO&O&O&O&fO&O&O&O&pO&:lora_branch_backward_cuda",
                                     kwlist, ptr_conv, &dy, dtype_conv, &dy_dtype, ptr_conv, &x, dtype_conv,
                                     &x_dtype, &m, &in, &out, &r, ptr_conv, &down, ptr_conv, &up, ptr_conv, &h,
                                     ptr_conv, &mask, &scale, ptr_conv, &ddown, ptr_conv, &dup, ptr_conv, &dx,
                                     dtype_conv, &dx_dtype, &dx_accumulate, ptr_conv, &stream))
        return NULL;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_lora_branch_backward_cuda(dy, dy_dtype, x, x_dtype, m, in, out, r, down, up, h, mask, scale, ddown, dup,
                                      dx, dx_dtype, dx_accumulate, stream, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyObject *py_adamw_step_cuda(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"tensors", "beta1", "beta2", "eps", "grad_scale", "stream", NULL};
    PyObject *tensors_obj;
    float beta1, beta2, eps, grad_scale;
    void *stream;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OffffO&:adamw_step_cuda", kwlist, &tensors_obj, &beta1, &beta2,
                                     &eps, &grad_scale, ptr_conv, &stream))
        return NULL;
    ln_adamw_tensor *ts;
    Py_ssize_t n;
    if (ln_py_adamw_tensors(tensors_obj, &ts, &n) < 0)
        return NULL;
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_adamw_step_cuda(ts, (int)n, beta1, beta2, eps, grad_scale, stream, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(ts);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
}

static PyMethodDef lora_cuda_methods[] = {
    {"lora_merge_cuda", (PyCFunction)(void (*)(void))py_lora_merge_cuda, METH_VARARGS | METH_KEYWORDS,
     "lora_merge_cuda(w_ptr, w_dtype, rows, cols, terms, backup_ptr, stream): W += sum scale*up@down on the GPU; "
     "terms = [(up_ptr, up_dtype, down_ptr, down_dtype, rank, scale)]. Enqueued on `stream`."},
    {"lora_branch_forward_cuda", (PyCFunction)(void (*)(void))py_lora_branch_forward_cuda,
     METH_VARARGS | METH_KEYWORDS,
     "lora_branch_forward_cuda(x_ptr, x_dtype, m, in_features, out_features, rank, down_ptr, up_ptr, mask_ptr, "
     "scale, y_ptr, y_dtype, h_ptr, stream): h = x@down^T; y += scale*(h*mask)@up^T on the GPU."},
    {"lora_branch_backward_cuda", (PyCFunction)(void (*)(void))py_lora_branch_backward_cuda,
     METH_VARARGS | METH_KEYWORDS,
     "lora_branch_backward_cuda(dy_ptr, dy_dtype, x_ptr, x_dtype, m, in_features, out_features, rank, down_ptr, "
     "up_ptr, h_ptr, mask_ptr, scale, ddown_ptr, dup_ptr, dx_ptr, dx_dtype, dx_accumulate, stream): gradients "
     "of the fused branch on the GPU."},
    {"adamw_step_cuda", (PyCFunction)(void (*)(void))py_adamw_step_cuda, METH_VARARGS | METH_KEYWORDS,
     "adamw_step_cuda(tensors, beta1, beta2, eps, grad_scale, stream): one torch.optim.AdamW step on fp32 "
     "device tensors; tensors = [(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, n, lr, weight_decay, step)]."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_lora_cuda(PyObject *m)
{
    return PyModule_AddFunctions(m, lora_cuda_methods);
}

#else

int ln_py_register_lora_cuda(PyObject *m)
{
    (void)m;
    return 0;
}

#endif
