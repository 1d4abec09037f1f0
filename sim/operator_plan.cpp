#include "sim/operator_plan.hpp"

#include <boost/asio/co_spawn.hpp>

#include <chrono>
#include <stdexcept>
#include <string>

#include "sluice/source/generator_source.hpp"
#include "sluice/source/http_source.hpp"
#include "sluice/source/stream_sources.hpp"

namespace sluice::sim {

using namespace runtime;
namespace asio = boost::asio;

operator_plan::operator_plan(const scenario& s, const fault_plan& faults, const run_limits& limits,
                             sim_environment& env, source_server& server, verifying_sink& out,
                             report& result, checkpoint_store* checkpoints)
    : s_(s), faults_(faults), limits_(limits), env_(env), server_(server), out_(out),
      result_(result), checkpoints_(checkpoints),
      admission_wait_(std::chrono::duration_cast<duration>(
          std::chrono::duration<double>(s.admission_wait_seconds))),
      infinite_(s.records_per_source == 0) {
    http_options_.paths = {"/ingest"};
    http_options_.buffer_wait = std::chrono::microseconds(s.http_buffer_wait_us);
}

virtual_stream_script operator_plan::stream_shape(std::uint32_t id) {
    virtual_stream_script v;
    v.id = id;
    v.records = s_.records_per_source;
    v.chunk_bytes_max =
        1 + static_cast<std::uint32_t>(env_.workload().below(std::uint64_t{2} * s_.buffer_size));
    v.gap_max = std::chrono::microseconds(1 + env_.workload().below(500));
    if (env_.faults().chance(faults_.short_read)) {
        v.short_read_max = 1 + static_cast<std::uint32_t>(env_.faults().below(64));
    }
    return v;
}

source_server::source_factory operator_plan::http_factory(std::uint32_t id) {
    virtual_http_script h;
    h.id = id;
    h.records = s_.records_per_source;
    h.records_per_body_max = 1 + static_cast<std::uint32_t>(env_.workload().below(16));
    h.chunk_bytes_max =
        1 + static_cast<std::uint32_t>(env_.workload().below(std::uint64_t{2} * s_.buffer_size));
    h.gap_max = std::chrono::microseconds(1 + env_.workload().below(500));
    h.wrong_path = 0.1;
    if (env_.faults().chance(faults_.reset)) {
        h.reset_at_bytes = 1 + env_.faults().below(s_.records_per_source * 30);
    }
    return [this, h, random = env_.workload().split(id)](
               environment& e, const executor& lane) -> std::unique_ptr<source> {
        return std::make_unique<http_connection_source>(
            e, std::make_unique<virtual_http_client>(env_, lane, h, random, http_tally_),
            http_options_, http_counters_);
    };
}

source_server::source_factory operator_plan::make_factory(std::uint32_t id, planned_source& p) {
    // Drawn only when asked for, so runs without HTTP sources replay as before.
    if (s_.http_fraction > 0.0 && !infinite_ && env_.workload().chance(s_.http_fraction)) {
        p.what = planned_source::shape::http;
        return http_factory(id);
    }
    const bool generator = infinite_ || env_.workload().unit() >= s_.stream_fraction;
    if (generator) {
        generator_options g;
        g.id = id;
        g.records_max = s_.records_per_source;
        // Half flat out, half paced (some slow enough to exercise flush timeouts).
        if (s_.records_per_second > 0.0) {
            g.records_per_second = s_.records_per_second;
        } else {
            g.records_per_second = env_.workload().chance(s_.paced_fraction)
                                       ? 1000.0 + static_cast<double>(env_.workload().below(200000))
                                       : 0.0;
        }
        g.burst_records = 1 + static_cast<std::uint32_t>(env_.workload().below(64));
        return [g](environment& e, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<generator_source>(e, lane, g);
        };
    }
    if (faults_.peer_share > 0 && env_.faults().chance(faults_.peer_share)) {
        // A TCP client of a virtual peer: resets anywhere in a record, refusals, and
        // reconnects with backoff; the peer sends a cut record again whole.
        p.what = planned_source::shape::peer;
        virtual_peer_script peer;
        peer.stream = stream_shape(id);
        peer.resets_max = 1 + static_cast<std::uint32_t>(env_.faults().below(4));
        peer.refusals_max = static_cast<std::uint32_t>(env_.faults().below(3));
        const std::string name = "peer/" + std::to_string(id);
        env_.add_virtual_peer(name, peer);
        return [name](environment& e, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<tcp_client_source>(
                e, lane, tcp_client_options{name, 0, std::chrono::milliseconds(5), {}});
        };
    }
    p.what = planned_source::shape::file;
    virtual_stream_script v = stream_shape(id);
    if (env_.faults().chance(faults_.reset)) {
        v.reset_at_bytes = 1 + env_.faults().below(s_.records_per_source * 20);
    }
    if (s_.faults) {
        v.spurious_wakeup = faults_.short_read / 2;
    }
    if (env_.faults().chance(faults_.truncate)) {
        v.truncate_at_bytes = 1 + env_.faults().below(s_.records_per_source * 20);
    }
    p.whole_file = v.reset_at_bytes == 0 && v.truncate_at_bytes == 0;
    env_.add_virtual_stream("vs/" + std::to_string(id), v);
    return file_factory(id);
}

source_server::source_factory operator_plan::file_factory(std::uint32_t id) {
    const std::string path = "vs/" + std::to_string(id);
    const file_checkpoint_options checkpoint{checkpoints_, path, faults_.checkpoint_interval};
    return [path, checkpoint](environment& e, const executor& lane) -> std::unique_ptr<source> {
        return std::make_unique<file_source>(e, lane, path, checkpoint);
    };
}

source_options operator_plan::options_for(std::uint32_t id) {
    source_options so;
    so.name = "s";
    so.name += std::to_string(id); // not "s" + …: GCC 12 warns falsely (-Wrestrict) there
    so.limits = {limits_.reserve, limits_.cap};
    so.flush_timeout = std::chrono::microseconds(200 + env_.workload().below(5000));
    return so;
}

void operator_plan::add_resumed_file(const planned_source& from, std::uint64_t first_record) {
    const auto answer = server_.register_source(options_for(from.id), file_factory(from.id));
    if (!answer.admitted()) {
        result_.violations.push_back("resumed file " + std::to_string(from.id) +
                                     " was refused: " + answer.message);
        return;
    }
    planned_source p = from;
    p.handle = answer.handle;
    p.stopped_by_plan = false;
    out_.start_at(p.handle, first_record);
    server_.start(p.handle);
    sources_.push_back(p);
    initial_ = sources_.size();
}

bool operator_plan::add_source(std::uint32_t id, bool waiting) {
    source_options so = options_for(id);
    planned_source p;
    p.id = id;
    source_server::source_factory factory = make_factory(id, p);
    if (faults_.factory_throw > 0 && env_.faults().chance(faults_.factory_throw)) {
        // A factory that fails (a device that is not there): the registration must leave
        // nothing behind (checked after shutdown).
        factory = [](environment&, const executor&) -> std::unique_ptr<source> {
            throw std::runtime_error("injected factory fault");
        };
    }
    if (waiting) {
        register_waiting(std::move(so), factory, p);
        return true;
    }
    registration answer;
    try {
        answer = server_.register_source(so, factory);
    } catch (const std::runtime_error&) {
        ++result_.factory_failures;
        return true; // not a refusal: the caller's factory failed
    }
    if (!answer.admitted()) {
        return false;
    }
    p.handle = answer.handle;
    server_.start(answer.handle);
    sources_.push_back(p);
    return true;
}

void operator_plan::register_waiting(source_options so,
                                     const source_server::source_factory& factory,
                                     planned_source p) {
    // A larger reserve than the others now and then, so what is held back for it matters,
    // not only who is served first.
    so.limits.reserve += static_cast<std::uint32_t>(env_.faults().below(3));
    so.limits.cap = std::max(so.limits.cap, so.limits.reserve);
    ++result_.registrations_waited;
    asio::co_spawn(
        env_.lane_executor(env_.workload().below(env_.lane_count())),
        server_.register_source_waiting(so, factory, admission_wait_),
        [this, p](const std::exception_ptr& failure, const registration& answer) mutable {
            if (failure) {
                ++result_.factory_failures;
                return;
            }
            if (!answer.admitted()) {
                if (answer.status == admission_status::reserve_lent_out && open_) {
                    // Buffers kept coming back (every source's do), yet another requester got
                    // each of them: the registration starved.
                    ++result_.registrations_starved;
                    result_.violations.push_back("a waiting registration starved: " +
                                                 answer.message);
                } else {
                    ++result_.registrations_refused;
                }
                return;
            }
            if (!open_) {
                server_.unregister_source(answer.handle); // too late to run: the tally is taken
                return;
            }
            p.handle = answer.handle;
            server_.start(answer.handle);
            sources_.push_back(p);
        });
}

void operator_plan::add_initial_sources() {
    for (std::uint32_t i = 0; i < s_.sources; ++i) {
        if (!add_source(i, false)) {
            result_.violations.push_back("source " + std::to_string(i) + " was refused at start");
        }
    }
    initial_ = sources_.size();
}

void operator_plan::schedule() {
    const auto horizon =
        std::chrono::duration_cast<duration>(std::chrono::duration<double>(s_.virtual_seconds));
    schedule_restarts(horizon);
    schedule_churn(horizon);
    schedule_late_registrations(horizon);
}

void operator_plan::schedule_restarts(duration horizon) {
    // By index, not by reference: churn appends to `sources_` (a reference here once dangled,
    // so a planned restart was lost and the run stalled).
    for (std::uint32_t k = 0; k < faults_.restarts && !sources_.empty(); ++k) {
        // Any kind: a generator continues its records, a file resumes at its offset, a peer's
        // client reconnects (a new stream: a cut record is dropped, sent again whole).
        const std::size_t victim = env_.faults().below(sources_.size());
        const auto stop_at = duration(static_cast<duration::rep>(
            env_.faults().below(static_cast<std::uint64_t>(horizon.count()) + 1)));
        const auto restart_after =
            duration(static_cast<duration::rep>(env_.faults().below(5'000'000) + 1));
        env_.at(stop_at, [this, victim] {
            if (!open_) {
                return;
            }
            auto& p = sources_[victim];
            if (server_.known(p.handle) && server_.state(p.handle) == source_state::running) {
                p.stopped_by_plan = true;
                server_.stop(p.handle);
                ++result_.restarts;
            }
        });
        env_.at(stop_at + restart_after, [this, victim] {
            if (!open_) {
                return;
            }
            auto& p = sources_[victim];
            if (p.stopped_by_plan && !out_.finished(p.handle) && server_.known(p.handle) &&
                server_.state(p.handle) == source_state::stopped) {
                p.stopped_by_plan = false;
                server_.start(p.handle);
            }
        });
    }
}

void operator_plan::schedule_churn(duration horizon) {
    // Register more sources while the pool is busy (admitted, or refused with a reason — both
    // fine) and unregister finished ones whose buffers may still be queued.
    for (std::uint32_t k = 0; k < faults_.churn; ++k) {
        const auto when = duration(static_cast<duration::rep>(
            env_.faults().below(static_cast<std::uint64_t>(horizon.count()) + 1)));
        const auto id = s_.sources + k;
        env_.at(when, [this, id] {
            if (open_ && !add_source(id, env_.faults().chance(faults_.waiting_share))) {
                ++result_.registrations_refused;
            }
        });
        env_.at(when + duration(1000), [this] {
            if (!open_) {
                return;
            }
            for (auto& p : sources_) {
                if (out_.finished(p.handle) && server_.known(p.handle) &&
                    server_.state(p.handle) != source_state::running &&
                    server_.state(p.handle) != source_state::stopping) {
                    server_.unregister_source(p.handle);
                    ++result_.unregistered;
                    return;
                }
            }
        });
    }
}

void operator_plan::schedule_late_registrations(duration horizon) {
    // They wait for admission under whatever pressure there is then.
    for (std::uint32_t k = 0; k < s_.late_registrations; ++k) {
        const auto when = horizon * (k + 1) / (2 * (s_.late_registrations + 1));
        env_.at(when, [this, k] {
            if (open_) {
                add_source(s_.sources + faults_.churn + k, true);
            }
        });
    }
}

void operator_plan::begin_liveness() {
    if (infinite_) {
        // Endless sources end by this stop: the plan ends here too, or a planned restart or
        // churn registration due later starts an endless source after it and the run never
        // drains.
        open_ = false;
        stop_all();
        stop_all_requested_ = true;
        return;
    }
    for (auto& p : sources_) {
        if (p.stopped_by_plan && !out_.finished(p.handle) && server_.known(p.handle) &&
            server_.state(p.handle) == source_state::stopped) {
            p.stopped_by_plan = false;
            server_.start(p.handle);
        }
    }
}

bool operator_plan::all_finished() const {
    if (infinite_) {
        return stop_all_requested_ && server_.quiescent();
    }
    return out_.end_of_streams + out_.errors >= sources_.size();
}

void operator_plan::stop_all() {
    for (const auto& p : sources_) {
        server_.stop(p.handle);
    }
}

} // namespace sluice::sim
