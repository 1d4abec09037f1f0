#pragma once
/// Internal: the source server's per-source entry, per-listener state and the run's resume
/// points, shared by its files (source_server.cpp: registry, lifecycle, admission, shutdown;
/// source_run.cpp: one source's run; tcp_listener.cpp: listeners and their connections).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/cancellation_signal.hpp>

#include "sluice/env/environment.hpp"
#include "sluice/server/detail/flush_policy.hpp"
#include "sluice/server/source_server.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

inline std::size_t index_of(flush_reason reason) noexcept {
    return static_cast<std::size_t>(reason);
}
inline std::uint64_t nanoseconds(duration d) noexcept {
    return static_cast<std::uint64_t>(std::max<duration::rep>(d.count(), 0));
}

/// A registered source. Its lane and its place among the lane's held partial buffers are the
/// flush policy's part (the base).
struct source_server::entry : flush_policy::client {
    // Ordered by size, small fields together: every registered source has one (10,000 idle
    // connections are 10,000 entries), so its padding is memory per idle source.
    source_handle handle = 0;
    std::string name;         ///< source_options::name, for errors
    duration flush_timeout{}; ///< source_options::flush_timeout
    source_id pool_id;
    std::unique_ptr<source> src;
    std::shared_ptr<processing::channel> channel; ///< made on first use (source_server::channel)
    listener* owner = nullptr; ///< the listener of an accepted connection, else null

    // Touched only on the entry's lane.
    /// Reconnect backoff; made when first needed and dropped when the source parks, so an idle
    /// source holds none. (Flush deadlines are the flush policy's.)
    std::unique_ptr<timer> flush_timer;
    asio::cancellation_signal acquire_cancel; ///< aborts a suspended acquisition at stop
    std::uint64_t next_sequence = 0;          ///< contiguous from 0 across restarts
    time_point partial_since{};               ///< when the held buffer got its first byte
    time_point idle_since{};                  ///< when a parked wait began
    std::uint32_t failures = 0;               ///< consecutive failed opens (kept across parks)
    std::uint32_t bytes_dropped = 0; ///< read, then lost when queueing for processing failed
    source_kind kind = source_kind::generator;
    std::atomic<source_state> state{source_state::registered};
    source_state final_state = source_state::stopped;
    /// Lane-only, except that claim_start resets it (and `failures`) under the registry lock
    /// while the source is not running: no lane touches it then, and the state's store at the
    /// end of the last run and its load in claim_start order the writes.
    bool stop_requested = false;
    bool read_since_open = false; ///< resets the reconnect attempt count
    bool opened_before = false;   ///< a later open is a reopen (lane-only, kept across runs)
    /// The next emitted buffer starts a new stream (see source::continues_after_reopen).
    bool discontinuity_pending = false;
    bool emit_failed = false; ///< a buffer could not be queued: the run ends with an Error
    bool idle_closed = false; ///< its listener closed it for idleness: the run ends with an Error
    bool cannot_park = false; ///< its park() said no: it waits in its coroutine (lane-only)
    /// The bounded buffer wait of a source that refuses (source::buffer_wait_max) expired.
    bool buffer_wait_expired = false;
    /// Accepted connections of a listener with an idle timeout: when data last came (ns of
    /// env.now()), written on the lane, read by the listener's idle sweep.
    std::atomic<std::int64_t> last_data_ns{0};
    /// A processed position is posted to its lane and not yet told (tracked sources).
    std::atomic<bool> processed_posted{false};
    /// Ended at end of stream or failed: its origin is closed (EoS/Error was its last event),
    /// so it cannot be started again; unregister it and register anew for a new origin.
    std::atomic<bool> finished{false};
};

struct source_server::listener {
    listener_options options;
    std::size_t lane_index = 0;
    std::unique_ptr<stream_listener> acceptor;
    std::atomic<std::uint32_t> connections{0};
    std::uint64_t accepted = 0;
    std::uint32_t restarts = 0;        ///< accept loops begun again after a failure (lane-only)
    bool closing = false;              ///< lane-only
    bool closed_by_engine = false;     ///< close_tcp_listener was called (under mutex_)
    std::unique_ptr<timer> idle_sweep; ///< lane-only; while idle_timeout is set
    std::unique_ptr<tls_context> tls;  ///< when options.tls: every connection's TLS
};

struct source_server::loop_end {
    enum class kind : std::uint8_t { stop, end_of_stream, transport_error, park } what = kind::stop;
    error_code error;
};

struct source_server::resume {
    enum class at : std::uint8_t {
        open,    ///< a start: open the source, then read
        wait,    ///< open, nothing held in hand: wait for data (or park), then read
        acquire, ///< open and readable, but no buffer was free: wait for one, then read
        ended,   ///< a step's read loop ended with `end` (a transport error): reconnect or fail
    } where = at::open;
    loop_end end;
};

} // namespace sluice::runtime
