#include "sluice/source/source.hpp"

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

std::string_view to_string(source_kind kind) noexcept {
    switch (kind) {
    case source_kind::generator:
        return "generator";
    case source_kind::tcp_client:
        return "tcp_client";
    case source_kind::tcp_connection:
        return "tcp_connection";
    case source_kind::udp:
        return "udp";
    case source_kind::file:
        return "file";
    case source_kind::blocking:
        return "blocking";
    case source_kind::mqtt:
        return "mqtt";
    }
    return "unknown";
}

void source::park(wake_callback /*wake*/) {
    SLUICE_ASSERT(false && "park called on a source that cannot park");
}

void byte_stream::park(wake_callback /*wake*/) {
    SLUICE_ASSERT(false && "park called on a stream that cannot park");
}

boost::asio::awaitable<read_result> source::read_some(std::span<std::byte> /*space*/) {
    SLUICE_ASSERT(false && "read_some called on a source that does not read into buffers");
    co_return read_result{};
}

} // namespace sluice::runtime
