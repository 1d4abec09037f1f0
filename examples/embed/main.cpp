/// An engine embedding sluice: its own source kind (a simulated temperature probe), its own
/// pipeline stage (counts warm readings, refuses malformed ones), its own sink (an aggregate per
/// probe), and sluice::worker doing the rest. Exits 0 when every reading of every probe reached
/// the sink exactly once and in order, and the stage counted exactly the warm ones.
///
///     embed_example [probes] [readings per probe]

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "sluice/pipeline/stage.hpp"
#include "sluice/source/source.hpp"
#include "sluice/version.hpp"
#include "sluice/worker.hpp"

namespace rt = sluice::runtime;

/// A probe that has `readings` readings ready, one record each ("<probe>,<n>,<milli °C>\n"),
/// then ends. A real one would read a device; this one is driven by the same interface.
class probe_source final : public rt::source {
public:
    probe_source(std::uint64_t probe, std::uint64_t readings)
        : probe_(probe), readings_(readings) {}

    /// The kind is defined once per process; defining it again returns the same id.
    static rt::source_kind probe_kind() {
        static const rt::source_kind kind = rt::define_source_kind("probe");
        return kind;
    }

    rt::source_kind kind() const noexcept override { return probe_kind(); }
    std::string describe() const override { return "probe " + std::to_string(probe_); }
    boost::asio::awaitable<boost::system::error_code> open() override {
        co_return boost::system::error_code{};
    }
    /// Opening never waits, so the server may start this source without a coroutine.
    std::optional<boost::system::error_code> open_now() override {
        return boost::system::error_code{};
    }
    boost::asio::awaitable<boost::system::error_code> wait_readable() override {
        co_return closed_ ? boost::system::error_code(boost::asio::error::operation_aborted)
                          : boost::system::error_code{};
    }
    rt::read_result read_now(std::span<std::byte> space) override {
        if (next_ == readings_) {
            return {rt::read_result::status::end_of_stream, 0, {}};
        }
        std::size_t used = 0;
        char line[64];
        while (next_ < readings_) {
            const int n = std::snprintf(line, sizeof line, "%llu,%llu,%llu\n",
                                        static_cast<unsigned long long>(probe_),
                                        static_cast<unsigned long long>(next_),
                                        static_cast<unsigned long long>(20000 + (next_ * 7) % 900));
            if (used + static_cast<std::size_t>(n) > space.size()) {
                break; // the rest goes into the next buffer
            }
            std::memcpy(space.data() + used, line, static_cast<std::size_t>(n));
            used += static_cast<std::size_t>(n);
            ++next_;
        }
        return {rt::read_result::status::data, used, {}};
    }
    void close() noexcept override { closed_ = true; }

private:
    std::uint64_t probe_;
    std::uint64_t readings_;
    std::uint64_t next_ = 0;
    bool closed_ = false;
};

/// The engine's stage: runs on compute threads before the sink. It knows its records are
/// newline-framed "<probe>,<n>,<milli °C>\n", counts the readings above `warm_milli_celsius`,
/// and throws on a reading it cannot parse, which fails that probe alone.
class warm_readings_stage final : public rt::stage {
public:
    static constexpr std::uint64_t warm_milli_celsius = 20500;

    std::string_view name() const noexcept override { return "warm_readings"; }
    void process(const rt::framer& /*records_format*/, rt::data_event& event) override {
        std::uint64_t warm = count(event.spanning_record);
        warm += count(event.records);
        warm_.fetch_add(warm, std::memory_order_relaxed);
    }
    std::uint64_t warm() const { return warm_.load(); }

private:
    static std::uint64_t count(std::span<const std::byte> records) {
        std::string_view text(reinterpret_cast<const char*>(records.data()), records.size());
        std::uint64_t warm = 0;
        while (!text.empty()) {
            const auto end = text.find('\n');
            const auto last_comma = text.rfind(',', end);
            std::uint64_t milli = 0;
            if (end == std::string_view::npos || last_comma == std::string_view::npos ||
                std::from_chars(text.data() + last_comma + 1, text.data() + end, milli).ec !=
                    std::errc{}) {
                throw std::runtime_error("a reading without a temperature: " +
                                         std::string(text.substr(0, end)));
            }
            warm += milli > warm_milli_celsius ? 1U : 0U;
            text.remove_prefix(end + 1);
        }
        return warm;
    }
    std::atomic<std::uint64_t> warm_{0};
};

/// The engine's sink: checks each probe's readings arrive in order, and counts.
class aggregate_sink final : public rt::sink {
public:
    void on_data(const rt::data_event& event) override {
        const std::lock_guard lock(mutex_);
        auto& p = probes_[event.origin_id];
        take(p, event.spanning_record);
        std::string_view records(reinterpret_cast<const char*>(event.records.data()),
                                 event.records.size());
        while (!records.empty()) {
            const auto end = records.find('\n');
            take(p, std::as_bytes(std::span(records.data(), end + 1)));
            records.remove_prefix(end + 1);
        }
    }
    void on_end_of_stream(std::uint64_t origin_id) override {
        const std::lock_guard lock(mutex_);
        probes_[origin_id].ended = true;
        ended_.fetch_add(1);
    }
    void on_error(std::uint64_t origin_id, std::string_view message) override {
        std::fprintf(stderr, "probe %llu failed: %.*s\n",
                     static_cast<unsigned long long>(origin_id), static_cast<int>(message.size()),
                     message.data());
        errors_.fetch_add(1);
    }

    std::size_t ended() const { return ended_.load(); }
    std::size_t errors() const { return errors_.load(); }
    /// Probes whose readings were not 0, 1, …, readings − 1 each exactly once, then the end.
    std::size_t wrong(std::uint64_t readings) {
        const std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(
            std::count_if(probes_.begin(), probes_.end(), [&](const auto& entry) {
                return !entry.second.ended || entry.second.out_of_order ||
                       entry.second.next != readings;
            }));
    }

private:
    struct probe_state {
        std::uint64_t next = 0;
        bool out_of_order = false;
        bool ended = false;
    };
    static void take(probe_state& p, std::span<const std::byte> record) {
        if (record.empty()) {
            return;
        }
        const char* text = reinterpret_cast<const char*>(record.data());
        const char* comma = static_cast<const char*>(std::memchr(text, ',', record.size()));
        std::uint64_t n = 0;
        if (comma == nullptr ||
            std::from_chars(comma + 1, text + record.size(), n).ec != std::errc{} || n != p.next) {
            p.out_of_order = true;
        }
        p.next = n + 1;
    }

    std::mutex mutex_;
    std::map<std::uint64_t, probe_state> probes_;
    std::atomic<std::size_t> ended_{0};
    std::atomic<std::size_t> errors_{0};
};

int main(int argc, char** argv) {
    const std::uint64_t probes = argc > 1 ? std::stoull(argv[1]) : 200;
    const std::uint64_t readings = argc > 2 ? std::stoull(argv[2]) : 5000;

    aggregate_sink sink; // outlives the worker
    auto warm = std::make_shared<warm_readings_stage>();
    sluice::worker_options options;
    options.processing.stages = {rt::count_csv_fields(), warm};
    options.pool.sources_max = static_cast<std::uint32_t>(probes + 16);
    options.pool.buffer_count = static_cast<std::uint32_t>(probes + 256);
    sluice::worker worker(sink, options);

    std::vector<rt::source_handle> handles;
    for (std::uint64_t p = 0; p < probes; ++p) {
        rt::source_options source;
        source.name = "probe-" + std::to_string(p);
        source.limits = {1, 4}; // a guaranteed buffer, at most four at once
        const auto answer = worker.server().register_source(
            source, [p, readings](rt::environment& /*env*/, const rt::executor& /*lane*/) {
                return std::make_unique<probe_source>(p, readings);
            });
        if (!answer.admitted()) {
            std::fprintf(stderr, "probe %llu refused: %s\n", static_cast<unsigned long long>(p),
                         answer.message.c_str());
            return 1;
        }
        handles.push_back(answer.handle);
    }
    worker.server().start(handles);
    // Bounded wait: every probe ends by itself.
    for (int waited_ms = 0; sink.ended() + sink.errors() < probes; ++waited_ms) {
        if (waited_ms == 60'000) {
            std::fprintf(stderr, "only %zu of %llu probes ended in 60 s\n", sink.ended(),
                         static_cast<unsigned long long>(probes));
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    worker.shutdown();

    const auto stats = worker.server().stats();
    const auto kind = rt::index_of(probe_source::probe_kind());
    const std::size_t wrong = sink.wrong(readings);
    std::uint64_t warm_expected = 0;
    for (std::uint64_t n = 0; n < readings; ++n) {
        warm_expected += 20000 + (n * 7) % 900 > warm_readings_stage::warm_milli_celsius ? 1 : 0;
    }
    warm_expected *= probes;
    std::printf("sluice %s: %llu probes of kind \"%s\", %llu bytes, %llu records, %llu warm "
                "(expected %llu); %zu probes wrong\n",
                sluice::version_string, static_cast<unsigned long long>(probes),
                std::string(rt::to_string(probe_source::probe_kind())).c_str(),
                static_cast<unsigned long long>(stats.bytes_total[kind]),
                static_cast<unsigned long long>(worker.pipeline().stats().records_by_kind[kind]),
                static_cast<unsigned long long>(warm->warm()),
                static_cast<unsigned long long>(warm_expected), wrong);
    return wrong == 0 && sink.errors() == 0 && warm->warm() == warm_expected &&
                   worker.pipeline().stats().records_by_kind[kind] == probes * readings
               ? 0
               : 1;
}
