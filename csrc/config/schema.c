/* The config key schema (names, types, ranges, choices) and the "did you mean" search. */
#include "ln_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const LOG_WITH[] = {"tensorboard", "none", NULL};
static const char *const TASK_TYPE[] = {"text-to-image", "text-generation", NULL};
static const char *const MODEL_TYPE[] = {"auto", "sd15", "sdxl", "llm", NULL};
static const char *const LR_SCHEDULER[] = {"constant", "cosine", "linear", "constant_with_warmup",
                                           "cosine_with_restarts", NULL};
static const char *const OPTIMIZER[] = {"adamw", "adamw8bit", "sgd", NULL};
static const char *const MIXED_PRECISION[] = {"no", "fp16", "bf16", NULL};
static const char *const SAVE_PRECISION[] = {"fp16", "bf16", "float", NULL};
static const char *const RESUME[] = {"auto", "never", NULL};
static const char *const DEVICE[] = {"auto", "cpu", "cuda", NULL};
static const char *const CAPTIONER[] = {"blip", "wd14", "clip", NULL};
static const char *const TXT_SPLIT[] = {"file", "paragraph", NULL};

#define MIN_ LN_CFG_HAS_MIN
#define GT_ (LN_CFG_HAS_MIN | LN_CFG_MIN_EXCLUSIVE)
#define RANGE_ (LN_CFG_HAS_MIN | LN_CFG_HAS_MAX)

/* Order: the seed articles' keys first, then sd-scripts' in the order DESIGN.md lists them. */
static const ln_cfg_key SCHEMA[] = {
    {"train_data_dir", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_REQUIRED, LN_CFG_RULE_NONE},
    {"metadata_path", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"base_model", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_REQUIRED, LN_CFG_RULE_NONE},
    {"lora_rank", LN_CFG_INT, NULL, MIN_, 1, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"batch_size", LN_CFG_INT, NULL, MIN_, 1, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"epochs", LN_CFG_INT, NULL, MIN_, 1, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"learning_rate", LN_CFG_FLOAT, NULL, GT_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"output_dir", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"save_steps", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"conv_lora", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"log_with", LN_CFG_ENUM, LOG_WITH, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"task_type", LN_CFG_ENUM, TASK_TYPE, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"max_seq_length", LN_CFG_INT, NULL, MIN_, 1, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"model_type", LN_CFG_ENUM, MODEL_TYPE, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"lora_alpha", LN_CFG_FLOAT, NULL, GT_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"conv_dim", LN_CFG_INT, NULL, MIN_, 1, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"conv_alpha", LN_CFG_FLOAT, NULL, GT_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"resolution", LN_CFG_RESOLUTION, NULL, RANGE_, 64, 4096, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"enable_bucket", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"min_bucket_reso", LN_CFG_INT, NULL, MIN_, 64, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"max_bucket_reso", LN_CFG_INT, NULL, MIN_, 64, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"bucket_reso_steps", LN_CFG_INT, NULL, MIN_, 8, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"bucket_no_upscale", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"gradient_accumulation_steps", LN_CFG_INT, NULL, MIN_, 1, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"max_train_steps", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"unet_lr", LN_CFG_FLOAT, NULL, GT_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"text_encoder_lr", LN_CFG_FLOAT, NULL, GT_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"train_text_encoder", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"lr_scheduler", LN_CFG_ENUM, LR_SCHEDULER, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"lr_warmup_steps", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"lr_scheduler_num_cycles", LN_CFG_INT, NULL, MIN_, 1, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"optimizer", LN_CFG_ENUM, OPTIMIZER, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"weight_decay", LN_CFG_FLOAT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"max_grad_norm", LN_CFG_FLOAT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"mixed_precision", LN_CFG_ENUM, MIXED_PRECISION, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"save_precision", LN_CFG_ENUM, SAVE_PRECISION, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"gradient_checkpointing", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    /* numpy's legacy seeding takes 0 .. 2^32-1, so the trainer can hand it on as is */
    {"seed", LN_CFG_INT, NULL, RANGE_, 0, 4294967295.0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"output_name", LN_CFG_STRING, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_FILE_NAME},
    {"save_every_n_epochs", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"save_last_n_checkpoints", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"resume_from_checkpoint", LN_CFG_STRING, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_PATH_OR_LATEST},
    {"resume", LN_CFG_ENUM, RESUME, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"network_weights", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"logging_dir", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"caption_extension", LN_CFG_STRING, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_DOT_EXTENSION},
    {"trigger_word", LN_CFG_STRING, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"shuffle_caption", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"keep_tokens", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"caption_dropout_rate", LN_CFG_FLOAT, NULL, RANGE_, 0, 1, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"flip_aug", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"color_aug", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"clip_skip", LN_CFG_INT, NULL, RANGE_, 1, 12, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"noise_offset", LN_CFG_FLOAT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"min_snr_gamma", LN_CFG_FLOAT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"cache_latents", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"cache_latents_to_disk", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"v_parameterization", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"sample_prompts", LN_CFG_LIST, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"sample_every_n_steps", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"network_dropout", LN_CFG_FLOAT, NULL, RANGE_ | LN_CFG_MAX_EXCLUSIVE, 0, 1, LN_CFG_OPTIONAL,
     LN_CFG_RULE_NONE},
    /* validation: images held out of train_data_dir (a fraction, chosen with the seed) or a folder */
    {"validation_split", LN_CFG_FLOAT, NULL, RANGE_ | LN_CFG_MAX_EXCLUSIVE, 0, 1, LN_CFG_OPTIONAL,
     LN_CFG_RULE_NONE},
    {"validation_data_dir", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"validate_every_n_steps", LN_CFG_INT, NULL, MIN_, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"save_best", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"tokenizer_path", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"device", LN_CFG_ENUM, DEVICE, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"native_kernels", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    /* `lora-native caption --config`: which captioner and its local model folder (or file) */
    {"captioner", LN_CFG_ENUM, CAPTIONER, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"caption_model", LN_CFG_PATH, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    /* task_type: text-generation (PEFT's names where PEFT / transformers users have one) */
    {"lora_dropout", LN_CFG_FLOAT, NULL, RANGE_ | LN_CFG_MAX_EXCLUSIVE, 0, 1, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"lora_target_modules", LN_CFG_LIST, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"text_column", LN_CFG_STRING, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"txt_split", LN_CFG_ENUM, TXT_SPLIT, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"packing", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    /* a Jinja chat template, or the path of a file holding one */
    {"chat_template", LN_CFG_STRING, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
    {"merge_output", LN_CFG_BOOL, NULL, 0, 0, 0, LN_CFG_OPTIONAL, LN_CFG_RULE_NONE},
};

/* What users of sd-scripts and the seed articles' neighbours type instead of our names. */
static const struct {
    const char *alias, *name;
} ALIASES[] = {
    {"network_dim", "lora_rank"},
    {"network_alpha", "lora_alpha"},
    {"rank", "lora_rank"},
    {"alpha", "lora_alpha"},
    {"pretrained_model_name_or_path", "base_model"},
    {"train_batch_size", "batch_size"},
    {"max_train_epochs", "epochs"},
    {"num_train_epochs", "epochs"},
    {"save_every_n_steps", "save_steps"},
    {"optimizer_type", "optimizer"},
    {"lr", "learning_rate"},
    {"sample_prompts_file", "sample_prompts"},
    {"target_modules", "lora_target_modules"},
    {"dataset_text_field", "text_column"},
    {"max_length", "max_seq_length"},
};

const ln_cfg_key *ln_cfg_schema(size_t *count)
{
    *count = sizeof SCHEMA / sizeof SCHEMA[0];
    return SCHEMA;
}

int ln_cfg_find_key(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof SCHEMA / sizeof SCHEMA[0]; i++)
        if (strlen(SCHEMA[i].name) == len && memcmp(SCHEMA[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

/* Case and '-' / '_' / ' ' differences cost nothing: they are the usual slips. */
static char fold(char c)
{
    if (c >= 'A' && c <= 'Z')
        return (char)(c - 'A' + 'a');
    return c == '-' || c == ' ' ? '_' : c;
}

/* Optimal string alignment distance (edits and adjacent swaps), capped at `cap` + 1. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb, size_t cap)
{
    enum { W = 64 };
    if (la >= W || lb >= W)
        return cap + 1;
    size_t d[W][W];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = fold(a[i - 1]) == fold(b[j - 1]) ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && fold(a[i - 1]) == fold(b[j - 2]) && fold(a[i - 2]) == fold(b[j - 1]) &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb] > cap ? cap + 1 : d[la][lb];
}

const char *ln_cfg_suggest(const char *name, size_t len, int *alias)
{
    *alias = 0;
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
        if (edit_distance(name, len, ALIASES[i].alias, strlen(ALIASES[i].alias), 0) == 0) {
            *alias = 1;
            return ALIASES[i].name;
        }
    /* about one slip per four letters; more than that suggests nonsense */
    size_t cap = len / 4 + 1;
    if (cap > 3)
        cap = 3;
    const char *best = NULL;
    size_t best_d = cap + 1;
    for (size_t i = 0; i < sizeof SCHEMA / sizeof SCHEMA[0]; i++) {
        size_t d = edit_distance(name, len, SCHEMA[i].name, strlen(SCHEMA[i].name), cap);
        if (d < best_d) {
            best_d = d;
            best = SCHEMA[i].name;
        }
    }
    return best;
}

void ln_cfg_unknown_key(ln_cfg_diags *d, int line, int column, const char *name, size_t len)
{
    int alias;
    const char *best = ln_cfg_suggest(name, len, &alias);
    if (best && alias)
        ln_cfg_diag_add(d, line, column, name, len, "unknown key; lora-native calls it '%s'", best);
    else if (best)
        ln_cfg_diag_add(d, line, column, name, len, "unknown key; did you mean '%s'?", best);
    else
        ln_cfg_diag_add(d, line, column, name, len, "unknown key");
}

const char *ln_cfg_type_name(ln_cfg_type type)
{
    switch (type) {
    case LN_CFG_STRING: return "string";
    case LN_CFG_PATH: return "path";
    case LN_CFG_INT: return "int";
    case LN_CFG_FLOAT: return "float";
    case LN_CFG_BOOL: return "bool";
    case LN_CFG_ENUM: return "enum";
    case LN_CFG_LIST: return "list";
    case LN_CFG_RESOLUTION: return "resolution";
    }
    return "?";
}

void ln_cfg_type_text(const ln_cfg_key *key, char *buf, size_t n)
{
    switch (key->type) {
    case LN_CFG_STRING: snprintf(buf, n, "a string"); return;
    case LN_CFG_PATH: snprintf(buf, n, "a path"); return;
    case LN_CFG_INT: snprintf(buf, n, "an integer"); return;
    case LN_CFG_FLOAT: snprintf(buf, n, "a number"); return;
    case LN_CFG_BOOL: snprintf(buf, n, "true or false"); return;
    case LN_CFG_LIST: snprintf(buf, n, "a list of strings (or the path of a text file)"); return;
    case LN_CFG_RESOLUTION: snprintf(buf, n, "an integer or [width, height]"); return;
    case LN_CFG_ENUM: break;
    }
    size_t used = (size_t)snprintf(buf, n, "one of: ");
    for (const char *const *c = key->choices; *c && used < n; c++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", c == key->choices ? "" : ", ", *c);
}

void ln_cfg_diags_init(ln_cfg_diags *d)
{
    d->count = 0;
    d->dropped = 0;
}

void ln_cfg_diag_add(ln_cfg_diags *d, int line, int column, const char *key, size_t key_len, const char *fmt, ...)
{
    if (d->count >= LN_CFG_MAX_DIAGS) {
        d->dropped++;
        return;
    }
    ln_cfg_diag *g = &d->items[d->count++];
    g->line = line;
    g->column = column;
    g->key[0] = '\0';
    if (key) {
        /* a long unknown key is cut with "..." so the message stays one readable line */
        if (key_len >= sizeof g->key)
            snprintf(g->key, sizeof g->key, "%.*s...", (int)(sizeof g->key - 4), key);
        else
            snprintf(g->key, sizeof g->key, "%.*s", (int)key_len, key);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->problem, sizeof g->problem, fmt, ap);
    va_end(ap);
}

void ln_cfg_diag_format(const ln_cfg_diag *d, const char *origin, char *buf, size_t n)
{
    char where[64] = "";
    if (d->line > 0)
        snprintf(where, sizeof where, ":%d:%d", d->line, d->column);
    snprintf(buf, n, "%s%s: %s%s%s", origin ? origin : "config", where, d->key, d->key[0] ? ": " : "", d->problem);
}
