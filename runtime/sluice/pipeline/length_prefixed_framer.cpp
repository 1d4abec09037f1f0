#include <algorithm>

#include "sluice/pipeline/detail/byte_counts.hpp"
#include "sluice/pipeline/framer.hpp"

namespace sluice::runtime {

namespace {

constexpr std::size_t header_bytes = 4;

std::uint32_t read_be32(const std::byte* p) noexcept {
    return (std::to_integer<std::uint32_t>(p[0]) << 24U) |
           (std::to_integer<std::uint32_t>(p[1]) << 16U) |
           (std::to_integer<std::uint32_t>(p[2]) << 8U) | std::to_integer<std::uint32_t>(p[3]);
}

class length_prefixed_framing final : public framer {
public:
    std::string_view name() const noexcept override { return "length_prefixed"; }

    carried_step continue_record(framing_state& state, std::span<const std::byte> bytes,
                                 std::size_t max) const override {
        const std::size_t n = bytes.size();
        carried_step step;
        if (state.skip_bytes > 0) {
            const std::size_t skip = std::min<std::uint64_t>(state.skip_bytes, n);
            state.skip_bytes -= skip;
            step.consumed = skip;
            return step;
        }
        std::size_t pos = 0;
        while (pos < n && state.carry.size() < header_bytes) {
            state.carry.push_back(static_cast<char>(bytes[pos++]));
        }
        if (state.carry.size() >= header_bytes) {
            const std::size_t total =
                header_bytes + read_be32(reinterpret_cast<const std::byte*>(state.carry.data()));
            if (total > max) {
                ++step.dropped;
                const std::size_t skip = std::min(total - state.carry.size(), n - pos);
                state.skip_bytes = total - state.carry.size() - skip;
                pos += skip;
                state.carry.clear();
            } else {
                const std::size_t take = std::min(total - state.carry.size(), n - pos);
                state.carry.append(reinterpret_cast<const char*>(bytes.data() + pos), take);
                pos += take;
                step.complete = state.carry.size() == total;
            }
        }
        step.consumed = pos;
        return step;
    }

    framed_records frame(framing_state& state, std::span<const std::byte> bytes,
                         std::size_t max) const override {
        const std::size_t n = bytes.size();
        framed_records framed;
        std::size_t pos = 0;
        while (pos + header_bytes <= n) {
            const std::size_t total = header_bytes + read_be32(bytes.data() + pos);
            if (pos + total > n) {
                break;
            }
            ++framed.count;
            pos += total;
        }
        framed.records = bytes.first(pos);
        const auto tail = bytes.subspan(pos);
        if (tail.size() >= header_bytes && header_bytes + read_be32(tail.data()) > max) {
            ++framed.dropped;
            state.skip_bytes = header_bytes + read_be32(tail.data()) - tail.size();
        } else {
            state.carry.assign(reinterpret_cast<const char*>(tail.data()), tail.size());
        }
        return framed;
    }

    /// One vectorised count over the whole span, less what the headers hold: faster than a
    /// count per frame when frames are short, as they mostly are.
    std::uint64_t count_in_payloads(std::span<const std::byte> records,
                                    std::byte value) const noexcept override {
        const auto c = static_cast<char>(value);
        std::uint64_t found = count_bytes(records, c, c).first;
        std::size_t pos = 0;
        while (pos + header_bytes <= records.size()) {
            for (std::size_t i = 0; i < header_bytes; ++i) {
                found -= records[pos + i] == value ? 1U : 0U;
            }
            pos += header_bytes + read_be32(records.data() + pos);
        }
        return found;
    }
};

} // namespace

const framer& length_prefixed_framer() noexcept {
    static const length_prefixed_framing instance;
    return instance;
}

} // namespace sluice::runtime
