/// The hostile-input matrix, peer and file rows, on real loopback sockets and real files: a record
/// larger than a buffer, garbage frames, half a record then a reset, a file removed or truncated
/// while it is being read. In every case what was already accepted arrives, in order, exactly
/// once; the bad part is counted; the connection or file is handled by policy; every buffer
/// comes back. (Configuration rows: worker_config_test; SIGTERM while suspended: sluiced_test.)

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "sluice/source/generator_source.hpp"
#include "sluice/source/stream_sources.hpp"
#include "testing/generator_text.hpp"
#include "testing/process.hpp"
#include "testing/test_worker.hpp"

namespace {

namespace asio = boost::asio;
using namespace sluice::runtime;
using sluice::test::generator_text;
using sluice::test::test_worker;
using namespace std::chrono_literals;

std::string frame(const std::string& payload) {
    const auto size = static_cast<std::uint32_t>(payload.size());
    std::string out;
    out += static_cast<char>(size >> 24U);
    out += static_cast<char>(size >> 16U);
    out += static_cast<char>(size >> 8U);
    out += static_cast<char>(size);
    return out + payload;
}

/// A listener on a free loopback port, and one connected peer.
struct peer_connection {
    explicit peer_connection(test_worker& w) {
        const auto [error, port] = w.server.add_tcp_listener(listener_options{});
        EXPECT_FALSE(error) << error.message();
        socket.connect({asio::ip::make_address("127.0.0.1"), port});
    }
    void send(const std::string& bytes) { asio::write(socket, asio::buffer(bytes)); }
    asio::io_context io;
    asio::ip::tcp::socket socket{io};
};

TEST(hostile_input, a_record_larger_than_a_buffer_is_dropped_and_counted_and_the_rest_arrive) {
    test_worker w({512, 4096, 8, 8192}, {2, 2, 1});
    peer_connection peer(w);
    peer.send(generator_text(7, 0, 100));
    peer.send(std::string(3 * 4096 + 17, 'x') + "\n"); // spans four buffers
    peer.send(generator_text(7, 100, 100));
    peer.socket.close();
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    EXPECT_EQ(w.sink.total_records(), 200U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    EXPECT_EQ(w.pipeline.stats().records_dropped_total, 1U);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.source_count() == 0; }));
    EXPECT_EQ(w.pool.stats().free, 512U);
}

TEST(hostile_input, garbage_frames_are_skipped_by_length_and_valid_frames_survive) {
    processing_options framed;
    framed.record_framing = framing::length_prefixed;
    test_worker w({512, 4096, 8, 8192}, {2, 2, 1}, {}, framed);
    w.sink.check_generator_records = false;
    peer_connection peer(w);
    std::string valid;
    for (int i = 0; i < 50; ++i) {
        valid += frame("record " + std::to_string(i));
    }
    peer.send(valid);
    // A header claiming 1 GiB, then 10 KiB of noise: one oversize frame, skipped by its length.
    std::string garbage = "\x40\x00\x00\x00";
    for (int i = 0; i < 10240; ++i) {
        garbage += static_cast<char>((i * 131) & 0xFF);
    }
    peer.send(garbage);
    peer.socket.close();
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    EXPECT_EQ(w.sink.total_records(), 50U) << "the frames before the garbage all arrive";
    EXPECT_EQ(w.pipeline.stats().records_dropped_total, 1U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.source_count() == 0; }));
    EXPECT_EQ(w.pool.stats().free, 512U);
}

TEST(hostile_input, half_a_record_then_a_reset_delivers_the_whole_records_then_an_error) {
    test_worker w({512, 4096, 8, 8192}, {2, 2, 1});
    peer_connection peer(w);
    const std::string whole = generator_text(9, 0, 300);
    const std::string next = generator_text(9, 300, 1);
    peer.send(whole + next.substr(0, next.size() / 2));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() == 300; }));
    peer.socket.set_option(asio::socket_base::linger(true, 0)); // close sends RST
    peer.socket.close();
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.errors_locked() == 1; }));
    EXPECT_EQ(w.sink.total_records(), 300U) << "the half record is not delivered";
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    EXPECT_EQ(w.server.stats().errors_total[static_cast<std::size_t>(source_kind::tcp_connection)],
              1U);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.source_count() == 0; }));
    EXPECT_EQ(w.pool.stats().free, 512U);
}

/// A file source reading `records` generator records, suspended on a tiny pool behind a gated
/// pipeline; `meddle` runs while it is suspended mid-file, then the gate opens.
struct gated_file_read {
    static constexpr std::uint64_t records = 20000;
    std::string path;
    std::string content;
    test_worker w{{24, 1024, 2, 64}, {2, 2, 1}};
    std::atomic<bool> open_gate{false};

    explicit gated_file_read(const std::string& name) : path(::testing::TempDir() + "/" + name) {
        content = generator_text(3, 0, records);
        std::ofstream(path, std::ios::binary) << content;
        w.sink.on_each_buffer = [this] {
            const auto deadline = std::chrono::steady_clock::now() + 30s;
            while (!open_gate.load() && std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(1ms);
            }
        };
    }

    void run(const std::function<void()>& meddle) {
        source_options options;
        options.name = "file";
        const auto answer =
            w.server.register_source(options, [this](environment& e, const executor& lane) {
                return std::make_unique<file_source>(e, lane, path);
            });
        ASSERT_TRUE(answer.admitted()) << answer.message;
        w.server.start(answer.handle);
        // Suspended on the pool: its buffers are all stuck behind the gate.
        ASSERT_TRUE(
            w.sink.wait_for([&] { return w.server.stats().backpressure_waits_total > 0; }, 30s));
        meddle();
        open_gate = true;
        ASSERT_TRUE(w.sink.wait_for(
            [&] { return w.sink.end_of_streams_locked() + w.sink.errors_locked() == 1; }));
    }
};

TEST(hostile_input, a_file_removed_while_read_is_read_to_its_end) {
    gated_file_read read("removed.csv");
    read.run([&] { std::filesystem::remove(read.path); });
    EXPECT_EQ(read.w.sink.total_records(), gated_file_read::records)
        << "the open file stays readable";
    EXPECT_EQ(read.w.sink.errors(), 0U);
    EXPECT_TRUE(read.w.sink.violations().empty()) << read.w.sink.violations().front();
}

TEST(hostile_input, a_file_truncated_while_read_ends_at_the_new_end_with_whole_records) {
    gated_file_read read("truncated.csv");
    const std::size_t cut = read.content.size() / 2 + 3; // inside a record
    read.run([&] { ASSERT_EQ(::truncate(read.path.c_str(), static_cast<off_t>(cut)), 0); });
    const auto whole_records = static_cast<std::uint64_t>(std::count(
        read.content.begin(), read.content.begin() + static_cast<std::ptrdiff_t>(cut), '\n'));
    EXPECT_EQ(read.w.sink.total_records(), whole_records)
        << "every whole record before the cut, no more";
    EXPECT_EQ(read.w.sink.end_of_streams(), 1U);
    EXPECT_TRUE(read.w.sink.violations().empty()) << read.w.sink.violations().front();
}

struct flood_outcome {
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    bool file_read = false;
};

/// 200 connections from sluice-loadgen (its own process) against a listener while this process
/// may open only 40 descriptors beyond those it has; then a file source must still open.
flood_outcome connect_flood(std::size_t descriptor_reserve) {
    production_options threads{2, 2, 1};
    threads.descriptor_reserve = descriptor_reserve;
    test_worker w({512, 4096, 8, 8192}, threads);
    listener_options l;
    l.connections_max = 1000;
    const auto [error, port] = w.server.add_tcp_listener(l);
    EXPECT_FALSE(error) << error.message();
    const std::string path = ::testing::TempDir() + "/flood.csv";
    std::ofstream(path, std::ios::binary) << generator_text(11, 0, 100);

    std::size_t open_now = 0;
    for ([[maybe_unused]] const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
        ++open_now;
    }
    rlimit saved{};
    getrlimit(RLIMIT_NOFILE, &saved);
    rlimit lowered = saved;
    lowered.rlim_cur = open_now + 40;
    setrlimit(RLIMIT_NOFILE, &lowered);

    flood_outcome out;
    {
        sluice::test::child_process load({SLUICE_LOADGEN, "--port", std::to_string(port),
                                          "--connections", "200", "--records", "1", "--hold"},
                                         "flood_" + std::to_string(descriptor_reserve));
        EXPECT_TRUE(
            w.sink.wait_for([&] { return w.server.stats().connections_refused_total > 0; }, 30s))
            << load.err();
        const auto answer = w.server.register_source(
            source_options{"file"}, [&](environment& e, const executor& lane) {
                return std::make_unique<file_source>(e, lane, path);
            });
        EXPECT_TRUE(answer.admitted()) << answer.message;
        w.server.start(answer.handle);
        EXPECT_TRUE(w.sink.wait_for(
            [&] {
                for (const auto& [origin, log] : w.sink.origins_locked()) {
                    if (log.end_of_stream || log.error) {
                        return true;
                    }
                }
                return false;
            },
            30s));
        const auto stats = w.server.stats();
        out.accepted = stats.connections_accepted_total;
        out.refused = stats.connections_refused_total;
        out.file_read = w.sink.total_records() == 100 && w.sink.errors() == 0;
    } // the load generator is killed: its connections close and their sources end
    setrlimit(RLIMIT_NOFILE, &saved);
    EXPECT_TRUE(w.sink.wait_for([&] { return w.server.source_count() <= 1; }, 30s));
    return out;
}

TEST(hostile_input, a_connect_flood_leaves_the_descriptor_reserve_to_other_sources) {
    const flood_outcome reserved = connect_flood(16);
    EXPECT_GT(reserved.accepted, 0U);
    EXPECT_LT(reserved.accepted, 40U) << "accepted beyond the reserve";
    EXPECT_GT(reserved.refused, 0U) << "the flood was not refused";
    EXPECT_TRUE(reserved.file_read) << "the reserve did not keep a descriptor for the file";
    // The control: with no reserve the flood takes every descriptor and the file cannot open.
    const flood_outcome unreserved = connect_flood(0);
    EXPECT_FALSE(unreserved.file_read)
        << "the control did not exhaust descriptors; the test proves nothing";
}

} // namespace
