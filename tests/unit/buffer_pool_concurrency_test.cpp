/// Real threads acquire and release at full speed against one pool, with suspended waiters,
/// cross-thread releases and cancellations racing grants. At the end the pool must be whole and
/// the invariant must hold. ci/test also runs this under ThreadSanitizer (the tsan preset).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "sluice/pool/buffer_pool.hpp"

namespace {

namespace asio = boost::asio;
using sluice::runtime::buffer;
using sluice::runtime::buffer_pool;
using sluice::runtime::source_id;

constexpr int lane_count = 3;
constexpr int sources_per_lane = 8;
constexpr int iterations_per_source = 10000;
constexpr std::uint32_t buffer_count = 32;
constexpr std::uint32_t processing_reserve = 2;
static_assert(lane_count * sources_per_lane + processing_reserve <= buffer_count,
              "every source's reserve of 1 must be admissible");

/// Buffers handed from sources to the processing thread; bounded by Σ cap by construction.
class handoff {
public:
    void push(buffer b) {
        {
            const std::lock_guard lock(mutex_);
            queue_.push_back(std::move(b));
        }
        ready_.notify_one();
    }
    /// Waits (bounded) for a buffer; empty when `done` was set and nothing is left.
    buffer pop() {
        std::unique_lock lock(mutex_);
        ready_.wait_for(lock, std::chrono::milliseconds(50),
                        [&] { return !queue_.empty() || done_; });
        if (queue_.empty()) {
            return {};
        }
        buffer b = std::move(queue_.front());
        queue_.pop_front();
        return b;
    }
    void finish() {
        {
            const std::lock_guard lock(mutex_);
            done_ = true;
        }
        ready_.notify_all();
    }
    bool finished_and_empty() {
        const std::lock_guard lock(mutex_);
        return done_ && queue_.empty();
    }

private:
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<buffer> queue_;
    bool done_ = false;
};

asio::awaitable<void> source_loop(buffer_pool& pool, source_id id, handoff& to_processing,
                                  std::uint32_t seed, std::atomic<std::uint64_t>& cancelled) {
    std::uint32_t state = seed;
    auto next = [&state] {
        state = state * 1664525U + 1013904223U;
        return state >> 16U;
    };
    auto executor = co_await asio::this_coro::executor;
    // Like a real source: at most one buffer being filled while it asks for the next; every
    // other buffer it owns is with processing, which always finishes. Holding more while
    // waiting above the reserve would be hold-and-wait, which no pool can rescue.
    buffer filling;
    auto hand_off = [&](buffer b) {
        if (next() % 2 == 0) {
            to_processing.push(std::move(b)); // released on another thread
        } else {
            b.reset();
        }
    };
    for (int i = 0; i < iterations_per_source; ++i) {
        buffer b;
        if (next() % 8 == 0) {
            // A cancellation racing the grant: either outcome is fine, but never a mix. The
            // posted emit owns the signal: it may run after the grant, even after this frame.
            const auto signal = std::make_shared<asio::cancellation_signal>();
            asio::post(executor, [signal] { signal->emit(asio::cancellation_type::terminal); });
            auto [error, granted] = co_await pool.async_acquire(
                id,
                asio::bind_cancellation_slot(signal->slot(), asio::as_tuple(asio::use_awaitable)));
            EXPECT_EQ(!error, bool(granted));
            if (error) {
                EXPECT_EQ(error, asio::error::operation_aborted);
                cancelled.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            b = std::move(granted);
        } else {
            b = co_await pool.async_acquire(id, asio::use_awaitable);
        }
        b.commit_bytes(1);
        if (filling) {
            hand_off(std::move(filling));
        }
        if (next() % 2 == 0) {
            filling = std::move(b);
        } else {
            hand_off(std::move(b));
        }
    }
}

TEST(buffer_pool_concurrency, threads_hammering_one_pool_leave_it_whole) {
    buffer_pool pool({buffer_count, 64, processing_reserve, 64});
    handoff to_processing;
    std::atomic<std::uint64_t> cancelled{0};
    std::atomic<std::uint64_t> processed{0};
    std::atomic<int> lanes_running{lane_count};

    std::vector<std::vector<source_id>> ids(lane_count);
    for (auto& lane : ids) {
        for (int s = 0; s < sources_per_lane; ++s) {
            const auto answer = pool.register_source({1, 3});
            ASSERT_TRUE(answer.admitted()) << answer.message;
            lane.push_back(answer.id);
        }
    }

    // Every io_context outlives every thread: a thread may still be inside a post to another
    // thread's context (waking it) when that thread has finished, so contexts end after joins.
    asio::io_context processing_io;
    std::vector<std::unique_ptr<asio::io_context>> lane_contexts;
    for (int l = 0; l < lane_count; ++l) {
        lane_contexts.push_back(std::make_unique<asio::io_context>(1));
    }

    std::thread processing([&] {
        // Processing takes an output buffer per input (from its reserve, else floating), and
        // releases both: the releases wake suspended sources on other threads.
        asio::io_context& io = processing_io;
        while (!to_processing.finished_and_empty()) {
            buffer input = to_processing.pop();
            if (!input) {
                continue;
            }
            buffer output = pool.try_acquire_processing();
            if (!output) {
                bool got = false;
                pool.async_acquire_processing(
                    asio::bind_executor(io, [&](boost::system::error_code error, buffer b) {
                        EXPECT_FALSE(error);
                        output = std::move(b);
                        got = true;
                    }));
                while (!got) {
                    io.restart();
                    io.run_one_for(std::chrono::milliseconds(10));
                }
            }
            output.commit_bytes(input.size_bytes());
            processed.fetch_add(1, std::memory_order_relaxed);
        }
    });

    std::vector<std::thread> lanes;
    for (int l = 0; l < lane_count; ++l) {
        lanes.emplace_back([&, l] {
            asio::io_context& io = *lane_contexts[static_cast<std::size_t>(l)];
            for (int s = 0; s < sources_per_lane; ++s) {
                asio::co_spawn(
                    io,
                    source_loop(pool, ids[static_cast<std::size_t>(l)][static_cast<std::size_t>(s)],
                                to_processing, static_cast<std::uint32_t>(l * 100 + s), cancelled),
                    [](const std::exception_ptr& error) {
                        EXPECT_FALSE(error) << "source coroutine threw";
                    });
            }
            io.run(); // returns when every source coroutine finished
            if (lanes_running.fetch_sub(1) == 1) {
                to_processing.finish();
            }
        });
    }
    for (auto& t : lanes) {
        t.join();
    }
    processing.join();

    pool.check_invariants();
    const auto stats = pool.stats();
    EXPECT_EQ(stats.free, buffer_count);
    EXPECT_EQ(stats.waiters_sources, 0U);
    EXPECT_EQ(stats.waiters_processing, 0U);
    const std::uint64_t acquired =
        stats.acquired_immediately_total[0] + stats.acquired_after_wait_total[0] +
        stats.acquired_immediately_total[1] + stats.acquired_after_wait_total[1];
    EXPECT_EQ(acquired, stats.released_total);
    const std::uint64_t source_acquisitions =
        stats.acquired_immediately_total[0] + stats.acquired_after_wait_total[0];
    EXPECT_EQ(source_acquisitions + cancelled.load(),
              std::uint64_t{lane_count} * sources_per_lane * iterations_per_source);
    EXPECT_GT(stats.acquired_after_wait_total[0], 0U) << "sources never suspended: no contention";
    // The cancel path ran: some cancellations won against a suspended acquisition, and the
    // pool counted each one it aborted.
    EXPECT_GT(cancelled.load(), 0U) << "no cancellation ever won: the race was not exercised";
    EXPECT_EQ(stats.waits_aborted_total[0], cancelled.load());
    EXPECT_GT(processed.load(), 0U);
    for (const auto& lane : ids) {
        for (const auto id : lane) {
            pool.unregister_source(id);
        }
    }
    EXPECT_EQ(pool.stats().reserved_sources, 0U);
}

} // namespace
