#pragma once
/// sluiced's built-in sink: counts what reaches the engine, optionally costs some compute per
/// buffer (worker.sink_cost_us_per_buffer), and logs source failures at a bounded rate.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

#include "apps/sluiced/log.hpp"
#include "sluice/pipeline/sink.hpp"

namespace sluiced {

using namespace sluice::runtime;

/// Counts what reaches the engine; logs each source failure as a `source_failed` event, at
/// most logger::lines_per_second a second (a storm of resets must not flood the log).
class counting_sink final : public sink {
public:
    explicit counting_sink(std::chrono::microseconds cost_per_buffer) : cost_(cost_per_buffer) {}

    void on_data(const data_event& event) override {
        if (cost_.count() > 0) {
            std::this_thread::sleep_for(cost_); // worker.sink_cost_us_per_buffer: the engine's work
        }
        bytes_.fetch_add(event.raw.size(), std::memory_order_relaxed);
        records_.fetch_add(event.record_count, std::memory_order_relaxed);
        fields_.fetch_add(event.field_count, std::memory_order_relaxed);
    }
    void on_end_of_stream(std::uint64_t /*origin_id*/) override {
        end_of_stream_.fetch_add(1, std::memory_order_relaxed);
    }
    void on_error(std::uint64_t origin_id, std::string_view message) override {
        errors_.fetch_add(1, std::memory_order_relaxed);
        const std::string origin = std::to_string(origin_id);
        logger::instance().log_limited(log_level::warning, "source_failed",
                                       "source " + origin + " failed: " + std::string(message),
                                       {{"origin", origin}, {"reason", std::string(message)}});
    }
    std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
    std::uint64_t records() const { return records_.load(std::memory_order_relaxed); }
    std::uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
    std::uint64_t end_of_stream() const { return end_of_stream_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> bytes_{0};
    std::atomic<std::uint64_t> records_{0};
    std::atomic<std::uint64_t> fields_{0};
    std::atomic<std::uint64_t> errors_{0};
    std::atomic<std::uint64_t> end_of_stream_{0};
    std::chrono::microseconds cost_; ///< per buffer
};

} // namespace sluiced
