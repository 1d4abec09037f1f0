// TCP and HTTP listeners: the accept loop (admission of each connection, bounded waits for its
// reserve, connections_max), the idle sweep (idle_timeout), and restarting a failed loop.
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
#include "sluice/server/detail/server_parts.hpp"
#include "sluice/source/http_source.hpp"
#include "sluice/source/stream_sources.hpp"

namespace sluice::runtime {

std::pair<error_code, std::uint16_t> source_server::add_http_listener(listener_options options,
                                                                      http_options http) {
    if (!options.http) {
        options.http = std::move(http);
    }
    return add_tcp_listener(options);
}

std::pair<error_code, std::uint16_t>
source_server::add_tcp_listener(const listener_options& options) {
    auto l = std::make_unique<listener>();
    l->options = options;
    if (options.tls) {
        try {
            l->tls = std::make_unique<tls_context>(*options.tls, tls_role::server);
        } catch (const std::invalid_argument&) {
            return {asio::error::invalid_argument, 0}; // check_tls names the problem
        }
    }
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

void source_server::post_close(listener& l) {
    asio::post(env_.lane_executor(l.lane_index), [this, raw = &l] {
        raw->closing = true;
        raw->acceptor->close();
        if (raw->idle_sweep) {
            raw->idle_sweep->cancel();
        }
        gate_.leave();
    });
}

bool source_server::close_tcp_listener(const std::string& name) {
    const std::lock_guard lock(mutex_);
    for (auto& l : listeners_) {
        if (l->options.name != name || l->closed_by_engine) {
            continue;
        }
        if (!gate_.try_enter()) {
            return false; // shutting down: shutdown closes it
        }
        l->closed_by_engine = true;
        // The object stays in listeners_ until shutdown: its connections point at it.
        post_close(*l);
        return true;
    }
    return false;
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
                counters_.idle_closed.fetch_add(1, std::memory_order_relaxed);
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
                           counters_.listener_failures.fetch_add(1, std::memory_order_relaxed);
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
            counters_.connections_refused.fetch_add(1, std::memory_order_relaxed);
            consecutive_errors = std::min<std::uint32_t>(consecutive_errors + 1, 10);
            co_await pause->wait_for(std::chrono::milliseconds(10) * consecutive_errors);
            continue;
        }
        consecutive_errors = 0;
        if (l.connections.load(std::memory_order_relaxed) >= l.options.connections_max) {
            stream->close();
            counters_.connections_refused.fetch_add(1, std::memory_order_relaxed);
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
            [this, transport, &l](environment& env,
                                  const executor& on_lane) -> std::unique_ptr<source> {
                std::unique_ptr<byte_stream> connection = std::move(*transport);
                if (l.tls) {
                    connection = l.tls->wrap(env, on_lane, std::move(connection), &counters_.tls);
                }
                if (l.options.http) {
                    return std::make_unique<http_connection_source>(
                        env, std::move(connection), *l.options.http, counters_.http);
                }
                return std::make_unique<stream_source>(source_kind::tcp_connection,
                                                       std::move(connection));
            },
            &l, admitted);
        if (!answer.admitted()) {
            if (*transport) {
                (*transport)->close();
            }
            counters_.connections_refused.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        l.connections.fetch_add(1, std::memory_order_relaxed);
        counters_.accepted.fetch_add(1, std::memory_order_relaxed);
        start(answer.handle);
    }
}

} // namespace sluice::runtime
