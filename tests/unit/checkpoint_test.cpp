// Processed positions in processing, the directory checkpoint store's atomic files, and the
// file checkpoint's format (corrupt and foreign checkpoints are errors naming the file).
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/checkpoint/file_position.hpp"
#include "sluice/env/production_environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "testing/recording_sink.hpp"

using namespace sluice::runtime;

namespace {

/// One tracked channel, fed a buffer at a time, with the position read after each.
struct tracked_feed {
    explicit tracked_feed(std::uint32_t record_bytes_max = 0)
        : pipeline(env, pool, sink, options(record_bytes_max)) {
        sink.check_generator_records = false;
        pipeline.set_processed_callback([this](std::uint64_t origin) {
            EXPECT_EQ(origin, id.value());
            reports.fetch_add(1);
        });
        channel = pipeline.open_channel(id.value(), 0, true);
    }
    ~tracked_feed() {
        pipeline.wait_idle();
        pool.unregister_source(id);
    }
    static processing_options options(std::uint32_t record_bytes_max) {
        processing_options o;
        o.record_bytes_max = record_bytes_max;
        return o;
    }
    std::uint64_t feed(const std::string& bytes, bool discontinuity = false) {
        buffer b = pool.try_acquire(id);
        EXPECT_TRUE(b);
        std::memcpy(b.storage().data(), bytes.data(), bytes.size());
        b.set_size_bytes(static_cast<std::uint32_t>(bytes.size()));
        b.set_sequence(sequence++);
        b.set_discontinuity(discontinuity);
        pipeline.submit(channel, std::move(b));
        pipeline.wait_idle();
        return processing::processed_through(*channel);
    }

    production_environment env{{1, 1, 1}};
    buffer_pool pool{{16, 256, 4, 4}};
    sluice::test::recording_sink sink;
    processing pipeline;
    source_id id = pool.register_source({1, 4}).id;
    std::shared_ptr<processing::channel> channel;
    std::uint64_t sequence = 0;
    std::atomic<int> reports{0};
};

std::filesystem::path fresh_directory(const std::string& name) {
    auto dir = std::filesystem::temp_directory_path() /
               ("sluice-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

} // namespace

TEST(processed_positions, a_position_is_the_end_of_the_last_whole_record_the_sink_returned_for) {
    tracked_feed f;
    EXPECT_EQ(f.feed("aaa\nbb"), 4U) << "the unfinished record's 2 bytes are not processed";
    EXPECT_EQ(f.feed("b\ncc"), 8U);
    EXPECT_EQ(f.feed("cc"), 8U) << "a buffer inside one record does not advance it";
    EXPECT_EQ(f.feed("\n"), 13U);
    EXPECT_EQ(f.reports.load(), 3) << "one report per advance, none without one";
    EXPECT_EQ(f.feed("dd", false), 13U);
    EXPECT_EQ(f.feed("e\n", true), 17U) << "a reopen drops the unfinished record: its bytes count";
}

TEST(processed_positions, an_oversize_record_being_skipped_holds_the_position_at_its_start) {
    tracked_feed f(8);
    EXPECT_EQ(f.feed("ok\nxxxxx"), 3U);
    EXPECT_EQ(f.feed("xxxxxx"), 3U) << "now over 8 bytes and skipped: its start is kept";
    EXPECT_EQ(f.feed("xx\nab\n"), 20U);
    EXPECT_EQ(f.pipeline.stats().records_dropped_total, 1U);
}

TEST(processed_positions, a_buffer_the_sink_threw_on_is_not_processed) {
    tracked_feed f;
    EXPECT_EQ(f.feed("a\n"), 2U);
    f.sink.on_each_buffer = [] { throw std::runtime_error("engine failed"); };
    EXPECT_EQ(f.feed("b\n"), 2U);
    EXPECT_EQ(f.feed("c\n"), 2U) << "discarded after the failure";
}

TEST(processed_positions, untracked_channels_have_no_position_and_no_reports) {
    production_environment env({1, 1, 1});
    buffer_pool pool({16, 256, 4, 4});
    sluice::test::recording_sink sink;
    sink.check_generator_records = false;
    processing pipeline(env, pool, sink, {});
    std::atomic<int> reports{0};
    pipeline.set_processed_callback([&](std::uint64_t) { reports.fetch_add(1); });
    const auto id = pool.register_source({1, 4}).id;
    auto channel = pipeline.open_channel(id.value());
    buffer b = pool.try_acquire(id);
    std::memcpy(b.storage().data(), "a\n", 2);
    b.set_size_bytes(2);
    pipeline.submit(channel, std::move(b));
    pipeline.wait_idle();
    EXPECT_EQ(processing::processed_through(*channel), 0U);
    EXPECT_EQ(reports.load(), 0);
    pool.unregister_source(id);
}

TEST(checkpoint_store, a_save_replaces_the_value_whole_and_leaves_no_temporary_file) {
    const auto dir = fresh_directory("store");
    directory_checkpoint_store store(dir.string());
    EXPECT_FALSE(store.load("tail").found);
    EXPECT_EQ(store.save("tail", "one"), "");
    EXPECT_EQ(store.save("tail", "two, longer"), "");
    const auto loaded = store.load("tail");
    EXPECT_TRUE(loaded.found);
    EXPECT_EQ(loaded.error, "");
    EXPECT_EQ(loaded.value, "two, longer");
    EXPECT_EQ(store.stats().writes_total, 2U);
    std::vector<std::string> names;
    for (const auto& each : std::filesystem::directory_iterator(dir)) {
        names.push_back(each.path().filename().string());
    }
    EXPECT_EQ(names, std::vector<std::string>{"tail.checkpoint"});
    EXPECT_EQ(store.where("a/b c"), dir.string() + "/a%2Fb%20c.checkpoint")
        << "a key cannot name a file outside the directory";
    std::filesystem::remove_all(dir);
}

TEST(checkpoint_store, an_unusable_directory_or_an_oversize_file_is_an_error_that_says_so) {
    EXPECT_NE(directory_checkpoint_store::check_directory("/nonexistent/sluice")
                  .find("cannot use the checkpoint directory /nonexistent/sluice"),
              std::string::npos);
    const auto dir = fresh_directory("oversize");
    directory_checkpoint_store store(dir.string());
    EXPECT_NE(store.save("big", std::string(5000, 'x')), "");
    EXPECT_EQ(store.stats().write_failures_total, 1U);
    std::ofstream(store.where("big")) << std::string(5000, 'x');
    const auto loaded = store.load("big");
    EXPECT_NE(loaded.error.find(store.where("big") + " is longer than 4096 bytes"),
              std::string::npos)
        << loaded.error;
    directory_checkpoint_store missing("/nonexistent/sluice");
    EXPECT_NE(missing.save("k", "v").find("cannot create /nonexistent/sluice/k.checkpoint.tmp"),
              std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST(file_position, a_position_reads_back_and_a_corrupt_or_foreign_one_is_an_error) {
    const file_position p{"/var/log/app\nodd%.csv", 2049, 77, 123456};
    const std::string value = encode_file_position(p, "tail");
    const auto back = decode_file_position(value, "tail", "/ck/tail.checkpoint");
    ASSERT_EQ(back.error, "");
    EXPECT_EQ(back.position->path, p.path);
    EXPECT_EQ(back.position->device, 2049U);
    EXPECT_EQ(back.position->inode, 77U);
    EXPECT_EQ(back.position->offset, 123456U);

    std::string corrupt = value;
    corrupt[corrupt.find("123456")] = '9';
    EXPECT_EQ(decode_file_position(corrupt, "tail", "/ck/tail.checkpoint").error,
              "the checkpoint /ck/tail.checkpoint is corrupt (its checksum does not match): "
              "restore it, or move it away to read the file from the start");
    EXPECT_NE(decode_file_position(value, "other", "/ck/other.checkpoint")
                  .error.find("belongs to the source 'tail', not to 'other'"),
              std::string::npos);
    EXPECT_NE(decode_file_position("{\"offset\": 5}", "tail", "/ck/x")
                  .error.find("is not a sluice file checkpoint"),
              std::string::npos);
    EXPECT_NE(decode_file_position(value.substr(0, value.size() - 3), "tail", "/ck/x")
                  .error.find("is corrupt"),
              std::string::npos)
        << "a torn write is corrupt, not a shorter position";
}
