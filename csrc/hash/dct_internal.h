/* Private to csrc/hash/: the 32-point DCT-II plan (twiddles computed the way pocketfft
 * computes them), so a batch builds it once per worker instead of once per image. */
#ifndef LN_DCT_INTERNAL_H
#define LN_DCT_INTERNAL_H

#define LN_DCT_N 32

typedef struct {
    double post[LN_DCT_N]; /* DCT post-twiddles: Re exp(2*pi*i*(j+1)/(4N)) */
    double radix2_tw[16];  /* backward real FFT, radix-2 pass (ido 16, l1 1) */
    double radix4_tw[12];  /* backward real FFT, first radix-4 pass (ido 4, l1 2) */
} ln_dct32_plan;

void ln_dct32_plan_init(ln_dct32_plan *plan);
/* In place, columns (axis 0) then rows (axis 1), as scipy.fftpack.dct(dct(x, axis=0), axis=1). */
void ln_dct2_32x32_plan(const ln_dct32_plan *plan, double *block);

#endif
