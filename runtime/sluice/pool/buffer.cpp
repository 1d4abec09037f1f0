#include "sluice/pool/buffer.hpp"

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
    case flush_reason::message:
        return "message";
    }
    return "unknown";
}

} // namespace sluice::runtime
