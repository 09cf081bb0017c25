import NIOCore

/// A connection whose writes wait for the loop's next flush pass.
protocol Flushable: AnyObject {
    /// Hands the connection's queued writes to the kernel (one writev).
    func flushNow()
}

/// Flushes every connection of one event loop that wrote since the last pass, in one task: the writes of a batch, a
/// replay, a control reply, or a connection's live events after its first of a loop tick are flushed once per
/// connection, by one task instead of one task per connection. (A connection's first live event of a tick is flushed
/// as it is written; see `LoopRouter.deliver`.) The pass never waits for more: an overloaded loop's ticks grow long
/// by themselves, and a connection that watches several executions then gets several frames per tick, which share
/// one write. (A pass that waited on purpose under load was measured and dropped: with 10,000 subscribers on 100
/// channels a connection gets a frame every 40 ms or so, so a wait long enough to matter cost more latency than the
/// gain; see README "Benchmarks".) Confined to its event loop.
final class LoopFlusher {
    let eventLoop: EventLoop
    private var dirty: [Flushable] = []
    private var spare: [Flushable] = []
    private var scheduled = false

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Queues `connection` for the next pass (the caller remembers that it is queued).
    func schedule(_ connection: Flushable) {
        dirty.append(connection)
        guard !scheduled else { return }
        scheduled = true
        eventLoop.assumeIsolated().execute { self.pass() }
    }

    /// Flushes every queued connection now (the queued task then finds less or nothing to do).
    func pass() {
        scheduled = false
        swap(&dirty, &spare)
        for connection in spare { connection.flushNow() }
        spare.removeAll(keepingCapacity: true)
    }
}
