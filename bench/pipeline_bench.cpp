// Microbenchmarks of the stages after the pool (Google Benchmark):
//   framing/CSV   processing's newline and length-prefixed framing with CSV field counting,
//                 16 KiB buffers of generator records submitted on one channel, through the
//                 oneTBB compute pool to a counting sink (bytes/s)
//   emit path     one flat-out generator source on the source server: read into the buffer,
//                 emit, process, sink — the whole per-buffer path of sluice (bytes/s)
// Run: build/release/bench/sluice_pipeline_bench

#include <atomic>
#include <cstring>
#include <string>

#include <benchmark/benchmark.h>

#include "sluice/env/production_environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/source_server.hpp"
#include "sluice/source/generator_records.hpp"
#include "sluice/source/generator_source.hpp"
#include "sluice/worker.hpp"

namespace {

using namespace sluice::runtime;

class counting_sink final : public sink {
public:
    void on_data(const data_event& event) override {
        bytes.fetch_add(event.raw.size(), std::memory_order_relaxed);
        records.fetch_add(event.record_count, std::memory_order_relaxed);
    }
    void on_end_of_stream(std::uint64_t) override { ends.fetch_add(1); }
    void on_error(std::uint64_t, std::string_view) override {}
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<std::uint64_t> records{0};
    std::atomic<std::uint64_t> ends{0};
};

constexpr std::uint32_t buffer_bytes = 16384;

/// One buffer's worth of records in the given framing (newline: generator records; length
/// prefixed: the same records, each behind a 4-byte big-endian length).
std::string payload(framing kind) {
    std::string text;
    char record[sluice::runtime::generator_record_bytes_max];
    for (std::uint64_t n = 0;; ++n) {
        const std::size_t size = sluice::runtime::format_generator_record(7, n, record);
        const std::size_t need = size + (kind == framing::length_prefixed ? 4 : 0);
        if (text.size() + need > buffer_bytes) {
            break;
        }
        if (kind == framing::length_prefixed) {
            const auto len = static_cast<std::uint32_t>(size);
            const char be[4] = {static_cast<char>(len >> 24U), static_cast<char>(len >> 16U),
                                static_cast<char>(len >> 8U), static_cast<char>(len)};
            text.append(be, 4);
        }
        text.append(record, size);
    }
    return text;
}

void framing_stage(benchmark::State& state, framing kind) {
    const std::string data = payload(kind);
    buffer_pool pool({256, buffer_bytes, 8, 4});
    counting_sink out;
    production_environment env({1, 1, 1});
    processing pipeline(env, pool, out, {kind, 0, 16});
    const auto id = pool.register_source({1, 240}).id;
    auto channel = pipeline.open_channel(id.value());
    std::uint64_t sequence = 0;
    for (auto _ : state) {
        buffer b = pool.try_acquire(id);
        while (!b) {
            pipeline.wait_idle();
            b = pool.try_acquire(id);
        }
        std::memcpy(b.storage().data(), data.data(), data.size());
        b.set_size_bytes(static_cast<std::uint32_t>(data.size()));
        b.set_sequence(sequence++);
        pipeline.submit(channel, std::move(b));
    }
    pipeline.wait_idle();
    pipeline.end_of_stream(channel);
    pipeline.wait_idle();
    pool.unregister_source(id);
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(data.size()));
    state.counters["records/s"] =
        benchmark::Counter(static_cast<double>(out.records.load()), benchmark::Counter::kIsRate);
}

void BM_framing_newline_csv(benchmark::State& state) {
    framing_stage(state, framing::newline);
}
void BM_framing_length_prefixed(benchmark::State& state) {
    framing_stage(state, framing::length_prefixed);
}
BENCHMARK(BM_framing_newline_csv)->UseRealTime();
BENCHMARK(BM_framing_length_prefixed)->UseRealTime();

/// One generator source flat out, `records` records per iteration, through the whole path.
void BM_emit_path_generator(benchmark::State& state) {
    const auto records = static_cast<std::uint64_t>(state.range(0));
    std::uint64_t bytes = 0;
    std::uint64_t id = 0;
    for (auto _ : state) {
        counting_sink out;
        sluice::worker core(out, {{64, buffer_bytes, 8, 8}, {1, 1, 1}, {}, {}});
        source_server& server = core.server();
        generator_options g;
        g.id = id++;
        g.records_max = records;
        const auto answer = server.register_source(
            {"gen", {1, 8}}, [g](environment& e, const executor& lane) -> std::unique_ptr<source> {
                return std::make_unique<generator_source>(e, lane, g);
            });
        server.start(answer.handle);
        while (out.ends.load() == 0) {
            std::this_thread::yield();
        }
        server.shutdown();
        bytes += out.bytes.load();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
    state.counters["records/s"] =
        benchmark::Counter(static_cast<double>(records) * static_cast<double>(state.iterations()),
                           benchmark::Counter::kIsRate);
}
BENCHMARK(BM_emit_path_generator)->Arg(1'000'000)->UseRealTime()->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
