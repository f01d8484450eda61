// A two-peer chat over the secret handshake: each line typed on one side is
// printed on the other. One peer serves, the other connects to the address
// it printed (which carries the server's public key: the client checks it).
import MultiServer

/// Prints what the peer sends, line by line as it arrives.
func printIncoming(_ conn: Connection, prefix: String) async throws {
    for try await chunk in conn {
        print(prefix + String(decoding: chunk, as: UTF8.self), terminator: "")
    }
    print("[\(prefix)left]")
}

/// Sends each line of standard input until its end, then ends the write side.
func sendStandardInput(_ conn: Connection) async throws {
    let lines = AsyncStream<String> { continuation in
        Task.detached {
            while let line = readLine() { continuation.yield(line) }
            continuation.finish()
        }
    }
    for await line in lines { try await conn.write((line + "\n").utf8) }
    try await conn.shutdownWrite()
}

/// Both directions of one chat connection, until both have ended.
func chat(over conn: Connection) async throws {
    let peer = conn.remoteID.map { String($0.prefix(12)) + "…" } ?? "peer"
    async let incoming: Void = printIncoming(conn, prefix: "\(peer)> ")
    try await sendStandardInput(conn)
    try await incoming
}

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "serve":
    let address = arguments.dropFirst().first ?? "net:127.0.0.1:0~shs"
    try await MultiServer.withMultiServer(keys: .generate()) { ms in
        try await ms.withListener([address]) { conn in
            try await chat(over: conn)
        } body: { listener in
            print("chat: connect with\n  swift run chat connect '\(listener.address)'")
            try await Task.sleep(for: .seconds(3600))
        }
    }

case "connect":
    guard let address = arguments.dropFirst().first else {
        print("usage: chat connect ADDRESS")
        break
    }
    try await MultiServer.withMultiServer(keys: .generate()) { ms in
        try await ms.withConnection(to: address) { conn in try await chat(over: conn) }
    }

case "demo":
    // Alice serves, Bob connects; each says two things and hangs up.
    let alice = try KeyPair.generate()
    let bob = try KeyPair.generate()
    try await MultiServer.withMultiServer(keys: alice) { aliceSide in
        try await aliceSide.withListener(["net:127.0.0.1:0~shs"]) { conn in
            precondition(conn.remoteKey == bob.publicKey, "shs told alice who called")
            try await conn.write("alice: hi bob\n".utf8)
            for try await chunk in conn { print("alice got: " + String(decoding: chunk, as: UTF8.self), terminator: "") }
            try await conn.write("alice: bye\n".utf8)
            try await conn.shutdownWrite()
        } body: { listener in
            try await MultiServer.withMultiServer(keys: bob) { bobSide in
                try await bobSide.withConnection(to: listener.address) { conn in
                    precondition(conn.remoteKey == alice.publicKey)
                    try await conn.write("bob: hello alice\n".utf8)
                    try await conn.shutdownWrite()
                    for try await chunk in conn { print("bob got: " + String(decoding: chunk, as: UTF8.self), terminator: "") }
                }
            }
        }
    }
    print("chat demo: done")

default:
    print("usage: chat serve [ADDRESS] | chat connect ADDRESS | chat demo")
}
