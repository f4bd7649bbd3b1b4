/* Glue for the batch pipeline: analyze and export many files on a thread pool. */
#include "glue.h"

static PyMethodDef pipeline_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_pipeline(PyObject *m)
{
    return PyModule_AddFunctions(m, pipeline_methods);
}
