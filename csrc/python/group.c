/* Glue for csrc/hash/group.c: near-duplicate grouping by Hamming distance. */
#include "glue.h"

static PyMethodDef group_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_group(PyObject *m)
{
    return PyModule_AddFunctions(m, group_methods);
}
