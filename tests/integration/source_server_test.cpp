/// The source server on real lanes, real timers and real loopback sockets: lifecycle and
/// events (Data… then EoS, Data… then Error, neither on stop), backpressure with a slow
/// pipeline, admission refusal while others run, and every kind of source.

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
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

source_server::source_factory generator(std::uint64_t id, std::uint64_t records_max,
                                        double rate = 0.0) {
    return [=](environment& env, const executor& lane) -> std::unique_ptr<source> {
        generator_options g;
        g.id = id;
        g.records_max = records_max;
        g.records_per_second = rate;
        return std::make_unique<generator_source>(env, lane, g);
    };
}

source_options named(std::string name, source_limits limits = {1, 4},
                     duration flush_timeout = 20ms) {
    source_options o;
    o.name = std::move(name);
    o.limits = limits;
    o.flush_timeout = flush_timeout;
    return o;
}

/// `count` loopback connections to a listener on `port`.
std::vector<asio::ip::tcp::socket> connect_peers(asio::io_context& io, std::uint16_t port,
                                                 std::size_t count) {
    std::vector<asio::ip::tcp::socket> peers;
    for (std::size_t c = 0; c < count; ++c) {
        peers.emplace_back(io);
        peers.back().connect({asio::ip::make_address("127.0.0.1"), port});
    }
    return peers;
}

/// Stops each of `handles` and waits until every one is stopped; false if one is not in time.
bool stop_and_wait(test_worker& w, const std::vector<source_handle>& handles) {
    for (const auto h : handles) {
        w.server.stop(h);
    }
    return w.sink.wait_for([&] {
        for (const auto h : handles) {
            if (w.server.state(h) != source_state::stopped) {
                return false;
            }
        }
        return true;
    });
}

/// A source of an embedder's own kind: a fixed text, then end of stream. `claimed` names an
/// optional protocol it says it speaks without implementing the call that goes with it (as an
/// embedder's first try might): the interface's default must then work.
class text_source final : public source {
public:
    enum class claims : std::uint8_t { nothing, parking, reading_into_buffers };
    text_source(source_kind kind, std::string text, claims claimed = claims::nothing)
        : kind_(kind), text_(std::move(text)), claimed_(claimed) {}
    source_kind kind() const noexcept override { return kind_; }
    bool should_park() override { return claimed_ == claims::parking; }
    bool reads_into_buffer() const noexcept override {
        return claimed_ == claims::reading_into_buffers;
    }
    std::string describe() const override { return "a fixed text"; }
    asio::awaitable<boost::system::error_code> open() override {
        co_return boost::system::error_code{};
    }
    asio::awaitable<boost::system::error_code> wait_readable() override {
        co_return closed_ ? boost::system::error_code(asio::error::operation_aborted)
                          : boost::system::error_code{};
    }
    read_result read_now(std::span<std::byte> space) override {
        if (at_ == text_.size()) {
            return {read_result::status::end_of_stream, 0, {}};
        }
        const std::size_t n = std::min(space.size(), text_.size() - at_);
        std::memcpy(space.data(), text_.data() + at_, n);
        at_ += n;
        return {read_result::status::data, n, {}};
    }
    void close() noexcept override { closed_ = true; }

private:
    source_kind kind_;
    std::string text_;
    std::size_t at_ = 0;
    bool closed_ = false;
    claims claimed_;
};

TEST(source_server, a_source_kind_of_the_embedders_own_is_counted_under_its_name) {
    const source_kind sensor = define_source_kind("sensor");
    EXPECT_EQ(define_source_kind("sensor"), sensor) << "defining a name again returns its kind";
    EXPECT_GE(index_of(sensor), source_kind_builtin_count);
    EXPECT_LT(index_of(sensor), source_kinds_defined());
    EXPECT_EQ(to_string(sensor), "sensor");
    EXPECT_EQ(define_source_kind("tcp_client"), source_kind::tcp_client);
    EXPECT_THROW(define_source_kind(""), std::invalid_argument);
    EXPECT_THROW(define_source_kind("Sensor"), std::invalid_argument);
    EXPECT_THROW(define_source_kind("a-b"), std::invalid_argument);

    test_worker w;
    w.sink.check_generator_records = false;
    const std::string text = "t=1,21.5\nt=2,21.7\nt=3,21.6\n";
    const auto answer = w.server.register_source(
        named("probe"),
        [&](environment& /*env*/, const executor& /*lane*/) -> std::unique_ptr<source> {
            return std::make_unique<text_source>(sensor, text);
        });
    ASSERT_TRUE(answer.admitted()) << answer.message;
    ASSERT_TRUE(w.server.start(answer.handle));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    w.server.shutdown();
    w.pipeline.wait_idle();
    EXPECT_EQ(w.sink.origin(answer.handle).bytes, text.size());
    EXPECT_EQ(w.server.stats().bytes_total[index_of(sensor)], text.size());
    EXPECT_EQ(w.pipeline.stats().records_by_kind[index_of(sensor)], 3U);
}

/// Runs a text_source that claims `claimed` to its end; every byte must arrive.
void run_text_source(text_source::claims claimed) {
    test_worker w;
    w.sink.check_generator_records = false;
    const std::string text = "a,1\nb,2\nc,3\n";
    const auto answer = w.server.register_source(
        named("claims"),
        [&](environment& /*env*/, const executor& /*lane*/) -> std::unique_ptr<source> {
            return std::make_unique<text_source>(source_kind::generator, text, claimed);
        });
    ASSERT_TRUE(answer.admitted()) << answer.message;
    ASSERT_TRUE(w.server.start(answer.handle));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    w.server.shutdown();
    w.pipeline.wait_idle();
    EXPECT_EQ(w.sink.origin(answer.handle).bytes, text.size());
    EXPECT_EQ(w.server.stats().parks_total, 0U) << "it cannot park, so it never parked";
}

TEST(source_server, a_source_that_says_it_parks_without_a_park_of_its_own_waits_in_its_coroutine) {
    run_text_source(text_source::claims::parking);
}

TEST(source_server, a_source_that_reads_into_buffers_without_read_some_reads_by_the_default) {
    run_text_source(text_source::claims::reading_into_buffers);
}

TEST(source_server, defining_more_source_kinds_than_the_bound_is_refused_with_a_reason) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            for (std::size_t i = source_kinds_defined(); i < source_kind_max; ++i) {
                define_source_kind("kind_" + std::to_string(i));
            }
            try {
                define_source_kind("one_more");
            } catch (const std::length_error& e) {
                std::fprintf(stderr, "%s\n", e.what());
                std::exit(0);
            }
            std::exit(1);
        },
        ::testing::ExitedWithCode(0), "all 16 source kinds are defined");
}

TEST(source_server, finite_generators_deliver_every_record_then_end_of_stream) {
    test_worker w;
    constexpr int sources = 40;
    constexpr std::uint64_t records = 5000;
    std::vector<source_handle> handles;
    for (int i = 0; i < sources; ++i) {
        const auto answer = w.server.register_source(
            named("gen" + std::to_string(i)), generator(static_cast<std::uint64_t>(i), records));
        ASSERT_TRUE(answer.admitted()) << answer.message;
        handles.push_back(answer.handle);
        ASSERT_TRUE(w.server.start(answer.handle));
    }
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == sources; }));
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    for (int i = 0; i < sources; ++i) {
        const auto log = w.sink.origin(handles[static_cast<std::size_t>(i)]);
        EXPECT_EQ(log.records, records);
        EXPECT_EQ(log.next_record, records);
        EXPECT_EQ(log.generator_id, i);
        EXPECT_TRUE(log.end_of_stream);
        EXPECT_FALSE(log.error);
        // A source that reached its end is stopped, not failed, and cannot start again: its
        // origin is closed (found by the simulator: a restart sent a second EoS).
        const auto handle = handles[static_cast<std::size_t>(i)];
        EXPECT_TRUE(
            w.sink.wait_for([&] { return w.server.state(handle) == source_state::stopped; }));
        EXPECT_FALSE(w.server.start(handles[static_cast<std::size_t>(i)]));
    }
    w.server.shutdown();
    w.pipeline.wait_idle();
    EXPECT_EQ(w.pool.stats().free, w.pool.config().buffer_count);
}

TEST(source_server, engine_stop_gives_neither_end_of_stream_nor_error_and_restart_continues) {
    test_worker w;
    const auto a = w.server.register_source(named("a"), generator(1, 0, 20000.0)).handle;
    const auto b = w.server.register_source(named("b"), generator(2, 0, 20000.0)).handle;
    ASSERT_TRUE(w.server.start(a));
    ASSERT_TRUE(w.server.start(b));
    ASSERT_TRUE(w.sink.wait_for([&] {
        const auto& o = w.sink.origins_locked();
        return o.count(a) != 0 && o.at(a).records > 1000 && o.count(b) != 0 &&
               o.at(b).records > 1000;
    }));
    w.server.stop(a);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.state(a) == source_state::stopped; }));
    const auto after_stop = w.sink.origin(a);
    EXPECT_FALSE(after_stop.end_of_stream);
    EXPECT_FALSE(after_stop.error);
    // b keeps running while a is stopped, restarted and later unregistered.
    const auto b_before = w.sink.origin(b).records;
    ASSERT_TRUE(
        w.sink.wait_for([&] { return w.sink.origins_locked().at(b).records > b_before + 500; }));
    ASSERT_TRUE(w.server.start(a));
    ASSERT_TRUE(w.sink.wait_for(
        [&] { return w.sink.origins_locked().at(a).records > after_stop.records + 500; }));
    EXPECT_FALSE(w.server.unregister_source(a)) << "a running source cannot be unregistered";
    w.server.stop(a);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.state(a) == source_state::stopped; }));
    EXPECT_TRUE(w.server.unregister_source(a));
    EXPECT_FALSE(w.server.known(a));
    EXPECT_EQ(w.server.state(b), source_state::running);
    // Sequence numbers stayed contiguous across the restart; records too (checked by the sink).
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    const auto final_a = w.sink.origin(a);
    EXPECT_FALSE(final_a.end_of_stream);
    EXPECT_FALSE(final_a.error);
}

TEST(source_server, many_sources_start_at_once_and_a_stop_right_after_still_stops_them) {
    test_worker w;
    std::vector<source_handle> finite;
    std::vector<source_handle> endless;
    for (std::uint64_t i = 0; i < 20; ++i) {
        finite.push_back(
            w.server.register_source(named("finite" + std::to_string(i)), generator(i, 100))
                .handle);
        endless.push_back(w.server
                              .register_source(named("endless" + std::to_string(i)),
                                               generator(100 + i, 0, 20000.0))
                              .handle);
    }
    std::vector<source_handle> all = finite;
    all.insert(all.end(), endless.begin(), endless.end());
    all.push_back(999999); // unknown: refused, the others start
    EXPECT_EQ(w.server.start(all), 40U);
    EXPECT_EQ(w.server.start(endless), 0U) << "running sources cannot start again";
    // Stopped at once after the call: each stop comes after its source's start on the lane.
    ASSERT_TRUE(stop_and_wait(w, endless));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == finite.size(); }));
    for (const auto h : finite) {
        const auto o = w.sink.origin(h);
        EXPECT_EQ(o.records, 100U);
        EXPECT_TRUE(o.end_of_stream);
    }
    EXPECT_EQ(w.server.start(finite), 0U) << "a finished source cannot start again";
    EXPECT_EQ(w.server.start(endless), endless.size()) << "stopped sources restart";
    ASSERT_TRUE(stop_and_wait(w, endless));
    EXPECT_EQ(w.sink.errors(), 0U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

/// Generator records as a legacy device delivers them: one record per blocking read, cut where
/// the space ends (the rest comes with the next read). Never returns 0 before the end: 0 means
/// end of stream in the blocking_reader contract.
class record_device {
public:
    explicit record_device(std::uint64_t id) : id_(id) {}
    std::size_t read_into(std::span<std::byte> space) {
        if (offset_ == size_) {
            size_ = format_generator_record(id_, next_++, record_);
            offset_ = 0;
        }
        const std::size_t n = std::min(size_ - offset_, space.size());
        std::memcpy(space.data(), record_ + offset_, n);
        offset_ += n;
        return n;
    }
    /// Records begun so far (the last may be cut).
    std::uint64_t records_started() const { return next_; }
    bool record_complete() const { return offset_ == size_; }

private:
    std::uint64_t id_;
    std::uint64_t next_ = 0;
    char record_[generator_record_bytes_max]{};
    std::size_t size_ = 0;
    std::size_t offset_ = 0;
};

/// A legacy reader that delivers some records and then fails.
class failing_reader final : public blocking_reader {
public:
    explicit failing_reader(std::uint64_t records) : records_(records) {}
    std::size_t read_blocking(std::span<std::byte> space) override {
        if (device_.records_started() >= records_ && device_.record_complete()) {
            throw std::runtime_error("device unplugged");
        }
        return device_.read_into(space);
    }

private:
    std::uint64_t records_;
    record_device device_{7};
};

TEST(source_server, a_stop_from_another_thread_racing_the_start_is_never_lost) {
    // start() marks its sources running, then posts their first steps to the lanes. A stop()
    // from another thread that lands in between posts its handler first; the start that runs
    // after it must not undo it. (Until 2026-11-27 the first step reset stop_requested: the
    // source ran on in state 'stopping', stop() could no longer reach it, and shutdown waited
    // for it forever; then the first step reopened a source its stop had closed.) The
    // generators release one record, then none for 1,000 s: a stop the start loses leaves its
    // source parked past any wait here.
    test_worker w;
    std::vector<source_handle> handles;
    for (std::uint64_t i = 0; i < 50; ++i) {
        handles.push_back(
            w.server.register_source(named("g" + std::to_string(i)), generator(i, 0, 0.001))
                .handle);
    }
    for (int round = 0; round < 200; ++round) {
        std::atomic<bool> go{false};
        std::thread stopper([&] {
            while (!go.load()) {
            }
            for (const auto h : handles) {
                w.server.stop(h); // before the claim: no effect; after it: must stop the run
            }
        });
        go.store(true);
        EXPECT_EQ(w.server.start(handles), handles.size());
        stopper.join();
        ASSERT_TRUE(stop_and_wait(w, handles)) << "round " << round << ": a stop was lost";
    }
    EXPECT_EQ(w.sink.errors(), 0U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

TEST(source_server, failing_source_gives_its_data_then_error_and_others_are_unaffected) {
    test_worker w;
    const auto bad = w.server.register_source(
        named("legacy"), [](environment& env, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<blocking_source>(
                env, lane, std::make_unique<failing_reader>(300), "legacy device");
        });
    const auto good = w.server.register_source(named("good"), generator(3, 2000));
    ASSERT_TRUE(bad.admitted());
    ASSERT_TRUE(good.admitted());
    ASSERT_TRUE(w.server.start(bad.handle));
    ASSERT_TRUE(w.server.start(good.handle));
    ASSERT_TRUE(w.sink.wait_for(
        [&] { return w.sink.errors_locked() == 1 && w.sink.end_of_streams_locked() == 1; }));
    const auto log = w.sink.origin(bad.handle);
    EXPECT_TRUE(log.error);
    EXPECT_EQ(log.records, 300U) << "every record read before the failure is delivered first";
    EXPECT_NE(log.error_message.find("device unplugged"), std::string::npos) << log.error_message;
    // The state is published by the coroutine's completion, just after the Error event left.
    EXPECT_TRUE(
        w.sink.wait_for([&] { return w.server.state(bad.handle) == source_state::failed; }));
    EXPECT_EQ(w.sink.origin(good.handle).records, 2000U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

TEST(source_server, tcp_client_to_a_closed_port_backs_off_then_reports_error) {
    server_options options;
    options.backoff_initial = 5ms;
    options.backoff_max = 20ms;
    options.reconnect_attempts_max = 3;
    test_worker w({64, 4096, 4, 64}, {1, 1, 1}, options);
    // A port nobody listens on: bind one, note it, close it.
    std::uint16_t port = 0;
    {
        asio::io_context io;
        asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
        port = probe.local_endpoint().port();
    }
    const auto answer = w.server.register_source(
        named("client"), [port](environment& env, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<tcp_client_source>(
                env, lane, tcp_client_options{"127.0.0.1", port, 1s, {}});
        });
    ASSERT_TRUE(w.server.start(answer.handle));
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.errors_locked() == 1; }));
    EXPECT_EQ(w.server.stats().reconnects_total, 3U);
    EXPECT_NE(w.sink.origin(answer.handle).error_message.find("gave up after 3 reconnects"),
              std::string::npos)
        << w.sink.origin(answer.handle).error_message;
}

TEST(source_server, listener_turns_each_connection_into_a_source) {
    test_worker w;
    listener_options l;
    l.name = "in";
    l.port = 0;
    l.connections_max = 3;
    const auto [error, port] = w.server.add_tcp_listener(l);
    ASSERT_FALSE(error) << error.message();
    asio::io_context io;
    auto peers = connect_peers(io, port, 4);
    // Three are admitted; the fourth is refused (closed) and counted.
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.stats().connections_refused_total == 1; }));
    for (int c = 0; c < 3; ++c) {
        asio::write(peers[static_cast<std::size_t>(c)],
                    asio::buffer(generator_text(static_cast<std::uint64_t>(100 + c), 0, 1000)));
        peers[static_cast<std::size_t>(c)].close();
    }
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 3; }));
    EXPECT_EQ(w.sink.total_records(), 3000U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    // Ended connections unregister themselves.
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.source_count() == 0; }));
}

TEST(source_server, slow_pipeline_makes_sources_suspend_without_loss_or_blocked_threads) {
    // 8 generators flat out into a tiny pool through a pipeline that takes 2 ms a buffer.
    test_worker w({24, 1024, 2, 64}, {2, 2, 2});
    w.sink.on_each_buffer = [] { std::this_thread::sleep_for(2ms); };
    constexpr int sources = 8;
    constexpr std::uint64_t records = 3000;
    const auto threads_before = sluice::test::thread_count();
    // Register all, then start all: a source registered while others already hold floating
    // buffers may be refused for now (reserve_lent_out), which is admission doing its job.
    std::vector<source_handle> handles;
    for (int i = 0; i < sources; ++i) {
        const auto answer =
            w.server.register_source(named("g" + std::to_string(i), {1, 4}),
                                     generator(static_cast<std::uint64_t>(i), records));
        ASSERT_TRUE(answer.admitted()) << answer.message;
        handles.push_back(answer.handle);
    }
    for (const auto h : handles) {
        w.server.start(h);
    }
    std::size_t threads_max = threads_before;
    ASSERT_TRUE(w.sink.wait_for(
        [&] {
            threads_max = std::max(threads_max, sluice::test::thread_count());
            return w.sink.end_of_streams_locked() == sources;
        },
        120s));
    EXPECT_EQ(w.sink.total_records(), sources * records);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    const auto stats = w.server.stats();
    EXPECT_GT(stats.backpressure_waits_total, 0U) << "sources never had to wait";
    // Bounded by the fixed pools, however long the sources waited: no thread was added to wait
    // for buffers. Before any processing ran, io 2 + blocking 2 + main existed (plus oneTBB
    // workers an earlier environment in this process may have left); at most the 2 compute
    // workers may appear since.
    EXPECT_LE(threads_max, threads_before + 2U) << "started with " << threads_before;
}

TEST(source_server, registration_beyond_the_pool_is_refused_while_others_run) {
    test_worker w({16, 1024, 4, 64});
    std::vector<source_handle> running;
    for (int i = 0; i < 6; ++i) {
        const auto answer =
            w.server.register_source(named("g" + std::to_string(i), {2, 2}),
                                     generator(static_cast<std::uint64_t>(i), 0, 5000));
        ASSERT_TRUE(answer.admitted()) << answer.message;
        w.server.start(answer.handle);
        running.push_back(answer.handle);
    }
    const auto refused = w.server.register_source(named("one-too-many", {2, 2}), generator(9, 0));
    EXPECT_EQ(refused.status, admission_status::overcommitted);
    EXPECT_NE(refused.message.find("one-too-many"), std::string::npos) << refused.message;
    EXPECT_NE(refused.message.find("12 + 2 + 4 > 16"), std::string::npos) << refused.message;
    for (const auto h : running) {
        EXPECT_EQ(w.server.state(h), source_state::running);
    }
    const auto before = w.sink.total_records();
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() > before + 1000; }));
}

TEST(source_server, file_source_reads_to_the_end_and_a_missing_file_fails) {
    test_worker w;
    const std::string path = ::testing::TempDir() + "/sluice_file_source.csv";
    {
        std::ofstream out(path, std::ios::binary);
        char record[generator_record_bytes_max];
        for (std::uint64_t n = 0; n < 20000; ++n) {
            out.write(record, static_cast<std::streamsize>(format_generator_record(5, n, record)));
        }
    }
    const auto file = w.server.register_source(
        named("file"), [path](environment& env, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<file_source>(env, lane, path);
        });
    const auto missing = w.server.register_source(
        named("missing"), [](environment& env, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<file_source>(env, lane, "/nonexistent/sluice.csv");
        });
    w.server.start(file.handle);
    w.server.start(missing.handle);
    ASSERT_TRUE(w.sink.wait_for(
        [&] { return w.sink.end_of_streams_locked() == 1 && w.sink.errors_locked() == 1; }));
    EXPECT_EQ(w.sink.origin(file.handle).records, 20000U);
    EXPECT_NE(w.sink.origin(missing.handle).error_message.find("/nonexistent/sluice.csv"),
              std::string::npos);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

TEST(source_server, udp_source_keeps_datagrams_whole) {
    test_worker w;
    std::atomic<std::uint16_t> port{0};
    udp_source* raw = nullptr;
    const auto answer = w.server.register_source(
        named("udp"), [&raw](environment& env, const executor& lane) -> std::unique_ptr<source> {
            auto s = std::make_unique<udp_source>(env, lane, udp_options{"127.0.0.1", 0, 4096});
            raw = s.get();
            return s;
        });
    ASSERT_TRUE(w.server.start(answer.handle));
    ASSERT_TRUE(w.sink.wait_for(
        [&] {
            port = raw->port();
            return port != 0;
        },
        10s));
    asio::io_context io;
    asio::ip::udp::socket sender(io, asio::ip::udp::v4());
    char record[generator_record_bytes_max];
    for (std::uint64_t n = 0; n < 500; ++n) {
        const auto size = format_generator_record(11, n, record);
        sender.send_to(asio::buffer(record, size), {asio::ip::make_address("127.0.0.1"), port});
        if (n % 50 == 49) {
            // Loopback UDP can drop under a burst; pace a little so the test checks framing.
            ASSERT_TRUE(
                w.sink.wait_for([&] { return w.sink.total_records_locked() >= n + 1; }, 10s));
        }
    }
    EXPECT_EQ(w.sink.total_records(), 500U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

/// A legacy reader that blocks like a device: sleeps, then returns (up to) one record.
class slow_device final : public blocking_reader {
public:
    slow_device(std::uint64_t id, std::uint64_t records) : records_(records), device_(id) {}
    std::size_t read_blocking(std::span<std::byte> space) override {
        if (device_.records_started() == records_ && device_.record_complete()) {
            return 0;
        }
        std::this_thread::sleep_for(100us);
        return device_.read_into(space);
    }

private:
    std::uint64_t records_;
    record_device device_;
};

TEST(source_server, legacy_blocking_sources_run_on_a_bounded_pool) {
    test_worker w({256, 1024, 4, 256}, {2, 2, 2});
    const auto threads_before = sluice::test::thread_count();
    constexpr int sources = 30; // far more sources than blocking threads
    for (int i = 0; i < sources; ++i) {
        const auto answer = w.server.register_source(
            named("dev" + std::to_string(i)),
            [i](environment& env, const executor& lane) -> std::unique_ptr<source> {
                return std::make_unique<blocking_source>(
                    env, lane, std::make_unique<slow_device>(static_cast<std::uint64_t>(i), 200),
                    "device");
            });
        ASSERT_TRUE(answer.admitted());
        w.server.start(answer.handle);
    }
    std::size_t threads_max = threads_before;
    ASSERT_TRUE(w.sink.wait_for([&] {
        threads_max = std::max(threads_max, sluice::test::thread_count());
        return w.sink.end_of_streams_locked() == sources;
    }));
    EXPECT_EQ(w.sink.total_records(), sources * 200U);
    EXPECT_LE(threads_max, threads_before + 2U)
        << "blocking reads used more than the bounded pool; started with " << threads_before;
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

std::uint32_t parked(const source_server& server, source_kind kind) {
    return server.stats().parked_by_kind[static_cast<std::size_t>(kind)];
}

/// Idle connections park (no coroutine), wake when data comes, park again when drained, and
/// nothing is lost across the parks; with parking off the same traffic arrives the same way.
void idle_connections_round_trip(bool park_idle) {
    server_options options;
    options.park_idle = park_idle;
    test_worker w({512, 4096, 8, 8192}, {2, 2, 1}, options);
    const auto [error, port] = w.server.add_tcp_listener(listener_options{});
    ASSERT_FALSE(error) << error.message();
    constexpr std::size_t connections = 40;
    asio::io_context io;
    auto peers = connect_peers(io, port, connections);
    const auto expected_parked = park_idle ? connections : 0U;
    ASSERT_TRUE(w.sink.wait_for([&] {
        return w.server.stats().sources_by_state[static_cast<std::size_t>(source_state::running)] ==
                   connections &&
               parked(w.server, source_kind::tcp_connection) == expected_parked;
    })) << parked(w.server, source_kind::tcp_connection)
        << " parked";
    // Two rounds of 300 records per connection with the connections idle in between.
    for (std::uint64_t round = 0; round < 2; ++round) {
        for (std::size_t c = 0; c < connections; ++c) {
            asio::write(peers[c], asio::buffer(generator_text(c, round * 300, 300)));
        }
        ASSERT_TRUE(w.sink.wait_for(
            [&] { return w.sink.total_records_locked() == (round + 1) * 300 * connections; }));
        ASSERT_TRUE(w.sink.wait_for(
            [&] { return parked(w.server, source_kind::tcp_connection) == expected_parked; }));
    }
    if (park_idle) {
        EXPECT_GE(w.server.stats().parks_total, 2 * connections);
    } else {
        EXPECT_EQ(w.server.stats().parks_total, 0U);
    }
    for (auto& peer : peers) {
        peer.close();
    }
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == connections; }));
    EXPECT_EQ(w.sink.total_records(), 600 * connections);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    EXPECT_EQ(parked(w.server, source_kind::tcp_connection), 0U);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.server.source_count() == 0; }));
}

TEST(source_server, idle_connections_park_and_wake_without_loss) {
    idle_connections_round_trip(true);
}

TEST(source_server, with_parking_off_idle_connections_wait_in_their_coroutines) {
    idle_connections_round_trip(false);
}

TEST(source_server, a_tcp_client_parks_between_bursts_and_across_a_reconnect_without_loss) {
    server_options options;
    options.backoff_initial = 5ms;
    options.backoff_max = 20ms;
    test_worker w({64, 4096, 4, 64}, {2, 2, 1}, options);
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    const std::uint16_t port = acceptor.local_endpoint().port();
    const auto answer = w.server.register_source(
        named("client"), [port](environment& env, const executor& lane) -> std::unique_ptr<source> {
            return std::make_unique<tcp_client_source>(
                env, lane, tcp_client_options{"127.0.0.1", port, 1s, {}});
        });
    ASSERT_TRUE(answer.admitted()) << answer.message;
    ASSERT_TRUE(w.server.start(answer.handle));
    const auto client_parked = [&] { return parked(w.server, source_kind::tcp_client) == 1; };

    auto peer = acceptor.accept();
    ASSERT_TRUE(w.sink.wait_for(client_parked)) << "a connected client with nothing to read parks";
    asio::write(peer, asio::buffer(generator_text(4, 0, 300)));
    ASSERT_TRUE(
        w.sink.wait_for([&] { return w.sink.total_records_locked() == 300 && client_parked(); }));
    asio::write(peer, asio::buffer(generator_text(4, 300, 300)));
    ASSERT_TRUE(
        w.sink.wait_for([&] { return w.sink.total_records_locked() == 600 && client_parked(); }));
    // A reset while parked: the client reconnects (backoff) and the origin continues.
    peer.set_option(asio::socket_base::linger(true, 0));
    peer.close();
    auto second = acceptor.accept();
    ASSERT_TRUE(w.sink.wait_for(client_parked));
    asio::write(second, asio::buffer(generator_text(4, 600, 300)));
    ASSERT_TRUE(
        w.sink.wait_for([&] { return w.sink.total_records_locked() == 900 && client_parked(); }));
    second.close(); // a clean end: end of stream
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    EXPECT_EQ(w.sink.total_records(), 900U);
    EXPECT_EQ(w.sink.errors(), 0U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    const auto stats = w.server.stats();
    EXPECT_EQ(stats.reconnects_total, 1U);
    EXPECT_GE(stats.parks_total, 4U);
    EXPECT_EQ(parked(w.server, source_kind::tcp_client), 0U);
}

TEST(source_server, rate_limited_generators_park_between_bursts_and_deliver_every_record) {
    test_worker w;
    constexpr int sources = 20;
    for (int i = 0; i < sources; ++i) {
        auto factory = [i](environment& env, const executor& lane) -> std::unique_ptr<source> {
            generator_options g;
            g.id = static_cast<std::uint64_t>(i);
            g.records_max = 30;
            // A burst of 5 every 50 ms: far apart enough that even a sanitizer build drains a
            // burst before the next is due, so every generator parks.
            g.records_per_second = 100.0;
            g.burst_records = 5;
            return std::make_unique<generator_source>(env, lane, g);
        };
        const auto answer = w.server.register_source(named("paced" + std::to_string(i)), factory);
        ASSERT_TRUE(answer.admitted()) << answer.message;
        ASSERT_TRUE(w.server.start(answer.handle));
    }
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == sources; }));
    EXPECT_EQ(w.sink.total_records(), sources * 30U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    EXPECT_GE(w.server.stats().parks_total, static_cast<std::uint64_t>(sources))
        << "no generator parked";
    EXPECT_EQ(parked(w.server, source_kind::generator), 0U);
}

TEST(source_server, a_parked_source_keeps_its_partial_buffer_until_the_deadline_or_a_stop) {
    server_options options;
    options.demand_flush = false; // a partial buffer waits for its flush deadline
    test_worker w({512, 4096, 8, 8192}, {2, 2, 1}, options);
    // Two generators with one record now and nothing due for 1,000 s: each reads its record
    // into a buffer and parks holding it.
    const auto timed =
        w.server.register_source(named("timed", {1, 4}, 500ms), generator(1, 0, 0.001));
    const auto held =
        w.server.register_source(named("held", {1, 4}, 1000s), generator(2, 0, 0.001));
    ASSERT_TRUE(timed.admitted() && held.admitted());
    ASSERT_TRUE(w.server.start(timed.handle));
    ASSERT_TRUE(w.server.start(held.handle));
    ASSERT_TRUE(w.sink.wait_for([&] { return parked(w.server, source_kind::generator) == 2; }));
    const auto parks = w.server.stats().parks_total;
    EXPECT_EQ(w.sink.total_records(), 0U) << "a held buffer went before its deadline";
    // The lane's sweeper emits the timed one at its deadline, without waking the source.
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() == 1; }));
    auto stats = w.server.stats();
    EXPECT_EQ(stats.flushes_total[static_cast<std::size_t>(flush_reason::timeout)], 1U);
    EXPECT_EQ(stats.parks_total, parks);
    EXPECT_EQ(parked(w.server, source_kind::generator), 2U);
    // A stop delivers the held one, then the source stops: its data, neither EoS nor Error.
    w.server.stop(held.handle);
    ASSERT_TRUE(w.sink.wait_for([&] {
        return w.server.state(held.handle) == source_state::stopped &&
               w.sink.total_records_locked() == 2;
    }));
    stats = w.server.stats();
    EXPECT_EQ(stats.flushes_total[static_cast<std::size_t>(flush_reason::stop)], 1U);
    w.server.stop(timed.handle);
    ASSERT_TRUE(
        w.sink.wait_for([&] { return w.server.state(timed.handle) == source_state::stopped; }));
    w.pipeline.wait_idle();
    EXPECT_EQ(w.pool.stats().free, 512U) << "a buffer stayed with a stopped source";
    EXPECT_EQ(w.sink.end_of_streams(), 0U);
    EXPECT_EQ(w.sink.errors(), 0U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

TEST(source_server, parked_sources_stop_promptly_restart_and_shut_down) {
    test_worker w;
    // Generators with nothing due for 1,000 s after their first record, and idle connections.
    std::vector<source_handle> generators;
    for (int i = 0; i < 10; ++i) {
        const auto answer =
            w.server.register_source(named("sleepy" + std::to_string(i)),
                                     generator(static_cast<std::uint64_t>(i), 0, 0.001));
        ASSERT_TRUE(answer.admitted());
        ASSERT_TRUE(w.server.start(answer.handle));
        generators.push_back(answer.handle);
    }
    const auto [error, port] = w.server.add_tcp_listener(listener_options{});
    ASSERT_FALSE(error) << error.message();
    asio::io_context io;
    auto peers = connect_peers(io, port, 10);
    // Each generator's first record goes out, then it parks until the next is due.
    ASSERT_TRUE(w.sink.wait_for([&] {
        return parked(w.server, source_kind::generator) == 10 &&
               parked(w.server, source_kind::tcp_connection) == 10 &&
               w.sink.total_records_locked() == 10;
    }));
    // A stop reaches a parked source through its close: stopped at once, no EoS, no Error.
    ASSERT_TRUE(stop_and_wait(w, generators));
    EXPECT_EQ(parked(w.server, source_kind::generator), 0U);
    EXPECT_EQ(w.sink.end_of_streams(), 0U);
    EXPECT_EQ(w.sink.errors(), 0U);
    // Restarted, a generator runs and parks again.
    ASSERT_TRUE(w.server.start(generators.front()));
    ASSERT_TRUE(w.sink.wait_for([&] { return parked(w.server, source_kind::generator) == 1; }));
    // Every parked source ends within a bound — the restarted generator by a stop, the
    // connections by their peers leaving — so a parked wait that never ends fails here rather
    // than hanging the shutdown in ~test_worker.
    w.server.stop(generators.front());
    for (auto& peer : peers) {
        peer.close();
    }
    // Each connection's peer left: end of stream (delivered by processing, so waited for too).
    ASSERT_TRUE(w.sink.wait_for([&] {
        const auto stats = w.server.stats();
        return stats.sources_by_state[static_cast<std::size_t>(source_state::running)] == 0 &&
               stats.sources_by_state[static_cast<std::size_t>(source_state::stopping)] == 0 &&
               parked(w.server, source_kind::generator) == 0 &&
               parked(w.server, source_kind::tcp_connection) == 0 &&
               w.sink.end_of_streams_locked() == 10;
    }));
    EXPECT_EQ(w.sink.errors(), 0U);
    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
}

} // namespace

namespace {

/// One connection sends one record and stays open; returns the flush counts once it arrived.
std::array<std::uint64_t, flush_reason_count> flushes_for_one_idle_record(bool demand_flush) {
    server_options options;
    options.demand_flush = demand_flush;
    options.demand_flush_min_bytes = 1; // one short record is enough (the minimum has its own test)
    test_worker w({512, 4096, 8, 8192}, {2, 2, 1}, options);
    listener_options l;
    l.flush_timeout = 200ms;
    const auto [error, port] = w.server.add_tcp_listener(l);
    EXPECT_FALSE(error) << error.message();
    asio::io_context io;
    asio::ip::tcp::socket peer(io);
    peer.connect({asio::ip::make_address("127.0.0.1"), port});
    char record[generator_record_bytes_max];
    asio::write(peer, asio::buffer(record, format_generator_record(5, 0, record)));
    EXPECT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() == 1; }));
    auto flushes = w.server.stats().flushes_total;
    peer.close();
    EXPECT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    return flushes;
}

TEST(source_server, demand_flush_feeds_idle_processing_and_can_be_turned_off) {
    const auto demand = static_cast<std::size_t>(flush_reason::demand);
    const auto timeout = static_cast<std::size_t>(flush_reason::timeout);
    // Processing is idle: the partial buffer goes at once, long before the 200 ms timeout.
    const auto on = flushes_for_one_idle_record(true);
    EXPECT_EQ(on[demand], 1U);
    EXPECT_EQ(on[timeout], 0U);
    // Off: the same record waits for the flush timeout.
    const auto off = flushes_for_one_idle_record(false);
    EXPECT_EQ(off[demand], 0U);
    EXPECT_EQ(off[timeout], 1U);
}

} // namespace
