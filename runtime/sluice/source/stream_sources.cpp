#include "sluice/source/stream_sources.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

read_result closed_result() {
    return {read_result::status::error, 0, asio::error::operation_aborted};
}

} // namespace

asio::awaitable<error_code> reopening_source::open() {
    if (const auto opened = open_now()) {
        co_return *opened;
    }
    // In its own coroutine, so that close() can cancel it: the connect's operations inherit
    // the cancellation bound here (a stop must not wait out connect_timeout).
    opening_now_ = true;
    auto opened = co_await asio::co_spawn(
        lane_, open_stream(), asio::bind_cancellation_slot(opening_.slot(), asio::use_awaitable));
    opening_now_ = false;
    co_return adopt(std::move(opened));
}

std::optional<error_code> reopening_source::open_now() {
    close();
    auto opened = open_stream_now();
    if (!opened) {
        return std::nullopt;
    }
    return adopt(std::move(*opened));
}

error_code reopening_source::adopt(std::pair<error_code, std::unique_ptr<byte_stream>> opened) {
    if (!opened.first) {
        stream_ = std::move(opened.second);
    }
    return opened.first;
}

asio::awaitable<error_code> reopening_source::wait_readable() {
    if (!stream_) {
        co_return asio::error::not_connected;
    }
    co_return co_await stream_->wait_readable();
}

bool reopening_source::should_park() {
    return stream_ && stream_->should_park();
}

bool reopening_source::park(wake_callback wake) {
    return stream_->park(std::move(wake));
}

read_result reopening_source::read_now(std::span<std::byte> space) {
    if (!stream_) {
        return closed_result();
    }
    const read_result r = stream_->read_now(space);
    if (r.state == read_result::status::data) {
        bytes_read_ += r.bytes;
    }
    return r;
}

void reopening_source::close() noexcept {
    if (opening_now_) {
        opening_now_ = false;
        opening_.emit(asio::cancellation_type::terminal);
    }
    if (stream_) {
        stream_->close();
    }
}

tcp_client_source::tcp_client_source(environment& env, executor lane, tcp_client_options options)
    : reopening_source(env, std::move(lane)), options_(std::move(options)) {
    if (options_.tls) {
        tls_ = std::make_shared<const tls_context>(*options_.tls, tls_role::client);
    }
}

std::string tcp_client_source::describe() const {
    return std::string(tls_ ? "tls" : "tcp") + " client " + options_.address + ":" +
           std::to_string(options_.port);
}

asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>>
tcp_client_source::open_stream() {
    auto opened =
        co_await env_.connect(lane_, options_.address, options_.port, options_.connect_timeout);
    if (!opened.first && tls_) {
        opened.second = tls_->wrap(env_, lane_, std::move(opened.second));
    }
    co_return opened;
}

stream_source::stream_source(source_kind kind, std::unique_ptr<byte_stream> stream)
    : kind_(kind), stream_(std::move(stream)) {
    SLUICE_ASSERT(stream_ != nullptr);
}

asio::awaitable<error_code> stream_source::open() {
    co_return *open_now();
}

std::optional<error_code> stream_source::open_now() {
    // The stream came open; it cannot be reopened (an accepted peer that left is gone).
    const bool first = !opened_;
    opened_ = true;
    return first ? error_code{} : error_code(asio::error::not_connected);
}

asio::awaitable<error_code> stream_source::wait_readable() {
    // Not a coroutine: hands back the stream's own awaitable, so an idle source carries one
    // coroutine frame less while it waits.
    return stream_->wait_readable();
}

read_result stream_source::read_now(std::span<std::byte> space) {
    return stream_->read_now(space);
}

void stream_source::close() noexcept {
    stream_->close();
}

udp_source::udp_source(environment& env, executor lane, udp_options options)
    : env_(env), lane_(std::move(lane)), options_(std::move(options)) {
    SLUICE_ASSERT(options_.datagram_bytes_max > 0);
}

std::string udp_source::describe() const {
    return "udp " + options_.address + ":" + std::to_string(options_.port);
}

asio::awaitable<error_code> udp_source::open() {
    co_return *open_now();
}

std::optional<error_code> udp_source::open_now() {
    close();
    auto [error, socket] = env_.open_udp(lane_, options_.address, options_.port);
    if (!error) {
        socket_ = std::move(socket);
        bound_port_.store(socket_->port(), std::memory_order_release);
    }
    return error;
}

asio::awaitable<error_code> udp_source::wait_readable() {
    if (!socket_) {
        co_return asio::error::bad_descriptor;
    }
    co_return co_await socket_->wait_readable();
}

read_result udp_source::read_now(std::span<std::byte> space) {
    if (!socket_) {
        return closed_result();
    }
    // Bounded: a flood of oversize datagrams cannot hold the lane.
    for (int dropped = 0; dropped < 64; ++dropped) {
        const std::size_t next = socket_->next_datagram_bytes();
        if (next > space.size() && next <= options_.datagram_bytes_max) {
            return {read_result::status::need_space, 0, {}};
        }
        auto result = socket_->read_now(space);
        if (result.state == read_result::status::error &&
            result.error == asio::error::message_size) {
            ++oversize_dropped_;
            continue;
        }
        return result;
    }
    return {read_result::status::would_block, 0, {}};
}

void udp_source::close() noexcept {
    if (socket_) {
        socket_->close();
    }
}

} // namespace sluice::runtime
