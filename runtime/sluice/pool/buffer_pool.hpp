#pragma once
/// The buffer pool and its accountant (DESIGN.md §3): one arena allocated at start, a registry of
/// sources with a guaranteed reserve and a cap each, a processing reserve that is never lent to
/// sources, and fair asynchronous waiting when a requester may not take another buffer.
///
/// Rules, in the words the reference model (`model/buffer_pool_model.hpp`) implements:
///
/// - `free + Σ outstanding_i + outstanding_proc = buffer_count`, always.
/// - *owed* is what the pool still owes to reserves:
///   `owed = Σ_active max(0, reserve_i − outstanding_i) + max(0, processing_reserve −
///   outstanding_proc)`. The invariant is `free ≥ owed`; *floating* is `free − owed`.
/// - A source is served at once while `outstanding_i < reserve_i` (its reserve is never lent, so
///   this cannot fail); above its reserve it is served from floating buffers while
///   `outstanding_i < cap_i`; otherwise it waits.
/// - Processing is served at once while `outstanding_proc < processing_reserve`, then from
///   floating buffers (no cap); otherwise it waits.
/// - Waiters are queued in arrival order (a ticket). Whenever the state changes the pool grants,
///   repeatedly, the first waiter whose condition holds, processing waiters before source waiters.
///   Completions of one state change are posted in that order. A new request never barges past
///   a queued waiter whose condition holds, because such a waiter is granted before the lock is
///   released.
/// - Admission: registering a source with reserve r is refused (as a value, not an exception)
///   when `Σ reserve + r + processing_reserve > buffer_count` (*overcommitted*: permanent until
///   the configuration changes), and also when fewer than r buffers are floating right now
///   (*reserve_lent_out*: buffers lent above reserves must come back first; retry later).
///   The second rule is what keeps the invariant true at every step: without it a reserve
///   could be promised while its buffers are lent to another source.
/// - Waiting admission (`async_register_source`): a registration refused only for
///   *reserve_lent_out* is queued instead, in arrival order, and admitted as soon as its reserve
///   is floating. Registrations come before source waiters: while one is queued, the first one's
///   reserve is *held back*, so a source above its reserve is served only from `floating −
///   held` (processing still from `floating`), and a plain `register_source` is refused while
///   any registration waits. Under sustained backpressure every released buffer would otherwise
///   go to the waiting sources and no new source could ever be admitted. The caller bounds the
///   wait by cancelling it.
/// - Unregistering a source aborts its waiters with `operation_aborted`. Its owed reserve is
///   dropped at once (it can no longer acquire), but its reserve stays counted in Σ reserve, and
///   its registry slot stays taken, until its last outstanding buffer is released: only then is
///   the reserve returned to admission.
///
/// Thread-safety: every member function may be called from any thread. One short critical
/// section per call; no callback ever runs under the lock. Wake-ups are delivered by posting the
/// waiter's completion to its associated executor after the lock is released (FLINK-9676).

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/intrusive/list.hpp>
#include <boost/intrusive/set.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/pool/buffer.hpp"

namespace sluice::runtime {

/// Identifies a registered source. The generation makes a stale id (of an unregistered source
/// whose slot was reused) detectable.
struct source_id {
    static constexpr std::uint32_t invalid_index = 0xFFFF'FFFFU;

    std::uint32_t index = invalid_index; ///< registry slot
    std::uint32_t generation = 0;        ///< incremented every time the slot is reused

    /// The id as one number, used as the default origin id of the source's buffers.
    constexpr std::uint64_t value() const noexcept {
        return (std::uint64_t{generation} << 32U) | std::uint64_t{index};
    }
    constexpr bool valid() const noexcept { return index != invalid_index; }
    friend constexpr bool operator==(source_id, source_id) noexcept = default;
};

/// How the pool accounts.
enum class pool_policy : std::uint8_t {
    sluice, ///< reserves, a processing reserve and admission (the rules above)
    /// The old engine's policy, kept only as the simulator's negative control (DESIGN.md §5.8):
    /// each source owns a fixed set of buffers (register it with reserve = cap = K), nothing is
    /// reserved for processing, and registration is never refused for lack of buffers. Enough
    /// sources own every buffer and processing can never get one — problem P2.
    legacy,
};

/// Sizes of the pool, fixed at construction.
struct pool_config {
    std::uint32_t buffer_count = 0;           ///< buffers in the arena
    std::uint32_t buffer_size_bytes = 0;      ///< bytes per buffer
    std::uint32_t processing_reserve = 0;     ///< buffers never lent to sources (≥ 1)
    std::uint32_t sources_max = 0;            ///< registry slots (registered + retiring sources)
    pool_policy policy = pool_policy::sluice; ///< legacy: the simulator's negative control only
    /// Populate the arena's pages at construction (one MADV_POPULATE_WRITE, or a write per page
    /// where the kernel lacks it): the whole arena is resident from the start, and no buffer's
    /// first use faults its pages in on the data path (half of a source's first step when
    /// thousands start at once, bench/RESULTS.md). The simulator turns it off: it never
    /// measures memory, and would pay for it in every run.
    bool prefault = true;

    /// Throws `std::invalid_argument` naming the first key that is out of range and what is
    /// allowed. Called by the pool's constructor.
    void validate() const;
};

/// What a source asks for at registration.
struct source_limits {
    std::uint32_t reserve = 1; ///< buffers guaranteed to the source (≥ 1)
    std::uint32_t cap = 1;     ///< most buffers the source may have outstanding (≥ reserve)
};

/// Outcome of a registration.
enum class admission_status : std::uint8_t {
    admitted,         ///< registered; the id is valid
    invalid_limits,   ///< reserve is 0 or cap < reserve
    registry_full,    ///< `sources_max` slots are taken (registered or retiring)
    overcommitted,    ///< Σ reserve + reserve + processing_reserve > buffer_count
    reserve_lent_out, ///< fewer than `reserve` buffers are floating now; transient
};

/// Number of `admission_status` values, for arrays indexed by status.
inline constexpr std::size_t admission_status_count = 5;

/// Lower-case name of an admission status, as used in metrics labels and logs.
std::string_view to_string(admission_status status) noexcept;

/// The answer to `register_source`: an id when admitted, otherwise a message that states the
/// numbers and what to change.
struct admission {
    admission_status status = admission_status::invalid_limits;
    source_id id;        ///< valid iff admitted
    std::string message; ///< empty iff admitted

    bool admitted() const noexcept { return status == admission_status::admitted; }
};

/// Who asks for a buffer.
enum class requester : std::uint8_t { source, processing };

/// A consistent snapshot of the pool's accounting and its cumulative counters.
struct pool_stats {
    std::uint32_t buffer_count = 0;           ///< capacity of the pool
    std::uint32_t processing_reserve = 0;     ///< buffers never lent to sources
    std::uint32_t free = 0;                   ///< buffers on the free list
    std::uint32_t owed = 0;                   ///< free buffers held back for unused reserves
    std::uint32_t floating = 0;               ///< free − owed: lendable above reserves
    std::uint32_t reserved_sources = 0;       ///< Σ reserve of registered and retiring sources
    std::uint32_t outstanding_sources = 0;    ///< buffers charged to sources
    std::uint32_t outstanding_processing = 0; ///< buffers charged to processing
    std::uint32_t waiters_sources = 0;        ///< suspended source acquisitions
    std::uint32_t waiters_processing = 0;     ///< suspended processing acquisitions
    std::uint32_t waiters_admission = 0;      ///< registrations waiting for their reserve
    std::uint32_t held_for_admission = 0;     ///< floating buffers held back for the first one
    std::uint32_t sources_registered = 0;     ///< sources that may acquire
    std::uint32_t sources_retiring = 0;       ///< unregistered, buffers still outstanding

    std::array<std::uint64_t, admission_status_count> registrations_total{}; ///< by status
    std::array<std::uint64_t, 2> acquired_immediately_total{};               ///< by requester
    std::array<std::uint64_t, 2> acquired_after_wait_total{};                ///< by requester
    std::array<std::uint64_t, 2> try_acquire_failed_total{};                 ///< by requester
    std::array<std::uint64_t, 2> waits_aborted_total{}; ///< cancelled or unregistered
    std::uint64_t admitted_after_wait_total = 0;        ///< registrations admitted from the queue
    std::uint64_t admission_waits_aborted_total = 0;    ///< queued registrations cancelled
    std::uint64_t released_total = 0;                   ///< buffers returned
};

class buffer_pool;

namespace detail {

struct source_list_tag;
struct float_set_tag;

/// A suspended acquisition. Lives from suspension until its completion has run; while queued it
/// is linked into its requester's FIFO and, when it waits for a floating buffer, the float set.
class waiter : public boost::intrusive::list_base_hook<boost::intrusive::tag<source_list_tag>>,
               public boost::intrusive::set_base_hook<boost::intrusive::tag<float_set_tag>> {
public:
    enum class state : std::uint8_t { created, queued, done };

    waiter() = default;
    waiter(const waiter&) = delete;
    waiter& operator=(const waiter&) = delete;
    virtual ~waiter() = default;

    /// Posts the completion (with a buffer on success) to the waiter's executor; the waiter
    /// deletes itself after the handler ran (or was destroyed unrun). Called without the lock.
    virtual void complete(boost::system::error_code error, buffer granted) noexcept = 0;

    std::uint64_t ticket = 0;            ///< arrival order; unique per pool
    std::uint32_t owner = owner_none;    ///< source slot index or `owner_processing`
    state status = state::created;       ///< guarded by the pool mutex
    bool in_float_set = false;           ///< guarded by the pool mutex
    buffer_slot* granted_slot = nullptr; ///< set when granted, under the pool mutex
};

struct waiter_ticket_less {
    bool operator()(const waiter& a, const waiter& b) const noexcept { return a.ticket < b.ticket; }
};

using waiter_list =
    boost::intrusive::list<waiter,
                           boost::intrusive::base_hook<boost::intrusive::list_base_hook<
                               boost::intrusive::tag<source_list_tag>>>,
                           boost::intrusive::constant_time_size<true>>;
using waiter_set = boost::intrusive::set<
    waiter,
    boost::intrusive::base_hook<
        boost::intrusive::set_base_hook<boost::intrusive::tag<float_set_tag>>>,
    boost::intrusive::compare<waiter_ticket_less>, boost::intrusive::constant_time_size<true>>;

/// The waiter for one completion handler type: keeps the handler's executor busy (outstanding
/// work) while suspended, and runs the handler there.
template <typename Handler> class waiter_impl final : public waiter {
public:
    explicit waiter_impl(Handler handler)
        : handler_(std::move(handler)),
          work_(boost::asio::prefer(boost::asio::get_associated_executor(handler_),
                                    boost::asio::execution::outstanding_work.tracked)) {}

    void complete(boost::system::error_code error, buffer granted) noexcept override {
        // Post through an untracked copy: the node's own tracked executor keeps the context
        // busy until the node is freed on the handler's thread; a tracked temporary here would
        // touch the context after the handler may already have run and its owner torn it down.
        auto executor =
            boost::asio::prefer(work_, boost::asio::execution::outstanding_work.untracked);
        boost::asio::post(executor, [self = std::unique_ptr<waiter_impl>(this), error,
                                     granted = std::move(granted)]() mutable {
            // The slot is cleared on the handler's executor, the same one that may emit the
            // cancellation signal, so a signal can never reach a waiter that was freed.
            auto slot = boost::asio::get_associated_cancellation_slot(self->handler_);
            if (slot.is_connected()) {
                slot.clear();
            }
            Handler handler = std::move(self->handler_);
            self.reset();
            std::move(handler)(error, std::move(granted));
        });
    }

    Handler& handler() noexcept { return handler_; }

private:
    using executor_type = boost::asio::associated_executor_t<Handler>;
    using work_type = std::decay_t<decltype(boost::asio::prefer(
        std::declval<executor_type>(), boost::asio::execution::outstanding_work.tracked))>;

    Handler handler_; ///< the caller's completion handler
    work_type work_;  ///< the handler's executor, tracked so its context keeps running
};

struct admission_list_tag;

/// A registration waiting for its reserve (`async_register_source`). Lives from queueing until
/// its completion has run.
class admission_waiter
    : public boost::intrusive::list_base_hook<boost::intrusive::tag<admission_list_tag>> {
public:
    admission_waiter() = default;
    admission_waiter(const admission_waiter&) = delete;
    admission_waiter& operator=(const admission_waiter&) = delete;
    virtual ~admission_waiter() = default;

    /// Posts the completion to the waiter's executor; the waiter deletes itself after the
    /// handler ran. An admitted answer whose handler is destroyed unrun is unregistered, so a
    /// torn-down caller cannot leak a registration. Called without the lock.
    virtual void complete(boost::system::error_code error, admission answer) noexcept = 0;

    source_limits limits; ///< what the registration asks for
    bool queued = false;  ///< guarded by the pool mutex
    admission result;     ///< set when it leaves the queue, under the pool mutex
};

using admission_list =
    boost::intrusive::list<admission_waiter,
                           boost::intrusive::base_hook<boost::intrusive::list_base_hook<
                               boost::intrusive::tag<admission_list_tag>>>,
                           boost::intrusive::constant_time_size<true>>;

/// Unregisters an admitted source unless released: carried by a posted admission completion,
/// so an admission whose handler never runs gives its reserve back.
class admission_guard {
public:
    admission_guard(buffer_pool* pool, source_id id) noexcept : pool_(pool), id_(id) {}
    admission_guard(admission_guard&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), id_(other.id_) {}
    admission_guard(const admission_guard&) = delete;
    admission_guard& operator=(const admission_guard&) = delete;
    admission_guard& operator=(admission_guard&&) = delete;
    ~admission_guard();
    void release() noexcept { pool_ = nullptr; }

private:
    buffer_pool* pool_;
    source_id id_;
};

/// The admission waiter for one completion handler type (as `waiter_impl`).
template <typename Handler> class admission_waiter_impl final : public admission_waiter {
public:
    admission_waiter_impl(Handler handler, buffer_pool* pool)
        : handler_(std::move(handler)), pool_(pool),
          work_(boost::asio::prefer(boost::asio::get_associated_executor(handler_),
                                    boost::asio::execution::outstanding_work.tracked)) {}

    void complete(boost::system::error_code error, admission answer) noexcept override {
        auto executor =
            boost::asio::prefer(work_, boost::asio::execution::outstanding_work.untracked);
        admission_guard guard(answer.admitted() ? pool_ : nullptr, answer.id);
        boost::asio::post(executor, [self = std::unique_ptr<admission_waiter_impl>(this), error,
                                     answer = std::move(answer),
                                     guard = std::move(guard)]() mutable {
            auto slot = boost::asio::get_associated_cancellation_slot(self->handler_);
            if (slot.is_connected()) {
                slot.clear();
            }
            Handler handler = std::move(self->handler_);
            self.reset();
            guard.release();
            std::move(handler)(error, std::move(answer));
        });
    }

    Handler& handler() noexcept { return handler_; }

private:
    using executor_type = boost::asio::associated_executor_t<Handler>;
    using work_type = std::decay_t<decltype(boost::asio::prefer(
        std::declval<executor_type>(), boost::asio::execution::outstanding_work.tracked))>;

    Handler handler_;
    buffer_pool* pool_;
    work_type work_;
};

} // namespace detail

/// The one buffer pool of a worker (see the file comment for the rules).
class buffer_pool final : private detail::slot_owner {
public:
    /// Allocates the arena and the registry. Throws `std::invalid_argument` on a bad config.
    explicit buffer_pool(const pool_config& config);
    buffer_pool(const buffer_pool&) = delete;
    buffer_pool& operator=(const buffer_pool&) = delete;
    /// Requires every buffer returned and no waiter queued (programmer error otherwise).
    ~buffer_pool();

    const pool_config& config() const noexcept { return config_; }

    /// Registers a source. Never throws for a refusal: the answer says why, with the numbers.
    /// Nothing is half-registered: a refused registration changes no state but its counter.
    admission register_source(source_limits limits);

    /// Registers a source, waiting while the only reason to refuse is *reserve_lent_out* (see
    /// the file comment: a waiting registration is served ahead of source waiters). Completion
    /// signature `void(error_code, admission)`, run on the handler's associated executor, never
    /// inline. Other refusals complete at once with their answer and no error. Cancellation (any
    /// type) of a queued registration completes it with `operation_aborted` and the refusal
    /// that holds at that moment (*reserve_lent_out*, with the numbers); the executor that emits
    /// the cancellation must be the handler's. Under the legacy policy it never waits.
    template <typename CompletionToken>
    auto async_register_source(source_limits limits, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, admission)>(
            [this](auto handler, source_limits asked) {
                this->initiate_admission(std::move(handler), asked);
            },
            token, limits);
    }

    /// Unregisters an admitted source. Its queued waiters complete with `operation_aborted`.
    /// Buffers it still holds stay valid and charged to it; the reserve returns to admission when
    /// the last of them is released. Requires a registered id (programmer error otherwise).
    void unregister_source(source_id id);

    /// Takes a buffer for a registered source if one may be taken now; an empty handle otherwise.
    /// Never suspends, never blocks beyond the pool's short critical section.
    buffer try_acquire(source_id id);

    /// Takes a buffer for processing if one may be taken now; an empty handle otherwise.
    buffer try_acquire_processing();

    /// Acquires a buffer for a registered source, suspending until one may be taken.
    /// Completion signature `void(error_code, buffer)`; the handler must have an associated
    /// executor (a coroutine's or `bind_executor`), which runs the completion — never inline.
    /// Cancellation (any type) of a still-queued acquisition completes it with
    /// `operation_aborted` and leaves no trace in the accounting; the executor that emits the
    /// cancellation must be the handler's executor (a single-threaded lane or a strand).
    template <typename CompletionToken> auto async_acquire(source_id id, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, buffer)>(
            [this](auto handler, source_id source) {
                this->initiate(std::move(handler), source.index, source.generation);
            },
            token, id);
    }

    /// Acquires a buffer for processing, suspending until one may be taken. As `async_acquire`.
    template <typename CompletionToken> auto async_acquire_processing(CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, buffer)>(
            [this](auto handler) {
                this->initiate(std::move(handler), detail::owner_processing, 0);
            },
            token);
    }

    /// Completes every suspended processing acquisition with `operation_aborted` (teardown, for
    /// example after the simulator detected a deadlock under the legacy policy).
    void abort_processing_waiters();

    /// Buffers charged to a registered or retiring source.
    std::uint32_t outstanding(source_id id) const;
    /// Suspended acquisitions of a registered source.
    std::uint32_t waiters(source_id id) const;
    /// Limits a registered source was admitted with.
    source_limits limits(source_id id) const;
    /// A consistent snapshot of the accounting and counters.
    pool_stats stats() const;
    /// True when some acquisition or registration is suspended. Lock-free; may be stale by one
    /// state change. The flush policy reads it to flush partial buffers under pressure.
    /// Sequentially consistent, as the store that publishes a new waiter (see the wait callback).
    bool has_waiters() const noexcept {
        return waiters_published_.load(std::memory_order_seq_cst) != 0;
    }
    /// Called (outside the pool's lock, from the thread that asked) each time an acquisition or
    /// a registration is queued to wait, after has_waiters() says so. The server wakes partial
    /// buffers held on its lanes from it. Null to clear; once that returns no call is running.
    void set_wait_callback(std::function<void()> callback);

    /// Asserts conservation and the reserve invariant (see the file comment) and the waiter
    /// queue's consistency; O(sources + buffers) parts under `SLUICE_ASSERT_SLOW`.
    void check_invariants() const;
    /// The O(1) part of check_invariants: conservation, the reserve invariant, eager granting.
    /// Cheap enough for the simulator to call after every step.
    void check_accounting() const;

private:
    enum class slot_state : std::uint8_t { free, registered, retiring };

    /// A registry slot.
    struct source_entry {
        std::uint32_t reserve = 0;     ///< buffers asked for at registration
        std::uint32_t guaranteed = 0;  ///< reserve while registered, 0 once unregistered
        std::uint32_t cap = 0;         ///< most outstanding buffers
        std::uint32_t outstanding = 0; ///< buffers charged to the source
        std::uint32_t generation = 0;  ///< matches `source_id::generation` while in use
        slot_state state = slot_state::free;
        detail::waiter_list waiters; ///< FIFO of this source's suspended acquisitions
    };

    /// Cancellation slot handler of a queued waiter.
    struct canceller {
        buffer_pool* pool;
        detail::waiter* target;
        void operator()(boost::asio::cancellation_type_t /*type*/) const { pool->cancel(*target); }
    };

    /// Cancellation slot handler of a queued registration.
    struct admission_canceller {
        buffer_pool* pool;
        detail::admission_waiter* target;
        void operator()(boost::asio::cancellation_type_t /*type*/) const {
            pool->cancel_admission(*target);
        }
    };

    template <typename Handler> void initiate_admission(Handler&& handler, source_limits limits) {
        using handler_type = std::decay_t<Handler>;
        static_assert(!std::is_same_v<boost::asio::associated_executor_t<handler_type>,
                                      boost::asio::system_executor>,
                      "buffer_pool::async_register_source needs a handler with an associated "
                      "executor (use it from a coroutine, or wrap the handler with bind_executor)");
        auto node = std::make_unique<detail::admission_waiter_impl<handler_type>>(
            std::forward<Handler>(handler), this);
        node->limits = limits;
        auto slot = boost::asio::get_associated_cancellation_slot(node->handler());
        if (slot.is_connected()) {
            slot.template emplace<admission_canceller>(admission_canceller{this, node.get()});
        }
        enqueue_admission(std::move(node));
    }

    template <typename Handler>
    void initiate(Handler&& handler, std::uint32_t owner, std::uint32_t generation) {
        using handler_type = std::decay_t<Handler>;
        static_assert(!std::is_same_v<boost::asio::associated_executor_t<handler_type>,
                                      boost::asio::system_executor>,
                      "buffer_pool::async_acquire needs a handler with an associated executor "
                      "(use it from a coroutine, or wrap the handler with bind_executor)");
        // Fast path without allocation: granted at once, completion posted.
        if (buffer granted = try_take(owner, generation, false)) {
            auto handler_executor = boost::asio::get_associated_executor(handler);
            boost::asio::post(handler_executor,
                              boost::asio::append(std::forward<Handler>(handler),
                                                  boost::system::error_code{}, std::move(granted)));
            return;
        }
        auto node =
            std::make_unique<detail::waiter_impl<handler_type>>(std::forward<Handler>(handler));
        auto slot = boost::asio::get_associated_cancellation_slot(node->handler());
        if (slot.is_connected()) {
            slot.template emplace<canceller>(canceller{this, node.get()});
        }
        enqueue(std::move(node), owner, generation);
    }

    /// try_acquire for either requester (owner is a slot index or `owner_processing`).
    buffer try_take(std::uint32_t owner, std::uint32_t generation, bool count_failure);
    /// Grants at once if allowed (the state may have changed since `try_take`), else queues.
    void enqueue(std::unique_ptr<detail::waiter> node, std::uint32_t owner,
                 std::uint32_t generation);
    /// Removes a queued waiter and completes it with `operation_aborted`; no effect otherwise.
    void cancel(detail::waiter& target);
    /// Admits or refuses at once, or queues (reserve_lent_out under the sluice policy).
    void enqueue_admission(std::unique_ptr<detail::admission_waiter> node);
    /// Removes a queued registration and completes it with `operation_aborted`.
    void cancel_admission(detail::admission_waiter& target);
    /// Returns a buffer; called by `buffer::reset`.
    void release(detail::buffer_slot& slot) noexcept override;

    /// What one state change completes, after the lock is released.
    struct completions {
        detail::waiter_list granted;
        detail::admission_list admitted; ///< registrations that left the queue, in order
    };
    void complete(completions& done) noexcept;

    // Everything below requires `mutex_` held.
    /// The admission answer for `limits` now, with `held` floating buffers not available to it;
    /// registers the source when admitted.
    admission decide_admission(source_limits limits, std::uint32_t held);
    /// Floating buffers held back for the first waiting registration.
    std::uint32_t held_for_admission() const noexcept {
        return admission_waiters_.empty() ? 0 : admission_waiters_.front().limits.reserve;
    }
    /// Floating buffers a source above its reserve may take.
    std::uint32_t lendable() const noexcept {
        const std::uint32_t held = held_for_admission();
        const std::uint32_t f = floating();
        return f > held ? f - held : 0;
    }
    source_entry& registered_entry(std::uint32_t index, std::uint32_t generation);
    /// The slot of a registered or retiring source, or null for a stale or unknown id.
    const source_entry* entry_in_use(source_id id) const;
    bool may_take(std::uint32_t owner) const noexcept;
    detail::buffer_slot* take(std::uint32_t owner) noexcept;
    void grant(detail::waiter& target, detail::waiter_list& granted) noexcept;
    void unlink(detail::waiter& target) noexcept;
    void grant_eligible(completions& done) noexcept;
    void free_registry_slot(std::uint32_t index) noexcept;
    void publish_waiters() noexcept {
        waiters_published_.store(waiters_sources_ +
                                     static_cast<std::uint32_t>(processing_waiters_.size()) +
                                     static_cast<std::uint32_t>(admission_waiters_.size()),
                                 std::memory_order_seq_cst);
    }
    bool legacy() const noexcept { return config_.policy == pool_policy::legacy; }
    std::uint32_t floating() const noexcept {
        const auto free = static_cast<std::uint32_t>(free_list_.size());
        return free > owed_ ? free - owed_ : 0; // saturates: legacy may owe more than it has
    }
    static void complete_all(detail::waiter_list& done, boost::system::error_code error) noexcept;

    pool_config config_; ///< sizes, fixed at construction

    struct arena_deleter {
        void operator()(std::byte* arena) const noexcept;
    };
    std::unique_ptr<std::byte[], arena_deleter> arena_; ///< buffer_count × stride bytes
    std::vector<detail::buffer_slot> slots_;            ///< one descriptor per buffer

    mutable std::mutex mutex_;                       ///< guards everything below
    std::vector<std::uint32_t> free_list_;           ///< indices of free buffers, LIFO
    std::vector<source_entry> sources_;              ///< registry, sources_max slots
    std::vector<std::uint32_t> free_source_indices_; ///< unused registry slots, LIFO
    std::uint32_t reserved_total_ = 0;         ///< Σ reserve of registered and retiring sources
    std::uint32_t owed_ = 0;                   ///< see the file comment; ≤ free_list_.size()
    std::uint32_t outstanding_processing_ = 0; ///< buffers charged to processing
    std::uint32_t processing_guaranteed_ = 0;  ///< processing_reserve, or 0 under legacy
    std::uint32_t outstanding_sources_ = 0;    ///< Σ outstanding of all sources
    std::uint32_t waiters_sources_ = 0;        ///< queued source waiters
    std::uint32_t sources_registered_ = 0;     ///< slots in state registered
    std::uint32_t sources_retiring_ = 0;       ///< slots in state retiring
    std::uint64_t next_ticket_ = 0;            ///< ticket of the next waiter
    detail::waiter_list processing_waiters_;   ///< FIFO of suspended processing acquisitions
    detail::waiter_set float_waiters_;         ///< source waiters below their cap, by ticket
    detail::admission_list admission_waiters_; ///< FIFO of waiting registrations
    pool_stats counters_;                      ///< only the cumulative counters are kept here
    std::atomic<std::uint32_t> waiters_published_{0}; ///< copy of the waiter count, lock-free
    /// Runs the wait callback, if any.
    void notify_waiting() noexcept;
    std::mutex callback_mutex_;           ///< guards wait_callback_ and its calls
    std::function<void()> wait_callback_; ///< see set_wait_callback
};

} // namespace sluice::runtime
