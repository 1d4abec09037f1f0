#include "sluice/server/source_server.hpp"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/server/detail/flush_policy.hpp"
#include "sluice/source/stream_sources.hpp"

namespace sluice::runtime {

static_assert(source_kind_max == processing_kinds_max,
              "one processing counter group per source kind");

namespace asio = boost::asio;
using boost::system::error_code;

std::string_view to_string(source_state state) noexcept {
    switch (state) {
    case source_state::registered:
        return "registered";
    case source_state::running:
        return "running";
    case source_state::stopping:
        return "stopping";
    case source_state::stopped:
        return "stopped";
    case source_state::failed:
        return "failed";
    }
    return "unknown";
}

namespace {

std::size_t index_of(flush_reason reason) {
    return static_cast<std::size_t>(reason);
}
std::uint64_t nanoseconds(duration d) {
    return static_cast<std::uint64_t>(std::max<duration::rep>(d.count(), 0));
}
} // namespace

/// A registered source. Its lane and its place among the lane's held partial buffers are the
/// flush policy's part (the base).
struct source_server::entry : flush_policy::client {
    // Ordered by size, small fields together: every registered source has one (10,000 idle
    // connections are 10,000 entries), so its padding is memory per idle source.
    source_handle handle = 0;
    std::string name;         ///< source_options::name, for errors
    duration flush_timeout{}; ///< source_options::flush_timeout
    source_id pool_id;
    std::unique_ptr<source> src;
    std::shared_ptr<processing::channel> channel;
    listener* owner = nullptr; ///< the listener of an accepted connection, else null

    // Touched only on the entry's lane.
    /// Reconnect backoff; made when first needed and dropped when the source parks, so an idle
    /// source holds none. (Flush deadlines are the flush policy's.)
    std::unique_ptr<timer> flush_timer;
    asio::cancellation_signal acquire_cancel; ///< aborts a suspended acquisition at stop
    std::uint64_t next_sequence = 0;          ///< contiguous from 0 across restarts
    time_point partial_since{};               ///< when the held buffer got its first byte
    time_point idle_since{};                  ///< when a parked wait began
    std::uint32_t failures = 0;               ///< consecutive failed opens (kept across parks)
    std::uint32_t bytes_dropped = 0; ///< read, then lost when queueing for processing failed
    source_kind kind = source_kind::generator;
    std::atomic<source_state> state{source_state::registered};
    source_state final_state = source_state::stopped;
    /// Lane-only, except that claim_start resets it (and `failures`) under the registry lock
    /// while the source is not running: no lane touches it then, and the state's store at the
    /// end of the last run and its load in claim_start order the writes.
    bool stop_requested = false;
    bool read_since_open = false; ///< resets the reconnect attempt count
    bool opened_before = false;   ///< a later open is a reopen (lane-only, kept across runs)
    /// The next emitted buffer starts a new stream (see source::continues_after_reopen).
    bool discontinuity_pending = false;
    bool emit_failed = false; ///< a buffer could not be queued: the run ends with an Error
    bool idle_closed = false; ///< its listener closed it for idleness: the run ends with an Error
    /// Accepted connections of a listener with an idle timeout: when data last came (ns of
    /// env.now()), written on the lane, read by the listener's idle sweep.
    std::atomic<std::int64_t> last_data_ns{0};
    /// Ended at end of stream or failed: its origin is closed (EoS/Error was its last event),
    /// so it cannot be started again; unregister it and register anew for a new origin.
    std::atomic<bool> finished{false};
};

struct source_server::listener {
    listener_options options;
    std::size_t lane_index = 0;
    std::unique_ptr<stream_listener> acceptor;
    std::atomic<std::uint32_t> connections{0};
    std::uint64_t accepted = 0;
    std::uint32_t restarts = 0;        ///< accept loops begun again after a failure (lane-only)
    bool closing = false;              ///< lane-only
    std::unique_ptr<timer> idle_sweep; ///< lane-only; while idle_timeout is set
};

struct source_server::loop_end {
    enum class kind : std::uint8_t { stop, end_of_stream, transport_error, park } what = kind::stop;
    error_code error;
};

struct source_server::resume {
    enum class at : std::uint8_t {
        open,    ///< a start: open the source, then read
        wait,    ///< open, nothing held in hand: wait for data (or park), then read
        acquire, ///< open and readable, but no buffer was free: wait for one, then read
        ended,   ///< a step's read loop ended with `end` (a transport error): reconnect or fail
    } where = at::open;
    loop_end end;
};

source_server::source_server(environment& env, buffer_pool& pool, processing& pipeline,
                             const server_options& options)
    : env_(env), pool_(pool), processing_(pipeline), options_(options),
      flush_(std::make_unique<flush_policy>(
          env, pool, pipeline, options_, gate_,
          [this](flush_policy::client& held, buffer& partial, flush_reason reason) {
              emit(static_cast<entry&>(held), partial, reason);
          })) {
    SLUICE_ASSERT(options_.reads_per_turn_max >= 1);
    SLUICE_ASSERT(options_.backoff_initial.count() > 0);
    SLUICE_ASSERT(options_.backoff_max >= options_.backoff_initial);
    if (options_.demand_flush) {
        processing_.set_idle_callback([this] { flush_->wake(flush_reason::demand); });
    }
    // Something waits for a buffer: partial buffers held on the lanes go now (pressure).
    pool_.set_wait_callback([this] { flush_->wake(flush_reason::pressure); });
    // The sink failed an origin: its source stops (finish sees the failure in the channel).
    processing_.set_failure_callback([this](std::uint64_t origin) { stop(origin); });
}

source_server::~source_server() {
    shutdown();
}

std::size_t source_server::pick_lane(std::size_t requested) {
    if (requested != source_options::any_lane) {
        SLUICE_ASSERT(requested < env_.lane_count());
        return requested;
    }
    return next_lane_.fetch_add(1, std::memory_order_relaxed) % env_.lane_count();
}

registration source_server::register_source(const source_options& options,
                                            const source_factory& make) {
    return register_entry(options, make, nullptr);
}

registration source_server::register_entry(const source_options& options,
                                           const source_factory& make, listener* owner) {
    return finish_registration(options, make, owner, pool_.register_source(options.limits));
}

asio::awaitable<registration> source_server::register_source_waiting(source_options options,
                                                                     source_factory make,
                                                                     duration max_wait) {
    // Inside the gate: shutdown waits for the wait and the registration after it.
    if (!gate_.try_enter()) {
        co_return register_entry(options, make, nullptr); // no waiting once shutdown began
    }
    const gate::holder inside(gate_);
    admission admitted = co_await await_admission(options.limits, max_wait);
    co_return finish_registration(options, make, nullptr, admitted);
}

asio::awaitable<admission> source_server::await_admission(source_limits limits, duration max_wait) {
    const auto signal = std::make_shared<asio::cancellation_signal>();
    const executor lane = co_await asio::this_coro::executor;
    {
        // The caller is inside the gate (an accept loop, register_source_waiting). Closed is read
        // under the mutex that shutdown takes after closing to cancel every wait, so a wait is
        // either refused here or cancelled there.
        const std::lock_guard lock(admission_mutex_);
        if (gate_.closed()) {
            co_return pool_.register_source(limits); // no waiting once shutdown began
        }
        admission_waits_.emplace(signal.get(), std::make_pair(signal, lane));
    }
    auto deadline = env_.make_timer(lane);
    // The deadline's callback holds the signal: it may run after this frame is gone, when the
    // admission came first (the slot is cleared by then, so the late emit does nothing).
    deadline->on_expiry(max_wait, [signal](bool expired) {
        if (expired) {
            signal->emit(asio::cancellation_type::terminal);
        }
    });
    auto [error, answer] = co_await pool_.async_register_source(
        limits, asio::bind_cancellation_slot(signal->slot(), asio::as_tuple(asio::use_awaitable)));
    deadline->cancel();
    if (error) {
        admission_timeouts_.fetch_add(1, std::memory_order_relaxed);
        answer.message +=
            " (waited up to " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(max_wait).count()) +
            " ms)";
    }
    {
        const std::lock_guard lock(admission_mutex_);
        admission_waits_.erase(signal.get());
    }
    co_return answer;
}

registration source_server::finish_registration(const source_options& options,
                                                const source_factory& make, listener* owner,
                                                const admission& admission) {
    registration answer;
    answer.status = admission.status;
    if (!admission.admitted()) {
        refused_.fetch_add(1, std::memory_order_relaxed);
        answer.message = "source '" + options.name + "': " + admission.message;
        return answer;
    }
    auto e = std::make_unique<entry>();
    e->name = options.name;
    e->flush_timeout = options.flush_timeout;
    e->pool_id = admission.id;
    e->lane_index = static_cast<std::uint32_t>(pick_lane(options.lane));
    try {
        // Nothing is half-registered: a factory that throws (or memory that runs out here)
        // gives the reserve back before the exception reaches the caller.
        e->src = make(env_, env_.lane_executor(e->lane_index));
        SLUICE_ASSERT(e->src != nullptr);
        e->kind = e->src->kind();
        e->owner = owner;
        if (owner != nullptr) {
            e->last_data_ns.store(env_.now().count(), std::memory_order_relaxed); // idle from now
        }
        const std::lock_guard lock(mutex_);
        e->channel = processing_.open_channel(next_handle_, index_of(e->kind));
        e->handle = next_handle_;
        entries_.emplace(e->handle, std::move(e));
        answer.handle = next_handle_++;
    } catch (...) {
        pool_.unregister_source(admission.id);
        refused_.fetch_add(1, std::memory_order_relaxed);
        throw;
    }
    admitted_.fetch_add(1, std::memory_order_relaxed);
    return answer;
}

source_server::entry* source_server::claim_start(source_handle handle) {
    const auto it = entries_.find(handle);
    if (it == entries_.end()) {
        return nullptr;
    }
    entry* e = it->second.get();
    auto current = e->state.load();
    if (current == source_state::running || current == source_state::stopping ||
        e->finished.load()) {
        return nullptr;
    }
    if (!gate_.try_enter()) {
        return nullptr;
    }
    // Reset here, before the source can be seen running: a stop() from another thread that
    // comes right after this must find the run it stops (no lane touches a source that is not
    // running; the state's store and load order these writes before its lane's next step).
    e->stop_requested = false;
    e->failures = 0;
    e->state.store(source_state::running);
    return e;
}

bool source_server::start(source_handle handle) {
    return start(std::span(&handle, 1)) == 1;
}

std::size_t source_server::start(std::span<const source_handle> handles) {
    std::vector<std::vector<entry*>> by_lane(env_.lane_count());
    std::size_t started = 0;
    {
        const std::lock_guard lock(mutex_);
        for (const auto handle : handles) {
            if (entry* e = claim_start(handle)) {
                by_lane[e->lane_index].push_back(e);
                ++started;
            }
        }
    }
    for (std::size_t lane = 0; lane < by_lane.size(); ++lane) {
        if (by_lane[lane].empty()) {
            continue;
        }
        // Every entry here is running and inside the gate (claim_start), so none can be
        // unregistered and shutdown waits for each. Each first step runs in this handler, so a
        // stop posted after this call comes after the start.
        asio::post(env_.lane_executor(lane), [this, batch = std::move(by_lane[lane])] {
            for (entry* e : batch) {
                advance(*e, std::nullopt, {});
            }
        });
    }
    return started;
}

void source_server::spawn(entry& e, resume from) {
    // A named completion handler (never a bare `detached`): it parks the source, or records how
    // the run ended, counts it, and leaves the gate so shutdown can join.
    asio::co_spawn(env_.lane_executor(e.lane_index), run(e, from),
                   [this, &e](std::exception_ptr failure, bool parked) {
                       run_ended(e, std::move(failure), parked);
                   });
}

void source_server::advance(entry& e, std::optional<error_code> woken, time_point now) {
    try {
        if (woken) {
            step(e, *woken, now);
        } else {
            begin(e);
        }
    } catch (...) {
        // Whatever threw came before the source was handed on (a park, a spawn, its end are
        // each a step's last act): end it with an Error, as a failure inside its coroutine
        // would, rather than let the lane's thread die.
        run_ended(e, std::current_exception(), false);
    }
}

void source_server::begin(entry& e) {
    if (e.stop_requested) {
        // A stop() from another thread landed between start()'s claim and this step: it has
        // closed the source already, which must not be opened again.
        end_loop(e, loop_end{loop_end::kind::stop, {}});
        return;
    }
    // A source that reads into its buffer waits in every read, so it always runs in its
    // coroutine, as does one whose opening waits (a connect).
    const auto open_error =
        e.src->reads_into_buffer() ? std::optional<error_code>{} : e.src->open_now();
    if (!open_error) {
        spawn(e, resume{resume::at::open, {}});
        return;
    }
    if (*open_error) {
        e.read_since_open = false;
        end_loop(e, loop_end{loop_end::kind::transport_error, *open_error});
        return;
    }
    opened(e);
    if (set_down(e, buffer{})) {
        park(e); // idle from the start
        return;
    }
    if (!options_.park_idle) {
        spawn(e, resume{resume::at::wait, {}}); // waits in its coroutine, as every wait does then
        return;
    }
    step(e, error_code{}, env_.now()); // not parking now means data is probably there: read it
}

void source_server::step(entry& e, error_code woken, time_point now) {
    // read_loop's pass after a wait, without a coroutine; see its comments for each part.
    // The step's own times come from three clock reads (`now`, taken at the wake; the turn's
    // end; the idle mark when it parks): there were six, a fifth of a lane's time when 10,000
    // sources start. The source's reads may still read the clock themselves.
    buffer current = flush_->take(e);
    if (e.stop_requested) {
        emit(e, current, flush_reason::stop);
        end_loop(e, loop_end{loop_end::kind::stop, {}});
        return;
    }
    flush_if_due(e, current, now);
    if (woken) {
        emit(e, current, flush_reason::end_of_stream);
        end_loop(e, loop_end{loop_end::kind::transport_error, woken});
        return;
    }
    if (!current) {
        current = try_take(e);
        if (!current) {
            spawn(e, resume{resume::at::acquire, {}}); // backpressure: only a coroutine suspends
            return;
        }
        e.partial_since = now;
    }
    const auto end = read_turn(e, current);
    const auto turned = env_.now();
    busy_ns_[index_of(e.kind)].fetch_add(nanoseconds(turned - now), std::memory_order_relaxed);
    if (end) {
        end_loop(e, *end);
        return;
    }
    after_turn(e, current, false);
    // The next pass's wait: parked again, or (data still there after a full turn) a coroutine
    // that waits for readiness, which also yields the lane.
    flush_if_due(e, current, turned);
    if (set_down(e, std::move(current))) { // idle from here: after the emit and the holding
        park(e);
        return;
    }
    spawn(e, resume{resume::at::wait, {}});
}

void source_server::end_loop(entry& e, const loop_end& end) {
    SLUICE_ASSERT(end.what != loop_end::kind::park);
    if (end.what == loop_end::kind::transport_error) {
        spawn(e, resume{resume::at::ended, end}); // reconnect with backoff, or fail: run decides
        return;
    }
    finish(e, end.what == loop_end::kind::end_of_stream, {});
    run_ended(e, nullptr, false);
}

timer& source_server::flush_timer(entry& e) {
    if (!e.flush_timer) {
        e.flush_timer = env_.make_timer(env_.lane_executor(e.lane_index));
    }
    return *e.flush_timer;
}

void source_server::park(entry& e) {
    // The source stays running and inside the gate; what waits is the source's own readiness
    // operation holding this small callback. A stop closes the source, which ends the wait.
    // Nothing waits on the flush timer now (the coroutine has ended): drop it too.
    e.flush_timer.reset();
    // Two pointers: small enough for std::function's inline storage (no allocation per park).
    e.src->park([this, &e](error_code error) {
        const auto kind = index_of(e.kind);
        const auto now = env_.now();
        parked_[kind].fetch_sub(1, std::memory_order_relaxed);
        idle_ns_[kind].fetch_add(nanoseconds(now - e.idle_since), std::memory_order_relaxed);
        advance(e, error, now); // where it parked; a coroutine only if it must wait
    });
    // Counted after park returns: the wake never runs before it does.
    parked_[index_of(e.kind)].fetch_add(1, std::memory_order_relaxed);
    parks_.fetch_add(1, std::memory_order_relaxed);
}

void source_server::run_ended(entry& e, std::exception_ptr failure, bool parked) {
    if (!failure && parked) {
        // Parked only after the coroutine has fully ended, so a wake can never meet it still
        // unwinding.
        try {
            park(e);
            return;
        } catch (...) {
            failure = std::current_exception();
        }
    }
    if (failure) {
        std::string what = "unknown exception";
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& ex) {
            if (*ex.what() != '\0') {
                what = ex.what();
            }
        } catch (...) {
        }
        try {
            finish(e, false, what);
        } catch (...) {
            // Out of memory for the Error event itself: the origin ends without it.
            final_events_lost_.fetch_add(1, std::memory_order_relaxed);
            e.finished.store(true);
            e.final_state = source_state::failed;
        }
    }
    // Once the state leaves running/stopping another thread may unregister and destroy the
    // entry: everything else first, the state store last, and nothing after it may throw (a
    // caller that catches would end the source a second time).
    if (e.owner != nullptr) {
        // An accepted connection is gone for good: unregister it from a fresh handler on this
        // lane, which runs after this one, so after the state is stored.
        gate_.enter();
        try {
            asio::post(env_.lane_executor(e.lane_index), [this, handle = e.handle] {
                unregister_source(handle);
                gate_.leave();
            });
        } catch (...) {
            gate_.leave(); // out of memory: it stays registered until shutdown unregisters all
        }
    }
    e.state.store(e.final_state);
    gate_.leave();
}

void source_server::stop(source_handle handle) {
    executor lane;
    {
        const std::lock_guard lock(mutex_);
        const auto it = entries_.find(handle);
        if (it == entries_.end()) {
            return;
        }
        entry* e = it->second.get();
        auto expected = source_state::running;
        if (!e->state.compare_exchange_strong(expected, source_state::stopping)) {
            return;
        }
        lane = env_.lane_executor(
            e->lane_index); // under the lock: the entry may go once it is released
        gate_.enter();
    }
    // The handler finds the entry again by handle: the coroutine may end on its own before
    // this runs, after which the entry may be unregistered. Under the registry lock the entry
    // cannot go away; what is done here is short and lane-local.
    asio::post(lane, [this, handle] {
        {
            const std::lock_guard lock(mutex_);
            const auto it = entries_.find(handle);
            if (it != entries_.end()) {
                request_stop(*it->second);
            }
        }
        gate_.leave();
    });
}

void source_server::request_stop(entry& e) noexcept {
    e.stop_requested = true;
    e.acquire_cancel.emit(asio::cancellation_type::terminal);
    if (e.flush_timer) {
        e.flush_timer->cancel();
    }
    e.src->close();
}

void source_server::opened(entry& e) noexcept {
    e.read_since_open = false;
    if (e.opened_before && !e.src->continues_after_reopen()) {
        e.discontinuity_pending = true;
    }
    e.opened_before = true;
}

bool source_server::unregister_source(source_handle handle) {
    std::unique_ptr<entry> removed;
    {
        const std::lock_guard lock(mutex_);
        const auto it = entries_.find(handle);
        if (it == entries_.end()) {
            return false;
        }
        const auto current = it->second->state.load();
        if (current == source_state::running || current == source_state::stopping) {
            return false;
        }
        removed = std::move(it->second);
        entries_.erase(it);
    }
    // Buffers still in processing stay charged to the source; the pool returns its reserve
    // when the last of them is released.
    pool_.unregister_source(removed->pool_id);
    if (removed->owner != nullptr) {
        removed->owner->connections.fetch_sub(1, std::memory_order_relaxed);
    }
    return true;
}

source_state source_server::state(source_handle handle) const {
    const std::lock_guard lock(mutex_);
    const auto it = entries_.find(handle);
    SLUICE_ASSERT(it != entries_.end());
    return it->second->state.load();
}

bool source_server::known(source_handle handle) const {
    const std::lock_guard lock(mutex_);
    return entries_.count(handle) != 0;
}

std::size_t source_server::source_count() const {
    const std::lock_guard lock(mutex_);
    return entries_.size();
}

duration source_server::backoff_delay(std::uint32_t attempt) {
    // Capped exponential backoff with jitter: uniform in [base/2, base].
    duration base = options_.backoff_initial;
    for (std::uint32_t i = 0; i < attempt && base < options_.backoff_max; ++i) {
        base *= 2;
    }
    base = std::min(base, options_.backoff_max);
    const auto half = static_cast<std::uint64_t>(base.count() / 2);
    return duration(static_cast<duration::rep>(half + env_.random_u64() % (half + 1)));
}

void source_server::emit(entry& e, buffer& filled, flush_reason reason) noexcept {
    if (!filled) {
        return;
    }
    if (filled.size_bytes() == 0) {
        filled.reset(); // nothing to say: the buffer just goes back
        return;
    }
    const std::uint32_t size = filled.size_bytes();
    const double fill = static_cast<double>(size) / static_cast<double>(filled.capacity_bytes());
    filled.set_origin_id(e.handle);
    filled.set_sequence(e.next_sequence); // consumed only once the buffer is queued
    filled.set_reason(reason);
    filled.set_discontinuity(e.discontinuity_pending);
    // Counted before the buffer is handed on (and taken back if it is not queued): once queued,
    // the sink may see it before this thread runs on, and the counts must not lag behind it.
    flushes_[index_of(reason)].fetch_add(1, std::memory_order_relaxed);
    buffers_emitted_.fetch_add(1, std::memory_order_relaxed);
    const auto uncount = [&] {
        flushes_[index_of(reason)].fetch_sub(1, std::memory_order_relaxed);
        buffers_emitted_.fetch_sub(1, std::memory_order_relaxed);
    };
    bool queued = false;
    try {
        queued = processing_.submit(e.channel, std::move(filled));
    } catch (...) {
        uncount();
        // Out of memory queueing it: the buffer went back to the pool with its bytes, which are
        // lost. The run ends with an Error that says how many (finish); later data would no
        // longer be the contiguous stream the engine expects.
        e.bytes_dropped += size;
        bytes_dropped_.fetch_add(size, std::memory_order_relaxed);
        e.emit_failed = true;
        request_stop(e);
        return;
    }
    if (!queued) {
        // The sink failed this origin: processing discarded the buffer and sent the Error.
        uncount();
        request_stop(e);
        return;
    }
    ++e.next_sequence;
    e.discontinuity_pending = false;
    fill_ratio_.observe(fill);
}

buffer source_server::try_take(entry& e) {
    if (env_.inject(fault_site::force_acquire_wait)) {
        return {};
    }
    return pool_.try_acquire(e.pool_id);
}

asio::awaitable<buffer> source_server::acquire_wait(entry& e) {
    // Backpressure: this coroutine suspends; no thread blocks. Sources sitting on partial
    // buffers flush them now, so the buffers this one waits for come back.
    // (The pool's wait callback wakes partial holders once this acquisition is queued.)
    backpressure_waits_.fetch_add(1, std::memory_order_relaxed);
    const auto started = env_.now();
    auto [error, granted] = co_await pool_.async_acquire(
        e.pool_id,
        asio::bind_cancellation_slot(e.acquire_cancel.slot(), asio::as_tuple(asio::use_awaitable)));
    const auto waited = env_.now() - started;
    backpressured_ns_[index_of(e.kind)].fetch_add(nanoseconds(waited), std::memory_order_relaxed);
    if (!error) {
        acquire_wait_.observe(std::chrono::duration<double>(waited).count());
    }
    co_return std::move(granted); // empty when a stop aborted the wait
}

void source_server::flush_if_due(entry& e, buffer& current, std::optional<time_point> now) {
    if (current && (now ? *now : env_.now()) - e.partial_since >= e.flush_timeout) {
        emit(e, current, flush_reason::timeout);
    }
}

bool source_server::set_down(entry& e, buffer current) {
    // Idle sources hold no buffer; a partial one waits in the lane's holder heap, where the
    // sweeper at its flush deadline, or a pressure or demand wake-up, emits it without the
    // source.
    if (current) {
        flush_->hold(e, std::move(current),
                     flush_policy::deadline(e.partial_since, e.flush_timeout));
    }
    if (options_.park_idle && e.src->should_park()) {
        e.idle_since = env_.now();
        return true;
    }
    return false;
}

bool source_server::take_read(entry& e, buffer& current, const read_result& r,
                              std::optional<loop_end>& end) {
    switch (r.state) {
    case read_result::status::data:
        current.commit_bytes(static_cast<std::uint32_t>(r.bytes));
        bytes_[index_of(e.kind)].fetch_add(r.bytes, std::memory_order_relaxed);
        e.read_since_open = true;
        if (e.owner != nullptr && e.owner->options.idle_timeout.count() > 0) {
            e.last_data_ns.store(env_.now().count(), std::memory_order_relaxed);
        }
        if (current.full()) {
            emit(e, current, flush_reason::full);
            current = pool_.try_acquire(e.pool_id); // more may be waiting; never suspend here
            if (current) {
                e.partial_since = env_.now();
            }
        }
        return !e.stop_requested;
    case read_result::status::would_block:
        return false;
    case read_result::status::need_space:
        emit(e, current, flush_reason::full);
        return false;
    case read_result::status::end_of_stream:
        emit(e, current, flush_reason::end_of_stream);
        end = loop_end{loop_end::kind::end_of_stream, {}};
        return false;
    case read_result::status::error:
        emit(e, current, flush_reason::end_of_stream);
        end = loop_end{loop_end::kind::transport_error, r.error};
        return false;
    }
    return false;
}

std::optional<source_server::loop_end> source_server::read_turn(entry& e, buffer& current) {
    // Read what is there, a bounded number of times before yielding the lane.
    std::optional<loop_end> end;
    for (std::uint32_t i = 0; i < options_.reads_per_turn_max && current; ++i) {
        if (!take_read(e, current, e.src->read_now(current.free_space()), end)) {
            break;
        }
    }
    return end;
}

void source_server::after_turn(entry& e, buffer& current, bool into_buffer) {
    if (current && current.size_bytes() == 0 && !into_buffer) {
        current.reset(); // a spurious wake-up: hold nothing while idle
    } else if (current) {
        if (flush_->demand_due(current, into_buffer)) {
            emit(e, current, flush_reason::demand); // processing is idle: feed it now
        } else if (pool_.has_waiters()) {
            emit(e, current, flush_reason::pressure);
        } else if (into_buffer) {
            flush_if_due(e, current);
        }
    }
}

asio::awaitable<source_server::loop_end> source_server::read_loop(entry& e, bool wait_for_buffer) {
    auto& src = *e.src;
    const bool into_buffer = src.reads_into_buffer();
    // A source that parked holding a partial buffer continues with it (empty when the sweeper
    // or a wake-up emitted it meanwhile).
    buffer current = flush_->take(e);
    for (;;) {
        if (e.stop_requested) {
            emit(e, current, flush_reason::stop);
            co_return loop_end{loop_end::kind::stop, {}};
        }
        if (!into_buffer) {
            flush_if_due(e, current);
        }
        // Resumed by a step that found the source readable but no buffer free: wait for one.
        const bool readable_without_buffer = std::exchange(wait_for_buffer, false);
        if (!into_buffer && !readable_without_buffer) {
            // Wait for data, or park when the transport says so.
            if (set_down(e, std::move(current))) {
                co_return loop_end{loop_end::kind::park, {}};
            }
            const auto idle_since = env_.now();
            const error_code error = co_await src.wait_readable();
            idle_ns_[index_of(e.kind)].fetch_add(nanoseconds(env_.now() - idle_since),
                                                 std::memory_order_relaxed);
            current = flush_->take(e); // empty when it was emitted meanwhile
            if (e.stop_requested) {
                continue;
            }
            if (error) {
                emit(e, current, flush_reason::end_of_stream);
                co_return loop_end{loop_end::kind::transport_error, error};
            }
        }
        if (!current) {
            if (!readable_without_buffer) {
                current = try_take(e);
            }
            if (!current) {
                current = co_await acquire_wait(e);
                if (!current) {
                    continue; // the wait was aborted by a stop
                }
            }
            e.partial_since = env_.now();
        }
        const auto busy_since = env_.now();
        std::optional<loop_end> end;
        if (into_buffer) {
            // One read a turn: each read may block for as long as the device likes, so the
            // flush decision (demand, pressure, timeout) comes after every read, not after a
            // turn of them, or what was read first would wait for the reads that follow.
            take_read(e, current, co_await src.read_some(current.free_space()), end);
        } else {
            end = read_turn(e, current);
        }
        busy_ns_[index_of(e.kind)].fetch_add(nanoseconds(env_.now() - busy_since),
                                             std::memory_order_relaxed);
        if (end) {
            co_return *end;
        }
        after_turn(e, current, into_buffer);
    }
}

asio::awaitable<bool> source_server::run(entry& e, resume from) {
    auto& src = *e.src;
    std::string failure;
    bool ended = false;
    for (;;) {
        if (e.stop_requested) {
            break;
        }
        loop_end end;
        if (from.where == resume::at::open) {
            e.read_since_open = false;
            const error_code error = co_await src.open();
            if (error) {
                end = loop_end{loop_end::kind::transport_error, error};
            } else {
                opened(e);
                end = co_await read_loop(e, false);
            }
        } else if (from.where == resume::at::ended) {
            end = from.end;
        } else {
            end = co_await read_loop(e, from.where == resume::at::acquire);
        }
        from.where = resume::at::open; // after a failure, the source opens again
        if (end.what == loop_end::kind::park) {
            co_return true; // the completion handler parks it (see run_ended)
        }
        if (end.what == loop_end::kind::stop || e.stop_requested) {
            // Also an end or a failure that the stop caused (a legacy read it interrupted):
            // an engine stop gives neither EoS nor Error.
            break;
        }
        if (end.what == loop_end::kind::end_of_stream) {
            ended = true;
            break;
        }
        if (e.stop_requested) {
            break;
        }
        const error_code error = end.error;
        errors_[index_of(e.kind)].fetch_add(1, std::memory_order_relaxed);
        std::string detail = src.error_detail();
        const std::string reason =
            e.idle_closed
                ? src.describe() + ": closed after " +
                      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         e.owner->options.idle_timeout)
                                         .count()) +
                      " ms without data (the listener's idle_timeout_ms)"
                : src.describe() + ": " + error.message() +
                      (detail.empty() ? "" : " (" + detail + ")");
        if (!src.reconnects()) {
            failure = reason;
            break;
        }
        if (e.read_since_open) {
            e.failures = 0;
        }
        if (++e.failures > options_.reconnect_attempts_max) {
            failure = reason + "; gave up after " + std::to_string(e.failures - 1) + " reconnects";
            break;
        }
        reconnects_.fetch_add(1, std::memory_order_relaxed);
        reconnects_by_kind_[index_of(e.kind)].fetch_add(1, std::memory_order_relaxed);
        src.close();
        const bool elapsed = co_await flush_timer(e).wait_for(backoff_delay(e.failures - 1));
        if (!elapsed && e.stop_requested) {
            break;
        }
    }
    finish(e, ended, failure);
    co_return false;
}

void source_server::finish(entry& e, bool ended, std::string failure) {
    e.src->close();
    // A buffer still held (parked holding a partial one, then stopped or failed): delivered
    // before EoS or Error.
    buffer held = flush_->take(e);
    emit(e, held, ended || !failure.empty() ? flush_reason::end_of_stream : flush_reason::stop);
    if (e.emit_failed) {
        queue_failures_.fetch_add(1, std::memory_order_relaxed);
        if (failure.empty()) {
            failure = "could not queue a buffer for processing (out of memory); " +
                      std::to_string(e.bytes_dropped) + " bytes read were dropped";
        }
    }
    const bool sink_failed = processing::sink_failed(*e.channel);
    e.finished.store(ended || !failure.empty() || sink_failed);
    if (sink_failed) {
        // Processing sent the origin's Error when the sink threw; nothing follows it.
        failures_.fetch_add(1, std::memory_order_relaxed);
        e.final_state = source_state::failed;
    } else if (!failure.empty()) {
        failures_.fetch_add(1, std::memory_order_relaxed);
        processing_.error(e.channel, "source '" + e.name + "': " + failure);
        e.final_state = source_state::failed;
    } else if (ended) {
        end_of_stream_.fetch_add(1, std::memory_order_relaxed);
        processing_.end_of_stream(e.channel);
        e.final_state = source_state::stopped;
    } else {
        e.final_state = source_state::stopped; // the engine asked: neither EoS nor Error
    }
}

std::pair<error_code, std::uint16_t>
source_server::add_tcp_listener(const listener_options& options) {
    auto l = std::make_unique<listener>();
    l->options = options;
    l->lane_index = pick_lane(source_options::any_lane);
    auto [error, acceptor] = env_.listen(env_.lane_executor(l->lane_index), options.address,
                                         options.port, options.backlog);
    if (error) {
        return {error, 0};
    }
    l->acceptor = std::move(acceptor);
    const std::uint16_t port = l->acceptor->port();
    listener* raw = l.get();
    {
        const std::lock_guard lock(mutex_);
        if (!gate_.try_enter()) { // under mutex_, as shutdown's close and its walk of listeners_
            return {asio::error::shut_down, 0};
        }
        listeners_.push_back(std::move(l));
    }
    spawn_accept_loop(*raw);
    if (options.idle_timeout.count() > 0) {
        gate_.enter();
        raw->idle_sweep = env_.make_timer(env_.lane_executor(raw->lane_index));
        asio::co_spawn(env_.lane_executor(raw->lane_index), idle_sweep(*raw),
                       [this](const std::exception_ptr&) { gate_.leave(); });
    }
    return {error_code{}, port};
}

asio::awaitable<void> source_server::idle_sweep(listener& l) {
    // A quarter of the timeout apart (at least 10 ms): a connection is closed between one and
    // one and a quarter timeouts after its last data.
    const duration period =
        std::max<duration>(l.options.idle_timeout / 4, std::chrono::milliseconds(10));
    while (!l.closing) {
        if (!co_await l.idle_sweep->wait_for(period) || l.closing) {
            break;
        }
        const auto cutoff = (env_.now() - l.options.idle_timeout).count();
        std::vector<std::pair<source_handle, std::uint32_t>> idle;
        {
            const std::lock_guard lock(mutex_);
            for (const auto& [handle, e] : entries_) {
                if (e->owner == &l && e->state.load() == source_state::running &&
                    e->last_data_ns.load(std::memory_order_relaxed) < cutoff) {
                    idle.emplace_back(handle, e->lane_index);
                }
            }
        }
        for (const auto& [handle, lane] : idle) {
            gate_.enter();
            asio::post(env_.lane_executor(lane), [this, handle = handle] {
                const gate::holder leave(gate_);
                entry* e = nullptr;
                {
                    const std::lock_guard lock(mutex_);
                    const auto it = entries_.find(handle);
                    e = it != entries_.end() ? it->second.get() : nullptr;
                }
                // On its lane now: it may have read meanwhile, or ended.
                if (e == nullptr || e->idle_closed || e->stop_requested ||
                    e->state.load() != source_state::running) {
                    return;
                }
                if (e->last_data_ns.load(std::memory_order_relaxed) >=
                    (env_.now() - e->owner->options.idle_timeout).count()) {
                    return;
                }
                e->idle_closed = true;
                idle_closed_.fetch_add(1, std::memory_order_relaxed);
                e->src->close(); // its wait ends with an error; the run ends with an Error
            });
        }
    }
}

void source_server::spawn_accept_loop(listener& l) {
    // Inside the gate (taken by the caller) until the loop ends. A loop that ended by an
    // exception is counted and begun again (after a pause, in accept_loop), unless the
    // listener is closing: a listener never stops accepting silently.
    asio::co_spawn(env_.lane_executor(l.lane_index), accept_loop(l),
                   [this, &l](const std::exception_ptr& failure) {
                       if (failure && !l.closing) {
                           listener_failures_.fetch_add(1, std::memory_order_relaxed);
                           ++l.restarts;
                           try {
                               spawn_accept_loop(l);
                               return;
                           } catch (...) {
                               // Cannot even respawn (out of memory): it stays down, counted.
                           }
                       }
                       gate_.leave();
                   });
}

asio::awaitable<void> source_server::accept_loop(listener& l) {
    std::uint32_t consecutive_errors = 0;
    auto pause = env_.make_timer(env_.lane_executor(l.lane_index));
    if (l.restarts > 0) {
        // Begun again after a failure: not at once, so a failure that repeats cannot spin.
        co_await pause->wait_for(std::chrono::milliseconds(10) *
                                 std::min<std::uint32_t>(l.restarts, 100));
        if (l.closing) {
            co_return;
        }
    }
    for (;;) {
        const std::size_t lane = pick_lane(source_options::any_lane);
        auto [error, stream] = co_await l.acceptor->accept(env_.lane_executor(lane));
        if (l.closing || error == asio::error::operation_aborted) {
            break;
        }
        if (error) {
            // Out of descriptors and the like: count, pause (bounded), try again.
            connections_refused_.fetch_add(1, std::memory_order_relaxed);
            consecutive_errors = std::min<std::uint32_t>(consecutive_errors + 1, 10);
            co_await pause->wait_for(std::chrono::milliseconds(10) * consecutive_errors);
            continue;
        }
        consecutive_errors = 0;
        if (l.connections.load(std::memory_order_relaxed) >= l.options.connections_max) {
            stream->close();
            connections_refused_.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        if (env_.inject(fault_site::accept_exception)) {
            stream->close();
            throw std::runtime_error("injected accept fault");
        }
        if (l.options.keepalive_idle.count() > 0) {
            stream->keep_alive(l.options.keepalive_idle, l.options.keepalive_interval,
                               l.options.keepalive_probes);
        }
        auto transport = std::make_shared<std::unique_ptr<byte_stream>>(std::move(stream));
        source_options options;
        options.name = l.options.name + "#" + std::to_string(++l.accepted);
        options.limits = l.options.limits;
        options.flush_timeout = l.options.flush_timeout;
        options.lane = lane;
        // Its own statement: no temporary lives across the suspension (GCC 12 has mishandled
        // temporaries of a full-expression that contains a co_await).
        admission admitted = co_await await_admission(options.limits, l.options.admission_wait);
        const auto answer = finish_registration(
            options,
            [transport](environment&, const executor&) -> std::unique_ptr<source> {
                return std::make_unique<stream_source>(source_kind::tcp_connection,
                                                       std::move(*transport));
            },
            &l, admitted);
        if (!answer.admitted()) {
            if (*transport) {
                (*transport)->close();
            }
            connections_refused_.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        l.connections.fetch_add(1, std::memory_order_relaxed);
        accepted_.fetch_add(1, std::memory_order_relaxed);
        start(answer.handle);
    }
}

void source_server::cancel_admission_waits() {
    const std::lock_guard lock(admission_mutex_);
    for (const auto& [key, wait] : admission_waits_) {
        // On the waiter's lane, as the pool requires; a wait that ended meanwhile ignores it.
        asio::post(wait.second,
                   [signal = wait.first] { signal->emit(asio::cancellation_type::terminal); });
    }
}

void source_server::shutdown() {
    std::vector<source_handle> handles;
    {
        const std::lock_guard lock(mutex_);
        if (!gate_.close()) { // no new starts, listeners or coroutines from here
            return;
        }
        for (const auto& [handle, e] : entries_) {
            handles.push_back(handle);
        }
        for (auto& l : listeners_) {
            gate_.enter();
            asio::post(env_.lane_executor(l->lane_index), [this, raw = l.get()] {
                raw->closing = true;
                raw->acceptor->close();
                if (raw->idle_sweep) {
                    raw->idle_sweep->cancel();
                }
                gate_.leave();
            });
        }
        cancel_admission_waits();
    }
    for (const auto handle : handles) {
        stop(handle);
    }
    gate_.wait_empty();
    processing_.wait_idle();
    processing_.set_idle_callback(nullptr);
    processing_.set_failure_callback(nullptr);
    pool_.set_wait_callback(nullptr);
    gate_.wait_empty(); // wakes posted meanwhile
    handles.clear();
    {
        const std::lock_guard lock(mutex_);
        for (const auto& [handle, e] : entries_) {
            handles.push_back(handle);
        }
    }
    for (const auto handle : handles) {
        unregister_source(handle);
    }
}

std::string source_server::check_wakeups() const {
    return flush_->check_wakeups();
}

bool source_server::quiescent() const {
    return gate_.empty();
}

server_stats source_server::stats() const {
    server_stats s;
    {
        const std::lock_guard lock(mutex_);
        for (const auto& [handle, e] : entries_) {
            const auto state = static_cast<std::size_t>(e->state.load());
            ++s.sources_by_state[state];
            ++s.sources_by_kind_state[index_of(e->kind)][state];
        }
    }
    for (std::size_t i = 0; i < source_kind_max; ++i) {
        s.reconnects_by_kind[i] = reconnects_by_kind_[i].load(std::memory_order_relaxed);
        s.busy_seconds[i] = static_cast<double>(busy_ns_[i].load(std::memory_order_relaxed)) / 1e9;
        s.idle_seconds[i] = static_cast<double>(idle_ns_[i].load(std::memory_order_relaxed)) / 1e9;
        s.backpressured_seconds[i] =
            static_cast<double>(backpressured_ns_[i].load(std::memory_order_relaxed)) / 1e9;
        s.parked_by_kind[i] = parked_[i].load(std::memory_order_relaxed);
    }
    s.acquire_wait_seconds = acquire_wait_.snapshot();
    s.flush_fill_ratio = fill_ratio_.snapshot();
    for (std::size_t i = 0; i < flush_reason_count; ++i) {
        s.flushes_total[i] = flushes_[i].load(std::memory_order_relaxed);
    }
    for (std::size_t i = 0; i < source_kind_max; ++i) {
        s.bytes_total[i] = bytes_[i].load(std::memory_order_relaxed);
        s.errors_total[i] = errors_[i].load(std::memory_order_relaxed);
    }
    s.buffers_emitted_total = buffers_emitted_.load(std::memory_order_relaxed);
    s.backpressure_waits_total = backpressure_waits_.load(std::memory_order_relaxed);
    s.reconnects_total = reconnects_.load(std::memory_order_relaxed);
    s.parks_total = parks_.load(std::memory_order_relaxed);
    s.registrations_admitted_total = admitted_.load(std::memory_order_relaxed);
    s.registrations_refused_total = refused_.load(std::memory_order_relaxed);
    s.connections_accepted_total = accepted_.load(std::memory_order_relaxed);
    s.connections_refused_total = connections_refused_.load(std::memory_order_relaxed);
    s.end_of_stream_total = end_of_stream_.load(std::memory_order_relaxed);
    s.bytes_dropped_total = bytes_dropped_.load(std::memory_order_relaxed);
    s.listener_failures_total = listener_failures_.load(std::memory_order_relaxed);
    s.admission_waits_timed_out_total = admission_timeouts_.load(std::memory_order_relaxed);
    s.connections_closed_idle_total = idle_closed_.load(std::memory_order_relaxed);
    s.queue_failures_total = queue_failures_.load(std::memory_order_relaxed);
    s.final_events_lost_total = final_events_lost_.load(std::memory_order_relaxed);
    s.failures_total = failures_.load(std::memory_order_relaxed);
    return s;
}

} // namespace sluice::runtime
