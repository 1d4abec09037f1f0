#include "apps/sluiced/summary.hpp"

#include <fstream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace sluiced {

void write_summary(const std::string& path, const worker_config& cfg, const run_summary& run) {
    const auto& s = run.server;
    const auto& q = run.processing;
    boost::json::object flushes;
    for (std::size_t i = 0; i < flush_reason_count; ++i) {
        flushes[to_string(static_cast<flush_reason>(i))] =
            s.flushes_total[i] + run.baseline.flushes_total[i];
    }
    boost::json::object errors_by_kind;
    for (std::size_t i = 0; i < source_kinds_defined(); ++i) {
        errors_by_kind[to_string(static_cast<source_kind>(i))] = s.errors_total[i];
    }
    const bool sluice_mode = cfg.mode == runner_mode::sluice;
    const boost::json::object summary{
        {"mode", sluice_mode ? "sluice" : "thread_per_source"},
        {"config", run.config_name},
        {"duration_seconds", run.ran_seconds},
        {"sources", sluice_mode ? s.registrations_admitted_total : run.baseline.sources_total},
        {"sources_refused", run.refused + s.registrations_refused_total},
        {"bytes_delivered", run.bytes_delivered},
        {"records_delivered", run.records_delivered},
        {"end_of_stream", run.end_of_stream},
        {"errors", run.errors},
        {"records_truncated", q.records_truncated_total},
        {"records_dropped", q.records_dropped_total},
        {"sink_failures", q.sink_failures_total},
        {"bytes_discarded", q.bytes_discarded_total},
        {"bytes_dropped", s.bytes_dropped_total},
        {"buffers_total", run.pool.buffer_count},
        {"buffers_free_at_exit", run.pool.free},
        {"threads_max", run.threads_max},
        {"io_threads", cfg.threads.io_threads},
        {"compute_threads", cfg.threads.compute_threads},
        {"blocking_threads", cfg.threads.blocking_threads},
        {"backpressure_waits", s.backpressure_waits_total},
        {"connections_accepted", s.connections_accepted_total + run.baseline.connections_total},
        {"connections_refused", s.connections_refused_total},
        {"flushes", std::move(flushes)},
        {"errors_by_kind", std::move(errors_by_kind)},
    };
    std::ofstream(path) << boost::json::serialize(summary) << "\n";
}

} // namespace sluiced
