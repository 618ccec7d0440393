#include "kd/util/process.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>

#include "kd/util/error.h"

namespace kd {

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

int spawn_self(const std::vector<std::string>& arguments) {
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
