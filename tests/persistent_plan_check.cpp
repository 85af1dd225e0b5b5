// Prints csrc/cuda/persistent_plan.h's plan for each request on stdin, one
// JSON object per line (driven by tests/test_cuda_compile.py).
// Input lines: ENGINE GATES BATCH HIDDEN BACKWARD SMS MAX_SHARED, ENGINE 0..4
// in persistent_plan.h's order.
#include <cstdio>
#include <iostream>

#include "persistent_plan.h"

using namespace rnnkernels::cuda;

int main() {
  int engine, gates, backward, sms;
  long long batch, hidden, max_shared;
  while (std::cin >> engine >> gates >> batch >> hidden >> backward >> sms >> max_shared) {
    const PersistentPlan p = plan_persistent(PlanRequest{static_cast<Engine>(engine), gates, batch, hidden,
                                                         backward != 0, sms, max_shared});
    std::printf(
        "{\"refusal\": %s%s%s, \"ctas\": %d, \"units_per_cta\": %d, \"m_rows\": %d, \"m_pad\": %d, "
        "\"k_pad\": %lld, \"n_pad\": %d, \"k_chunk\": %d, \"chunks\": %d, \"stage_pitch\": %d, "
        "\"k_splits\": %d, \"out_pitch\": %d, \"weight_bytes\": %zu, \"stage_bytes\": %zu, "
        "\"partial_bytes\": %zu, \"shared_bytes\": %zu}\n",
        p.refusal ? "\"" : "", p.refusal ? p.refusal : "null", p.refusal ? "\"" : "", p.ctas,
        p.units_per_cta, p.m_rows, p.m_pad, static_cast<long long>(p.k_pad), p.n_pad, p.k_chunk,
        p.chunks, p.stage_pitch, p.k_splits, p.out_pitch, p.weight_bytes, p.stage_bytes,
        p.partial_bytes, p.shared_bytes);
  }
  return 0;
}
