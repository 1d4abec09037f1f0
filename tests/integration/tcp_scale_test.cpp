/// 5,000 TCP sources fed by a load generator in its own process: every byte arrives once and in
/// order per source (the sink checks every record), and the thread count does not grow with the
/// number of sources.

#include <sys/resource.h>

#include <gtest/gtest.h>

#include "testing/process.hpp"
#include "testing/test_worker.hpp"

namespace {

using namespace sluice::runtime;
using namespace std::chrono_literals;

void raise_open_file_limit() {
    rlimit limit{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
    limit.rlim_cur = limit.rlim_max;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
    ASSERT_GE(limit.rlim_cur, 11000U)
        << "the test needs 5,000 sockets here and 5,000 in the load generator's process";
}

/// Feeds `connections` × `records` through the listener; returns the peak thread count seen.
std::size_t feed(sluice::test::test_worker& w, std::uint16_t port, std::uint32_t connections,
                 std::uint64_t records, std::uint64_t id_base, std::uint64_t eos_expected) {
    sluice::test::child_process load({SLUICE_LOADGEN, "--port", std::to_string(port),
                                      "--connections", std::to_string(connections), "--records",
                                      std::to_string(records), "--id-base",
                                      std::to_string(id_base)},
                                     "loadgen_" + std::to_string(connections));
    EXPECT_TRUE(load.started());
    std::size_t threads_max = sluice::test::thread_count();
    const bool all_ended = w.sink.wait_for(
        [&] {
            threads_max = std::max(threads_max, sluice::test::thread_count());
            return w.sink.end_of_streams_locked() >= eos_expected;
        },
        180s);
    EXPECT_TRUE(all_ended) << "end of streams: " << w.sink.end_of_streams() << " of "
                           << eos_expected;
    EXPECT_EQ(load.wait(60s), 0) << load.out() << load.err();
    const auto report = load.out();
    EXPECT_EQ(sluice::test::json_number(report, "records_sent"),
              static_cast<long long>(connections * records))
        << report;
    return threads_max;
}

TEST(tcp_scale, five_thousand_sources_deliver_every_byte_once_in_order_on_fixed_threads) {
    raise_open_file_limit();
    constexpr std::uint32_t small = 50;
    constexpr std::uint32_t large = 5000;
    sluice::test::test_worker w({large + small + 1024, 4096, 64, large + small + 64}, {2, 2, 2});
    listener_options l;
    l.name = "scale";
    l.port = 0;
    l.connections_max = large + small;
    l.limits = {1, 2};
    l.flush_timeout = 20ms;
    const auto [error, port] = w.server.add_tcp_listener(l);
    ASSERT_FALSE(error) << error.message();

    const std::size_t threads_small = feed(w, port, small, 400, 0, small);
    const std::size_t threads_large = feed(w, port, large, 100, 100000, small + large);

    EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    EXPECT_EQ(w.sink.total_records(), small * 400U + large * 100U);
    EXPECT_EQ(w.sink.errors(), 0U);
    const auto stats = w.server.stats();
    EXPECT_EQ(stats.connections_accepted_total, small + large);
    EXPECT_EQ(stats.connections_refused_total, 0U);
    std::uint64_t origins = 0;
    w.sink.wait_for([&] {
        for (const auto& [origin, log] : w.sink.origins_locked()) {
            ++origins;
            const std::uint64_t expected = log.generator_id < 100000 ? 400 : 100;
            EXPECT_EQ(log.records, expected) << "origin " << origin;
            EXPECT_TRUE(log.end_of_stream) << "origin " << origin;
        }
        return true;
    });
    EXPECT_EQ(origins, small + large);
    // Threads: the same with 50 and with 5,000 sources, and only the fixed pools plus main.
    EXPECT_EQ(threads_large, threads_small);
    EXPECT_LE(threads_large, 2U + 2U + 2U + 1U);
    std::printf("threads with %u sources: %zu, with %u sources: %zu\n", small, threads_small, large,
                threads_large);
}

} // namespace
