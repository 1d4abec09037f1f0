#pragma once
/// sluiced's log: one line per event on stderr, as text ("sluiced: <message>", with the level
/// named when it is not info) or as JSON lines ({"time", "level", "event", "message", …}). An
/// event that repeats (a reset storm, refusals) is limited to `lines_per_second` lines a
/// second per event name; the next line of that event that is printed says how many were left
/// out, and `flush_suppressed` says it for every event at the end.
///
/// Thread-safe: sources fail on compute threads, the control loop logs on the main thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluiced {

enum class log_level : std::uint8_t { error, warning, info, debug };
enum class log_format : std::uint8_t { text, json };

/// "error", "warning", "info", "debug"; nullopt for anything else.
std::optional<log_level> parse_log_level(std::string_view name) noexcept;
std::string_view to_string(log_level level) noexcept;
/// "text", "json"; nullopt for anything else.
std::optional<log_format> parse_log_format(std::string_view name) noexcept;

/// Extra fields of a JSON line (text lines carry them in the message already).
using log_fields = std::vector<std::pair<std::string, std::string>>;

class logger {
public:
    static constexpr int lines_per_second = 10;

    /// The daemon's one log.
    static logger& instance();

    void configure(log_level level, log_format format);
    bool enabled(log_level level) const noexcept { return level <= level_.load(); }

    /// One event. `event` names it (a stable key for JSON readers and the rate limit).
    void log(log_level level, std::string_view event, std::string_view message,
             const log_fields& fields = {});
    /// As `log`, limited to lines_per_second lines a second for `event`.
    void log_limited(log_level level, std::string_view event, std::string_view message,
                     const log_fields& fields = {});
    /// Says, per event, how many lines were left out since the last one printed.
    void flush_suppressed();

    /// Where lines go (tests); stderr by default.
    void set_sink_for_tests(std::string* captured) { captured_ = captured; }

private:
    struct window {
        std::chrono::steady_clock::time_point start{};
        int printed = 0;
        std::uint64_t suppressed = 0;
    };
    void write(log_level level, std::string_view event, std::string_view message,
               const log_fields& fields, std::uint64_t suppressed); ///< under mutex_

    mutable std::mutex mutex_;
    std::atomic<log_level> level_{log_level::info}; ///< read without the mutex
    log_format format_ = log_format::text;
    std::map<std::string, window, std::less<>> windows_; ///< per limited event
    std::string* captured_ = nullptr;
};

inline void log_error(std::string_view event, std::string_view message,
                      const log_fields& fields = {}) {
    logger::instance().log(log_level::error, event, message, fields);
}
inline void log_warning(std::string_view event, std::string_view message,
                        const log_fields& fields = {}) {
    logger::instance().log(log_level::warning, event, message, fields);
}
inline void log_info(std::string_view event, std::string_view message,
                     const log_fields& fields = {}) {
    logger::instance().log(log_level::info, event, message, fields);
}
inline void log_debug(std::string_view event, std::string_view message,
                      const log_fields& fields = {}) {
    logger::instance().log(log_level::debug, event, message, fields);
}

} // namespace sluiced
