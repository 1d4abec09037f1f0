#pragma once
/// Processing (DESIGN.md §3, P3): every emitted buffer runs through a pipeline on the compute
/// pool — a framer (records that span buffers are reassembled per source, in order), the
/// stages, and the engine-facing sink. Buffers of one source are processed strictly in
/// sequence order, never concurrently; different sources run in parallel. A reassembled record
/// is copied into an output buffer taken from the processing reserve. Processing never waits
/// on a source. A channel with something queued is listed as ready; as many compute tasks
/// (drainers) as the pool has threads take ready channels in turn, a batch of buffers each,
/// until none is left, rather than one task per buffer.

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sluice/core/histogram.hpp"
#include "sluice/env/environment.hpp"
#include "sluice/pipeline/framer.hpp"
#include "sluice/pipeline/sink.hpp"
#include "sluice/pipeline/stage.hpp"
#include "sluice/pool/buffer.hpp"
#include "sluice/pool/buffer_pool.hpp"

namespace sluice::runtime {

/// The built-in framings (see framer.hpp), as configuration names them.
enum class framing : std::uint8_t {
    newline,         ///< records end with '\n'
    length_prefixed, ///< a 4-byte big-endian length, then that many payload bytes
};

/// The built-in framer for `kind`.
const framer& builtin_framer(framing kind) noexcept;

struct processing_options {
    /// The built-in framing, used unless `custom_framer` is set.
    framing record_framing = framing::newline;
    /// Records that span buffers and are longer than this are dropped and counted (a record
    /// inside one buffer is delivered as it is: it costs no copy); 0 = buffer size.
    std::uint32_t record_bytes_max = 0;
    std::uint32_t batch_buffers_max = 16; ///< buffers of one channel before the next channel's
    /// Take an output buffer for every input buffer, as an engine pipeline writing results does,
    /// waiting (suspended, on lane 0 — no thread blocks) when none may be taken. The simulator
    /// turns this on so that processing competes for buffers; under the legacy pool policy that
    /// is what deadlocks (P2).
    bool output_per_buffer = false;
    /// The engine's own framing instead of `record_framing` (must outlive the processing).
    const framer* custom_framer = nullptr;
    /// Run in this order on every buffer's records, before the sink.
    std::vector<std::shared_ptr<stage>> stages = {count_csv_fields()};
    /// Channels one compute task drains (each up to batch_buffers_max) before it posts itself
    /// again, letting other compute work run.
    std::uint32_t batch_channels_max = 64;
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
        records_by_kind{}; ///< by open_channel's kind index
    /// Tracked channels (processed positions): bytes submitted and not yet processed, by kind.
    std::array<std::uint64_t, processing_kinds_max> processed_lag_bytes{};
    /// The longest any of them has waited with its position not moving, by kind (seconds).
    std::array<double, processing_kinds_max> processed_lag_seconds{};
    std::uint64_t tracked_channels = 0;
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
    /// metrics). `track_processed`: the channel keeps its processed position (see
    /// `processed_through`) and reports each advance to the processed callback.
    std::shared_ptr<channel> open_channel(std::uint64_t origin_id, std::size_t kind_index = 0,
                                          bool track_processed = false);

    /// Queues a filled buffer. Any thread, one producer per channel at a time (the source's
    /// lane). False when the channel's origin has failed in the
    /// sink: the buffer is released and counted as discarded. Throws when the buffer cannot be
    /// queued (out of memory); nothing is queued or counted then, and the buffer is released.
    bool submit(const std::shared_ptr<channel>& target, buffer filled);
    /// Queues the end-of-stream event after everything submitted before. Allocates nothing
    /// but a drainer's post. At most one final event (this or `error`) per channel.
    void end_of_stream(const std::shared_ptr<channel>& target);
    /// Queues the error event after everything submitted before (see `end_of_stream`).
    void error(const std::shared_ptr<channel>& target, std::string message);

    /// Called on a compute thread each time the pool becomes idle (nothing queued).
    void set_idle_callback(std::function<void()> callback);
    /// Called on a compute thread with the origin id when the sink threw for one of its
    /// buffers (the source should stop: its later buffers are discarded). Set before sources
    /// run; not while processing runs.
    void set_failure_callback(std::function<void(std::uint64_t)> callback);
    /// Called on a compute thread with the origin id when a tracked channel's processed position
    /// advanced, after the buffer that advanced it (the receiver coalesces). Set before sources
    /// run; not while processing runs.
    void set_processed_callback(std::function<void(std::uint64_t)> callback);
    /// A tracked channel's processed position: the bytes of its stream, counted from its first
    /// buffer, up to the end of the last record the sink has returned for (every earlier
    /// buffer's included: one channel is processed in order). The bytes of a record still
    /// unfinished, or being skipped as oversize, are not in it until that record ends; a
    /// discontinuity drops the unfinished record, and its bytes count then. 0 for untracked
    /// channels. Any thread.
    static std::uint64_t processed_through(const channel& target) noexcept;
    /// Waits (without a clock) until nothing is queued. Not from a compute thread.
    void wait_idle();
    /// Drops everything queued in every channel, returning its buffers (teardown after a
    /// detected deadlock, when no task runs). Returns the number of items dropped.
    std::uint64_t discard_queued();
    /// Channels waiting for an output buffer now.
    std::uint64_t output_waits() const noexcept { return output_waits_.load(); }

    processing_stats stats() const;
    /// Empty, or what is wrong: channels listed as ready while no drainer is posted or running
    /// to take them (they would wait until some other channel's buffer posts one). For the
    /// simulator, between its steps (when no post is half done).
    std::string check_drainers() const;
    /// Sequentially consistent: a source that publishes a held partial buffer and then reads
    /// this, and processing that drops to zero and then reads the holders, cannot both miss.
    std::uint64_t queued() const noexcept { return queued_.load(std::memory_order_seq_cst); }
    /// The framing in use (built-in or the engine's own).
    const framer& record_framer() const noexcept { return framer_; }
    /// True once the sink (or a stage) threw for one of the channel's buffers: its error has
    /// been said and its later buffers are discarded. Any thread.
    static bool sink_failed(const channel& target) noexcept;

private:
    /// Queues the final event (end of stream, or an error when `is_error`) and claims and lists
    /// the channel (schedule) unless it is listed or being drained.
    void enqueue_final(const std::shared_ptr<channel>& target, bool is_error, std::string message);

    /// Puts the channel in the ready list, and posts a drainer unless as many run as the
    /// compute pool has threads; the caller holds the channel's claim (scheduled_ is true: set
    /// by the caller, or kept by a drain that found more or waited for an output buffer).
    /// When the post throws and no drainer runs to take the channel, it is taken out again and
    /// the exception leaves (nothing listed that no drainer will take). `may_inject`: the
    /// simulator's enqueue fault may make the post throw.
    void schedule(const std::shared_ptr<channel>& target, bool may_inject = false);
    struct ready_list;
    /// A compute task: drains ready channels (a batch each, in list order; a channel with more
    /// goes to the back) until the list is empty, posting itself again after
    /// batch_channels_max of them. Static: it may run after the processing is gone (see
    /// ready_list).
    static void run_drainer(const std::shared_ptr<ready_list>& ready);
    /// One batch of the channel's items; true when more are left (the claim is kept then).
    bool drain_batch(const std::shared_ptr<channel>& target, std::uint64_t& done);
    /// One data item: processed and given to the sink, or (a failed origin) discarded.
    void deliver(channel& target, buffer& input);
    /// The final event to the sink, unless the origin failed (its error was said already).
    /// `message`: the error's text (is_error only).
    void deliver_final(channel& target, bool is_error, const std::string* message);
    /// A buffer of a failed origin, not delivered.
    void count_discarded(const buffer& dropped) noexcept;
    /// The sink or a stage threw for the origin's buffer: its error event (`message`), then
    /// the source is told.
    void fail_origin(channel& target, const std::string& message);
    void process(channel& target, buffer& input, buffer output);
    /// A tracked channel's position after `input` reached the sink.
    void advance_processed(channel& target, std::size_t bytes) const noexcept;
    /// Tells the processed callback when the batch advanced a tracked channel's position.
    void report_processed(channel& target);
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
    const framer& framer_;
    std::function<void()> idle_callback_;
    std::function<void(std::uint64_t)> failure_callback_;
    std::function<void(std::uint64_t)> processed_callback_;
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
    /// Channels ready to be drained, and the drainer tasks posted or running: one compute task
    /// per buffer was a TBB enqueue on the lane for each, and as many task switches and idle
    /// spins on the compute threads (when 10,000 sources start, or 1,000 connections stream).
    std::shared_ptr<ready_list> ready_;
};

} // namespace sluice::runtime
