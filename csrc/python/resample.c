/* Glue for csrc/image/resample.c: Pillow-exact resize and grayscale conversion. */
#include "glue.h"

static PyMethodDef resample_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_resample(PyObject *m)
{
    return PyModule_AddFunctions(m, resample_methods);
}
