// dsrun's parts without processes: the hostfile, --include/--exclude (DeepSpeed's syntax and
// examples), --num_nodes/--num_procs, the world info, and the command lines per launcher.
// The launches themselves are in dsrun_test.sh.
#include "catch.h"
#include "command_lines.h"
#include "hosts.h"
#include "launch_local.h"

#include <cstdlib>
#include <functional>
#include <string>

using namespace dsrun;

namespace {

// DeepSpeed's documentation example: four workers with four GPUs each.
const char* kHostfile =
    "# the cluster\n"
    "worker-0 slots=4\n"
    "\n"
    "worker-1 slots=4   # a comment after the entry\n"
    "worker-2 slots = 4\n"
    "worker-3 slots=4 max_slots=8\n";

HostList workers() {
  return parse_hostfile_text(kHostfile, "hostfile");
}

std::string show(const HostList& hosts) {
  std::string out;
  for (const Host& h : hosts) {
    out += (out.empty() ? "" : " ") + h.name + ":";
    for (size_t i = 0; i < h.slots.size(); ++i) out += (i ? "," : "") + std::to_string(h.slots[i]);
  }
  return out;
}

std::string usage_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("dsrun hostfile: hosts in order with slots 0..N-1, comments and blank lines skipped") {
  CHECK(show(workers()) == "worker-0:0,1,2,3 worker-1:0,1,2,3 worker-2:0,1,2,3 worker-3:0,1,2,3");
  CHECK(show(parse_hostfile_text("b slots=1\na slots=2", "f")) == "b:0 a:0,1");
}

TEST_CASE("dsrun hostfile: bad lines are errors naming file and line") {
  CHECK(usage_error([] { parse_hostfile_text("a slots=2\n\nb\n", "hf"); }) ==
        "hf:3: expected `hostname slots=N`, got 'b'");
  CHECK(usage_error([] { parse_hostfile_text("# x\na slots=two\n", "hf"); }) ==
        "hf:2: slots must be a positive integer, got 'slots=two'");
  CHECK(usage_error([] { parse_hostfile_text("a slots=0\n", "hf"); }) ==
        "hf:1: slots must be a positive integer, got 'slots=0'");
  CHECK(usage_error([] { parse_hostfile_text("a slots=1\na slots=2\n", "hf"); }) ==
        "hf:2: host 'a' is listed twice");
  CHECK(usage_error([] { parse_hostfile_text("a slots=1 gpus\n", "hf"); }) ==
        "hf:1: expected `hostname slots=N`, got 'a slots=1 gpus'");
  CHECK(has(usage_error([] { parse_hostfile_text("# only comments\n\n", "hf"); }), "hf: no hosts"));
  CHECK(has(usage_error([] { read_hostfile("/nonexistent/hostfile"); }),
            "--hostfile: cannot read '/nonexistent/hostfile'"));
}

TEST_CASE("dsrun include: DeepSpeed's examples") {
  // deepspeed --include="worker-2:0,1": only GPUs 0 and 1 of worker-2.
  CHECK(show(apply_include(workers(), "worker-2:0,1", "hf")) == "worker-2:0,1");
  CHECK(show(apply_include(workers(), "worker-2:0,1@worker-3", "hf")) ==
        "worker-2:0,1 worker-3:0,1,2,3");
  // DeepSpeed's unit test: worker-0@worker-1:0,2.
  CHECK(show(apply_include(workers(), "worker-0@worker-1:0,2", "hf")) ==
        "worker-0:0,1,2,3 worker-1:0,2");
  // Hostfile order, not include order; slots sorted and deduplicated.
  CHECK(show(apply_include(workers(), "worker-3:2,0,2@worker-1:1", "hf")) ==
        "worker-1:1 worker-3:0,2");
}

TEST_CASE("dsrun exclude: DeepSpeed's examples") {
  CHECK(show(apply_exclude(workers(), "worker-1:0", "hf")) ==
        "worker-0:0,1,2,3 worker-1:1,2,3 worker-2:0,1,2,3 worker-3:0,1,2,3");
  // deepspeed --exclude="worker-2:0@worker-3:0,1"
  CHECK(show(apply_exclude(workers(), "worker-2:0@worker-3:0,1", "hf")) ==
        "worker-0:0,1,2,3 worker-1:0,1,2,3 worker-2:1,2,3 worker-3:2,3");
  // A host without a slot list: the whole host; a host left with no slots disappears.
  CHECK(show(apply_exclude(workers(), "worker-0@worker-2:0,1,2,3", "hf")) ==
        "worker-1:0,1,2,3 worker-3:0,1,2,3");
}

TEST_CASE("dsrun include/exclude: errors name the flag, host and slot") {
  CHECK(usage_error([] { apply_include(workers(), "worker-9:0", "hostfile hf"); }) ==
        "--include: host 'worker-9' is not in hostfile hf (hosts: worker-0, worker-1, worker-2, "
        "worker-3)");
  CHECK(usage_error([] { apply_include(workers(), "worker-1:4", "hostfile hf"); }) ==
        "--include: host 'worker-1' has no slot 4 in hostfile hf (its slots: 0,1,2,3)");
  CHECK(usage_error([] { apply_exclude(workers(), "worker-1:x", "hf"); }) ==
        "--exclude: bad slot 'x' in 'worker-1:x' (slots are non-negative integers separated by "
        "',')");
  CHECK(usage_error([] { apply_exclude(workers(), "worker-1:", "hf"); }) ==
        "--exclude: bad slot '' in 'worker-1:' (slots are non-negative integers separated by ',')");
  CHECK(usage_error([] { apply_include(workers(), "worker-1@@worker-2", "hf"); }) ==
        "--include: empty host name in 'worker-1@@worker-2'");
  CHECK(usage_error([] {
          apply_exclude(workers(), "worker-0@worker-1@worker-2@worker-3", "hf");
        }) == "--exclude 'worker-0@worker-1@worker-2@worker-3' leaves no hosts to run on");
  // A slot excluded by an earlier filter is no longer there to include.
  const HostList some = apply_exclude(workers(), "worker-1:0", "hf");
  CHECK(has(usage_error([&] { apply_include(some, "worker-1:0", "hf"); }), "has no slot 0"));
}

TEST_CASE("dsrun num_nodes and num_procs") {
  CHECK(show(limit_hosts(workers(), 2, -1, "hf")) == "worker-0:0,1,2,3 worker-1:0,1,2,3");
  CHECK(show(limit_hosts(workers(), 1, 2, "hf")) == "worker-0:0,1");
  CHECK(show(limit_hosts(workers(), -1, -1, "hf")) == show(workers()));
  CHECK(usage_error([] { limit_hosts(workers(), 5, -1, "hostfile hf"); }) ==
        "--num_nodes 5 but hostfile hf lists 4 host(s)");
  CHECK(total_slots(workers()) == 16);
  CHECK(rank_offset(apply_include(workers(), "worker-0:1@worker-2", "hf"), 1) == 1);
}

TEST_CASE("dsrun world info round-trips through base64 JSON, order kept") {
  const HostList hosts = apply_include(workers(), "worker-3:1,3@worker-0", "hf");
  const std::string encoded = encode_world_info(hosts);
  CHECK(encoded.find_first_not_of(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=") ==
        std::string::npos);
  CHECK(show(decode_world_info(encoded)) == "worker-0:0,1,2,3 worker-3:1,3");
  CHECK(has(usage_error([] { decode_world_info("!!"); }), "--world_info: not base64"));
}

TEST_CASE("dsrun rank variables: global rank is the node's offset plus the local rank") {
  NodeLaunch launch;
  launch.hosts = parse_hostfile_text("a slots=2\nb slots=3\n", "hf");
  launch.node_rank = 1;
  launch.master_addr = "a";
  launch.master_port = 1234;
  const std::vector<std::string> vars = rank_variables(launch, 2);
  CHECK(join_quoted(vars) ==
        "RANK=4 LOCAL_RANK=2 WORLD_SIZE=5 LOCAL_WORLD_SIZE=3 NODE_RANK=1 CROSS_RANK=1 "
        "CROSS_SIZE=2 MASTER_ADDR=a MASTER_PORT=1234 DSPP_LOG_RANK=0");
  // Slots other than 0..N-1 become the devices the ranks see.
  launch.hosts = apply_include(launch.hosts, "b:1,2", "hf");
  launch.node_rank = 0;
  unsetenv("CUDA_VISIBLE_DEVICES");
  CHECK(rank_variables(launch, 0).back() == "CUDA_VISIBLE_DEVICES=1,2");
}

TEST_CASE("dsrun shell quoting") {
  CHECK(shell_quote("plain-word_1.2/x:y,z=@%+") == "plain-word_1.2/x:y,z=@%+");
  CHECK(shell_quote("") == "''");
  CHECK(shell_quote("two words") == "'two words'");
  CHECK(shell_quote("it's $HOME") == "'it'\\''s $HOME'");
}

namespace {

MultiNode two_workers() {
  MultiNode job;
  job.hosts = limit_hosts(workers(), 2, 2, "hf");
  job.hostfile = "/etc/hf";
  job.hosts_changed = true;
  job.master_addr = "worker-0";
  job.master_port = 29500;
  job.program = {"./train", "--config", "my config.json"};
  job.dsrun_path = "/opt/dspp/bin/dsrun";
  job.cwd = "/home/me/run";
  job.exports = {{"DSPP_LOG", "info"}, {"PATH", "/usr/bin:/bin"}};
  job.ssh = {"ssh"};
  return job;
}

}  // namespace

TEST_CASE("dsrun command line: ssh, one per node") {
  MultiNode job = two_workers();
  job.ssh_port = 2222;
  const auto commands = ssh_commands(job);
  REQUIRE(commands.size() == 2);
  const std::string w = encode_world_info(job.hosts);
  CHECK(join_quoted(commands[1]) ==
        "ssh -p 2222 worker-1 'cd /home/me/run && export DSPP_LOG=info PATH=/usr/bin:/bin && exec "
        "/opt/dspp/bin/dsrun --node_rank=1 --world_info=" +
            w +
            " --master_addr=worker-0 --master_port=29500 --stop_on_stdin_eof -- ./train --config "
            "'\\''my config.json'\\'''");
}

TEST_CASE("dsrun command line: pdsh") {
  MultiNode job = two_workers();
  job.ssh_port = 2222;
  CHECK(command_text(pdsh_command(job)) ==
        "PDSH_RCMD_TYPE=ssh PDSH_SSH_ARGS_APPEND='-p 2222' pdsh -S -f 1024 -w worker-0,worker-1 "
        "'cd /home/me/run && export DSPP_LOG=info PATH=/usr/bin:/bin && exec /opt/dspp/bin/dsrun "
        "--node_rank=%n --world_info=" +
            encode_world_info(job.hosts) +
            " --master_addr=worker-0 --master_port=29500 -- ./train --config '\\''my "
            "config.json'\\'''");
}

TEST_CASE("dsrun command line: openmpi") {
  MultiNode job = two_workers();
  CHECK(command_text(openmpi_command(job)) ==
        "mpirun -n 4 --host worker-0:2,worker-1:2 --mca btl '^openib' -x MASTER_ADDR=worker-0 -x "
        "MASTER_PORT=29500 -x DSPP_LOG=info -x PATH=/usr/bin:/bin ./train --config 'my "
        "config.json'");
  job.hosts = workers();
  job.hosts_changed = false;
  job.launcher_args = {"--bind-to", "none"};
  CHECK(has(command_text(openmpi_command(job)),
            "mpirun -n 16 -hostfile /etc/hf --mca btl '^openib' --bind-to none -x "));
  job.hosts = apply_include(workers(), "worker-1:1,3", "hf");
  CHECK(has(usage_error([&] { openmpi_command(job); }),
            "--launcher openmpi starts slots 0..N-1 on each host, but host 'worker-1' would use "
            "slot 1"));
}

TEST_CASE("dsrun command line: slurm") {
  MultiNode job = two_workers();
  CHECK(command_text(slurm_command(job)) ==
        "srun -n 4 --nodes 2 --nodelist worker-0,worker-1 --ntasks-per-node 2 "
        "--export=ALL,MASTER_ADDR=worker-0,MASTER_PORT=29500 ./train --config 'my config.json'");
  // Without a hostfile Slurm places the ranks: only counts.
  job.hostfile = "";
  job.master_addr = "";
  job.procs_per_node = 4;
  job.num_nodes = 3;
  CHECK(command_text(slurm_command(job)) ==
        "srun -n 12 --nodes 3 --ntasks-per-node 4 --export=ALL,MASTER_PORT=29500 ./train --config "
        "'my config.json'");
}
