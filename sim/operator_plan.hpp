#pragma once
/// The simulated operator: registers the run's sources (generators, files, peers of
/// reconnecting clients), and at virtual times drawn from the seed stops and restarts them,
/// registers and unregisters more while the pool is busy, and registers late ones that wait for
/// admission. Its actions run until the run has finished (`close`), not while it winds down: a
/// churn registration that fired during the final quiescence steps once added a source whose
/// bytes were delivered after the read counters had been taken.

#include <cstdint>
#include <deque>

#include "sim/fault_plan.hpp"
#include "sim/sim_environment.hpp"
#include "sim/simulation.hpp"
#include "sim/verifying_sink.hpp"
#include "sim/virtual_http_client.hpp"
#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/server/source_server.hpp"
#include "sluice/source/http_source.hpp"

namespace sluice::sim {

struct planned_source {
    enum class shape : std::uint8_t { generator, file, peer, http } what = shape::generator;
    runtime::source_handle handle = 0;
    std::uint32_t id = 0; ///< its generator id (a file's path is "vs/<id>")
    bool stopped_by_plan = false;
    /// A file without a scripted reset or truncation: it ends with all its records.
    bool whole_file = false;
    /// Ends only with all its records (a generator, a peer; a file may be truncated).
    bool complete_at_end() const noexcept { return what != shape::file; }
};

class operator_plan {
public:
    /// Everything referenced must outlive the plan's scheduled actions (the run's scope).
    /// `checkpoints` (null: none): where file sources keep their processed positions.
    operator_plan(const scenario& s, const fault_plan& faults, const run_limits& limits,
                  sim_environment& env, runtime::source_server& server, verifying_sink& out,
                  report& result, runtime::checkpoint_store* checkpoints);

    /// Registers and starts the scenario's sources; a refusal is a violation.
    void add_initial_sources();
    /// After a crash, in the new worker: registers and starts the file `from` (of the crashed
    /// worker's plan) again, resuming from its checkpoint; its first record is `first_record`.
    void add_resumed_file(const planned_source& from, std::uint64_t first_record);
    /// Schedules the stops and restarts, the churn and the late registrations.
    void schedule();
    /// The liveness phase begins: endless sources are stopped (they end only so) and the plan
    /// closes; sources the plan stopped and has not restarted yet are restarted.
    void begin_liveness();
    /// Each source ended once (EoS or Error), or, endless ones, all stopped and the server idle.
    bool all_finished() const;
    /// No further action of the plan runs.
    void close() noexcept { open_ = false; }
    void stop_all();

    /// Every source the run had, in registration order; the first `initial_count()` are the
    /// scenario's own.
    const std::deque<planned_source>& sources() const noexcept { return sources_; }
    std::size_t initial_count() const noexcept { return initial_; }
    bool endless() const noexcept { return infinite_; }
    /// What the HTTP sources' virtual clients heard, and the sources' own counts.
    const http_tally& http_heard() const noexcept { return http_tally_; }
    const runtime::http_counters& http_counted() const noexcept { return http_counters_; }

private:
    /// An HTTP source over a virtual client (sim/virtual_http_client.hpp).
    runtime::source_server::source_factory http_factory(std::uint32_t id);
    /// How a virtual stream's records arrive (a file's or a peer's): chunks, gaps, short reads.
    virtual_stream_script stream_shape(std::uint32_t id);
    runtime::source_server::source_factory make_factory(std::uint32_t id, planned_source& p);
    /// False when refused at once (a waiting registration answers later).
    bool add_source(std::uint32_t id, bool waiting);
    runtime::source_options options_for(std::uint32_t id);
    runtime::source_server::source_factory file_factory(std::uint32_t id);
    void register_waiting(runtime::source_options options,
                          const runtime::source_server::source_factory& factory, planned_source p);
    void schedule_restarts(runtime::duration horizon);
    void schedule_churn(runtime::duration horizon);
    void schedule_late_registrations(runtime::duration horizon);

    const scenario& s_;
    const fault_plan& faults_;
    const run_limits& limits_;
    sim_environment& env_;
    runtime::source_server& server_;
    verifying_sink& out_;
    report& result_;
    runtime::checkpoint_store* checkpoints_;
    runtime::duration admission_wait_;
    bool infinite_;
    bool open_ = true;
    bool stop_all_requested_ = false;
    std::deque<planned_source> sources_; ///< stable references for scheduled actions
    runtime::http_options http_options_;
    runtime::http_counters http_counters_;
    http_tally http_tally_;
    std::size_t initial_ = 0;
};

} // namespace sluice::sim
