import Testing
@testable import MultiServer
#if canImport(Glibc)
import Glibc
#endif

/// Issue 10, Swift part: one test per defect, each failing before its fix.
@Suite(.timeLimit(.minutes(2)))
struct Issue10Tests {
    /// A `for … { break }` and a second loop: the second continues where the
    /// first stopped, nothing is dropped.
    @Test func readingTwiceLosesNothing() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { conn in
            Task {
                try await conn.write(Array("first".utf8))
                try await Task.sleep(for: .milliseconds(100))
                try await conn.write(Array("second".utf8))
                try await conn.shutdownWrite()
            }
        }
        let conn = try await client.connect(listener.address)
        var first: [UInt8] = []
        for try await chunk in conn.bytes { first = chunk; break }
        try await Task.sleep(for: .milliseconds(400))  // "second" arrives meanwhile
        var rest: [UInt8] = []
        for try await chunk in conn.bytes { rest += chunk }
        #expect(String(decoding: first, as: UTF8.self) == "first")
        #expect(String(decoding: rest, as: UTF8.self) == "second")
        await client.shutdown()
        await server.shutdown()
    }

    /// 200 concurrent 1 MiB writes to a peer that never reads: the C write
    /// queue stays near its high-water mark instead of taking all 200 MiB.
    @Test func writesWaitForTheHighWaterMark() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }  // never reads
        let conn = try await client.connect(listener.address)
        let chunk = [UInt8](repeating: 0x42, count: 1 << 20)
        let writers = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<200 { group.addTask { try? await conn.write(chunk) } }
            }
        }
        try await Task.sleep(for: .milliseconds(1500))
        let queued = conn.core.loop.sync { conn.core.writeQueueSizeOnLoop() } ?? 0
        #expect(queued <= 4 << 20, "C write queue holds \(queued >> 20) MiB")
        await conn.close()
        await writers.value
        await client.shutdown()
        await server.shutdown()
    }

    /// Equality is by code, as the pattern match is.
    @Test func equalityIsByCode() {
        let e = MultiServerError(rawValue: MultiServerError.handshakeFailed.rawValue,
                                 reason: "shs: msg3 (client auth)", operation: .connect)
        #expect(e == .handshakeFailed)
        #expect(MultiServerError.handshakeFailed ~= e)
        #expect(Set([e, .handshakeFailed]).count == 1)
        #expect(e != .timedOut)
    }

    /// A cancelled read throws the same error as a cancelled connect.
    @Test func cancelledReadThrowsCanceled() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0"]) { _ in }  // never writes
        let conn = try await client.connect(listener.address)
        let reader = Task { for try await _ in conn.bytes {} }
        try await Task.sleep(for: .milliseconds(200))
        reader.cancel()
        let result = await reader.result
        if case .failure(let error) = result {
            #expect(MultiServerError.canceled ~= error, "\(error)")
        } else {
            Issue.record("a cancelled read ended cleanly")
        }
        await client.shutdown()
        await server.shutdown()
    }

    /// A write blocked by a peer that does not read returns soon after its
    /// task is cancelled.
    @Test func cancelledWriteReturns() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0"]) { _ in }
        let conn = try await client.connect(listener.address)
        let big = [UInt8](repeating: 1, count: 64 << 20)
        let writer = Task { try await conn.write(big) }
        try await Task.sleep(for: .milliseconds(300))
        let start = ContinuousClock.now
        writer.cancel()
        let result = await writer.result
        #expect(ContinuousClock.now - start < .seconds(1))
        if case .failure(let error) = result {
            #expect(MultiServerError.canceled ~= error, "\(error)")
        } else {
            Issue.record("the write completed")
        }
        await client.shutdown()
        await server.shutdown()
    }

    /// A shutdown queued behind a blocked write returns soon after its task
    /// is cancelled, as the write does; listen after shutdown says why.
    @Test func cancelledShutdownReturns() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0"]) { _ in }
        let conn = try await client.connect(listener.address)
        let big = [UInt8](repeating: 1, count: 64 << 20)
        let writer = Task { try await conn.write(big) }
        try await Task.sleep(for: .milliseconds(200))
        let shutter = Task { try await conn.shutdownWrite() }
        try await Task.sleep(for: .milliseconds(200))
        let start = ContinuousClock.now
        shutter.cancel()
        let result = await shutter.result
        #expect(ContinuousClock.now - start < .seconds(1))
        if case .failure(let error) = result {
            #expect(MultiServerError.canceled ~= error, "\(error)")
        } else {
            Issue.record("the shutdown completed")
        }
        _ = await writer.result
        await client.shutdown()
        await server.shutdown()
        do {
            _ = try server.listen(["net:127.0.0.1:0"]) { _ in }
            Issue.record("listened after shutdown")
        } catch let error as MultiServerError {
            #expect(error == .closed)
            #expect(error.reason == "the multiserver was shut down")
        }
    }

    /// The authorize hook's task is cancelled once its handshake is over
    /// (here: timed out).
    @Test func authorizeTaskIsCancelledWhenTheHandshakeEnds() async throws {
        let sawCancel = Signal()
        let server = MultiServer(handshakeTimeout: .milliseconds(300), authorize: { _ in
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
            sawCancel.fire()
            return true
        })
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }
        _ = try? await client.connect(listener.address)
        let watchdog = Task { try await Task.sleep(for: .seconds(3)); sawCancel.fire() }
        let start = ContinuousClock.now
        await sawCancel.wait()
        watchdog.cancel()
        #expect(ContinuousClock.now - start < .seconds(2))
        await client.shutdown()
        await server.shutdown()
    }

    /// The secret key is not a plain array anyone can reflect on.
    @Test func secretKeyIsNotAnArray() throws {
        let kp = try KeyPair.generate()
        let arrays = Mirror(reflecting: kp).children.filter { ($0.value as? [UInt8])?.count == 64 }
        #expect(arrays.isEmpty)
    }
}

#if os(Linux)
/// The inodes of the TCP sockets whose local or remote port is `port`
/// (/proc/self/net/tcp and tcp6), so that counting them in /proc/self/fd
/// sees this test's sockets only, whatever other tests run meanwhile.
func tcpSocketInodes(port: Int) -> Set<String> {
    var inodes: Set<String> = []
    let hex = String(port, radix: 16, uppercase: true)
    let hexPort = String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        guard let file = fopen(table, "r") else { continue }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        while getline(&line, &cap, file) > 0 {
            let fields = String(cString: line!).split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 9, fields[0] != "sl" else { continue }
            let local = fields[1].split(separator: ":").last, remote = fields[2].split(separator: ":").last
            if local == Substring(hexPort) || remote == Substring(hexPort) { inodes.insert(String(fields[9])) }
        }
        free(line)
    }
    return inodes
}

/// How many of this process's fds are sockets with one of these inodes.
func openFDs(amongSockets inodes: Set<String>) -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        var target = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/" + name, &target, target.count - 1)
        guard n > 0 else { continue }
        let link = String(decoding: target.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if link.hasPrefix("socket:["), inodes.contains(String(link.dropFirst(8).dropLast())) { count += 1 }
    }
    return count
}

extension Issue10Tests {
    /// The README's echo (scoped): each served connection is closed when its
    /// handler returns, the listener and the multiserver when their scopes
    /// end, and a handler that captures its multiserver does not keep it
    /// alive. The old README handler (a Task, no close) left 21 fds open
    /// after 20 clients.
    @Test func scopedServerFreesItsConnections() async throws {
        weak var weakServer: MultiServer?
        var port = 0
        var inodes: Set<String> = []
        try await MultiServer.withMultiServer(keys: .generate()) { ms in
            weakServer = ms
            try await ms.withListener(["net:127.0.0.1:0~shs"]) { conn in
                _ = ms.id  // captures its multiserver
                for try await chunk in conn { try await conn.write(chunk) }
                try await conn.shutdownWrite()
            } body: { server in
                port = Issue10Tests.port(of: server.address)
                try await MultiServer.withMultiServer { client in
                    for i in 0..<20 {
                        try await client.withConnection(to: server.address) { conn in
                            try await conn.write("ping \(i)".utf8)
                            try await conn.shutdownWrite()
                            var reply: [UInt8] = []
                            for try await chunk in conn { reply += chunk }
                            #expect(reply == Array("ping \(i)".utf8))
                        }
                    }
                }
                // Every served connection closed by now (or in a moment):
                // only the listening socket is left.
                var open = Int.max
                for _ in 0..<50 {
                    inodes.formUnion(tcpSocketInodes(port: port))
                    open = openFDs(amongSockets: inodes)
                    if open <= 1 { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(open == 1, "\(open) sockets open on port \(port) while serving")
            }
            // The listener is closed.
            #expect(openFDs(amongSockets: inodes.union(tcpSocketInodes(port: port))) == 0)
        }
        #expect(openFDs(amongSockets: inodes.union(tcpSocketInodes(port: port))) == 0)
        #expect(weakServer == nil, "the multiserver outlived its scope")
    }

    static func port(of address: String) -> Int {
        let transport = address.split(separator: "~").first.map(String.init) ?? address
        return transport.split(separator: ":").last.flatMap { Int($0) } ?? 0
    }
}
#endif
