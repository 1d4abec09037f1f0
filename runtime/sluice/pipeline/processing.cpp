#include "sluice/pipeline/processing.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <boost/asio/bind_executor.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/pipeline/detail/channel.hpp"

namespace sluice::runtime {

namespace {

/// A stage threw; the message names the stage (a throwing sink is said as such).
class stage_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

} // namespace

const framer& builtin_framer(framing kind) noexcept {
    return kind == framing::length_prefixed ? length_prefixed_framer() : newline_framer();
}

bool processing::sink_failed(const channel& target) noexcept {
    return target.sink_failed_.load(std::memory_order_acquire);
}

processing::processing(environment& env, buffer_pool& pool, sink& out,
                       const processing_options& options)
    : env_(env), pool_(pool), sink_(out), options_(options),
      framer_(options.custom_framer != nullptr ? *options.custom_framer
                                               : builtin_framer(options.record_framing)),
      ready_(std::make_shared<ready_list>(*this, env, options.batch_channels_max)) {
    const auto buffer_size = pool_.config().buffer_size_bytes;
    if (options_.record_bytes_max == 0 || options_.record_bytes_max > buffer_size) {
        // A reassembled record must fit one output buffer.
        options_.record_bytes_max = buffer_size;
    }
    SLUICE_ASSERT(options_.batch_buffers_max >= 1 && options_.batch_channels_max >= 1);
    // Each running task holds at most one output buffer, so a processing reserve of at least
    // the compute concurrency means processing never waits (the legacy policy has none).
    SLUICE_ASSERT(pool_.config().policy == pool_policy::legacy ||
                  pool_.config().processing_reserve >= env_.compute_concurrency());
}

processing::~processing() {
    wait_idle();
}

std::shared_ptr<processing::channel>
processing::open_channel(std::uint64_t origin_id, std::size_t kind_index, bool track_processed) {
    SLUICE_ASSERT(kind_index < processing_kinds_max);
    auto created = std::make_shared<channel>(origin_id, kind_index, track_processed);
    const std::lock_guard lock(channels_mutex_);
    if (channels_.size() == channels_.capacity()) {
        // Forget channels whose sources are gone before growing.
        std::erase_if(channels_, [](const std::weak_ptr<channel>& c) { return c.expired(); });
    }
    channels_.push_back(created);
    return created;
}

std::vector<std::shared_ptr<processing::channel>> processing::live_channels() const {
    std::vector<std::shared_ptr<channel>> live;
    const std::lock_guard lock(channels_mutex_);
    for (const auto& weak : channels_) {
        if (auto c = weak.lock()) {
            live.push_back(std::move(c));
        }
    }
    return live;
}

std::uint64_t processing::discard_queued() {
    std::uint64_t dropped = 0;
    {
        const std::lock_guard lock(ready_->mutex);
        while (ready_->pop()) {
        }
    }
    for (const auto& c : live_channels()) {
        channel::item_ring items;
        bool final_dropped = false;
        {
            const std::lock_guard lock(c->mutex_);
            items = c->queue_.take();
            final_dropped =
                std::exchange(c->final_, channel::final_event::none) != channel::final_event::none;
            c->scheduled_ = false;
        }
        c->output_.reset();
        for (; !items.empty(); items.pop_front()) {
            buffers_queued_.fetch_sub(1, std::memory_order_relaxed);
            ++dropped;
        }
        dropped += final_dropped ? 1 : 0;
    }
    queued_.fetch_sub(dropped);
    return dropped;
}

void processing::set_idle_callback(std::function<void()> callback) {
    const std::lock_guard lock(idle_mutex_);
    idle_callback_ = std::move(callback);
}

void processing::set_processed_callback(std::function<void(std::uint64_t)> callback) {
    processed_callback_ = std::move(callback);
}

std::uint64_t processing::processed_through(const channel& target) noexcept {
    return target.progress_ ? target.progress_->through.load(std::memory_order_acquire) : 0;
}

void processing::advance_processed(channel& target, std::size_t bytes) const noexcept {
    auto& p = *target.progress_;
    p.stream_bytes += bytes;
    const framing_state& state = target.framing_;
    if (state.skip_bytes == 0) { // while an oversize record is skipped, its start is unknown
        const std::uint64_t through = p.stream_bytes - state.carry.size();
        if (through != p.through.load(std::memory_order_relaxed)) {
            p.advanced_ns.store(env_.now().count(), std::memory_order_relaxed);
            p.through.store(through, std::memory_order_release);
        }
    }
}

void processing::report_processed(channel& target) {
    auto& p = *target.progress_;
    const std::uint64_t through = p.through.load(std::memory_order_relaxed);
    if (through == p.reported || !processed_callback_) {
        return;
    }
    p.reported = through;
    try {
        processed_callback_(target.origin_id_);
    } catch (...) {
        // The next advance reports again; the source learns it then (or at shutdown).
    }
}

void processing::set_failure_callback(std::function<void(std::uint64_t)> callback) {
    failure_callback_ = std::move(callback);
}

// Items are counted once queued, under the channel's lock; the same lock claims the channel
// (it goes into the ready list) when it is neither listed nor being drained, and the listing
// comes after the lock (a drainer started at once would wait for it otherwise). A push that
// throws (the ring growing) leaves nothing queued or counted. A drainer's post that throws
// when no other drainer is sure to take the channel is undone (see schedule): a channel has
// one producer at a time (its source's lane), and a claim is only made when the channel is
// neither listed nor drained, so the queue then holds just the item (or final event) this
// call added, which is taken back before the exception leaves. Nothing is left queued that no
// drainer will take.

bool processing::submit(const std::shared_ptr<channel>& target, buffer filled) {
    SLUICE_ASSERT(filled);
    if (sink_failed(*target)) {
        count_discarded(filled);
        return false;
    }
    channel::item item{std::move(filled), env_.now()};
    if (auto* p = target->progress_.get()) {
        // Waiting from now, when nothing was: the lag's clock starts with this buffer.
        if (p->submitted.load(std::memory_order_relaxed) ==
            p->through.load(std::memory_order_acquire)) {
            p->advanced_ns.store(item.queued_at.count(), std::memory_order_relaxed);
        }
        p->submitted.fetch_add(item.filled.size_bytes(), std::memory_order_relaxed);
    }
    bool post = false;
    {
        const std::lock_guard lock(target->mutex_);
        SLUICE_ASSERT(target->final_ == channel::final_event::none); // no data after the end
        target->queue_.push_back(std::move(item));
        queued_.fetch_add(1, std::memory_order_relaxed);
        buffers_queued_.fetch_add(1, std::memory_order_relaxed);
        post = !std::exchange(target->scheduled_, true);
    }
    if (post) {
        try {
            schedule(target, true);
        } catch (...) {
            buffer lost;
            {
                const std::lock_guard lock(target->mutex_);
                SLUICE_ASSERT(target->queue_.size() == 1); // one producer, no drain: only ours
                lost = std::move(target->queue_.pop_back().filled);
                target->scheduled_ = false;
            }
            buffers_queued_.fetch_sub(1, std::memory_order_relaxed);
            finished_items(1); // it may be the last: wait_idle hears of it
            throw;             // `lost` goes back to the pool on the way out
        }
    }
    return true;
}

void processing::end_of_stream(const std::shared_ptr<channel>& target) {
    enqueue_final(target, false, {});
}

void processing::error(const std::shared_ptr<channel>& target, std::string message) {
    enqueue_final(target, true, std::move(message));
}

void processing::enqueue_final(const std::shared_ptr<channel>& target, bool is_error,
                               std::string message) {
    // Out of line: every source has a channel, and few ever fail (made before anything changes,
    // so running out of memory here changes nothing).
    auto text = is_error ? std::make_unique<std::string>(std::move(message)) : nullptr;
    bool post = false;
    {
        const std::lock_guard lock(target->mutex_);
        SLUICE_ASSERT(target->final_ == channel::final_event::none); // one final event per origin
        target->final_ =
            is_error ? channel::final_event::error : channel::final_event::end_of_stream;
        target->final_message_ = std::move(text);
        queued_.fetch_add(1, std::memory_order_relaxed);
        post = !std::exchange(target->scheduled_, true);
    }
    if (post) {
        try {
            schedule(target);
        } catch (...) {
            {
                const std::lock_guard lock(target->mutex_);
                target->final_ = channel::final_event::none;
                target->final_message_.reset();
                target->scheduled_ = false;
            }
            finished_items(1);
            throw;
        }
    }
}

void processing::schedule(const std::shared_ptr<channel>& target, bool may_inject) {
    auto& ready = *ready_;
    bool post = false;
    {
        const std::lock_guard lock(ready.mutex);
        ready.push(target);
        // A drainer runs until the list is empty, so a listed channel needs a new one only to
        // use another compute thread, or when every drainer counted is still being posted (and
        // its post may fail).
        if (ready.drainers < env_.compute_concurrency() || ready.drainers == ready.posting) {
            ++ready.drainers;
            ++ready.posting;
            post = true;
        }
    }
    if (!post) {
        return;
    }
    // Another lane may list its channel, or a drainer take this one, before the post returns.
    env_.scheduling_point();
    try {
        if (may_inject && env_.inject(fault_site::enqueue_exception)) {
            throw std::bad_alloc();
        }
        env_.post_compute([ready = ready_] { run_drainer(ready); });
    } catch (...) {
        const std::lock_guard lock(ready.mutex);
        --ready.drainers;
        --ready.posting;
        // Unless a drainer that was posted is there to take it (or has taken it, with this
        // item), the channel comes out again. Another channel still listed was listed by a
        // producer whose own post is on its way, or that had a posted drainer to count on.
        if (ready.drainers == ready.posting && ready.remove(*target)) {
            throw;
        }
        return;
    }
    const std::lock_guard lock(ready.mutex);
    --ready.posting;
}

std::string processing::check_drainers() const {
    const std::lock_guard lock(ready_->mutex);
    if (!ready_->head || ready_->drainers > ready_->posting) {
        return {};
    }
    std::size_t listed = 0;
    for (const channel* c = ready_->head.get(); c != nullptr; c = c->ready_next_.get()) {
        ++listed;
    }
    return "lost drainer: " + std::to_string(listed) +
           " channels are ready and no drainer is posted to take them";
}

void processing::run_drainer(const std::shared_ptr<ready_list>& ready) {
    processing& self = *ready->owner; // only touched while a channel taken has items queued
    std::uint32_t channels = 0;
    for (;;) {
        std::shared_ptr<channel> next;
        {
            const std::lock_guard lock(ready->mutex);
            next = ready->pop();
        }
        if (!next) {
            // The last look, under the lock a producer lists under: what it lists after this
            // has its own drainer.
            ready->env->scheduling_point(); // a lane may list a channel counting on this drainer
            const std::lock_guard lock(ready->mutex);
            if (!ready->head) {
                --ready->drainers;
                return;
            }
            continue;
        }
        std::uint64_t done = 0;
        bool more = false;
        try {
            more = self.drain_batch(next, done);
        } catch (...) {
            // Nothing below drain_batch throws for a buffer (deliver catches what the sink and
            // stages throw): only a broken invariant gets here.
            self.finished_items(done);
            const std::lock_guard lock(ready->mutex);
            --ready->drainers;
            throw;
        }
        if (more) {
            // Behind every other ready channel rather than run one source to exhaustion.
            const std::lock_guard lock(ready->mutex);
            ready->push(next);
        }
        next.reset();
        // Finished at once, not when the drainer leaves: the lanes' demand decisions read
        // queued(), and while it says busy they hold partial buffers for a wake-up or their
        // flush timeout. From here the processing may be gone: only `ready` is touched until
        // another channel is taken (which has items queued).
        self.finished_items(done);
        if (++channels < ready->channels_max) {
            continue;
        }
        bool listed = false;
        {
            const std::lock_guard lock(ready->mutex);
            listed = static_cast<bool>(ready->head);
        }
        if (!listed) {
            continue; // the loop's top finds the list empty and leaves: no successor needed
        }
        channels = 0;
        try {
            // Lets other compute work run; the successor takes over this drainer's count.
            ready->env->post_compute([ready] { run_drainer(ready); });
        } catch (...) {
            continue; // out of memory for the post: go on here (every channel's queue is bounded)
        }
        return;
    }
}

bool processing::drain_batch(const std::shared_ptr<channel>& target, std::uint64_t& done) {
    // One clock read per item: each item's end starts the next one's time, so a buffer's time
    // includes taking it off the queue.
    const auto started = env_.now();
    auto mark = started;
    for (std::uint32_t i = 0; i < options_.batch_buffers_max; ++i) {
        if (options_.output_per_buffer && !sink_failed(*target) && front_is_data(*target) &&
            !take_output(target)) {
            // Suspended waiting for an output buffer: the item stays first in the queue and
            // this task ends; the grant reschedules the channel (which stays marked scheduled
            // meanwhile). Only this task takes items out, so the front cannot change.
            return false;
        }
        channel::item next;
        auto final = channel::final_event::none;
        std::unique_ptr<std::string> message; // the error's text, out of line as in the channel
        {
            const std::lock_guard lock(target->mutex_);
            if (!target->queue_.empty()) {
                next = std::move(target->queue_.front());
                target->queue_.pop_front();
            } else if (target->final_ != channel::final_event::none) {
                final = std::exchange(target->final_, channel::final_event::none);
                message = std::move(target->final_message_);
            } else {
                break;
            }
        }
        if (next.filled) {
            buffers_queued_.fetch_sub(1, std::memory_order_relaxed);
            deliver(*target, next.filled);
            next.filled.reset(); // back to the pool before the sink hears of the next one
            if (target->progress_) {
                // At once, not after the batch: a source that acknowledges (MQTT) or
                // checkpoints keeps its window of what a crash repeats to about a buffer.
                report_processed(*target);
            }
            const auto processed = env_.now();
            buffer_seconds_.observe(std::chrono::duration<double>(processed - mark).count());
            mark = processed;
        } else {
            deliver_final(*target, final == channel::final_event::error, message.get());
            mark = env_.now();
        }
        ++done;
    }
    busy_nanoseconds_total_.fetch_add(static_cast<std::uint64_t>((mark - started).count()),
                                      std::memory_order_relaxed);
    const std::lock_guard lock(target->mutex_);
    // What is left now (a final event taken above was cleared when taken).
    const bool more = !target->queue_.empty() || target->final_ != channel::final_event::none;
    target->scheduled_ = more;
    return more;
}

void processing::deliver(channel& target, buffer& input) {
    if (sink_failed(target)) {
        count_discarded(input);
        target.output_.reset();
        return;
    }
    buffers_in_progress_.fetch_add(1, std::memory_order_relaxed);
    bool threw = true;
    try {
        process(target, input, std::move(target.output_));
        threw = false;
    } catch (const stage_error& ex) {
        fail_origin(target, ex.what());
    } catch (const std::exception& ex) {
        fail_origin(target, std::string("the sink failed: ") + ex.what());
    } catch (...) {
        fail_origin(target, "the sink failed: unknown exception");
    }
    if (threw) {
        count_discarded(input); // the buffer the sink threw on was not delivered either
    }
    buffers_in_progress_.fetch_sub(1, std::memory_order_relaxed);
}

void processing::count_discarded(const buffer& dropped) noexcept {
    buffers_discarded_total_.fetch_add(1, std::memory_order_relaxed);
    bytes_discarded_total_.fetch_add(dropped.size_bytes(), std::memory_order_relaxed);
}

void processing::deliver_final(channel& target, bool is_error, const std::string* message) {
    if (target.progress_) {
        target.progress_->ended.store(true, std::memory_order_relaxed);
    }
    if (!target.framing_.carry.empty()) {
        // The stream ended inside a record: it is dropped, and said so.
        records_truncated_total_.fetch_add(1, std::memory_order_relaxed);
    }
    target.framing_.reset();
    if (sink_failed(target)) {
        return; // its error event was the origin's last
    }
    try {
        if (is_error) {
            sink_.on_error(target.origin_id_, *message);
        } else {
            sink_.on_end_of_stream(target.origin_id_);
        }
    } catch (...) {
        sink_exceptions_total_.fetch_add(1, std::memory_order_relaxed);
    }
}

void processing::fail_origin(channel& target, const std::string& message) {
    sink_exceptions_total_.fetch_add(1, std::memory_order_relaxed);
    sink_failures_total_.fetch_add(1, std::memory_order_relaxed);
    target.sink_failed_.store(true, std::memory_order_release);
    target.framing_.reset();
    try {
        sink_.on_error(target.origin_id_, message);
    } catch (...) {
        sink_exceptions_total_.fetch_add(1, std::memory_order_relaxed);
    }
    if (failure_callback_) {
        try {
            failure_callback_(target.origin_id_);
        } catch (...) {
            // The source then stops at its next buffer (submit refuses it).
        }
    }
}

void processing::finished_items(std::uint64_t count) {
    if (count == 0) {
        return;
    }
    // Not the last items: a lock-free decrement (the count stays above zero, so no waiter can
    // return because of it).
    std::uint64_t current = queued_.load(std::memory_order_relaxed);
    while (current != count) {
        if (queued_.compare_exchange_weak(current, current - count, std::memory_order_acq_rel)) {
            return;
        }
    }
    // Possibly the last: decrement under the mutex that wait_idle reads the count under, so a
    // waiter sees zero only after this call is done with `this` (otherwise the owner may destroy
    // processing between the decrement and the notification). Also, once
    // set_idle_callback(nullptr) returns, no callback is running.
    const std::lock_guard lock(idle_mutex_);
    if (queued_.fetch_sub(count, std::memory_order_seq_cst) == count) {
        if (idle_callback_) {
            try {
                idle_callback_();
            } catch (...) {
                // A demand wake-up that could not be posted: partial buffers then wait for
                // their flush timeout, which still flushes them.
            }
        }
        idle_.notify_all();
    }
}

void processing::wait_idle() {
    std::unique_lock lock(idle_mutex_);
    idle_.wait(lock, [&] { return queued_.load() == 0; });
}

bool processing::front_is_data(channel& target) {
    const std::lock_guard lock(target.mutex_);
    return !target.queue_.empty();
}

bool processing::take_output(const std::shared_ptr<channel>& target) {
    if (target->output_) {
        return true;
    }
    target->output_ = pool_.try_acquire_processing();
    if (target->output_) {
        return true;
    }
    output_waits_.fetch_add(1);
    pool_.async_acquire_processing(boost::asio::bind_executor(
        env_.lane_executor(0),
        [this, target, since = env_.now()](boost::system::error_code error, buffer granted) {
            output_waits_.fetch_sub(1);
            output_wait_seconds_.observe(std::chrono::duration<double>(env_.now() - since).count());
            if (error) {
                return; // aborted at teardown (buffer_pool::abort_processing_waiters)
            }
            target->output_ = std::move(granted);
            schedule(target);
        }));
    return false;
}

void processing::process(channel& target, buffer& input, buffer provided) {
    SLUICE_ASSERT(input.sequence() == target.expected_sequence_); // in order, none missing
    ++target.expected_sequence_;
    const std::span<const std::byte> raw = input.bytes();
    const std::size_t n = raw.size();
    const std::size_t max = options_.record_bytes_max;

    data_event event;
    event.origin_id = target.origin_id_;
    event.sequence = input.sequence();
    event.reason = input.reason();
    event.raw = raw;
    // From the processing reserve: provided (output_per_buffer), or taken when a record is
    // reassembled.
    buffer output = std::move(provided);
    auto emit_spanning = [&](std::span<const std::byte> record) {
        if (!output) {
            output = pool_.try_acquire_processing();
        }
        // processing_reserve ≥ compute concurrency and a task holds one output at a time.
        SLUICE_ASSERT(output);
        SLUICE_ASSERT(record.size() <= output.capacity_bytes());
        std::memcpy(output.storage().data(), record.data(), record.size());
        output.set_size_bytes(static_cast<std::uint32_t>(record.size()));
        event.spanning_record = output.bytes();
        ++event.record_count;
    };

    framing_state& state = target.framing_;
    if (input.discontinuity()) {
        // A new connection: what the last one left unfinished is dropped, never joined to
        // these bytes (an oversize record being skipped was counted when it began).
        if (!state.carry.empty()) {
            ++event.records_truncated;
        }
        state.reset();
    }
    std::size_t pos = 0;
    if (state.carries()) {
        const carried_step step = framer_.continue_record(state, raw, max);
        pos = step.consumed;
        event.records_dropped += step.dropped;
        if (step.complete) {
            emit_spanning(std::as_bytes(std::span(state.carry)));
            state.carry.clear();
        }
    }
    if (!state.carries() && pos < n) {
        const framed_records framed = framer_.frame(state, raw.subspan(pos), max);
        event.records = framed.records;
        event.record_count += framed.count;
        event.records_dropped += framed.dropped;
    }
    for (const auto& each : options_.stages) {
        try {
            each->process(framer_, event);
        } catch (const std::exception& ex) {
            throw stage_error("the stage " + std::string(each->name()) + " failed: " + ex.what());
        } catch (...) {
            throw stage_error("the stage " + std::string(each->name()) +
                              " failed: unknown exception");
        }
    }

    sink_.on_data(event);
    if (target.progress_) {
        advance_processed(target, n);
    }
    env_.charge_compute(n);
    buffers_total_.fetch_add(1, std::memory_order_relaxed);
    bytes_total_.fetch_add(n, std::memory_order_relaxed);
    records_total_.fetch_add(event.record_count, std::memory_order_relaxed);
    records_by_kind_[target.kind_index_].fetch_add(event.record_count, std::memory_order_relaxed);
    fields_total_.fetch_add(event.field_count, std::memory_order_relaxed);
    records_dropped_total_.fetch_add(event.records_dropped, std::memory_order_relaxed);
    records_truncated_total_.fetch_add(event.records_truncated, std::memory_order_relaxed);
}

processing_stats processing::stats() const {
    processing_stats s;
    s.buffers_total = buffers_total_.load(std::memory_order_relaxed);
    s.bytes_total = bytes_total_.load(std::memory_order_relaxed);
    s.records_total = records_total_.load(std::memory_order_relaxed);
    s.fields_total = fields_total_.load(std::memory_order_relaxed);
    s.records_dropped_total = records_dropped_total_.load(std::memory_order_relaxed);
    s.records_truncated_total = records_truncated_total_.load(std::memory_order_relaxed);
    s.sink_failures_total = sink_failures_total_.load(std::memory_order_relaxed);
    s.sink_exceptions_total = sink_exceptions_total_.load(std::memory_order_relaxed);
    s.buffers_discarded_total = buffers_discarded_total_.load(std::memory_order_relaxed);
    s.bytes_discarded_total = bytes_discarded_total_.load(std::memory_order_relaxed);
    s.queued = queued_.load(std::memory_order_relaxed);
    s.busy_nanoseconds_total = busy_nanoseconds_total_.load(std::memory_order_relaxed);
    s.buffers_queued = buffers_queued_.load(std::memory_order_relaxed);
    s.buffers_in_progress = buffers_in_progress_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < s.records_by_kind.size(); ++i) {
        s.records_by_kind[i] = records_by_kind_[i].load(std::memory_order_relaxed);
    }
    s.buffer_seconds = buffer_seconds_.snapshot();
    s.output_wait_seconds = output_wait_seconds_.snapshot();
    // The oldest waiting item: a walk over the channels (scrape time only, not the data path).
    const auto now = env_.now();
    time_point oldest = now;
    for (const auto& c : live_channels()) {
        if (const auto* p = c->progress_.get()) {
            // Submitted bytes not yet processed, and how long the position has not moved while
            // they wait (an unfinished record's bytes count until it ends).
            const std::uint64_t through = p->through.load(std::memory_order_acquire);
            const std::uint64_t submitted = p->submitted.load(std::memory_order_relaxed);
            if (submitted > through && !p->ended.load(std::memory_order_relaxed)) {
                s.processed_lag_bytes[c->kind_index_] += submitted - through;
                const double waited =
                    std::chrono::duration<double>(
                        now - duration(p->advanced_ns.load(std::memory_order_relaxed)))
                        .count();
                s.processed_lag_seconds[c->kind_index_] =
                    std::max(s.processed_lag_seconds[c->kind_index_], waited);
            }
            ++s.tracked_channels;
        }
        const std::lock_guard lock(c->mutex_);
        if (!c->queue_.empty()) {
            oldest = std::min(oldest, c->queue_.front().queued_at);
        }
    }
    s.oldest_queued_seconds = std::chrono::duration<double>(now - oldest).count();
    return s;
}

} // namespace sluice::runtime
