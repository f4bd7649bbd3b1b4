/* Glue for csrc/hash/imagehash.c: aHash/dHash/pHash bit-identical to imagehash. */
#include "glue.h"

static PyMethodDef hash_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_hash(PyObject *m)
{
    return PyModule_AddFunctions(m, hash_methods);
}
