// libFuzzer target: the MQTT source's packet reader (sluice/mqtt/detail/mqtt_packets). The
// stream is read twice, whole and cut at fuzzer-chosen sizes; both must yield the same packets
// and the same error (a reader that depends on where TCP cut the bytes loses or invents
// messages), and what the reader holds stays under one packet's header and the payload limit.
//
// Input: byte 0 = the payload limit (16 << (byte % 12)), byte 1 = seed of the cut sizes; the
// rest is what a broker sent.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "sluice/mqtt/detail/mqtt_packets.hpp"

namespace {

using namespace sluice::runtime::mqtt;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_mqtt_packets: %s\n", what.c_str());
    std::abort();
}

/// What a packet says, as text, for comparing two readings.
std::string summary(const packet& p) {
    std::string s = std::to_string(static_cast<int>(p.type)) + "|" +
                    std::to_string(p.connack_code) + "|" + std::to_string(p.packet_id) + "|";
    for (const auto g : p.granted) {
        s += std::to_string(g) + ",";
    }
    const publish& m = p.message;
    return s + "|" + m.topic + "|" + m.payload + "|" + std::to_string(m.packet_id) + "|" +
           std::to_string(m.qos) + (m.dup ? "d" : "") + (m.oversize ? "o" : "") +
           std::to_string(m.payload_bytes);
}

std::vector<std::string> read_all(std::span<const std::byte> stream, std::size_t limit,
                                  std::uint32_t cut_seed, std::string& error) {
    packet_reader reader(limit);
    std::vector<std::string> out;
    std::uint32_t state = cut_seed | 1U;
    std::size_t at = 0;
    while (at < stream.size()) {
        std::size_t n = stream.size() - at;
        if (cut_seed != 0) {
            state = state * 1103515245U + 12345U;
            n = std::min<std::size_t>(n, 1 + (state >> 16U) % 97);
        }
        reader.feed(stream.subspan(at, n));
        at += n;
        while (auto p = reader.next()) {
            out.push_back(summary(*p));
        }
        if (reader.buffered() > limit + 2 + 65535 + 2 + 5 + n) {
            fail("the reader holds " + std::to_string(reader.buffered()) + " bytes");
        }
    }
    error = reader.error();
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    const std::size_t limit = std::size_t{16} << (data[0] % 12U);
    const std::uint32_t seed = data[1] == 0 ? 1U : data[1];
    const auto stream = std::as_bytes(std::span(data + 2, size - 2));
    std::string whole_error;
    std::string cut_error;
    const auto whole = read_all(stream, limit, 0, whole_error);
    const auto cut = read_all(stream, limit, seed, cut_error);
    if (whole != cut || whole_error != cut_error) {
        fail("reading in pieces gave " + std::to_string(cut.size()) + " packets and '" + cut_error +
             "', whole " + std::to_string(whole.size()) + " and '" + whole_error + "'");
    }
    return 0;
}
