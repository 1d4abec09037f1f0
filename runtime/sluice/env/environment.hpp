#pragma once
/// The environment seam (DESIGN.md §4): the one interface through which runtime code reaches
/// executors, the clock, timers, randomness, byte streams, the compute pool and the blocking
/// pool. `production_environment` implements it with Asio lanes on real threads, steady_clock,
/// Asio timers, sockets, files and a oneTBB arena; the simulator implements it with lanes it
/// steps one handler at a time, virtual time and virtual streams. Runtime code holds an
/// `environment&` — there is no global environment and no `is_simulated()` branch. The
/// transports it hands out are interfaces of their own (transport.hpp).
///
/// Asynchronous operations are coroutines (`asio::awaitable`) so that one implementation of a
/// source runs unchanged on either side; every one of them honours per-operation cancellation
/// (the `||` of awaitable_operators, or a stop) and returns expected failures as values.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/env/transport.hpp"

namespace sluice::runtime {

/// Load of a fixed thread pool at one instant: tasks waiting for a thread and tasks running.
struct pool_load {
    std::uint64_t queued = 0;
    std::uint64_t active = 0;
};

/// A one-shot timer bound to one lane. Use it from that lane only.
class timer {
public:
    virtual ~timer() = default;
    /// Waits `delay` (≤ 0 completes at once, still asynchronously). Returns true when the time
    /// elapsed, false when cancelled (by `cancel` or per-operation cancellation).
    virtual boost::asio::awaitable<bool> wait_for(duration delay) = 0;
    /// The same wait without a coroutine: `done(elapsed)` runs on the lane, never before this
    /// returns. For waits that must not hold a coroutine frame (parked sources).
    virtual void on_expiry(duration delay, std::function<void(bool)> done) = 0;
    /// Cancels a pending wait; no effect when none is pending.
    virtual void cancel() noexcept = 0;
};

/// Places where the simulator may inject a fault into runtime code (FoundationDB's BUGGIFY).
/// Production never injects; the simulator switches sites on per run from the seed.
enum class fault_site : std::uint8_t {
    force_acquire_wait, ///< take the suspending acquisition path although a buffer is free
    enqueue_exception,  ///< queueing a buffer for processing throws (out of memory)
    accept_exception,   ///< the listener's accept loop throws after an accept
};
inline constexpr std::size_t fault_site_count = 3;

/// The seam. Every member is thread-safe unless it says otherwise.
class environment {
public:
    virtual ~environment() = default;

    /// True when the fault at `site` should happen now. Production: always false.
    virtual bool inject(fault_site /*site*/) noexcept { return false; }
    /// Where a real thread could be preempted between a check of shared state and the act
    /// that depends on it. The simulator may run other work here (a compute task, inline), so
    /// check-then-act races between lanes and compute become schedules it can reach.
    /// Production: nothing.
    virtual void scheduling_point() noexcept {}

    /// Number of I/O lanes, fixed for the environment's life.
    virtual std::size_t lane_count() const noexcept = 0;
    /// Executor of lane `index` (< lane_count()). Handlers on one lane never run concurrently.
    virtual executor lane_executor(std::size_t index) = 0;

    /// Monotonic time.
    virtual time_point now() const noexcept = 0;
    /// A timer bound to `lane`.
    virtual std::unique_ptr<timer> make_timer(const executor& lane) = 0;
    /// A uniformly distributed 64-bit value (jitter and the like; never in the data path).
    virtual std::uint64_t random_u64() noexcept = 0;

    /// Runs `work` on the compute pool (fixed concurrency). Never runs it inline.
    virtual void post_compute(std::function<void()> work) = 0;
    /// Called by compute work with the bytes it processed: the simulator's cost model charges
    /// virtual time for them. Production: nothing (real time passes by itself).
    virtual void charge_compute(std::uint64_t /*bytes*/) noexcept {}
    virtual std::size_t compute_concurrency() const noexcept = 0;
    /// Runs `work` on the bounded blocking pool (legacy sources). Never runs it inline.
    virtual void post_blocking(std::function<void()> work) = 0;
    virtual std::size_t blocking_concurrency() const noexcept = 0;

    /// Connects to `address:port` (numeric address) within `timeout`.
    virtual boost::asio::awaitable<
        std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    connect(executor lane, std::string address, std::uint16_t port, duration timeout) = 0;
    /// Listens on `address:port` (0 = any free port). Errors as values.
    virtual std::pair<boost::system::error_code, std::unique_ptr<stream_listener>>
    listen(executor lane, const std::string& address, std::uint16_t port, int backlog) = 0;
    /// Binds a UDP socket on `address:port`.
    virtual std::pair<boost::system::error_code, std::unique_ptr<datagram_socket>>
    open_udp(executor lane, const std::string& address, std::uint16_t port) = 0;
    /// Opens a file for reading from byte `offset` (0: the start; a restarted file source
    /// resumes where it stopped). A file now shorter than `offset` (truncated or replaced) is
    /// the error `invalid_argument`: nothing is read twice.
    virtual std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>
    open_file(executor lane, const std::string& path, std::uint64_t offset) = 0;
    /// Watches a descriptor owned by a library (MQTT's socket) on `lane`. Environments without
    /// real descriptors (the simulator) return null, and such sources fail to open there.
    virtual std::unique_ptr<descriptor_watch> watch_descriptor(const executor& /*lane*/,
                                                               int /*fd*/) {
        return nullptr;
    }
};

} // namespace sluice::runtime
