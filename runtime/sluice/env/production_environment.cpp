#include "sluice/env/production_environment.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include "sluice/core/assert.hpp"
#include "sluice/env/production/asio_lanes.hpp"

namespace sluice::runtime {

using namespace detail;

namespace {

/// The arena's `threads` workers come from oneTBB's process-wide worker market, which by default
/// holds one worker fewer than the machine has cores. Only when that is too few (more compute
/// threads than cores) is the market raised to `threads` + 1, never lowered: a host process that
/// set its own limit, or relies on the default, keeps it, and sluice's limit is its arena's
/// max_concurrency. A raise is kept for the life of the process and only ever raised again:
/// dropping it while another arena's workers were winding down was seen to leave a freshly
/// enqueued task unrun (tests create one environment after another).
void allow_tbb_workers(std::size_t threads) {
    static std::mutex mutex;
    static std::unique_ptr<tbb::global_control> raise;
    const std::lock_guard lock(mutex);
    const std::size_t active =
        tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
    if (threads + 1 > active) {
        raise = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      threads + 1);
    }
}

} // namespace

struct production_environment::compute_pool {
    // The calling threads never join the arena, so all slots go to workers (see
    // allow_tbb_workers).
    // Initialised here, not by the first task: that took about a millisecond of the first
    // enqueue's caller (a lane, emitting the first buffer) inside the data path.
    explicit compute_pool(std::size_t threads)
        : arena((allow_tbb_workers(threads), static_cast<int>(threads)), 0) {
        arena.initialize();
    }
    tbb::task_arena arena;
};

namespace {
class asio_timer final : public timer {
public:
    explicit asio_timer(const executor& lane) : timer_(concrete_lane(lane)) {}
    asio::awaitable<bool> wait_for(duration delay) override {
        timer_.expires_after(delay);
        auto [error] = co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        co_return !error;
    }
    void on_expiry(duration delay, std::function<void(bool)> done) override {
        timer_.expires_after(delay);
        timer_.async_wait(
            allocated_exactly([done = std::move(done)](const error_code& error) { done(!error); }));
    }
    void cancel() noexcept override { timer_.cancel(); }

private:
    /// On the lane's concrete executor, as the sockets are: no any_io_executor to copy and
    /// query in every wait (a parked generator arms its timer in every step).
    using clock = std::chrono::steady_clock;
    asio::basic_waitable_timer<clock, asio::wait_traits<clock>, lane_executor_type> timer_;
};

/// Readiness of a descriptor a library owns, watched through a duplicate the watch owns: the
/// reactor's registration is on the duplicate's number, which nobody else can be given while
/// the watch lives, so the library closing its own descriptor (and the number going to a new
/// socket) never lets this watch's deregistration remove someone else's registration.
class asio_descriptor_watch final : public descriptor_watch {
public:
    asio_descriptor_watch(const executor& lane, int duplicate) : descriptor_(lane, duplicate) {}
    ~asio_descriptor_watch() override { cancel(); } // the descriptor closes the duplicate
    asio_descriptor_watch(const asio_descriptor_watch&) = delete;
    asio_descriptor_watch& operator=(const asio_descriptor_watch&) = delete;
    asio::awaitable<error_code> wait_readable() override {
        return wait(asio::posix::descriptor_base::wait_read);
    }
    asio::awaitable<error_code> wait_writable() override {
        return wait(asio::posix::descriptor_base::wait_write);
    }
    void cancel() noexcept override {
        error_code ignored;
        descriptor_.cancel(ignored);
    }

private:
    asio::awaitable<error_code> wait(asio::posix::descriptor_base::wait_type type) {
        auto [error] = co_await descriptor_.async_wait(type, asio::as_tuple(asio::use_awaitable));
        co_return error;
    }
    asio::posix::stream_descriptor descriptor_;
};

void name_thread(std::thread& thread, const std::string& name) {
    pthread_setname_np(thread.native_handle(), name.substr(0, 15).c_str());
}

} // namespace

production_environment::production_environment(const production_options& options)
    : compute_threads_(options.compute_threads), blocking_threads_(options.blocking_threads),
      descriptor_reserve_(options.descriptor_reserve), inject_faults_(options.inject_faults),
      start_(std::chrono::steady_clock::now()), random_(std::random_device{}()) {
    if (options.io_threads == 0 || options.compute_threads == 0 || options.blocking_threads == 0) {
        throw std::invalid_argument(
            "environment: io_threads, compute_threads and blocking_threads must each be at "
            "least 1");
    }
    compute_ = std::make_unique<compute_pool>(compute_threads_);
    blocking_ = std::make_unique<asio::thread_pool>(blocking_threads_);
    for (std::size_t i = 0; i < options.io_threads; ++i) {
        lanes_.push_back(std::make_unique<asio::io_context>(1));
        lane_counters_.push_back(std::make_unique<task_counters>());
        guards_.emplace_back(lanes_.back()->get_executor());
    }
    for (std::size_t i = 0; i < options.io_threads; ++i) {
        lane_threads_.emplace_back([lane = lanes_[i].get()] { lane->run(); });
        name_thread(lane_threads_.back(), "sluice-io-" + std::to_string(i));
    }
}

production_environment::~production_environment() {
    shutdown();
}

void production_environment::shutdown() {
    if (stopped_) {
        return;
    }
    stopped_ = true;
    {
        std::unique_lock lock(compute_mutex_);
        compute_idle_.wait(lock, [&] { return compute_in_flight_.load() == 0; });
    }
    blocking_->join();
    for (auto& guard : guards_) {
        guard.reset();
    }
    for (auto& lane : lanes_) {
        lane->stop();
    }
    for (auto& thread : lane_threads_) {
        thread.join();
    }
}

executor production_environment::lane_executor(std::size_t index) {
    SLUICE_ASSERT(index < lanes_.size());
    return counting_executor(lanes_[index]->get_executor(), lane_counters_[index].get());
}

std::unique_ptr<descriptor_watch> production_environment::watch_descriptor(const executor& lane,
                                                                           int fd) {
    const int duplicate = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (duplicate < 0) {
        return nullptr; // out of descriptors: the caller reports it and tries again later
    }
    try {
        return std::make_unique<asio_descriptor_watch>(lane, duplicate);
    } catch (...) {
        ::close(duplicate);
        throw;
    }
}

pool_load production_environment::io_load() const noexcept {
    pool_load load;
    for (const auto& count : lane_counters_) {
        load.queued += count->queued.load(std::memory_order_relaxed);
        load.active += count->active.load(std::memory_order_relaxed);
    }
    return load;
}

pool_load production_environment::blocking_load() const noexcept {
    return {blocking_counters_.queued.load(std::memory_order_relaxed),
            blocking_counters_.active.load(std::memory_order_relaxed)};
}

time_point production_environment::now() const noexcept {
    return std::chrono::duration_cast<duration>(std::chrono::steady_clock::now() - start_);
}

std::unique_ptr<timer> production_environment::make_timer(const executor& lane) {
    return std::make_unique<asio_timer>(lane);
}

std::uint64_t production_environment::random_u64() noexcept {
    const std::lock_guard lock(random_mutex_);
    return random_();
}

namespace {

/// A compute task that releases what its work captured before it reports itself finished, so
/// that once `compute_in_flight_` reads 0 no task still holds references (oneTBB may destroy
/// the task object itself later, on its own thread). oneTBB calls tasks as const.
struct compute_task {
    mutable std::function<void()> work;
    std::atomic<std::size_t>* in_flight;
    std::mutex* mutex;
    std::condition_variable* idle;
    void operator()() const {
        work();
        work = nullptr;
        if (in_flight->fetch_sub(1) == 1) {
            const std::lock_guard lock(*mutex);
            idle->notify_all();
        }
    }
};

} // namespace

void production_environment::post_compute(std::function<void()> work) {
    compute_in_flight_.fetch_add(1);
    compute_->arena.enqueue(
        compute_task{std::move(work), &compute_in_flight_, &compute_mutex_, &compute_idle_});
}

void production_environment::post_blocking(std::function<void()> work) {
    blocking_counters_.queued.fetch_add(1, std::memory_order_relaxed);
    asio::post(*blocking_, [this, work = std::move(work)] {
        blocking_counters_.queued.fetch_sub(1, std::memory_order_relaxed);
        blocking_counters_.active.fetch_add(1, std::memory_order_relaxed);
        work();
        blocking_counters_.active.fetch_sub(1, std::memory_order_relaxed);
    });
}

} // namespace sluice::runtime
