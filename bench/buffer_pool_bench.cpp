/// Accountant microbenchmarks: acquire + release of one buffer, uncontended and with two
/// threads, side by side with the two pools a stream engine would otherwise use: a mutex and a
/// deque of free buffers, and oneTBB's concurrent_bounded_queue. Baselines do no accounting
/// (no reserves, caps, waiters or fairness), so they bound what the accounting costs.

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <tbb/concurrent_queue.h>

#include "sluice/pool/buffer_pool.hpp"

namespace {

namespace asio = boost::asio;
using sluice::runtime::buffer;
using sluice::runtime::buffer_pool;
using sluice::runtime::source_id;

constexpr std::uint32_t buffer_count = 1024;
constexpr std::uint32_t buffer_size_bytes = 4096;
constexpr int threads_max = 2;

/// One pool shared by the benchmark threads, with a source per thread.
struct sluice_fixture {
    buffer_pool pool{{buffer_count, buffer_size_bytes, 16, 64}};
    std::vector<source_id> sources;
    sluice_fixture() {
        for (int i = 0; i < threads_max; ++i) {
            sources.push_back(pool.register_source({4, 256}).id);
        }
    }
};

sluice_fixture& sluice_pool() {
    static sluice_fixture fixture;
    return fixture;
}

void bm_sluice_try_acquire_release(benchmark::State& state) {
    auto& fixture = sluice_pool();
    const auto id = fixture.sources[static_cast<std::size_t>(state.thread_index())];
    for (auto _ : state) {
        buffer b = fixture.pool.try_acquire(id);
        benchmark::DoNotOptimize(b.storage().data());
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_sluice_try_acquire_release)->Threads(1)->Threads(2)->UseRealTime();

/// Above its reserve: every acquisition is served from floating buffers.
void bm_sluice_try_acquire_release_floating(benchmark::State& state) {
    auto& fixture = sluice_pool();
    const auto id = fixture.sources[static_cast<std::size_t>(state.thread_index())];
    std::vector<buffer> reserve;
    for (int i = 0; i < 4; ++i) {
        reserve.push_back(fixture.pool.try_acquire(id));
    }
    for (auto _ : state) {
        buffer b = fixture.pool.try_acquire(id);
        benchmark::DoNotOptimize(b.storage().data());
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_sluice_try_acquire_release_floating)->Threads(1)->Threads(2)->UseRealTime();

/// The suspension path: a source at its cap waits; a release grants the buffer and posts the
/// completion, which the io_context runs. One iteration = suspend + wake + complete.
void bm_sluice_async_wait_and_wake(benchmark::State& state) {
    buffer_pool pool({64, buffer_size_bytes, 1, 4});
    const auto id = pool.register_source({1, 1}).id;
    asio::io_context io(1);
    buffer held = pool.try_acquire(id);
    for (auto _ : state) {
        pool.async_acquire(id, asio::bind_executor(io, [&held](boost::system::error_code,
                                                               buffer b) { held = std::move(b); }));
        held.reset(); // wakes the waiter (posted)
        io.restart();
        io.poll();
    }
    held.reset();
    pool.unregister_source(id);
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_sluice_async_wait_and_wake);

/// Baseline 1: a mutex and a deque of free buffer indices.
struct mutex_deque_pool {
    std::mutex mutex;
    std::deque<std::uint32_t> free;
    std::unique_ptr<std::byte[]> arena =
        std::make_unique<std::byte[]>(std::size_t{buffer_count} * buffer_size_bytes);
    mutex_deque_pool() {
        for (std::uint32_t i = 0; i < buffer_count; ++i) {
            free.push_back(i);
        }
    }
};

void bm_mutex_deque_acquire_release(benchmark::State& state) {
    static mutex_deque_pool pool;
    for (auto _ : state) {
        std::uint32_t index = 0;
        {
            const std::lock_guard lock(pool.mutex);
            index = pool.free.front();
            pool.free.pop_front();
        }
        benchmark::DoNotOptimize(pool.arena.get() + std::size_t{index} * buffer_size_bytes);
        {
            const std::lock_guard lock(pool.mutex);
            pool.free.push_back(index);
        }
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_mutex_deque_acquire_release)->Threads(1)->Threads(2)->UseRealTime();

/// Baseline 2: oneTBB's concurrent_bounded_queue of free buffer indices.
struct tbb_queue_pool {
    tbb::concurrent_bounded_queue<std::uint32_t> free;
    std::unique_ptr<std::byte[]> arena =
        std::make_unique<std::byte[]>(std::size_t{buffer_count} * buffer_size_bytes);
    tbb_queue_pool() {
        free.set_capacity(buffer_count);
        for (std::uint32_t i = 0; i < buffer_count; ++i) {
            free.push(i);
        }
    }
};

void bm_tbb_bounded_queue_acquire_release(benchmark::State& state) {
    static tbb_queue_pool pool;
    for (auto _ : state) {
        std::uint32_t index = 0;
        if (!pool.free.try_pop(index)) {
            state.SkipWithError("tbb baseline ran dry");
            break;
        }
        benchmark::DoNotOptimize(pool.arena.get() + std::size_t{index} * buffer_size_bytes);
        pool.free.push(index);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_tbb_bounded_queue_acquire_release)->Threads(1)->Threads(2)->UseRealTime();

} // namespace

BENCHMARK_MAIN();
