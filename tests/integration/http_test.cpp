/// The HTTP listener with real clients from other processes (curl, Python's http.client and raw
/// sockets) on loopback: keep-alive, chunked and 100-continue bodies, pipelining, every refusal
/// (400, 404, 405, 408, 413, 503), and a flood that drives the pool to pressure: every body
/// answered 204 arrived once, whole, in order per connection; no body answered 429 arrived.

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include "testing/process.hpp"
#include "testing/test_worker.hpp"

namespace {

namespace asio = boost::asio;
using namespace sluice::runtime;
using sluice::test::child_process;
using sluice::test::test_worker;
using namespace std::chrono_literals;

const std::string clients = std::string(SLUICE_SOURCE_DIR) + "/tests/integration/http_clients.py";

std::string unique_tag(const std::string& what) {
    static int calls = 0;
    return "http_" + what + "_" + std::to_string(::getpid()) + "_" + std::to_string(++calls);
}

std::string write_file(const std::string& name, const std::string& content) {
    const std::string path = sluice::test::temp_directory() + "/" + unique_tag(name);
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

/// `lines` unique newline-ended lines.
std::string lines_text(const std::string& prefix, int lines) {
    std::string out;
    for (int i = 0; i < lines; ++i) {
        out += prefix + "-" + std::to_string(i) + " the quick brown fox\n";
    }
    return out;
}

/// Runs a client to its end; its stdout.
std::string run(const std::vector<std::string>& argv, const std::string& tag,
                std::chrono::milliseconds bound = 60s) {
    child_process c(argv, unique_tag(tag));
    EXPECT_TRUE(c.started());
    EXPECT_EQ(c.wait(bound), 0) << c.err();
    return c.out();
}

/// Every origin's raw bytes, once all `bytes` have arrived.
std::vector<std::string> raws(test_worker& w) {
    std::vector<std::string> out;
    for (const auto& [id, log] : w.sink.origins_locked()) {
        out.push_back(log.raw);
    }
    return out;
}

std::uint64_t answers(test_worker& w, http_answer a) {
    return w.server.stats().http_answers_total[static_cast<std::size_t>(a)];
}

struct http_worker {
    explicit http_worker(http_options http = {}, pool_config pool = {256, 4096, 8, 4096})
        : w(pool, {2, 2, 1}) {
        w.sink.keep_raw = true;
        w.sink.check_generator_records = false;
        listener_options options;
        options.name = "http";
        const auto [error, bound] = w.server.add_http_listener(options, std::move(http));
        EXPECT_FALSE(error) << error.message();
        port = bound;
        url = "http://127.0.0.1:" + std::to_string(port) + "/";
    }
    test_worker w;
    std::uint16_t port = 0;
    std::string url;
};

TEST(http_listener, curl_keep_alive_bodies_arrive_in_order_each_ending_a_record) {
    http_worker h;
    const std::string a = lines_text("a", 3);
    const std::string b = "b-without-a-final-newline";
    const std::string big = lines_text("big", 20000); // ~600 KiB: many buffers, 100-continue
    // One curl, three POSTs on one keep-alive connection (--next keeps the connection).
    std::vector<std::string> argv{"/usr/bin/curl"};
    const std::vector<std::pair<std::string, std::string>> posts{{"a", a}, {"b", b}, {"big", big}};
    for (const auto& [name, content] : posts) {
        if (argv.size() > 1) {
            argv.emplace_back("--next");
        }
        argv.insert(argv.end(), {"-s", "-o", "/dev/null", "-w", "%{http_code}\n", "--data-binary",
                                 "@" + write_file(name, content), h.url});
    }
    const auto out = run(argv, "curl");
    EXPECT_EQ(out, "204\n204\n204\n");
    const std::string expected = a + b + "\n" + big;
    ASSERT_TRUE(h.w.sink.wait_for([&] { return h.w.sink.end_of_streams_locked() == 1; }));
    const auto got = raws(h.w);
    ASSERT_EQ(got.size(), 1U) << "one keep-alive connection, one origin";
    EXPECT_TRUE(got[0] == expected) << got[0].size() << " bytes, expected " << expected.size();
    EXPECT_EQ(h.w.server.stats().connections_accepted_total, 1U);
    EXPECT_EQ(answers(h.w, http_answer::no_content), 3U);
    EXPECT_TRUE(h.w.sink.violations().empty()) << h.w.sink.violations().front();
}

TEST(http_listener, a_chunked_body_from_curl_arrives_whole) {
    http_worker h;
    const std::string body = lines_text("chunked", 5000);
    const auto out = run({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                          "Transfer-Encoding: chunked", "--data-binary",
                          "@" + write_file("chunked", body), h.url},
                         "curl_chunked");
    EXPECT_EQ(out, "204");
    ASSERT_TRUE(h.w.sink.wait_for([&] { return h.w.sink.end_of_streams_locked() == 1; }));
    const auto got = raws(h.w);
    ASSERT_EQ(got.size(), 1U);
    EXPECT_TRUE(got[0] == body) << got[0].size() << " bytes, expected " << body.size();
}

TEST(http_listener, python_http_client_hears_every_answer_and_only_accepted_bodies_arrive) {
    http_options http;
    http.body_bytes_max = 4096;
    http_worker h(http);
    const auto out = run({"/usr/bin/python3", clients, "client", std::to_string(h.port)}, "py");
    const auto v = boost::json::parse(out).as_object();
    EXPECT_EQ(v.at("post").as_int64(), 204);
    EXPECT_EQ(v.at("post_query").as_int64(), 204);
    EXPECT_EQ(v.at("get").as_int64(), 405);
    EXPECT_EQ(v.at("allow").as_string(), "POST");
    EXPECT_EQ(v.at("other_path").as_int64(), 404);
    EXPECT_EQ(v.at("empty").as_int64(), 204);
    EXPECT_EQ(v.at("too_large").as_int64(), 413);
    EXPECT_NE(std::string(v.at("too_large_text").as_string()).find("body_bytes_max = 4096"),
              std::string::npos)
        << v.at("too_large_text");
    ASSERT_TRUE(h.w.sink.wait_for([&] { return h.w.sink.end_of_streams_locked() == 1; }));
    const auto got = raws(h.w);
    ASSERT_EQ(got.size(), 1U);
    EXPECT_EQ(got[0], "py-one\npy-two\npy-three\n");
    EXPECT_EQ(answers(h.w, http_answer::not_found), 1U);
    EXPECT_EQ(answers(h.w, http_answer::method_not_allowed), 1U);
    EXPECT_EQ(answers(h.w, http_answer::payload_too_large), 1U);
    EXPECT_EQ(h.w.server.stats().http_refused_body_bytes_total, 8U) << "the 404's body";
}

TEST(http_listener, pipelined_requests_are_answered_in_order_and_arrive_in_order) {
    http_worker h;
    const auto out =
        run({"/usr/bin/python3", clients, "pipeline", std::to_string(h.port), "50"}, "pipe");
    const auto statuses = boost::json::parse(out).at("statuses").as_array();
    ASSERT_EQ(statuses.size(), 50U) << out;
    std::string expected;
    for (int i = 0; i < 50; ++i) {
        EXPECT_EQ(statuses[static_cast<std::size_t>(i)].as_int64(), 204);
        expected += "pipelined-" + std::to_string(i) + "\n";
    }
    ASSERT_TRUE(h.w.sink.wait_for([&] { return h.w.sink.end_of_streams_locked() == 1; }));
    EXPECT_EQ(raws(h.w).at(0), expected);
}

/// A raw socket peer, for what no well-behaved client sends.
struct raw_peer {
    explicit raw_peer(std::uint16_t port) {
        socket.connect({asio::ip::make_address("127.0.0.1"), port});
    }
    void send(const std::string& bytes) { asio::write(socket, asio::buffer(bytes)); }
    /// Everything until the server closes (bounded by the socket's own timeout).
    std::string read_to_end() {
        std::string out;
        boost::system::error_code error;
        asio::read(socket, asio::dynamic_buffer(out), error);
        return out;
    }
    asio::io_context io;
    asio::ip::tcp::socket socket{io};
};

TEST(http_listener, a_malformed_request_is_answered_400_and_closed_without_touching_others) {
    http_worker h;
    raw_peer good(h.port);
    good.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\ngood\n");
    raw_peer bad(h.port);
    bad.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nonsense\r\n\r\n");
    const std::string answer = bad.read_to_end();
    EXPECT_EQ(answer.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0U) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
    EXPECT_NE(answer.find("malformed request"), std::string::npos) << answer;
    good.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nagain\n");
    ASSERT_TRUE(h.w.sink.wait_for([&] {
        for (const auto& [id, log] : h.w.sink.origins_locked()) {
            if (log.raw == "good\nagain\n") {
                return true;
            }
        }
        return false;
    }));
    ASSERT_TRUE(h.w.sink.wait_for([&] { return h.w.sink.errors_locked() == 1; }));
    bool said = false;
    for (const auto& [id, log] : h.w.sink.origins_locked()) {
        said = said || log.error_message.find("malformed request") != std::string::npos;
    }
    EXPECT_TRUE(said) << "the bad connection's Error names the problem";
    EXPECT_EQ(answers(h.w, http_answer::bad_request), 1U);
}

TEST(http_listener, a_header_trickled_past_header_timeout_is_answered_408) {
    http_options http;
    http.header_timeout = 200ms;
    http_worker h(http);
    raw_peer slow(h.port);
    const std::string header = "POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    const auto started = std::chrono::steady_clock::now();
    for (std::size_t i = 0; std::chrono::steady_clock::now() - started < 2s; ++i) {
        boost::system::error_code error;
        asio::write(slow.socket, asio::buffer(std::string(1, header[i % header.size()])), error);
        if (error || answers(h.w, http_answer::request_timeout) > 0) {
            break;
        }
        std::this_thread::sleep_for(20ms);
    }
    const std::string answer = slow.read_to_end();
    EXPECT_EQ(answer.rfind("HTTP/1.1 408 Request Timeout\r\n", 0), 0U) << answer;
    EXPECT_EQ(answers(h.w, http_answer::request_timeout), 1U);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1500ms);
}

TEST(http_listener, a_request_under_way_when_the_worker_stops_is_answered_503) {
    http_worker h;
    raw_peer peer(h.port);
    peer.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf of it");
    ASSERT_TRUE(h.w.sink.wait_for([&] { return h.w.server.stats().http_requests_total == 1; }));
    h.w.server.shutdown();
    const std::string answer = peer.read_to_end();
    EXPECT_EQ(answer.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0U) << answer;
    EXPECT_EQ(answers(h.w, http_answer::service_unavailable), 1U);
}

/// Splits an origin's bytes into the flood's bodies: "c<conn>-r<req>-l<k> payload" lines.
std::vector<std::pair<int, int>> flood_bodies(const std::string& raw, std::string& problem) {
    std::vector<std::pair<int, int>> out;
    std::size_t at = 0;
    int line_in_body = 0;
    while (at < raw.size()) {
        const auto end = raw.find('\n', at);
        if (end == std::string::npos) {
            problem = "an unfinished line at the end";
            return out;
        }
        int c = -1;
        int r = -1;
        int k = -1;
        if (std::sscanf(raw.c_str() + at, "c%d-r%d-l%d payload", &c, &r, &k) != 3 ||
            k != line_in_body) {
            problem = "unexpected line '" + raw.substr(at, end - at) + "'";
            return out;
        }
        if (++line_in_body == 3) {
            out.emplace_back(c, r);
            line_in_body = 0;
        }
        at = end + 1;
    }
    if (line_in_body != 0) {
        problem = "a body cut short";
    }
    return out;
}

TEST(http_listener, a_flood_under_pressure_gets_429s_and_every_204_body_arrives_once_in_order) {
    // A small pool behind a slow sink: connections' buffers queue for processing, so bodies
    // wait longer than buffer_wait for one and are answered 429.
    http_options http;
    http.buffer_wait = 5ms;
    http_worker h(http, {40, 4096, 4, 256});
    h.w.sink.on_each_buffer = [] { std::this_thread::sleep_for(2ms); };
    const auto out = run({"/usr/bin/python3", clients, "flood", std::to_string(h.port), "24", "40"},
                         "flood", 120s);
    const auto results = boost::json::parse(out).at("results").as_array();
    std::set<std::pair<int, int>> accepted;
    std::set<std::pair<int, int>> refused;
    for (std::size_t c = 0; c < results.size(); ++c) {
        for (const auto& r : results[c].as_array()) {
            const auto& row = r.as_array();
            const int status = static_cast<int>(row[1].as_int64());
            const std::pair<int, int> key{static_cast<int>(c), static_cast<int>(row[0].as_int64())};
            if (status == 204) {
                accepted.insert(key);
            } else if (status == 429) {
                refused.insert(key);
                EXPECT_EQ(row[2].as_string(), "1") << "Retry-After";
            } else {
                ADD_FAILURE() << "conn " << c << " request " << row[0] << ": " << status << " "
                              << row[2];
            }
        }
    }
    EXPECT_GT(refused.size(), 0U) << "the flood did not reach pressure: the test proves nothing";
    EXPECT_GT(accepted.size(), 0U);
    h.w.server.shutdown();
    std::multiset<std::pair<int, int>> delivered;
    for (const auto& raw : raws(h.w)) {
        std::string problem;
        const auto bodies = flood_bodies(raw, problem);
        EXPECT_TRUE(problem.empty()) << problem;
        for (std::size_t i = 0; i < bodies.size(); ++i) {
            delivered.insert(bodies[i]);
            if (i > 0) {
                EXPECT_EQ(bodies[i].first, bodies[i - 1].first) << "one connection per origin";
                EXPECT_LT(bodies[i - 1].second, bodies[i].second) << "in order";
            }
        }
    }
    for (const auto& key : accepted) {
        EXPECT_EQ(delivered.count(key), 1U) << "204 body c" << key.first << "-r" << key.second;
    }
    for (const auto& key : refused) {
        EXPECT_EQ(delivered.count(key), 0U) << "429 body c" << key.first << "-r" << key.second;
    }
    EXPECT_EQ(delivered.size(), accepted.size());
    EXPECT_EQ(answers(h.w, http_answer::too_many_requests), refused.size());
    EXPECT_EQ(answers(h.w, http_answer::no_content), accepted.size());
    EXPECT_EQ(h.w.server.stats().buffer_refusals_total, refused.size());
    EXPECT_EQ(h.w.pool.stats().free, 40U) << "every buffer came back";
    std::cout << "flood: " << accepted.size() << " answered 204, " << refused.size()
              << " answered 429\n";
}

} // namespace
