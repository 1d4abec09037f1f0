#pragma once
/// Internal: a lane's own epoll instance for the TCP streams sluice reads itself.
///
/// Why not Asio's socket: every socket Asio watches holds a reactor state (168 B, pooled and
/// never returned) and every pending `async_wait` an operation (144 B), and a parked idle
/// connection needs both, a third of its memory (bench/RESULTS.md). A TCP stream here is a bare
/// descriptor registered once, edge-triggered, in its lane's epoll set; the lane's io_context
/// watches that one epoll descriptor, and when it is readable the poller reads the ready events
/// and runs the waiting streams' callbacks on the lane. So an idle connection costs a slot here
/// (16 B) and what its stream object holds, and a wake-up costs no operation to allocate.
///
/// Edge-triggered, as Asio's reactor is: readiness that comes while a stream is not waiting is
/// dropped, so a wait begins either after a read found the stream empty with no edge since
/// (later bytes make a new edge) or by re-arming the registration, which reports what is queued
/// now (what Asio's async_wait does with an epoll_ctl each time). A wake-up may be
/// spurious (the stream reads would_block and waits again).
///
/// Lane-only, except `of` and `lane`, which any thread may call.

#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "sluice/env/production/asio_lanes.hpp"

namespace sluice::runtime::detail {

/// What the poller wakes.
class polled {
public:
    /// The descriptor became readable, hung up or failed. On the lane, inside the poller's
    /// handler; may add, remove and wait for any stream.
    virtual void on_ready() = 0;

protected:
    polled() = default;
    polled(const polled&) = default;
    polled& operator=(const polled&) = default;
    ~polled() = default;
};

class lane_poller final : public boost::asio::execution_context::service {
public:
    static inline boost::asio::execution_context::id id; ///< Asio's service key

    explicit lane_poller(boost::asio::io_context& context);
    lane_poller(const lane_poller&) = delete;
    lane_poller& operator=(const lane_poller&) = delete;
    ~lane_poller() override;

    /// The poller of `lane`'s io_context (made on first use). Any thread.
    static lane_poller& of(const lane_executor_type& lane);

    /// Watches `fd` for `target` (readability, hang-up, error; edge-triggered). The slot, or
    /// the error epoll gave.
    std::pair<error_code, std::uint32_t> add(int fd, polled& target);
    /// Watches `fd` (in `slot`) again: its current readiness is reported as a new edge.
    error_code rearm(std::uint32_t slot, int fd) noexcept;
    /// Stops watching (before the descriptor is closed). Events already read for it are
    /// dropped.
    void remove(std::uint32_t slot, int fd) noexcept;
    /// A stream begins waiting: the poller watches its epoll descriptor until every waiting
    /// stream is woken (`stopped_waiting`).
    void waiting();
    /// A stream's wait ended (woken, cancelled or closed).
    void stopped_waiting() noexcept;

    /// The lane's executor (every handler the poller runs or posts goes through it).
    const lane_executor_type& lane() const noexcept { return *lane_; }

private:
    void shutdown() override;
    /// Watches the epoll descriptor unless it is watched, or nothing waits, or a pass runs (it
    /// arms at its end).
    void arm();
    /// Reads ready events and runs their streams, a bounded number of rounds; then arms again.
    void pass();

    struct slot_state {
        polled* target = nullptr;
        std::uint32_t generation = 0; ///< in the event's data, so a reused slot is told apart
    };

    int epoll_fd_ = -1;
    boost::asio::posix::stream_descriptor descriptor_; ///< the epoll descriptor, in the lane
    std::optional<lane_executor_type> lane_;           ///< set once, by the first `of`
    std::once_flag lane_once_;
    std::vector<slot_state> slots_;
    std::vector<std::uint32_t> free_slots_;
    std::uint32_t waiting_ = 0;
    bool armed_ = false;
    bool in_pass_ = false;
    bool pass_posted_ = false;
};

} // namespace sluice::runtime::detail
