/*
 * multiserver — command-line front end (a public contract: commands, flags
 * and output lines stay stable; new ones are added, none renamed).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
  fputs(
      "usage:\n"
      "  multiserver serve [--echo | --sink] [--keys FILE] [--app-key BASE64]\n"
      "                    [--authorize @ID]... [--timeout MS] [--allow-remote-noauth]\n"
      "                    [--allow-loopback-noauth] [--opt PROTO.KEY=VALUE]...\n"
      "                    [--http-root DIR] [--allow-origin ORIGIN]...\n"
      "                    [--scope device|local|public] [--stats] ADDRESS...\n"
      "      listen on every stack of every ADDRESS; print the multiaddress that\n"
      "      reaches this server as one line on stdout. --echo echoes each\n"
      "      connection, --sink discards input; with neither, the first connection\n"
      "      is bridged to stdin/stdout. --scope prints what a peer in that\n"
      "      scope can dial instead (a wildcard host becomes this machine's\n"
      "      addresses); --stats logs the counters every second on stderr.\n"
      "      --http-root DIR serves the files in DIR (GET/HEAD) to plain HTTP\n"
      "      requests on ws:// and wss:// listeners (a page that connects back).\n"
      "      --allow-origin ORIGIN (repeatable) admits only WebSocket requests\n"
      "      from these Origins (or without one); same as --opt ws.origins=A,B.\n"
      "  multiserver connect [--keys FILE] [--app-key BASE64] [--timeout MS]\n"
      "                      [--allow-remote-noauth] [--allow-loopback-noauth]\n"
      "                      [--opt PROTO.KEY=VALUE]... ADDRESS\n"
      "      pipe stdin into the stream and the stream to stdout.\n"
      "      --opt passes an option to one protocol of the stacks\n"
      "      (net.connect_timeout_ms, shs.handshake_timeout_ms, noauth.uids,\n"
      "      gzip.max_bytes, gzip.max_ratio, gzip.level,\n"
      "      onion.proxy, onion.user, onion.password, onion.timeout_ms,\n"
      "      ws.origin, ws.protocols, ws.max_message, ws.handshake_timeout_ms).\n"
      "  multiserver address [--listen] ADDRESS\n"
      "      print the canonical form of ADDRESS, or exit 2 with the reason.\n"
      "  multiserver keygen [--out FILE]\n"
      "      make an ed25519 key pair (Scuttlebutt secret file) and print its id.\n"
      "  multiserver shs1-test server K_HEX SK_HEX PK_HEX\n"
      "  multiserver shs1-test client K_HEX PK_HEX\n"
      "      the shs1-testsuite stdio contract.\n",
      f);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  /* A peer or a reader that went away is an error to report, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  if (strcmp(cmd, "serve") == 0) return cli_serve(argc - 1, argv + 1);
  if (strcmp(cmd, "connect") == 0) return cli_connect(argc - 1, argv + 1);
  if (strcmp(cmd, "address") == 0) return cli_address(argc - 1, argv + 1);
  if (strcmp(cmd, "keygen") == 0) return cli_keygen(argc - 1, argv + 1);
  if (strcmp(cmd, "shs1-test") == 0) return cli_shs1_test(argc - 1, argv + 1);
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "multiserver: unknown command \"%s\"\n", cmd);
  usage(stderr);
  return 2;
}
