#include "sim/fault_plan.hpp"

#include <algorithm>

#include "sim/sim_environment.hpp"

namespace sluice::sim {

fault_plan fault_plan::draw(const scenario& s) {
    fault_plan f;
    if (!s.faults) {
        return f;
    }
    random_stream plan(s.seed ^ 0xFA17ULL);
    f.short_read = plan.unit() * 0.5;
    f.reset = plan.unit() * 0.1;
    f.truncate = plan.unit() * 0.1;
    f.compute_stall = plan.unit() * 0.05;
    f.minimal_limits = plan.chance(0.3);
    f.restarts = static_cast<std::uint32_t>(plan.below(1 + s.sources / 4 + 3));
    f.force_acquire_wait = plan.unit() * 0.3;
    f.churn = static_cast<std::uint32_t>(plan.below(1 + s.sources / 8 + 2));
    f.peer_share = plan.unit();
    f.sink_throw = plan.chance(0.3) ? plan.unit() * 0.01 : 0.0;
    f.enqueue_throw = plan.chance(0.3) ? plan.unit() * 0.01 : 0.0;
    if (s.enqueue_fault >= 0.0) {
        f.enqueue_throw = s.enqueue_fault; // after the draw: the others stay as the seed says
    }
    f.factory_throw = plan.chance(0.3) ? plan.unit() * 0.2 : 0.0;
    f.waiting_share = plan.unit();
    f.interleave = plan.unit() * 0.5;
    if (s.interleave >= 0.0) {
        f.interleave = s.interleave;
    }
    f.checkpoint_interval = std::chrono::microseconds(50 + plan.below(5000));
    // Not with an OpenMetrics timeline: its collector reads the first worker only.
    f.crash_at = plan.chance(0.4) && s.openmetrics_path.empty() ? 0.1 + plan.unit() * 0.8 : 0.0;
    return f;
}

run_limits run_limits::of(const scenario& s, const fault_plan& faults) {
    const bool legacy = s.policy == runtime::pool_policy::legacy;
    run_limits l;
    l.reserve = legacy ? s.legacy_buffers_per_source : (faults.minimal_limits ? 1 : s.reserve);
    l.cap = legacy ? s.legacy_buffers_per_source
                   : (faults.minimal_limits ? std::max(l.reserve, 1U) : std::max(s.cap, l.reserve));
    l.processing_reserve =
        legacy ? 0
               : std::max<std::uint32_t>(s.processing_reserve,
                                         static_cast<std::uint32_t>(s.compute_workers));
    l.buffers = s.buffers;
    if (l.buffers == 0) {
        l.buffers = legacy ? s.sources * s.legacy_buffers_per_source
                           : s.sources * l.reserve + l.processing_reserve + s.sources;
    }
    return l;
}

} // namespace sluice::sim
