#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/env/production_environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "testing/feed_buffers.hpp"
#include "testing/reassembling_sink.hpp"
#include "testing/recording_sink.hpp"

namespace {

using namespace sluice::runtime;
using sluice::test::reassembling_sink;

/// Cuts `input` into buffers of random sizes and runs them through processing.
void run_through(const std::string& input, framing kind, std::uint32_t buffer_size,
                 std::uint32_t record_bytes_max, reassembling_sink& out, std::uint32_t seed) {
    buffer_pool pool({64, buffer_size, 4, 4});
    {
        production_environment env({1, 1, 1});
        processing pipeline(env, pool, out, {kind, record_bytes_max, 4});
        std::mt19937 random(seed);
        sluice::test::feed_buffers(pool, pipeline, input, {1, 60},
                                   [&] { return 1 + random() % buffer_size; });
    }
    EXPECT_EQ(pool.stats().free, 64U);
}

std::string csv_records(int count, std::uint32_t seed) {
    std::mt19937 random(seed);
    std::string text;
    for (int i = 0; i < count; ++i) {
        const int fields = 1 + static_cast<int>(random() % 5);
        for (int f = 0; f < fields; ++f) {
            text += (f == 0 ? "" : ",") + std::string(random() % 20, static_cast<char>('a' + f));
        }
        text += '\n';
    }
    return text;
}

TEST(processing, newline_records_spanning_buffers_are_reassembled_in_order) {
    for (std::uint32_t seed = 1; seed <= 20; ++seed) {
        const std::string input = csv_records(2000, seed);
        reassembling_sink out;
        run_through(input, framing::newline, 128, 0, out, seed);
        EXPECT_TRUE(out.text == input) << "seed " << seed << ": reassembled text differs";
        EXPECT_EQ(out.records, 2000U);
        EXPECT_EQ(out.fields,
                  static_cast<std::uint64_t>(std::count(input.begin(), input.end(), ',')) + 2000U);
        EXPECT_EQ(out.dropped, 0U);
        EXPECT_EQ(out.ends, 1U);
    }
}

TEST(processing, field_counts_are_exact_in_large_buffers_dense_with_separators) {
    // The counter works on 16-byte blocks with 8-bit lane counts folded every 255 blocks: long
    // runs of commas (every lane counts every block) and buffers of every alignment check the
    // fold, the tail and the block edges against std::count.
    for (std::uint32_t seed = 1; seed <= 6; ++seed) {
        std::mt19937 random(seed);
        std::string input;
        std::uint64_t records = 0;
        while (input.size() < 300000) {
            const std::size_t commas = random() % 3 == 0 ? 5000 + random() % 4000 : random() % 40;
            for (std::size_t i = 0; i < commas; ++i) {
                input += random() % 8 == 0 ? 'x' : ',';
            }
            input += '\n';
            ++records;
        }
        reassembling_sink out;
        run_through(input, framing::newline, 65536, 0, out, seed);
        EXPECT_TRUE(out.text == input) << "seed " << seed;
        EXPECT_EQ(out.records, records);
        EXPECT_EQ(out.fields,
                  static_cast<std::uint64_t>(std::count(input.begin(), input.end(), ',')) + records)
            << "seed " << seed;
    }
}

TEST(processing, length_prefixed_records_spanning_buffers_are_reassembled_in_order) {
    for (std::uint32_t seed = 1; seed <= 20; ++seed) {
        std::mt19937 random(seed);
        std::string input;
        for (int i = 0; i < 1500; ++i) {
            const std::string payload(random() % 90, 'x');
            const auto size = static_cast<std::uint32_t>(payload.size());
            input += static_cast<char>(size >> 24U);
            input += static_cast<char>(size >> 16U);
            input += static_cast<char>(size >> 8U);
            input += static_cast<char>(size);
            input += payload;
        }
        reassembling_sink out;
        run_through(input, framing::length_prefixed, 100, 0, out, seed);
        EXPECT_TRUE(out.text == input) << "seed " << seed << ": reassembled text differs";
        EXPECT_EQ(out.records, 1500U);
        EXPECT_EQ(out.dropped, 0U);
    }
}

TEST(processing, oversize_records_are_dropped_and_counted_and_the_rest_survive) {
    const std::string big(300, 'z');
    const std::string input = "a,b\n" + big + "\nc,d,e\n" + big + big + "\nf\n";
    reassembling_sink out;
    run_through(input, framing::newline, 64, 64, out, 7);
    EXPECT_EQ(out.text, "a,b\nc,d,e\nf\n");
    EXPECT_EQ(out.records, 3U);
    EXPECT_EQ(out.fields, 6U);
    EXPECT_EQ(out.dropped, 2U);
}

// Found by fuzz_framing: wait_idle could return between the last task's decrement and its
// notification, and the owner then destroyed processing under the task (a use-after-free that
// the sanitizer presets catch). Many short-lived pipelines on one environment make it likely.
/// Reassembles each origin's text apart (origins' calls may overlap; one origin's never do).
class per_origin_sink final : public sink {
public:
    void on_data(const data_event& event) override {
        const std::lock_guard lock(mutex_);
        auto& text = texts_[event.origin_id];
        text.append(reinterpret_cast<const char*>(event.spanning_record.data()),
                    event.spanning_record.size());
        text.append(reinterpret_cast<const char*>(event.records.data()), event.records.size());
    }
    void on_end_of_stream(std::uint64_t origin_id) override {
        const std::lock_guard lock(mutex_);
        ++ends_[origin_id];
    }
    void on_error(std::uint64_t /*origin_id*/, std::string_view /*message*/) override {}
    std::map<std::uint64_t, std::string> texts() const {
        const std::lock_guard lock(mutex_);
        return texts_;
    }
    std::map<std::uint64_t, int> ends() const {
        const std::lock_guard lock(mutex_);
        return ends_;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::uint64_t, std::string> texts_;
    std::map<std::uint64_t, int> ends_;
};

TEST(processing, drainers_take_every_channel_listed_while_they_run_on_real_threads) {
    // Four producer threads (as lanes) each feed 16 channels a buffer at a time, so channels
    // are listed while the two compute threads drain others; two buffers per channel and three
    // channels per task make drainers re-queue channels and post themselves again. Each
    // processing is destroyed the moment it is idle, while a drainer may still be leaving.
    // Run under TSan by ci/test.
    constexpr int producers = 4;
    constexpr int channels_each = 16;
    const std::string input = csv_records(60, 5);
    production_environment env({1, 2, 1});
    for (int round = 0; round < 40; ++round) {
        per_origin_sink out;
        buffer_pool pool({producers * channels_each * 4 + 8, 128, 8, producers * channels_each});
        {
            processing_options options{framing::newline, 0, 2};
            options.batch_channels_max = 3;
            processing pipeline(env, pool, out, options);
            std::vector<std::thread> threads;
            for (int p = 0; p < producers; ++p) {
                threads.emplace_back([&, p] {
                    struct fed {
                        source_id id;
                        std::shared_ptr<processing::channel> channel;
                        std::size_t pos = 0;
                        std::uint64_t sequence = 0;
                    };
                    std::vector<fed> mine;
                    for (int c = 0; c < channels_each; ++c) {
                        const auto id = pool.register_source({1, 4}).id;
                        mine.push_back({id, pipeline.open_channel(id.value())});
                    }
                    std::mt19937 random(static_cast<std::uint32_t>(round * 31 + p));
                    const auto deadline =
                        std::chrono::steady_clock::now() + std::chrono::seconds(60);
                    for (std::size_t left = mine.size(); left > 0;) {
                        left = 0;
                        for (auto& f : mine) {
                            if (f.pos == input.size()) {
                                continue;
                            }
                            ++left;
                            buffer b = pool.try_acquire(f.id);
                            if (!b) { // all four queued: processing gives them back
                                ASSERT_LT(std::chrono::steady_clock::now(), deadline);
                                std::this_thread::yield();
                                continue;
                            }
                            const std::size_t n =
                                std::min<std::size_t>(input.size() - f.pos, 1 + random() % 128);
                            std::memcpy(b.storage().data(), input.data() + f.pos, n);
                            b.set_size_bytes(static_cast<std::uint32_t>(n));
                            b.set_sequence(f.sequence++);
                            ASSERT_TRUE(pipeline.submit(f.channel, std::move(b)));
                            f.pos += n;
                            if (f.pos == input.size()) {
                                pipeline.end_of_stream(f.channel);
                            }
                        }
                    }
                });
            }
            for (auto& t : threads) {
                t.join();
            }
        } // destroyed as soon as wait_idle returns
        const auto texts = out.texts();
        const auto ends = out.ends();
        ASSERT_EQ(texts.size(), static_cast<std::size_t>(producers * channels_each));
        for (const auto& [origin, text] : texts) {
            ASSERT_EQ(text, input) << "origin " << origin << ", round " << round;
            ASSERT_EQ(ends.at(origin), 1) << "origin " << origin;
        }
        // Every buffer came back (the sources stay registered: their reserves are still theirs).
        ASSERT_EQ(pool.stats().free, pool.config().buffer_count);
    }
}

TEST(processing, wait_idle_returns_only_after_the_last_task_is_done_with_processing) {
    production_environment env({1, 2, 1});
    const std::string input = csv_records(40, 3);
    for (int round = 0; round < 2000; ++round) {
        reassembling_sink out;
        buffer_pool pool({16, 256, 4, 4});
        {
            processing pipeline(env, pool, out, {framing::newline, 0, 1});
            std::uint32_t cut = 0;
            sluice::test::feed_buffers(pool, pipeline, input, {1, 8},
                                       [&] { return 1 + (cut++ * 37) % 256; });
        } // destroyed as soon as wait_idle returns
        ASSERT_EQ(out.text, input);
        ASSERT_EQ(pool.stats().free, 16U);
    }
}

} // namespace

namespace {

/// Submits `parts` in order on one channel; `discontinuous[i]` marks part i as the first
/// bytes of a new connection.
void feed_parts(framing kind, const std::vector<std::string>& parts,
                const std::vector<bool>& discontinuous, reassembling_sink& out,
                processing_stats& stats) {
    buffer_pool pool({16, 256, 4, 4});
    {
        production_environment env({1, 1, 1});
        processing pipeline(env, pool, out, {kind, 0, 4});
        const auto id = pool.register_source({1, 8}).id;
        auto channel = pipeline.open_channel(id.value());
        for (std::size_t i = 0; i < parts.size(); ++i) {
            buffer b = pool.try_acquire(id);
            ASSERT_TRUE(b);
            std::memcpy(b.storage().data(), parts[i].data(), parts[i].size());
            b.set_size_bytes(static_cast<std::uint32_t>(parts[i].size()));
            b.set_sequence(i);
            b.set_discontinuity(discontinuous[i]);
            ASSERT_TRUE(pipeline.submit(channel, std::move(b)));
        }
        pipeline.end_of_stream(channel);
        pipeline.wait_idle();
        stats = pipeline.stats();
        pool.unregister_source(id);
    }
    EXPECT_EQ(pool.stats().free, 16U);
}

std::string frame(const std::string& payload) {
    const auto n = static_cast<std::uint32_t>(payload.size());
    return std::string{static_cast<char>(n >> 24U), static_cast<char>(n >> 16U),
                       static_cast<char>(n >> 8U), static_cast<char>(n)} +
           payload;
}

TEST(processing, a_discontinuity_drops_the_unfinished_newline_record_and_counts_it) {
    reassembling_sink out;
    processing_stats stats;
    feed_parts(framing::newline, {"a,1,x\nb,2,", "c,3,y\n", "d,4", ",z\n"},
               {false, true, false, false}, out, stats);
    EXPECT_EQ(out.text, "a,1,x\nc,3,y\nd,4,z\n") << "b,2, must never be joined to c,3,y";
    EXPECT_EQ(out.records, 3U);
    EXPECT_EQ(stats.records_truncated_total, 1U);
}

TEST(processing, a_discontinuity_resyncs_length_prefixed_framing_and_ends_an_oversize_skip) {
    reassembling_sink out;
    processing_stats stats;
    // A header promising 100 bytes and 10 of them; then a new connection with two whole frames;
    // then a header promising more than a buffer (skipped), cut by another new connection.
    const std::string promise = frame(std::string(100, 'p')).substr(0, 14);
    const std::string oversize = frame(std::string(1000, 'o')).substr(0, 50);
    feed_parts(framing::length_prefixed,
               {promise, frame("r1") + frame("r2"), oversize, frame("r3")},
               {false, true, false, true}, out, stats);
    EXPECT_EQ(out.text, frame("r1") + frame("r2") + frame("r3"));
    EXPECT_EQ(out.records, 3U);
    EXPECT_EQ(stats.records_truncated_total, 1U)
        << "the 100-byte record; the oversize one counts as dropped";
    EXPECT_EQ(stats.records_dropped_total, 1U);
}

TEST(processing, a_stream_that_ends_inside_a_record_counts_it_as_truncated) {
    reassembling_sink out;
    processing_stats stats;
    feed_parts(framing::newline, {"a,1,x\nb,2"}, {false}, out, stats);
    EXPECT_EQ(out.text, "a,1,x\n");
    EXPECT_EQ(out.ends, 1U);
    EXPECT_EQ(stats.records_truncated_total, 1U);
}

} // namespace
