#pragma once
/// TLS on network sources: a context built once per listener or client from `tls_options`
/// (Asio's ssl::context over OpenSSL: certificate chain, key, CA, peer verification, the lowest
/// protocol version), and `wrap`, which turns a connected byte stream into a TLS one. The TLS
/// stream is a byte_stream like any other (the server, the HTTP source and the MQTT client read
/// it unchanged): OpenSSL runs over memory BIOs fed from the inner stream's non-blocking reads,
/// so the handshake and every record are driven by the same readiness and reads as plain TCP,
/// on the lane, with no thread and no Asio async operation of its own. The handshake is bounded
/// by `handshake_timeout` (a timer of the environment); a failed or timed-out handshake closes
/// that connection only and is counted.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sluice/env/environment.hpp"

namespace sluice::runtime {

enum class tls_role : std::uint8_t { server, client };

struct tls_options {
    std::string certificate_file; ///< PEM chain; a server's (required) or a client's (mTLS)
    std::string key_file;         ///< PEM private key of certificate_file
    std::string ca_file;          ///< PEM CAs that verify the peer (client: required)
    /// Server: require and verify client certificates (mTLS; ca_file verifies them). A client
    /// always verifies the server against ca_file (and server_name, when set).
    bool verify_peer = false;
    std::string min_version = "1.2"; ///< "1.2" or "1.3"
    std::string server_name;         ///< client: SNI and the name the certificate must carry
    duration handshake_timeout = std::chrono::seconds(10);
};

/// Handshakes of every TLS stream a server made (relaxed atomics).
struct tls_counters {
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> failed{0};    ///< refused by either side, or not TLS at all
    std::atomic<std::uint64_t> timed_out{0}; ///< not complete within handshake_timeout
};

/// What `check_tls` found: errors (the context cannot be built) and warnings (it can, but
/// something is wrong: an expired certificate). Each names the file, the problem and the fix.
struct tls_check {
    std::vector<std::string> errors;
    std::vector<std::string> warnings;
};

/// Checks the files and settings for `role` without keeping anything.
tls_check check_tls(const tls_options& options, tls_role role);

class tls_context {
public:
    /// Builds the context; throws std::invalid_argument with check_tls's first error.
    tls_context(const tls_options& options, tls_role role);
    ~tls_context();
    tls_context(const tls_context&) = delete;
    tls_context& operator=(const tls_context&) = delete;

    /// A TLS stream over `inner` (connected), bound to `lane`. A client's handshake begins at
    /// once; a server's when the peer's first bytes come. Its handshake is counted in
    /// `counters` when given (a listener's; clients are not counted).
    std::unique_ptr<byte_stream> wrap(environment& env, const executor& lane,
                                      std::unique_ptr<byte_stream> inner,
                                      tls_counters* counters = nullptr) const;
    const tls_options& options() const noexcept { return options_; }

private:
    struct impl;
    std::unique_ptr<impl> impl_;
    tls_options options_;
    tls_role role_;
};

} // namespace sluice::runtime
