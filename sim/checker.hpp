#pragma once
/// The run's end-state oracle, after the liveness phase drained it: conservation of bytes, no
/// leaked buffer, no registration left behind, every complete source's records all delivered.
/// (Per-event checks are the verifying sink's; deadlock and progress are the run loop's.)

#include "sim/operator_plan.hpp"
#include "sim/simulation.hpp"
#include "sim/verifying_sink.hpp"
#include "sluice/pool/buffer_pool.hpp"

namespace sluice::sim {

/// After shutdown: the pool holds no registration and no reserve.
void check_registrations_undone(const runtime::buffer_pool& pool, report& result);

/// A run that finished: every byte read delivered or counted, every buffer back, each source's
/// records complete; also the spread of bytes over the scenario's own sources.
void check_finished_run(const scenario& s, const operator_plan& plan, const verifying_sink& out,
                        std::uint32_t buffers, report& result);

} // namespace sluice::sim
