// gpufact: chains of general sparse (CSR) factors on the GPU, fused, and the fused
// assignment argmin_k bias[k] + alpha * (chain @ x)[k].
//
// The chain is held concatenated in application order (first factor applied first):
// plan[3j .. 3j+2] = (m_j, n_j, p_j): factor j maps n_j rows to m_j rows, its row i has the
// entries indptr[p_j + i] .. indptr[p_j + i + 1] - 1 of indices (int column indices) and
// data. Batches are addressed with two strides: element (row i, sample t) of X is
// X[i * x_si + t * x_sb]; (N, B) column batches have (x_si, x_sb) = (B, 1), row-major
// samples (B, N) have (1, N).
//
// One thread block per tile of bt = 2^log2bt samples. The tile lives in dynamic shared
// memory as rows of bt samples with an odd row stride ld = bt | 1 (s[i * ld + t]: the
// transposing loads and stores of row-major samples run along i without bank conflicts,
// the steps along t). Two ping-pong buffers of rows0 and rows1 rows hold the input, then
// each factor's output alternately; a thread computes output (i, t) as
// sum_p data[p] * src[indices[p] * ld + t] (a warp shares i when bt = 32: the CSR arrays are
// read once per warp, through L1). X is read once, Y written once.
//
// csr_chain_argmin never stores the last factor's output: thread (k0, t) visits k = k0,
// k0 + blockDim/bt, ... in increasing order keeping its first minimum, then the bt partial
// minima of each sample are merged through shared memory. Ties go to the smaller k; a NaN
// score wins (the first NaN), as numpy.argmin. Cost O(B * nnz) for both kernels.
//
// Compiled by CuPy (NVRTC) with name expressions csr_chain_apply<T>, T in {float, double,
// complex<float>, complex<double>}, and csr_chain_argmin<T>, T in {float, double}. Plain
// nvcc (the test suite's compile check) takes the explicit instantiations at the end.

#ifdef __CUDACC_RTC__
#include <cupy/complex.cuh>
#else
#include <cuda/std/complex>
template <typename T> using complex = cuda::std::complex<T>;
#endif

// Load the tile: rows 0 .. N-1 of samples b0 .. b0 + nt - 1 (zeros past nt), coalesced
// along the contiguous direction of X, then a barrier.
template <typename T>
__device__ __forceinline__ void csr_tile_load(T* s, const T* __restrict__ X, long long x_si,
                                              long long x_sb, int N, int log2bt, int ld,
                                              long long b0, int nt) {
    const int bt = 1 << log2bt;
    const int tile = N * bt;
    const bool x_rows = (x_si == 1);
    for (int idx = threadIdx.x; idx < tile; idx += blockDim.x) {
        int i, t;
        if (x_rows) { t = idx / N; i = idx - t * N; }
        else        { i = idx >> log2bt; t = idx & (bt - 1); }
        s[i * ld + t] = (t < nt) ? X[(long long)i * x_si + (b0 + t) * x_sb] : T(0);
    }
    __syncthreads();
}

// dst rows 0 .. m-1 <- (CSR rows p0 .. p0 + m - 1) @ src, every sample of the tile; a barrier.
template <typename T>
__device__ __forceinline__ void csr_step(const long long* __restrict__ indptr,
                                         const int* __restrict__ indices, const T* __restrict__ data,
                                         long long p0, int m, const T* src, T* dst, int log2bt, int ld) {
    const int bt = 1 << log2bt;
    const int total = m * bt;
    for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
        const int i = idx >> log2bt, t = idx & (bt - 1);
        const long long e = indptr[p0 + i + 1];
        T acc = T(0);
        for (long long p = indptr[p0 + i]; p < e; ++p)
            acc += data[p] * src[indices[p] * ld + t];
        dst[i * ld + t] = acc;
    }
    __syncthreads();
}

// Steps 0 .. nsteps-1 on the loaded tile (s0 -> s1 -> s0 ...); returns the buffer holding
// the result.
template <typename T>
__device__ __forceinline__ T* csr_run(const long long* __restrict__ plan, int nsteps,
                                      const long long* __restrict__ indptr,
                                      const int* __restrict__ indices, const T* __restrict__ data,
                                      T* s0, T* s1, int log2bt, int ld) {
    T* src = s0;
    T* dst = s1;
    for (int j = 0; j < nsteps; ++j) {
        csr_step(indptr, indices, data, plan[3 * j + 2], (int)plan[3 * j], src, dst, log2bt, ld);
        T* tmp = src;
        src = dst;
        dst = tmp;
    }
    return src;
}

template <typename T>
__global__ void __launch_bounds__(256)
csr_chain_apply(const long long* __restrict__ plan, int J, const long long* __restrict__ indptr,
                const int* __restrict__ indices, const T* __restrict__ data, int rows0, long long B,
                int log2bt, const T* __restrict__ X, long long x_si, long long x_sb,
                T* __restrict__ Y, long long y_si, long long y_sb) {
    extern __shared__ unsigned char smem_raw[];
    const int bt = 1 << log2bt, ld = bt | 1;
    T* s0 = reinterpret_cast<T*>(smem_raw);
    T* s1 = s0 + (long long)rows0 * ld;
    const long long b0 = (long long)blockIdx.x * bt;
    const int nt = (int)((B - b0) < bt ? (B - b0) : bt);
    csr_tile_load(s0, X, x_si, x_sb, (int)plan[1], log2bt, ld, b0, nt);
    const T* res = csr_run(plan, J, indptr, indices, data, s0, s1, log2bt, ld);
    const int M = (int)plan[3 * (J - 1)];
    const int tile = M * bt;
    const bool y_rows = (y_si == 1);
    for (int idx = threadIdx.x; idx < tile; idx += blockDim.x) {
        int i, t;
        if (y_rows) { t = idx / M; i = idx - t * M; }
        else        { i = idx >> log2bt; t = idx & (bt - 1); }
        if (t < nt) Y[(long long)i * y_si + (b0 + t) * y_sb] = res[i * ld + t];
    }
}

// Does candidate (v, k) come before the current minimum (bv, bk) in numpy.argmin's order?
// (bk < 0: no minimum yet.) NaN first, then smaller values, then the smaller k.
template <typename T>
__device__ __forceinline__ bool argmin_before(T v, int k, T bv, int bk) {
    if (k < 0) return false;
    if (bk < 0) return true;
    const bool vn = (v != v), bn = (bv != bv);
    if (vn || bn) return vn && (!bn || k < bk);
    return v < bv || (v == bv && k < bk);
}

template <typename T>
__global__ void __launch_bounds__(256)
csr_chain_argmin(const long long* __restrict__ plan, int J, const long long* __restrict__ indptr,
                 const int* __restrict__ indices, const T* __restrict__ data, int rows0, int rows1,
                 long long B, int log2bt, const T* __restrict__ X, long long x_si, long long x_sb,
                 const T* __restrict__ bias, T alpha, int* __restrict__ labels,
                 T* __restrict__ values) {
    extern __shared__ unsigned char smem_raw[];
    const int bt = 1 << log2bt, ld = bt | 1;
    T* s0 = reinterpret_cast<T*>(smem_raw);
    T* s1 = s0 + (long long)rows0 * ld;
    T* red_v = s1 + (long long)rows1 * ld;         // blockDim partial minima
    int* red_k = reinterpret_cast<int*>(red_v + blockDim.x);  // and their k
    const long long b0 = (long long)blockIdx.x * bt;
    const int nt = (int)((B - b0) < bt ? (B - b0) : bt);
    csr_tile_load(s0, X, x_si, x_sb, (int)plan[1], log2bt, ld, b0, nt);
    const T* src = csr_run(plan, J - 1, indptr, indices, data, s0, s1, log2bt, ld);
    // the last factor, reduced on the fly: this thread's sample t, rows k0, k0 + kstep, ...
    const int K = (int)plan[3 * (J - 1)];
    const long long p0 = plan[3 * (J - 1) + 2];
    const int t = threadIdx.x & (bt - 1);
    const int kstep = blockDim.x >> log2bt;
    T best = T(0);
    int arg = -1;
    for (int k = threadIdx.x >> log2bt; k < K; k += kstep) {
        const long long e = indptr[p0 + k + 1];
        T acc = T(0);
        for (long long p = indptr[p0 + k]; p < e; ++p)
            acc += data[p] * src[indices[p] * ld + t];
        const T s = alpha * acc + bias[k];
        if (arg < 0 || s < best || (s != s && best == best)) {
            best = s;
            arg = k;
        }
    }
    red_v[threadIdx.x] = best;
    red_k[threadIdx.x] = arg;
    __syncthreads();
    if ((int)threadIdx.x < bt && (int)threadIdx.x < nt) {
        for (int q = threadIdx.x + bt; q < (int)blockDim.x; q += bt) {
            if (argmin_before(red_v[q], red_k[q], best, arg)) {
                best = red_v[q];
                arg = red_k[q];
            }
        }
        labels[b0 + threadIdx.x] = arg;
        values[b0 + threadIdx.x] = best;
    }
}

#ifndef __CUDACC_RTC__
#define GPUFACT_CSR_APPLY(T)                                                                       \
    template __global__ void csr_chain_apply<T>(const long long*, int, const long long*, const int*, \
                                                const T*, int, long long, int, const T*, long long,  \
                                                long long, T*, long long, long long);
GPUFACT_CSR_APPLY(float)
GPUFACT_CSR_APPLY(double)
GPUFACT_CSR_APPLY(complex<float>)
GPUFACT_CSR_APPLY(complex<double>)
#define GPUFACT_CSR_ARGMIN(T)                                                                       \
    template __global__ void csr_chain_argmin<T>(const long long*, int, const long long*, const int*, \
                                                 const T*, int, int, long long, int, const T*,      \
                                                 long long, long long, const T*, T, int*, T*);
GPUFACT_CSR_ARGMIN(float)
GPUFACT_CSR_ARGMIN(double)
#endif
