#include "sluice/server/detail/flush_policy.hpp"

#include <algorithm>

#include <boost/asio/post.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/server/source_server.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;

flush_policy::flush_policy(environment& env, const buffer_pool& pool, const processing& pipeline,
                           const server_options& options, gate& inside, emit_callback emit)
    : env_(env), pool_(pool), processing_(pipeline), demand_flush_(options.demand_flush),
      demand_flush_min_bytes_(options.demand_flush_min_bytes), gate_(inside),
      emit_(std::move(emit)), lanes_(env.lane_count()),
      wake_pending_(std::make_unique<std::atomic<std::uint8_t>[]>(env.lane_count())) {
    for (std::size_t lane = 0; lane < lanes_.size(); ++lane) {
        lanes_[lane].sweeper = env_.make_timer(env_.lane_executor(lane));
    }
}

time_point flush_policy::deadline(time_point since, duration timeout) noexcept {
    return timeout >= time_point::max() - since ? time_point::max() : since + timeout;
}

bool flush_policy::demand_due(const buffer& partial, bool any_size) const noexcept {
    return demand_flush_ && (any_size || demand_sized(partial)) &&
           processing_.queued() < env_.compute_concurrency();
}

bool flush_policy::demand_sized(const buffer& partial) const noexcept {
    return partial.size_bytes() >= demand_flush_min_bytes_ ||
           processing_.record_framer().may_end_record(partial.bytes());
}

void flush_policy::heap_place(lane_holders& l, std::size_t index, holder h) {
    // Sift the hole at `index` up, then down, to where `h` belongs; entries learn their slot.
    auto& heap = l.heap;
    while (index > 0) {
        const std::size_t parent = (index - 1) / 2;
        if (!(h.deadline < heap[parent].deadline)) {
            break;
        }
        heap[index] = std::move(heap[parent]);
        heap[index].source->holder_index = static_cast<std::uint32_t>(index);
        index = parent;
    }
    for (;;) {
        std::size_t child = 2 * index + 1;
        if (child >= heap.size()) {
            break;
        }
        if (child + 1 < heap.size() && heap[child + 1].deadline < heap[child].deadline) {
            ++child;
        }
        if (!(heap[child].deadline < h.deadline)) {
            break;
        }
        heap[index] = std::move(heap[child]);
        heap[index].source->holder_index = static_cast<std::uint32_t>(index);
        index = child;
    }
    h.source->holder_index = static_cast<std::uint32_t>(index);
    heap[index] = std::move(h);
}

flush_policy::holder flush_policy::heap_remove(lane_holders& l, std::size_t index) {
    auto& heap = l.heap;
    SLUICE_ASSERT(index < heap.size());
    holder out = std::move(heap[index]);
    out.source->holder_index = no_index;
    holder last = std::move(heap.back());
    heap.pop_back();
    if (index < heap.size()) {
        heap_place(l, index, std::move(last));
    }
    held_total_.fetch_sub(1, std::memory_order_relaxed);
    if (heap.empty()) {
        disarm_sweeper(l);
    }
    return out;
}

void flush_policy::disarm_sweeper(lane_holders& l) {
    // Armed only while something is held: an armed sweeper is inside the gate, so an idle
    // server is quiescent (and a shutdown joins no timer).
    if (l.armed_for != time_point::max()) {
        l.armed_for = time_point::max();
        ++l.arms; // its cancelled expiry is stale
        l.sweeper->cancel();
    }
}

void flush_policy::hold(client& e, buffer partial, time_point deadline) {
    SLUICE_ASSERT(e.holder_index == no_index);
    SLUICE_ASSERT(partial);
    // The caller decided to hold (processing was busy, nobody waited); on real threads that
    // may have changed by now, before the holder is published.
    env_.scheduling_point();
    auto& l = lanes_[e.lane_index];
    l.heap.emplace_back();
    heap_place(l, l.heap.size() - 1, holder{deadline, &e, std::move(partial)});
    // Published, then checked again (both sequentially consistent, as are the wakers' sides:
    // the pool publishes a waiter and processing its drop to idle before they read the holder
    // count): either this sees the waiter or the idle processing, or the waker sees this
    // holder. The caller's checks alone came before the publication, so without this a wake-up
    // that fell between them would be lost and the buffer wait its whole flush timeout.
    held_total_.fetch_add(1, std::memory_order_seq_cst);
    if (const flush_reason due = wake_reason(l.heap[e.holder_index].partial);
        due != flush_reason::none) {
        holder h = heap_remove(l, e.holder_index);
        emit_(e, h.partial, due);
        return;
    }
    // Most sources share one flush timeout, so a new holder's deadline is usually the latest:
    // the sweeper is re-armed only for an earlier one.
    if (deadline < l.armed_for) {
        arm_sweeper(e.lane_index, deadline);
    }
}

buffer flush_policy::take(client& e) {
    if (e.holder_index == no_index) {
        return {};
    }
    return heap_remove(lanes_[e.lane_index], e.holder_index).partial;
}

void flush_policy::arm_sweeper(std::size_t lane, time_point deadline) {
    {
        // Inside the gate until the expiry (or its cancellation) has run. Not once shutdown
        // has begun: every source is stopping and takes its buffer back, nothing falls due.
        if (!gate_.try_enter()) {
            return;
        }
    }
    auto& l = lanes_[lane];
    l.armed_for = deadline;
    const std::uint32_t arm = ++l.arms;
    const auto lane32 = static_cast<std::uint32_t>(lane);
    try {
        // Pointer and two 32-bit values: std::function keeps it inline.
        l.sweeper->on_expiry(deadline - env_.now(), [this, lane32, arm](bool fired) {
            const gate::holder leave(gate_); // also when an emit throws
            sweep(lane32, arm, fired);
        });
    } catch (...) {
        l.armed_for = time_point::max();
        gate_.leave();
        throw;
    }
}

void flush_policy::sweep(std::size_t lane, std::uint32_t arm, bool fired) {
    auto& l = lanes_[lane];
    if (arm != l.arms) {
        return; // re-armed since, for an earlier deadline: that expiry covers this one
    }
    l.armed_for = time_point::max();
    if (!fired) {
        return; // cancelled: nothing held any more
    }
    const auto now = env_.now();
    while (!l.heap.empty() && l.heap.front().deadline <= now) {
        holder h = heap_remove(l, 0);
        emit_(*h.source, h.partial, flush_reason::timeout);
    }
    if (!l.heap.empty() && l.heap.front().deadline != time_point::max()) {
        arm_sweeper(lane, l.heap.front().deadline);
    }
}

void flush_policy::flush_lane(std::size_t lane, flush_reason reason) {
    auto& l = lanes_[lane];
    // Every holder goes (a demand wake-up: every one that holds the demand minimum; the
    // others wait for their deadline). Taken out of the heap first, so the heap is whole even
    // if an emit throws.
    std::vector<holder> all;
    all.swap(l.heap);
    held_total_.fetch_sub(all.size(), std::memory_order_relaxed);
    for (auto& h : all) {
        h.source->holder_index = no_index;
    }
    disarm_sweeper(l);
    if (reason == flush_reason::demand) {
        std::vector<holder> small;
        for (auto& h : all) {
            if (!demand_sized(h.partial)) {
                small.push_back(std::move(h));
            }
        }
        std::erase_if(all, [](const holder& h) { return !h.partial; });
        for (auto& h : small) { // back in, with their deadlines
            l.heap.emplace_back();
            heap_place(l, l.heap.size() - 1, std::move(h));
            held_total_.fetch_add(1, std::memory_order_seq_cst);
        }
        if (!l.heap.empty()) {
            arm_sweeper(lane, l.heap.front().deadline);
        }
    }
    for (auto& h : all) {
        emit_(*h.source, h.partial, reason);
    }
    if (l.heap.empty()) {
        all.clear();
        l.heap.swap(all); // keep the capacity
    }
}

flush_reason flush_policy::wake_reason(const buffer& partial) const noexcept {
    if (demand_due(partial)) {
        return flush_reason::demand;
    }
    if (pool_.has_waiters()) {
        return flush_reason::pressure;
    }
    return flush_reason::none;
}

void flush_policy::wake(flush_reason reason) {
    // After the waker published its condition (see hold_partial).
    if (held_total_.load(std::memory_order_seq_cst) == 0) {
        return;
    }
    const auto bit = static_cast<std::uint8_t>(1U << static_cast<unsigned>(reason));
    for (std::size_t lane = 0; lane < lanes_.size(); ++lane) {
        // Coalesced: at most one wake of each reason is pending per lane.
        if ((wake_pending_[lane].fetch_or(bit) & bit) != 0) {
            continue;
        }
        if (!gate_.try_enter_unless_drained()) {
            return;
        }
        asio::post(env_.lane_executor(lane), [this, lane, bit, reason] {
            wake_pending_[lane].fetch_and(static_cast<std::uint8_t>(~bit));
            try {
                flush_lane(lane, reason);
            } catch (...) {
                gate_.leave();
                throw;
            }
            gate_.leave();
        });
    }
}

std::string flush_policy::check_wakeups() const {
    // A partial buffer may wait for its flush timeout only while processing is busy and no
    // acquisition waits; otherwise a demand or pressure wake-up must be on its way to its lane.
    const bool idle = demand_flush_ && processing_.queued() == 0;
    const bool pressed = pool_.has_waiters();
    for (std::size_t lane = 0; lane < lanes_.size(); ++lane) {
        if (lanes_[lane].heap.empty()) {
            continue;
        }
        const auto pending = wake_pending_[lane].load();
        const auto demand =
            static_cast<std::uint8_t>(1U << static_cast<unsigned>(flush_reason::demand));
        const auto pressure =
            static_cast<std::uint8_t>(1U << static_cast<unsigned>(flush_reason::pressure));
        const bool any_due = std::any_of(lanes_[lane].heap.begin(), lanes_[lane].heap.end(),
                                         [&](const holder& h) { return demand_sized(h.partial); });
        if (idle && any_due && (pending & demand) == 0) {
            return "lost demand wake-up: lane " + std::to_string(lane) + " holds " +
                   std::to_string(lanes_[lane].heap.size()) +
                   " partial buffers while processing is idle, and no wake-up is pending";
        }
        if (pressed && (pending & pressure) == 0) {
            return "lost pressure wake-up: lane " + std::to_string(lane) + " holds " +
                   std::to_string(lanes_[lane].heap.size()) +
                   " partial buffers while acquisitions wait, and no wake-up is pending";
        }
    }
    return {};
}

} // namespace sluice::runtime
