// The registry's state: the forced name, the debug query, the names of every table, the tuning
// cache (registry.h).
//
// The tuning file (CONVPOOL_CPU_TUNE_CACHE) is text: a header line "convpool-cpu-tune 1", a line
// "machine <fingerprint>" (CPU model, ISA flags, core count, convpool's build id), then one
// "<key>\t<algorithm>" line per problem. It is read once, at the first tuned call; a file of
// another machine or build, or one that does not parse, is ignored with a warning (and replaced
// at the next write). Every new choice rewrites it whole, to a temporary file renamed over it.
#include "registry.h"

#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <unordered_map>

#include "gemm/gemm.h"

namespace convpool::cpu {

const char* op_name(Op op) {
  switch (op) {
    case Op::fprop: return "conv2d";
    case Op::dgrad: return "conv2d_grad_input";
    case Op::wgrad: return "conv2d_grad_weight";
    case Op::grad_bias: return "conv2d_grad_bias";
    case Op::pool_forward: return "max_pool2d";
    case Op::pool_values: return "max_pool2d_values";
    case Op::pool_backward: return "max_pool2d_backward";
  }
  return "?";
}

namespace {

std::vector<NameEntry>& names() {
  static std::vector<NameEntry> all;
  return all;
}

// Points at a table's own name string (static storage), or nullptr.
std::atomic<const char*>& forced_slot() {
  static std::atomic<const char*> slot{nullptr};
  return slot;
}

const char* registered(const char* name) {
  for (const NameEntry& e : names())
    if (std::strcmp(e.name, name) == 0) return e.name;
  return nullptr;
}

std::string all_names() {
  std::ostringstream ss;
  std::vector<std::string> seen;
  for (const NameEntry& e : names()) {
    if (std::find(seen.begin(), seen.end(), e.name) != seen.end()) continue;
    ss << (seen.empty() ? "" : ", ") << e.name;
    seen.push_back(e.name);
  }
  return ss.str();
}

thread_local QueryRecord* query = nullptr;

}  // namespace

void register_names(const NameEntry* entries, size_t count) {
  names().insert(names().end(), entries, entries + count);
}

const std::vector<NameEntry>& registered_names() { return names(); }

void set_forced(const char* name) {
  if (name == nullptr || *name == '\0') {
    forced_slot().store(nullptr);
    return;
  }
  const char* known = registered(name);
  TORCH_CHECK(known != nullptr, "unknown CPU algorithm '", name, "'; the registered ones are: ",
              all_names());
  forced_slot().store(known);
}

const char* forced() {
  // CONVPOOL_CPU_ALGO, read once at first use (after every table registered its names).
  static const bool from_env = [] {
    const char* env = std::getenv("CONVPOOL_CPU_ALGO");
    if (env != nullptr && *env != '\0') {
      TORCH_CHECK(registered(env) != nullptr, "CONVPOOL_CPU_ALGO: unknown CPU algorithm '", env,
                  "'; the registered ones are: ", all_names());
      set_forced(env);
    }
    return true;
  }();
  (void)from_env;
  return forced_slot().load(std::memory_order_relaxed);
}

QueryRecord* active_query() { return query; }
void set_query(QueryRecord* record) { query = record; }

void not_applicable(Op op, const char* name, const std::vector<const char*>& applicable,
                    const std::string& problem, Isa needs) {
  std::ostringstream ss;
  ss << "convpool: the forced CPU algorithm '" << name << "' does not apply to " << op_name(op)
     << " " << problem;
  if (!isa_reached(needs))
    ss << " (it needs " << isa_name(needs) << "; this CPU runs " << isa_name(active_isa()) << ")";
  ss << "; applicable here: ";
  for (size_t i = 0; i < applicable.size(); ++i) ss << (i ? ", " : "") << applicable[i];
  TORCH_CHECK_VALUE(false, ss.str());
}

namespace {

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0 ||
                          std::strcmp(v, "on") == 0 || std::strcmp(v, "yes") == 0);
}

std::atomic<bool>& benchmark_slot() {
  static std::atomic<bool> slot{env_flag("CONVPOOL_CPU_BENCHMARK")};
  return slot;
}

struct Tuning {
  std::mutex mutex;
  std::unordered_map<std::string, const char*> choice;
  int64_t problems = 0;
  double seconds = 0;
  bool file_read = false;
};

Tuning& tuning() {
  static Tuning t;
  return t;
}

#ifndef CONVPOOL_VERSION
#define CONVPOOL_VERSION "unknown"
#endif

// What a tuning file must have been written on: this CPU model, its ISA flags, its core count,
// this build of convpool (version and compile time of this file).
std::string fingerprint() {
  std::string model = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::ostringstream ss;
  ss << model << "|";
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  ss << "avx2=" << (__builtin_cpu_supports("avx2") != 0) << ",fma="
     << (__builtin_cpu_supports("fma") != 0) << ",avx512f=" << (__builtin_cpu_supports("avx512f") != 0);
#endif
  ss << "|isa=" << isa_name(active_isa()) << "|cores=" << std::thread::hardware_concurrency()
     << "|build=" << CONVPOOL_VERSION << " " << __DATE__ << " " << __TIME__;
  return ss.str();
}

const char* tune_path() {
  const char* path = std::getenv("CONVPOOL_CPU_TUNE_CACHE");
  return path != nullptr && *path != '\0' ? path : nullptr;
}

constexpr const char* kFileHeader = "convpool-cpu-tune 1";

// Loads the file into t.choice (caller holds the mutex). Never throws; warns once on a bad file.
void read_file(Tuning& t) {
  t.file_read = true;
  const char* path = tune_path();
  if (path == nullptr) return;
  std::ifstream in(path);
  if (!in) return;  // not written yet
  std::string header, machine;
  std::getline(in, header);
  std::getline(in, machine);
  if (header != kFileHeader || machine != "machine " + fingerprint()) {
    TORCH_WARN("convpool: ignoring the CPU tuning cache ", path, ": ",
               header != kFileHeader ? "not a convpool tuning file"
                                     : "written on another machine or convpool build",
               " (it will be rewritten)");
    return;
  }
  std::unordered_map<std::string, const char*> loaded;
  for (std::string line; std::getline(in, line);) {
    const size_t tab = line.find('\t');
    const char* name = tab == std::string::npos ? nullptr : registered(line.substr(tab + 1).c_str());
    if (name == nullptr) {
      TORCH_WARN("convpool: ignoring the CPU tuning cache ", path, ": line '", line,
                 "' does not parse (it will be rewritten)");
      return;
    }
    loaded[line.substr(0, tab)] = name;
  }
  for (const auto& [key, name] : loaded) t.choice.emplace(key, name);
}

// Writes t.choice (caller holds the mutex) to a temporary file renamed over the path.
void write_file(const Tuning& t) {
  const char* path = tune_path();
  if (path == nullptr) return;
  const std::string tmp = std::string(path) + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kFileHeader << "\n" << "machine " << fingerprint() << "\n";
    for (const auto& [key, name] : t.choice) out << key << "\t" << name << "\n";
    if (!out) {
      TORCH_WARN("convpool: could not write the CPU tuning cache ", tmp);
      return;
    }
  }
  if (std::rename(tmp.c_str(), path) != 0) {
    TORCH_WARN("convpool: could not replace the CPU tuning cache ", path);
    std::remove(tmp.c_str());
  }
}

}  // namespace

bool benchmark_enabled() { return benchmark_slot().load(std::memory_order_relaxed); }
void set_benchmark(bool on) { benchmark_slot().store(on); }
bool deterministic_mode() { return at::globalContext().deterministicAlgorithms(); }

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const char* tuned(const std::string& key) {
  Tuning& t = tuning();
  std::lock_guard<std::mutex> lock(t.mutex);
  if (!t.file_read) read_file(t);
  const auto it = t.choice.find(key);
  return it == t.choice.end() ? nullptr : it->second;
}

void remember(const std::string& key, const char* name, double seconds_spent) {
  Tuning& t = tuning();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.choice[key] = name;
  if (seconds_spent < 0) return;
  t.problems += 1;
  t.seconds += seconds_spent;
  write_file(t);
}

TuningStats tuning_stats() {
  Tuning& t = tuning();
  std::lock_guard<std::mutex> lock(t.mutex);
  return {t.problems, t.seconds, static_cast<int64_t>(t.choice.size())};
}

void clear_tuning() {
  Tuning& t = tuning();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.choice.clear();
  t.problems = 0;
  t.seconds = 0;
  t.file_read = false;  // re-read the file (if any) at the next tuned call
}

}  // namespace convpool::cpu
