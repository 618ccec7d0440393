// Child processes of kdistill itself (the search's parallel workers), an exclusive file lock for the
// files they share, and stopping on Ctrl-C.
//
//   std::vector<std::string> args = own_arguments();          // as this process was started
//   int pid = spawn_self(args);                               // same program, gets SIGTERM if we die
//   { FileLock lock("runs/x/trials.lock"); ...read, change, write trials.json... }
//   int status = wait_for(pid);
#pragma once

#include <csignal>
#include <string>
#include <vector>

namespace kd {

// The arguments this process was started with, argv[1..] (from /proc/self/cmdline).
std::vector<std::string> own_arguments();

// Starts /proc/self/exe with `arguments` (argv[1..]) in a child process that is sent SIGTERM when
// this process ends; with `own_group`, in a process group of its own, so that a Ctrl-C at the terminal
// reaches it only through this process (wait_for_all). Returns its pid; kd::Error when it cannot start.
int spawn_self(const std::vector<std::string>& arguments, bool own_group = false);

// Waits for the child and returns its exit status (128 + signal when it was killed).
int wait_for(int pid);
// Waits for every child, their exit statuses in order; passes a stop signal this process receives
// (install_stop_handlers) on to the children still running, once.
std::vector<int> wait_for_all(const std::vector<int>& pids);

// Ctrl-C (SIGINT) and SIGTERM: the first sets a flag that training reads after each step (it writes a
// checkpoint and throws kd::Interrupted); a second of either ends the process at once with status
// 128 + its number. Call once, at the start of a command.
void install_stop_handlers();
// The signal that asked this process to stop (SIGINT or SIGTERM), or 0.
int stop_signal();
// "SIGTERM" or "SIGINT", for messages.
const char* stop_signal_name(int signal);

// install_stop_handlers for as long as the object lives, in a process that has handlers of its own (the
// Python module: Python's SIGINT handler only sets a flag that the interpreter reads between bytecodes,
// never during a C++ run): the previous handlers come back and the stop flag is cleared at its end.
class ScopedStopHandlers {
 public:
  ScopedStopHandlers();
  ~ScopedStopHandlers();
  ScopedStopHandlers(const ScopedStopHandlers&) = delete;
  ScopedStopHandlers& operator=(const ScopedStopHandlers&) = delete;

 private:
  struct ::sigaction saved_[2] {};  // SIGINT's and SIGTERM's
};

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
