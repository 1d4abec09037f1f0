/// sluice-loadgen: a TCP load generator in its own process (the open-file limit is per
/// process). Opens N connections to a target, sends each R generator records
/// ("<id>,<n>,<value>\n", id = id-base + connection index) flat out or at a rate (the
/// connections' sends spread evenly over each period), closes, and
/// prints a JSON report with bytes sent and its own CPU time. Exit 0 when every connection sent
/// everything, 1 otherwise.
///
/// --hold: connect every connection, print {"connected": N} on stdout, and send nothing until
/// SIGUSR1 (the ingestion benchmark measures idle sources in between).
/// --latency: the third field of each record is the send time (CLOCK_MONOTONIC ns) instead of
/// the generator value, so a receiver on this machine can measure send-to-pipeline latency.
/// --pad-bytes P: every record carries a fourth field of P padding characters
/// (sluice/source/generator_records.hpp), for measuring with records of a realistic size.
///
/// Flat out (no --rate, no --latency) with short records (no padding), every connection's
/// records are written into memory before the first connect, when at most
/// --prerender-max-bytes could be needed, and sending only copies them into the sockets.
/// Formatting 19-byte records as they were sent took this process a whole core and capped what
/// any receiver could show (0.54 against 1.2 GB/s into sluice at 1,000 connections). Padded
/// records are still formatted one 16–64 KiB chunk at a time: that is mostly a copy of the
/// padding within the cache, and sending 800 MB from memory instead cost both sides more
/// (3.0 against 2.2–2.5 GB/s into sluice at 100 connections with 1 KiB records).
/// {"rendered": bytes} is printed when that is done (0 when the records are formatted while
/// sending). In the report, "send_cpu_seconds" is the CPU from the start of sending to the end
/// (from the signal with --hold; otherwise from the first connect, so connecting is in it), and
/// "wall_seconds" and "cpu_seconds" cover the whole run, writing the records included.
///
/// --http: every write is one POST body of whole records on a keep-alive connection, the next
/// sent when the answer (204) came; a 429 sends the same body again. --tls: connections speak
/// TLS (--ca-file verifies the server). Both together: HTTPS.

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "sluice/env/process_threads.hpp"
#include "sluice/source/generator_source.hpp"

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    std::uint32_t connections = 1;
    std::uint64_t records = 1000; ///< per connection
    std::uint64_t id_base = 0;
    double rate = 0.0; ///< records/s per connection; 0 = flat out
    std::uint32_t chunk_bytes = 16384;
    std::uint32_t connect_parallel = 256; ///< connects in flight (keeps the SYN backlog sane)
    bool hold = false;
    bool latency = false;
    std::uint32_t pad_bytes = 0; ///< a padding field this long in every record (not with --latency)
    std::uint64_t prerender_max_bytes = std::uint64_t{4}
                                        << 30U; ///< bound on the records held in memory
    bool http = false;   ///< each write is a POST body (whole records), keep-alive, 429s resent
    bool tls = false;    ///< every connection speaks TLS (--ca-file verifies the server)
    std::string ca_file; ///< with --tls: the CA of the server's certificate (none: no check)
};

/// "<id>,<n>,<send time ns>\n"
std::size_t format_timestamped_record(std::uint64_t id, std::uint64_t n, char* out) {
    const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
    const int written = std::snprintf(out, sluice::runtime::generator_record_bytes_max,
                                      "%lu,%lu,%ld\n", static_cast<unsigned long>(id),
                                      static_cast<unsigned long>(n), static_cast<long>(now));
    return static_cast<std::size_t>(written);
}

struct connection {
    /// Plain connections use only the next layer (the socket).
    asio::ssl::stream<tcp::socket> stream;
    tcp::socket& socket; ///< stream.next_layer()
    asio::steady_timer timer;
    std::uint64_t id;
    std::uint64_t next = 0;
    /// --rate: the time sends are scheduled from (see generator_load::schedule).
    std::chrono::steady_clock::time_point origin;
    sluice::runtime::generator_record_writer writer;
    std::string chunk;
    std::uint64_t chunk_records = 0; ///< records in `chunk`
    /// Every record, written before sending (see --prerender-max-bytes); empty otherwise.
    std::string rendered;
    std::size_t rendered_sent = 0; ///< bytes of `rendered` handed to the socket
    std::string request;           ///< --http: the header of the POST being sent
    std::string answer;            ///< --http: the answer being read
    connection(asio::io_context& io, asio::ssl::context& tls, std::uint64_t connection_id,
               std::size_t pad_bytes)
        : stream(io, tls), socket(stream.next_layer()), timer(io), id(connection_id),
          writer(connection_id, 0, pad_bytes) {}
};

/// Records [0, count) of `writer` in one string, exactly as write_next lays them out.
std::string render_records(sluice::runtime::generator_record_writer& writer, std::uint64_t count) {
    const std::size_t room = writer.record_bytes_max(); // a write needs this much free space
    std::string out(static_cast<std::size_t>(count) * (room / 2) + room, '\0');
    std::size_t size = 0;
    for (std::uint64_t k = 0; k < count; ++k) {
        if (out.size() - size < room) {
            out.resize(out.size() * 2);
        }
        size += writer.write_next(out.data() + size);
    }
    out.resize(size);
    out.shrink_to_fit();
    return out;
}

class generator_load {
public:
    generator_load(asio::io_context& io, const options& o)
        : io_(io), o_(o), tls_(asio::ssl::context::tls_client), go_(io, SIGUSR1) {
        if (!o_.ca_file.empty()) {
            tls_.load_verify_file(o_.ca_file);
            tls_.set_verify_mode(asio::ssl::verify_peer);
        }
    }

    void start() {
        endpoint_ = tcp::endpoint(asio::ip::make_address(o_.host), o_.port);
        render();
        if (!o_.hold) {
            send_cpu_start = sluice::runtime::process_cpu_seconds();
        }
        for (std::uint32_t i = 0; i < o_.connections; ++i) {
            pending_.push_back(i);
        }
        for (std::uint32_t i = 0; i < o_.connect_parallel && !pending_.empty(); ++i) {
            connect_next();
        }
    }

    std::uint64_t bytes = 0;
    std::uint64_t records = 0;
    std::uint32_t failed = 0;
    std::uint32_t completed = 0;
    std::uint64_t refused = 0;   ///< --http: bodies answered 429 (and sent again)
    double send_cpu_start = 0.0; ///< process CPU when sending began

private:
    /// Flat out with unpadded records, when everything fits under the bound: each connection's
    /// records, written now so that sending measures the receiver and not this formatting.
    void render() {
        std::uint64_t total = 0;
        // At most record_bytes_max() a record, so this bounds the memory before any is taken.
        const sluice::runtime::generator_record_writer longest(0, 0, o_.pad_bytes);
        const auto most = static_cast<long double>(o_.connections) *
                          static_cast<long double>(o_.records) *
                          static_cast<long double>(longest.record_bytes_max());
        if (o_.rate <= 0 && !o_.latency && o_.pad_bytes == 0 &&
            most <= static_cast<long double>(o_.prerender_max_bytes)) {
            rendered_.reserve(o_.connections);
            for (std::uint32_t i = 0; i < o_.connections; ++i) {
                sluice::runtime::generator_record_writer writer(o_.id_base + i, 0, o_.pad_bytes);
                rendered_.push_back(render_records(writer, o_.records));
                total += rendered_.back().size();
            }
        }
        // Records formatted while sending (padded): each connection's chunk is allocated and
        // touched now. Made on its first send, 10,000 fresh 64 KiB chunks were 160,000 page
        // faults inside the timed phase, and the generator's core, not the receiver, was the
        // limit at 10,000 connections.
        const std::size_t chunk_room =
            std::max<std::size_t>(o_.chunk_bytes, longest.record_bytes_max()) +
            longest.record_bytes_max();
        if (rendered_.empty() && o_.rate <= 0 && o_.hold &&
            static_cast<long double>(o_.connections) * static_cast<long double>(chunk_room) <=
                static_cast<long double>(o_.prerender_max_bytes)) {
            chunks_.resize(o_.connections);
            for (auto& chunk : chunks_) {
                chunk.resize(chunk_room);
                chunk.clear(); // keeps the capacity, and its pages
            }
        }
        std::printf("%s\n",
                    boost::json::serialize(boost::json::object{{"rendered", total}}).c_str());
        std::fflush(stdout);
    }

    void connect_next() {
        if (pending_.empty()) {
            return;
        }
        const std::uint32_t index = pending_.front();
        pending_.pop_front();
        auto c = std::make_shared<connection>(io_, tls_, o_.id_base + index, o_.pad_bytes);
        if (!rendered_.empty()) {
            c->rendered = std::move(rendered_[index]);
        }
        if (!chunks_.empty()) {
            c->chunk = std::move(chunks_[index]);
        }
        c->socket.async_connect(endpoint_, [this, c](const boost::system::error_code& error) {
            if (!error && (o_.http || o_.tls)) {
                // Request and answer, or records cut into TLS records: no Nagle wait on the
                // last small segment (curl does the same).
                boost::system::error_code ignored;
                c->socket.set_option(tcp::no_delay(true), ignored);
            }
            if (!error && o_.tls) {
                c->stream.async_handshake(
                    asio::ssl::stream_base::client,
                    [this, c](const boost::system::error_code& e) { connected(c, e); });
                return;
            }
            connected(c, error);
        });
    }

    /// Connected (and, with --tls, the handshake done), or failed.
    void connected(const std::shared_ptr<connection>& c, const boost::system::error_code& error) {
        connect_next();
        if (error) {
            std::fprintf(stderr, "loadgen: connect %lu: %s\n", static_cast<unsigned long>(c->id),
                         error.message().c_str());
            ++failed;
        } else if (!o_.hold) {
            c->origin = std::chrono::steady_clock::now();
            schedule(c);
            return;
        } else {
            held_.push_back(c);
        }
        if (o_.hold && held_.size() + failed == o_.connections) {
            release_held();
        }
    }

    /// Writes `size` bytes at `data` (plain or TLS); --http: as a POST body, then reads the
    /// answer and sends the same body again after a 429. `done(error)` once it is taken.
    template <typename Done>
    void deliver(const std::shared_ptr<connection>& c, const char* data, std::size_t size,
                 Done done) {
        if (!o_.http) {
            write(c, asio::buffer(data, size),
                  [done](const boost::system::error_code& error, std::size_t) { done(error); });
            return;
        }
        c->request = "POST / HTTP/1.1\r\nHost: sluice\r\nContent-Length: " + std::to_string(size) +
                     "\r\n\r\n";
        const std::array<asio::const_buffer, 2> request{asio::buffer(c->request),
                                                        asio::buffer(data, size)};
        write(c, request,
              [this, c, data, size, done](const boost::system::error_code& error, std::size_t) {
                  if (error) {
                      done(error);
                      return;
                  }
                  read_answer(c, [this, c, data, size, done](const boost::system::error_code& e,
                                                             int status) {
                      if (e || status == 204) {
                          done(e);
                      } else if (status == 429) {
                          ++refused;
                          deliver(c, data, size, done); // the same body again
                      } else {
                          std::fprintf(stderr, "loadgen: answer %d\n", status);
                          done(asio::error::connection_aborted);
                      }
                  });
              });
    }

    /// Reads one HTTP answer (header and its Content-Length of text): its status.
    template <typename Done> void read_answer(const std::shared_ptr<connection>& c, Done done) {
        const auto parsed = [this, c, done](const boost::system::error_code& error, std::size_t n) {
            if (error) {
                done(error, 0);
                return;
            }
            const std::string head = c->answer.substr(0, n);
            const int status = head.size() > 12 ? std::atoi(head.c_str() + 9) : 0;
            std::size_t length = 0;
            if (const auto at = head.find("Content-Length: "); at != std::string::npos) {
                length = std::stoul(head.substr(at + 16));
            }
            c->answer.erase(0, n);
            if (c->answer.size() >= length) {
                c->answer.erase(0, length);
                done(boost::system::error_code{}, status);
                return;
            }
            const std::size_t more = length - c->answer.size();
            read(c, asio::dynamic_buffer(c->answer), more,
                 [c, length, status, done](const boost::system::error_code& e, std::size_t) {
                     c->answer.erase(0, std::min(length, c->answer.size()));
                     done(e, status);
                 });
        };
        if (o_.tls) {
            asio::async_read_until(c->stream, asio::dynamic_buffer(c->answer), "\r\n\r\n", parsed);
        } else {
            asio::async_read_until(c->socket, asio::dynamic_buffer(c->answer), "\r\n\r\n", parsed);
        }
    }

    template <typename Buffers, typename Handler>
    void write(const std::shared_ptr<connection>& c, const Buffers& buffers, Handler handler) {
        if (o_.tls) {
            asio::async_write(c->stream, buffers, std::move(handler));
        } else {
            asio::async_write(c->socket, buffers, std::move(handler));
        }
    }

    template <typename Buffer, typename Handler>
    void read(const std::shared_ptr<connection>& c, Buffer buffer, std::size_t n, Handler handler) {
        if (o_.tls) {
            asio::async_read(c->stream, buffer, asio::transfer_exactly(n), std::move(handler));
        } else {
            asio::async_read(c->socket, buffer, asio::transfer_exactly(n), std::move(handler));
        }
    }

    /// Every connection is up (or failed): report, then wait for SIGUSR1 and send.
    void release_held() {
        std::printf(
            "%s\n",
            boost::json::serialize(boost::json::object{{"connected", held_.size()}}).c_str());
        std::fflush(stdout);
        go_.async_wait([this](const boost::system::error_code& error, int) {
            if (error) {
                return;
            }
            send_cpu_start = sluice::runtime::process_cpu_seconds();
            const auto now = std::chrono::steady_clock::now();
            for (auto& c : held_) {
                c->origin = now;
                schedule(c);
            }
            held_.clear();
        });
    }

    void send(const std::shared_ptr<connection>& c) {
        if (!c->rendered.empty()) {
            send_rendered(c);
            return;
        }
        c->chunk.clear();
        record_.resize(c->writer.record_bytes_max());
        char* const record = record_.data();
        const std::uint64_t burst = o_.rate > 0 ? 1 : ~std::uint64_t{0};
        c->chunk_records = 0;
        for (std::uint64_t k = 0; k < burst && c->next < o_.records &&
                                  c->chunk.size() + record_.size() <=
                                      std::max<std::size_t>(o_.chunk_bytes, record_.size());
             ++k) {
            c->chunk.append(record, o_.latency ? format_timestamped_record(c->id, c->next, record)
                                               : c->writer.write_next(record));
            ++c->next;
            ++c->chunk_records;
        }
        if (c->chunk.empty()) {
            finish(c);
            return;
        }
        deliver(c, c->chunk.data(), c->chunk.size(),
                [this, c](const boost::system::error_code& error) {
                    if (error) {
                        ++failed;
                        return;
                    }
                    bytes += c->chunk.size();
                    records += c->chunk_records;
                    schedule(c);
                });
    }

    /// Everything is sent: end the stream (the receiver sees end of stream) and count it.
    void finish(const std::shared_ptr<connection>& c) {
        boost::system::error_code ignored;
        c->socket.shutdown(tcp::socket::shutdown_send, ignored);
        c->socket.close(ignored);
        ++completed;
    }

    /// The next --chunk-bytes of the records written beforehand (a write may end mid-record).
    void send_rendered(const std::shared_ptr<connection>& c) {
        const std::size_t left = c->rendered.size() - c->rendered_sent;
        if (left == 0) {
            records += o_.records;
            c->rendered = std::string();
            finish(c);
            return;
        }
        std::size_t size = std::min<std::size_t>(left, std::max<std::uint32_t>(o_.chunk_bytes, 1));
        if (o_.http && size < left) {
            // A body is whole records: it ends at the last newline the chunk holds.
            const auto last = c->rendered.rfind('\n', c->rendered_sent + size - 1);
            if (last != std::string::npos && last >= c->rendered_sent) {
                size = last + 1 - c->rendered_sent;
            }
        }
        deliver(c, c->rendered.data() + c->rendered_sent, size,
                [this, c, size](const boost::system::error_code& error) {
                    if (error) {
                        ++failed;
                        return;
                    }
                    bytes += size;
                    c->rendered_sent += size;
                    send_rendered(c);
                });
    }

    /// Flat out: sends now. At --rate: connection i of N sends record k at
    /// origin + (k + i / N) / rate, so the connections' sends are spread evenly over each
    /// period instead of all firing together, and a late send does not shift the later ones.
    void schedule(const std::shared_ptr<connection>& c) {
        if (o_.rate <= 0) {
            send(c);
            return;
        }
        const double phase =
            static_cast<double>(c->id - o_.id_base) / static_cast<double>(o_.connections);
        c->timer.expires_at(
            c->origin +
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                std::chrono::duration<double>((static_cast<double>(c->next) + phase) / o_.rate)));
        c->timer.async_wait([this, c](const boost::system::error_code& error) {
            if (!error) {
                send(c);
            }
        });
    }

    asio::io_context& io_;
    options o_;
    asio::ssl::context tls_;
    tcp::endpoint endpoint_;
    std::deque<std::uint32_t> pending_;
    std::vector<std::shared_ptr<connection>> held_;
    std::string record_;                ///< one record being formatted
    std::vector<std::string> rendered_; ///< by connection index, until its connection is made
    std::vector<std::string> chunks_;   ///< likewise: each connection's touched chunk buffer
    asio::signal_set go_;
};

} // namespace

int main(int argc, char** argv) {
    options o;
    CLI::App app{"sluice-loadgen — TCP load with verifiable generator records"};
    app.add_option("--host", o.host, "target address");
    app.add_option("--port", o.port, "target port")->required();
    app.add_option("--connections", o.connections, "connections to open");
    app.add_option("--records", o.records, "records per connection");
    app.add_option("--id-base", o.id_base, "generator id of the first connection");
    app.add_option("--rate", o.rate, "records per second per connection (0 = flat out)");
    app.add_option("--chunk-bytes", o.chunk_bytes, "bytes per write");
    app.add_flag("--hold", o.hold, "connect all, print {\"connected\": N}, send on SIGUSR1");
    app.add_flag("--latency", o.latency, "third field = send time (CLOCK_MONOTONIC ns)");
    app.add_option(
        "--prerender-max-bytes", o.prerender_max_bytes,
        "flat out, unpadded records: write all records into memory before sending when connections "
        "x "
        "records x the longest record is at most this (0 = always format while sending)");
    app.add_option("--pad-bytes", o.pad_bytes, "a padding field of this many bytes in every record")
        ->check(CLI::Range(std::uint32_t{0},
                           static_cast<std::uint32_t>(sluice::runtime::generator_pad_bytes_max)))
        ->excludes("--latency");
    app.add_flag("--http", o.http,
                 "each write is a POST body of whole records on a keep-alive connection; a 429 "
                 "is sent again");
    app.add_flag("--tls", o.tls, "connections speak TLS");
    app.add_option("--ca-file", o.ca_file, "with --tls: verify the server against this CA");
    CLI11_PARSE(app, argc, argv);

    sluice::runtime::raise_open_file_limit();
    const auto started = std::chrono::steady_clock::now();
    asio::io_context io(1);
    generator_load load(io, o);
    load.start();
    io.run();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const boost::json::object report{
        {"connections", o.connections},
        {"completed", load.completed},
        {"failed", load.failed},
        {"bytes_sent", load.bytes},
        {"records_sent", load.records},
        {"http_refused", load.refused},
        {"wall_seconds", wall},
        {"cpu_seconds", sluice::runtime::process_cpu_seconds()},
        {"send_cpu_seconds", sluice::runtime::process_cpu_seconds() - load.send_cpu_start}};
    std::printf("%s\n", boost::json::serialize(report).c_str());
    return load.failed == 0 && load.completed == o.connections ? 0 : 1;
}
