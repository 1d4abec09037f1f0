#pragma once
/// One simulated run: a scenario (sources and their shapes, the pool, the schedule strategy,
/// faults switched on per run from the seed, an operator plan) run over the production
/// accountant, server, flush policy, processing and sources on `sim_environment`, with the
/// detectors of DESIGN.md §4: invariants after every step, a deadlock detector, a progress
/// watchdog and a liveness phase that requires every byte read to be delivered exactly once, in
/// order, and every buffer back in the pool.

#include <cstdint>
#include <string>
#include <vector>

#include "sim/sim_environment.hpp"
#include "sluice/pool/buffer_pool.hpp"

namespace sluice::sim {

struct scenario {
    std::uint32_t sources = 100;
    std::uint32_t buffers = 0; ///< 0 = enough for every reserve plus one floating each
    std::uint32_t buffer_size = 1024;
    std::uint32_t reserve = 1;
    std::uint32_t cap = 4;
    std::uint32_t processing_reserve = 8;
    std::size_t io_lanes = 2;
    std::size_t compute_workers = 2;
    std::uint64_t seed = 1;
    double virtual_seconds = 1.0; ///< then the liveness phase: faults off, drain
    strategy order = strategy::fifo;
    bool faults = false;
    runtime::pool_policy policy = runtime::pool_policy::sluice;
    bool park_idle = true; ///< server_options::park_idle (both paths stay proven)
    /// processing_options::batch_channels_max. 1 by default: a compute task's effects happen
    /// when it starts and its worker is busy for its cost afterwards, so a task that drains
    /// many channels would hand back all their buffers at one instant; one channel per task
    /// keeps the timing as fine as the work. Larger values prove the drainer's own loop.
    std::uint32_t drain_channels = 1;
    /// With faults: the chance that queueing a buffer fails (its drainer's post throws);
    /// negative = drawn from the seed like the other fault rates (at most 1%).
    double enqueue_fault = -1.0;
    /// With faults: the chance that a scheduling point runs another lane's handler or a compute
    /// task there; negative = drawn from the seed (at most 50%).
    double interleave = -1.0;
    std::uint32_t legacy_buffers_per_source = 5;
    std::uint64_t records_per_source = 200; ///< 0 = infinite generators, stopped at the horizon
    double stream_fraction = 0.5;           ///< share of sources that are virtual streams
    double paced_fraction = 0.5;            ///< share of generators that are rate-limited
    /// When set, every generator sends this many records a virtual second (a fleet of steady
    /// sources: with records_per_source it fixes how long each runs); 0 = the mix above.
    double records_per_second = 0.0;
    /// Share of sources that are HTTP connections (sim/virtual_http_client.hpp): keep-alive
    /// clients posting their records, 429s resent; 0 = none (and no draw for it).
    double http_fraction = 0.0;
    std::uint32_t http_buffer_wait_us = 200; ///< their listener's buffer_wait
    double watchdog_seconds = 10.0; ///< virtual seconds without a delivery while work is pending
    /// Registrations that come during the first half of the horizon and wait for admission
    /// (source_server::register_source_waiting); churn under faults adds some too.
    std::uint32_t late_registrations = 0;
    /// How long a waiting registration may wait; refused at the bound while the run goes on is a
    /// violation (starvation). Compute stalls (faults) can hold every buffer for 0.2 s.
    double admission_wait_seconds = 1.0;
    std::uint64_t steps_max = 500'000'000;
    /// When set, the run's metrics timeline (every `metrics_interval_seconds` of virtual time)
    /// is written here as OpenMetrics, for `promtool tsdb create-blocks-from openmetrics`.
    std::string openmetrics_path;
    double metrics_interval_seconds = 0.01;
};

struct report {
    std::uint64_t seed = 0;
    std::uint32_t sources = 0;
    std::string policy;
    std::string strategy_name;
    bool faults = false;
    bool deadlock = false;
    std::vector<std::string> violations;
    std::vector<std::string> waiting; ///< at a deadlock: who waits for what
    std::uint64_t bytes_produced = 0;
    std::uint64_t bytes_delivered = 0;
    std::uint64_t records_delivered = 0;
    std::uint32_t buffers_total = 0;
    std::uint32_t buffers_free_at_end = 0;
    std::uint64_t end_of_streams = 0;
    std::uint64_t errors = 0;
    std::uint64_t restarts = 0;
    std::uint64_t backpressure_waits = 0;
    std::uint64_t parks = 0;                 ///< times an idle source parked
    std::uint64_t registrations_refused = 0; ///< churn registrations refused (not a violation)
    std::uint64_t registrations_waited = 0;  ///< churn registrations that waited for admission
    std::uint64_t registrations_starved = 0; ///< of those, refused at their bound (a violation)
    std::uint64_t factory_failures = 0;      ///< registrations whose factory threw (a fault)
    std::uint64_t bytes_discarded = 0;       ///< of origins the sink failed, after the failure
    std::uint64_t bytes_dropped = 0;         ///< of buffers that could not be queued (a fault)
    std::uint64_t records_truncated = 0;     ///< unfinished records dropped at reconnects and ends
    std::uint64_t sink_failures = 0;         ///< origins failed by a sink exception (a fault)
    std::uint64_t queue_failures = 0;   ///< sources failed because a buffer could not be queued
    std::uint64_t peer_connections = 0; ///< connections of reconnecting virtual peers
    std::uint64_t peer_resets = 0;      ///< of those, reset at an arbitrary byte offset
    std::uint64_t interleavings = 0;    ///< other work run inline at scheduling points
    std::uint64_t http_requests = 0;    ///< request headers HTTP sources read
    std::uint64_t http_204 = 0;         ///< bodies answered delivered
    std::uint64_t http_429 = 0;         ///< bodies refused for want of a buffer (resent)
    std::uint64_t http_404 = 0;         ///< requests to a path not served (resent)
    std::uint64_t http_resets = 0;      ///< HTTP clients reset mid-request (a fault)
    std::uint64_t unregistered = 0;     ///< finished sources unregistered by churn
    bool crashed = false;               ///< a whole-worker crash happened (a fault)
    double crash_seconds = 0;           ///< when (virtual time)
    std::uint64_t files_resumed = 0;    ///< file sources the new worker resumed
    std::uint64_t records_replayed = 0; ///< records delivered again after the crash
    std::uint64_t replay_max = 0;       ///< most of them for one file
    /// After a crash, the tallies above are the new worker's; this is what the crashed one had
    /// delivered.
    std::uint64_t crashed_bytes_delivered = 0;
    std::uint64_t sources_run = 0;      ///< initial sources plus those churn admitted
    std::uint64_t source_bytes_min = 0; ///< least delivered by one initial source
    std::uint64_t source_bytes_max = 0; ///< most delivered by one initial source
    double virtual_seconds = 0;
    std::uint64_t events = 0;
    double wall_seconds = 0;
    std::uint64_t trace_hash = 0;

    bool ok() const noexcept { return !deadlock && violations.empty(); }
    std::string to_json() const;
};

/// Runs the scenario to the end of its liveness phase (or a detected failure).
report run(const scenario& s);

/// The `sluice-sim` command line that reproduces `s`.
std::string reproduce_command(const scenario& s);

std::string to_string(strategy order);

} // namespace sluice::sim
