#pragma once
/// Counting two byte values in one pass: framing counts newlines and commas in every byte that
/// arrives, so this is the pipeline's inner loop. The SIMD versions compare 16 (SSE2) or 32
/// (AVX2) bytes at a time into 8-bit lane counters and fold them every 255 blocks; std::count
/// widened every lane to 64 bits and was about 4x slower than SSE2. count_bytes picks the
/// widest the CPU has; the others are here so tests check each against the scalar loop.

#include <cstddef>
#include <cstdint>
#include <span>

namespace sluice::runtime {

struct byte_counts {
    std::uint64_t first = 0;  ///< bytes equal to `first`
    std::uint64_t second = 0; ///< bytes equal to `second`
};

/// The widest implementation this CPU runs (out of line; see count_bytes).
byte_counts count_bytes_wide(std::span<const std::byte> bytes, char first, char second) noexcept;

/// Short spans (a record or a frame) inline and byte by byte, where a call and the SIMD set-up
/// cost more than they save (length-prefixed framing counts commas frame by frame); longer
/// ones with count_bytes_wide.
inline byte_counts count_bytes(std::span<const std::byte> bytes, char first, char second) noexcept {
    if (bytes.size() >= 64) {
        return count_bytes_wide(bytes, first, second);
    }
    byte_counts counts;
    for (const std::byte b : bytes) {
        counts.first += b == static_cast<std::byte>(first) ? 1U : 0U;
        counts.second += b == static_cast<std::byte>(second) ? 1U : 0U;
    }
    return counts;
}

byte_counts count_bytes_scalar(std::span<const std::byte> bytes, char first, char second) noexcept;
/// SSE2 (every x86-64); the scalar loop elsewhere.
byte_counts count_bytes_sse2(std::span<const std::byte> bytes, char first, char second) noexcept;
/// AVX2 where the CPU has it (false otherwise, and count_bytes_avx2 must not be called).
bool cpu_has_avx2() noexcept;
byte_counts count_bytes_avx2(std::span<const std::byte> bytes, char first, char second) noexcept;

} // namespace sluice::runtime
