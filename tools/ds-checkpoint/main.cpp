// ds-checkpoint: look into a dspp checkpoint, check it, or export its weights.
//
//   ds-checkpoint inspect DIR [--tag T] [--config]      layout, stage, tensors, shards
//   ds-checkpoint verify DIR [--tag T]                   every checksum, every tensor complete
//   ds-checkpoint export DIR OUT.safetensors [--tag T] [--prefix module/]
//                                                        consolidated fp32 weights, one file
//
// DIR is a save folder (its `latest` names the tag unless --tag does) or a tag folder itself.
#include <dspp/checkpoint.h>
#include <dspp/error.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace po = boost::program_options;

namespace {

const char* kUsage =
    "usage: ds-checkpoint inspect DIR [--tag T] [--config]\n"
    "       ds-checkpoint verify DIR [--tag T]\n"
    "       ds-checkpoint export DIR OUT.safetensors [--tag T] [--prefix module/]\n"
    "\n"
    "DIR is a save folder (the tag is --tag, else the one its `latest` file names) or a tag\n"
    "folder holding manifest.json.\n"
    "\n"
    "inspect  world layout, ZeRO stage, counters, every tensor with its shape, every shard\n"
    "verify   check every shard's size and crc32c and that every tensor is fully covered;\n"
    "         exits 1 naming each file or tensor at fault\n"
    "export   the tensors under --prefix (default module/), assembled from all shards and\n"
    "         converted to fp32 (integer tensors keep their dtype), as one safetensors file\n"
    "         named without the prefix: loads with safetensors.torch.load_file\n";

struct Args {
  std::vector<std::string> positional;
  std::string tag;
  std::string prefix = "module/";
  bool config = false;
};

Args parse(const std::vector<std::string>& argv, const std::string& command) {
  po::options_description opts("ds-checkpoint " + command);
  opts.add_options()("tag", po::value<std::string>(), "checkpoint tag (default: latest)")(
      "prefix", po::value<std::string>(), "export: the tensors to export (default module/)")(
      "config", "inspect: print the stored config")("pos", po::value<std::vector<std::string>>(),
                                                    "positional");
  po::positional_options_description pos;
  pos.add("pos", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  Args a;
  if (vm.count("pos")) a.positional = vm["pos"].as<std::vector<std::string>>();
  if (vm.count("tag")) a.tag = vm["tag"].as<std::string>();
  if (vm.count("prefix")) a.prefix = vm["prefix"].as<std::string>();
  a.config = vm.count("config") > 0;
  return a;
}

// A tag folder when DIR holds a manifest and no tag is asked for; else DIR/<tag or latest>.
std::filesystem::path tag_dir(const std::string& dir, const std::string& tag) {
  if (tag.empty() && std::filesystem::exists(std::filesystem::path(dir) / "manifest.json")) {
    return dir;
  }
  return dspp::checkpoint_tag_dir(dir, tag);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

int run_inspect(const Args& a) {
  const dspp::CheckpointReader r(tag_dir(a.positional.at(0), a.tag));
  const dspp::Manifest& m = r.manifest();
  std::cout << "checkpoint  " << r.dir().string() << "\n"
            << "tag         " << m.meta.tag << "  (format " << m.format_version
            << ", written by dspp " << m.dspp_version << ")\n"
            << "world       world_size " << m.meta.world.world_size << ", dp " << m.meta.world.dp
            << ", tp " << m.meta.world.tp << ", pp " << m.meta.world.pp << "\n"
            << "zero stage  " << m.meta.zero_stage << "\n"
            << "counters    " << m.meta.counters_json << "\n"
            << "config      " << m.meta.config_json.size() << " bytes"
            << (a.config ? "" : " (--config prints it)") << "\n";
  if (a.config) std::cout << m.meta.config_json << "\n";

  std::map<std::string, size_t> pieces;
  for (const dspp::ShardSummary& s : m.shards) {
    for (const dspp::CheckpointPiece& p : s.pieces) ++pieces[p.name];
  }
  const std::vector<std::string> names = r.names();
  size_t width = 0;
  for (const std::string& n : names) width = std::max(width, n.size());
  std::cout << "tensors (" << names.size() << "):\n";
  for (const std::string& n : names) {
    std::cout << "  " << n << std::string(width + 2 - n.size(), ' ') << dspp::dtype_name(r.dtype(n))
              << shape_text(r.shape(n)) << "  " << r.numel(n) << " elements in " << pieces[n]
              << (pieces[n] == 1 ? " piece" : " pieces") << "\n";
  }
  uint64_t total = 0;
  for (const dspp::ShardSummary& s : m.shards) total += s.bytes;
  std::cout << "shards (" << m.shards.size() << ", " << total << " bytes):\n";
  for (const dspp::ShardSummary& s : m.shards) {
    std::cout << "  " << s.file << "  rank " << s.rank << "  " << s.bytes << " bytes  crc32c "
              << hex32(s.crc32c) << "  " << s.pieces.size()
              << (s.pieces.size() == 1 ? " piece\n" : " pieces\n");
  }
  return 0;
}

int run_verify(const Args& a) {
  const dspp::CheckpointReader r(tag_dir(a.positional.at(0), a.tag));
  const dspp::Manifest& m = r.manifest();
  int problems = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < m.shards.size(); ++i) {
    try {
      r.verify_shard(i);
      bytes += m.shards[i].bytes;
    } catch (const dspp::Error& e) {
      std::cerr << "ds-checkpoint: error: " << e.what() << "\n";
      ++problems;
    }
  }
  for (const std::string& n : r.names()) {
    for (const auto& [begin, end] : r.missing_ranges(n)) {
      std::cerr << "ds-checkpoint: error: " << r.dir().string() << ": tensor '" << n
                << "' elements [" << begin << ", " << end << ") are in no shard\n";
      ++problems;
    }
  }
  if (problems > 0) {
    std::cerr << "ds-checkpoint: " << r.dir().string() << ": " << problems
              << (problems == 1 ? " problem\n" : " problems\n");
    return 1;
  }
  std::cout << "ok: " << r.dir().string() << ": " << m.shards.size() << " shards (" << bytes
            << " bytes) checksummed, " << r.names().size() << " tensors complete\n";
  return 0;
}

bool is_float(dspp_dtype t) {
  return t == DSPP_F32 || t == DSPP_F16 || t == DSPP_BF16 || t == DSPP_F64;
}

int run_export(const Args& a) {
  const dspp::CheckpointReader r(tag_dir(a.positional.at(0), a.tag));
  const std::filesystem::path out = a.positional.at(1);
  std::vector<dspp::SafetensorsEntry> entries;
  for (const std::string& n : r.names()) {
    if (n.size() <= a.prefix.size() || n.compare(0, a.prefix.size(), a.prefix) != 0) continue;
    dspp::SafetensorsEntry e;
    e.name = n.substr(a.prefix.size());
    e.dtype = is_float(r.dtype(n)) ? DSPP_F32 : r.dtype(n);
    e.shape = r.shape(n);
    const dspp_dtype dtype = e.dtype;
    // Assembled one tensor at a time while the file is written: memory stays one tensor's worth.
    e.fill = [&r, n, dtype](void* dst) { r.read_range(n, 0, r.numel(n), dst, dtype); };
    entries.push_back(std::move(e));
  }
  if (entries.empty()) {
    std::cerr << "ds-checkpoint: error: " << r.dir().string() << " has no tensor named '"
              << a.prefix << "...'\n";
    return 1;
  }
  // "format": "pt" is what safetensors.torch.save_file records.
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"dspp_checkpoint", r.manifest().meta.tag},
                                                       {"dspp_version", r.manifest().dspp_version}};
  const dspp::FileSummary f = dspp::write_safetensors(out, entries, metadata);
  std::cout << "exported " << entries.size() << " tensors from " << r.dir().string() << " to "
            << out.string() << " (" << f.bytes << " bytes)\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command != "inspect" && command != "verify" && command != "export") {
      std::cerr << "ds-checkpoint: unknown command '" << command << "'\n" << kUsage;
      return 2;
    }
    const Args a = parse(args, command);
    const size_t want = command == "export" ? 2 : 1;
    if (a.positional.size() != want) {
      std::cerr << "ds-checkpoint " << command << ": expected " << want
                << (want == 1 ? " argument (DIR)" : " arguments (DIR OUT.safetensors)") << ", got "
                << a.positional.size() << "\n"
                << kUsage;
      return 2;
    }
    if (command == "inspect") return run_inspect(a);
    if (command == "verify") return run_verify(a);
    return run_export(a);
  } catch (const po::error& e) {
    std::cerr << "ds-checkpoint " << command << ": " << e.what() << "\n";
    return 2;
  } catch (const dspp::Error& e) {
    std::cerr << "ds-checkpoint: error: " << e.what() << "\n";
    return 1;
  }
}
