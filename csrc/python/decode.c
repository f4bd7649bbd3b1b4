/* Glue for csrc/image/decode.c: decode with file checks and reason records. */
#include "glue.h"

static PyMethodDef decode_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_decode(PyObject *m)
{
    return PyModule_AddFunctions(m, decode_methods);
}
