#include "sim/simulation.hpp"

#include <boost/asio/co_spawn.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "sim/openmetrics_timeline.hpp"
#include "sluice/metrics/metrics.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/server/source_server.hpp"
#include "sluice/source/generator_records.hpp"
#include "sluice/source/generator_source.hpp"
#include "sluice/source/stream_sources.hpp"

namespace sluice::sim {

namespace {

using namespace runtime;
namespace asio = boost::asio;

/// Checks every event as it is delivered: per origin, contiguous sequences, generator records
/// in order with the right values, nothing after EoS or Error. Runs on the simulator's thread.
class verifying_sink final : public sink {
public:
    struct origin_log {
        std::uint64_t next_sequence = 0;
        runtime::generator_record_checker checker;
        std::uint64_t bytes = 0;
        bool ended = false;
        bool failed = false;
    };

    /// A fault: on_data throws (an engine operator that fails) with this probability, drawn
    /// from `faults`, before it records anything of the event.
    void throw_sometimes(random_stream* faults, double probability) {
        faults_ = faults;
        throw_probability_ = probability;
    }

    void on_data(const data_event& event) override {
        if (throw_probability_ > 0 && faults_->chance(throw_probability_)) {
            ++thrown;
            throw std::runtime_error("injected sink fault");
        }
        auto& log = origins_[event.origin_id];
        if (event.sequence != log.next_sequence) {
            violation("origin " + std::to_string(event.origin_id) + ": sequence " +
                      std::to_string(event.sequence) + " where " +
                      std::to_string(log.next_sequence) +
                      " was expected (lost or duplicated buffer)");
        }
        log.next_sequence = event.sequence + 1;
        if (log.ended || log.failed) {
            violation("origin " + std::to_string(event.origin_id) + ": data after EoS/Error");
        }
        log.bytes += event.raw.size();
        bytes += event.raw.size();
        records += event.record_count;
        const bool was_ok = log.checker.ok();
        log.checker.feed(event.spanning_record);
        log.checker.feed(event.records);
        if (was_ok && !log.checker.ok()) {
            violation("origin " + std::to_string(event.origin_id) + ": " + log.checker.problem());
        }
        ++deliveries;
    }
    void on_end_of_stream(std::uint64_t origin) override {
        auto& log = origins_[origin];
        if (log.ended || log.failed) {
            violation("origin " + std::to_string(origin) + ": second EoS/Error");
        }
        log.ended = true;
        ++end_of_streams;
        ++deliveries;
    }
    void on_error(std::uint64_t origin, std::string_view) override {
        auto& log = origins_[origin];
        if (log.ended || log.failed) {
            violation("origin " + std::to_string(origin) + ": second EoS/Error");
        }
        log.failed = true;
        ++errors;
        ++deliveries;
    }
    bool finished(std::uint64_t origin) const {
        const auto it = origins_.find(origin);
        return it != origins_.end() && (it->second.ended || it->second.failed);
    }
    const origin_log* find(std::uint64_t origin) const {
        const auto it = origins_.find(origin);
        return it == origins_.end() ? nullptr : &it->second;
    }

    std::vector<std::string> violations;
    std::uint64_t bytes = 0;
    std::uint64_t records = 0;
    std::uint64_t deliveries = 0;
    std::uint64_t end_of_streams = 0;
    std::uint64_t errors = 0;
    std::uint64_t thrown = 0;

private:
    random_stream* faults_ = nullptr;
    double throw_probability_ = 0.0;
    void violation(std::string what) {
        if (violations.size() < 20) {
            violations.push_back(std::move(what));
        }
    }
    std::unordered_map<std::uint64_t, origin_log> origins_; ///< references stay valid as it grows
};

struct planned_source {
    enum class shape : std::uint8_t { generator, file, peer } what = shape::generator;
    source_handle handle = 0;
    bool stopped_by_plan = false;
    /// Ends only with all its records (a generator, a peer; a file may be truncated).
    bool complete_at_end() const noexcept { return what != shape::file; }
};

} // namespace

std::string to_string(strategy order) {
    switch (order) {
    case strategy::fifo:
        return "fifo";
    case strategy::random:
        return "random";
    case strategy::pct:
        return "pct";
    }
    return "unknown";
}

std::string reproduce_command(const scenario& s) {
    std::ostringstream out;
    out << "sluice-sim --sources " << s.sources << " --buffers " << s.buffers << " --buffer-size "
        << s.buffer_size << " --reserve " << s.reserve << " --cap " << s.cap
        << " --processing-reserve " << s.processing_reserve << " --io-lanes " << s.io_lanes
        << " --compute-workers " << s.compute_workers << " --seed " << s.seed
        << " --virtual-seconds " << s.virtual_seconds << " --strategy " << to_string(s.order)
        << " --faults " << (s.faults ? "on" : "off") << " --policy "
        << (s.policy == pool_policy::legacy ? "legacy" : "sluice")
        << " --legacy-buffers-per-source " << s.legacy_buffers_per_source << " --records "
        << s.records_per_source << " --stream-fraction " << s.stream_fraction
        << " --paced-fraction " << s.paced_fraction << " --park " << (s.park_idle ? "on" : "off");
    if (s.late_registrations > 0 || s.admission_wait_seconds != scenario{}.admission_wait_seconds) {
        out << " --late-registrations " << s.late_registrations << " --admission-wait "
            << s.admission_wait_seconds;
    }
    return out.str();
}

std::string report::to_json() const {
    std::ostringstream out;
    auto list = [&](const std::vector<std::string>& items) {
        out << "[";
        for (std::size_t i = 0; i < items.size(); ++i) {
            out << (i == 0 ? "" : ", ") << "\"";
            for (const char c : items[i]) {
                out << (c == '"' || c == '\\' ? "\\" : "") << c;
            }
            out << "\"";
        }
        out << "]";
    };
    out << "{\"seed\": " << seed << ", \"sources\": " << sources << ", \"policy\": \"" << policy
        << "\", \"strategy\": \"" << strategy_name
        << "\", \"faults\": " << (faults ? "true" : "false")
        << ", \"deadlock\": " << (deadlock ? "true" : "false") << ", \"violations\": ";
    list(violations);
    out << ", \"waiting\": ";
    list(waiting);
    out << ", \"bytes_produced\": " << bytes_produced
        << ", \"bytes_delivered\": " << bytes_delivered
        << ", \"records_delivered\": " << records_delivered
        << ", \"buffers_total\": " << buffers_total
        << ", \"buffers_free_at_end\": " << buffers_free_at_end
        << ", \"end_of_streams\": " << end_of_streams << ", \"errors\": " << errors
        << ", \"restarts\": " << restarts << ", \"backpressure_waits\": " << backpressure_waits
        << ", \"parks\": " << parks << ", \"registrations_refused\": " << registrations_refused
        << ", \"unregistered\": " << unregistered
        << ", \"registrations_waited\": " << registrations_waited
        << ", \"registrations_starved\": " << registrations_starved
        << ", \"factory_failures\": " << factory_failures
        << ", \"bytes_discarded\": " << bytes_discarded << ", \"bytes_dropped\": " << bytes_dropped
        << ", \"records_truncated\": " << records_truncated
        << ", \"sink_failures\": " << sink_failures << ", \"queue_failures\": " << queue_failures
        << ", \"peer_connections\": " << peer_connections << ", \"peer_resets\": " << peer_resets
        << ", \"interleavings\": " << interleavings
        << ", \"source_bytes_min\": " << source_bytes_min
        << ", \"source_bytes_max\": " << source_bytes_max
        << ", \"virtual_seconds\": " << virtual_seconds << ", \"events\": " << events
        << ", \"wall_seconds\": " << wall_seconds << ", \"trace_hash\": \"" << std::hex
        << trace_hash << std::dec << "\"}";
    return out.str();
}

report run(const scenario& s) {
    const auto wall_start = std::chrono::steady_clock::now();
    report result;
    result.seed = s.seed;
    result.sources = s.sources;
    result.policy = s.policy == pool_policy::legacy ? "legacy" : "sluice";
    result.strategy_name = to_string(s.order);
    result.faults = s.faults;

    sim_options options;
    options.lanes = s.io_lanes;
    options.compute_workers = s.compute_workers;
    options.seed = s.seed;
    options.order = s.order;
    options.pct_steps_estimate =
        std::max<std::uint64_t>(1000, s.sources * s.records_per_source / 4);

    const bool legacy = s.policy == pool_policy::legacy;
    // BUGGIFY: which faults are on, and how often, is itself drawn from the seed.
    random_stream plan(s.seed ^ 0xFA17ULL);
    const double short_read_p = s.faults ? plan.unit() * 0.5 : 0.0;
    const double reset_p = s.faults ? plan.unit() * 0.1 : 0.0;
    const double truncate_p = s.faults ? plan.unit() * 0.1 : 0.0;
    const double stall_p = s.faults ? plan.unit() * 0.05 : 0.0;
    const bool minimal_limits = s.faults && plan.chance(0.3);
    const std::uint32_t restarts_planned =
        s.faults ? static_cast<std::uint32_t>(plan.below(1 + s.sources / 4 + 3)) : 0;
    const double force_wait_p = s.faults ? plan.unit() * 0.3 : 0.0;
    const std::uint32_t churn_planned =
        s.faults ? static_cast<std::uint32_t>(plan.below(1 + s.sources / 8 + 2)) : 0;
    // Drawn after the older sites, so a run without faults is the run it always was.
    const double peer_share = s.faults ? plan.unit() : 0.0; // streams that reconnect
    const double sink_throw_p = s.faults && plan.chance(0.3) ? plan.unit() * 0.01 : 0.0;
    const double enqueue_throw_p = s.faults && plan.chance(0.3) ? plan.unit() * 0.01 : 0.0;
    const double factory_throw_p = s.faults && plan.chance(0.3) ? plan.unit() * 0.2 : 0.0;
    // Churn registrations that wait for admission (bounded) instead of taking a refusal: under
    // backpressure they must get in ahead of sources waiting above their reserves.
    const double waiting_share = s.faults ? plan.unit() : 0.0;
    // Compute tasks run inline where a lane is between a check and its act (scheduling points).
    const double interleave_p = s.faults ? plan.unit() * 0.5 : 0.0;
    const auto admission_wait_bound = std::chrono::duration_cast<duration>(
        std::chrono::duration<double>(s.admission_wait_seconds));
    const bool infinite = s.records_per_source == 0;
    options.compute_stall_probability = stall_p;

    const std::uint32_t reserve =
        legacy ? s.legacy_buffers_per_source : (minimal_limits ? 1 : s.reserve);
    const std::uint32_t cap =
        legacy ? s.legacy_buffers_per_source
               : (minimal_limits ? std::max(reserve, 1U) : std::max(s.cap, reserve));
    const std::uint32_t processing_reserve =
        legacy ? 0
               : std::max<std::uint32_t>(s.processing_reserve,
                                         static_cast<std::uint32_t>(s.compute_workers));
    std::uint32_t buffers = s.buffers;
    if (buffers == 0) {
        buffers = legacy ? s.sources * s.legacy_buffers_per_source
                         : s.sources * reserve + processing_reserve + s.sources;
    }
    result.buffers_total = buffers;

    verifying_sink out;
    {
        // Declaration order = safe destruction order: the pool outlives the environment.
        buffer_pool pool(
            {buffers, s.buffer_size, processing_reserve, s.sources + 16, s.policy, false});
        sim_environment env(options);
        env.set_fault_probability(fault_site::force_acquire_wait, force_wait_p);
        env.set_fault_probability(fault_site::enqueue_exception, enqueue_throw_p);
        env.set_interleave_probability(interleave_p);
        out.throw_sometimes(&env.faults(), sink_throw_p);
        processing_options popts;
        popts.output_per_buffer = true;
        processing pipeline(env, pool, out, popts);
        server_options sopts;
        sopts.backoff_initial = std::chrono::milliseconds(1);
        sopts.backoff_max = std::chrono::milliseconds(20);
        sopts.reconnect_attempts_max = 5;
        sopts.park_idle = s.park_idle;
        source_server server(env, pool, pipeline, sopts);

        // How a virtual stream's records arrive (a file's or a peer's): chunks, gaps, short reads.
        auto stream_shape = [&](std::uint32_t id) {
            virtual_stream_script v;
            v.id = id;
            v.records = s.records_per_source;
            v.chunk_bytes_max = 1 + static_cast<std::uint32_t>(
                                        env.workload().below(std::uint64_t{2} * s.buffer_size));
            v.gap_max = std::chrono::microseconds(1 + env.workload().below(500));
            if (env.faults().chance(short_read_p)) {
                v.short_read_max = 1 + static_cast<std::uint32_t>(env.faults().below(64));
            }
            return v;
        };
        std::deque<planned_source> sources; // stable references for the operator plan
        bool plan_open = true;
        auto add_source = [&](std::uint32_t i, bool waiting) -> bool {
            source_options so;
            so.name = "s";
            so.name += std::to_string(i); // not "s" + …: GCC 12 warns falsely (-Wrestrict) there
            so.limits = {reserve, cap};
            so.flush_timeout = std::chrono::microseconds(200 + env.workload().below(5000));
            planned_source p;
            const bool generator = infinite || env.workload().unit() >= s.stream_fraction;
            source_server::source_factory factory;
            if (generator) {
                generator_options g;
                g.id = i;
                g.records_max = s.records_per_source;
                // Half flat out, half paced (some slow enough to exercise flush timeouts).
                g.records_per_second =
                    env.workload().chance(s.paced_fraction)
                        ? 1000.0 + static_cast<double>(env.workload().below(200000))
                        : 0.0;
                g.burst_records = 1 + static_cast<std::uint32_t>(env.workload().below(64));
                factory = [g](environment& e, const executor& lane) -> std::unique_ptr<source> {
                    return std::make_unique<generator_source>(e, lane, g);
                };
            } else if (peer_share > 0 && env.faults().chance(peer_share)) {
                // A TCP client of a virtual peer: resets anywhere in a record, refusals, and
                // reconnects with backoff; the peer sends a cut record again whole.
                p.what = planned_source::shape::peer;
                virtual_peer_script peer;
                peer.stream = stream_shape(i);
                peer.resets_max = 1 + static_cast<std::uint32_t>(env.faults().below(4));
                peer.refusals_max = static_cast<std::uint32_t>(env.faults().below(3));
                const std::string name = "peer/" + std::to_string(i);
                env.add_virtual_peer(name, peer);
                factory = [name](environment& e, const executor& lane) -> std::unique_ptr<source> {
                    return std::make_unique<tcp_client_source>(
                        e, lane, tcp_client_options{name, 0, std::chrono::milliseconds(5)});
                };
            } else {
                p.what = planned_source::shape::file;
                virtual_stream_script v = stream_shape(i);
                if (env.faults().chance(reset_p)) {
                    v.reset_at_bytes = 1 + env.faults().below(s.records_per_source * 20);
                }
                if (s.faults) {
                    v.spurious_wakeup = short_read_p / 2;
                }
                if (env.faults().chance(truncate_p)) {
                    v.truncate_at_bytes = 1 + env.faults().below(s.records_per_source * 20);
                }
                const std::string path = "vs/" + std::to_string(i);
                env.add_virtual_stream(path, v);
                factory = [path](environment& e, const executor& lane) -> std::unique_ptr<source> {
                    return std::make_unique<file_source>(e, lane, path);
                };
            }
            if (factory_throw_p > 0 && env.faults().chance(factory_throw_p)) {
                // A factory that fails (a device that is not there): the registration must
                // leave nothing behind (checked after shutdown).
                factory = [](environment&, const executor&) -> std::unique_ptr<source> {
                    throw std::runtime_error("injected factory fault");
                };
            }
            if (waiting) {
                // A larger reserve than the others now and then, so what is held back for it
                // matters, not only who is served first.
                so.limits.reserve += static_cast<std::uint32_t>(env.faults().below(3));
                so.limits.cap = std::max(so.limits.cap, so.limits.reserve);
                ++result.registrations_waited;
                asio::co_spawn(
                    env.lane_executor(env.workload().below(env.lane_count())),
                    server.register_source_waiting(so, factory, admission_wait_bound),
                    [&, p](const std::exception_ptr& failure, const registration& answer) mutable {
                        if (failure) {
                            ++result.factory_failures;
                            return;
                        }
                        if (!answer.admitted()) {
                            if (answer.status == admission_status::reserve_lent_out && plan_open) {
                                // Buffers kept coming back (every source's do), yet another
                                // requester got each of them: the registration starved.
                                ++result.registrations_starved;
                                result.violations.push_back("a waiting registration starved: " +
                                                            answer.message);
                            } else {
                                ++result.registrations_refused;
                            }
                            return;
                        }
                        if (!plan_open) {
                            server.unregister_source(
                                answer.handle); // too late to run: the tally is taken
                            return;
                        }
                        p.handle = answer.handle;
                        server.start(answer.handle);
                        sources.push_back(p);
                    });
                return true;
            }
            registration answer;
            try {
                answer = server.register_source(so, factory);
            } catch (const std::runtime_error&) {
                ++result.factory_failures;
                return true; // not a refusal: the caller's factory failed
            }
            if (!answer.admitted()) {
                return false;
            }
            p.handle = answer.handle;
            server.start(answer.handle);
            sources.push_back(p);
            return true;
        };
        for (std::uint32_t i = 0; i < s.sources; ++i) {
            if (!add_source(i, false)) {
                result.violations.push_back("source " + std::to_string(i) +
                                            " was refused at start");
            }
        }
        const std::size_t initial_sources = sources.size();

        // The operator plan's actions run until the run has finished, not while it winds down: a
        // churn registration that fired during the final quiescence steps once added a source
        // whose bytes were delivered after the read counters had been taken. (plan_open is
        // declared above, with add_source, whose waiting registrations read it.)
        // The operator plan: stop generators at suspension points and restart them later.
        const auto horizon =
            std::chrono::duration_cast<duration>(std::chrono::duration<double>(s.virtual_seconds));
        // By index, not by reference: churn below appends to `sources`, which may reallocate it
        // (a reference here once dangled, so a planned restart was lost and the run stalled).
        for (std::uint32_t k = 0; k < restarts_planned && !sources.empty(); ++k) {
            // Any kind: a generator continues its records, a file resumes at its offset, a
            // peer's client reconnects (a new stream: a cut record is dropped, sent again whole).
            const std::size_t victim_index = env.faults().below(sources.size());
            const auto stop_at = duration(static_cast<duration::rep>(
                env.faults().below(static_cast<std::uint64_t>(horizon.count()) + 1)));
            const auto restart_after =
                duration(static_cast<duration::rep>(env.faults().below(5'000'000) + 1));
            env.at(stop_at, [&server, &sources, victim_index, &result, &plan_open] {
                if (!plan_open) {
                    return;
                }
                auto& victim = sources[victim_index];
                if (server.known(victim.handle) &&
                    server.state(victim.handle) == source_state::running) {
                    victim.stopped_by_plan = true;
                    server.stop(victim.handle);
                    ++result.restarts;
                }
            });
            env.at(stop_at + restart_after, [&server, &sources, victim_index, &out, &plan_open] {
                if (!plan_open) {
                    return;
                }
                auto& victim = sources[victim_index];
                if (victim.stopped_by_plan && !out.finished(victim.handle) &&
                    server.known(victim.handle) &&
                    server.state(victim.handle) == source_state::stopped) {
                    victim.stopped_by_plan = false;
                    server.start(victim.handle);
                }
            });
        }

        // Churn while the pool is busy: register more sources (admitted, or refused with a
        // reason — both fine) and unregister finished ones whose buffers may still be queued.
        for (std::uint32_t k = 0; k < churn_planned; ++k) {
            const auto when = duration(static_cast<duration::rep>(
                env.faults().below(static_cast<std::uint64_t>(horizon.count()) + 1)));
            const auto id = s.sources + k;
            env.at(when, [&, id] {
                if (!plan_open) {
                    return;
                }
                if (!add_source(id, env.faults().chance(waiting_share))) {
                    ++result.registrations_refused;
                }
            });
            env.at(when + duration(1000), [&] {
                if (!plan_open) {
                    return;
                }
                for (auto& p : sources) {
                    if (out.finished(p.handle) && server.known(p.handle) &&
                        server.state(p.handle) != source_state::running &&
                        server.state(p.handle) != source_state::stopping) {
                        server.unregister_source(p.handle);
                        ++result.unregistered;
                        return;
                    }
                }
            });
        }

        // Late registrations that wait for admission under whatever pressure there is then.
        for (std::uint32_t k = 0; k < s.late_registrations; ++k) {
            const auto when = horizon * (k + 1) / (2 * (s.late_registrations + 1));
            env.at(when, [&, k] {
                if (plan_open) {
                    add_source(s.sources + churn_planned + k, true);
                }
            });
        }

        // Each source ends exactly once (EoS or Error; the sink flags a second one). Infinite
        // sources end by the engine's stop in the liveness phase.
        bool stop_all_requested = false;
        auto all_finished = [&] {
            if (infinite) {
                return stop_all_requested && server.quiescent();
            }
            return out.end_of_streams + out.errors >= sources.size();
        };

        const auto watchdog =
            std::chrono::duration_cast<duration>(std::chrono::duration<double>(s.watchdog_seconds));
        // The metrics timeline (--openmetrics): the production collector, sampled in virtual time.
        openmetrics_timeline timeline;
        metrics_collector collector(pool, server, pipeline,
                                    thread_pools{s.io_lanes, s.compute_workers, 2, {}, {}}, "sim");
        const auto metrics_every = std::chrono::duration_cast<duration>(
            std::chrono::duration<double>(s.metrics_interval_seconds));
        time_point next_sample{0};
        time_point last_progress = env.now();
        std::uint64_t deliveries_seen = 0;
        int wakeup_violations = 0; // a few are enough to say what went wrong
        bool liveness = false;
        bool idle_before_horizon = false;
        bool finished = false;
        while (!finished) {
            if (!liveness && (env.now() >= horizon || idle_before_horizon)) {
                // Liveness phase: faults off, every source allowed to reach its end.
                liveness = true;
                env.set_compute_stalls(0.0);
                env.set_fault_probability(fault_site::force_acquire_wait, 0.0);
                env.set_fault_probability(fault_site::enqueue_exception, 0.0);
                out.throw_sometimes(&env.faults(), 0.0);
                if (infinite) {
                    // Endless sources end by this stop: the operator plan ends here too, or a
                    // planned restart or churn registration due later starts an endless source
                    // after it and the run never drains.
                    plan_open = false;
                    for (const auto& p : sources) {
                        server.stop(p.handle);
                    }
                    stop_all_requested = true;
                }
                for (auto& p : sources) {
                    if (!infinite && p.stopped_by_plan && !out.finished(p.handle) &&
                        server.known(p.handle) && server.state(p.handle) == source_state::stopped) {
                        p.stopped_by_plan = false;
                        server.start(p.handle);
                    }
                }
            }
            const auto stepped = env.step();
            if (!s.openmetrics_path.empty() && env.now() >= next_sample) {
                timeline.record(std::chrono::duration<double>(env.now()).count(),
                                collector.Collect());
                next_sample = env.now() + metrics_every;
            }
            pool.check_accounting(); // conservation and the reserve invariant, every step
            if (!legacy && wakeup_violations < 3) {
                if (auto lost = server.check_wakeups(); !lost.empty()) {
                    ++wakeup_violations;
                    result.violations.push_back(
                        std::move(lost) + " (virtual time " +
                        std::to_string(std::chrono::duration<double>(env.now()).count()) + " s)");
                }
            }
            if ((env.steps() & 0xFFFU) == 0) {
                pool.check_invariants(); // and the O(n) cross-checks now and then
            }
            if (out.deliveries != deliveries_seen) {
                deliveries_seen = out.deliveries;
                last_progress = env.now();
            }
            if (all_finished() && pipeline.queued() == 0) {
                finished = true;
                break;
            }
            if (stepped == sim_environment::step_result::idle) {
                if (!liveness) {
                    // Nothing more can happen before the horizon (a source stopped by the plan
                    // after its restart was due, say): start the liveness phase now.
                    idle_before_horizon = true;
                    continue;
                }
                // Nothing runnable, no timer pending, work outstanding.
                result.deadlock = true;
                break;
            }
            if (env.now() - last_progress > watchdog) {
                result.violations.push_back("progress watchdog: nothing delivered for " +
                                            std::to_string(s.watchdog_seconds) +
                                            " virtual seconds while work is pending");
                break;
            }
            if (env.steps() >= s.steps_max) {
                result.violations.push_back("step bound reached");
                break;
            }
        }
        if (!s.openmetrics_path.empty()) {
            timeline.record(std::chrono::duration<double>(env.now()).count(), collector.Collect());
            if (!timeline.write(s.openmetrics_path)) {
                result.violations.push_back("could not write " + s.openmetrics_path);
            }
        }
        plan_open = false;
        const auto stats = pool.stats();
        if (result.deadlock || !finished) {
            result.waiting.push_back(std::to_string(stats.waiters_sources) +
                                     " source acquisitions wait for a buffer");
            result.waiting.push_back(std::to_string(pipeline.output_waits()) +
                                     " processing tasks wait for an output buffer");
            result.waiting.push_back(std::to_string(pipeline.queued()) +
                                     " buffers queued for processing cannot be processed");
            result.waiting.push_back("pool: " + std::to_string(stats.free) + " of " +
                                     std::to_string(stats.buffer_count) + " free; sources hold " +
                                     std::to_string(stats.outstanding_sources) +
                                     ", processing holds " +
                                     std::to_string(stats.outstanding_processing));
            // Tear down: stop sources, abort processing's waits, drop what cannot be processed.
            for (const auto& p : sources) {
                server.stop(p.handle);
            }
            // Stopping flushes partial buffers, which may queue more work that waits again: a
            // few bounded rounds of abort, run, discard.
            for (int round = 0; round < 4; ++round) {
                pool.abort_processing_waiters();
                for (int i = 0; i < 10'000'000 && env.step() != sim_environment::step_result::idle;
                     ++i) {
                }
                pipeline.discard_queued();
                for (int i = 0; i < 10'000'000 && env.step() != sim_environment::step_result::idle;
                     ++i) {
                }
            }
        }
        // Let completion handlers and posted wake-ups run, so shutdown has nothing to wait for
        // (on this single thread, waiting would never end).
        for (int i = 0; i < 10'000'000 && !(server.quiescent() && pipeline.queued() == 0); ++i) {
            if (env.step() == sim_environment::step_result::idle) {
                break;
            }
        }
        const auto sstats = server.stats(); // after the last read
        result.bytes_produced = 0;
        for (const auto b : sstats.bytes_total) {
            result.bytes_produced += b;
        }
        result.backpressure_waits = sstats.backpressure_waits_total;
        result.parks = sstats.parks_total;
        if (!server.quiescent() || pipeline.queued() != 0) {
            result.violations.push_back("the server did not become quiescent after the run");
            for (const auto& p : sources) {
                server.stop(p.handle);
            }
            pool.abort_processing_waiters();
            for (int i = 0; i < 10'000'000 && env.step() != sim_environment::step_result::idle;
                 ++i) {
            }
            pipeline.discard_queued();
        }
        if (!server.quiescent() || pipeline.queued() != 0) {
            // Cannot shut down without blocking forever (shutdown waits for both): report, and
            // leave the objects to the process exit rather than hang CI.
            result.violations.push_back("server still has running coroutines or processing counts "
                                        "items that are gone; aborting the run");
            std::fprintf(stderr, "sluice-sim: unrecoverable: %s\n", reproduce_command(s).c_str());
            std::abort();
        }
        server.shutdown();
        pool.check_invariants();
        {
            const auto after = pool.stats();
            if (after.sources_registered != 0 || after.sources_retiring != 0 ||
                after.reserved_sources != 0) {
                result.violations.push_back(
                    "registrations left behind after shutdown: " +
                    std::to_string(after.sources_registered) + " registered, " +
                    std::to_string(after.sources_retiring) + " retiring, " +
                    std::to_string(after.reserved_sources) + " buffers reserved");
            }
        }
        const auto pstats = pipeline.stats();
        result.bytes_discarded = pstats.bytes_discarded_total;
        result.bytes_dropped = sstats.bytes_dropped_total;
        result.queue_failures = sstats.queue_failures_total;
        result.records_truncated = pstats.records_truncated_total;
        result.sink_failures = pstats.sink_failures_total;
        result.peer_connections = env.peer_connections();
        result.peer_resets = env.peer_resets();
        result.interleavings = env.interleavings();
        result.buffers_free_at_end = pool.stats().free;
        result.virtual_seconds = std::chrono::duration<double>(env.now()).count();
        result.events = env.steps();
        result.trace_hash = env.trace_hash();
        if (!result.deadlock && finished) {
            // Every byte read reached the sink, except those of origins the sink itself failed
            // (discarded after its Error) and of buffers that could not be queued (the source
            // ended with an Error saying so): each counted.
            if (result.bytes_produced !=
                out.bytes + result.bytes_discarded + result.bytes_dropped) {
                result.violations.push_back("bytes read " + std::to_string(result.bytes_produced) +
                                            " != bytes delivered " + std::to_string(out.bytes) +
                                            " + discarded " +
                                            std::to_string(result.bytes_discarded) + " + dropped " +
                                            std::to_string(result.bytes_dropped));
            }
            if (result.buffers_free_at_end != buffers) {
                result.violations.push_back(
                    "leak: " + std::to_string(buffers - result.buffers_free_at_end) +
                    " buffers not back in the pool");
            }
            std::uint64_t least = ~std::uint64_t{0};
            std::uint64_t most = 0;
            for (std::size_t i = 0; i < initial_sources; ++i) {
                const auto* log = out.find(sources[i].handle);
                const std::uint64_t delivered = log != nullptr ? log->bytes : 0;
                least = std::min(least, delivered);
                most = std::max(most, delivered);
            }
            result.source_bytes_min = initial_sources > 0 ? least : 0;
            result.sources_run = sources.size();
            result.source_bytes_max = most;
            for (const auto& p : sources) {
                const auto* log = out.find(p.handle);
                if (!infinite && p.complete_at_end() && log != nullptr && log->ended &&
                    log->checker.next_record() != s.records_per_source) {
                    result.violations.push_back(
                        "origin " + std::to_string(p.handle) + ": ended after " +
                        std::to_string(log->checker.next_record()) + " of " +
                        std::to_string(s.records_per_source) + " records");
                }
            }
        }
    }
    for (auto& v : out.violations) {
        result.violations.push_back(std::move(v));
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
