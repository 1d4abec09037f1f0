#pragma once
/// Sources over the seam's transports: a TCP client that reconnects, one accepted TCP
/// connection, a UDP socket and a file. Each is a thin adapter from a `byte_stream` to `source`;
/// the server does buffering, flushing, backoff and events.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio/cancellation_signal.hpp>

#include "sluice/env/environment.hpp"
#include "sluice/source/source.hpp"
#include "sluice/tls/tls.hpp"

namespace sluice::runtime {

struct tcp_client_options {
    std::string address = "127.0.0.1"; ///< numeric IPv4 or IPv6 address
    std::uint16_t port = 0;
    duration connect_timeout = std::chrono::seconds(2);
    /// Set: every connection speaks TLS as a client (the server verified against ca_file).
    std::optional<tls_options> tls;
};

/// A source over a stream it opens itself and can open again (after a failure, or a restart):
/// waits and reads go to the current stream; a derived class says how to open one.
class reopening_source : public source {
public:
    boost::asio::awaitable<boost::system::error_code> open() final;
    std::optional<boost::system::error_code> open_now() final;
    boost::asio::awaitable<boost::system::error_code> wait_readable() final;
    bool should_park() final;
    bool park(wake_callback wake) final;
    read_result read_now(std::span<std::byte> space) final;
    void close() noexcept final;

protected:
    reopening_source(environment& env, executor lane) : env_(env), lane_(std::move(lane)) {}
    /// Opens a new stream (connect, open a file, …).
    virtual boost::asio::awaitable<
        std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    open_stream() = 0;
    /// Opens a new stream without waiting when that is how it opens (a file); `std::nullopt`
    /// when it waits (a connect).
    virtual std::optional<std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    open_stream_now() {
        return std::nullopt;
    }

    /// Bytes read over every stream this source opened.
    std::uint64_t bytes_read() const noexcept { return bytes_read_; }

    environment& env_;
    executor lane_;

private:
    boost::system::error_code
    adopt(std::pair<boost::system::error_code, std::unique_ptr<byte_stream>> opened);

    std::unique_ptr<byte_stream> stream_; ///< null until opened; closed, not reset, on close()
    std::uint64_t bytes_read_ = 0;
    /// Cancels an open in progress (a connect) when the source is closed (a stop).
    boost::asio::cancellation_signal opening_;
    bool opening_now_ = false; ///< an open is waiting: opening_ has a handler to reach
};

/// Connects out; on reset or refusal the server reopens it with capped exponential backoff. A
/// stop cancels a connect in progress.
class tcp_client_source final : public reopening_source {
public:
    tcp_client_source(environment& env, executor lane, tcp_client_options options);
    source_kind kind() const noexcept override { return source_kind::tcp_client; }
    std::string describe() const override;
    bool reconnects() const noexcept override { return true; }

private:
    boost::asio::awaitable<std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    open_stream() override;

    tcp_client_options options_;
    std::shared_ptr<const tls_context> tls_; ///< when options_.tls
};

/// Wraps an already open stream: an accepted TCP connection, or a file.
class stream_source final : public source {
public:
    stream_source(source_kind kind, std::unique_ptr<byte_stream> stream);
    source_kind kind() const noexcept override { return kind_; }
    std::string describe() const override { return stream_->describe(); }
    boost::asio::awaitable<boost::system::error_code> open() override;
    std::optional<boost::system::error_code> open_now() override;
    boost::asio::awaitable<boost::system::error_code> wait_readable() override;
    bool should_park() override { return stream_->should_park(); }
    bool park(wake_callback wake) override { return stream_->park(std::move(wake)); }
    read_result read_now(std::span<std::byte> space) override;
    void close() noexcept override;

private:
    source_kind kind_;
    std::unique_ptr<byte_stream> stream_;
    bool opened_ = false;
};

struct udp_options {
    std::string address = "127.0.0.1";
    std::uint16_t port = 0;
    std::uint32_t datagram_bytes_max = 0; ///< the pool's buffer size; larger datagrams are dropped
};

/// Appends each datagram whole to the buffer; a datagram that does not fit in the space left
/// asks for a new buffer; one larger than a buffer is dropped and counted.
class udp_source final : public source {
public:
    udp_source(environment& env, executor lane, udp_options options);
    source_kind kind() const noexcept override { return source_kind::udp; }
    std::string describe() const override;
    boost::asio::awaitable<boost::system::error_code> open() override;
    std::optional<boost::system::error_code> open_now() override;
    boost::asio::awaitable<boost::system::error_code> wait_readable() override;
    bool should_park() override { return socket_ && socket_->should_park(); }
    bool park(wake_callback wake) override { return socket_->park(std::move(wake)); }
    read_result read_now(std::span<std::byte> space) override;
    void close() noexcept override;

    /// Datagrams dropped because they were larger than a buffer.
    std::uint64_t oversize_dropped() const noexcept { return oversize_dropped_; }
    /// The bound port once open (0 before), readable from any thread; for tests that bind 0.
    std::uint16_t port() const noexcept { return bound_port_.load(std::memory_order_acquire); }

private:
    environment& env_;
    executor lane_;
    udp_options options_;
    std::unique_ptr<datagram_socket> socket_;
    std::uint64_t oversize_dropped_ = 0;
    std::atomic<std::uint16_t> bound_port_{0}; ///< published after open, read from other threads
};

} // namespace sluice::runtime

#include "sluice/source/file_source.hpp" // the file source, once part of this header
