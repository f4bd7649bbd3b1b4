/* Glue for csrc/image/decode.c: decode with file checks and reason records. Arguments are
 * checked here, decoding runs with the GIL released, pixels come back as HxWx3 uint8 arrays
 * that own the C buffer. */
#include "glue.h"
#include "ln_decode.h"

#include <stdlib.h>
#include <string.h>

#define LN_PIXELS_CAPSULE "lora_native.pixels"

typedef struct {
    ln_decode_opts opts;
    char ext[64];
} py_decode_opts;

/* The keyword-only options every decode function takes, as PyArg_Parse sees them. */
typedef struct {
    PyObject *ext, *max_pixels;
    const char *jpeg_decoder;
    int draft, orient, header_only;
} option_args;

#define OPTION_ARGS_INIT {Py_None, Py_None, "libjpeg", 0, 1, 0}
#define OPTION_KWLIST "ext", "max_pixels", "jpeg_decoder", "jpeg_draft_min_side", "apply_orientation", "header_only"
#define OPTION_FORMAT "OOsipp"
#define OPTION_REFS(a) &(a).ext, &(a).max_pixels, &(a).jpeg_decoder, &(a).draft, &(a).orient, &(a).header_only

/* Fills o from the shared keyword arguments. Returns 0, or -1 with an exception set. */
int ln_py_decode_opts(PyObject *max_pixels, const char *jpeg_decoder, int draft, int orient, int header_only,
                      ln_decode_opts *opts)
{
    ln_decode_opts_init(opts);
    if (max_pixels && max_pixels != Py_None) {
        unsigned long long v = PyLong_AsUnsignedLongLong(max_pixels);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, "max_pixels must be a positive integer");
            }
            return -1;
        }
        if (v == 0) {
            PyErr_SetString(PyExc_ValueError, "max_pixels must be a positive integer (None for the default)");
            return -1;
        }
        opts->max_pixels = v;
    }
    if (!jpeg_decoder || !strcmp(jpeg_decoder, "libjpeg")) {
        opts->jpeg_decoder = LN_JPEG_LIBJPEG;
    } else if (!strcmp(jpeg_decoder, "stb")) {
        opts->jpeg_decoder = LN_JPEG_STB;
    } else {
        PyErr_Format(PyExc_ValueError, "jpeg_decoder must be 'libjpeg' or 'stb', got '%s'", jpeg_decoder);
        return -1;
    }
    if (draft < 0) {
        PyErr_SetString(PyExc_ValueError, "jpeg_draft_min_side must be >= 0");
        return -1;
    }
    opts->jpeg_draft_min_side = draft;
    opts->apply_orientation = orient;
    opts->header_only = header_only;
    return 0;
}

/* Fills o from the shared keyword arguments. Returns 0, or -1 with an exception set. */
static int parse_opts(const option_args *a, py_decode_opts *o)
{
    if (ln_py_decode_opts(a->max_pixels, a->jpeg_decoder, a->draft, a->orient, a->header_only, &o->opts) < 0)
        return -1;
    o->ext[0] = '\0';
    PyObject *ext = a->ext;
    if (ext && ext != Py_None) {
        const char *s;
        Py_ssize_t len;
        if (PyUnicode_Check(ext)) {
            if (!(s = PyUnicode_AsUTF8AndSize(ext, &len)))
                return -1;
        } else if (PyBytes_Check(ext)) {
            s = PyBytes_AS_STRING(ext);
            len = PyBytes_GET_SIZE(ext);
        } else {
            PyErr_SetString(PyExc_TypeError, "ext must be a str, bytes or None");
            return -1;
        }
        if ((size_t)len >= sizeof o->ext || memchr(s, '\0', (size_t)len))
            len = 0; /* absurd extensions are no extension */
        memcpy(o->ext, s, (size_t)len);
        o->ext[len] = '\0';
        o->opts.ext = o->ext;
    }
    return 0;
}

static void free_pixels(PyObject *capsule)
{
    free(PyCapsule_GetPointer(capsule, LN_PIXELS_CAPSULE));
}

/* Hands img's buffer to a new array (or None when empty). img is left empty either way. */
static PyObject *image_to_array(ln_image *img)
{
    if (!img->data)
        Py_RETURN_NONE;
    npy_intp dims[3] = {img->height, img->width, 3};
    npy_intp strides[3] = {(npy_intp)img->stride, 3, 1};
    PyObject *cap = PyCapsule_New(img->data, LN_PIXELS_CAPSULE, free_pixels);
    if (!cap) {
        ln_image_free(img);
        return NULL;
    }
    void *data = img->data;
    memset(img, 0, sizeof *img); /* the capsule owns the buffer now */
    PyObject *arr = PyArray_New(&PyArray_Type, 3, dims, NPY_UINT8, strides, data, 0, NPY_ARRAY_WRITEABLE, NULL);
    if (!arr) {
        Py_DECREF(cap);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, cap) < 0) { /* steals cap */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

PyObject *ln_py_decode_info_dict(const ln_decode_info *info)
{
    PyObject *notes = PyList_New(0);
    if (!notes)
        return NULL;
    for (int i = 0; i < LN_NOTE_COUNT_BITS; i++) {
        if (!(info->notes & (1u << i)))
            continue;
        PyObject *s = PyUnicode_FromString(ln_note_name(1u << i));
        if (!s || PyList_Append(notes, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(notes);
            return NULL;
        }
        Py_DECREF(s);
    }
    /* Messages may quote bytes from the file; never fail on them. */
    PyObject *msg = PyUnicode_DecodeUTF8(info->message, (Py_ssize_t)strnlen(info->message, sizeof info->message),
                                         "replace");
    if (!msg) {
        Py_DECREF(notes);
        return NULL;
    }
    return Py_BuildValue("{s:s,s:s,s:N,s:N,s:i,s:i,s:i,s:i,s:i,s:i}", "format", ln_format_name(info->format),
                         "reason", ln_reason_name(info->reason), "message", msg, "notes", notes, "width",
                         info->width, "height", info->height, "channels", info->channels, "bit_depth",
                         info->bit_depth, "frames", info->frames, "orientation", info->orientation);
}

/* (array or None, info dict); takes over img's buffer. */
static PyObject *result_tuple(ln_image *img, const ln_decode_info *info)
{
    PyObject *arr = image_to_array(img);
    if (!arr)
        return NULL;
    PyObject *d = ln_py_decode_info_dict(info);
    if (!d) {
        Py_DECREF(arr);
        return NULL;
    }
    return Py_BuildValue("(NN)", arr, d);
}

/* (pixels | None, info) from one ln_decode_memory or ln_decode_file call, GIL released. */
static PyObject *decode_released(PyObject *self, const Py_buffer *view, const char *path, const ln_decode_opts *opts)
{
    ln_image img;
    ln_decode_info info;
    ln_error err;
    int rc;
    ln_error_clear(&err);
    Py_BEGIN_ALLOW_THREADS
    rc = view ? ln_decode_memory(view->buf, (size_t)view->len, opts, &img, &info, &err)
              : ln_decode_file(path, opts, &img, &info, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    return result_tuple(&img, &info);
}

static PyObject *py_decode(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"data", OPTION_KWLIST, NULL};
    PyObject *data;
    option_args a = OPTION_ARGS_INIT;
    py_decode_opts o;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$" OPTION_FORMAT ":decode", kwlist, &data, OPTION_REFS(a)) ||
        parse_opts(&a, &o) < 0 || PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = decode_released(self, &view, NULL, &o.opts);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *py_decode_file(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", OPTION_KWLIST, NULL};
    PyObject *path = NULL;
    option_args a = OPTION_ARGS_INIT;
    py_decode_opts o;
    /* bytes paths (os.fsencode) so names that are not UTF-8 still work */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|$" OPTION_FORMAT ":decode_file", kwlist, PyUnicode_FSConverter,
                                     &path, OPTION_REFS(a)))
        return NULL;
    PyObject *result = parse_opts(&a, &o) < 0 ? NULL : decode_released(self, NULL, PyBytes_AS_STRING(path), &o.opts);
    Py_DECREF(path);
    return result;
}

typedef struct {
    const char **paths;
    const ln_decode_opts *opts;
    ln_image *images;
    ln_decode_info *infos;
    int *status;
    ln_error *worker_err; /* one per worker: the last error it met */
} batch_ctx;

static void decode_one(void *vctx, size_t i, int worker)
{
    batch_ctx *c = vctx;
    ln_error err;
    ln_error_clear(&err);
    c->status[i] = ln_decode_file(c->paths[i], c->opts, &c->images[i], &c->infos[i], &err);
    if (c->status[i] != LN_OK)
        c->worker_err[worker] = err;
}

static PyObject *py_decode_files(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"paths", "threads", OPTION_KWLIST, NULL};
    PyObject *paths, *threads_obj = Py_None;
    option_args a = OPTION_ARGS_INIT;
    py_decode_opts o;
    int threads;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$" OPTION_FORMAT ":decode_files", kwlist, &paths, &threads_obj,
                                     OPTION_REFS(a)) ||
        ln_py_threads_arg(threads_obj, &threads) < 0 || parse_opts(&a, &o) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(paths, "paths must be a sequence of str, bytes or os.PathLike");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t un = (size_t)n, slots = un ? un : 1;
    int nworkers = ln_resolve_threads(threads, un);
    ln_py_paths encoded = {0};
    batch_ctx c = {
        .opts = &o.opts,
        .images = calloc(slots, sizeof *c.images),
        .infos = calloc(slots, sizeof *c.infos),
        .status = calloc(slots, sizeof *c.status),
        .worker_err = calloc((size_t)nworkers, sizeof *c.worker_err),
    };
    PyObject *result = NULL;
    if (!c.images || !c.infos || !c.status || !c.worker_err) {
        PyErr_NoMemory();
        goto done;
    }
    if (ln_py_paths_from_seq(&encoded, seq) < 0)
        goto done;
    c.paths = encoded.ptrs;
    Py_BEGIN_ALLOW_THREADS
    ln_parallel_for(threads, un, 1, decode_one, &c);
    Py_END_ALLOW_THREADS
    for (size_t i = 0; i < un; i++) {
        if (c.status[i] == LN_OK)
            continue;
        for (int w = 0; w < nworkers; w++)
            if (c.worker_err[w].code != LN_OK) {
                ln_py_raise(self, &c.worker_err[w]);
                goto done;
            }
        ln_error unknown = {LN_ERR_INTERNAL, "decode_files: a file failed without a message"};
        ln_py_raise(self, &unknown);
        goto done;
    }
    if (!(result = PyList_New(n)))
        goto done;
    for (size_t i = 0; i < un; i++) {
        PyObject *t = result_tuple(&c.images[i], &c.infos[i]);
        if (!t) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)i, t);
    }
done:
    if (c.images)
        for (size_t i = 0; i < un; i++)
            ln_image_free(&c.images[i]); /* only those not handed to an array */
    ln_py_paths_free(&encoded);
    free(c.images);
    free(c.infos);
    free(c.status);
    free(c.worker_err);
    Py_DECREF(seq);
    return result;
}

static PyObject *name_list(const char *(*name_of)(unsigned), unsigned count)
{
    PyObject *list = PyList_New(0);
    for (unsigned i = 0; list && i < count; i++) {
        PyObject *s = PyUnicode_FromString(name_of(i));
        if (!s || PyList_Append(list, s) < 0)
            Py_CLEAR(list);
        Py_XDECREF(s);
    }
    return list;
}

static const char *reason_at(unsigned i) { return ln_reason_name((ln_reason)i); }
static const char *format_at(unsigned i) { return ln_format_name((ln_format)i); }
static const char *note_at(unsigned i) { return ln_note_name(1u << i); }

static PyObject *py_decode_names(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *r = name_list(reason_at, LN_REASON_COUNT), *f = name_list(format_at, LN_FORMAT_COUNT),
             *n = name_list(note_at, LN_NOTE_COUNT_BITS);
    if (!r || !f || !n) {
        Py_XDECREF(r);
        Py_XDECREF(f);
        Py_XDECREF(n);
        return NULL;
    }
    return Py_BuildValue("{s:N,s:N,s:N}", "reasons", r, "formats", f, "notes", n);
}

PyDoc_STRVAR(decode_doc,
             "decode(data, *, ext=None, max_pixels=None, jpeg_decoder='libjpeg', jpeg_draft_min_side=0,\n"
             "       apply_orientation=True, header_only=False) -> (pixels | None, info)\n\n"
             "Decode image bytes (any bytes-like object) to an HxWx3 uint8 RGB array. A broken or odd file\n"
             "is not an exception: pixels is None and info['reason'] / info['message'] say why. info keys:\n"
             "format, reason, message, notes, width, height, channels, bit_depth, frames, orientation.");
PyDoc_STRVAR(decode_file_doc,
             "decode_file(path, *, ext=None, ...) -> (pixels | None, info)\n\n"
             "Like decode() on the file's bytes; path may be str, bytes or os.PathLike (passed to the OS as\n"
             "bytes, so names that are not UTF-8 work). ext defaults to the path's extension. A missing,\n"
             "unreadable or empty file is a reason ('unreadable', 'empty_file'), not an exception.");
PyDoc_STRVAR(decode_files_doc,
             "decode_files(paths, threads=None, *, ...) -> list of (pixels | None, info)\n\n"
             "decode_file over many paths on up to `threads` threads (None or 0: all cores), GIL released.");

static PyMethodDef decode_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS, decode_doc},
    {"decode_file", (PyCFunction)(void (*)(void))py_decode_file, METH_VARARGS | METH_KEYWORDS, decode_file_doc},
    {"decode_files", (PyCFunction)(void (*)(void))py_decode_files, METH_VARARGS | METH_KEYWORDS, decode_files_doc},
    {"decode_names", py_decode_names, METH_NOARGS, "decode_names() -> {'reasons', 'formats', 'notes'}: the C name tables."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_decode(PyObject *m)
{
    return PyModule_AddFunctions(m, decode_methods);
}
