#pragma once
/// Prometheus metrics (DESIGN.md §6) as a prometheus-cpp Collectable: every scrape reads
/// snapshots of the pool, the server and processing, so the data path pays nothing but the
/// relaxed atomic adds it already does. One `sluice_` prefix, base units, counters end in
/// `_total`, histograms not summaries, every label combination present from the first scrape.
/// Per-source labels are not exported (cardinality); per-kind ones are.

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/source_server.hpp"

namespace sluice::runtime {

struct thread_pools {
    std::size_t io_threads = 0;
    std::size_t compute_threads = 0;
    std::size_t blocking_threads = 0;
    /// Queued and running tasks of the I/O lanes and of the blocking pool, read at each scrape
    /// (production: `production_environment::io_load` / `blocking_load`). Unset reads zero.
    std::function<pool_load()> io_load;
    std::function<pool_load()> blocking_load;
};

class metrics_collector final : public prometheus::Collectable {
public:
    metrics_collector(const buffer_pool& pool, const source_server& server,
                      const processing& pipeline, thread_pools threads, std::string version);
    std::vector<prometheus::MetricFamily> Collect() const override;
    /// The checkpoint store whose counters to export (null, the default: zeros). It must
    /// outlive the collector. Set before the first scrape.
    void set_checkpoints(const checkpoint_store* store) noexcept { checkpoints_ = store; }

private:
    const buffer_pool& pool_;
    const source_server& server_;
    const processing& pipeline_;
    thread_pools threads_;
    std::string version_;
    const checkpoint_store* checkpoints_ = nullptr;
};

} // namespace sluice::runtime
