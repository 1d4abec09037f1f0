#include "apps/sluiced/service.hpp"

#include <systemd/sd-daemon.h>

#include <ctime>
#include <string>

namespace sluiced {

namespace {

void notify(const std::string& state) {
    // 0: keep NOTIFY_SOCKET, so a later notification still reaches systemd.
    [[maybe_unused]] const int sent = sd_notify(0, state.c_str());
}

} // namespace

void notify_ready(std::string_view status) {
    notify("READY=1\nSTATUS=" + std::string(status));
}

void notify_stopping() {
    notify("STOPPING=1\nSTATUS=draining");
}

void notify_reloading() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const auto usec = static_cast<long long>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1000;
    notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=reloading");
}

void notify_status(std::string_view status) {
    notify("STATUS=" + std::string(status));
}

} // namespace sluiced
