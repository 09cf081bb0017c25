import NIOConcurrencyHelpers

/// Caps concurrent streams per workspace. The embedded limiter counts in this process; a Redis-backed one
/// counts across hubs.
public protocol StreamLimiter: Sendable {
    /// Takes a place for `workspace`, or returns false when all `limit` places are taken.
    func acquire(_ workspace: String) -> Bool
    func release(_ workspace: String)
}

public final class LocalStreamLimiter: StreamLimiter {
    private let counts = NIOLockedValueBox([String: Int]())
    public let limit: Int

    public init(limit: Int) {
        self.limit = limit
    }

    public func acquire(_ workspace: String) -> Bool {
        counts.withLockedValue { counts in
            let n = counts[workspace, default: 0]
            guard n < limit else { return false }
            counts[workspace] = n + 1
            return true
        }
    }

    public func release(_ workspace: String) {
        counts.withLockedValue { counts in
            let n = counts[workspace, default: 0] - 1
            counts[workspace] = n > 0 ? n : nil
        }
    }

    public func count(_ workspace: String) -> Int { counts.withLockedValue { $0[workspace, default: 0] } }
}
