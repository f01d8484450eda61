/* A listener keeps serving after accepts fail: in a forked child the fd
 * limit is lowered so that accepting fails with EMFILE while a client
 * connects, then raised again; a new client must be echoed. (The library's
 * own allocation failure before uv_accept, which used to leave libuv's
 * listening socket unpolled for ever, drops the connection the same way;
 * it cannot be provoked from here without an allocator hook.) */
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mstest.h"
#include "util.h"

static int port_of(ms_listener_t *l) {
  const char *a = ms_listener_address(l);
  return atoi(strrchr(a, ':') + 1);
}

static int tcp_socket_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in in;
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  in.sin_port = htons((uint16_t)port);
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&in, sizeof in) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Runs the loop until fd has n bytes to read (or timeout); returns them. */
static ssize_t echo_back(uv_loop_t *loop, int fd, char *buf, size_t n) {
  size_t got = 0;
  uint64_t t0 = tu_now_ms();
  while (got < n && tu_now_ms() - t0 < 5000) {
    tu_sleep_loop(loop, 20);
    ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
    if (r > 0) got += (size_t)r;
    if (r == 0) break;
  }
  return (ssize_t)got;
}

static int child(void) {
  ms_t *ms;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&ms, &o), 0);
  uv_loop_t *loop = ms_loop(ms);
  tu_echo_t echo;
  memset(&echo, 0, sizeof echo);
  tu_lerr_t lerr;
  memset(&lerr, 0, sizeof lerr);
  ms_listener_t *l = tu_listen_ok(ms, "net:127.0.0.1:0", tu_echo_on_connection, &echo);
  if (l == NULL) return 1;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  int port = port_of(l);

  /* Before: served. */
  char buf[16];
  int c0 = tcp_socket_to(port);
  CHECK(c0 >= 0);
  CHECK_INT(send(c0, "ping", 4, 0), 4);
  CHECK_INT(echo_back(loop, c0, buf, 4), 4);
  CHECK(memcmp(buf, "ping", 4) == 0);

  /* No fd left for the server's accept: the connection is refused. */
  struct rlimit old, low;
  CHECK_INT(getrlimit(RLIMIT_NOFILE, &old), 0);
  int next = dup(0);
  close(next);
  int c1 = socket(AF_INET, SOCK_STREAM, 0); /* the client's fd, before */
  low = old;
  low.rlim_cur = (rlim_t)next + 1; /* room for c1 only */
  CHECK_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
  errno = 0;
  CHECK(dup(0) < 0 && errno == EMFILE);
  struct sockaddr_in in;
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  in.sin_port = htons((uint16_t)port);
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_INT(connect(c1, (struct sockaddr *)&in, sizeof in), 0);
  send(c1, "lost", 4, MSG_NOSIGNAL);
  int accepted = echo.accepted;
  tu_sleep_loop(loop, 300);
  fprintf(stderr, "  with no fd left: %d accepted, %d listener errors (%s)\n",
          echo.accepted - accepted, lerr.count, ms_err_name(lerr.last_status));
  CHECK_INT(echo.accepted, accepted);

  /* Room again: the listener serves the next client. */
  CHECK_INT(setrlimit(RLIMIT_NOFILE, &old), 0);
  int c2 = tcp_socket_to(port);
  CHECK(c2 >= 0);
  CHECK_INT(send(c2, "pong", 4, 0), 4);
  ssize_t n = echo_back(loop, c2, buf, 4);
  fprintf(stderr, "  after: %zd bytes echoed\n", n);
  CHECK_INT(n, 4);
  CHECK(memcmp(buf, "pong", 4) == 0);

  close(c0);
  close(c1);
  close(c2);
  tu_sleep_loop(loop, 100);
  tu_close_listener(loop, l, 5000);
  CHECK(tu_drain(loop, 5000));
  CHECK_INT(ms_delete(ms), 0);
  return mst_fail ? 1 : 0;
}

static void test_fd_exhaustion(void) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(child());
  int st = 0;
  CHECK(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"fd_exhaustion", test_fd_exhaustion},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("accept");
}
