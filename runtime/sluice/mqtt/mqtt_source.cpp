// The MQTT source: an MQTT 3.1.1 session on the lane over the seam's TCP stream; QoS 1
// messages acknowledged when processed (mqtt_source.hpp says why not libmosquitto).
#include "sluice/mqtt/mqtt_source.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <variant>

#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/mqtt/detail/mqtt_packets.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

bool is_ip_literal(const std::string& host) {
    error_code error;
    static_cast<void>(asio::ip::make_address(host, error));
    return !error;
}

/// Bytes of acknowledgements and pings not yet taken by the socket, at most; beyond, the
/// connection is dropped (the broker resends what was not acknowledged).
constexpr std::size_t outbox_bytes_max = 1 << 20;
/// One read of the socket.
constexpr std::size_t read_chunk_bytes = std::size_t{64} * 1024;

} // namespace

namespace detail {

/// One MQTT session: the TCP stream, the packets read from it, the payloads received and not
/// yet read, and the QoS 1 messages read and not yet acknowledged. Lives on its lane.
class mqtt_session final : public byte_stream {
public:
    /// `base`: the source's stream offset where this session's bytes begin.
    mqtt_session(environment& env, const executor& lane, const mqtt_options& options,
                 std::unique_ptr<byte_stream> tcp, std::uint64_t base)
        : env_(env), options_(options), tcp_(std::move(tcp)), timer_(env.make_timer(lane)),
          reader_(options.payload_bytes_max), delivered_(base), last_sent_(env.now()),
          last_received_(env.now()) {}
    ~mqtt_session() override { close(); }
    mqtt_session(const mqtt_session&) = delete;
    mqtt_session& operator=(const mqtt_session&) = delete;

    /// CONNECT, CONNACK, SUBSCRIBE, SUBACK, before `deadline`. Empty, or what went wrong.
    asio::awaitable<std::string> handshake(time_point deadline) {
        const auto keepalive = static_cast<std::uint16_t>(
            std::clamp<std::int64_t>(options_.keepalive.count(), 0, 65535));
        send(mqtt::connect_packet(options_.client_id, options_.clean_session, keepalive));
        while (!connack_) {
            if (auto problem = co_await turn_before(deadline); !problem.empty()) {
                co_return problem;
            }
        }
        if (connack_code_ != 0) {
            co_return "the broker refused the connection: " +
                std::string(mqtt::connack_meaning(connack_code_));
        }
        send(mqtt::subscribe_packet(subscribe_id, options_.topics, options_.qos));
        while (!suback_) {
            if (auto problem = co_await turn_before(deadline); !problem.empty()) {
                co_return problem;
            }
        }
        for (std::size_t i = 0; i < options_.topics.size(); ++i) {
            if (i >= granted_.size() || granted_[i] == 0x80) {
                co_return "the broker refused the subscription to '" + options_.topics[i] + "'";
            }
        }
        co_return std::string{};
    }

    asio::awaitable<error_code> wait_readable() override {
        using namespace asio::experimental::awaitable_operators;
        // Each turn waits for the socket or the keepalive tick, so this is not a busy loop; it
        // ends when a payload is held, the connection is lost, or the stream is closed.
        for (;;) {
            if (!held_.empty()) {
                co_return error_code{};
            }
            if (closed_) {
                co_return asio::error::operation_aborted;
            }
            if (lost_) {
                co_return asio::error::connection_reset;
            }
            ping_if_due();
            if (lost_) {
                continue;
            }
            auto ready = co_await (tcp_->wait_readable() || timer_->wait_for(tick()));
            if (closed_) {
                co_return asio::error::operation_aborted;
            }
            if (ready.index() == 0) {
                if (const auto error = std::get<0>(ready)) {
                    lose(error.message());
                    continue;
                }
                read_available();
            }
        }
    }

    read_result read_now(std::span<std::byte> space) override {
        std::size_t n = 0;
        while (n < space.size() && !held_.empty()) {
            held_message& front = held_.front();
            const std::size_t take = std::min(space.size() - n, front.record.size() - offset_);
            std::memcpy(space.data() + n, front.record.data() + offset_, take);
            n += take;
            offset_ += take;
            if (offset_ == front.record.size()) {
                delivered_ += front.record.size();
                for (const auto id : front.acks) {
                    acks_.push_back({delivered_, id}); // acknowledged once processed
                }
                held_.pop_front();
                offset_ = 0;
            }
        }
        if (n > 0) {
            return {read_result::status::data, n, {}};
        }
        if (closed_ || lost_) {
            return {read_result::status::error, 0, asio::error::connection_reset};
        }
        return {read_result::status::would_block, 0, {}};
    }

    void close() noexcept override {
        if (closed_) {
            return;
        }
        closed_ = true;
        if (options_.counters && !held_.empty()) {
            options_.counters->dropped_at_close.fetch_add(held_.size(), std::memory_order_relaxed);
        }
        held_.clear();
        if (!lost_) {
            // Best effort (the socket does not wait): the broker keeps the session, and every
            // message not acknowledged in it.
            const std::string bye = mqtt::disconnect_packet();
            static_cast<void>(tcp_->write_now(std::as_bytes(std::span(bye))));
        }
        tcp_->close();
        timer_->cancel();
    }

    std::string describe() const override {
        return "mqtt " + options_.host + ":" + std::to_string(options_.port);
    }

    /// Processing has finished with the source's stream up to `stream_bytes`: the QoS 1
    /// messages read before it are acknowledged, in order.
    void acknowledge_through(std::uint64_t stream_bytes) {
        if (closed_ || lost_) {
            return; // the broker sends them again in the next session
        }
        std::size_t count = 0;
        while (!acks_.empty() && acks_.front().end <= stream_bytes) {
            outbox_ += mqtt::puback_packet(acks_.front().packet_id);
            acks_.pop_front();
            ++count;
        }
        if (count > 0) {
            flush();
            if (options_.counters) {
                options_.counters->acknowledged.fetch_add(count, std::memory_order_relaxed);
            }
        }
    }

    const std::string& loss() const noexcept { return loss_; }

private:
    static constexpr std::uint16_t subscribe_id = 1;

    struct held_message {
        std::string record;              ///< payload and '\n'
        std::vector<std::uint16_t> acks; ///< QoS 1 packet ids to acknowledge after it
    };
    struct pending_ack {
        std::uint64_t end = 0; ///< the source's stream offset just after its record
        std::uint16_t packet_id = 0;
    };

    duration tick() const {
        return std::clamp<duration>(options_.keepalive / 2, std::chrono::milliseconds(10),
                                    std::chrono::seconds(1));
    }

    /// A PINGREQ when nothing was sent for half the keepalive; the connection is lost when no
    /// answer came within a keepalive of it.
    void ping_if_due() {
        if (options_.keepalive.count() == 0) {
            return;
        }
        const auto now = env_.now();
        if (ping_outstanding_ && now - ping_sent_ > duration(options_.keepalive)) {
            lose("no PINGRESP within the keepalive of " +
                 std::to_string(options_.keepalive.count()) + " s");
            return;
        }
        if (!ping_outstanding_ && now - last_sent_ >= duration(options_.keepalive) / 2) {
            send(mqtt::pingreq_packet());
            ping_outstanding_ = true;
            ping_sent_ = now;
        }
        flush(); // what the socket did not take before
    }

    void send(const std::string& packet) {
        outbox_ += packet;
        flush();
    }

    void flush() {
        while (!outbox_.empty() && !lost_) {
            const auto [error, n] = tcp_->write_now(std::as_bytes(std::span(outbox_)));
            if (error) {
                lose("writing to the broker: " + error.message());
                return;
            }
            if (n == 0) {
                break; // the socket is full: the next turn tries again
            }
            outbox_.erase(0, n);
            last_sent_ = env_.now();
        }
        if (outbox_.size() > outbox_bytes_max) {
            lose("the broker does not take our acknowledgements");
        }
    }

    /// One wait of the handshake for the socket, bounded by `deadline`.
    asio::awaitable<std::string> turn_before(time_point deadline) {
        using namespace asio::experimental::awaitable_operators;
        const auto remaining = deadline - env_.now();
        if (remaining <= duration::zero()) {
            co_return "no CONNACK or SUBACK within the handshake timeout";
        }
        flush();
        auto ready = co_await (tcp_->wait_readable() || timer_->wait_for(remaining));
        if (closed_) {
            co_return "stopped during the connect";
        }
        if (ready.index() == 0) {
            if (const auto error = std::get<0>(ready)) {
                lose(error.message());
            } else {
                read_available();
            }
        }
        if (lost_) {
            co_return "connection lost before the session was set up: " + loss_;
        }
        co_return std::string{};
    }

    /// Reads what the socket has (one chunk) and takes the packets in it.
    void read_available() {
        const read_result r = tcp_->read_now(std::as_writable_bytes(std::span(chunk_)));
        if (r.state == read_result::status::data) {
            last_received_ = env_.now();
            reader_.feed(std::as_bytes(std::span(chunk_.data(), r.bytes)));
        } else if (r.state == read_result::status::end_of_stream) {
            lose("the broker closed the connection");
        } else if (r.state == read_result::status::error) {
            lose(r.error.message());
        }
        while (auto p = reader_.next()) {
            take(*p);
        }
        if (!reader_.error().empty()) {
            lose("the broker sent " + reader_.error());
        }
    }

    void take(mqtt::packet& p) {
        switch (p.type) {
        case mqtt::packet_type::connack:
            connack_ = true;
            connack_code_ = p.connack_code;
            break;
        case mqtt::packet_type::suback:
            if (p.packet_id == subscribe_id) {
                suback_ = true;
                granted_ = std::move(p.granted);
            }
            break;
        case mqtt::packet_type::pingresp:
            ping_outstanding_ = false;
            break;
        case mqtt::packet_type::publish:
            take_message(p.message);
            break;
        default:
            break;
        }
    }

    void take_message(mqtt::publish& m) {
        if (options_.counters && m.dup) {
            options_.counters->redelivered.fetch_add(1, std::memory_order_relaxed);
        }
        if (m.oversize || m.payload.size() > options_.payload_bytes_max) {
            if (options_.counters) {
                options_.counters->oversize_dropped.fetch_add(1, std::memory_order_relaxed);
            }
            if (m.qos == 1) {
                // Dropped by policy, so done with: acknowledged in its turn, after what came
                // before it is processed.
                if (!held_.empty()) {
                    held_.back().acks.push_back(m.packet_id);
                } else {
                    acks_.push_back({delivered_, m.packet_id});
                }
            }
            return;
        }
        held_message h;
        h.record = std::move(m.payload);
        h.record.push_back('\n');
        if (m.qos == 1) {
            h.acks.push_back(m.packet_id);
        }
        held_.push_back(std::move(h));
        if (options_.counters) {
            options_.counters->messages.fetch_add(1, std::memory_order_relaxed);
        }
    }

    void lose(std::string why) {
        if (!lost_) {
            loss_ = std::move(why);
            lost_ = true;
            outbox_.clear();
        }
    }

    environment& env_;
    mqtt_options options_; ///< a copy: the stream may outlive the source's members
    std::unique_ptr<byte_stream> tcp_;
    std::unique_ptr<timer> timer_;
    mqtt::packet_reader reader_;
    std::array<char, read_chunk_bytes> chunk_{};
    std::deque<held_message> held_; ///< received, not yet read; bounded by one read
    std::size_t offset_ = 0;        ///< bytes of held_.front() already read
    /// Read QoS 1 messages not yet acknowledged, in order; bounded by the source's buffers.
    std::deque<pending_ack> acks_;
    std::uint64_t delivered_; ///< the source's stream offset after the last whole record read
    std::string outbox_;
    time_point last_sent_;
    time_point last_received_;
    time_point ping_sent_{};
    bool ping_outstanding_ = false;
    bool connack_ = false;
    std::uint8_t connack_code_ = 0;
    bool suback_ = false;
    std::vector<std::uint8_t> granted_;
    bool lost_ = false;
    bool closed_ = false;
    std::string loss_; ///< why the connection was lost
};

} // namespace detail

mqtt_source::mqtt_source(environment& env, executor lane, mqtt_options options)
    : reopening_source(env, std::move(lane)), options_(std::move(options)) {
    SLUICE_ASSERT(!options_.topics.empty());
    SLUICE_ASSERT(options_.qos == 0 || options_.qos == 1);
    if (options_.tls) {
        tls_options tls = *options_.tls;
        if (tls.server_name.empty() && !is_ip_literal(options_.host)) {
            tls.server_name = options_.host; // the name the broker's certificate must carry
        }
        tls_ = std::make_shared<const tls_context>(tls, tls_role::client);
    }
}

std::string mqtt_source::describe() const {
    std::string topics;
    for (const auto& t : options_.topics) {
        topics += (topics.empty() ? "" : ",") + t;
    }
    return "mqtt " + options_.host + ":" + std::to_string(options_.port) + " " + topics;
}

std::string mqtt_source::error_detail() const {
    if (session_ != nullptr && !session_->loss().empty()) {
        return session_->loss();
    }
    return last_error_;
}

void mqtt_source::processed(std::uint64_t stream_bytes) {
    if (session_ != nullptr) {
        session_->acknowledge_through(stream_bytes);
    }
}

asio::awaitable<std::pair<std::string, std::string>> mqtt_source::look_up(const std::string& host) {
    // The lookup runs to its end on the blocking pool (getaddrinfo cannot be interrupted); a
    // cancellation (a stop) completes the wait at once and its result is dropped.
    struct lookup {
        std::string host;
        std::string address;
        std::string problem;
        std::atomic<bool> answered{false};
    };
    auto request = std::make_shared<lookup>();
    request->host = host;
    auto initiation = [this, request](auto handler) {
        using handler_type = decltype(handler);
        auto shared = std::make_shared<handler_type>(std::move(handler));
        auto slot = asio::get_associated_cancellation_slot(*shared);
        const executor lane = lane_;
        if (slot.is_connected()) {
            slot.assign([request, shared, lane](asio::cancellation_type_t) {
                if (!request->answered.exchange(true)) {
                    request->problem = "stopped during the lookup";
                    asio::post(lane, [shared] { (*shared)(); });
                }
            });
        }
        env_.post_blocking([request, shared, lane] {
            addrinfo hints{};
            hints.ai_family = AF_INET;
            hints.ai_socktype = SOCK_STREAM;
            addrinfo* found = nullptr;
            const int code = ::getaddrinfo(request->host.c_str(), nullptr, &hints, &found);
            std::string address;
            std::string problem;
            if (code != 0 || found == nullptr) {
                problem = code != 0 ? ::gai_strerror(code) : "no IPv4 address";
            } else {
                char text[INET_ADDRSTRLEN] = {};
                ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr,
                            text, sizeof(text));
                address = text;
            }
            if (found != nullptr) {
                ::freeaddrinfo(found);
            }
            if (!request->answered.exchange(true)) {
                request->address = std::move(address);
                request->problem = std::move(problem);
                asio::post(lane, [shared] { (*shared)(); });
            }
        });
    };
    auto looking = asio::async_initiate<decltype(asio::use_awaitable), void()>(
        std::move(initiation), asio::use_awaitable);
    co_await std::move(looking);
    co_return std::make_pair(request->problem, request->address);
}

asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>> mqtt_source::open_stream() {
    using answer = std::pair<error_code, std::unique_ptr<byte_stream>>;
    // The session before this one is closed (a reopen follows a close): its messages not yet
    // acknowledged come again in the new one.
    session_ = nullptr;
    if (!options_.clean_session && options_.client_id.empty()) {
        last_error_ = "a client_id is required when clean_session is false";
        co_return answer{make_error_code(boost::system::errc::invalid_argument), nullptr};
    }
    // One deadline for all of it: name lookup, TCP connect, CONNACK, SUBACK.
    const auto deadline = env_.now() + options_.handshake_timeout;
    const std::string where = options_.host + ":" + std::to_string(options_.port);
    std::string address = options_.host;
    if (!is_ip_literal(address)) {
        // Only a name lookup blocks: on the blocking pool, and a stop does not wait for it.
        auto looked_up = co_await look_up(options_.host);
        if (!looked_up.first.empty()) {
            last_error_ = "look up '" + options_.host + "': " + looked_up.first;
            co_return answer{asio::error::host_not_found, nullptr};
        }
        address = std::move(looked_up.second);
    }
    auto connected = co_await env_.connect(lane_, address, options_.port,
                                           std::max(duration{1}, deadline - env_.now()));
    if (connected.first) {
        last_error_ = "connect to " + where + ": " + connected.first.message();
        co_return answer{connected.first, nullptr};
    }
    if (tls_) {
        // The TLS handshake runs inside the session's first turns (CONNECT waits in its outbox
        // until it is over), under the same deadline.
        connected.second = tls_->wrap(env_, lane_, std::move(connected.second));
    }
    auto session = std::make_unique<detail::mqtt_session>(
        env_, lane_, options_, std::move(connected.second), bytes_read());
    if (auto problem = co_await session->handshake(deadline); !problem.empty()) {
        last_error_ = "connect to " + where + ": " + problem;
        co_return answer{asio::error::connection_aborted, nullptr};
    }
    if (options_.counters) {
        options_.counters->connects.fetch_add(1, std::memory_order_relaxed);
    }
    last_error_.clear();
    session_ = session.get();
    co_return answer{error_code{}, std::move(session)};
}

} // namespace sluice::runtime
