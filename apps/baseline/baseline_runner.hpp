#pragma once
/// The legacy model, kept as a runner mode of the worker for side-by-side benchmarks (DESIGN.md
/// §3): one thread per source, each with a fixed number of buffers from the same pool
/// (registered with reserve = cap = buffers_per_source), blocking reads, and a thread per
/// accepted TCP connection. It shares the pool, processing and sink with sluice mode and the
/// generator's record format. It lives with the worker, not in the runtime library, because
/// it makes threads and blocks them — exactly what the runtime must never do.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/system/error_code.hpp>

#include "apps/sluiced/worker_config.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/source_server.hpp"

namespace sluice::runtime {

struct baseline_stats {
    std::uint64_t sources_total = 0;
    std::uint64_t connections_total = 0;
    std::array<std::uint64_t, flush_reason_count> flushes_total{};
};

class baseline_runner final {
public:
    baseline_runner(buffer_pool& pool, processing& pipeline, std::uint32_t buffers_per_source);
    baseline_runner(const baseline_runner&) = delete;
    baseline_runner& operator=(const baseline_runner&) = delete;
    ~baseline_runner();

    /// Registers one source (generator, file; others are refused with a message).
    registration add(const source_options& options, const source_spec& spec,
                     const generator_options& generator);
    /// Opens a listener whose accept loop and connections each get a thread.
    std::pair<boost::system::error_code, std::uint16_t> add_tcp_listener(const listener_options& l);
    /// Starts one thread per registered source.
    void start_all();
    /// Stops and joins every thread, then unregisters every source.
    void shutdown();

    baseline_stats stats() const;
    std::size_t source_count() const;
    std::uint32_t running_count() const { return running_.load(); }
    /// Source threads that have been through their loop once (read, and emitted what they
    /// read): the same point sluice's start measure waits for (every source's first step).
    std::uint32_t first_step_count() const { return first_steps_.load(); }

private:
    struct source_thread;
    struct listener_thread;
    void run(source_thread& s);
    void accept_loop(listener_thread& l);

    buffer_pool& pool_;
    processing& processing_;
    std::uint32_t buffers_per_source_;
    std::atomic<bool> stopping_{false};
    std::mutex stop_mutex_; ///< with stop_cv_: napping generator threads wake at stop
    std::condition_variable stop_cv_;
    std::atomic<std::uint32_t> running_{0};
    std::atomic<std::uint32_t> first_steps_{0};
    std::atomic<std::uint64_t> handles_{1ULL << 40U}; ///< origin ids, apart from the server's
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<source_thread>> sources_;
    std::vector<std::unique_ptr<listener_thread>> listeners_;
    std::array<std::atomic<std::uint64_t>, flush_reason_count> flushes_{};
    std::atomic<std::uint64_t> connections_{0};
};

} // namespace sluice::runtime
