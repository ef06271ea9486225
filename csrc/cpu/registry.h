// The CPU algorithms of every op as data: one table per problem kind (conv2d.cpp holds the conv
// ops' table, pool/dispatch.cpp the pool ops'), one entry per algorithm. An entry names the op it
// computes, the instruction set it needs, when it can run (`applicable`: a hard constraint of
// the kernel) and when the hand-tuned heuristic wants it (`preferred`, null = always). The
// heuristic order of the applicable entries is: preferred ones first, then by `priority`; the
// selector runs the first, unless a name is forced (convpool.backends.cpu.force,
// CONVPOOL_CPU_ALGO) or autotuning picked another. The debug query (convpool.backends.cpu
// .algorithms / .selected) and the per-algorithm tests read the same table.
#pragma once

#include <c10/util/Exception.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "isa.h"

namespace convpool::cpu {

// The ops of torch.ops.convpool, as the registry knows them.
enum class Op : int {
  fprop,           // conv2d
  dgrad,           // conv2d_grad_input
  wgrad,           // conv2d_grad_weight
  grad_bias,       // conv2d_grad_bias
  pool_forward,    // max_pool2d (values and indices)
  pool_values,     // max_pool2d_values
  pool_backward,   // max_pool2d_backward
};
constexpr int kOps = 7;
const char* op_name(Op op);  // the torch.ops.convpool name

template <class Problem>
struct Algorithm {
  const char* name;  // stable: tests, force() and tuning caches refer to it
  Op op;
  Isa isa;      // the instruction set it needs (isa.h): isa_reached(isa) must hold
  int priority;  // heuristic order among equally preferred entries, lowest first
  bool (*applicable)(const Problem&);
  bool (*preferred)(const Problem&);  // nullptr: always
  void (*run)(const Problem&);
};

// The forced algorithm name (nullptr: none). Initially CONVPOOL_CPU_ALGO; set_forced checks the
// name against every table (registered_names) and raises on an unknown one.
const char* forced();
void set_forced(const char* name);  // nullptr or "" clears
// Every registered (op, name, isa), for the force() check and the tests.
struct NameEntry {
  Op op;
  const char* name;
  Isa isa;
};
const std::vector<NameEntry>& registered_names();
void register_names(const NameEntry* entries, size_t count);
// A table's names, registered from a static initializer of the file that holds the table.
template <class Problem, size_t N>
bool register_table(const Algorithm<Problem> (&table)[N]) {
  std::vector<NameEntry> names;
  for (const auto& e : table) names.push_back({e.op, e.name, e.isa});
  register_names(names.data(), names.size());
  return true;
}

// The debug query: while active on this thread, an op body records its applicable algorithms and
// its selection instead of computing (its output is left unwritten).
struct QueryRecord {
  std::vector<std::string> applicable;  // heuristic order
  std::string selected;
  bool recorded = false;
};
QueryRecord* active_query();  // nullptr unless convpool._C._cpu_query is on for this thread
void set_query(QueryRecord* record);

// Autotuning (convpool.backends.cpu.benchmark; initially CONVPOOL_CPU_BENCHMARK=1): the first
// call of a problem key times its applicable algorithms on the call's own tensors and remembers
// the fastest; later calls of that key run it after one hash lookup. With
// CONVPOOL_CPU_TUNE_CACHE=path the choices persist in that file (registry.cpp). Under
// torch.use_deterministic_algorithms(True) nothing is timed: a key already tuned (in this process
// or in the file) keeps its algorithm, any other runs the heuristic's, so results never depend on
// a timing.
bool benchmark_enabled();
// A problem's tuning key, built on every tuned call: integers appended to one string (no
// stream: the key is built in well under a microsecond, so a tuned call costs no more than the
// heuristic's).
class TuneKey {
 public:
  TuneKey(Op op, Isa isa) {
    s_.reserve(256);
    s_ += op_name(op);
    s_ += '|';
    s_ += isa_name(isa);
  }
  TuneKey& tag(const char* t) {
    s_ += '|';
    s_ += t;
    return *this;
  }
  TuneKey& add(int64_t v) {
    char buf[24];
    const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
    if (s_.back() != '|' && s_.back() != '/') s_ += ',';
    s_.append(buf, end);
    return *this;
  }
  template <class Ints>
  TuneKey& add_all(const Ints& values) {
    for (const int64_t v : values) add(v);
    return *this;
  }
  // sizes, then "/", then strides: the shape and the layout of a tensor
  template <class T>
  TuneKey& tensor(const char* t, const T& tensor) {
    tag(t).add_all(tensor.sizes());
    s_ += '/';
    return add_all(tensor.strides());
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};
void set_benchmark(bool on);
bool deterministic_mode();
// The remembered algorithm of `key` (a name of the table's static storage), or nullptr.
const char* tuned(const std::string& key);
// seconds_spent < 0: a problem with one applicable algorithm, remembered untimed (not counted,
// not written to the file by itself).
void remember(const std::string& key, const char* name, double seconds_spent);
struct TuningStats {
  int64_t problems;  // keys timed in this process
  double seconds;    // time spent timing them
  int64_t cached;    // keys known (timed here or loaded from the file)
};
TuningStats tuning_stats();
void clear_tuning();  // forgets this process's choices (not the file)
double now_seconds();  // a monotonic clock

// Raises the error for a forced algorithm that does not apply to a call (names the applicable).
[[noreturn]] void not_applicable(Op op, const char* name, const std::vector<const char*>& applicable,
                                 const std::string& problem, Isa needs);

// The applicable entries of `op` for `q` in heuristic order.
template <class Problem, size_t N>
std::vector<const Algorithm<Problem>*> candidates(const Algorithm<Problem> (&table)[N], Op op,
                                                  const Problem& q) {
  std::vector<const Algorithm<Problem>*> out;
  for (const auto& e : table)
    if (e.op == op && isa_reached(e.isa) && e.applicable(q))
      out.push_back(&e);
  std::vector<char> pref(out.size());
  for (size_t i = 0; i < out.size(); ++i) pref[i] = !out[i]->preferred || out[i]->preferred(q);
  std::vector<size_t> order(out.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (pref[a] != pref[b]) return pref[a] > pref[b];
    return out[a]->priority < out[b]->priority;
  });
  std::vector<const Algorithm<Problem>*> sorted;
  for (size_t i : order) sorted.push_back(out[i]);
  return sorted;
}

// The heuristic's choice: the first of candidates(table, op, q), found in one pass without
// allocating (it runs on every call).
template <class Problem, size_t N>
const Algorithm<Problem>* heuristic_first(const Algorithm<Problem> (&table)[N], Op op,
                                          const Problem& q) {
  const Algorithm<Problem>* best = nullptr;
  bool best_pref = false;
  for (const auto& e : table) {
    if (e.op != op || !isa_reached(e.isa) || !e.applicable(q)) continue;
    const bool pref = !e.preferred || e.preferred(q);
    if (best == nullptr || (pref && !best_pref) ||
        (pref == best_pref && e.priority < best->priority)) {
      best = &e;
      best_pref = pref;
    }
  }
  return best;
}

// The entry of `op` named `name` (nullptr: none).
template <class Problem, size_t N>
const Algorithm<Problem>* named_entry(const Algorithm<Problem> (&table)[N], Op op,
                                      const char* name) {
  for (const auto& e : table)
    if (e.op == op && std::strcmp(e.name, name) == 0) return &e;
  return nullptr;
}

// The entry that runs `q`: the forced one where this op has an entry of that name (an error if
// it does not apply), else the heuristic's first. `describe` names the problem in errors.
template <class Problem, size_t N>
const Algorithm<Problem>& select(const Algorithm<Problem> (&table)[N], Op op, const Problem& q,
                                 std::string (*describe)(const Problem&)) {
  if (const char* name = forced()) {
    if (const Algorithm<Problem>* named = named_entry(table, op, name)) {
      const auto found = candidates(table, op, q);
      for (const auto* e : found)
        if (e == named) return *e;
      std::vector<const char*> names;
      for (const auto* e : found) names.push_back(e->name);
      not_applicable(op, name, names, describe(q), named->isa);
    }
  }
  const Algorithm<Problem>* first = heuristic_first(table, op, q);
  TORCH_INTERNAL_ASSERT(first != nullptr, "convpool: no CPU algorithm for ", op_name(op), " ",
                        describe(q));
  return *first;
}

// Times `found` on `q` (each run overwrites the same output): two warm-up runs each, then
// candidates whose faster warm-up is more than 3x the best dropped, then interleaved rounds. The
// first runs of a new problem are slow for reasons that are not the algorithm's (the output's
// and a grown workspace's page faults, glibc moving its mmap threshold): on Zen 4 gemm_col2im
// ran 1.0-1.2 ms, then 0.34 ms, on fcn8s upscore_pool4, and one warm-up with a 2x cut dropped it
// for a 0.5 ms dgrad_phases. Short kernels get more rounds (enough for ~2 ms per candidate, 3 to
// 15): a run of a few microseconds varies by tens of percent on a shared machine, and 15 of them
// still cost less than one run of a large conv. Each candidate's time is its lower quartile
// (with 3 rounds, the fastest): what slows a run here (page faults, a workspace growing over the
// first calls, another process) only ever adds time, and a median of 3 kept two such runs
// (fcn8s upscore_pool4 on Zen 4: gemm_col2im lost at 0.55 ms to a 0.76 ms dgrad_phases). The
// fastest wins, except that the heuristic's choice (found[0]) stays unless another is more than
// 5% faster: on a 2-core VM the times of equal kernels differ by that much.
template <class Problem>
const Algorithm<Problem>* fastest(const std::vector<const Algorithm<Problem>*>& found,
                                  const Problem& q) {
  std::vector<double> warm(found.size(), std::numeric_limits<double>::infinity());
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < found.size(); ++i) {
      const double t0 = now_seconds();
      found[i]->run(q);
      warm[i] = std::min(warm[i], now_seconds() - t0);
    }
  const double best_warm = *std::min_element(warm.begin(), warm.end());
  std::vector<size_t> alive;
  for (size_t i = 0; i < found.size(); ++i)
    if (warm[i] <= 3 * best_warm) alive.push_back(i);
  constexpr double kSecondsPerCandidate = 2e-3;
  const int rounds = static_cast<int>(
      std::clamp(kSecondsPerCandidate / std::max(best_warm, 1e-9), 3.0, 15.0));
  std::vector<std::vector<double>> times(found.size());
  for (int r = 0; r < rounds; ++r)
    for (size_t i : alive) {
      const double t0 = now_seconds();
      found[i]->run(q);
      times[i].push_back(now_seconds() - t0);
    }
  constexpr double kMargin = 0.95;
  size_t best = alive.front();
  double best_time = 0;
  for (size_t i : alive) {
    std::sort(times[i].begin(), times[i].end());
    const double quartile = times[i][rounds / 4];
    if (i == alive.front()) {
      best_time = quartile;
      if (i == 0) best_time *= kMargin;  // the heuristic's choice: the others must beat it
    } else if (quartile < best_time) {
      best = i, best_time = quartile;
    }
  }
  return found[best];
}

// Within its scope at::parallel_for runs its body on the calling thread. Its inline path needs
// omp_in_parallel() or at::get_num_threads() == 1 (torch's OpenMP build does not consult
// c10::ParallelGuard); at::get_num_threads() reads this thread's OpenMP thread-count setting,
// which this lowers to 1 and restores (it is per thread: other threads are unaffected).
class SerialScope {
 public:
  SerialScope() : saved_(at::get_num_threads()) { set(1); }
  ~SerialScope() { set(saved_); }
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;

 private:
  static void set(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
  }
  int saved_;
};

// Problems with less work than this (multiply-adds or element visits) run on the calling thread
// alone: waking the other threads of the pool costs more than they would save (a 2^15-MAC conv
// is a few microseconds of one core, about one wake-up). Measured on AMD EPYC Zen 3, 2 threads,
// a busy machine: a 432-MAC dgrad took 46 ms with the split (its workers descheduled at the
// barriers), 8 us without; 1 and 2 threads crossed near 1e5 MACs there. Not yet re-derived on
// an idle machine.
constexpr int64_t kSerialWork = 1 << 15;

// The op body's call: select, then run (or, under the debug query, record and return).
// `key` names the problem for the tuning cache: every parameter, dtype, strides, thread count.
// `work` estimates its arithmetic (see kSerialWork).
template <class Problem, size_t N>
void dispatch(const Algorithm<Problem> (&table)[N], Op op, const Problem& q,
              std::string (*describe)(const Problem&), TuneKey (*key)(Op, const Problem&),
              int64_t work) {
  QueryRecord* const record = active_query();
  if (record != nullptr) {
    // The applicable list before anything is selected: a forced algorithm that cannot run this
    // call raises below, and cpu.algorithms() still gets the list (without touching the
    // process-wide forced name, which another thread's ops read meanwhile).
    record->applicable.clear();
    for (const auto* e : candidates(table, op, q)) record->applicable.push_back(e->name);
    record->selected.clear();
    record->recorded = true;
  }
  const Algorithm<Problem>* chosen = nullptr;
  const char* name = forced();
  if (name != nullptr && named_entry(table, op, name) != nullptr) {
    chosen = &select(table, op, q, describe);  // forcing wins over tuning
  } else if (benchmark_enabled()) {
    const TuneKey k = key(op, q);
    if (const char* known = tuned(k.str())) {
      chosen = named_entry(table, op, known);
      if (chosen != nullptr && !chosen->applicable(q)) chosen = nullptr;
    }
    if (chosen == nullptr && !deterministic_mode() && active_query() == nullptr) {
      const auto found = candidates(table, op, q);
      if (found.size() > 1) {
        const double t0 = now_seconds();
        chosen = fastest(found, q);
        remember(k.str(), chosen->name, now_seconds() - t0);
      } else if (found.size() == 1) {
        chosen = found.front();
        remember(k.str(), chosen->name, -1);  // nothing to time; later calls skip this search
      }
    }
  }
  if (chosen == nullptr) chosen = &select(table, op, q, describe);
  if (record != nullptr) {
    record->selected = chosen->name;
    return;
  }
  if (work < kSerialWork) {
    SerialScope serial;
    chosen->run(q);
  } else {
    chosen->run(q);
  }
}

}  // namespace convpool::cpu
