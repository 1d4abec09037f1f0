#pragma once
/// Which faults a run injects and how often (BUGGIFY: itself drawn from the seed), and the pool
/// limits the run uses (minimal legal ones are a fault too).

#include <cstdint>

#include "sim/simulation.hpp"
#include "sluice/env/environment.hpp"

namespace sluice::sim {

struct fault_plan {
    double short_read = 0.0;
    double reset = 0.0;    ///< a file's stream resets
    double truncate = 0.0; ///< a file ends early
    double compute_stall = 0.0;
    bool minimal_limits = false;
    std::uint32_t restarts = 0; ///< engine stops at suspension points, each restarted later
    double force_acquire_wait = 0.0;
    std::uint32_t churn = 0; ///< registrations (and unregistrations) while the pool is busy
    double peer_share = 0.0; ///< streams that are peers of reconnecting TCP clients
    double sink_throw = 0.0; ///< the sink throws for a buffer
    double enqueue_throw = 0.0;
    double factory_throw = 0.0;
    /// Churn registrations that wait for admission (bounded) instead of taking a refusal:
    /// under backpressure they must get in ahead of sources waiting above their reserves.
    double waiting_share = 0.0;
    /// Compute tasks run inline where a lane is between a check and its act.
    double interleave = 0.0;
    /// File sources checkpoint their processed position this often (0: no checkpoints).
    runtime::duration checkpoint_interval{0};
    /// A whole-worker crash at this fraction of the horizon (0: none): everything in flight is
    /// lost, the checkpoints stay as last written, and a new worker resumes the file sources.
    double crash_at = 0.0;

    /// All zero without faults. The order of the draws is part of what a seed means: a site
    /// added later is drawn after the others, so runs without it stay the runs they were.
    static fault_plan draw(const scenario& s);
};

/// The pool the run uses: limits per source, the processing reserve, the buffer count.
struct run_limits {
    std::uint32_t reserve = 0;
    std::uint32_t cap = 0;
    std::uint32_t processing_reserve = 0;
    std::uint32_t buffers = 0;

    static run_limits of(const scenario& s, const fault_plan& faults);
};

} // namespace sluice::sim
