#pragma once
/// What a data source is to the server: open, wait for data, read what is there, close.
/// Sources deliver raw bytes only (no parsing: that is processing's first stage). Every
/// suspension point honours cancellation; expected failures are values.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/env/environment.hpp"

namespace sluice::runtime {

/// What kind of source this is, for metrics (`kind` labels), stats arrays and logs. The seven
/// built-in kinds come first; an embedder adds its own with define_source_kind. Stats are arrays
/// indexed by the kind, `source_kind_max` long.
enum class source_kind : std::uint8_t {
    generator,       ///< synthetic, deterministic content, rate-limited by timers
    tcp_client,      ///< connects out; reconnects with capped backoff and jitter
    tcp_connection,  ///< one accepted TCP connection of a listener
    udp,             ///< datagrams on a bound socket
    file,            ///< a file read to the end
    blocking,        ///< a legacy blocking reader on the bounded blocking pool
    mqtt,            ///< MQTT subscriptions through libmosquitto, driven by the lane
    http_connection, ///< one accepted connection of an HTTP listener (request bodies)
};

/// Kinds sluice itself defines (the enumerators above).
inline constexpr std::size_t source_kind_builtin_count = 8;
/// Kinds a process can have, built-in and defined. A bound, because every stats array and every
/// metrics family has one entry per kind.
inline constexpr std::size_t source_kind_max = 16;
static_assert(source_kind_builtin_count < source_kind_max);

/// Defines a source kind of the embedder's own and returns its id, for `source::kind()`.
/// `name` is its `kind` label in metrics and its name in logs: 1 to 32 characters of [a-z0-9_],
/// starting with a letter. Defining a name that exists (a built-in one included) returns that
/// kind, so a library may define its kind in every constructor. Thread-safe. Throws
/// std::invalid_argument for a bad name and std::length_error when `source_kind_max` kinds
/// exist.
source_kind define_source_kind(std::string_view name);
/// Kinds defined so far in this process, built-in included: ids 0 to this − 1 are valid.
std::size_t source_kinds_defined() noexcept;
/// The kind's name; "unknown" for an id never defined.
std::string_view to_string(source_kind kind) noexcept;
/// The kind as an index into stats arrays (< source_kind_max).
constexpr std::size_t index_of(source_kind kind) noexcept {
    return static_cast<std::size_t>(kind);
}

class source {
public:
    virtual ~source() = default;

    virtual source_kind kind() const noexcept = 0;
    /// For logs and errors: what the source reads from.
    virtual std::string describe() const = 0;

    /// Opens the transport (again, after a failure, for sources that reconnect). Suspends while
    /// connecting. Returns an error value on failure.
    virtual boost::asio::awaitable<boost::system::error_code> open() = 0;
    /// The same open without waiting, for sources whose open never suspends (a generator, an
    /// accepted connection, a UDP bind, a file): what `open()` would return. `std::nullopt`
    /// when opening has to wait (a TCP connect): the server then runs `open()` in a coroutine.
    /// Starting by `open_now` lets the server start a source without a coroutine (see
    /// source_server's steps).
    virtual std::optional<boost::system::error_code> open_now() { return std::nullopt; }
    /// Waits until `read_now` has something to say. An idle source holds no buffer here.
    /// `operation_aborted` when closed or cancelled.
    virtual boost::asio::awaitable<boost::system::error_code> wait_readable() = 0;
    /// Parking (see byte_stream::park): true when the source can wait without a coroutine frame
    /// and probably has to wait now; the server then ends the source's coroutine and calls
    /// `park`, and continues it when `wake` runs (a step, or its coroutine if it must wait).
    virtual bool should_park() { return false; }
    /// Only after `should_park()` returned true. True: parked; `wake` runs once on the lane with
    /// what `wait_readable` would return, never before this returns, and `close` ends the wait
    /// promptly. False (the default: the source cannot park): `wake` is dropped, and the
    /// server waits for this source in its coroutine (`wait_readable`) and does not ask again.
    virtual bool park(wake_callback wake);
    /// Reads what is available into `space` without waiting.
    virtual read_result read_now(std::span<std::byte> space) = 0;
    /// Cancels pending waits and releases the transport. Idempotent; called on the source's lane.
    virtual void close() noexcept = 0;

    /// Extra words for an Error event (a legacy reader's exception message); empty otherwise.
    virtual std::string error_detail() const { return {}; }

    /// True when a transport failure reopens the source (with backoff) instead of failing it.
    virtual bool reconnects() const noexcept { return false; }

    /// True when an open after the first (a restart after a stop, a reconnect) continues the
    /// byte stream exactly where the last one stopped: a file resumed at its offset, a
    /// generator. Otherwise (a new connection) every reopen is a stream discontinuity:
    /// processing drops the record the last stream left unfinished and counts it, and never
    /// joins it to the new stream's bytes.
    virtual bool continues_after_reopen() const noexcept { return false; }

    /// Processed positions (at-least-once delivery). True when the source wants to learn how
    /// far processing has got with its bytes (`processed`); the server then tracks its channel.
    virtual bool tracks_processed() const noexcept { return false; }
    /// Processing has finished (the sink returned) with every complete record in the first
    /// `stream_bytes` bytes this source returned from its reads since it was made, over every
    /// open, and with every earlier buffer: a count that only grows. The bytes of a record
    /// still unfinished are not in it until the record ends (or a reopen drops it), so it always
    /// falls on a record boundary. The source maps it to a position of its own — a file offset
    /// to checkpoint, broker messages to acknowledge. Called on the source's lane, coalesced
    /// (a call may cover many buffers), also after the source stopped; once more at shutdown
    /// with the final count, when nothing else runs. Keep it short, and do not call the server
    /// from it (the server holds its registry lock). Only for `tracks_processed()` sources.
    virtual void processed(std::uint64_t /*stream_bytes*/) {}

    /// True for sources that cannot tell readiness without reading (legacy blocking sources):
    /// the server then acquires a buffer first and calls `read_some` instead of
    /// `wait_readable` + `read_now`.
    virtual bool reads_into_buffer() const noexcept { return false; }
    /// Only for `reads_into_buffer()` sources: reads at least one byte, or reports end or error.
    /// The default waits with `wait_readable` and reads with `read_now` until one says so.
    /// The server flushes after every such read (a read may block for long). A stop calls
    /// `close`, which must make a blocked read return (the legacy adapter calls
    /// `blocking_reader::interrupt`); whatever that read returns then, the run ends as a stop.
    virtual boost::asio::awaitable<read_result> read_some(std::span<std::byte> space);

    /// Messages a source answers for (an HTTP request body). The longest the server may wait
    /// for a buffer before it tells the source `buffer_refused` instead of waiting on: a source
    /// that can refuse what it is about to read (answer 429) says how long it may wait now; the
    /// default, forever, is backpressure by suspension, as for every other source.
    virtual duration buffer_wait_max() const noexcept { return duration::max(); }
    /// The wait of `buffer_wait_max` passed without a buffer (on the lane, the source still
    /// readable): the source refuses what it would have read (answers 429 and drops that
    /// message) and the server waits for readiness again.
    virtual void buffer_refused() {}
    /// After a read whose result said `ends_message`: the buffer holding the message's last
    /// byte has been queued for processing (the source may now say so to its peer: a 2xx).
    /// Not called when it could not be queued (the run then ends).
    virtual void delivered() {}
};

} // namespace sluice::runtime
