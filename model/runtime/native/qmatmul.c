/* Matrix-vector products on quantized weights, for model/runtime/llama.py's int4 mode on x86-64 AVX2.
 *
 * Weights are groups of 32 inputs per output row:
 *   q4: w = q * scale + low, q in [0, 15] (GGUF Q4_1); 16 bytes per group, byte c holds
 *       q[c] in its low nibble and q[c + 16] in its high nibble.
 *   q8: w = q * scale, q in [-127, 127] (GGUF Q8_0); 32 bytes per group.
 * Activations stay fp32 and sums are fp32, so the result equals x @ W.T on the decoded
 * weights up to the order of additions. Rows of x are independent; output rows are split
 * over the OpenMP threads (torch's own libgomp, already loaded).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

static inline float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_hadd_ps(a, a);
    a = _mm_hadd_ps(a, a);
    return _mm_cvtss_f32(a);
}

static inline __m256 bytes_to_float(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }
static inline __m256 sbytes_to_float(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }

void q4_matmul(const float *x, int rows, int k, const uint8_t *codes, const float *scale,
               const float *low, int n, float *y) {
    const int groups = k / 32;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    /* sum of each group of x, shared by every output row: the "+ low" half of the product */
    float *xsum = (float *)malloc(sizeof(float) * (size_t)rows * groups);
    if (!xsum) return;
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < groups; g++) {
            const float *xg = x + (int64_t)r * k + g * 32;
            __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xg), _mm256_loadu_ps(xg + 8)),
                                     _mm256_add_ps(_mm256_loadu_ps(xg + 16), _mm256_loadu_ps(xg + 24)));
            xsum[r * groups + g] = hsum(s);
        }
#pragma omp parallel for schedule(dynamic, 64)
    for (int j = 0; j < n; j++) {
        const uint8_t *c = codes + (int64_t)j * (k / 2);
        const float *sc = scale + (int64_t)j * groups, *lw = low + (int64_t)j * groups;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (int64_t)r * k, *xs = xsum + r * groups;
            __m256 acc = _mm256_setzero_ps();
            float lows = 0.f;
            for (int g = 0; g < groups; g++) {
                const float *xg = xr + g * 32;
                __m128i b = _mm_loadu_si128((const __m128i *)(c + g * 16));
                __m128i lo = _mm_and_si128(b, m4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m4);
                __m256 d = _mm256_mul_ps(bytes_to_float(lo), _mm256_loadu_ps(xg));
                d = _mm256_fmadd_ps(bytes_to_float(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xg + 8), d);
                d = _mm256_fmadd_ps(bytes_to_float(hi), _mm256_loadu_ps(xg + 16), d);
                d = _mm256_fmadd_ps(bytes_to_float(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xg + 24), d);
                acc = _mm256_fmadd_ps(d, _mm256_set1_ps(sc[g]), acc);
                lows += lw[g] * xs[g];
            }
            y[(int64_t)r * n + j] = hsum(acc) + lows;
        }
    }
    free(xsum);
}

void q8_matmul(const float *x, int rows, int k, const int8_t *codes, const float *scale, int n, float *y) {
    const int groups = k / 32;
#pragma omp parallel for schedule(dynamic, 64)
    for (int j = 0; j < n; j++) {
        const int8_t *c = codes + (int64_t)j * k;
        const float *sc = scale + (int64_t)j * groups;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (int64_t)r * k;
            __m256 acc = _mm256_setzero_ps();
            for (int g = 0; g < groups; g++) {
                const float *xg = xr + g * 32;
                __m128i b0 = _mm_loadu_si128((const __m128i *)(c + g * 32));
                __m128i b1 = _mm_loadu_si128((const __m128i *)(c + g * 32 + 16));
                __m256 d = _mm256_mul_ps(sbytes_to_float(b0), _mm256_loadu_ps(xg));
                d = _mm256_fmadd_ps(sbytes_to_float(_mm_srli_si128(b0, 8)), _mm256_loadu_ps(xg + 8), d);
                d = _mm256_fmadd_ps(sbytes_to_float(b1), _mm256_loadu_ps(xg + 16), d);
                d = _mm256_fmadd_ps(sbytes_to_float(_mm_srli_si128(b1, 8)), _mm256_loadu_ps(xg + 24), d);
                acc = _mm256_fmadd_ps(d, _mm256_set1_ps(sc[g]), acc);
            }
            y[(int64_t)r * n + j] = hsum(acc);
        }
    }
}
