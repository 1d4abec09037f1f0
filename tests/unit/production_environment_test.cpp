// The production environment's task counters, which feed sluice_thread_pool_queued_tasks and
// sluice_thread_pool_active_tasks for the io and blocking pools.

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

#include "runtime/production_environment.hpp"

namespace {

namespace asio = boost::asio;
using sluice::runtime::pool_load;
using sluice::runtime::production_environment;
using sluice::runtime::production_options;

/// Polls `condition` for up to 10 s (the counters are updated by other threads).
template <typename Condition>
bool eventually(Condition condition) {
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
    asio::post(lane, [&] {
        asio::dispatch(lane, [&] { seen.set_value(env.io_load()); });
    });
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

} // namespace
