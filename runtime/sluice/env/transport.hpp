#pragma once
/// The transports of the environment seam: what a source reads from (byte streams, datagram
/// sockets, blocking readers, watched descriptors) and what accepts connections (stream
/// listeners), as interfaces both environments implement (production: Asio sockets and files,
/// one transport per file under env/production/; the simulator: virtual streams and peers). The
/// executor and time types are here too, since every transport is bound to a lane and some take
/// deadlines.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

namespace sluice::runtime {

using executor = boost::asio::any_io_executor;
/// Time as the environment measures it: nanoseconds since the environment started.
using duration = std::chrono::nanoseconds;
using time_point = std::chrono::nanoseconds;

/// Outcome of a non-blocking read.
struct read_result {
    enum class status : std::uint8_t {
        data,          ///< `bytes` > 0 were written
        would_block,   ///< nothing available now
        end_of_stream, ///< the peer or file ended cleanly
        error,         ///< `error` says what failed
        need_space,    ///< the next unit (a datagram) does not fit: offer an emptier buffer
    };
    status state = status::would_block;
    std::size_t bytes = 0;
    boost::system::error_code error;
    /// With `data`: these bytes end a message the source answers for (an HTTP request body):
    /// the server hands the buffer to processing now and then calls `source::delivered`.
    bool ends_message = false;
};

/// Called once, on the lane, when a parked wait ends (see `byte_stream::park`): with what
/// `wait_readable` would have returned.
using wake_callback = std::function<void(boost::system::error_code)>;

/// Which file a stream reads, as the file system names it (to tell a file from one that
/// replaced it at the same path).
struct file_identity {
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
    std::uint64_t size = 0; ///< when it was opened
};

/// A readable stream of bytes (a TCP connection, a file, a virtual stream). Lane-bound.
class byte_stream {
public:
    virtual ~byte_stream() = default;
    /// Waits until `read_now` would return something other than would_block. Returns an error
    /// value on failure and `operation_aborted` when cancelled or closed.
    virtual boost::asio::awaitable<boost::system::error_code> wait_readable() = 0;
    /// Parking: an idle source's wait without a coroutine frame, so thousands of idle
    /// connections cost a pending readiness operation each instead of a suspended coroutine
    /// chain. `should_park` says whether a wait is worth parking for now (false when the stream
    /// cannot park, or when data is probably already there: then `wait_readable` is cheaper
    /// than ending and respawning a coroutine).
    virtual bool should_park() { return false; }
    /// Only after `should_park()` returned true: arranges for `wake` to run once on the lane
    /// with what `wait_readable` would return, never before `park` returns. `close` (also one
    /// that came before `park`) ends the wait promptly with an error.
    virtual bool park(wake_callback wake);
    /// Reads what is available without waiting, into `space`.
    virtual read_result read_now(std::span<std::byte> space) = 0;
    /// Cancels pending waits and releases the transport. Idempotent.
    virtual void close() noexcept = 0;
    /// For logs and errors: the peer address or the file path.
    virtual std::string describe() const = 0;
    /// Writes what the transport takes now, without waiting: a protocol's own small packets
    /// (acknowledgements, pings) on a stream that is read otherwise. The bytes written (maybe
    /// fewer than asked; 0 with no error: try again later), or an error. Streams that cannot
    /// write (files, virtual streams) say `operation_not_supported`.
    virtual std::pair<boost::system::error_code, std::size_t>
        write_now(std::span<const std::byte> /*bytes*/);
    /// A file's identity when it was opened; zero inode for streams that are not files.
    virtual file_identity identity() const { return {}; }
    /// TCP keepalive for a TCP stream (idle time before the first probe, between probes, probes
    /// before the peer counts as gone); other streams ignore it.
    virtual void keep_alive(std::chrono::seconds /*idle*/, std::chrono::seconds /*interval*/,
                            int /*probes*/) noexcept {}
};

/// Accepts TCP connections. Lane-bound.
class stream_listener {
public:
    virtual ~stream_listener() = default;
    /// Accepts the next connection; the new stream is bound to `target` (the lane that will run
    /// its source). `operation_aborted` when closed or cancelled.
    virtual boost::asio::awaitable<
        std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    accept(executor target) = 0;
    virtual void close() noexcept = 0;
    /// The bound port (useful when 0 was asked for).
    virtual std::uint16_t port() const = 0;
};

/// Receives datagrams. Lane-bound. `read_now` returns one whole datagram or would_block; a
/// datagram larger than `space` is discarded and reported as an error `message_size`.
class datagram_socket : public byte_stream {
public:
    /// Size of the next datagram, 0 when none is queued.
    virtual std::size_t next_datagram_bytes() = 0;
    virtual std::uint16_t port() const = 0;
};

/// A legacy source that reads by blocking a thread. Runs on the environment's blocking pool.
class blocking_reader {
public:
    virtual ~blocking_reader() = default;
    /// Blocks until some bytes are read into `space`; 0 means end of stream. Throws
    /// `std::runtime_error` on failure. Called on a blocking-pool thread, one call at a time.
    virtual std::size_t read_blocking(std::span<std::byte> space) = 0;
    /// Asks a blocked `read_blocking` to return soon; called from a lane when the source is
    /// stopped. A stop completes only when the read returns (a thread cannot be cancelled),
    /// so a reader whose reads can block for long should make this wake them (close the
    /// descriptor, signal a condition); what the read then returns is not delivered as EoS.
    virtual void interrupt() noexcept {}
};

/// Readiness of a descriptor that someone else owns (a library's socket), bound to one lane.
/// The watch never closes the owner's descriptor: it watches a duplicate of its own, so the
/// owner may close its descriptor at any time (and the number may go to another socket)
/// without the watch touching anyone else's registration. Use it from its lane only.
class descriptor_watch {
public:
    virtual ~descriptor_watch() = default;
    virtual boost::asio::awaitable<boost::system::error_code> wait_readable() = 0;
    virtual boost::asio::awaitable<boost::system::error_code> wait_writable() = 0;
    /// Ends pending waits with operation_aborted.
    virtual void cancel() noexcept = 0;
};

} // namespace sluice::runtime
