#pragma once
/// HTTP ingestion: one accepted connection of an HTTP listener as a source. HTTP/1.1 with
/// keep-alive and pipelined requests, parsed by Beast's parser; `POST` bodies to the configured
/// paths (content-length or chunked) become the connection's bytes, and each body ends a record
/// (a newline is added after a body that does not end with one).
///
/// Answers, in request order:
/// - 204: the body has been queued for processing (its last buffer is in processing's queue;
///   what a success means is in README's HTTP section). An empty body is answered at once.
/// - 429 with Retry-After: the body could not get a buffer within `buffer_wait`. The decision is
///   made before any byte of that body is placed in a buffer, and none of it is delivered.
/// - 413 (body over `body_bytes_max`), 400 (malformed; the connection closes), 404 (other
///   paths), 405 (other methods), 408 (a header not complete within `header_timeout`; closes),
///   503 (the source stops while a request is under way: a drain or shutdown; closes).
/// A refused body is read and dropped on a connection that stays open; one whose client waits
/// for `100 Continue` is refused and the connection closed, since the client may or may not
/// send it.
///
/// Protocol work (headers, chunk framing, refused bodies, answers) needs no buffer: the source
/// is readable for the server only when body bytes are ready to place, so a buffer is asked for
/// only then. The header (at most `header_bytes_max`) is kept in a small per-connection buffer
/// of its own, released when the connection is idle.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/env/environment.hpp"
#include "sluice/source/source.hpp"

namespace sluice::runtime {

/// An HTTP listener's settings beyond a TCP listener's (listener_options::http).
struct http_options {
    std::vector<std::string> paths{"/"};         ///< request targets accepted (the part before '?')
    std::uint64_t body_bytes_max = 1U << 20U;    ///< larger bodies are answered 413
    std::uint32_t header_bytes_max = 16U << 10U; ///< a larger header is answered 400
    /// Longest a body waits for a buffer before it is answered 429 (backpressure as an answer).
    duration buffer_wait = std::chrono::milliseconds(20);
    /// A request's header must be complete this long after its first byte (408 otherwise).
    duration header_timeout = std::chrono::seconds(10);
    std::uint32_t retry_after_seconds = 1; ///< the Retry-After of a 429
};

/// The answers an HTTP source gives, for counting.
enum class http_answer : std::uint8_t {
    no_content,          ///< 204: delivered
    bad_request,         ///< 400
    not_found,           ///< 404
    method_not_allowed,  ///< 405
    request_timeout,     ///< 408
    payload_too_large,   ///< 413
    too_many_requests,   ///< 429
    service_unavailable, ///< 503
};
inline constexpr std::size_t http_answer_count = 8;
/// The status code of an answer (204, 400, …).
std::uint16_t status_code(http_answer answer) noexcept;

/// What the HTTP sources of a server count (relaxed atomics, written on the lanes).
struct http_counters {
    std::array<std::atomic<std::uint64_t>, http_answer_count> answers{};
    std::atomic<std::uint64_t> requests{0};           ///< request headers read
    std::atomic<std::uint64_t> refused_body_bytes{0}; ///< body bytes read and dropped
};

class http_connection_source final : public source {
public:
    /// `options` and `counters` outlive the source (the listener and the server own them).
    http_connection_source(environment& env, std::unique_ptr<byte_stream> stream,
                           const http_options& options, http_counters& counters);
    ~http_connection_source() override;
    http_connection_source(const http_connection_source&) = delete;
    http_connection_source& operator=(const http_connection_source&) = delete;

    source_kind kind() const noexcept override { return source_kind::http_connection; }
    std::string describe() const override;
    boost::asio::awaitable<boost::system::error_code> open() override;
    std::optional<boost::system::error_code> open_now() override;
    boost::asio::awaitable<boost::system::error_code> wait_readable() override;
    bool should_park() override;
    bool park(wake_callback wake) override;
    read_result read_now(std::span<std::byte> space) override;
    void close() noexcept override;
    std::string error_detail() const override { return detail_; }
    duration buffer_wait_max() const noexcept override;
    void buffer_refused() override;
    void delivered() override;

private:
    class parser;
    friend class parser;

    enum class phase : std::uint8_t {
        header,  ///< reading a request's header (or between requests)
        body,    ///< an accepted body: its bytes go to the buffer
        discard, ///< a refused body: read and dropped
        closing, ///< answered; the connection ends once the answer is written
        done,    ///< ended (`final_` says how)
    };
    /// How far `work` got.
    enum class outcome : std::uint8_t {
        blocked,     ///< needs bytes the socket does not have yet
        needs_space, ///< body bytes (or a 100 Continue) wait for buffer space
        message_end, ///< a body ended (its last bytes, if any, placed)
        ended,       ///< `final_` is what to report
    };

    /// Advances the protocol as far as the socket's bytes and `space` allow.
    outcome work(std::span<std::byte> space);
    /// One parse of what the header buffer holds; false when the caller should return
    /// `result` (an outcome other than "go on").
    bool parse_once(outcome& result);
    void header_done();
    /// The parser finished a message: an accepted body ends (its answer waits for delivery),
    /// any other is answered; then the next request.
    void message_done();
    /// The parser calls this with body bytes: how many it took.
    std::size_t take_body(std::string_view body);
    /// Reads from the socket into the header buffer (after compacting it).
    read_result fill();
    void answer(http_answer answer, bool close_after, std::string_view why);
    /// Writes what it can of the pending answers; false when they cannot be written and too
    /// many are pending (the peer does not read them): the connection then fails.
    bool write_pending();
    void end(read_result how, std::string detail);
    void next_request();
    void woke(boost::system::error_code error);

    environment& env_;
    std::unique_ptr<byte_stream> stream_;
    const http_options& options_;
    http_counters& counters_;
    std::unique_ptr<parser> parser_; ///< the request being read; null between requests
    std::unique_ptr<char[]> wire_;   ///< the header buffer, header_bytes_max; null while idle
    std::uint32_t wire_begin_ = 0;
    std::uint32_t wire_end_ = 0;
    std::string pending_; ///< answers not yet written
    wake_callback wake_;  ///< the server's, while parked
    read_result final_;
    std::string detail_;
    std::byte* place_ = nullptr; ///< where body bytes go now (work's space)
    std::size_t place_left_ = 0;
    std::size_t placed_ = 0;
    std::uint64_t body_bytes_ = 0; ///< of the current body, placed
    time_point header_since_{};
    phase phase_ = phase::header;
    bool need_more_ = false;    ///< the parser wants more bytes than the header buffer holds
    bool refusable_ = false;    ///< no byte of the current body placed yet
    bool last_newline_ = true;  ///< the last body byte placed was '\n'
    bool newline_owed_ = false; ///< the body ended without one: place it before the end
    bool answer_owed_ = false;  ///< a body ended: 204 once delivered
    bool close_after_ = false;  ///< the request asked to close after its answer
    bool expect_continue_ = false;
    bool continue_sent_ = false;
    bool method_post_ = false;
    bool path_known_ = false;
};

} // namespace sluice::runtime
