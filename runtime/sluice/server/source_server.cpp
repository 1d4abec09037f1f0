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
#include "sluice/server/detail/server_parts.hpp"

namespace sluice::runtime {

static_assert(source_kind_max == processing_kinds_max,
              "one processing counter group per source kind");

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
    processing_.set_processed_callback([this](std::uint64_t origin) { processed(origin); });
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
        counters_.admission_timeouts.fetch_add(1, std::memory_order_relaxed);
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
        counters_.refused.fetch_add(1, std::memory_order_relaxed);
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
        e->handle = next_handle_;
        entries_.emplace(e->handle, std::move(e));
        answer.handle = next_handle_++;
    } catch (...) {
        pool_.unregister_source(admission.id);
        counters_.refused.fetch_add(1, std::memory_order_relaxed);
        throw;
    }
    counters_.admitted.fetch_add(1, std::memory_order_relaxed);
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
            post_close(*l);
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
    processing_.set_processed_callback(nullptr);
    pool_.set_wait_callback(nullptr);
    gate_.wait_empty(); // wakes posted meanwhile
    handles.clear();
    {
        const std::lock_guard lock(mutex_);
        for (const auto& [handle, e] : entries_) {
            handles.push_back(handle);
            if (e->src->tracks_processed()) {
                // Nothing runs now: the final position, whatever a post may have missed.
                e->src->processed(processed_through(*e));
            }
        }
    }
    for (const auto handle : handles) {
        unregister_source(handle);
    }
}

void source_server::processed(std::uint64_t origin) {
    const std::lock_guard lock(mutex_);
    const auto it = entries_.find(origin);
    if (it == entries_.end() || it->second->processed_posted.exchange(true)) {
        return; // gone, or a post already on its way will read the newest position
    }
    entry& e = *it->second;
    if (!gate_.try_enter_unless_drained()) {
        e.processed_posted.store(false);
        return; // shutdown tells the final position
    }
    try {
        asio::post(env_.lane_executor(e.lane_index), [this, origin] {
            tell_processed(origin);
            gate_.leave();
        });
    } catch (...) {
        e.processed_posted.store(false); // the next advance posts again
        gate_.leave();
    }
}

void source_server::tell_processed(source_handle handle) {
    const std::lock_guard lock(mutex_); // against an unregistration on another thread
    const auto it = entries_.find(handle);
    if (it == entries_.end()) {
        return;
    }
    entry& e = *it->second;
    e.processed_posted.store(false);
    try {
        e.src->processed(processed_through(e));
    } catch (...) {
        // A source's bookkeeping failed; its next position is told as usual.
    }
}

const std::shared_ptr<processing::channel>& source_server::channel(entry& e) {
    if (!e.channel) {
        e.channel = processing_.open_channel(e.handle, index_of(e.kind), e.src->tracks_processed());
    }
    return e.channel;
}

std::uint64_t source_server::processed_through(const entry& e) noexcept {
    return e.channel ? processing::processed_through(*e.channel) : 0;
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
    counters_.snapshot_into(s);
    return s;
}

} // namespace sluice::runtime
