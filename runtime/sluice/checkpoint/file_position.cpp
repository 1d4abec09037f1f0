#include "sluice/checkpoint/file_position.hpp"

#include <charconv>
#include <cstdio>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace sluice::runtime {

namespace {

constexpr std::string_view header = "sluice-checkpoint 1 file\n";

std::string hex64(std::uint64_t v) {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
    return text;
}

std::uint64_t checksum(std::string_view body) {
    return XXH3_64bits(body.data(), body.size());
}

/// Paths and keys on one line: '%', control characters and DEL percent-encoded.
std::string escape(std::string_view text) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (const char c : text) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7F || c == '%') {
            out += '%';
            out += hex[u >> 4U];
            out += hex[u & 15U];
        } else {
            out += c;
        }
    }
    return out;
}

std::optional<std::string> unescape(std::string_view text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        unsigned value = 0;
        if (i + 2 >= text.size()) {
            return std::nullopt;
        }
        const auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
        if (ec != std::errc{} || end != text.data() + i + 3) {
            return std::nullopt;
        }
        out += static_cast<char>(value);
        i += 2;
    }
    return out;
}

bool parse_u64(std::string_view text, int base, std::uint64_t& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, base);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

} // namespace

std::string encode_file_position(const file_position& position, std::string_view key) {
    std::string body(header);
    body += "key " + escape(key) + "\n";
    body += "path " + escape(position.path) + "\n";
    body += "device " + std::to_string(position.device) + "\n";
    body += "inode " + std::to_string(position.inode) + "\n";
    body += "offset " + std::to_string(position.offset) + "\n";
    return body + "xxh3 " + hex64(checksum(body)) + "\n";
}

decoded_file_position decode_file_position(std::string_view value, std::string_view key,
                                           const std::string& where) {
    decoded_file_position result;
    const auto fail = [&](const std::string& why) {
        result.error = "the checkpoint " + where + " " + why;
        return result;
    };
    if (!value.starts_with(header)) {
        return fail("is not a sluice file checkpoint (its first line is not \"" +
                    std::string(header.substr(0, header.size() - 1)) +
                    "\"): move it away to read the file from the start");
    }
    const std::size_t sum_at = value.rfind("xxh3 ");
    std::uint64_t stored = 0;
    if (sum_at == std::string_view::npos || !value.ends_with("\n") ||
        !parse_u64(value.substr(sum_at + 5, value.size() - sum_at - 6), 16, stored) ||
        stored != checksum(value.substr(0, sum_at))) {
        return fail("is corrupt (its checksum does not match): restore it, or move it away to "
                    "read the file from the start");
    }
    std::vector<std::pair<std::string_view, std::string_view>> fields;
    std::string_view rest = value.substr(header.size(), sum_at - header.size());
    while (!rest.empty()) {
        const std::size_t eol = rest.find('\n');
        const std::string_view line = rest.substr(0, eol);
        rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
        const std::size_t space = line.find(' ');
        if (space == std::string_view::npos) {
            return fail("has a line without a value");
        }
        fields.emplace_back(line.substr(0, space), line.substr(space + 1));
    }
    if (fields.size() != 5 || fields[0].first != "key" || fields[1].first != "path" ||
        fields[2].first != "device" || fields[3].first != "inode" || fields[4].first != "offset") {
        return fail("does not have the fields key, path, device, inode and offset");
    }
    const auto stored_key = unescape(fields[0].second);
    const auto path = unescape(fields[1].second);
    file_position p;
    if (!stored_key || !path || !parse_u64(fields[2].second, 10, p.device) ||
        !parse_u64(fields[3].second, 10, p.inode) || !parse_u64(fields[4].second, 10, p.offset)) {
        return fail("has a malformed value");
    }
    if (*stored_key != key) {
        return fail("belongs to the source '" + *stored_key + "', not to '" + std::string(key) +
                    "': move it away or fix the source's name");
    }
    p.path = *path;
    result.position = std::move(p);
    return result;
}

} // namespace sluice::runtime
