#include "sluice/pipeline/detail/byte_counts.hpp"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sluice::runtime {

namespace {

void count_tail(const unsigned char* p, std::size_t n, char first, char second,
                byte_counts& counts) {
    for (std::size_t i = 0; i < n; ++i) {
        counts.first += p[i] == static_cast<unsigned char>(first) ? 1U : 0U;
        counts.second += p[i] == static_cast<unsigned char>(second) ? 1U : 0U;
    }
}

} // namespace

byte_counts count_bytes_scalar(std::span<const std::byte> bytes, char first, char second) noexcept {
    byte_counts counts;
    count_tail(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), first, second,
               counts);
    return counts;
}

byte_counts count_bytes_sse2(std::span<const std::byte> bytes, char first, char second) noexcept {
    byte_counts counts;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::size_t n = bytes.size();
#if defined(__SSE2__)
    const __m128i a = _mm_set1_epi8(first);
    const __m128i b = _mm_set1_epi8(second);
    const __m128i zero = _mm_setzero_si128();
    while (n >= 16) {
        const std::size_t blocks = std::min<std::size_t>(n / 16, 255);
        __m128i lanes_a = zero;
        __m128i lanes_b = zero;
        for (std::size_t i = 0; i < blocks; ++i) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i * 16));
            lanes_a = _mm_sub_epi8(lanes_a, _mm_cmpeq_epi8(v, a)); // a match is -1
            lanes_b = _mm_sub_epi8(lanes_b, _mm_cmpeq_epi8(v, b));
        }
        const __m128i sum_a = _mm_sad_epu8(lanes_a, zero); // two 64-bit partial sums
        const __m128i sum_b = _mm_sad_epu8(lanes_b, zero);
        counts.first += static_cast<std::uint64_t>(_mm_cvtsi128_si64(sum_a)) +
                        static_cast<std::uint64_t>(_mm_extract_epi16(sum_a, 4));
        counts.second += static_cast<std::uint64_t>(_mm_cvtsi128_si64(sum_b)) +
                         static_cast<std::uint64_t>(_mm_extract_epi16(sum_b, 4));
        p += blocks * 16;
        n -= blocks * 16;
    }
#endif
    count_tail(p, n, first, second, counts);
    return counts;
}

#if defined(__x86_64__)

bool cpu_has_avx2() noexcept {
    static const bool avx2 = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return avx2;
}

__attribute__((target("avx2"))) byte_counts count_bytes_avx2(std::span<const std::byte> bytes,
                                                             char first, char second) noexcept {
    byte_counts counts;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::size_t n = bytes.size();
    const __m256i a = _mm256_set1_epi8(first);
    const __m256i b = _mm256_set1_epi8(second);
    const __m256i zero = _mm256_setzero_si256();
    while (n >= 32) {
        const std::size_t blocks = std::min<std::size_t>(n / 32, 255);
        __m256i lanes_a = zero;
        __m256i lanes_b = zero;
        for (std::size_t i = 0; i < blocks; ++i) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i * 32));
            lanes_a = _mm256_sub_epi8(lanes_a, _mm256_cmpeq_epi8(v, a));
            lanes_b = _mm256_sub_epi8(lanes_b, _mm256_cmpeq_epi8(v, b));
        }
        const __m256i sum_a = _mm256_sad_epu8(lanes_a, zero); // four 64-bit partial sums
        const __m256i sum_b = _mm256_sad_epu8(lanes_b, zero);
        counts.first += static_cast<std::uint64_t>(_mm256_extract_epi64(sum_a, 0)) +
                        static_cast<std::uint64_t>(_mm256_extract_epi64(sum_a, 1)) +
                        static_cast<std::uint64_t>(_mm256_extract_epi64(sum_a, 2)) +
                        static_cast<std::uint64_t>(_mm256_extract_epi64(sum_a, 3));
        counts.second += static_cast<std::uint64_t>(_mm256_extract_epi64(sum_b, 0)) +
                         static_cast<std::uint64_t>(_mm256_extract_epi64(sum_b, 1)) +
                         static_cast<std::uint64_t>(_mm256_extract_epi64(sum_b, 2)) +
                         static_cast<std::uint64_t>(_mm256_extract_epi64(sum_b, 3));
        p += blocks * 32;
        n -= blocks * 32;
    }
    count_tail(p, n, first, second, counts);
    return counts;
}

#else

bool cpu_has_avx2() noexcept {
    return false;
}

byte_counts count_bytes_avx2(std::span<const std::byte> bytes, char first, char second) noexcept {
    return count_bytes_sse2(bytes, first, second);
}

#endif

byte_counts count_bytes_wide(std::span<const std::byte> bytes, char first, char second) noexcept {
    return cpu_has_avx2() ? count_bytes_avx2(bytes, first, second)
                          : count_bytes_sse2(bytes, first, second);
}

} // namespace sluice::runtime
