#pragma once
/// Internal: the server's flush policy for partial buffers (DESIGN.md's flush policy). While a
/// source waits (or parks) for more data, its partial buffer moves into its lane's holder
/// heap, ordered by flush deadline. One timer per lane (the sweeper), armed for the earliest
/// deadline, hands what is due to the emit callback; a demand wake-up (processing went idle)
/// or a pressure wake-up (an acquisition waits) hands every holder of the lane at once. The
/// source is resumed for neither (a parked holder stays parked) and takes its buffer back when
/// data comes. One timer per lane, not a `wait_readable() || timer` group per wait: that was
/// two coroutine spawns and a timer arm each time a partial buffer waited.
///
/// Lane-only, except `wake` (any thread: the pool's and processing's callbacks) and the
/// decisions, which read atomics.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sluice/core/gate.hpp"
#include "sluice/env/environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer.hpp"
#include "sluice/pool/buffer_pool.hpp"

namespace sluice::runtime {

struct server_options;

class flush_policy {
public:
    static constexpr std::uint32_t no_index = ~std::uint32_t{0};

    /// What the policy knows of a source: its lane and where its buffer is in the lane's heap.
    /// The server's per-source entry derives from it, so the policy hands the entry back.
    struct client {
        std::uint32_t lane_index = 0;
        std::uint32_t holder_index = no_index; ///< position in its lane's heap while holding
        bool holding() const noexcept { return holder_index != no_index; }
    };
    /// Hands a held buffer on (to processing); called on the client's lane. Must not throw for
    /// a queueing failure (the server counts it and ends the source).
    using emit_callback = std::function<void(client&, buffer&, flush_reason)>;

    /// `inside` counts armed sweepers and posted wake-ups, so shutdown waits for them.
    flush_policy(environment& env, const buffer_pool& pool, const processing& pipeline,
                 const server_options& options, gate& inside, emit_callback emit);

    /// The deadline of a partial buffer begun at `since` (saturated: too long never expires).
    static time_point deadline(time_point since, duration timeout) noexcept;

    /// Holds the client's partial buffer until its deadline or a wake-up; hands it on at once
    /// when a wake-up is already due. Lane-only; the client holds nothing yet.
    void hold(client& c, buffer partial, time_point deadline);
    /// The held buffer back (empty when it was handed on meanwhile, or nothing was held).
    buffer take(client& c);

    /// Demand (processing has room, and `partial` is large enough or ends a record) or
    /// pressure (an acquisition waits), or none.
    flush_reason wake_reason(const buffer& partial) const noexcept;
    /// `any_size`: a source that reads into its buffer in a blocking call (legacy) cannot be
    /// flushed by its deadline while it blocks, so it gets no minimum.
    bool demand_due(const buffer& partial, bool any_size = false) const noexcept;
    /// Posts a wake-up of `reason` to every lane that holds something (coalesced: at most one
    /// of each reason pending per lane). Any thread, after the waker published its condition.
    void wake(flush_reason reason);

    /// Empty, or the lost wake-up found (see source_server::check_wakeups).
    std::string check_wakeups() const;

private:
    struct holder {
        time_point deadline;
        client* source;
        buffer partial;
    };
    /// Per lane (touched only on that lane): the holders as a binary min-heap by deadline
    /// (client::holder_index is the position), and one timer armed for the earliest deadline.
    struct lane_holders {
        std::vector<holder> heap;
        std::unique_ptr<timer> sweeper;
        time_point armed_for = time_point::max(); ///< the sweeper's deadline; max when not armed
        std::uint32_t arms = 0;                   ///< on_expiry calls, so a stale expiry is ignored
    };

    /// Large enough for a demand flush, or ending a record (see demand_flush_min_bytes).
    bool demand_sized(const buffer& partial) const noexcept;
    void heap_place(lane_holders& l, std::size_t index, holder h);
    holder heap_remove(lane_holders& l, std::size_t index);
    void arm_sweeper(std::size_t lane, time_point deadline);
    void disarm_sweeper(lane_holders& l);
    void sweep(std::size_t lane, std::uint32_t arm, bool fired);
    void flush_lane(std::size_t lane, flush_reason reason);

    environment& env_;
    const buffer_pool& pool_;
    const processing& processing_;
    bool demand_flush_;
    std::uint32_t demand_flush_min_bytes_;
    gate& gate_;
    emit_callback emit_;
    std::vector<lane_holders> lanes_;
    std::atomic<std::size_t> held_total_{0};
    std::unique_ptr<std::atomic<std::uint8_t>[]> wake_pending_; ///< per lane, by reason bit
};

} // namespace sluice::runtime
