// gpufact: gradient of a Kronecker-sparse (KS) factor's blocks on the GPU.
//
// Layout: a KS factor of pattern (a, b, c, d) stores blocks[a][d][b][c]; blocks[al][de][r][s]
// sits at row al*b*d + r*d + de and column al*c*d + s*d + de (as kernels/ks_apply.cu). For
// Y = S X with upstream gradient G = dl/dY the kernel computes
//     dW[al][de][r][s] (+)= sum_t G[al*b*d + r*d + de, t] * conj(X[al*c*d + s*d + de, t])
// (PyTorch's convention for complex data). Element (row i, sample t) of X is
// X[i * x_si + t * x_sb] (G likewise): (N, B) column batches have (x_si, x_sb) = (B, 1),
// row-major samples (B, N) have (1, N); no transposed copy is made.
//
// Work: one thread block per stored entry (grid-stride over the a*b*c*d entries); its threads
// stride over the B samples and meet in a shared-memory tree reduction (blockDim.x a power of
// two, dynamic shared memory blockDim.x * sizeof(T)). The sum order is fixed by the launch
// configuration alone, so results do not depend on the schedule (no atomics). Cost
// O(nnz * B) multiply-adds, 2 * nnz * B loads; no extra global memory.
// With accumulate != 0 the sums are added to dW (chunked batches), else they overwrite it.
//
// Compiled by CuPy (NVRTC) with name expressions ks_grad<T>, T in {float, double,
// complex<float>, complex<double>}; plain nvcc takes the explicit instantiations at the end.

#ifdef __CUDACC_RTC__
#include <cupy/complex.cuh>
#else
#include <cuda/std/complex>
template <typename T> using complex = cuda::std::complex<T>;
#endif

__device__ __forceinline__ float conj_value(float v) { return v; }
__device__ __forceinline__ double conj_value(double v) { return v; }
template <typename R>
__device__ __forceinline__ complex<R> conj_value(const complex<R>& v) {
    return complex<R>(v.real(), -v.imag());
}

template <typename T>
__global__ void ks_grad(const T* __restrict__ X, const T* __restrict__ G, T* __restrict__ dW,
                        int a, int b, int c, int d, long long B,
                        long long x_si, long long x_sb, long long g_si, long long g_sb,
                        int accumulate) {
    extern __shared__ unsigned char smem_raw[];
    T* red = reinterpret_cast<T*>(smem_raw);
    const long long nnz = (long long)a * b * c * d;
    const int tid = threadIdx.x;
    for (long long e = blockIdx.x; e < nnz; e += gridDim.x) {
        // e = ((al * d + de) * b + r) * c + s, the storage order of the blocks
        const int s = (int)(e % c);
        const long long q = e / c;
        const int r = (int)(q % b);
        const long long p = q / b;
        const int de = (int)(p % d);
        const int al = (int)(p / d);
        const long long gi = (long long)al * b * d + (long long)r * d + de;
        const long long xi = (long long)al * c * d + (long long)s * d + de;
        const T* g = G + gi * g_si;
        const T* x = X + xi * x_si;
        T acc = T(0);
        for (long long t = tid; t < B; t += blockDim.x) acc += g[t * g_sb] * conj_value(x[t * x_sb]);
        red[tid] = acc;
        __syncthreads();
        for (int h = blockDim.x >> 1; h > 0; h >>= 1) {
            if (tid < h) red[tid] += red[tid + h];
            __syncthreads();
        }
        if (tid == 0) dW[e] = accumulate ? dW[e] + red[0] : red[0];
        __syncthreads();  // red is reused by the next entry
    }
}

#ifndef __CUDACC_RTC__
// Explicit instantiations: plain nvcc type-checks every dtype the launcher asks for.
#define GPUFACT_INSTANTIATE_GRAD(T)                                                        \
    template __global__ void ks_grad<T>(const T*, const T*, T*, int, int, int, int,         \
                                        long long, long long, long long, long long,         \
                                        long long, int);
GPUFACT_INSTANTIATE_GRAD(float)
GPUFACT_INSTANTIATE_GRAD(double)
GPUFACT_INSTANTIATE_GRAD(complex<float>)
GPUFACT_INSTANTIATE_GRAD(complex<double>)
#endif
