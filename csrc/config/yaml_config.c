/* The config document: libyaml's event stream walked against the key schema. Every problem
 * is collected with its line and column (1-based) so one run shows them all. */
#include "config_internal.h"

#include <stdlib.h>
#include <string.h>

#define TAG_PREFIX "tag:yaml.org,2002:"

static void add(ln_cfg_doc *d, yaml_mark_t m, const char *key, const char *problem, const char *detail)
{
    int line, column;
    ln_cfg_mark_of(d, m, &line, &column);
    ln_cfg_diag_add(d->diags, line, column, key, key ? strlen(key) : 0, "%s%s", problem, detail ? detail : "");
}

/* Next event, or 0 once libyaml has failed (the problem is reported once). */
static int next(ln_cfg_doc *d, yaml_event_t *ev)
{
    if (d->failed)
        return 0;
    if (!yaml_parser_parse(&d->parser, ev)) {
        ln_cfg_report_parser_error(d);
        return 0;
    }
    return 1;
}

/* Consumes the rest of a node whose first event is `first` (already read, not deleted). */
static void skip_node(ln_cfg_doc *d, const yaml_event_t *first)
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
static int refuse_yaml_features(ln_cfg_doc *d, const yaml_event_t *ev, const char *key)
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
static int read_sequence(ln_cfg_doc *d, const ln_cfg_key *key, const yaml_event_t *start, ln_cfg_value *out)
{
    int line, column, bad = 0;
    ln_cfg_mark_of(d, start->start_mark, &line, &column);
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
        ln_cfg_mark_of(d, ev.start_mark, &il, &ic);
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
static int read_value(ln_cfg_doc *d, const ln_cfg_key *key, const yaml_event_t *first, ln_cfg_value *out)
{
    memset(out, 0, sizeof *out);
    out->kind = LN_CFG_V_NULL;
    int line, column;
    ln_cfg_mark_of(d, first->start_mark, &line, &column);
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

static void unknown_key(ln_cfg_doc *d, yaml_mark_t m, const char *name, size_t len)
{
    int line, column;
    ln_cfg_mark_of(d, m, &line, &column);
    ln_cfg_unknown_key(d->diags, line, column, name, len);
}

static int read_mapping(ln_cfg_doc *d)
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
                ln_cfg_mark_of(d, kev.start_mark, &line, &column);
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
            ln_cfg_mark_of(d, kev.start_mark, &e->key_line, &e->key_column);
            ln_cfg_mark_of(d, vev.start_mark, &e->value_line, &e->value_column);
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

static void read_document(ln_cfg_doc *d)
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

static void format_first(const ln_cfg_diags *diags, const char *origin, ln_error *err)
{
    char msg[LN_ERRMSG_SIZE];
    ln_cfg_diag_format(&diags->items[0], origin, msg, sizeof msg);
    ln_fail(err, LN_ERR_FORMAT, "%s", msg);
}

/* Shared start of both entry points: BOM, encoding, libyaml set up. */
static int open_doc(ln_cfg_doc *d, const char *text, size_t len, int positions, ln_cfg_diags *diags, ln_error *err)
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
    if (!ln_cfg_check_utf8(d->text, len, &line, &column, &byte)) {
        size_t key_len;
        const char *key = ln_cfg_key_for_line(d, (size_t)line - 1, 0, &key_len);
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
    ln_cfg_doc d;
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
    ln_cfg_doc d;
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
