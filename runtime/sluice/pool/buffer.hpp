#pragma once
/// The buffer handle: a move-only unit of the buffer pool that returns itself when destroyed.
///
/// Like Seastar's `semaphore_units`, a `buffer` is the accounting: while a handle is alive its
/// buffer counts as outstanding for the requester that acquired it (a source or processing);
/// destroying or `reset()`ing the handle releases it, from any thread. Ownership for accounting
/// never moves between requesters: a buffer a source filled stays charged to that source while
/// it is queued and processed, until the last handle lets go (DESIGN.md §3, `cap_i`).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

class buffer_pool;

/// Why a buffer was handed from its source to processing. Counted per reason by the server.
enum class flush_reason : std::uint8_t {
    none,          ///< not flushed yet (being filled)
    full,          ///< no space left
    timeout,       ///< the source's flush timeout expired
    demand,        ///< the compute pool went idle and asked for data
    pressure,      ///< waiters exist while the source held a partial buffer
    stop,          ///< the source was stopped by the engine
    end_of_stream, ///< the source reached end of stream (or failed) with a partial buffer
    message,       ///< the source ended a message it answers for (an HTTP request body)
};

/// Number of `flush_reason` values, for arrays indexed by reason.
inline constexpr std::size_t flush_reason_count = 8;

/// Lower-case name of a flush reason, as used in metrics labels and logs.
std::string_view to_string(flush_reason reason) noexcept;

namespace detail {

/// Owner value of a buffer that is charged to processing rather than to a source slot.
inline constexpr std::uint32_t owner_processing = 0xFFFF'FFFEU;
/// Owner value of a buffer that is free (on the pool's free list).
inline constexpr std::uint32_t owner_none = 0xFFFF'FFFFU;

struct buffer_slot;

/// What a buffer returns its slot to: the one call a handle makes on its pool. An interface, so
/// that the handle knows nothing of the pool and the pool's internals stay its own.
class slot_owner {
public:
    /// Takes the buffer back. Called once per grant, by the handle that owns it.
    virtual void release(buffer_slot& slot) noexcept = 0;

protected:
    slot_owner() = default;
    slot_owner(const slot_owner&) = default;
    slot_owner& operator=(const slot_owner&) = default;
    ~slot_owner() = default;
};

/// Per-buffer descriptor, allocated once by the pool next to the arena. A handle points at one.
struct buffer_slot {
    slot_owner* pool = nullptr;       ///< the pool the buffer returns to
    std::byte* data = nullptr;        ///< first byte of this buffer in the arena
    std::uint32_t capacity_bytes = 0; ///< size of the buffer in bytes
    std::uint32_t size_bytes = 0;     ///< bytes written so far (0 ≤ size ≤ capacity)
    std::uint32_t index = 0;          ///< position in the arena, 0 ≤ index < buffer_count
    std::uint32_t owner = owner_none; ///< source slot index it is charged to, or owner_*
    std::uint64_t origin_id = 0;      ///< engine-visible id of the source that filled it
    std::uint64_t sequence = 0;       ///< per-origin sequence number, contiguous from 0 or 1
    flush_reason reason = flush_reason::none; ///< why it was emitted
    /// The first buffer of its origin after a reopen of the transport (a reconnect, a restart):
    /// its bytes do not continue the record the previous buffer left unfinished.
    bool discontinuity = false;
};

} // namespace detail

/// A move-only handle to one pool buffer. An empty handle (default-constructed or moved-from)
/// owns nothing; every accessor except `operator bool` and `reset` requires a
/// non-empty handle.
class buffer {
public:
    buffer() noexcept = default;
    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;
    buffer(buffer&& other) noexcept : slot_(std::exchange(other.slot_, nullptr)) {}
    buffer& operator=(buffer&& other) noexcept {
        if (this != &other) {
            reset();
            slot_ = std::exchange(other.slot_, nullptr);
        }
        return *this;
    }
    /// Releases the buffer to its pool (see `reset`).
    ~buffer() { reset(); }

    /// True when the handle owns a buffer.
    explicit operator bool() const noexcept { return slot_ != nullptr; }

    /// Returns the buffer to its pool and leaves the handle empty. Thread-safe with respect to
    /// other handles; wakes the first eligible waiter by posting to its executor (never inline).
    /// No effect on an empty handle.
    void reset() noexcept {
        if (slot_ != nullptr) {
            auto* slot = std::exchange(slot_, nullptr);
            slot->pool->release(*slot);
        }
    }

    /// The whole writable area, `capacity_bytes()` long.
    std::span<std::byte> storage() const noexcept {
        return {checked().data, checked().capacity_bytes};
    }
    /// The bytes written so far.
    std::span<const std::byte> bytes() const noexcept {
        return {checked().data, checked().size_bytes};
    }
    /// The part not yet written.
    std::span<std::byte> free_space() const noexcept {
        auto& s = checked();
        return {s.data + s.size_bytes, s.capacity_bytes - s.size_bytes};
    }

    std::uint32_t capacity_bytes() const noexcept { return checked().capacity_bytes; }
    std::uint32_t size_bytes() const noexcept { return checked().size_bytes; }
    /// Sets the number of bytes written; must not exceed `capacity_bytes()`.
    void set_size_bytes(std::uint32_t size_bytes) noexcept {
        SLUICE_ASSERT(size_bytes <= checked().capacity_bytes);
        slot_->size_bytes = size_bytes;
    }
    /// Marks `count_bytes` more bytes of `free_space()` as written.
    void commit_bytes(std::uint32_t count_bytes) noexcept {
        SLUICE_ASSERT(count_bytes <= checked().capacity_bytes - slot_->size_bytes);
        slot_->size_bytes += count_bytes;
    }
    bool full() const noexcept { return checked().size_bytes == slot_->capacity_bytes; }

    std::uint64_t origin_id() const noexcept { return checked().origin_id; }
    void set_origin_id(std::uint64_t origin_id) noexcept { checked().origin_id = origin_id; }
    std::uint64_t sequence() const noexcept { return checked().sequence; }
    void set_sequence(std::uint64_t sequence) noexcept { checked().sequence = sequence; }
    flush_reason reason() const noexcept { return checked().reason; }
    void set_reason(flush_reason reason) noexcept { checked().reason = reason; }
    bool discontinuity() const noexcept { return checked().discontinuity; }
    void set_discontinuity(bool discontinuity) noexcept { checked().discontinuity = discontinuity; }

    /// Position of the buffer in the arena; distinct for every live handle of one pool.
    std::uint32_t index() const noexcept { return checked().index; }

private:
    friend class buffer_pool; // the one maker of non-empty handles; the way back is slot_owner
    explicit buffer(detail::buffer_slot* slot) noexcept : slot_(slot) {}

    detail::buffer_slot& checked() const noexcept {
        SLUICE_ASSERT(slot_ != nullptr);
        return *slot_;
    }

    detail::buffer_slot* slot_ = nullptr; ///< the owned buffer's descriptor, or null when empty
};

} // namespace sluice::runtime
