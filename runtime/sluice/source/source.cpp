#include "sluice/source/source.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

namespace {

/// The kind names. Written under `mutex` only by define_source_kind, each slot once; read
/// without the mutex after `defined` (release/acquire) says the slot is written.
struct kind_registry {
    std::mutex mutex;
    std::array<std::string, source_kind_max> names{"generator", "tcp_client",     "tcp_connection",
                                                   "udp",       "file",           "blocking",
                                                   "mqtt",      "http_connection"};
    std::atomic<std::size_t> defined{source_kind_builtin_count};
};

kind_registry& kinds() {
    static kind_registry registry;
    return registry;
}

bool valid_kind_name(std::string_view name) {
    if (name.empty() || name.size() > 32 || name.front() < 'a' || name.front() > 'z') {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

} // namespace

source_kind define_source_kind(std::string_view name) {
    if (!valid_kind_name(name)) {
        throw std::invalid_argument("source kind \"" + std::string(name) +
                                    "\": a kind name is 1 to 32 characters of [a-z0-9_] "
                                    "starting with a letter (it becomes a metrics label)");
    }
    auto& r = kinds();
    const std::lock_guard lock(r.mutex);
    const std::size_t defined = r.defined.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < defined; ++i) {
        if (r.names[i] == name) {
            return static_cast<source_kind>(i);
        }
    }
    if (defined == source_kind_max) {
        throw std::length_error("source kind \"" + std::string(name) + "\": all " +
                                std::to_string(source_kind_max) +
                                " source kinds are defined; reuse a kind for similar sources");
    }
    r.names[defined] = std::string(name);
    r.defined.store(defined + 1, std::memory_order_release);
    return static_cast<source_kind>(defined);
}

std::size_t source_kinds_defined() noexcept {
    return kinds().defined.load(std::memory_order_acquire);
}

std::string_view to_string(source_kind kind) noexcept {
    auto& r = kinds();
    const std::size_t index = index_of(kind);
    if (index >= r.defined.load(std::memory_order_acquire)) {
        return "unknown";
    }
    return r.names[index];
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the interface hands over the callback
bool source::park(wake_callback /*wake*/) {
    return false;
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): as source::park
bool byte_stream::park(wake_callback /*wake*/) {
    return false;
}

std::pair<boost::system::error_code, std::size_t>
byte_stream::write_now(std::span<const std::byte> /*bytes*/) {
    return {make_error_code(boost::system::errc::operation_not_supported), 0};
}

boost::asio::awaitable<read_result> source::read_some(std::span<std::byte> space) {
    for (;;) {
        const read_result r = read_now(space);
        if (r.state != read_result::status::would_block) {
            co_return r;
        }
        const boost::system::error_code error = co_await wait_readable();
        if (error) {
            co_return read_result{read_result::status::error, 0, error};
        }
    }
}

} // namespace sluice::runtime
