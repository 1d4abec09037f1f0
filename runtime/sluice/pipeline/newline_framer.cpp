#include <cstring>

#include "sluice/pipeline/detail/byte_counts.hpp"
#include "sluice/pipeline/framer.hpp"

namespace sluice::runtime {

namespace {

// memchr/memrchr and count_bytes are vectorised; std::find over std::byte goes a byte at a
// time, and the search for the last newline scans up to a record's length per buffer.
class newline_framing final : public framer {
public:
    std::string_view name() const noexcept override { return "newline"; }

    carried_step continue_record(framing_state& state, std::span<const std::byte> bytes,
                                 std::size_t max) const override {
        const std::size_t n = bytes.size();
        const auto* found = static_cast<const std::byte*>(std::memchr(bytes.data(), '\n', n));
        carried_step step;
        if (found == nullptr) {
            if (state.skip_bytes == 0) {
                if (state.carry.size() + n > max) {
                    state.skip_bytes = framing_state::skip_to_end;
                    state.carry.clear();
                    ++step.dropped;
                } else {
                    state.carry.append(reinterpret_cast<const char*>(bytes.data()), n);
                }
            }
            step.consumed = n;
            return step;
        }
        const auto head = static_cast<std::size_t>(found - bytes.data());
        step.consumed = head + 1;
        if (state.skip_bytes != 0) {
            state.skip_bytes = 0; // the dropped record ends here
        } else if (state.carry.size() + head + 1 > max) {
            state.carry.clear();
            ++step.dropped;
        } else {
            state.carry.append(reinterpret_cast<const char*>(bytes.data()), head + 1);
            step.complete = true;
        }
        return step;
    }

    framed_records frame(framing_state& state, std::span<const std::byte> bytes,
                         std::size_t max) const override {
        const auto* last = static_cast<const std::byte*>(memrchr(bytes.data(), '\n', bytes.size()));
        const std::size_t complete =
            last == nullptr ? 0 : static_cast<std::size_t>(last - bytes.data()) + 1;
        framed_records framed;
        framed.records = bytes.first(complete);
        framed.count = count_bytes(framed.records, '\n', '\n').first;
        const auto tail = bytes.subspan(complete);
        if (tail.size() > max) {
            state.skip_bytes = framing_state::skip_to_end;
            ++framed.dropped;
        } else {
            state.carry.assign(reinterpret_cast<const char*>(tail.data()), tail.size());
        }
        return framed;
    }

    std::uint64_t count_in_payloads(std::span<const std::byte> records,
                                    std::byte value) const noexcept override {
        if (value == std::byte{'\n'}) {
            return 0; // a payload holds no delimiter
        }
        const auto c = static_cast<char>(value);
        return count_bytes(records, c, c).first;
    }

    bool may_end_record(std::span<const std::byte> bytes) const noexcept override {
        return !bytes.empty() && bytes.back() == std::byte{'\n'};
    }
};

} // namespace

const framer& newline_framer() noexcept {
    static const newline_framing instance;
    return instance;
}

} // namespace sluice::runtime
