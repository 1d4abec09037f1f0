#pragma once
/// sluiced's built-in sink: counts what reaches the engine, optionally costs some compute per
/// buffer (worker.sink_cost_us_per_buffer), and reports source failures on stderr at a bounded
/// rate.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <mutex>
#include <string_view>
#include <thread>

#include "sluice/pipeline/sink.hpp"

namespace sluiced {

using namespace sluice::runtime;

/// Counts what reaches the engine; reports errors on stderr, at most `lines_per_second` a
/// second (a storm of resets must not flood the log): the next line that is printed says how
/// many were left out.
class counting_sink final : public sink {
public:
    static constexpr int lines_per_second = 10;

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
        const std::lock_guard lock(print_mutex_);
        const auto now = std::chrono::steady_clock::now();
        if (now - window_start_ >= std::chrono::seconds(1)) {
            window_start_ = now;
            printed_in_window_ = 0;
        }
        if (printed_in_window_ >= lines_per_second) {
            ++suppressed_;
            return;
        }
        ++printed_in_window_;
        std::cerr << "sluiced: source " << origin_id << " failed: " << message;
        if (suppressed_ > 0) {
            std::cerr << " (" << suppressed_ << " more source failures not shown)";
            suppressed_ = 0;
        }
        std::cerr << "\n";
    }
    /// Says how many failures were left out since the last line (at the drain).
    void flush_suppressed() {
        const std::lock_guard lock(print_mutex_);
        if (suppressed_ > 0) {
            std::cerr << "sluiced: " << suppressed_ << " more source failures not shown\n";
            suppressed_ = 0;
        }
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
    std::mutex print_mutex_;
    std::chrono::steady_clock::time_point window_start_{}; ///< under print_mutex_
    int printed_in_window_ = 0;                            ///< under print_mutex_
    std::uint64_t suppressed_ = 0;                         ///< under print_mutex_
    std::chrono::microseconds cost_;                       ///< per buffer
};

} // namespace sluiced
