/* Glue for csrc/image/encode.c: PNG/JPEG encoding of uint8 arrays. */
#include "glue.h"

#include "ln_encode.h"

static PyObject *encode(PyObject *self, PyObject *array, int jpeg, int quality)
{
    PyObject *keep;
    ln_image view;
    if (ln_py_image_arg(array, "array", &view, &keep) < 0)
        return NULL;
    ln_error err;
    ln_error_clear(&err);
    ln_buffer buf;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = jpeg ? ln_encode_jpeg(&view, quality, &buf, &err) : ln_encode_png(&view, &buf, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    PyObject *out = PyBytes_FromStringAndSize((const char *)buf.data, (Py_ssize_t)buf.len);
    ln_buffer_free(&buf);
    return out;
}

static PyObject *py_encode_png(PyObject *self, PyObject *args)
{
    PyObject *array;
    if (!PyArg_ParseTuple(args, "O:encode_png", &array))
        return NULL;
    return encode(self, array, 0, 0);
}

static PyObject *py_encode_jpeg(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"array", "quality", NULL};
    PyObject *array;
    int quality = 95;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|i:encode_jpeg", kwlist, &array, &quality))
        return NULL;
    return encode(self, array, 1, quality);
}

static PyMethodDef encode_methods[] = {
    {"encode_png", py_encode_png, METH_VARARGS, "encode_png(array) -> bytes (PNG; 1, 3 or 4 channels)."},
    {"encode_jpeg", (PyCFunction)(void (*)(void))py_encode_jpeg, METH_VARARGS | METH_KEYWORDS,
     "encode_jpeg(array, quality=95) -> bytes (JPEG; 1 or 3 channels)."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_encode(PyObject *m)
{
    return PyModule_AddFunctions(m, encode_methods);
}
