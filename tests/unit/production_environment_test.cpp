// The production environment's task counters, which feed sluice_thread_pool_queued_tasks and
// sluice_thread_pool_active_tasks for the io and blocking pools; and the callback waits that
// parked sources use (timer on_expiry, a TCP stream's park).

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>

#include "sluice/env/production_environment.hpp"
#include "sluice/env/transport.hpp"

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

/// Runs `work` on `lane` and returns its result.
template <typename Work> auto on_lane_result(const sluice::runtime::executor& lane, Work work) {
    std::promise<decltype(work())> done;
    asio::post(lane, [&] { done.set_value(work()); });
    return done.get_future().get();
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

/// TCP streams are watched by their lane's own epoll set (env/production/lane_poller.hpp),
/// edge-triggered: more parked streams than one epoll_wait returns all wake, each once; a wait
/// that begins with bytes already queued completes (no new edge will come); a wait in a parallel
/// group ends when the other branch wins, and the stream can wait again; and a wake that closes
/// a stream whose readiness is in the same batch ends that stream's wait with an error, once.
TEST(production_environment, tcp_streams_on_the_lane_poller_wake_once_each_and_never_miss_data) {
    using boost::system::error_code;
    using sluice::runtime::byte_stream;
    using sluice::runtime::read_result;
    constexpr std::size_t n = 300; // more than the poller reads per round and per pass
    production_environment env(production_options{1, 1, 1});
    const auto lane = env.lane_executor(0);
    auto [listen_error, listener] = env.listen(lane, "127.0.0.1", 0, 512);
    ASSERT_FALSE(listen_error) << listen_error.message();
    std::vector<std::unique_ptr<byte_stream>> streams;
    std::promise<void> all_accepted;
    asio::co_spawn(
        lane,
        [&]() -> asio::awaitable<void> {
            while (streams.size() < n) {
                auto [error, stream] = co_await listener->accept(lane);
                EXPECT_FALSE(error) << error.message();
                if (error) {
                    break;
                }
                streams.push_back(std::move(stream));
            }
            all_accepted.set_value();
        },
        asio::detached);
    asio::io_context io;
    std::vector<asio::ip::tcp::socket> peers;
    for (std::size_t i = 0; i < n; ++i) {
        peers.emplace_back(io);
        peers.back().connect({asio::ip::make_address("127.0.0.1"), listener->port()});
    }
    all_accepted.get_future().wait();
    ASSERT_EQ(streams.size(), n);
    const auto write_all = [&](const char* text, std::size_t bytes) {
        for (auto& peer : peers) {
            asio::write(peer, asio::buffer(text, bytes));
        }
    };
    // Reads every stream dry (each holds `bytes` now); true when each gave exactly that.
    const auto drain_all = [&](std::size_t bytes) {
        bool exact = true;
        on_lane(lane, [&] {
            for (auto& stream : streams) {
                std::array<std::byte, 64> space{};
                std::size_t got = 0;
                for (int reads = 0; reads < 16; ++reads) {
                    const auto r = stream->read_now(space);
                    if (r.state != read_result::status::data) {
                        break;
                    }
                    got += r.bytes;
                }
                exact = exact && got == bytes;
            }
        });
        return exact;
    };

    // Parks every stream, counting each one's wakes and errors; `close_partner`: a wake that
    // ends without an error closes its partner (0-1, 2-3, ...) if that one has not woken yet.
    std::vector<int> woke(n, 0);
    std::atomic<std::size_t> woken{0};
    std::atomic<std::size_t> failed{0};
    const auto park_all = [&](bool close_partner) {
        std::fill(woke.begin(), woke.end(), 0);
        woken = 0;
        failed = 0;
        on_lane(lane, [&] {
            for (std::size_t i = 0; i < n; ++i) {
                ASSERT_TRUE(streams[i]->should_park());
                streams[i]->park([&, i, close_partner](error_code error) {
                    ++woke[i];
                    failed += error ? 1 : 0;
                    ++woken;
                    if (close_partner && !error && woke[i ^ 1U] == 0) {
                        streams[i ^ 1U]->close();
                    }
                });
            }
        });
    };
    // True when every wait ended, each exactly once.
    const auto each_woke_once = [&] {
        if (!eventually([&] { return woken.load() == n; })) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20)); // a second wake shows now
        return on_lane_result(lane, [&] {
            return std::count(woke.begin(), woke.end(), 1) == static_cast<std::ptrdiff_t>(n);
        });
    };

    // 1. All parked, then data for all: every wait ends once, without an error.
    park_all(false);
    write_all("ab", 2);
    ASSERT_TRUE(each_woke_once()) << woken.load() << " of " << n << " woke";
    EXPECT_EQ(failed.load(), 0U);

    // 2. Half read, then a coroutine wait: the queued byte must end it (no new edge comes).
    std::atomic<std::size_t> ready{0};
    on_lane(lane, [&] {
        for (auto& stream : streams) {
            std::array<std::byte, 1> one{};
            EXPECT_EQ(stream->read_now(one).bytes, 1U);
            asio::co_spawn(
                lane,
                [&, s = stream.get()]() -> asio::awaitable<void> {
                    const error_code error = co_await s->wait_readable();
                    EXPECT_FALSE(error) << error.message();
                    ++ready;
                },
                asio::detached);
        }
    });
    ASSERT_TRUE(eventually([&] { return ready.load() == n; }))
        << ready.load() << " of " << n << " waits that began with a byte queued ended";
    EXPECT_TRUE(drain_all(1));

    // 3. A wait in a parallel group that the timer wins ends; the next wait gets the data.
    std::promise<std::pair<std::size_t, error_code>> raced;
    asio::co_spawn(
        lane,
        [&]() -> asio::awaitable<void> {
            using namespace asio::experimental::awaitable_operators;
            auto timer = env.make_timer(lane);
            const auto first = co_await (streams[0]->wait_readable() ||
                                         timer->wait_for(std::chrono::milliseconds(20)));
            const error_code second = co_await streams[0]->wait_readable();
            raced.set_value({first.index(), second});
        },
        asio::detached);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    asio::write(peers[0], asio::buffer("c", 1));
    const auto [winner, second] = raced.get_future().get();
    EXPECT_EQ(winner, 1U) << "the timer should have won";
    EXPECT_FALSE(second) << second.message();
    EXPECT_TRUE(on_lane_result(lane, [&] {
        std::array<std::byte, 8> space{};
        return streams[0]->read_now(space).bytes == 1;
    }));

    // 4. Each wake closes its partner (0-1, 2-3, ...) when the partner has not woken: the
    // partner's readiness may already be in the same batch. Each wait still ends exactly once.
    park_all(true);
    write_all("d", 1);
    ASSERT_TRUE(each_woke_once()) << woken.load() << " of " << n << " woke";
    EXPECT_EQ(failed.load(), n / 2) << "one of each pair was closed while it waited";

    // 5. A stream that read itself empty and does not wait yet (an HTTP source answering, a
    // source waiting for a buffer) gets bytes; a pass reads their edge while it is not waiting
    // (another stream's wake). Its later wait must still end: the edge is gone.
    std::size_t quiet = n;
    std::size_t busy = n;
    on_lane(lane, [&] {
        for (std::size_t i = 0; i < n && (quiet == n || busy == n); ++i) {
            std::array<std::byte, 8> space{};
            const auto r = streams[i]->read_now(space);
            if (r.state == read_result::status::data) {
                EXPECT_EQ(streams[i]->read_now(space).state, read_result::status::would_block);
                (quiet == n ? quiet : busy) = i; // open (read its byte) and now drained
            }
        }
    });
    ASSERT_LT(busy, n) << "two streams of step 4 should still be open";
    std::promise<void> busy_woke;
    on_lane(lane, [&] { streams[busy]->park([&](error_code) { busy_woke.set_value(); }); });
    asio::write(peers[quiet], asio::buffer("e", 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    asio::write(peers[busy], asio::buffer("f", 1));
    busy_woke.get_future().wait(); // the pass that woke it read the quiet stream's edge too
    std::promise<error_code> late;
    on_lane(lane, [&] { streams[quiet]->park([&](error_code e) { late.set_value(e); }); });
    auto late_future = late.get_future();
    ASSERT_EQ(late_future.wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "a wait that began after its edge was read while not waiting never ended";
    EXPECT_FALSE(late_future.get());
    on_lane(lane, [&] { streams.clear(); });
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
