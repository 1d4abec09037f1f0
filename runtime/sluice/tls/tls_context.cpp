// TLS contexts: the checks of a configuration's files, and Asio's ssl::context built from them.
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <fstream>
#include <stdexcept>

#include <boost/asio/ssl/context.hpp>

#include "sluice/tls/detail/tls_stream.hpp"
#include "sluice/tls/tls.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;

namespace {

bool readable(const std::string& path) {
    const std::ifstream in(path);
    return in.good();
}

/// The certificate's notAfter as text.
std::string not_after(const X509* certificate) {
    BIO* text = BIO_new(BIO_s_mem());
    ASN1_TIME_print(text, X509_get0_notAfter(certificate));
    char* data = nullptr;
    const long n = BIO_get_mem_data(text, &data);
    std::string out(data, static_cast<std::size_t>(n));
    BIO_free(text);
    return out;
}

/// Builds the context into `context`, reporting each problem (with its file and fix) in `check`.
void configure(ssl::context& context, const tls_options& o, tls_role role, tls_check& check) {
    const auto fail = [&](const std::string& what) { check.errors.push_back(what); };
    if (o.min_version != "1.2" && o.min_version != "1.3") {
        fail("min_version \"" + o.min_version +
             "\" is not a TLS version sluice allows; use "
             "\"1.2\" or \"1.3\"");
    } else {
        SSL_CTX_set_min_proto_version(context.native_handle(),
                                      o.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
    }
    // Idle connections hold no record buffers. A server keeps no sessions (no cache, no TLS 1.3
    // tickets): ingest clients reconnect rarely, and OpenSSL's default cache grows to 20,000
    // sessions in a listener's context.
    SSL_CTX_set_mode(context.native_handle(), SSL_MODE_RELEASE_BUFFERS);
    // Read ahead: one read of the inner stream takes what is there (many records), not a
    // record header and then its body (two system calls per 16 KiB record).
    SSL_CTX_set_read_ahead(context.native_handle(), 1);
    if (role == tls_role::server) {
        SSL_CTX_set_session_cache_mode(context.native_handle(), SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(context.native_handle(), 0);
    }
    const bool needs_certificate = role == tls_role::server || !o.key_file.empty();
    if (needs_certificate && o.certificate_file.empty()) {
        fail(std::string(role == tls_role::server ? "a TLS listener" : "a TLS client with a key") +
             " needs certificate_file: set it to the PEM certificate chain");
    }
    if (needs_certificate && o.key_file.empty()) {
        fail("key_file is missing: set it to the PEM private key of certificate_file");
    }
    error_code error;
    bool have_certificate = false;
    if (!o.certificate_file.empty()) {
        if (!readable(o.certificate_file)) {
            fail("certificate_file " + o.certificate_file +
                 " cannot be read: check the path and its permissions");
        } else if (context.use_certificate_chain_file(o.certificate_file, error); error) {
            fail("certificate_file " + o.certificate_file + " is not a PEM certificate chain (" +
                 error.message() + ")");
        } else {
            have_certificate = true;
        }
    }
    bool have_key = false;
    if (!o.key_file.empty()) {
        if (!readable(o.key_file)) {
            fail("key_file " + o.key_file + " cannot be read: check the path and its permissions");
        } else if (context.use_private_key_file(o.key_file, ssl::context::pem, error); error) {
            const auto reason = ERR_GET_REASON(static_cast<unsigned long>(error.value()));
            fail(reason == X509_R_KEY_VALUES_MISMATCH
                     ? "key_file " + o.key_file + " does not match certificate_file " +
                           o.certificate_file + ": use the key the certificate was issued for"
                     : "key_file " + o.key_file + " is not a PEM private key (" + error.message() +
                           ")");
        } else {
            have_key = true;
        }
    }
    if (have_certificate && have_key && SSL_CTX_check_private_key(context.native_handle()) != 1) {
        fail("key_file " + o.key_file + " does not match certificate_file " + o.certificate_file +
             ": use the key the certificate was issued for");
    }
    ERR_clear_error();
    if (have_certificate) {
        const X509* certificate = SSL_CTX_get0_certificate(context.native_handle());
        if (certificate != nullptr && X509_cmp_current_time(X509_get0_notAfter(certificate)) < 0) {
            check.warnings.push_back("certificate_file " + o.certificate_file + " expired on " +
                                     not_after(certificate) + ": peers will refuse it; renew it");
        }
    }
    const bool verifies = role == tls_role::client || o.verify_peer;
    if (verifies && o.ca_file.empty()) {
        fail(std::string(role == tls_role::client
                             ? "a TLS client verifies its server: set ca_file to the PEM CAs "
                               "that sign the server's certificate"
                             : "verify_peer needs ca_file: the PEM CAs that sign client "
                               "certificates"));
    }
    if (!o.ca_file.empty()) {
        if (!readable(o.ca_file)) {
            fail("ca_file " + o.ca_file + " cannot be read: check the path and its permissions");
        } else if (context.load_verify_file(o.ca_file, error); error) {
            fail("ca_file " + o.ca_file + " holds no PEM certificate (" + error.message() + ")");
        }
    }
    if (verifies) {
        context.set_verify_mode(role == tls_role::server
                                    ? ssl::verify_peer | ssl::verify_fail_if_no_peer_cert
                                    : ssl::verify_peer);
    } else {
        context.set_verify_mode(ssl::verify_none);
    }
    if (o.handshake_timeout.count() <= 0) {
        fail("handshake_timeout_ms must be above 0");
    }
}

ssl::context::method method_of(tls_role role) {
    return role == tls_role::server ? ssl::context::tls_server : ssl::context::tls_client;
}

} // namespace

tls_check check_tls(const tls_options& options, tls_role role) {
    tls_check check;
    ssl::context context(method_of(role));
    configure(context, options, role, check);
    return check;
}

struct tls_context::impl {
    explicit impl(tls_role role) : context(method_of(role)) {}
    ssl::context context;
};

tls_context::tls_context(const tls_options& options, tls_role role)
    : impl_(std::make_unique<impl>(role)), options_(options), role_(role) {
    tls_check check;
    configure(impl_->context, options, role, check);
    if (!check.errors.empty()) {
        throw std::invalid_argument(check.errors.front());
    }
}

tls_context::~tls_context() = default;

std::unique_ptr<byte_stream> tls_context::wrap(environment& env, const executor& lane,
                                               std::unique_ptr<byte_stream> inner,
                                               tls_counters* counters) const {
    return std::make_unique<detail::tls_stream>(env, lane, impl_->context.native_handle(), role_,
                                                options_, std::move(inner), counters);
}

} // namespace sluice::runtime
