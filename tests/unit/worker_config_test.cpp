#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>

#include "apps/sluiced/worker_config.hpp"

namespace {

using namespace sluice::runtime;

std::string all_errors(const config_result& r) {
    std::string out;
    for (const auto& e : r.errors) {
        out += e.to_string() + "\n";
    }
    return out;
}

TEST(worker_config, built_in_default_is_valid_and_admits_its_sources) {
    const auto r = parse_worker_config(default_worker_config(), "default");
    ASSERT_TRUE(r.ok()) << all_errors(r);
    EXPECT_EQ(r.config.sources.size(), 1U);
    EXPECT_GE(r.config.sources[0].count, 100U);
    EXPECT_EQ(r.config.listeners.size(), 1U);
    EXPECT_EQ(r.config.listeners[0].address, "127.0.0.1");
}

TEST(worker_config, every_error_is_located_and_says_what_is_allowed) {
    const std::string text = R"([pool]
buffer_count = 10
buffer_size_bytes = 0
processing_reserve = 2

[[source]]
name = "a"
kind = "generator"
reserve = 3
cap = 2

[[source]]
name = "a"
kind = "carrier-pigeon"

[[source]]
name = "c"
kind = "tcp_client"
address = "not-an-address"
port = 70000

[[listener]]
name = "l"
address = "127.0.0.1"
typo_key = 1
)";
    const auto r = parse_worker_config(text, "broken.toml");
    ASSERT_FALSE(r.ok());
    const std::string report = all_errors(r);
    // file:line:column, key, problem, allowed
    EXPECT_NE(report.find("broken.toml:3:21: pool.buffer_size_bytes: 0 is out of range; allowed: "
                          "an integer from 64"),
              std::string::npos)
        << report;
    EXPECT_NE(report.find("broken.toml:10:7: source[0].cap: cap 2 is below reserve 3"),
              std::string::npos)
        << report;
    EXPECT_NE(report.find("source[1].name: duplicate name 'a'"), std::string::npos) << report;
    EXPECT_NE(report.find("source[1].kind: unknown source kind 'carrier-pigeon'; allowed: "
                          "generator, tcp_client, udp, file"),
              std::string::npos)
        << report;
    EXPECT_NE(report.find("source[2].address: 'not-an-address' is not an IP address"),
              std::string::npos)
        << report;
    EXPECT_NE(report.find("source[2].port: 70000 is out of range"), std::string::npos) << report;
    EXPECT_NE(report.find("listener[0].typo_key: unknown key"), std::string::npos) << report;
}

TEST(worker_config, reserves_that_cannot_be_admitted_are_an_error) {
    const auto r = parse_worker_config(R"([pool]
buffer_count = 100
processing_reserve = 5
[[source]]
kind = "generator"
count = 20
reserve = 5
cap = 5
)",
                                       "p2.toml");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(
        all_errors(r).find(
            "the sources' reserves (100) plus processing_reserve (5) exceed buffer_count (100)"),
        std::string::npos)
        << all_errors(r);
}

TEST(worker_config, syntax_errors_are_located) {
    const auto r = parse_worker_config("[pool\nbuffer_count = 3\n", "syntax.toml");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.errors[0].file, "syntax.toml");
    EXPECT_EQ(r.errors[0].line, 1U);
    EXPECT_EQ(r.errors[0].key, "(syntax)");
}

TEST(worker_config, a_checkpoint_directory_must_exist_and_a_bad_checkpoint_is_found_at_check) {
    const auto missing = parse_worker_config(
        "[checkpoint]\ndirectory = \"/nonexistent/ck\"\ninterval_ms = 0\n", "ck.toml");
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(all_errors(missing).find("ck.toml:2:13: checkpoint.directory: cannot use the "
                                       "checkpoint directory /nonexistent/ck"),
              std::string::npos)
        << all_errors(missing);
    EXPECT_NE(all_errors(missing).find("checkpoint.interval_ms"), std::string::npos);

    const auto dir =
        std::filesystem::temp_directory_path() / ("sluice-config-ck-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto input = dir / "in.csv";
    std::ofstream(input) << "a\n";
    std::ofstream(dir / "tail.checkpoint") << "not a checkpoint";
    const std::string text = "[checkpoint]\ndirectory = \"" + dir.string() +
                             "\"\n[[source]]\nname = \"tail\"\nkind = \"file\"\npath = \"" +
                             input.string() + "\"\n";
    const auto corrupt = parse_worker_config(text, "ck.toml");
    ASSERT_FALSE(corrupt.ok());
    EXPECT_NE(all_errors(corrupt).find("source[0].checkpoint: the checkpoint " + dir.string() +
                                       "/tail.checkpoint is not a sluice file checkpoint"),
              std::string::npos)
        << all_errors(corrupt);
    std::filesystem::remove(dir / "tail.checkpoint");
    EXPECT_TRUE(parse_worker_config(text, "ck.toml").ok()) << "no checkpoint yet is fine";
    std::filesystem::remove_all(dir);
}

TEST(worker_config, missing_file_for_a_file_source_is_an_error) {
    const auto r = parse_worker_config(
        "[[source]]\nkind = \"file\"\npath = \"/nonexistent/x.csv\"\n", "f.toml");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(all_errors(r).find("'/nonexistent/x.csv' does not exist"), std::string::npos);
}

} // namespace

namespace {

TEST(worker_config, mqtt_sources_are_configured_and_checked) {
    const auto ok = parse_worker_config(R"([[source]]
name = "sensors"
kind = "mqtt"
address = "127.0.0.1"
port = 1883
topics = ["sensors/#", "alarms/+"]
qos = 1
client_id = "worker-7"
keepalive_s = 20
payload_bytes_max = 4096
)",
                                        "mqtt.toml");
    ASSERT_TRUE(ok.ok()) << all_errors(ok);
    ASSERT_EQ(ok.config.sources.size(), 1U);
    const auto& m = ok.config.sources[0].mqtt;
    EXPECT_EQ(ok.config.sources[0].kind, source_kind::mqtt);
    EXPECT_EQ(m.topics, (std::vector<std::string>{"sensors/#", "alarms/+"}));
    EXPECT_EQ(m.client_id, "worker-7");
    EXPECT_FALSE(m.clean_session);
    EXPECT_EQ(m.keepalive, std::chrono::seconds(20));
    EXPECT_EQ(m.payload_bytes_max, 4096U);

    const auto bad = parse_worker_config(R"([[source]]
kind = "mqtt"
topics = []
qos = 2
count = 3
)",
                                         "bad_mqtt.toml");
    ASSERT_FALSE(bad.ok());
    const std::string report = all_errors(bad);
    EXPECT_NE(report.find("source[0].topics: is missing or empty"), std::string::npos) << report;
    EXPECT_NE(report.find("source[0].qos: 2 is out of range"), std::string::npos) << report;
    EXPECT_NE(report.find("source[0].client_id: is missing: a persistent session"),
              std::string::npos)
        << report;
    EXPECT_NE(report.find("source[0].count: an MQTT source is one session"), std::string::npos)
        << report;
}

TEST(worker_config, http_listeners_are_configured_with_their_own_keys) {
    const auto ok = parse_worker_config(R"([[http_listener]]
name = "web"
port = 8080
paths = ["/", "/ingest"]
body_bytes_max = 65536
buffer_wait_ms = 50
header_timeout_ms = 2000
retry_after_s = 3
reserve = 2
cap = 8

[[listener]]
name = "tcp"
port = 9000
)",
                                        "http.toml");
    ASSERT_TRUE(ok.ok()) << all_errors(ok);
    ASSERT_EQ(ok.config.listeners.size(), 2U);
    const auto& tcp = ok.config.listeners[0];
    EXPECT_EQ(tcp.name, "tcp");
    EXPECT_FALSE(tcp.http.has_value());
    const auto& web = ok.config.listeners[1];
    ASSERT_TRUE(web.http.has_value());
    EXPECT_EQ(web.port, 8080);
    EXPECT_EQ(web.http->paths, (std::vector<std::string>{"/", "/ingest"}));
    EXPECT_EQ(web.http->body_bytes_max, 65536U);
    EXPECT_EQ(web.http->buffer_wait, std::chrono::milliseconds(50));
    EXPECT_EQ(web.http->header_timeout, std::chrono::milliseconds(2000));
    EXPECT_EQ(web.http->retry_after_seconds, 3U);
    EXPECT_EQ(web.limits.reserve, 2U);
    EXPECT_EQ(web.idle_timeout, std::chrono::seconds(60)) << "keep-alive idle default";
}

} // namespace

namespace {

/// One invalid value for every configuration key: each must be a located error naming that key.
struct bad_key {
    const char* table;    ///< "[worker]", "[[source]]", …; a source row includes its kind
    const char* line;     ///< the invalid setting
    const char* expected; ///< the key the error must name
};

TEST(worker_config, an_invalid_value_of_every_key_is_a_located_error_naming_it) {
    const bad_key rows[] = {
        {"[worker]", "io_threads = 0", "worker.io_threads"},
        {"[worker]", "compute_threads = 0", "worker.compute_threads"},
        {"[worker]", "blocking_threads = 0", "worker.blocking_threads"},
        {"[worker]", "descriptor_reserve = -1", "worker.descriptor_reserve"},
        {"[worker]", "status_interval_ms = -1", "worker.status_interval_ms"},
        {"[worker]", "baseline_buffers_per_source = 0", "worker.baseline_buffers_per_source"},
        {"[worker]", "summary_json = 5", "worker.summary_json"},
        {"[worker]", "mode = \"turbo\"", "worker.mode"},
        {"[pool]", "buffer_count = 1", "pool.buffer_count"},
        {"[pool]", "buffer_size_bytes = 10", "pool.buffer_size_bytes"},
        {"[pool]", "processing_reserve = 0", "pool.processing_reserve"},
        {"[pool]", "sources_max = 0", "pool.sources_max"},
        {"[processing]", "framing = \"xml\"", "processing.framing"},
        {"[processing]", "record_bytes_max = -1", "processing.record_bytes_max"},
        {"[server]", "backoff_initial_ms = 0", "server.backoff_initial_ms"},
        {"[server]", "backoff_max_ms = 0", "server.backoff_max_ms"},
        {"[server]", "reconnect_attempts_max = -1", "server.reconnect_attempts_max"},
        {"[metrics]", "enabled = \"yes\"", "metrics.enabled"},
        {"[metrics]", "address = \"nowhere\"", "metrics.address"},
        {"[metrics]", "port = 70000", "metrics.port"},
        {"[[source]]\nkind = \"generator\"", "name = 5", "source[0].name"},
        {"[[source]]\nkind = \"generator\"", "count = 0", "source[0].count"},
        {"[[source]]\nkind = \"generator\"", "reserve = 0", "source[0].reserve"},
        {"[[source]]\nkind = \"generator\"", "cap = 0", "source[0].cap"},
        {"[[source]]\nkind = \"generator\"", "flush_timeout_ms = 0", "source[0].flush_timeout_ms"},
        {"[[source]]\nkind = \"generator\"", "records_per_second = -1.0",
         "source[0].records_per_second"},
        {"[[source]]\nkind = \"generator\"", "records_max = -1", "source[0].records_max"},
        {"[[source]]\nkind = \"generator\"", "burst_records = 0", "source[0].burst_records"},
        {"[[source]]", "kind = \"carrier_pigeon\"", "source[0].kind"},
        {"[[source]]\nkind = \"tcp_client\"\nport = 9000", "address = \"x\"", "source[0].address"},
        {"[[source]]\nkind = \"tcp_client\"", "port = 0", "source[0].port"},
        {"[[source]]\nkind = \"tcp_client\"\nport = 9000", "connect_timeout_ms = 0",
         "source[0].connect_timeout_ms"},
        {"[[source]]\nkind = \"udp\"", "address = \"x\"", "source[0].address"},
        {"[[source]]\nkind = \"udp\"", "port = 70000", "source[0].port"},
        {"[[source]]\nkind = \"file\"", "path = \"/nonexistent/x.csv\"", "source[0].path"},
        {"[[source]]\nkind = \"mqtt\"\nclient_id = \"c\"\ntopics = [\"t\"]", "port = 0",
         "source[0].port"},
        {"[[source]]\nkind = \"mqtt\"\nclient_id = \"c\"", "topics = \"t\"", "source[0].topics"},
        {"[[source]]\nkind = \"mqtt\"\nclient_id = \"c\"\ntopics = [\"t\"]", "qos = 2",
         "source[0].qos"},
        {"[[source]]\nkind = \"mqtt\"\ntopics = [\"t\"]", "client_id = 7", "source[0].client_id"},
        {"[[source]]\nkind = \"mqtt\"\nclient_id = \"c\"\ntopics = [\"t\"]",
         "clean_session = \"no\"", "source[0].clean_session"},
        {"[[source]]\nkind = \"mqtt\"\nclient_id = \"c\"\ntopics = [\"t\"]", "keepalive_s = 1",
         "source[0].keepalive_s"},
        {"[[source]]\nkind = \"mqtt\"\nclient_id = \"c\"\ntopics = [\"t\"]",
         "payload_bytes_max = 0", "source[0].payload_bytes_max"},
        {"[[source]]\nkind = \"generator\"", "bogus = 1", "source[0].bogus"},
        {"[[listener]]", "name = 5", "listener[0].name"},
        {"[[listener]]", "address = \"x\"", "listener[0].address"},
        {"[[listener]]", "port = 70000", "listener[0].port"},
        {"[[listener]]", "connections_max = 0", "listener[0].connections_max"},
        {"[[listener]]", "backlog = 0", "listener[0].backlog"},
        {"[[listener]]", "reserve = 0", "listener[0].reserve"},
        {"[[listener]]", "cap = 0", "listener[0].cap"},
        {"[[listener]]", "flush_timeout_ms = 0", "listener[0].flush_timeout_ms"},
        {"[[listener]]", "admission_wait_ms = -1", "listener[0].admission_wait_ms"},
        {"[[listener]]", "idle_timeout_ms = -5", "listener[0].idle_timeout_ms"},
        {"[[listener]]", "keepalive_idle_s = 100000", "listener[0].keepalive_idle_s"},
        {"[[listener]]", "keepalive_interval_s = 0", "listener[0].keepalive_interval_s"},
        {"[[listener]]", "keepalive_probes = 0", "listener[0].keepalive_probes"},
        {"[[http_listener]]", "port = 70000", "http_listener[0].port"},
        {"[[http_listener]]", "paths = []", "http_listener[0].paths"},
        {"[[http_listener]]", "paths = [\"ingest\"]", "http_listener[0].paths[0]"},
        {"[[http_listener]]", "paths = [\"/a?b\"]", "http_listener[0].paths[0]"},
        {"[[http_listener]]", "body_bytes_max = 0", "http_listener[0].body_bytes_max"},
        {"[[http_listener]]", "header_bytes_max = 10", "http_listener[0].header_bytes_max"},
        {"[[http_listener]]", "buffer_wait_ms = -1", "http_listener[0].buffer_wait_ms"},
        {"[[http_listener]]", "header_timeout_ms = 0", "http_listener[0].header_timeout_ms"},
        {"[[http_listener]]", "retry_after_s = 0", "http_listener[0].retry_after_s"},
        {"[[http_listener]]", "typo = 1", "http_listener[0].typo"},
        {"[worker]\nmode = \"thread_per_source\"\n[[http_listener]]", "port = 1",
         "http_listener[0]"},
        {"[worker]", "sink_cost_us_per_buffer = -1", "worker.sink_cost_us_per_buffer"},
        {"[worker]", "bogus = 1", "worker.bogus"},
    };
    for (const auto& row : rows) {
        const std::string text = std::string(row.table) + "\n" + row.line + "\n";
        const auto r = parse_worker_config(text, "bad.toml");
        bool named = false;
        for (const auto& e : r.errors) {
            named = named || (e.key == row.expected && e.line > 0 && !e.problem.empty() &&
                              !e.allowed.empty());
        }
        EXPECT_TRUE(named) << row.line << " in " << row.table << ": no located error for "
                           << row.expected << "; got:\n"
                           << all_errors(r);
    }
}

} // namespace

namespace {

// Found by fuzz_config: a float where an integer belongs was cast to int64 (undefined for 1e300).
TEST(worker_config, a_huge_float_where_an_integer_belongs_is_a_type_error) {
    const auto r = parse_worker_config(
        "[pool]\nbuffer_count = 1e300\n[[listener]]\nbacklog = -1e308\n", "float.toml");
    ASSERT_FALSE(r.ok());
    const std::string report = all_errors(r);
    EXPECT_NE(report.find("pool.buffer_count: is not an integer"), std::string::npos) << report;
    EXPECT_NE(report.find("listener[0].backlog: is not an integer"), std::string::npos) << report;
}

} // namespace
