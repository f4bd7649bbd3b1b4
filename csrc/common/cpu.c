/* Run-time SIMD detection, and the settings the glue reads from the environment
 * (LORA_NATIVE_SIMD caps the level: tests hold vector paths against the scalar reference). */
#include "ln_common.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static ln_simd_level level_from_name(const char *s, ln_simd_level fallback)
{
    if (!s || !*s)
        return fallback;
    if (!strcmp(s, "scalar"))
        return LN_SIMD_SCALAR;
    if (!strcmp(s, "sse4.1") || !strcmp(s, "sse41"))
        return LN_SIMD_SSE41;
    if (!strcmp(s, "avx2"))
        return LN_SIMD_AVX2;
    if (!strcmp(s, "avx512"))
        return LN_SIMD_AVX512;
    return fallback;
}

ln_simd_level ln_simd_detect(void)
{
    ln_simd_level hw = LN_SIMD_SCALAR;
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.1"))
        hw = LN_SIMD_SSE41;
    /* F16C via CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know it. */
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    int f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29));
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)
        hw = LN_SIMD_AVX2;
    if (hw == LN_SIMD_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        hw = LN_SIMD_AVX512;
#endif
    return hw;
}

void ln_settings_default(ln_settings *s)
{
    s->simd = ln_simd_detect();
    s->pillow_compat = 13;
}

void ln_settings_from_env(ln_settings *s)
{
    ln_settings_default(s);
    ln_simd_level cap = level_from_name(getenv("LORA_NATIVE_SIMD"), s->simd);
    if (cap < s->simd)
        s->simd = cap;
    const char *compat = getenv("LORA_NATIVE_PILLOW_COMPAT");
    if (compat && compat[0] && atoi(compat) > 0)
        s->pillow_compat = atoi(compat);
}

const ln_settings *ln_settings_or_default(const ln_settings *s, ln_settings *fallback)
{
    if (s)
        return s;
    ln_settings_default(fallback);
    return fallback;
}

const char *ln_simd_name(ln_simd_level level)
{
    switch (level) {
    case LN_SIMD_SSE41: return "sse4.1";
    case LN_SIMD_AVX2: return "avx2";
    case LN_SIMD_AVX512: return "avx512";
    default: return "scalar";
    }
}
