import HubCore
import HubNative
import Logging
import NIOCore

/// The per-workspace SSE cap across every hub sharing a Redis. Each hub's places in a workspace are one count under
/// one expiry (`sse:{workspace}:streams`, `sse:{workspace}:hubs`); the hub renews it every third of the TTL with one
/// call per workspace, whatever the number of its streams, and the places of a hub that died expire with it.
public final class RedisStreamLimiter: StreamLimiter, @unchecked Sendable {
    public let limit: Int
    private let broker: RedisBroker
    private let hubID: String
    private var next = 0
    /// Places this hub holds, by workspace. Confined to the broker's loop.
    private var held: [String: Set<String>] = [:]
    /// Acquisitions sent and not yet answered, by workspace: a renewal counts them (Redis applies them before it).
    private var pending: [String: Int] = [:]
    private var renewal: RepeatedTask?
    private let logger: Logger

    public init(limit: Int, broker: RedisBroker, logger: Logger) {
        self.limit = limit
        self.broker = broker
        self.logger = logger
        var rng = SystemRandomNumberGenerator()
        hubID = String(UInt64.random(in: 0...UInt64.max, using: &rng), radix: 36)
    }

    private var ttlMilliseconds: Int64 { Int64(broker.configuration.redis.leaseTTLSeconds * 1000) }

    private func keys(_ workspace: String) -> [String] {
        [broker.keys.leaseHubs(workspace), broker.keys.leaseCounts(workspace)]
    }

    public func start() {
        let every = TimeAmount.milliseconds(max(ttlMilliseconds / 3, 100))
        broker.loop.execute { [self] in
            renewal = broker.loop.scheduleRepeatedTask(initialDelay: every, delay: every) { [weak self] _ in
                self?.renew()
            }
        }
    }

    public func acquire(_ workspace: String, on eventLoop: EventLoop) -> EventLoopFuture<StreamLease?> {
        broker.loop.flatSubmit { [self] () -> EventLoopFuture<StreamLease?> in
            next += 1
            let lease = StreamLease(workspace: workspace, id: "\(hubID):\(next)")
            let arguments = [Array(String(limit).utf8), Array(hubID.utf8), Array(String(ttlMilliseconds).utf8)]
            pending[workspace, default: 0] += 1
            return broker.scripts.acquireLease.run(on: broker.commands, keys: keys(workspace), arguments: arguments)
                .always { _ in
                    self.pending[workspace, default: 1] -= 1
                    if self.pending[workspace] == 0 { self.pending[workspace] = nil }
                }
                .flatMapThrowing { reply -> StreamLease? in
                    guard case .integer(let taken) = reply else { throw BrokerError.failed("unexpected lease reply \(reply)") }
                    guard taken == 1 else { return nil }
                    self.held[workspace, default: []].insert(lease.id)
                    return lease
                }
                .flatMapErrorThrowing { error in
                    if error is BrokerError { throw error }
                    throw BrokerError.unavailable(retryAfterSeconds: 2)
                }
        }.hop(to: eventLoop)
    }

    public func release(_ lease: StreamLease) {
        broker.loop.execute { [self] in
            guard held[lease.workspace]?.remove(lease.id) != nil else { return }
            if held[lease.workspace]?.isEmpty == true { held[lease.workspace] = nil }
            // If Redis is unreachable now, the next renewal sets the right count.
            _ = broker.scripts.releaseLease.run(on: broker.commands, keys: keys(lease.workspace),
                arguments: [Array(hubID.utf8)])
        }
    }

    private func renew() {
        guard broker.commands.isReady else { return }
        for workspace in Set(held.keys).union(pending.keys) {
            let count = (held[workspace]?.count ?? 0) + (pending[workspace] ?? 0)
            let arguments = [Array(hubID.utf8), Array(String(ttlMilliseconds).utf8), Array(String(count).utf8)]
            broker.scripts.renewLeases.run(on: broker.commands, keys: keys(workspace), arguments: arguments)
                .whenFailure { [logger] error in
                    logger.debug("lease renewal failed", metadata: ["workspace": "\(workspace)", "error": "\(error)"])
                }
        }
    }
}
