#include "sim/sim_environment.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/source/generator_source.hpp"

namespace sluice::sim {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

/// Waits on the simulator's timer queue; honours per-operation cancellation.
asio::awaitable<error_code> wait_until(sim_environment& env, runtime::executor lane,
                                       time_point deadline, sim_environment::timer_id* current) {
    auto token = asio::as_tuple(asio::use_awaitable);
    auto [error] = co_await asio::async_initiate<decltype(token), void(error_code)>(
        [&env, lane, deadline, current](auto handler) {
            auto slot = asio::get_associated_cancellation_slot(handler);
            const auto id = env.add_timer(deadline, lane, std::move(handler));
            if (current != nullptr) {
                *current = id;
            }
            if (slot.is_connected()) {
                slot.assign([&env, id](asio::cancellation_type_t) { env.cancel_timer(id); });
            }
        },
        token);
    co_return error;
}

class sim_timer final : public runtime::timer {
public:
    sim_timer(sim_environment& env, runtime::executor lane) : env_(env), lane_(std::move(lane)) {}
    ~sim_timer() override { cancel(); }
    asio::awaitable<bool> wait_for(duration delay) override {
        const auto held = state_;
        const auto error = co_await wait_until(
            env_, lane_, env_.now() + std::max(delay, duration{0}), &held->current);
        held->current = 0;
        co_return !error;
    }
    void on_expiry(duration delay, std::function<void(bool)> done) override {
        cancel();
        const std::uint64_t arm = ++state_->arms;
        // The callback holds the state, not the timer: a timer destroyed with a wait armed
        // posts its cancellation, which runs after the timer is gone.
        state_->current =
            env_.add_timer(env_.now() + std::max(delay, duration{0}), lane_,
                           [held = state_, arm, done = std::move(done)](error_code error) {
                               if (arm == held->arms) {
                                   held->current = 0; // not re-armed since: this wait is over
                               }
                               done(!error);
                           });
    }
    void cancel() noexcept override {
        if (state_->current != 0) {
            env_.cancel_timer(state_->current);
            state_->current = 0;
        }
    }

private:
    struct state {
        sim_environment::timer_id current = 0;
        std::uint64_t arms = 0; ///< on_expiry calls, so a late callback never clears a newer wait
    };
    sim_environment& env_;
    runtime::executor lane_;
    std::shared_ptr<state> state_ = std::make_shared<state>();
};

/// Generator-format records arriving in chunks at virtual times, with scripted faults.
class virtual_stream final : public runtime::byte_stream {
public:
    /// Records from `first_record` on; reading begins at byte `offset` of them (a resumed file).
    /// `delivered`, when given, is kept at the first record not yet read whole (a peer's).
    virtual_stream(sim_environment& env, runtime::executor lane, virtual_stream_script script,
                   random_stream random, std::uint64_t first_record = 0, std::uint64_t offset = 0,
                   std::uint64_t* delivered = nullptr)
        : env_(env), lane_(std::move(lane)), script_(script), random_(random),
          delivered_(delivered), writer_{script_.id, first_record} {
        full_bytes_ = runtime::generator_records_bytes(
            script_.id, first_record, script_.records - std::min(first_record, script_.records));
        SLUICE_ASSERT(offset <= full_bytes_);
        seek(offset);
        schedule_next_arrival();
    }
    asio::awaitable<error_code> wait_readable() override {
        for (int rounds = 0; rounds < 1'000'000; ++rounds) {
            if (closed_) {
                co_return asio::error::operation_aborted;
            }
            arrive();
            if (readable() || random_.chance(script_.spurious_wakeup)) {
                co_return error_code{}; // a spurious wake-up makes the next read a zero read
            }
            const auto error = co_await wait_until(env_, lane_, next_arrival_, &waiting_);
            waiting_ = 0;
            if (error) {
                co_return error;
            }
        }
        co_return asio::error::timed_out;
    }
    /// Parks when nothing has arrived by now (the same draws as wait_readable's first round).
    bool should_park() override {
        if (closed_) {
            return false;
        }
        arrive();
        return !readable();
    }
    bool park(runtime::wake_callback wake) override {
        if (closed_ || random_.chance(script_.spurious_wakeup)) {
            const error_code now_error =
                closed_ ? error_code(asio::error::operation_aborted) : error_code{};
            waiting_ = env_.add_timer(env_.now(), lane_,
                                      [this, wake = std::move(wake), now_error](error_code) {
                                          waiting_ = 0;
                                          wake(now_error);
                                      });
            return true;
        }
        wait_for_arrival(std::move(wake));
        return true;
    }
    runtime::read_result read_now(std::span<std::byte> space) override {
        using status = runtime::read_result::status;
        if (closed_) {
            return {status::error, 0, asio::error::operation_aborted};
        }
        arrive();
        if (script_.reset_at_bytes != 0 && consumed_ >= script_.reset_at_bytes) {
            return {status::error, 0, asio::error::connection_reset};
        }
        std::uint64_t limit = arrived_ - consumed_;
        if (script_.reset_at_bytes != 0) {
            limit = std::min(limit, script_.reset_at_bytes - consumed_);
        }
        if (limit == 0) {
            return ended() ? runtime::read_result{status::end_of_stream, 0, {}}
                           : runtime::read_result{status::would_block, 0, {}};
        }
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(limit, space.size()));
        if (script_.short_read_max != 0) {
            n = std::min<std::size_t>(n, 1 + random_.below(script_.short_read_max));
        }
        copy_records(space.first(n));
        consumed_ += n;
        return {status::data, n, {}};
    }
    void close() noexcept override {
        closed_ = true;
        if (waiting_ != 0) {
            env_.cancel_timer(waiting_);
            waiting_ = 0;
        }
    }
    std::string describe() const override { return "virtual stream " + std::to_string(script_.id); }
    runtime::file_identity identity() const override { return identity_; }
    void set_identity(runtime::file_identity identity) noexcept { identity_ = identity; }

private:
    /// A parked wait: timer to timer until something arrives (bounded like wait_readable).
    void wait_for_arrival(runtime::wake_callback wake, int rounds = 0) {
        waiting_ = env_.add_timer(
            next_arrival_, lane_, [this, wake = std::move(wake), rounds](error_code error) mutable {
                waiting_ = 0;
                if (error || closed_) {
                    wake(error ? error : error_code(asio::error::operation_aborted));
                    return;
                }
                arrive();
                if (readable() || random_.chance(script_.spurious_wakeup)) {
                    wake(error_code{});
                } else if (rounds + 1 >= 1'000'000) {
                    wake(asio::error::timed_out);
                } else {
                    wait_for_arrival(std::move(wake), rounds + 1);
                }
            });
    }
    std::uint64_t total_bytes() const {
        return script_.truncate_at_bytes != 0 ? std::min(script_.truncate_at_bytes, full_bytes_)
                                              : full_bytes_;
    }
    bool ended() const { return produced_all_ && consumed_ >= arrived_; }
    bool readable() const {
        return consumed_ < arrived_ || ended() ||
               (script_.reset_at_bytes != 0 && consumed_ >= script_.reset_at_bytes);
    }
    void schedule_next_arrival() {
        next_arrival_ = env_.now() + duration(static_cast<duration::rep>(random_.below(
                                         static_cast<std::uint64_t>(script_.gap_max.count()) + 1)));
    }
    /// Moves data that has arrived by now into `arrived_`.
    void arrive() {
        while (!produced_all_ && env_.now() >= next_arrival_) {
            arrived_ += 1 + random_.below(script_.chunk_bytes_max);
            if (arrived_ >= total_bytes()) {
                arrived_ = total_bytes();
                produced_all_ = true;
            }
            schedule_next_arrival();
        }
    }
    /// Fills `out` with the stream's next bytes, record after record.
    void copy_records(std::span<std::byte> out) {
        std::size_t done = 0;
        while (done < out.size()) {
            if (record_offset_ == record_size_) {
                record_size_ = writer_.write_next(record_);
                record_offset_ = 0;
            }
            const std::size_t n = std::min(record_size_ - record_offset_, out.size() - done);
            std::memcpy(out.data() + done, record_ + record_offset_, n);
            record_offset_ += n;
            done += n;
            if (delivered_ != nullptr && record_offset_ == record_size_) {
                *delivered_ = writer_.next(); // that record was read whole
            }
        }
    }
    /// Positions the stream `offset` bytes in: what arrived and was read before a restart.
    void seek(std::uint64_t offset) {
        while (offset > 0) {
            record_size_ = writer_.write_next(record_);
            record_offset_ =
                static_cast<std::size_t>(std::min<std::uint64_t>(offset, record_size_));
            offset -= record_offset_;
            arrived_ += record_offset_;
        }
        consumed_ = arrived_;
        produced_all_ = arrived_ >= total_bytes();
    }

    sim_environment& env_;
    runtime::executor lane_;
    virtual_stream_script script_;
    random_stream random_;
    std::uint64_t full_bytes_ = 0;
    std::uint64_t arrived_ = 0;
    std::uint64_t consumed_ = 0;
    bool produced_all_ = false;
    bool closed_ = false;
    time_point next_arrival_{};
    sim_environment::timer_id waiting_ = 0;
    char record_[runtime::generator_record_bytes_max]{};
    std::size_t record_size_ = 0;
    std::size_t record_offset_ = 0;
    std::uint64_t* delivered_ = nullptr;
    runtime::file_identity identity_; ///< a virtual file's; zero for a peer's connection
    runtime::generator_record_writer writer_;
};

} // namespace

sim_environment::sim_environment(const sim_options& options)
    : options_(options), root_(options.seed), scheduler_(root_.split(1)), faults_(root_.split(2)),
      workload_(root_.split(3)), environment_random_(root_.split(4)) {
    SLUICE_ASSERT(options_.lanes >= 1);
    SLUICE_ASSERT(options_.compute_workers >= 1);
    SLUICE_ASSERT(options_.blocking_workers >= 1);
    for (std::size_t i = 0; i < options_.lanes; ++i) {
        // Single-threaded by construction: no locking inside the lanes.
        lanes_.push_back(std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE));
    }
    compute_.workers.assign(options_.compute_workers, time_point{0});
    blocking_.workers.assign(options_.blocking_workers, time_point{0});
    // PCT: random distinct priorities for the lanes and the two pools, and d change points.
    const std::size_t candidates = lanes_.size() + 2;
    for (std::size_t i = 0; i < candidates; ++i) {
        pct_priority_.push_back(scheduler_.next() | (1ULL << 63U));
    }
    for (std::uint32_t i = 0; i < options_.pct_depth; ++i) {
        pct_change_steps_.push_back(
            scheduler_.below(std::max<std::uint64_t>(options_.pct_steps_estimate, 1)));
    }
}

sim_environment::~sim_environment() {
    // Drop what is still scheduled before the lanes (their handlers may hold buffers). Pool
    // tasks first: one may hold the last reference to something with a timer (a checkpoint
    // writer's save), whose cancellation needs the timers still there.
    compute_.queue.clear();
    blocking_.queue.clear();
    timer_heap_.clear();
    timer_slots_.clear();
    timer_sequences_.clear();
}

bool sim_environment::inject(runtime::fault_site site) noexcept {
    const double p = fault_probability_[static_cast<std::size_t>(site)];
    return p > 0 && faults_.chance(p);
}

void sim_environment::scheduling_point() noexcept {
    if (interleaving_ || interleave_probability_ <= 0 || !faults_.chance(interleave_probability_)) {
        return;
    }
    interleaving_ = true;
    // What another thread could do meanwhile: a compute task, or a handler of another lane
    // (never this lane's: its handlers do not overlap).
    const std::size_t pick = static_cast<std::size_t>(faults_.below(lanes_.size() + 1));
    bool ran = false;
    if (pick < lanes_.size() && pick != running_lane_) {
        auto& lane = *lanes_[pick];
        if (lane.stopped()) {
            lane.restart();
        }
        ran = lane.poll_one() != 0;
    } else if (pick == lanes_.size()) {
        const std::uint64_t saved = charged_bytes_;
        ran = run_pool(compute_, 0xC1);
        charged_bytes_ = saved;
    }
    if (ran) {
        ++interleavings_;
        mix(0x1A7E + pick);
    }
    interleaving_ = false;
}

void sim_environment::set_fault_probability(runtime::fault_site site, double probability) {
    fault_probability_[static_cast<std::size_t>(site)] = probability;
}

runtime::executor sim_environment::lane_executor(std::size_t index) {
    SLUICE_ASSERT(index < lanes_.size());
    return lanes_[index]->get_executor();
}

std::unique_ptr<runtime::timer> sim_environment::make_timer(const runtime::executor& lane) {
    return std::make_unique<sim_timer>(*this, lane);
}

void sim_environment::post_compute(std::function<void()> work) {
    compute_.queue.push_back(std::move(work));
}

void sim_environment::post_blocking(std::function<void()> work) {
    blocking_.queue.push_back(std::move(work));
}

asio::awaitable<std::pair<error_code, std::unique_ptr<runtime::byte_stream>>>
sim_environment::connect(runtime::executor lane, std::string address, std::uint16_t,
                         duration timeout) {
    using result = std::pair<error_code, std::unique_ptr<runtime::byte_stream>>;
    const auto it = peers_.find(address);
    if (it == peers_.end()) {
        co_return result{asio::error::connection_refused, nullptr};
    }
    // The handshake takes a little virtual time (a stop may land inside it).
    const auto latency =
        std::min(duration(static_cast<duration::rep>(1000 + faults_.below(50'000))), timeout);
    if (const auto error = co_await wait_until(*this, lane, now_ + latency, nullptr)) {
        co_return result{error, nullptr};
    }
    peer_state& peer = it->second;
    if (peer.refusals_left > 0 && faults_.chance(0.3)) {
        --peer.refusals_left;
        co_return result{asio::error::connection_refused, nullptr};
    }
    virtual_stream_script script = peer.script.stream;
    const std::uint64_t first = std::min(peer.next_record, script.records);
    const std::uint64_t bytes =
        runtime::generator_records_bytes(script.id, first, script.records - first);
    script.reset_at_bytes = 0;
    script.truncate_at_bytes = 0;
    if (bytes > 0 && peer.resets_left > 0 && faults_.chance(peer.script.reset_probability)) {
        --peer.resets_left;
        ++peer_resets_;
        script.reset_at_bytes = 1 + faults_.below(bytes); // anywhere, inside a record or not
    }
    ++peer_connections_;
    co_return result{error_code{}, std::make_unique<virtual_stream>(
                                       *this, std::move(lane), script,
                                       workload_.split(script.id ^ (peer_connections_ << 32U)),
                                       first, 0, &peer.next_record)};
}

std::pair<error_code, std::unique_ptr<runtime::stream_listener>>
sim_environment::listen(runtime::executor, const std::string&, std::uint16_t, int) {
    return {asio::error::operation_not_supported, nullptr};
}

std::pair<error_code, std::unique_ptr<runtime::datagram_socket>>
sim_environment::open_udp(runtime::executor, const std::string&, std::uint16_t) {
    return {asio::error::operation_not_supported, nullptr};
}

std::pair<error_code, std::unique_ptr<runtime::byte_stream>>
sim_environment::open_file(runtime::executor lane, const std::string& path, std::uint64_t offset) {
    const auto it = streams_.find(path);
    if (it == streams_.end()) {
        return {asio::error::not_found, nullptr};
    }
    const virtual_stream_script& script = it->second;
    const std::uint64_t length = runtime::generator_records_bytes(script.id, 0, script.records);
    const std::uint64_t shown =
        script.truncate_at_bytes != 0 ? std::min(script.truncate_at_bytes, length) : length;
    if (offset > shown) {
        return {asio::error::invalid_argument, nullptr}; // as production: shorter than the offset
    }
    // Its own random stream per open, salted by the offset, so a reopen is not a replay.
    auto opened = std::make_unique<virtual_stream>(
        *this, std::move(lane), script, workload_.split(script.id ^ (offset << 20U)), 0, offset);
    opened->set_identity({1, script.id + 1, shown}); // one virtual file per path, never replaced
    return {error_code{}, std::move(opened)};
}

void sim_environment::add_virtual_stream(const std::string& path,
                                         const virtual_stream_script& script) {
    streams_[path] = script;
}

void sim_environment::add_virtual_peer(const std::string& name, const virtual_peer_script& script) {
    peers_[name] = peer_state{script, 0, script.resets_max, script.refusals_max};
}

namespace {

/// Heap order: the earliest deadline on top, ties by arming order (std heaps keep the
/// greatest on top, hence "later").
struct fires_later {
    template <typename Entry> bool operator()(const Entry& a, const Entry& b) const noexcept {
        return a.deadline != b.deadline ? a.deadline > b.deadline : a.sequence > b.sequence;
    }
};

} // namespace

sim_environment::timer_id sim_environment::arm(time_point deadline, pending_timer timer) {
    std::uint32_t slot = 0;
    if (free_timer_slots_.empty()) {
        SLUICE_ASSERT(timer_slots_.size() < timer_slots_max);
        slot = static_cast<std::uint32_t>(timer_slots_.size());
        timer_slots_.emplace_back();
        timer_sequences_.push_back(0);
    } else {
        slot = free_timer_slots_.back();
        free_timer_slots_.pop_back();
    }
    SLUICE_ASSERT(!timer_slots_[slot].has_value());
    const std::uint64_t sequence = next_timer_sequence_++;
    SLUICE_ASSERT(sequence < (std::uint64_t{1} << (64U - timer_slot_bits)));
    timer_slots_[slot].emplace(std::move(timer));
    timer_sequences_[slot] = sequence;
    timer_heap_.push_back({deadline, sequence, slot});
    std::push_heap(timer_heap_.begin(), timer_heap_.end(), fires_later{});
    const std::size_t live = timers_pending();
    // Cancelled entries wait in the heap until they reach the top; compact before they can
    // outnumber the live ones (a bound on the heap: at most twice the live timers, plus slack).
    if (timer_heap_.size() > 2 * live + 1024) {
        std::erase_if(timer_heap_, [this](const timer_entry& e) {
            return timer_sequences_[e.slot] != e.sequence;
        });
        std::make_heap(timer_heap_.begin(), timer_heap_.end(), fires_later{});
        SLUICE_ASSERT(timer_heap_.size() == live);
    }
    return (sequence << timer_slot_bits) | slot;
}

sim_environment::pending_timer sim_environment::take_timer(std::uint32_t slot) {
    SLUICE_ASSERT(timer_sequences_[slot] != 0);
    SLUICE_ASSERT(timer_slots_[slot].has_value());
    pending_timer taken(std::move(*timer_slots_[slot]));
    timer_slots_[slot].reset();
    timer_sequences_[slot] = 0;
    free_timer_slots_.push_back(slot);
    return taken;
}

void sim_environment::drop_cancelled_top() {
    while (!timer_heap_.empty() &&
           timer_sequences_[timer_heap_.front().slot] != timer_heap_.front().sequence) {
        std::pop_heap(timer_heap_.begin(), timer_heap_.end(), fires_later{});
        timer_heap_.pop_back();
    }
}

sim_environment::timer_id
sim_environment::add_timer(time_point deadline, runtime::executor lane,
                           asio::any_completion_handler<void(error_code)> done) {
    return arm(deadline, pending_timer{std::move(lane), std::move(done), {}});
}

void sim_environment::at(time_point when, std::function<void()> action) {
    arm(when, pending_timer{{}, {}, std::move(action)});
}

void sim_environment::cancel_timer(timer_id id) {
    const auto slot = static_cast<std::uint32_t>(id & (timer_slots_max - 1));
    const std::uint64_t sequence = id >> timer_slot_bits;
    if (slot >= timer_sequences_.size() || timer_sequences_[slot] != sequence) {
        return; // already fired or cancelled (its slot may hold a newer timer by now)
    }
    auto pending = take_timer(slot);
    if (pending.done) {
        asio::post(pending.lane, asio::append(std::move(pending.done),
                                              error_code(asio::error::operation_aborted)));
    }
}

bool sim_environment::fire_due_timers() {
    bool fired = false;
    for (;;) {
        drop_cancelled_top();
        if (timer_heap_.empty() || timer_heap_.front().deadline > now_) {
            break;
        }
        std::pop_heap(timer_heap_.begin(), timer_heap_.end(), fires_later{});
        const timer_entry due = timer_heap_.back();
        timer_heap_.pop_back();
        // Taken out of its slot before it runs: an action may arm a timer that reuses the slot.
        auto pending = take_timer(due.slot);
        mix(0x7100 ^ due.sequence);
        if (pending.action) {
            pending.action();
        } else {
            asio::post(pending.lane, asio::append(std::move(pending.done), error_code{}));
        }
        fired = true;
    }
    return fired;
}

void sim_environment::mix(std::uint64_t value) noexcept {
    hash_ ^= value + 0x9E3779B97F4A7C15ULL + (hash_ << 6U) + (hash_ >> 2U);
    hash_ *= 0x100000001B3ULL;
}

const std::vector<std::size_t>& sim_environment::order() {
    const std::size_t n = lanes_.size() + 2; // lanes, then compute, then blocking
    std::vector<std::size_t>& result = order_;
    result.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        result[i] = i;
    }
    switch (options_.order) {
    case strategy::fifo:
        std::rotate(result.begin(), result.begin() + static_cast<std::ptrdiff_t>(round_robin_ % n),
                    result.end());
        ++round_robin_;
        break;
    case strategy::random:
        for (std::size_t i = n - 1; i > 0; --i) {
            std::swap(result[i], result[scheduler_.below(i + 1)]);
        }
        break;
    case strategy::pct:
        for (const auto change : pct_change_steps_) {
            if (change == steps_) {
                // Demote the currently highest-priority candidate below everyone.
                const auto top = std::max_element(pct_priority_.begin(), pct_priority_.end());
                *top = scheduler_.below(1ULL << 32U);
            }
        }
        std::sort(result.begin(), result.end(), [&](std::size_t a, std::size_t b) {
            return pct_priority_[a] > pct_priority_[b];
        });
        break;
    }
    return result;
}

bool sim_environment::run_pool(pool_state& pool, std::uint64_t tag) {
    if (pool.queue.empty()) {
        return false;
    }
    const auto free_worker =
        std::find_if(pool.workers.begin(), pool.workers.end(),
                     [&](time_point busy_until) { return busy_until <= now_; });
    if (free_worker == pool.workers.end()) {
        return false;
    }
    auto work = std::move(pool.queue.front());
    pool.queue.pop_front();
    duration cost = options_.compute_cost;
    if (options_.compute_stall_probability > 0 &&
        faults_.chance(options_.compute_stall_probability)) {
        // Heavy tail: Pareto with shape 1.5 scaled by compute_stall, capped at 100×.
        const double u = std::max(faults_.unit(), 1e-9);
        const double factor = std::min(std::pow(u, -1.0 / 1.5), 100.0);
        cost += std::chrono::duration_cast<duration>(options_.compute_stall * factor);
    }
    mix(tag);
    charged_bytes_ = 0;
    work();
    // The task's effects happen now; its worker stays busy for what it cost.
    cost += std::chrono::duration_cast<duration>(std::chrono::duration<double, std::nano>(
        static_cast<double>(charged_bytes_) * options_.compute_ns_per_byte));
    *free_worker = now_ + cost;
    return true;
}

sim_environment::step_result sim_environment::step() {
    fire_due_timers();
    for (const std::size_t candidate : order()) {
        bool ran = false;
        if (candidate < lanes_.size()) {
            auto& lane = *lanes_[candidate];
            if (lane.stopped()) {
                lane.restart();
            }
            running_lane_ = candidate;
            ran = lane.poll_one() != 0;
            running_lane_ = no_lane;
        } else if (candidate == lanes_.size()) {
            ran = run_pool(compute_, 0xC0);
        } else {
            ran = run_pool(blocking_, 0xB1);
        }
        if (ran) {
            ++steps_;
            now_ += options_.step_cost;
            mix(steps_);
            mix(candidate);
            mix(static_cast<std::uint64_t>(now_.count()));
            return step_result::ran;
        }
    }
    // Nothing can run now: jump to the next timer or the next worker to become free.
    time_point next = time_point::max();
    drop_cancelled_top();
    if (!timer_heap_.empty()) {
        next = timer_heap_.front().deadline;
    }
    for (const auto* pool : {&compute_, &blocking_}) {
        if (!pool->queue.empty()) {
            for (const auto busy_until : pool->workers) {
                next = std::min(next, busy_until);
            }
        }
    }
    if (next == time_point::max()) {
        return step_result::idle;
    }
    now_ = std::max(now_, next);
    return step_result::advanced;
}

} // namespace sluice::sim
