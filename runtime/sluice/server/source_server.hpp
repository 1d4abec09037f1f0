#pragma once
/// The source server (DESIGN.md §3): the registry of sources and their state machines, one
/// coroutine per running source on its I/O lane, buffers from the accountant, the flush policy,
/// supervision (reconnect with capped exponential backoff and jitter), TCP listeners, and the
/// emit path into processing. The server owns every coroutine it starts and joins them all in
/// `shutdown()`; none outlives it.
///
/// Parking (server_options::park_idle): a running source that is idle — no buffer held, its
/// transport drained — ends its coroutine and waits as the transport's own readiness operation
/// (a TCP stream's watch in its lane's poller, a UDP socket's async_wait, a timer) holding a
/// small callback. Readiness runs one read turn in
/// that callback (a step) and parks again; the coroutine is spawned again only when the source
/// must wait inside a turn (backpressure, a reconnect) or data is still there after a full turn.
/// A source that opens without waiting starts the same way. DESIGN.md says one coroutine per
/// source; an idle one is instead one pending operation because its suspended coroutine chain
/// would be most of an idle source's memory (bench/RESULTS.md has the figures), and a respawn
/// per wake-up would be a large share of the simulator's time. Ownership
/// is unchanged: a parked or stepping source stays inside the server's gate, a stop closes its
/// transport (which ends the wait), and shutdown joins it like any coroutine.
///
/// Flush deadlines: a source holding a partial buffer hands it to the flush policy while it
/// waits (or parks) for more data; the policy hands it back to `emit` when it is due
/// (server/detail/flush_policy.hpp).
///
/// Events to the engine's sink follow NebulaStream: Data buffers carry the source's origin id
/// and contiguous sequence numbers from 0; end of stream gives EoS after the data; a failure
/// gives Error after the data read so far; a stop the engine asked for gives neither.
///
/// Thread-safety: `register_source`, `start`, `stop`, `unregister_source`, `state`, `stats`,
/// `add_tcp_listener` and `close_tcp_listener` may be called from any thread, including lanes.
/// `shutdown` blocks and must not be called from a lane or a compute thread.

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include "sluice/core/gate.hpp"
#include "sluice/core/histogram.hpp"
#include "sluice/env/environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/server_stats.hpp"
#include "sluice/source/http_source.hpp"
#include "sluice/source/source.hpp"
#include "sluice/tls/tls.hpp"

namespace sluice::runtime {

class flush_policy;

std::string_view to_string(source_state state) noexcept;

/// Server-wide settings.
struct server_options {
    duration backoff_initial = std::chrono::milliseconds(100); ///< first reconnect delay
    duration backoff_max = std::chrono::seconds(5);            ///< cap of the delay
    std::uint32_t reconnect_attempts_max = 100; ///< consecutive failures before Error
    std::uint32_t reads_per_turn_max = 16;      ///< reads of one source before it yields its lane
    /// Flush a partial buffer as soon as processing is idle (low latency at light load). Off,
    /// partial buffers wait for full, pressure or the flush timeout — the comparison the
    /// latency benchmark makes.
    bool demand_flush = true;
    /// A demand flush of fewer bytes than this waits until the buffer ends a record (newline
    /// framing: its last byte is '\n'); until then the flush timeout or pressure flushes it. A
    /// trickle (a byte per read) then costs a buffer and a compute task per record, not per
    /// read, and a small whole record still goes at once. (Length-prefixed framing: no
    /// minimum, the server cannot tell where its records end.) 1: every read.
    std::uint32_t demand_flush_min_bytes = 64;
    /// Idle sources that can (TCP, UDP, rate-limited generators) wait as a pending readiness
    /// operation instead of a suspended coroutine chain: their coroutine ends and is spawned
    /// again when data comes, so an idle source costs about 1 KiB less. Off, every idle source
    /// waits inside its coroutine (the comparison the memory benchmark makes).
    bool park_idle = true;
};

/// Per-source settings given at registration.
struct source_options {
    std::string name;                                       ///< for logs and errors
    source_limits limits{1, 4};                             ///< reserve and cap in buffers
    duration flush_timeout = std::chrono::milliseconds(50); ///< longest a partial buffer waits
    std::size_t lane = any_lane;                            ///< I/O lane; any_lane = round-robin
    static constexpr std::size_t any_lane = ~std::size_t{0};
};

using source_handle = std::uint64_t; ///< assigned by the server, from 1; also the origin id

/// The answer to `register_source`.
struct registration {
    admission_status status = admission_status::invalid_limits;
    source_handle handle = 0; ///< valid (≥ 1) iff admitted
    std::string message;      ///< why not, with the numbers; empty iff admitted
    bool admitted() const noexcept { return status == admission_status::admitted; }
};

/// A TCP listener: every accepted connection becomes a `tcp_connection` source that is
/// unregistered when it ends.
struct listener_options {
    std::string name = "listener";
    std::string address = "127.0.0.1";    ///< loopback unless configured (secure default)
    std::uint16_t port = 0;               ///< 0 = any free port
    std::uint32_t connections_max = 1024; ///< further connections are refused and counted
    source_limits limits{1, 4};
    duration flush_timeout = std::chrono::milliseconds(50);
    int backlog = 1024;
    /// A connection accepted while the pool's buffers are lent out above reserves waits this
    /// long for its reserve (ahead of sources waiting above theirs) before it is refused and
    /// counted; the accept loop waits with it, so later connections queue in the backlog.
    duration admission_wait = std::chrono::milliseconds(1000);
    /// A connection that sends nothing for this long is closed, counted, and its origin ends
    /// with an Error saying so (frees connections_max from idle peers). 0: never.
    duration idle_timeout{0};
    /// TCP keepalive on accepted connections, so a peer that vanished (half-open) is found and
    /// its connection ends: idle time before the first probe (0: off), between probes, probes.
    std::chrono::seconds keepalive_idle{60};
    std::chrono::seconds keepalive_interval{10};
    int keepalive_probes = 5;
    /// Set: an HTTP listener (add_http_listener): every connection is an `http_connection`
    /// source whose request bodies are its bytes.
    std::optional<http_options> http;
    /// Set: connections speak TLS (sluice/tls/tls.hpp); a bad setting makes add_tcp_listener
    /// fail with invalid_argument (check_tls says why).
    std::optional<tls_options> tls;
};

class source_server final {
public:
    /// Makes the source object on the lane it will run on.
    using source_factory = std::function<std::unique_ptr<source>(environment&, const executor&)>;

    source_server(environment& env, buffer_pool& pool, processing& pipeline,
                  const server_options& options);
    source_server(const source_server&) = delete;
    source_server& operator=(const source_server&) = delete;
    /// Calls `shutdown()`.
    ~source_server();

    /// Registers a source with the pool's admission. Refusal is a value with the message;
    /// nothing is half-registered: an exception from `make` reaches the caller after the
    /// admission is undone.
    registration register_source(const source_options& options, const source_factory& make);
    /// As `register_source`, but a registration refused only because the pool's buffers are
    /// lent out (*reserve_lent_out*) waits for its reserve, up to `max_wait`, ahead of sources
    /// waiting above their reserves (buffer_pool::async_register_source). Run it on a lane of
    /// the server's environment; it resumes there. A shutdown ends the wait as a refusal.
    boost::asio::awaitable<registration>
    register_source_waiting(source_options options, source_factory make, duration max_wait);
    /// Starts a registered source, or restarts one the engine stopped. False when it is running
    /// or stopping, unknown, or finished: a source that reached end of stream or failed has sent
    /// its last event (EoS or Error) on its origin; unregister it and register a new one.
    bool start(source_handle handle);
    /// Starts many at once (a worker's configured sources, a restart of all): one posted
    /// handler per lane spawns that lane's sources there, instead of a post from this thread per
    /// source. Returns how many started; each one not started is refused as by `start`.
    std::size_t start(std::span<const source_handle> handles);
    /// Asks a running source to stop: its partial buffer is flushed (reason stop), then it is
    /// stopped; no EoS and no Error. Asynchronous; no effect unless running.
    void stop(source_handle handle);
    /// Unregisters a source that is not running or stopping. False otherwise.
    bool unregister_source(source_handle handle);
    /// The source's state; `std::nullopt`-like `failed` for unknown handles is avoided: unknown
    /// handles return false from `known`.
    source_state state(source_handle handle) const;
    bool known(source_handle handle) const;

    /// Opens a TCP listener on a lane. Returns the bound port, or an error value.
    std::pair<boost::system::error_code, std::uint16_t>
    add_tcp_listener(const listener_options& options);
    /// Opens an HTTP listener (`options.http` set, to `http` when given): as add_tcp_listener,
    /// and every connection is an HTTP source (source/http_source.hpp).
    std::pair<boost::system::error_code, std::uint16_t> add_http_listener(listener_options options,
                                                                          http_options http = {});
    /// Closes the open listener named `name` (a reload removed it): it accepts no more
    /// connections and its port is free once the lane has run the close (asynchronous); its
    /// connections go on until they end. False when no open listener has that name.
    bool close_tcp_listener(const std::string& name);

    /// Stops listeners and every source, waits for every coroutine to end and for processing to
    /// drain, and unregisters every source. Idempotent.
    void shutdown();

    server_stats stats() const;
    /// `stats().parks_total` without the rest: stats() counts sources by state, a walk over
    /// every source under the registry lock, too much for a poller (a bench waiting for 10,000
    /// sources to park polls every millisecond).
    std::uint64_t parks_total() const noexcept {
        return counters_.parks.load(std::memory_order_relaxed);
    }
    std::size_t source_count() const;
    /// True when no coroutine of the server runs and no handler of it is posted: `shutdown`
    /// would not wait. The simulator steps its lanes until this holds before calling it.
    bool quiescent() const;
    /// Empty, or the lost wake-up found: a lane holds partial buffers while processing is idle
    /// (demand flush on) or acquisitions wait, and no wake-up of that kind is pending for it.
    /// For the simulator, between steps (it reads lane-only state).
    std::string check_wakeups() const;

private:
    struct entry;
    struct listener;

    struct loop_end;
    struct resume;

    registration register_entry(const source_options& options, const source_factory& make,
                                listener* owner);
    /// The registration after the pool admitted it (or the refusal as a registration).
    registration finish_registration(const source_options& options, const source_factory& make,
                                     listener* owner, const admission& admitted);
    /// The pool's waiting admission, bounded by `max_wait` and by shutdown. Runs on a lane, in a
    /// coroutine counted in the gate.
    boost::asio::awaitable<admission> await_admission(source_limits limits, duration max_wait);
    /// Ends every waiting admission (shutdown).
    void cancel_admission_waits();
    /// A source's coroutine, begun where `from` says. True when it ended to park.
    boost::asio::awaitable<bool> run(entry& e, resume from);
    /// `wait_for_buffer`: begin by waiting for a buffer (a step found data but none free).
    boost::asio::awaitable<loop_end> read_loop(entry& e, bool wait_for_buffer);
    /// A buffer without waiting (empty when none is free, or a fault is injected there).
    buffer try_take(entry& e);
    /// Waits for a buffer (backpressure); empty when a stop aborted the wait.
    boost::asio::awaitable<buffer> acquire_wait(entry& e);
    /// Steps (a source's work without a coroutine): a source that can open without waiting
    /// starts by `begin`; a parked source that wakes continues by `step`, one read turn, then
    /// parks again. Only a wait (a connect, a buffer under backpressure, readiness when data is
    /// still there after a full turn, a reconnect backoff) spawns the coroutine, which parks
    /// and ends once the source is idle again. A respawn per wake was the largest cost left in
    /// the simulator (about a sixth of its time) and in starting many sources.
    /// `advance` runs `begin` (no `woken`) or `step`; a throw ends the source with an Error.
    /// `now`: when a parked source woke (a step's first time); unused by `begin`.
    void advance(entry& e, std::optional<boost::system::error_code> woken, time_point now);
    void begin(entry& e);
    void step(entry& e, boost::system::error_code woken, time_point now);
    /// A read loop ended outside the coroutine: the run ends here, or (a transport error) a
    /// coroutine reconnects or fails it.
    void end_loop(entry& e, const loop_end& end);
    /// The parts of a read loop both kinds share: one turn of reads into `current` (a value
    /// when the loop ends), one read's result, the flush decision after a turn, the flush
    /// timeout, and setting the buffer down before a wait (true: park now).
    std::optional<loop_end> read_turn(entry& e, buffer& current);
    bool take_read(entry& e, buffer& current, const read_result& r, std::optional<loop_end>& end);
    void after_turn(entry& e, buffer& current, bool into_buffer);
    /// `now`, when given, is a clock reading just taken (saves reading it again).
    void flush_if_due(entry& e, buffer& current, std::optional<time_point> now = {});
    bool set_down(entry& e, buffer current);
    /// The end of a run: closes the source, flushes what it held, sends EoS or Error (a
    /// non-empty `failure`) or neither (an engine stop), and sets final_state.
    void finish(entry& e, bool ended, std::string failure);
    /// What a stop does on the source's lane: mark it, abort its buffer wait and its backoff,
    /// close its transport (which ends a parked wait). Also used when the run must end early
    /// (a buffer could not be queued, the sink failed the origin).
    void request_stop(entry& e) noexcept;
    /// After every successful open: a reopen marks the next buffer as a discontinuity.
    void opened(entry& e) noexcept;
    boost::asio::awaitable<void> accept_loop(listener& l);
    /// Closes the listener's connections that sent nothing for idle_timeout (lane of l).
    boost::asio::awaitable<void> idle_sweep(listener& l);
    void spawn_accept_loop(listener& l);
    /// Closes `l` on its lane: no more accepts, its idle sweep ends. The caller entered the
    /// gate for it; the posted close leaves it.
    void post_close(listener& l);
    void spawn(entry& e, resume from);
    /// Marks a startable source running and inside the gate; null when it cannot start. Under
    /// mutex_.
    entry* claim_start(source_handle handle);
    /// The end of a source's coroutine or step: parks it, or records how the run ended and
    /// leaves the gate.
    void run_ended(entry& e, std::exception_ptr failure, bool parked);
    void park(entry& e);
    /// The entry's timer (reconnect backoff), made on first use (lane-only).
    timer& flush_timer(entry& e);
    /// Hands a filled buffer to processing. Never throws: a buffer that cannot be queued is
    /// dropped, counted, and ends the run with an Error.
    /// True when it was queued (or held nothing to queue).
    bool emit(entry& e, buffer& filled, flush_reason reason) noexcept;
    std::size_t pick_lane(std::size_t requested);
    /// Processing advanced the origin's processed position (a compute thread): its source
    /// hears of it on its lane, once for however many advances come before that runs.
    void processed(std::uint64_t origin);
    /// On the source's lane: tells it its processed position.
    void tell_processed(source_handle handle);
    /// The entry's processing channel, opened on first use (its first buffer or final event;
    /// lane-only, or with nothing running): an idle connection that never sent anything holds
    /// none (processing keeps a weak reference per channel too).
    const std::shared_ptr<processing::channel>& channel(entry& e);
    /// Its processed position; 0 before its channel exists.
    static std::uint64_t processed_through(const entry& e) noexcept;

    environment& env_;
    buffer_pool& pool_;
    processing& processing_;
    server_options options_;

    mutable std::mutex mutex_; ///< guards entries_, listeners_, next_handle_
    std::unordered_map<source_handle, std::unique_ptr<entry>> entries_;
    std::vector<std::unique_ptr<listener>> listeners_;
    source_handle next_handle_ = 1;
    std::atomic<std::size_t> next_lane_{0};

    /// What shutdown waits for: running sources, accept loops and idle sweeps, armed sweepers,
    /// waiting registrations, and handlers posted to a lane that touch the server. Closed by
    /// shutdown: no new start, listener or waiting registration from then on.
    gate gate_;
    /// Partial buffers waiting for more data, and when they go (detail/flush_policy.hpp).
    std::unique_ptr<flush_policy> flush_;
    mutable std::mutex admission_mutex_; ///< guards admission_waits_
    /// Registrations waiting for admission, with their lanes: a shutdown cancels them.
    std::unordered_map<boost::asio::cancellation_signal*,
                       std::pair<std::shared_ptr<boost::asio::cancellation_signal>, executor>>
        admission_waits_;

    server_counters counters_;
};

} // namespace sluice::runtime
