/* CUDA runtime helpers (the .cu files of csrc/cuda). Present only when built with nvcc (LN_WITH_CUDA). */
#ifndef LN_CUDA_H
#define LN_CUDA_H

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable devices; 0 (not an error) when no driver or no GPU is present.
 * `why` receives the runtime's reason when the count is 0. */
int ln_cuda_device_count(int *count, ln_error *why);
/* Name and compute capability of device `index`. */
int ln_cuda_device_info(int index, char *name, size_t name_size, int *major, int *minor, ln_error *err);
/* Runs a small kernel on device `index` and checks its result: proves that the fatbin
 * holds code for this GPU ("no kernel image is available" is reported here, by name). */
int ln_cuda_selftest(int index, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
