#include "sluice/source/generator_records.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstring>
#include <string_view>

namespace sluice::runtime {

namespace {

/// Writes record `prefix.n()`'s value and newline after its prefix; returns the record's size.
std::size_t write_record(const generator_record_prefix& prefix, char* out) noexcept {
    // The whole prefix array in one fixed-size copy (inlined; a variable-size memcpy is a call
    // that cost a third of the record): `out` has room for it, the value overwrites the rest.
    static_assert(generator_record_prefix::capacity <= generator_record_bytes_max);
    std::memcpy(out, prefix.data(), generator_record_prefix::capacity);
    // Formatting the value as 32 bits is about a fifth cheaper than as 64.
    static_assert(generator_value_bound - 1 <= 0xFFFFFFFFULL);
    char* p = std::to_chars(out + prefix.size(), out + generator_record_bytes_max,
                            static_cast<std::uint32_t>(generator_value(prefix.id(), prefix.n())))
                  .ptr;
    *p++ = '\n';
    return static_cast<std::size_t>(p - out);
}

/// a[0, size) == b[0, size) for a record (size ≤ generator_record_bytes_max): 8-byte words,
/// the last one overlapping, inlined (memcmp's call cost as much as the rest of the check).
bool same_record(const char* a, const char* b, std::size_t size) noexcept {
    if (size < 8) {
        return std::memcmp(a, b, size) == 0;
    }
    const auto word = [](const char* p) {
        std::uint64_t w;
        std::memcpy(&w, p, sizeof w);
        return w;
    };
    std::uint64_t diff = word(a + size - 8) ^ word(b + size - 8);
    for (std::size_t i = 0; i + 8 < size; i += 8) {
        diff |= word(a + i) ^ word(b + i);
    }
    return diff == 0;
}

} // namespace

std::size_t format_generator_record(std::uint64_t id, std::uint64_t n, char* out) noexcept {
    generator_record_prefix prefix;
    prefix.reset(id, n);
    return write_record(prefix, out);
}

namespace {

/// Decimal digits of `value` (1 for 0), from its bit width and one comparison with a power
/// of ten instead of a division per digit (the simulator counts every record of every stream).
std::uint64_t decimal_digits(std::uint64_t value) noexcept {
    static constexpr std::array<std::uint64_t, 20> powers = [] {
        std::array<std::uint64_t, 20> p{};
        p[0] = 1;
        for (std::size_t i = 1; i < p.size(); ++i) {
            p[i] = p[i - 1] * 10;
        }
        return p;
    }();
    // value | 1 has the same digits (0 and 1 have one; no power of ten above 1 is odd) and a
    // nonzero bit width. (bit_width * 1233) >> 12 is floor(bit_width * log10 2): the digits of
    // 2^(bit_width - 1) less one, so at most one short of the answer.
    const std::uint64_t odd = value | 1U;
    const auto low = static_cast<std::size_t>((std::bit_width(odd) * 1233U) >> 12U);
    return low + (odd >= powers[low] ? 1U : 0U);
}

} // namespace

std::uint64_t generator_records_bytes(std::uint64_t id, std::uint64_t first,
                                      std::uint64_t count) noexcept {
    // Per record: id, n and value digits, two commas and the newline. n's digits change only at
    // powers of ten, so they are summed by runs; the value is a hash and counted one by one.
    // n wraps past 2^64 - 1 to 0, as the writer's does.
    const std::uint64_t fixed = decimal_digits(id) + 3;
    std::uint64_t bytes = 0;
    std::uint64_t n = first;
    std::uint64_t remaining = count;
    while (remaining > 0) {
        const std::uint64_t digits = decimal_digits(n);
        std::uint64_t run = ~n + 1; // to the wrap (n ≥ 10^19 here when digits is 20)
        if (digits < 20) {
            std::uint64_t next_power = 1;
            for (std::uint64_t d = 0; d < digits; ++d) {
                next_power *= 10;
            }
            run = next_power - n;
        }
        run = std::min(run, remaining);
        bytes += run * (fixed + digits);
        for (std::uint64_t k = 0; k < run; ++k, ++n) {
            bytes += decimal_digits(generator_value(id, n));
        }
        remaining -= run;
    }
    return bytes;
}

void generator_record_prefix::reset(std::uint64_t id, std::uint64_t n) noexcept {
    id_ = id;
    n_ = n;
    char* const end = text_.data() + text_.size();
    char* p = std::to_chars(text_.data(), end, id).ptr;
    id_size_ = static_cast<std::uint8_t>(p - text_.data());
    *p++ = ',';
    p = std::to_chars(p, end, n).ptr;
    *p++ = ',';
    size_ = static_cast<std::uint8_t>(p - text_.data());
}

void generator_record_prefix::advance() noexcept {
    ++n_;
    if (n_ == 0) { // wrapped: the text grows shorter
        reset(id_, n_);
        return;
    }
    // n's digits are text_[id_size_ + 1, size_ - 1); increment from the last one.
    std::size_t i = size_ - 2U;
    while (i > id_size_ && text_[i] == '9') {
        text_[i] = '0';
        --i;
    }
    if (i > id_size_) {
        ++text_[i];
        return;
    }
    // All nines: one more digit, "1" then zeros.
    text_[id_size_ + 1U] = '1';
    text_[size_ - 1U] = '0';
    text_[size_] = ',';
    ++size_;
}

const char* generator_pad(std::uint64_t n) noexcept {
    constexpr std::size_t period = sizeof generator_pad_alphabet - 1;
    static const std::string pattern = [] {
        std::string text;
        text.reserve(generator_pad_bytes_max + period);
        for (std::size_t i = 0; i < generator_pad_bytes_max + period; ++i) {
            text += generator_pad_alphabet[i % period];
        }
        return text;
    }();
    return pattern.data() + n % period;
}

generator_record_writer::generator_record_writer(std::uint64_t id, std::uint64_t first,
                                                 std::size_t pad_bytes) noexcept
    : pad_bytes_(std::min(pad_bytes, generator_pad_bytes_max)) {
    prefix_.reset(id, first);
}

std::size_t generator_record_writer::write_next(char* out) noexcept {
    std::size_t size = write_record(prefix_, out);
    if (pad_bytes_ != 0) {
        out[size - 1] = ','; // the newline moves after the padding
        std::memcpy(out + size, generator_pad(prefix_.n()), pad_bytes_);
        size += pad_bytes_;
        out[size++] = '\n';
    }
    prefix_.advance();
    return size;
}

void generator_record_checker::note(std::string problem) {
    if (problem_.empty()) {
        problem_ = std::move(problem);
    }
}

bool generator_record_checker::feed(std::span<const std::byte> complete_records) {
    const auto* text = reinterpret_cast<const char*>(complete_records.data());
    const char* const end = text + complete_records.size();
    bool all_good = true;
    while (text < end) {
        if (generator_id_ >= 0) {
            // The common case: the record is exactly the one expected.
            char record[generator_record_bytes_max];
            const std::size_t size = write_record(expected_, record);
            // Padded: the head ends in ',' instead of '\n', then the padding and '\n' (as
            // generator_record_writer::write_next lays it out).
            const std::size_t total = size + (pad_bytes_ == 0 ? 0 : pad_bytes_ + 1);
            bool same = static_cast<std::size_t>(end - text) >= total;
            if (same && pad_bytes_ != 0) {
                record[size - 1] = ',';
                same = text[total - 1] == '\n' &&
                       std::memcmp(text + size, generator_pad(next_record_), pad_bytes_) == 0;
            }
            if (same && same_record(text, record, size)) {
                text += total;
                ++next_record_;
                expected_.advance();
                continue;
            }
        }
        if (!check_parsed(text, end, all_good)) {
            return false;
        }
        if (generator_id_ >= 0) {
            expected_.reset(static_cast<std::uint64_t>(generator_id_), next_record_);
        }
    }
    return all_good;
}

bool generator_record_checker::check_parsed(const char*& text, const char* end, bool& all_good) {
    std::uint64_t field[3] = {0, 0, 0};
    bool parsed = true;
    for (int f = 0; f < 3 && parsed; ++f) {
        const auto [next, error] = std::from_chars(text, end, field[f]);
        parsed = error == std::errc{} && next < end &&
                 (*next == (f < 2 ? ',' : '\n') || (f == 2 && *next == ','));
        text = parsed ? next + 1 : next;
    }
    // An optional fourth field: the padding, up to the newline.
    const char* pad = text;
    std::size_t pad_size = 0;
    if (parsed && text[-1] == ',') {
        const auto* nl = static_cast<const char*>(
            std::memchr(text, '\n',
                        std::min<std::size_t>(static_cast<std::size_t>(end - text),
                                              generator_pad_bytes_max + 1)));
        parsed = nl != nullptr && nl > text;
        if (parsed) {
            pad_size = static_cast<std::size_t>(nl - text);
            text = nl + 1;
        }
    }
    if (!parsed) {
        note("malformed record after record " + std::to_string(next_record_));
        return false; // cannot resynchronise inside this span
    }
    if (generator_id_ < 0) {
        generator_id_ = static_cast<std::int64_t>(field[0]);
        pad_bytes_ = pad_size;
    }
    if (static_cast<std::int64_t>(field[0]) != generator_id_ || field[1] != next_record_ ||
        field[2] != generator_value(field[0], field[1])) {
        note("record " + std::to_string(field[1]) + " of generator " + std::to_string(field[0]) +
             " where record " + std::to_string(next_record_) + " of " +
             std::to_string(generator_id_) +
             " was expected (lost, duplicated, reordered or corrupted)");
        all_good = false;
    } else if (pad_size != pad_bytes_ || std::memcmp(pad, generator_pad(field[1]), pad_size) != 0) {
        note("record " + std::to_string(field[1]) + " of generator " + std::to_string(field[0]) +
             " has " + std::to_string(pad_size) + " padding bytes that are not the " +
             std::to_string(pad_bytes_) + " expected (corrupted)");
        all_good = false;
    }
    next_record_ = field[1] + 1;
    return true;
}

} // namespace sluice::runtime
