#pragma once
/// Child processes for integration tests and the ingest benchmark: spawn with output to files,
/// wait with a bound. No GoogleTest here, so bench/ can use it too.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

extern char** environ;

namespace sluice::test {

/// Where child output goes: $TEST_TMPDIR (set by test runners) or /tmp, as GoogleTest's TempDir.
inline std::string temp_directory() {
    const char* dir = std::getenv("TEST_TMPDIR");
    return dir != nullptr && *dir != '\0' ? dir : "/tmp";
}

class child_process {
public:
    /// Starts `argv`, stdout and stderr to files `<tag>.out` and `<tag>.err` under
    /// temp_directory().
    child_process(const std::vector<std::string>& argv, const std::string& tag)
        : out_path_(temp_directory() + "/" + tag + ".out"),
          err_path_(temp_directory() + "/" + tag + ".err") {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, out_path_.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addopen(&actions, 2, err_path_.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
        std::vector<char*> args;
        for (const auto& a : argv) {
            args.push_back(const_cast<char*>(a.c_str()));
        }
        args.push_back(nullptr);
        if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) {
            pid_ = -1;
        }
        posix_spawn_file_actions_destroy(&actions);
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;
    ~child_process() {
        if (pid_ > 0 && !exited_) {
            ::kill(pid_, SIGKILL);
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
    }

    bool started() const { return pid_ > 0; }
    /// The child's process id (-1 if it could not start).
    pid_t pid() const noexcept { return pid_; }
    void signal(int number) { ::kill(pid_, number); }

    /// Waits for exit, polling with a bound. Returns the exit code, or -1 on timeout/signal.
    int wait(std::chrono::milliseconds bound) {
        const auto deadline = std::chrono::steady_clock::now() + bound;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            const pid_t r = ::waitpid(pid_, &status, WNOHANG);
            if (r == pid_) {
                exited_ = true;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return -1;
    }
    bool running() {
        int status = 0;
        if (exited_) {
            return false;
        }
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            exited_ = true;
            exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            return false;
        }
        return true;
    }
    int exit_code() const { return exit_code_; }

    std::string out() const { return slurp(out_path_); }
    std::string err() const { return slurp(err_path_); }

    /// Polls `predicate` on stderr until it holds or the bound passes.
    template <typename Predicate>
    bool wait_for_err(Predicate predicate, std::chrono::milliseconds bound) {
        const auto deadline = std::chrono::steady_clock::now() + bound;
        while (std::chrono::steady_clock::now() < deadline) {
            if (predicate(err())) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return false;
    }

    /// Polls stderr until it holds `text` (at or after byte `from`) or the bound passes.
    bool wait_for_in_err(std::string_view text, std::size_t from, std::chrono::milliseconds bound) {
        return wait_for_err(
            [&](const std::string& e) { return e.find(text, from) != std::string::npos; }, bound);
    }
    bool wait_for_in_err(std::string_view text, std::chrono::milliseconds bound) {
        return wait_for_in_err(text, 0, bound);
    }

    static std::string slurp(const std::string& path) {
        std::ifstream in(path);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }

private:
    pid_t pid_ = -1;
    bool exited_ = false;
    int exit_code_ = -1;
    std::string out_path_;
    std::string err_path_;
};

/// The member `key` of the last line of `text` that is a JSON object holding it (a program's
/// report, or a file of one object); null when none is.
inline boost::json::value json_member(const std::string& text, const std::string& key) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    lines.push_back(text); // a pretty-printed object spans lines
    for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
        boost::system::error_code error;
        const auto value = boost::json::parse(*it, error);
        if (!error && value.is_object()) {
            if (const auto* found = value.as_object().if_contains(key)) {
                return *found;
            }
        }
    }
    return nullptr;
}

/// A number member (see json_member), truncated to an integer; -1 when there is none.
inline long long json_number(const std::string& text, const std::string& key) {
    const auto v = json_member(text, key);
    if (v.is_int64()) {
        return v.as_int64();
    }
    if (v.is_uint64()) {
        return static_cast<long long>(v.as_uint64());
    }
    if (v.is_double()) {
        return static_cast<long long>(v.as_double());
    }
    return -1;
}

/// A string member (see json_member); empty when there is none.
inline std::string json_string(const std::string& text, const std::string& key) {
    const auto v = json_member(text, key);
    return v.is_string() ? std::string(v.as_string()) : std::string();
}

} // namespace sluice::test
