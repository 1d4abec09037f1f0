// TCP: connected streams (accepted or connected), the listener, and connect with a deadline.
#include "sluice/env/production_environment.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "sluice/env/production/asio_lanes.hpp"
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

namespace sluice::runtime {

using namespace detail;

namespace {

class tcp_stream final : public byte_stream {
public:
    explicit tcp_stream(lane_tcp_socket socket) : socket_(std::move(socket)) {
        error_code ignored;
        socket_.non_blocking(true, ignored);
        peer_ = socket_.remote_endpoint(
            ignored); // the text only when asked: memory per idle connection
    }
    void keep_alive(std::chrono::seconds idle, std::chrono::seconds interval,
                    int probes) noexcept override {
        const int fd = socket_.native_handle();
        const int on = 1;
        const int idle_s = static_cast<int>(idle.count());
        const int interval_s =
            static_cast<int>(std::max<std::chrono::seconds::rep>(interval.count(), 1));
        // Best effort: a socket that refuses keeps working without it.
        ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof(interval_s));
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
    }
    asio::awaitable<error_code> wait_readable() override {
        auto [error] = co_await socket_.async_wait(tcp::socket::wait_read,
                                                   asio::as_tuple(asio::use_awaitable));
        co_return error;
    }
    /// Parks once a read found the socket empty; after data (a turn that ended on its read
    /// bound, or a full buffer with no next one), only if the kernel says nothing is queued.
    bool should_park() override { return drained_ || nothing_queued(socket_); }
    bool park(wake_callback wake) override {
        // A closed socket completes the wait at once with an error (posted, never inline).
        socket_.async_wait(tcp::socket::wait_read, parked_wait_handler(std::move(wake)));
        return true;
    }
    read_result read_now(std::span<std::byte> space) override {
        error_code error;
        const std::size_t n = socket_.read_some(asio::buffer(space.data(), space.size()), error);
        auto result = classify(n, error);
        drained_ = result.state == read_result::status::would_block;
        return result;
    }
    std::pair<error_code, std::size_t> write_now(std::span<const std::byte> bytes) override {
        error_code error;
        const std::size_t n = socket_.write_some(asio::buffer(bytes.data(), bytes.size()), error);
        if (error == asio::error::would_block || error == asio::error::try_again) {
            return {error_code{}, 0};
        }
        return {error, n};
    }
    void close() noexcept override {
        error_code ignored;
        socket_.close(ignored);
    }
    std::string describe() const override {
        return "tcp " + peer_.address().to_string() + ":" + std::to_string(peer_.port());
    }

private:
    lane_tcp_socket socket_;
    tcp::endpoint peer_;
    bool drained_ = true; ///< nothing read since the last empty read (a new connection too)
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
        : acceptor_(std::move(acceptor)), descriptor_reserve_(descriptor_reserve) {}
    asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>>
    accept(executor target) override {
        lane_tcp_socket socket(concrete_lane(target));
        auto [error] = co_await acceptor_.async_accept(socket, asio::as_tuple(asio::use_awaitable));
        if (error) {
            co_return std::pair<error_code, std::unique_ptr<byte_stream>>{error, nullptr};
        }
        // The kernel hands out the lowest free descriptor, so a number this high means nearly
        // all are open: refuse the connection (the server counts it and pauses accepting) so a
        // connect flood cannot take the descriptors files, clients and reconnects need.
        if (static_cast<std::uint64_t>(socket.native_handle()) >
            highest_accepted_descriptor(descriptor_reserve_)) {
            error_code ignored;
            socket.close(ignored);
            co_return std::pair<error_code, std::unique_ptr<byte_stream>>{
                asio::error::no_descriptors, nullptr};
        }
        co_return std::pair<error_code, std::unique_ptr<byte_stream>>{
            error_code{}, std::make_unique<tcp_stream>(std::move(socket))};
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
    co_return result{error_code{}, std::make_unique<tcp_stream>(std::move(socket))};
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
