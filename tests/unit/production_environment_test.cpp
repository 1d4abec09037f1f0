// The production environment's task counters, which feed sluice_thread_pool_queued_tasks and
// sluice_thread_pool_active_tasks for the io and blocking pools; and the callback waits that
// parked sources use (timer on_expiry, a TCP stream's park).

#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>

#include "sluice/env/production_environment.hpp"

namespace {

namespace asio = boost::asio;
using sluice::runtime::pool_load;
using sluice::runtime::production_environment;
using sluice::runtime::production_options;

/// Polls `condition` for up to 10 s (the counters are updated by other threads).
template <typename Condition> bool eventually(Condition condition) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return condition();
}

TEST(production_environment, io_load_counts_handlers_waiting_for_a_busy_lane) {
    production_environment env(production_options{1, 1, 1});
    const auto lane = env.lane_executor(0);
    std::promise<void> release;
    auto released = release.get_future().share();
    asio::post(lane, [released] { released.wait(); });
    ASSERT_TRUE(eventually([&] { return env.io_load().active == 1; }));

    std::atomic<int> ran{0};
    for (int i = 0; i < 5; ++i) {
        asio::post(lane, [&ran] { ran.fetch_add(1); });
    }
    const pool_load busy = env.io_load();
    EXPECT_EQ(busy.queued, 5U);
    EXPECT_EQ(busy.active, 1U);

    release.set_value();
    ASSERT_TRUE(eventually([&] { return ran.load() == 5; }));
    EXPECT_TRUE(eventually([&] {
        const pool_load idle = env.io_load();
        return idle.queued == 0 && idle.active == 0;
    }));
}

TEST(production_environment, inline_dispatch_on_the_lane_is_not_counted_twice) {
    production_environment env(production_options{1, 1, 1});
    const auto lane = env.lane_executor(0);
    std::promise<pool_load> seen;
    asio::post(lane, [&] { asio::dispatch(lane, [&] { seen.set_value(env.io_load()); }); });
    const pool_load inside = seen.get_future().get();
    EXPECT_EQ(inside.active, 1U);
    EXPECT_EQ(inside.queued, 0U);
}

TEST(production_environment, coroutines_and_timers_run_through_the_counted_lanes) {
    production_environment env(production_options{2, 1, 1});
    std::atomic<int> woke{0};
    for (std::size_t l = 0; l < env.lane_count(); ++l) {
        const auto lane = env.lane_executor(l);
        asio::co_spawn(
            lane,
            [&env, lane, &woke]() -> asio::awaitable<void> {
                auto timer = env.make_timer(lane);
                for (int i = 0; i < 3; ++i) {
                    if (co_await timer->wait_for(std::chrono::milliseconds(1))) {
                        woke.fetch_add(1);
                    }
                }
            },
            asio::detached);
    }
    ASSERT_TRUE(eventually([&] { return woke.load() == 6; }));
    EXPECT_TRUE(eventually([&] {
        const pool_load idle = env.io_load();
        return idle.queued == 0 && idle.active == 0;
    }));
}

TEST(production_environment, blocking_load_counts_reads_running_and_waiting) {
    production_environment env(production_options{1, 1, 2});
    std::promise<void> release;
    auto released = release.get_future().share();
    for (int i = 0; i < 3; ++i) {
        env.post_blocking([released] { released.wait(); });
    }
    ASSERT_TRUE(eventually([&] { return env.blocking_load().active == 2; }));
    EXPECT_EQ(env.blocking_load().queued, 1U);
    release.set_value();
    EXPECT_TRUE(eventually([&] {
        const pool_load idle = env.blocking_load();
        return idle.queued == 0 && idle.active == 0;
    }));
}

/// Runs `work` on `lane` and waits for it (the lane owns what `work` touches).
template <typename Work> void on_lane(const sluice::runtime::executor& lane, Work work) {
    std::promise<void> done;
    asio::post(lane, [&] {
        work();
        done.set_value();
    });
    done.get_future().wait();
}

TEST(production_environment, timer_on_expiry_reports_elapsed_or_cancelled_on_the_lane) {
    production_environment env(production_options{1, 1, 1});
    const auto lane = env.lane_executor(0);
    std::promise<bool> first;
    std::promise<bool> second;
    std::unique_ptr<sluice::runtime::timer> timer;
    asio::post(lane, [&] {
        timer = env.make_timer(lane);
        timer->on_expiry(std::chrono::milliseconds(1), [&](bool elapsed) {
            first.set_value(elapsed);
            // Re-armed from its own callback, then cancelled before it can elapse.
            timer->on_expiry(std::chrono::hours(1), [&](bool again) { second.set_value(again); });
            timer->cancel();
        });
    });
    EXPECT_TRUE(first.get_future().get());
    EXPECT_FALSE(second.get_future().get());
    on_lane(lane, [&] { timer.reset(); });
}

/// A parked TCP wait: never wakes inline, wakes on data, is advised only when nothing is
/// queued, and a close (before or during the wait) ends it with an error.
TEST(production_environment, parked_tcp_wait_wakes_on_data_after_returning_and_ends_at_close) {
    using boost::system::error_code;
    using sluice::runtime::byte_stream;
    using sluice::runtime::read_result;
    production_environment env(production_options{1, 1, 1});
    const auto lane = env.lane_executor(0);
    auto [listen_error, listener] = env.listen(lane, "127.0.0.1", 0, 16);
    ASSERT_FALSE(listen_error) << listen_error.message();
    std::promise<std::unique_ptr<byte_stream>> accepted;
    asio::co_spawn(
        lane,
        [&]() -> asio::awaitable<void> {
            auto [error, stream] = co_await listener->accept(lane);
            accepted.set_value(std::move(stream));
        },
        asio::detached);
    asio::io_context io;
    asio::ip::tcp::socket peer(io);
    peer.connect({asio::ip::make_address("127.0.0.1"), listener->port()});
    std::unique_ptr<byte_stream> stream = accepted.get_future().get();
    ASSERT_NE(stream, nullptr);

    // Parks on the lane (a new connection counts as drained); the wake waits for data.
    std::atomic<bool> returned{false};
    std::promise<bool> advised;
    std::promise<std::pair<error_code, bool>> woke;
    asio::post(lane, [&] {
        const bool park = stream->should_park();
        if (park) {
            stream->park([&](error_code error) { woke.set_value({error, returned.load()}); });
            returned = true;
        }
        advised.set_value(park);
    });
    ASSERT_TRUE(advised.get_future().get()) << "a new connection with nothing sent should park";
    auto woke_future = woke.get_future();
    EXPECT_EQ(woke_future.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
    asio::write(peer, asio::buffer("abcdef", 6));
    const auto [error, after_return] = woke_future.get();
    EXPECT_FALSE(error) << error.message();
    EXPECT_TRUE(after_return) << "woke before park returned";

    // After data, park only when nothing is queued: half read, no; all read, yes (the kernel
    // says so before any empty read); an empty read, yes.
    std::promise<std::array<bool, 3>> park_advice;
    asio::post(lane, [&] {
        std::array<std::byte, 3> space{};
        std::array<bool, 3> advice{};
        EXPECT_EQ(stream->read_now(space).bytes, 3U);
        advice[0] = stream->should_park();
        EXPECT_EQ(stream->read_now(space).bytes, 3U);
        advice[1] = stream->should_park();
        EXPECT_EQ(stream->read_now(space).state, read_result::status::would_block);
        advice[2] = stream->should_park();
        park_advice.set_value(advice);
    });
    const auto advice = park_advice.get_future().get();
    EXPECT_FALSE(advice[0]) << "3 bytes still queued";
    EXPECT_TRUE(advice[1]) << "all read";
    EXPECT_TRUE(advice[2]) << "drained";

    // Closed while parked, and parked after a close: both end with an error, promptly.
    std::promise<error_code> closed_while_parked;
    std::promise<error_code> parked_after_close;
    asio::post(lane, [&] {
        stream->park([&](error_code e) { closed_while_parked.set_value(e); });
        stream->close();
    });
    EXPECT_EQ(closed_while_parked.get_future().get(), asio::error::operation_aborted);
    asio::post(lane, [&] { stream->park([&](error_code e) { parked_after_close.set_value(e); }); });
    EXPECT_TRUE(parked_after_close.get_future().get())
        << "a closed stream's wait must end with an error";
    on_lane(lane, [&] { stream.reset(); });
}

/// An engine that embeds sluice keeps its own oneTBB parallelism: sluice's compute limit is its
/// own arena's, never a process-wide cap below what the host asked for. Runs in a fresh process
/// (a death test re-executes this binary) because oneTBB's limits are per process and earlier
/// tests made environments.
TEST(production_environment, leaves_the_host_processes_onetbb_parallelism_alone) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            using tbb::global_control;
            const std::size_t host_limit = 16;
            const global_control host(global_control::max_allowed_parallelism, host_limit);
            {
                production_environment env(production_options{1, 1, 1});
                std::atomic<int> ran{0};
                env.post_compute([&] { ran.fetch_add(1); });
                while (ran.load() == 0) {
                    std::this_thread::yield();
                }
                if (global_control::active_value(global_control::max_allowed_parallelism) !=
                    host_limit) {
                    std::fprintf(
                        stderr, "capped while the environment lives: %zu\n",
                        global_control::active_value(global_control::max_allowed_parallelism));
                    std::exit(1);
                }
            }
            const std::size_t after =
                global_control::active_value(global_control::max_allowed_parallelism);
            if (after != host_limit) {
                std::fprintf(stderr, "capped after the environment: %zu\n", after);
                std::exit(2);
            }
            std::exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}

} // namespace
