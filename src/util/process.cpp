#include "kd/util/process.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

#include "kd/util/error.h"

namespace kd {

namespace {

volatile std::sig_atomic_t stop_requested = 0;

void on_stop_signal(int signal) {
  if (stop_requested != 0) _exit(128 + signal);  // the second: at once
  stop_requested = signal;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int stop_signal() { return stop_requested; }

ScopedStopHandlers::ScopedStopHandlers() {
  sigaction(SIGINT, nullptr, &saved_[0]);
  sigaction(SIGTERM, nullptr, &saved_[1]);
  stop_requested = 0;
  install_stop_handlers();
}

ScopedStopHandlers::~ScopedStopHandlers() {
  sigaction(SIGINT, &saved_[0], nullptr);
  sigaction(SIGTERM, &saved_[1], nullptr);
  stop_requested = 0;
}

const char* stop_signal_name(int signal) { return signal == SIGTERM ? "SIGTERM" : "SIGINT"; }

std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] != '\0') continue;
    parts.push_back(all.substr(start, i - start));
    start = i + 1;
  }
  if (!parts.empty()) parts.erase(parts.begin());
  return parts;
}

int spawn_self(const std::vector<std::string>& arguments, bool own_group) {
  // Everything the child needs is built before fork: between fork and exec only async-signal-safe calls.
  std::vector<std::string> args = {"kdistill"};
  args.insert(args.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) fail("cannot start a worker process: {}", std::strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
    if (own_group) setpgid(0, 0);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  return pid;
}

int wait_for(int pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::vector<int> wait_for_all(const std::vector<int>& pids) {
  std::vector<int> statuses(pids.size(), -1);
  std::vector<bool> running(pids.size(), true);
  bool forwarded = false;
  for (size_t left = pids.size(); left > 0;) {
    if (!forwarded && stop_signal() != 0) {
      for (size_t k = 0; k < pids.size(); ++k) {
        if (running[k]) kill(pids[k], stop_signal());
      }
      forwarded = true;
    }
    bool any = false;
    for (size_t k = 0; k < pids.size(); ++k) {
      if (!running[k]) continue;
      int status = 0;
      pid_t done = waitpid(pids[k], &status, WNOHANG);
      if (done == 0 || (done < 0 && errno == EINTR)) continue;
      running[k] = false;
      --left;
      any = true;
      statuses[k] = done < 0 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    }
    if (!any && left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return statuses;
}

FileLock::FileLock(const std::string& path) {
  fd_ = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open the lock file: {}", path, std::strerror(errno));
  while (flock(fd_, LOCK_EX) < 0) {
    if (errno != EINTR) {
      close(fd_);
      fail("{}: cannot lock: {}", path, std::strerror(errno));
    }
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) {
    flock(fd_, LOCK_UN);
    close(fd_);
  }
}

}  // namespace kd
