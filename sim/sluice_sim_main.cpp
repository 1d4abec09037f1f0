/// sluice-sim: runs the deterministic simulator from the command line, one seed or a sweep.
/// Exit 0 when every property holds, 1 on a violation (printing the line that reproduces it).

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "sim/simulation.hpp"

int main(int argc, char** argv) {
    using namespace sluice::sim;
    scenario s;
    std::string order = "fifo";
    std::string faults = "off";
    std::string policy = "sluice";
    std::string park = "on";
    bool json = false;
    std::uint64_t seeds = 1;
    CLI::App app{"sluice-sim — the deterministic simulator"};
    app.add_option("--sources", s.sources, "virtual sources")->check(CLI::Range(1U, 1000000U));
    app.add_option("--buffers", s.buffers,
                   "pool buffers (0 = every reserve plus one floating per source)");
    app.add_option("--buffer-size", s.buffer_size, "bytes per buffer")
        ->check(CLI::Range(64U, 1U << 24U));
    app.add_option("--reserve", s.reserve, "per-source reserve")->check(CLI::Range(1U, 1U << 20U));
    app.add_option("--cap", s.cap, "per-source cap")->check(CLI::Range(1U, 1U << 20U));
    app.add_option("--processing-reserve", s.processing_reserve, "buffers never lent to sources");
    app.add_option("--io-lanes", s.io_lanes, "I/O lanes")->check(CLI::Range(1, 64));
    app.add_option("--compute-workers", s.compute_workers, "virtual compute workers")
        ->check(CLI::Range(1, 64));
    app.add_option("--seed", s.seed, "root seed");
    app.add_option("--virtual-seconds", s.virtual_seconds,
                   "virtual time before the liveness phase");
    app.add_option("--strategy", order, "fifo | random | pct")
        ->check(CLI::IsMember({"fifo", "random", "pct"}));
    app.add_option("--faults", faults, "on | off")->check(CLI::IsMember({"on", "off"}));
    app.add_option("--policy", policy, "sluice | legacy")
        ->check(CLI::IsMember({"sluice", "legacy"}));
    app.add_option("--park", park,
                   "on | off: idle sources park without a coroutine (server_options::park_idle)")
        ->check(CLI::IsMember({"on", "off"}));
    app.add_option("--drain-channels", s.drain_channels,
                   "channels one compute task drains (processing_options::batch_channels_max)")
        ->check(CLI::Range(1U, 4096U));
    app.add_option("--enqueue-fault", s.enqueue_fault,
                   "with faults: chance a buffer's queueing fails (default: drawn, at most 1%)")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--interleave", s.interleave,
                   "with faults: chance a scheduling point runs other work (default: drawn)")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--legacy-buffers-per-source", s.legacy_buffers_per_source,
                   "legacy: fixed buffers per source");
    app.add_option("--records", s.records_per_source, "records per source");
    app.add_option("--stream-fraction", s.stream_fraction,
                   "share of sources that are virtual streams")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--http-fraction", s.http_fraction,
                   "share of sources that are HTTP connections of virtual keep-alive clients")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--http-buffer-wait-us", s.http_buffer_wait_us,
                   "the HTTP sources' buffer_wait: no buffer this long is a 429");
    app.add_option("--paced-fraction", s.paced_fraction,
                   "share of generators that are rate-limited")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--records-per-second", s.records_per_second,
                   "every generator paced at this rate (0 = the default mix of flat out and paced)")
        ->check(CLI::NonNegativeNumber);
    app.add_option(
        "--late-registrations", s.late_registrations,
        "registrations that come in the first half of the horizon and wait for admission");
    app.add_option("--admission-wait", s.admission_wait_seconds,
                   "virtual seconds a waiting registration may wait before it counts as starved")
        ->check(CLI::PositiveNumber);
    app.add_option("--seeds", seeds, "sweep this many seeds from --seed");
    app.add_flag("--json", json, "print the report as JSON");
    app.add_option("--openmetrics", s.openmetrics_path,
                   "write the run's metrics timeline (virtual time) as OpenMetrics to this file");
    app.add_option("--metrics-interval", s.metrics_interval_seconds,
                   "virtual seconds between metrics samples for --openmetrics");
    CLI11_PARSE(app, argc, argv);
    s.order = order == "random" ? strategy::random
              : order == "pct"  ? strategy::pct
                                : strategy::fifo;
    s.faults = faults == "on";
    s.park_idle = park == "on";
    s.policy = policy == "legacy" ? sluice::runtime::pool_policy::legacy
                                  : sluice::runtime::pool_policy::sluice;

    int exit_code = 0;
    const std::uint64_t first = s.seed;
    std::uint64_t failed = 0;
    const bool progress = seeds > 1 && ::isatty(STDERR_FILENO) == 1;
    for (std::uint64_t k = 0; k < seeds; ++k) {
        s.seed = first + k;
        const report r = run(s);
        if (json && seeds == 1) {
            std::cout << r.to_json() << "\n";
        }
        if (!r.ok()) {
            exit_code = 1;
            ++failed;
            std::cerr << "\nsluice-sim: seed " << s.seed << ": "
                      << (r.deadlock ? "deadlock" : "violation") << "\n";
            for (const auto& w : r.waiting) {
                std::cerr << "  waiting: " << w << "\n";
            }
            for (const auto& v : r.violations) {
                std::cerr << "  violation: " << v << "\n";
            }
            std::cerr << "  reproduce: " << reproduce_command(s) << "\n";
            if (json && seeds > 1) {
                std::cout << r.to_json() << "\n";
            }
        }
        // The progress bar only on a terminal: in a log (CI, ci/soak) it is noise.
        if (progress && ((k + 1) * 100 / seeds != k * 100 / seeds || k + 1 == seeds)) {
            const int width = 40;
            const int done = static_cast<int>((k + 1) * width / seeds);
            std::fprintf(stderr, "\r[%.*s%*s] %lu/%lu seeds, %lu failed", done,
                         "########################################", width - done, "",
                         static_cast<unsigned long>(k + 1), static_cast<unsigned long>(seeds),
                         static_cast<unsigned long>(failed));
        }
    }
    if (progress) {
        std::fprintf(stderr, "\n");
    }
    if (seeds > 1) {
        std::fprintf(stderr, "sluice-sim: %lu seeds, %lu failed\n",
                     static_cast<unsigned long>(seeds), static_cast<unsigned long>(failed));
    }
    return exit_code;
}
