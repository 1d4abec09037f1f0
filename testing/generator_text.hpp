#pragma once
/// Generator records as the text a peer sends: for tests that feed sources over sockets and files.

#include <cstdint>
#include <string>

#include "sluice/source/generator_records.hpp"

namespace sluice::test {

/// Records n in [first, first + count) of generator `id`, concatenated.
inline std::string generator_text(std::uint64_t id, std::uint64_t first, std::uint64_t count) {
    std::string text;
    char record[runtime::generator_record_bytes_max];
    for (std::uint64_t n = first; n < first + count; ++n) {
        text.append(record, runtime::format_generator_record(id, n, record));
    }
    return text;
}

} // namespace sluice::test
