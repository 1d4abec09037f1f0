#pragma once
/// The JSON summary sluiced writes at exit (--summary-json, worker.summary_json): what ran, what
/// was delivered and lost, and whether every buffer came back.

#include <cstddef>
#include <string>

#include "apps/baseline/baseline_runner.hpp"
#include "apps/sluiced/worker_config.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/server_stats.hpp"

namespace sluiced {

using namespace sluice::runtime;

/// What the summary reports, read after the drain.
struct run_summary {
    std::string config_name;
    double ran_seconds = 0.0;
    std::size_t refused = 0; ///< sources refused at start (the server's refusals are in `server`)
    std::size_t threads_max = 0;
    std::uint64_t bytes_delivered = 0;
    std::uint64_t records_delivered = 0;
    std::uint64_t end_of_stream = 0;
    std::uint64_t errors = 0;
    server_stats server;
    baseline_stats baseline;
    pool_stats pool;
    processing_stats processing;
};

/// Writes the summary of a run of `cfg` to `path`.
void write_summary(const std::string& path, const worker_config& cfg, const run_summary& run);

} // namespace sluiced
