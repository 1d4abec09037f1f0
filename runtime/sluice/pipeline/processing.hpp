#pragma once
/// Processing (DESIGN.md §3, P3): every emitted buffer runs through a pipeline on the compute
/// pool — framing (newline-delimited or length-prefixed records; a record that spans buffers is
/// reassembled per source, in order), a CSV stage that counts records and fields, and the
/// engine-facing sink. Buffers of one source are processed strictly in sequence order, never
/// concurrently; different sources run in parallel. A reassembled record is copied into an
/// output buffer taken from the processing reserve. Processing never waits on a source.

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/core/histogram.hpp"
#include "sluice/env/environment.hpp"
#include "sluice/pool/buffer.hpp"
#include "sluice/pool/buffer_pool.hpp"

namespace sluice::runtime {

enum class framing : std::uint8_t {
    newline,         ///< records end with '\n'
    length_prefixed, ///< a 4-byte big-endian length, then that many payload bytes
};

struct processing_options {
    framing record_framing = framing::newline;
    /// Records that span buffers and are longer than this are dropped and counted (a record
    /// inside one buffer is delivered as it is: it costs no copy); 0 = buffer size.
    std::uint32_t record_bytes_max = 0;
    std::uint32_t batch_buffers_max = 16; ///< buffers one task handles before yielding
    /// Take an output buffer for every input buffer, as an engine pipeline writing results does,
    /// waiting (suspended, on lane 0 — no thread blocks) when none may be taken. The simulator
    /// turns this on so that processing competes for buffers; under the legacy pool policy that
    /// is what deadlocks (P2).
    bool output_per_buffer = false;
};

/// One processed buffer, as the sink sees it.
struct data_event {
    std::uint64_t origin_id = 0;
    std::uint64_t sequence = 0;
    flush_reason reason = flush_reason::none;
    std::span<const std::byte> raw; ///< the bytes exactly as the source delivered them
    /// The record that began in an earlier buffer and ended in this one, reassembled (in an
    /// output buffer from the processing reserve); empty when none.
    std::span<const std::byte> spanning_record;
    /// Complete records that begin and end inside `raw` (a sub-span of it).
    std::span<const std::byte> records;
    std::uint64_t record_count = 0;    ///< including the spanning record
    std::uint64_t field_count = 0;     ///< CSV fields over all those records
    std::uint64_t records_dropped = 0; ///< records longer than record_bytes_max, skipped
    /// 1 when this buffer starts a new connection (a reconnect, a restart) and the previous
    /// connection had left a record unfinished: that record was dropped, never joined to
    /// these bytes.
    std::uint64_t records_truncated = 0;
};

/// The engine-facing sink. Called on compute threads; for one origin, calls never overlap and
/// come in order: data events in sequence order, then at most one end-of-stream or error.
/// An exception from `on_data` fails that origin: processing reports it by `on_error` (with
/// the exception's message), drops the origin's later buffers (counted as discarded) and asks
/// the source to stop (see `processing::set_failure_callback`); other origins are unaffected.
/// An exception from `on_end_of_stream` or `on_error` is counted and otherwise ignored.
class sink {
public:
    virtual ~sink() = default;
    virtual void on_data(const data_event& event) = 0;
    virtual void on_end_of_stream(std::uint64_t origin_id) = 0;
    virtual void on_error(std::uint64_t origin_id, std::string_view message) = 0;
};

/// Groups of per-kind counters (source_kind_max: one per source kind).
inline constexpr std::size_t processing_kinds_max = 16;

struct processing_stats {
    std::uint64_t buffers_total = 0;
    std::uint64_t bytes_total = 0;
    std::uint64_t records_total = 0;
    std::uint64_t fields_total = 0;
    std::uint64_t records_dropped_total = 0;
    /// Unfinished records dropped at a stream discontinuity (a reconnect, a restart) or at the
    /// end of the stream (the source ended inside a record).
    std::uint64_t records_truncated_total = 0;
    std::uint64_t sink_failures_total = 0;     ///< origins failed by an exception from on_data
    std::uint64_t sink_exceptions_total = 0;   ///< every exception a sink call threw
    std::uint64_t buffers_discarded_total = 0; ///< buffers of failed origins, not delivered
    std::uint64_t bytes_discarded_total = 0;   ///< their bytes
    std::uint64_t queued = 0;                  ///< items submitted and not yet processed
    std::uint64_t busy_nanoseconds_total = 0;
    std::uint64_t buffers_queued = 0;      ///< data buffers waiting in channels
    std::uint64_t buffers_in_progress = 0; ///< data buffers being processed now
    double oldest_queued_seconds = 0.0;    ///< age of the oldest waiting buffer
    std::array<std::uint64_t, processing_kinds_max>
        records_by_kind{};                  ///< by open_channel's kind index
    histogram_snapshot buffer_seconds;      ///< time to process one buffer
    histogram_snapshot output_wait_seconds; ///< suspended output-buffer acquisitions
};

class processing final {
public:
    class channel;

    /// `sink` and `pool` must outlive this object; processing_reserve must be at least the
    /// compute concurrency (each running task holds at most one output buffer).
    processing(environment& env, buffer_pool& pool, sink& out, const processing_options& options);
    processing(const processing&) = delete;
    processing& operator=(const processing&) = delete;
    ~processing();

    /// A per-source, in-order channel. Shared because in-flight tasks keep it alive.
    /// `kind_index` (< processing_kinds_max) groups per-kind counters (the source kind, for
    /// metrics).
    std::shared_ptr<channel> open_channel(std::uint64_t origin_id, std::size_t kind_index = 0);

    /// Queues a filled buffer. Any thread, one producer per channel at a time (the source's
    /// lane). False when the channel's origin has failed in the
    /// sink: the buffer is released and counted as discarded. Throws when the buffer cannot be
    /// queued (out of memory); nothing is queued or counted then, and the buffer is released.
    bool submit(const std::shared_ptr<channel>& target, buffer filled);
    /// Queues the end-of-stream event after everything submitted before. Allocates nothing
    /// but the drain task's post. At most one final event (this or `error`) per channel.
    void end_of_stream(const std::shared_ptr<channel>& target);
    /// Queues the error event after everything submitted before (see `end_of_stream`).
    void error(const std::shared_ptr<channel>& target, std::string message);

    /// Called on a compute thread each time the pool becomes idle (nothing queued).
    void set_idle_callback(std::function<void()> callback);
    /// Called on a compute thread with the origin id when the sink threw for one of its
    /// buffers (the source should stop: its later buffers are discarded). Set before sources
    /// run; not while processing runs.
    void set_failure_callback(std::function<void(std::uint64_t)> callback);
    /// Waits (without a clock) until nothing is queued. Not from a compute thread.
    void wait_idle();
    /// Drops everything queued in every channel, returning its buffers (teardown after a
    /// detected deadlock, when no task runs). Returns the number of items dropped.
    std::uint64_t discard_queued();
    /// Channels waiting for an output buffer now.
    std::uint64_t output_waits() const noexcept { return output_waits_.load(); }

    processing_stats stats() const;
    /// Sequentially consistent: a source that publishes a held partial buffer and then reads
    /// this, and processing that drops to zero and then reads the holders, cannot both miss.
    std::uint64_t queued() const noexcept { return queued_.load(std::memory_order_seq_cst); }
    framing record_framing() const noexcept { return options_.record_framing; }

private:
    /// Queues the final event (end of stream, or an error when `is_error`) and claims and posts
    /// the channel's drain task unless one is pending.
    void enqueue_final(const std::shared_ptr<channel>& target, bool is_error, std::string message);

    /// Posts the channel's drain task; the caller holds the channel's claim (scheduled_ is true:
    /// set by the caller, or kept by a drain that found more or waited for an output buffer).
    void post_drain(const std::shared_ptr<channel>& target);
    void drain(const std::shared_ptr<channel>& target);
    /// One batch of the channel's items; true when more are left (the claim is kept then).
    bool drain_batch(const std::shared_ptr<channel>& target, std::uint64_t& done);
    /// One data item: processed and given to the sink, or (a failed origin) discarded.
    void deliver(channel& target, buffer& input);
    /// The final event to the sink, unless the origin failed (its error was said already).
    /// `message`: the error's text (is_error only).
    void deliver_final(channel& target, bool is_error, const std::string* message);
    /// A buffer of a failed origin, not delivered.
    void count_discarded(const buffer& dropped) noexcept;
    /// The sink threw for the origin's buffer: its error event, then the source is told.
    void fail_origin(channel& target, const char* what);
    void process(channel& target, buffer& input, buffer output);
    /// For output_per_buffer: takes the channel's output buffer, or starts waiting for one and
    /// returns false (the drain resumes when it is granted).
    bool take_output(const std::shared_ptr<channel>& target);
    /// The channel's next item is a data buffer (under its lock).
    static bool front_is_data(channel& target);
    void finished_items(std::uint64_t count);
    std::vector<std::shared_ptr<channel>> live_channels() const;

    environment& env_;
    buffer_pool& pool_;
    sink& sink_;
    processing_options options_;
    std::function<void()> idle_callback_;
    std::function<void(std::uint64_t)> failure_callback_;
    std::atomic<std::uint64_t> queued_{0};
    mutable std::mutex idle_mutex_;
    std::condition_variable idle_;
    std::atomic<std::uint64_t> buffers_total_{0};
    std::atomic<std::uint64_t> bytes_total_{0};
    std::atomic<std::uint64_t> records_total_{0};
    std::atomic<std::uint64_t> fields_total_{0};
    std::atomic<std::uint64_t> records_dropped_total_{0};
    std::atomic<std::uint64_t> records_truncated_total_{0};
    std::atomic<std::uint64_t> sink_failures_total_{0};
    std::atomic<std::uint64_t> sink_exceptions_total_{0};
    std::atomic<std::uint64_t> buffers_discarded_total_{0};
    std::atomic<std::uint64_t> bytes_discarded_total_{0};
    std::atomic<std::uint64_t> busy_nanoseconds_total_{0};
    std::atomic<std::uint64_t> output_waits_{0};
    std::atomic<std::uint64_t> buffers_queued_{0};
    std::atomic<std::uint64_t> buffers_in_progress_{0};
    std::array<std::atomic<std::uint64_t>, processing_kinds_max> records_by_kind_{};
    seconds_histogram buffer_seconds_{seconds_buckets};
    seconds_histogram output_wait_seconds_{seconds_buckets};
    mutable std::mutex channels_mutex_;
    std::vector<std::weak_ptr<channel>> channels_; ///< for discard_queued
};

/// Per-source state: the queue and the record carried between buffers.
class processing::channel {
public:
    channel(std::uint64_t origin_id, std::size_t kind_index)
        : origin_id_(origin_id), kind_index_(static_cast<std::uint8_t>(kind_index)) {}

    /// True once the sink threw for one of this origin's buffers: its Error has been sent and
    /// later buffers are discarded. Any thread.
    bool sink_failed() const noexcept { return sink_failed_.load(std::memory_order_acquire); }

private:
    friend class processing;
    /// A queued data buffer. The final event (EoS or Error) is not an item: it waits in
    /// `final_` until the queue is empty, so queueing it never grows the ring.
    struct item {
        buffer filled;
        time_point queued_at{}; ///< when submitted (for the oldest-age gauge)
    };
    enum class final_event : std::uint8_t { none, end_of_stream, error };

    // Every source has a channel: small fields together, so idle sources pay no padding.
    std::uint64_t origin_id_;
    std::mutex mutex_; ///< guards queue_ and scheduled_
    /// A FIFO ring of items, made on the first push with room for 4 and doubled when full; kept
    /// once made (4 × 32 B). An idle source that never sent anything pays one pointer. (It was
    /// a std::deque made on first push: libstdc++'s deque holds a map and a 512-byte node even
    /// when empty, about 600 bytes kept by every source that ever sent data, in two mallocs.)
    class item_ring {
    public:
        item_ring() = default;
        /// Moves leave the source empty and unallocated.
        item_ring(item_ring&& other) noexcept
            : slots_(std::move(other.slots_)), head_(std::exchange(other.head_, 0)),
              size_(std::exchange(other.size_, 0)), capacity_(std::exchange(other.capacity_, 0)) {}
        item_ring& operator=(item_ring&& other) noexcept {
            slots_ = std::move(other.slots_);
            head_ = std::exchange(other.head_, 0);
            size_ = std::exchange(other.size_, 0);
            capacity_ = std::exchange(other.capacity_, 0);
            return *this;
        }
        item_ring(const item_ring&) = delete;
        item_ring& operator=(const item_ring&) = delete;
        ~item_ring() = default;

        bool empty() const noexcept { return size_ == 0; }
        std::uint32_t size() const noexcept { return size_; }
        item& front() noexcept { return slots_[head_]; }
        const item& front() const noexcept { return slots_[head_]; }
        void pop_front() noexcept {
            slots_[head_] = item{};
            head_ = (head_ + 1) & (capacity_ - 1);
            --size_;
        }
        /// Takes back the item just pushed (a post that failed).
        item pop_back() noexcept {
            --size_;
            return std::exchange(slots_[(head_ + size_) & (capacity_ - 1)], item{});
        }
        void push_back(item&& value) {
            room_for_one();
            slots_[(head_ + size_) & (capacity_ - 1)] = std::move(value);
            ++size_;
        }
        /// Everything queued, in order, leaving this ring empty and unallocated.
        item_ring take() noexcept { return item_ring(std::move(*this)); }

    private:
        void room_for_one() {
            if (size_ < capacity_) {
                return;
            }
            const std::uint32_t grown = capacity_ == 0 ? 4 : capacity_ * 2; // powers of two
            auto slots = std::make_unique<item[]>(grown);
            for (std::uint32_t i = 0; i < size_; ++i) {
                slots[i] = std::move(slots_[(head_ + i) & (capacity_ - 1)]);
            }
            slots_ = std::move(slots);
            capacity_ = grown;
            head_ = 0;
        }
        std::unique_ptr<item[]> slots_;
        std::uint32_t head_ = 0;
        std::uint32_t size_ = 0;
        std::uint32_t capacity_ = 0;
    };
    item_ring queue_;                            ///< data only; bounded by the source's cap
    std::unique_ptr<std::string> final_message_; ///< the error's text (under mutex_)
    final_event final_ = final_event::none;      ///< queued after the data (under mutex_)
    std::atomic<bool> sink_failed_{false};
    // Touched only by the single drain task running for this channel:
    std::string carry_;            ///< bytes of a record not yet ended
    std::uint64_t skip_bytes_ = 0; ///< length-prefixed framing: bytes of an oversize frame left
    std::uint64_t expected_sequence_ = 0; ///< next sequence, checked
    buffer output_;                       ///< output_per_buffer: granted, not yet used
    std::uint8_t kind_index_;             ///< < processing_kinds_max
    bool scheduled_ = false;              ///< a drain task is posted or running (under mutex_)
    bool skipping_ = false; ///< newline framing: inside an oversize record, dropping it
};

} // namespace sluice::runtime
