// The TLS byte stream: OpenSSL over memory BIOs, fed by the inner stream's non-blocking reads.
#include "sluice/tls/detail/tls_stream.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <utility>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>

namespace sluice::runtime::detail {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

/// Ciphertext read from the inner stream at once (a TLS record is at most 16 KiB + overhead).
constexpr std::size_t cipher_chunk = 17U << 10U;
/// Ciphertext for the peer that may wait unwritten before the connection fails.
constexpr std::size_t pending_bytes_max = 1U << 20U;
/// Rounds of read-decrypt in one read_now (each consumes input or returns): a bound.
constexpr int rounds_max = 64;

} // namespace

tls_stream::tls_stream(environment& env, const executor& lane, SSL_CTX* context, tls_role role,
                       const tls_options& options, std::unique_ptr<byte_stream> inner,
                       tls_counters& counters)
    : inner_(std::move(inner)), counters_(counters) {
    ssl_ = SSL_new(context);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    if (ssl_ == nullptr || in_ == nullptr || out_ == nullptr) {
        BIO_free(in_);
        BIO_free(out_);
        SSL_free(ssl_);
        throw std::bad_alloc();
    }
    SSL_set_bio(ssl_, in_, out_); // ssl_ owns both from here
    if (role == tls_role::server) {
        SSL_set_accept_state(ssl_);
    } else {
        SSL_set_connect_state(ssl_);
        if (!options.server_name.empty()) {
            // SSL_set_tlsext_host_name, without the macro's C cast.
            SSL_ctrl(ssl_, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                     const_cast<char*>(options.server_name.c_str()));
            SSL_set1_host(ssl_, options.server_name.c_str());
        }
        // The client speaks first: its hello goes out now, not at the first read.
        ERR_clear_error();
        SSL_do_handshake(ssl_);
        flush();
    }
    // The handshake's bound: at the deadline the inner stream is closed, which ends a parked or
    // waiting read with an error. The callback touches the stream only when the time elapsed
    // (a cancelled wait's callback runs later, maybe after the stream is gone).
    handshake_timer_ = env.make_timer(lane);
    handshake_timer_->on_expiry(options.handshake_timeout, [this](bool elapsed) {
        if (elapsed && !handshake_done_ && !closed_) {
            timed_out_ = true;
            handshake_over(false);
            inner_->close();
        }
    });
}

tls_stream::~tls_stream() {
    handshake_timer_.reset();
    SSL_free(ssl_);
}

bool tls_stream::buffered() const {
    return SSL_pending(ssl_) > 0 || BIO_ctrl_pending(in_) > 0;
}

asio::awaitable<error_code> tls_stream::wait_readable() {
    if (buffered()) {
        co_return error_code{};
    }
    co_return co_await inner_->wait_readable();
}

bool tls_stream::should_park() {
    return !buffered() && inner_->should_park();
}

bool tls_stream::park(wake_callback wake) {
    return inner_->park(std::move(wake));
}

void tls_stream::handshake_over(bool ok) {
    if (handshake_done_) {
        return;
    }
    handshake_done_ = true;
    if (handshake_timer_) {
        handshake_timer_->cancel();
    }
    if (ok) {
        counters_.ok.fetch_add(1, std::memory_order_relaxed);
    } else if (timed_out_) {
        counters_.timed_out.fetch_add(1, std::memory_order_relaxed);
    } else {
        counters_.failed.fetch_add(1, std::memory_order_relaxed);
    }
}

error_code tls_stream::failure(int ssl_error) {
    const unsigned long reason = ERR_get_error();
    ERR_clear_error();
    if (ssl_error == SSL_ERROR_SYSCALL || reason == 0) {
        return asio::ssl::error::stream_truncated;
    }
    return {static_cast<int>(reason), asio::error::get_ssl_category()};
}

bool tls_stream::flush() {
    std::array<char, 4096> chunk{};
    for (;;) {
        if (!pending_.empty()) {
            const auto [error, n] = inner_->write_now(std::as_bytes(std::span(pending_)));
            if (error) {
                pending_.clear(); // the connection is gone: its next read says so
                return true;
            }
            pending_.erase(0, n);
            if (!pending_.empty()) {
                return pending_.size() <= pending_bytes_max;
            }
        }
        const int n = BIO_read(out_, chunk.data(), static_cast<int>(chunk.size()));
        if (n <= 0) {
            return true;
        }
        pending_.append(chunk.data(), static_cast<std::size_t>(n));
    }
}

read_result tls_stream::read_now(std::span<std::byte> space) {
    if (closed_ || timed_out_) {
        return {read_result::status::error, 0,
                timed_out_ ? error_code(asio::error::timed_out)
                           : error_code(asio::error::operation_aborted)};
    }
    for (int round = 0; round < rounds_max; ++round) {
        ERR_clear_error();
        const int n = SSL_read(ssl_, space.data(), static_cast<int>(space.size()));
        if (n > 0) {
            handshake_over(true);
            if (!flush()) {
                return {read_result::status::error, 0, asio::error::no_buffer_space};
            }
            return {read_result::status::data, static_cast<std::size_t>(n), {}};
        }
        const int error = SSL_get_error(ssl_, n);
        if (SSL_is_init_finished(ssl_) != 0) {
            handshake_over(true);
        }
        if (error == SSL_ERROR_ZERO_RETURN) {
            flush();
            return {read_result::status::end_of_stream, 0, {}}; // the peer's close_notify
        }
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
            const error_code why = failure(error);
            flush(); // the alert that tells the peer why
            handshake_over(false);
            return {read_result::status::error, 0, why};
        }
        if (!flush()) {
            return {read_result::status::error, 0, asio::error::no_buffer_space};
        }
        std::array<std::byte, cipher_chunk> cipher{};
        const read_result r = inner_->read_now(cipher);
        if (r.state != read_result::status::data) {
            if (r.state == read_result::status::end_of_stream && !handshake_done_) {
                handshake_over(false);
                return {read_result::status::error, 0, asio::ssl::error::stream_truncated};
            }
            return r; // would_block, an error, or the end after the handshake
        }
        BIO_write(in_, cipher.data(), static_cast<int>(r.bytes));
    }
    return {read_result::status::would_block, 0, {}}; // the next turn goes on
}

std::pair<error_code, std::size_t> tls_stream::write_now(std::span<const std::byte> bytes) {
    if (closed_ || bytes.empty()) {
        return {closed_ ? error_code(asio::error::not_connected) : error_code{}, 0};
    }
    if (pending_.size() > pending_bytes_max) {
        flush();
        return {error_code{}, 0}; // later
    }
    ERR_clear_error();
    const int n = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
    if (n <= 0) {
        const int error = SSL_get_error(ssl_, n);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
            return {error_code{}, 0}; // the handshake is not over yet
        }
        return {failure(error), 0};
    }
    flush();
    return {error_code{}, static_cast<std::size_t>(n)};
}

void tls_stream::close() noexcept {
    if (closed_) {
        return;
    }
    closed_ = true;
    if (handshake_timer_) {
        handshake_timer_->cancel();
    }
    if (handshake_done_ && !timed_out_) {
        ERR_clear_error();
        SSL_shutdown(ssl_); // close_notify, best effort
        try {
            flush();
        } catch (...) {
            // Out of memory for the alert: the connection just closes.
        }
    }
    inner_->close();
}

} // namespace sluice::runtime::detail
