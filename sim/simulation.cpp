// One simulated run: the production pool, processing and server over the simulated environment,
// driven by the operator plan until every source has ended, then wound down and checked.
// The parts have files of their own: scenario.cpp (the replay command, the report),
// fault_plan (what is injected), operator_plan (what the operator does), verifying_sink and
// checker (the oracles), openmetrics_timeline (--openmetrics).
#include "sim/simulation.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sim/checker.hpp"
#include "sim/fault_plan.hpp"
#include "sim/openmetrics_timeline.hpp"
#include "sim/operator_plan.hpp"
#include "sim/verifying_sink.hpp"
#include "sluice/metrics/metrics.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/server/source_server.hpp"

namespace sluice::sim {

namespace {

using namespace runtime;

sim_options environment_options(const scenario& s, const fault_plan& faults) {
    sim_options options;
    options.lanes = s.io_lanes;
    options.compute_workers = s.compute_workers;
    options.seed = s.seed;
    options.order = s.order;
    options.pct_steps_estimate =
        std::max<std::uint64_t>(1000, s.sources * s.records_per_source / 4);
    options.compute_stall_probability = faults.compute_stall;
    return options;
}

processing_options pipeline_options() {
    processing_options options;
    options.output_per_buffer = true; // processing competes for buffers (P2 under legacy)
    return options;
}

server_options run_server_options(const scenario& s) {
    server_options options;
    options.backoff_initial = std::chrono::milliseconds(1);
    options.backoff_max = std::chrono::milliseconds(20);
    options.reconnect_attempts_max = 5;
    options.park_idle = s.park_idle;
    return options;
}

/// What a run builds, declared in the order that makes destruction safe (the pool outlives
/// the environment, processing and the server).
struct run_parts {
    run_parts(const scenario& s, const fault_plan& faults, const run_limits& limits,
              verifying_sink& out)
        : pool({limits.buffers, s.buffer_size, limits.processing_reserve, s.sources + 16, s.policy,
                false}),
          env(environment_options(s, faults)), pipeline(env, pool, out, pipeline_options()),
          server(env, pool, pipeline, run_server_options(s)) {
        env.set_fault_probability(fault_site::force_acquire_wait, faults.force_acquire_wait);
        env.set_fault_probability(fault_site::enqueue_exception, faults.enqueue_throw);
        env.set_interleave_probability(faults.interleave);
        out.throw_sometimes(&env.faults(), faults.sink_throw);
    }
    buffer_pool pool;
    sim_environment env;
    processing pipeline;
    source_server server;
};

/// The production collector sampled in virtual time (--openmetrics); nothing when not asked.
class metrics_sampler {
public:
    metrics_sampler(const scenario& s, run_parts& r)
        : path_(s.openmetrics_path),
          collector_(r.pool, r.server, r.pipeline,
                     thread_pools{s.io_lanes, s.compute_workers, 2, {}, {}}, "sim"),
          every_(std::chrono::duration_cast<duration>(
              std::chrono::duration<double>(s.metrics_interval_seconds))) {}

    void sample_if_due(time_point now) {
        if (!path_.empty() && now >= next_) {
            timeline_.record(std::chrono::duration<double>(now).count(), collector_.Collect());
            next_ = now + every_;
        }
    }
    /// The last sample, and the file written.
    void finish(time_point now, report& result) {
        if (path_.empty()) {
            return;
        }
        timeline_.record(std::chrono::duration<double>(now).count(), collector_.Collect());
        if (!timeline_.write(path_)) {
            result.violations.push_back("could not write " + path_);
        }
    }

private:
    std::string path_;
    openmetrics_timeline timeline_;
    metrics_collector collector_;
    duration every_;
    time_point next_{0};
};

/// Steps until the environment is idle, boundedly (a few handlers left to run).
void step_until_idle(sim_environment& env) {
    for (int i = 0; i < 10'000'000 && env.step() != sim_environment::step_result::idle; ++i) {
    }
}

/// Faults off, every source allowed to reach its end.
void begin_liveness(run_parts& r, operator_plan& plan, verifying_sink& out) {
    r.env.set_compute_stalls(0.0);
    r.env.set_fault_probability(fault_site::force_acquire_wait, 0.0);
    r.env.set_fault_probability(fault_site::enqueue_exception, 0.0);
    out.throw_sometimes(&r.env.faults(), 0.0);
    plan.begin_liveness();
}

/// The checks after every step: the pool's accounting (conservation and the reserve invariant;
/// its O(n) cross-checks every 4,096 steps) and lost wake-ups (a few are enough to say what
/// went wrong).
void check_step(const scenario& s, run_parts& r, int& wakeup_violations, report& result) {
    r.pool.check_accounting();
    if (s.policy != pool_policy::legacy && wakeup_violations < 3) {
        if (auto lost = r.server.check_wakeups(); !lost.empty()) {
            ++wakeup_violations;
            result.violations.push_back(
                std::move(lost) + " (virtual time " +
                std::to_string(std::chrono::duration<double>(r.env.now()).count()) + " s)");
        }
    }
    if ((r.env.steps() & 0xFFFU) == 0) {
        r.pool.check_invariants();
    }
}

/// Runs the plan to its horizon, then the liveness phase until every source has ended. True
/// when it did; false on a deadlock (result.deadlock), the progress watchdog or the step bound.
bool drive(const scenario& s, run_parts& r, operator_plan& plan, verifying_sink& out,
           metrics_sampler& metrics, report& result) {
    const auto horizon =
        std::chrono::duration_cast<duration>(std::chrono::duration<double>(s.virtual_seconds));
    const auto watchdog =
        std::chrono::duration_cast<duration>(std::chrono::duration<double>(s.watchdog_seconds));
    time_point last_progress = r.env.now();
    std::uint64_t deliveries_seen = 0;
    int wakeup_violations = 0;
    bool liveness = false;
    bool idle_before_horizon = false;
    while (true) {
        if (!liveness && (r.env.now() >= horizon || idle_before_horizon)) {
            liveness = true;
            begin_liveness(r, plan, out);
        }
        const auto stepped = r.env.step();
        metrics.sample_if_due(r.env.now());
        check_step(s, r, wakeup_violations, result);
        if (out.deliveries != deliveries_seen) {
            deliveries_seen = out.deliveries;
            last_progress = r.env.now();
        }
        if (plan.all_finished() && r.pipeline.queued() == 0) {
            return true;
        }
        if (stepped == sim_environment::step_result::idle) {
            if (!liveness) {
                // Nothing more can happen before the horizon (a source stopped by the plan
                // after its restart was due, say): start the liveness phase now.
                idle_before_horizon = true;
                continue;
            }
            result.deadlock = true; // nothing runnable, no timer pending, work outstanding
            return false;
        }
        if (r.env.now() - last_progress > watchdog) {
            result.violations.push_back("progress watchdog: nothing delivered for " +
                                        std::to_string(s.watchdog_seconds) +
                                        " virtual seconds while work is pending");
            return false;
        }
        if (r.env.steps() >= s.steps_max) {
            result.violations.push_back("step bound reached");
            return false;
        }
    }
}

/// A run that did not finish: who waits for what, then a teardown that stops every source,
/// aborts processing's waits and drops what cannot be processed. Stopping flushes partial
/// buffers, which may queue more work that waits again: a few bounded rounds.
void explain_and_tear_down(run_parts& r, operator_plan& plan, report& result) {
    const auto stats = r.pool.stats();
    result.waiting.push_back(std::to_string(stats.waiters_sources) +
                             " source acquisitions wait for a buffer");
    result.waiting.push_back(std::to_string(r.pipeline.output_waits()) +
                             " processing tasks wait for an output buffer");
    result.waiting.push_back(std::to_string(r.pipeline.queued()) +
                             " buffers queued for processing cannot be processed");
    result.waiting.push_back("pool: " + std::to_string(stats.free) + " of " +
                             std::to_string(stats.buffer_count) + " free; sources hold " +
                             std::to_string(stats.outstanding_sources) + ", processing holds " +
                             std::to_string(stats.outstanding_processing));
    plan.stop_all();
    for (int round = 0; round < 4; ++round) {
        r.pool.abort_processing_waiters();
        step_until_idle(r.env);
        r.pipeline.discard_queued();
        step_until_idle(r.env);
    }
}

bool settled(run_parts& r) {
    return r.server.quiescent() && r.pipeline.queued() == 0;
}

/// Lets completion handlers and posted wake-ups run so that shutdown has nothing to wait for
/// (on this single thread, waiting would never end); a server that still does not settle is a
/// violation, and one that cannot be settled at all aborts rather than hang CI.
void settle(const scenario& s, run_parts& r, operator_plan& plan, report& result) {
    for (int i = 0; i < 10'000'000 && !settled(r); ++i) {
        if (r.env.step() == sim_environment::step_result::idle) {
            break;
        }
    }
    if (settled(r)) {
        return;
    }
    result.violations.push_back("the server did not become quiescent after the run");
    plan.stop_all();
    r.pool.abort_processing_waiters();
    step_until_idle(r.env);
    r.pipeline.discard_queued();
    if (!settled(r)) {
        result.violations.push_back("server still has running coroutines or processing counts "
                                    "items that are gone; aborting the run");
        std::fprintf(stderr, "sluice-sim: unrecoverable: %s\n", reproduce_command(s).c_str());
        std::abort();
    }
}

/// The server's tallies, read after the last read of the run.
void take_server_tallies(const source_server& server, report& result) {
    const auto stats = server.stats();
    result.bytes_produced = 0;
    for (const auto b : stats.bytes_total) {
        result.bytes_produced += b;
    }
    result.backpressure_waits = stats.backpressure_waits_total;
    result.parks = stats.parks_total;
    result.bytes_dropped = stats.bytes_dropped_total;
    result.queue_failures = stats.queue_failures_total;
}

void take_run_tallies(run_parts& r, report& result) {
    const auto pstats = r.pipeline.stats();
    result.bytes_discarded = pstats.bytes_discarded_total;
    result.records_truncated = pstats.records_truncated_total;
    result.sink_failures = pstats.sink_failures_total;
    result.peer_connections = r.env.peer_connections();
    result.peer_resets = r.env.peer_resets();
    result.interleavings = r.env.interleavings();
    result.buffers_free_at_end = r.pool.stats().free;
    result.virtual_seconds = std::chrono::duration<double>(r.env.now()).count();
    result.events = r.env.steps();
    result.trace_hash = r.env.trace_hash();
}

} // namespace

report run(const scenario& s) {
    const auto wall_start = std::chrono::steady_clock::now();
    report result;
    result.seed = s.seed;
    result.sources = s.sources;
    result.policy = s.policy == pool_policy::legacy ? "legacy" : "sluice";
    result.strategy_name = to_string(s.order);
    result.faults = s.faults;

    const fault_plan faults = fault_plan::draw(s);
    const run_limits limits = run_limits::of(s, faults);
    result.buffers_total = limits.buffers;

    verifying_sink out;
    {
        run_parts r(s, faults, limits, out);
        operator_plan plan(s, faults, limits, r.env, r.server, out, result);
        plan.add_initial_sources();
        plan.schedule();
        metrics_sampler metrics(s, r);
        const bool finished = drive(s, r, plan, out, metrics, result);
        metrics.finish(r.env.now(), result);
        plan.close();
        if (!finished) {
            explain_and_tear_down(r, plan, result);
        }
        settle(s, r, plan, result);
        take_server_tallies(r.server, result);
        r.server.shutdown();
        r.pool.check_invariants();
        check_registrations_undone(r.pool, result);
        take_run_tallies(r, result);
        if (finished) {
            check_finished_run(s, plan, out, limits.buffers, result);
        }
    }
    for (const auto& v : out.violations) {
        result.violations.push_back(v);
    }
    result.bytes_delivered = out.bytes;
    result.records_delivered = out.records;
    result.end_of_streams = out.end_of_streams;
    result.errors = out.errors;
    result.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    return result;
}

} // namespace sluice::sim
