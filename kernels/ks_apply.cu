// gpufact: Kronecker-sparse (KS) factor products on the GPU.
//
// A KS factor of pattern (a, b, c, d) is the (a*b*d) x (a*c*d) matrix with support
// I_a (x) 1_{b x c} (x) I_d, stored as blocks[a][d][b][c]: blocks[al][de][r][s] sits at row
// al*b*d + r*d + de and column al*c*d + s*d + de.
//
// Batches are addressed with two strides: element (row i, sample t) of X is
// X[i * x_si + t * x_sb]; (N, B) column batches have (x_si, x_sb) = (B, 1), row-major
// samples (B, N) have (1, N). No kernel here transposes data in global memory.
//
// Compiled by CuPy (NVRTC, which defines __CUDACC_RTC__) with name expressions
// ks_factor_apply<T>, bf_chain_apply<T>, bf_chain_apply_radix<T>, bf_pass_cols<T>, T in {float, double, complex<float>,
// complex<double>}. Plain nvcc (the test suite's compile check) takes the explicit
// instantiations at the end.

#ifdef __CUDACC_RTC__
#include <cupy/complex.cuh>
#else
#include <cuda/std/complex>
template <typename T> using complex = cuda::std::complex<T>;
#endif

// One KS factor, global -> global: one thread per output element.
// Threads run along the contiguous direction of Y (y_rows_fast: along rows i).
template <typename T>
__global__ void ks_factor_apply(const T* __restrict__ w, const T* __restrict__ X,
                                T* __restrict__ Y, int a, int b, int c, int d,
                                long long B, long long x_si, long long x_sb,
                                long long y_si, long long y_sb, int y_rows_fast) {
    const long long M = (long long)a * b * d;
    const long long total = M * B;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long i, t;
        if (y_rows_fast) { i = idx % M; t = idx / M; }
        else             { t = idx % B; i = idx / B; }
        const int al = (int)(i / ((long long)b * d));
        const int rem = (int)(i - (long long)al * b * d);
        const int r = rem / d;
        const int de = rem - r * d;
        const T* wk = w + (((long long)al * d + de) * b + r) * c;
        const long long col0 = (long long)al * c * d + de;
        T acc = T(0);
        for (int s = 0; s < c; ++s) {
            acc += wk[s] * X[(col0 + (long long)s * d) * x_si + t * x_sb];
        }
        Y[i * y_si + t * y_sb] = acc;
    }
}

// Tile of bt samples in shared memory, shared by the fused chain kernels: row i of sample t
// at s[t * Np + i + (i >> pad)] (pad = NO_PAD: unpadded, Np = N). Reads/writes run along the
// contiguous direction of X/Y (rows i when samples are rows, samples t otherwise).
constexpr int NO_PAD = 31;  // i >> 31 == 0 for every row index

template <typename T>
__device__ __forceinline__ void tile_load(T* s, const T* __restrict__ X, long long x_si,
                                          long long x_sb, int N, int Np, int pad, int log2bt,
                                          long long b0, int nt) {
    const int bt = 1 << log2bt;
    const int tile = N * bt;
    const bool x_rows = (x_si == 1);  // samples are rows: read along i for coalescing
    for (int idx = threadIdx.x; idx < tile; idx += blockDim.x) {
        int i, t;
        if (x_rows) { t = idx / N; i = idx - t * N; }
        else        { i = idx >> log2bt; t = idx & (bt - 1); }
        s[t * Np + i + (i >> pad)] = (t < nt) ? X[(long long)i * x_si + (b0 + t) * x_sb] : T(0);
    }
}

// Start of the fused chain kernels: this block's tile (samples b0 .. b0 + nt - 1; the last
// tile may be partial) loaded into dynamic shared memory by tile_load, then a barrier.
template <typename T>
__device__ __forceinline__ T* tile_begin(const T* __restrict__ X, long long x_si, long long x_sb,
                                         int N, int Np, int pad, int log2bt, long long B,
                                         long long& b0, int& nt) {
    extern __shared__ unsigned char smem_raw[];
    T* s = reinterpret_cast<T*>(smem_raw);
    const int bt = 1 << log2bt;
    b0 = (long long)blockIdx.x * bt;
    nt = (int)((B - b0) < bt ? (B - b0) : bt);
    tile_load(s, X, x_si, x_sb, N, Np, pad, log2bt, b0, nt);
    __syncthreads();
    return s;
}

template <typename T>
__device__ __forceinline__ void tile_store(const T* s, T* __restrict__ Y, long long y_si,
                                           long long y_sb, int N, int Np, int pad, int log2bt,
                                           long long b0, int nt) {
    const int bt = 1 << log2bt;
    const int tile = N * bt;
    const bool y_rows = (y_si == 1);
    for (int idx = threadIdx.x; idx < tile; idx += blockDim.x) {
        int i, t;
        if (y_rows) { t = idx / N; i = idx - t * N; }
        else        { i = idx >> log2bt; t = idx & (bt - 1); }
        if (t < nt) Y[(long long)i * y_si + (b0 + t) * y_sb] = s[t * Np + i + (i >> pad)];
    }
}

// A chain of square butterfly factors (b = c = 2, N = a*2*d, d a power of two), fused:
// each thread block loads a tile of `bt` samples into shared memory (sample-major layout
// s[t*N + i], so consecutive threads touch consecutive rows: no bank conflicts), applies all
// J factors in place there (a thread owns a pair of rows of a factor for all bt samples: its
// 4 weights are loaded once and reused bt times), and writes the tile back once.
// meta[2j] = log2(d_j), meta[2j+1] = offset of factor j's blocks in w; factors in
// application order. Global traffic: X read once, Y written once, weights via L2/L1.
template <typename T>
__global__ void bf_chain_apply(const T* __restrict__ w, const long long* __restrict__ meta,
                               int J, int N, long long B, int log2bt,
                               const T* __restrict__ X, long long x_si, long long x_sb,
                               T* __restrict__ Y, long long y_si, long long y_sb) {
    long long b0;
    int nt;
    T* s = tile_begin(X, x_si, x_sb, N, N, NO_PAD, log2bt, B, b0, nt);
    const int bt = 1 << log2bt;
    const int half = N >> 1;
    for (int j = 0; j < J; ++j) {
        const int ld = (int)meta[2 * j];
        const long long off = meta[2 * j + 1];
        const int d = 1 << ld;
        for (int pair = threadIdx.x; pair < half; pair += blockDim.x) {
            const int al = pair >> ld;
            const int de = pair & (d - 1);
            const int i0 = (al << (ld + 1)) + de;
            const int i1 = i0 + d;
            const T* wk = w + off + 4LL * pair;  // pair == al*d + de
            const T w00 = wk[0], w01 = wk[1], w10 = wk[2], w11 = wk[3];
            for (int t = 0; t < bt; ++t) {
                const T x0 = s[t * N + i0];
                const T x1 = s[t * N + i1];
                s[t * N + i0] = w00 * x0 + w01 * x1;
                s[t * N + i1] = w10 * x0 + w11 * x1;
            }
        }
        __syncthreads();
    }
    tile_store(s, Y, y_si, y_sb, N, N, NO_PAD, log2bt, b0, nt);
}

// Pass tables (gpufact._kernels.plan.butterfly_passes): PASS_FIELDS int64 per pass,
// (R, ld_0 .. ld_5, off_0 .. off_5), levels in application order.
#define PASS_RMAX 6
#define PASS_FIELDS (1 + 2 * PASS_RMAX)

// Decode a pass: ld[r] = its bits in application order (0 beyond R), q = the same bits in
// ascending order (31 beyond R), for pass_group_base. Fully unrolled: stays in registers.
template <int RMAX>
__device__ __forceinline__ void pass_bits(const long long* ps, int R, int (&ld)[RMAX], int (&q)[RMAX]) {
#pragma unroll
    for (int r = 0; r < RMAX; ++r) {
        ld[r] = (r < R) ? (int)ps[1 + r] : 0;
        q[r] = (r < R) ? ld[r] : 31;
    }
#pragma unroll
    for (int a = 0; a < RMAX; ++a)
#pragma unroll
        for (int b = 0; b + 1 < RMAX - a; ++b)
            if (q[b] > q[b + 1]) { const int tmp = q[b]; q[b] = q[b + 1]; q[b + 1] = tmp; }
}

// First row of group g of a pass: g with a zero bit inserted at each of its sorted bits q.
template <int RMAX>
__device__ __forceinline__ int pass_group_base(int g, int R, const int (&q)[RMAX]) {
    int base = g;
#pragma unroll
    for (int r = 0; r < RMAX; ++r)
        if (r < R) base = ((base >> q[r]) << (q[r] + 1)) | (base & ((1 << q[r]) - 1));
    return base;
}

// The same chain in radix-2^R passes (R <= RMAX), the pass table above. A thread owns a group of 2^R rows (the rows that differ only in bits ld_0..ld_{R-1}),
// loads its R * 2^(R-1) blocks of 2x2 weights into registers once, and for each of the bt
// samples of the tile reads its 2^R values from shared memory, applies the R factors in
// registers and writes them back: R-fold fewer shared-memory round trips and barriers than
// bf_chain_apply. reference.bf_passes_apply is the index-for-index NumPy model (tested).
// RMAX = 3 (48 weights in registers) up to 8-byte types, 2 for complex<double>.
template <typename T>
__global__ void __launch_bounds__(256) bf_chain_apply_radix(
        const T* __restrict__ w, const long long* __restrict__ passes, int P, int N, long long B,
        int log2bt, const T* __restrict__ X, long long x_si, long long x_sb,
        T* __restrict__ Y, long long y_si, long long y_sb) {
    constexpr int RMAX = sizeof(T) <= 8 ? 3 : 2;
    constexpr int KMAX = 1 << RMAX;
    // Shared layout: row i of sample t at t * Np + i + (i >> PAD), one padding element per
    // 128 bytes, so the strided groups of the low-bit passes (rows 8g + k) spread over all
    // banks (unpadded: up to 8-way conflicts for float).
    constexpr int PAD = sizeof(T) == 4 ? 5 : (sizeof(T) == 8 ? 4 : 3);
    const int Np = N + (N >> PAD);
    long long b0;
    int nt;
    T* s = tile_begin(X, x_si, x_sb, N, Np, PAD, log2bt, B, b0, nt);
    const int bt = 1 << log2bt;
    for (int p = 0; p < P; ++p) {
        const long long* ps = passes + (long long)PASS_FIELDS * p;
        const int R = (int)ps[0];
        if (R < 1 || R > RMAX) __trap();  // the launcher plans with this RMAX
        int ld[RMAX], q[RMAX];
        pass_bits<RMAX>(ps, R, ld, q);
        long long off[RMAX];
#pragma unroll
        for (int r = 0; r < RMAX; ++r) off[r] = (r < R) ? ps[1 + PASS_RMAX + r] : 0;
        const int K = 1 << R;
        const int G = N >> R;
        for (int g = threadIdx.x; g < G; g += blockDim.x) {
            const int base = pass_group_base<RMAX>(g, R, q);
            int idx[KMAX];
#pragma unroll
            for (int k = 0; k < KMAX; ++k) {
                int i = base;
#pragma unroll
                for (int r = 0; r < RMAX; ++r)
                    if (r < R && ((k >> r) & 1)) i |= 1 << ld[r];
                idx[k] = i;  // logical row; stored at i + (i >> PAD)
            }
            // wr[r][m]: level r, pair m = k with bit r removed (compile-time after unrolling)
            T wr[RMAX][KMAX / 2][4];
#pragma unroll
            for (int r = 0; r < RMAX; ++r)
#pragma unroll
                for (int k = 0; k < KMAX; ++k) {
                    if ((k >> r) & 1) continue;
                    const int m = ((k >> (r + 1)) << r) | (k & ((1 << r) - 1));
                    if (r < R && k < K) {
                        const int i0 = idx[k];
                        const int pr = ((i0 >> (ld[r] + 1)) << ld[r]) | (i0 & ((1 << ld[r]) - 1));
                        const T* wk = w + off[r] + 4LL * pr;
                        wr[r][m][0] = wk[0]; wr[r][m][1] = wk[1]; wr[r][m][2] = wk[2]; wr[r][m][3] = wk[3];
                    } else {
                        wr[r][m][0] = wr[r][m][1] = wr[r][m][2] = wr[r][m][3] = T(0);
                    }
                }
            for (int t = 0; t < bt; ++t) {
                T* st = s + t * Np;
                T v[KMAX];
#pragma unroll
                for (int k = 0; k < KMAX; ++k) v[k] = (k < K) ? st[idx[k] + (idx[k] >> PAD)] : T(0);
#pragma unroll
                for (int r = 0; r < RMAX; ++r) {
                    if (r >= R) break;
#pragma unroll
                    for (int k = 0; k < KMAX; ++k) {
                        if ((k >> r) & 1) continue;
                        const int m = ((k >> (r + 1)) << r) | (k & ((1 << r) - 1));
                        const int k1 = k | (1 << r);
                        const T x0 = v[k], x1 = v[k1];
                        v[k] = wr[r][m][0] * x0 + wr[r][m][1] * x1;
                        v[k1] = wr[r][m][2] * x0 + wr[r][m][3] * x1;
                    }
                }
#pragma unroll
                for (int k = 0; k < KMAX; ++k)
                    if (k < K) st[idx[k] + (idx[k] >> PAD)] = v[k];
            }
        }
        __syncthreads();
    }
    tile_store(s, Y, y_si, y_sb, N, Np, PAD, log2bt, b0, nt);
}

// One radix-2^R pass of a butterfly chain over column batches (X (N, B) with unit sample
// stride): thread (group g = blockIdx.y, sample t) loads the 2^R rows of group g of sample
// t into registers, applies the pass's R factors and stores them (in place is safe: threads
// own disjoint (group, sample) sets). All threads of a block share group g, so the block
// stages the group's R * 2^(R-1) 2x2 blocks in shared memory once and every weight read is a
// broadcast: weights cost nothing per sample (the tile kernels re-read them per tile), and
// consecutive threads read consecutive samples (coalesced). A chain is ceil(L / R) passes,
// each a round trip through global memory (L2-resident for moderate N * B).
// RMAX = 6 (64 values in registers) for 4-byte types, 5 for 8-byte, 4 for complex<double>.
template <typename T>
__global__ void __launch_bounds__(256) bf_pass_cols(
        const T* __restrict__ w, const long long* __restrict__ pass, int N, long long B,
        const T* X, long long x_si, T* Y, long long y_si) {
    constexpr int RMAX = sizeof(T) == 4 ? 6 : (sizeof(T) == 8 ? 5 : 4);
    constexpr int KMAX = 1 << RMAX;
    __shared__ T sw[RMAX * (KMAX / 2) * 4];
    const int R = (int)pass[0];
    if (R < 1 || R > RMAX) __trap();  // the launcher plans with this RMAX
    const int K = 1 << R;
    const int g = blockIdx.y;
    int ld[RMAX], q[RMAX];
    pass_bits<RMAX>(pass, R, ld, q);
    const int base = pass_group_base<RMAX>(g, R, q);
    // stage the weights: entry (r, m) is level r's pair m (= k with bit r removed)
    const int half = K >> 1;
    for (int e = threadIdx.x; e < R * half; e += blockDim.x) {
        const int r = e / half;
        const int m = e - r * half;
        const int k = ((m >> r) << (r + 1)) | (m & ((1 << r) - 1));  // insert a 0 at bit r
        int i0 = base;  // (the pass table, not ld[]/off[]: a runtime index would spill them)
        for (int rr = 0; rr < R; ++rr)
            if ((k >> rr) & 1) i0 |= 1 << (int)pass[1 + rr];
        const int ldr = (int)pass[1 + r];
        const int pr = ((i0 >> (ldr + 1)) << ldr) | (i0 & ((1 << ldr) - 1));
        const T* wk = w + pass[1 + PASS_RMAX + r] + 4LL * pr;
        T* dst = sw + (r * (KMAX / 2) + m) * 4;
        dst[0] = wk[0]; dst[1] = wk[1]; dst[2] = wk[2]; dst[3] = wk[3];
    }
    __syncthreads();
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= B) return;
    T v[KMAX];
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
        if (k < K) {
            int i = base;
#pragma unroll
            for (int r = 0; r < RMAX; ++r)
                if (r < R && ((k >> r) & 1)) i |= 1 << ld[r];
            v[k] = X[(long long)i * x_si + t];
        } else {
            v[k] = T(0);
        }
    }
#pragma unroll
    for (int r = 0; r < RMAX; ++r) {
        if (r >= R) break;
#pragma unroll
        for (int k = 0; k < KMAX; ++k) {
            if ((k >> r) & 1) continue;
            if (k >= K) continue;
            const int m = ((k >> (r + 1)) << r) | (k & ((1 << r) - 1));
            const T* wm = sw + (r * (KMAX / 2) + m) * 4;
            const int k1 = k | (1 << r);
            const T x0 = v[k], x1 = v[k1];
            v[k] = wm[0] * x0 + wm[1] * x1;
            v[k1] = wm[2] * x0 + wm[3] * x1;
        }
    }
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
        if (k < K) {
            int i = base;
#pragma unroll
            for (int r = 0; r < RMAX; ++r)
                if (r < R && ((k >> r) & 1)) i |= 1 << ld[r];
            Y[(long long)i * y_si + t] = v[k];
        }
    }
}

#ifndef __CUDACC_RTC__
// Explicit instantiations: plain nvcc type-checks every dtype the launcher asks for.
#define GPUFACT_INSTANTIATE(T)                                                              \
    template __global__ void ks_factor_apply<T>(const T*, const T*, T*, int, int, int, int,  \
                                                long long, long long, long long, long long, \
                                                long long, int);                            \
    template __global__ void bf_chain_apply<T>(const T*, const long long*, int, int,        \
                                               long long, int, const T*, long long,         \
                                               long long, T*, long long, long long);        \
    template __global__ void bf_chain_apply_radix<T>(const T*, const long long*, int, int,  \
                                                     long long, int, const T*, long long,   \
                                                     long long, T*, long long, long long);  \
    template __global__ void bf_pass_cols<T>(const T*, const long long*, int, long long,    \
                                             const T*, long long, T*, long long);
GPUFACT_INSTANTIATE(float)
GPUFACT_INSTANTIATE(double)
GPUFACT_INSTANTIATE(complex<float>)
GPUFACT_INSTANTIATE(complex<double>)
#endif
