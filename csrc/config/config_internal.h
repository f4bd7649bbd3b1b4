/* Shared between the config document walk (yaml_config.c) and its error reporting
 * (yaml_errors.c). Not a public header: csrc/config/ only. */
#ifndef LN_CONFIG_INTERNAL_H
#define LN_CONFIG_INTERNAL_H

#include <yaml.h>

#include "ln_config.h"

/* One text being read: a config file, or a command-line value. */
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
} ln_cfg_doc;

/* 1-based line and column of a libyaml mark (0, 0 for a command-line value). */
void ln_cfg_mark_of(const ln_cfg_doc *d, yaml_mark_t m, int *line, int *column);
/* Name of the key whose value is being read, or NULL. */
const char *ln_cfg_current_key(const ln_cfg_doc *d);
/* libyaml stopped: adds the problem in our words (tabs, bad bytes, the key involved). */
void ln_cfg_report_parser_error(ln_cfg_doc *d);
/* The key a 0-based line starts with, else (with fallback) the key being read, or NULL. */
const char *ln_cfg_key_for_line(const ln_cfg_doc *d, size_t line, int fallback, size_t *key_len);
/* First invalid UTF-8 sequence (overlong forms and surrogates included): 0 and its 1-based
 * line / column (in characters) and byte, or 1 when the text is valid. */
int ln_cfg_check_utf8(const unsigned char *s, size_t n, int *line, int *column, unsigned *byte);

#endif
