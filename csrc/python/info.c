/* build_info() and CUDA device queries. */
#include "glue.h"

#include <jpeglib.h>
#include <webp/decode.h>
#include <yaml.h>

#ifdef LN_WITH_CUDA
#include "ln_cuda.h"
#endif

static PyObject *py_build_info(PyObject *self, PyObject *noargs)
{
    (void)noargs;
    (void)self;
    char webp_version[32];
    int wv = WebPGetDecoderVersion();
    snprintf(webp_version, sizeof webp_version, "%d.%d.%d", (wv >> 16) & 0xff, (wv >> 8) & 0xff, wv & 0xff);
#ifdef LIBJPEG_TURBO_VERSION
#define LN_STR2(x) #x
#define LN_STR(x) LN_STR2(x)
    const char *jpeg_version = "libjpeg-turbo " LN_STR(LIBJPEG_TURBO_VERSION);
#else
    const char *jpeg_version = "libjpeg";
#endif
#ifdef LN_WITH_CUDA
    PyObject *cuda = Py_True;
    const char *archs = LN_CUDA_ARCHS, *cuda_off = "";
#else
    PyObject *cuda = Py_False;
    const char *archs = "", *cuda_off = LN_CUDA_OFF_REASON;
#endif
#ifdef LN_SANITIZE
    const char *sanitize = LN_SANITIZE;
#else
    const char *sanitize = "";
#endif
    ln_settings settings;
    ln_settings_from_env(&settings);
    ln_simd_level simd = settings.simd;
    return Py_BuildValue("{s:s,s:s,s:s,s:O,s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:s}",
                         "version", LN_VERSION,
                         "compiler", "gcc " __VERSION__,
                         "simd", ln_simd_name(simd),
                         "cuda", cuda,
                         "cuda_archs", archs,
                         "cuda_off_reason", cuda_off,
                         "threads", ln_cpu_count(),
                         "libyaml", yaml_get_version_string(),
                         "libwebp", webp_version,
                         "libjpeg", jpeg_version,
                         "stb_image", "system (libstb-dev)",
                         "sanitize", sanitize);
}

static PyObject *py_cuda_devices(PyObject *self, PyObject *noargs)
{
    (void)noargs;
#ifdef LN_WITH_CUDA
    ln_error err;
    ln_error_clear(&err);
    int count = 0;
    ln_cuda_device_count(&count, &err);
    PyObject *devices = PyList_New(0);
    if (!devices)
        return NULL;
    for (int i = 0; i < count; i++) {
        char name[256];
        int major = 0, minor = 0;
        if (ln_cuda_device_info(i, name, sizeof name, &major, &minor, &err) != LN_OK) {
            Py_DECREF(devices);
            return ln_py_raise(self, &err);
        }
        PyObject *d = Py_BuildValue("{s:i,s:s,s:(ii)}", "index", i, "name", name, "capability", major, minor);
        if (!d || PyList_Append(devices, d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(devices);
            return NULL;
        }
        Py_DECREF(d);
    }
    return Py_BuildValue("(Ns)", devices, count ? "" : err.msg);
#else
    (void)self;
    return Py_BuildValue("([]s)", "this build has no CUDA support: " LN_CUDA_OFF_REASON);
#endif
}

static PyObject *py_cuda_selftest(PyObject *self, PyObject *args)
{
    int index = 0;
    if (!PyArg_ParseTuple(args, "|i", &index))
        return NULL;
#ifdef LN_WITH_CUDA
    ln_error err;
    ln_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ln_cuda_selftest(index, &err);
    Py_END_ALLOW_THREADS
    if (rc != LN_OK)
        return ln_py_raise(self, &err);
    Py_RETURN_NONE;
#else
    ln_error err;
    ln_fail(&err, LN_ERR_UNSUPPORTED, "this build has no CUDA support: %s", LN_CUDA_OFF_REASON);
    return ln_py_raise(self, &err);
#endif
}

static PyMethodDef info_methods[] = {
    {"build_info", py_build_info, METH_NOARGS, "build_info() -> dict: version, compiler, SIMD, CUDA, threads, libraries."},
    {"cuda_devices", py_cuda_devices, METH_NOARGS,
     "cuda_devices() -> (list of {index,name,capability}, reason when empty)."},
    {"cuda_selftest", py_cuda_selftest, METH_VARARGS, "cuda_selftest(index=0): run a kernel on the GPU and check it."},
    {NULL, NULL, 0, NULL},
};

int ln_py_register_info(PyObject *m)
{
    return PyModule_AddFunctions(m, info_methods);
}
