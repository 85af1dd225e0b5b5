// CPU emulator of the persistent CUDA kernels (persistent_forward.cu,
// persistent_backward.cu), built by tests/test_persistent_emulation.py (driver.py) from
// sources patch_sources.py copied with their inline PTX replaced by the hooks
// below. Everything else is the kernels' own C++: the plan, the staging of
// W and of h/dG, the fragment loads and stores, the K-split partial sums, the
// pointwise steps, and the grid barrier with its timeout and abort path.
//
// Execution model: one process per CTA (so static shared memory is per CTA)
// and one thread per CUDA thread (256); "global memory" is MAP_SHARED memory
// mapped before the fork, each tensor flush against a PROT_NONE guard page;
// dynamic shared memory is filled with 0xFF (NaN in every float format)
// before the launch and ends at a guard page, so an overrun faults and a read
// of a never-written element shows up as NaN. __syncthreads is a barrier of
// the CTA's 256 threads that also checks all of them reached the same
// statement; mma.sync and __shfl_xor_sync exchange through a warp barrier,
// mma.sync computed from the PTX ISA's fragment tables.
//
// Usage: persistent_emulator key=value ... (see Config); inputs and outputs
// are raw little-endian files in `dir`.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "ptx_mma_tables.h"

thread_local uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim(256);
dim3 gridDim(1);

// Emulated __syncthreads takes its call site, to check that every thread of
// the CTA waits at the same statement.
void rk_emu_syncthreads_at(const char* file, int line);
#undef __syncthreads
#define __syncthreads() rk_emu_syncthreads_at(__FILE__, __LINE__)

#include "cuda/persistent_backward.cu"
#include "cuda/persistent_forward.cu"

namespace {

using namespace rnnkernels::cuda;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "emulator: %s\n", what);
  std::fflush(stderr);
  std::_Exit(70);
}

// ------------------------------------------------------------ CTA runtime
constexpr int kThreads = kPersistentThreads;
constexpr int kWarps = kThreads / 32;

struct SyncSite {
  const char* file;
  int line;
};
SyncSite g_sites[kThreads];
std::barrier<void (*)() noexcept>* g_block_barrier = nullptr;

void check_sites() noexcept {
  for (int i = 1; i < kThreads; ++i) {
    if (g_sites[i].line != g_sites[0].line || std::strcmp(g_sites[i].file, g_sites[0].file) != 0) {
      std::fprintf(stderr, "emulator: CTA %u: thread 0 waits at %s:%d, thread %d at %s:%d\n",
                   blockIdx.x, g_sites[0].file, g_sites[0].line, i, g_sites[i].file, g_sites[i].line);
      std::fflush(stderr);
      std::_Exit(71);
    }
  }
}

struct Warp {
  std::barrier<>* sync;
  float f[32];
  double d[32];
  uint32_t a[32][4];
  uint32_t b[32][2];
  float c[32][4];
};
Warp g_warps[kWarps];
thread_local int t_lane, t_warp;
unsigned char* g_dynamic_shared = nullptr;
struct Stall {
  int cta = -1;        // the CTA that stalls
  long long sync = 0;  // before its sync-th __syncthreads (1-based)
  long long ms = 0;
  long long seen = 0;
};
Stall g_stall;

template <typename T>
T exchange(T value, int offset) {
  Warp& w = g_warps[t_warp];
  T* values;
  if constexpr (std::is_same_v<T, float>) {
    values = w.f;
  } else {
    values = w.d;
  }
  values[t_lane] = value;
  w.sync->arrive_and_wait();
  const T other = values[t_lane ^ offset];
  w.sync->arrive_and_wait();
  return other;
}

float half_value(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

// D = A B + C of one warp, the operands gathered from all 32 lanes through
// the PTX ISA's fragment tables (tests/ptx_mma_tables.h), independent of
// csrc/cuda/mma_fragments.h.
void warp_mma(int engine, int lane, float out[4]) {
  const Warp& w = g_warps[t_warp];
  const bool tf32 = engine == static_cast<int>(Engine::kMmaTf32);
  if (tf32) {
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) {
        if (w.a[l][i] & 0x1fffu) fail("a tf32 A operand with nonzero low mantissa bits (cvt.rna missing)");
      }
      for (int i = 0; i < 2; ++i) {
        if (w.b[l][i] & 0x1fffu) fail("a tf32 B operand with nonzero low mantissa bits (cvt.rna missing)");
      }
    }
  }
  float A[16][16] = {}, B[16][8] = {};
  if (engine == static_cast<int>(Engine::kMmaF16)) {
    ptx_tables::gather(tf32, w.a, w.b, half_value, A, B);
  } else {
    ptx_tables::gather(tf32, w.a, w.b, ptx_tables::bf16_value, A, B);
  }
  ptx_tables::lane_result(A, B, tf32 ? 8 : 16, lane, w.c[lane], out);
}

// ------------------------------------------------------------ global memory
template <typename T>
T* global_alloc(size_t count) {
  const size_t bytes = (count * sizeof(T) + 15) / 16 * 16;
  const size_t page = 4096, mapped = (bytes + page - 1) / page * page + page;
  auto* base = static_cast<unsigned char*>(
      mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (base == MAP_FAILED) fail("mmap of global memory failed");
  unsigned char* guard = base + mapped - page;
  if (mprotect(guard, page, PROT_NONE) != 0) fail("mprotect failed");
  return reinterpret_cast<T*>(guard - bytes);
}

struct Config {
  std::map<std::string, std::string> v;
  long long get(const char* key, long long fallback) const {
    auto it = v.find(key);
    return it == v.end() ? fallback : std::atoll(it->second.c_str());
  }
  std::string str(const char* key) const {
    auto it = v.find(key);
    if (it == v.end()) fail((std::string("missing argument ") + key).c_str());
    return it->second;
  }
};

std::string g_dir;

template <typename T>
T* read_input(const char* name, size_t count) {
  T* p = global_alloc<T>(count);
  const std::string path = g_dir + "/" + name + ".bin";
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(("cannot open " + path).c_str());
  if (std::fread(p, sizeof(T), count, f) != count) fail(("short input " + path).c_str());
  std::fclose(f);
  return p;
}

template <typename T>
T* nan_output(size_t count) {
  T* p = global_alloc<T>(count);
  std::memset(static_cast<void*>(p), 0xff, count * sizeof(T));
  return p;
}

template <typename T>
void write_output(const char* name, const T* p, size_t count) {
  const std::string path = g_dir + "/" + name + ".out";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(p, sizeof(T), count, f) != count) fail(("cannot write " + path).c_str());
  std::fclose(f);
}

// ------------------------------------------------------------------ launch
struct Launch {
  int ctas;
  size_t shared_bytes;
  int late_cta;     // this CTA starts late_ms after the others (-1: none)
  long long late_ms;
  long long timeout_s;  // the whole grid must finish by then, else "hang"
};

void* g_body = nullptr;
void (*g_call)(void*) = nullptr;

void* cuda_thread(void* arg) {
  const int index = static_cast<int>(reinterpret_cast<intptr_t>(arg));
  threadIdx = uint3{static_cast<unsigned>(index), 0, 0};
  t_lane = index % 32;
  t_warp = index / 32;
  g_call(g_body);
  return nullptr;
}

[[noreturn]] void run_cta(int cta, const Launch& launch) {
  blockIdx = uint3{static_cast<unsigned>(cta), 0, 0};
  gridDim = dim3(static_cast<unsigned>(launch.ctas));
  blockDim = dim3(kThreads);
  if (cta == launch.late_cta) usleep(static_cast<useconds_t>(launch.late_ms * 1000));
  if (launch.shared_bytes % 16 != 0) fail("dynamic shared memory is not a multiple of 16 bytes");
  const size_t page = 4096, mapped = (launch.shared_bytes + page - 1) / page * page + page;
  auto* base = static_cast<unsigned char*>(
      mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (base == MAP_FAILED || mprotect(base + mapped - page, page, PROT_NONE) != 0) fail("shared mmap");
  g_dynamic_shared = base + mapped - page - launch.shared_bytes;
  std::memset(g_dynamic_shared, 0xff, launch.shared_bytes);
  g_block_barrier = new std::barrier<void (*)() noexcept>(kThreads, &check_sites);
  for (Warp& w : g_warps) w.sync = new std::barrier<>(32);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  std::vector<pthread_t> threads(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    if (pthread_create(&threads[i], &attr, cuda_thread, reinterpret_cast<void*>(static_cast<intptr_t>(i))) != 0) {
      fail("pthread_create failed");
    }
  }
  for (pthread_t& t : threads) pthread_join(t, nullptr);
  std::fflush(stdout);
  std::_Exit(0);
}

// Runs `body` as the grid; returns "ok", "hang" or a child's failure.
template <typename Body>
std::string launch_grid(const Launch& launch, Body body) {
  g_body = &body;
  g_call = [](void* b) { (*static_cast<Body*>(b))(); };
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> children;
  for (int cta = 0; cta < launch.ctas; ++cta) {
    const pid_t pid = fork();
    if (pid < 0) fail("fork failed");
    if (pid == 0) run_cta(cta, launch);
    children.push_back(pid);
  }
  timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  std::string result = "ok";
  size_t done = 0;
  std::vector<bool> finished(children.size(), false);
  while (done < children.size()) {
    bool progressed = false;
    for (size_t i = 0; i < children.size(); ++i) {
      if (finished[i]) continue;
      int status = 0;
      const pid_t r = waitpid(children[i], &status, WNOHANG);
      if (r == children[i]) {
        finished[i] = true;
        ++done;
        progressed = true;
        if (WIFSIGNALED(status)) {
          result = "CTA " + std::to_string(i) + " died of signal " + std::to_string(WTERMSIG(status));
        } else if (WEXITSTATUS(status) != 0) {
          result = "CTA " + std::to_string(i) + " exited with " + std::to_string(WEXITSTATUS(status));
        }
      }
    }
    if (!progressed) {
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (now.tv_sec - start.tv_sec > launch.timeout_s) {
        for (size_t i = 0; i < children.size(); ++i) {
          if (!finished[i]) {
            kill(children[i], SIGKILL);
            waitpid(children[i], nullptr, 0);
          }
        }
        return "hang";
      }
      usleep(2000);
    }
  }
  return result;
}

// ------------------------------------------------------------- the runs
template <CellKind C, Engine E>
int run(const Config& cfg) {
  using scalar_t = typename EngineTraits<E>::storage_t;
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr int G = gates_of(C);
  const int64_t T = cfg.get("T", 1), B = cfg.get("B", 1), H = cfg.get("H", 1);
  const bool backward = cfg.str("mode") == "bwd";
  const bool training = cfg.get("training", 1) != 0;
  const int64_t S = training ? T : 1;
  PlanRequest request{E, G, B, H, backward, static_cast<int>(cfg.get("sms", 4)),
                      cfg.get("max_shared", 232448) - kStaticSharedReserve};
  const PersistentPlan plan = plan_persistent(request);
  FILE* info = std::fopen((g_dir + "/plan.txt").c_str(), "w");
  std::fprintf(info, "refusal=%s\nctas=%d\nunits=%d\nm_rows=%d\nm_pad=%d\nk_pad=%lld\nn_pad=%d\n"
               "k_chunk=%d\nchunks=%d\nk_splits=%d\nhalf_rows=%d\nshared_bytes=%zu\n",
               plan.refusal ? plan.refusal : "none", plan.ctas, plan.units_per_cta, plan.m_rows,
               plan.m_pad, static_cast<long long>(plan.k_pad), plan.n_pad, plan.k_chunk, plan.chunks,
               plan.k_splits, plan.half_rows ? 1 : 0, plan.shared_bytes);
  std::fclose(info);
  if (plan.refusal != nullptr) return 3;

  PersistentGridParams grid{};
  grid.lengths = cfg.get("lengths", 0) ? read_input<int64_t>("lengths", B) : nullptr;
  auto* words = global_alloc<unsigned long long>(2);
  words[0] = words[1] = 0;
  int* error_flag = global_alloc<int>(1);
  *error_flag = 0;
  grid.barrier = GridBarrier{words, reinterpret_cast<unsigned int*>(words + 1), error_flag,
                             cfg.get("spin_ms", 60000) * 1000000LL, backward ? 2 : 1};
  grid.layout = plan.layout();
  grid.steps = T;
  grid.batch = B;
  grid.hidden = H;
  grid.units_per_cta = plan.units_per_cta;
  g_stall.cta = static_cast<int>(cfg.get("stall_cta", -1));
  g_stall.sync = cfg.get("stall_sync", 0);
  g_stall.ms = cfg.get("stall_ms", 0);
  const Launch launch{plan.ctas, plan.shared_bytes, static_cast<int>(cfg.get("late_cta", -1)),
                      cfg.get("late_ms", 0), cfg.get("timeout_s", 600)};

  std::string result;
  if (!backward) {
    PersistentForwardParams<scalar_t> p;
    static_cast<PersistentGridParams&>(p) = grid;
    p.xg = read_input<scalar_t>("xg", T * B * G * H);
    p.w_hh = read_input<scalar_t>("w_hh", G * H * H);
    p.b_hn = cfg.get("bhn", 0) ? read_input<scalar_t>("b_hn", H) : nullptr;
    p.h_buffers = nan_output<scalar_t>(2 * B * H);
    const scalar_t* h0 = read_input<scalar_t>("h0", B * H);
    std::memcpy(static_cast<void*>(p.h_buffers), h0, B * H * sizeof(scalar_t));
    p.c_state = C == CellKind::kLstm ? read_input<acc_t>("c0_acc", B * H) : nullptr;
    p.h_acc = C == CellKind::kGru ? read_input<acc_t>("h0_acc", B * H) : nullptr;
    p.y = nan_output<scalar_t>(T * B * H);
    p.gates = (C == CellKind::kLstm || C == CellKind::kGru) ? nan_output<scalar_t>(S * B * G * H) : nullptr;
    p.cells = C == CellKind::kLstm ? nan_output<scalar_t>(S * B * H) : nullptr;
    p.hn = C == CellKind::kGru ? nan_output<scalar_t>(S * B * H) : nullptr;
    p.training = training;
    result = launch_grid(launch, [&] { persistent_forward_kernel<C, E>(p); });
    write_output("y", p.y, T * B * H);
    write_output("h_n", p.h_buffers + (T % 2) * B * H, B * H);
    if (p.gates) write_output("gates", p.gates, S * B * G * H);
    if (p.cells) write_output("cells", p.cells, S * B * H);
    if (p.hn) write_output("hn", p.hn, S * B * H);
    if (p.c_state) write_output("c_n", p.c_state, B * H);
    if (p.h_acc) write_output("h_acc", p.h_acc, B * H);
  } else {
    PersistentBackwardParams<scalar_t> p;
    static_cast<PersistentGridParams&>(p) = grid;
    p.dy = read_input<scalar_t>("dy", T * B * H);
    p.w_hh = read_input<scalar_t>("w_hh", G * H * H);
    p.gates = (C == CellKind::kLstm || C == CellKind::kGru) ? read_input<scalar_t>("gates", T * B * G * H) : nullptr;
    p.cells = C == CellKind::kLstm ? read_input<scalar_t>("cells", T * B * H) : nullptr;
    p.c0 = C == CellKind::kLstm ? read_input<scalar_t>("c0", B * H) : nullptr;
    p.hn = C == CellKind::kGru ? read_input<scalar_t>("hn", T * B * H) : nullptr;
    p.y = read_input<scalar_t>("y", T * B * H);
    p.h0 = C == CellKind::kGru ? read_input<scalar_t>("h0", B * H) : nullptr;
    p.carry = read_input<acc_t>("dh_n", B * H);
    p.dc = C == CellKind::kLstm ? read_input<acc_t>("dc_n", B * H) : nullptr;
    p.dxg = nan_output<scalar_t>(T * B * G * H);
    p.dg_rec = C == CellKind::kGru ? nan_output<scalar_t>(T * B * G * H) : nullptr;
    p.tbptt = cfg.get("tbptt", 0);
    result = launch_grid(launch, [&] { persistent_backward_kernel<C, E>(p); });
    write_output("dxg", p.dxg, T * B * G * H);
    if (p.dg_rec) write_output("dg_rec", p.dg_rec, T * B * G * H);
    write_output("dh0", p.carry, B * H);
    if (p.dc) write_output("dc0", p.dc, B * H);
  }
  std::printf("result=%s\nerror_flag=%d\nbarrier_counter=%llu\nabort_word=%u\n", result.c_str(),
              *error_flag, words[0], *reinterpret_cast<unsigned int*>(words + 1));
  return result == "ok" ? 0 : 4;
}

template <CellKind C>
int run_engine(const Config& cfg) {
  switch (cfg.get("engine", 0)) {
    case 0: return run<C, Engine::kMmaF16>(cfg);
    case 1: return run<C, Engine::kMmaBf16>(cfg);
    case 2: return run<C, Engine::kMmaTf32>(cfg);
    case 3: return run<C, Engine::kFmaF32>(cfg);
    case 4: return run<C, Engine::kFmaF64>(cfg);
  }
  fail("unknown engine");
}

}  // namespace

// ----------------------------------------------------------------- hooks
void rk_emu_syncthreads_at(const char* file, int line) {
  // A stalled CTA (a preempted or not-yet-resident one on a GPU): its thread 0
  // sleeps before its g_stall.sync-th __syncthreads.
  if (threadIdx.x == 0 && static_cast<int>(blockIdx.x) == g_stall.cta && ++g_stall.seen == g_stall.sync) {
    usleep(static_cast<useconds_t>(g_stall.ms * 1000));
  }
  g_sites[threadIdx.x] = SyncSite{file, line};
  g_block_barrier->arrive_and_wait();
}
void rk_emu_syncthreads() { rk_emu_syncthreads_at("(unknown)", 0); }
float rk_emu_shfl_xor(float value, int offset) { return exchange(value, offset); }
double rk_emu_shfl_xor(double value, int offset) { return exchange(value, offset); }
void rk_emu_misaligned(const void* p) {
  std::fprintf(stderr, "emulator: misaligned vector load at %p\n", p);
  std::fflush(stderr);
  std::_Exit(72);
}
void rk_emu_spin_pause() { sched_yield(); }
long long rk_emu_nanoseconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
void rk_emu_mma(int engine, float d[4], const uint32_t a[4], const uint32_t b[2]) {
  Warp& w = g_warps[t_warp];
  std::memcpy(w.a[t_lane], a, 16);
  std::memcpy(w.b[t_lane], b, 8);
  std::memcpy(w.c[t_lane], d, 16);
  w.sync->arrive_and_wait();
  float out[4];
  warp_mma(engine, t_lane, out);
  w.sync->arrive_and_wait();
  std::memcpy(d, out, 16);
}
uint32_t rk_emu_tf32_rna(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return u;  // inf, NaN: kept
  return (u + 0x1000u) & 0xffffe000u;                // to nearest, ties away from zero
}
unsigned char* rk_emu_dynamic_shared() { return g_dynamic_shared; }

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) fail("arguments are key=value");
    cfg.v[arg.substr(0, eq)] = arg.substr(eq + 1);
  }
  g_dir = cfg.str("dir");
  const std::string cell = cfg.str("cell");
  if (cell == "lstm") return run_engine<CellKind::kLstm>(cfg);
  if (cell == "gru") return run_engine<CellKind::kGru>(cfg);
  if (cell == "rnn_tanh") return run_engine<CellKind::kRnnTanh>(cfg);
  if (cell == "rnn_relu") return run_engine<CellKind::kRnnRelu>(cfg);
  fail("unknown cell");
}
