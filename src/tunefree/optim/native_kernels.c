/* tunefree's native CPU kernels: fused single-pass loops over contiguous fp32/fp64 tensor lists.
 *
 * Compiled on first use by tunefree/optim/native.py (gcc -O3 -march=native -fopenmp, no -ffast-math: the
 * arithmetic is IEEE, only the `omp simd` reductions below may reorder their sums). Each kernel takes a
 * list of n tensors as arrays of data pointers plus their element counts, treats the list as one
 * concatenated vector and splits it into `nthreads` equal ranges (one per OpenMP thread, torch's own pool:
 * the library links the libgomp torch has already loaded). Reductions return their per-thread partial sums
 * added in thread order, so a result depends only on the data and the thread count.
 *
 * A kernel reads each element of each list once and writes each output once: the passes the foreach path
 * makes over a block (one per torch op) happen here in registers.
 */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The tensors' element ranges [a, b) that fall into thread t's share [lo, hi) of the concatenation. */
#define SHARE_BEGIN(n, sizes, nthreads)                                                           \
    int64_t total_ = 0;                                                                           \
    for (int i_ = 0; i_ < (n); i_++) total_ += (sizes)[i_];                                       \
    _Pragma("omp parallel for schedule(static, 1) num_threads(nthreads)")                         \
    for (int t = 0; t < (nthreads); t++) {                                                        \
        int64_t lo = total_ * t / (nthreads), hi = total_ * (t + 1) / (nthreads), offset = 0;     \
        for (int i = 0; i < (n); i++) {                                                           \
            int64_t start = offset, stop = offset + (sizes)[i];                                   \
            offset = stop;                                                                        \
            if (stop <= lo || start >= hi) continue;                                              \
            int64_t a = (lo > start ? lo : start) - start, b = (hi < stop ? hi : stop) - start;
#define SHARE_END }}

/* Elements per partial sum: a block's products are summed in the tensor's dtype (vectorised), the
 * blocks' sums in double. */
#define SUM_BLOCK 2048

/* The body of SMES's update loop over [a, b) of one tensor, with POWER the expression of vj^alpha. */
#define SMES_LOOP(T, POWER)                                                                       \
    _Pragma("omp simd")                                                                           \
    for (int64_t j = a; j < b; j++) {                                                             \
        T xj = x[j] * f; /* exact for f = 1 */                                                    \
        T gj = g[j] + wd * xj; /* g itself for wd = 0 */                                          \
        T mj = m[j] + w1 * (gj - m[j]);                                                           \
        T vj = v[j] * beta2 + w2 * gj * gj;                                                       \
        m[j] = mj;                                                                                \
        v[j] = vj;                                                                                \
        x[j] = xj + (-lr) * (mj / ((POWER) * sc + sh));                                           \
    }

#define DEFINE_KERNELS(T, SUFFIX)                                                                 \
                                                                                                  \
/* 1 when any entry of the tensors is NaN or +-Inf, else 0 (exact: x - x is +0 for every finite x, \
 * NaN otherwise, and a sum of +0s stays +0 while NaN propagates). */                             \
int tf_any_nonfinite_##SUFFIX(const T **x_, const int64_t *sizes, int n, int nthreads) {          \
    int bad = 0;                                                                                  \
    int flags[256] = {0};                                                                         \
    if (nthreads > 256) nthreads = 256;                                                           \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *x = x_[i];                                                                       \
        T acc = 0;                                                                                \
        _Pragma("omp simd reduction(+:acc)")                                                      \
        for (int64_t j = a; j < b; j++) acc += x[j] - x[j];                                       \
        if (!(acc == 0)) flags[t] = 1;                                                            \
    SHARE_END                                                                                     \
    for (int t = 0; t < nthreads; t++) bad |= flags[t];                                           \
    return bad;                                                                                   \
}                                                                                                 \
                                                                                                  \
/* MoMo's first pass: d <- d + w (g - d) (torch.lerp with weight w = 1 - beta < 0.5 evaluates the \
 * same expression), and out = (<g,x>, <d,x>, ||d||^2) with the new d. */                         \
void tf_momo_direction_##SUFFIX(const T **g_, T **d_, const T **x_, const int64_t *sizes, int n,  \
                               T w, int nthreads, double *out) {                                  \
    double partial[256][3] = {{0}};                                                               \
    if (nthreads > 256) nthreads = 256;                                                           \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *g = g_[i], *x = x_[i];                                                           \
        T *d = d_[i];                                                                             \
        for (int64_t s = a; s < b; s += SUM_BLOCK) {                                              \
            int64_t e = s + SUM_BLOCK < b ? s + SUM_BLOCK : b;                                    \
            T gx = 0, dx = 0, dd = 0;                                                             \
            _Pragma("omp simd reduction(+:gx,dx,dd)")                                             \
            for (int64_t j = s; j < e; j++) {                                                     \
                T gj = g[j], xj = x[j], dj = d[j] + w * (gj - d[j]);                              \
                d[j] = dj;                                                                        \
                gx += gj * xj;                                                                    \
                dx += dj * xj;                                                                    \
                dd += dj * dj;                                                                    \
            }                                                                                     \
            partial[t][0] += gx;                                                                  \
            partial[t][1] += dx;                                                                  \
            partial[t][2] += dd;                                                                  \
        }                                                                                         \
    SHARE_END                                                                                     \
    out[0] = out[1] = out[2] = 0;                                                                 \
    for (int t = 0; t < nthreads; t++) {                                                          \
        out[0] += partial[t][0];                                                                  \
        out[1] += partial[t][1];                                                                  \
        out[2] += partial[t][2];                                                                  \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* MoMo's second pass: x <- x - tau d, then x <- x / c when decay (proximal weight decay). */     \
void tf_momo_apply_##SUFFIX(const T **d_, T **x_, const int64_t *sizes, int n, T tau, T c,        \
                           int decay, int nthreads) {                                             \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *d = d_[i];                                                                       \
        T *x = x_[i];                                                                             \
        if (decay) {                                                                              \
            _Pragma("omp simd")                                                                   \
            for (int64_t j = a; j < b; j++) x[j] = (x[j] - tau * d[j]) / c;                       \
        } else {                                                                                  \
            _Pragma("omp simd")                                                                   \
            for (int64_t j = a; j < b; j++) x[j] = x[j] - tau * d[j];                             \
        }                                                                                         \
    SHARE_END                                                                                     \
}                                                                                                 \
                                                                                                  \
/* RSGDM's step: g' = g + wd x; with the correction e = g' + beta (g' - p), p <- g' (torch.lerp(p, g', \
 * 1 + beta) in its weight >= 0.5 form), else e = g'; n <- n + w (e - n), w = 1 - beta; x <- x - lr n. \
 * p_ may be NULL (no correction). With out (else NULL): out = (||e - g'||^2, ||n||^2), the squared norms \
 * of the correction term and of the new momentum (RSGDM's correction_ratio). */                  \
void tf_rsgdm_step_##SUFFIX(const T **g_, T **n_, T **p_, T **x_, const int64_t *sizes, int n,    \
                           T beta, T w, T lr, T wd, int nthreads, double *out) {                  \
    double partial[256][2] = {{0}};                                                               \
    if (nthreads > 256) nthreads = 256;                                                           \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *g = g_[i];                                                                       \
        T *m = n_[i], *x = x_[i], *p = p_ ? p_[i] : 0;                                            \
        for (int64_t s = a; s < b; s += SUM_BLOCK) {                                              \
            int64_t e = s + SUM_BLOCK < b ? s + SUM_BLOCK : b;                                    \
            T cc = 0, mm = 0;                                                                     \
            if (p && out) {                                                                       \
                _Pragma("omp simd reduction(+:cc,mm)")                                            \
                for (int64_t j = s; j < e; j++) {                                                 \
                    T gj = g[j] + wd * x[j];                                                      \
                    T ej = gj + beta * (gj - p[j]);                                               \
                    T mj = m[j] + w * (ej - m[j]);                                                \
                    T cj = ej - gj;                                                               \
                    m[j] = mj;                                                                    \
                    p[j] = gj;                                                                    \
                    x[j] = x[j] - lr * mj;                                                        \
                    cc += cj * cj;                                                                \
                    mm += mj * mj;                                                                \
                }                                                                                 \
            } else if (p) {                                                                       \
                _Pragma("omp simd")                                                               \
                for (int64_t j = s; j < e; j++) {                                                 \
                    T gj = g[j] + wd * x[j];                                                      \
                    T ej = gj + beta * (gj - p[j]);                                               \
                    T mj = m[j] + w * (ej - m[j]);                                                \
                    m[j] = mj;                                                                    \
                    p[j] = gj;                                                                    \
                    x[j] = x[j] - lr * mj;                                                        \
                }                                                                                 \
            } else {                                                                              \
                _Pragma("omp simd reduction(+:mm)")                                               \
                for (int64_t j = s; j < e; j++) {                                                 \
                    T gj = g[j] + wd * x[j];                                                      \
                    T mj = m[j] + w * (gj - m[j]);                                                \
                    m[j] = mj;                                                                    \
                    x[j] = x[j] - lr * mj;                                                        \
                    mm += mj * mj;                                                                \
                }                                                                                 \
            }                                                                                     \
            partial[t][0] += cc;                                                                  \
            partial[t][1] += mm;                                                                  \
        }                                                                                         \
    SHARE_END                                                                                     \
    if (out) {                                                                                    \
        out[0] = out[1] = 0;                                                                      \
        for (int t = 0; t < nthreads; t++) {                                                      \
            out[0] += partial[t][0];                                                              \
            out[1] += partial[t][1];                                                              \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* MoMo-Adam's first pass: m <- m + w1 (g - m); v <- beta2 v + (1 - beta2) g^2; u = m / (sqrt(v) / bc2s \
 * + eps) (Adam's direction, not stored); out = (<g,x>, <m,x>, <m,u>). */                         \
void tf_momo_adam_direction_##SUFFIX(const T **g_, T **m_, T **v_, const T **x_,                  \
                                    const int64_t *sizes, int n, T w1, T beta2, T w2, T bc2s,     \
                                    T eps, int nthreads, double *out) {                           \
    double partial[256][3] = {{0}};                                                               \
    if (nthreads > 256) nthreads = 256;                                                           \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *g = g_[i], *x = x_[i];                                                           \
        T *m = m_[i], *v = v_[i];                                                                 \
        for (int64_t s = a; s < b; s += SUM_BLOCK) {                                              \
            int64_t e = s + SUM_BLOCK < b ? s + SUM_BLOCK : b;                                    \
            T gx = 0, mx = 0, mu = 0;                                                             \
            _Pragma("omp simd reduction(+:gx,mx,mu)")                                             \
            for (int64_t j = s; j < e; j++) {                                                     \
                T gj = g[j], xj = x[j];                                                           \
                T mj = m[j] + w1 * (gj - m[j]);                                                   \
                T vj = v[j] * beta2 + w2 * gj * gj;                                               \
                T uj = mj / (SQRT(vj) / bc2s + eps);                                              \
                m[j] = mj;                                                                        \
                v[j] = vj;                                                                        \
                gx += gj * xj;                                                                    \
                mx += mj * xj;                                                                    \
                mu += mj * uj;                                                                    \
            }                                                                                     \
            partial[t][0] += gx;                                                                  \
            partial[t][1] += mx;                                                                  \
            partial[t][2] += mu;                                                                  \
        }                                                                                         \
    SHARE_END                                                                                     \
    out[0] = out[1] = out[2] = 0;                                                                 \
    for (int t = 0; t < nthreads; t++) {                                                          \
        out[0] += partial[t][0];                                                                  \
        out[1] += partial[t][1];                                                                  \
        out[2] += partial[t][2];                                                                  \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* MoMo-Adam's second pass: x <- f x (f = 1 - lr wd, decoupled decay; 1: none), x <- x - tau u with Adam's \
 * direction u recomputed as in the first pass (bitwise the same), then x <- x / c when c != 1.   \
 */                                                                                               \
void tf_momo_adam_apply_##SUFFIX(const T **m_, const T **v_, T **x_, const int64_t *sizes, int n, \
                                T bc2s, T eps, T tau, T f, T c, int nthreads) {                   \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *m = m_[i], *v = v_[i];                                                           \
        T *x = x_[i];                                                                             \
        if (c != (T)1) {                                                                          \
            _Pragma("omp simd")                                                                   \
            for (int64_t j = a; j < b; j++)                                                       \
                x[j] = (x[j] * f - tau * (m[j] / (SQRT(v[j]) / bc2s + eps))) / c;                 \
        } else {                                                                                  \
            _Pragma("omp simd")                                                                   \
            for (int64_t j = a; j < b; j++)                                                       \
                x[j] = x[j] * f - tau * (m[j] / (SQRT(v[j]) / bc2s + eps));                       \
        }                                                                                         \
    SHARE_END                                                                                     \
}                                                                                                 \
                                                                                                  \
/* SMES's step for alpha > 0 (not the PAdam form), per tensor i with scale[i], shift[i]:          \
 * x <- f x (decoupled decay, f = 1 - lr wd) or g' = g + wd x (coupled, f = 1);                   \
 * m <- m + w1 (g' - m); v <- beta2 v + w2 g'^2; x <- x - lr m / (v^alpha scale + shift), v^alpha by \
 * `roots` square roots (alpha = 1/2, 1/4, 1/8) or exp(alpha log v) (roots = 0). */               \
void tf_smes_step_##SUFFIX(const T **g_, T **m_, T **v_, T **x_, const int64_t *sizes, int n,     \
                          const double *scale, const double *shift, T w1, T beta2, T w2, T lr,    \
                          T f, T wd, T alpha, int roots, int nthreads) {                          \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *g = g_[i];                                                                       \
        T *m = m_[i], *v = v_[i], *x = x_[i];                                                     \
        T sc = (T)scale[i], sh = (T)shift[i];                                                     \
        /* one loop per way of taking the power, so that each vectorises */                       \
        switch (roots) {                                                                          \
        case 1: SMES_LOOP(T, SQRT(vj)); break;                                                    \
        case 2: SMES_LOOP(T, SQRT(SQRT(vj))); break;                                              \
        case 3: SMES_LOOP(T, SQRT(SQRT(SQRT(vj)))); break;                                        \
        default: SMES_LOOP(T, EXP(alpha * LOG(vj))); break;                                       \
        }                                                                                         \
    SHARE_END                                                                                     \
}                                                                                                 \
                                                                                                  \
/* AGD's step without amsgrad or clip, per tensor i with ds[i], pr[i], thr[i], dsc[i]:            \
 * x <- f x (decoupled decay) or g' = g + wd x (coupled, f = 1); s = (m pr + g') ds (= mhat_t -   \
 * mhat_{t-1}); m <- m + w1 (g' - m); b <- beta2 b + w2 s^2; den = max(sqrt(b) dsc, thr);         \
 * x <- x - lr m / den. Returns in out[0] the number of coordinates where thr won (SGD-like). */  \
void tf_agd_step_##SUFFIX(const T **g_, T **m_, T **b_, T **x_, const int64_t *sizes, int n,      \
                         const double *ds, const double *pr, const double *thr,                   \
                         const double *dsc, T w1, T beta2, T w2, T lr, T f, T wd, int nthreads,   \
                         double *out) {                                                           \
    double partial[256] = {0};                                                                    \
    if (nthreads > 256) nthreads = 256;                                                           \
    SHARE_BEGIN(n, sizes, nthreads)                                                               \
        const T *g = g_[i];                                                                       \
        T *m = m_[i], *bb = b_[i], *x = x_[i];                                                    \
        T d_s = (T)ds[i], p_r = (T)pr[i], th = (T)thr[i], d_sc = (T)dsc[i];                       \
        for (int64_t s = a; s < b; s += SUM_BLOCK) {                                              \
            int64_t e = s + SUM_BLOCK < b ? s + SUM_BLOCK : b;                                    \
            T count = 0; /* exact: a block has far fewer than 2^24 elements */                    \
            _Pragma("omp simd reduction(+:count)")                                                \
            for (int64_t j = s; j < e; j++) {                                                     \
                T xj = x[j] * f; /* exact for f = 1 */                                            \
                T gj = g[j] + wd * xj; /* g itself for wd = 0 */                                  \
                T sj = (m[j] * p_r + gj) * d_s;                                                   \
                T mj = m[j] + w1 * (gj - m[j]);                                                   \
                T bj = bb[j] * beta2 + w2 * sj * sj;                                              \
                T root = SQRT(bj) * d_sc;                                                         \
                T den = root > th ? root : th;                                                    \
                count += root <= th ? (T)1 : (T)0;                                                \
                m[j] = mj;                                                                        \
                bb[j] = bj;                                                                       \
                x[j] = xj + (-lr) * (mj / den);                                                   \
            }                                                                                     \
            partial[t] += (double)count;                                                          \
        }                                                                                         \
    SHARE_END                                                                                     \
    out[0] = 0;                                                                                   \
    for (int t = 0; t < nthreads; t++) out[0] += partial[t];                                      \
}

#define SQRT sqrtf
#define EXP expf
#define LOG logf
DEFINE_KERNELS(float, f32)
#undef SQRT
#undef EXP
#undef LOG
#define SQRT sqrt
#define EXP exp
#define LOG log
DEFINE_KERNELS(double, f64)

/* The interface version native.py checks after loading (bump on any signature change). */
int tf_native_version(void) { return 3; }
