// TCP: connected streams (accepted or connected), the listener, and connect with a deadline.
#include "sluice/env/production_environment.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <tuple>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "sluice/env/production/asio_lanes.hpp"
#include "sluice/env/production/lane_poller.hpp"

namespace sluice::runtime {

using namespace detail;

namespace {

/// A connected TCP socket, read and written with plain non-blocking calls and watched by its
/// lane's poller (lane_poller.hpp says why not Asio's socket). Registered with the poller on its
/// first wait, on its own lane (a listener makes it on another lane).
class tcp_stream final : public byte_stream, private polled {
public:
    tcp_stream(int fd, const lane_executor_type& lane) : fd_(fd), poller_(&lane_poller::of(lane)) {
        socklen_t length = static_cast<socklen_t>(peer_.capacity());
        if (::getpeername(fd_, peer_.data(), &length) == 0) {
            peer_.resize(length); // the text only when asked: memory per idle connection
        }
    }
    tcp_stream(const tcp_stream&) = delete;
    tcp_stream& operator=(const tcp_stream&) = delete;
    ~tcp_stream() override { close(); }

    void keep_alive(std::chrono::seconds idle, std::chrono::seconds interval,
                    int probes) noexcept override {
        const int on = 1;
        const int idle_s = static_cast<int>(idle.count());
        const int interval_s =
            static_cast<int>(std::max<std::chrono::seconds::rep>(interval.count(), 1));
        // Best effort: a socket that refuses keeps working without it.
        ::setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        ::setsockopt(fd_, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
        ::setsockopt(fd_, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof(interval_s));
        ::setsockopt(fd_, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
    }
    asio::awaitable<error_code> wait_readable() override {
        const auto token = asio::as_tuple(asio::use_awaitable);
        auto [error] = co_await asio::async_initiate<decltype(token), void(error_code)>(
            [this](auto handler) { begin_coroutine_wait(std::move(handler)); }, token);
        co_return error;
    }
    /// Parks once a read found the socket empty; after data (a turn that ended on its read
    /// bound, or a full buffer with no next one), only if the kernel says nothing is queued.
    bool should_park() override { return drained_ || nothing_queued(); }
    bool park(wake_callback wake) override {
        begin_wait(std::move(wake));
        return true;
    }
    read_result read_now(std::span<std::byte> space) override {
        if (fd_ < 0) {
            return {read_result::status::error, 0, asio::error::bad_descriptor};
        }
        ssize_t n = 0;
        do {
            n = ::recv(fd_, space.data(), space.size(), MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        read_result result;
        if (n > 0) {
            result = {read_result::status::data, static_cast<std::size_t>(n), {}};
        } else if (n == 0) {
            result = space.empty() ? read_result{read_result::status::data, 0, {}}
                                   : read_result{read_result::status::end_of_stream, 0, {}};
        } else {
            result = classify(0, error_code(errno, boost::system::system_category()));
        }
        drained_ = result.state == read_result::status::would_block;
        return result;
    }
    std::pair<error_code, std::size_t> write_now(std::span<const std::byte> bytes) override {
        if (fd_ < 0) {
            return {asio::error::bad_descriptor, 0};
        }
        ssize_t n = 0;
        do {
            n = ::send(fd_, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n >= 0) {
            return {error_code{}, static_cast<std::size_t>(n)};
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return {error_code{}, 0};
        }
        return {error_code(errno, boost::system::system_category()), 0};
    }
    void close() noexcept override {
        if (fd_ < 0) {
            return;
        }
        if (registered_) {
            poller_->remove(slot_, fd_);
            registered_ = false;
        }
        ::close(fd_);
        fd_ = -1;
        if (waiter_) {
            finish_wait(asio::error::operation_aborted); // posted: never inside close
        }
    }
    std::string describe() const override {
        return "tcp " + peer_.address().to_string() + ":" + std::to_string(peer_.port());
    }

private:
    /// A coroutine's wait: its handler, and the cancellation slot a parallel group (`wait ||
    /// timer`) cancels it by.
    template <typename Handler> void begin_coroutine_wait(Handler handler) {
        auto slot = asio::get_associated_cancellation_slot(handler);
        auto held = std::make_shared<Handler>(std::move(handler));
        const std::uint32_t id = ++wait_id_;
        if (slot.is_connected()) {
            slot.assign([this, id](asio::cancellation_type type) {
                if (type != asio::cancellation_type::none && waiter_ && wait_id_ == id) {
                    finish_wait(asio::error::operation_aborted);
                }
            });
        }
        begin_wait([held, slot](error_code error) mutable {
            if (slot.is_connected()) {
                slot.clear();
            }
            asio::post(asio::append(std::move(*held), error));
        });
    }
    void begin_wait(wake_callback wake) {
        SLUICE_ASSERT(!waiter_ && "one wait at a time");
        waiter_ = std::move(wake);
        if (fd_ < 0) {
            finish_wait(asio::error::bad_descriptor); // closed before the wait: posted
            return;
        }
        // Edge-triggered, so a wait must begin where the poller reports what is queued now:
        // adding the socket does, and so does re-arming it (one epoll_ctl, as Asio's async_wait
        // costs). Not needed when a read found it empty and no edge came since (on_ready clears
        // drained_): any later byte makes a new edge.
        error_code error;
        if (!registered_) {
            std::uint32_t slot = 0;
            std::tie(error, slot) = poller_->add(fd_, *this);
            slot_ = slot;
            registered_ = !error;
        } else if (!drained_) {
            error = poller_->rearm(slot_, fd_);
        }
        if (error) {
            finish_wait(error);
            return;
        }
        counted_ = true;
        poller_->waiting();
    }
    /// Readiness from the poller: the waiter runs now, on the lane.
    void on_ready() override {
        if (!waiter_) {
            // Not waiting (it may be answering, or waiting for a buffer, after an empty read):
            // this edge is gone, so its next wait must re-arm and should_park must ask the
            // kernel. Found by the HTTP benchmark at 1,000 connections, where clients stalled.
            drained_ = false;
            return;
        }
        auto wake = std::move(waiter_);
        waiter_ = nullptr;
        ++wait_id_;
        counted_ = false;
        poller_->stopped_waiting();
        wake(error_code{});
    }
    /// Ends the wait with `error`, posted to the lane.
    void finish_wait(error_code error) {
        auto wake = std::move(waiter_);
        waiter_ = nullptr;
        ++wait_id_;
        if (counted_) {
            counted_ = false;
            poller_->stopped_waiting();
        }
        asio::post(poller_->lane(), [wake = std::move(wake), error] { wake(error); });
    }
    bool nothing_queued() const noexcept {
        int queued = 0;
        return fd_ >= 0 && ::ioctl(fd_, FIONREAD, &queued) == 0 && queued == 0;
    }

    int fd_;
    std::uint32_t slot_ = 0;
    lane_poller* poller_;
    wake_callback waiter_;
    std::uint32_t wait_id_ = 0; ///< which wait `waiter_` is (a coroutine wait's cancellation)
    tcp::endpoint peer_;
    bool registered_ = false; ///< in the poller's set
    bool counted_ = false;    ///< the poller counts `waiter_` as waiting
    /// The last read found it empty and no edge came since (a new connection too).
    bool drained_ = true;
};

/// The highest descriptor number an accepted connection may have so that `reserve` descriptors
/// stay free for everything else; no limit when the open-file limit is unlimited.
std::uint64_t highest_accepted_descriptor(std::size_t reserve) {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
        return ~std::uint64_t{0};
    }
    return limit.rlim_cur > reserve ? limit.rlim_cur - reserve - 1 : 0;
}

class tcp_listener final : public stream_listener {
public:
    tcp_listener(tcp::acceptor acceptor, std::size_t descriptor_reserve)
        : acceptor_(std::move(acceptor)), descriptor_reserve_(descriptor_reserve) {
        acceptor_.non_blocking(true); // accept4 must not block the lane
    }
    asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>>
    accept(executor target) override {
        using result = std::pair<error_code, std::unique_ptr<byte_stream>>;
        // accept4 straight from the listening socket (already non-blocking), waiting on the
        // acceptor only when the backlog is empty: the connection never passes through an Asio
        // socket (lane_poller.hpp).
        for (int interrupted = 0;;) {
            const int fd = ::accept4(acceptor_.native_handle(), nullptr, nullptr,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                // The kernel hands out the lowest free descriptor, so a number this high means
                // nearly all are open: refuse the connection (the server counts it and pauses
                // accepting) so a connect flood cannot take the descriptors files, clients and
                // reconnects need.
                if (static_cast<std::uint64_t>(fd) >
                    highest_accepted_descriptor(descriptor_reserve_)) {
                    ::close(fd);
                    co_return result{asio::error::no_descriptors, nullptr};
                }
                co_return result{error_code{},
                                 std::make_unique<tcp_stream>(fd, concrete_lane(target))};
            }
            const int error = errno;
            if (error == EAGAIN || error == EWOULDBLOCK) {
                auto [waited] = co_await acceptor_.async_wait(tcp::acceptor::wait_read,
                                                              asio::as_tuple(asio::use_awaitable));
                if (waited) {
                    co_return result{waited, nullptr}; // operation_aborted when closed
                }
                continue;
            }
            // A connection that was reset in the backlog, or a signal: the next one (bounded,
            // so a listener that keeps failing this way yields its lane as an error).
            if ((error == EINTR || error == ECONNABORTED) && ++interrupted < 64) {
                continue;
            }
            co_return result{error_code(error, boost::system::system_category()), nullptr};
        }
    }
    void close() noexcept override {
        error_code ignored;
        acceptor_.close(ignored);
    }
    std::uint16_t port() const override {
        error_code ignored;
        return acceptor_.local_endpoint(ignored).port();
    }

private:
    tcp::acceptor acceptor_;
    std::size_t descriptor_reserve_;
};

} // namespace

asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>>
production_environment::connect(executor lane, std::string address, std::uint16_t port,
                                duration timeout) {
    using result = std::pair<error_code, std::unique_ptr<byte_stream>>;
    using namespace asio::experimental::awaitable_operators;
    error_code error;
    const auto ip = asio::ip::make_address(address, error);
    if (error) {
        co_return result{error, nullptr};
    }
    lane_tcp_socket socket(concrete_lane(lane));
    asio::steady_timer deadline(lane, timeout);
    auto outcome = co_await (
        socket.async_connect(tcp::endpoint(ip, port), asio::as_tuple(asio::use_awaitable)) ||
        deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (outcome.index() == 1) {
        // The deadline, or a cancellation of the whole connect (a stop): say which.
        const bool cancelled = std::get<0>(std::get<1>(outcome)) == asio::error::operation_aborted;
        co_return result{cancelled ? asio::error::operation_aborted : asio::error::timed_out,
                         nullptr};
    }
    error = std::get<0>(std::get<0>(outcome));
    if (error) {
        co_return result{error, nullptr};
    }
    // Connected: the descriptor leaves Asio's reactor for the lane's poller (lane_poller.hpp).
    const int fd = socket.release(error);
    if (error) {
        co_return result{error, nullptr};
    }
    co_return result{error_code{}, std::make_unique<tcp_stream>(fd, concrete_lane(lane))};
}

std::pair<error_code, std::unique_ptr<stream_listener>>
production_environment::listen(executor lane, const std::string& address, std::uint16_t port,
                               int backlog) {
    error_code error;
    const auto ip = asio::ip::make_address(address, error);
    if (error) {
        return {error, nullptr};
    }
    tcp::acceptor acceptor(lane);
    const tcp::endpoint endpoint(ip, port);
    acceptor.open(endpoint.protocol(), error);
    if (!error) {
        acceptor.set_option(tcp::acceptor::reuse_address(true), error);
    }
    if (!error) {
        acceptor.bind(endpoint, error);
    }
    if (!error) {
        acceptor.listen(backlog, error);
    }
    if (error) {
        return {error, nullptr};
    }
    return {error_code{}, std::make_unique<tcp_listener>(std::move(acceptor), descriptor_reserve_)};
}

} // namespace sluice::runtime
