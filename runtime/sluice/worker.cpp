#include "sluice/worker.hpp"

namespace sluice {

worker::worker(runtime::sink& out, const worker_options& options)
    : pool_(options.pool), env_(options.threads), pipeline_(env_, pool_, out, options.processing),
      server_(env_, pool_, pipeline_, options.server) {}

worker::~worker() {
    shutdown();
}

void worker::shutdown() {
    if (down_) {
        return;
    }
    down_ = true;
    server_.shutdown();
    pipeline_.wait_idle();
    env_.shutdown();
}

} // namespace sluice
