// libFuzzer target: processing's framing stage (newline and length-prefixed) with CSV field
// counting. The input is cut into buffers at fuzzer-chosen sizes and run through the real
// pipeline on a real compute pool; the records the sink sees must be exactly the complete
// records of the input that fit the record limit, in order, and each longer record is counted
// as dropped. The pool must be whole afterwards.
//
// Input: byte 0 bit 0 = framing (0 newline, 1 length prefixed), byte 1 = buffer size (16..271),
// byte 2 = seed of the cut sizes; the rest is the stream.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "sluice/env/production_environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "testing/feed_buffers.hpp"
#include "testing/reassembling_sink.hpp"

namespace {

using namespace sluice::runtime;
using sluice::test::reassembling_sink;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_framing: %s\n", what.c_str());
    std::abort();
}

struct expectation {
    std::string text;
    std::uint64_t records = 0;
    std::uint64_t dropped = 0;
};

/// Newline framing with a limit of `max` bytes per record (newline included).
expectation expect_newline(std::string_view in, std::size_t max) {
    expectation e;
    std::size_t pos = 0;
    while (pos < in.size()) {
        const std::size_t nl = in.find('\n', pos);
        if (nl == std::string_view::npos) {
            e.dropped += in.size() - pos > max ? 1 : 0; // an unfinished record already too long
            break;
        }
        const std::size_t length = nl + 1 - pos;
        if (length > max) {
            ++e.dropped;
        } else {
            e.text.append(in.substr(pos, length));
            ++e.records;
        }
        pos = nl + 1;
    }
    return e;
}

std::uint32_t be32(const char* p) {
    const auto* u = reinterpret_cast<const unsigned char*>(p);
    return (std::uint32_t{u[0]} << 24U) | (std::uint32_t{u[1]} << 16U) |
           (std::uint32_t{u[2]} << 8U) | u[3];
}

/// Length-prefixed framing: a frame is 4 header bytes plus the payload; `max` bounds the frame.
expectation expect_length_prefixed(std::string_view in, std::size_t max) {
    expectation e;
    std::size_t pos = 0;
    while (pos + 4 <= in.size()) {
        const std::uint64_t total = 4 + std::uint64_t{be32(in.data() + pos)};
        if (total > max) {
            ++e.dropped;
            if (pos + total >= in.size()) {
                break;
            }
            pos += total;
            continue;
        }
        if (pos + total > in.size()) {
            break; // unfinished, within the limit: neither delivered nor dropped
        }
        e.text.append(in.substr(pos, total));
        ++e.records;
        pos += total;
    }
    return e;
}

production_environment& environment_once() {
    static production_environment env(production_options{1, 1, 1});
    return env;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) {
        return 0;
    }
    const framing kind = (data[0] & 1U) == 0 ? framing::newline : framing::length_prefixed;
    const std::uint32_t buffer_size = 16U + data[1];
    std::uint32_t state = 0x9E3779B9U ^ data[2];
    const std::string_view input(reinterpret_cast<const char*>(data + 3), size - 3);

    reassembling_sink out;
    buffer_pool pool({32, buffer_size, 4, 4});
    {
        processing pipeline(environment_once(), pool, out, {kind, 0, 4});
        sluice::test::feed_buffers(pool, pipeline, input, {1, 24}, [&] {
            state = state * 1664525U + 1013904223U;
            return 1 + (state >> 8U) % buffer_size;
        });
    }
    const expectation e = kind == framing::newline ? expect_newline(input, buffer_size)
                                                   : expect_length_prefixed(input, buffer_size);
    if (out.text != e.text) {
        fail("delivered records differ from the input's complete records (" +
             std::to_string(out.text.size()) + " vs " + std::to_string(e.text.size()) + " bytes)");
    }
    if (out.records != e.records) {
        fail("record count " + std::to_string(out.records) + ", expected " +
             std::to_string(e.records));
    }
    if (out.dropped != e.dropped) {
        fail("dropped " + std::to_string(out.dropped) + ", expected " + std::to_string(e.dropped));
    }
    if (out.ends != 1 || pool.stats().free != 32) {
        fail("end of stream missing or buffers not returned");
    }
    return 0;
}
