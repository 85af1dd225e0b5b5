// Path choice and launches of the persistent kernels. See persistent_glue.h.
#include "persistent_glue.h"

#include <cstdlib>
#include <string>

namespace rnnkernels {
namespace cuda {
namespace {

// About five seconds at 2 GHz: a barrier wait that long means a CTA is not
// running, and trapping (a launch error the next check reports) beats a hang.
constexpr long long kSpinLimitCycles = 10'000'000'000LL;

PathRequest requested_path() {
  const char* value = std::getenv("RNNKERNELS_CUDA_PATH");
  PathRequest request = PathRequest::kStep;
  TORCH_CHECK(parse_path_request(value, &request),
              "RNNKERNELS_CUDA_PATH must be 'step', 'persistent' or 'auto', got '", value, "'");
  return request;
}

const char* cell_name(CellKind cell) {
  switch (cell) {
    case CellKind::kLstm: return "lstm";
    case CellKind::kGru: return "gru";
    case CellKind::kRnnTanh: return "rnn_tanh";
    case CellKind::kRnnRelu: return "rnn_relu";
  }
  return "?";
}

// Whether `plan` lets the launch go ahead; a refusal raises when the path was
// forced. `what` names the op in the message ("lstm", "the gru backward").
bool plan_accepted(const PersistentPlan& plan, bool forced, const std::string& what,
                   const RecurrenceShape& s) {
  if (plan.refusal == nullptr) {
    return true;
  }
  TORCH_CHECK(!forced, "rnnkernels cuda backend: RNNKERNELS_CUDA_PATH=persistent, but ", what,
              " with B=", s.batch, ", H=", s.hidden, " cannot run on it: ", plan.refusal);
  return false;
}

// Fills what both persistent kernels take beside their tensors; `counter`
// is the zeroed int64 the grid barrier counts in.
void fill_grid_params(PersistentGridParams& p, const RecurrenceShape& s, const DeviceLengths& rows,
                      const at::Tensor& counter, const PersistentPlan& plan) {
  p.lengths = rows.at_step(0).lengths;
  p.barrier_count = reinterpret_cast<unsigned long long*>(counter.data_ptr<int64_t>());
  p.steps = s.steps;
  p.batch = s.batch;
  p.hidden = s.hidden;
  p.units_per_cta = plan.units_per_cta;
  p.spin_limit_cycles = kSpinLimitCycles;
}

// Whether the launch ran. A grid too large to be resident is the one error
// left to the step path, unless the path was forced; any other error raises.
bool launched(cudaError_t error, bool forced, const char* what) {
  if (error == cudaErrorCooperativeLaunchTooLarge && !forced) {
    cudaGetLastError();  // not sticky: clear it and let the step path run
    return false;
  }
  check_launch(error, what);
  return true;
}

template <typename scalar_t>
bool run_forward(CellKind cell, const RecurrenceShape& s, const DeviceLengths& rows, bool training,
                 bool forced, PersistentForwardTensors& io) {
  using k_t = kernel_t<scalar_t>;
  const PersistentPlan plan = plan_persistent_forward<k_t>(cell, s.batch, s.hidden);
  if (!plan_accepted(plan, forced, cell_name(cell), s)) {
    return false;
  }
  at::Tensor h_buffers = at::empty({2, s.batch, s.hidden}, io.xg.options());
  h_buffers[0].copy_(io.h0);
  const at::Tensor counter = at::zeros({1}, io.xg.options().dtype(at::kLong));

  PersistentForwardParams<k_t> p;
  p.xg = ptr<scalar_t>(io.xg);
  p.w_hh = ptr<scalar_t>(io.w_hh);
  p.b_hn = ptr<scalar_t>(io.b_hn);
  p.h_buffers = ptr<scalar_t>(h_buffers);
  p.c_state = acc_ptr<scalar_t>(io.c_state);
  p.h_acc = acc_ptr<scalar_t>(io.h_acc);
  p.y = ptr<scalar_t>(io.y);
  p.gates = ptr<scalar_t>(io.gates);
  p.cells = ptr<scalar_t>(io.cells);
  p.hn = ptr<scalar_t>(io.hn);
  p.training = training;
  fill_grid_params(p, s, rows, counter, plan);
  if (!launched(launch_persistent_forward(p, cell, plan, c10::cuda::getCurrentCUDAStream()),
                forced, "the persistent forward kernel")) {
    return false;
  }
  io.h_n = h_buffers[s.steps % 2].clone();
  return true;
}

template <typename scalar_t>
bool run_backward(CellKind cell, const RecurrenceShape& s, const DeviceLengths& rows, int64_t tbptt,
                  bool forced, PersistentBackwardTensors& io) {
  using k_t = kernel_t<scalar_t>;
  const PersistentPlan plan = plan_persistent_backward<k_t>(cell, s.batch, s.hidden);
  if (!plan_accepted(plan, forced, std::string("the ") + cell_name(cell) + " backward", s)) {
    return false;
  }
  const at::Tensor counter = at::zeros({1}, io.dy.options().dtype(at::kLong));
  PersistentBackwardParams<k_t> p;
  p.dy = ptr<scalar_t>(io.dy);
  p.w_hh = ptr<scalar_t>(io.w_hh);
  p.gates = ptr<scalar_t>(io.gates);
  p.cells = ptr<scalar_t>(io.cells);
  p.c0 = ptr<scalar_t>(io.c0);
  p.hn = ptr<scalar_t>(io.hn);
  p.y = ptr<scalar_t>(io.y);
  p.h0 = ptr<scalar_t>(io.h0);
  p.carry = acc_ptr<scalar_t>(io.carry);
  p.dc = acc_ptr<scalar_t>(io.dc);
  p.dxg = ptr<scalar_t>(io.dxg);
  p.dg_rec = ptr<scalar_t>(io.dg_rec);
  p.tbptt = tbptt;
  fill_grid_params(p, s, rows, counter, plan);
  return launched(launch_persistent_backward(p, cell, plan, c10::cuda::getCurrentCUDAStream()),
                  forced, "the persistent backward kernel");
}

// Whether RNNKERNELS_CUDA_PATH and the problem ask for the persistent path;
// *forced says a refusal must raise rather than fall back.
bool wants_persistent(CellKind cell, const RecurrenceShape& s, bool has_projection, bool* forced) {
  const PathRequest request = requested_path();
  if (request == PathRequest::kStep) {
    return false;
  }
  const RecurrenceProblem problem{has_projection, s.steps, s.batch, s.hidden};
  *forced = request == PathRequest::kPersistent;
  if (*forced) {
    const char* refusal = persistent_problem_refusal(problem);
    TORCH_CHECK(refusal == nullptr, "rnnkernels cuda backend: RNNKERNELS_CUDA_PATH=persistent, but ",
                cell_name(cell), " cannot run on it: ", refusal);
    return true;
  }
  return auto_prefers_persistent(problem);
}

}  // namespace

bool try_persistent_forward(CellKind cell, const RecurrenceShape& s, bool has_projection,
                            const DeviceLengths& rows, bool training, PersistentForwardTensors& io) {
  bool forced = false;
  if (!wants_persistent(cell, s, has_projection, &forced)) {
    return false;
  }
  bool ran = false;
  RK_DISPATCH_CUDA_FLOATING(io.xg.scalar_type(), "persistent_forward", [&] {
    ran = run_forward<scalar_t>(cell, s, rows, training, forced, io);
  });
  return ran;
}

bool try_persistent_backward(CellKind cell, const RecurrenceShape& s, bool has_projection,
                             const DeviceLengths& rows, int64_t tbptt,
                             PersistentBackwardTensors& io) {
  bool forced = false;
  if (!wants_persistent(cell, s, has_projection, &forced)) {
    return false;
  }
  bool ran = false;
  RK_DISPATCH_CUDA_FLOATING(io.dy.scalar_type(), "persistent_backward", [&] {
    ran = run_backward<scalar_t>(cell, s, rows, tbptt, forced, io);
  });
  return ran;
}

}  // namespace cuda
}  // namespace rnnkernels
