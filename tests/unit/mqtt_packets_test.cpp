// The MQTT 3.1.1 packets of the MQTT source: what it sends, byte for byte, and the reader of
// what brokers send — cut anywhere, oversize payloads skipped with their packet id kept, and
// malformed input an error that says what was wrong.
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/mqtt/detail/mqtt_packets.hpp"

using namespace sluice::runtime::mqtt;

namespace {

std::span<const std::byte> bytes(const std::string& s) {
    return std::as_bytes(std::span(s));
}

/// A PUBLISH as a broker sends it.
std::string publish_packet(const std::string& topic, const std::string& payload, int qos,
                           std::uint16_t id, bool dup = false) {
    std::string body;
    body.push_back(static_cast<char>(topic.size() >> 8U));
    body.push_back(static_cast<char>(topic.size() & 0xFFU));
    body += topic;
    if (qos > 0) {
        body.push_back(static_cast<char>(id >> 8U));
        body.push_back(static_cast<char>(id & 0xFFU));
    }
    body += payload;
    std::string out(1, static_cast<char>(0x30 | (qos << 1) | (dup ? 0x08 : 0)));
    std::size_t length = body.size();
    do {
        auto digit = static_cast<std::uint8_t>(length % 128);
        length /= 128;
        out.push_back(static_cast<char>(length > 0 ? digit | 0x80U : digit));
    } while (length > 0);
    return out + body;
}

std::vector<packet> drain(packet_reader& r) {
    std::vector<packet> out;
    while (auto p = r.next()) {
        out.push_back(std::move(*p));
    }
    return out;
}

} // namespace

TEST(mqtt_packets, what_the_source_sends_is_mqtt_3_1_1_byte_for_byte) {
    EXPECT_EQ(connect_packet("w7", false, 30),
              std::string("\x10\x0E\x00\x04MQTT\x04\x00\x00\x1E\x00\x02w7", 16));
    EXPECT_EQ(connect_packet("", true, 5)[9], '\x02') << "the clean-session flag";
    EXPECT_EQ(subscribe_packet(1, {"a/#", "b"}, 1), std::string("\x82\x0C\x00\x01\x00\x03"
                                                                "a/#\x01\x00\x01"
                                                                "b\x01",
                                                                14));
    EXPECT_EQ(puback_packet(0x1234), std::string("\x40\x02\x12\x34", 4));
    EXPECT_EQ(pingreq_packet(), std::string("\xC0\x00", 2));
    EXPECT_EQ(disconnect_packet(), std::string("\xE0\x00", 2));
}

TEST(mqtt_packets, packets_cut_anywhere_are_read_whole_and_in_order) {
    const std::string stream =
        std::string("\x20\x02\x01\x00", 4) + std::string("\x90\x03\x00\x01\x01", 5) +
        publish_packet("sensors/a", "21.5", 1, 7, true) +
        publish_packet("sensors/b", std::string(300, 'x'), 0, 0) + std::string("\xD0\x00", 2);
    for (std::size_t cut = 1; cut <= stream.size(); ++cut) {
        packet_reader r(65536);
        std::vector<packet> got;
        for (std::size_t at = 0; at < stream.size(); at += cut) {
            r.feed(bytes(stream.substr(at, cut)));
            for (auto& p : drain(r)) {
                got.push_back(std::move(p));
            }
        }
        ASSERT_EQ(r.error(), "");
        ASSERT_EQ(got.size(), 5U) << "cut every " << cut;
        EXPECT_EQ(got[0].type, packet_type::connack);
        EXPECT_TRUE(got[0].session_present);
        EXPECT_EQ(got[1].type, packet_type::suback);
        EXPECT_EQ(got[1].granted, std::vector<std::uint8_t>{1});
        EXPECT_EQ(got[2].message.topic, "sensors/a");
        EXPECT_EQ(got[2].message.payload, "21.5");
        EXPECT_EQ(got[2].message.packet_id, 7);
        EXPECT_TRUE(got[2].message.dup);
        EXPECT_EQ(got[3].message.payload.size(), 300U);
        EXPECT_EQ(got[3].message.qos, 0);
        EXPECT_EQ(got[4].type, packet_type::pingresp);
        EXPECT_EQ(r.buffered(), 0U);
    }
}

TEST(mqtt_packets, an_oversize_payload_is_skipped_unkept_and_its_packet_id_is_kept) {
    const std::string big = publish_packet("t", std::string(200000, 'y'), 1, 42);
    const std::string after = publish_packet("t", "ok", 1, 43);
    packet_reader r(1000);
    std::vector<packet> got;
    for (std::size_t at = 0; at < big.size() + after.size(); at += 4096) {
        r.feed(bytes((big + after).substr(at, 4096)));
        EXPECT_LT(r.buffered(), 70000U) << "the payload is not held";
        for (auto& p : drain(r)) {
            got.push_back(std::move(p));
        }
    }
    ASSERT_EQ(r.error(), "");
    ASSERT_EQ(got.size(), 2U);
    EXPECT_TRUE(got[0].message.oversize);
    EXPECT_EQ(got[0].message.packet_id, 42);
    EXPECT_EQ(got[0].message.payload_bytes, 200000U);
    EXPECT_EQ(got[1].message.payload, "ok");
    EXPECT_EQ(got[1].message.packet_id, 43);
}

TEST(mqtt_packets, malformed_input_is_an_error_that_names_the_problem) {
    const auto error_of = [](const std::string& input) {
        packet_reader r(65536);
        r.feed(bytes(input));
        drain(r);
        return r.error();
    };
    EXPECT_EQ(error_of(std::string("\x30\xFF\xFF\xFF\xFF\x01", 6)),
              "a remaining length longer than four bytes (not MQTT)");
    EXPECT_EQ(error_of(std::string("\x36\x03\x00\x01t", 5)), "a PUBLISH with QoS 3");
    EXPECT_EQ(error_of(std::string("\x32\x03\x00\x05t", 5)),
              "a PUBLISH shorter than its own topic");
    EXPECT_EQ(error_of(std::string("\x20\x03\x00\x00\x00", 5)),
              "a CONNACK of 3 bytes (2 expected)");
    EXPECT_EQ(error_of(std::string("\x10\x00", 2)),
              "an unexpected packet of type 1 from the broker");
    EXPECT_EQ(std::string(connack_meaning(5)), "not authorised");
}
