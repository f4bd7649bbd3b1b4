/* The config document: libyaml's event stream walked against the key schema. Every problem
 * is collected with its line and column (1-based) so one run shows them all. */
#include "ln_config.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define TAG_PREFIX "tag:yaml.org,2002:"

typedef struct {
    yaml_parser_t parser;
    const unsigned char *text; /* what libyaml reads (BOM already skipped) */
    size_t len;
    ln_config *cfg;          /* NULL when typing a single override */
    ln_cfg_diags *diags;
    int positions;           /* 0: the text is a command-line value, marks mean nothing to the user */
    int current;             /* schema index of the key whose value is being read, or -1 */
    int value_diags;         /* diags->count before the current value was typed, or -1 */
    int failed;              /* libyaml stopped: no more events */
    int nomem;
} doc;

static void mark_of(const doc *d, yaml_mark_t m, int *line, int *column)
{
    *line = d->positions ? (int)m.line + 1 : 0;
    *column = d->positions ? (int)m.column + 1 : 0;
}

static const char *current_key(const doc *d)
{
    size_t n;
    return d->current >= 0 ? ln_cfg_schema(&n)[d->current].name : NULL;
}

static void add(doc *d, yaml_mark_t m, const char *key, const char *problem, const char *detail)
{
    int line, column;
    mark_of(d, m, &line, &column);
    ln_cfg_diag_add(d->diags, line, column, key, key ? strlen(key) : 0, "%s%s", problem, detail ? detail : "");
}

/* Start of line `line` (0-based) in the text, counting \n, \r\n and \r as libyaml does. */
static size_t line_start(const doc *d, size_t line)
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
static void offset_to_mark(const doc *d, size_t offset, int *line, int *column)
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
static int key_on_line(const doc *d, size_t start, size_t *key_at, size_t *key_len)
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
static const char *key_for_line(const doc *d, size_t line, int fallback, size_t *key_len)
{
    size_t key_at;
    if (d->positions && key_on_line(d, line_start(d, line), &key_at, key_len))
        return (const char *)d->text + key_at;
    const char *key = fallback ? current_key(d) : NULL;
    *key_len = key ? strlen(key) : 0;
    return key;
}

/* libyaml stopped: say why, in our words for the cases users hit (tabs, bad bytes). */
static void report_parser_error(doc *d)
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
        key = key_for_line(d, line > 0 ? (size_t)line - 1 : 0, 1, &key_len);
        ln_cfg_diag_add(d->diags, line, column, key, key_len, "invalid text: %s (byte 0x%02x)",
                        p->problem ? p->problem : "unreadable", (unsigned)p->problem_value & 0xffu);
        return;
    }
    mark_of(d, p->problem_mark, &line, &column);
    /* a multi-line plain value typed just before is usually the next lines swallowed by this
     * same mistake: its type error would only mislead */
    if (d->value_diags >= 0 && d->value_diags < d->diags->count)
        d->diags->count = d->value_diags;
    /* a tab in the indentation of the line where libyaml gave up is the usual cause */
    size_t start = line_start(d, p->problem_mark.line);
    for (size_t i = start; d->positions && i < d->len && (d->text[i] == ' ' || d->text[i] == '\t'); i++) {
        if (d->text[i] == '\t') {
            key = key_for_line(d, p->problem_mark.line, 1, &key_len);
            ln_cfg_diag_add(d->diags, line, (int)(i - start) + 1, key, key_len,
                            "tabs are not allowed for indentation in YAML; use spaces");
            return;
        }
    }
    /* the construct libyaml was reading started on the line of its key */
    key = key_for_line(d, p->context ? p->context_mark.line : p->problem_mark.line, 0, &key_len);
    const char *problem = p->problem ? p->problem : "syntax error";
    size_t at = line_start(d, p->problem_mark.line), kl;
    const char *hint = "";
    if (d->positions && at < d->len && d->text[at] == ' ' && key_on_line(d, at, &at, &kl))
        hint = "; keys of the config start in column 1: check this line's indentation";
    int cl, cc;
    mark_of(d, p->context_mark, &cl, &cc);
    if (p->context && cl > 0)
        ln_cfg_diag_add(d->diags, line, column, key, key_len,
                        "invalid YAML: %s (%s started at line %d, column %d)%s", problem, p->context, cl, cc, hint);
    else if (p->context)
        ln_cfg_diag_add(d->diags, line, column, key, key_len, "invalid YAML: %s (%s)%s", problem, p->context, hint);
    else
        ln_cfg_diag_add(d->diags, line, column, key, key_len, "invalid YAML: %s%s", problem, hint);
}

/* Next event, or 0 once libyaml has failed (the problem is reported once). */
static int next(doc *d, yaml_event_t *ev)
{
    if (d->failed)
        return 0;
    if (!yaml_parser_parse(&d->parser, ev)) {
        report_parser_error(d);
        return 0;
    }
    return 1;
}

/* Consumes the rest of a node whose first event is `first` (already read, not deleted). */
static void skip_node(doc *d, const yaml_event_t *first)
{
    int depth = first->type == YAML_MAPPING_START_EVENT || first->type == YAML_SEQUENCE_START_EVENT;
    while (depth > 0) {
        yaml_event_t ev;
        if (!next(d, &ev))
            return;
        if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT)
            depth--;
        yaml_event_delete(&ev);
    }
}

static const char *node_kind(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_MAPPING_START_EVENT: return "a mapping (nested keys are not supported here)";
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "a value";
    }
}

/* Anchors, aliases and non-standard tags are refused: a config is plain data, and an alias
 * would make one value's position ambiguous. Returns 1 when the node was refused. */
static int refuse_yaml_features(doc *d, const yaml_event_t *ev, const char *key)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    if (ev->type == YAML_ALIAS_EVENT) {
        add(d, ev->start_mark, key, "aliases (*name) are not supported in a config; write the value out", NULL);
        return 1;
    }
    if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    }
    if (anchor) {
        add(d, ev->start_mark, key, "anchors (&name) are not supported in a config; write each value out", NULL);
        return 1;
    }
    /* !!str and friends are harmless (values are typed by the key anyway); others are refused */
    if (tag && strncmp((const char *)tag, TAG_PREFIX, strlen(TAG_PREFIX)) != 0 && strcmp((const char *)tag, "!") != 0) {
        add(d, ev->start_mark, key, "custom tags (!name) are not supported in a config", NULL);
        return 1;
    }
    return 0;
}

static int is_null_tag(const yaml_char_t *tag)
{
    return tag && strcmp((const char *)tag, TAG_PREFIX "null") == 0;
}

static int scalar_is_plain(const yaml_event_t *ev)
{
    return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag;
}

/* A list value: strings for LN_CFG_LIST, [width, height] for LN_CFG_RESOLUTION. */
static int read_sequence(doc *d, const ln_cfg_key *key, const yaml_event_t *start, ln_cfg_value *out)
{
    int line, column, bad = 0;
    mark_of(d, start->start_mark, &line, &column);
    int64_t sides[2] = {0, 0};
    size_t count = 0;
    for (;;) {
        yaml_event_t ev;
        if (!next(d, &ev))
            return d->nomem ? LN_ERR_NOMEM : LN_ERR_FORMAT;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        int il, ic;
        mark_of(d, ev.start_mark, &il, &ic);
        count++;
        if (refuse_yaml_features(d, &ev, key->name) || ev.type != YAML_SCALAR_EVENT) {
            skip_node(d, &ev);
            if (ev.type != YAML_ALIAS_EVENT && ev.type != YAML_SCALAR_EVENT && !d->failed)
                ln_cfg_diag_add(d->diags, il, ic, key->name, strlen(key->name), "item %zu: expected %s, found %s",
                                count, key->type == LN_CFG_LIST ? "a string" : "an integer", node_kind(&ev));
            yaml_event_delete(&ev);
            bad = 1;
            continue;
        }
        const char *text = (const char *)ev.data.scalar.value;
        size_t len = ev.data.scalar.length;
        char found[96];
        ln_cfg_quote(text, len, found, sizeof found);
        if ((scalar_is_plain(&ev) && (len == 0 || strcmp(text, "~") == 0 || strcmp(text, "null") == 0)) ||
            is_null_tag(ev.data.scalar.tag)) {
            ln_cfg_diag_add(d->diags, il, ic, key->name, strlen(key->name), "item %zu is empty", count);
            bad = 1;
        } else if (key->type == LN_CFG_LIST) {
            if (memchr(text, '\0', len)) {
                ln_cfg_diag_add(d->diags, il, ic, key->name, strlen(key->name), "item %zu contains a NUL character",
                                count);
                bad = 1;
            } else if (!bad && ln_cfg_list_push(out, text, len) != LN_OK) {
                yaml_event_delete(&ev);
                return LN_ERR_NOMEM;
            }
        } else if (count <= 2) {
            ln_cfg_value side;
            ln_cfg_key as_int = *key;
            as_int.type = LN_CFG_INT;
            as_int.bounds = 0;
            ln_cfg_diags scratch;
            ln_cfg_diags_init(&scratch);
            if (ln_cfg_type_scalar(&as_int, text, len, 0, il, ic, &side, &scratch) != LN_OK) {
                ln_cfg_diag_add(d->diags, il, ic, key->name, strlen(key->name), "%s must be an integer, found %s",
                                count == 1 ? "width" : "height", found);
                bad = 1;
            } else {
                sides[count - 1] = side.i;
            }
        }
        yaml_event_delete(&ev);
    }
    if (bad)
        return LN_ERR_FORMAT;
    if (key->type == LN_CFG_LIST) {
        out->kind = LN_CFG_V_LIST; /* also when empty */
        return LN_OK;
    }
    if (count != 2) {
        ln_cfg_diag_add(d->diags, line, column, key->name, strlen(key->name),
                        "expected [width, height], found a list of %zu item%s", count, count == 1 ? "" : "s");
        return LN_ERR_FORMAT;
    }
    out->kind = LN_CFG_V_PAIR;
    out->pair[0] = sides[0];
    out->pair[1] = sides[1];
    return ln_cfg_check_value(key, out, NULL, line, column, d->diags);
}

/* The value node of `key`; `first` is its first event (read, not deleted). */
static int read_value(doc *d, const ln_cfg_key *key, const yaml_event_t *first, ln_cfg_value *out)
{
    memset(out, 0, sizeof *out);
    out->kind = LN_CFG_V_NULL;
    int line, column;
    mark_of(d, first->start_mark, &line, &column);
    if (refuse_yaml_features(d, first, key->name)) {
        skip_node(d, first);
        return LN_ERR_FORMAT;
    }
    if (first->type == YAML_SCALAR_EVENT) {
        if (is_null_tag(first->data.scalar.tag))
            return LN_OK;
        return ln_cfg_type_scalar(key, (const char *)first->data.scalar.value, first->data.scalar.length,
                                  scalar_is_plain(first), line, column, out, d->diags);
    }
    if (first->type == YAML_SEQUENCE_START_EVENT && (key->type == LN_CFG_LIST || key->type == LN_CFG_RESOLUTION)) {
        int rc = read_sequence(d, key, first, out);
        if (rc != LN_OK)
            ln_cfg_value_free(out);
        return rc;
    }
    skip_node(d, first);
    if (!d->failed) /* a syntax error inside the node says more than its type */
        ln_cfg_wrong_type(key, node_kind(first), line, column, d->diags);
    return LN_ERR_FORMAT;
}

static void unknown_key(doc *d, yaml_mark_t m, const char *name, size_t len)
{
    int line, column;
    mark_of(d, m, &line, &column);
    ln_cfg_unknown_key(d->diags, line, column, name, len);
}

static int read_mapping(doc *d)
{
    size_t n_keys;
    const ln_cfg_key *schema = ln_cfg_schema(&n_keys);
    for (;;) {
        yaml_event_t kev, vev;
        if (!next(d, &kev))
            return d->nomem ? LN_ERR_NOMEM : LN_OK;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return LN_OK;
        }
        d->current = -1;
        d->value_diags = -1;
        int k = -1, refused = refuse_yaml_features(d, &kev, NULL);
        if (!refused && kev.type != YAML_SCALAR_EVENT) {
            add(d, kev.start_mark, NULL, "keys must be plain names, found ", node_kind(&kev));
            refused = 1;
        }
        if (!refused) {
            const char *name = (const char *)kev.data.scalar.value;
            size_t len = kev.data.scalar.length;
            k = ln_cfg_find_key(name, len);
            if (k < 0) {
                unknown_key(d, kev.start_mark, name, len);
            } else if (d->cfg->entries[k].present) {
                int line, column;
                mark_of(d, kev.start_mark, &line, &column);
                ln_cfg_diag_add(d->diags, line, column, name, len,
                                "duplicate key; first defined at line %d, column %d", d->cfg->entries[k].key_line,
                                d->cfg->entries[k].key_column);
                k = -1;
            }
        }
        skip_node(d, &kev);
        d->current = k;
        if (!next(d, &vev)) {
            yaml_event_delete(&kev);
            return d->nomem ? LN_ERR_NOMEM : LN_OK;
        }
        if (k >= 0) {
            ln_cfg_entry *e = &d->cfg->entries[k];
            e->present = 1;
            mark_of(d, kev.start_mark, &e->key_line, &e->key_column);
            mark_of(d, vev.start_mark, &e->value_line, &e->value_column);
            d->value_diags = d->diags->count;
            if (read_value(d, &schema[k], &vev, &e->value) == LN_ERR_NOMEM)
                d->nomem = 1;
        } else {
            skip_node(d, &vev);
        }
        yaml_event_delete(&kev);
        yaml_event_delete(&vev);
        if (d->nomem)
            return LN_ERR_NOMEM;
    }
}

static void read_document(doc *d)
{
    yaml_event_t ev;
    if (!next(d, &ev))
        return;
    yaml_event_delete(&ev); /* stream start */
    if (!next(d, &ev))
        return;
    if (ev.type == YAML_STREAM_END_EVENT) { /* nothing but comments: no keys */
        yaml_event_delete(&ev);
        return;
    }
    yaml_event_delete(&ev); /* document start */
    if (!next(d, &ev))
        return;
    if (ev.type == YAML_MAPPING_START_EVENT && !refuse_yaml_features(d, &ev, NULL)) {
        if (read_mapping(d) != LN_OK) {
            yaml_event_delete(&ev);
            return;
        }
    } else if (ev.type == YAML_SCALAR_EVENT && scalar_is_plain(&ev) &&
               (ev.data.scalar.length == 0 || strcmp((const char *)ev.data.scalar.value, "~") == 0 ||
                strcmp((const char *)ev.data.scalar.value, "null") == 0)) {
        /* an empty document ("---" alone, or ~): no keys */
    } else if (ev.type != YAML_MAPPING_START_EVENT) {
        char found[128] = "";
        if (ev.type == YAML_SCALAR_EVENT) {
            memcpy(found, "a single value ", 15);
            ln_cfg_quote((const char *)ev.data.scalar.value, ev.data.scalar.length, found + 15, sizeof found - 15);
        }
        add(d, ev.start_mark, NULL, "the config must be a mapping of `key: value` lines, found ",
            ev.type == YAML_SCALAR_EVENT ? found : node_kind(&ev));
        skip_node(d, &ev);
    } else {
        skip_node(d, &ev);
    }
    yaml_event_delete(&ev);
    d->current = -1;
    if (!next(d, &ev)) /* document end */
        return;
    yaml_event_delete(&ev);
    if (!next(d, &ev))
        return;
    if (ev.type == YAML_DOCUMENT_START_EVENT)
        add(d, ev.start_mark, NULL, "a config holds one YAML document; found a second one (`---`)", NULL);
    yaml_event_delete(&ev);
}

/* First invalid UTF-8 sequence (overlong forms and surrogates included): 0 and its 1-based
 * line / column (in characters) and byte, or 1 when the text is valid. */
static int check_utf8(const unsigned char *s, size_t n, int *line, int *column, unsigned *byte)
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

static void format_first(const ln_cfg_diags *diags, const char *origin, ln_error *err)
{
    char msg[LN_ERRMSG_SIZE];
    ln_cfg_diag_format(&diags->items[0], origin, msg, sizeof msg);
    ln_fail(err, LN_ERR_FORMAT, "%s", msg);
}

/* Shared start of both entry points: BOM, encoding, libyaml set up. */
static int open_doc(doc *d, const char *text, size_t len, int positions, ln_cfg_diags *diags, ln_error *err)
{
    memset(d, 0, sizeof *d);
    d->diags = diags;
    d->positions = positions;
    d->current = -1;
    d->value_diags = -1;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    d->text = (const unsigned char *)text;
    d->len = len;
    int line, column;
    unsigned byte;
    if (len >= 2 && ((d->text[0] == 0xFF && d->text[1] == 0xFE) || (d->text[0] == 0xFE && d->text[1] == 0xFF))) {
        ln_cfg_diag_add(diags, positions, positions, NULL, 0, "the text is UTF-16; save it as UTF-8");
        return LN_ERR_FORMAT;
    }
    if (!check_utf8(d->text, len, &line, &column, &byte)) {
        size_t key_len;
        const char *key = key_for_line(d, (size_t)line - 1, 0, &key_len);
        ln_cfg_diag_add(diags, positions ? line : 0, positions ? column : 0, key, key_len,
                        "invalid UTF-8 (byte 0x%02x); save the file as UTF-8", byte);
        return LN_ERR_FORMAT;
    }
    if (!yaml_parser_initialize(&d->parser))
        return ln_fail(err, LN_ERR_NOMEM, "out of memory starting the YAML parser");
    yaml_parser_set_input_string(&d->parser, d->text, len);
    yaml_parser_set_encoding(&d->parser, YAML_UTF8_ENCODING);
    return LN_OK;
}

int ln_config_parse(const char *text, size_t len, const char *filename, ln_config *cfg, ln_cfg_diags *diags,
                    ln_error *err)
{
    ln_cfg_diags_init(diags);
    size_t n_keys;
    ln_cfg_schema(&n_keys);
    cfg->count = 0;
    cfg->entries = calloc(n_keys, sizeof *cfg->entries);
    if (!cfg->entries)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory reading the config");
    cfg->count = n_keys;
    doc d;
    int rc = open_doc(&d, text, len, 1, diags, err);
    if (rc == LN_ERR_NOMEM)
        return rc;
    if (rc == LN_OK) {
        d.cfg = cfg;
        read_document(&d);
        yaml_parser_delete(&d.parser);
        if (d.nomem)
            return ln_fail(err, LN_ERR_NOMEM, "out of memory reading the config");
    }
    if (diags->count > 0) {
        format_first(diags, filename, err);
        return LN_ERR_FORMAT;
    }
    return LN_OK;
}

void ln_config_free(ln_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->count; i++)
        ln_cfg_value_free(&cfg->entries[i].value);
    free(cfg->entries);
    cfg->entries = NULL;
    cfg->count = 0;
}

/* `[a, b]` on the command line: one YAML flow sequence, read like the same value in a file. */
static int parse_flow_value(const ln_cfg_key *key, const char *text, size_t len, ln_cfg_value *out,
                            ln_cfg_diags *diags, ln_error *err)
{
    doc d;
    int rc = open_doc(&d, text, len, 0, diags, err);
    if (rc != LN_OK)
        return rc;
    size_t n_keys;
    d.current = (int)(key - ln_cfg_schema(&n_keys));
    yaml_event_t ev;
    int events = 0;
    while (events < 2 && next(&d, &ev)) { /* stream start, document start */
        yaml_event_delete(&ev);
        events++;
    }
    if (events == 2 && next(&d, &ev)) {
        rc = read_value(&d, key, &ev, out);
        yaml_event_delete(&ev);
        if (rc == LN_OK && next(&d, &ev)) { /* document end; then the stream must end */
            yaml_event_delete(&ev);
            if (next(&d, &ev)) {
                if (ev.type != YAML_STREAM_END_EVENT)
                    ln_cfg_diag_add(diags, 0, 0, key->name, strlen(key->name), "expected one value");
                yaml_event_delete(&ev);
            }
        }
    }
    yaml_parser_delete(&d.parser);
    if (d.nomem)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory reading a value");
    return diags->count ? LN_ERR_FORMAT : rc;
}

int ln_config_parse_value(const char *key, size_t key_len, const char *text, size_t len, const char *origin,
                          ln_cfg_value *out, ln_cfg_diags *diags, ln_error *err)
{
    ln_cfg_diags_init(diags);
    memset(out, 0, sizeof *out);
    int k = ln_cfg_find_key(key, key_len);
    size_t n_keys;
    const ln_cfg_key *schema = ln_cfg_schema(&n_keys);
    if (k < 0) {
        ln_cfg_unknown_key(diags, 0, 0, key, key_len);
    } else {
        size_t i = 0;
        while (i < len && (text[i] == ' ' || text[i] == '\t'))
            i++;
        int rc;
        if ((schema[k].type == LN_CFG_LIST || schema[k].type == LN_CFG_RESOLUTION) && i < len && text[i] == '[')
            rc = parse_flow_value(&schema[k], text, len, out, diags, err);
        else
            rc = ln_cfg_type_scalar(&schema[k], text, len, 1, 0, 0, out, diags);
        if (rc == LN_ERR_NOMEM) {
            ln_cfg_value_free(out);
            return ln_fail(err, LN_ERR_NOMEM, "out of memory reading a value");
        }
    }
    if (diags->count > 0) {
        ln_cfg_value_free(out);
        format_first(diags, origin ? origin : "command line", err);
        return LN_ERR_FORMAT;
    }
    return LN_OK;
}
