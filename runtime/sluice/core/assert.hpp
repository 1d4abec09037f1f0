#pragma once
/// Assertions for programmer errors (STYLE.md "Errors and assertions").
///
/// `SLUICE_ASSERT` is on in every build, release included: a broken invariant in an accounting
/// component must stop the process rather than lose or double-own a buffer.
/// `SLUICE_ASSERT_SLOW` is for O(n) checks; it is compiled only when `SLUICE_SLOW_ASSERTS` is
/// defined (dev, ci and sanitizer presets, and the simulator).

namespace sluice::runtime::detail {

/// Prints the failed condition with its location to stderr and aborts. Never returns.
[[noreturn]] void assert_fail(const char* condition, const char* file, int line,
                              const char* function) noexcept;

} // namespace sluice::runtime::detail

#define SLUICE_ASSERT(condition)                                                                   \
    do {                                                                                           \
        if (!(condition)) [[unlikely]] {                                                           \
            ::sluice::runtime::detail::assert_fail(#condition, __FILE__, __LINE__, __func__);      \
        }                                                                                          \
    } while (false)

#if defined(SLUICE_SLOW_ASSERTS)
#define SLUICE_ASSERT_SLOW(condition) SLUICE_ASSERT(condition)
#else
#define SLUICE_ASSERT_SLOW(condition)                                                              \
    do {                                                                                           \
        (void)sizeof(condition);                                                                   \
    } while (false)
#endif
