/// Properties of the generator record format (sluice/source/generator_records.hpp): the incremental
/// writer and the checker's fast path (a record equal to the expected text is accepted without
/// parsing) must agree byte for byte and verdict for verdict with the plain definitions —
/// format_generator_record, and parsing every record — including across digit-count boundaries
/// (9 → 10, 99 → 100, ...) and the 64-bit wrap.

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include "sluice/source/generator_records.hpp"

namespace {

using namespace sluice::runtime;

std::string formatted(std::uint64_t id, std::uint64_t first, std::uint64_t count) {
    std::string text;
    char record[generator_record_bytes_max];
    for (std::uint64_t k = 0; k < count; ++k) {
        text.append(record, format_generator_record(id, first + k, record));
    }
    return text;
}

/// A start just below a power of ten (or the 64-bit end), so a run crosses a digit boundary.
rc::Gen<std::uint64_t> interesting_start() {
    return rc::gen::oneOf(rc::gen::inRange<std::uint64_t>(0, 2000),
                          rc::gen::map(rc::gen::pair(rc::gen::inRange(1, 20),
                                                     rc::gen::inRange<std::uint64_t>(0, 300)),
                                       [](const std::pair<int, std::uint64_t>& p) {
                                           std::uint64_t power = 1;
                                           for (int i = 0; i < p.first; ++i) {
                                               power *= 10;
                                           }
                                           return power - 1 - std::min(p.second, power - 1);
                                       }),
                          rc::gen::map(rc::gen::inRange<std::uint64_t>(0, 300),
                                       [](std::uint64_t back) {
                                           return std::numeric_limits<std::uint64_t>::max() - back;
                                       }),
                          rc::gen::arbitrary<std::uint64_t>());
}

bool feed_all(generator_record_checker& checker, const std::string& text,
              const std::vector<std::size_t>& cuts) {
    // Cut only after newlines (feed takes complete records).
    bool good = true;
    std::size_t from = 0;
    for (const std::size_t cut : cuts) {
        const std::size_t nl = text.find('\n', std::min(cut, text.size()));
        if (nl == std::string::npos || nl + 1 <= from) {
            continue;
        }
        good = checker.feed(std::as_bytes(std::span(text.data() + from, nl + 1 - from))) && good;
        from = nl + 1;
    }
    if (from < text.size()) {
        good =
            checker.feed(std::as_bytes(std::span(text.data() + from, text.size() - from))) && good;
    }
    return good;
}

} // namespace

RC_GTEST_PROP(generator_records, the_writer_writes_what_format_generator_record_writes, ()) {
    const auto id = *rc::gen::oneOf(rc::gen::inRange<std::uint64_t>(0, 10000), interesting_start());
    const auto first = *interesting_start();
    const auto count = *rc::gen::inRange<std::uint64_t>(1, 400);
    generator_record_writer writer(id, first);
    std::string written;
    char record[generator_record_bytes_max];
    for (std::uint64_t k = 0; k < count; ++k) {
        written.append(record, writer.write_next(record));
    }
    RC_ASSERT(written == formatted(id, first, count));
    RC_ASSERT(writer.next() == first + count);
}

RC_GTEST_PROP(generator_records, records_bytes_counts_what_format_generator_record_writes, ()) {
    const auto id = *rc::gen::oneOf(rc::gen::inRange<std::uint64_t>(0, 10000), interesting_start());
    const auto first = *interesting_start();
    const auto count = *rc::gen::inRange<std::uint64_t>(0, 400);
    RC_ASSERT(generator_records_bytes(id, first, count) == formatted(id, first, count).size());
}

// The digit-count edges the generators above reach only by chance: ids and record numbers 0,
// around every power of ten and at the top of the range (where n wraps to 0).
TEST(generator_records, records_bytes_counts_every_digit_edge) {
    std::vector<std::uint64_t> edges = {0, 1, std::numeric_limits<std::uint64_t>::max() - 2};
    for (std::uint64_t power = 10;
         power != 0 && power <= std::numeric_limits<std::uint64_t>::max() / 10; power *= 10) {
        edges.insert(edges.end(), {power - 2, power - 1, power});
    }
    edges.insert(edges.end(), {10'000'000'000'000'000'000ULL - 1, 10'000'000'000'000'000'000ULL});
    for (const std::uint64_t id : edges) {
        for (const std::uint64_t first : edges) {
            for (const std::uint64_t count : {0ULL, 1ULL, 3ULL}) {
                ASSERT_EQ(generator_records_bytes(id, first, count),
                          formatted(id, first, count).size())
                    << "id " << id << ", first " << first << ", count " << count;
            }
        }
    }
}

RC_GTEST_PROP(generator_records, the_checker_accepts_every_correct_stream_however_it_is_cut, ()) {
    const auto id = *rc::gen::inRange<std::uint64_t>(0, 100000);
    const auto count = *rc::gen::inRange<std::uint64_t>(1, 3000);
    const std::string text = formatted(id, 0, count);
    const auto cuts = *rc::gen::container<std::vector<std::size_t>>(
        rc::gen::inRange<std::size_t>(0, text.size()));
    generator_record_checker checker;
    RC_ASSERT(feed_all(checker, text, cuts));
    RC_ASSERT(checker.ok());
    RC_ASSERT(checker.next_record() == count);
    RC_ASSERT(checker.generator_id() == static_cast<std::int64_t>(id));
}

RC_GTEST_PROP(generator_records, the_checker_reports_the_first_lost_duplicated_or_corrupted_record,
              ()) {
    const auto id = *rc::gen::inRange<std::uint64_t>(0, 1000);
    const auto count = *rc::gen::inRange<std::uint64_t>(3, 1500);
    const auto at = *rc::gen::inRange<std::uint64_t>(1, count - 1);
    const int fault = *rc::gen::inRange(0, 4);
    std::string text = formatted(id, 0, at);
    std::string expected_problem;
    const std::string rest = formatted(id, at, count - at);
    switch (fault) {
    case 0: // record `at` lost
        text += formatted(id, at + 1, count - at - 1);
        expected_problem = "record " + std::to_string(at + 1) + " of generator " +
                           std::to_string(id) + " where record " + std::to_string(at) + " of " +
                           std::to_string(id);
        break;
    case 1: // record at - 1 again
        text += formatted(id, at - 1, 1) + rest;
        expected_problem = "record " + std::to_string(at - 1) + " of generator " +
                           std::to_string(id) + " where record " + std::to_string(at) + " of " +
                           std::to_string(id);
        break;
    case 2: { // a digit of the value changed
        std::string bad = formatted(id, at, 1);
        const std::size_t digit = bad.size() - 2; // last digit of the value
        bad[digit] = bad[digit] == '9' ? '0' : static_cast<char>(bad[digit] + 1);
        text += bad + formatted(id, at + 1, count - at - 1);
        expected_problem = "record " + std::to_string(at) + " of generator " + std::to_string(id) +
                           " where record " + std::to_string(at) + " of " + std::to_string(id);
        break;
    }
    default: // a record from another generator
        text += formatted(id + 1, at, 1) + formatted(id, at + 1, count - at - 1);
        expected_problem = "record " + std::to_string(at) + " of generator " +
                           std::to_string(id + 1) + " where record " + std::to_string(at) + " of " +
                           std::to_string(id);
        break;
    }
    const auto cuts = *rc::gen::container<std::vector<std::size_t>>(
        rc::gen::inRange<std::size_t>(0, text.size()));
    generator_record_checker checker;
    RC_ASSERT(!feed_all(checker, text, cuts));
    RC_ASSERT(!checker.ok());
    RC_ASSERT(checker.problem().rfind(expected_problem, 0) == 0);
}

RC_GTEST_PROP(generator_records, padded_records_are_checked_padding_and_all, ()) {
    const auto id = *rc::gen::inRange<std::uint64_t>(0, 1000);
    const auto first = *interesting_start();
    const auto pad = *rc::gen::inRange<std::size_t>(1, 3000);
    const auto count = *rc::gen::inRange<std::uint64_t>(2, 300);
    generator_record_writer writer(id, 0, pad);
    generator_record_writer later(id, first, pad);
    std::string text;
    std::vector<char> record(writer.record_bytes_max());
    for (std::uint64_t k = 0; k < count; ++k) {
        const std::size_t size = writer.write_next(record.data());
        RC_ASSERT(size <= writer.record_bytes_max());
        text.append(record.data(), size);
    }
    // Any writer's record n: unpadded record n with ",<pad>" before its newline.
    const std::size_t size = later.write_next(record.data());
    std::string plain = formatted(id, first, 1);
    std::string field(1, ','); // built in place: "," + std::string(...) set off GCC 12's -Wrestrict
    field.append(generator_pad(first), pad);
    plain.insert(plain.size() - 1, field);
    RC_ASSERT(std::string(record.data(), size) == plain);

    const auto cuts = *rc::gen::container<std::vector<std::size_t>>(
        rc::gen::inRange<std::size_t>(0, text.size()));
    generator_record_checker good;
    RC_ASSERT(feed_all(good, text, cuts));
    RC_ASSERT(good.next_record() == count);

    // One padding character changed (never a newline or comma: the record stays well formed).
    const auto victim = *rc::gen::inRange<std::uint64_t>(1, count);
    const std::size_t record_start =
        text.find(std::to_string(id) + "," + std::to_string(victim) + ",");
    RC_PRE(record_start != std::string::npos);
    const std::size_t pad_at =
        text.find('\n', record_start) - 1 - *rc::gen::inRange<std::size_t>(0, pad);
    text[pad_at] = text[pad_at] == 'z' ? 'y' : 'z';
    generator_record_checker bad;
    RC_ASSERT(!feed_all(bad, text, cuts));
    RC_ASSERT(bad.problem() == "record " + std::to_string(victim) + " of generator " +
                                   std::to_string(id) + " has " + std::to_string(pad) +
                                   " padding bytes that are not the " + std::to_string(pad) +
                                   " expected (corrupted)");
}

TEST(generator_records, a_malformed_record_is_named_and_stops_the_span) {
    generator_record_checker checker;
    const std::string text = formatted(4, 0, 10) + "4,10,notanumber\n" + formatted(4, 11, 5);
    EXPECT_FALSE(checker.feed(std::as_bytes(std::span(text))));
    EXPECT_EQ(checker.problem(), "malformed record after record 10");
    EXPECT_EQ(checker.next_record(), 10U);
}
