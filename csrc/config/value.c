/* Typing one config value by its key's schema, and the range / choice / rule checks. */
#include "ln_config.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ln_cfg_value_free(ln_cfg_value *v)
{
    if (!v)
        return;
    free(v->s);
    for (size_t i = 0; i < v->n_items; i++)
        free(v->items[i]);
    free(v->items);
    memset(v, 0, sizeof *v);
}

/* 'text' for a message: cut at 60 characters, control characters shown as '?'. */
static void quote_text(const char *text, size_t len, char *buf, size_t n)
{
    size_t o = 0, limit = 60;
    buf[o++] = '\'';
    for (size_t i = 0; i < len && o + 5 < n; i++) {
        if (i == limit) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)text[i];
        buf[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    buf[o++] = '\'';
    buf[o] = '\0';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int equal_nocase(const char *a, size_t la, const char *b)
{
    size_t lb = strlen(b);
    if (la != lb)
        return 0;
    for (size_t i = 0; i < la; i++)
        if (lower(a[i]) != lower(b[i]))
            return 0;
    return 1;
}

static void trim(const char **text, size_t *len)
{
    while (*len && (**text == ' ' || **text == '\t' || **text == '\n' || **text == '\r')) {
        (*text)++;
        (*len)--;
    }
    while (*len && ((*text)[*len - 1] == ' ' || (*text)[*len - 1] == '\t' || (*text)[*len - 1] == '\n' ||
                    (*text)[*len - 1] == '\r'))
        (*len)--;
}

/* YAML's null spellings; only an unquoted scalar can be null. */
static int is_null_word(const char *t, size_t len)
{
    return len == 0 || (len == 1 && t[0] == '~') || (len == 4 && (memcmp(t, "null", 4) == 0 ||
                                                                   memcmp(t, "Null", 4) == 0 ||
                                                                   memcmp(t, "NULL", 4) == 0));
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Decimal integer with an optional sign. Returns 1 ok, 0 not an integer, -1 out of range. */
static int parse_int(const char *t, size_t len, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < len && (t[i] == '+' || t[i] == '-'))
        neg = t[i++] == '-';
    if (i == len)
        return 0;
    uint64_t mag = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    int overflow = 0;
    for (; i < len; i++) {
        if (!is_digit(t[i]))
            return 0;
        unsigned d = (unsigned)(t[i] - '0');
        if (mag > (limit - d) / 10)
            overflow = 1;
        else
            mag = mag * 10 + d;
    }
    if (overflow)
        return -1;
    *out = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return 1;
}

/* [+-](digits[.digits] | .digits)[(e|E)[+-]digits]: decimal only, so no inf, nan or hex.
 * Returns 1 ok, 0 not a number, -1 too large for a double. */
static int parse_float(const char *t, size_t len, double *out)
{
    size_t i = 0, digits = 0;
    if (i < len && (t[i] == '+' || t[i] == '-'))
        i++;
    while (i < len && is_digit(t[i]))
        i++, digits++;
    size_t dot = len;
    if (i < len && t[i] == '.') {
        dot = i++;
        while (i < len && is_digit(t[i]))
            i++, digits++;
    }
    if (digits == 0)
        return 0;
    if (i < len && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < len && (t[i] == '+' || t[i] == '-'))
            i++;
        size_t exp_digits = 0;
        while (i < len && is_digit(t[i]))
            i++, exp_digits++;
        if (exp_digits == 0)
            return 0;
    }
    if (i != len)
        return 0;
    /* strtod reads the locale's decimal point: put that one in place of '.' */
    char buf[128];
    const char *point = localeconv()->decimal_point;
    size_t plen = point && point[0] ? strlen(point) : 1;
    if (len + plen >= sizeof buf)
        return 0;
    size_t o = 0;
    for (size_t k = 0; k < len; k++) {
        if (k == dot && point && point[0]) {
            memcpy(buf + o, point, plen);
            o += plen;
        } else {
            buf[o++] = t[k];
        }
    }
    buf[o] = '\0';
    errno = 0;
    char *end = NULL;
    double v = strtod(buf, &end);
    if (end != buf + o)
        return 0;
    if (errno == ERANGE && isinf(v))
        return -1;
    *out = v;
    return 1;
}

static int parse_bool(const char *t, size_t len, int64_t *out)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (equal_nocase(t, len, yes[i])) {
            *out = 1;
            return 1;
        }
        if (equal_nocase(t, len, no[i])) {
            *out = 0;
            return 1;
        }
    }
    return 0;
}

static int copy_str(const char *text, size_t len, ln_cfg_value *out)
{
    out->s = malloc(len + 1);
    if (!out->s)
        return LN_ERR_NOMEM;
    memcpy(out->s, text, len);
    out->s[len] = '\0';
    out->len = len;
    out->kind = LN_CFG_V_STR;
    return LN_OK;
}

void ln_cfg_wrong_type(const ln_cfg_key *key, const char *found, int line, int column, ln_cfg_diags *diags)
{
    char want[256];
    ln_cfg_type_text(key, want, sizeof want);
    ln_cfg_diag_add(diags, line, column, key->name, strlen(key->name), "expected %s, found %s", want, found);
}

/* "512", "768x512" or "768,512". */
static int parse_resolution(const char *t, size_t len, int64_t pair[2])
{
    for (size_t i = 0; i < len; i++) {
        if (t[i] == 'x' || t[i] == 'X' || t[i] == ',') {
            const char *a = t, *b = t + i + 1;
            size_t la = i, lb = len - i - 1;
            trim(&a, &la);
            trim(&b, &lb);
            return parse_int(a, la, &pair[0]) == 1 && parse_int(b, lb, &pair[1]) == 1;
        }
    }
    if (parse_int(t, len, &pair[0]) != 1)
        return 0;
    pair[1] = pair[0];
    return 1;
}

int ln_cfg_type_scalar(const ln_cfg_key *key, const char *text, size_t len, int plain, int line, int column,
                       ln_cfg_value *out, ln_cfg_diags *diags)
{
    memset(out, 0, sizeof *out);
    out->kind = LN_CFG_V_NULL;
    if (plain && is_null_word(text, len))
        return LN_OK;
    char found[96];
    quote_text(text, len, found, sizeof found);
    const char *t = text;
    size_t tl = len;
    trim(&t, &tl);
    int rc;
    switch (key->type) {
    case LN_CFG_STRING:
    case LN_CFG_PATH:
    case LN_CFG_LIST: /* a single string: the path of a text file, one prompt a line */
        if ((rc = copy_str(text, len, out)) != LN_OK)
            return rc;
        break;
    case LN_CFG_ENUM:
        if ((rc = copy_str(t, tl, out)) != LN_OK)
            return rc;
        break;
    case LN_CFG_INT:
        rc = parse_int(t, tl, &out->i);
        if (rc == 0) {
            ln_cfg_wrong_type(key, found, line, column, diags);
            return LN_ERR_FORMAT;
        }
        if (rc < 0) {
            ln_cfg_diag_add(diags, line, column, key->name, strlen(key->name),
                            "%s is too large for an integer", found);
            return LN_ERR_FORMAT;
        }
        out->kind = LN_CFG_V_INT;
        break;
    case LN_CFG_FLOAT:
        rc = parse_float(t, tl, &out->f);
        if (rc == 0) {
            ln_cfg_wrong_type(key, found, line, column, diags);
            return LN_ERR_FORMAT;
        }
        if (rc < 0) {
            ln_cfg_diag_add(diags, line, column, key->name, strlen(key->name), "%s is too large", found);
            return LN_ERR_FORMAT;
        }
        out->kind = LN_CFG_V_FLOAT;
        break;
    case LN_CFG_BOOL:
        if (!parse_bool(t, tl, &out->i)) {
            ln_cfg_diag_add(diags, line, column, key->name, strlen(key->name),
                            "expected true or false (also yes/no, on/off), found %s", found);
            return LN_ERR_FORMAT;
        }
        out->kind = LN_CFG_V_BOOL;
        break;
    case LN_CFG_RESOLUTION:
        if (!parse_resolution(t, tl, out->pair)) {
            ln_cfg_wrong_type(key, found, line, column, diags);
            return LN_ERR_FORMAT;
        }
        out->kind = LN_CFG_V_PAIR;
        break;
    }
    return ln_cfg_check_value(key, out, found, line, column, diags);
}

/* The shortest %g form that reads back as the same double. */
static void format_double(double v, char *buf, size_t n)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void format_bound(const ln_cfg_key *key, double b, char *buf, size_t n)
{
    if (key->type == LN_CFG_FLOAT)
        format_double(b, buf, n);
    else
        snprintf(buf, n, "%.0f", b);
}

/* Checks v (a double holding an int or a float) against the key's bounds. */
static int check_range(const ln_cfg_key *key, double v, const char *found, const char *what, int line, int column,
                       ln_cfg_diags *diags)
{
    int lo_ok = !(key->bounds & LN_CFG_HAS_MIN) ||
                ((key->bounds & LN_CFG_MIN_EXCLUSIVE) ? v > key->min : v >= key->min);
    int hi_ok = !(key->bounds & LN_CFG_HAS_MAX) ||
                ((key->bounds & LN_CFG_MAX_EXCLUSIVE) ? v < key->max : v <= key->max);
    if (lo_ok && hi_ok)
        return LN_OK;
    char lo[32], hi[32];
    format_bound(key, key->min, lo, sizeof lo);
    format_bound(key, key->max, hi, sizeof hi);
    const char *name = key->name;
    size_t nl = strlen(name);
    int has_min = (key->bounds & LN_CFG_HAS_MIN) != 0, has_max = (key->bounds & LN_CFG_HAS_MAX) != 0;
    int min_x = (key->bounds & LN_CFG_MIN_EXCLUSIVE) != 0, max_x = (key->bounds & LN_CFG_MAX_EXCLUSIVE) != 0;
    if (has_min && has_max && !min_x && !max_x)
        ln_cfg_diag_add(diags, line, column, name, nl, "%s must be between %s and %s, found %s", what, lo, hi, found);
    else if (has_min && has_max)
        ln_cfg_diag_add(diags, line, column, name, nl, "%s must be %s %s and %s %s, found %s", what,
                        min_x ? "greater than" : "at least", lo, max_x ? "less than" : "at most", hi, found);
    else if (has_min)
        ln_cfg_diag_add(diags, line, column, name, nl, "%s must be %s %s, found %s", what,
                        min_x ? "greater than" : "at least", lo, found);
    else
        ln_cfg_diag_add(diags, line, column, name, nl, "%s must be %s %s, found %s", what,
                        max_x ? "less than" : "at most", hi, found);
    return LN_ERR_FORMAT;
}

static int check_string(const ln_cfg_key *key, ln_cfg_value *v, const char *found, int line, int column,
                        ln_cfg_diags *diags)
{
    const char *name = key->name;
    size_t nl = strlen(name);
    if (memchr(v->s, '\0', v->len)) {
        ln_cfg_diag_add(diags, line, column, name, nl, "contains a NUL character");
        return LN_ERR_FORMAT;
    }
    if (key->type == LN_CFG_ENUM) {
        for (const char *const *c = key->choices; *c; c++) {
            if (equal_nocase(v->s, v->len, *c)) {
                memcpy(v->s, *c, v->len); /* the choice's own spelling */
                return LN_OK;
            }
        }
        char want[256];
        ln_cfg_type_text(key, want, sizeof want);
        ln_cfg_diag_add(diags, line, column, name, nl, "%s is not a valid choice; expected %s", found, want);
        return LN_ERR_FORMAT;
    }
    if (v->len == 0 && key->type != LN_CFG_STRING) {
        ln_cfg_diag_add(diags, line, column, name, nl, "must not be empty");
        return LN_ERR_FORMAT;
    }
    switch (key->rule) {
    case LN_CFG_RULE_FILE_NAME:
        if (v->len == 0 || strpbrk(v->s, "/\\") || strcmp(v->s, ".") == 0 || strcmp(v->s, "..") == 0) {
            ln_cfg_diag_add(diags, line, column, name, nl,
                            "must be a file name (not empty, no '/' or '\\'): it names the files written "
                            "into output_dir; found %s", found);
            return LN_ERR_FORMAT;
        }
        break;
    case LN_CFG_RULE_DOT_EXTENSION:
        if (v->len < 2 || v->s[0] != '.' || strpbrk(v->s, "/\\")) {
            ln_cfg_diag_add(diags, line, column, name, nl, "must be a file extension starting with '.', "
                            "like '.txt'; found %s", found);
            return LN_ERR_FORMAT;
        }
        break;
    case LN_CFG_RULE_PATH_OR_LATEST:
        if (v->len == 0) {
            ln_cfg_diag_add(diags, line, column, name, nl, "must be a checkpoint folder or the word latest");
            return LN_ERR_FORMAT;
        }
        break;
    case LN_CFG_RULE_NONE:
        break;
    }
    return LN_OK;
}

int ln_cfg_check_value(const ln_cfg_key *key, ln_cfg_value *v, const char *found, int line, int column,
                       ln_cfg_diags *diags)
{
    char shown[96];
    switch (v->kind) {
    case LN_CFG_V_NULL:
    case LN_CFG_V_BOOL:
        return LN_OK;
    case LN_CFG_V_INT:
        if (!found) {
            snprintf(shown, sizeof shown, "%lld", (long long)v->i);
            found = shown;
        }
        return check_range(key, (double)v->i, found, "value", line, column, diags);
    case LN_CFG_V_FLOAT:
        if (!found) {
            format_double(v->f, shown, sizeof shown);
            found = shown;
        }
        if (!isfinite(v->f)) {
            ln_cfg_diag_add(diags, line, column, key->name, strlen(key->name), "must be a finite number, found %s",
                            found);
            return LN_ERR_FORMAT;
        }
        return check_range(key, v->f, found, "value", line, column, diags);
    case LN_CFG_V_PAIR:
        for (int i = 0; i < 2; i++) {
            snprintf(shown, sizeof shown, "%lld", (long long)v->pair[i]);
            const char *what = v->pair[0] == v->pair[1] ? "value" : i == 0 ? "width" : "height";
            if (check_range(key, (double)v->pair[i], shown, what, line, column, diags) != LN_OK)
                return LN_ERR_FORMAT;
            if (v->pair[i] % 8 != 0) {
                /* the VAE works on 8x8 pixel blocks */
                ln_cfg_diag_add(diags, line, column, key->name, strlen(key->name),
                                "%s must be a multiple of 8, found %s", what, shown);
                return LN_ERR_FORMAT;
            }
            if (v->pair[0] == v->pair[1])
                break;
        }
        return LN_OK;
    case LN_CFG_V_STR:
        if (!found) {
            quote_text(v->s, v->len, shown, sizeof shown);
            found = shown;
        }
        return check_string(key, v, found, line, column, diags);
    case LN_CFG_V_LIST: /* items were checked as they were added */
        return LN_OK;
    }
    return LN_OK;
}

void ln_cfg_quote(const char *text, size_t len, char *buf, size_t n)
{
    quote_text(text, len, buf, n);
}

int ln_cfg_list_push(ln_cfg_value *v, const char *text, size_t len)
{
    if (v->n_items % 8 == 0) {
        char **grown = realloc(v->items, (v->n_items + 8) * sizeof *grown);
        if (!grown)
            return LN_ERR_NOMEM;
        v->items = grown;
    }
    char *s = malloc(len + 1);
    if (!s)
        return LN_ERR_NOMEM;
    memcpy(s, text, len);
    s[len] = '\0';
    v->items[v->n_items++] = s;
    v->kind = LN_CFG_V_LIST;
    return LN_OK;
}
