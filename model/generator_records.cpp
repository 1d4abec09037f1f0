#include "model/generator_records.hpp"

#include <charconv>
#include <string_view>

namespace sluice::model {

std::size_t format_generator_record(std::uint64_t id, std::uint64_t n, char* out) noexcept {
    char* end = out + generator_record_bytes_max;
    char* p = std::to_chars(out, end, id).ptr;
    *p++ = ',';
    p = std::to_chars(p, end, n).ptr;
    *p++ = ',';
    p = std::to_chars(p, end, generator_value(id, n)).ptr;
    *p++ = '\n';
    return static_cast<std::size_t>(p - out);
}

bool generator_record_checker::feed(std::span<const std::byte> complete_records) {
    const auto* text = reinterpret_cast<const char*>(complete_records.data());
    const char* const end = text + complete_records.size();
    bool all_good = true;
    while (text < end) {
        std::uint64_t field[3] = {0, 0, 0};
        bool parsed = true;
        for (int f = 0; f < 3 && parsed; ++f) {
            const auto [next, error] = std::from_chars(text, end, field[f]);
            parsed = error == std::errc{} && next < end && *next == (f < 2 ? ',' : '\n');
            text = parsed ? next + 1 : next;
        }
        if (!parsed) {
            if (problem_.empty()) {
                problem_ = "malformed record after record " + std::to_string(next_record_);
            }
            return false; // cannot resynchronise inside this span
        }
        if (generator_id_ < 0) {
            generator_id_ = static_cast<std::int64_t>(field[0]);
        }
        if (static_cast<std::int64_t>(field[0]) != generator_id_ || field[1] != next_record_ ||
            field[2] != generator_value(field[0], field[1])) {
            if (problem_.empty()) {
                problem_ = "record " + std::to_string(field[1]) + " of generator " +
                           std::to_string(field[0]) + " where record " +
                           std::to_string(next_record_) + " of " + std::to_string(generator_id_) +
                           " was expected (lost, duplicated, reordered or corrupted)";
            }
            all_good = false;
        }
        next_record_ = field[1] + 1;
    }
    return all_good;
}

} // namespace sluice::model
