#include "sluice/pool/buffer_pool.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

#include <sys/mman.h>
#include <unistd.h>

namespace sluice::runtime {

namespace {

/// Buffers start on a cache-line boundary so two sources never share a line.
constexpr std::size_t buffer_alignment_bytes = 64;
/// The arena starts on a page boundary (friendly to O_DIRECT and huge pages).
constexpr std::size_t arena_alignment_bytes = 4096;
static_assert(arena_alignment_bytes % buffer_alignment_bytes == 0);

constexpr std::size_t round_up(std::size_t value, std::size_t multiple) {
    return (value + multiple - 1) / multiple * multiple;
}

constexpr std::size_t requester_index(std::uint32_t owner) {
    return owner == detail::owner_processing ? 1 : 0;
}

std::string config_error(std::string_view key, std::uint64_t value, std::string_view allowed) {
    return "pool configuration: " + std::string(key) + " = " + std::to_string(value) +
           " is out of range; allowed: " + std::string(allowed);
}

} // namespace

std::string_view to_string(admission_status status) noexcept {
    switch (status) {
    case admission_status::admitted:
        return "admitted";
    case admission_status::invalid_limits:
        return "invalid_limits";
    case admission_status::registry_full:
        return "registry_full";
    case admission_status::overcommitted:
        return "overcommitted";
    case admission_status::reserve_lent_out:
        return "reserve_lent_out";
    }
    return "unknown";
}

void pool_config::validate() const {
    if (buffer_count < 2) {
        throw std::invalid_argument(config_error(
            "buffer_count", buffer_count, "at least 2 (one for processing, one for a source)"));
    }
    if (buffer_size_bytes == 0 || buffer_size_bytes > (1U << 30U)) {
        throw std::invalid_argument(
            config_error("buffer_size_bytes", buffer_size_bytes, "1 to 1073741824 (1 GiB)"));
    }
    const bool legacy = policy == pool_policy::legacy;
    if ((processing_reserve == 0 && !legacy) || processing_reserve >= buffer_count) {
        throw std::invalid_argument(config_error(
            "processing_reserve", processing_reserve,
            "1 to buffer_count - 1 = " + std::to_string(buffer_count - 1) +
                " (processing must always get a buffer, and sources need at least one)"));
    }
    if (sources_max == 0 || sources_max >= source_id::invalid_index - 1) {
        throw std::invalid_argument(config_error("sources_max", sources_max, "1 to 2^32 - 3"));
    }
    const std::size_t stride = round_up(buffer_size_bytes, buffer_alignment_bytes);
    if (std::size_t{buffer_count} > std::numeric_limits<std::size_t>::max() / 2 / stride) {
        throw std::invalid_argument("pool configuration: buffer_count × buffer_size_bytes = " +
                                    std::to_string(buffer_count) + " × " +
                                    std::to_string(buffer_size_bytes) +
                                    " overflows the address space; lower either");
    }
}

namespace {

/// Makes [start, start + bytes) resident and writable now (`bytes` > 0). Throws when the
/// memory is not there, so a worker short of it fails at start with the size in the message.
void populate(std::byte* start, std::size_t bytes) {
#ifdef MADV_POPULATE_WRITE
    if (::madvise(start, bytes, MADV_POPULATE_WRITE) == 0) {
        return;
    }
    if (errno == ENOMEM) {
        throw std::system_error(
            errno, std::generic_category(),
            "buffer pool: the arena's " + std::to_string(bytes) +
                " bytes could not be made resident; lower buffer_count or buffer_size_bytes");
    }
#endif
    // Kernels before 5.14 reject the advice, and one with pages larger than the arena's
    // alignment rejects the range: touch a byte of every page instead (the last one too, which
    // a stride from an unaligned start can step over).
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    volatile std::byte* touch = start;
    for (std::size_t offset = 0; offset < bytes; offset += page) {
        touch[offset] = std::byte{0};
    }
    touch[bytes - 1] = std::byte{0};
}

} // namespace

void buffer_pool::arena_deleter::operator()(std::byte* arena) const noexcept {
    std::free(arena);
}

buffer_pool::buffer_pool(const pool_config& config) : config_(config) {
    config_.validate();
    const std::size_t stride = round_up(config_.buffer_size_bytes, buffer_alignment_bytes);
    const std::size_t arena_bytes = round_up(stride * config_.buffer_count, arena_alignment_bytes);
    // One allocation at start, never grown (DESIGN.md §3).
    arena_.reset(static_cast<std::byte*>(std::aligned_alloc(arena_alignment_bytes, arena_bytes)));
    if (!arena_) {
        throw std::bad_alloc();
    }
    if (config_.prefault) {
        populate(arena_.get(), arena_bytes);
    }
    slots_.resize(config_.buffer_count);
    free_list_.reserve(config_.buffer_count);
    for (std::uint32_t i = 0; i < config_.buffer_count; ++i) {
        auto& slot = slots_[i];
        slot.pool = this;
        slot.data = arena_.get() + stride * i;
        slot.capacity_bytes = config_.buffer_size_bytes;
        slot.index = i;
        // Pushed in reverse so the first acquisitions take the lowest indices.
        free_list_.push_back(config_.buffer_count - 1 - i);
    }
    sources_ = std::vector<source_entry>(config_.sources_max);
    free_source_indices_.reserve(config_.sources_max);
    for (std::uint32_t i = 0; i < config_.sources_max; ++i) {
        free_source_indices_.push_back(config_.sources_max - 1 - i);
    }
    // The legacy policy (fixed buffers per source, kept for the simulator's negative control)
    // reserves nothing for processing.
    processing_guaranteed_ = legacy() ? 0 : config_.processing_reserve;
    owed_ = processing_guaranteed_;
    counters_.buffer_count = config_.buffer_count;
    counters_.processing_reserve = config_.processing_reserve;
}

buffer_pool::~buffer_pool() {
    const std::lock_guard lock(mutex_);
    // A handle or a waiter outliving its pool would touch freed memory later.
    SLUICE_ASSERT(free_list_.size() == config_.buffer_count);
    SLUICE_ASSERT(processing_waiters_.empty());
    SLUICE_ASSERT(waiters_sources_ == 0);
    SLUICE_ASSERT(admission_waiters_.empty());
}

admission buffer_pool::register_source(source_limits limits) {
    const std::lock_guard lock(mutex_);
    admission answer = decide_admission(limits, held_for_admission());
    ++counters_.registrations_total[static_cast<std::size_t>(answer.status)];
    return answer;
}

admission buffer_pool::decide_admission(source_limits limits, std::uint32_t held) {
    admission answer;
    const std::uint32_t n = config_.buffer_count;
    const std::uint32_t p = config_.processing_reserve;
    const std::uint32_t r = limits.reserve;
    if (r == 0 || limits.cap < r) {
        answer.status = admission_status::invalid_limits;
        answer.message = "registration refused: reserve " + std::to_string(r) + " and cap " +
                         std::to_string(limits.cap) +
                         " are invalid; the reserve must be at least 1 and the cap at least the "
                         "reserve";
    } else if (free_source_indices_.empty()) {
        answer.status = admission_status::registry_full;
        answer.message = "registration refused: all " + std::to_string(config_.sources_max) +
                         " registry slots are in use (" + std::to_string(sources_registered_) +
                         " registered, " + std::to_string(sources_retiring_) +
                         " unregistered with buffers still outstanding); raise sources_max or "
                         "unregister sources";
    } else if (!legacy() && std::uint64_t{reserved_total_} + r + p > n) {
        answer.status = admission_status::overcommitted;
        const std::uint32_t room = n - p - reserved_total_;
        answer.message =
            "registration refused: reserve " + std::to_string(r) + " does not fit: sources hold " +
            std::to_string(reserved_total_) + " reserved buffers, the processing reserve is " +
            std::to_string(p) + ", and the pool has " + std::to_string(n) + " buffers (" +
            std::to_string(reserved_total_) + " + " + std::to_string(r) + " + " +
            std::to_string(p) + " > " + std::to_string(n) + "); lower the reserve to at most " +
            std::to_string(room) + ", raise buffer_count to at least " +
            std::to_string(std::uint64_t{reserved_total_} + r + p) + ", or unregister sources";
    } else if (!legacy() && std::uint64_t{floating()} < std::uint64_t{r} + held) {
        answer.status = admission_status::reserve_lent_out;
        const std::uint32_t unreserved = n - p - reserved_total_;
        answer.message =
            "registration refused for now: reserve " + std::to_string(r) +
            " cannot be guaranteed yet: of the " + std::to_string(unreserved) +
            " buffers not reserved, only " + std::to_string(floating()) +
            " are free; the others are lent to sources and processing above their reserves (" +
            std::to_string(free_list_.size()) + " free, " + std::to_string(owed_) +
            " of them owed to existing reserves)" +
            (admission_waiters_.empty() ? std::string()
                                        : ", and " + std::to_string(admission_waiters_.size()) +
                                              " registrations wait ahead of this one") +
            "; retry after those buffers are released (or wait: async_register_source), or "
            "lower the reserve";
    } else {
        const std::uint32_t index = free_source_indices_.back();
        free_source_indices_.pop_back();
        auto& entry = sources_[index];
        SLUICE_ASSERT(entry.state == slot_state::free);
        SLUICE_ASSERT(entry.outstanding == 0);
        SLUICE_ASSERT(entry.waiters.empty());
        entry.reserve = r;
        entry.guaranteed = r;
        entry.cap = limits.cap;
        entry.state = slot_state::registered;
        reserved_total_ += r;
        owed_ += entry.guaranteed;
        ++sources_registered_;
        answer.status = admission_status::admitted;
        answer.id = source_id{index, entry.generation};
    }
    return answer;
}

void buffer_pool::enqueue_admission(std::unique_ptr<detail::admission_waiter> node) {
    admission answer;
    {
        const std::lock_guard lock(mutex_);
        // Behind every registration already waiting: its own turn holds nothing back.
        answer = admission_waiters_.empty() ? decide_admission(node->limits, 0)
                                            : decide_admission(node->limits, held_for_admission());
        if (answer.status != admission_status::reserve_lent_out) {
            ++counters_.registrations_total[static_cast<std::size_t>(answer.status)];
        } else {
            node->queued = true;
            admission_waiters_.push_back(*node.release()); // owned by the queue until completed
            publish_waiters();
        }
    }
    if (!node) {
        notify_waiting(); // queued: held partial buffers should come back
        return;
    }
    node.release()->complete({}, std::move(answer));
}

void buffer_pool::cancel_admission(detail::admission_waiter& target) {
    completions done;
    {
        const std::lock_guard lock(mutex_);
        if (!target.queued) {
            return; // already answered; its completion is on its way
        }
        const bool was_first = &admission_waiters_.front() == &target;
        admission_waiters_.erase(admission_waiters_.iterator_to(target));
        target.queued = false;
        publish_waiters();
        target.result = decide_admission(target.limits, ~std::uint32_t{0});
        SLUICE_ASSERT(target.result.status != admission_status::admitted);
        ++counters_.registrations_total[static_cast<std::size_t>(target.result.status)];
        ++counters_.admission_waits_aborted_total;
        if (was_first) {
            grant_eligible(done); // what was held back for it is lendable again
        }
    }
    target.complete(boost::asio::error::operation_aborted, std::move(target.result));
    complete(done);
}

detail::admission_guard::~admission_guard() {
    if (pool_ != nullptr) {
        pool_->unregister_source(id_);
    }
}

void buffer_pool::unregister_source(source_id id) {
    detail::waiter_list aborted;
    completions done;
    {
        const std::lock_guard lock(mutex_);
        auto& entry = registered_entry(id.index, id.generation);
        while (!entry.waiters.empty()) {
            auto& target = entry.waiters.front();
            unlink(target);
            target.status = detail::waiter::state::done;
            aborted.push_back(target);
        }
        counters_.waits_aborted_total[0] += aborted.size();
        if (entry.outstanding < entry.guaranteed) {
            owed_ -= entry.guaranteed - entry.outstanding;
        }
        --sources_registered_;
        if (entry.outstanding == 0) {
            free_registry_slot(id.index);
        } else {
            entry.state = slot_state::retiring;
            ++sources_retiring_;
        }
        // The dropped owed reserve became floating: others may now proceed.
        grant_eligible(done);
    }
    complete_all(aborted, boost::asio::error::operation_aborted);
    complete(done);
}

buffer buffer_pool::try_acquire(source_id id) {
    return try_take(id.index, id.generation, true);
}

buffer buffer_pool::try_acquire_processing() {
    return try_take(detail::owner_processing, 0, true);
}

buffer buffer_pool::try_take(std::uint32_t owner, std::uint32_t generation, bool count_failure) {
    const std::lock_guard lock(mutex_);
    if (owner != detail::owner_processing) {
        static_cast<void>(registered_entry(owner, generation)); // asserts the id is registered
    }
    if (!may_take(owner)) {
        if (count_failure) {
            ++counters_.try_acquire_failed_total[requester_index(owner)];
        }
        return {};
    }
    ++counters_.acquired_immediately_total[requester_index(owner)];
    return buffer(take(owner));
}

void buffer_pool::enqueue(std::unique_ptr<detail::waiter> node, std::uint32_t owner,
                          std::uint32_t generation) {
    detail::waiter_list granted;
    bool queued = false;
    {
        const std::lock_guard lock(mutex_);
        node->owner = owner;
        if (may_take(owner)) {
            // A release landed between try_take and here: serve it now, nothing was queued.
            if (owner != detail::owner_processing) {
                static_cast<void>(
                    registered_entry(owner, generation)); // asserts the id is registered
            }
            ++counters_.acquired_immediately_total[requester_index(owner)];
            node->granted_slot = take(owner);
            node->status = detail::waiter::state::done;
            granted.push_back(*node.release());
        } else {
            node->ticket = next_ticket_++;
            node->status = detail::waiter::state::queued;
            if (owner == detail::owner_processing) {
                processing_waiters_.push_back(*node);
            } else {
                auto& entry = registered_entry(owner, generation);
                SLUICE_ASSERT(entry.outstanding >= entry.guaranteed);
                entry.waiters.push_back(*node);
                ++waiters_sources_;
                if (entry.outstanding < entry.cap) {
                    // Waits for a floating buffer; none is free now (may_take failed).
                    float_waiters_.insert(*node);
                    node->in_float_set = true;
                }
            }
            [[maybe_unused]] auto* queued_node =
                node.release(); // the queue owns it until completed
            publish_waiters();
            queued = true;
        }
    }
    complete_all(granted, {});
    if (queued) {
        notify_waiting();
    }
}

void buffer_pool::set_wait_callback(std::function<void()> callback) {
    const std::lock_guard lock(callback_mutex_);
    wait_callback_ = std::move(callback);
}

void buffer_pool::notify_waiting() noexcept {
    const std::lock_guard lock(callback_mutex_);
    if (wait_callback_) {
        try {
            wait_callback_();
        } catch (...) {
            // A wake-up that could not be posted: held partial buffers then go at their flush
            // timeout, which still brings them back.
        }
    }
}

void buffer_pool::abort_processing_waiters() {
    detail::waiter_list aborted;
    {
        const std::lock_guard lock(mutex_);
        while (!processing_waiters_.empty()) {
            auto& target = processing_waiters_.front();
            unlink(target);
            target.status = detail::waiter::state::done;
            ++counters_.waits_aborted_total[1];
            aborted.push_back(target);
        }
    }
    complete_all(aborted, boost::asio::error::operation_aborted);
}

void buffer_pool::cancel(detail::waiter& target) {
    {
        const std::lock_guard lock(mutex_);
        if (target.status != detail::waiter::state::queued) {
            return; // already granted or aborted; its completion is on its way
        }
        unlink(target);
        target.status = detail::waiter::state::done;
        ++counters_.waits_aborted_total[requester_index(target.owner)];
    }
    target.complete(boost::asio::error::operation_aborted, {});
}

void buffer_pool::release(detail::buffer_slot& slot) noexcept {
    completions done;
    detail::waiter_list& granted = done.granted;
    {
        const std::lock_guard lock(mutex_);
        const std::uint32_t owner = slot.owner;
        SLUICE_ASSERT(owner != detail::owner_none); // double release
        slot.owner = detail::owner_none;
        free_list_.push_back(slot.index);
        ++counters_.released_total;
        if (owner == detail::owner_processing) {
            SLUICE_ASSERT(outstanding_processing_ > 0);
            --outstanding_processing_;
            if (outstanding_processing_ < processing_guaranteed_) {
                ++owed_;
            }
        } else {
            auto& entry = sources_[owner];
            SLUICE_ASSERT(entry.state != slot_state::free);
            SLUICE_ASSERT(entry.outstanding > 0);
            const bool was_capped = entry.outstanding >= entry.cap;
            --entry.outstanding;
            --outstanding_sources_;
            if (entry.state == slot_state::registered) {
                if (entry.outstanding < entry.guaranteed) {
                    ++owed_;
                }
                // Back within its reserve: the source's own waiters are served from it.
                while (!entry.waiters.empty() && entry.outstanding < entry.guaranteed) {
                    grant(entry.waiters.front(), granted);
                }
                if (was_capped && entry.outstanding < entry.cap) {
                    // Below its cap again: its waiters now wait for floating buffers.
                    for (auto& w : entry.waiters) {
                        if (!w.in_float_set) {
                            float_waiters_.insert(w);
                            w.in_float_set = true;
                        }
                    }
                }
            } else if (entry.outstanding == 0) {
                --sources_retiring_;
                free_registry_slot(owner);
            }
        }
        grant_eligible(done);
    }
    complete(done);
}

buffer_pool::source_entry& buffer_pool::registered_entry(std::uint32_t index,
                                                         std::uint32_t generation) {
    SLUICE_ASSERT(index < sources_.size());
    auto& entry = sources_[index];
    SLUICE_ASSERT(entry.generation == generation); // stale id of a reused slot
    SLUICE_ASSERT(entry.state == slot_state::registered);
    return entry;
}

const buffer_pool::source_entry* buffer_pool::entry_in_use(source_id id) const {
    if (id.index >= sources_.size()) {
        return nullptr;
    }
    const auto& entry = sources_[id.index];
    if (entry.generation != id.generation || entry.state == slot_state::free) {
        return nullptr;
    }
    return &entry;
}

bool buffer_pool::may_take(std::uint32_t owner) const noexcept {
    if (owner == detail::owner_processing) {
        return outstanding_processing_ < processing_guaranteed_ || floating() >= 1;
    }
    const auto& entry = sources_[owner];
    // `!free_list_.empty()` is implied by the invariant under the sluice policy; the legacy
    // policy can promise more than it has.
    // Above its reserve, not from what is held back for a waiting registration.
    return !free_list_.empty() && (entry.outstanding < entry.guaranteed ||
                                   (entry.outstanding < entry.cap && lendable() >= 1));
}

detail::buffer_slot* buffer_pool::take(std::uint32_t owner) noexcept {
    SLUICE_ASSERT(!free_list_.empty());
    auto& slot = slots_[free_list_.back()];
    free_list_.pop_back();
    SLUICE_ASSERT(slot.owner == detail::owner_none);
    slot.owner = owner;
    slot.size_bytes = 0;
    slot.sequence = 0;
    slot.reason = flush_reason::none;
    slot.discontinuity = false;
    if (owner == detail::owner_processing) {
        if (outstanding_processing_ < processing_guaranteed_) {
            --owed_;
        }
        ++outstanding_processing_;
        slot.origin_id = 0;
    } else {
        auto& entry = sources_[owner];
        if (entry.outstanding < entry.guaranteed) {
            --owed_;
        }
        ++entry.outstanding;
        ++outstanding_sources_;
        slot.origin_id = source_id{owner, entry.generation}.value();
    }
    SLUICE_ASSERT(legacy() || owed_ <= free_list_.size());
    return &slot;
}

void buffer_pool::unlink(detail::waiter& target) noexcept {
    SLUICE_ASSERT(target.status == detail::waiter::state::queued);
    if (target.owner == detail::owner_processing) {
        processing_waiters_.erase(processing_waiters_.iterator_to(target));
        publish_waiters();
        return;
    }
    auto& entry = sources_[target.owner];
    entry.waiters.erase(entry.waiters.iterator_to(target));
    --waiters_sources_;
    publish_waiters();
    if (target.in_float_set) {
        float_waiters_.erase(float_waiters_.iterator_to(target));
        target.in_float_set = false;
    }
}

void buffer_pool::grant(detail::waiter& target, detail::waiter_list& granted) noexcept {
    SLUICE_ASSERT(may_take(target.owner));
    unlink(target);
    target.granted_slot = take(target.owner);
    target.status = detail::waiter::state::done;
    ++counters_.acquired_after_wait_total[requester_index(target.owner)];
    granted.push_back(target);
    if (target.owner != detail::owner_processing) {
        auto& entry = sources_[target.owner];
        if (entry.outstanding == entry.cap) {
            // At its cap: its other waiters no longer compete for floating buffers.
            for (auto& w : entry.waiters) {
                if (w.in_float_set) {
                    float_waiters_.erase(float_waiters_.iterator_to(w));
                    w.in_float_set = false;
                }
            }
        }
    }
}

void buffer_pool::grant_eligible(completions& done) noexcept {
    // Processing first (DESIGN.md §3), then waiting registrations in arrival order, then source
    // waiters below their cap in ticket order, from what the first registration leaves.
    while (!processing_waiters_.empty() && may_take(detail::owner_processing)) {
        grant(processing_waiters_.front(), done.granted);
    }
    while (!admission_waiters_.empty()) {
        auto& first = admission_waiters_.front();
        if (floating() < first.limits.reserve &&
            std::uint64_t{reserved_total_} + first.limits.reserve + config_.processing_reserve <=
                config_.buffer_count &&
            !free_source_indices_.empty()) {
            break; // still waits for its reserve to float
        }
        // Admitted, or refused for a reason waiting cannot cure (the registry filled or the
        // reserves grew meanwhile): it leaves the queue either way.
        admission_waiters_.pop_front();
        first.queued = false;
        first.result = decide_admission(first.limits, 0);
        SLUICE_ASSERT(first.result.status != admission_status::reserve_lent_out);
        ++counters_.registrations_total[static_cast<std::size_t>(first.result.status)];
        if (first.result.admitted()) {
            ++counters_.admitted_after_wait_total;
        }
        done.admitted.push_back(first);
        publish_waiters();
    }
    while (!float_waiters_.empty() && lendable() >= 1) {
        grant(*float_waiters_.begin(), done.granted);
    }
}

void buffer_pool::complete(completions& done) noexcept {
    complete_all(done.granted, {});
    while (!done.admitted.empty()) {
        auto& target = done.admitted.front();
        done.admitted.pop_front();
        target.complete({}, std::move(target.result));
    }
}

void buffer_pool::free_registry_slot(std::uint32_t index) noexcept {
    auto& entry = sources_[index];
    SLUICE_ASSERT(entry.outstanding == 0);
    SLUICE_ASSERT(entry.waiters.empty());
    SLUICE_ASSERT(reserved_total_ >= entry.reserve);
    reserved_total_ -= entry.reserve;
    entry.reserve = 0;
    entry.guaranteed = 0;
    entry.cap = 0;
    entry.state = slot_state::free;
    ++entry.generation;
    free_source_indices_.push_back(index);
}

void buffer_pool::complete_all(detail::waiter_list& done,
                               boost::system::error_code error) noexcept {
    // Completions of one state change are delivered in grant order: processing first, then by
    // ticket (the reference model's order).
    done.sort([](const detail::waiter& a, const detail::waiter& b) {
        const bool a_processing = a.owner == detail::owner_processing;
        const bool b_processing = b.owner == detail::owner_processing;
        if (a_processing != b_processing) {
            return a_processing;
        }
        return a.ticket < b.ticket;
    });
    while (!done.empty()) {
        auto& target = done.front();
        done.pop_front();
        buffer granted = target.granted_slot != nullptr ? buffer(target.granted_slot) : buffer();
        target.complete(error, std::move(granted));
    }
}

std::uint32_t buffer_pool::outstanding(source_id id) const {
    const std::lock_guard lock(mutex_);
    const auto* entry = entry_in_use(id);
    return entry != nullptr ? entry->outstanding : 0;
}

std::uint32_t buffer_pool::waiters(source_id id) const {
    const std::lock_guard lock(mutex_);
    const auto* entry = entry_in_use(id);
    return entry != nullptr ? static_cast<std::uint32_t>(entry->waiters.size()) : 0;
}

source_limits buffer_pool::limits(source_id id) const {
    const std::lock_guard lock(mutex_);
    const auto* entry = entry_in_use(id);
    SLUICE_ASSERT(entry != nullptr);
    return source_limits{entry->reserve, entry->cap};
}

pool_stats buffer_pool::stats() const {
    const std::lock_guard lock(mutex_);
    pool_stats snapshot = counters_;
    snapshot.free = static_cast<std::uint32_t>(free_list_.size());
    snapshot.owed = owed_;
    snapshot.floating = floating();
    snapshot.reserved_sources = reserved_total_;
    snapshot.outstanding_sources = outstanding_sources_;
    snapshot.outstanding_processing = outstanding_processing_;
    snapshot.waiters_sources = waiters_sources_;
    snapshot.waiters_processing = static_cast<std::uint32_t>(processing_waiters_.size());
    snapshot.waiters_admission = static_cast<std::uint32_t>(admission_waiters_.size());
    snapshot.held_for_admission = held_for_admission();
    snapshot.sources_registered = sources_registered_;
    snapshot.sources_retiring = sources_retiring_;
    return snapshot;
}

void buffer_pool::check_accounting() const {
    const std::lock_guard lock(mutex_);
    const auto free = static_cast<std::uint32_t>(free_list_.size());
    SLUICE_ASSERT(std::uint64_t{free} + outstanding_sources_ + outstanding_processing_ ==
                  config_.buffer_count);
    SLUICE_ASSERT(legacy() || free >= owed_);
    SLUICE_ASSERT(processing_waiters_.empty() || floating() == 0);
    SLUICE_ASSERT(float_waiters_.empty() || lendable() == 0);
    SLUICE_ASSERT(admission_waiters_.empty() ||
                  floating() < admission_waiters_.front().limits.reserve);
}

void buffer_pool::check_invariants() const {
    const std::lock_guard lock(mutex_);
    const std::uint32_t n = config_.buffer_count;
    const std::uint32_t p = config_.processing_reserve;
    const auto free = static_cast<std::uint32_t>(free_list_.size());
    // Conservation: every buffer has exactly one owner.
    SLUICE_ASSERT(std::uint64_t{free} + outstanding_sources_ + outstanding_processing_ == n);
    // The reserve invariant (which the legacy policy does not keep: that is its bug).
    SLUICE_ASSERT(legacy() || free >= owed_);
    if (!legacy()) {
        SLUICE_ASSERT(std::uint64_t{reserved_total_} + p <= n);
    }
    SLUICE_ASSERT(std::uint64_t{sources_registered_} + sources_retiring_ +
                      free_source_indices_.size() ==
                  config_.sources_max);
    // Eager granting: nobody waits whose condition holds.
    if (!processing_waiters_.empty()) {
        SLUICE_ASSERT(outstanding_processing_ >= processing_guaranteed_);
        SLUICE_ASSERT(floating() == 0);
    }
    if (!float_waiters_.empty()) {
        SLUICE_ASSERT(lendable() == 0);
    }
    if (!admission_waiters_.empty()) {
        SLUICE_ASSERT(!legacy());
        SLUICE_ASSERT(floating() < admission_waiters_.front().limits.reserve);
    }
    SLUICE_ASSERT(float_waiters_.size() <= waiters_sources_);

#if defined(SLUICE_SLOW_ASSERTS)
    const std::uint32_t pg = processing_guaranteed_;
    std::uint64_t owed = outstanding_processing_ < pg ? pg - outstanding_processing_ : 0;
    std::uint64_t reserved = 0;
    std::uint64_t outstanding = 0;
    std::uint64_t queued = 0;
    std::uint64_t in_float_set = 0;
    std::vector<std::uint32_t> charged(sources_.size(), 0);
    for (std::uint32_t i = 0; i < sources_.size(); ++i) {
        const auto& entry = sources_[i];
        if (entry.state == slot_state::free) {
            SLUICE_ASSERT(entry.outstanding == 0);
            SLUICE_ASSERT(entry.waiters.empty());
            continue;
        }
        reserved += entry.reserve;
        outstanding += entry.outstanding;
        if (entry.state == slot_state::retiring) {
            SLUICE_ASSERT(entry.outstanding > 0);
            SLUICE_ASSERT(entry.waiters.empty());
            continue;
        }
        SLUICE_ASSERT(entry.reserve >= 1);
        SLUICE_ASSERT(entry.reserve <= entry.cap);
        SLUICE_ASSERT(entry.outstanding <= entry.cap);
        SLUICE_ASSERT(entry.guaranteed == entry.reserve);
        if (entry.outstanding < entry.guaranteed) {
            owed += entry.guaranteed - entry.outstanding;
            SLUICE_ASSERT(entry.waiters.empty());
        }
        for (const auto& w : entry.waiters) {
            SLUICE_ASSERT(w.status == detail::waiter::state::queued);
            SLUICE_ASSERT(w.owner == i);
            SLUICE_ASSERT(w.in_float_set == (entry.outstanding < entry.cap));
            ++queued;
            in_float_set += w.in_float_set ? 1 : 0;
        }
    }
    SLUICE_ASSERT(owed == owed_);
    SLUICE_ASSERT(reserved == reserved_total_);
    SLUICE_ASSERT(outstanding == outstanding_sources_);
    SLUICE_ASSERT(queued == waiters_sources_);
    SLUICE_ASSERT(in_float_set == float_waiters_.size());
    std::uint64_t charged_processing = 0;
    std::uint64_t unowned = 0;
    for (const auto& slot : slots_) {
        if (slot.owner == detail::owner_processing) {
            ++charged_processing;
        } else if (slot.owner == detail::owner_none) {
            ++unowned;
        } else {
            SLUICE_ASSERT(slot.owner < sources_.size());
            ++charged[slot.owner];
        }
    }
    SLUICE_ASSERT(charged_processing == outstanding_processing_);
    SLUICE_ASSERT(unowned == free);
    for (std::uint32_t i = 0; i < sources_.size(); ++i) {
        SLUICE_ASSERT(charged[i] == sources_[i].outstanding);
    }
    std::vector<bool> on_free_list(n, false);
    for (const auto index : free_list_) {
        SLUICE_ASSERT(index < n);
        SLUICE_ASSERT(slots_[index].owner == detail::owner_none);
        SLUICE_ASSERT(!on_free_list[index]); // listed twice: a double release slipped through
        on_free_list[index] = true;
    }
#endif
}

} // namespace sluice::runtime
