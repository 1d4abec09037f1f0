#pragma once
/// The generator record format and its oracle. Record n of generator `id` is
/// `"<id>,<n>,<value>\n"` with `value = generator_value(id, n)`; a receiver that checks every
/// record (contiguous n from 0, one id, the right value) knows nothing was lost, duplicated,
/// reordered or corrupted. Pure and tiny: the generator, the load generator, the test sinks and
/// the simulator all use this one definition.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace sluice::runtime {

/// Every generator value is below this (a prime, so values spread evenly).
inline constexpr std::uint64_t generator_value_bound = 1000000007ULL;

/// The deterministic third field of record n.
constexpr std::uint64_t generator_value(std::uint64_t id, std::uint64_t n) noexcept {
    std::uint64_t x = (id + 1) * 0x9E3779B97F4A7C15ULL ^ (n + 0x632BE59BD9B4E019ULL);
    x ^= x >> 31U;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 29U;
    return x % generator_value_bound;
}

/// Longest record `format_generator_record` writes.
inline constexpr std::size_t generator_record_bytes_max = 64;

/// Writes record n into `out` (at least generator_record_bytes_max long); returns its size.
std::size_t format_generator_record(std::uint64_t id, std::uint64_t n, char* out) noexcept;

/// Total bytes of records [first, first + count) of generator `id`, without formatting them
/// (digit counts only): what writing them with format_generator_record would produce.
/// Record numbers wrap past 2^64 - 1 to 0, as the writer's do.
std::uint64_t generator_records_bytes(std::uint64_t id, std::uint64_t first,
                                      std::uint64_t count) noexcept;

/// The text `"<id>,<n>,"` that starts record n, kept as text and advanced to n + 1 by a decimal
/// increment: writing or checking a generator's records in order then formats only the value.
class generator_record_prefix {
public:
    static constexpr std::size_t capacity = 48; ///< 20 + 1 + 20 + 1 digits and commas at most

    void reset(std::uint64_t id, std::uint64_t n) noexcept;
    void advance() noexcept; ///< to record n + 1
    std::uint64_t id() const noexcept { return id_; }
    std::uint64_t n() const noexcept { return n_; }
    const char* data() const noexcept { return text_.data(); }
    std::size_t size() const noexcept { return size_; }

private:
    std::uint64_t id_ = 0;
    std::uint64_t n_ = 0;
    std::array<char, capacity> text_{};
    std::uint8_t size_ = 0;
    std::uint8_t id_size_ = 0;
};

/// Padded records, for measuring with records of a realistic size: a fourth field of
/// `pad_bytes` characters, `"<id>,<n>,<value>,<pad>\n"`, where pad character i of record n is
/// generator_pad_alphabet[(n + i) % its size], so a receiver checks the padding too.
inline constexpr std::size_t generator_pad_bytes_max = 65536;
inline constexpr char generator_pad_alphabet[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// The padding of record n: `pad_bytes` characters starting here.
const char* generator_pad(std::uint64_t n) noexcept;

/// Writes one generator's records in order from record `first`: byte for byte what
/// format_generator_record writes (with pad_bytes = 0), about 30% faster.
class generator_record_writer {
public:
    explicit generator_record_writer(std::uint64_t id, std::uint64_t first = 0,
                                     std::size_t pad_bytes = 0) noexcept;
    /// Writes record next() into `out` (at least record_bytes_max() long), advances, and
    /// returns the record's size.
    std::size_t write_next(char* out) noexcept;
    std::uint64_t next() const noexcept { return prefix_.n(); }
    /// The longest record this writer writes.
    std::size_t record_bytes_max() const noexcept {
        return generator_record_bytes_max + (pad_bytes_ == 0 ? 0 : pad_bytes_ + 1);
    }

private:
    generator_record_prefix prefix_;
    std::size_t pad_bytes_ = 0;
};

/// Checks the records of one origin as they arrive, in order. Records may be padded; the
/// padding size is learnt from the first record, and every record must then carry the same
/// size and the right characters.
class generator_record_checker {
public:
    /// Checks complete records (each ending in '\n'). Returns false at the first bad one and
    /// keeps the first problem; later records are still counted.
    bool feed(std::span<const std::byte> complete_records);

    bool ok() const noexcept { return problem_.empty(); }
    /// Before the first feed: the first record expected is `record`, not 0 (a stream resumed
    /// from a checkpoint).
    void start_at(std::uint64_t record) noexcept { next_record_ = record; }
    /// What was wrong first, for a violation message; empty when ok.
    const std::string& problem() const noexcept { return problem_; }
    /// The record number expected next (= records seen, when ok).
    std::uint64_t next_record() const noexcept { return next_record_; }
    /// The generator id of the first record, or -1 before any.
    std::int64_t generator_id() const noexcept { return generator_id_; }

private:
    /// Parses and checks one record at `text`; false if it is malformed.
    bool check_parsed(const char*& text, const char* end, bool& all_good);
    void note(std::string problem);

    std::int64_t generator_id_ = -1;
    std::size_t pad_bytes_ = 0; ///< learnt from the first record
    std::uint64_t next_record_ = 0;
    std::string problem_;
    /// The expected record's prefix while generator_id_ is known: a record equal to the
    /// expected text is accepted without parsing; anything else is parsed and judged.
    generator_record_prefix expected_;
};

} // namespace sluice::runtime
