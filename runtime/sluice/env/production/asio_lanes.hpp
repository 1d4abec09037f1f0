#pragma once
/// Internal: what the production environment's transports share — the lanes' counting
/// executor (and the concrete executor type the sockets and timers are bound to), and the
/// helpers every Asio transport uses to read, park and allocate.

#include <atomic>
#include <cstddef>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/env/production_environment.hpp"

namespace sluice::runtime::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

/// True while this thread runs a handler of some lane (shared by every counting executor type).
inline thread_local bool inside_handler = false;

/// Wraps a lane's `io_context` executor and counts the handlers that pass through it: queued
/// from `execute` until the handler starts, active while it runs. Every query and requirement is
/// forwarded to the wrapped executor, so Asio's I/O objects find the same `io_context` and the
/// same blocking, work-tracking and relationship semantics. A handler dispatched inline from
/// inside another lane handler (blocking.possibly on the lane's own thread) is not counted
/// twice as active.
template <typename Inner> class counting_executor {
public:
    using counters = production_environment::task_counters;

    counting_executor(Inner inner, counters* count) noexcept
        : inner_(std::move(inner)), count_(count) {}

    template <typename Property>
    requires asio::can_query<const Inner&, Property>::value decltype(auto)
    query(const Property& property) const noexcept {
        return asio::query(inner_, property);
    }

    template <typename Property>
    requires asio::can_require<const Inner&, Property>::value auto
    require(const Property& property) const {
        using required = std::decay_t<decltype(asio::require(inner_, property))>;
        return counting_executor<required>(asio::require(inner_, property), count_);
    }

    template <typename Function> void execute(Function&& function) const {
        count_->queued.fetch_add(1, std::memory_order_relaxed);
        inner_.execute([count = count_, f = std::forward<Function>(function)]() mutable {
            count->queued.fetch_sub(1, std::memory_order_relaxed);
            struct running {
                counters* count;
                bool outermost;
                explicit running(counters* c) : count(c), outermost(!inside_handler) {
                    if (outermost) {
                        inside_handler = true;
                        count->active.fetch_add(1, std::memory_order_relaxed);
                    }
                }
                ~running() {
                    if (outermost) {
                        count->active.fetch_sub(1, std::memory_order_relaxed);
                        inside_handler = false;
                    }
                }
                running(const running&) = delete;
                running& operator=(const running&) = delete;
            } scope(count);
            std::move(f)();
        });
    }

    friend bool operator==(const counting_executor& a, const counting_executor& b) noexcept {
        return a.inner_ == b.inner_ && a.count_ == b.count_;
    }
    friend bool operator!=(const counting_executor& a, const counting_executor& b) noexcept {
        return !(a == b);
    }

private:
    Inner inner_;
    counters* count_;
};

inline read_result classify(std::size_t bytes, const error_code& error) {
    if (!error) {
        return {read_result::status::data, bytes, {}};
    }
    if (error == asio::error::would_block || error == asio::error::try_again) {
        return {read_result::status::would_block, 0, {}};
    }
    if (error == asio::error::eof) {
        return {read_result::status::end_of_stream, 0, {}};
    }
    return {read_result::status::error, 0, error};
}

/// Plain operator new/delete for the operation of a parked wait. Asio's default allocator
/// recycles blocks cached per thread, which hands a long-lived wait whatever larger block a
/// short-lived operation left behind (heaptrack: 256-byte blocks for a 144-byte wait).
template <typename T> struct exact_allocator {
    using value_type = T;
    exact_allocator() noexcept = default;
    template <typename U> exact_allocator(const exact_allocator<U>& /*other*/) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
    void deallocate(T* p, std::size_t /*n*/) noexcept { ::operator delete(p); }
    friend bool operator==(const exact_allocator&, const exact_allocator&) noexcept { return true; }
    friend bool operator!=(const exact_allocator&, const exact_allocator&) noexcept {
        return false;
    }
};

/// `handler` with its operation allocated exactly (for waits that last: parked sources).
template <typename Handler> auto allocated_exactly(Handler handler) {
    return asio::bind_allocator(exact_allocator<void>{}, std::move(handler));
}

/// The completion handler of a parked socket wait: calls the wake callback.
inline auto parked_wait_handler(wake_callback wake) {
    return allocated_exactly([wake = std::move(wake)](const error_code& error) { wake(error); });
}

/// What every lane executor holds inside its any_io_executor (see lane_executor).
using lane_executor_type = counting_executor<asio::io_context::executor_type>;
/// A TCP socket bound to a lane's concrete executor rather than to any_io_executor: 48 bytes
/// less in the socket and in every pending operation's handler work. Used only to connect: a
/// connected stream leaves Asio for the lane's poller (lane_poller.hpp).
using lane_tcp_socket = asio::basic_stream_socket<tcp, lane_executor_type>;

/// True when the socket has no bytes (or datagram) queued: one FIONREAD, asked only when the
/// last read returned data. An error says nothing: do not park on it.
template <typename Socket> bool nothing_queued(Socket& socket) {
    error_code error;
    const std::size_t queued = socket.available(error);
    return !error && queued == 0;
}

inline lane_executor_type concrete_lane(const executor& lane) {
    const auto* concrete = lane.target<lane_executor_type>();
    SLUICE_ASSERT(concrete != nullptr &&
                  "not an executor made by production_environment::lane_executor");
    return *concrete;
}

} // namespace sluice::runtime::detail
