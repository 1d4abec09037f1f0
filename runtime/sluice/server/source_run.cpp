// One source's run: begun as steps (no coroutine) or in its coroutine, one read pass shared by
// both (read_turn, take_read, after_turn), parking, reconnect supervision, the flush decisions
// around each turn, emit into processing, and the end of the run (EoS, Error or a stop).
#include <algorithm>
#include <exception>
#include <memory>
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
#include "sluice/server/detail/server_parts.hpp"
#include "sluice/server/detail/supervisor.hpp"

namespace sluice::runtime {

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
    counters_.busy_ns[index_of(e.kind)].fetch_add(nanoseconds(turned - now),
                                                  std::memory_order_relaxed);
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
    const bool parked = e.src->park([this, &e](error_code error) {
        const auto kind = index_of(e.kind);
        const auto now = env_.now();
        counters_.parked[kind].fetch_sub(1, std::memory_order_relaxed);
        counters_.idle_ns[kind].fetch_add(nanoseconds(now - e.idle_since),
                                          std::memory_order_relaxed);
        advance(e, error, now); // where it parked; a coroutine only if it must wait
    });
    if (!parked) {
        // It says it would park but cannot: it waits in its coroutine from now on.
        e.cannot_park = true;
        spawn(e, resume{resume::at::wait, {}});
        return;
    }
    // Counted after park returns: the wake never runs before it does.
    counters_.parked[index_of(e.kind)].fetch_add(1, std::memory_order_relaxed);
    counters_.parks.fetch_add(1, std::memory_order_relaxed);
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
            counters_.final_events_lost.fetch_add(1, std::memory_order_relaxed);
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

bool source_server::emit(entry& e, buffer& filled, flush_reason reason) noexcept {
    if (!filled) {
        return true;
    }
    if (filled.size_bytes() == 0) {
        filled.reset(); // nothing to say: the buffer just goes back
        return true;
    }
    const std::uint32_t size = filled.size_bytes();
    const double fill = static_cast<double>(size) / static_cast<double>(filled.capacity_bytes());
    filled.set_origin_id(e.handle);
    filled.set_sequence(e.next_sequence); // consumed only once the buffer is queued
    filled.set_reason(reason);
    filled.set_discontinuity(e.discontinuity_pending);
    // Counted before the buffer is handed on (and taken back if it is not queued): once queued,
    // the sink may see it before this thread runs on, and the counts must not lag behind it.
    counters_.flushes[index_of(reason)].fetch_add(1, std::memory_order_relaxed);
    counters_.buffers_emitted.fetch_add(1, std::memory_order_relaxed);
    const auto uncount = [&] {
        counters_.flushes[index_of(reason)].fetch_sub(1, std::memory_order_relaxed);
        counters_.buffers_emitted.fetch_sub(1, std::memory_order_relaxed);
    };
    bool queued = false;
    try {
        queued = processing_.submit(channel(e), std::move(filled));
    } catch (...) {
        uncount();
        // Out of memory queueing it: the buffer went back to the pool with its bytes, which are
        // lost. The run ends with an Error that says how many (finish); later data would no
        // longer be the contiguous stream the engine expects.
        e.bytes_dropped += size;
        counters_.bytes_dropped.fetch_add(size, std::memory_order_relaxed);
        e.emit_failed = true;
        request_stop(e);
        return false;
    }
    if (!queued) {
        // The sink failed this origin: processing discarded the buffer and sent the Error.
        uncount();
        request_stop(e);
        return false;
    }
    ++e.next_sequence;
    e.discontinuity_pending = false;
    counters_.fill_ratio.observe(fill);
    return true;
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
    counters_.backpressure_waits.fetch_add(1, std::memory_order_relaxed);
    const auto started = env_.now();
    // A source that can refuse what it would read (an HTTP body: 429) bounds the wait; at the
    // bound the wait is aborted as a stop would abort it, and read_loop tells the source.
    const duration bound = e.src->buffer_wait_max();
    const bool bounded = bound != duration::max();
    e.buffer_wait_expired = false;
    // True while this wait is pending: the timer's callback touches the entry only then. A
    // callback that fired as the acquisition completed runs later, maybe during a later wait
    // (it aborted that one) or after the entry is gone.
    std::shared_ptr<bool> pending;
    if (bounded) {
        pending = std::make_shared<bool>(true);
        flush_timer(e).on_expiry(bound, [&e, pending](bool elapsed) {
            if (elapsed && *pending) {
                e.buffer_wait_expired = true;
                e.acquire_cancel.emit(asio::cancellation_type::terminal);
            }
        });
    }
    auto [error, granted] = co_await pool_.async_acquire(
        e.pool_id,
        asio::bind_cancellation_slot(e.acquire_cancel.slot(), asio::as_tuple(asio::use_awaitable)));
    if (bounded) {
        *pending = false;
        flush_timer(e).cancel();
    }
    if (granted) {
        e.buffer_wait_expired = false; // granted just before the bound: it did not expire
    }
    const auto waited = env_.now() - started;
    counters_.backpressured_ns[index_of(e.kind)].fetch_add(nanoseconds(waited),
                                                           std::memory_order_relaxed);
    if (!error) {
        counters_.acquire_wait.observe(std::chrono::duration<double>(waited).count());
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
    if (options_.park_idle && !e.cannot_park && e.src->should_park()) {
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
        counters_.bytes[index_of(e.kind)].fetch_add(r.bytes, std::memory_order_relaxed);
        e.read_since_open = true;
        if (e.owner != nullptr && e.owner->options.idle_timeout.count() > 0) {
            e.last_data_ns.store(env_.now().count(), std::memory_order_relaxed);
        }
        if (r.ends_message) {
            // The source answers for this message once it is queued: queue it now (with
            // whatever earlier bytes the buffer holds; the message's earlier buffers are queued
            // already), then tell it.
            if (emit(e, current, flush_reason::message)) {
                e.src->delivered();
            }
            return !e.stop_requested; // the next read takes a new buffer
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
            counters_.idle_ns[index_of(e.kind)].fetch_add(nanoseconds(env_.now() - idle_since),
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
                    if (std::exchange(e.buffer_wait_expired, false) && !e.stop_requested) {
                        // No buffer within the source's bound: it refuses what it would have
                        // read (429) and the loop waits for readiness again.
                        counters_.buffer_refusals.fetch_add(1, std::memory_order_relaxed);
                        src.buffer_refused();
                    }
                    continue; // the wait was aborted by a stop, or the source refused
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
        counters_.busy_ns[index_of(e.kind)].fetch_add(nanoseconds(env_.now() - busy_since),
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
        counters_.errors[index_of(e.kind)].fetch_add(1, std::memory_order_relaxed);
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
        auto verdict = supervisor(env_, options_)
                           .after_error(e.failures, e.read_since_open, src.reconnects(), reason);
        if (!verdict.reconnect) {
            failure = std::move(verdict.failure);
            break;
        }
        counters_.reconnects.fetch_add(1, std::memory_order_relaxed);
        counters_.reconnects_by_kind[index_of(e.kind)].fetch_add(1, std::memory_order_relaxed);
        src.close();
        const bool elapsed = co_await flush_timer(e).wait_for(verdict.delay);
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
        counters_.queue_failures.fetch_add(1, std::memory_order_relaxed);
        if (failure.empty()) {
            failure = "could not queue a buffer for processing (out of memory); " +
                      std::to_string(e.bytes_dropped) + " bytes read were dropped";
        }
    }
    const bool sink_failed = e.channel && processing::sink_failed(*e.channel);
    e.finished.store(ended || !failure.empty() || sink_failed);
    if (sink_failed) {
        // Processing sent the origin's Error when the sink threw; nothing follows it.
        counters_.failures.fetch_add(1, std::memory_order_relaxed);
        e.final_state = source_state::failed;
    } else if (!failure.empty()) {
        counters_.failures.fetch_add(1, std::memory_order_relaxed);
        processing_.error(channel(e), "source '" + e.name + "': " + failure);
        e.final_state = source_state::failed;
    } else if (ended) {
        counters_.end_of_stream.fetch_add(1, std::memory_order_relaxed);
        processing_.end_of_stream(channel(e));
        e.final_state = source_state::stopped;
    } else {
        e.final_state = source_state::stopped; // the engine asked: neither EoS nor Error
    }
}

} // namespace sluice::runtime
