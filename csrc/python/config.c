/* Glue for csrc/config: the YAML config loader (libyaml) and its key schema. */
#include "glue.h"

static PyMethodDef config_methods[] = {
    {NULL, NULL, 0, NULL},
};

int ln_py_register_config(PyObject *m)
{
    return PyModule_AddFunctions(m, config_methods);
}
