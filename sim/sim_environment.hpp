#pragma once
/// The simulated side of the environment seam (DESIGN.md §4): lanes that the simulator steps one
/// handler at a time in an order chosen by a strategy from the seed, a virtual clock in integer
/// nanoseconds that jumps to the next timer when nothing can run, virtual compute and blocking
/// workers with a cost model, virtual byte streams, and independent random streams derived from
/// one root seed. Everything runs on the calling thread: a run is a function of (scenario, seed).

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/io_context.hpp>

#include "sluice/env/environment.hpp"

namespace sluice::sim {

using runtime::duration;
using runtime::time_point;

/// SplitMix64: small, fast, and good enough to drive schedules and workloads reproducibly.
class random_stream {
public:
    explicit random_stream(std::uint64_t seed = 0) : state_(seed) {}
    std::uint64_t next() noexcept {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31U);
    }
    /// Uniform in [0, bound); bound ≥ 1.
    std::uint64_t below(std::uint64_t bound) noexcept { return next() % bound; }
    /// Uniform in [0, 1).
    double unit() noexcept { return static_cast<double>(next() >> 11U) * 0x1.0p-53; }
    bool chance(double probability) noexcept { return unit() < probability; }
    /// A child stream, independent of this one's future draws.
    random_stream split(std::uint64_t salt) noexcept {
        return random_stream(next() ^ (salt * 0xD1B54A32D192ED03ULL));
    }

private:
    std::uint64_t state_;
};

enum class strategy : std::uint8_t {
    fifo,   ///< runnable lanes and pools in round-robin order (fair)
    random, ///< a uniformly random runnable one each step (fair with probability 1)
    pct,    ///< PCT: random priorities, d priority change points (finds ordering bugs; unfair)
};

struct sim_options {
    std::size_t lanes = 2;
    std::size_t compute_workers = 2;
    std::size_t blocking_workers = 2;
    std::uint64_t seed = 1;
    strategy order = strategy::fifo;
    std::uint32_t pct_depth = 3;                           ///< change points for PCT
    std::uint64_t pct_steps_estimate = 100000;             ///< where PCT places its change points
    duration step_cost = std::chrono::nanoseconds(500);    ///< virtual time per lane handler
    duration compute_cost = std::chrono::microseconds(2);  ///< per compute task
    double compute_ns_per_byte = 5.0;                      ///< plus this per byte processed
    double compute_stall_probability = 0.0;                ///< heavy-tail stalls (a fault)
    duration compute_stall = std::chrono::milliseconds(2); ///< scale of a stall
};

/// A virtual stream's script: generator-format records that arrive in chunks at virtual times.
struct virtual_stream_script {
    std::uint64_t id = 0;                              ///< generator id of its records
    std::uint64_t records = 100;                       ///< records before the end
    std::uint32_t chunk_bytes_max = 512;               ///< bytes that arrive at once (at least 1)
    duration gap_max = std::chrono::microseconds(200); ///< between arrivals
    std::uint32_t short_read_max = 0; ///< a fault: reads return at most this many bytes (0 = off)
    std::uint64_t reset_at_bytes = 0; ///< a fault: the stream resets after this many (0 = off)
    std::uint64_t truncate_at_bytes = 0; ///< a fault: EOF mid-record after this many (0 = off)
    double spurious_wakeup = 0.0;        ///< a fault: readiness with nothing to read (zero read)
};

/// A virtual TCP peer that a `tcp_client_source` connects to (address = its name): each
/// connection sends the script's records from the first one no earlier connection delivered
/// whole, so a record cut by a reset (or a stop) is sent again whole on the next connection.
/// Faults: a connection resets at an arbitrary byte offset (`resets_max` times at most), and a
/// connect is refused (`refusals_max` times at most).
struct virtual_peer_script {
    virtual_stream_script stream;   ///< records, chunking, gaps, short reads (no reset/truncate)
    std::uint32_t resets_max = 0;   ///< connections that reset mid-stream, at most
    double reset_probability = 0.5; ///< per connection, while resets are left
    std::uint32_t refusals_max = 0; ///< refused connects, at most
};

class sim_environment final : public runtime::environment {
public:
    explicit sim_environment(const sim_options& options);
    sim_environment(const sim_environment&) = delete;
    sim_environment& operator=(const sim_environment&) = delete;
    ~sim_environment() override;

    // The seam.
    bool inject(runtime::fault_site site) noexcept override;
    /// With the interleaving probability, runs one ready compute task or one ready handler of
    /// another lane inline (as another thread would, while this lane's handler is between a
    /// check and its act).
    void scheduling_point() noexcept override;
    void set_interleave_probability(double probability) { interleave_probability_ = probability; }
    std::uint64_t interleavings() const noexcept { return interleavings_; }
    /// Probability that `site` injects its fault (0 = off, the default).
    void set_fault_probability(runtime::fault_site site, double probability);
    std::size_t lane_count() const noexcept override { return lanes_.size(); }
    runtime::executor lane_executor(std::size_t index) override;
    time_point now() const noexcept override { return now_; }
    std::unique_ptr<runtime::timer> make_timer(const runtime::executor& lane) override;
    std::uint64_t random_u64() noexcept override { return environment_random_.next(); }
    void post_compute(std::function<void()> work) override;
    void charge_compute(std::uint64_t bytes) noexcept override { charged_bytes_ += bytes; }
    std::size_t compute_concurrency() const noexcept override { return compute_.workers.size(); }
    void post_blocking(std::function<void()> work) override;
    std::size_t blocking_concurrency() const noexcept override { return blocking_.workers.size(); }
    boost::asio::awaitable<
        std::pair<boost::system::error_code, std::unique_ptr<runtime::byte_stream>>>
    connect(runtime::executor lane, std::string address, std::uint16_t port,
            duration timeout) override;
    std::pair<boost::system::error_code, std::unique_ptr<runtime::stream_listener>>
    listen(runtime::executor lane, const std::string& address, std::uint16_t port,
           int backlog) override;
    std::pair<boost::system::error_code, std::unique_ptr<runtime::datagram_socket>>
    open_udp(runtime::executor lane, const std::string& address, std::uint16_t port) override;
    /// Opens the virtual stream registered under `path` (see add_virtual_stream).
    std::pair<boost::system::error_code, std::unique_ptr<runtime::byte_stream>>
    open_file(runtime::executor lane, const std::string& path, std::uint64_t offset) override;

    // The simulator's side.
    enum class step_result : std::uint8_t { ran, advanced, idle };
    /// Runs one handler or compute task, or advances virtual time to the next event. `idle`:
    /// nothing can run and nothing is scheduled.
    step_result step();
    /// Runs `action` on the simulator (not on a lane) at virtual time `at`.
    void at(time_point when, std::function<void()> action);
    void add_virtual_stream(const std::string& path, const virtual_stream_script& script);
    /// A peer `connect(lane, name, …)` reaches (any port).
    void add_virtual_peer(const std::string& name, const virtual_peer_script& script);
    /// Connections made to peers, and those that reset mid-stream.
    std::uint64_t peer_connections() const noexcept { return peer_connections_; }
    std::uint64_t peer_resets() const noexcept { return peer_resets_; }
    void set_compute_stalls(double probability) {
        options_.compute_stall_probability = probability;
    }

    std::uint64_t steps() const noexcept { return steps_; }
    std::uint64_t trace_hash() const noexcept { return hash_; }
    std::size_t timers_pending() const noexcept {
        return timer_slots_.size() - free_timer_slots_.size();
    }
    std::size_t compute_queued() const noexcept {
        return compute_.queue.size() + blocking_.queue.size();
    }
    random_stream& faults() noexcept { return faults_; }
    random_stream& workload() noexcept { return workload_; }

    // Timers (used by the virtual timer and streams). One-shot; `complete` gets
    // success or operation_aborted, posted to `lane`. Never 0, so 0 can mean "no timer".
    using timer_id = std::uint64_t;
    timer_id add_timer(time_point deadline, runtime::executor lane,
                       boost::asio::any_completion_handler<void(boost::system::error_code)> done);
    void cancel_timer(timer_id id);

private:
    struct pool_state {
        std::vector<time_point> workers; ///< busy until
        std::deque<std::function<void()>> queue;
    };
    struct pending_timer {
        runtime::executor lane;
        boost::asio::any_completion_handler<void(boost::system::error_code)> done;
        std::function<void()> action; ///< simulator actions (at) instead of a handler
    };
    /// A heap entry: timers fire by (deadline, sequence), the order of the map this replaced
    /// (trace hashes unchanged). A cancelled timer's entry stays in the heap until it reaches
    /// the top or the heap is compacted; its slot's sequence no longer matches it.
    struct timer_entry {
        time_point deadline{};
        std::uint64_t sequence = 0;
        std::uint32_t slot = 0;
    };
    /// A timer_id is the sequence above the slot's index.
    static constexpr unsigned timer_slot_bits = 24;
    static constexpr std::uint64_t timer_slots_max = std::uint64_t{1} << timer_slot_bits;

    timer_id arm(time_point deadline, pending_timer timer);
    /// Moves the timer out of its slot and frees the slot for reuse.
    pending_timer take_timer(std::uint32_t slot);
    /// Pops cancelled entries off the top, so the top (if any) is a live timer.
    void drop_cancelled_top();

    bool run_pool(pool_state& pool, std::uint64_t tag);
    bool fire_due_timers();
    void mix(std::uint64_t value) noexcept;
    /// The order in which to offer the candidates a step (reuses one vector: this runs every step).
    const std::vector<std::size_t>& order();

    sim_options options_;
    time_point now_{0};
    std::vector<std::unique_ptr<boost::asio::io_context>> lanes_;
    pool_state compute_;
    pool_state blocking_;
    // Timers: a binary min-heap of entries over slots reused through a free list (was a
    // std::map plus an unordered_map from id to deadline: two node allocations per timer).
    std::vector<timer_entry> timer_heap_;
    /// Slots are only ever move-constructed and reset, never assigned: Boost 1.81's
    /// any_completion_handler move assignment constructs from the lvalue `other`, which picks
    /// its wrapping constructor, and that recursed until the stack overflowed.
    std::deque<std::optional<pending_timer>> timer_slots_;
    std::vector<std::uint64_t> timer_sequences_; ///< by slot: the armed timer's, 0 when free
    std::vector<std::uint32_t> free_timer_slots_;
    std::uint64_t next_timer_sequence_ = 1;
    std::map<std::string, virtual_stream_script> streams_;
    /// A peer's script and the first record no connection has delivered whole yet (node-based:
    /// streams keep a pointer to it).
    struct peer_state {
        virtual_peer_script script;
        std::uint64_t next_record = 0;
        std::uint32_t resets_left = 0;
        std::uint32_t refusals_left = 0;
    };
    std::map<std::string, peer_state> peers_;
    std::uint64_t peer_connections_ = 0;
    std::uint64_t peer_resets_ = 0;
    random_stream root_;
    random_stream scheduler_;
    random_stream faults_;
    random_stream workload_;
    random_stream environment_random_;
    std::uint64_t steps_ = 0;
    std::uint64_t charged_bytes_ = 0; ///< bytes charged by the compute task running now
    std::uint64_t hash_ = 0xcbf29ce484222325ULL;
    std::size_t round_robin_ = 0;
    std::vector<std::size_t> order_;
    std::vector<std::uint64_t> pct_priority_;
    std::vector<std::uint64_t> pct_change_steps_;
    std::array<double, runtime::fault_site_count> fault_probability_{}; ///< by fault_site
    double interleave_probability_ = 0.0;
    bool interleaving_ = false; ///< inside scheduling_point: no nesting
    static constexpr std::size_t no_lane = ~std::size_t{0};
    std::size_t running_lane_ = no_lane; ///< the lane whose handler step() runs now
    std::uint64_t interleavings_ = 0;    ///< compute tasks run inline at scheduling points
};

} // namespace sluice::sim
