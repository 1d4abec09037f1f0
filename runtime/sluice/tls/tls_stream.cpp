// The TLS byte stream: OpenSSL over memory BIOs, fed by the inner stream's non-blocking reads.
#include "sluice/tls/detail/tls_stream.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <utility>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>

namespace sluice::runtime::detail {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

/// Ciphertext for the peer that may wait unwritten before the connection fails.
constexpr std::size_t pending_bytes_max = 1U << 20U;

/// sluice's BIO method: reads and writes go straight to the tls_stream's inner stream.
int read_ex(BIO* bio, char* out, std::size_t size, std::size_t* read) {
    BIO_clear_retry_flags(bio);
    const int got =
        tls_stream::bio_read(*static_cast<tls_stream*>(BIO_get_data(bio)), out, size, *read);
    if (got == 0) {
        BIO_set_retry_read(bio); // nothing now: OpenSSL says WANT_READ
    }
    return got > 0 ? 1 : 0; // below 0: the end or an error, no retry
}
int write_ex(BIO* bio, const char* in, std::size_t size, std::size_t* written) {
    // A write never retries (what the inner stream does not take waits in pending_), and it
    // must not clear the flags: the BIO is also the read side, and a write between a read
    // that would block and OpenSSL's look at the flags made a would-block read an error
    // (SSL_ERROR_SYSCALL, "stream truncated") in a handshake driven by SSL_write.
    *written = size;
    return tls_stream::bio_write(*static_cast<tls_stream*>(BIO_get_data(bio)), in, size);
}
long control(BIO* /*bio*/, int command, long /*number*/, void* /*pointer*/) {
    return command == BIO_CTRL_FLUSH ? 1 : 0; // writes are never held by the BIO itself
}
int create(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
}

const BIO_METHOD* stream_method() {
    static BIO_METHOD* const method = [] {
        BIO_METHOD* m =
            BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice byte stream");
        if (m == nullptr) {
            throw std::bad_alloc();
        }
        BIO_meth_set_read_ex(m, read_ex);
        BIO_meth_set_write_ex(m, write_ex);
        BIO_meth_set_ctrl(m, control);
        BIO_meth_set_create(m, create);
        return m;
    }();
    return method;
}

} // namespace

int tls_stream::bio_read(tls_stream& stream, char* out, std::size_t size, std::size_t& read) {
    read = 0;
    const read_result r =
        stream.inner_->read_now(std::span(reinterpret_cast<std::byte*>(out), size));
    if (r.state == read_result::status::data) {
        read = r.bytes;
        return 1;
    }
    if (r.state == read_result::status::would_block) {
        return 0;
    }
    stream.inner_end_ = r; // the end or an error: SSL_read then fails, and read_now says this
    return -1;
}

int tls_stream::bio_write(tls_stream& stream, const char* in, std::size_t size) {
    if (stream.pending_.empty()) {
        const auto [error, n] =
            stream.inner_->write_now(std::span(reinterpret_cast<const std::byte*>(in), size));
        if (error) {
            return 1; // the connection is gone: its next read says so
        }
        in += n;
        size -= n;
    }
    stream.pending_.append(in, size);
    return 1;
}

tls_stream::tls_stream(environment& env, const executor& lane, SSL_CTX* context, tls_role role,
                       const tls_options& options, std::unique_ptr<byte_stream> inner,
                       tls_counters* counters)
    : inner_(std::move(inner)), counters_(counters) {
    ssl_ = SSL_new(context);
    BIO* bio = BIO_new(stream_method());
    if (ssl_ == nullptr || bio == nullptr) {
        BIO_free(bio);
        SSL_free(ssl_);
        throw std::bad_alloc();
    }
    BIO_set_data(bio, this);
    SSL_set_bio(ssl_, bio, bio); // ssl_ owns it from here
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
    }
    // The handshake's bound: at the deadline the inner stream is closed, which ends a parked or
    // waiting read with an error. The callback touches the stream only while it lives: one
    // that fired just before the stream was destroyed still runs, later.
    handshake_timer_ = env.make_timer(lane);
    handshake_timer_->on_expiry(options.handshake_timeout, [this, alive = alive_](bool elapsed) {
        if (elapsed && *alive && !handshake_done_ && !closed_) {
            timed_out_ = true;
            handshake_over(false);
            inner_->close();
        }
    });
}

tls_stream::~tls_stream() {
    *alive_ = false;
    handshake_timer_.reset();
    SSL_free(ssl_);
}

bool tls_stream::buffered() const {
    return SSL_has_pending(ssl_) != 0;
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
        // Never called from the timer's own callback (that is the failure path): the timer can
        // go, so an idle TLS connection does not keep one.
        handshake_timer_.reset();
    }
    if (counters_ != nullptr) {
        auto& count = ok ? counters_->ok : timed_out_ ? counters_->timed_out : counters_->failed;
        count.fetch_add(1, std::memory_order_relaxed);
    }
}

error_code tls_stream::failure() {
    if (failed_) {
        return failed_; // OpenSSL says why once; later calls only fail
    }
    unsigned long reason = ERR_get_error();
    ERR_clear_error();
    if (reason == 0 && SSL_get_verify_result(ssl_) != X509_V_OK) {
        // A handshake that SSL_write drove fails without a reason on the queue: the
        // verification's result still says what it was.
        reason = ERR_PACK(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED);
    }
    failed_ = reason == 0 ? error_code(asio::ssl::error::stream_truncated)
                          : error_code(static_cast<int>(reason), asio::error::get_ssl_category());
    return failed_;
}

bool tls_stream::flush() {
    if (pending_.empty()) {
        return true;
    }
    const auto [error, n] = inner_->write_now(std::as_bytes(std::span(pending_)));
    if (error) {
        pending_ = std::string(); // the connection is gone: its next read says so
        return true;
    }
    pending_.erase(0, n);
    if (pending_.empty()) {
        pending_.shrink_to_fit(); // an idle connection keeps no buffer
    }
    return pending_.size() <= pending_bytes_max;
}

read_result tls_stream::inner_outcome() {
    const read_result end = std::exchange(inner_end_, read_result{});
    if (end.state == read_result::status::end_of_stream && !handshake_done_) {
        handshake_over(false);
        return {read_result::status::error, 0, asio::ssl::error::stream_truncated};
    }
    if (end.state == read_result::status::end_of_stream ||
        end.state == read_result::status::error) {
        return end; // the end after the handshake (without close_notify), or the error
    }
    return {read_result::status::would_block, 0, {}};
}

read_result tls_stream::read_now(std::span<std::byte> space) {
    if (failed_) {
        return {read_result::status::error, 0, failed_};
    }
    if (closed_ || timed_out_) {
        return {read_result::status::error, 0,
                timed_out_ ? error_code(asio::error::timed_out)
                           : error_code(asio::error::operation_aborted)};
    }
    if (!flush()) {
        return {read_result::status::error, 0, asio::error::no_buffer_space};
    }
    ERR_clear_error();
    const int n = SSL_read(ssl_, space.data(), static_cast<int>(space.size()));
    if (SSL_is_init_finished(ssl_) != 0) {
        handshake_over(true);
    }
    if (n > 0) {
        if (!flush()) {
            return {read_result::status::error, 0, asio::error::no_buffer_space};
        }
        return {read_result::status::data, static_cast<std::size_t>(n), {}};
    }
    const int error = SSL_get_error(ssl_, n);
    if (error == SSL_ERROR_ZERO_RETURN) {
        flush();
        return {read_result::status::end_of_stream, 0, {}}; // the peer's close_notify
    }
    // The inner stream ended or failed: that is the outcome, as for a plain stream (OpenSSL
    // calls an end without close_notify an error of its own); an end inside the handshake is a
    // failure. Any other TLS failure (a certificate refused) is said with OpenSSL's reason.
    const bool inner_ended = inner_end_.state != read_result::status::would_block;
    const bool unexpected_eof = error == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) ==
                                                              SSL_R_UNEXPECTED_EOF_WHILE_READING;
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE ||
        (inner_ended && (error == SSL_ERROR_SYSCALL || unexpected_eof))) {
        ERR_clear_error();
        if (!flush()) {
            return {read_result::status::error, 0, asio::error::no_buffer_space};
        }
        return inner_outcome();
    }
    const error_code why = failure();
    flush(); // the alert that tells the peer why
    handshake_over(false);
    inner_end_ = {};
    return {read_result::status::error, 0, why};
}

std::pair<error_code, std::size_t> tls_stream::write_now(std::span<const std::byte> bytes) {
    if (failed_) {
        return {failed_, 0};
    }
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
        return {failure(), 0};
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
