// gpufact test suite: run CUDA kernels on the host, one block at a time, for machines with
// no GPU. Force-included (g++ -include) before a kernels/*.cu source.
//
// Each CUDA thread of a block is a cooperative fiber (ucontext) with its own stack. The
// scheduler runs every runnable fiber in a chosen order (forward, reverse or a seeded
// shuffle) until it reaches __syncthreads() or a warp shuffle, then releases a barrier once
// every live thread of the block (of the warp) waits at it. So
//   * barriers are real: every thread of the block must reach each __syncthreads() (a
//     thread that skips one or exits before it is reported as a deadlock, not hung);
//   * a race between two threads of one barrier interval shows up as results that depend
//     on the schedule order (the tests run forward and reverse and compare bit for bit);
//   * dynamic shared memory is exactly the launch's shared_mem bytes between two guard
//     bands, filled with 0xFF bytes (NaN) before each block; a guard write is an error;
//   * __trap() ends the launch with an error instead of killing the process.
// Static __shared__ arrays get the same treatment, fresh for each block (shared_array).
#pragma once
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace emu {

struct Dim3 {
    unsigned x = 1, y = 1, z = 1;
};

enum State { RUN, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
    ucontext_t ctx;  // start context (makecontext); later switches use jb
    jmp_buf jb;
    bool started = false;
    Dim3 tid;
    int lane = 0, warp = 0;
    State state = RUN;
};

// Fiber stacks: 1 MiB each (lazily committed), a PROT_NONE page below each; with
// -fstack-clash-protection every frame touches its pages, so an overflow faults at once.
constexpr std::size_t STACK_BYTES = 1 << 20;
constexpr std::size_t GUARD_PAGE = 1 << 16;  // >= the page size on x86-64 and arm64
constexpr std::size_t GUARD_BYTES = 256;
constexpr std::size_t SHFL_BYTES = 16;  // widest value a shuffle moves

// n fiber stacks in one mapping, each above its own inaccessible guard page.
class Stacks {
   public:
    ~Stacks() { release(); }
    bool reserve(unsigned n) {
        if (n <= n_) return true;
        release();
        const std::size_t bytes = (std::size_t)n * (STACK_BYTES + GUARD_PAGE);
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        base_ = static_cast<char*>(p);
        n_ = n;
        for (unsigned i = 0; i < n; ++i) mprotect(base_ + (std::size_t)i * (STACK_BYTES + GUARD_PAGE), GUARD_PAGE, PROT_NONE);
        return true;
    }
    char* at(unsigned i) const { return base_ + (std::size_t)i * (STACK_BYTES + GUARD_PAGE) + GUARD_PAGE; }

   private:
    void release() {
        if (base_) munmap(base_, (std::size_t)n_ * (STACK_BYTES + GUARD_PAGE));
        base_ = nullptr;
        n_ = 0;
    }
    char* base_ = nullptr;
    unsigned n_ = 0;
};

struct Launch {
    std::vector<Fiber> fibers;
    Stacks stacks;
    std::vector<unsigned char> smem;  // guard | dynamic shared memory | guard
    std::vector<unsigned char> shfl;  // per warp: 32 lanes x SHFL_BYTES
    jmp_buf sched;
    Fiber* cur = nullptr;
    Dim3 block_idx, block_dim, grid_dim;
    unsigned char* dyn_smem = nullptr;
    std::map<const void*, std::vector<unsigned char>> static_smem;  // per block, by declaration
    std::function<void()> body;
    std::string error;
};

inline Launch* L = nullptr;

// A static `__shared__ T name[E];` of the kernel source (rewritten by the Python side):
// one array per block and declaration site, filled with 0xFF when the block starts.
template <typename A>
A& shared_array(const void* site) {
    std::vector<unsigned char>& slot = L->static_smem[site];
    if (slot.empty()) slot.assign(sizeof(A), 0xFF);
    return *reinterpret_cast<A*>(slot.data());
}

// Switches: _setjmp/_longjmp between the scheduler's and the fibers' stacks (no signal-mask
// syscall, unlike swapcontext); makecontext/setcontext only start a fiber on its stack.
inline void yield_as(State s) {
    Fiber* f = L->cur;
    f->state = s;
    if (_setjmp(f->jb) == 0) _longjmp(L->sched, 1);
}

[[noreturn]] inline void fail(const std::string& msg) {
    if (L->error.empty()) L->error = msg;
    L->cur->state = DONE;
    _longjmp(L->sched, 1);
}

[[noreturn]] inline void fiber_entry() {
    L->body();
    L->cur->state = DONE;
    _longjmp(L->sched, 1);
}

inline void resume(Fiber& f) {
    L->cur = &f;
    if (_setjmp(L->sched) != 0) return;  // back from the fiber
    if (!f.started) {
        f.started = true;
        setcontext(&f.ctx);
    }
    _longjmp(f.jb, 1);
}

// Run one block: every thread as a fiber, barriers released when all live threads wait.
inline bool run_block(int order) {
    const unsigned n = L->block_dim.x * L->block_dim.y * L->block_dim.z;
    const unsigned nwarps = (n + 31) / 32;
    L->fibers.assign(n, Fiber{});
    L->static_smem.clear();
    if (!L->stacks.reserve(n)) {
        L->error = "cannot map fiber stacks";
        return false;
    }
    L->shfl.assign((std::size_t)nwarps * 32 * SHFL_BYTES, 0);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = L->fibers[i];
        f.tid.x = i % L->block_dim.x;
        f.tid.y = (i / L->block_dim.x) % L->block_dim.y;
        f.tid.z = i / (L->block_dim.x * L->block_dim.y);
        f.lane = (int)(i % 32);
        f.warp = (int)(i / 32);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = L->stacks.at(i);
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link = nullptr;  // fiber_entry never returns
        makecontext(&f.ctx, (void (*)())fiber_entry, 0);
    }
    std::vector<unsigned> seq(n);
    std::iota(seq.begin(), seq.end(), 0u);
    if (order == 1) std::reverse(seq.begin(), seq.end());
    if (order >= 2) std::shuffle(seq.begin(), seq.end(), std::mt19937(order));
    for (;;) {
        for (unsigned i : seq) {
            Fiber& f = L->fibers[i];
            if (f.state != RUN) continue;
            resume(f);
            if (!L->error.empty()) return false;
        }
        unsigned live = 0, at_block = 0;
        for (const Fiber& f : L->fibers) {
            live += f.state != DONE;
            at_block += f.state == WAIT_BLOCK;
        }
        if (live == 0) return true;
        bool released = false;
        for (unsigned w = 0; w < nwarps; ++w) {
            unsigned live_w = 0, at_warp = 0;
            for (unsigned i = w * 32; i < std::min(n, w * 32 + 32); ++i) {
                live_w += L->fibers[i].state != DONE;
                at_warp += L->fibers[i].state == WAIT_WARP;
            }
            if (at_warp > 0 && at_warp == live_w) {
                for (unsigned i = w * 32; i < std::min(n, w * 32 + 32); ++i)
                    if (L->fibers[i].state == WAIT_WARP) L->fibers[i].state = RUN;
                released = true;
            }
        }
        if (!released && at_block == live) {
            if (live < n) {  // CUDA: a barrier must be reached by every thread of the block
                L->error = "deadlock: __syncthreads() reached by " + std::to_string(live) + " of " +
                           std::to_string(n) + " threads (the others have exited: divergent barrier)";
                return false;
            }
            for (Fiber& f : L->fibers)
                if (f.state == WAIT_BLOCK) f.state = RUN;
            released = true;
        }
        if (!released) {
            L->error = "deadlock: threads wait at different barriers (__syncthreads in "
                       "divergent code, or a warp shuffle some lanes skip)";
            return false;
        }
    }
}

// Parameter signature codes, checked against the Python-side arguments at each launch.
template <typename T>
std::string code() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) return "p" + code<std::remove_pointer_t<U>>();
    else if constexpr (std::is_same_v<U, float>) return "f4";
    else if constexpr (std::is_same_v<U, double>) return "f8";
    else if constexpr (std::is_same_v<U, std::complex<float>>) return "c8";
    else if constexpr (std::is_same_v<U, std::complex<double>>) return "c16";
    else if constexpr (std::is_integral_v<U>)
        return std::string(std::is_signed_v<U> ? "i" : "u") + std::to_string(sizeof(U));
    else return "?";
}

struct Entry {
    std::string name, sig;
    std::function<void(void**)> run;
};

template <typename... A, std::size_t... I>
void invoke(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}

template <typename... A>
Entry entry(const char* name, void (*k)(A...)) {
    std::string sig;
    ((sig += (sig.empty() ? "" : ",") + code<A>()), ...);
    return Entry{name, sig, [k](void** p) { invoke(k, p, std::index_sequence_for<A...>{}); }};
}

std::vector<Entry>& registry();  // defined by the generated translation unit

}  // namespace emu

#define threadIdx (emu::L->cur->tid)
#define blockIdx (emu::L->block_idx)
#define blockDim (emu::L->block_dim)
#define gridDim (emu::L->grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

inline void __syncthreads() { emu::yield_as(emu::WAIT_BLOCK); }
[[noreturn]] inline void __trap() { emu::fail("__trap() called"); }

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    static_assert(sizeof(T) <= emu::SHFL_BYTES, "shuffle of a wide type");
    emu::Fiber* f = emu::L->cur;
    if (width != 32) emu::fail("__shfl_down_sync: only width 32 is emulated");
    unsigned char* buf = emu::L->shfl.data() + (std::size_t)f->warp * 32 * emu::SHFL_BYTES;
    std::memcpy(buf + f->lane * emu::SHFL_BYTES, &v, sizeof(T));
    emu::yield_as(emu::WAIT_WARP);  // every live lane of the warp has written
    T r = v;
    const unsigned src = (unsigned)f->lane + delta;
    if (src < 32) {
        const std::size_t i = (std::size_t)f->warp * 32 + src;
        if (!((mask >> src) & 1u) || i >= emu::L->fibers.size() || emu::L->fibers[i].state == emu::DONE)
            emu::fail("__shfl_down_sync reads a lane that is not in the mask or has exited");
        std::memcpy(&r, buf + src * emu::SHFL_BYTES, sizeof(T));
    }
    emu::yield_as(emu::WAIT_WARP);  // every lane has read before the buffer is reused
    return r;
}

// Entry points (ctypes). The generated translation unit defines emu::registry() after the
// kernels: one emu::entry(name, &kernel<T>) per name expression.
extern "C" int emu_signature(const char* name, char* out, std::size_t outlen) {
    for (const emu::Entry& e : emu::registry())
        if (e.name == name) {
            std::snprintf(out, outlen, "%s", e.sig.c_str());
            return 0;
        }
    return 1;
}

// Launch kernel `name` on grid x block threads with `smem` bytes of dynamic shared memory.
// params[i] points at argument i (as cuLaunchKernel's kernelParams); `sig` is the caller's
// view of their C types, refused unless it equals the kernel's. order: 0 forward, 1 reverse,
// >= 2 a shuffle seeded with it. Returns 0, or 1 with a message in err.
extern "C" int emu_launch(const char* name, const unsigned* grid, const unsigned* block,
                          std::size_t smem, void** params, const char* sig, int order,
                          char* err, std::size_t errlen) {
    auto report = [&](const std::string& m) {
        std::snprintf(err, errlen, "%s", m.c_str());
        return 1;
    };
    const emu::Entry* ent = nullptr;
    for (const emu::Entry& e : emu::registry())
        if (e.name == name) ent = &e;
    if (!ent) return report(std::string("no kernel ") + name);
    if (ent->sig != sig)
        return report(std::string(name) + ": arguments (" + sig + ") do not match the parameters (" +
                      ent->sig + ")");
    emu::Launch launch;
    emu::L = &launch;
    launch.grid_dim = {grid[0], grid[1], grid[2]};
    launch.block_dim = {block[0], block[1], block[2]};
    launch.body = [&] { ent->run(params); };
    launch.smem.resize(smem + 2 * emu::GUARD_BYTES);
    int rc = 0;
    for (unsigned z = 0; z < grid[2] && rc == 0; ++z)
        for (unsigned y = 0; y < grid[1] && rc == 0; ++y)
            for (unsigned x = 0; x < grid[0] && rc == 0; ++x) {
                const std::string where = "block (" + std::to_string(x) + "," + std::to_string(y) + "," +
                                          std::to_string(z) + "): ";
                launch.block_idx = {x, y, z};
                std::fill(launch.smem.begin(), launch.smem.end(), (unsigned char)0xFF);
                launch.dyn_smem = launch.smem.data() + emu::GUARD_BYTES;
                if (!emu::run_block(order)) {
                    rc = report(where + launch.error);
                    break;
                }
                for (std::size_t i = 0; i < emu::GUARD_BYTES; ++i)
                    if (launch.smem[i] != 0xFF || launch.smem[emu::GUARD_BYTES + smem + i] != 0xFF) {
                        rc = report(where + "shared memory written outside the " + std::to_string(smem) +
                                    " dynamic bytes of the launch");
                        break;
                    }
            }
    emu::L = nullptr;
    return rc;
}
