/// Where the Redis is and how to talk to it: `redis://[[user]:password@]host[:port][/db][?prefix=…]` plus flags.
public struct RedisConfiguration: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 6379
    /// ACL user (Redis 6+); nil authenticates as the default user.
    public var username: String?
    public var password: String?
    public var database = 0
    /// Put in front of every key and channel name, so several deployments can share one Redis.
    public var keyPrefix = ""
    /// Seconds a command may wait for its reply before the connection counts as dead and is reconnected.
    public var commandTimeoutSeconds = 3.0
    /// Reconnection delays: exponential from the first to the cap, each with random jitter.
    public var reconnectInitialMilliseconds = 50
    public var reconnectMaxMilliseconds = 2000
    /// Seconds an SSE stream's place in its workspace's cluster-wide count outlives its hub's last renewal.
    public var leaseTTLSeconds = 15.0

    public init() {}

    public struct URLError: Error, CustomStringConvertible, Sendable, Equatable {
        public let message: String
        public var description: String { message }
    }

    /// Parses `redis://[[user]:password@]host[:port][/db][?prefix=…]`.
    public init(url: String) throws(URLError) {
        var rest = Substring(url)
        guard rest.hasPrefix("redis://") else {
            throw URLError(message: "redis URL '\(url)' must start with redis:// (TLS is not supported)")
        }
        rest = rest.dropFirst("redis://".count)
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                switch kv[0] {
                case "prefix": keyPrefix = kv.count > 1 ? Self.percentDecoded(kv[1]) ?? "" : ""
                default: throw URLError(message: "redis URL parameter '\(kv[0])' is unknown (known: prefix)")
                }
            }
            rest = rest[..<q]
        }
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw URLError(message: "redis URL database '\(db)' is not a number") }
                database = n
            }
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = userinfo[..<colon]
                username = user.isEmpty ? nil : Self.percentDecoded(user)
                password = Self.percentDecoded(userinfo[userinfo.index(after: colon)...])
            } else if !userinfo.isEmpty {
                password = Self.percentDecoded(userinfo)
            }
        }
        guard !rest.isEmpty else { throw URLError(message: "redis URL '\(url)' has no host") }
        if rest.hasPrefix("[") {
            // [IPv6]:port
            guard let close = rest.firstIndex(of: "]") else { throw URLError(message: "redis URL host '\(rest)' is malformed") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") { try setPort(rest.dropFirst()) }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            try setPort(rest[rest.index(after: colon)...])
        } else {
            host = String(rest)
        }
        guard !host.isEmpty else { throw URLError(message: "redis URL '\(url)' has no host") }
    }

    private mutating func setPort(_ s: Substring) throws(URLError) {
        guard let p = Int(s), (1...65535).contains(p) else { throw URLError(message: "redis URL port '\(s)' is not 1...65535") }
        port = p
    }

    private static func percentDecoded(_ s: Substring) -> String? {
        var out: [UInt8] = []
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            if b == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16)
                else { return nil }
                out.append(v)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `host:port/db`, for logs (never the password).
    public var endpoint: String { "\(host):\(port)/\(database)" }

    /// Checks every setting; the error names it.
    public func validate() throws(RedisConfiguration.URLError) {
        guard (0...15_000).contains(database) else { throw URLError(message: "redis database must be 0 or more") }
        guard commandTimeoutSeconds > 0, commandTimeoutSeconds <= 3600 else {
            throw URLError(message: "redis-timeout must be more than 0 and at most 3600 seconds")
        }
        guard leaseTTLSeconds >= 1, leaseTTLSeconds <= 86400 else {
            throw URLError(message: "lease-ttl must be at least 1 second and at most 86400")
        }
        guard keyPrefix.utf8.count <= 64 else { throw URLError(message: "redis prefix must be at most 64 bytes") }
    }
}
