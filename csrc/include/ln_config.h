/* The training config: one YAML file parsed with libyaml against a key schema that lives
 * here in C (the one source of truth for names, types, ranges and choices). Values are typed
 * by their key's schema, never by YAML 1.1 guessing: `mixed_precision: no` is the string "no".
 * Defaults are applied by the Python side (lora_native/config.py); ranges are checked here. */
#ifndef LN_CONFIG_H
#define LN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- schema ---- */

typedef enum {
    LN_CFG_STRING,
    LN_CFG_PATH,
    LN_CFG_INT,
    LN_CFG_FLOAT,
    LN_CFG_BOOL,
    LN_CFG_ENUM,
    LN_CFG_LIST,       /* list of strings; a single string is a path to a text file */
    LN_CFG_RESOLUTION  /* an int, or [width, height] */
} ln_cfg_type;

enum {
    LN_CFG_HAS_MIN = 1,
    LN_CFG_HAS_MAX = 2,
    LN_CFG_MIN_EXCLUSIVE = 4,
    LN_CFG_MAX_EXCLUSIVE = 8
};

typedef enum {
    LN_CFG_OPTIONAL,
    LN_CFG_REQUIRED,
    LN_CFG_REQUIRED_FOR_IMAGES /* required when task_type is text-to-image */
} ln_cfg_need;

/* Checks beyond type and range. */
typedef enum {
    LN_CFG_RULE_NONE,
    LN_CFG_RULE_FILE_NAME,     /* a bare file name: not empty, no '/' or '\\', not "." or ".." */
    LN_CFG_RULE_DOT_EXTENSION, /* starts with '.' */
    LN_CFG_RULE_PATH_OR_LATEST /* a path, or the word latest */
} ln_cfg_rule;

typedef struct {
    const char *name;
    ln_cfg_type type;
    const char *const *choices; /* LN_CFG_ENUM: NULL-terminated */
    unsigned bounds;            /* LN_CFG_HAS_MIN | ... */
    double min, max;            /* for ints, resolution sides and floats */
    ln_cfg_need need;
    ln_cfg_rule rule;
} ln_cfg_key;

/* The schema in documentation order; *count receives its length. */
const ln_cfg_key *ln_cfg_schema(size_t *count);
/* Index of an exact key name, or -1. */
int ln_cfg_find_key(const char *name, size_t len);
/* The known key closest to an unknown name (edit distance, sd-scripts spellings), or NULL.
 * *alias is set when the name is another tool's spelling of that key. */
const char *ln_cfg_suggest(const char *name, size_t len, int *alias);
/* "an integer", "a number", "one of: a, b" ... for messages. */
void ln_cfg_type_text(const ln_cfg_key *key, char *buf, size_t n);
const char *ln_cfg_type_name(ln_cfg_type type); /* "int", "float", ... as config_schema() shows it */

/* ---- values ---- */

typedef enum {
    LN_CFG_V_NULL, /* written as ~, null or nothing: not set */
    LN_CFG_V_STR,
    LN_CFG_V_INT,
    LN_CFG_V_FLOAT,
    LN_CFG_V_BOOL,
    LN_CFG_V_LIST, /* of strings */
    LN_CFG_V_PAIR  /* resolution: width, height */
} ln_cfg_vkind;

typedef struct {
    ln_cfg_vkind kind;
    int64_t i;        /* V_INT, V_BOOL (0/1) */
    int64_t pair[2];  /* V_PAIR */
    double f;         /* V_FLOAT */
    char *s;          /* V_STR, owned, NUL-terminated */
    size_t len;       /* of s */
    char **items;     /* V_LIST, owned */
    size_t n_items;
} ln_cfg_value;

void ln_cfg_value_free(ln_cfg_value *v);

#define LN_CFG_KEY_MAX 72
#define LN_CFG_PROBLEM_MAX 400
#define LN_CFG_MAX_DIAGS 32

/* One problem found in a config; line/column are 1-based, 0 when the origin has none
 * (command line, API). key is empty when the problem is not about one key. */
typedef struct {
    int line, column;
    char key[LN_CFG_KEY_MAX];
    char problem[LN_CFG_PROBLEM_MAX];
} ln_cfg_diag;

typedef struct {
    ln_cfg_diag items[LN_CFG_MAX_DIAGS];
    int count;
    int dropped; /* problems beyond LN_CFG_MAX_DIAGS */
} ln_cfg_diags;

void ln_cfg_diags_init(ln_cfg_diags *d);
/* Adds a problem; key may be NULL. */
void ln_cfg_diag_add(ln_cfg_diags *d, int line, int column, const char *key, size_t key_len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;
/* "unknown key; did you mean 'lora_rank'?" (or without a suggestion). */
void ln_cfg_unknown_key(ln_cfg_diags *d, int line, int column, const char *name, size_t len);
/* "origin:line:col: key: problem" (parts left out when absent). */
void ln_cfg_diag_format(const ln_cfg_diag *d, const char *origin, char *buf, size_t n);

/* Types a scalar's text for `key` (trimmed of spaces for numbers, bools and choices).
 * plain: an unquoted YAML scalar, so ~ / null / empty mean "not set". A problem is added
 * to diags at (line, column) and LN_ERR_FORMAT returned; LN_ERR_NOMEM on allocation failure. */
int ln_cfg_type_scalar(const ln_cfg_key *key, const char *text, size_t len, int plain, int line, int column,
                       ln_cfg_value *out, ln_cfg_diags *diags);
/* Range, choice and rule checks of an already typed value (the API path: values built by
 * the caller). Enum strings are normalised to the choice's spelling. found: how the value
 * was written (quoted in messages), or NULL to print the value. */
int ln_cfg_check_value(const ln_cfg_key *key, ln_cfg_value *v, const char *found, int line, int column,
                       ln_cfg_diags *diags);
/* Appends a copy of text (no NUL inside: the caller checks) to a list value. */
int ln_cfg_list_push(ln_cfg_value *v, const char *text, size_t len);
/* 'text' for a message: cut at 60 characters, control characters shown as '?'. */
void ln_cfg_quote(const char *text, size_t len, char *buf, size_t n);
/* "lora_rank: expected an integer, found <found>". */
void ln_cfg_wrong_type(const ln_cfg_key *key, const char *found, int line, int column, ln_cfg_diags *diags);

/* ---- documents ---- */

typedef struct {
    int present;         /* the key appears in the document */
    ln_cfg_value value;  /* V_NULL when written as ~ / null / nothing */
    int key_line, key_column, value_line, value_column;
} ln_cfg_entry;

typedef struct {
    ln_cfg_entry *entries; /* entries[i] belongs to schema key i */
    size_t count;
} ln_config;

/* Parses a YAML document (UTF-8, a BOM is skipped) whose root is a mapping of key: value.
 * Every problem found is added to diags and LN_ERR_FORMAT returned, err holding the first
 * one formatted with `filename`. cfg is filled as far as parsing got: free it in every case. */
int ln_config_parse(const char *text, size_t len, const char *filename, ln_config *cfg, ln_cfg_diags *diags,
                    ln_error *err);
void ln_config_free(ln_config *cfg);

/* Types one value given as text outside a file (a `--key value` override) with the same
 * rules (origin, e.g. "command line", names it in err); `[a, b]` is read as a YAML flow sequence for list and resolution keys, and a
 * resolution may also be written WxH or W,H. Problems name no position. */
int ln_config_parse_value(const char *key, size_t key_len, const char *text, size_t len, const char *origin,
                          ln_cfg_value *out, ln_cfg_diags *diags, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
