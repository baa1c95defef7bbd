// dsrun: DeepSpeed's `deepspeed` launcher for C++ programs. Starts a program as N ranks on this
// machine, or on the hosts of a hostfile over ssh (or pdsh, mpirun, srun), with RANK, WORLD_SIZE,
// MASTER_ADDR... set as dspp's bootstrap (and torchrun's) expect. See docs/dsrun.md.
#include "command_lines.h"
#include "hosts.h"
#include "launch_local.h"
#include "supervise.h"

#include <dirent.h>
#include <unistd.h>
#include <boost/program_options.hpp>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>

namespace po = boost::program_options;
using namespace dsrun;

namespace {

// DeepSpeed's default hostfile location (DLTS); absent means "run on this machine".
constexpr const char* kDefaultHostfile = "/job/hostfile";

struct Args {
  std::string hostfile = kDefaultHostfile;
  std::string include, exclude, master_addr, launcher, launcher_args, world_info;
  int num_nodes = -1, num_procs = -1, num_gpus = -1, master_port = 29500, ssh_port = 0;
  int node_rank = -1;
  bool dry_run = false, stop_on_stdin_eof = false, hostfile_given = false;
  std::vector<std::string> program;
};

po::options_description visible_options(Args& a) {
  po::options_description o("Options");
  o.add_options()                   //
      ("help,h", "show this help")  //
      ("hostfile,H", po::value(&a.hostfile),
       "hostfile: lines `hostname slots=N` (default /job/hostfile; without one, run here)")  //
      ("include,i", po::value(&a.include),
       "only these hosts/slots, e.g. worker-0@worker-1:0,2 (DeepSpeed syntax)")           //
      ("exclude,e", po::value(&a.exclude), "all but these hosts/slots, e.g. worker-1:0")  //
      ("num_nodes", po::value(&a.num_nodes), "use the first K hosts")                     //
      ("num_procs,n", po::value(&a.num_procs),
       "ranks per node (slots 0..N-1); default: the hostfile's slots, or the GPUs here (1 "
       "without)")                                                                    //
      ("num_gpus", po::value(&a.num_gpus), "same as --num_procs (DeepSpeed's name)")  //
      ("master_addr", po::value(&a.master_addr),
       "address of rank 0 (default 127.0.0.1 here, the first host for multi-node)")         //
      ("master_port", po::value(&a.master_port), "port of rank 0's store (default 29500)")  //
      ("launcher", po::value(&a.launcher),
       "local, ssh, pdsh, openmpi or slurm (default: local for one local host, else ssh)")  //
      ("launcher_args", po::value(&a.launcher_args),
       "extra words for pdsh/mpirun/srun, split at spaces")          //
      ("ssh_port", po::value(&a.ssh_port), "ssh port for ssh/pdsh")  //
      ("dry_run", po::bool_switch(&a.dry_run), "print the command line(s) and exit");
  return o;
}

// Node mode: what the ssh/pdsh launch runs on each node.
po::options_description hidden_options(Args& a) {
  po::options_description o("Node mode");
  o.add_options()                                                                  //
      ("node_rank", po::value(&a.node_rank), "this node's index in --world_info")  //
      ("world_info", po::value(&a.world_info), "base64 JSON {host: [slots]}")      //
      ("stop_on_stdin_eof", po::bool_switch(&a.stop_on_stdin_eof),
       "stop the ranks when stdin reaches EOF (the ssh session is gone)");
  return o;
}

void usage(std::ostream& out, const po::options_description& visible) {
  out << "usage: dsrun [options] program [program args...]\n"
         "Starts `program` as the ranks of one job, here or on the hosts of a hostfile.\n\n"
      << visible
      << "\nEnvironment: DSRUN_SSH replaces the ssh command (e.g. \"ssh -i key -o "
         "BatchMode=yes\").\nSee docs/dsrun.md.\n";
}

// dsrun's options end at the first word that is not an option (or at `--`): the rest is the
// program's command line, passed through untouched even when it looks like options.
size_t program_start(int argc, char** argv, const po::options_description& all) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") return static_cast<size_t>(i);
    if (arg.size() < 2 || arg[0] != '-') return static_cast<size_t>(i);
    std::string name;
    if (arg.rfind("--", 0) == 0) {
      if (arg.find('=') != std::string::npos) continue;  // --name=value
      name = arg.substr(2);
    } else {
      if (arg.size() > 2) continue;  // -n3
      name = arg;                    // Boost matches short options as "-n"
    }
    const po::option_description* d = all.find_nothrow(name, false);
    if (d && d->semantic()->max_tokens() > 0) ++i;  // its value follows
  }
  return static_cast<size_t>(argc);
}

Args parse_args(int argc, char** argv) {
  Args a;
  po::options_description visible = visible_options(a);
  po::options_description all;
  all.add(visible).add(hidden_options(a));
  const size_t start = program_start(argc, argv, all);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(static_cast<int>(start), argv).options(all).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  if (vm.count("help")) {
    usage(std::cout, visible);
    std::exit(0);
  }
  size_t first = start;
  if (first < static_cast<size_t>(argc) && std::strcmp(argv[first], "--") == 0) ++first;
  for (size_t i = first; i < static_cast<size_t>(argc); ++i) a.program.push_back(argv[i]);
  if (a.program.empty())
    throw UsageError("no program given (usage: dsrun [options] program [args...]; see --help)");
  a.hostfile_given = vm.count("hostfile") > 0;
  return a;
}

// GPUs the NVIDIA driver shows here (/dev/nvidia0, /dev/nvidia1...): DeepSpeed's default number of
// ranks on one machine. dsrun links no CUDA, so it counts device files.
int gpu_count() {
  DIR* dir = opendir("/dev");
  if (!dir) return 0;
  int count = 0;
  while (dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name.size() > 6 && name.rfind("nvidia", 0) == 0 &&
        name.find_first_not_of("0123456789", 6) == std::string::npos)
      ++count;
  }
  closedir(dir);
  return count;
}

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::string self_path() {
  char buf[PATH_MAX + 1] = {};
  const ssize_t n = readlink("/proc/self/exe", buf, PATH_MAX);
  if (n <= 0)
    throw std::runtime_error(std::string("readlink /proc/self/exe: ") + std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

std::string current_dir() {
  char buf[PATH_MAX + 1] = {};
  if (!getcwd(buf, PATH_MAX))
    throw std::runtime_error(std::string("getcwd: ") + std::strerror(errno));
  return buf;
}

int run_node_mode(const Args& a) {
  if (a.world_info.empty()) throw UsageError("--node_rank needs --world_info");
  NodeLaunch launch;
  launch.hosts = decode_world_info(a.world_info);
  if (a.node_rank >= static_cast<int>(launch.hosts.size()))
    throw UsageError("--node_rank " + std::to_string(a.node_rank) + " but --world_info has " +
                     std::to_string(launch.hosts.size()) + " node(s)");
  launch.node_rank = a.node_rank;
  launch.master_addr = a.master_addr.empty() ? launch.hosts.front().name : a.master_addr;
  launch.master_port = a.master_port;
  launch.program = a.program;
  launch.dry_run = a.dry_run;
  launch.stop_on_stdin_eof = a.stop_on_stdin_eof;
  return launch_node(launch);
}

// Runs `command` in place of dsrun (pdsh, mpirun, srun do their own supervision).
int exec_command(const Command& command) {
  for (const auto& [name, value] : command.env) setenv(name.c_str(), value.c_str(), 1);
  std::vector<char*> argv;
  for (const std::string& w : command.argv) argv.push_back(const_cast<char*>(w.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  std::cerr << "dsrun: cannot run '" << command.argv[0] << "': " << std::strerror(errno) << "\n";
  return 127;
}

int run(const Args& a) {
  if (a.node_rank >= 0) return run_node_mode(a);
  if (a.num_procs > 0 && a.num_gpus > 0 && a.num_procs != a.num_gpus)
    throw UsageError("--num_procs " + std::to_string(a.num_procs) + " and --num_gpus " +
                     std::to_string(a.num_gpus) + " disagree (they are the same setting)");
  const int procs = a.num_procs > 0 ? a.num_procs : a.num_gpus;
  if (!a.include.empty() && !a.exclude.empty())
    throw UsageError("--include and --exclude are mutually exclusive");
  const std::string launcher = a.launcher;
  if (!launcher.empty() && launcher != "local" && launcher != "ssh" && launcher != "pdsh" &&
      launcher != "openmpi" && launcher != "slurm")
    throw UsageError("--launcher '" + launcher + "': expected local, ssh, pdsh, openmpi or slurm");

  // Like DeepSpeed: the default hostfile may be absent (run here); one named on the command
  // line must exist.
  const bool have_hostfile = a.hostfile_given || access(a.hostfile.c_str(), F_OK) == 0;
  MultiNode job;
  job.master_port = a.master_port;
  job.program = a.program;
  job.launcher_args = split_words(a.launcher_args);
  job.exports = exported_environment();
  job.procs_per_node = procs;
  job.num_nodes = a.num_nodes;

  // openmpi/slurm without a hostfile: the scheduler places the ranks; dsrun only counts them.
  if (!have_hostfile && (launcher == "openmpi" || launcher == "slurm")) {
    if (!a.include.empty() || !a.exclude.empty())
      throw UsageError("--include/--exclude need a hostfile with --launcher " + launcher);
    job.master_addr = a.master_addr;
    const Command c = launcher == "openmpi" ? openmpi_command(job) : slurm_command(job);
    if (a.dry_run) {
      std::cout << command_text(c) << "\n";
      return 0;
    }
    return exec_command(c);
  }

  HostList hosts;
  std::string where;
  if (have_hostfile) {
    hosts = read_hostfile(a.hostfile);
    where = "hostfile " + a.hostfile;
    if ((!a.include.empty() || !a.exclude.empty()) && (a.num_nodes > 0 || procs > 0))
      throw UsageError(
          "--num_nodes/--num_procs/--num_gpus cannot be combined with --include/--exclude "
          "(as in DeepSpeed): name the slots in --include instead");
  } else {
    if (a.num_nodes > 1)
      throw UsageError("--num_nodes " + std::to_string(a.num_nodes) +
                       " needs a hostfile (--hostfile) listing that many hosts");
    const int n = procs > 0 ? procs : std::max(1, gpu_count());
    Host local{"localhost", {}};
    for (int s = 0; s < n; ++s) local.slots.push_back(s);
    hosts = {local};
    where = "the local host list (localhost:0-" + std::to_string(n - 1) + ", no hostfile)";
  }
  const size_t listed = hosts.size();
  if (!a.include.empty()) hosts = apply_include(hosts, a.include, where);
  if (!a.exclude.empty()) hosts = apply_exclude(hosts, a.exclude, where);
  if (have_hostfile) hosts = limit_hosts(hosts, a.num_nodes, procs, where);
  if (hosts.empty() || total_slots(hosts) == 0) throw UsageError("the resulting world is empty");

  const bool local = launcher == "local" ||
                     (launcher.empty() && hosts.size() == 1 && is_local_host(hosts.front().name));
  if (local) {
    if (hosts.size() != 1)
      throw UsageError("--launcher local runs one node, but " + std::to_string(hosts.size()) +
                       " hosts are selected");
    NodeLaunch launch;
    launch.hosts = hosts;
    launch.master_addr = a.master_addr.empty() ? "127.0.0.1" : a.master_addr;
    launch.master_port = a.master_port;
    launch.program = a.program;
    launch.dry_run = a.dry_run;
    return launch_node(launch);
  }

  job.hosts = hosts;
  job.hostfile = have_hostfile ? a.hostfile : "";
  job.hosts_changed = hosts.size() != listed || !a.include.empty() || !a.exclude.empty() ||
                      a.num_nodes > 0 || procs > 0;
  job.master_addr = a.master_addr.empty() ? hosts.front().name : a.master_addr;
  job.dsrun_path = self_path();
  job.cwd = current_dir();
  const char* ssh = std::getenv("DSRUN_SSH");
  job.ssh = split_words(ssh && *ssh ? ssh : "ssh");
  job.ssh_port = a.ssh_port;

  if (launcher == "pdsh" || launcher == "openmpi" || launcher == "slurm") {
    const Command c = launcher == "pdsh"      ? pdsh_command(job)
                      : launcher == "openmpi" ? openmpi_command(job)
                                              : slurm_command(job);
    if (a.dry_run) {
      std::cout << command_text(c) << "\n";
      return 0;
    }
    return exec_command(c);
  }

  // ssh: one ssh per node, supervised like local ranks.
  const auto commands = ssh_commands(job);
  if (a.dry_run) {
    for (const auto& argv : commands) std::cout << join_quoted(argv) << "\n";
    return 0;
  }
  std::vector<ChildSpec> children;
  for (size_t node = 0; node < commands.size(); ++node) {
    ChildSpec child;
    child.label = "node " + std::to_string(node) + " (" + hosts[node].name + ")";
    child.prefix = "[node " + std::to_string(node) + "] ";
    child.keep_rank_lines = true;
    child.argv = commands[node];
    for (char** e = environ; *e; ++e) child.env.push_back(*e);
    child.stdin_pipe = true;
    children.push_back(std::move(child));
  }
  SuperviseOptions options;
  options.others = "nodes";
  return supervise(children, options);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "dsrun: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "dsrun: " << e.what() << "\n";
    return 1;
  }
}
