import Testing
@testable import MultiServer

/// README.md, "Swift quick start", kept compiling. The body is the snippet as
/// printed, except that the unix socket lives in a private directory and the
/// multiserver and connection are returned for the test to finish with.
/// Keep the two in step.
func readmeSwiftQuickStart(socketDirectory dir: String) async throws -> (MultiServer, Connection) {
    let ms = try MultiServer(keys: .generate())               // app key: main SSB network
    let server = try ms.listen(["net:127.0.0.1:0~shs", "unix:\(dir)/app.sock~shs"]) { conn in
        Task {
            for try await chunk in conn.bytes { try await conn.write(chunk) }   // echo
            try? await conn.shutdownWrite()
        }
    }
    print(server.address)                                      // what to advertise
    let conn = try await ms.connect(server.address)            // tries each ; alternative
    try await conn.write(Array("hello".utf8))
    return (ms, conn)
}

/// README.md, "Swift quick start", the authorization example (`friends` is
/// given there in a comment).
func readmeSwiftAuthorization(friends: [[UInt8]: String]) throws -> (MultiServer, Listener) {
    let guarded = MultiServer(authorization: { remoteKey in
        guard let name = friends[remoteKey] else { return .refuse }   // hangs up before msg4
        return .accept(name)                                           // rides on the connection
    })
    let door = try guarded.listen(["net:127.0.0.1:0~shs"]) { conn in
        let name = conn.authorization as? String ?? "?"
        Task { try await conn.write(Array("hi \(name)".utf8)); try await conn.shutdownWrite() }
    }
    return (guarded, door)
}

@Suite(.timeLimit(.minutes(1)))
struct ReadmeSnippetTests {
    @Test func swiftQuickStartRuns() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let (ms, conn) = try await readmeSwiftQuickStart(socketDirectory: dir)
        try await conn.shutdownWrite()
        #expect(try await readAll(conn) == Array("hello".utf8))
        await ms.shutdown()
        #expect(ms.loop.deleteStatus.withLock { $0 } == 0)
    }

    @Test func swiftAuthorizationExampleRuns() async throws {
        let client = MultiServer()
        let (ms, listener) = try readmeSwiftAuthorization(friends: [client.publicKey: "alice"])
        let conn = try await client.connect(listener.address)
        #expect(try await readAll(conn) == Array("hi alice".utf8))
        await conn.close()
        let stranger = MultiServer()
        await #expect { _ = try await stranger.connect(listener.address) } throws: {
            MultiServerError.handshakeFailed ~= $0
        }
        await stranger.shutdown()
        await client.shutdown()
        await ms.shutdown()
    }
}
