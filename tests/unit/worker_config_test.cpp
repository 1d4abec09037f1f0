#include <string>

#include <gtest/gtest.h>

#include "runtime/worker_config.hpp"

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
    EXPECT_NE(report.find("broken.toml:3:21: pool.buffer_size_bytes: 0 is out of range; allowed: an integer from 64"), std::string::npos) << report;
    EXPECT_NE(report.find("broken.toml:10:7: source[0].cap: cap 2 is below reserve 3"), std::string::npos) << report;
    EXPECT_NE(report.find("source[1].name: duplicate name 'a'"), std::string::npos) << report;
    EXPECT_NE(report.find("source[1].kind: unknown source kind 'carrier-pigeon'; allowed: generator, tcp_client, udp, file"), std::string::npos) << report;
    EXPECT_NE(report.find("source[2].address: 'not-an-address' is not an IP address"), std::string::npos) << report;
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
    EXPECT_NE(all_errors(r).find("the sources' reserves (100) plus processing_reserve (5) exceed buffer_count (100)"),
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

TEST(worker_config, missing_file_for_a_file_source_is_an_error) {
    const auto r = parse_worker_config("[[source]]\nkind = \"file\"\npath = \"/nonexistent/x.csv\"\n",
                                       "f.toml");
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
    EXPECT_NE(report.find("source[0].client_id: is missing: a persistent session"), std::string::npos) << report;
    EXPECT_NE(report.find("source[0].count: an MQTT source is one session"), std::string::npos) << report;
}

} // namespace
