// The emulator's scheduler: fibers, barriers, warp collectives and their misuse checks (see cuda_emu.h).
//
// The scheduler runs on the caller's stack and resumes one fiber at a time; a fiber that reaches a
// barrier or a collective records what it waits for and switches back. All matching and all error
// reports happen here, on the caller's stack, so a Misuse is an ordinary C++ exception.
#include "cuda_emu.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <sstream>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

// Every static __shared__ array, as the linker gathered them (weak: a program may have none).
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

// The context switch. x86-64: save the callee-saved registers and the FP control words on the old stack,
// switch stacks, restore from the new one: no system call, so a warp collective costs tens of ns.
// Elsewhere: ucontext (or with -DEMU_UCONTEXT, to test that path).
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_OWN_SWITCH 1
extern "C" void emu_switch_stack(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .globl emu_switch_stack
  .hidden emu_switch_stack
  .type emu_switch_stack, @function
emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_stack, .-emu_switch_stack
)");
#else
#include <ucontext.h>
#endif

namespace emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;  // PROT_NONE below each stack: an overflow faults instead of corrupting

enum class Wait { ready, barrier, warp, exited };

struct Fiber {
  uint3 tid;
  Wait wait = Wait::ready;
  Op op = Op::sync;
  unsigned mask = 0;
  uint32_t value = 0, result = 0;
  int arg = 0, width = 32;
  emu_site site;
#ifdef EMU_OWN_SWITCH
  void* sp = nullptr;
#else
  ucontext_t context;
#endif
  char* stack = nullptr;  // kStackBytes above a guard page
};

const char* op_name(Op op) {
  static const char* names[] = {"__syncthreads",   "__syncthreads_count", "__syncthreads_and", "__syncthreads_or",
                                "__syncwarp",      "__ballot_sync",       "__any_sync",        "__all_sync",
                                "__shfl_sync",     "__shfl_up_sync",      "__shfl_down_sync",  "__shfl_xor_sync"};
  return names[int(op)];
}

bool is_barrier(Op op) { return op <= Op::sync_or; }

bool same_site(const emu_site& a, const emu_site& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

std::string where(const emu_site& s) { return std::string(s.file_name()) + ":" + std::to_string(s.line()); }

std::string str(const uint3& v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

// One block's run.
struct Block {
  std::vector<Fiber> fibers;
  int threads = 0, live = 0, exited = 0, at_barrier = 0;
  std::vector<unsigned> arrived;       // per warp: lanes waiting at a collective
  std::vector<unsigned> exited_lanes;  // per warp
  std::vector<int> ready;              // fibers to resume; [head, end) pending
  size_t head = 0;
  Order order = Order::in_order;
  uint64_t rng = 0;
  std::string error;  // set by a fiber (a check it made itself); thrown by the scheduler
};

Block g_block;
const std::function<void()>* g_body = nullptr;
int g_current = -1;
#ifdef EMU_OWN_SWITCH
void* g_scheduler_sp = nullptr;
#else
ucontext_t g_scheduler_context;
#endif
std::vector<std::pair<uintptr_t, uintptr_t>> g_watched;

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int lane_of(int f) { return f & 31; }
int warp_of(int f) { return f >> 5; }
int warp_lanes(int warp) { return std::min(32, g_block.threads - 32 * warp); }

std::string block_name() { return "block " + str(blockIdx); }
std::string thread_name(int f) { return "thread " + str(g_block.fibers[f].tid); }

std::string waiting_at(int f) {
  const Fiber& x = g_block.fibers[f];
  if (x.wait == Wait::exited) return "has exited";
  if (x.wait == Wait::ready) return "is running";
  std::ostringstream s;
  s << "waits at " << op_name(x.op);
  if (!is_barrier(x.op)) s << "(mask 0x" << std::hex << x.mask << std::dec << ")";
  s << " at " << where(x.site);
  return s.str();
}

// --- switching --------------------------------------------------------------------------------------

void switch_to_scheduler() {
  Fiber& f = g_block.fibers[g_current];
#ifdef EMU_OWN_SWITCH
  emu_switch_stack(&f.sp, g_scheduler_sp);
#else
  swapcontext(&f.context, &g_scheduler_context);
#endif
}

[[noreturn]] void fiber_main() {
  (*g_body)();
  g_block.fibers[g_current].wait = Wait::exited;
  switch_to_scheduler();
  __builtin_trap();  // an exited fiber is never resumed
}

void resume(int f) {
  g_current = f;
  threadIdx = g_block.fibers[f].tid;
  Fiber& x = g_block.fibers[f];
#ifdef EMU_OWN_SWITCH
  emu_switch_stack(&g_scheduler_sp, x.sp);
#else
  swapcontext(&g_scheduler_context, &x.context);
#endif
}

// A fresh fiber at the start of fiber_main.
void start(Fiber& x) {
  if (x.stack == nullptr) {
    void* p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("emu: cannot map a fiber stack");
    mprotect(p, kGuardBytes, PROT_NONE);
    x.stack = static_cast<char*>(p) + kGuardBytes;
  }
#ifdef EMU_OWN_SWITCH
  // What emu_switch_stack pops: FP control words, six registers, then it returns into fiber_main with
  // the stack as a call would leave it (16-byte aligned before the fake return address 0).
  auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(x.stack + kStackBytes)) & ~uintptr_t(15));
  uint64_t* sp = top - 9;
  uint32_t control[2];
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
  std::memcpy(sp, control, 8);
  for (int r = 1; r <= 6; ++r) sp[r] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&fiber_main);
  sp[8] = 0;
  x.sp = sp;
#else
  getcontext(&x.context);
  x.context.uc_stack.ss_sp = x.stack;
  x.context.uc_stack.ss_size = kStackBytes;
  x.context.uc_link = nullptr;
  makecontext(&x.context, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

// --- the scheduler ------------------------------------------------------------------------------------

void make_ready(int f) {
  g_block.fibers[f].wait = Wait::ready;
  g_block.ready.push_back(f);
}

int pick() {
  Block& b = g_block;
  if (b.order == Order::shuffled) {
    const size_t k = b.head + splitmix(b.rng) % (b.ready.size() - b.head);
    std::swap(b.ready[b.head], b.ready[k]);
  }
  const int f = b.ready[b.head++];
  if (b.head == b.ready.size()) b.ready.clear(), b.head = 0;
  return f;
}

[[noreturn]] void fail(const std::string& what) { throw Misuse(block_name() + ": " + what); }

// All live threads wait at a barrier: check it and release them.
void release_barrier() {
  Block& b = g_block;
  int first = -1, count = 0;
  for (int f = 0; f < b.threads; ++f) {
    const Fiber& x = b.fibers[f];
    if (x.wait != Wait::barrier) continue;
    if (first < 0) first = f;
    const Fiber& y = b.fibers[first];
    if (x.op != y.op || !same_site(x.site, y.site))
      fail("threads wait at different barriers: " + thread_name(first) + " " + waiting_at(first) + ", " +
           thread_name(f) + " " + waiting_at(f));
    count += x.value != 0;
  }
  const Op op = b.fibers[first].op;
  const uint32_t result = op == Op::sync_count ? uint32_t(count)
                          : op == Op::sync_and ? uint32_t(count == b.threads)
                          : op == Op::sync_or  ? uint32_t(count > 0)
                                               : 0u;
  for (int f = 0; f < b.threads; ++f) {
    b.fibers[f].result = result;
    make_ready(f);
  }
  b.at_barrier = 0;
}

void check_barrier() {
  Block& b = g_block;
  if (b.at_barrier == 0 || b.at_barrier < b.live) return;
  if (b.exited > 0) {
    int gone = 0, waiting = 0;
    while (b.fibers[gone].wait != Wait::exited) ++gone;
    while (b.fibers[waiting].wait != Wait::barrier) ++waiting;
    fail(std::string(op_name(b.fibers[waiting].op)) + " at " + where(b.fibers[waiting].site) +
         " reached by only part of the block: " + std::to_string(b.at_barrier) + " of " + std::to_string(b.threads) +
         " threads wait there, " + std::to_string(b.exited) + " have exited (first: " + thread_name(gone) + ")");
  }
  release_barrier();
}

// Lane f arrived at a collective: complete it if every lane of its mask waits at the same one.
void arrive_warp(int f) {
  Block& b = g_block;
  const Fiber& x = b.fibers[f];
  const int warp = warp_of(f), base = 32 * warp, lane = lane_of(f);
  const unsigned existing = warp_lanes(warp) == 32 ? 0xffffffffu : (1u << warp_lanes(warp)) - 1u;
  auto what = [&] {
    std::ostringstream s;
    s << thread_name(f) << ": " << op_name(x.op) << " at " << where(x.site) << " with mask 0x" << std::hex << x.mask;
    return s.str();
  };
  if (!(x.mask >> lane & 1u)) fail(what() + " does not name the calling lane " + std::to_string(lane));
  if (x.mask & ~existing) fail(what() + " names lanes that do not exist in a warp of " +
                               std::to_string(warp_lanes(warp)) + " threads");
  if (x.mask & b.exited_lanes[warp])
    fail(what() + " names lane " + std::to_string(__builtin_ctz(x.mask & b.exited_lanes[warp])) + ", which has exited");
  b.arrived[warp] |= 1u << lane;
  if ((b.arrived[warp] & x.mask) != x.mask) return;
  for (unsigned m = x.mask; m; m &= m - 1) {
    const Fiber& y = b.fibers[base + __builtin_ctz(m)];
    if (y.wait != Wait::warp || y.op != x.op || y.mask != x.mask || !same_site(y.site, x.site))
      return;  // a lane waits at another collective: maybe it completes first; a stall is diagnosed later
  }
  uint32_t ballot = 0;
  for (unsigned m = x.mask; m; m &= m - 1) ballot |= (b.fibers[base + __builtin_ctz(m)].value != 0) << __builtin_ctz(m);
  for (unsigned m = x.mask; m; m &= m - 1) {
    const int l = __builtin_ctz(m);
    Fiber& y = b.fibers[base + l];
    const int w = y.width, seg = l & ~(w - 1);
    int src = l;
    switch (y.op) {
      case Op::ballot: y.result = ballot; break;
      case Op::any: y.result = ballot != 0; break;
      case Op::all: y.result = ballot == x.mask; break;
      case Op::syncwarp: break;
      case Op::shfl: src = seg + (y.arg & (w - 1)); break;
      case Op::shfl_up: src = (l - seg) >= y.arg ? l - y.arg : l; break;
      case Op::shfl_down: src = (l - seg) + y.arg < w ? l + y.arg : l; break;
      case Op::shfl_xor: src = (l ^ y.arg) < seg + w ? l ^ y.arg : l; break;  // later groups: own value
      default: break;
    }
    if (y.op >= Op::shfl) {
      if (!(x.mask >> src & 1u))
        fail(thread_name(base + l) + ": " + op_name(y.op) + " at " + where(y.site) + " reads lane " +
             std::to_string(src) + ", which is not in its mask (an undefined value)");
      y.result = b.fibers[base + src].value;
    }
  }
  b.arrived[warp] &= ~x.mask;
  for (unsigned m = x.mask; m; m &= m - 1) make_ready(base + __builtin_ctz(m));
}

void on_exit(int f) {
  Block& b = g_block;
  --b.live;
  ++b.exited;
  const int warp = warp_of(f), lane = lane_of(f);
  b.exited_lanes[warp] |= 1u << lane;
  for (unsigned m = b.arrived[warp]; m; m &= m - 1) {
    const Fiber& y = b.fibers[32 * warp + __builtin_ctz(m)];
    if (y.mask >> lane & 1u)
      fail(thread_name(32 * warp + __builtin_ctz(m)) + ": " + op_name(y.op) + " at " + where(y.site) +
           " names lane " + std::to_string(lane) + ", which has exited");
  }
  check_barrier();
}

// Nothing is ready and threads still wait: say what each waits for.
[[noreturn]] void diagnose_stall() {
  Block& b = g_block;
  for (int f = 0; f < b.threads; ++f) {
    const Fiber& x = b.fibers[f];
    if (x.wait != Wait::warp) continue;
    for (unsigned m = x.mask; m; m &= m - 1) {
      const int other = 32 * warp_of(f) + __builtin_ctz(m);
      const Fiber& y = b.fibers[other];
      if (y.wait != Wait::warp || y.op != x.op || y.mask != x.mask || !same_site(y.site, x.site))
        fail("deadlock: " + thread_name(f) + " " + waiting_at(f) + ", but lane " + std::to_string(lane_of(other)) +
             " that it names " + waiting_at(other));
    }
  }
  std::string states;
  for (int f = 0; f < b.threads && states.size() < 400; ++f)
    if (b.fibers[f].wait != Wait::exited) states += "\n  " + thread_name(f) + " " + waiting_at(f);
  fail("deadlock: no thread can proceed" + states);
}

void run_block(const Schedule& schedule, uint64_t block_index) {
  Block& b = g_block;
  b.threads = int(blockDim.x * blockDim.y * blockDim.z);
  b.live = b.threads;
  b.exited = b.at_barrier = 0;
  b.fibers.resize(std::max<size_t>(b.fibers.size(), b.threads));
  b.arrived.assign((b.threads + 31) / 32, 0u);
  b.exited_lanes.assign((b.threads + 31) / 32, 0u);
  b.ready.clear();
  b.head = 0;
  b.order = schedule.order;
  b.rng = schedule.seed * 0x2545f4914f6cdd1dull + block_index;
  b.error.clear();
  if (__start_emu_shared != nullptr) std::memset(__start_emu_shared, 0xFF, __stop_emu_shared - __start_emu_shared);
  for (int f = 0; f < b.threads; ++f) {
    Fiber& x = b.fibers[f];
    x.tid = uint3(f % blockDim.x, f / blockDim.x % blockDim.y, f / (blockDim.x * blockDim.y));
    start(x);
    make_ready(f);
  }
  while (b.live > 0) {
    if (b.head == b.ready.size()) diagnose_stall();
    const int f = pick();
    resume(f);
    if (!b.error.empty()) fail(b.error);
    switch (b.fibers[f].wait) {
      case Wait::exited: on_exit(f); break;
      case Wait::barrier: ++b.at_barrier; check_barrier(); break;
      case Wait::warp: arrive_warp(f); break;
      case Wait::ready: break;
    }
  }
}

// Called on a fiber: record the wait, hand control to the scheduler, return the result it left.
uint32_t wait_at(Wait wait, Op op, unsigned mask, uint32_t value, int arg, int width, const emu_site& site) {
  Fiber& x = g_block.fibers[g_current];
  x.wait = wait;
  x.op = op;
  x.mask = mask;
  x.value = value;
  x.arg = arg;
  x.width = width;
  x.site = site;
  switch_to_scheduler();
  return g_block.fibers[g_current].result;
}

}  // namespace

uint32_t warp_op(Op op, unsigned mask, uint32_t value, int arg, int width, const emu_site& site) {
  if (width < 1 || width > 32 || (width & (width - 1))) {
    g_block.error = thread_name(g_current) + ": " + op_name(op) + " at " + where(site) + " with width " +
                    std::to_string(width) + " (must be a power of two up to 32)";
    switch_to_scheduler();
  }
  return wait_at(Wait::warp, op, mask, value, arg, width, site);
}

void check_atomic(const void* address, unsigned bytes) {
  if (g_watched.empty()) return;
  const auto p = reinterpret_cast<uintptr_t>(address);
  for (const auto& [lo, hi] : g_watched)
    if (p >= lo && p + bytes <= hi) return;
  std::ostringstream s;
  s << thread_name(g_current) << ": atomicAdd at " << address << " is outside every watched buffer";
  g_block.error = s.str();
  switch_to_scheduler();
}

void watch(const void* address, uint64_t bytes) {
  const auto p = reinterpret_cast<uintptr_t>(address);
  g_watched.emplace_back(p, p + bytes);
}

void clear_watch() { g_watched.clear(); }

void launch(const Schedule& schedule, dim3 grid, dim3 block, const std::function<void()>& body) {
  if (uint64_t(block.x) * block.y * block.z > 1024 || block.x * block.y * block.z == 0)
    throw Misuse("launch: a block of " + str(block) + " threads (CUDA allows 1 to 1024)");
  if (grid.y > 65535 || grid.z > 65535) throw Misuse("launch: grid " + str(grid) + " (y and z are at most 65535)");
  gridDim = grid;
  blockDim = block;
  g_body = &body;
  uint64_t index = 0;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x, ++index) {
        blockIdx = uint3(x, y, z);
        run_block(schedule, index);
      }
}

}  // namespace emu

using emu::Op;

void __syncthreads(emu_site site) { emu::wait_at(emu::Wait::barrier, Op::sync, 0, 0, 0, 32, site); }
int __syncthreads_count(int p, emu_site site) {
  return int(emu::wait_at(emu::Wait::barrier, Op::sync_count, 0, p != 0, 0, 32, site));
}
int __syncthreads_and(int p, emu_site site) {
  return int(emu::wait_at(emu::Wait::barrier, Op::sync_and, 0, p != 0, 0, 32, site));
}
int __syncthreads_or(int p, emu_site site) {
  return int(emu::wait_at(emu::Wait::barrier, Op::sync_or, 0, p != 0, 0, 32, site));
}
void __syncwarp(unsigned mask, emu_site site) { emu::warp_op(Op::syncwarp, mask, 0, 0, 32, site); }
unsigned __ballot_sync(unsigned mask, int p, emu_site site) { return emu::warp_op(Op::ballot, mask, p != 0, 0, 32, site); }
int __any_sync(unsigned mask, int p, emu_site site) { return int(emu::warp_op(Op::any, mask, p != 0, 0, 32, site)); }
int __all_sync(unsigned mask, int p, emu_site site) { return int(emu::warp_op(Op::all, mask, p != 0, 0, 32, site)); }
