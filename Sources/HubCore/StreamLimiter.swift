import NIOConcurrencyHelpers
import NIOCore

/// One place among a workspace's concurrent streams, held until released.
public struct StreamLease: Hashable, Sendable {
    public let workspace: String
    /// Unique among the leases of every hub sharing the limiter.
    public let id: String

    public init(workspace: String, id: String) {
        self.workspace = workspace
        self.id = id
    }
}

/// Caps concurrent streams per workspace. The embedded limiter counts in this process; the Redis-backed one counts
/// across every hub that shares the Redis, with leases that expire when their hub dies.
public protocol StreamLimiter: Sendable {
    /// Takes a place for `workspace`: the lease, or nil when all places are taken. Fails (`BrokerError.unavailable`)
    /// when the count cannot be checked. Completes on `eventLoop`.
    func acquire(_ workspace: String, on eventLoop: EventLoop) -> EventLoopFuture<StreamLease?>
    func release(_ lease: StreamLease)
}

public final class LocalStreamLimiter: StreamLimiter {
    private let counts = NIOLockedValueBox((leases: [String: Int](), next: 0))
    public let limit: Int

    public init(limit: Int) {
        self.limit = limit
    }

    public func acquire(_ workspace: String, on eventLoop: EventLoop) -> EventLoopFuture<StreamLease?> {
        let lease = counts.withLockedValue { state -> StreamLease? in
            let n = state.leases[workspace, default: 0]
            guard n < limit else { return nil }
            state.leases[workspace] = n + 1
            state.next += 1
            return StreamLease(workspace: workspace, id: String(state.next))
        }
        return eventLoop.makeSucceededFuture(lease)
    }

    public func release(_ lease: StreamLease) {
        counts.withLockedValue { state in
            let n = state.leases[lease.workspace, default: 0] - 1
            state.leases[lease.workspace] = n > 0 ? n : nil
        }
    }

    public func count(_ workspace: String) -> Int { counts.withLockedValue { $0.leases[workspace, default: 0] } }
}
