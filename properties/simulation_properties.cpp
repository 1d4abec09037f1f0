/// Properties proved by the deterministic simulator over the production code (DESIGN.md §5):
/// scenarios are generated structurally (sources, pool, strategy, faults, seed) so a failure
/// shrinks to a small scenario, and every failure prints the sluice-sim line that replays it.
/// Each run checks conservation and the reserve invariant while it runs, no deadlock, the
/// progress watchdog, and in its liveness phase that every byte read was delivered exactly once,
/// in order per source, with every buffer back in the pool.

#include <array>
#include <chrono>
#include <optional>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include "sim/sim_environment.hpp"
#include "sim/simulation.hpp"
#include "sluice/source/generator_source.hpp"

namespace {

using namespace sluice::sim;
using sluice::runtime::pool_policy;
namespace runtime = sluice::runtime;

std::string explain(const scenario& s, const report& r) {
    std::string out = reproduce_command(s) + "\n" + r.to_json();
    return out;
}

scenario gen_scenario(std::uint32_t sources_max) {
    scenario s;
    s.sources = *rc::gen::inRange<std::uint32_t>(1, sources_max + 1);
    s.reserve = *rc::gen::inRange<std::uint32_t>(1, 4);
    s.cap = s.reserve + *rc::gen::inRange<std::uint32_t>(0, 6);
    s.processing_reserve = *rc::gen::inRange<std::uint32_t>(2, 16);
    s.buffer_size = *rc::gen::element<std::uint32_t>(128, 512, 1024, 4096);
    // From the tightest legal pool (every reserve, the processing reserve, nothing floating) up.
    const std::uint32_t minimum = s.sources * s.reserve + s.processing_reserve;
    s.buffers = minimum + *rc::gen::inRange<std::uint32_t>(0, s.sources * 2 + 2);
    s.io_lanes = *rc::gen::inRange<std::size_t>(1, 5);
    s.compute_workers = *rc::gen::inRange<std::size_t>(1, 3);
    // One in eight runs has endless generators, stopped by the engine at the horizon (a shorter
    // one: flat-out endless generators make a lot of data per virtual millisecond).
    const bool endless = *rc::gen::element(false, false, false, false, false, false, false, true);
    s.records_per_source = endless ? 0 : *rc::gen::inRange<std::uint64_t>(1, 150);
    s.stream_fraction = *rc::gen::element(0.0, 0.5, 1.0);
    s.paced_fraction = *rc::gen::element(0.0, 0.5, 1.0);
    // Some runs with HTTP connections: keep-alive clients whose refused bodies come again.
    s.http_fraction = *rc::gen::element(0.0, 0.0, 0.3, 1.0);
    s.http_buffer_wait_us = *rc::gen::element<std::uint32_t>(0, 50, 200, 2000);
    s.order = *rc::gen::element(strategy::fifo, strategy::random, strategy::pct);
    s.faults = *rc::gen::arbitrary<bool>();
    s.seed = *rc::gen::inRange<std::uint64_t>(1, 1'000'000'000);
    s.park_idle = *rc::gen::arbitrary<bool>();
    // Half the runs drain several ready channels per compute task (the drainer's own loop:
    // re-queueing a channel with more, posting itself again, the last look before it leaves).
    s.drain_channels = *rc::gen::element<std::uint32_t>(1, 1, 2, 64);
    s.virtual_seconds = endless ? 0.005 : 0.02;
    // Generated runs take thousands of steps; a run that cannot finish fails in seconds with
    // its reproduce line instead of grinding to the default bound of 500M.
    s.steps_max = 10'000'000;
    return s;
}

RC_GTEST_PROP(simulation, no_deadlock_no_loss_no_duplicate_no_leak_under_any_schedule_and_faults,
              ()) {
    const scenario s = gen_scenario(60);
    const report r = run(s);
    RC_CLASSIFY(s.faults, "faults");
    RC_CLASSIFY(r.backpressure_waits > 0, "sources suspended on the pool");
    RC_CLASSIFY(r.errors > 0, "a source failed");
    RC_CLASSIFY(r.restarts > 0, "sources restarted");
    RC_CLASSIFY(r.parks > 0, "idle sources parked");
    RC_CLASSIFY(s.records_per_source == 0, "endless generators");
    RC_CLASSIFY(r.peer_resets > 0, "peers reset mid-stream");
    RC_CLASSIFY(r.records_truncated > 0, "records cut by a reconnect");
    RC_CLASSIFY(r.sink_failures > 0, "the sink threw");
    RC_CLASSIFY(r.bytes_dropped > 0, "a buffer could not be queued");
    RC_CLASSIFY(r.factory_failures > 0, "a source factory threw");
    RC_CLASSIFY(r.registrations_waited > 0, "registrations waited for admission");
    RC_CLASSIFY(r.interleavings > 0, "other work ran at scheduling points");
    RC_CLASSIFY(r.crashed, "the worker crashed and a new one resumed its files");
    RC_ASSERT(!r.deadlock);
    RC_ASSERT(s.park_idle || r.parks == 0);
    if (!r.ok()) {
        RC_FAIL(explain(s, r));
    }
    // Every byte read is delivered, or counted as lost with its origin failed (a sink fault,
    // an enqueue fault); without those faults, every byte is delivered.
    RC_ASSERT(r.bytes_delivered + r.bytes_discarded + r.bytes_dropped == r.bytes_produced);
    RC_ASSERT(r.sink_failures > 0 || r.bytes_discarded == 0U);
    RC_ASSERT(r.buffers_free_at_end == r.buffers_total);
    if (s.records_per_source == 0) {
        // An engine stop ends them with neither; only an injected exception gives an Error.
        RC_ASSERT(r.end_of_streams == 0U);
        // (A source can fail both ways at once: each origin still ends once.)
        RC_ASSERT(r.errors <= r.sink_failures + r.queue_failures);
        RC_ASSERT(r.errors >= r.sink_failures);
    } else {
        RC_ASSERT(r.end_of_streams + r.errors == r.sources_run);
    }
}

RC_GTEST_PROP(simulation, a_run_is_a_function_of_scenario_and_seed, ()) {
    const scenario s = gen_scenario(40);
    const report first = run(s);
    const report second = run(s);
    RC_ASSERT(first.trace_hash == second.trace_hash);
    RC_ASSERT(first.events == second.events);
    RC_ASSERT(first.bytes_delivered == second.bytes_delivered);
}

TEST(simulation, legacy_policy_deadlocks_on_the_seed_example_negative_control) {
    // 100 buffers, 5 fixed buffers per source, 20 sources: sources own every buffer, processing
    // can never get one. The detector must say so — proof that it can fail.
    scenario s;
    s.policy = pool_policy::legacy;
    s.buffers = 100;
    s.legacy_buffers_per_source = 5;
    s.sources = 20;
    const report r = run(s);
    EXPECT_TRUE(r.deadlock) << r.to_json();
    EXPECT_FALSE(r.waiting.empty());
    // The deadlock stranded data: some of what was read never reached the sink.
    EXPECT_LT(r.bytes_delivered, r.bytes_produced);
    EXPECT_EQ(r.buffers_free_at_end, 100U) << "teardown must still return every buffer";
    // The same numbers under sluice's policy: admission keeps processing's reserve, all drains.
    scenario fixed = s;
    fixed.policy = pool_policy::sluice;
    fixed.sources = 19; // the 20th would be refused by admission: 19 × 5 + 5 = 100
    fixed.reserve = 5;
    fixed.cap = 5;
    fixed.processing_reserve = 5;
    const report ok = run(fixed);
    EXPECT_TRUE(ok.ok()) << ok.to_json();
    EXPECT_EQ(ok.bytes_delivered, ok.bytes_produced);
}

TEST(simulation, five_thousand_virtual_sources_drain_completely) {
    for (const auto order : {strategy::fifo, strategy::pct}) {
        scenario s;
        s.sources = 5000;
        s.records_per_source = 40;
        s.order = order;
        s.faults = order == strategy::pct;
        s.seed = 7;
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << explain(s, r);
        EXPECT_EQ(r.bytes_delivered + r.bytes_discarded + r.bytes_dropped, r.bytes_produced);
        EXPECT_EQ(r.buffers_free_at_end, r.buffers_total);
        EXPECT_EQ(r.end_of_streams + r.errors, r.sources_run);
        EXPECT_GE(r.sources_run, 5000U);
    }
}

TEST(simulation, parking_idle_sources_changes_no_delivered_byte) {
    // The same workload with idle sources parked (their coroutines end and are spawned again on
    // readiness) and kept in their coroutines: every record arrives either way.
    scenario s;
    s.sources = 400;
    s.records_per_source = 60;
    s.paced_fraction = 1.0; // generators sleep between bursts: they park
    s.seed = 11;
    const report parked = run(s);
    s.park_idle = false;
    const report waited = run(s);
    EXPECT_TRUE(parked.ok()) << explain(s, parked);
    EXPECT_TRUE(waited.ok()) << explain(s, waited);
    EXPECT_GT(parked.parks, s.sources) << "idle sources did not park";
    EXPECT_EQ(waited.parks, 0U);
    EXPECT_EQ(parked.records_delivered, s.sources * s.records_per_source);
    EXPECT_EQ(parked.bytes_delivered, waited.bytes_delivered);
    EXPECT_EQ(parked.records_delivered, waited.records_delivered);
}

TEST(simulation, a_fleet_of_steady_sources_sends_for_the_whole_horizon_and_delivers_all) {
    // --records-per-second: every generator paced alike (ci/bench runs 100,000 of them for 10
    // virtual seconds); each must take records / rate virtual seconds, and all of it arrives.
    scenario s;
    s.sources = 2000;
    s.records_per_source = 20;
    s.records_per_second = 10.0; // 2 virtual seconds a generator
    s.virtual_seconds = 2.0;
    s.seed = 5;
    const report r = run(s);
    EXPECT_TRUE(r.ok()) << explain(s, r);
    EXPECT_EQ(r.records_delivered, s.sources * s.records_per_source);
    EXPECT_EQ(r.bytes_delivered, r.bytes_produced);
    EXPECT_GE(r.virtual_seconds, 1.9) << "paced generators finished early";
    EXPECT_GT(r.parks, s.sources) << "steady sources should park between records";
    EXPECT_NE(reproduce_command(s).find("--records-per-second 10"), std::string::npos);
}

TEST(simulation, http_clients_under_pressure_get_429s_and_every_record_arrives_once_in_order) {
    // Every source an HTTP connection: partial headers and slow bodies from arrivals in
    // chunks, chunked and content-length bodies, requests to a path not served (404, resent),
    // and a pool tight enough that bodies wait past buffer_wait (429, resent). The generator
    // oracle at the sink fails on a refused body that arrived (a duplicate) and on an accepted
    // one that did not (a gap); each client ends with all its records.
    for (const bool faults : {false, true}) {
        for (const auto order : {strategy::fifo, strategy::random, strategy::pct}) {
            scenario s;
            s.sources = 300;
            s.buffers = 300 + 8 + 10; // every reserve, the processing reserve, 10 floating
            s.http_buffer_wait_us = 50;
            s.http_fraction = 1.0;
            s.records_per_source = 120;
            s.virtual_seconds = 0.05;
            s.faults = faults;
            s.order = order;
            s.seed = 11;
            const report r = run(s);
            EXPECT_TRUE(r.ok()) << explain(s, r);
            EXPECT_GT(r.http_429, 0U) << "no pressure: " << explain(s, r);
            EXPECT_GT(r.http_204, 0U);
            EXPECT_GT(r.http_404, 0U);
            EXPECT_GE(r.http_requests, r.http_204 + r.http_429 + r.http_404);
            if (!faults) {
                EXPECT_EQ(r.records_delivered, std::uint64_t{s.sources} * s.records_per_source);
                EXPECT_EQ(r.end_of_streams, s.sources);
            }
            EXPECT_NE(reproduce_command(s).find("--http-fraction 1 --http-buffer-wait-us 50"),
                      std::string::npos);
        }
    }
}

/// Opens a rate-limited generator on the simulator and takes the one record due at once, so
/// its next burst is 1,000 virtual seconds away: a source that should park.
void open_sleepy_generator(sim_environment& env, runtime::generator_source& gen) {
    bool opened = false;
    boost::asio::co_spawn(
        env.lane_executor(0),
        [&]() -> boost::asio::awaitable<void> {
            co_await gen.open();
            opened = true;
        },
        boost::asio::detached);
    for (int i = 0; i < 100 && !opened && env.step() != sim_environment::step_result::idle; ++i) {
    }
    ASSERT_TRUE(opened);
    std::array<std::byte, 256> space{};
    ASSERT_EQ(gen.read_now(space).state, runtime::read_result::status::data);
    ASSERT_TRUE(gen.should_park());
}

/// Steps until `woke` holds (bounded); the simulator jumps to the next timer when idle.
void step_until(sim_environment& env, const std::optional<boost::system::error_code>& woke) {
    for (int i = 0; i < 100 && !woke && env.step() != sim_environment::step_result::idle; ++i) {
    }
}

TEST(simulation, a_parked_generator_ends_its_wait_at_close_before_or_during_the_park) {
    runtime::generator_options g;
    g.records_per_second = 0.001;
    g.burst_records = 1;
    using boost::asio::error::operation_aborted;
    {
        // The window between the read loop deciding to park and park() being called: a stop
        // that lands there has already closed the generator.
        sim_environment env(sim_options{});
        runtime::generator_source gen(env, env.lane_executor(0), g);
        open_sleepy_generator(env, gen);
        gen.close();
        std::optional<boost::system::error_code> woke;
        gen.park([&](boost::system::error_code e) { woke = e; });
        EXPECT_FALSE(woke) << "woke before park returned";
        step_until(env, woke);
        ASSERT_TRUE(woke);
        EXPECT_EQ(*woke, operation_aborted);
        EXPECT_LT(env.now(), std::chrono::seconds(1)) << "waited for the burst, not the close";
    }
    {
        // Closed while parked.
        sim_environment env(sim_options{});
        runtime::generator_source gen(env, env.lane_executor(0), g);
        open_sleepy_generator(env, gen);
        std::optional<boost::system::error_code> woke;
        gen.park([&](boost::system::error_code e) { woke = e; });
        gen.close();
        step_until(env, woke);
        ASSERT_TRUE(woke);
        EXPECT_EQ(*woke, operation_aborted);
        EXPECT_LT(env.now(), std::chrono::seconds(1));
    }
    {
        // Left alone, it wakes when its burst is due, with success.
        sim_environment env(sim_options{});
        runtime::generator_source gen(env, env.lane_executor(0), g);
        open_sleepy_generator(env, gen);
        std::optional<boost::system::error_code> woke;
        gen.park([&](boost::system::error_code e) { woke = e; });
        step_until(env, woke);
        ASSERT_TRUE(woke);
        EXPECT_FALSE(*woke) << woke->message();
        EXPECT_GE(env.now(), std::chrono::seconds(999));
    }
}

/// 60 sources, all streams (files and peers), faults on, random or pct by the seed's parity.
scenario streams_with_faults(std::uint64_t seed, std::uint64_t records) {
    scenario s;
    s.sources = 60;
    s.records_per_source = records;
    s.stream_fraction = 1.0;
    s.faults = true;
    s.order = seed % 2 == 0 ? strategy::random : strategy::pct;
    s.seed = seed;
    s.virtual_seconds = 0.05;
    return s;
}

TEST(simulation,
     reconnects_restarts_and_exceptions_inside_records_lose_join_and_duplicate_nothing) {
    // Streams only, faults on: virtual peers reset at arbitrary byte offsets and send a cut
    // record again whole on the next connection; files and peers are stopped and restarted;
    // the sink, the enqueue and factories throw. Every record must arrive whole, once, in
    // order (the checker), every byte read be delivered or counted as lost with its origin
    // failed, and every registration be undone at the end.
    std::uint64_t resets = 0;
    std::uint64_t truncated = 0;
    std::uint64_t restarts = 0;
    std::uint64_t sink_failures = 0;
    std::uint64_t dropped = 0;
    std::uint64_t factory_failures = 0;
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
        const scenario s = streams_with_faults(seed, 120);
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << explain(s, r);
        EXPECT_EQ(r.bytes_delivered + r.bytes_discarded + r.bytes_dropped, r.bytes_produced)
            << explain(s, r);
        resets += r.peer_resets;
        truncated += r.records_truncated;
        restarts += r.restarts;
        sink_failures += r.sink_failures;
        dropped += r.bytes_dropped;
        factory_failures += r.factory_failures;
    }
    // The fault sites were reached (a sweep that never reaches them proves nothing).
    EXPECT_GT(resets, 0U);
    EXPECT_GT(truncated, 0U);
    EXPECT_GT(restarts, 0U);
    EXPECT_GT(sink_failures, 0U);
    EXPECT_GT(dropped, 0U);
    EXPECT_GT(factory_failures, 0U);
}

TEST(simulation, a_whole_worker_crash_loses_no_file_record_and_repeats_only_its_window) {
    // Faults on, files only: a crash at a drawn moment loses everything in flight and leaves
    // the checkpoints as last written; a new worker on the same virtual world resumes each
    // file from its checkpoint. The oracles (simulation.cpp): the checkpoint is on a record
    // boundary, not past what the engine had (no loss), not older than its interval plus
    // 20 ms (the window), and the new worker delivers from exactly there, in order, to the
    // end; the crashed worker's pool gets every buffer back.
    std::uint64_t crashes = 0;
    std::uint64_t resumed = 0;
    std::uint64_t replayed = 0;
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
        const scenario s = streams_with_faults(seed, 300);
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << explain(s, r);
        crashes += r.crashed ? 1 : 0;
        resumed += r.files_resumed;
        replayed += r.records_replayed;
    }
    EXPECT_GT(crashes, 5U);
    EXPECT_GT(resumed, 100U);
    EXPECT_GT(replayed, 0U) << "some records were in the window at a crash";
}

TEST(simulation, same_seed_same_trace_hash_different_seed_different_trace) {
    scenario s;
    s.sources = 300;
    s.faults = true;
    s.order = strategy::random;
    s.seed = 42;
    const auto a = run(s);
    const auto b = run(s);
    EXPECT_EQ(a.trace_hash, b.trace_hash);
    s.seed = 43;
    const auto c = run(s);
    EXPECT_NE(a.trace_hash, c.trace_hash);
}

} // namespace

// ---- Bounded threads: the simulator, running the runtime, never creates a thread. ----------
// pthread_create is interposed for this test binary: every thread made while a simulation runs
// is counted (the runtime would have to go around the seam to make one).
#include <dlfcn.h>
#include <pthread.h>

#include <atomic>

namespace {
std::atomic<int> threads_created{0};
}

extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*),
                              void* arg) {
    using real_type = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
    static const auto real = reinterpret_cast<real_type>(dlsym(RTLD_NEXT, "pthread_create"));
    threads_created.fetch_add(1);
    return real(thread, attr, start, arg);
}

namespace {

TEST(simulation, runtime_code_creates_no_thread_in_the_simulator) {
    const int before = threads_created.load();
    scenario s;
    s.sources = 2000;
    s.io_lanes = 4;
    s.compute_workers = 3;
    s.faults = true;
    s.order = strategy::random;
    const report r = run(s);
    EXPECT_TRUE(r.ok()) << r.to_json();
    EXPECT_EQ(threads_created.load(), before) << "a thread was created while the simulation ran";
    // The interposition works: making a thread here is seen.
    pthread_t t{};
    ASSERT_EQ(pthread_create(
                  &t, nullptr, [](void*) -> void* { return nullptr; }, nullptr),
              0);
    pthread_join(t, nullptr);
    EXPECT_EQ(threads_created.load(), before + 1);
}

TEST(simulation, equal_sources_get_equal_shares_under_contention) {
    // 40 identical infinite flat-out generators share a pool with 20 floating buffers and two
    // compute workers for 0.2 virtual seconds under a fair strategy. Stated bound: the least
    // served source delivers at least 90% of what the most served one delivered (measured:
    // 99.7% with fifo and random at seed 11).
    for (const auto order : {strategy::fifo, strategy::random}) {
        scenario s;
        s.sources = 40;
        s.records_per_source = 0; // infinite, stopped at the horizon
        s.stream_fraction = 0.0;
        s.paced_fraction = 0.0; // all flat out: identical sources
        s.reserve = 1;
        s.cap = 4;
        s.processing_reserve = 4;
        s.buffers = 40 + 4 + 20;
        s.virtual_seconds = 0.2;
        s.order = order;
        s.seed = 11;
        const report r = run(s);
        ASSERT_TRUE(r.ok()) << r.to_json();
        EXPECT_GT(r.backpressure_waits, 0U) << "no contention: the test proves nothing";
        EXPECT_GT(r.source_bytes_min, 0U);
        EXPECT_GE(r.source_bytes_min * 10, r.source_bytes_max * 9) << r.to_json();
    }
}

TEST(simulation, registrations_waiting_under_sustained_backpressure_are_admitted_within_a_bound) {
    // 40 flat-out endless generators keep every floating buffer in use and always have sources
    // waiting above their reserves; eight registrations come meanwhile and wait for admission,
    // with reserves of 1 to 3. Each must be admitted within 20 virtual ms (two flush timeouts
    // and change; no compute stalls here), ahead of the waiting sources. (Served after them,
    // or without holding the first one's reserve back, none gets in before the run ends.)
    for (const auto order : {strategy::fifo, strategy::random, strategy::pct}) {
        scenario s;
        s.sources = 40;
        s.records_per_source = 0;
        s.stream_fraction = 0.0;
        s.paced_fraction = 0.0;
        s.reserve = 1;
        s.cap = 4;
        s.processing_reserve = 4;
        s.buffers = 40 + 4 + 20;
        s.virtual_seconds = 0.1;
        s.order = order;
        s.seed = 17;
        s.late_registrations = 8;
        s.admission_wait_seconds = 0.02;
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << r.to_json();
        EXPECT_GT(r.backpressure_waits, 0U) << "no contention: the test proves nothing";
        EXPECT_EQ(r.registrations_waited, 8U);
        EXPECT_EQ(r.registrations_starved, 0U) << r.to_json();
        EXPECT_EQ(r.sources_run, 48U) << r.to_json();
    }
}

TEST(simulation, wake_ups_across_lanes_are_never_lost_when_work_interleaves_at_scheduling_points) {
    // A lane decides to hold a partial buffer (processing busy, nobody waiting); another lane
    // or a compute task runs right then (a scheduling point) and makes processing idle or
    // queues a waiter. The holder must still be flushed by demand or pressure, not left to its
    // flush timeout: the run checks after every step that a lane holding partial buffers while
    // processing is idle or acquisitions wait has that wake-up pending. (Checked before the
    // holder was published, the wake-up was lost: seeds here failed then, both kinds.)
    std::uint64_t interleavings = 0;
    for (const std::uint32_t sources : {4U, 30U, 200U}) {
        for (std::uint64_t seed = 1; seed <= (sources == 200 ? 40U : 150U); ++seed) {
            scenario s;
            s.sources = sources;
            s.cap = 8;
            s.faults = true;
            s.order = strategy::random;
            s.seed = seed;
            s.virtual_seconds = 0.05;
            const report r = run(s);
            ASSERT_TRUE(r.ok()) << reproduce_command(s) << "\n" << r.to_json();
            interleavings += r.interleavings;
        }
    }
    EXPECT_GT(interleavings, 0U);
}

TEST(simulation, drainers_of_many_channels_lose_nothing_under_faults_and_interleaving) {
    // Each compute task drains up to 16 ready channels, so tasks meet channels listed while
    // they run, re-queue channels with more, post themselves again, and enqueue faults (one
    // queueing in five) make a drainer's post fail while other lanes list channels that count
    // on it (the scheduling point before the post, taken nine times in ten). After every step
    // no channel may be listed without a drainer to take it.
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
        scenario s;
        s.sources = 120;
        s.cap = 8;
        s.faults = true;
        s.order = seed % 2 == 0 ? strategy::random : strategy::pct;
        s.compute_workers = 1 + seed % 2;
        s.drain_channels = 16;
        s.enqueue_fault = 0.2;
        s.interleave = 0.9;
        s.seed = seed;
        s.virtual_seconds = 0.05;
        const report r = run(s);
        ASSERT_TRUE(r.ok()) << explain(s, r);
        EXPECT_EQ(r.bytes_delivered + r.bytes_discarded + r.bytes_dropped, r.bytes_produced)
            << explain(s, r);
        EXPECT_EQ(r.buffers_free_at_end, r.buffers_total) << explain(s, r);
    }
}

// ---- Scenarios of research-known bugs (named so a regression says which one came back). ----

TEST(simulation, known_bug_lost_wakeup_when_a_release_lands_first_on_the_free_list) {
    // No floating buffer at all, caps at the reserve, forced suspending acquisitions: every
    // buffer a source gets after its first comes through a release → wake-up.
    scenario s;
    s.sources = 200;
    s.reserve = 1;
    s.cap = 1;
    s.processing_reserve = 2;
    s.buffers = 202;
    s.faults = true;
    s.order = strategy::random;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        s.seed = seed;
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << explain(s, r);
    }
}

TEST(simulation, known_bug_reserve_taken_by_others_and_over_allocation_above_the_cap) {
    // Half the sources are greedy (cap 8), the pool is the tightest legal one; the pool asserts
    // the reserve invariant after every step and that no source exceeds its cap.
    scenario s;
    s.sources = 300;
    s.reserve = 2;
    s.cap = 8;
    s.processing_reserve = 4;
    s.buffers = 300 * 2 + 4;
    s.order = strategy::pct;
    s.faults = true;
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        s.seed = seed;
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << explain(s, r);
    }
}

TEST(simulation, known_bug_paused_source_never_resumes_when_no_flush_completes) {
    // Slow streams hold partial buffers for long flush timeouts while others wait for buffers:
    // only pressure flushes (waking the holders) let them proceed; the watchdog is short.
    scenario s;
    s.sources = 100;
    s.stream_fraction = 1.0;
    s.reserve = 1;
    s.cap = 1;
    s.processing_reserve = 2;
    s.buffers = 102;
    s.watchdog_seconds = 0.05;
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        s.seed = seed;
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << explain(s, r);
    }
}

TEST(simulation, known_bug_reregistration_while_the_pool_is_full_and_timers_under_load) {
    // Faults on: churn registers new sources and unregisters finished ones while flat-out
    // sources keep the pool at capacity; paced sources' timers must still fire (virtual time
    // advances with work, so a spinning lane cannot starve timers).
    scenario s;
    s.sources = 400;
    s.stream_fraction = 0.0;
    s.faults = true;
    s.order = strategy::random;
    s.buffers = 400 + 8 + 20;
    std::uint64_t churned = 0;
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        s.seed = seed;
        const report r = run(s);
        EXPECT_TRUE(r.ok()) << explain(s, r);
        churned += r.unregistered + r.registrations_refused;
    }
    EXPECT_GT(churned, 0U) << "the churn never happened";
}

} // namespace
