#if canImport(Glibc)
import Glibc
#endif
import HubCore

/// A small blocking HTTP/1.1 client that posts signed progress reports to a hub (for `hub simulate`).
final class IngestClient {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    enum Failure: Error, CustomStringConvertible {
        case connect(String)
        case io(String)
        var description: String {
            switch self {
            case .connect(let s): return "cannot connect: \(s)"
            case .io(let s): return "connection failed: \(s)"
            }
        }
    }

    let host: String
    let port: Int
    let signer: EngineSignature
    private var fd: Int32 = -1

    init(url: String, secret: String) throws {
        // http://host:port only; the simulator talks to a hub on the local network.
        var rest = Substring(url)
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        let parts = rest.split(separator: ":")
        host = parts.first.map(String.init) ?? "127.0.0.1"
        port = parts.count > 1 ? Int(parts[1]) ?? 80 : 80
        signer = EngineSignature(secret: Array(secret.utf8), maxSkewSeconds: 300)
    }

    deinit { if fd >= 0 { close(fd) } }

    private func connectIfNeeded() throws {
        guard fd < 0 else { return }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host == "localhost" ? "127.0.0.1" : host, String(port), &hints, &result) == 0, let info = result else {
            throw Failure.connect("cannot resolve \(host)")
        }
        defer { freeaddrinfo(result) }
        let s = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard s >= 0 else { throw Failure.connect("socket() failed") }
        guard Glibc.connect(s, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            close(s)
            throw Failure.connect("\(host):\(port) refused the connection")
        }
        fd = s
    }

    private func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    /// Posts one body, signed with the current time; reconnects once if a kept-alive connection went away.
    func post(_ body: String, now: Int64) throws -> Response {
        do {
            return try attempt(body, now: now)
        } catch {
            disconnect()
            return try attempt(body, now: now)
        }
    }

    private func attempt(_ body: String, now: Int64) throws -> Response {
        try connectIfNeeded()
        let bytes = Array(body.utf8)
        let request = "POST /v1/jobs/progress HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(bytes.count)\r\nX-Hub-Timestamp: \(now)\r\n"
            + "X-Hub-Signature: \(signer.header(timestamp: now, body: bytes))\r\n\r\n"
        try sendAll(Array(request.utf8) + bytes)
        return try readResponse()
    }

    private func sendAll(_ data: [UInt8]) throws {
        var offset = 0
        while offset < data.count {
            let n = data[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure.io("send failed") }
            offset += n
        }
    }

    private var buffer: [UInt8] = []

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw Failure.io("connection closed") }
        buffer += chunk[0..<n]
    }

    private func readResponse() throws -> Response {
        let separator: [UInt8] = [13, 10, 13, 10]
        var end: Int?
        while end == nil {
            if buffer.count >= 4 {
                for i in 0...(buffer.count - 4) where Array(buffer[i..<i + 4]) == separator {
                    end = i
                    break
                }
            }
            if end == nil { try fill() }
        }
        let head = String(decoding: buffer[0..<end!], as: UTF8.self)
        buffer.removeFirst(end! + 4)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.removeFirst().split(separator: " ")
        let status = statusLine.count > 1 ? Int(statusLine[1]) ?? 0 : 0
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...]).trimmingCharacters(in: " ")
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        while buffer.count < length { try fill() }
        let body = String(decoding: buffer[0..<length], as: UTF8.self)
        buffer.removeFirst(length)
        if headers["connection"]?.lowercased() == "close" { disconnect() }
        return Response(status: status, headers: headers, body: body)
    }
}
