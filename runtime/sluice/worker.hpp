#pragma once
/// The one way to assemble sluice in a process: a buffer pool, the production environment (I/O
/// lanes, compute arena, blocking pool), processing and the source server, owned in the only
/// order that makes start and teardown safe. Engines, sluiced, the tests and the benchmarks all
/// build on this instead of wiring the four parts themselves.
///
///     my_sink sink;                        // outlives the worker
///     sluice::worker worker(sink, options);
///     worker.server().register_source(...);
///     ...
///     worker.shutdown();                   // or let the destructor do it
///
/// Why this order: a dropped Asio handler may still hold a buffer when the environment's lanes
/// stop, so the pool must outlive the environment; processing's tasks run on the environment's
/// compute arena and return buffers to the pool; the server feeds processing and runs on the
/// lanes. Members are declared pool, environment, processing, server, and destroyed in reverse.

#include "sluice/env/production_environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/source_server.hpp"

namespace sluice {

struct worker_options {
    /// The pool: 1,024 buffers of 16 KiB (16 MiB), 16 kept for processing, 1,024 sources.
    runtime::pool_config pool{.buffer_count = 1024,
                              .buffer_size_bytes = 16 * 1024,
                              .processing_reserve = 16,
                              .sources_max = 1024};
    runtime::production_options threads{};
    runtime::processing_options processing{};
    runtime::server_options server{};
};

class worker {
public:
    /// Builds and starts the pool, the lanes and the compute arena. `out` must outlive the
    /// worker. Throws std::invalid_argument naming the bad option (a pool the admission rules
    /// cannot run, zero threads).
    worker(runtime::sink& out, const worker_options& options = {});
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;
    /// Calls shutdown().
    ~worker();

    /// Stops listeners and sources (partial buffers are flushed, not lost), waits until
    /// processing has handed every buffer to the sink, then stops the lanes and the compute
    /// arena. Blocks; not from a lane or compute thread. Idempotent. Sources registered
    /// directly with pool() and pipeline() (a baseline runner) must be stopped before this.
    void shutdown();

    runtime::buffer_pool& pool() noexcept { return pool_; }
    const runtime::buffer_pool& pool() const noexcept { return pool_; }
    runtime::production_environment& environment() noexcept { return env_; }
    const runtime::production_environment& environment() const noexcept { return env_; }
    runtime::processing& pipeline() noexcept { return pipeline_; }
    const runtime::processing& pipeline() const noexcept { return pipeline_; }
    runtime::source_server& server() noexcept { return server_; }
    const runtime::source_server& server() const noexcept { return server_; }

private:
    runtime::buffer_pool pool_;
    runtime::production_environment env_;
    runtime::processing pipeline_;
    runtime::source_server server_;
    bool down_ = false; ///< shutdown() ran
};

} // namespace sluice
