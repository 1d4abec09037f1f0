#include "sluice/pool/buffer.hpp"

#include "sluice/pool/buffer_pool.hpp"

namespace sluice::runtime {

std::string_view to_string(flush_reason reason) noexcept {
    switch (reason) {
    case flush_reason::none:
        return "none";
    case flush_reason::full:
        return "full";
    case flush_reason::timeout:
        return "timeout";
    case flush_reason::demand:
        return "demand";
    case flush_reason::pressure:
        return "pressure";
    case flush_reason::stop:
        return "stop";
    case flush_reason::end_of_stream:
        return "end_of_stream";
    }
    return "unknown";
}

void buffer::reset() noexcept {
    if (slot_ != nullptr) {
        auto* slot = std::exchange(slot_, nullptr);
        slot->pool->release(*slot);
    }
}

} // namespace sluice::runtime
