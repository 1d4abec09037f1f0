/// TLS on listeners, HTTP listeners and TCP clients, with real peers from other processes:
/// `openssl s_client`, Python's ssl, `curl --cacert`. A throwaway CA and certificates are made
/// with the `openssl` command at test time (nothing secret is committed). Refusals: a client that
/// trusts another CA, a client without a certificate under mTLS, plain TCP to a TLS port (each
/// closes that connection only), a handshake that never starts (timed out); and the
/// configuration checks: unreadable files, a key that is not the certificate's, an expired
/// certificate (a warning).

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "apps/sluiced/worker_config.hpp"
#include "sluice/source/stream_sources.hpp"
#include "testing/generator_text.hpp"
#include "testing/process.hpp"
#include "testing/test_certificates.hpp"
#include "testing/test_worker.hpp"

namespace {

namespace asio = boost::asio;
using namespace sluice::runtime;
using sluice::test::certs;
using sluice::test::child_process;
using sluice::test::test_worker;
using namespace std::chrono_literals;

const std::string tls_clients =
    std::string(SLUICE_SOURCE_DIR) + "/tests/integration/tls_clients.py";

int run_status(const std::vector<std::string>& argv, const std::string& tag,
               std::string* out = nullptr, std::chrono::milliseconds bound = 60s) {
    static int calls = 0;
    child_process c(argv, "tls_" + tag + "_" + std::to_string(::getpid()) + "_" +
                              std::to_string(++calls));
    const int code = c.wait(bound);
    if (out != nullptr) {
        *out = c.out();
    }
    if (code != 0) {
        std::cerr << "exit " << code << ": " << argv[0] << " " << (argv.size() > 1 ? argv[1] : "")
                  << "\n"
                  << c.err() << "\n";
    }
    return code;
}

tls_options server_tls(const std::string& name = "server") {
    tls_options o;
    o.certificate_file = certs().path(name + ".pem");
    o.key_file = certs().path(name + ".key");
    return o;
}

std::string write_file(const std::string& name, const std::string& content) {
    const std::string p =
        sluice::test::temp_directory() + "/tls_" + std::to_string(::getpid()) + "_" + name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
}

struct tls_worker {
    explicit tls_worker(const tls_options& tls, bool http = false) {
        EXPECT_TRUE(certs().ok) << certs().problem;
        w.sink.keep_raw = true;
        w.sink.check_generator_records = false;
        listener_options options;
        options.name = "tls";
        options.tls = tls;
        if (http) {
            options.http.emplace();
        }
        const auto [error, bound] = w.server.add_tcp_listener(options);
        EXPECT_FALSE(error) << error.message();
        port = bound;
    }
    /// The bytes of every origin that ended, concatenated in origin order.
    std::string delivered() {
        std::string out;
        for (const auto& [id, log] : w.sink.origins_locked()) {
            out += log.raw;
        }
        return out;
    }
    test_worker w{{256, 4096, 8, 4096}, {2, 2, 1}};
    std::uint16_t port = 0;
};

TEST(tls_listener, openssl_s_client_and_python_ssl_deliver_every_record) {
    tls_worker t(server_tls());
    const std::string a = sluice::test::generator_text(1, 0, 2000);
    const std::string b = sluice::test::generator_text(2, 0, 2000);
    // openssl s_client: verifies the server, sends stdin, closes at its end.
    const std::string script = write_file("s_client.sh", "exec /usr/bin/openssl s_client -connect "
                                                         "127.0.0.1:" +
                                                             std::to_string(t.port) + " -CAfile " +
                                                             certs().path("ca.pem") +
                                                             " -verify_return_error -quiet "
                                                             "-no_ign_eof < " +
                                                             write_file("a.txt", a) + "\n");
    EXPECT_EQ(run_status({"/bin/sh", script}, "s_client"), 0);
    std::string out;
    EXPECT_EQ(run_status({"/usr/bin/python3", tls_clients, "send", std::to_string(t.port),
                          certs().path("ca.pem"), write_file("b.txt", b)},
                         "py_send", &out),
              0);
    EXPECT_NE(out.find("\"ok\": true"), std::string::npos) << out;
    ASSERT_TRUE(t.w.sink.wait_for([&] { return t.w.sink.end_of_streams_locked() == 2; }, 30s));
    const auto got = t.delivered();
    EXPECT_TRUE(got == a + b || got == b + a) << got.size() << " bytes";
    const auto stats = t.w.server.stats();
    EXPECT_EQ(stats.tls_handshakes_ok_total, 2U);
    EXPECT_EQ(stats.tls_handshakes_failed_total, 0U);
}

TEST(tls_listener, curl_posts_over_https_to_an_http_listener) {
    tls_worker t(server_tls(), true);
    const std::string body = "over-https-1\nover-https-2\n";
    std::string out;
    EXPECT_EQ(
        run_status({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                    certs().path("ca.pem"), "--data-binary", "@" + write_file("https.txt", body),
                    "https://localhost:" + std::to_string(t.port) + "/"},
                   "curl", &out),
        0);
    EXPECT_EQ(out, "204");
    ASSERT_TRUE(t.w.sink.wait_for([&] { return t.w.sink.end_of_streams_locked() == 1; }, 30s));
    EXPECT_EQ(t.delivered(), body);
}

TEST(tls_listener, a_client_trusting_another_ca_is_refused_and_nothing_arrives) {
    tls_worker t(server_tls());
    std::string out;
    run_status({"/usr/bin/python3", tls_clients, "send", std::to_string(t.port),
                certs().path("other_ca.pem"), write_file("x.txt", "never\n")},
               "py_wrong_ca", &out);
    EXPECT_NE(out.find("\"ok\": false"), std::string::npos) << out;
    EXPECT_NE(out.find("CERTIFICATE_VERIFY_FAILED"), std::string::npos) << out;
    ASSERT_TRUE(t.w.sink.wait_for(
        [&] { return t.w.server.stats().tls_handshakes_failed_total == 1; }, 30s));
    EXPECT_EQ(t.w.sink.total_bytes(), 0U);
}

TEST(tls_listener, under_mtls_a_client_without_a_certificate_is_refused_and_one_with_is_not) {
    tls_options o = server_tls();
    o.verify_peer = true;
    o.ca_file = certs().path("ca.pem");
    tls_worker t(o);
    std::string out;
    run_status({"/usr/bin/python3", tls_clients, "send", std::to_string(t.port),
                certs().path("ca.pem"), write_file("nocert.txt", "no certificate\n")},
               "py_nocert", &out);
    EXPECT_NE(out.find("\"ok\": false"), std::string::npos) << out;
    EXPECT_EQ(run_status({"/usr/bin/python3", tls_clients, "send", std::to_string(t.port),
                          certs().path("ca.pem"), write_file("cert.txt", "with certificate\n"),
                          certs().path("client.pem"), certs().path("client.key")},
                         "py_cert", &out),
              0);
    EXPECT_NE(out.find("\"ok\": true"), std::string::npos) << out;
    ASSERT_TRUE(t.w.sink.wait_for([&] { return t.w.sink.end_of_streams_locked() == 1; }, 30s));
    EXPECT_EQ(t.delivered(), "with certificate\n");
    const auto stats = t.w.server.stats();
    EXPECT_EQ(stats.tls_handshakes_failed_total, 1U);
    EXPECT_EQ(stats.tls_handshakes_ok_total, 1U);
}

TEST(tls_listener, plain_tcp_to_a_tls_port_is_refused_without_affecting_a_tls_connection) {
    tls_worker t(server_tls());
    asio::io_context io;
    asio::ip::tcp::socket plain(io);
    plain.connect({asio::ip::make_address("127.0.0.1"), t.port});
    asio::write(plain, asio::buffer(std::string("not tls at all\n")));
    std::string answer;
    boost::system::error_code error;
    asio::read(plain, asio::dynamic_buffer(answer), error); // the server's alert, then close
    EXPECT_TRUE(error == asio::error::eof || error == asio::error::connection_reset)
        << error.message();
    EXPECT_EQ(answer.find("not tls"), std::string::npos);
    std::string out;
    EXPECT_EQ(run_status({"/usr/bin/python3", tls_clients, "send", std::to_string(t.port),
                          certs().path("ca.pem"), write_file("fine.txt", "fine\n")},
                         "py_fine", &out),
              0);
    ASSERT_TRUE(t.w.sink.wait_for(
        [&] {
            for (const auto& [id, log] : t.w.sink.origins_locked()) {
                if (log.raw == "fine\n" && log.end_of_stream) {
                    return true;
                }
            }
            return false;
        },
        30s));
    const auto stats = t.w.server.stats();
    EXPECT_EQ(stats.tls_handshakes_failed_total, 1U);
    EXPECT_EQ(stats.tls_handshakes_ok_total, 1U);
    EXPECT_EQ(t.w.sink.total_bytes(), 5U) << "nothing of the plain connection arrived";
}

TEST(tls_listener, a_handshake_that_never_starts_times_out) {
    tls_options o = server_tls();
    o.handshake_timeout = 200ms;
    tls_worker t(o);
    asio::io_context io;
    asio::ip::tcp::socket silent(io);
    silent.connect({asio::ip::make_address("127.0.0.1"), t.port});
    const auto started = std::chrono::steady_clock::now();
    std::string answer;
    boost::system::error_code error;
    asio::read(silent, asio::dynamic_buffer(answer), error); // closed by the server
    EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
    ASSERT_TRUE(t.w.sink.wait_for(
        [&] { return t.w.server.stats().tls_handshakes_timed_out_total == 1; }, 10s));
}

TEST(tls_client, a_tcp_client_source_reads_a_tls_server_and_refuses_one_it_cannot_verify) {
    test_worker w({256, 4096, 8, 4096}, {2, 2, 1});
    w.sink.keep_raw = true;
    w.sink.check_generator_records = false;
    const std::string records = sluice::test::generator_text(5, 0, 3000);
    const auto serve = [&](const std::string& cert, std::uint16_t port) {
        return std::make_unique<child_process>(
            std::vector<std::string>{"/usr/bin/python3", tls_clients, "serve", std::to_string(port),
                                     certs().path(cert + ".pem"), certs().path(cert + ".key"),
                                     write_file("served.txt", records)},
            "tls_serve_" + cert + std::to_string(::getpid()));
    };
    // A free port for the Python server: bind 0, read it, close.
    const auto free_port = [] {
        asio::io_context io;
        asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
        return a.local_endpoint().port();
    };
    for (const std::string cert : {"server", "other_server"}) {
        const std::uint16_t port = free_port();
        auto server = serve(cert, port);
        ASSERT_TRUE(server->started());
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (server->out().find("listening") == std::string::npos &&
               std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(20ms);
        }
        tcp_client_options options{"127.0.0.1", port, 2s, {}};
        options.tls.emplace();
        options.tls->ca_file = certs().path("ca.pem");
        options.tls->server_name = "localhost";
        source_options so;
        so.name = cert;
        const auto answer = w.server.register_source(so, [&](environment& e, const executor& lane) {
            return std::make_unique<tcp_client_source>(e, lane, options);
        });
        ASSERT_TRUE(answer.admitted()) << answer.message;
        w.server.start(answer.handle);
        if (cert == "server") {
            ASSERT_TRUE(w.sink.wait_for(
                [&] {
                    const auto& origins = w.sink.origins_locked();
                    const auto it = origins.find(answer.handle);
                    return it != origins.end() && it->second.bytes == records.size();
                },
                30s));
            EXPECT_EQ(w.sink.origin(answer.handle).raw, records);
        } else {
            // Verification fails at every attempt; the source keeps reconnecting with backoff
            // and delivers nothing. Stop it.
            std::this_thread::sleep_for(500ms);
            EXPECT_EQ(w.sink.origin(answer.handle).bytes, 0U);
            EXPECT_GE(w.server.stats().reconnects_total, 1U);
            w.server.stop(answer.handle);
        }
        server->wait(10s);
    }
}

TEST(tls_config, check_config_names_unreadable_files_a_mismatched_key_and_warns_of_expiry) {
    const auto parse = [](const std::string& tls) {
        return parse_worker_config("[[listener]]\nname = \"l\"\n[listener.tls]\n" + tls,
                                   "tls.toml");
    };
    const auto report = [](const config_result& r) {
        std::string out;
        for (const auto& e : r.errors) {
            out += e.to_string() + "\n";
        }
        for (const auto& w : r.warnings) {
            out += "warning: " + w.to_string() + "\n";
        }
        return out;
    };
    const auto ok = parse("certificate_file = \"" + certs().path("server.pem") +
                          "\"\nkey_file = \"" + certs().path("server.key") + "\"\n");
    EXPECT_TRUE(ok.ok()) << report(ok);
    EXPECT_TRUE(ok.warnings.empty()) << report(ok);
    ASSERT_EQ(ok.config.listeners.size(), 1U);
    ASSERT_TRUE(ok.config.listeners[0].tls.has_value());

    const auto missing = parse("certificate_file = \"/nonexistent/cert.pem\"\nkey_file = \"" +
                               certs().path("server.key") + "\"\n");
    EXPECT_NE(report(missing).find("tls.toml:3:1: listener[0].tls: certificate_file "
                                   "/nonexistent/cert.pem cannot be read"),
              std::string::npos)
        << report(missing);

    const auto mismatch = parse("certificate_file = \"" + certs().path("server.pem") +
                                "\"\nkey_file = \"" + certs().path("client.key") + "\"\n");
    EXPECT_NE(report(mismatch).find("does not match certificate_file"), std::string::npos)
        << report(mismatch);

    const auto expired = parse("certificate_file = \"" + certs().path("expired.pem") +
                               "\"\nkey_file = \"" + certs().path("expired.key") + "\"\n");
    EXPECT_TRUE(expired.ok()) << report(expired);
    EXPECT_NE(report(expired).find("warning: tls.toml:3:1: listener[0].tls: certificate_file"),
              std::string::npos)
        << report(expired);
    EXPECT_NE(report(expired).find("expired on"), std::string::npos) << report(expired);

    const auto mtls =
        parse("certificate_file = \"" + certs().path("server.pem") + "\"\nkey_file = \"" +
              certs().path("server.key") + "\"\nverify_peer = true\nmin_version = \"1.1\"\n");
    EXPECT_NE(report(mtls).find("verify_peer needs ca_file"), std::string::npos) << report(mtls);
    EXPECT_NE(report(mtls).find("min_version \"1.1\""), std::string::npos) << report(mtls);
}

} // namespace
