/* graphrec's CPU sparse-dense product: out[r] = alpha * sum_p val[p] * x[col[p]] over CSR rows.
 *
 * Why hand-written: MKL's CSR product (torch's CPU path) runs 3-5x below what an AMD EPYC does with
 * AVX-512 (bench/propagation.py), and the product is half of a training step. Each output row is
 * summed in registers (the width is a compile-time constant for the common dims) and written once.
 * target_clones compiles the loop for AVX-512, AVX2+FMA and the baseline; the loader picks one at
 * run time, so a wheel built on one machine runs on another. Rows are spread over OpenMP threads
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

/* 16 floats as one GCC vector: an AVX-512 register in the x86-64-v4 clone, two AVX2 registers in
 * the v3 one, four SSE registers in the baseline. Accumulators as vector variables stay in
 * registers; a float array of the row's width was spilled to the stack (4x slower). */
typedef float v16 __attribute__((vector_size(64)));

/* An unaligned load of 16 floats (a macro, not a function: a v16 argument or result would change
 * the calling convention between the clones). */
#define load16(p) ({ v16 v_; memcpy(&v_, (p), sizeof v_); v_; })

/* A nonzero's weight: its value, times its keep flag (0 or 1) when an edge-dropout mask is given;
 * the transpose reads the flag through perm. Applying the mask here spares the two passes over
 * all nonzeros that a dropped copy of the values took per direction and step. */
#define WEIGHT(p) (keep ? val[p] * (float)keep[perm ? perm[p] : (p)] : val[p])

/* One output row of width D = 16 * NV (a constant in each copy): two sets of accumulators, so that
 * two nonzeros' multiply-adds are in flight at once. */
#define ROW_BODY(IDX, NV)                                                                      \
    v16 a[NV], b[NV];                                                                         \
    _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++) { a[k] = (v16){0}; b[k] = (v16){0}; } \
    int64_t p = start;                                                                        \
    for (; p + 1 < end; p += 2) {                                                             \
        const float *r = x + ((int64_t)col[p] - col0) * (16 * NV), *s = x + ((int64_t)col[p + 1] - col0) * (16 * NV); \
        const float v = WEIGHT(p), w = WEIGHT(p + 1);                                         \
        _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++) {                                \
            a[k] += v * load16(r + 16 * k);                                                   \
            b[k] += w * load16(s + 16 * k);                                                   \
        }                                                                                     \
    }                                                                                         \
    if (p < end) {                                                                            \
        const float *r = x + ((int64_t)col[p] - col0) * (16 * NV);                            \
        const float v = WEIGHT(p);                                                            \
        _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++) a[k] += v * load16(r + 16 * k); \
    }                                                                                         \
    _Pragma("GCC unroll 8") for (int k = 0; k < NV; k++) {                                    \
        v16 t = alpha * (a[k] + b[k]);                                                        \
        if (accumulate) t += load16(o + 16 * k);                                              \
        memcpy(o + 16 * k, &t, sizeof t);                                                     \
    }

#define KERNEL(NAME, IDX, NV)                                                                  \
    CLONES static void NAME(int64_t i0, int64_t i1, const int64_t *rows, int64_t row0,        \
                            const void *crow_, const void *col_, const float *val,            \
                            const uint8_t *keep, const int64_t *perm,                         \
                            const float *x, int64_t col0, float *out, int64_t d, float alpha,  \
                            int accumulate) {                                                 \
        const IDX *crow = crow_, *col = col_;                                                 \
        (void)d;                                                                              \
        for (int64_t i = i0; i < i1; i++) {                                                   \
            const int64_t row = rows ? rows[i] : row0 + i;                                    \
            const int64_t start = crow[row], end = crow[row + 1];                             \
            float *o = out + i * (16 * NV);                                                   \
            ROW_BODY(IDX, NV)                                                                \
        }                                                                                     \
    }

/* Any other width: the same loop with a run-time width (vectorised, accumulators in memory). */
#define GENERIC(NAME, IDX)                                                                     \
    CLONES static void NAME(int64_t i0, int64_t i1, const int64_t *rows, int64_t row0,        \
                            const void *crow_, const void *col_, const float *val,            \
                            const uint8_t *keep, const int64_t *perm,                         \
                            const float *x, int64_t col0, float *out, int64_t d, float alpha,  \
                            int accumulate) {                                                 \
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

KERNEL(csr32_16, int32_t, 1)
KERNEL(csr32_32, int32_t, 2)
KERNEL(csr32_64, int32_t, 4)
KERNEL(csr32_128, int32_t, 8)
GENERIC(csr32_any, int32_t)
KERNEL(csr64_16, int64_t, 1)
KERNEL(csr64_32, int64_t, 2)
KERNEL(csr64_64, int64_t, 4)
KERNEL(csr64_128, int64_t, 8)
GENERIC(csr64_any, int64_t)

typedef void (*kernel_fn)(int64_t, int64_t, const int64_t *, int64_t, const void *, const void *,
                          const float *, const uint8_t *, const int64_t *, const float *, int64_t, float *,
                          int64_t, float, int);

static kernel_fn pick(int64_t d, int index_bits) {
    switch (d) {
    case 16: return index_bits == 32 ? csr32_16 : csr64_16;
    case 32: return index_bits == 32 ? csr32_32 : csr64_32;
    case 64: return index_bits == 32 ? csr32_64 : csr64_64;
    case 128: return index_bits == 32 ? csr32_128 : csr64_128;
    default: return index_bits == 32 ? csr32_any : csr64_any;
    }
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

CLONES static void layer_fwd_rows(int64_t i0, int64_t i1, int64_t d, const float *z, const float *rel,
                                  const float *acc, const int16_t *bits, int threshold, float scale, float slope,
                                  float *x, float *acc_out) {
    for (int64_t i = i0; i < i1; i++) {
        const float *zr = z + i * d, *ar = acc + i * d;
        const int16_t *br = bits ? bits + i * d : 0;
        float *xr = x + i * d, *or_ = acc_out + i * d;
        for (int64_t k = 0; k < d; k++) {
            const float t = zr[k] * rel[k];
            float y = t > 0.0f ? t : t * slope;
            if (br) y = br[k] < threshold ? y * scale : 0.0f;
            xr[k] = y;
            or_[k] = ar[k] + y;
        }
    }
}

CLONES static void layer_bwd_rows(int64_t i0, int64_t i1, int64_t d, const float *g_x, const float *g_acc,
                                  const float *z, const float *rel, const int16_t *bits, int threshold, float scale,
                                  float slope, float *g_z, float *g_rel_part) {
    for (int64_t k = 0; k < d; k++) g_rel_part[k] = 0.0f;
    for (int64_t i = i0; i < i1; i++) {
        const float *zr = z + i * d;
        const float *gx = g_x ? g_x + i * d : 0, *ga = g_acc ? g_acc + i * d : 0;
        const int16_t *br = bits ? bits + i * d : 0;
        float *gz = g_z + i * d;
        for (int64_t k = 0; k < d; k++) {
            float g = gx && ga ? gx[k] + ga[k] : gx ? gx[k] : ga[k];
            if (br) g = br[k] < threshold ? g * scale : 0.0f;
            const float t = zr[k] * rel[k];
            const float gt = t > 0.0f ? g : g * slope;
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

static PyMethodDef methods[] = {
    {"csr_mm", csr_mm, METH_VARARGS, "CSR rows times a dense row-major float32 matrix (see graphrec/native.py)."},
    {"layer_forward", layer_forward, METH_VARARGS, "A GCCF/LightGCN layer's elementwise forward (graphrec/native.py)."},
    {"layer_backward", layer_backward, METH_VARARGS, "Its backward (graphrec/native.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "graphrec._native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
