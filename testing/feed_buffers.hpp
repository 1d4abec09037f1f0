#pragma once
/// Feeds a byte string through processing as one source would: cut into buffers of the sizes
/// `next_size()` picks (each at most the buffer size), submitted in order on one channel, then
/// end of stream; waits until processing is idle and unregisters the source. Used by the
/// processing unit tests and the framing fuzz target (no GoogleTest here).

#include <algorithm>
#include <cstring>
#include <string_view>

#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"

namespace sluice::test {

template <typename NextSize>
void feed_buffers(runtime::buffer_pool& pool, runtime::processing& pipeline, std::string_view input,
                  runtime::source_limits limits, NextSize next_size) {
    const auto id = pool.register_source(limits).id;
    auto channel = pipeline.open_channel(id.value());
    std::size_t pos = 0;
    std::uint64_t sequence = 0;
    while (pos < input.size()) {
        runtime::buffer b = pool.try_acquire(id);
        if (!b) {
            pipeline.wait_idle(); // every buffer of the source is queued: let processing drain
            continue;
        }
        const std::size_t n = std::min<std::size_t>(input.size() - pos, next_size());
        std::memcpy(b.storage().data(), input.data() + pos, n);
        b.set_size_bytes(static_cast<std::uint32_t>(n));
        b.set_sequence(sequence++);
        pipeline.submit(channel, std::move(b));
        pos += n;
    }
    pipeline.end_of_stream(channel);
    pipeline.wait_idle();
    pool.unregister_source(id);
}

} // namespace sluice::test
