/// The simulation seam is only worth something if runtime code cannot go around it: this test
/// fails when library code under runtime/ outside the production environment reads a real clock,
/// creates a thread, sleeps or draws randomness. (The programs in apps/ own the real world and
/// are not scanned.)

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

TEST(seam, runtime_code_reaches_clock_threads_and_randomness_only_through_the_environment) {
    const std::filesystem::path runtime = std::filesystem::path(SLUICE_SOURCE_DIR) / "runtime";
    ASSERT_TRUE(std::filesystem::is_directory(runtime)) << runtime;
    const std::regex forbidden(
        R"(steady_clock|system_clock|high_resolution_clock|std::thread|std::jthread|)"
        R"(this_thread::sleep|sleep_for|sleep_until|usleep|nanosleep|random_device|\brand\(|)"
        R"(std::async|pthread_create|asio::thread_pool|steady_timer|system_timer|deadline_timer)");
    std::vector<std::string> offences;
    std::size_t files = 0;
    for (const auto& item : std::filesystem::recursive_directory_iterator(runtime)) {
        const auto& path = item.path();
        if (!item.is_regular_file() || (path.extension() != ".hpp" && path.extension() != ".cpp")) {
            continue;
        }
        const auto relative = std::filesystem::relative(path, runtime).string();
        if (path.filename().string().rfind("production_environment.", 0) == 0 ||
            relative.rfind("sluice/env/production/", 0) == 0) {
            continue; // the production side of the seam (its transports: one per file)
        }
        ++files;
        std::ifstream in(path);
        std::string line;
        for (int number = 1; std::getline(in, line); ++number) {
            const auto comment = line.find("//");
            const std::string code = comment == std::string::npos ? line : line.substr(0, comment);
            if (std::regex_search(code, forbidden)) {
                offences.push_back(relative + ":" + std::to_string(number) + ": " + line);
            }
        }
    }
    EXPECT_GT(files, 10U) << "the scan found almost nothing; is the path right?";
    std::ostringstream report;
    for (const auto& o : offences) {
        report << o << "\n";
    }
    EXPECT_TRUE(offences.empty()) << "runtime code outside the seam touches the real world:\n"
                                  << report.str();
}

} // namespace
