#pragma once
/// Internal: the MQTT 3.1.1 packets the MQTT source needs (OASIS standard, 29 October 2014):
/// the ones it sends (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT) and a reader for the
/// ones it receives (CONNACK, SUBACK, PUBLISH, PINGRESP). The reader takes bytes as they come
/// and yields whole packets; a PUBLISH larger than the limit is not kept: the reader keeps its
/// header (topic and packet id, so it can be acknowledged in order) and skips its payload.
/// Anything malformed is an error that names what was wrong; the connection then ends.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::runtime::mqtt {

enum class packet_type : std::uint8_t {
    connect = 1,
    connack = 2,
    publish = 3,
    puback = 4,
    subscribe = 8,
    suback = 9,
    pingreq = 12,
    pingresp = 13,
    disconnect = 14,
};

std::string connect_packet(std::string_view client_id, bool clean_session,
                           std::uint16_t keepalive_s);
std::string subscribe_packet(std::uint16_t packet_id, const std::vector<std::string>& topics,
                             int qos);
std::string puback_packet(std::uint16_t packet_id);
std::string pingreq_packet();
std::string disconnect_packet();

/// A received PUBLISH.
struct publish {
    std::string topic;
    std::string payload;         ///< empty when `oversize`
    std::uint16_t packet_id = 0; ///< QoS 1 only
    int qos = 0;
    bool dup = false;              ///< the broker sends it again (after a reconnect)
    bool oversize = false;         ///< its payload was over the limit and was skipped
    std::size_t payload_bytes = 0; ///< as sent, also when skipped
};

/// One received packet other than PUBLISH, or a PUBLISH.
struct packet {
    packet_type type = packet_type::pingresp;
    std::uint8_t connack_code = 0;     ///< CONNACK: 0 accepted
    bool session_present = false;      ///< CONNACK
    std::uint16_t packet_id = 0;       ///< SUBACK
    std::vector<std::uint8_t> granted; ///< SUBACK: per topic, 0–2 or 0x80 (refused)
    publish message;                   ///< PUBLISH
};

/// What CONNACK's return code means.
std::string_view connack_meaning(std::uint8_t code) noexcept;

class packet_reader {
public:
    /// Payloads longer than this are skipped (`publish::oversize`).
    explicit packet_reader(std::size_t payload_bytes_max) : payload_max_(payload_bytes_max) {}

    /// Appends received bytes.
    void feed(std::span<const std::byte> bytes);
    /// The next whole packet, or nothing until more bytes come. After an error (`error()` not
    /// empty) it yields nothing more.
    std::optional<packet> next();
    const std::string& error() const noexcept { return error_; }
    /// Bytes held, not yet a whole packet (bounded by the limit plus one header).
    std::size_t buffered() const noexcept { return buffer_.size() - start_; }

private:
    /// Parses a whole packet's body; false (with error_) when malformed.
    bool parse(std::uint8_t first, std::string_view body, packet& out);
    std::optional<packet> fail(std::string why);

    std::size_t payload_max_;
    std::string buffer_;
    std::size_t start_ = 0; ///< where the unread bytes begin in buffer_
    /// A PUBLISH being skipped: its header was parsed, this many payload bytes are still to go.
    std::uint64_t skipping_ = 0;
    std::optional<packet> skipped_; ///< that PUBLISH, yielded once its payload is past
    std::string error_;
};

} // namespace sluice::runtime::mqtt
