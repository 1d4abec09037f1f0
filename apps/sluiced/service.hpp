#pragma once
/// systemd's notify protocol for `Type=notify` units (sd_notify from libsystemd): READY once the
/// configured sources run, STOPPING when a drain begins, RELOADING then READY around a reload
/// (SIGHUP), and a STATUS
/// line. Each call does nothing when the process was not started by systemd (no
/// NOTIFY_SOCKET), so the worker behaves the same outside a unit.

#include <string_view>

namespace sluiced {

void notify_ready(std::string_view status);
void notify_stopping();
/// Before a reload; READY=1 (notify_ready) says it is done.
void notify_reloading();
void notify_status(std::string_view status);

} // namespace sluiced
