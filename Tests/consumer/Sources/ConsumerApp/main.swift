import MultiServer

// The README's quick start, as a user's program.
try await MultiServer.withMultiServer(keys: .generate()) { ms in
    try await ms.withListener(["net:127.0.0.1:0~shs"]) { conn in
        for try await chunk in conn { try await conn.write(chunk) }
        try await conn.shutdownWrite()
    } body: { server in
        try await ms.withConnection(to: server.address) { conn in
            try await conn.write("hello from a consumer".utf8)
            try await conn.shutdownWrite()
            var reply: [UInt8] = []
            for try await chunk in conn { reply += chunk }
            print(String(decoding: reply, as: UTF8.self))
        }
    }
}
