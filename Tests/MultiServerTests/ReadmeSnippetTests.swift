import Testing
@testable import MultiServer

/// README.md, "Swift quick start", kept compiling. The body is the snippet as
/// printed, except that the unix socket lives in a private directory and the
/// reply is collected (besides being printed) and returned with the
/// multiserver, for the test to check. Keep the two in step.
func readmeSwiftQuickStart(socketDirectory dir: String) async throws -> (MultiServer, [UInt8]) {
    let replies = Collected<[UInt8]>()
    let ms = try await MultiServer.withMultiServer(keys: .generate()) { ms in      // app key: main SSB network
        try await ms.withListener(["net:127.0.0.1:0~shs", "unix:\(dir)/app.sock~shs"]) { conn in
            for try await chunk in conn { try await conn.write(chunk) }  // echo
            try await conn.shutdownWrite()                               // closed when this returns
        } body: { server in
            print(server.address)                                         // what to advertise
            try await ms.withConnection(to: server.address) { conn in    // tries each ; alternative
                try await conn.write("hello".utf8)
                try await conn.shutdownWrite()
                for try await reply in conn { print(String(decoding: reply, as: UTF8.self)); replies.append(reply) }
            }
        }
        return ms
    }                                                                     // everything closed here
    return (ms, replies.all.flatMap { $0 })
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
        Task { try await conn.executeThenClose { try await $0.write("hi \(name)".utf8); try await $0.shutdownWrite() } }
    }
    return (guarded, door)
}

@Suite(.timeLimit(.minutes(1)))
struct ReadmeSnippetTests {
    @Test func swiftQuickStartRuns() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let (ms, reply) = try await readmeSwiftQuickStart(socketDirectory: dir)
        #expect(reply == Array("hello".utf8))
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
