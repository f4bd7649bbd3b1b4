/* Glue for csrc/image/encode.c: PNG/JPEG encoding. */
#include "glue.h"

static PyMethodDef encode_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_encode(PyObject *m)
{
    return PyModule_AddFunctions(m, encode_methods);
}
