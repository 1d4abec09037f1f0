#pragma once
/// CRC-32C (Castagnoli), streaming: the benchmark sink's per-origin checksum. Fed the raw
/// register (start from crc32c_start, finish with crc32c_finish), so a stream gives the same
/// checksum however it is split. SSE4.2's crc32 instruction where the CPU has it (about 8 bytes
/// a cycle), a table otherwise; crc32c_self_check compares both with the standard check value.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace sluice::bench {

inline constexpr std::uint32_t crc32c_start = 0xFFFFFFFFU;
inline constexpr std::uint32_t crc32c_finish(std::uint32_t reg) noexcept { return ~reg; }

inline std::uint32_t crc32c_table_update(std::uint32_t reg, const unsigned char* p, std::size_t n) noexcept {
    static const auto table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) {
                c = (c & 1U) != 0 ? (c >> 1U) ^ 0x82F63B78U : c >> 1U;
            }
            t[i] = c;
        }
        return t;
    }();
    for (std::size_t i = 0; i < n; ++i) {
        reg = table[(reg ^ p[i]) & 0xFFU] ^ (reg >> 8U);
    }
    return reg;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_sse42_update(std::uint32_t reg, const unsigned char* p,
                                                                           std::size_t n) noexcept {
    std::uint64_t wide = reg;
    for (; n >= 8; p += 8, n -= 8) {
        std::uint64_t word;
        std::memcpy(&word, p, sizeof word);
        wide = _mm_crc32_u64(wide, word);
    }
    auto narrow = static_cast<std::uint32_t>(wide);
    for (; n > 0; ++p, --n) {
        narrow = _mm_crc32_u8(narrow, *p);
    }
    return narrow;
}
#endif

inline bool crc32c_has_sse42() noexcept {
#if defined(__x86_64__)
    static const bool has = __builtin_cpu_supports("sse4.2");
    return has;
#else
    return false;
#endif
}

inline std::uint32_t crc32c_update(std::uint32_t reg, std::span<const std::byte> bytes) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
#if defined(__x86_64__)
    if (crc32c_has_sse42()) {
        return crc32c_sse42_update(reg, p, bytes.size());
    }
#endif
    return crc32c_table_update(reg, p, bytes.size());
}

/// Both implementations give the standard check value for "123456789" (0xE3069283) and agree
/// on a longer buffer split unevenly. False means the checksum cannot be trusted.
inline bool crc32c_self_check() noexcept {
    const char check[] = "123456789";
    const auto* c = reinterpret_cast<const unsigned char*>(check);
    if (crc32c_finish(crc32c_table_update(crc32c_start, c, 9)) != 0xE3069283U) {
        return false;
    }
    std::array<std::byte, 1000> data{};
    for (std::size_t i = 0; i < data.size(); ++i) {
        data[i] = static_cast<std::byte>((i * 131U + 7U) & 0xFFU);
    }
    const std::uint32_t whole = crc32c_table_update(crc32c_start, reinterpret_cast<const unsigned char*>(data.data()),
                                                    data.size());
    const std::uint32_t split = crc32c_update(crc32c_update(crc32c_start, std::span(data).first(13)),
                                              std::span(data).subspan(13));
    return crc32c_finish(crc32c_update(crc32c_start, std::as_bytes(std::span(check, 9)))) == 0xE3069283U &&
           split == whole;
}

} // namespace sluice::bench
