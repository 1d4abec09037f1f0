#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "sluice/pool/buffer_pool.hpp"

namespace {

namespace asio = boost::asio;
using sluice::runtime::admission_status;
using sluice::runtime::buffer;
using sluice::runtime::buffer_pool;
using sluice::runtime::flush_reason;
using sluice::runtime::pool_config;
using sluice::runtime::source_id;

/// Runs posted work until nothing is left to run now.
void drain(asio::io_context& io) {
    io.restart();
    io.poll();
}

/// Every buffer `id` may take now, without waiting.
std::vector<buffer> take_all(buffer_pool& pool, source_id id) {
    std::vector<buffer> held;
    while (buffer b = pool.try_acquire(id)) {
        held.push_back(std::move(b));
    }
    return held;
}

/// A completion handler that records what it got, bound to `io`.
struct recorder {
    std::vector<std::string>* log;
    std::vector<buffer>* held;
    std::string name;
    void operator()(boost::system::error_code error, buffer b) const {
        log->push_back(name + (error ? ":aborted" : ":granted"));
        if (b) {
            held->push_back(std::move(b));
        }
    }
};

TEST(buffer_pool, config_errors_name_the_key_and_the_allowed_range) {
    try {
        buffer_pool pool({10, 64, 10, 4});
        FAIL() << "processing_reserve == buffer_count must be refused";
    } catch (const std::invalid_argument& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("processing_reserve = 10"), std::string::npos) << what;
        EXPECT_NE(what.find("1 to buffer_count - 1 = 9"), std::string::npos) << what;
    }
    EXPECT_THROW(buffer_pool({10, 0, 1, 4}), std::invalid_argument);
    EXPECT_THROW(buffer_pool({1, 64, 1, 4}), std::invalid_argument);
    EXPECT_THROW(buffer_pool({10, 64, 1, 0}), std::invalid_argument);
}

TEST(buffer_pool, arena_buffers_are_aligned_and_disjoint) {
    buffer_pool pool({8, 100, 1, 2});
    std::vector<buffer> all;
    const auto id = pool.register_source({1, 7}).id;
    for (int i = 0; i < 7; ++i) {
        all.push_back(pool.try_acquire(id));
        ASSERT_TRUE(all.back());
    }
    all.push_back(pool.try_acquire_processing());
    ASSERT_TRUE(all.back());
    for (std::size_t i = 0; i < all.size(); ++i) {
        const auto* data = all[i].storage().data();
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>(data) % 64, 0U);
        EXPECT_EQ(all[i].capacity_bytes(), 100U);
        for (std::size_t j = i + 1; j < all.size(); ++j) {
            const auto* other = all[j].storage().data();
            EXPECT_TRUE(data + 100 <= other || other + 100 <= data);
        }
    }
    all.clear();
    pool.unregister_source(id);
    EXPECT_EQ(pool.stats().free, 8U);
}

TEST(buffer_pool, overcommitted_registration_is_refused_with_the_numbers) {
    buffer_pool pool({20, 64, 4, 8});
    EXPECT_TRUE(pool.register_source({8, 8}).admitted());
    EXPECT_TRUE(pool.register_source({6, 10}).admitted());
    const auto refused = pool.register_source({3, 3});
    EXPECT_EQ(refused.status, admission_status::overcommitted);
    EXPECT_FALSE(refused.id.valid());
    // 14 reserved + 3 asked + 4 processing > 20; room for 2; needs 21 buffers.
    EXPECT_NE(refused.message.find("14 + 3 + 4 > 20"), std::string::npos) << refused.message;
    EXPECT_NE(refused.message.find("at most 2"), std::string::npos) << refused.message;
    EXPECT_NE(refused.message.find("at least 21"), std::string::npos) << refused.message;
    // Nothing was half-registered.
    EXPECT_EQ(pool.stats().reserved_sources, 14U);
    EXPECT_EQ(pool.stats().sources_registered, 2U);
    EXPECT_TRUE(pool.register_source({2, 2}).admitted());
    pool.check_invariants();
}

TEST(buffer_pool, invalid_limits_and_full_registry_are_refused) {
    buffer_pool pool({20, 64, 4, 1});
    EXPECT_EQ(pool.register_source({0, 3}).status, admission_status::invalid_limits);
    EXPECT_EQ(pool.register_source({3, 2}).status, admission_status::invalid_limits);
    EXPECT_TRUE(pool.register_source({1, 1}).admitted());
    const auto full = pool.register_source({1, 1});
    EXPECT_EQ(full.status, admission_status::registry_full);
    EXPECT_NE(full.message.find("sources_max"), std::string::npos);
}

TEST(buffer_pool, source_within_reserve_then_floating_up_to_cap) {
    buffer_pool pool({10, 64, 2, 4});
    const auto a = pool.register_source({2, 5}).id;
    std::vector<buffer> held;
    for (int i = 0; i < 5; ++i) {
        held.push_back(pool.try_acquire(a));
        ASSERT_TRUE(held.back()) << i;
    }
    EXPECT_FALSE(pool.try_acquire(a)) << "cap reached";
    EXPECT_EQ(pool.outstanding(a), 5U);
    // 10 - 5 = 5 free, 2 owed to processing: 3 floating.
    EXPECT_EQ(pool.stats().floating, 3U);
    pool.check_invariants();
    held.clear();
    pool.unregister_source(a);
}

TEST(buffer_pool, processing_reserve_is_never_lent_to_sources) {
    buffer_pool pool({6, 64, 3, 4});
    const auto a = pool.register_source({1, 6}).id;
    std::vector<buffer> held;
    while (buffer b = pool.try_acquire(a)) {
        held.push_back(std::move(b));
    }
    EXPECT_EQ(held.size(), 3U);
    std::vector<buffer> processing;
    for (int i = 0; i < 3; ++i) {
        processing.push_back(pool.try_acquire_processing());
        EXPECT_TRUE(processing.back());
    }
    EXPECT_FALSE(pool.try_acquire_processing());
    pool.check_invariants();
    held.clear();
    processing.clear();
    pool.unregister_source(a);
}

TEST(buffer_pool, reserve_lent_out_refusal_is_transient) {
    buffer_pool pool({10, 64, 2, 4});
    const auto greedy = pool.register_source({1, 8}).id;
    std::vector<buffer> held = take_all(pool, greedy);
    ASSERT_EQ(held.size(), 8U);
    const auto refused = pool.register_source({2, 2});
    EXPECT_EQ(refused.status, admission_status::reserve_lent_out);
    EXPECT_NE(refused.message.find("retry"), std::string::npos) << refused.message;
    held.pop_back();
    held.pop_back();
    const auto later = pool.register_source({2, 2});
    EXPECT_TRUE(later.admitted()) << later.message;
    pool.check_invariants();
    held.clear();
    pool.unregister_source(greedy);
    pool.unregister_source(later.id);
}

TEST(buffer_pool, a_waiting_registration_is_admitted_ahead_of_sources_waiting_above_reserve) {
    // Sustained backpressure: a greedy source waits above its reserve all the time, so every
    // released buffer would go straight back to it. A waiting registration must still get in.
    asio::io_context io;
    buffer_pool pool({10, 64, 2, 4});
    const auto greedy = pool.register_source({1, 8}).id;
    std::vector<buffer> held = take_all(pool, greedy);
    ASSERT_EQ(held.size(), 8U);
    held.pop_back(); // below its cap again, it waits for floating buffers
    std::vector<std::string> log;
    std::vector<buffer> granted;
    pool.async_acquire(greedy, asio::bind_executor(io, recorder{&log, &granted, "g1"}));
    pool.async_acquire(greedy, asio::bind_executor(io, recorder{&log, &granted, "g2"}));
    drain(io);
    ASSERT_EQ(log, (std::vector<std::string>{"g1:granted"}));
    std::vector<sluice::runtime::admission> answers;
    pool.async_register_source({2, 2}, asio::bind_executor(io, [&](boost::system::error_code error,
                                                                   sluice::runtime::admission a) {
                                   EXPECT_FALSE(error);
                                   answers.push_back(std::move(a));
                               }));
    drain(io);
    EXPECT_TRUE(answers.empty());
    EXPECT_EQ(pool.stats().waiters_admission, 1U);
    EXPECT_EQ(pool.stats().held_for_admission, 2U);
    // A plain registration does not barge past the waiting one.
    const auto barging = pool.register_source({1, 1});
    EXPECT_EQ(barging.status, admission_status::reserve_lent_out);
    EXPECT_NE(barging.message.find("wait ahead"), std::string::npos) << barging.message;
    // The first release is held back for the registration, not given to g2…
    held.pop_back();
    drain(io);
    EXPECT_EQ(log.size(), 1U);
    EXPECT_TRUE(answers.empty());
    pool.check_invariants();
    // …and the second admits it; only then do floating buffers go to g2 again.
    held.pop_back();
    drain(io);
    ASSERT_EQ(answers.size(), 1U);
    EXPECT_TRUE(answers.front().admitted()) << answers.front().message;
    EXPECT_EQ(pool.stats().admitted_after_wait_total, 1U);
    EXPECT_EQ(log.size(), 1U);
    held.pop_back();
    drain(io);
    EXPECT_EQ(log.back(), "g2:granted");
    pool.check_invariants();
    granted.clear();
    held.clear();
    drain(io);
    pool.unregister_source(greedy);
    pool.unregister_source(answers.front().id);
    EXPECT_EQ(pool.stats().free, 10U);
}

TEST(buffer_pool, a_cancelled_registration_wait_gives_back_what_was_held_for_it) {
    asio::io_context io;
    buffer_pool pool({10, 64, 2, 4});
    const auto greedy = pool.register_source({1, 8}).id;
    std::vector<buffer> held = take_all(pool, greedy);
    std::vector<std::string> log;
    std::vector<buffer> granted;
    pool.async_acquire(greedy,
                       asio::bind_executor(io, recorder{&log, &granted, "g1"})); // at its cap
    asio::cancellation_signal cancel;
    boost::system::error_code outcome;
    std::string refusal;
    pool.async_register_source(
        {3, 3}, asio::bind_cancellation_slot(
                    cancel.slot(), asio::bind_executor(io, [&](boost::system::error_code error,
                                                               sluice::runtime::admission a) {
                        outcome = error;
                        refusal = a.message;
                    })));
    drain(io);
    held.pop_back(); // held back for the registration
    drain(io);
    EXPECT_TRUE(log.empty());
    cancel.emit(asio::cancellation_type::terminal);
    drain(io);
    EXPECT_EQ(outcome, asio::error::operation_aborted);
    EXPECT_NE(refusal.find("reserve 3"), std::string::npos) << refusal;
    // What was held back goes to the waiting source at once.
    EXPECT_EQ(log, (std::vector<std::string>{"g1:granted"}));
    EXPECT_EQ(pool.stats().waiters_admission, 0U);
    EXPECT_EQ(pool.stats().admission_waits_aborted_total, 1U);
    pool.check_invariants();
    granted.clear();
    held.clear();
    drain(io);
    pool.unregister_source(greedy);
}

TEST(buffer_pool, release_wakes_first_eligible_waiter_in_arrival_order) {
    asio::io_context io;
    buffer_pool pool({6, 64, 1, 4});
    const auto a = pool.register_source({1, 5}).id;
    const auto b = pool.register_source({1, 5}).id;
    const auto c = pool.register_source({1, 1}).id;
    std::vector<std::string> log;
    std::vector<buffer> granted;
    std::vector<buffer> held_a;
    std::vector<buffer> held_c;
    // a takes its reserve and the two floating buffers; b and c keep their reserves free.
    for (int i = 0; i < 3; ++i) {
        held_a.push_back(pool.try_acquire(a));
        ASSERT_TRUE(held_a.back());
    }
    held_c.push_back(pool.try_acquire(c));
    ASSERT_EQ(pool.stats().floating, 0U);
    // b is within its reserve: served at once even though nothing is floating.
    pool.async_acquire(b, asio::bind_executor(io, recorder{&log, &granted, "b1"}));
    // c is at its cap: waits for its own buffer, not for floating ones.
    pool.async_acquire(c, asio::bind_executor(io, recorder{&log, &granted, "c1"}));
    // a and b are above their reserves: both wait for floating buffers, a first.
    pool.async_acquire(a, asio::bind_executor(io, recorder{&log, &granted, "a4"}));
    pool.async_acquire(b, asio::bind_executor(io, recorder{&log, &granted, "b2"}));
    drain(io);
    EXPECT_EQ(log, (std::vector<std::string>{"b1:granted"}));
    EXPECT_EQ(pool.stats().waiters_sources, 3U);
    pool.check_invariants();
    // Released by a above its reserve: one floating buffer → the oldest float waiter, a4.
    held_a.pop_back();
    drain(io);
    EXPECT_EQ(log.back(), "a4:granted");
    // c releases its only buffer: c1 is back within c's reserve and is served from it.
    held_c.clear();
    drain(io);
    EXPECT_EQ(log.back(), "c1:granted");
    EXPECT_EQ(pool.waiters(b), 1U);
    pool.check_invariants();
    granted.clear();
    drain(io);
    EXPECT_EQ(log.back(), "b2:granted");
    granted.clear();
    held_a.clear();
    drain(io);
    pool.unregister_source(a);
    pool.unregister_source(b);
    pool.unregister_source(c);
    EXPECT_EQ(pool.stats().free, 6U);
}

TEST(buffer_pool, processing_waiters_are_served_before_sources) {
    asio::io_context io;
    buffer_pool pool({4, 64, 1, 4});
    const auto a = pool.register_source({1, 4}).id;
    std::vector<std::string> log;
    std::vector<buffer> granted;
    std::vector<buffer> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(pool.try_acquire(a));
    }
    std::vector<buffer> processing;
    processing.push_back(pool.try_acquire_processing());
    ASSERT_TRUE(processing.back());
    pool.async_acquire(a, asio::bind_executor(io, recorder{&log, &granted, "source"}));
    pool.async_acquire_processing(asio::bind_executor(io, recorder{&log, &granted, "processing"}));
    drain(io);
    EXPECT_TRUE(log.empty());
    held.pop_back(); // a floating buffer comes back: processing gets it although it came later
    drain(io);
    EXPECT_EQ(log, (std::vector<std::string>{"processing:granted"}));
    granted.clear(); // processing above its reserve returns it: now the source
    drain(io);
    EXPECT_EQ(log.back(), "source:granted");
    granted.clear();
    held.clear();
    processing.clear();
    pool.unregister_source(a);
    EXPECT_EQ(pool.stats().free, 4U);
}

TEST(buffer_pool, cancellation_leaves_no_trace_in_the_accounting) {
    asio::io_context io;
    buffer_pool pool({4, 64, 1, 4});
    const auto a = pool.register_source({1, 1}).id;
    buffer first = pool.try_acquire(a);
    const auto before = pool.stats();
    std::vector<std::string> log;
    std::vector<buffer> granted;
    asio::cancellation_signal signal;
    pool.async_acquire(
        a, asio::bind_cancellation_slot(signal.slot(),
                                        asio::bind_executor(io, recorder{&log, &granted, "w"})));
    drain(io);
    EXPECT_EQ(pool.waiters(a), 1U);
    signal.emit(asio::cancellation_type::terminal);
    drain(io);
    EXPECT_EQ(log, (std::vector<std::string>{"w:aborted"}));
    const auto after = pool.stats();
    EXPECT_EQ(after.free, before.free);
    EXPECT_EQ(after.floating, before.floating);
    EXPECT_EQ(after.waiters_sources, 0U);
    EXPECT_EQ(pool.outstanding(a), 1U);
    // A release after the cancellation wakes nobody and the buffer simply goes back.
    first.reset();
    drain(io);
    EXPECT_EQ(log.size(), 1U);
    // Emitting again after completion is harmless: the slot was cleared.
    signal.emit(asio::cancellation_type::terminal);
    drain(io);
    EXPECT_EQ(log.size(), 1U);
    pool.check_invariants();
    pool.unregister_source(a);
}

TEST(buffer_pool, unregister_aborts_waiters_and_returns_reserve_with_last_buffer) {
    asio::io_context io;
    buffer_pool pool({10, 64, 2, 4});
    const auto a = pool.register_source({4, 4}).id;
    std::vector<buffer> held;
    for (int i = 0; i < 4; ++i) {
        held.push_back(pool.try_acquire(a));
    }
    std::vector<std::string> log;
    std::vector<buffer> granted;
    pool.async_acquire(a, asio::bind_executor(io, recorder{&log, &granted, "w"}));
    pool.unregister_source(a);
    drain(io);
    EXPECT_EQ(log, (std::vector<std::string>{"w:aborted"}));
    auto stats = pool.stats();
    EXPECT_EQ(stats.sources_retiring, 1U);
    EXPECT_EQ(stats.reserved_sources, 4U) << "the reserve stays counted until the last buffer";
    EXPECT_EQ(pool.register_source({5, 5}).status, admission_status::overcommitted);
    held.resize(1);
    EXPECT_EQ(pool.stats().reserved_sources, 4U);
    held.clear();
    stats = pool.stats();
    EXPECT_EQ(stats.sources_retiring, 0U);
    EXPECT_EQ(stats.reserved_sources, 0U);
    EXPECT_EQ(stats.free, 10U);
    const auto again = pool.register_source({5, 5});
    EXPECT_TRUE(again.admitted()) << again.message;
    EXPECT_EQ(pool.outstanding(a), 0U) << "a stale id reports nothing outstanding";
    pool.unregister_source(again.id);
}

TEST(buffer_pool, handle_carries_metadata_and_returns_itself_when_destroyed) {
    buffer_pool pool({4, 128, 1, 2});
    const auto a = pool.register_source({1, 3}).id;
    {
        buffer b = pool.try_acquire(a);
        ASSERT_TRUE(b);
        EXPECT_EQ(b.origin_id(), a.value());
        EXPECT_EQ(b.size_bytes(), 0U);
        EXPECT_EQ(b.reason(), flush_reason::none);
        b.free_space()[0] = std::byte{42};
        b.commit_bytes(1);
        b.set_sequence(7);
        b.set_reason(flush_reason::timeout);
        buffer moved = std::move(b);
        EXPECT_FALSE(b); // NOLINT(bugprone-use-after-move): the moved-from state is the point
        EXPECT_EQ(moved.bytes().size(), 1U);
        EXPECT_EQ(moved.bytes()[0], std::byte{42});
        EXPECT_EQ(moved.sequence(), 7U);
        EXPECT_EQ(moved.reason(), flush_reason::timeout);
        EXPECT_EQ(pool.outstanding(a), 1U);
    }
    EXPECT_EQ(pool.outstanding(a), 0U);
    // Reused buffers come back clean.
    buffer again = pool.try_acquire(a);
    EXPECT_EQ(again.size_bytes(), 0U);
    EXPECT_EQ(again.sequence(), 0U);
    again.reset();
    pool.unregister_source(a);
}

TEST(buffer_pool, wakeup_is_posted_never_run_inside_release) {
    asio::io_context io;
    buffer_pool pool({3, 64, 1, 2});
    const auto a = pool.register_source({1, 1}).id;
    buffer held = pool.try_acquire(a);
    bool inside_release = false;
    bool ran_inside_release = false;
    bool ran = false;
    pool.async_acquire(a, asio::bind_executor(io, [&](boost::system::error_code, buffer b) {
                           ran = true;
                           ran_inside_release = inside_release;
                           b.reset();
                       }));
    drain(io);
    inside_release = true;
    held.reset();
    inside_release = false;
    EXPECT_FALSE(ran) << "the waiter must not run inline in release";
    drain(io);
    EXPECT_TRUE(ran);
    EXPECT_FALSE(ran_inside_release);
    pool.unregister_source(a);
}

TEST(buffer_pool, coroutine_suspends_under_backpressure_and_resumes_on_release) {
    asio::io_context io;
    buffer_pool pool({4, 64, 1, 2});
    const auto a = pool.register_source({1, 2}).id;
    std::vector<buffer> taken;
    int resumed = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < 4; ++i) {
                taken.push_back(co_await pool.async_acquire(a, asio::use_awaitable));
                ++resumed;
            }
        },
        [](const std::exception_ptr& error) {
            if (error) {
                std::rethrow_exception(error);
            }
        });
    drain(io);
    EXPECT_EQ(resumed, 2) << "cap 2: the third acquisition suspends";
    EXPECT_EQ(pool.waiters(a), 1U);
    taken.front().reset();
    drain(io);
    EXPECT_EQ(resumed, 3);
    taken.clear();
    drain(io);
    EXPECT_EQ(resumed, 4);
    taken.clear();
    pool.unregister_source(a);
    EXPECT_EQ(pool.stats().free, 4U);
}

TEST(buffer_pool, coroutine_acquisition_can_be_cancelled) {
    asio::io_context io;
    buffer_pool pool({4, 64, 1, 2});
    const auto a = pool.register_source({1, 1}).id;
    buffer held = pool.try_acquire(a);
    asio::cancellation_signal signal;
    boost::system::error_code result;
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto [error, b] = co_await pool.async_acquire(
                a,
                asio::bind_cancellation_slot(signal.slot(), asio::as_tuple(asio::use_awaitable)));
            result = error;
            done = true;
        },
        [](const std::exception_ptr&) {});
    drain(io);
    EXPECT_FALSE(done);
    signal.emit(asio::cancellation_type::terminal);
    drain(io);
    EXPECT_TRUE(done);
    EXPECT_EQ(result, asio::error::operation_aborted);
    EXPECT_EQ(pool.stats().waiters_sources, 0U);
    held.reset();
    pool.unregister_source(a);
}

} // namespace
