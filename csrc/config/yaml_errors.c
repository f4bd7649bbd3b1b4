/* libyaml's failures told in our words: positions for reader errors (which carry only an
 * offset), tabs in indentation, the key involved, and the UTF-8 check done before libyaml. */
#include "config_internal.h"

#include <string.h>

void ln_cfg_mark_of(const ln_cfg_doc *d, yaml_mark_t m, int *line, int *column)
{
    *line = d->positions ? (int)m.line + 1 : 0;
    *column = d->positions ? (int)m.column + 1 : 0;
}

const char *ln_cfg_current_key(const ln_cfg_doc *d)
{
    size_t n;
    return d->current >= 0 ? ln_cfg_schema(&n)[d->current].name : NULL;
}

/* Start of line `line` (0-based) in the text, counting \n, \r\n and \r as libyaml does. */
static size_t line_start(const ln_cfg_doc *d, size_t line)
{
    size_t i = 0;
    while (line > 0 && i < d->len) {
        unsigned char c = d->text[i++];
        if (c == '\r' && i < d->len && d->text[i] == '\n')
            i++;
        if (c == '\n' || c == '\r')
            line--;
    }
    return i;
}

/* Byte offset -> 1-based line and column in characters (for libyaml's reader errors, which
 * carry an offset but no mark). */
static void offset_to_mark(const ln_cfg_doc *d, size_t offset, int *line, int *column)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < offset && i < d->len; i++) {
        unsigned char ch = d->text[i];
        if (ch == '\n' || (ch == '\r' && !(i + 1 < d->len && d->text[i + 1] == '\n'))) {
            l++;
            c = 1;
        } else if ((ch & 0xC0) != 0x80 && ch != '\r') {
            c++;
        }
    }
    *line = d->positions ? l : 0;
    *column = d->positions ? c : 0;
}

/* The `name:` a line starts with, if any, for naming the key in a syntax error. */
static int key_on_line(const ln_cfg_doc *d, size_t start, size_t *key_at, size_t *key_len)
{
    size_t i = start;
    while (i < d->len && (d->text[i] == ' ' || d->text[i] == '\t'))
        i++;
    size_t k = i;
    while (i < d->len && (d->text[i] == '_' || d->text[i] == '-' || (d->text[i] >= 'a' && d->text[i] <= 'z') ||
                          (d->text[i] >= 'A' && d->text[i] <= 'Z') || (d->text[i] >= '0' && d->text[i] <= '9')))
        i++;
    if (i == k || i >= d->len || d->text[i] != ':')
        return 0;
    *key_at = k;
    *key_len = i - k;
    return 1;
}

/* The key a line starts with, else (with fallback) the key being read: names the key in a
 * syntax error. */
const char *ln_cfg_key_for_line(const ln_cfg_doc *d, size_t line, int fallback, size_t *key_len)
{
    size_t key_at;
    if (d->positions && key_on_line(d, line_start(d, line), &key_at, key_len))
        return (const char *)d->text + key_at;
    const char *key = fallback ? ln_cfg_current_key(d) : NULL;
    *key_len = key ? strlen(key) : 0;
    return key;
}

/* libyaml stopped: say why, in our words for the cases users hit (tabs, bad bytes). */
void ln_cfg_report_parser_error(ln_cfg_doc *d)
{
    yaml_parser_t *p = &d->parser;
    d->failed = 1;
    if (p->error == YAML_MEMORY_ERROR) {
        d->nomem = 1;
        return;
    }
    int line, column;
    size_t key_len;
    const char *key;
    if (p->error == YAML_READER_ERROR) {
        offset_to_mark(d, p->problem_offset, &line, &column);
        key = ln_cfg_key_for_line(d, line > 0 ? (size_t)line - 1 : 0, 1, &key_len);
        ln_cfg_diag_add(d->diags, line, column, key, key_len, "invalid text: %s (byte 0x%02x)",
                        p->problem ? p->problem : "unreadable", (unsigned)p->problem_value & 0xffu);
        return;
    }
    ln_cfg_mark_of(d, p->problem_mark, &line, &column);
    /* a multi-line plain value typed just before is usually the next lines swallowed by this
     * same mistake: its type error would only mislead */
    if (d->value_diags >= 0 && d->value_diags < d->diags->count)
        d->diags->count = d->value_diags;
    /* a tab in the indentation of the line where libyaml gave up is the usual cause */
    size_t start = line_start(d, p->problem_mark.line);
    for (size_t i = start; d->positions && i < d->len && (d->text[i] == ' ' || d->text[i] == '\t'); i++) {
        if (d->text[i] == '\t') {
            key = ln_cfg_key_for_line(d, p->problem_mark.line, 1, &key_len);
            ln_cfg_diag_add(d->diags, line, (int)(i - start) + 1, key, key_len,
                            "tabs are not allowed for indentation in YAML; use spaces");
            return;
        }
    }
    /* the construct libyaml was reading started on the line of its key */
    key = ln_cfg_key_for_line(d, p->context ? p->context_mark.line : p->problem_mark.line, 0, &key_len);
    const char *problem = p->problem ? p->problem : "syntax error";
    size_t at = line_start(d, p->problem_mark.line), kl;
    const char *hint = "";
    if (d->positions && at < d->len && d->text[at] == ' ' && key_on_line(d, at, &at, &kl))
        hint = "; keys of the config start in column 1: check this line's indentation";
    int cl, cc;
    ln_cfg_mark_of(d, p->context_mark, &cl, &cc);
    if (p->context && cl > 0)
        ln_cfg_diag_add(d->diags, line, column, key, key_len,
                        "invalid YAML: %s (%s started at line %d, column %d)%s", problem, p->context, cl, cc, hint);
    else if (p->context)
        ln_cfg_diag_add(d->diags, line, column, key, key_len, "invalid YAML: %s (%s)%s", problem, p->context, hint);
    else
        ln_cfg_diag_add(d->diags, line, column, key, key_len, "invalid YAML: %s%s", problem, hint);
}

int ln_cfg_check_utf8(const unsigned char *s, size_t n, int *line, int *column, unsigned *byte)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        size_t need;
        uint32_t cp, min;
        if (b < 0x80) {
            i++;
            if (b == '\n' || (b == '\r' && !(i < n && s[i] == '\n'))) {
                l++;
                c = 1;
            } else if (b != '\r') {
                c++;
            }
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF)
            need = 1, cp = b & 0x1Fu, min = 0x80;
        else if (b >= 0xE0 && b <= 0xEF)
            need = 2, cp = b & 0x0Fu, min = 0x800;
        else if (b >= 0xF0 && b <= 0xF4)
            need = 3, cp = b & 0x07u, min = 0x10000;
        else
            goto bad;
        if (n - i <= need)
            goto bad;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                goto bad;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            goto bad;
        i += need + 1;
        c++;
        continue;
    bad:
        *line = l;
        *column = c;
        *byte = b;
        return 0;
    }
    return 1;
}
