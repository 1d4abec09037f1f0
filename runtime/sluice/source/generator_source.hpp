#pragma once
/// A synthetic source: deterministic CSV records at a configured rate, finite or infinite. It is
/// the worker's demo workload, the benchmarks' in-process load and the simulator's workload.
///
/// Record n of generator `id` is `"<id>,<n>,<value>\n"` with `value = generator_value(id, n)`,
/// so a receiver can check every record: contiguous n per origin, the right value, nothing else.

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "sluice/env/environment.hpp"
#include "sluice/source/generator_records.hpp"
#include "sluice/source/source.hpp"

namespace sluice::runtime {

struct generator_options {
    std::uint64_t id = 0;             ///< appears in every record
    std::uint64_t records_max = 0;    ///< records before end of stream; 0 = infinite
    double records_per_second = 0.0;  ///< 0 = as fast as the pool and lane allow
    std::uint32_t burst_records = 64; ///< records released per timer tick when rate-limited
};

// The record format is generator_records.hpp: one definition for producers and checkers.

class generator_source final : public source {
public:
    generator_source(environment& env, executor lane, const generator_options& options);

    source_kind kind() const noexcept override { return source_kind::generator; }
    /// A restart continues with the next record (a record a full buffer cut is finished).
    bool continues_after_reopen() const noexcept override { return true; }
    std::string describe() const override;
    boost::asio::awaitable<boost::system::error_code> open() override;
    std::optional<boost::system::error_code> open_now() override;
    boost::asio::awaitable<boost::system::error_code> wait_readable() override;
    /// Parks when the rate limiter has nothing to release until a later burst.
    bool should_park() override { return !closed_ && !ready(); }
    bool park(wake_callback wake) override;
    read_result read_now(std::span<std::byte> space) override;
    void close() noexcept override;

private:
    bool finished() const noexcept;
    /// read_now has something to say now (records, the end of stream).
    bool ready() const noexcept;
    /// When the next burst of records is due (rate-limited and not ready only).
    time_point next_burst() const noexcept;
    /// Records the rate limiter allows to exist by now (saturates at records_max).
    std::uint64_t records_allowed() const noexcept;

    environment& env_;
    executor lane_;
    generator_options options_;
    std::unique_ptr<timer> timer_;
    wake_callback parked_wake_; ///< while parked: the timer's callback then needs only `this`
    time_point start_{};
    runtime::generator_record_writer writer_; ///< formats records next(), next() + 1, ...
    std::array<char, generator_record_bytes_max> pending_{}; ///< a record cut by a full buffer
    std::size_t pending_size_ = 0;
    std::size_t pending_offset_ = 0;
    bool closed_ = false;
};

} // namespace sluice::runtime
