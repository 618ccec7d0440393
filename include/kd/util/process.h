// Child processes of kdistill itself (the search's parallel workers) and an exclusive file
// lock for the files they share.
//
//   std::vector<std::string> args = own_arguments();          // as this process was started
//   int pid = spawn_self(args);                               // same program, gets SIGTERM if we die
//   { FileLock lock("runs/x/trials.lock"); ...read, change, write trials.json... }
//   int status = wait_for(pid);
#pragma once

#include <string>
#include <vector>

namespace kd {

// The arguments this process was started with, argv[1..] (from /proc/self/cmdline).
std::vector<std::string> own_arguments();

// Starts /proc/self/exe with `arguments` (argv[1..]) in a child process that is sent SIGTERM when
// this process ends. Returns its pid; kd::Error when it cannot start.
int spawn_self(const std::vector<std::string>& arguments);

// Waits for the child and returns its exit status (128 + signal when it was killed).
int wait_for(int pid);

// An exclusive flock(2) on `path` (created if missing), held while the object lives.
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace kd
