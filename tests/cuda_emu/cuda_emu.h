// A thread-block emulator: CUDA kernel source compiled as host C++ and run on the CPU.
//
// Include this before the kernels (.cuh). A launch runs its grid block by block; a block's threads are
// cooperative fibers on one host thread, so a fiber runs until it reaches a barrier or a warp collective
// and the scheduler picks the next. That gives the kernels' own barriers and collectives their CUDA
// meaning, and lets the emulator check them: it throws emu::Misuse instead of running on when
//   - a __syncthreads is reached by only part of the block (the rest exited) or at different sites,
//   - a warp collective's mask leaves out the caller, names a lane that does not exist or has exited,
//   - nothing can proceed (a deadlock: e.g. a lane that a collective names waits somewhere else),
//   - an atomicAdd falls outside every buffer given to emu::watch (when any is).
// Each block runs under a Schedule: in order (FIFO by thread index) or shuffled (a seeded random ready
// fiber at every switch point), so a missing barrier shows as a schedule-dependent result. Static
// __shared__ arrays live in one linker section, filled with 0xFF bytes (NaN as float, -1 as int) at
// every block start, so reading shared memory the block did not write shows too. (GCC drops the section
// attribute of a static local in a function template: keep kernels that declare __shared__ non-template.)
//
// Collectives of one warp match by kind, mask and call site (stricter than hardware, which may
// converge lanes from different sites; no kernel of ours relies on that).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <source_location>
#include <stdexcept>
#include <string>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("emu_shared")))

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

// The built-in index variables: the scheduler sets them before it resumes a fiber.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
constexpr int warpSize = 32;

using emu_site = std::source_location;
#define EMU_SITE emu_site site = emu_site::current()

void __syncthreads(EMU_SITE);
int __syncthreads_count(int predicate, EMU_SITE);
int __syncthreads_and(int predicate, EMU_SITE);
int __syncthreads_or(int predicate, EMU_SITE);
void __syncwarp(unsigned mask = 0xffffffffu, EMU_SITE);
unsigned __ballot_sync(unsigned mask, int predicate, EMU_SITE);
int __any_sync(unsigned mask, int predicate, EMU_SITE);
int __all_sync(unsigned mask, int predicate, EMU_SITE);

namespace emu {
enum class Op { sync, sync_count, sync_and, sync_or, syncwarp, ballot, any, all, shfl, shfl_up, shfl_down, shfl_xor };
// Blocks the calling fiber at a warp collective until its mask's lanes arrive; returns the lane's result.
uint32_t warp_op(Op op, unsigned mask, uint32_t value, int arg, int width, const emu_site& site);
template <class T>
T shuffle(Op op, unsigned mask, T var, int arg, int width, const emu_site& site) {
  static_assert(sizeof(T) == 4, "the emulator shuffles 32-bit values only");
  uint32_t bits;
  __builtin_memcpy(&bits, &var, 4);
  bits = warp_op(op, mask, bits, arg, width, site);
  __builtin_memcpy(&var, &bits, 4);
  return var;
}
}  // namespace emu

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, EMU_SITE) {
  return emu::shuffle(emu::Op::shfl, mask, var, src_lane, width, site);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, EMU_SITE) {
  return emu::shuffle(emu::Op::shfl_up, mask, var, int(delta), width, site);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, EMU_SITE) {
  return emu::shuffle(emu::Op::shfl_down, mask, var, int(delta), width, site);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, EMU_SITE) {
  return emu::shuffle(emu::Op::shfl_xor, mask, var, lane_mask, width, site);
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }

// Fibers never preempt each other, so a read-modify-write is atomic as it stands.
namespace emu {
void check_atomic(const void* address, unsigned bytes);
}
template <class T>
T atomicAdd(T* address, T value) {
  emu::check_atomic(address, sizeof(T));
  const T old = *address;
  *address = old + value;
  return old;
}

template <class T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
T max(T a, T b) {
  return a < b ? b : a;
}

namespace emu {

struct Misuse : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Order { in_order, shuffled };
struct Schedule {
  Order order = Order::in_order;
  uint64_t seed = 0;  // shuffled: each block's fiber order is drawn from (seed, block index)
};

// Runs body() as every thread of grid x block, block by block; throws Misuse.
void launch(const Schedule& schedule, dim3 grid, dim3 block, const std::function<void()>& body);

// Declares [address, address + bytes) a buffer that atomics may touch; clear_watch() forgets them all.
void watch(const void* address, uint64_t bytes);
void clear_watch();

// For a C entry point: runs fn() and returns 0, or 1 with the exception's text in error.
template <class Fn>
int report(char* error, int error_size, Fn&& fn) {
  try {
    fn();
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(error, size_t(error_size), "%s", e.what());
    return 1;
  }
}

}  // namespace emu
