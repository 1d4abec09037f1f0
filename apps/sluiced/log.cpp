#include "apps/sluiced/log.hpp"

#include <unistd.h>

#include <ctime>
#include <iostream>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace sluiced {

std::optional<log_level> parse_log_level(std::string_view name) noexcept {
    if (name == "error") {
        return log_level::error;
    }
    if (name == "warning") {
        return log_level::warning;
    }
    if (name == "info") {
        return log_level::info;
    }
    if (name == "debug") {
        return log_level::debug;
    }
    return std::nullopt;
}

std::string_view to_string(log_level level) noexcept {
    switch (level) {
    case log_level::error:
        return "error";
    case log_level::warning:
        return "warning";
    case log_level::info:
        return "info";
    case log_level::debug:
        return "debug";
    }
    return "info";
}

std::optional<log_format> parse_log_format(std::string_view name) noexcept {
    if (name == "text") {
        return log_format::text;
    }
    if (name == "json") {
        return log_format::json;
    }
    return std::nullopt;
}

logger& logger::instance() {
    static logger the_log;
    return the_log;
}

void logger::configure(log_level level, log_format format) {
    const std::lock_guard lock(mutex_);
    level_.store(level);
    format_ = format;
}

void logger::log(log_level level, std::string_view event, std::string_view message,
                 const log_fields& fields) {
    if (!enabled(level)) {
        return;
    }
    const std::lock_guard lock(mutex_);
    write(level, event, message, fields, 0);
}

void logger::log_limited(log_level level, std::string_view event, std::string_view message,
                         const log_fields& fields) {
    if (!enabled(level)) {
        return;
    }
    const std::lock_guard lock(mutex_);
    auto it = windows_.find(event);
    if (it == windows_.end()) {
        it = windows_.emplace(std::string(event), window{}).first;
    }
    auto& w = it->second;
    const auto now = std::chrono::steady_clock::now();
    if (now - w.start >= std::chrono::seconds(1)) {
        w.start = now;
        w.printed = 0;
    }
    if (w.printed >= lines_per_second) {
        ++w.suppressed;
        return;
    }
    ++w.printed;
    write(level, event, message, fields, std::exchange(w.suppressed, 0));
}

void logger::flush_suppressed() {
    const std::lock_guard lock(mutex_);
    for (auto& [event, w] : windows_) {
        if (w.suppressed > 0) {
            const std::string what =
                std::to_string(w.suppressed) + " more " + event + " events not shown";
            write(log_level::warning, "suppressed", what, {{"suppressed_event", event}},
                  std::exchange(w.suppressed, 0));
        }
    }
}

void logger::write(log_level level, std::string_view event, std::string_view message,
                   const log_fields& fields, std::uint64_t suppressed) {
    std::string line;
    if (format_ == log_format::json) {
        boost::json::object o;
        const auto now = std::chrono::system_clock::now();
        o["time"] = std::chrono::duration<double>(now.time_since_epoch()).count();
        o["level"] = to_string(level);
        o["event"] = event;
        o["message"] = message;
        for (const auto& [key, value] : fields) {
            o[key] = value;
        }
        if (suppressed > 0) {
            o["suppressed_before"] = suppressed;
        }
        line = boost::json::serialize(o);
    } else {
        line = "sluiced: ";
        if (level != log_level::info) {
            line += to_string(level);
            line += ": ";
        }
        line += message;
        if (suppressed > 0) {
            line += " (" + std::to_string(suppressed) + " more not shown)";
        }
    }
    line += '\n';
    if (captured_ != nullptr) {
        *captured_ += line;
        return;
    }
    // One write per line, so lines from threads never interleave.
    [[maybe_unused]] const auto written = ::write(STDERR_FILENO, line.data(), line.size());
}

} // namespace sluiced
