/* Field parsing for the built-in transport sections `net:HOST:PORT` and
 * `unix:PATH` (spec/address.md), shared by the transports, the noauth
 * device-scope check and the advertise code. Pure: no I/O, no resolving. */
#ifndef MS_NETADDR_H
#define MS_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/un.h>

#include "multiserver_plugin.h"

/* Buffer size (NUL included) that holds any host ms__net_parse accepts:
 * a 253-byte DNS name plus a trailing dot, or an IPv6 literal with a zone. */
#define MS__NET_HOST_MAX 256

/* Longest unix socket path (bytes, excluding the NUL): sun_path minus its
 * terminator, 107 on Linux, 103 on the BSDs and macOS. */
#define MS__UNIX_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* net:HOST:PORT. The LAST field is the port; the fields before it, joined
 * with ':', are the host, so the bare IPv6 form net:fe80::1:8008 works.
 * A bracketed IPv6 host (net:[::1]:8008) is accepted and the brackets are
 * stripped. HOST must be a DNS-like name (letters, digits, '-', '.', '_'),
 * an IPv4 literal, or an IPv6 literal (optionally with a %zone). PORT is
 * decimal, 1-65535; 0 ("any free port") only when listen != 0.
 * host (hostlen bytes, MS__NET_HOST_MAX suffices) and port may be NULL to
 * validate only. Returns 0, MS_EADDRESS with a one-line reason ("net: …"),
 * or MS_EINVAL for a NULL sec. */
int ms__net_parse(const ms_section_t *sec, int listen, char *host,
                  size_t hostlen, int *port, char *reason, size_t reason_len);

/* Canonical section text "net:HOST:PORT". IPv6 hosts are printed bare
 * (net:fe80::1:8008) in inet_ntop's normal form, brackets removed; ':' in
 * the host is a field separator by design so it is not escaped (any '!',
 * ';' or '~', which no valid host has, would be). snprintf semantics. */
size_t ms__net_format(const char *host, int port, char *buf, size_t size);

/* true for the literals 127.0.0.0/8 and ::1 (also ::ffff:127.x.x.x and
 * bracketed forms). Never for a name, "localhost" included: device scope is
 * not decided from a host name. Does not resolve anything. */
bool ms__host_is_loopback(const char *host);

/* MS_SCOPE_LOOPBACK, MS_SCOPE_LOCAL (RFC 1918, link-local, ULA literals)
 * or MS_SCOPE_PUBLIC (other literals and every name). */
int ms__host_scope(const char *host);

/* unix:PATH — exactly one non-empty field (a ':' in the path arrives
 * unescaped from "!:"), at most MS__UNIX_PATH_MAX bytes, no NUL. path
 * (pathlen bytes) may be NULL to validate only. Returns 0, MS_EADDRESS with
 * a reason ("unix: …"), or MS_EINVAL for a NULL sec. */
int ms__unix_parse(const ms_section_t *sec, char *path, size_t pathlen,
                   char *reason, size_t reason_len);

#endif /* MS_NETADDR_H */
