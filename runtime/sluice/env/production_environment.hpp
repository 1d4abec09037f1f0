#pragma once
/// The production side of the environment seam: `io_threads` lanes, each an `asio::io_context`
/// run by exactly one thread; a oneTBB arena with `compute_threads` workers; a bounded blocking
/// pool for legacy sources; `steady_clock`; Asio timers, sockets and files. This file and its
/// source are the only places in the library (the programs in apps/ are outside it) that create
/// threads, read a real clock or draw real randomness.

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "sluice/env/environment.hpp"

namespace sluice::runtime {

struct production_options {
    std::size_t io_threads = 2;       ///< I/O lanes, one thread each (≥ 1)
    std::size_t compute_threads = 2;  ///< oneTBB workers (≥ 1)
    std::size_t blocking_threads = 2; ///< threads for legacy blocking sources (≥ 1)
    /// File descriptors listeners leave free for everything else (files, client sources,
    /// reconnects, the metrics endpoint): a connection accepted beyond that is closed and
    /// counted as refused.
    std::size_t descriptor_reserve = 64;
    /// Fault injection for real-thread tests of paths the simulator cannot reach (real
    /// sockets): called from the threads that reach a fault site. Empty in production.
    std::function<bool(fault_site)> inject_faults{};
};

class production_environment final : public environment {
public:
    /// Starts every thread. Throws `std::invalid_argument` on a zero count.
    explicit production_environment(const production_options& options);
    production_environment(const production_environment&) = delete;
    production_environment& operator=(const production_environment&) = delete;
    /// Waits for compute and blocking work to finish, then stops and joins the lanes.
    ~production_environment() override;

    /// Stops the lanes (handlers not yet run are dropped when their contexts are destroyed)
    /// after waiting for posted compute work. Idempotent; called by the destructor.
    void shutdown();

    bool inject(fault_site site) noexcept override {
        return inject_faults_ && inject_faults_(site);
    }
    std::size_t lane_count() const noexcept override { return lanes_.size(); }
    executor lane_executor(std::size_t index) override;
    time_point now() const noexcept override;
    std::unique_ptr<timer> make_timer(const executor& lane) override;
    std::uint64_t random_u64() noexcept override;
    void post_compute(std::function<void()> work) override;
    std::size_t compute_concurrency() const noexcept override { return compute_threads_; }
    void post_blocking(std::function<void()> work) override;
    std::size_t blocking_concurrency() const noexcept override { return blocking_threads_; }
    boost::asio::awaitable<std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    connect(executor lane, std::string address, std::uint16_t port, duration timeout) override;
    std::pair<boost::system::error_code, std::unique_ptr<stream_listener>>
    listen(executor lane, const std::string& address, std::uint16_t port, int backlog) override;
    std::pair<boost::system::error_code, std::unique_ptr<datagram_socket>>
    open_udp(executor lane, const std::string& address, std::uint16_t port) override;
    std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>
    open_file(executor lane, const std::string& path, std::uint64_t offset) override;
    std::unique_ptr<descriptor_watch> watch_descriptor(const executor& lane, int fd) override;

    /// Compute tasks posted and not yet finished.
    std::size_t compute_in_flight() const noexcept { return compute_in_flight_.load(); }
    /// I/O lanes: handlers dispatched through a lane executor and not yet started (queued) and
    /// running now (active), summed over lanes. Every coroutine resumption, timer and socket
    /// completion of runtime code passes through a lane executor, so this counts them all;
    /// Asio's own reactor bookkeeping between them does not.
    pool_load io_load() const noexcept;
    /// Blocking pool: reads posted and not started, and reads running.
    pool_load blocking_load() const noexcept;

    /// Per-lane task counters, on their own cache line (each is written by its lane thread and
    /// by threads posting to the lane).
    struct alignas(64) task_counters {
        std::atomic<std::uint64_t> queued{0};
        std::atomic<std::uint64_t> active{0};
    };

private:
    using work_guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

    std::size_t compute_threads_;
    std::size_t blocking_threads_;
    std::size_t descriptor_reserve_;
    std::function<bool(fault_site)> inject_faults_; ///< production_options::inject_faults
    std::chrono::steady_clock::time_point start_;
    std::vector<std::unique_ptr<boost::asio::io_context>> lanes_;
    std::vector<std::unique_ptr<task_counters>> lane_counters_;
    task_counters blocking_counters_;
    std::vector<work_guard> guards_;
    std::vector<std::thread> lane_threads_;
    struct compute_pool; ///< oneTBB's global_control and arena, kept out of this header
    std::unique_ptr<compute_pool> compute_;
    std::atomic<std::size_t> compute_in_flight_{0};
    std::mutex compute_mutex_;
    std::condition_variable compute_idle_;
    std::unique_ptr<boost::asio::thread_pool> blocking_;
    std::mutex random_mutex_;
    std::mt19937_64 random_;
    bool stopped_ = false;
};

} // namespace sluice::runtime
