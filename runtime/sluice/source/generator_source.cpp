#include "sluice/source/generator_source.hpp"

#include <algorithm>
#include <cstring>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

generator_source::generator_source(environment& env, executor lane,
                                   const generator_options& options)
    : env_(env), lane_(std::move(lane)), options_(options), timer_(env.make_timer(lane_)),
      writer_(options.id) {
    SLUICE_ASSERT(options_.records_per_second >= 0.0);
    SLUICE_ASSERT(options_.burst_records >= 1);
}

std::string generator_source::describe() const {
    return "generator " + std::to_string(options_.id);
}

asio::awaitable<error_code> generator_source::open() {
    co_return *open_now();
}

std::optional<error_code> generator_source::open_now() {
    // The rate resumes where it stopped: after a restart the next record is due now, not
    // once the source has been open as long again as it ran before.
    start_ = env_.now();
    if (options_.records_per_second > 0.0) {
        start_ -= std::chrono::duration_cast<duration>(std::chrono::duration<double>(
            static_cast<double>(writer_.next()) / options_.records_per_second));
    }
    closed_ = false;
    return error_code{};
}

bool generator_source::finished() const noexcept {
    return options_.records_max != 0 && writer_.next() >= options_.records_max &&
           pending_offset_ == pending_size_;
}

std::uint64_t generator_source::records_allowed() const noexcept {
    std::uint64_t allowed = ~std::uint64_t{0};
    if (options_.records_per_second > 0.0) {
        const double elapsed_s = std::chrono::duration<double>(env_.now() - start_).count();
        allowed = static_cast<std::uint64_t>(elapsed_s * options_.records_per_second) + 1;
    }
    if (options_.records_max != 0) {
        allowed = std::min(allowed, options_.records_max);
    }
    return allowed;
}

bool generator_source::ready() const noexcept {
    return finished() || pending_offset_ < pending_size_ || records_allowed() > writer_.next();
}

time_point generator_source::next_burst() const noexcept {
    const double due_s = static_cast<double>(writer_.next() + options_.burst_records - 1) /
                         options_.records_per_second;
    return start_ + std::chrono::duration_cast<duration>(std::chrono::duration<double>(due_s));
}

asio::awaitable<error_code> generator_source::wait_readable() {
    if (closed_) {
        co_return asio::error::operation_aborted;
    }
    if (ready()) {
        // Ready now; still yield once so a flat-out generator shares its lane.
        co_await asio::post(lane_, asio::use_awaitable);
        co_return closed_ ? error_code(asio::error::operation_aborted) : error_code{};
    }
    // Sleep until a burst of records is due.
    const bool elapsed = co_await timer_->wait_for(next_burst() - env_.now());
    co_return elapsed && !closed_ ? error_code{} : error_code(asio::error::operation_aborted);
}

bool generator_source::park(wake_callback wake) {
    // Closed since should_park (a stop raced it): end the wait at once, still on the lane.
    const duration delay = closed_ ? duration{0} : next_burst() - env_.now();
    // The wake waits in a member, so the timer's callback (only `this`) fits std::function's
    // inline storage: capturing the wake allocated in every park.
    SLUICE_ASSERT(!parked_wake_); // one park at a time (source::park's contract)
    parked_wake_ = std::move(wake);
    timer_->on_expiry(delay, [this](bool elapsed) {
        const wake_callback parked = std::move(parked_wake_); // which may park again
        parked_wake_ = nullptr;
        SLUICE_ASSERT(parked);
        parked(elapsed && !closed_ ? error_code{} : error_code(asio::error::operation_aborted));
    });
    return true;
}

read_result generator_source::read_now(std::span<std::byte> space) {
    if (closed_) {
        return {read_result::status::error, 0, asio::error::operation_aborted};
    }
    if (finished()) {
        return {read_result::status::end_of_stream, 0, {}};
    }
    std::size_t written = 0;
    const auto copy_pending = [&] {
        const std::size_t n = std::min(pending_size_ - pending_offset_, space.size() - written);
        std::memcpy(space.data() + written, pending_.data() + pending_offset_, n);
        pending_offset_ += n;
        written += n;
    };
    copy_pending();
    const std::uint64_t allowed = records_allowed();
    while (written < space.size() && pending_offset_ == pending_size_ && writer_.next() < allowed) {
        pending_size_ = writer_.write_next(pending_.data());
        pending_offset_ = 0;
        copy_pending();
    }
    if (written == 0) {
        return {read_result::status::would_block, 0, {}};
    }
    return {read_result::status::data, written, {}};
}

void generator_source::close() noexcept {
    closed_ = true;
    timer_->cancel();
}

} // namespace sluice::runtime
