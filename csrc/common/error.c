#define _POSIX_C_SOURCE 200809L /* the XSI strerror_r, which returns int */
#include "ln_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ln_fail(ln_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ln_fail_errno(ln_error *err, const char *what, int errnum)
{
    char buf[128];
    if (strerror_r(errnum, buf, sizeof buf) != 0)
        snprintf(buf, sizeof buf, "error %d", errnum);
    return ln_fail(err, LN_ERR_IO, "%s: %s", what, buf);
}

void ln_error_clear(ln_error *err)
{
    if (err) {
        err->code = LN_OK;
        err->msg[0] = '\0';
    }
}

int ln_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}
