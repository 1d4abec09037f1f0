#pragma once
/// Internal: the TLS byte stream (see tls.hpp). OpenSSL reads and writes through a BIO of
/// sluice's own whose calls are the inner stream's non-blocking read_now and write_now: no copy
/// of the ciphertext and no buffer of it per connection (memory BIOs kept 17 KiB or more each,
/// most of an idle TLS connection's memory). What the inner stream does not take at once waits
/// in `pending_`. Lane-bound, like the inner stream.

#include <memory>
#include <string>

#include "sluice/env/environment.hpp"
#include "sluice/tls/tls.hpp"

using SSL = struct ssl_st;
using SSL_CTX = struct ssl_ctx_st;
using BIO = struct bio_st;

namespace sluice::runtime::detail {

class tls_stream final : public byte_stream {
public:
    tls_stream(environment& env, const executor& lane, SSL_CTX* context, tls_role role,
               const tls_options& options, std::unique_ptr<byte_stream> inner,
               tls_counters* counters);
    ~tls_stream() override;
    tls_stream(const tls_stream&) = delete;
    tls_stream& operator=(const tls_stream&) = delete;

    boost::asio::awaitable<boost::system::error_code> wait_readable() override;
    bool should_park() override;
    bool park(wake_callback wake) override;
    read_result read_now(std::span<std::byte> space) override;
    std::pair<boost::system::error_code, std::size_t>
    write_now(std::span<const std::byte> bytes) override;
    void close() noexcept override;
    std::string describe() const override { return "tls " + inner_->describe(); }
    void keep_alive(std::chrono::seconds idle, std::chrono::seconds interval,
                    int probes) noexcept override {
        inner_->keep_alive(idle, interval, probes);
    }

    /// The BIO's calls (sluice's BIO method; the stream is its data). bio_read: 1 data, 0
    /// nothing now, −1 the inner stream ended or failed (kept for read_now).
    static int bio_read(tls_stream& stream, char* out, std::size_t size, std::size_t& read);
    static int bio_write(tls_stream& stream, const char* in, std::size_t size);

private:
    /// Plaintext or ciphertext OpenSSL holds that a read would return without the inner stream.
    bool buffered() const;
    /// After an SSL_read that wants more: what the inner stream said (its end or error), or
    /// would_block.
    read_result inner_outcome();
    /// Writes what OpenSSL has for the peer; false when it cannot all be written and too much
    /// is pending (the peer does not read).
    bool flush();
    /// The handshake ended (`ok`) or failed: counted once.
    void handshake_over(bool ok);
    /// An OpenSSL failure as an error value (its reason string is the message), kept in failed_.
    boost::system::error_code failure();

    std::unique_ptr<byte_stream> inner_;
    tls_counters* counters_; ///< null: not counted
    SSL* ssl_ = nullptr;
    std::string pending_; ///< ciphertext the inner stream did not take yet
    /// What the inner stream's last read said when it was not data (its end, or an error).
    read_result inner_end_;
    std::unique_ptr<timer> handshake_timer_;
    /// False once the stream is gone: the handshake timer's callback checks it first.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    /// The first failure OpenSSL reported (with its reason); every later call returns it.
    boost::system::error_code failed_;
    bool handshake_done_ = false;
    bool timed_out_ = false;
    bool closed_ = false;
};

} // namespace sluice::runtime::detail
