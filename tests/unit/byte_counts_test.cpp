/// Each byte counter (scalar, SSE2, AVX2 where the CPU has it, and the dispatching one) against
/// std::count: every length from 0 to 600 at every alignment within 32 bytes, inputs dense with
/// the counted bytes (every 8-bit lane counting every block up to the fold at 255 blocks), and
/// long runs across several folds.

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pipeline/detail/byte_counts.hpp"

namespace {

using namespace sluice::runtime;

using counter = byte_counts (*)(std::span<const std::byte>, char, char) noexcept;

std::vector<std::pair<const char*, counter>> counters() {
    std::vector<std::pair<const char*, counter>> all = {{"scalar", &count_bytes_scalar},
                                                        {"sse2", &count_bytes_sse2},
                                                        {"wide", &count_bytes_wide},
                                                        {"inline", &count_bytes}};
    if (cpu_has_avx2()) {
        all.emplace_back("avx2", &count_bytes_avx2);
    }
    return all;
}

void expect_counts(const std::string& text, std::size_t offset, std::size_t length) {
    const auto bytes = std::as_bytes(std::span(text.data() + offset, length));
    const auto expected_nl = static_cast<std::uint64_t>(
        std::count(text.begin() + static_cast<std::ptrdiff_t>(offset),
                   text.begin() + static_cast<std::ptrdiff_t>(offset + length), '\n'));
    const auto expected_comma = static_cast<std::uint64_t>(
        std::count(text.begin() + static_cast<std::ptrdiff_t>(offset),
                   text.begin() + static_cast<std::ptrdiff_t>(offset + length), ','));
    for (const auto& [name, count] : counters()) {
        const byte_counts got = count(bytes, '\n', ',');
        ASSERT_EQ(got.first, expected_nl) << name << " offset " << offset << " length " << length;
        ASSERT_EQ(got.second, expected_comma)
            << name << " offset " << offset << " length " << length;
    }
}

} // namespace

TEST(byte_counts, every_length_and_alignment_matches_std_count) {
    std::mt19937 random(7);
    std::string text(700, 'x');
    for (char& c : text) {
        const auto r = random() % 4;
        c = r == 0 ? '\n' : r == 1 ? ',' : static_cast<char>('a' + random() % 26);
    }
    for (std::size_t offset = 0; offset < 32; ++offset) {
        for (std::size_t length = 0; length + offset <= 632; ++length) {
            expect_counts(text, offset, length);
        }
    }
}

TEST(byte_counts, long_runs_of_counted_bytes_fold_the_lane_counters_correctly) {
    // 255 blocks of 32 bytes is 8,160 bytes: runs of 20,000 and more cross several folds with
    // every lane at its maximum.
    for (const char fill : {',', '\n'}) {
        std::string text(50000, fill);
        text[12345] = 'y';
        for (const std::size_t length :
             {std::size_t{4079}, std::size_t{4080}, std::size_t{4081}, std::size_t{8159},
              std::size_t{8160}, std::size_t{8161}, std::size_t{20000}, std::size_t{49999}}) {
            expect_counts(text, 1, length);
        }
    }
}

TEST(byte_counts, the_same_byte_twice_counts_it_in_both) {
    const std::string text(1000, ',');
    for (const auto& [name, count] : counters()) {
        const byte_counts got = count(std::as_bytes(std::span(text)), ',', ',');
        EXPECT_EQ(got.first, 1000U) << name;
        EXPECT_EQ(got.second, 1000U) << name;
    }
}
