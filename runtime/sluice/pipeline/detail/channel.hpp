#pragma once
/// Internal: processing's per-source channel (the in-order queue, the final event, and the
/// framing state carried between buffers). Included only by processing.cpp.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "sluice/core/assert.hpp"
#include "sluice/pipeline/framer.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer.hpp"

namespace sluice::runtime {

/// Per-source state: the queue and the record carried between buffers.
class processing::channel {
public:
    channel(std::uint64_t origin_id, std::size_t kind_index, bool track_processed)
        : origin_id_(origin_id),
          progress_(track_processed ? std::make_unique<progress>() : nullptr),
          kind_index_(static_cast<std::uint8_t>(kind_index)) {}

private:
    friend class processing;
    /// A queued data buffer. The final event (EoS or Error) is not an item: it waits in
    /// `final_` until the queue is empty, so queueing it never grows the ring.
    struct item {
        buffer filled;
        time_point queued_at{}; ///< when submitted (for the oldest-age gauge)
    };
    enum class final_event : std::uint8_t { none, end_of_stream, error };
    /// A tracked channel's processed position (out of line: most channels are not tracked, and
    /// every source has a channel).
    struct progress {
        std::uint64_t stream_bytes = 0; ///< bytes of every buffer given to the sink (drain only)
        std::uint64_t reported = 0;     ///< `through` when last reported (drain only)
        std::atomic<std::uint64_t> through{0};
        std::atomic<std::uint64_t> submitted{0};  ///< bytes of every buffer queued (the lane)
        std::atomic<std::int64_t> advanced_ns{0}; ///< when `through` last moved (env time)
        /// The origin's final event came: an unfinished record's bytes will never be processed
        /// and are no lag.
        std::atomic<bool> ended{false};
    };

    // Every source has a channel: small fields together, so idle sources pay no padding.
    std::uint64_t origin_id_;
    std::mutex mutex_; ///< guards queue_ and scheduled_
    /// A FIFO ring of items, made on the first push with room for 4 and doubled when full; kept
    /// once made (4 × 32 B). An idle source that never sent anything pays one pointer. Not a
    /// std::deque: libstdc++'s holds a map and a 512-byte node even when empty, about 600 bytes
    /// kept by every source that ever sent data, in two mallocs.
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
    std::unique_ptr<progress> progress_; ///< null unless tracked
    // Touched only by the one drainer draining this channel at a time:
    framing_state framing_;               ///< the record carried between buffers
    std::uint64_t expected_sequence_ = 0; ///< next sequence, checked
    buffer output_;                       ///< output_per_buffer: granted, not yet used
    std::uint8_t kind_index_;             ///< < processing_kinds_max
    bool scheduled_ = false;              ///< ready, or being drained (under mutex_)
    /// The next channel in processing's ready list while this one is in it (under processing's
    /// ready mutex); the list holds each channel by its predecessor's link.
    std::shared_ptr<channel> ready_next_;
};

/// Channels ready for a drainer, and the drainer tasks posted or running (see
/// processing::schedule). Shared with those tasks: a drainer that runs after the last item was
/// finished finds the list empty and touches only this, never the processing, which may be gone
/// by then. A listed channel always has something queued, so processing is there while a
/// drainer holds one (until it has finished the items it took).
struct processing::ready_list {
    ready_list(processing& p, environment& e, std::uint32_t batch_channels_max) noexcept
        : owner(&p), env(&e), channels_max(batch_channels_max) {}

    void push(const std::shared_ptr<channel>& c) noexcept {
        SLUICE_ASSERT(!c->ready_next_);
        if (tail != nullptr) {
            tail->ready_next_ = c;
        } else {
            head = c;
        }
        tail = c.get();
    }
    std::shared_ptr<channel> pop() noexcept {
        auto front = std::move(head);
        if (front) {
            head = std::move(front->ready_next_);
            if (!head) {
                tail = nullptr;
            }
        }
        return front;
    }
    /// Takes `c` out; false when it is not listed.
    bool remove(const channel& c) noexcept {
        std::shared_ptr<channel>* link = &head;
        channel* before = nullptr;
        while (*link && link->get() != &c) {
            before = link->get();
            link = &(*link)->ready_next_;
        }
        if (!*link) {
            return false;
        }
        auto taken = std::move(*link);
        *link = std::move(taken->ready_next_);
        if (tail == &c) {
            tail = before;
        }
        return true;
    }

    processing* const owner;
    environment* const env;           ///< outlives the processing (its tasks run on env's threads)
    const std::uint32_t channels_max; ///< processing_options::batch_channels_max
    std::mutex mutex;                 ///< guards everything below
    std::shared_ptr<channel> head;    ///< each later one is held by its predecessor's ready_next_
    channel* tail = nullptr;
    std::size_t drainers = 0; ///< posted (or being posted) and not yet finished
    std::size_t posting = 0;  ///< of those, posts not yet returned (they may still fail)
};

} // namespace sluice::runtime
