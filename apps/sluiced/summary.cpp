#include "apps/sluiced/summary.hpp"

#include <fstream>
#include <string_view>

namespace sluiced {

namespace {

std::string json_escape(std::string_view s) {
    std::string out;
    for (const char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
        }
        out += ch;
    }
    return out;
}

} // namespace

void write_summary(const std::string& path, const worker_config& cfg, const run_summary& run) {
    std::ofstream json(path);
    json << "{\n";
    json << "  \"mode\": \"" << (cfg.mode == runner_mode::sluice ? "sluice" : "thread_per_source")
         << "\",\n";
    json << "  \"config\": \"" << json_escape(run.config_name) << "\",\n";
    json << "  \"duration_seconds\": " << run.ran_seconds << ",\n";
    json << "  \"sources\": "
         << (cfg.mode == runner_mode::sluice ? run.server.registrations_admitted_total
                                             : run.baseline.sources_total)
         << ",\n";
    json << "  \"sources_refused\": " << run.refused + run.server.registrations_refused_total
         << ",\n";
    json << "  \"bytes_delivered\": " << run.bytes_delivered << ",\n";
    json << "  \"records_delivered\": " << run.records_delivered << ",\n";
    json << "  \"end_of_stream\": " << run.end_of_stream << ",\n";
    json << "  \"errors\": " << run.errors << ",\n";
    const auto& q = run.processing;
    json << "  \"records_truncated\": " << q.records_truncated_total << ",\n";
    json << "  \"records_dropped\": " << q.records_dropped_total << ",\n";
    json << "  \"sink_failures\": " << q.sink_failures_total << ",\n";
    json << "  \"bytes_discarded\": " << q.bytes_discarded_total << ",\n";
    json << "  \"bytes_dropped\": " << run.server.bytes_dropped_total << ",\n";
    json << "  \"buffers_total\": " << run.pool.buffer_count << ",\n";
    json << "  \"buffers_free_at_exit\": " << run.pool.free << ",\n";
    json << "  \"threads_max\": " << run.threads_max << ",\n";
    json << "  \"io_threads\": " << cfg.threads.io_threads << ",\n";
    json << "  \"compute_threads\": " << cfg.threads.compute_threads << ",\n";
    json << "  \"blocking_threads\": " << cfg.threads.blocking_threads << ",\n";
    json << "  \"backpressure_waits\": " << run.server.backpressure_waits_total << ",\n";
    json << "  \"connections_accepted\": "
         << run.server.connections_accepted_total + run.baseline.connections_total << ",\n";
    json << "  \"connections_refused\": " << run.server.connections_refused_total << ",\n";
    json << "  \"flushes\": {";
    for (std::size_t i = 0; i < flush_reason_count; ++i) {
        json << (i == 0 ? "" : ", ") << "\"" << to_string(static_cast<flush_reason>(i))
             << "\": " << run.server.flushes_total[i] + run.baseline.flushes_total[i];
    }
    json << "},\n";
    json << "  \"errors_by_kind\": {";
    for (std::size_t i = 0; i < source_kinds_defined(); ++i) {
        json << (i == 0 ? "" : ", ") << "\"" << to_string(static_cast<source_kind>(i))
             << "\": " << run.server.errors_total[i];
    }
    json << "}\n}\n";
}

} // namespace sluiced
