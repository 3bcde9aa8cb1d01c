/* graphrec's CPU sparse-dense product: out[r] = alpha * sum_p val[p] * x[col[p]] over CSR rows.
 *
 * Why hand-written: MKL's CSR product (torch's CPU path) runs 2-5x below what an AMD EPYC does
 * (bench/propagation.py), and the product is half of a training step. Each output row is summed in
 * registers (the width is a compile-time constant for the common dims) and written once. The
 * product is compiled with intrinsics for AVX-512, AVX2+FMA and SSE2, the loop of the other
 * kernels by target_clones; the CPU's best is picked when the module loads, so a wheel built on
 * one machine runs on another. Rows are spread over OpenMP threads
 * (torch's own libgomp, already loaded, so there is one thread pool); the GIL is released.
 *
 * The caller (graphrec/native.py) checks shapes, dtypes and contiguity: this file trusts them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* A nonzero's weight: its value, times its keep flag (0 or 1) when an edge-dropout mask is given,
 * read at perm[p] when perm is given (graphrec passes the transpose's mask already gathered into
 * its order). Applying the mask here spares the two passes over all nonzeros that a dropped copy
 * of the values took per direction and step. */
#define WEIGHT(p) (keep ? val[p] * (float)keep[perm ? perm[p] : (p)] : val[p])

#define KERNEL_ARGS                                                                            \
    int64_t i0, int64_t i1, const int64_t *rows, int64_t row0, const void *crow_, const void *col_, \
        const float *val, const uint8_t *keep, const int64_t *perm, const float *x, int64_t col0,    \
        float *out, int64_t d, float alpha, int accumulate

/* Output rows of width D = NB blocks of NV vectors (VW floats each; all three are constants in each
 * copy). Each block of a row is summed in registers, SETS nonzeros' multiply-adds in flight at once
 * (one accumulator set each), and written once. Blocks keep the accumulators within the register
 * file: an AVX2 row of 64 floats in one block would need all 16 registers for two sets. The sum per
 * column is the same in every ISA's copy with the same SETS: alternate nonzeros into the sets, add
 * the sets, times alpha. VT_I, VLOAD_I, ... are the vector type and intrinsics of instruction set
 * I (below); intrinsics, not GCC's generic vectors: a 64-byte generic vector in a
 * target_clones copy was split into SSE pieces through the stack (4x slower on an AVX2 EPYC). */
#define BLOCK_KERNEL(I, NAME, IDX, NV, SETS, NB)                                               \
    VTARGET_##I static void NAME(KERNEL_ARGS) {                                                \
        const IDX *crow = crow_, *col = col_;                                                  \
        const VT_##I va = VSET1_##I(alpha);                                                    \
        (void)d;                                                                               \
        for (int64_t i = i0; i < i1; i++) {                                                    \
            const int64_t row = rows ? rows[i] : row0 + i;                                     \
            const int64_t start = crow[row], end = crow[row + 1];                              \
            for (int blk = 0; blk < NB; blk++) {                                               \
                const int64_t off = (int64_t)blk * (VW_##I * NV);                              \
                float *o = out + i * (VW_##I * NV * NB) + off;                                 \
                VT_##I acc[SETS][NV];                                                          \
                _Pragma("GCC unroll 4") for (int s = 0; s < SETS; s++)                         \
                _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++) acc[s][k] = VZERO_##I();  \
                int64_t p = start;                                                             \
                for (; p + SETS <= end; p += SETS) {                                           \
                    _Pragma("GCC unroll 4") for (int s = 0; s < SETS; s++) {                   \
                        const float *r = x + ((int64_t)col[p + s] - col0) * (VW_##I * NV * NB) + off; \
                        const VT_##I w = VSET1_##I(WEIGHT(p + s));                             \
                        _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++)                   \
                            acc[s][k] = VFMA_##I(w, VLOAD_##I(r + VW_##I * k), acc[s][k]);     \
                    }                                                                          \
                }                                                                              \
                for (; p < end; p++) {                                                         \
                    const float *r = x + ((int64_t)col[p] - col0) * (VW_##I * NV * NB) + off;  \
                    const VT_##I w = VSET1_##I(WEIGHT(p));                                     \
                    _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++)                       \
                        acc[0][k] = VFMA_##I(w, VLOAD_##I(r + VW_##I * k), acc[0][k]);         \
                }                                                                              \
                _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++) {                         \
                    VT_##I t = acc[0][k];                                                      \
                    _Pragma("GCC unroll 4") for (int s = 1; s < SETS; s++) t = VADD_##I(t, acc[s][k]); \
                    t = VMUL_##I(va, t);                                                       \
                    if (accumulate) t = VADD_##I(t, VLOAD_##I(o + VW_##I * k));                \
                    VSTORE_##I(o + VW_##I * k, t);                                             \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }

/* One family per index width: rows of 16, 32, 64 and 128 floats, named I_32_16 ... I_64_128. */
#define FAMILY(I, NV16, S16, NB16, NV32, S32, NB32, NV64, S64, NB64, NV128, S128, NB128)       \
    BLOCK_KERNEL(I, I##_32_16, int32_t, NV16, S16, NB16)                                      \
    BLOCK_KERNEL(I, I##_32_32, int32_t, NV32, S32, NB32)                                      \
    BLOCK_KERNEL(I, I##_32_64, int32_t, NV64, S64, NB64)                                      \
    BLOCK_KERNEL(I, I##_32_128, int32_t, NV128, S128, NB128)                                  \
    BLOCK_KERNEL(I, I##_64_16, int64_t, NV16, S16, NB16)                                      \
    BLOCK_KERNEL(I, I##_64_32, int64_t, NV32, S32, NB32)                                      \
    BLOCK_KERNEL(I, I##_64_64, int64_t, NV64, S64, NB64)                                      \
    BLOCK_KERNEL(I, I##_64_128, int64_t, NV128, S128, NB128)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1

/* Each instruction set's vector type, width and intrinsics; VTARGET_I is its target attribute (a
 * function attribute, which GCC and clang both take for intrinsics). The baseline: SSE2, 4 floats
 * a vector, no fused multiply-add. */
#define VTARGET_sse
#define VT_sse __m128
#define VW_sse 4
#define VZERO_sse() _mm_setzero_ps()
#define VSET1_sse(a) _mm_set1_ps(a)
#define VLOAD_sse(p) _mm_loadu_ps(p)
#define VSTORE_sse(p, v) _mm_storeu_ps(p, v)
#define VADD_sse(a, b) _mm_add_ps(a, b)
#define VMUL_sse(a, b) _mm_mul_ps(a, b)
#define VFMA_sse(w, v, a) _mm_add_ps(_mm_mul_ps(w, v), a)

#define VTARGET_avx2 __attribute__((target("avx2,fma")))
#define VT_avx2 __m256
#define VW_avx2 8
#define VZERO_avx2() _mm256_setzero_ps()
#define VSET1_avx2(a) _mm256_set1_ps(a)
#define VLOAD_avx2(p) _mm256_loadu_ps(p)
#define VSTORE_avx2(p, v) _mm256_storeu_ps(p, v)
#define VADD_avx2(a, b) _mm256_add_ps(a, b)
#define VMUL_avx2(a, b) _mm256_mul_ps(a, b)
#define VFMA_avx2(w, v, a) _mm256_fmadd_ps(w, v, a)

#define VTARGET_avx512 __attribute__((target("avx512f")))
#define VT_avx512 __m512
#define VW_avx512 16
#define VZERO_avx512() _mm512_setzero_ps()
#define VSET1_avx512(a) _mm512_set1_ps(a)
#define VLOAD_avx512(p) _mm512_loadu_ps(p)
#define VSTORE_avx512(p, v) _mm512_storeu_ps(p, v)
#define VADD_avx512(a, b) _mm512_add_ps(a, b)
#define VMUL_avx512(a, b) _mm512_mul_ps(a, b)
#define VFMA_avx512(w, v, a) _mm512_fmadd_ps(w, v, a)

/* AVX2 rows of 64 floats: two blocks of 4 vectors with two sets (the AVX-512 sum's order), or set
 * -DAVX2_NV64=8 -DAVX2_S64=1 -DAVX2_NB64=1 for one block of 8 (bench/propagation.py compares). */
#ifndef AVX2_NV64
#define AVX2_NV64 4
#define AVX2_S64 2
#define AVX2_NB64 2
#endif
FAMILY(sse, 4, 2, 1, 4, 2, 2, 4, 2, 4, 4, 2, 8)
FAMILY(avx2, 2, 2, 1, 4, 2, 1, AVX2_NV64, AVX2_S64, AVX2_NB64, AVX2_NV64, AVX2_S64, 2 * AVX2_NB64)
FAMILY(avx512, 1, 2, 1, 2, 2, 1, 4, 2, 1, 8, 2, 1)
#endif

/* Any other width, and every width off x86: the same sum with a run-time width (the compiler
 * vectorises the inner loop; accumulators in memory). */
#define GENERIC(NAME, IDX)                                                                     \
    CLONES static void NAME(KERNEL_ARGS) {                                                    \
        const IDX *crow = crow_, *col = col_;                                                 \
        for (int64_t i = i0; i < i1; i++) {                                                   \
            const int64_t row = rows ? rows[i] : row0 + i;                                    \
            float *o = out + i * d;                                                           \
            if (!accumulate) memset(o, 0, (size_t)d * sizeof(float));                         \
            for (int64_t p = crow[row]; p < crow[row + 1]; p++) {                             \
                const float *r = x + ((int64_t)col[p] - col0) * d;                            \
                const float v = alpha * WEIGHT(p);                                             \
                for (int64_t k = 0; k < d; k++) o[k] += v * r[k];                             \
            }                                                                                 \
        }                                                                                     \
    }

GENERIC(csr32_any, int32_t)
GENERIC(csr64_any, int64_t)

typedef void (*kernel_fn)(KERNEL_ARGS);

/* The instruction set the kernels use: 0 the generic loop, 1 SSE2, 2 AVX2+FMA, 3 AVX-512. Set to the
 * best the CPU has when the module loads; set_isa lowers it (the tests run every copy). */
static int isa = 0, best_isa = 0;

#define ISA_CASE(PREFIX)                                                                       \
    switch (d) {                                                                              \
    case 16: return index_bits == 32 ? PREFIX##_32_16 : PREFIX##_64_16;                       \
    case 32: return index_bits == 32 ? PREFIX##_32_32 : PREFIX##_64_32;                       \
    case 64: return index_bits == 32 ? PREFIX##_32_64 : PREFIX##_64_64;                       \
    case 128: return index_bits == 32 ? PREFIX##_32_128 : PREFIX##_64_128;                    \
    default: break;                                                                           \
    }

static kernel_fn pick(int64_t d, int index_bits) {
#ifdef HAVE_X86
    if (isa == 3) ISA_CASE(avx512)
    if (isa == 2) ISA_CASE(avx2)
    if (isa == 1) ISA_CASE(sse)
#endif
    return index_bits == 32 ? csr32_any : csr64_any;
}

/* Rows in chunks of 64 handed out dynamically: degrees are power-law, so static halves would leave
 * one thread waiting. The OpenMP loop stays out of the cloned kernels (an outlined parallel body
 * would be compiled for the baseline ISA, not the clone's). */
#define CHUNK 64

/* csr_mm(n, rows, row0, crow, col, val, keep, perm, x, col0, out, d, alpha, accumulate,
 * index_bits, threads): the pointers are addresses (ints); rows is 0 for the contiguous rows
 * row0..row0+n-1, else an int64 array of n row numbers; keep is 0 or one uint8 flag per nonzero,
 * read at perm[p] when perm is not 0. x is row-major with width d and holds the rows col0.. of the
 * operand (every column read is >= col0); out holds n rows of width d. */
static PyObject *csr_mm(PyObject *self, PyObject *args) {
    long long n, rows_p, row0, crow_p, col_p, val_p, keep_p, perm_p, x_p, col0, out_p, d;
    double alpha;
    int accumulate, index_bits, threads;
    if (!PyArg_ParseTuple(args, "LLLLLLLLLLLLdiii", &n, &rows_p, &row0, &crow_p, &col_p, &val_p, &keep_p, &perm_p,
                          &x_p, &col0, &out_p, &d, &alpha, &accumulate, &index_bits, &threads))
        return NULL;
    if (index_bits != 32 && index_bits != 64) {
        PyErr_SetString(PyExc_ValueError, "index_bits must be 32 or 64");
        return NULL;
    }
    const int64_t *rows = (const int64_t *)(intptr_t)rows_p;
    const float *val = (const float *)(intptr_t)val_p, *x = (const float *)(intptr_t)x_p;
    const uint8_t *keep = (const uint8_t *)(intptr_t)keep_p;
    const int64_t *perm = (const int64_t *)(intptr_t)perm_p;
    float *out = (float *)(intptr_t)out_p;
    const void *crow = (const void *)(intptr_t)crow_p, *col = (const void *)(intptr_t)col_p;
    const kernel_fn f = pick(d, index_bits);
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;
    const float a = (float)alpha;
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && chunks > 1)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i0 = c * CHUNK, i1 = i0 + CHUNK < n ? i0 + CHUNK : n;
        f(i0, i1, rows, row0, crow, col, val, keep, perm, x, col0, out, d, a, accumulate);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* The elementwise part of a GCCF/LightGCN layer after its product z (HPMR's encoders):
 *   t = z * rel;  y = t > 0 ? t : slope * t;  x = kept ? y * scale : 0;  acc_out = acc + x
 * with the dropout flag kept = bits < threshold (the int16 draws of graphrec.adjacency.keep_mask,
 * so the random stream is the one the unfused ops read). One pass where the torch ops made six
 * over full-size tensors, each from memory: in a training step those tensors are not in cache.
 * The backward is one pass too: g = g_x + g_acc, g_t = (kept ? g * scale : 0) * (t > 0 ? 1 :
 * slope), g_z = g_t * rel, g_rel = sum over rows of g_t * z. Each chunk of rows sums its own
 * g_rel part, added in chunk order afterwards, so the result does not depend on the threads. */
#define LAYER_CHUNK 256

/* Branch-free inner loops over restrict pointers, one per case (dropout or not, which gradients),
 * so that every clone vectorises them: with the tests inside the loop the AVX2 copy was scalar
 * (branches on random dropout flags: 10 ns an element). setup.py adds -fno-trapping-math, without
 * which GCC keeps `t > 0 ? t : t * slope` a branch outside AVX-512 (the product might trap). */
CLONES static void layer_fwd_rows(int64_t i0, int64_t i1, int64_t d, const float *restrict z,
                                  const float *restrict rel, const float *restrict acc,
                                  const int16_t *restrict bits, int threshold, float scale, float slope,
                                  float *restrict x, float *restrict acc_out) {
    const int16_t th = (int16_t)threshold;
    for (int64_t i = i0; i < i1; i++) {
        const float *restrict zr = z + i * d, *restrict ar = acc + i * d;
        float *restrict xr = x + i * d, *restrict or_ = acc_out + i * d;
        if (bits) {
            const int16_t *restrict br = bits + i * d;
            for (int64_t k = 0; k < d; k++) {
                const float t = zr[k] * rel[k];
                const float y = (t > 0.0f ? t : t * slope) * (br[k] < th ? scale : 0.0f);
                xr[k] = y;
                or_[k] = ar[k] + y;
            }
        } else {
            for (int64_t k = 0; k < d; k++) {
                const float t = zr[k] * rel[k];
                const float y = t > 0.0f ? t : t * slope;
                xr[k] = y;
                or_[k] = ar[k] + y;
            }
        }
    }
}

CLONES static void layer_bwd_rows(int64_t i0, int64_t i1, int64_t d, const float *restrict g_x,
                                  const float *restrict g_acc, const float *restrict z,
                                  const float *restrict rel, const int16_t *restrict bits, int threshold,
                                  float scale, float slope, float *restrict g_z, float *restrict g_rel_part) {
    const int16_t th = (int16_t)threshold;
    for (int64_t k = 0; k < d; k++) g_rel_part[k] = 0.0f;
    for (int64_t i = i0; i < i1; i++) {
        const float *restrict zr = z + i * d;
        float *restrict gz = g_z + i * d;
        /* g = g_x + g_acc (either may be absent), into g_z first */
        if (g_x && g_acc) {
            const float *restrict gx = g_x + i * d, *restrict ga = g_acc + i * d;
            for (int64_t k = 0; k < d; k++) gz[k] = gx[k] + ga[k];
        } else {
            const float *restrict g1 = (g_x ? g_x : g_acc) + i * d;
            for (int64_t k = 0; k < d; k++) gz[k] = g1[k];
        }
        if (bits) {
            const int16_t *restrict br = bits + i * d;
            for (int64_t k = 0; k < d; k++) gz[k] *= br[k] < th ? scale : 0.0f;
        }
        for (int64_t k = 0; k < d; k++) {
            const float t = zr[k] * rel[k];
            const float gt = t > 0.0f ? gz[k] : gz[k] * slope;
            gz[k] = gt * rel[k];
            g_rel_part[k] += gt * zr[k];
        }
    }
}

/* layer_forward(n, d, z, rel, acc, bits, threshold, scale, slope, x, acc_out, threads) and
 * layer_backward(n, d, g_x, g_acc, z, rel, bits, threshold, scale, slope, g_z, g_rel, threads):
 * addresses as ints; bits, g_x and g_acc may be 0 (no dropout; a gradient that is zero). */
static PyObject *layer_forward(PyObject *self, PyObject *args) {
    long long n, d, z_p, rel_p, acc_p, bits_p, x_p, out_p;
    int threshold, threads;
    double scale, slope;
    if (!PyArg_ParseTuple(args, "LLLLLLiddLLi", &n, &d, &z_p, &rel_p, &acc_p, &bits_p, &threshold, &scale, &slope,
                          &x_p, &out_p, &threads))
        return NULL;
    const int64_t chunks = (n + LAYER_CHUNK - 1) / LAYER_CHUNK;
    const float sc = (float)scale, sl = (float)slope;
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks > 1)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i0 = c * LAYER_CHUNK, i1 = i0 + LAYER_CHUNK < n ? i0 + LAYER_CHUNK : n;
        layer_fwd_rows(i0, i1, d, (const float *)(intptr_t)z_p, (const float *)(intptr_t)rel_p,
                       (const float *)(intptr_t)acc_p, (const int16_t *)(intptr_t)bits_p, threshold, sc, sl,
                       (float *)(intptr_t)x_p, (float *)(intptr_t)out_p);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *layer_backward(PyObject *self, PyObject *args) {
    long long n, d, gx_p, ga_p, z_p, rel_p, bits_p, gz_p, grel_p;
    int threshold, threads;
    double scale, slope;
    if (!PyArg_ParseTuple(args, "LLLLLLLiddLLi", &n, &d, &gx_p, &ga_p, &z_p, &rel_p, &bits_p, &threshold, &scale,
                          &slope, &gz_p, &grel_p, &threads))
        return NULL;
    const int64_t chunks = (n + LAYER_CHUNK - 1) / LAYER_CHUNK;
    float *parts = PyMem_RawMalloc((size_t)(chunks > 0 ? chunks : 1) * (size_t)d * sizeof(float));
    if (!parts) return PyErr_NoMemory();
    const float sc = (float)scale, sl = (float)slope;
    float *g_rel = (float *)(intptr_t)grel_p;
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks > 1)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i0 = c * LAYER_CHUNK, i1 = i0 + LAYER_CHUNK < n ? i0 + LAYER_CHUNK : n;
        layer_bwd_rows(i0, i1, d, (const float *)(intptr_t)gx_p, (const float *)(intptr_t)ga_p,
                       (const float *)(intptr_t)z_p, (const float *)(intptr_t)rel_p,
                       (const int16_t *)(intptr_t)bits_p, threshold, sc, sl, (float *)(intptr_t)gz_p, parts + c * d);
    }
    for (int64_t k = 0; k < d; k++) g_rel[k] = 0.0f;
    for (int64_t c = 0; c < chunks; c++)
        for (int64_t k = 0; k < d; k++) g_rel[k] += parts[c * d + k];
    Py_END_ALLOW_THREADS
    PyMem_RawFree(parts);
    Py_RETURN_NONE;
}

/* torch's CPU random stream, drawn here: keep_bits' full-range int64 draws (graphrec/adjacency.py).
 * torch draws them one at a time through a locked, per-value generator call (about 5 ns a value on
 * the EPYC here, a tenth of an HPMR step); this is the same Mersenne Twister (MT19937, the
 * generator of torch.Generator on CPU) with its state read from and written back to the bytes of
 * Generator.get_state(), the twist and tempering in loops the compiler vectorises. Each int64 is
 * (first 32-bit output << 32) | second, as torch's random64(). graphrec/native.py checks against
 * torch's own draws before it uses this, so a change in torch's layout turns it off, not wrong. */
#define MT_N 624
#define MT_M 397
/* Offsets in the state bytes (CPUGeneratorImplStateLegacy's THGeneratorState): int left at 8,
 * uint64 next at 16, uint64 state[624] from 24. */
#define MT_LEFT 8
#define MT_NEXT 16
#define MT_STATE 24
#define MT_BYTES (MT_STATE + 8 * MT_N)

static inline uint32_t mt_twist(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

CLONES static void mt_next_state(uint32_t *restrict s) {
    int i = 0;
    for (; i < MT_N - MT_M; i++) s[i] = s[i + MT_M] ^ mt_twist(s[i], s[i + 1]);
    for (; i < MT_N - 1; i++) s[i] = s[i + MT_M - MT_N] ^ mt_twist(s[i], s[i + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ mt_twist(s[MT_N - 1], s[0]);
}

CLONES static void mt_temper(const uint32_t *restrict s, uint32_t *restrict out, int64_t n) {
    for (int64_t k = 0; k < n; k++) {
        uint32_t y = s[k];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        out[k] = y;
    }
}

/* mt_draw(state, out, n): n int64 draws into out (addresses as ints), advancing the state bytes. */
static PyObject *mt_draw(PyObject *self, PyObject *args) {
    long long st_p, out_p, n;
    if (!PyArg_ParseTuple(args, "LLL", &st_p, &out_p, &n)) return NULL;
    uint8_t *st = (uint8_t *)(intptr_t)st_p;
    uint32_t s[MT_N];
    int32_t left;
    uint64_t next, word;
    memcpy(&left, st + MT_LEFT, sizeof left);
    memcpy(&next, st + MT_NEXT, sizeof next);
    for (int i = 0; i < MT_N; i++) {
        memcpy(&word, st + MT_STATE + 8 * i, sizeof word);
        s[i] = (uint32_t)word;
    }
    if (left < 1 || next + (uint64_t)left > MT_N + 1) {  /* s[next .. next+left-2] must be inside s */
        PyErr_SetString(PyExc_ValueError, "not a Mersenne Twister state");
        return NULL;
    }
    uint32_t *out = (uint32_t *)(intptr_t)out_p;
    uint64_t *out64 = (uint64_t *)(intptr_t)out_p;
    Py_BEGIN_ALLOW_THREADS
    /* torch's engine: each output decrements left and twists when it reaches 0 (then left = 624,
     * next = 0), then returns tempered s[next++]. So left - 1 outputs are there before a twist. */
    int64_t done = 0, total = 2 * (int64_t)n;
    while (done < total) {
        int64_t avail = (int64_t)left - 1;
        if (avail == 0) {
            mt_next_state(s);
            left = MT_N + 1;
            next = 0;
            continue;
        }
        const int64_t take = avail < total - done ? avail : total - done;
        mt_temper(s + next, out + done, take);
        next += (uint64_t)take;
        left -= (int32_t)take;
        done += take;
    }
    /* the first output of each pair is the high half */
    for (int64_t k = 0; k < n; k++) out64[k] = (out64[k] << 32) | (out64[k] >> 32);
    Py_END_ALLOW_THREADS
    memcpy(st + MT_LEFT, &left, sizeof left);
    memcpy(st + MT_NEXT, &next, sizeof next);
    for (int i = 0; i < MT_N; i++) {
        word = s[i];
        memcpy(st + MT_STATE + 8 * i, &word, sizeof word);
    }
    Py_RETURN_NONE;
}

static const char *isa_names[] = {"generic", "SSE2", "AVX2+FMA", "AVX-512"};

/* isa() -> (name, level, best level); set_isa(level): use that copy of the kernels (at most the best). */
static PyObject *get_isa(PyObject *self, PyObject *args) {
    return Py_BuildValue("(sii)", isa_names[isa], isa, best_isa);
}

static PyObject *set_isa(PyObject *self, PyObject *args) {
    int level;
    if (!PyArg_ParseTuple(args, "i", &level)) return NULL;
    if (level < 0 || level > best_isa) {
        PyErr_Format(PyExc_ValueError, "this CPU runs kernel levels 0..%d (%s); got %d", best_isa,
                     isa_names[best_isa], level);
        return NULL;
    }
    isa = level;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"csr_mm", csr_mm, METH_VARARGS, "CSR rows times a dense row-major float32 matrix (see graphrec/native.py)."},
    {"mt_draw", mt_draw, METH_VARARGS, "n full-range int64 draws of torch's CPU generator from its state bytes."},
    {"isa", get_isa, METH_NOARGS, "The instruction set the product runs on: (name, level, best level)."},
    {"set_isa", set_isa, METH_VARARGS, "Run the product on a lower level's copy (tests)."},
    {"layer_forward", layer_forward, METH_VARARGS, "A GCCF/LightGCN layer's elementwise forward (graphrec/native.py)."},
    {"layer_backward", layer_backward, METH_VARARGS, "Its backward (graphrec/native.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "graphrec._native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    best_isa = __builtin_cpu_supports("avx512f") ? 3
               : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 2 : 1;
#endif
    isa = best_isa;
    return PyModule_Create(&module);
}
