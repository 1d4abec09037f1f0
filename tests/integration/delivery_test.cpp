// At-least-once across workers: a file source with a checkpoint store resumes in a new worker
// where processing had finished (a clean stop repeats nothing), reads a replaced or shortened
// file from the start and says so, and fails with an error naming a corrupt checkpoint.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/checkpoint/file_position.hpp"
#include "sluice/source/file_source.hpp"
#include "testing/generator_text.hpp"
#include "testing/test_worker.hpp"

namespace {

using namespace sluice::runtime;
using sluice::test::generator_text;
using sluice::test::test_worker;
using namespace std::chrono_literals;

struct checkpointed_file {
    checkpointed_file()
        : dir(std::filesystem::temp_directory_path() /
              ("sluice-delivery-" + std::to_string(::getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())),
          path(dir / "input.csv") {
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir / "checkpoints");
    }
    ~checkpointed_file() { std::filesystem::remove_all(dir); }
    void write(const std::string& text) const { std::ofstream(path, std::ios::binary) << text; }
    std::string read_all() const {
        std::ifstream in(path, std::ios::binary);
        return {std::istreambuf_iterator<char>(in), {}};
    }

    /// Registers and starts the file source on `w` with a store in `checkpoints/`.
    source_handle start(test_worker& w, directory_checkpoint_store& store,
                        source_limits limits = {1, 4}) const {
        source_options o;
        o.name = "tail";
        o.limits = limits;
        o.flush_timeout = 5ms;
        const auto answer = w.server.register_source(
            o, [this, &store](environment& env, const executor& lane) -> std::unique_ptr<source> {
                return std::make_unique<file_source>(env, lane, path.string(),
                                                     file_checkpoint_options{&store, "tail", 5ms});
            });
        EXPECT_TRUE(answer.admitted()) << answer.message;
        EXPECT_TRUE(w.server.start(answer.handle));
        return answer.handle;
    }
    std::string store_dir() const { return (dir / "checkpoints").string(); }

    std::filesystem::path dir;
    std::filesystem::path path;
};

std::uint64_t saved_offset(directory_checkpoint_store& store) {
    const auto loaded = store.load("tail");
    EXPECT_TRUE(loaded.found);
    const auto decoded = decode_file_position(loaded.value, "tail", store.where("tail"));
    EXPECT_EQ(decoded.error, "");
    return decoded.position ? decoded.position->offset : 0;
}

struct notices {
    void attach(checkpoint_store& store) {
        store.set_notice_callback([this](const std::string& m) {
            const std::lock_guard lock(mutex);
            said.push_back(m);
        });
    }
    std::string all() {
        const std::lock_guard lock(mutex);
        std::string text;
        for (const auto& m : said) {
            text += m + "\n";
        }
        return text;
    }
    std::mutex mutex;
    std::vector<std::string> said;
};

} // namespace

TEST(delivery, a_file_source_resumes_in_a_new_worker_where_processing_had_finished) {
    checkpointed_file f;
    constexpr std::uint64_t records = 200000;
    const std::string whole = generator_text(4, 0, records);
    f.write(whole);
    std::uint64_t first_records = 0;
    {
        directory_checkpoint_store store(f.store_dir());
        test_worker w({64, 4096, 4, 64}, {2, 2, 1});
        w.sink.on_each_buffer = [] { std::this_thread::sleep_for(200us); };
        const auto h = f.start(w, store, {1, 1});
        ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.total_records_locked() > 2000; }));
        ASSERT_TRUE(w.sink.wait_for([&] { return store.stats().writes_total >= 2; }))
            << "checkpoints are written while the source runs";
        w.server.shutdown(); // a clean stop: the last processed position is saved
        w.server.unregister_source(h);
        EXPECT_EQ(store.stats().unsaved_bytes, 0U) << "everything processed is saved";
        first_records = w.sink.origin(h).records;
        ASSERT_FALSE(w.sink.origin(h).end_of_stream) << "read to the end before the stop";
        EXPECT_TRUE(w.sink.violations().empty()) << w.sink.violations().front();
    }
    directory_checkpoint_store store(f.store_dir());
    const std::uint64_t offset = saved_offset(store);
    EXPECT_EQ(offset, generator_text(4, 0, first_records).size())
        << "the checkpoint is the end of the last record the sink got";
    test_worker w({64, 4096, 4, 64}, {2, 2, 1});
    w.sink.check_generator_records = false;
    w.sink.keep_raw = true;
    const auto h = f.start(w, store);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    const auto second = w.sink.origin(h);
    EXPECT_EQ(second.records + first_records, records) << "every record once over both workers";
    EXPECT_EQ(second.raw, whole.substr(offset)) << "the new worker starts at the checkpoint";
    EXPECT_EQ(store.stats().resumes_total, 1U);
    EXPECT_EQ(store.stats().resumed_bytes_total, offset);
    w.server.shutdown();
    EXPECT_EQ(saved_offset(store), whole.size()) << "at the end, the checkpoint is the file's end";
}

TEST(delivery, a_replaced_or_shortened_file_is_read_from_the_start_and_the_store_says_so) {
    checkpointed_file f;
    f.write(generator_text(5, 0, 3000));
    {
        directory_checkpoint_store store(f.store_dir());
        test_worker w;
        f.start(w, store);
        ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
    }
    for (const bool replace : {true, false}) {
        const std::string fresh = generator_text(6, 0, replace ? 2500 : 10);
        if (replace) { // a new file renamed over the old one: another inode
            const auto next = f.dir / "next.csv";
            std::ofstream(next, std::ios::binary) << fresh;
            std::filesystem::rename(next, f.path);
        } else { // the same inode, truncated and rewritten
            f.write(fresh);
        }
        directory_checkpoint_store store(f.store_dir());
        notices heard;
        heard.attach(store);
        test_worker w;
        w.sink.check_generator_records = false;
        w.sink.keep_raw = true;
        const auto h = f.start(w, store);
        ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.end_of_streams_locked() == 1; }));
        EXPECT_EQ(w.sink.origin(h).raw, fresh) << "read from byte 0";
        EXPECT_EQ(store.stats().restarts_from_zero_total, 1U);
        EXPECT_NE(heard.all().find(replace ? "replaced since its checkpoint (another inode)"
                                           : "shorter (" + std::to_string(fresh.size()) +
                                                 " bytes) than its checkpoint's offset"),
                  std::string::npos)
            << heard.all();
        EXPECT_NE(heard.all().find("reading it from the start"), std::string::npos);
    }
}

TEST(delivery, a_corrupt_checkpoint_fails_the_source_with_an_error_naming_the_file) {
    checkpointed_file f;
    f.write(generator_text(7, 0, 100));
    directory_checkpoint_store store(f.store_dir());
    { std::ofstream(store.where("tail")) << "offset=12\n"; }
    test_worker w;
    const auto h = f.start(w, store);
    ASSERT_TRUE(w.sink.wait_for([&] { return w.sink.errors_locked() == 1; }));
    const auto log = w.sink.origin(h);
    EXPECT_EQ(log.records, 0U) << "nothing read: never a silent restart from 0";
    EXPECT_NE(log.error_message.find("the checkpoint " + store.where("tail") +
                                     " is not a sluice file checkpoint"),
              std::string::npos)
        << log.error_message;
    EXPECT_EQ(store.stats().load_failures_total, 1U);
}
