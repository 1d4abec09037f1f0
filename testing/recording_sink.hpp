#pragma once
/// A sink for tests: records every event per origin and checks generator records as they
/// arrive (contiguous record numbers from 0 per origin, the right values, nothing after EoS or
/// Error). Thread-safe; waiting is bounded.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "sluice/env/process_threads.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/source/generator_records.hpp"

namespace sluice::test {

class recording_sink final : public runtime::sink {
public:
    struct origin_log {
        std::uint64_t next_sequence = 0;
        std::uint64_t bytes = 0;
        std::uint64_t records = 0;
        std::int64_t generator_id = -1; ///< from the first record; -1 before
        std::uint64_t next_record = 0;  ///< generator record number expected next
        bool end_of_stream = false;
        bool error = false;
        std::string error_message;
        std::string raw; ///< concatenated raw bytes, when keep_raw
        runtime::generator_record_checker checker;
    };

    /// Optional work per data event (a slow pipeline).
    std::function<void()> on_each_buffer;
    bool keep_raw = false;
    bool check_generator_records = true;

    void on_data(const runtime::data_event& event) override {
        if (on_each_buffer) {
            on_each_buffer();
        }
        const std::lock_guard lock(mutex_);
        auto& log = origins_[event.origin_id];
        if (event.sequence != log.next_sequence) {
            violation("origin " + std::to_string(event.origin_id) + ": sequence " +
                      std::to_string(event.sequence) + " where " +
                      std::to_string(log.next_sequence) + " was expected");
        }
        log.next_sequence = event.sequence + 1;
        if (log.end_of_stream || log.error) {
            violation("origin " + std::to_string(event.origin_id) + ": data after EoS/Error");
        }
        log.bytes += event.raw.size();
        log.records += event.record_count;
        if (keep_raw) {
            log.raw.append(reinterpret_cast<const char*>(event.raw.data()), event.raw.size());
        }
        if (check_generator_records) {
            const bool was_ok = log.checker.ok();
            log.checker.feed(event.spanning_record);
            log.checker.feed(event.records);
            log.generator_id = log.checker.generator_id();
            log.next_record = log.checker.next_record();
            if (was_ok && !log.checker.ok()) {
                violation("origin " + std::to_string(event.origin_id) + ": " +
                          log.checker.problem());
            }
        }
        total_bytes_ += event.raw.size();
        total_records_ += event.record_count;
        changed_.notify_all();
    }
    void on_end_of_stream(std::uint64_t origin_id) override {
        const std::lock_guard lock(mutex_);
        auto& log = origins_[origin_id];
        if (log.end_of_stream || log.error) {
            violation("origin " + std::to_string(origin_id) + ": second EoS/Error");
        }
        log.end_of_stream = true;
        ++end_of_streams_;
        changed_.notify_all();
    }
    void on_error(std::uint64_t origin_id, std::string_view message) override {
        const std::lock_guard lock(mutex_);
        auto& log = origins_[origin_id];
        if (log.end_of_stream || log.error) {
            violation("origin " + std::to_string(origin_id) + ": second EoS/Error");
        }
        log.error = true;
        log.error_message = std::string(message);
        ++errors_;
        changed_.notify_all();
    }

    /// Waits until `done()` holds or the bound passes. `done` runs under the sink's lock, on
    /// every sink event and at least every 10 ms (it may look at things other than the sink).
    bool wait_for(const std::function<bool()>& done,
                  std::chrono::milliseconds bound = std::chrono::seconds(60)) {
        const auto deadline = std::chrono::steady_clock::now() + bound;
        std::unique_lock lock(mutex_);
        while (!changed_.wait_for(lock, std::chrono::milliseconds(10), done)) {
            if (std::chrono::steady_clock::now() >= deadline) {
                return false;
            }
        }
        return true;
    }

    // Accessors: call with the lock not held.
    origin_log origin(std::uint64_t id) {
        const std::lock_guard lock(mutex_);
        return origins_[id];
    }
    std::vector<std::string> violations() {
        const std::lock_guard lock(mutex_);
        return violations_;
    }
    std::uint64_t end_of_streams() {
        const std::lock_guard lock(mutex_);
        return end_of_streams_;
    }
    std::uint64_t errors() {
        const std::lock_guard lock(mutex_);
        return errors_;
    }
    std::uint64_t total_bytes() {
        const std::lock_guard lock(mutex_);
        return total_bytes_;
    }
    std::uint64_t total_records() {
        const std::lock_guard lock(mutex_);
        return total_records_;
    }
    /// For use inside wait_for predicates (the lock is held there).
    std::uint64_t end_of_streams_locked() const { return end_of_streams_; }
    std::uint64_t errors_locked() const { return errors_; }
    std::uint64_t total_records_locked() const { return total_records_; }
    const std::map<std::uint64_t, origin_log>& origins_locked() const { return origins_; }

private:
    void violation(std::string what) {
        if (violations_.size() < 20) {
            violations_.push_back(std::move(what));
        }
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    std::map<std::uint64_t, origin_log> origins_;
    std::vector<std::string> violations_;
    std::uint64_t end_of_streams_ = 0;
    std::uint64_t errors_ = 0;
    std::uint64_t total_bytes_ = 0;
    std::uint64_t total_records_ = 0;
};

/// Threads of this process now (/proc/self/task), less the sanitizer runtime's own background
/// threads (ThreadSanitizer runs one; the tsan test preset says so in SLUICE_SANITIZER_THREADS).
inline std::size_t thread_count() {
    const char* extra = std::getenv("SLUICE_SANITIZER_THREADS");
    const std::size_t sanitizer = extra != nullptr ? std::strtoul(extra, nullptr, 10) : 0;
    const std::size_t all = runtime::process_thread_count();
    return all > sanitizer ? all - sanitizer : all;
}

} // namespace sluice::test
