internal import CMultiServer

/// A plain HTTP request that reached a `ws://` or `wss://` listener (one
/// without `Upgrade: websocket`): how a server delivers the page that
/// connects back to it.
public struct HTTPRequest: Sendable {
    /// "GET", "HEAD", …
    public let method: String
    /// The request target as sent ("/index.html?x=1").
    public let target: String
    /// The target up to `?`, not percent-decoded.
    public let path: String
    /// The peer, as a transport section ("net:127.0.0.1:50123").
    public let peer: String
    let headerValues: [String: String]
    /// The first header of that name (case-insensitive), among Host, Origin,
    /// User-Agent, Accept, Accept-Encoding, Referer.
    public func header(_ name: String) -> String? { headerValues[name.lowercased()] }
}

/// The answer to an ``HTTPRequest``.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String?
    public var body: [UInt8]
    public init(status: Int = 200, contentType: String? = nil, body: [UInt8] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }
    /// 200 with an HTML page.
    public static func html(_ text: String) -> HTTPResponse {
        HTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: Array(text.utf8))
    }
    public static let notFound = HTTPResponse(status: 404, contentType: "text/plain", body: Array("not found\n".utf8))
}

/// Holds the Swift closure for the C handler. `@unchecked Sendable`: the
/// closure is itself `@Sendable` and immutable; the box is only read by the
/// C callback on the loop thread.
final class HTTPHandlerBox: @unchecked Sendable {
    let handler: @Sendable (HTTPRequest) -> HTTPResponse
    init(_ handler: @escaping @Sendable (HTTPRequest) -> HTTPResponse) { self.handler = handler }
}

private func httpCallback(_ req: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let req, let arg else { return }
    let box = Unmanaged<HTTPHandlerBox>.fromOpaque(arg).takeUnretainedValue()
    func text(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
    var headers: [String: String] = [:]
    for name in ["Host", "Origin", "User-Agent", "Accept", "Accept-Encoding", "Referer"] {
        if let v = ms_http_request_header(req, name) { headers[name.lowercased()] = String(cString: v) }
    }
    let request = HTTPRequest(method: text(ms_http_request_method(req)),
                              target: text(ms_http_request_target(req)),
                              path: text(ms_http_request_path(req)),
                              peer: text(ms_http_request_peer(req)),
                              headerValues: headers)
    let response = box.handler(request)
    let status = Int32(clamping: (200...599).contains(response.status) ? response.status : 500)
    _ = response.body.withUnsafeBytes { raw in
        ms_http_respond(req, status, response.contentType, raw.baseAddress, raw.count)
    }
}

extension MultiServer {
    /// Answer plain HTTP requests on every `ws://`/`wss://` listener of this
    /// multiserver (one request per connection). The closure runs on the
    /// loop thread and must answer at once; `nil` removes the handler (such
    /// requests then get 400). The corresponding C function is
    /// `ms_ws_set_http_handler`.
    public func setHTTPHandler(_ handler: (@Sendable (HTTPRequest) -> HTTPResponse)?) throws {
        let box = handler.map(HTTPHandlerBox.init)
        let loop = self.loop
        let rc: Int32? = loop.sync {
            let arg = box.map { Unmanaged.passUnretained($0).toOpaque() }
            return ms_ws_set_http_handler(loop.ms, arg == nil ? nil : httpCallback, arg)
        }
        guard let rc else { throw MultiServerError.closed }
        guard rc == 0 else { throw MultiServerError(rawValue: rc, reason: "cannot set the HTTP handler") }
        // Swapped after the C side holds the new one: the old box is no longer called.
        httpHandler.withLock { $0 = box }
    }
}

extension Connection {
    /// Bytes received (delivered to the reader) and sent (written), as the
    /// application sees them, above every transform; kept after close. How
    /// long connecting took is in ``metadata``: `time.connect_ms`,
    /// `time.<transform>_ms`, `time.total_ms`.
    /// The corresponding C function is `ms_stream_bytes`.
    public var byteCounts: (received: UInt64, sent: UInt64) {
        let core = self.core
        let counts = core.loop.sync { () -> [UInt64] in
            let c = core.byteCountsOnLoop()
            return [c.0, c.1]
        } ?? [0, 0]
        return (counts[0], counts[1])
    }
}
