// One simulated run: the production pool, processing and server over the simulated environment,
// driven by the operator plan until every source has ended, then wound down and checked.
// The parts have files of their own: scenario.cpp (the replay command, the report),
// fault_plan (what is injected), operator_plan (what the operator does), verifying_sink and
// checker (the oracles), openmetrics_timeline (--openmetrics).
#include "sim/simulation.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "sim/checker.hpp"
#include "sim/fault_plan.hpp"
#include "sim/memory_checkpoint_store.hpp"
#include "sim/openmetrics_timeline.hpp"
#include "sim/operator_plan.hpp"
#include "sim/verifying_sink.hpp"
#include "sluice/checkpoint/file_position.hpp"
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

processing_options pipeline_options(const scenario& s) {
    processing_options options;
    options.output_per_buffer = true; // processing competes for buffers (P2 under legacy)
    options.batch_channels_max = s.drain_channels;
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

/// One worker over the run's environment: processing and the server. A crash ends one and the
/// next starts on the same environment (virtual time, streams and checkpoints go on).
struct worker_parts {
    worker_parts(const scenario& s, buffer_pool& pool, sim_environment& env, verifying_sink& out)
        : pipeline(env, pool, out, pipeline_options(s)),
          server(env, pool, pipeline, run_server_options(s)) {}
    processing pipeline;
    source_server server;
};

/// What a run builds, declared in the order that makes destruction safe: every worker's pool
/// outlives the environment (a handler still queued may hold a buffer), the environment
/// outlives processing and the server, and the checkpoints outlive the environment (a save may
/// still be queued on its blocking pool).
struct run_parts {
    run_parts(const scenario& s, const fault_plan& faults, const run_limits& limits,
              verifying_sink& out)
        : env(environment_options(s, faults)) {
        add_pool(s, limits);
        worker = std::make_unique<worker_parts>(s, pool(), env, out);
        env.set_fault_probability(fault_site::force_acquire_wait, faults.force_acquire_wait);
        env.set_fault_probability(fault_site::enqueue_exception, faults.enqueue_throw);
        env.set_interleave_probability(faults.interleave);
        out.throw_sometimes(&env.faults(), faults.sink_throw);
    }
    /// `sources`: how many it must admit at once (0: the scenario's).
    void add_pool(const scenario& s, const run_limits& limits, std::uint32_t buffers,
                  std::uint32_t sources) {
        pools.push_back(std::make_unique<buffer_pool>(pool_config{
            buffers, s.buffer_size, limits.processing_reserve, sources + 16, s.policy, false}));
    }
    void add_pool(const scenario& s, const run_limits& limits) {
        add_pool(s, limits, limits.buffers, s.sources);
    }
    buffer_pool& pool() { return *pools.back(); }
    processing& pipeline() { return worker->pipeline; }
    source_server& server() { return worker->server; }

    memory_checkpoint_store checkpoints;
    std::vector<std::unique_ptr<buffer_pool>> pools; ///< the current worker's is the last
    sim_environment env;
    std::unique_ptr<worker_parts> worker;
};

/// The production collector sampled in virtual time (--openmetrics); nothing when not asked.
class metrics_sampler {
public:
    metrics_sampler(const scenario& s, run_parts& r)
        : path_(s.openmetrics_path),
          collector_(r.pool(), r.server(), r.pipeline(),
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
    r.pool().check_accounting();
    if (s.policy != pool_policy::legacy && wakeup_violations < 3) {
        for (auto lost : {r.server().check_wakeups(), r.pipeline().check_drainers()}) {
            if (!lost.empty()) {
                ++wakeup_violations;
                result.violations.push_back(
                    std::move(lost) + " (virtual time " +
                    std::to_string(std::chrono::duration<double>(r.env.now()).count()) + " s)");
            }
        }
    }
    if ((r.env.steps() & 0xFFFU) == 0) {
        r.pool().check_invariants();
    }
}

enum class drive_end : std::uint8_t { finished, failed, crashed };

/// Runs the plan to its horizon, then the liveness phase until every source has ended:
/// `finished`. `failed` on a deadlock (result.deadlock), the progress watchdog or the step
/// bound; `crashed` when virtual time reaches `crash_at` (0: never) before the horizon.
drive_end drive(const scenario& s, run_parts& r, operator_plan& plan, verifying_sink& out,
                metrics_sampler* metrics, report& result, time_point crash_at = time_point{0}) {
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
        if (!liveness && crash_at.count() > 0 && r.env.now() >= crash_at) {
            return drive_end::crashed;
        }
        if (!liveness && (r.env.now() >= horizon || idle_before_horizon)) {
            liveness = true;
            begin_liveness(r, plan, out);
        }
        const auto stepped = r.env.step();
        if (metrics != nullptr) {
            metrics->sample_if_due(r.env.now());
        }
        check_step(s, r, wakeup_violations, result);
        if (out.deliveries != deliveries_seen) {
            deliveries_seen = out.deliveries;
            last_progress = r.env.now();
        }
        if (plan.all_finished() && r.pipeline().queued() == 0) {
            return drive_end::finished;
        }
        if (stepped == sim_environment::step_result::idle) {
            if (!liveness) {
                // Nothing more can happen before the horizon (a source stopped by the plan
                // after its restart was due, say): start the liveness phase now.
                idle_before_horizon = true;
                continue;
            }
            result.deadlock = true; // nothing runnable, no timer pending, work outstanding
            return drive_end::failed;
        }
        if (r.env.now() - last_progress > watchdog) {
            result.violations.push_back("progress watchdog: nothing delivered for " +
                                        std::to_string(s.watchdog_seconds) +
                                        " virtual seconds while work is pending");
            return drive_end::failed;
        }
        if (r.env.steps() >= s.steps_max) {
            result.violations.push_back("step bound reached");
            return drive_end::failed;
        }
    }
}

/// A run that did not finish: who waits for what, then a teardown that stops every source,
/// aborts processing's waits and drops what cannot be processed. Stopping flushes partial
/// buffers, which may queue more work that waits again: a few bounded rounds.
void explain_and_tear_down(run_parts& r, operator_plan& plan, report& result) {
    const auto stats = r.pool().stats();
    result.waiting.push_back(std::to_string(stats.waiters_sources) +
                             " source acquisitions wait for a buffer");
    result.waiting.push_back(std::to_string(r.pipeline().output_waits()) +
                             " processing tasks wait for an output buffer");
    result.waiting.push_back(std::to_string(r.pipeline().queued()) +
                             " buffers queued for processing cannot be processed");
    result.waiting.push_back("pool: " + std::to_string(stats.free) + " of " +
                             std::to_string(stats.buffer_count) + " free; sources hold " +
                             std::to_string(stats.outstanding_sources) + ", processing holds " +
                             std::to_string(stats.outstanding_processing));
    plan.stop_all();
    for (int round = 0; round < 4; ++round) {
        r.pool().abort_processing_waiters();
        step_until_idle(r.env);
        r.pipeline().discard_queued();
        step_until_idle(r.env);
    }
}

bool settled(run_parts& r) {
    return r.server().quiescent() && r.pipeline().queued() == 0;
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
    r.pool().abort_processing_waiters();
    step_until_idle(r.env);
    r.pipeline().discard_queued();
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
    const auto pstats = r.pipeline().stats();
    result.bytes_discarded = pstats.bytes_discarded_total;
    result.records_truncated = pstats.records_truncated_total;
    result.sink_failures = pstats.sink_failures_total;
    result.peer_connections = r.env.peer_connections();
    result.peer_resets = r.env.peer_resets();
    result.interleavings = r.env.interleavings();
    result.buffers_free_at_end = r.pool().stats().free;
    result.virtual_seconds = std::chrono::duration<double>(r.env.now()).count();
    result.events = r.env.steps();
    result.trace_hash = r.env.trace_hash();
}

/// What the HTTP sources answered and their virtual clients heard (both workers' after a
/// crash); an answer a correct source never gives is a violation.
void take_http_tallies(const operator_plan& plan, const source_server& server, report& result) {
    const auto& heard = plan.http_heard();
    const auto count = [&](int code) {
        const auto it = heard.answers.find(code);
        return it == heard.answers.end() ? std::uint64_t{0} : it->second;
    };
    result.http_requests += plan.http_counted().requests.load();
    result.http_204 += count(204);
    result.http_429 += count(429);
    result.http_404 += count(404);
    result.http_resets += heard.resets;
    for (const auto& problem : heard.problems) {
        result.violations.push_back(problem);
    }
    // Every bounded buffer wait that expired is one refusal answered 429: a wait aborted by
    // anything else (a stale expiry from an earlier wait) would be counted without one.
    const auto refusals = server.stats().buffer_refusals_total;
    const auto answered = plan.http_counted()
                              .answers[static_cast<std::size_t>(http_answer::too_many_requests)]
                              .load();
    if (refusals != answered) {
        result.violations.push_back("the server refused " + std::to_string(refusals) +
                                    " bounded buffer waits but HTTP sources answered " +
                                    std::to_string(answered) + " with 429");
    }
}

/// The record of generator `id` that starts at byte `offset` of its stream; nullopt when no
/// record starts there (a checkpoint off a record boundary).
std::optional<std::uint64_t> record_at(std::uint64_t id, std::uint64_t records,
                                       std::uint64_t offset) {
    std::uint64_t low = 0;
    std::uint64_t high = records;
    while (low < high) { // the first k whose prefix is at least `offset` bytes
        const std::uint64_t mid = low + (high - low) / 2;
        if (generator_records_bytes(id, 0, mid) < offset) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    if (generator_records_bytes(id, 0, low) != offset) {
        return std::nullopt;
    }
    return low;
}

/// The file's checkpoint offset as the crash left it (0 without one).
std::uint64_t checkpointed_offset(memory_checkpoint_store& store, const std::string& path,
                                  report& result) {
    const auto loaded = store.load(path);
    if (!loaded.found) {
        return 0;
    }
    const auto decoded = decode_file_position(loaded.value, path, store.where(path));
    if (!decoded.error.empty()) {
        result.violations.push_back(decoded.error);
        return 0;
    }
    return decoded.position->offset;
}

/// The crashed worker's files, resumed by the new one: each from the record its checkpoint
/// names, which must not be past what the engine had got (that would be a loss); what lies
/// between is delivered again, and must lie within the checkpoint's window.
void resume_files(const scenario& s, const fault_plan& faults, run_parts& r, time_point crashed_at,
                  const operator_plan& crashed, const verifying_sink& before,
                  operator_plan& resumed, report& result) {
    // A checkpoint trails the engine by its interval, plus the handlers queued ahead of its
    // post on a lane and the blocking pool's turn: 20 ms of virtual time is far above them.
    const time_point window_start =
        crashed_at - faults.checkpoint_interval - std::chrono::milliseconds(20);
    for (const auto& p : crashed.sources()) {
        if (p.what != planned_source::shape::file) {
            continue;
        }
        const std::string path = "vs/" + std::to_string(p.id);
        const std::uint64_t offset = checkpointed_offset(r.checkpoints, path, result);
        const auto first = record_at(p.id, s.records_per_source, offset);
        if (!first) {
            result.violations.push_back(path + ": checkpoint offset " + std::to_string(offset) +
                                        " is not on a record boundary");
            continue;
        }
        const auto* log = before.find(p.handle);
        const std::uint64_t got = log != nullptr ? log->checker.next_record() : 0;
        if (*first > got) {
            result.violations.push_back(path + ": the checkpoint is at record " +
                                        std::to_string(*first) + " but the engine had only " +
                                        std::to_string(got) + " (records lost in the crash)");
        } else {
            const std::uint64_t again = got - *first;
            result.records_replayed += again;
            result.replay_max = std::max(result.replay_max, again);
            const std::uint64_t settled_by_window = before.records_by(p.handle, window_start);
            if (*first < settled_by_window) {
                result.violations.push_back(
                    path + ": the checkpoint (record " + std::to_string(*first) +
                    ") is older than its window: the engine had " +
                    std::to_string(settled_by_window) + " records 20 ms + an interval earlier");
            }
        }
        ++result.files_resumed;
        resumed.add_resumed_file(p, *first);
    }
}

/// Every resumed file that was not scripted to reset or end early ended with all its records.
void check_resumed_files(const scenario& s, const operator_plan& resumed, const verifying_sink& out,
                         report& result) {
    for (const auto& p : resumed.sources()) {
        const auto* log = out.find(p.handle);
        if (p.whole_file &&
            (log == nullptr || !log->ended || log->checker.next_record() != s.records_per_source)) {
            result.violations.push_back(
                "resumed file vs/" + std::to_string(p.id) + " ended after " +
                std::to_string(log != nullptr ? log->checker.next_record() : 0) + " of " +
                std::to_string(s.records_per_source) + " records");
        }
    }
}

/// The end of a worker's run: quiescence, the server's tallies, shutdown, the pool's checks.
void wind_down(const scenario& s, run_parts& r, operator_plan& plan, report& result) {
    settle(s, r, plan, result);
    take_server_tallies(r.server(), result);
    r.server().shutdown();
    r.pool().check_invariants();
    check_registrations_undone(r.pool(), result);
}

/// The end of a worker's run after `end`: torn down when it did not finish, wound down, and,
/// when it finished, checked as a whole (`buffers`: its pool's).
void finish_worker(const scenario& s, run_parts& r, operator_plan& plan, const verifying_sink& out,
                   drive_end end, std::uint32_t buffers, report& result) {
    plan.close();
    if (end != drive_end::finished) {
        explain_and_tear_down(r, plan, result);
    }
    wind_down(s, r, plan, result);
    take_run_tallies(r, result);
    take_http_tallies(plan, r.server(), result);
    if (end == drive_end::finished) {
        check_finished_run(s, plan, out, buffers, result);
    }
}

/// A whole-worker crash: the engine and the checkpoint store see nothing more of this worker
/// (its teardown delivers and saves nothing anyone keeps); its pool must still get every
/// buffer back. Then a new worker on the same environment resumes the files from their
/// checkpoints and runs them to their end. True when that run finished.
bool crash_and_resume(const scenario& s, const fault_plan& faults, const run_limits& limits,
                      run_parts& r, operator_plan& crashed, verifying_sink& before,
                      verifying_sink& after, report& result) {
    result.crashed = true;
    const time_point crashed_at = r.env.now(); // the teardown below moves virtual time on
    result.crash_seconds = std::chrono::duration<double>(crashed_at).count();
    r.checkpoints.crash();
    before.crash();
    crashed.close();
    crashed.stop_all();
    wind_down(s, r, crashed, result);
    if (r.pool().stats().free != limits.buffers) {
        result.violations.push_back("leak in the crashed worker: " +
                                    std::to_string(limits.buffers - r.pool().stats().free) +
                                    " buffers not back in its pool");
    }
    r.worker.reset();
    r.checkpoints.restart();

    // The new worker admits every file at once: the crashed one may have had more (churn) than
    // its scenario's sources, admitted as others were unregistered.
    std::uint32_t files = 0;
    for (const auto& p : crashed.sources()) {
        files += p.what == planned_source::shape::file ? 1 : 0;
    }
    const std::uint32_t buffers =
        std::max(limits.buffers, files * (limits.reserve + 1) + limits.processing_reserve);
    r.add_pool(s, limits, buffers, std::max(files, s.sources));
    result.buffers_total = buffers; // the tallies are the last worker's
    r.worker = std::make_unique<worker_parts>(s, r.pool(), r.env, after);
    operator_plan resumed(s, faults, limits, r.env, r.server(), after, result, &r.checkpoints);
    begin_liveness(r, resumed, after); // faults off: the crash is the fault
    r.env.set_interleave_probability(0.0);
    resume_files(s, faults, r, crashed_at, crashed, before, resumed, result);
    const drive_end end = drive(s, r, resumed, after, nullptr, result);
    finish_worker(s, r, resumed, after, end, buffers, result);
    if (end == drive_end::finished) {
        check_resumed_files(s, resumed, after, result);
    }
    return end == drive_end::finished;
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
    const auto horizon =
        std::chrono::duration_cast<duration>(std::chrono::duration<double>(s.virtual_seconds));
    const time_point crash_at = std::chrono::duration_cast<duration>(horizon * faults.crash_at);

    verifying_sink out;
    verifying_sink resumed_out; // the new worker's, after a crash
    {
        run_parts r(s, faults, limits, out);
        if (crash_at.count() > 0) {
            out.track_times(&r.env);
        }
        operator_plan plan(s, faults, limits, r.env, r.server(), out, result,
                           faults.checkpoint_interval.count() > 0 ? &r.checkpoints : nullptr);
        plan.add_initial_sources();
        plan.schedule();
        metrics_sampler metrics(s, r);
        const drive_end end = drive(s, r, plan, out, &metrics, result, crash_at);
        metrics.finish(r.env.now(), result);
        if (end == drive_end::crashed) {
            crash_and_resume(s, faults, limits, r, plan, out, resumed_out, result);
        } else {
            finish_worker(s, r, plan, out, end, limits.buffers, result);
        }
    }
    for (const auto* sink : {&out, &resumed_out}) {
        for (const auto& v : sink->violations) {
            result.violations.push_back(v);
        }
    }
    // The tallies are the last worker's (the one the server's counters describe); what a
    // crashed worker delivered is apart.
    const verifying_sink& last = result.crashed ? resumed_out : out;
    result.crashed_bytes_delivered = result.crashed ? out.bytes : 0;
    result.bytes_delivered = last.bytes;
    result.records_delivered = last.records;
    result.end_of_streams = last.end_of_streams;
    result.errors = last.errors;
    result.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    return result;
}

} // namespace sluice::sim
