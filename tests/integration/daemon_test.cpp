/// sluiced as an operator runs it: --version and --help, /healthz and /ready answered to curl,
/// log levels and JSON lines, the status line only on a terminal (or when asked), SIGHUP
/// reloads while traffic flows, systemd's notify protocol on a real socket, and the unit file
/// as systemd-analyze reads it.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <gtest/gtest.h>

#include "sluice/version.hpp"
#include "testing/process.hpp"

namespace {

using sluice::test::child_process;
using namespace std::chrono_literals;

std::string write_file(const std::string& name, const std::string& text) {
    const std::string path = ::testing::TempDir() + "/" + name;
    std::ofstream(path) << text;
    return path;
}

/// A small worker: the endpoint and the listener on free ports, a few paced generators.
std::string small_config(const std::string& extra = "") {
    return R"([worker]
status_interval_ms = 100
[metrics]
port = 0
[pool]
buffer_count = 256
buffer_size_bytes = 4096
processing_reserve = 8
[[source]]
name = "gen"
kind = "generator"
count = 4
records_per_second = 1000.0
[[listener]]
name = "in"
port = 0
)" + extra;
}

/// The endpoint's port from the log line that announces it; 0 when it did not come.
int endpoint_port(child_process& p) {
    std::string port;
    p.wait_for_err(
        [&](const std::string& e) {
            std::smatch found;
            if (!std::regex_search(e, found, std::regex(R"(metrics on http://[0-9.]+:(\d+)/)"))) {
                return false;
            }
            port = found[1].str();
            return true;
        },
        30s);
    return port.empty() ? 0 : std::stoi(port);
}

/// curl, from its own process: the status code, and the body in `body`.
int curl(const std::string& url, std::string& body, const std::string& method = "GET") {
    static int calls = 0;
    const std::string tag = "curl_" + std::to_string(::getpid()) + "_" + std::to_string(++calls);
    const std::string body_path = sluice::test::temp_directory() + "/" + tag + ".body";
    child_process c({"/usr/bin/curl", "-s", "-X", method, "-o", body_path, "-w", "%{http_code}",
                     "--max-time", "10", url},
                    tag);
    if (c.wait(20s) != 0) {
        return -1;
    }
    body = child_process::slurp(body_path);
    return std::atoi(c.out().c_str());
}

TEST(daemon, version_prints_the_generated_version_and_exits_0) {
    child_process p({SLUICE_SLUICED, "--version"}, "version");
    ASSERT_EQ(p.wait(30s), 0) << p.err();
    EXPECT_EQ(p.out(), std::string("sluiced ") + sluice::version_string + "\n");
}

TEST(daemon, help_lists_every_exit_code_and_the_signals) {
    child_process p({SLUICE_SLUICED, "--help"}, "help");
    ASSERT_EQ(p.wait(30s), 0) << p.err();
    const std::string help = p.out();
    for (const char* line : {"0  drained", "1  a start-up failure", "2  a configuration error",
                             "3  drained, but a buffer", "4  a second signal",
                             "5  the drain passed", "SIGTERM", "--log-level", "--version"}) {
        EXPECT_NE(help.find(line), std::string::npos) << line << "\n" << help;
    }
}

TEST(daemon, the_man_page_is_generated_from_help_and_has_the_exit_codes) {
    const std::string page = child_process::slurp(std::string(SLUICE_MAN_DIR) + "/man1/sluiced.1");
    ASSERT_FALSE(page.empty()) << "no man page at " << SLUICE_MAN_DIR;
    EXPECT_NE(page.find(sluice::version_string), std::string::npos);
    EXPECT_NE(page.find("drain_timeout_ms"), std::string::npos) << "the exit codes are in it";
    EXPECT_NE(page.find("log\\-level"), std::string::npos) << page.substr(0, 2000);
}

/// Replaces the file a running worker reads on SIGHUP (a rename, as an editor or a
/// configuration manager writes it: the worker never reads half a file).
void replace_file(const std::string& path, const std::string& text) {
    const std::string next = path + ".next";
    std::ofstream(next) << text;
    std::filesystem::rename(next, path);
}

TEST(daemon, a_reload_while_traffic_flows_adds_and_removes_sources_and_loses_nothing) {
    const std::string common = R"([worker]
status_interval_ms = 100
[metrics]
port = 0
[pool]
buffer_count = 512
buffer_size_bytes = 4096
processing_reserve = 8
[[listener]]
name = "in"
port = 0
[[source]]
name = "keep"
kind = "generator"
records_max = 20000
records_per_second = 10000.0
)";
    const auto path = write_file("daemon_reload.toml", common + R"([[source]]
name = "gone"
kind = "generator"
records_max = 1000
)");
    const auto summary = ::testing::TempDir() + "/daemon_reload_summary.json";
    child_process p({SLUICE_SLUICED, "--status", "--config", path, "--summary-json", summary},
                    "daemon_reload");
    std::string port;
    ASSERT_TRUE(p.wait_for_err(
        [&](const std::string& e) {
            std::smatch found;
            if (!std::regex_search(e, found, std::regex(R"(listener 'in' on [0-9.]+:(\d+))"))) {
                return false;
            }
            port = found[1].str();
            return e.find("sources started") != std::string::npos;
        },
        30s))
        << p.err();
    // Traffic on the listener from another process, while the configuration changes.
    child_process load({SLUICE_LOADGEN, "--port", port, "--connections", "20", "--records", "2000",
                        "--id-base", "100"},
                       "daemon_reload_load");
    replace_file(path, common + R"([[source]]
name = "new"
kind = "generator"
records_max = 5000
[[listener]]
name = "in2"
port = 0
)");
    p.signal(SIGHUP);
    ASSERT_TRUE(p.wait_for_in_err("reload: 1 sources added, 1 removed, 0 changed, 1 unchanged; 1 "
                                  "listeners opened, 0 closed",
                                  30s))
        << p.err();
    std::smatch found;
    const std::string err = p.err();
    ASSERT_TRUE(std::regex_search(err, found, std::regex(R"(listener 'in2' on [0-9.]+:(\d+))")))
        << err;
    child_process load2({SLUICE_LOADGEN, "--port", found[1].str(), "--connections", "5",
                         "--records", "1000", "--id-base", "500"},
                        "daemon_reload_load2");
    ASSERT_EQ(load.wait(60s), 0) << load.err();
    ASSERT_EQ(load2.wait(60s), 0) << load2.err();
    const auto reloaded_at = p.err().find("reload: 1 sources added");
    ASSERT_TRUE(p.wait_for_in_err("running 0 ", reloaded_at, 60s))
        << "every generator and connection ends: " << p.err();
    p.signal(SIGTERM);
    ASSERT_EQ(p.wait(30s), 0) << p.err();
    const auto json = child_process::slurp(summary);
    EXPECT_EQ(sluice::test::json_number(json, "records_delivered"),
              20000 + 1000 + 5000 + 40000 + 5000)
        << "keep, gone (ended before the reload), new, and the two listeners' records\n"
        << json;
    EXPECT_EQ(sluice::test::json_number(json, "end_of_stream"), 3 + 20 + 5) << json;
    EXPECT_EQ(sluice::test::json_number(json, "errors"), 0) << json;
    EXPECT_EQ(sluice::test::json_number(json, "buffers_free_at_exit"),
              sluice::test::json_number(json, "buffers_total"));
}

TEST(daemon, a_reload_with_errors_keeps_everything_and_a_pool_change_waits_for_a_restart) {
    const auto path = write_file("daemon_reload_bad.toml", small_config());
    child_process p({SLUICE_SLUICED, "--config", path}, "daemon_reload_bad");
    ASSERT_TRUE(p.wait_for_in_err("sources started", 30s)) << p.err();
    replace_file(path, small_config("[[source]]\nname = \"x\"\nkind = \"telepathy\"\n"));
    p.signal(SIGHUP);
    ASSERT_TRUE(p.wait_for_in_err("reload refused", 30s)) << p.err();
    EXPECT_NE(p.err().find("unknown source kind 'telepathy'"), std::string::npos) << p.err();
    EXPECT_TRUE(p.running()) << "a bad file must not end the worker";
    std::smatch found;
    std::string err = p.err();
    ASSERT_TRUE(std::regex_search(err, found, std::regex(R"(listener 'in' on [0-9.]+:(\d+))")))
        << err;
    const auto listener_port = static_cast<std::uint16_t>(std::stoi(found[1].str()));
    // A bigger pool (needs a restart) and the listener removed (applies at once).
    auto bigger = small_config();
    bigger.replace(bigger.find("buffer_count = 256"), 18, "buffer_count = 300");
    bigger.erase(bigger.find("[[listener]]"));
    replace_file(path, bigger);
    p.signal(SIGHUP);
    ASSERT_TRUE(p.wait_for_in_err("reload: 0 sources added, 0 removed, 0 changed, 1 unchanged; 0 "
                                  "listeners opened, 1 closed",
                                  30s))
        << p.err();
    EXPECT_NE(p.err().find("pool changed; it applies at the next restart"), std::string::npos)
        << p.err();
    boost::system::error_code refused;
    for (int i = 0; i < 100; ++i) { // the close runs on the listener's lane
        boost::asio::io_context io;
        boost::asio::ip::tcp::socket peer(io);
        peer.connect({boost::asio::ip::make_address("127.0.0.1"), listener_port}, refused);
        if (refused) {
            break;
        }
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(refused, boost::asio::error::connection_refused) << "the removed listener accepts";
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait(30s), 0) << p.err();
}

TEST(daemon, the_summary_is_valid_json_whatever_the_configuration_is_called) {
    // A tab and a quote in the file name: the hand-written summary once wrote them raw.
    const auto path = write_file("conf\t\"quoted\".toml", R"([worker]
status_interval_ms = 0
[metrics]
enabled = false
[pool]
buffer_count = 64
buffer_size_bytes = 4096
processing_reserve = 8
[[source]]
kind = "generator"
count = 2
records_per_second = 100.0
)");
    const auto summary = ::testing::TempDir() + "/daemon_summary.json";
    child_process p(
        {SLUICE_SLUICED, "--config", path, "--duration", "0.3", "--summary-json", summary},
        "daemon_summary");
    ASSERT_EQ(p.wait(30s), 0) << p.err();
    boost::system::error_code error;
    const auto value = boost::json::parse(child_process::slurp(summary), error);
    ASSERT_FALSE(error) << "invalid JSON: " << child_process::slurp(summary);
    EXPECT_EQ(value.at("config").as_string(), path);
    EXPECT_EQ(value.at("buffers_free_at_exit"), value.at("buffers_total"));
}

TEST(daemon, healthz_and_ready_answer_curl_and_other_paths_and_methods_are_refused) {
    const auto path = write_file("daemon_http.toml", small_config());
    child_process p({SLUICE_SLUICED, "--config", path}, "daemon_http");
    const int port = endpoint_port(p);
    ASSERT_GT(port, 0) << p.err();
    ASSERT_TRUE(p.wait_for_in_err("sources started", 30s)) << p.err();
    const std::string base = "http://127.0.0.1:" + std::to_string(port);
    std::string body;
    EXPECT_EQ(curl(base + "/healthz", body), 200);
    EXPECT_EQ(body, "ok\n");
    EXPECT_EQ(curl(base + "/ready", body), 200) << body;
    EXPECT_EQ(body, "ready\n");
    EXPECT_EQ(curl(base + "/metrics", body), 200);
    EXPECT_NE(body.find("sluice_build_info{version=\""), std::string::npos) << body.substr(0, 400);
    EXPECT_EQ(curl(base + "/nothing", body), 404);
    EXPECT_EQ(curl(base + "/ready", body, "POST"), 405);
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait(30s), 0) << p.err();
}

/// The status line of the endpoint's answer to `request`, sent raw.
std::string raw_answer(int port, const std::string& request) {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket peer(io);
    peer.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<std::uint16_t>(port)});
    boost::asio::write(peer, boost::asio::buffer(request));
    std::string answer(256, '\0');
    boost::system::error_code error;
    const auto n = peer.read_some(boost::asio::buffer(answer), error);
    answer.resize(error ? 0 : n);
    return answer.substr(0, answer.find("\r\n"));
}

TEST(daemon, bad_requests_to_the_endpoint_get_400_and_the_endpoint_keeps_serving) {
    const auto path = write_file("daemon_bad_http.toml", small_config());
    child_process p({SLUICE_SLUICED, "--config", path}, "daemon_bad_http");
    const int port = endpoint_port(p);
    ASSERT_GT(port, 0) << p.err();
    EXPECT_EQ(raw_answer(port, "GARBAGE\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    EXPECT_EQ(raw_answer(port, "GET /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
              "HTTP/1.1 400 Bad Request")
        << "a body is refused";
    EXPECT_EQ(raw_answer(port, "GET /ready HTTP/1.1\r\nHost: x\r\nX-Long: " +
                                   std::string(9000, 'a') + "\r\n\r\n"),
              "HTTP/1.1 400 Bad Request")
        << "headers over 8 KiB are refused";
    std::string body;
    EXPECT_EQ(curl("http://127.0.0.1:" + std::to_string(port) + "/healthz", body), 200);
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait(30s), 0) << p.err();
}

TEST(daemon, ready_answers_503_with_the_reason_while_draining) {
    // A slow engine (20 ms per buffer) with flat-out generators: the drain has buffers to work
    // through, and /ready says so meanwhile while /healthz still answers.
    const auto path = write_file("daemon_drain.toml", R"([worker]
status_interval_ms = 0
sink_cost_us_per_buffer = 20000
[metrics]
port = 0
[pool]
buffer_count = 512
buffer_size_bytes = 4096
processing_reserve = 8
[[source]]
kind = "generator"
count = 16
cap = 16
)");
    child_process p({SLUICE_SLUICED, "--config", path}, "daemon_drain");
    const int port = endpoint_port(p);
    ASSERT_GT(port, 0) << p.err();
    ASSERT_TRUE(p.wait_for_in_err("sources started", 30s));
    std::this_thread::sleep_for(300ms); // let buffers queue behind the slow engine
    p.signal(SIGTERM);
    const std::string base = "http://127.0.0.1:" + std::to_string(port);
    std::string body;
    int ready = 0;
    int health = 0;
    for (int i = 0; i < 200 && ready != 503; ++i) {
        ready = curl(base + "/ready", body);
        health = curl(base + "/healthz", body);
    }
    EXPECT_EQ(ready, 503);
    EXPECT_EQ(health, 200) << "a draining worker is still alive";
    EXPECT_EQ(p.wait(60s), 0) << p.err();
}

TEST(daemon, the_log_level_filters_and_json_lines_each_parse) {
    const auto path = write_file("daemon_log.toml", small_config());
    {
        child_process p(
            {SLUICE_SLUICED, "--config", path, "--duration", "0.5", "--log-level", "warning"},
            "daemon_warning");
        ASSERT_EQ(p.wait(30s), 0) << p.err();
        EXPECT_EQ(p.err().find("listener 'in'"), std::string::npos)
            << "info lines are below the warning level:\n"
            << p.err();
    }
    {
        child_process p({SLUICE_SLUICED, "--config", path, "--duration", "0.5", "--log-level",
                         "debug", "--log-format", "json"},
                        "daemon_json");
        ASSERT_EQ(p.wait(30s), 0) << p.err();
        std::istringstream lines(p.err());
        std::string line;
        int parsed = 0;
        bool started = false;
        while (std::getline(lines, line)) {
            boost::system::error_code error;
            const auto value = boost::json::parse(line, error);
            ASSERT_FALSE(error) << "not a JSON line: " << line;
            const auto& o = value.as_object();
            ASSERT_TRUE(o.contains("time") && o.contains("level") && o.contains("event") &&
                        o.contains("message"))
                << line;
            started = started || o.at("event").as_string() == "started";
            ++parsed;
        }
        EXPECT_GE(parsed, 3);
        EXPECT_TRUE(started) << p.err();
    }
    {
        // In the configuration too, and a bad level there is a located error.
        const auto bad =
            write_file("daemon_bad_log.toml", small_config("[log]\nlevel = \"loud\"\n"));
        child_process p({SLUICE_SLUICED, "--check-config", bad}, "daemon_bad_log");
        EXPECT_EQ(p.wait(30s), 2);
        EXPECT_NE(p.err().find("log.level"), std::string::npos) << p.err();
        EXPECT_NE(p.err().find("unknown level 'loud'"), std::string::npos) << p.err();
    }
}

TEST(daemon, the_status_line_is_off_when_stderr_is_not_a_terminal_unless_asked) {
    const auto path = write_file("daemon_status.toml", small_config());
    child_process quiet({SLUICE_SLUICED, "--config", path, "--duration", "0.6"}, "daemon_nostatus");
    ASSERT_EQ(quiet.wait(30s), 0) << quiet.err();
    EXPECT_EQ(quiet.err().find("running "), std::string::npos) << quiet.err();
    child_process asked({SLUICE_SLUICED, "--config", path, "--duration", "0.6", "--status"},
                        "daemon_status");
    ASSERT_EQ(asked.wait(30s), 0) << asked.err();
    EXPECT_NE(asked.err().find("running "), std::string::npos) << asked.err();
}

/// A datagram socket standing in for systemd's notify socket.
class notify_socket {
public:
    notify_socket()
        : path_(sluice::test::temp_directory() + "/notify_" + std::to_string(::getpid()) +
                ".sock") {
        ::unlink(path_.c_str());
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        path_.copy(address.sun_path, sizeof address.sun_path - 1);
        ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address);
        timeval timeout{0, 100'000};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    }
    notify_socket(const notify_socket&) = delete;
    notify_socket& operator=(const notify_socket&) = delete;
    ~notify_socket() {
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    const std::string& path() const { return path_; }
    /// Every message received within `bound`, concatenated.
    std::string receive_until(const std::string& wanted, std::chrono::milliseconds bound) {
        const auto deadline = std::chrono::steady_clock::now() + bound;
        while (std::chrono::steady_clock::now() < deadline &&
               received_.find(wanted) == std::string::npos) {
            char message[4096];
            const auto n = ::recv(fd_, message, sizeof message, 0);
            if (n > 0) {
                received_.append(message, static_cast<std::size_t>(n)).push_back('\n');
            }
        }
        return received_;
    }

private:
    std::string path_;
    int fd_ = -1;
    std::string received_;
};

TEST(daemon, systemd_hears_ready_reloading_around_a_reload_and_stopping_at_the_drain) {
    const auto path = write_file("daemon_notify.toml", small_config());
    notify_socket systemd;
    ::setenv("NOTIFY_SOCKET", systemd.path().c_str(), 1);
    child_process p({SLUICE_SLUICED, "--config", path}, "daemon_notify");
    ::unsetenv("NOTIFY_SOCKET");
    const std::string ready = systemd.receive_until("READY=1", 30s);
    EXPECT_NE(ready.find("READY=1"), std::string::npos) << ready;
    EXPECT_NE(ready.find("STATUS=4 sources started"), std::string::npos) << ready;
    p.signal(SIGHUP);
    const std::string reloading = systemd.receive_until("STATUS=reloaded", 30s);
    EXPECT_NE(reloading.find("RELOADING=1"), std::string::npos) << reloading << p.err();
    EXPECT_NE(reloading.find("READY=1\nSTATUS=reloaded"), std::string::npos) << reloading;
    p.signal(SIGTERM);
    const std::string stopping = systemd.receive_until("STOPPING=1", 30s);
    EXPECT_NE(stopping.find("STOPPING=1"), std::string::npos) << stopping;
    EXPECT_EQ(p.wait(30s), 0) << p.err();
}

TEST(daemon, the_unit_file_passes_systemd_analyze_verify) {
    if (::access("/usr/bin/systemd-analyze", X_OK) != 0) {
        GTEST_SKIP() << "systemd-analyze is not installed (ci/deps installs it)";
    }
    // The unit as installed names /usr/bin/sluiced; verify it against the built binary.
    std::ifstream in(std::string(SLUICE_SOURCE_DIR) + "/dist/sluiced.service");
    ASSERT_TRUE(in) << "dist/sluiced.service is missing";
    std::stringstream text;
    text << in.rdbuf();
    const std::string unit =
        std::regex_replace(text.str(), std::regex("/usr/bin/sluiced"), SLUICE_SLUICED);
    for (const char* required :
         {"Type=notify", "LimitNOFILE=", "NoNewPrivileges=yes", "ProtectSystem=strict"}) {
        EXPECT_NE(unit.find(required), std::string::npos) << required;
    }
    const std::string dir = ::testing::TempDir() + "/unit";
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/sluiced.service") << unit;
    // Documentation=man:sluiced(1) is checked too: the generated page is on MANPATH.
    ::setenv("MANPATH", SLUICE_MAN_DIR, 1);
    child_process v({"/usr/bin/systemd-analyze", "verify", dir + "/sluiced.service"},
                    "systemd_verify");
    ::unsetenv("MANPATH");
    EXPECT_EQ(v.wait(60s), 0) << v.out() << v.err();
    EXPECT_EQ(v.err().find("sluiced.service:"), std::string::npos)
        << "systemd-analyze complains about the unit:\n"
        << v.err();
}

} // namespace
