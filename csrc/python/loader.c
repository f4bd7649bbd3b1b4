/* Glue for training batches: decode + crop/resize many images into one array on the thread pool. */
#include "glue.h"

static PyMethodDef loader_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_loader(PyObject *m)
{
    return PyModule_AddFunctions(m, loader_methods);
}
