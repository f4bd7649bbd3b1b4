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
