internal import CMultiServer

/// Who can reach an address: a peer on this machine, on the local network,
/// or anywhere.
public enum Scope: Sendable, Hashable, CaseIterable {
    /// This machine: unix sockets and loopback addresses.
    case device
    /// Private networks: RFC 1918, link-local and unique-local addresses.
    case local
    /// Everything else.
    case `public`

    var cValue: Int32 {
        switch self {
        case .device: return 1  // MS_SCOPE_DEVICE
        case .local: return 3   // MS_SCOPE_LOCAL
        case .public: return 4  // MS_SCOPE_PUBLIC
        }
    }
}

extension Listener {
    /// What a peer in `scope` can dial: one address per stack that serves
    /// the scope, each with its transforms and the server's key. A listener
    /// on `0.0.0.0` or `::` expands to this machine's interface addresses of
    /// that scope, read on each call (never `0.0.0.0`). Per-stack options
    /// `listen.scopes` and `listen.external` refine it.
    /// The corresponding C function is `ms_listener_addresses`.
    public func addresses(scope: Scope) -> [String] {
        let core = self.core
        let value = scope.cValue
        return core.loop.sync { core.addressesOnLoop(value) } ?? []
    }
}

/// A snapshot of a multiserver's counters (see ``MultiServer/stats``).
public struct Stats: Sendable, Hashable {
    /// Accepted connections open now.
    public var connections: UInt64
    /// Accepted connections still in their handshakes now.
    public var handshakes: UInt64
    /// Connections handed to the application, ever.
    public var accepted: UInt64
    /// Closed at once by `limits.max_connections`.
    public var refusedConnections: UInt64
    /// Closed at once by `limits.max_handshakes`.
    public var refusedHandshakes: UInt64
    /// Closed at once by `limits.max_handshakes_per_source`.
    public var refusedPerSource: UInt64
    /// Handshakes of accepted connections that failed.
    public var handshakeFailures: UInt64
    /// Streams ended by the idle timeout.
    public var idleTimeouts: UInt64
}

extension MultiServer {
    /// The counters of this multiserver: connections, pending handshakes,
    /// refusals by limit. The corresponding C function is `ms_stats`.
    public var stats: Stats {
        let loop = self.loop
        let raw: Stats? = loop.sync {
            var st = ms_stats_t()
            ms_stats(loop.ms, &st)
            return Stats(connections: st.connections, handshakes: st.handshakes,
                         accepted: st.accepted, refusedConnections: st.refused_connections,
                         refusedHandshakes: st.refused_handshakes,
                         refusedPerSource: st.refused_per_source,
                         handshakeFailures: st.handshake_failures, idleTimeouts: st.idle_timeouts)
        }
        return raw ?? Stats(connections: 0, handshakes: 0, accepted: 0, refusedConnections: 0,
                            refusedHandshakes: 0, refusedPerSource: 0, handshakeFailures: 0,
                            idleTimeouts: 0)
    }
}
