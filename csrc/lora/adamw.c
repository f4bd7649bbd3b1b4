/* Multi-tensor AdamW with torch.optim.AdamW's arithmetic (the single-tensor reference): the
 * per-tensor scalars are computed in double as Python does and applied as fp32 tensor-scalar
 * ops, in torch's order. Every tensor is cut into fixed chunks run in parallel; the AVX2 loop
 * uses the same operations (no FMA), so it is bit-identical to the scalar one. */
#include "lora_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define ADAMW_CHUNK 16384

typedef struct {
    float decay, w1, b2, c2, bc2_sqrt, eps, neg_step;
} adamw_consts;

typedef struct {
    const ln_adamw_tensor *tensors;
    adamw_consts *consts;
    int64_t *chunk_tensor, *chunk_start;
    float grad_scale;
    int avx2;
} adamw_job;

/* The shortest decimal that rounds to f, as a double: torch computes 1 - beta etc. from the
 * Python double the user wrote (0.999), and 1 - 0.999f differs from 1 - 0.999 by 1.3e-5
 * relative. snprintf and strtod share the locale, so the round trip is consistent. */
static double decimal_of(float f)
{
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return f;
}

static void adamw_scalar(const adamw_consts *c, float gs, float *p, const float *gr, float *m, float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gs == 1.0f ? gr[i] : gr[i] / gs;
        float pi = p[i] * c->decay;
        float d = g - m[i];
        float mi = c->w1 < 0.5f ? m[i] + c->w1 * d : g - d * (1.0f - c->w1); /* torch's lerp */
        float vi = v[i] * c->b2 + c->c2 * g * g;
        float denom = sqrtf(vi) / c->bc2_sqrt + c->eps;
        p[i] = pi + c->neg_step * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

#ifdef LN_LORA_X86
#include <immintrin.h>

__attribute__((target("avx2"))) static void adamw_avx2(const adamw_consts *c, float gs, float *p, const float *gr,
                                                        float *m, float *v, int64_t n)
{
    __m256 decay = _mm256_set1_ps(c->decay), w1 = _mm256_set1_ps(c->w1), omw = _mm256_set1_ps(1.0f - c->w1);
    __m256 b2 = _mm256_set1_ps(c->b2), c2 = _mm256_set1_ps(c->c2), bc2 = _mm256_set1_ps(c->bc2_sqrt);
    __m256 eps = _mm256_set1_ps(c->eps), ns = _mm256_set1_ps(c->neg_step), vgs = _mm256_set1_ps(gs);
    int small = c->w1 < 0.5f, scaled = gs != 1.0f;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gr + i);
        if (scaled)
            g = _mm256_div_ps(g, vgs);
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        __m256 mo = _mm256_loadu_ps(m + i), d = _mm256_sub_ps(g, mo);
        __m256 mi = small ? _mm256_add_ps(mo, _mm256_mul_ps(w1, d)) : _mm256_sub_ps(g, _mm256_mul_ps(d, omw));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2), _mm256_mul_ps(_mm256_mul_ps(c2, g), g));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(ns, mi), denom)));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
    }
    adamw_scalar(c, gs, p + i, gr + i, m + i, v + i, n - i);
}
#endif

static void adamw_task(void *ctx, size_t index, int worker)
{
    (void)worker;
    adamw_job *j = ctx;
    int64_t ti = j->chunk_tensor[index], s = j->chunk_start[index];
    const ln_adamw_tensor *t = &j->tensors[ti];
    int64_t n = t->n - s < ADAMW_CHUNK ? t->n - s : ADAMW_CHUNK;
#ifdef LN_LORA_X86
    if (j->avx2) {
        adamw_avx2(&j->consts[ti], j->grad_scale, t->param + s, t->grad + s, t->exp_avg + s, t->exp_avg_sq + s, n);
        return;
    }
#endif
    adamw_scalar(&j->consts[ti], j->grad_scale, t->param + s, t->grad + s, t->exp_avg + s, t->exp_avg_sq + s, n);
}

int ln_adamw_step(const ln_adamw_tensor *tensors, int ntensors, float beta1, float beta2, float eps, float grad_scale,
                  int threads, const ln_settings *settings, ln_error *err)
{
    ln_error_clear(err);
    if (ntensors < 0 || (ntensors > 0 && !tensors))
        return ln_fail(err, LN_ERR_ARG, "adamw_step: ntensors must be >= 0 with a tensor array, got %d", ntensors);
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
        return ln_fail(err, LN_ERR_ARG, "adamw_step: betas must be in [0, 1), got (%g, %g)", beta1, beta2);
    if (!(eps >= 0.0f) || !isfinite(eps))
        return ln_fail(err, LN_ERR_ARG, "adamw_step: eps must be finite and >= 0, got %g", eps);
    if (!(grad_scale > 0.0f) || !isfinite(grad_scale))
        return ln_fail(err, LN_ERR_ARG, "adamw_step: grad_scale must be finite and > 0, got %g", grad_scale);
    size_t nchunks = 0;
    for (int i = 0; i < ntensors; i++) {
        const ln_adamw_tensor *t = &tensors[i];
        if (t->n < 0)
            return ln_fail(err, LN_ERR_ARG, "adamw_step: tensor %d has n = %lld (must be >= 0)", i, (long long)t->n);
        if (t->n > 0 && (!t->param || !t->grad || !t->exp_avg || !t->exp_avg_sq))
            return ln_fail(err, LN_ERR_ARG, "adamw_step: tensor %d has a NULL param, grad, exp_avg or exp_avg_sq", i);
        if (t->step < 1)
            return ln_fail(err, LN_ERR_ARG, "adamw_step: tensor %d has step %lld (the step after this update, >= 1)",
                           i, (long long)t->step);
        if (!isfinite(t->lr) || !isfinite(t->weight_decay))
            return ln_fail(err, LN_ERR_ARG, "adamw_step: tensor %d has a non-finite lr or weight_decay", i);
        nchunks += (size_t)((t->n + ADAMW_CHUNK - 1) / ADAMW_CHUNK);
    }
    if (nchunks == 0)
        return LN_OK;
    adamw_job j = {tensors, NULL, NULL, NULL, grad_scale, 0};
    ln_settings fallback;
    j.avx2 = ln_settings_or_default(settings, &fallback)->simd >= LN_SIMD_AVX2;
    j.consts = malloc((size_t)ntensors * sizeof *j.consts);
    j.chunk_tensor = malloc(nchunks * sizeof *j.chunk_tensor);
    j.chunk_start = malloc(nchunks * sizeof *j.chunk_start);
    if (!j.consts || !j.chunk_tensor || !j.chunk_start) {
        free(j.consts);
        free(j.chunk_tensor);
        free(j.chunk_start);
        return ln_fail(err, LN_ERR_NOMEM, "adamw_step: out of memory for %zu chunks", nchunks);
    }
    size_t c = 0;
    for (int i = 0; i < ntensors; i++) {
        const ln_adamw_tensor *t = &tensors[i];
        double lr = decimal_of(t->lr), b1 = decimal_of(beta1), b2 = decimal_of(beta2);
        double bc1 = 1.0 - pow(b1, (double)t->step), bc2 = 1.0 - pow(b2, (double)t->step);
        adamw_consts *k = &j.consts[i];
        k->decay = (float)(1.0 - lr * decimal_of(t->weight_decay));
        k->w1 = (float)(1.0 - b1);
        k->b2 = beta2;
        k->c2 = (float)(1.0 - b2);
        k->bc2_sqrt = (float)sqrt(bc2);
        k->eps = eps;
        k->neg_step = (float)(-(lr / bc1));
        for (int64_t s = 0; s < t->n; s += ADAMW_CHUNK, c++) {
            j.chunk_tensor[c] = i;
            j.chunk_start[c] = s;
        }
    }
    ln_parallel_for(threads, nchunks, 1, adamw_task, &j);
    free(j.consts);
    free(j.chunk_tensor);
    free(j.chunk_start);
    return LN_OK;
}
