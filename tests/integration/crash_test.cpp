// At least once across a real crash. A file: sluiced reads a file with [checkpoint] on and is
// killed with SIGKILL at random moments, then started again, several times; a last run reads to the
// end. Every run's records (the --records-file witness) must be exactly the input from the
// checkpoint the run found, so nothing is lost or corrupted, and records repeat only from the
// window between a run's last checkpoint and its kill (reported per kill). MQTT QoS 1: a real
// mosquitto with persistence queues messages for sluiced's persistent session, sluiced is killed
// while it delivers them and started again; every message must arrive at least once.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/checkpoint/file_position.hpp"
#include "testing/generator_text.hpp"
#include "testing/mosquitto_broker.hpp"
#include "testing/process.hpp"

namespace {

using sluice::test::child_process;
using sluice::test::generator_text;
using namespace std::chrono_literals;

std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

/// The checkpoint's offset (0 when there is none yet); a bad checkpoint fails the test.
std::uint64_t checkpoint_offset(const std::filesystem::path& dir) {
    sluice::runtime::directory_checkpoint_store store(dir.string());
    const auto loaded = store.load("tail");
    EXPECT_EQ(loaded.error, "");
    if (!loaded.found) {
        return 0;
    }
    const auto decoded =
        sluice::runtime::decode_file_position(loaded.value, "tail", store.where("tail"));
    EXPECT_EQ(decoded.error, "") << "a kill never leaves a torn checkpoint";
    return decoded.position ? decoded.position->offset : 0;
}

std::uint64_t crash_seed() {
    if (const char* given = std::getenv("SLUICE_CRASH_SEED")) {
        return std::strtoull(given, nullptr, 10);
    }
    return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

} // namespace

TEST(crash, sluiced_killed_at_random_moments_delivers_every_file_record_at_least_once) {
    const auto dir =
        std::filesystem::temp_directory_path() / ("sluice-crash-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir / "checkpoints");
    const auto input = dir / "input.csv";
    const auto records = dir / "records.out";
    const std::string whole = generator_text(3, 0, 300000);
    std::ofstream(input, std::ios::binary) << whole;
    // One file source read at the pace of a slow engine (1 ms a 4 KiB buffer, in order: at
    // most 4 MB/s), so the kills land inside the file.
    const auto config = dir / "crash.toml";
    std::ofstream(config) << "[worker]\nsink_cost_us_per_buffer = 1000\n"
                          << "[metrics]\nenabled = false\n"
                          << "[pool]\nbuffer_count = 64\nbuffer_size_bytes = 4096\n"
                          << "processing_reserve = 8\nsources_max = 16\n"
                          << "[checkpoint]\ndirectory = \"" << (dir / "checkpoints").string()
                          << "\"\ninterval_ms = 20\n"
                          << "[[source]]\nname = \"tail\"\nkind = \"file\"\npath = \""
                          << input.string() << "\"\nreserve = 1\ncap = 2\n";
    const std::uint64_t seed = crash_seed();
    std::mt19937_64 random(seed);
    std::printf("crash seed %llu (SLUICE_CRASH_SEED=%llu reruns it)\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));

    constexpr int kills = 8;
    std::uint64_t from = 0;     // the input offset the next run starts at (its checkpoint)
    std::uint64_t written = 0;  // bytes of the records file before the next run
    std::uint64_t repeated = 0; // bytes delivered twice
    for (int run = 0; run <= kills; ++run) {
        const bool last = run == kills;
        child_process p({SLUICE_SLUICED, "--quiet", "--config", config.string(), "--records-file",
                         records.string()},
                        "crash_run");
        ASSERT_TRUE(p.wait_for_in_err("sources started", 10s)) << p.err();
        if (!last) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50 + random() % 250));
            p.signal(SIGKILL);
            EXPECT_EQ(p.wait(10s), -1) << "killed, not exited";
        } else {
            // To the end of the file, then a clean stop.
            const auto deadline = std::chrono::steady_clock::now() + 60s;
            while (std::filesystem::file_size(records) - written < whole.size() - from &&
                   std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(20ms);
            }
            p.signal(SIGTERM);
            EXPECT_EQ(p.wait(30s), 0) << p.err();
        }
        const std::string out = slurp(records);
        ASSERT_GE(out.size(), written);
        const std::string_view this_run = std::string_view(out).substr(written);
        ASSERT_LE(from + this_run.size(), whole.size()) << "run " << run << " read past the end";
        ASSERT_TRUE(this_run == std::string_view(whole).substr(from, this_run.size()))
            << "run " << run << ": its records are not the input from its checkpoint (offset "
            << from << "): lost, corrupted or reordered";
        const std::uint64_t reached = from + this_run.size();
        const std::uint64_t saved = checkpoint_offset(dir / "checkpoints");
        ASSERT_LE(saved, reached) << "run " << run
                                  << ": the checkpoint is ahead of what the engine got (a loss)";
        if (!last) {
            repeated += reached - saved;
            std::printf("kill %d after %llu bytes: checkpoint at %llu, %llu bytes to repeat\n",
                        run + 1, static_cast<unsigned long long>(reached),
                        static_cast<unsigned long long>(saved),
                        static_cast<unsigned long long>(reached - saved));
            // The window: what a 4 MB/s engine gets in the interval plus a save's fsync and a
            // kill's timing (0.25 s), far less than a restart from 0 would repeat.
            EXPECT_LE(reached - saved, 1'000'000U) << "run " << run;
        } else {
            EXPECT_EQ(reached, whole.size()) << "the last run reads to the end";
            EXPECT_EQ(saved, whole.size()) << "a clean stop saves the final position";
        }
        from = saved;
        written = out.size();
    }
    std::printf("%d kills: %llu of %zu bytes delivered twice (%.2f%%)\n", kills,
                static_cast<unsigned long long>(repeated), whole.size(),
                100.0 * static_cast<double>(repeated) / static_cast<double>(whole.size()));
    std::filesystem::remove_all(dir);
}

TEST(crash, sluiced_killed_while_mqtt_qos1_delivers_loses_no_message) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("sluice-mqtt-crash-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    // It queues everything for the offline session (its default queue of 1,000 would drop the
    // rest) and lets 20 QoS 1 messages be in flight to a client (its default).
    sluice::test::mosquitto_broker broker((dir / "broker").string(),
                                          "max_queued_messages 0\nmax_inflight_messages 20\n");
    broker.start();
    const auto records = dir / "records.out";
    const auto config = dir / "mqtt.toml";
    // A slow engine (20 ms a buffer of 256 bytes, about 32 messages): QoS 1 messages wait in
    // sluice's buffers and in processing when the kill comes.
    std::ofstream(config) << "[worker]\nsink_cost_us_per_buffer = 20000\n"
                          << "[metrics]\nenabled = false\n"
                          << "[pool]\nbuffer_count = 64\nbuffer_size_bytes = 256\n"
                          << "processing_reserve = 8\nsources_max = 16\n"
                          << "[[source]]\nname = \"sensors\"\nkind = \"mqtt\"\nport = "
                          << broker.port() << "\ntopics = [\"sensors/#\"]\nqos = 1\n"
                          << "client_id = \"crash-worker\"\nclean_session = false\n"
                          << "keepalive_s = 5\nreserve = 1\ncap = 2\nflush_timeout_ms = 5\n";
    const auto run_sluiced = [&] {
        return std::make_unique<child_process>(
            std::vector<std::string>{SLUICE_SLUICED, "--quiet", "--config", config.string(),
                                     "--records-file", records.string()},
            "mqtt_crash_run");
    };
    const auto subscribed = [](child_process& p) {
        return p.wait_for_in_err("sources started", 10s);
    };
    {
        // The first start makes the persistent session and its subscription; then a clean stop.
        auto first = run_sluiced();
        ASSERT_TRUE(subscribed(*first)) << first->err();
        std::this_thread::sleep_for(300ms);
        first->signal(SIGTERM);
        ASSERT_EQ(first->wait(30s), 0) << first->err();
    }
    constexpr int messages = 4000;
    std::string lines;
    for (int i = 0; i < messages; ++i) {
        lines += "m," + std::to_string(i) + "\n";
    }
    broker.publish("sensors/a", lines, 1); // queued in the offline session
    const std::uint64_t seed = crash_seed();
    std::mt19937_64 random(seed);
    std::printf("crash seed %llu (SLUICE_CRASH_SEED=%llu reruns it)\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
    const auto delivered = [&] {
        std::map<std::string, int> seen;
        std::istringstream in(slurp(records));
        for (std::string line; std::getline(in, line);) {
            ++seen[line];
        }
        return seen;
    };
    constexpr int kills = 5;
    for (int run = 0; run < kills; ++run) {
        auto p = run_sluiced();
        ASSERT_TRUE(subscribed(*p)) << p->err();
        std::this_thread::sleep_for(std::chrono::milliseconds(100 + random() % 300));
        p->signal(SIGKILL);
        EXPECT_EQ(p->wait(10s), -1);
        const auto so_far = delivered();
        std::size_t deliveries = 0;
        for (const auto& [line, count] : so_far) {
            deliveries += static_cast<std::size_t>(count);
        }
        std::printf("kill %d: %zu distinct messages delivered, %zu deliveries\n", run + 1,
                    so_far.size(), deliveries);
    }
    auto last = run_sluiced();
    ASSERT_TRUE(subscribed(*last)) << last->err();
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (delivered().size() < static_cast<std::size_t>(messages) &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(50ms);
    }
    std::this_thread::sleep_for(300ms); // nothing more should come
    last->signal(SIGTERM);
    EXPECT_EQ(last->wait(30s), 0) << last->err();
    const auto seen = delivered();
    int missing = 0;
    int twice = 0;
    for (int i = 0; i < messages; ++i) {
        const auto it = seen.find("m," + std::to_string(i));
        if (it == seen.end()) {
            ++missing;
        } else {
            twice += it->second - 1;
        }
    }
    std::size_t foreign = seen.size();
    for (int i = 0; i < messages; ++i) {
        foreign -= seen.count("m," + std::to_string(i));
    }
    std::printf("%d kills: %d of %d messages missing, %d delivered again\n", kills, missing,
                messages, twice);
    EXPECT_EQ(missing, 0) << "a QoS 1 message acknowledged before processing was lost";
    EXPECT_EQ(foreign, 0U) << "a line that is no message: corrupted";
    std::filesystem::remove_all(dir);
}
