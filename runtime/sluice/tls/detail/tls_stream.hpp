#pragma once
/// Internal: the TLS byte stream (see tls.hpp). OpenSSL over two memory BIOs: ciphertext read
/// from the inner stream goes into one, what OpenSSL writes (handshake, records, alerts) comes
/// out of the other and is written to the inner stream without waiting. Lane-bound, like the
/// inner stream.

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
               tls_counters& counters);
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

private:
    /// Plaintext or ciphertext OpenSSL holds that a read would return without the inner stream.
    bool buffered() const;
    /// Writes what OpenSSL has for the peer; false when it cannot all be written and too much
    /// is pending (the peer does not read).
    bool flush();
    /// The handshake ended (`ok`) or failed: counted once.
    void handshake_over(bool ok);
    /// An OpenSSL failure as an error value (its reason string is the message).
    boost::system::error_code failure(int ssl_error);

    std::unique_ptr<byte_stream> inner_;
    tls_counters& counters_;
    SSL* ssl_ = nullptr;
    BIO* in_ = nullptr;   ///< ciphertext from the peer (owned by ssl_)
    BIO* out_ = nullptr;  ///< ciphertext for the peer (owned by ssl_)
    std::string pending_; ///< ciphertext the inner stream did not take yet
    std::unique_ptr<timer> handshake_timer_;
    bool handshake_done_ = false;
    bool timed_out_ = false;
    bool closed_ = false;
};

} // namespace sluice::runtime::detail
