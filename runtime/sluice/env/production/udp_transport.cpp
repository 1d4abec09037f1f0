// UDP: a bound socket whose datagrams are records.
#include "sluice/env/production_environment.hpp"

#include "sluice/env/production/asio_lanes.hpp"
#include <boost/asio/ip/udp.hpp>

namespace sluice::runtime {

using namespace detail;
using udp = asio::ip::udp;

namespace {

class udp_socket final : public datagram_socket {
public:
    udp_socket(udp::socket socket, std::string description)
        : socket_(std::move(socket)), description_(std::move(description)) {
        error_code ignored;
        socket_.non_blocking(true, ignored);
    }
    asio::awaitable<error_code> wait_readable() override {
        auto [error] = co_await socket_.async_wait(udp::socket::wait_read,
                                                   asio::as_tuple(asio::use_awaitable));
        co_return error;
    }
    bool should_park() override { return drained_ || nothing_queued(socket_); }
    bool park(wake_callback wake) override {
        socket_.async_wait(udp::socket::wait_read, parked_wait_handler(std::move(wake)));
        return true;
    }
    std::size_t next_datagram_bytes() override {
        error_code ignored;
        return socket_.available(ignored); // Linux: the size of the next datagram
    }
    read_result read_now(std::span<std::byte> space) override {
        error_code error;
        const std::size_t next = next_datagram_bytes();
        if (next > space.size()) {
            // Would be truncated: drop it whole rather than deliver a cut record.
            std::array<std::byte, 1> scratch{};
            socket_.receive(asio::buffer(scratch), 0, error);
            return {read_result::status::error, 0, asio::error::message_size};
        }
        const std::size_t n = socket_.receive(asio::buffer(space.data(), space.size()), 0, error);
        auto result = classify(n, error);
        drained_ = result.state == read_result::status::would_block;
        if (result.state == read_result::status::data && n == 0) {
            result.state = read_result::status::would_block; // an empty datagram carries nothing
        }
        return result;
    }
    void close() noexcept override {
        error_code ignored;
        socket_.close(ignored);
    }
    std::string describe() const override { return description_; }
    std::uint16_t port() const override {
        error_code ignored;
        return socket_.local_endpoint(ignored).port();
    }

private:
    udp::socket socket_;
    std::string description_;
    bool drained_ = true; ///< nothing received since the last empty receive
};

} // namespace

std::pair<error_code, std::unique_ptr<datagram_socket>>
production_environment::open_udp(executor lane, const std::string& address, std::uint16_t port) {
    error_code error;
    const auto ip = asio::ip::make_address(address, error);
    if (error) {
        return {error, nullptr};
    }
    udp::socket socket(lane);
    const udp::endpoint endpoint(ip, port);
    socket.open(endpoint.protocol(), error);
    if (!error) {
        socket.bind(endpoint, error);
    }
    if (error) {
        return {error, nullptr};
    }
    return {error_code{}, std::make_unique<udp_socket>(
                              std::move(socket), "udp " + address + ":" + std::to_string(port))};
}

} // namespace sluice::runtime
