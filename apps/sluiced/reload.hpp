#pragma once
/// Reloading sluiced's configuration on SIGHUP. The new file is validated first: on any error
/// each one is logged (located, as at start) and the running configuration is kept whole.
/// Otherwise sources are compared by name: an added [[source]] is registered and started, a
/// removed one is stopped and unregistered once stopped, a changed one is stopped and
/// registered anew with its new settings; the others are not touched. [[listener]] tables
/// likewise: an added one opens, a removed one stops accepting (its connections go on until
/// they end), a changed one closes and opens again. [log] and worker.status_interval_ms /
/// drain_timeout_ms apply at once. What cannot change while the worker runs (the pool,
/// threads, mode, processing, server, metrics, the sink's cost) is logged as needing a restart
/// and kept as it runs.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "apps/sluiced/worker_config.hpp"
#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/server/source_server.hpp"

namespace sluiced {

using namespace sluice::runtime;

/// A configured source as it runs: its settings and its instances' handles.
struct running_source {
    source_spec spec;
    std::vector<source_handle> handles;
};

/// The sources the worker runs, by name, and the ones being stopped before they are
/// unregistered.
class source_set {
public:
    /// `checkpoints` (may be null: none) is where file sources keep their positions; it must
    /// outlive the server's sources.
    explicit source_set(source_server& server, checkpoint_store* checkpoints = nullptr,
                        duration checkpoint_interval = std::chrono::seconds(1))
        : server_(server), checkpoints_(checkpoints), checkpoint_interval_(checkpoint_interval) {}

    /// Registers `spec`'s instances (count of them) and starts them; refusals are logged and
    /// counted. Returns how many started.
    std::size_t add(const source_spec& spec, std::size_t& refused);
    /// Stops `name`'s instances; each is unregistered once it has stopped (see `tend`).
    void remove(const std::string& name);
    /// Unregisters what has stopped since; called every control-loop tick. Bounded: a source
    /// that has not stopped 30 s after its stop is logged and left registered.
    void tend();

    const std::map<std::string, running_source>& running() const noexcept { return running_; }
    source_server& server() noexcept { return server_; }

private:
    struct stopping {
        source_handle handle;
        int ticks_left;
    };
    source_server& server_;
    checkpoint_store* checkpoints_;
    duration checkpoint_interval_;
    std::map<std::string, running_source> running_;
    std::vector<stopping> stopping_;
};

struct reload_result {
    bool applied = false; ///< false: the running configuration was kept whole
    std::size_t added = 0;
    std::size_t removed = 0;
    std::size_t changed = 0;
    std::size_t unchanged = 0;
    std::size_t listeners_opened = 0;
    std::size_t listeners_closed = 0;
    std::vector<std::string> need_restart; ///< tables whose change waits for a restart
};

/// Reads and validates `path`, then applies what can change at runtime to `current` (the
/// running configuration) and `sources`. Logs each step.
reload_result reload_configuration(const std::string& path, worker_config& current,
                                   source_set& sources);

/// True when two specs run the same source (a generator's id, assigned by position in the
/// file, does not count).
bool same_source(const source_spec& a, const source_spec& b);

} // namespace sluiced
