/* Module definition of lora_native._native: initialises NumPy and registers each area. */
#define LN_NO_IMPORT_ARRAY
#include "glue.h"

#include <string.h>

typedef struct {
    PyObject *native_error;
    PyObject *config_error;
} module_state;

PyObject *ln_py_native_error(PyObject *module)
{
    module_state *st = module ? PyModule_GetState(module) : NULL;
    return st && st->native_error ? st->native_error : PyExc_RuntimeError;
}

PyObject *ln_py_config_error(PyObject *module)
{
    module_state *st = module ? PyModule_GetState(module) : NULL;
    return st && st->config_error ? st->config_error : PyExc_ValueError;
}

PyObject *ln_py_raise(PyObject *module, const ln_error *err)
{
    const char *msg = err && err->msg[0] ? err->msg : "unknown native error";
    int code = err ? err->code : LN_ERR_INTERNAL;
    switch (code) {
    case LN_ERR_NOMEM:
        PyErr_SetString(PyExc_MemoryError, msg);
        break;
    case LN_ERR_ARG:
        PyErr_SetString(PyExc_ValueError, msg);
        break;
    case LN_ERR_IO:
        PyErr_SetString(PyExc_OSError, msg);
        break;
    default:
        PyErr_SetString(ln_py_native_error(module), msg);
        break;
    }
    return NULL;
}

PyObject *ln_py_job_messages(const int *status, const ln_error *errors, Py_ssize_t n)
{
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *item;
        if (status[i] == LN_ERR_NOMEM) {
            Py_DECREF(out);
            return PyErr_NoMemory();
        }
        if (status[i] == LN_OK) {
            Py_INCREF(Py_None);
            item = Py_None;
        } else if (!(item = PyUnicode_DecodeUTF8(errors[i].msg, (Py_ssize_t)strlen(errors[i].msg), "replace"))) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

int ln_py_threads_arg(PyObject *obj, int *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = 0;
        return 0;
    }
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > 1024) {
        PyErr_Format(PyExc_ValueError, "threads must be between 0 (all cores) and 1024, got %ld", v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int module_exec(PyObject *m)
{
    PyObject *errors = PyImport_ImportModule("lora_native.errors");
    if (!errors)
        return -1;
    PyObject *cls = PyObject_GetAttrString(errors, "NativeError");
    PyObject *config_cls = cls ? PyObject_GetAttrString(errors, "ConfigError") : NULL;
    Py_DECREF(errors);
    if (!config_cls) {
        Py_XDECREF(cls);
        return -1;
    }
    module_state *st = PyModule_GetState(m);
    st->native_error = cls;
    st->config_error = config_cls;
    if (ln_py_register_info(m) < 0 || ln_py_register_decode(m) < 0 || ln_py_register_resample(m) < 0 ||
        ln_py_register_encode(m) < 0 || ln_py_register_hash(m) < 0 || ln_py_register_group(m) < 0 ||
        ln_py_register_pipeline(m) < 0 || ln_py_register_config(m) < 0 || ln_py_register_loader(m) < 0 || ln_py_register_prep(m) < 0 ||
        ln_py_register_lora(m) < 0 || ln_py_register_lora_cuda(m) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    module_state *st = PyModule_GetState(m);
    Py_VISIT(st->native_error);
    Py_VISIT(st->config_error);
    return 0;
}

static int module_clear(PyObject *m)
{
    module_state *st = PyModule_GetState(m);
    Py_CLEAR(st->native_error);
    Py_CLEAR(st->config_error);
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lora_native._native",
    .m_doc = "Native core of lora-native: image decode/checks/hashes/dedup/resample (C11, GIL released).",
    .m_size = sizeof(module_state),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
};

PyMODINIT_FUNC PyInit__native(void)
{
    import_array();
    return PyModuleDef_Init(&module_def);
}
