#pragma once
/// sluiced's built-in sink: counts what reaches the engine, optionally costs some compute per
/// buffer (worker.sink_cost_us_per_buffer), optionally appends every record to a file
/// (--records-file: a relay to a file, and the witness of the crash tests), and logs source
/// failures at a bounded rate.

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
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
    counting_sink(const counting_sink&) = delete;
    counting_sink& operator=(const counting_sink&) = delete;
    ~counting_sink() override {
        if (records_fd_ >= 0) {
            ::close(records_fd_);
        }
    }

    /// Appends every delivered record to `path` (created if missing). Empty, or why not.
    std::string write_records_to(const std::string& path) {
        records_fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        return records_fd_ >= 0
                   ? std::string{}
                   : "cannot open the records file " + path + ": " + std::strerror(errno);
    }

    void on_data(const data_event& event) override {
        if (cost_.count() > 0) {
            std::this_thread::sleep_for(cost_); // worker.sink_cost_us_per_buffer: the engine's work
        }
        if (records_fd_ >= 0) {
            append_records(event);
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
    /// One append per buffer, so one origin's records stay whole and in order in the file. A
    /// failed write throws: the sink fails that origin, and the error names the file.
    void append_records(const data_event& event) const {
        iovec parts[2] = {
            {const_cast<std::byte*>(event.spanning_record.data()), event.spanning_record.size()},
            {const_cast<std::byte*>(event.records.data()), event.records.size()}};
        std::size_t left = event.spanning_record.size() + event.records.size();
        while (left > 0) {
            const ssize_t n = ::writev(records_fd_, parts, 2);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0 || static_cast<std::size_t>(n) != left) {
                // Regular files take a whole append or fail; anything else is an error here.
                throw std::runtime_error(std::string("writing the records file failed: ") +
                                         (n < 0 ? std::strerror(errno) : "a short write"));
            }
            left = 0;
        }
    }

    int records_fd_ = -1;
    std::atomic<std::uint64_t> bytes_{0};
    std::atomic<std::uint64_t> records_{0};
    std::atomic<std::uint64_t> fields_{0};
    std::atomic<std::uint64_t> errors_{0};
    std::atomic<std::uint64_t> end_of_stream_{0};
    std::chrono::microseconds cost_; ///< per buffer
};

} // namespace sluiced
