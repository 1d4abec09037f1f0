#pragma once
/// An HTTP-like virtual stream: one keep-alive client connection, as an HTTP source reads it.
/// The client POSTs its generator records a few at a time, each request's bytes arriving in
/// chunks at virtual times (so headers and bodies come in pieces, slowly), content-length or
/// chunked, now and then to a path the listener does not serve; it reads each answer the source
/// writes and acts as a real client would: 204, the next records; 429, the same records again
/// after a pause; 404, the same records again to the right path. So the generator oracle at the
/// sink (every record once, in order, all of them at the end) proves that a body answered 204
/// arrived whole and one answered 429 or 404 did not arrive at all. Faults: a reset at an
/// arbitrary byte of the wire.

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "sim/sim_environment.hpp"

namespace sluice::sim {

struct virtual_http_script {
    std::uint64_t id = 0;        ///< generator id of its records
    std::uint64_t records = 100; ///< records to deliver, then the client closes
    std::uint32_t records_per_body_max = 8;
    std::uint32_t chunk_bytes_max = 256; ///< wire bytes that arrive at once (at least 1)
    duration gap_max = std::chrono::microseconds(200); ///< between arrivals and requests
    double chunked = 0.5;    ///< share of requests sent with chunked encoding
    double wrong_path = 0.0; ///< share of requests sent to a path not served
    duration retry_after = std::chrono::milliseconds(1); ///< pause after a 429
    std::uint64_t reset_at_bytes = 0; ///< a fault: the connection resets here (0 = off)
};

/// What every client of a run heard, and what no client should have heard.
struct http_tally {
    std::map<int, std::uint64_t> answers; ///< by status code
    std::vector<std::string> problems;    ///< answers a correct source never gives
    std::uint64_t resets = 0;
};

class virtual_http_client final : public runtime::byte_stream {
public:
    virtual_http_client(sim_environment& env, runtime::executor lane, virtual_http_script script,
                        random_stream random, http_tally& tally);
    ~virtual_http_client() override;
    virtual_http_client(const virtual_http_client&) = delete;
    virtual_http_client& operator=(const virtual_http_client&) = delete;

    boost::asio::awaitable<boost::system::error_code> wait_readable() override;
    bool should_park() override;
    bool park(runtime::wake_callback wake) override;
    runtime::read_result read_now(std::span<std::byte> space) override;
    std::pair<boost::system::error_code, std::size_t>
    write_now(std::span<const std::byte> bytes) override;
    void close() noexcept override;
    std::string describe() const override;

private:
    /// Builds the next request for records [next_, next_ + body_records_), due at `when`.
    void start_request(time_point when);
    void arrive();
    bool readable() const;
    bool finished() const;
    /// Parses whole answers out of `answers_`.
    void take_answers();
    void answered(int status);
    /// The next wake-up to wait for: the next arrival, or (nothing scheduled) a poll.
    time_point next_event() const;
    void wait_for_event(runtime::wake_callback wake, int rounds);

    sim_environment& env_;
    runtime::executor lane_;
    virtual_http_script script_;
    random_stream random_;
    http_tally& tally_;
    std::uint64_t next_ = 0;         ///< first record of the current request
    std::uint64_t body_records_ = 0; ///< records in it
    bool wrong_path_ = false;        ///< the current request goes to a path not served
    std::string wire_;               ///< the current request's bytes
    std::size_t sent_ = 0;           ///< read by the source
    std::size_t arrived_ = 0;        ///< arrived so far
    time_point next_arrival_{};
    bool answered_ = false; ///< the current request has its answer
    bool repeat_ = false;   ///< send the same records again next
    time_point resend_at_{};
    std::string answers_;          ///< answer bytes not yet parsed
    std::uint64_t wire_total_ = 0; ///< over every request, for the reset fault
    bool stopped_ = false;         ///< a 503: the source stopped; the client sends no more
    bool closed_ = false;
    sim_environment::timer_id waiting_ = 0;
};

} // namespace sluice::sim
