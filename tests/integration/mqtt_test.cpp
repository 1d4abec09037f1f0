/// The MQTT source against a real mosquitto broker (Debian's) started on a free loopback port,
/// with messages published from a separate client process (mosquitto_pub): every message
/// delivered once at QoS 1 across a broker restart with a persistent session, QoS 0 delivery,
/// the oversize policy, and backoff while the broker is down, then recovery.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "sluice/mqtt/mqtt_source.hpp"
#include "testing/mosquitto_broker.hpp"
#include "testing/process.hpp"
#include "testing/test_certificates.hpp"
#include "testing/test_worker.hpp"

namespace {

namespace asio = boost::asio;
using namespace sluice::runtime;
using sluice::test::child_process;
using sluice::test::test_worker;
using namespace std::chrono_literals;

using broker_base = sluice::test::mosquitto_broker;

/// A broker in the test's temporary directory.
struct broker : broker_base {
    explicit broker(const std::string& name, const std::string& extra = {})
        : broker_base(::testing::TempDir() + "/" + name, extra) {}
};

std::string numbered_lines(const std::string& prefix, int count) {
    std::string lines;
    for (int i = 0; i < count; ++i) {
        lines += prefix + "," + std::to_string(i) + "\n";
    }
    return lines;
}

server_options quick_backoff() {
    server_options options;
    options.backoff_initial = 50ms;
    options.backoff_max = 400ms;
    options.reconnect_attempts_max = 200;
    return options;
}

struct mqtt_run {
    test_worker w;
    std::shared_ptr<mqtt_counters> counters = std::make_shared<mqtt_counters>();
    source_handle handle = 0;

    mqtt_run(std::uint16_t port, std::string client_id, int qos,
             std::uint32_t payload_bytes_max = 65536, server_options backoff = quick_backoff(),
             production_options threads = {2, 2, 1})
        : w({256, 4096, 8, 64}, threads, backoff) {
        w.sink.check_generator_records = false;
        w.sink.keep_raw = true;
        mqtt_options o;
        o.port = port;
        o.client_id = std::move(client_id);
        o.topics = {"sensors/#"};
        o.qos = qos;
        o.clean_session = false;
        o.keepalive = 5s;
        o.payload_bytes_max = payload_bytes_max;
        o.counters = counters;
        source_options options;
        options.name = "mqtt";
        options.flush_timeout = 10ms;
        const auto answer =
            w.server.register_source(options, [o](environment& e, const executor& lane) {
                return std::make_unique<mqtt_source>(e, lane, o);
            });
        EXPECT_TRUE(answer.admitted()) << answer.message;
        handle = answer.handle;
        w.server.start(handle);
    }

    /// Each line delivered so far, with how often it arrived.
    std::map<std::string, int> lines() {
        std::map<std::string, int> seen;
        std::istringstream raw(w.sink.origin(handle).raw);
        for (std::string line; std::getline(raw, line);) {
            ++seen[line];
        }
        return seen;
    }
    bool wait_records(std::uint64_t n, std::chrono::milliseconds bound = 30s) {
        return w.sink.wait_for([&] { return w.sink.total_records_locked() >= n; }, bound);
    }
};

TEST(mqtt, qos1_every_message_arrives_once_across_a_broker_restart) {
    broker b("mqtt_restart");
    b.start();
    // The first reconnect comes 1.5–3 s after the loss (jittered), long after the publish below.
    server_options slow_first_retry = quick_backoff();
    slow_first_retry.backoff_initial = 3s;
    slow_first_retry.backoff_max = 3s;
    mqtt_run run(b.port(), "sluice-restart", 1, 65536, slow_first_retry);
    ASSERT_TRUE(run.w.sink.wait_for([&] { return run.counters->connects.load() == 1; }, 10s));
    b.publish("sensors/a", numbered_lines("before", 300), 1);
    ASSERT_TRUE(run.wait_records(300)) << run.w.sink.total_records();

    // QoS 1 allows a duplicate when the broker stops before it has processed the client's
    // PUBACK (it then redelivers). Give it time to take the acknowledgements in first, so any
    // duplicate below is the source's fault.
    std::this_thread::sleep_for(500ms);
    // The broker goes away (saving the session) and comes back on the same port; the messages
    // published while the source is still waiting to reconnect wait in its persistent session.
    b.stop();
    b.start();
    b.publish("sensors/b", numbered_lines("after", 300), 1);
    EXPECT_EQ(run.counters->connects.load(), 1U)
        << "reconnected before the publish: the session was not needed";
    ASSERT_TRUE(run.wait_records(600)) << run.w.sink.total_records();
    std::this_thread::sleep_for(200ms); // a duplicate would arrive now
    const auto seen = run.lines();
    EXPECT_EQ(seen.size(), 600U);
    for (const auto& [line, times] : seen) {
        EXPECT_EQ(times, 1) << "'" << line << "' arrived " << times << " times";
    }
    EXPECT_GE(run.counters->connects.load(), 2U);
    EXPECT_GE(run.w.server.stats().reconnects_by_kind[static_cast<std::size_t>(source_kind::mqtt)],
              1U);
    EXPECT_TRUE(run.w.sink.violations().empty()) << run.w.sink.violations().front();
}

TEST(mqtt, qos0_messages_arrive_and_oversize_payloads_are_dropped_and_counted) {
    broker b("mqtt_qos0");
    b.start();
    mqtt_run run(b.port(), "sluice-qos0", 0, 100);
    ASSERT_TRUE(run.w.sink.wait_for([&] { return run.counters->connects.load() == 1; }, 10s));
    b.publish("sensors/x",
              numbered_lines("small", 100) + std::string(500, 'L') + "\n" +
                  numbered_lines("more", 100),
              0);
    ASSERT_TRUE(run.wait_records(200)) << run.w.sink.total_records();
    ASSERT_TRUE(
        run.w.sink.wait_for([&] { return run.counters->oversize_dropped.load() == 1; }, 10s));
    const auto seen = run.lines();
    EXPECT_EQ(seen.size(), 200U);
    EXPECT_EQ(seen.count(std::string(500, 'L')), 0U);
    EXPECT_EQ(run.counters->messages.load(), 200U);
}

TEST(mqtt, broker_down_means_backoff_then_recovery_when_it_comes_up) {
    broker b("mqtt_down");
    mqtt_run run(b.port(), "sluice-down", 1);
    // Nothing listens yet: the source keeps reopening with backoff; no thread blocks meanwhile.
    ASSERT_TRUE(run.w.sink.wait_for(
        [&] {
            return run.w.server.stats()
                       .reconnects_by_kind[static_cast<std::size_t>(source_kind::mqtt)] >= 3;
        },
        10s));
    EXPECT_EQ(run.counters->connects.load(), 0U);
    EXPECT_EQ(run.w.sink.errors(), 0U) << "still within its reconnect attempts";
    b.start();
    ASSERT_TRUE(run.w.sink.wait_for([&] { return run.counters->connects.load() == 1; }, 10s));
    b.publish("sensors/late", numbered_lines("late", 50), 1);
    ASSERT_TRUE(run.wait_records(50));
    EXPECT_EQ(run.lines().size(), 50U);
    b.stop();
}

} // namespace

namespace {

TEST(mqtt, a_reconnect_leaves_neither_the_new_session_nor_a_socket_that_reused_the_number_deaf) {
    // libmosquitto closes its socket when a loop call fails. A watch that lingered over that
    // descriptor number until after the reconnect removed, when it finally went (EPOLL_CTL_DEL
    // by number), the registration of whatever socket of the lane had the number by then: the
    // new session's, or — forced here — a connection a listener on the same lane accepted
    // meanwhile. That socket then never became readable again: no data, no error.
    broker b("mqtt_reuse");
    b.start();
    server_options backoff = quick_backoff();
    backoff.backoff_initial = 1500ms; // the reconnect comes after the accept below
    backoff.backoff_max = 1500ms;
    mqtt_run run(b.port(), "sluice-reuse", 1, 65536, backoff, {1, 2, 1}); // one lane for all
    ASSERT_TRUE(run.w.sink.wait_for([&] { return run.counters->connects.load() == 1; }, 10s));
    const auto [error, port] = run.w.server.add_tcp_listener(listener_options{});
    ASSERT_FALSE(error) << error.message();
    asio::io_context io;
    asio::ip::tcp::socket peer(io);
    peer.open(asio::ip::tcp::v4()); // its descriptor taken now, before the loss frees one
    b.stop();                       // the library closes its socket: that number is free
    ASSERT_TRUE(run.w.sink.wait_for(
        [&] {
            return run.w.server.stats()
                       .reconnects_by_kind[static_cast<std::size_t>(source_kind::mqtt)] >= 1;
        },
        10s));
    peer.connect({asio::ip::make_address("127.0.0.1"), port}); // accepted: the lowest free number
    ASSERT_TRUE(run.w.sink.wait_for(
        [&] { return run.w.server.stats().connections_accepted_total == 1; }, 10s));
    b.start();
    ASSERT_TRUE(run.w.sink.wait_for([&] { return run.counters->connects.load() >= 2; }, 20s))
        << "connects: " << run.counters->connects.load();
    std::this_thread::sleep_for(300ms); // the old session's stream is gone by now
    // Only now, with the new session settled, send on both.
    asio::write(peer, asio::buffer(numbered_lines("tcp", 200)));
    peer.shutdown(asio::ip::tcp::socket::shutdown_send);
    b.publish("sensors/after", numbered_lines("after", 500), 1);
    EXPECT_TRUE(run.w.sink.wait_for([&] { return run.w.sink.end_of_streams_locked() == 1; }, 20s))
        << "the accepted connection never ended: its socket is deaf";
    EXPECT_TRUE(run.wait_records(700, 20s)) << run.w.sink.total_records() << " of 700 delivered";
    EXPECT_EQ(run.lines().size(), 500U) << "the new MQTT session is deaf";
}

} // namespace

namespace {

/// A broker address whose TCP connects hang: a listener with a full accept queue drops SYNs.
struct unanswering_broker {
    unanswering_broker() {
        acceptor.open(asio::ip::tcp::v4());
        acceptor.bind({asio::ip::make_address("127.0.0.1"), 0});
        acceptor.listen(0);
        filler.connect(acceptor.local_endpoint()); // fills the accept queue of one
    }
    std::uint16_t port() const { return acceptor.local_endpoint().port(); }
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor{io};
    asio::ip::tcp::socket filler{io};
};

source_server::source_factory mqtt_to(std::uint16_t port, std::chrono::milliseconds handshake) {
    mqtt_options o;
    o.port = port;
    o.topics = {"t"};
    o.clean_session = true;
    o.handshake_timeout = handshake;
    return [o](environment& e, const executor& lane) {
        return std::make_unique<mqtt_source>(e, lane, o);
    };
}

/// A broker that answers every connection with `reply` (raw bytes) after reading its first
/// packet, then closes it: for refusals and malformed answers.
struct scripted_broker {
    explicit scripted_broker(std::string reply) : reply_(std::move(reply)) {
        acceptor.open(asio::ip::tcp::v4());
        acceptor.bind({asio::ip::make_address("127.0.0.1"), 0});
        acceptor.listen();
        thread_ = std::thread([this] {
            for (int i = 0; i < 8 && !done_; ++i) {
                boost::system::error_code error;
                asio::ip::tcp::socket peer(io);
                acceptor.accept(peer, error);
                if (error || done_) {
                    return;
                }
                std::array<char, 512> in{};
                peer.read_some(asio::buffer(in), error); // CONNECT
                asio::write(peer, asio::buffer(reply_), error);
                std::this_thread::sleep_for(50ms);
            }
        });
    }
    ~scripted_broker() {
        done_ = true;
        boost::system::error_code ignored;
        asio::ip::tcp::socket poke(io);
        poke.connect(acceptor.local_endpoint(), ignored); // ends a pending accept
        thread_.join();
    }
    std::uint16_t port() const { return acceptor.local_endpoint().port(); }
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor{io};
    std::string reply_;
    std::atomic<bool> done_{false};
    std::thread thread_;
};

TEST(mqtt, a_broker_that_refuses_or_answers_garbage_fails_the_source_saying_why) {
    const std::string connack_ok("\x20\x02\x00\x00", 4);
    const std::string suback_ok("\x90\x03\x00\x01\x01", 5);
    const std::vector<std::pair<std::string, std::string>> cases = {
        {std::string("\x20\x02\x00\x05", 4), "the broker refused the connection: not authorised"},
        {connack_ok + std::string("\x90\x03\x00\x01\x80", 5),
         "the broker refused the subscription to 't'"},
        {connack_ok + suback_ok + std::string("\x36\x03\x00\x01t", 5),
         "the broker sent a PUBLISH with QoS 3"},
        {std::string("\x20\xFF\xFF\xFF\xFF\x01", 6),
         "a remaining length longer than four bytes (not MQTT)"},
    };
    for (const auto& [reply, said] : cases) {
        scripted_broker fake(reply);
        server_options once = quick_backoff();
        once.reconnect_attempts_max = 1;
        test_worker w({64, 4096, 8, 64}, {2, 2, 1}, once);
        source_options options;
        options.name = "mqtt";
        const auto answer = w.server.register_source(options, mqtt_to(fake.port(), 2s));
        ASSERT_TRUE(answer.admitted());
        w.server.start(answer.handle);
        ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.errors_locked() == 1; }, 10s)) << said;
        EXPECT_NE(w.sink.origin(answer.handle).error_message.find(said), std::string::npos)
            << w.sink.origin(answer.handle).error_message;
        EXPECT_EQ(w.sink.origin(answer.handle).records, 0U);
    }
}

TEST(mqtt, a_connect_that_hangs_meets_its_deadline_and_a_stop_cancels_it_at_once) {
    // The connect used to block a thread of the shared blocking pool for as long as the
    // kernel retried SYNs (minutes): with one blocking thread, two such brokers starved every
    // other connect, and a stop or shutdown waited for it. Now it runs on the lane, bounded by
    // the handshake timeout, and a stop ends it.
    const unanswering_broker nobody;
    source_options options;
    options.name = "mqtt";
    test_worker w({64, 4096, 8, 64}, {2, 2, 1}, quick_backoff());
    const auto slow = w.server.register_source(options, mqtt_to(nobody.port(), 300ms));
    const auto stuck = w.server.register_source(options, mqtt_to(nobody.port(), 60s));
    ASSERT_TRUE(slow.admitted() && stuck.admitted());
    w.server.start(slow.handle);
    w.server.start(stuck.handle);
    const auto mqtt = static_cast<std::size_t>(source_kind::mqtt);
    // The 300 ms deadline passes (a reconnect with backoff), the other connect hangs on.
    EXPECT_TRUE(w.sink.wait_for([&] { return w.server.stats().reconnects_by_kind[mqtt] >= 2; }, 5s))
        << w.server.stats().reconnects_by_kind[mqtt] << " reconnects";
    // A stop ends the hanging one at once, not when the kernel gives up.
    const auto asked = std::chrono::steady_clock::now();
    w.server.stop(stuck.handle);
    EXPECT_TRUE(
        w.sink.wait_for([&] { return w.server.state(stuck.handle) == source_state::stopped; }, 2s))
        << "a stop waited for the connect";
    EXPECT_LT(std::chrono::steady_clock::now() - asked, 1s);
    w.server.stop(slow.handle);
    EXPECT_TRUE(
        w.sink.wait_for([&] { return w.server.state(slow.handle) == source_state::stopped; }, 2s));
}

} // namespace

namespace {

TEST(mqtt, a_broker_named_by_host_name_is_looked_up_off_the_lane_and_a_bad_name_says_so) {
    broker b("mqtt_named");
    b.start();
    auto counters = std::make_shared<mqtt_counters>();
    test_worker w({64, 4096, 8, 64}, {2, 2, 1}, quick_backoff());
    mqtt_options named;
    named.host = "localhost"; // /etc/hosts: no DNS server needed
    named.port = b.port();
    named.topics = {"t"};
    named.clean_session = true;
    named.counters = counters;
    mqtt_options unknown = named;
    unknown.host = "no-such-broker.invalid";
    unknown.counters = nullptr;
    source_options options;
    options.name = "mqtt";
    const auto good =
        w.server.register_source(options, [named](environment& e, const executor& lane) {
            return std::make_unique<mqtt_source>(e, lane, named);
        });
    std::shared_ptr<mqtt_source*> bad_source = std::make_shared<mqtt_source*>(nullptr);
    const auto bad = w.server.register_source(
        options, [unknown, bad_source](environment& e, const executor& lane) {
            auto s = std::make_unique<mqtt_source>(e, lane, unknown);
            *bad_source = s.get();
            return s;
        });
    w.server.start(good.handle);
    w.server.start(bad.handle);
    EXPECT_TRUE(w.sink.wait_for([&] { return counters->connects.load() == 1; }, 10s));
    const auto mqtt = static_cast<std::size_t>(source_kind::mqtt);
    EXPECT_TRUE(
        w.sink.wait_for([&] { return w.server.stats().reconnects_by_kind[mqtt] >= 1; }, 10s));
    w.server.stop(bad.handle);
    ASSERT_TRUE(
        w.sink.wait_for([&] { return w.server.state(bad.handle) == source_state::stopped; }, 5s));
    EXPECT_NE((*bad_source)->error_detail().find("look up 'no-such-broker.invalid'"),
              std::string::npos)
        << (*bad_source)->error_detail();
}

} // namespace

namespace {

/// A broker with a second listener that speaks TLS (the test CA's localhost certificate).
struct tls_broker {
    explicit tls_broker(const std::string& name)
        : tls_port(sluice::test::free_loopback_port()),
          b(name, "listener " + std::to_string(tls_port) + " 127.0.0.1\ncertfile " +
                      sluice::test::certs().path("server.pem") + "\nkeyfile " +
                      sluice::test::certs().path("server.key") + "\n") {}
    std::uint16_t tls_port;
    broker b;
};

mqtt_options tls_options_to(std::uint16_t port, const std::string& ca) {
    mqtt_options o;
    o.host = "127.0.0.1";
    o.port = port;
    o.client_id = "tls-client";
    o.topics = {"sensors/#"};
    o.qos = 1;
    o.clean_session = true;
    o.handshake_timeout = 5s;
    o.counters = std::make_shared<mqtt_counters>();
    o.tls.emplace();
    o.tls->ca_file = sluice::test::certs().path(ca);
    o.tls->server_name = "localhost";
    return o;
}

TEST(mqtt, over_tls_messages_published_with_mosquitto_pub_cafile_arrive_and_another_ca_fails) {
    ASSERT_TRUE(sluice::test::certs().ok) << sluice::test::certs().problem;
    tls_broker t("mqtt_tls");
    t.b.start();
    server_options once = quick_backoff();
    once.reconnect_attempts_max = 1;
    test_worker w({64, 4096, 8, 64}, {2, 2, 1}, once);
    w.sink.check_generator_records = false;
    w.sink.keep_raw = true;
    source_options options;
    options.name = "mqtt-tls";
    options.flush_timeout = 10ms;
    const mqtt_options good_options = tls_options_to(t.tls_port, "ca.pem");
    const auto good =
        w.server.register_source(options, [good_options](environment& e, const executor& lane) {
            return std::make_unique<mqtt_source>(e, lane, good_options);
        });
    ASSERT_TRUE(good.admitted()) << good.message;
    w.server.start(good.handle);
    // Connected and subscribed over TLS; then publish over TLS from another process.
    ASSERT_TRUE(w.sink.wait_for([&] { return good_options.counters->connects.load() == 1; }, 20s))
        << w.sink.origin(good.handle).error_message;
    const std::string file = ::testing::TempDir() + "/mqtt_tls_publish.txt";
    std::ofstream(file) << "over-tls-1\nover-tls-2\nover-tls-3\n";
    const std::string command = "mosquitto_pub -h localhost -p " + std::to_string(t.tls_port) +
                                " --cafile " + sluice::test::certs().path("ca.pem") +
                                " -q 1 -t sensors/tls -l < " + file;
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() == 3; }, 20s));
    EXPECT_EQ(w.sink.origin(good.handle).raw, "over-tls-1\nover-tls-2\nover-tls-3\n");

    const auto bad = w.server.register_source(
        options,
        [o = tls_options_to(t.tls_port, "other_ca.pem")](environment& e, const executor& lane) {
            return std::make_unique<mqtt_source>(e, lane, o);
        });
    ASSERT_TRUE(bad.admitted()) << bad.message;
    w.server.start(bad.handle);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.errors_locked() == 1; }, 20s));
    const std::string why = w.sink.origin(bad.handle).error_message;
    EXPECT_NE(why.find("certificate verify failed"), std::string::npos) << why;
}

} // namespace
