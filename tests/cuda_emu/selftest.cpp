// Tiny kernels that test the emulator itself (tests/test_cuda_emulated.py): collectives with known
// results, a race that a missing barrier causes, shared-memory poisoning, and misuse it must report.
#include <cstring>
#include <string>

#include "cuda_emu.h"

namespace {

int* out;  // the caller's buffer; each kernel says what it writes

unsigned lane() { return threadIdx.x & 31; }

// grid 2 x block 64. Per thread t of block b, 14 ints at out[(64 b + t) * 14]; out[128 * 14 + b] counts
// block b's atomics.
__global__ void collectives() {
  const unsigned t = threadIdx.x, full = 0xffffffffu;
  int* o = out + (64 * blockIdx.x + t) * 14;
  o[0] = int(__ballot_sync(full, lane() % 3 == 0));
  o[1] = __any_sync(full, lane() == 7);
  o[2] = __all_sync(full, lane() < 31);
  o[3] = __shfl_sync(full, int(t), 5);
  o[4] = __shfl_up_sync(full, int(t), 1);
  o[5] = __shfl_down_sync(full, int(t), 3, 8);
  o[6] = __shfl_xor_sync(full, int(t), 1);
  o[7] = __syncthreads_count(t % 3 == 0);
  o[8] = __syncthreads_and(t < 64);
  o[9] = __syncthreads_or(t == 63);
  o[10] = __popc(t);
  const float half = __shfl_xor_sync(full, 0.5f * float(t), 16);
  std::memcpy(&o[11], &half, 4);
  // Disjoint half-warp masks at different sites: legal, each half completes on its own.
  if (lane() < 16)
    o[12] = __shfl_sync(0x0000ffffu, int(t), 2);
  else
    o[12] = __shfl_sync(0xffff0000u, int(t), 18);
  __syncwarp();
  o[13] = atomicAdd(out + 128 * 14 + blockIdx.x, 1) < 64;
}

// block 64: each thread writes its slot and reads its neighbour's, without and with a barrier between.
__global__ void race() {
  __shared__ int s[64];
  s[threadIdx.x] = int(threadIdx.x) + 1;
  out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
__global__ void race_fixed() {
  __shared__ int s[64];
  s[threadIdx.x] = int(threadIdx.x) + 1;
  __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}

// grid 2 x block 32: reads shared memory before writing it; every block must see the poison.
__global__ void poison() {
  __shared__ float s[32];
  std::memcpy(out + 32 * blockIdx.x + threadIdx.x, &s[threadIdx.x], 4);
  __syncthreads();
  s[threadIdx.x] = 1.0f;
}

// Misuse, one kernel each.
__global__ void barrier_after_exit() {  // block 64
  if (threadIdx.x >= 32) return;
  __syncthreads();
}
__global__ void barrier_divergent() {  // block 64
  if (threadIdx.x < 32)
    __syncthreads();
  else
    __syncthreads();
}
__global__ void collective_exited_lane() {  // block 32
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1, 1);
}
__global__ void collective_without_caller() {  // block 32
  out[threadIdx.x] = __shfl_sync(0x1u, 1, 0);
}
__global__ void collective_elsewhere() {  // block 32
  if (lane() < 16)
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  else
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 2, 0);
}
__global__ void shuffle_outside_mask() {  // block 32
  if (lane() < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1, 20);
}
__global__ void deadlock() {  // block 64: lane 0 at the barrier, its warp at a shuffle that needs lane 0
  if (threadIdx.x == 0) __syncthreads();
  if (threadIdx.x < 32) out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  if (threadIdx.x != 0) __syncthreads();
}
__global__ void atomic_outside() {  // block 32: out[0..16) watched, out[100] is not
  emu::watch(out, 16 * sizeof(int));
  atomicAdd(out + 100, 1);
}

struct Case {
  const char* name;
  void (*kernel)();
  unsigned grid, block;
};

const Case kCases[] = {
    {"collectives", collectives, 2, 64},
    {"race", race, 1, 64},
    {"race_fixed", race_fixed, 1, 64},
    {"poison", poison, 2, 32},
    {"barrier_after_exit", barrier_after_exit, 1, 64},
    {"barrier_divergent", barrier_divergent, 1, 64},
    {"collective_exited_lane", collective_exited_lane, 1, 32},
    {"collective_without_caller", collective_without_caller, 1, 32},
    {"collective_elsewhere", collective_elsewhere, 1, 32},
    {"shuffle_outside_mask", shuffle_outside_mask, 1, 32},
    {"deadlock", deadlock, 1, 64},
    {"atomic_outside", atomic_outside, 1, 32},
};

}  // namespace

extern "C" int emu_selftest(const char* name, int order, uint64_t seed, int* buffer, char* error, int error_size) {
  return emu::report(error, error_size, [&] {
    for (const Case& c : kCases)
      if (std::strcmp(c.name, name) == 0) {
        out = buffer;
        emu::clear_watch();
        emu::launch({emu::Order(order), seed}, dim3(c.grid), dim3(c.block), c.kernel);
        return;
      }
    throw std::invalid_argument(std::string("no self-test named ") + name);
  });
}
