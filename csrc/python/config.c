/* Glue for csrc/config: the YAML config loader (libyaml) and its key schema. */
#include "glue.h"

#include "ln_config.h"

/* C value -> Python: None, str, int, float, bool, tuple of str, (width, height). */
static PyObject *value_to_py(const ln_cfg_value *v)
{
    switch (v->kind) {
    case LN_CFG_V_NULL: Py_RETURN_NONE;
    case LN_CFG_V_STR: return PyUnicode_DecodeUTF8(v->s, (Py_ssize_t)v->len, "strict");
    case LN_CFG_V_INT: return PyLong_FromLongLong((long long)v->i);
    case LN_CFG_V_FLOAT: return PyFloat_FromDouble(v->f);
    case LN_CFG_V_BOOL: return PyBool_FromLong((long)v->i);
    case LN_CFG_V_PAIR: return Py_BuildValue("(LL)", (long long)v->pair[0], (long long)v->pair[1]);
    case LN_CFG_V_LIST: {
        PyObject *t = PyTuple_New((Py_ssize_t)v->n_items);
        if (!t)
            return NULL;
        for (size_t i = 0; i < v->n_items; i++) {
            PyObject *s = PyUnicode_DecodeUTF8(v->items[i], (Py_ssize_t)strlen(v->items[i]), "strict");
            if (!s) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, (Py_ssize_t)i, s);
        }
        return t;
    }
    }
    PyErr_SetString(PyExc_SystemError, "unknown config value kind");
    return NULL;
}

/* One ConfigError for a problem; line/column 0 mean "no position". */
static PyObject *make_error(PyObject *module, const ln_cfg_diag *d, PyObject *path, PyObject *origin,
                            PyObject *errors, int more)
{
    PyObject *kwargs = Py_BuildValue("{s:O,s:O,s:O,s:i}", "path", path ? path : Py_None, "origin",
                                     origin ? origin : Py_None, "errors", errors ? errors : Py_None, "more", more);
    PyObject *args = NULL, *exc = NULL;
    if (!kwargs)
        return NULL;
    if (d->line > 0) {
        PyObject *line = PyLong_FromLong(d->line), *column = PyLong_FromLong(d->column);
        int bad = !line || !column || PyDict_SetItemString(kwargs, "line", line) < 0 ||
                  PyDict_SetItemString(kwargs, "column", column) < 0;
        Py_XDECREF(line);
        Py_XDECREF(column);
        if (bad)
            goto done;
    }
    if (d->key[0]) {
        PyObject *key = PyUnicode_DecodeUTF8(d->key, (Py_ssize_t)strlen(d->key), "replace");
        int bad = !key || PyDict_SetItemString(kwargs, "key", key) < 0;
        Py_XDECREF(key);
        if (bad)
            goto done;
    }
    args = Py_BuildValue("(N)", PyUnicode_DecodeUTF8(d->problem, (Py_ssize_t)strlen(d->problem), "replace"));
    if (args)
        exc = PyObject_Call(ln_py_config_error(module), args, kwargs);
done:
    Py_XDECREF(args);
    Py_DECREF(kwargs);
    return exc;
}

/* Raises one ConfigError for every problem in diags (the first one's place, all in .errors). */
static PyObject *raise_diags(PyObject *module, const ln_cfg_diags *diags, PyObject *path, PyObject *origin)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (int i = 0; i < diags->count; i++) {
        PyObject *e = make_error(module, &diags->items[i], path, origin, NULL, 0);
        if (!e || PyList_Append(list, e) < 0) {
            Py_XDECREF(e);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(e);
    }
    PyObject *exc = make_error(module, &diags->items[0], path, origin, list, diags->dropped);
    Py_DECREF(list);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *raise_error(PyObject *module, int rc, const ln_error *err, const ln_cfg_diags *diags,
                             PyObject *path, PyObject *origin)
{
    if (rc == LN_ERR_FORMAT && diags->count > 0)
        return raise_diags(module, diags, path, origin);
    return ln_py_raise(module, err);
}

static PyObject *py_config_parse(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"text", "filename", NULL};
    PyObject *text_obj, *filename = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&:config_parse", kwlist, &text_obj, PyUnicode_FSDecoder,
                                     &filename))
        return NULL;
    if (!PyUnicode_Check(text_obj) && !PyObject_CheckBuffer(text_obj)) {
        Py_DECREF(filename);
        return PyErr_Format(PyExc_TypeError, "text must be str or bytes, not %s", Py_TYPE(text_obj)->tp_name);
    }
    PyObject *bytes = PyUnicode_Check(text_obj) ? PyUnicode_AsUTF8String(text_obj) : PyBytes_FromObject(text_obj);
    if (!bytes) {
        Py_DECREF(filename);
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(filename);
    if (!name) { /* a file name with undecodable bytes: show it with replacement characters */
        PyErr_Clear();
        name = "config";
    }
    ln_config cfg = {0};
    ln_cfg_diags *diags = PyMem_Malloc(sizeof *diags);
    if (!diags) {
        Py_DECREF(bytes);
        Py_DECREF(filename);
        return PyErr_NoMemory();
    }
    ln_error err;
    ln_error_clear(&err);
    int rc;
    const char *buf = PyBytes_AS_STRING(bytes);
    size_t len = (size_t)PyBytes_GET_SIZE(bytes);
    Py_BEGIN_ALLOW_THREADS
    rc = ln_config_parse(buf, len, name, &cfg, diags, &err);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (rc != LN_OK) {
        raise_error(self, rc, &err, diags, filename, NULL);
        goto done;
    }
    result = PyDict_New();
    if (!result)
        goto done;
    size_t n_keys;
    const ln_cfg_key *schema = ln_cfg_schema(&n_keys);
    for (size_t i = 0; i < cfg.count; i++) {
        const ln_cfg_entry *e = &cfg.entries[i];
        if (!e->present)
            continue;
        PyObject *item = Py_BuildValue("(Nii)", value_to_py(&e->value), e->key_line, e->key_column);
        if (!item || PyDict_SetItemString(result, schema[i].name, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(item);
    }
done:
    ln_config_free(&cfg);
    PyMem_Free(diags);
    Py_DECREF(bytes);
    Py_DECREF(filename);
    return result;
}

static PyObject *py_config_parse_value(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"key", "text", "origin", NULL};
    const char *key, *text;
    Py_ssize_t key_len, text_len;
    PyObject *origin = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s#s#|U:config_parse_value", kwlist, &key, &key_len, &text,
                                     &text_len, &origin))
        return NULL;
    PyObject *origin_obj = origin ? (Py_INCREF(origin), origin) : PyUnicode_FromString("command line");
    if (!origin_obj)
        return NULL;
    ln_cfg_diags *diags = PyMem_Malloc(sizeof *diags);
    PyObject *result = NULL;
    if (!diags) {
        PyErr_NoMemory();
        goto done;
    }
    ln_cfg_value v;
    ln_error err;
    ln_error_clear(&err);
    const char *origin_c = PyUnicode_AsUTF8(origin_obj);
    if (!origin_c)
        goto done;
    int rc = ln_config_parse_value(key, (size_t)key_len, text, (size_t)text_len, origin_c, &v, diags, &err);
    if (rc != LN_OK)
        raise_error(self, rc, &err, diags, NULL, origin_obj);
    else
        result = value_to_py(&v);
    ln_cfg_value_free(&v);
done:
    PyMem_Free(diags);
    Py_DECREF(origin_obj);
    return result;
}

/* "float 16.5" for messages about a Python value of the wrong type. */
static void describe_py(PyObject *obj, char *buf, size_t n)
{
    PyObject *r = PyObject_Repr(obj);
    const char *rs = r ? PyUnicode_AsUTF8(r) : NULL;
    if (!rs) {
        PyErr_Clear();
        rs = "?";
    }
    if (strlen(rs) > 60)
        snprintf(buf, n, "%s %.57s...", Py_TYPE(obj)->tp_name, rs);
    else
        snprintf(buf, n, "%s %s", Py_TYPE(obj)->tp_name, rs);
    Py_XDECREF(r);
}

/* A Python str (or os.PathLike for paths) copied into v as V_STR; 0 when obj is not one,
 * -1 with an exception set. */
static int str_value(PyObject *obj, int pathlike, ln_cfg_value *v)
{
    PyObject *s = NULL;
    if (PyUnicode_Check(obj)) {
        s = obj;
        Py_INCREF(s);
    } else if (pathlike && PyObject_HasAttrString(obj, "__fspath__")) {
        PyObject *p = PyOS_FSPath(obj);
        if (!p)
            return -1;
        if (PyBytes_Check(p)) {
            s = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(p), PyBytes_GET_SIZE(p));
            Py_DECREF(p);
        } else {
            s = p;
        }
        if (!s)
            return -1;
    } else {
        return 0;
    }
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(s, &len);
    if (!u) {
        Py_DECREF(s);
        return -1;
    }
    v->s = malloc((size_t)len + 1);
    if (!v->s) {
        Py_DECREF(s);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(v->s, u, (size_t)len + 1);
    v->len = (size_t)len;
    v->kind = LN_CFG_V_STR;
    Py_DECREF(s);
    return 1;
}

static int int_of(PyObject *obj, int64_t *out, int *overflow)
{
    if (PyBool_Check(obj) || !PyIndex_Check(obj))
        return 0;
    PyObject *i = PyNumber_Index(obj);
    if (!i)
        return -1;
    long long v = PyLong_AsLongLongAndOverflow(i, overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 1;
}

/* Python value -> typed C value by the key's schema. 1 ok, 0 wrong type, -1 exception. */
static int py_to_value(const ln_cfg_key *key, PyObject *obj, ln_cfg_value *v, int *overflow)
{
    memset(v, 0, sizeof *v);
    *overflow = 0;
    if (obj == Py_None) {
        v->kind = LN_CFG_V_NULL;
        return 1;
    }
    int rc;
    switch (key->type) {
    case LN_CFG_STRING:
    case LN_CFG_ENUM:
        return str_value(obj, 0, v);
    case LN_CFG_PATH:
        return str_value(obj, 1, v);
    case LN_CFG_INT:
        rc = int_of(obj, &v->i, overflow);
        v->kind = LN_CFG_V_INT;
        return rc;
    case LN_CFG_FLOAT:
        if (PyBool_Check(obj) || PyUnicode_Check(obj) || !(PyFloat_Check(obj) || PyIndex_Check(obj) ||
                                                            (Py_TYPE(obj)->tp_as_number &&
                                                             Py_TYPE(obj)->tp_as_number->nb_float)))
            return 0;
        v->f = PyFloat_AsDouble(obj);
        if (v->f == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();
            *overflow = 1;
        }
        v->kind = LN_CFG_V_FLOAT;
        return 1;
    case LN_CFG_BOOL:
        if (!PyBool_Check(obj))
            return 0;
        v->i = obj == Py_True;
        v->kind = LN_CFG_V_BOOL;
        return 1;
    case LN_CFG_RESOLUTION:
        if ((rc = int_of(obj, &v->pair[0], overflow)) != 0) {
            v->pair[1] = v->pair[0];
        } else if ((PyList_Check(obj) || PyTuple_Check(obj)) && PySequence_Size(obj) == 2) {
            for (Py_ssize_t i = 0; i < 2; i++) {
                PyObject *side = PySequence_GetItem(obj, i);
                if (!side)
                    return -1;
                rc = int_of(side, &v->pair[i], overflow);
                Py_DECREF(side);
                if (rc <= 0)
                    return rc;
            }
            rc = 1;
        }
        v->kind = LN_CFG_V_PAIR;
        return rc;
    case LN_CFG_LIST:
        if ((rc = str_value(obj, 1, v)) != 0)
            return rc;
        if (!PyList_Check(obj) && !PyTuple_Check(obj))
            return 0;
        v->kind = LN_CFG_V_LIST;
        for (Py_ssize_t i = 0; i < PySequence_Size(obj); i++) {
            PyObject *item = PySequence_GetItem(obj, i);
            if (!item)
                return -1;
            Py_ssize_t len;
            const char *u = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &len) : NULL;
            int ok = u && !memchr(u, '\0', (size_t)len);
            int pushed = ok ? ln_cfg_list_push(v, u, (size_t)len) : LN_OK;
            Py_DECREF(item);
            if (!u && PyErr_Occurred())
                return -1;
            if (pushed == LN_ERR_NOMEM) {
                PyErr_NoMemory();
                return -1;
            }
            if (!ok)
                return 0;
        }
        return 1;
    }
    return 0;
}

static PyObject *py_config_check_value(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"key", "value", "origin", NULL};
    const char *key;
    Py_ssize_t key_len;
    PyObject *value, *origin = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s#O|U:config_check_value", kwlist, &key, &key_len, &value,
                                     &origin))
        return NULL;
    PyObject *origin_obj = origin ? (Py_INCREF(origin), origin) : PyUnicode_FromString("api");
    if (!origin_obj)
        return NULL;
    ln_cfg_diags *diags = PyMem_Malloc(sizeof *diags);
    PyObject *result = NULL;
    ln_cfg_value v;
    memset(&v, 0, sizeof v);
    if (!diags) {
        PyErr_NoMemory();
        goto done;
    }
    ln_cfg_diags_init(diags);
    int k = ln_cfg_find_key(key, (size_t)key_len);
    size_t n_keys;
    const ln_cfg_key *schema = ln_cfg_schema(&n_keys);
    if (k < 0) {
        ln_cfg_unknown_key(diags, 0, 0, key, (size_t)key_len);
    } else {
        int overflow = 0;
        int rc = py_to_value(&schema[k], value, &v, &overflow);
        if (rc < 0)
            goto done;
        if (rc == 0) {
            char found[128];
            describe_py(value, found, sizeof found);
            ln_cfg_wrong_type(&schema[k], found, 0, 0, diags);
        } else if (overflow) {
            char found[128];
            describe_py(value, found, sizeof found);
            ln_cfg_diag_add(diags, 0, 0, schema[k].name, strlen(schema[k].name), "%s is too large", found);
        } else {
            ln_cfg_check_value(&schema[k], &v, NULL, 0, 0, diags);
        }
    }
    if (diags->count > 0)
        raise_diags(self, diags, NULL, origin_obj);
    else
        result = value_to_py(&v);
done:
    ln_cfg_value_free(&v);
    PyMem_Free(diags);
    Py_DECREF(origin_obj);
    return result;
}

static PyObject *bound_to_py(const ln_cfg_key *key, unsigned flag, double b)
{
    if (!(key->bounds & flag))
        Py_RETURN_NONE;
    if (key->type == LN_CFG_FLOAT)
        return PyFloat_FromDouble(b);
    return PyLong_FromLongLong((long long)b);
}

static PyObject *choices_to_py(const ln_cfg_key *k)
{
    if (!k->choices)
        Py_RETURN_NONE;
    Py_ssize_t n = 0;
    while (k->choices[n])
        n++;
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t && i < n; i++) {
        PyObject *s = PyUnicode_FromString(k->choices[i]);
        if (!s)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

static PyObject *py_config_schema(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    size_t n;
    const ln_cfg_key *schema = ln_cfg_schema(&n);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const ln_cfg_key *k = &schema[i];
        PyObject *choices = choices_to_py(k);
        PyObject *required = k->need == LN_CFG_REQUIRED_FOR_IMAGES ? PyUnicode_FromString("text-to-image")
                                                                   : PyBool_FromLong(k->need == LN_CFG_REQUIRED);
        PyObject *row = choices && required
                            ? Py_BuildValue("(ssNNNN)", k->name, ln_cfg_type_name(k->type), choices,
                                            bound_to_py(k, LN_CFG_HAS_MIN, k->min),
                                            bound_to_py(k, LN_CFG_HAS_MAX, k->max), required)
                            : NULL;
        if (!row) {
            if (!choices || !required) {
                Py_XDECREF(choices);
                Py_XDECREF(required);
            }
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, row);
    }
    return list;
}

static PyMethodDef config_methods[] = {
    {"config_parse", (PyCFunction)(void (*)(void))py_config_parse, METH_VARARGS | METH_KEYWORDS,
     "config_parse(text: str | bytes, filename: str) -> dict key -> (value, line, column)\n\n"
     "Parses a YAML config against the schema; values are typed by their key (None: written as\n"
     "~ / null / nothing). line, column (1-based) are the key's. Raises lora_native.errors.ConfigError\n"
     "naming filename:line:column and the key, with every problem found in .errors."},
    {"config_parse_value", (PyCFunction)(void (*)(void))py_config_parse_value, METH_VARARGS | METH_KEYWORDS,
     "config_parse_value(key, text, origin='command line') -> value\n\n"
     "Types one value given as text (a --key value override) by the same rules as in a file;\n"
     "list and resolution keys also take [a, b], a resolution also WxH. Errors name `origin`."},
    {"config_check_value", (PyCFunction)(void (*)(void))py_config_check_value, METH_VARARGS | METH_KEYWORDS,
     "config_check_value(key, value, origin='api') -> value\n\n"
     "Checks a Python value for a key (type, range, choices, rules) and returns it normalised\n"
     "(enum spelling, resolution as (w, h), lists as tuples). Raises ConfigError naming `origin`."},
    {"config_schema", py_config_schema, METH_NOARGS,
     "config_schema() -> list of (name, type, choices, min, max, required)\n\n"
     "type: string|path|int|float|bool|enum|list|resolution; choices: tuple or None; min/max: bounds\n"
     "or None (exclusive for learning rates and alphas: > 0; network_dropout and validation_split < 1);\n"
     "required: True, False, or the task_type for which the key is required ('text-to-image')."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_config(PyObject *m)
{
    return PyModule_AddFunctions(m, config_methods);
}
