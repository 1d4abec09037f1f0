/// The data path under the faults users meet, on real lanes and real loopback sockets: a
/// reconnect inside a record, a restart of a stateful source, exceptions from the sink and
/// from a source factory, a restart of a paced generator. Each case is a defect a review found;
/// each failed before its fix.

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "sluice/source/blocking_source.hpp"
#include "sluice/source/generator_source.hpp"
#include "sluice/source/stream_sources.hpp"
#include "testing/generator_text.hpp"
#include "testing/test_worker.hpp"

namespace {

namespace asio = boost::asio;
using namespace sluice::runtime;
using sluice::test::generator_text;
using sluice::test::test_worker;
using namespace std::chrono_literals;

/// Keeps every record as the framing stage delivered it (whole records, in order).
class record_sink final : public sink {
public:
    explicit record_sink(framing f) : framing_(f) {}
    void on_data(const data_event& event) override {
        const std::lock_guard lock(mutex_);
        if (!event.spanning_record.empty()) {
            add(event.spanning_record);
        }
        split(event.records);
    }
    void on_end_of_stream(std::uint64_t) override {
        const std::lock_guard lock(mutex_);
        ++ends_;
    }
    void on_error(std::uint64_t, std::string_view) override {
        const std::lock_guard lock(mutex_);
        ++ends_;
    }
    std::vector<std::string> records() {
        const std::lock_guard lock(mutex_);
        return records_;
    }
    std::size_t ends() {
        const std::lock_guard lock(mutex_);
        return ends_;
    }

private:
    void add(std::span<const std::byte> record) {
        records_.emplace_back(reinterpret_cast<const char*>(record.data()), record.size());
    }
    void split(std::span<const std::byte> bytes) {
        std::size_t pos = 0;
        while (pos < bytes.size()) {
            std::size_t size = 0;
            if (framing_ == framing::newline) {
                const auto* end = static_cast<const std::byte*>(
                    std::memchr(bytes.data() + pos, '\n', bytes.size() - pos));
                size = static_cast<std::size_t>(end - (bytes.data() + pos)) + 1;
            } else {
                const auto* p = bytes.data() + pos;
                size = 4 + ((std::to_integer<std::size_t>(p[0]) << 24U) |
                            (std::to_integer<std::size_t>(p[1]) << 16U) |
                            (std::to_integer<std::size_t>(p[2]) << 8U) |
                            std::to_integer<std::size_t>(p[3]));
            }
            add(bytes.subspan(pos, size));
            pos += size;
        }
    }

    framing framing_;
    std::mutex mutex_;
    std::vector<std::string> records_;
    std::size_t ends_ = 0;
};

/// sluice::worker with `f` framing and quick reconnects, around a record_sink.
struct record_worker {
    explicit record_worker(framing f)
        : sink(f),
          core(sink, {{64, 4096, 4, 64}, {2, 2, 1}, processing_options{f}, quick_reconnects()}),
          pool(core.pool()), env(core.environment()), pipeline(core.pipeline()),
          server(core.server()) {}
    static server_options quick_reconnects() {
        server_options o;
        o.backoff_initial = 2ms;
        o.backoff_max = 10ms;
        return o;
    }
    /// Waits (bounded) until `done` holds.
    template <typename Predicate>
    static bool wait(Predicate done, std::chrono::milliseconds bound = 20s) {
        const auto deadline = std::chrono::steady_clock::now() + bound;
        while (!done()) {
            if (std::chrono::steady_clock::now() > deadline) {
                return false;
            }
            std::this_thread::sleep_for(1ms);
        }
        return true;
    }

    record_sink sink;
    sluice::worker core;
    buffer_pool& pool;
    production_environment& env;
    processing& pipeline;
    source_server& server;
};

source_server::source_factory tcp_client_to(std::uint16_t port) {
    return [port](environment& env, const executor& lane) -> std::unique_ptr<source> {
        return std::make_unique<tcp_client_source>(env, lane,
                                                   tcp_client_options{"127.0.0.1", port, 1s, {}});
    };
}

source_options named(std::string name, source_limits limits = {1, 4}) {
    source_options o;
    o.name = std::move(name);
    o.limits = limits;
    o.flush_timeout = 5ms;
    return o;
}

void reset(asio::ip::tcp::socket& peer) {
    peer.set_option(asio::socket_base::linger(true, 0));
    peer.close();
}

/// A loopback acceptor standing for the peer, and `w`'s tcp_client source connected to it.
struct peer_and_client {
    explicit peer_and_client(record_worker& w) {
        const auto answer = w.server.register_source(
            named("client"), tcp_client_to(acceptor.local_endpoint().port()));
        EXPECT_TRUE(answer.admitted()) << answer.message;
        EXPECT_TRUE(w.server.start(answer.handle));
    }
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor{io, {asio::ip::make_address("127.0.0.1"), 0}};
};

std::string be32(std::uint32_t n) {
    return {static_cast<char>(n >> 24U), static_cast<char>(n >> 16U), static_cast<char>(n >> 8U),
            static_cast<char>(n)};
}

TEST(fault_paths,
     a_reconnect_inside_a_newline_record_drops_it_and_never_joins_the_next_connection) {
    record_worker w(framing::newline);
    peer_and_client peer(w);
    auto& acceptor = peer.acceptor;
    {
        auto first = acceptor.accept();
        asio::write(first, asio::buffer(std::string("a,1,x\nb,2,")));
        // Every byte, the unfinished record's too, has reached processing before the reset.
        ASSERT_TRUE(record_worker::wait([&] { return w.pipeline.stats().bytes_total == 10; }));
        reset(first);
    }
    auto second = acceptor.accept();
    asio::write(second, asio::buffer(std::string("c,3,y\n")));
    second.close();
    ASSERT_TRUE(record_worker::wait([&] { return w.sink.ends() == 1; }));
    EXPECT_EQ(w.sink.records(), (std::vector<std::string>{"a,1,x\n", "c,3,y\n"}));
    EXPECT_EQ(w.pipeline.stats().records_truncated_total, 1U);
}

TEST(fault_paths, a_reconnect_inside_a_length_prefixed_record_keeps_the_next_connection_in_sync) {
    // The reproduction: a 100-byte header and 10 of its bytes, a reset, then five whole
    // records on the next connection. Before the fix the carry swallowed them.
    record_worker w(framing::length_prefixed);
    peer_and_client peer(w);
    auto& acceptor = peer.acceptor;
    {
        auto first = acceptor.accept();
        asio::write(first, asio::buffer(be32(100) + std::string(10, 'p')));
        ASSERT_TRUE(record_worker::wait([&] { return w.pipeline.stats().bytes_total == 14; }));
        reset(first);
    }
    std::string whole;
    std::vector<std::string> expected;
    for (int i = 0; i < 5; ++i) {
        const std::string payload = "r" + std::to_string(i) + ",v";
        expected.push_back(be32(static_cast<std::uint32_t>(payload.size())) + payload);
        whole += expected.back();
    }
    auto second = acceptor.accept();
    asio::write(second, asio::buffer(whole));
    second.close();
    ASSERT_TRUE(record_worker::wait([&] { return w.sink.ends() == 1; }));
    EXPECT_EQ(w.sink.records(), expected);
    EXPECT_EQ(w.pipeline.stats().records_truncated_total, 1U);
}

TEST(fault_paths, a_restarted_file_source_resumes_where_it_stopped_and_reads_nothing_twice) {
    const auto path = std::filesystem::temp_directory_path() /
                      ("sluice-resume-" + std::to_string(::getpid()) + ".csv");
    constexpr std::uint64_t records = 200000;
    {
        std::ofstream out(path, std::ios::binary);
        out << generator_text(9, 0, records);
    }
    test_worker w({64, 4096, 4, 64}, {2, 2, 1});
    // A slow pipeline and a cap of one buffer: the file is read at the pace of processing, so
    // the stop lands in the middle of it.
    w.sink.on_each_buffer = [] { std::this_thread::sleep_for(200us); };
    const auto answer = w.server.register_source(
        named("file", {1, 1}),
        [path](environment& env, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<file_source>(env, lane, path.string());
        });
    ASSERT_TRUE(answer.admitted()) << answer.message;
    const auto h = answer.handle;
    ASSERT_TRUE(w.server.start(h));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() > 1000; }));
    w.server.stop(h);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.state(h) == source_state::stopped; }));
    const auto at_stop = w.sink.origin(h);
    ASSERT_FALSE(at_stop.end_of_stream) << "the file was read to its end before the stop";
    ASSERT_TRUE(w.server.start(h));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    const auto done = w.sink.origin(h);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    EXPECT_EQ(done.next_record, records) << "every record once, in order, across the restart";
    EXPECT_EQ(done.bytes, std::filesystem::file_size(path));
    std::filesystem::remove(path);
}

TEST(fault_paths, a_throwing_sink_fails_only_its_origin_and_shutdown_still_finishes) {
    auto w = std::make_unique<test_worker>();
    std::atomic<int> calls{0};
    std::atomic<std::uint64_t> thrower{0};
    w->sink.on_each_buffer = [&] {
        // The sink cannot tell origins apart here: it throws once, on the tenth buffer.
        if (calls.fetch_add(1) == 9) {
            throw std::runtime_error("engine operator failed");
        }
    };
    std::vector<source_handle> handles;
    for (int i = 0; i < 4; ++i) {
        generator_options g;
        g.id = static_cast<std::uint64_t>(i);
        g.records_max = 20000;
        handles.push_back(
            w->server
                .register_source(
                    named("g" + std::to_string(i)),
                    [g](environment& env, const executor& lane) -> std::unique_ptr<source> {
                        return std::make_unique<generator_source>(env, lane, g);
                    })
                .handle);
    }
    ASSERT_EQ(w->server.start(handles), 4U);
    ASSERT_TRUE(w->sink.wait_for([&] {
        return w->sink.end_of_streams_locked() + w->sink.errors_locked() == 4;
    })) << "ends: "
        << w->sink.end_of_streams() << " EoS, " << w->sink.errors() << " errors";
    EXPECT_EQ(w->sink.errors(), 1U);
    EXPECT_EQ(w->sink.end_of_streams(), 3U);
    EXPECT_EQ(w->pipeline.stats().sink_failures_total, 1U);
    // The failed origin's source stops, as failed.
    const auto failed_sources = [&] {
        std::size_t failed = 0;
        for (const auto h : handles) {
            failed += w->server.state(h) == source_state::failed ? 1U : 0U;
        }
        return failed;
    };
    EXPECT_TRUE(record_worker::wait([&] { return failed_sources() == 1; })) << failed_sources();
    // Shutdown joins everything, bounded.
    std::atomic<bool> shut{false};
    std::thread closer([&] {
        w->server.shutdown();
        w->pipeline.wait_idle();
        shut = true;
    });
    const bool finished = record_worker::wait([&] { return shut.load(); }, 20s);
    if (!finished) {
        ADD_FAILURE() << "shutdown hung after a sink exception";
        closer.detach();
        std::quick_exit(1);
    }
    closer.join();
    EXPECT_EQ(w->pool.stats().free, w->pool.config().buffer_count);
    EXPECT_TRUE(w->sink.violations().empty()) << w->sink.violations().front();
}

TEST(fault_paths, a_throwing_source_factory_leaves_nothing_registered) {
    test_worker w({16, 4096, 4, 64}, {1, 1, 1});
    // Twelve buffers for sources: a leaked reserve of 6 would leave room for only one more.
    for (int i = 0; i < 3; ++i) {
        EXPECT_THROW(
            w.server.register_source(named("bad", {6, 6}),
                                     [](environment&, const executor&) -> std::unique_ptr<source> {
                                         throw std::runtime_error("no such device");
                                     }),
            std::runtime_error);
    }
    const auto stats = w.pool.stats();
    EXPECT_EQ(stats.sources_registered, 0U);
    EXPECT_EQ(stats.reserved_sources, 0U);
    EXPECT_EQ(w.server.source_count(), 0U);
    generator_options g;
    g.records_max = 10;
    for (int i = 0; i < 2; ++i) {
        const auto answer = w.server.register_source(
            named("good", {6, 6}),
            [g](environment& env, const executor& lane) -> std::unique_ptr<source> {
                return std::make_unique<generator_source>(env, lane, g);
            });
        EXPECT_TRUE(answer.admitted()) << answer.message;
    }
}

TEST(fault_paths, a_restarted_paced_generator_resumes_its_rate_at_once) {
    test_worker w;
    generator_options g;
    g.id = 3;
    g.records_per_second = 500.0;
    g.burst_records = 1;
    const auto h = w.server
                       .register_source(
                           named("paced"),
                           [g](environment& env, const executor& lane) -> std::unique_ptr<source> {
                               return std::make_unique<generator_source>(env, lane, g);
                           })
                       .handle;
    ASSERT_TRUE(w.server.start(h));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() >= 500; })); // about 1 s
    w.server.stop(h);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.state(h) == source_state::stopped; }));
    const auto before = w.sink.total_records();
    ASSERT_TRUE(w.server.start(h));
    // At 500 records/s a record is due every 2 ms; allow a generous 300 ms for the first.
    EXPECT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() > before; }, 300ms))
        << "the restarted generator stayed silent (it waited out the time it had run before)";
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

/// A legacy device: hands out `chunks` one per read, then blocks until interrupted (a read
/// that never returns on its own), and then reports end of stream.
class stalling_device final : public blocking_reader {
public:
    explicit stalling_device(std::vector<std::string> chunks) : chunks_(std::move(chunks)) {}
    std::size_t read_blocking(std::span<std::byte> space) override {
        std::unique_lock lock(mutex_);
        if (next_ < chunks_.size()) {
            const std::string& c = chunks_[next_++];
            std::memcpy(space.data(), c.data(), std::min(c.size(), space.size()));
            return std::min(c.size(), space.size());
        }
        ++blocked_reads;
        interrupted_.wait(lock, [this] { return interrupted; });
        return 0;
    }
    void interrupt() noexcept override {
        {
            const std::lock_guard lock(mutex_);
            interrupted = true;
        }
        interrupted_.notify_all();
    }
    bool interrupted = false; ///< under mutex_
    int blocked_reads = 0;    ///< under mutex_

private:
    std::mutex mutex_;
    std::condition_variable interrupted_;
    std::vector<std::string> chunks_;
    std::size_t next_ = 0;
};

TEST(fault_paths, a_legacy_source_blocked_in_a_read_has_flushed_what_it_read_before) {
    test_worker w;
    const auto h =
        w.server
            .register_source(named("device"),
                             [](environment& env, const executor& lane) -> std::unique_ptr<source> {
                                 return std::make_unique<blocking_source>(
                                     env, lane,
                                     std::make_unique<stalling_device>(
                                         std::vector<std::string>{generator_text(5, 0, 3)}),
                                     "stalling device");
                             })
            .handle;
    ASSERT_TRUE(w.server.start(h));
    // Three records, then a read that blocks: they must not wait for reads that do not come.
    EXPECT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() == 3; }, 2s))
        << "the records read before the blocking read were held with it";
    // A stop interrupts the read (blocking_reader::interrupt); the run ends as a stop.
    w.server.stop(h);
    EXPECT_TRUE(w.sink.wait_for([&] { return w.server.state(h) == source_state::stopped; }, 5s));
    w.pipeline.wait_idle(); // whatever the end queued has reached the sink
    const auto log = w.sink.origin(h);
    EXPECT_FALSE(log.end_of_stream) << "the read the stop interrupted is not an end of stream";
    EXPECT_FALSE(log.error);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

TEST(fault_paths, a_stop_cancels_a_tcp_connect_in_progress) {
    // A listener whose accept queue is full drops further SYNs: the client's connect hangs
    // until its 30 s timeout. A stop must not wait for that.
    asio::io_context io;
    asio::ip::tcp::acceptor full(io);
    full.open(asio::ip::tcp::v4());
    full.bind({asio::ip::make_address("127.0.0.1"), 0});
    full.listen(0);
    asio::ip::tcp::socket filler(io);
    filler.connect(full.local_endpoint());
    test_worker w;
    const std::uint16_t port = full.local_endpoint().port();
    const auto h =
        w.server
            .register_source(
                named("client"),
                [port](environment& env, const executor& lane) -> std::unique_ptr<source> {
                    return std::make_unique<tcp_client_source>(
                        env, lane, tcp_client_options{"127.0.0.1", port, 30s, {}});
                })
            .handle;
    ASSERT_TRUE(w.server.start(h));
    std::this_thread::sleep_for(100ms); // the connect is under way
    const auto stopped_at = std::chrono::steady_clock::now();
    w.server.stop(h);
    EXPECT_TRUE(w.sink.wait_for([&] { return w.server.state(h) == source_state::stopped; }, 5s))
        << "the stop waited for the connect";
    EXPECT_LT(std::chrono::steady_clock::now() - stopped_at, 5s);
    w.pipeline.wait_idle();
    EXPECT_EQ(w.sink.errors(), 0U) << "a stop is not a failure";
    EXPECT_EQ(w.server.stats().reconnects_total, 0U);
}

TEST(fault_paths, a_listener_whose_accept_loop_throws_counts_it_and_keeps_accepting) {
    // The first two accepted connections meet an exception in the accept loop (injected where
    // an out-of-memory would come from); the listener must begin again, not go quiet.
    std::atomic<int> faults_left{2};
    production_options threads{2, 2, 1};
    threads.inject_faults = [&faults_left](fault_site site) {
        return site == fault_site::accept_exception && faults_left.fetch_sub(1) > 0;
    };
    test_worker w({512, 4096, 8, 8192}, threads);
    const auto [error, port] = w.server.add_tcp_listener(listener_options{});
    ASSERT_FALSE(error) << error.message();
    asio::io_context io;
    std::vector<asio::ip::tcp::socket> peers;
    for (std::uint64_t c = 0; c < 5; ++c) {
        peers.emplace_back(io);
        peers.back().connect({asio::ip::make_address("127.0.0.1"), port});
        // The worker closes the connections that met the fault, maybe before this writes.
        boost::system::error_code ignored;
        asio::write(peers.back(), asio::buffer(generator_text(c, 0, 100)), ignored);
        peers.back().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    }
    EXPECT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 3; }, 10s))
        << w.sink.end_of_streams() << " connections ended";
    const auto stats = w.server.stats();
    EXPECT_EQ(stats.listener_failures_total, 2U);
    EXPECT_EQ(stats.connections_accepted_total, 3U);
    EXPECT_EQ(w.sink.total_records(), 300U);
}

} // namespace

TEST(fault_paths, a_connection_accepted_under_sustained_backpressure_is_admitted_not_refused) {
    // Two connections keep sending into a slow sink, so their sources always wait above their
    // reserve for floating buffers. A third connection must still be admitted: it waits for its
    // reserve ahead of those waiters (bounded), instead of being refused at once because every
    // released buffer went to them.
    listener_options lo;
    lo.limits = {1, 8};
    lo.flush_timeout = 5ms;
    test_worker w({16, 4096, 2, 64}, {2, 2, 1});
    w.sink.on_each_buffer = [] { std::this_thread::sleep_for(200us); };
    const auto [error, port] = w.server.add_tcp_listener(lo);
    ASSERT_FALSE(error) << error.message();
    std::atomic<bool> stop_writers{false};
    std::vector<std::thread> writers;
    for (std::uint64_t id = 0; id < 2; ++id) {
        writers.emplace_back([&stop_writers, id, port = port] {
            asio::io_context io;
            asio::ip::tcp::socket peer(io);
            peer.connect({asio::ip::make_address("127.0.0.1"), port});
            boost::system::error_code ignored;
            for (std::uint64_t n = 0; !stop_writers.load() && !ignored; n += 100) {
                asio::write(peer, asio::buffer(generator_text(id, n, 100)), ignored);
            }
            peer.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
        });
    }
    // Both sources are above their reserve and waiting before the third connection comes.
    ASSERT_TRUE(record_worker::wait([&] { return w.pool.stats().waiters_sources >= 1; }, 10s));
    asio::io_context io;
    asio::ip::tcp::socket late(io);
    late.connect({asio::ip::make_address("127.0.0.1"), port});
    boost::system::error_code ignored;
    asio::write(late, asio::buffer(generator_text(7, 0, 100)), ignored);
    late.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    const bool delivered =
        w.sink.wait_for([&] { return w.sink.end_of_streams_locked() >= 1; }, 10s);
    const auto stats = w.server.stats();
    stop_writers = true;
    for (auto& t : writers) {
        t.join();
    }
    EXPECT_TRUE(delivered) << "the late connection never ended: " << stats.connections_refused_total
                           << " connections refused, " << stats.connections_accepted_total
                           << " accepted";
    EXPECT_EQ(stats.connections_refused_total, 0U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

namespace {

TEST(fault_paths, an_idle_connection_is_closed_at_the_listener_idle_timeout_and_says_so) {
    // Idle or half-open peers used to hold their connections (and connections_max) forever.
    // One peer goes quiet after a record; another keeps talking. Only the quiet one is closed,
    // counted, its record delivered and its origin ended with an Error naming the timeout; the
    // accepted sockets carry TCP keepalive (seen from outside with ss).
    listener_options lo;
    lo.idle_timeout = 600ms;
    lo.keepalive_idle = std::chrono::seconds(7);
    test_worker w({64, 4096, 8, 64}, {2, 2, 1});
    const auto [error, port] = w.server.add_tcp_listener(lo);
    ASSERT_FALSE(error) << error.message();
    asio::io_context io;
    asio::ip::tcp::socket quiet(io);
    asio::ip::tcp::socket talker(io);
    quiet.connect({asio::ip::make_address("127.0.0.1"), port});
    talker.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(quiet, asio::buffer(generator_text(1, 0, 1)));
    // The talker sends every 50 ms for two seconds; the quiet one says nothing.
    for (std::uint64_t n = 0; n < 40; ++n) {
        asio::write(talker, asio::buffer(generator_text(2, n, 1)));
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() == 41; }, 5s))
        << w.sink.total_records();
    const auto stats = w.server.stats();
    EXPECT_EQ(stats.connections_accepted_total, 2U);
    EXPECT_EQ(stats.connections_closed_idle_total, 1U);
    EXPECT_EQ(w.sink.errors(), 1U);
    // The quiet peer sees its connection closed.
    boost::system::error_code gone;
    char byte = 0;
    quiet.read_some(asio::buffer(&byte, 1), gone);
    EXPECT_EQ(gone, asio::error::eof) << gone.message();
    // Keepalive on the worker's side of the talker's connection: ss shows its timer.
    const std::string ss = "ss -tnoH state established '( sport = :" + std::to_string(port) +
                           " )' > " + ::testing::TempDir() + "/ss.txt";
    ASSERT_EQ(std::system(ss.c_str()), 0);
    std::ifstream listing(::testing::TempDir() + "/ss.txt");
    const std::string sockets((std::istreambuf_iterator<char>(listing)),
                              std::istreambuf_iterator<char>());
    EXPECT_NE(sockets.find("keepalive"), std::string::npos) << sockets;
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

} // namespace

namespace {

TEST(fault_paths, a_one_byte_trickle_is_coalesced_not_one_buffer_per_byte) {
    // A peer that sends one byte at a time while processing is idle: each read used to be
    // flushed at once (demand), one buffer and one compute task per byte. A small demand
    // flush now waits until the buffer ends a record (or the flush timeout), so the cost is
    // bounded by records + duration / flush timeout, and every byte still arrives.
    listener_options lo;
    lo.flush_timeout = 50ms;
    test_worker w({64, 4096, 8, 64}, {2, 2, 1});
    const auto [error, port] = w.server.add_tcp_listener(lo);
    ASSERT_FALSE(error) << error.message();
    asio::io_context io;
    asio::ip::tcp::socket peer(io);
    peer.connect({asio::ip::make_address("127.0.0.1"), port});
    peer.set_option(asio::ip::tcp::no_delay(true));
    const std::string text = generator_text(3, 0, 20); // about 300 bytes
    const auto began = std::chrono::steady_clock::now();
    for (const char c : text) {
        asio::write(peer, asio::buffer(&c, 1));
        std::this_thread::sleep_for(1ms);
    }
    peer.shutdown(asio::ip::tcp::socket::shutdown_send);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }, 10s));
    const auto took = std::chrono::steady_clock::now() - began;
    EXPECT_EQ(w.sink.total_records(), 20U);
    const auto emitted = w.server.stats().buffers_emitted_total;
    EXPECT_EQ(server_options{}.demand_flush_min_bytes, 64U);
    const auto bound =
        20 + text.size() / 64 + 2 + static_cast<std::size_t>(took / lo.flush_timeout) + 1;
    EXPECT_LE(emitted, bound) << emitted << " buffers for " << text.size() << " bytes";
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

} // namespace
