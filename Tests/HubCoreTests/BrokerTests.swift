import HubCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// Collects what a subscription receives; completes a promise when it has seen `until`.
final class CollectingSink: EventSink, @unchecked Sendable {
    var seqs: [UInt64] = []
    var events: [EncodedEvent] = []
    /// Per write: (replay, flush).
    var modes: [(replay: Bool, flush: Bool)] = []
    /// The head the broker reported when the subscription started.
    var head: UInt64?
    let until: UInt64
    let done: EventLoopPromise<Void>

    init(until: UInt64, on loop: EventLoop) {
        self.until = until
        done = loop.makePromise()
        super.init()
    }

    override func write(_ event: EncodedEvent, for subscription: Subscription, replay: Bool, flush: Bool) {
        seqs.append(event.seq)
        events.append(event)
        modes.append((replay, flush))
        if event.seq == until { done.succeed() }
    }
}

final class NullSink: EventSink {
    override func write(_ event: EncodedEvent, for subscription: Subscription, replay: Bool, flush: Bool) {}
}

final class BrokerTests: XCTestCase, @unchecked Sendable {
    var group: MultiThreadedEventLoopGroup!
    let topic = TopicKey(workspace: "w1", execution: "e1")

    override func setUp() { group = MultiThreadedEventLoopGroup(numberOfThreads: 2) }
    override func tearDown() { try? group.syncShutdownGracefully() }

    func event(_ i: Int, key: String? = nil, topic: TopicKey? = nil) -> ProgressEvent {
        ProgressEvent(type: .nodeLog, topic: topic ?? self.topic, nodeKey: "n", timestamp: "2026-11-25T12:00:00Z",
            idempotencyKey: key, data: .object([("level", .string("info")), ("message", .string("line \(i)"))]))
    }

    /// Publishes `count` events in small batches on `loop`, one batch per loop task, so subscriptions on the other
    /// loop interleave with them.
    func publishAll(_ broker: Broker, count: Int, on loop: EventLoop) -> EventLoopFuture<Void> {
        let encoder = try! loop.submit { EventEncoder() }.wait()
        let box = NIOLockedValueBox((next: 0, encoder: encoder))
        @Sendable func step() -> EventLoopFuture<Void> {
            let (start, enc) = box.withLockedValue { ($0.next, $0.encoder) }
            guard start < count else { return loop.makeSucceededVoidFuture() }
            let n = min(1 + start % 4, count - start)
            box.withLockedValue { $0.next += n }
            return broker.publish((start..<start + n).map { event($0) }, on: loop, encoder: enc).flatMap { _ in step() }
        }
        return loop.flatSubmit { step() }
    }

    /// The heart of "no gap, no duplicate": subscriptions with `since` start on one loop while events are published
    /// on another; each receives exactly since+1 … N.
    func testReplayJoinsLiveWithNoGapAndNoDuplicate() throws {
        var config = MemoryBroker.Configuration()
        config.maxEventsPerExecution = 10_000  // the whole run stays in history
        let broker = MemoryBroker(configuration: config, clock: { 0 })
        let pubLoop = group.next()
        let subLoop = group.next()
        XCTAssertFalse(pubLoop === subLoop)
        let router = try subLoop.submit { LoopRouter(eventLoop: subLoop) }.wait()
        let total = 3000
        // All but the last event are published while the subscriptions start; the last one only once every
        // subscription is live, so that even a live-only subscription that started after the others has one to see.
        let published = publishAll(broker, count: total - 1, on: pubLoop)
        var sinks: [(UInt64?, CollectingSink)] = []
        var ready: [EventLoopFuture<Void>] = []
        // Subscribe repeatedly while publishing runs, each with a since somewhere behind the head.
        for i in 0..<60 {
            let (since, sink, isReady) = try subLoop.submit { () -> (UInt64?, CollectingSink, EventLoopFuture<Void>) in
                let sink = CollectingSink(until: UInt64(total), on: subLoop)
                let isReady = subLoop.makePromise(of: Void.self)
                let since: UInt64? = i % 5 == 0 ? nil : UInt64(i * 7)
                _ = router.subscribe(self.topic, since: since, sink: sink, broker: broker) { _, result in
                    sink.head = result.headSeq
                    isReady.succeed()
                }
                return (since, sink, isReady.futureResult)
            }.wait()
            sinks.append((since, sink))
            ready.append(isReady)
        }
        try published.wait()
        for r in ready { try r.wait() }
        let encoder = try pubLoop.submit { EventEncoder() }.wait()
        _ = try pubLoop.flatSubmit { broker.publish([self.event(total - 1)], on: pubLoop, encoder: encoder) }.wait()
        for (since, sink) in sinks {
            try sink.done.futureResult.wait()
            let (seqs, head) = try subLoop.submit { (sink.seqs, sink.head!) }.wait()
            guard let first = seqs.first else { return XCTFail("nothing received") }
            // Compared as a summary (first, count, in order, unique) to keep failure output readable.
            let inOrder = zip(seqs, seqs.dropFirst()).allSatisfy { $1 == $0 + 1 }
            if let since {
                // A since beyond the head (numbering the client cannot have seen) replays from the start.
                let from = since <= head ? since : 0
                XCTAssertEqual([first, UInt64(seqs.count)], [from + 1, UInt64(total) - from], "since \(since)")
            } else {
                // Live only: from some point on, every event exactly once.
                XCTAssertEqual(UInt64(seqs.count), UInt64(total) - first + 1)
            }
            XCTAssertTrue(inOrder, "gap or duplicate with since \(String(describing: since))")
        }
    }

    /// An embedded broker, a router on one loop, and one sink subscribed to `topic` that is done at seq `until`.
    func oneSubscriber(until: UInt64, since: UInt64?) throws
        -> (MemoryBroker, EventLoop, EventEncoder, LoopRouter, CollectingSink)
    {
        let broker = MemoryBroker(clock: { 0 })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        let sink = try loop.submit { () -> CollectingSink in
            let sink = CollectingSink(until: until, on: loop)
            _ = router.subscribe(self.topic, since: since, sink: sink, broker: broker) { _, _ in }
            return sink
        }.wait()
        return (broker, loop, encoder, router, sink)
    }

    func testIdempotentRetryIsStoredOnce() throws {
        let (broker, loop, encoder, _, sink) = try oneSubscriber(until: 3, since: 0)
        let first = try loop.flatSubmit { broker.publish([self.event(1, key: "a"), self.event(2, key: "b")], on: loop, encoder: encoder) }.wait()
        let retry = try loop.flatSubmit { broker.publish([self.event(2, key: "b"), self.event(3, key: "c")], on: loop, encoder: encoder) }.wait()
        XCTAssertEqual(first.map(\.seq), [1, 2])
        XCTAssertEqual(retry, [PublishResult(topic: topic, seq: 2, duplicate: true), PublishResult(topic: topic, seq: 3, duplicate: false)])
        try sink.done.futureResult.wait()
        XCTAssertEqual(try loop.submit { sink.seqs }.wait(), [1, 2, 3])
    }

    /// A live event that comes alone is flushed as it is written; the events of a batch and of a replay wait for the
    /// connection's one flush per tick, so that they share a write.
    func testAloneLiveEventsAreFlushedAtOnceBatchesAndReplaysAreNot() throws {
        let broker = MemoryBroker(clock: { 0 })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        _ = try loop.flatSubmit { broker.publish([self.event(1), self.event(2)], on: loop, encoder: encoder) }.wait()
        let sink = try loop.submit { () -> CollectingSink in
            let sink = CollectingSink(until: 6, on: loop)
            _ = router.subscribe(self.topic, since: 0, sink: sink, broker: broker) { _, _ in }
            return sink
        }.wait()
        _ = try loop.flatSubmit { broker.publish([self.event(3)], on: loop, encoder: encoder) }.wait()
        _ = try loop.flatSubmit { broker.publish([self.event(4), self.event(5), self.event(6)], on: loop, encoder: encoder) }.wait()
        try sink.done.futureResult.wait()
        let (seqs, modes) = try loop.submit { (sink.seqs, sink.modes) }.wait()
        XCTAssertEqual(seqs, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(modes.map(\.replay), [true, true, false, false, false, false])
        XCTAssertEqual(modes.map(\.flush), [false, false, true, false, false, false])
    }

    /// The events published in one loop tick (an overloaded loop reads many ingestion requests at once, such as an
    /// engine's pipelined requests) reach the loop's router as one batch, in one hop: a sink's frames of an execution
    /// with several events in the batch wait for the loop's flush pass, and so do any frames the sink gets after
    /// them in that tick, so that they share one write. An event alone of its execution in the batch is flushed at
    /// once to a sink that got nothing else in the tick (`solo`), as is a tick's single event. And when lone events
    /// still reach a router in two deliveries of one tick, a sink is flushed at once for the first only.
    func testTheEventsOfALoopTickReachEachSinkInOneWrite() throws {
        let broker = MemoryBroker(clock: { 0 })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        let other = TopicKey(workspace: "w1", execution: "e2")
        let third = TopicKey(workspace: "w1", execution: "e3")
        // `many` watches all three executions; `one` watches only the first, `solo` only the second.
        let (many, one, solo) = try loop.submit { () -> (CollectingSink, CollectingSink, CollectingSink) in
            let many = CollectingSink(until: 99, on: loop)
            let one = CollectingSink(until: 5, on: loop)
            let solo = CollectingSink(until: 99, on: loop)
            for topic in [self.topic, other, third] {
                _ = router.subscribe(topic, since: nil, sink: many, broker: broker) { _, _ in }
            }
            _ = router.subscribe(self.topic, since: nil, sink: one, broker: broker) { _, _ in }
            _ = router.subscribe(other, since: nil, sink: solo, broker: broker) { _, _ in }
            return (many, one, solo)
        }.wait()
        // One tick: an event of each execution, then a second event of the first, each published on its own.
        let firstTick = try loop.submit { () -> UInt32 in
            for (seq, topic) in [(1, self.topic), (1, other), (1, third), (2, self.topic)] {
                _ = broker.publish([self.event(seq, topic: topic)], on: loop, encoder: encoder)
            }
            return router.tick
        }.wait()
        // Later ticks: one event each.
        _ = try loop.flatSubmit { broker.publish([self.event(3)], on: loop, encoder: encoder) }.wait()
        _ = try loop.flatSubmit { broker.publish([self.event(2, topic: other)], on: loop, encoder: encoder) }.wait()
        // Two lone deliveries in one tick, straight to the router, once the last delivery's tick has ended: its
        // delivery task queues the tick's end, and two round trips through the loop's queue come after both.
        try loop.submit {}.wait()
        try loop.submit {}.wait()
        try loop.submit {
            for seq in [4, 5] as [UInt64] {
                router.deliver([encoder.encode(SequencedEvent(seq: seq, event: self.event(Int(seq))))])
            }
        }.wait()
        try one.done.futureResult.wait()
        typealias Modes = [(replay: Bool, flush: Bool)]
        let (manyModes, oneModes, soloModes, oneSeqs, lastTick) = try loop.submit {
            () -> (Modes, Modes, Modes, [UInt64], UInt32) in
            many.done.succeed()
            solo.done.succeed()
            return (many.modes, one.modes, solo.modes, one.seqs, router.tick)
        }.wait()
        XCTAssertEqual(oneSeqs, [1, 2, 3, 4, 5])
        XCTAssertEqual(oneModes.map(\.flush), [false, false, true, true, false])
        XCTAssertEqual(soloModes.map(\.flush), [true, true])
        XCTAssertEqual(manyModes.map(\.replay), [false, false, false, false, false, false, false, false])
        XCTAssertEqual(manyModes.map(\.flush), [false, false, false, false, true, true, true, false])
        XCTAssertEqual(lastTick, firstTick &+ 4)
    }

    /// The publishing loop hands its own router the events of a read at once (`deliverPending`), before the loop's
    /// queued delivery task runs; the task then delivers nothing twice.
    func testPendingEventsAreDeliveredAtOnceOnRequestAndOnlyOnce() throws {
        let (broker, loop, encoder, router, sink) = try oneSubscriber(until: 3, since: nil)
        let (atOnce, again, seqsThen) = try loop.submit { () -> (Bool, Bool, [UInt64]) in
            for i in 1...2 { _ = broker.publish([self.event(i)], on: loop, encoder: encoder) }
            let atOnce = broker.deliverPending(to: router)
            return (atOnce, broker.deliverPending(to: router), sink.seqs)
        }.wait()
        XCTAssertTrue(atOnce)
        XCTAssertFalse(again)
        XCTAssertEqual(seqsThen, [1, 2])
        _ = try loop.flatSubmit { broker.publish([self.event(3)], on: loop, encoder: encoder) }.wait()
        try sink.done.futureResult.wait()
        let (seqs, modes) = try loop.submit { (sink.seqs, sink.modes) }.wait()
        XCTAssertEqual(seqs, [1, 2, 3])
        XCTAssertEqual(modes.map(\.flush), [false, false, true])
    }

    /// A sink whose connection closes while the replay is written (a failed flush closes at once): the router stops
    /// writing to it there, and the subscription is gone from the table.
    func testReplayStopsWhenTheSinkClosesMidway() throws {
        final class ClosingSink: EventSink, @unchecked Sendable {
            var seqs: [UInt64] = []
            var onWrite: (Subscription) -> Void = { _ in }
            override func write(_ event: EncodedEvent, for subscription: Subscription, replay: Bool, flush: Bool) {
                seqs.append(event.seq)
                onWrite(subscription)
            }
        }
        let broker = MemoryBroker(clock: { 0 })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        _ = try loop.flatSubmit { broker.publish((1...5).map { self.event($0) }, on: loop, encoder: encoder) }.wait()
        let (seqs, count) = try loop.submit { () -> ([UInt64], Int) in
            let sink = ClosingSink()
            sink.onWrite = { subscription in if sink.seqs.count == 2 { router.unsubscribe(subscription, broker: broker) } }
            _ = router.subscribe(self.topic, since: 0, sink: sink, broker: broker) { _, _ in }
            return (sink.seqs, router.subscriptionCount)
        }.wait()
        XCTAssertEqual(seqs, [1, 2])
        XCTAssertEqual(count, 0)
    }

    func testTruncatedReplayAndTTL() throws {
        let clock = NIOLockedValueBox<Int64>(0)
        var config = MemoryBroker.Configuration()
        config.maxEventsPerExecution = 5
        config.historyTTLMilliseconds = 1000
        let broker = MemoryBroker(configuration: config, clock: { clock.withLockedValue { $0 } })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        _ = try loop.flatSubmit { broker.publish((1...8).map { self.event($0) }, on: loop, encoder: encoder) }.wait()
        XCTAssertEqual(broker.storedEventCount, 5)
        let result = try loop.flatSubmit { broker.subscribe(self.topic, since: 1, router: router) }.wait()
        XCTAssertEqual(result.headSeq, 8)
        XCTAssertEqual(result.truncatedFirstSeq, 4)
        XCTAssertEqual(result.replay.map(\.seq), [4, 5, 6, 7, 8])
        let current = try loop.flatSubmit { broker.subscribe(self.topic, since: 3, router: router) }.wait()
        XCTAssertNil(current.truncatedFirstSeq)
        // 1 s after the last event the history is gone, but numbering continues.
        clock.withLockedValue { $0 = 1001 }
        broker.sweep()
        XCTAssertEqual(broker.storedEventCount, 0)
        let later = try loop.flatSubmit { broker.subscribe(self.topic, since: 7, router: router) }.wait()
        XCTAssertEqual(later.truncatedFirstSeq, 9)
        XCTAssertEqual(later.replay.count, 0)
        let next = try loop.flatSubmit { broker.publish([self.event(9)], on: loop, encoder: encoder) }.wait()
        XCTAssertEqual(next.map(\.seq), [9])
    }

    /// A client that saw numbers the execution no longer has (say the hub restarted) is told, and gets everything.
    func testSinceBeyondTheHeadReplaysFromTheStart() throws {
        let broker = MemoryBroker(clock: { 0 })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        _ = try loop.flatSubmit { broker.publish((1...3).map { self.event($0) }, on: loop, encoder: encoder) }.wait()
        let result = try loop.flatSubmit { broker.subscribe(self.topic, since: 57, router: router) }.wait()
        XCTAssertEqual(result.headSeq, 3)
        XCTAssertEqual(result.truncatedFirstSeq, 1)
        XCTAssertEqual(result.replay.map(\.seq), [1, 2, 3])
        let sink = try loop.submit { () -> CollectingSink in
            let sink = CollectingSink(until: 3, on: loop)
            _ = router.subscribe(self.topic, since: 57, sink: sink, broker: broker) { _, _ in }
            return sink
        }.wait()
        try sink.done.futureResult.wait()
        XCTAssertEqual(try loop.submit { sink.seqs }.wait(), [1, 2, 3])
    }

    func testTotalBoundEvictsTheLeastRecentlyActiveExecution() throws {
        let clock = NIOLockedValueBox<Int64>(0)
        var config = MemoryBroker.Configuration()
        config.maxEventsTotal = 10
        let broker = MemoryBroker(configuration: config, clock: { clock.withLockedValue { $0 } })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let old = TopicKey(workspace: "w1", execution: "old")
        let new = TopicKey(workspace: "w1", execution: "new")
        _ = try loop.flatSubmit { broker.publish((1...6).map { self.event($0, topic: old) }, on: loop, encoder: encoder) }.wait()
        clock.withLockedValue { $0 = 10 }
        _ = try loop.flatSubmit { broker.publish((1...6).map { self.event($0, topic: new) }, on: loop, encoder: encoder) }.wait()
        XCTAssertEqual(broker.storedEventCount, 6)
    }

    func testRouterRegistersOncePerLoopAndLeavesWithTheLast() throws {
        let broker = MemoryBroker(clock: { 0 })
        let loop = group.next()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        let counts = try loop.submit { () -> [Int] in
            let subs = (0..<3).map { _ in
                router.subscribe(self.topic, since: nil, sink: NullSink(), broker: broker) { _, _ in }
            }
            var counts = [broker.routerCount(for: self.topic)]
            router.unsubscribe(subs[0], broker: broker)
            router.unsubscribe(subs[1], broker: broker)
            counts.append(broker.routerCount(for: self.topic))
            router.unsubscribe(subs[2], broker: broker)
            counts.append(broker.routerCount(for: self.topic))
            return counts
        }.wait()
        XCTAssertEqual(counts, [1, 1, 0])
    }

    /// Encode once: every subscriber gets the very same buffer storage.
    func testEveryWatcherGetsTheSameBytes() throws {
        let broker = MemoryBroker(clock: { 0 })
        let loop = group.next()
        let encoder = try loop.submit { EventEncoder() }.wait()
        let router = try loop.submit { LoopRouter(eventLoop: loop) }.wait()
        let sinks = try loop.submit { () -> [CollectingSink] in
            (0..<3).map { _ in
                let s = CollectingSink(until: 1, on: loop)
                _ = router.subscribe(self.topic, since: nil, sink: s, broker: broker) { _, _ in }
                return s
            }
        }.wait()
        _ = try loop.flatSubmit { broker.publish([self.event(1)], on: loop, encoder: encoder) }.wait()
        for s in sinks { try s.done.futureResult.wait() }
        let events = try loop.submit { sinks.map { $0.events[0] } }.wait()
        XCTAssertTrue(events[0] === events[1] && events[1] === events[2])
        XCTAssertEqual(String(buffer: events[0].sse),
            "id: 1\nevent: node.log\ndata: " + events[0].json + "\n\n")
        XCTAssertEqual(events[0].json,
            #"{"execution":"e1","workspace":"w1","seq":1,"event":"node.log","node_key":"n","timestamp":"2026-11-25T12:00:00Z","data":{"level":"info","message":"line 1"}}"#)
    }
}
