#pragma once
/// A real mosquitto broker (Debian's) for tests: on a free 127.0.0.1 port, with persistence in
/// its own directory, restartable (SIGTERM: it saves its persistent sessions), and a publisher
/// that runs `mosquitto_pub` in another process. GoogleTest assertions report failures; a
/// broker still running at the end is killed.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <gtest/gtest.h>

#include "testing/process.hpp"

namespace sluice::test {

/// A port nothing listens on now (the kernel's pick).
inline std::uint16_t free_loopback_port() {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor probe(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return probe.local_endpoint().port();
}

inline bool accepts_connections(std::uint16_t port) {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket s(io);
    boost::system::error_code error;
    s.connect({boost::asio::ip::make_address("127.0.0.1"), port}, error);
    return !error;
}

class mosquitto_broker {
public:
    /// `extra`: more mosquitto.conf lines (queue and in-flight limits, say).
    explicit mosquitto_broker(std::string dir, const std::string& extra = {})
        : dir_(std::move(dir)), port_(free_loopback_port()) {
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_);
        // mosquitto started as root drops to its own user, which must be able to write the
        // persistence file here.
        std::filesystem::permissions(dir_, std::filesystem::perms::all);
        std::ofstream(dir_ + "/mosquitto.conf") << "listener " << port_ << " 127.0.0.1\n"
                                                << "allow_anonymous true\n"
                                                << "persistence true\n"
                                                << "persistence_location " << dir_ << "/\n"
                                                << "log_dest stderr\n"
                                                << extra;
    }
    mosquitto_broker(const mosquitto_broker&) = delete;
    mosquitto_broker& operator=(const mosquitto_broker&) = delete;

    void start() {
        process_ = std::make_unique<child_process>(
            std::vector<std::string>{"/usr/sbin/mosquitto", "-c", dir_ + "/mosquitto.conf"},
            "mosquitto_" + std::to_string(port_) + "_" + std::to_string(starts_++));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!accepts_connections(port_) && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        ASSERT_TRUE(accepts_connections(port_)) << process_->err();
    }
    /// SIGTERM: mosquitto saves its persistent sessions and exits.
    void stop() {
        process_->signal(SIGTERM);
        EXPECT_EQ(process_->wait(std::chrono::seconds(10)), 0) << process_->err();
        process_.reset();
    }
    /// Publishes each line of `lines` as one message on `topic`.
    void publish(const std::string& topic, const std::string& lines, int qos) const {
        const std::string file = dir_ + "/publish.txt";
        std::ofstream(file) << lines;
        const std::string command = "mosquitto_pub -h 127.0.0.1 -p " + std::to_string(port_) +
                                    " -q " + std::to_string(qos) + " -t '" + topic + "' -l < " +
                                    file;
        ASSERT_EQ(std::system(command.c_str()), 0) << command;
    }
    std::uint16_t port() const { return port_; }

private:
    std::string dir_;
    std::uint16_t port_;
    int starts_ = 0;
    std::unique_ptr<child_process> process_;
};

} // namespace sluice::test
