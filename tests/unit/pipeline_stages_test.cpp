/// The pipeline's extension points: an engine's own framer and its own stages, run by
/// processing exactly as the built-in ones are.

#include <atomic>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/env/production_environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "testing/feed_buffers.hpp"
#include "testing/reassembling_sink.hpp"

namespace {

using namespace sluice::runtime;
using sluice::test::reassembling_sink;

/// Records ended by one byte of the engine's choosing (here ASCII's record separator).
class separator_framer final : public framer {
public:
    explicit separator_framer(std::byte separator) : separator_(separator) {}
    std::string_view name() const noexcept override { return "record_separator"; }

    carried_step continue_record(framing_state& state, std::span<const std::byte> bytes,
                                 std::size_t max) const override {
        const auto end = find(bytes);
        carried_step step;
        step.consumed = end == bytes.size() ? end : end + 1;
        const std::size_t taken = step.consumed;
        if (state.skip_bytes != 0) {
            if (end < bytes.size()) {
                state.skip_bytes = 0;
            }
            return step;
        }
        if (state.carry.size() + taken > max) {
            state.carry.clear();
            ++step.dropped;
            state.skip_bytes = end < bytes.size() ? 0 : framing_state::skip_to_end;
            return step;
        }
        state.carry.append(reinterpret_cast<const char*>(bytes.data()), taken);
        step.complete = end < bytes.size();
        return step;
    }

    framed_records frame(framing_state& state, std::span<const std::byte> bytes,
                         std::size_t max) const override {
        framed_records framed;
        std::size_t complete = 0;
        for (std::size_t i = 0; i < bytes.size(); ++i) {
            if (bytes[i] == separator_) {
                ++framed.count;
                complete = i + 1;
            }
        }
        framed.records = bytes.first(complete);
        const auto tail = bytes.subspan(complete);
        if (tail.size() > max) {
            state.skip_bytes = framing_state::skip_to_end;
            ++framed.dropped;
        } else {
            state.carry.assign(reinterpret_cast<const char*>(tail.data()), tail.size());
        }
        return framed;
    }

    std::uint64_t count_in_payloads(std::span<const std::byte> records,
                                    std::byte value) const noexcept override {
        if (value == separator_) {
            return 0;
        }
        std::uint64_t found = 0;
        for (const std::byte b : records) {
            found += b == value ? 1U : 0U;
        }
        return found;
    }

private:
    std::size_t find(std::span<const std::byte> bytes) const noexcept {
        const void* at = std::memchr(bytes.data(), std::to_integer<int>(separator_), bytes.size());
        return at == nullptr
                   ? bytes.size()
                   : static_cast<std::size_t>(static_cast<const std::byte*>(at) - bytes.data());
    }
    std::byte separator_;
};

/// An engine's stage: counts the records it is shown, through the framer, as a decoder would
/// walk them; throws on the record "poison" when asked to.
class counting_stage final : public stage {
public:
    explicit counting_stage(bool throws_on_poison = false) : throws_(throws_on_poison) {}
    std::string_view name() const noexcept override { return "counting"; }
    void process(const framer& records_format, data_event& event) override {
        seen.fetch_add(event.record_count);
        if (throws_ && records_format.count_in_payloads(event.raw, std::byte{'!'}) > 0) {
            throw std::runtime_error("record with '!' is poison");
        }
    }
    std::atomic<std::uint64_t> seen{0};

private:
    bool throws_;
};

constexpr char separator = '\x1e';

std::string separated_records(int count, std::uint32_t seed) {
    std::mt19937 random(seed);
    std::string text;
    for (int i = 0; i < count; ++i) {
        const int fields = 1 + static_cast<int>(random() % 4);
        for (int f = 0; f < fields; ++f) {
            text += (f == 0 ? "" : ",") + std::string(random() % 30, 'a' + static_cast<char>(f));
        }
        text += "\nline break inside"; // a newline is payload in this framing
        text += separator;
    }
    return text;
}

void run(const std::string& input, const processing_options& options, reassembling_sink& out,
         std::uint32_t buffer_size, std::uint32_t seed) {
    buffer_pool pool({64, buffer_size, 4, 4});
    {
        production_environment env({1, 1, 1});
        processing pipeline(env, pool, out, options);
        std::mt19937 random(seed);
        sluice::test::feed_buffers(pool, pipeline, input, {1, 60},
                                   [&] { return 1 + random() % buffer_size; });
    }
    EXPECT_EQ(pool.stats().free, 64U);
}

TEST(pipeline_stages, an_engines_own_framer_reassembles_records_cut_anywhere) {
    const separator_framer framing{std::byte{separator}};
    const std::string input = separated_records(500, 11);
    for (std::uint32_t seed = 1; seed <= 20; ++seed) {
        reassembling_sink out;
        processing_options options;
        options.custom_framer = &framing;
        run(input, options, out, 128, seed);
        ASSERT_EQ(out.text, input) << "seed " << seed;
        EXPECT_EQ(out.records, 500U);
        EXPECT_EQ(out.dropped, 0U);
    }
}

TEST(pipeline_stages, csv_counting_sees_payloads_through_the_engines_framer) {
    const separator_framer framing{std::byte{separator}};
    const std::string input =
        std::string("a,b,c\n") + separator + "d" + separator + ",," + separator; // 3 + 1 + 3 fields
    reassembling_sink out;
    processing_options options;
    options.custom_framer = &framing;
    run(input, options, out, 64, 3);
    EXPECT_EQ(out.records, 3U);
    EXPECT_EQ(out.fields, 7U);
}

TEST(pipeline_stages, the_engines_framer_drops_oversize_records_and_keeps_the_rest) {
    const separator_framer framing{std::byte{separator}};
    const std::string input =
        "ok" + std::string(1, separator) + std::string(300, 'x') + separator + "fine" + separator;
    reassembling_sink out;
    processing_options options;
    options.custom_framer = &framing;
    options.record_bytes_max = 64;
    run(input, options, out, 64, 5);
    EXPECT_EQ(out.text, "ok" + std::string(1, separator) + "fine" + separator);
    EXPECT_EQ(out.dropped, 1U);
}

TEST(pipeline_stages, stages_run_in_order_before_the_sink_and_see_every_record) {
    const std::string input = "a,1\nb,2\nc,3\n";
    auto first = std::make_shared<counting_stage>();
    reassembling_sink out;
    processing_options options;
    options.stages = {count_csv_fields(), first};
    run(input, options, out, 5, 9);
    EXPECT_EQ(first->seen.load(), 3U);
    EXPECT_EQ(out.records, 3U);
    EXPECT_EQ(out.fields, 6U);
}

TEST(pipeline_stages, without_the_csv_stage_no_fields_are_counted_and_records_still_are) {
    reassembling_sink out;
    processing_options options;
    options.stages.clear();
    run("a,1\nb,2\n", options, out, 64, 1);
    EXPECT_EQ(out.records, 2U);
    EXPECT_EQ(out.fields, 0U);
}

TEST(pipeline_stages, a_stage_that_throws_fails_its_origin_and_says_which_stage) {
    auto poison = std::make_shared<counting_stage>(true);
    reassembling_sink out;
    processing_options options;
    options.stages = {poison};
    // One record per buffer (buffers of 4 bytes): the third is poison.
    buffer_pool pool({16, 4, 4, 4});
    processing_stats stats;
    {
        production_environment env({1, 1, 1});
        processing pipeline(env, pool, out, options);
        sluice::test::feed_buffers(pool, pipeline, "ab\nbc\n!x\ncd\nde\n", {1, 8},
                                   [] { return 3; });
        stats = pipeline.stats();
    }
    EXPECT_EQ(out.text, "ab\nbc\n") << "nothing from the poison buffer on";
    ASSERT_EQ(out.errors.size(), 1U);
    EXPECT_NE(out.errors[0].find("the stage counting failed: record with '!' is poison"),
              std::string::npos)
        << out.errors[0];
    EXPECT_EQ(out.ends, 0U) << "the error was the origin's last event";
    EXPECT_EQ(stats.sink_failures_total, 1U);
    EXPECT_EQ(stats.buffers_discarded_total, 3U);
    EXPECT_EQ(pool.stats().free, 16U);
}

} // namespace
