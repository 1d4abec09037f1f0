#include "sluice/mqtt/detail/mqtt_packets.hpp"

#include <algorithm>

namespace sluice::runtime::mqtt {

namespace {

/// Remaining length: 1 to 4 bytes, 7 bits each, least significant first (spec 2.2.3).
void put_length(std::string& out, std::size_t length) {
    do {
        auto digit = static_cast<std::uint8_t>(length % 128);
        length /= 128;
        if (length > 0) {
            digit |= 0x80U;
        }
        out.push_back(static_cast<char>(digit));
    } while (length > 0);
}

void put_u16(std::string& out, std::uint16_t v) {
    out.push_back(static_cast<char>(v >> 8U));
    out.push_back(static_cast<char>(v & 0xFFU));
}

void put_string(std::string& out, std::string_view s) {
    put_u16(out, static_cast<std::uint16_t>(s.size()));
    out.append(s);
}

std::string with_header(std::uint8_t first, const std::string& body) {
    std::string out(1, static_cast<char>(first));
    put_length(out, body.size());
    return out + body;
}

std::uint16_t u16(std::string_view s, std::size_t at) {
    return static_cast<std::uint16_t>((static_cast<std::uint8_t>(s[at]) << 8U) |
                                      static_cast<std::uint8_t>(s[at + 1]));
}

/// Largest remaining length the protocol allows (four length bytes).
constexpr std::uint64_t remaining_length_max = 268'435'455;

} // namespace

std::string connect_packet(std::string_view client_id, bool clean_session,
                           std::uint16_t keepalive_s) {
    std::string body;
    put_string(body, "MQTT");
    body.push_back(4); // protocol level 4: 3.1.1
    body.push_back(static_cast<char>(clean_session ? 0x02 : 0x00));
    put_u16(body, keepalive_s);
    put_string(body, client_id);
    return with_header(0x10, body);
}

std::string subscribe_packet(std::uint16_t packet_id, const std::vector<std::string>& topics,
                             int qos) {
    std::string body;
    put_u16(body, packet_id);
    for (const auto& topic : topics) {
        put_string(body, topic);
        body.push_back(static_cast<char>(qos));
    }
    return with_header(0x82, body); // SUBSCRIBE's fixed-header flags are 0010
}

std::string puback_packet(std::uint16_t packet_id) {
    std::string body;
    put_u16(body, packet_id);
    return with_header(0x40, body);
}

std::string pingreq_packet() {
    return {"\xC0\x00", 2};
}

std::string disconnect_packet() {
    return {"\xE0\x00", 2};
}

std::string_view connack_meaning(std::uint8_t code) noexcept {
    switch (code) {
    case 0:
        return "accepted";
    case 1:
        return "unacceptable protocol version (the broker does not speak MQTT 3.1.1)";
    case 2:
        return "identifier rejected (change client_id)";
    case 3:
        return "server unavailable";
    case 4:
        return "bad user name or password";
    case 5:
        return "not authorised";
    default:
        return "an unknown return code";
    }
}

void packet_reader::feed(std::span<const std::byte> bytes) {
    if (!error_.empty()) {
        return;
    }
    if (start_ > 0) { // what was read goes: the buffer holds at most one packet and a header
        buffer_.erase(0, start_);
        start_ = 0;
    }
    if (skipping_ > 0) { // payload of an oversize PUBLISH: not kept
        const std::size_t skip = std::min<std::uint64_t>(skipping_, bytes.size());
        skipping_ -= skip;
        bytes = bytes.subspan(skip);
    }
    buffer_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::optional<packet> packet_reader::fail(std::string why) {
    error_ = std::move(why);
    return std::nullopt;
}

std::optional<packet> packet_reader::next() {
    if (!error_.empty()) {
        return std::nullopt;
    }
    if (skipped_) {
        if (skipping_ > 0) {
            return std::nullopt;
        }
        auto done = std::move(skipped_);
        skipped_.reset();
        return done;
    }
    const std::string_view rest = std::string_view(buffer_).substr(start_);
    if (rest.size() < 2) {
        return std::nullopt;
    }
    std::uint64_t length = 0;
    std::size_t at = 1;
    for (unsigned shift = 0;; shift += 7) {
        if (at >= rest.size()) {
            return std::nullopt; // more length bytes to come
        }
        const auto digit = static_cast<std::uint8_t>(rest[at++]);
        length |= std::uint64_t{digit & 0x7FU} << shift;
        if ((digit & 0x80U) == 0) {
            break;
        }
        if (at == 5) {
            return fail("a remaining length longer than four bytes (not MQTT)");
        }
    }
    const auto first = static_cast<std::uint8_t>(rest[0]);
    const auto type = static_cast<packet_type>(first >> 4U);
    // A PUBLISH whose payload is over the limit: its header is enough (topic, packet id).
    const std::uint64_t header_max = 2 + 65535 + 2;
    if (type == packet_type::publish && length > payload_max_ + header_max) {
        if (rest.size() < at + std::min<std::uint64_t>(length, header_max)) {
            return std::nullopt;
        }
        const std::string_view head = rest.substr(at, header_max);
        packet p;
        p.type = packet_type::publish;
        const int qos = static_cast<int>((first >> 1U) & 3U);
        const std::size_t topic_end = 2 + u16(head, 0);
        const std::size_t header = topic_end + (qos > 0 ? 2 : 0);
        if (header > length) {
            return fail("a PUBLISH shorter than its own topic");
        }
        p.message.topic = std::string(head.substr(2, topic_end - 2));
        p.message.qos = qos;
        p.message.dup = (first & 0x08U) != 0;
        p.message.packet_id = qos > 0 ? u16(head, topic_end) : 0;
        p.message.oversize = true;
        p.message.payload_bytes = length - header;
        // What of the payload is here already is dropped now, the rest as it comes.
        const std::uint64_t here = rest.size() - at - header;
        const std::uint64_t payload_here = std::min<std::uint64_t>(here, length - header);
        start_ += at + header + payload_here;
        skipping_ = length - header - payload_here;
        if (skipping_ == 0) {
            return p;
        }
        skipped_ = std::move(p);
        return std::nullopt;
    }
    if (length > remaining_length_max) {
        return fail("a remaining length over the protocol's maximum");
    }
    if (rest.size() < at + length) {
        return std::nullopt;
    }
    packet p;
    if (!parse(first, rest.substr(at, length), p)) {
        return std::nullopt;
    }
    start_ += at + length;
    return p;
}

bool packet_reader::parse(std::uint8_t first, std::string_view body, packet& out) {
    out.type = static_cast<packet_type>(first >> 4U);
    switch (out.type) {
    case packet_type::connack:
        if (body.size() != 2) {
            error_ = "a CONNACK of " + std::to_string(body.size()) + " bytes (2 expected)";
            return false;
        }
        out.session_present = (static_cast<std::uint8_t>(body[0]) & 1U) != 0;
        out.connack_code = static_cast<std::uint8_t>(body[1]);
        return true;
    case packet_type::suback:
        if (body.size() < 3) {
            error_ = "a SUBACK without return codes";
            return false;
        }
        out.packet_id = u16(body, 0);
        for (std::size_t i = 2; i < body.size(); ++i) {
            out.granted.push_back(static_cast<std::uint8_t>(body[i]));
        }
        return true;
    case packet_type::publish: {
        const int qos = static_cast<int>((first >> 1U) & 3U);
        if (qos == 3) {
            error_ = "a PUBLISH with QoS 3";
            return false;
        }
        if (body.size() < 2 || body.size() < 2U + u16(body, 0) + (qos > 0 ? 2U : 0U)) {
            error_ = "a PUBLISH shorter than its own topic";
            return false;
        }
        const std::size_t topic_end = 2 + u16(body, 0);
        out.message.topic = std::string(body.substr(2, topic_end - 2));
        out.message.qos = qos;
        out.message.dup = (first & 0x08U) != 0;
        std::size_t payload_at = topic_end;
        if (qos > 0) {
            out.message.packet_id = u16(body, topic_end);
            payload_at += 2;
        }
        out.message.payload = std::string(body.substr(payload_at));
        out.message.payload_bytes = out.message.payload.size();
        return true;
    }
    case packet_type::pingresp:
        return true;
    default:
        error_ = "an unexpected packet of type " + std::to_string(first >> 4U) + " from the broker";
        return false;
    }
}

} // namespace sluice::runtime::mqtt
