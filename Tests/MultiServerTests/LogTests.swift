import Logging
import Testing
@testable import MultiServer

/// A LogHandler that keeps every line it gets.
struct CollectingLogHandler: LogHandler {
    struct Line: Sendable {
        let level: Logger.Level
        let message: String
        let subsystem: String
        let source: String
    }
    let lines = Locked<[Line]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let sub = event.metadata?["multiserver.subsystem"].map { "\($0)" } ?? ""
        let line = Line(level: event.level, message: "\(event.message)", subsystem: sub, source: event.source)
        lines.withLock { $0.append(line) }
    }

    var snapshot: [Line] { lines.withLock { $0 } }

    /// Waits (up to 5 s) for a line matching the predicate.
    func first(where match: (Line) -> Bool) async -> Line? {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if let line = snapshot.first(where: match) { return line }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }
}

@Suite(.timeLimit(.minutes(1)))
struct LogTests {

    @Test func refusedConnectionIsLogged() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let serverLog = CollectingLogHandler()
        var serverLogger = Logger(label: "server") { _ in serverLog }
        serverLogger.logLevel = .info
        try server.setLogger(serverLogger)
        let clientLog = CollectingLogHandler()
        try client.setLogger(Logger(label: "client") { _ in clientLog })

        let kept = Locked<[Connection]>([])
        let listener = try server.listen(["net:127.0.0.1:0~shs"],
                                         options: ["limits.max_connections": "1"]) { connection in
            kept.withLock { $0.append(connection) }
        }
        let first = try await client.connect(listener.address)
        do {
            let second = try await client.connect(listener.address)
            Issue.record("a second connection got past max_connections=1")
            await second.close()
        } catch {
            // Refused, as configured.
        }
        let refused = await serverLog.first {
            $0.level == .warning && $0.subsystem == "listen" && $0.message.contains("max_connections (1) reached")
        }
        #expect(refused != nil, "lines: \(serverLog.snapshot.map(\.message))")
        #expect(refused?.source == "MultiServer")
        // The server's logger is at .info: no debug lines reached it.
        #expect(!serverLog.snapshot.contains { $0.level == .debug })
        // The client logged its failed connect as a warning.
        let failed = await clientLog.first { $0.level == .warning && $0.subsystem == "connect" }
        #expect(failed != nil, "lines: \(clientLog.snapshot.map(\.message))")
        #expect(clientLog.snapshot.contains { $0.level == .debug && $0.message.hasPrefix("connected: ") })

        await first.close()
        for c in kept.withLock({ $0 }) { await c.close() }
        try server.setLogger(nil)
        await client.shutdown()
        await server.shutdown()
    }

    @Test func levelsMap() {
        #expect(Logger.Level(multiserver: 0) == .error)
        #expect(Logger.Level(multiserver: 1) == .warning)
        #expect(Logger.Level(multiserver: 2) == .info)
        #expect(Logger.Level(multiserver: 3) == .debug)
        #expect(Logger.Level.trace.multiserverMinimum == 3)
        #expect(Logger.Level.notice.multiserverMinimum == 2)
        #expect(Logger.Level.warning.multiserverMinimum == 1)
        #expect(Logger.Level.critical.multiserverMinimum == 0)
    }
}
