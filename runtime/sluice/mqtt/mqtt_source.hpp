#pragma once
/// An MQTT source: an MQTT 3.1.1 client of its own on the source's lane, over the seam's TCP
/// stream (no library thread). Only a name lookup (a host that is not an IP address) runs on
/// the bounded blocking pool. Lookup, connect, CONNACK and SUBACK share one deadline
/// (`handshake_timeout`), and a stop ends any of them at once. Keepalive (PINGREQ, and a
/// PINGRESP within the keepalive) runs on the seam's timers. Each payload becomes one record
/// (the payload and '\n'). The server reopens the source with its capped backoff when the
/// broker is down or the connection drops.
///
/// Delivery: QoS 0 and 1. With `clean_session = false` and a fixed `client_id` the broker keeps
/// the subscription and queues QoS 1 messages while the source is disconnected. A QoS 1 message
/// is acknowledged (PUBACK, in the order received, as the protocol requires) only when
/// processing has finished with it — the sink returned for the buffer that holds its record and
/// for every earlier one (`source::processed`) — so a crash, a stop or a lost connection before
/// that leaves it unacknowledged, and the broker sends it again (flag DUP): at least once. Why
/// not libmosquitto, which the source used before: libmosquitto 2.0.11 (Debian 12) sends the
/// PUBACK inside its own read of the socket, when the message arrives, and has no call to
/// acknowledge later, so what a crash caught between receipt and processing was lost
/// (`crash.sluiced_killed_while_mqtt_qos1_delivers_loses_no_message` failed with it); Paho C
/// acknowledges when its callback returns, on a thread of its own, so it would need a blocked
/// library thread per source.
/// The source reads from the broker only when it holds nothing, so at most one read's worth
/// is held outside a buffer; a stop or a lost connection drops what is held (unacknowledged:
/// the broker keeps it), counted by `mqtt_counters::dropped_at_close`. Payloads longer than
/// `payload_bytes_max` are skipped without being kept, counted, and acknowledged in their turn
/// (policy: drop).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sluice/source/stream_sources.hpp"
#include "sluice/tls/tls.hpp"

namespace sluice::runtime {

struct mqtt_counters {
    std::atomic<std::uint64_t> messages{0};         ///< payloads received and kept
    std::atomic<std::uint64_t> oversize_dropped{0}; ///< payloads over payload_bytes_max
    std::atomic<std::uint64_t> connects{0};         ///< sessions established and subscribed
    std::atomic<std::uint64_t> dropped_at_close{0}; ///< held, not yet read, when the stream closed
    std::atomic<std::uint64_t> acknowledged{0};     ///< QoS 1 PUBACKs sent, each after processing
    std::atomic<std::uint64_t> redelivered{0};      ///< messages the broker sent again (DUP)
};

struct mqtt_options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 1883;
    std::string client_id;           ///< required when clean_session is false
    std::vector<std::string> topics; ///< subscriptions (wildcards allowed); at least one
    int qos = 1;                     ///< 0 or 1
    bool clean_session = false;      ///< false: the broker keeps the session while disconnected
    std::chrono::seconds keepalive{30};
    /// Name lookup, TCP connect, CONNACK and SUBACKs, together.
    duration handshake_timeout = std::chrono::seconds(5);
    std::uint32_t payload_bytes_max = 65536;
    std::shared_ptr<mqtt_counters> counters; ///< optional, shared with whoever wants to read them
    /// Set: the connection to the broker speaks TLS (sluice/tls/tls.hpp), the broker verified
    /// against ca_file (and server_name, or else the host when it is a name).
    std::optional<tls_options> tls;
};

namespace detail {
class mqtt_session;
}

class mqtt_source final : public reopening_source {
public:
    mqtt_source(environment& env, executor lane, mqtt_options options);
    source_kind kind() const noexcept override { return source_kind::mqtt; }
    std::string describe() const override;
    bool reconnects() const noexcept override { return true; }
    /// Why the last connect failed, or why the session open now was lost.
    std::string error_detail() const override;
    /// QoS 1: messages are acknowledged when processed.
    bool tracks_processed() const noexcept override { return options_.qos == 1; }
    void processed(std::uint64_t stream_bytes) override;

private:
    boost::asio::awaitable<std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    open_stream() override;
    /// The first IPv4 address of `host`, looked up on the blocking pool: {problem, address}.
    boost::asio::awaitable<std::pair<std::string, std::string>> look_up(const std::string& host);

    mqtt_options options_;
    std::shared_ptr<const tls_context> tls_; ///< when options_.tls
    std::string last_error_;
    /// The session open now (owned as the current stream); null between sessions.
    detail::mqtt_session* session_ = nullptr;
};

} // namespace sluice::runtime
