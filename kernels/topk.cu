// gpufact: deterministic top-k support masks, per row (or per column through strides).
//
// For each of `nvec` vectors of length `len` in a real non-negative array `mag` (magnitudes),
// element i of vector v sits at mag[v * vstride + i * estride]. The kernel writes
// mask[same offset] = 1 for the k largest entries, 0 elsewhere; ties are broken by the
// smaller index (deterministic, same rule as the NumPy reference and the Numba twin).
//
// One thread block per vector. Radix select on the bit pattern of the magnitudes (for
// non-negative IEEE floats, the order of the unsigned bit patterns is the order of the
// values): one counting pass per bit finds the k-th largest value t; entries > t are kept,
// and among entries == t the first k - #{> t} in index order (a block-wide scan).
// Cost O(len * bits) per vector; no sort, no extra memory.
//
// Name expressions: topk_mask<float, unsigned int>, topk_mask<double, unsigned long long>.

template <typename T, typename U>
__device__ __forceinline__ U as_bits(T x) {
    union { T f; U u; } c;
    c.f = x;
    return c.u;
}

template <typename T, typename U>
__global__ void topk_mask(const T* __restrict__ mag, unsigned char* __restrict__ mask,
                          long long nvec, long long len, long long vstride, long long estride,
                          long long k) {
    __shared__ unsigned long long red[32];
    __shared__ long long scan[1024];
    const long long v = blockIdx.x;
    if (v >= nvec) return;
    const T* x = mag + v * vstride;
    unsigned char* m = mask + v * vstride;
    const int nbits = 8 * sizeof(U);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;

    // block-wide sum of a per-thread count
    auto block_sum = [&](unsigned long long c) -> unsigned long long {
        for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
        if (lane == 0) red[warp] = c;
        __syncthreads();
        unsigned long long tot = 0;
        if (threadIdx.x == 0) {
            for (int w = 0; w < nwarps; ++w) tot += red[w];
            red[0] = tot;
        }
        __syncthreads();
        tot = red[0];
        __syncthreads();
        return tot;
    };

    // 1. radix select: largest bit pattern t with #{bits >= t} >= k
    U prefix = 0;
    for (int bit = nbits - 1; bit >= 0; --bit) {
        const U cand = prefix | ((U)1 << bit);
        unsigned long long c = 0;
        for (long long i = threadIdx.x; i < len; i += blockDim.x)
            c += (as_bits<T, U>(x[i * estride]) >= cand);
        if ((long long)block_sum(c) >= k) prefix = cand;
    }
    // 2. entries strictly above the threshold
    unsigned long long cg = 0;
    for (long long i = threadIdx.x; i < len; i += blockDim.x)
        cg += (as_bits<T, U>(x[i * estride]) > prefix);
    const long long need = k - (long long)block_sum(cg);  // ties to keep, in index order
    // 3. write the mask; ties ranked by a running block scan
    long long base = 0;
    for (long long c0 = 0; c0 < len; c0 += blockDim.x) {
        const long long i = c0 + threadIdx.x;
        U b = 0;
        bool inside = i < len;
        if (inside) b = as_bits<T, U>(x[i * estride]);
        const int tie = (inside && b == prefix) ? 1 : 0;
        scan[threadIdx.x] = tie;
        __syncthreads();
        for (int o = 1; o < (int)blockDim.x; o <<= 1) {  // inclusive Hillis-Steele scan
            long long add = (threadIdx.x >= (unsigned)o) ? scan[threadIdx.x - o] : 0;
            __syncthreads();
            scan[threadIdx.x] += add;
            __syncthreads();
        }
        const long long rank = base + scan[threadIdx.x] - tie;  // ties before i
        if (inside) m[i * estride] = (b > prefix || (tie && rank < need)) ? 1 : 0;
        base += scan[blockDim.x - 1];
        __syncthreads();
    }
}

#ifndef __CUDACC_RTC__
template __global__ void topk_mask<float, unsigned int>(const float*, unsigned char*, long long,
                                                         long long, long long, long long, long long);
template __global__ void topk_mask<double, unsigned long long>(const double*, unsigned char*, long long,
                                                                long long, long long, long long, long long);
#endif
