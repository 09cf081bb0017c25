import NIOCore
import NIOEmbedded
import XCTest

@testable import HubServer

/// The per-loop timer heap, on virtual time: every target fires once at its own deadline, in deadline order.
final class LoopTimersTests: XCTestCase {
    final class Target: TimerTarget {
        var timerSlot = -1
        let name: String
        let onFire: (Target) -> Void
        init(_ name: String, onFire: @escaping (Target) -> Void) {
            self.name = name
            self.onFire = onFire
        }
        func timerFired() { onFire(self) }
    }

    var loop: EmbeddedEventLoop!
    var timers: LoopTimers!
    var fired: [(String, Int64)] = []

    override func setUp() {
        loop = EmbeddedEventLoop()
        timers = LoopTimers(eventLoop: loop)
        fired = []
    }

    private var now: Int64 { Int64(loop.now.uptimeNanoseconds) }

    private func target(_ name: String, then: ((Target) -> Void)? = nil) -> Target {
        Target(name) { [unowned self] t in
            fired.append((t.name, now))
            then?(t)
        }
    }

    private func firedNames() -> [String] { fired.map(\.0) }

    func testTargetsFireInDeadlineOrderAtTheirDeadlines() {
        let start = now
        let targets = (0..<50).map { target("t\($0)") }
        // Scheduled in a scrambled order: deadline of t_i is start + (i + 1) ms.
        for i in (0..<50).map({ ($0 * 37) % 50 }) { timers.schedule(targets[i], at: start + Int64(i + 1) * 1_000_000) }
        XCTAssertEqual(timers.count, 50)
        loop.advanceTime(by: .microseconds(24_500))
        XCTAssertEqual(firedNames(), (0..<24).map { "t\($0)" })
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(firedNames(), (0..<50).map { "t\($0)" })
        XCTAssertEqual(fired.map(\.1), (0..<50).map { start + Int64($0 + 1) * 1_000_000 })
        XCTAssertEqual(timers.count, 0)
        XCTAssertTrue(targets.allSatisfy { $0.timerSlot == -1 })
    }

    func testReschedulingMovesTheOneDeadlineEarlierOrLater() {
        let start = now
        let a = target("a"), b = target("b"), c = target("c")
        timers.schedule(a, at: start + 10_000_000)
        timers.schedule(b, at: start + 20_000_000)
        timers.schedule(c, at: start + 30_000_000)
        timers.schedule(c, at: start + 5_000_000)  // earlier than everything armed so far
        timers.schedule(a, at: start + 40_000_000)  // later
        XCTAssertEqual(timers.count, 3)
        XCTAssertEqual(timers.deadline(of: a), start + 40_000_000)
        loop.advanceTime(by: .milliseconds(5))
        XCTAssertEqual(firedNames(), ["c"])
        loop.advanceTime(by: .milliseconds(15))
        XCTAssertEqual(firedNames(), ["c", "b"])
        loop.advanceTime(by: .milliseconds(19))
        XCTAssertEqual(firedNames(), ["c", "b"])
        loop.advanceTime(by: .milliseconds(1))
        XCTAssertEqual(firedNames(), ["c", "b", "a"])
        XCTAssertEqual(fired.map(\.1), [start + 5_000_000, start + 20_000_000, start + 40_000_000])
    }

    func testCancelledTargetsNeverFireAndLeaveTheHeap() {
        let start = now
        let targets = (0..<20).map { target("t\($0)") }
        for (i, t) in targets.enumerated() { timers.schedule(t, at: start + Int64(i + 1) * 1_000_000) }
        // Cancel the first (the armed one), a middle one and the last.
        for i in [0, 7, 19] { timers.cancel(targets[i]) }
        timers.cancel(targets[7])  // twice is harmless
        XCTAssertEqual(timers.count, 17)
        XCTAssertEqual(targets[7].timerSlot, -1)
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(firedNames(), (1..<19).filter { $0 != 7 }.map { "t\($0)" })
    }

    func testATargetThatSchedulesItselfAgainFiresAgain() {
        let start = now
        var ticks = 0
        let heartbeat = target("hb") { [unowned self] t in
            ticks += 1
            if ticks < 3 { timers.schedule(t, at: now + 15_000_000_000) }
        }
        timers.schedule(heartbeat, at: start + 15_000_000_000)
        loop.advanceTime(by: .seconds(14))
        XCTAssertEqual(ticks, 0)
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(ticks, 1)
        loop.advanceTime(by: .seconds(30))
        XCTAssertEqual(ticks, 3)
        XCTAssertEqual(fired.map(\.1), [start + 15_000_000_000, start + 30_000_000_000, start + 45_000_000_000])
        XCTAssertEqual(timers.count, 0)
    }

    func testATargetDueAgainAtOnceFiresAgainWithoutTimePassing() {
        let start = now
        var passes = 0
        let eager = target("eager") { [unowned self] t in
            passes += 1
            // Due again at once (a close that starts inside a tick, for example).
            if passes < 3 { timers.schedule(t, at: now) }
        }
        timers.schedule(eager, at: start + 1_000_000)
        loop.advanceTime(by: .milliseconds(1))
        XCTAssertEqual(passes, 3)
        XCTAssertEqual(timers.count, 0)
    }
}
