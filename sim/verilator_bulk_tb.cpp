// qnnfab bulk testbench for Verilator: the clock loop in C++, no Python per cycle.
//
// A template: qnnfab.sim.verilator_bulk replaces the LANES placeholder below with one
// QNNFAB_LANE(k, in_words, out_words) entry per stream pair ("lane") of the wrapper module
// Vbulk (ports clk and, per lane k, lK_ipay lK_ivalid lK_iready lK_opay lK_ovalid
// lK_oready), then Verilator compiles it with the design.
//
// Usage: sim JOB INPUTS OUTPUTS
//   JOB      text, one "key value..." per line:
//              seed S                  random stalls (one generator per lane, seeded by S and k)
//              valid_probability P     P(a waiting input is offered) each cycle; 1 = no gaps
//              ready_probability P     P(o ready = 1) each cycle; 1 = no back-pressure
//              lane K COUNT LIMIT      lane K streams COUNT vectors and fails when it has
//                                      waited LIMIT cycles for its next output
//   INPUTS   little-endian uint32 words: lane 0's COUNT vectors of in_words words each
//            (bit j of a port is bit j%32 of word j/32), then lane 1's, ...
//   OUTPUTS  written in the same layout with out_words words per vector, every vector the
//            lane produced (fewer than COUNT after a stall).
// stdout: one JSON line {"cycles": [last output cycle per lane], "accepted": [...],
//   "produced": [...], "total_cycles": n, "seconds": wall time of the clock loop, "cpu_seconds":
//   its CPU time, "error": null or a message}.
// Exit status 0 (every lane done), 3 (a lane stalled), 2 (bad job or files).
// With QNNFAB_BULK_PROGRESS=N in the environment, "P <outputs so far>" goes to stderr every N
// outputs (all lanes together).
//
// The wrapper makes rst itself (high for its first rising edges; see wrapper_verilog), so the
// run starts with those edges, inputs idle. Cycles count from 1, the first rising edge after
// reset is released; each cycle sets the inputs after the rising edge (sources first, then
// sinks, as qnnfab.sim.cocotb_streams does), lets the logic settle, and samples transfers
// before the next rising edge.

#include <chrono>
#include <cinttypes>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "verilated.h"
#include "Vbulk.h"

namespace {

template <typename T>
inline void put_bits(T& port, const uint32_t* w) {
    if constexpr (sizeof(T) > 4) {
        port = static_cast<T>(static_cast<uint64_t>(w[0]) | (static_cast<uint64_t>(w[1]) << 32));
    } else {
        port = static_cast<T>(w[0]);
    }
}

template <std::size_t N>
inline void put_bits(VlWide<N>& port, const uint32_t* w) {
    for (std::size_t i = 0; i < N; ++i) port[i] = w[i];
}

template <typename T>
inline void get_bits(const T& port, uint32_t* w) {
    const uint64_t v = static_cast<uint64_t>(port);
    w[0] = static_cast<uint32_t>(v);
    if constexpr (sizeof(T) > 4) w[1] = static_cast<uint32_t>(v >> 32);
}

template <std::size_t N>
inline void get_bits(const VlWide<N>& port, uint32_t* w) {
    for (std::size_t i = 0; i < N; ++i) w[i] = port[i];
}

struct Lane {
    int in_words;
    int out_words;
    void (*put)(Vbulk*, const uint32_t*);
    void (*set_valid)(Vbulk*, bool);
    bool (*ready)(Vbulk*);
    void (*set_ready)(Vbulk*, bool);
    bool (*valid)(Vbulk*);
    void (*get)(Vbulk*, uint32_t*);
};

#define QNNFAB_LANE(k, in_words, out_words)                                   \
    Lane {                                                                    \
        in_words, out_words,                                                  \
        [](Vbulk* t, const uint32_t* w) { put_bits(t->l##k##_ipay, w); },    \
        [](Vbulk* t, bool v) { t->l##k##_ivalid = v; },                      \
        [](Vbulk* t) -> bool { return t->l##k##_iready; },                   \
        [](Vbulk* t, bool r) { t->l##k##_oready = r; },                      \
        [](Vbulk* t) -> bool { return t->l##k##_ovalid; },                   \
        [](Vbulk* t, uint32_t* w) { get_bits(t->l##k##_opay, w); }           \
    }

constexpr int QNNFAB_RESET_CYCLES = /*@RESET_CYCLES@*/;

const Lane LANES[] = {
    /*@LANES@*/
};
constexpr int N_LANES = sizeof(LANES) / sizeof(LANES[0]);

// splitmix64: small, fast, and the same on every platform.
struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // True with probability p; no draw when p >= 1 (as qnnfab.sim.stream_io.chance).
    bool chance(double p) {
        if (p >= 1.0) return true;
        if (p <= 0.0) return false;
        return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0) < p;
    }
};

struct State {
    uint64_t count = 0, limit = 0;
    uint64_t sent = 0, got = 0, idle = 0, last = 0;
    bool offering = false, ready = false, configured = false;
    const uint32_t* in = nullptr;
    uint32_t* out = nullptr;
    Rng rng{0};
};

int fail(const char* what, const char* detail) {
    std::printf("{\"error\": \"%s: %s\"}\n", what, detail);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) return fail("usage", "sim JOB INPUTS OUTPUTS");
    std::vector<State> lanes(N_LANES);
    uint64_t seed = 0;
    double valid_p = 1.0, ready_p = 1.0;
    FILE* job = std::fopen(argv[1], "r");
    if (!job) return fail("cannot open the job file", argv[1]);
    char key[64];
    while (std::fscanf(job, "%63s", key) == 1) {
        bool ok = true;
        if (!std::strcmp(key, "seed")) {
            ok = std::fscanf(job, "%" SCNu64, &seed) == 1;
        } else if (!std::strcmp(key, "valid_probability")) {
            ok = std::fscanf(job, "%lf", &valid_p) == 1;
        } else if (!std::strcmp(key, "ready_probability")) {
            ok = std::fscanf(job, "%lf", &ready_p) == 1;
        } else if (!std::strcmp(key, "lane")) {
            int k = -1;
            uint64_t count = 0, limit = 0;
            ok = std::fscanf(job, "%d %" SCNu64 " %" SCNu64, &k, &count, &limit) == 3
                 && k >= 0 && k < N_LANES && limit > 0;
            if (ok) {
                lanes[k].count = count;
                lanes[k].limit = limit;
                lanes[k].configured = true;
            }
        } else {
            ok = false;
        }
        if (!ok) {
            std::fclose(job);
            return fail("bad job line", key);
        }
    }
    std::fclose(job);
    for (int k = 0; k < N_LANES; ++k) {
        if (!lanes[k].configured) return fail("job file", "a lane has no 'lane' line");
    }

    // Inputs in, output buffer out.
    uint64_t in_total = 0, out_total = 0;
    for (int k = 0; k < N_LANES; ++k) {
        in_total += lanes[k].count * LANES[k].in_words;
        out_total += lanes[k].count * LANES[k].out_words;
    }
    std::vector<uint32_t> in_words(in_total ? in_total : 1), out_words(out_total ? out_total : 1);
    FILE* in = std::fopen(argv[2], "rb");
    if (!in) return fail("cannot open the inputs file", argv[2]);
    const size_t got_words = std::fread(in_words.data(), sizeof(uint32_t), in_total, in);
    const bool extra = std::fgetc(in) != EOF;
    std::fclose(in);
    if (got_words != in_total || extra) return fail("inputs file", "wrong size for the job");
    uint64_t in_at = 0, out_at = 0;
    for (int k = 0; k < N_LANES; ++k) {
        lanes[k].in = in_words.data() + in_at;
        lanes[k].out = out_words.data() + out_at;
        in_at += lanes[k].count * LANES[k].in_words;
        out_at += lanes[k].count * LANES[k].out_words;
        lanes[k].rng.s = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(k) + 1;
    }

    VerilatedContext context;
    Vbulk top{&context};
    top.clk = 0;
    for (int k = 0; k < N_LANES; ++k) {
        LANES[k].set_valid(&top, false);
        LANES[k].set_ready(&top, false);
    }
    top.eval();
    for (int r = 0; r < QNNFAB_RESET_CYCLES; ++r) {
        top.clk = 1;
        top.eval();
        top.clk = 0;
        top.eval();
    }

    const char* every_text = std::getenv("QNNFAB_BULK_PROGRESS");
    const uint64_t every = every_text ? std::strtoull(every_text, nullptr, 10) : 0;
    uint64_t produced = 0;
    int waiting = 0;
    for (int k = 0; k < N_LANES; ++k) waiting += lanes[k].count > 0;
    uint64_t cycle = 0;
    std::string error;
    const auto start = std::chrono::steady_clock::now();
    const std::clock_t cpu_start = std::clock();
    while (waiting > 0) {
        top.clk = 1;
        top.eval();
        ++cycle;
        for (int k = 0; k < N_LANES; ++k) {  // sources first
            State& s = lanes[k];
            if (!s.offering && s.sent < s.count && s.rng.chance(valid_p)) {
                LANES[k].put(&top, s.in + s.sent * LANES[k].in_words);
                s.offering = true;
            }
            LANES[k].set_valid(&top, s.offering);
        }
        for (int k = 0; k < N_LANES; ++k) {  // then sinks
            State& s = lanes[k];
            s.ready = s.got < s.count && s.rng.chance(ready_p);
            LANES[k].set_ready(&top, s.ready);
        }
        top.clk = 0;
        top.eval();
        for (int k = 0; k < N_LANES; ++k) {
            State& s = lanes[k];
            if (s.got >= s.count) continue;
            if (s.offering && LANES[k].ready(&top)) {
                ++s.sent;
                s.offering = false;
            }
            if (s.ready && LANES[k].valid(&top)) {
                LANES[k].get(&top, s.out + s.got * LANES[k].out_words);
                ++s.got;
                s.last = cycle;
                s.idle = 0;
                waiting -= s.got == s.count;
                if (every && ++produced % every == 0) {
                    std::fprintf(stderr, "P %" PRIu64 "\n", produced);
                    std::fflush(stderr);
                }
            } else if (++s.idle > s.limit) {
                char line[256];
                std::snprintf(line, sizeof line,
                              "stalled: lane %d: no output for %" PRIu64 " cycles after %" PRIu64
                              " of %" PRIu64 " outputs (%" PRIu64 " inputs accepted) at cycle %"
                              PRIu64, k, s.limit, s.got, s.count, s.sent, cycle);
                error = line;
                break;
            }
        }
        if (!error.empty()) break;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
    top.final();

    FILE* out = std::fopen(argv[3], "wb");
    if (!out) return fail("cannot write the outputs file", argv[3]);
    for (int k = 0; k < N_LANES; ++k) {
        const size_t n = lanes[k].got * LANES[k].out_words;
        if (n && std::fwrite(lanes[k].out, sizeof(uint32_t), n, out) != n) {
            std::fclose(out);
            return fail("cannot write the outputs file", argv[3]);
        }
    }
    if (std::fclose(out) != 0) return fail("cannot write the outputs file", argv[3]);

    std::printf("{\"cycles\": [");
    for (int k = 0; k < N_LANES; ++k) std::printf("%s%" PRIu64, k ? ", " : "", lanes[k].last);
    std::printf("], \"accepted\": [");
    for (int k = 0; k < N_LANES; ++k) std::printf("%s%" PRIu64, k ? ", " : "", lanes[k].sent);
    std::printf("], \"produced\": [");
    for (int k = 0; k < N_LANES; ++k) std::printf("%s%" PRIu64, k ? ", " : "", lanes[k].got);
    std::printf("], \"total_cycles\": %" PRIu64 ", \"seconds\": %.9f, \"cpu_seconds\": %.9f, "
                "\"error\": ", cycle, seconds, cpu_seconds);
    if (error.empty()) {
        std::printf("null}\n");
    } else {
        std::printf("\"%s\"}\n", error.c_str());
    }
    return error.empty() ? 0 : 3;
}
