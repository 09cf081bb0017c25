import NIOCore

/// A connection that keeps one deadline in its loop's `LoopTimers`.
protocol TimerTarget: AnyObject {
    /// Where this target sits in the timer heap (managed by `LoopTimers`; -1 when not scheduled).
    var timerSlot: Int { get set }
    /// Its deadline came: it is no longer scheduled, and may schedule again.
    func timerFired()
}

/// The deadlines of every long-lived connection of one event loop (heartbeats, pings, close timeouts, ages), in one
/// binary heap served by one NIO task armed for the earliest.
///
/// A connection holds a heap slot (a deadline and a reference, 16 bytes) instead of its own scheduled task (a task, a
/// promise and two closures, about 250 bytes measured per idle connection); rescheduling and cancelling are
/// O(log n) and never touch the event loop's own timer heap. Confined to its event loop.
final class LoopTimers {
    let eventLoop: EventLoop
    private var heap: [(deadline: Int64, target: TimerTarget)] = []
    private var armed: (deadline: Int64, task: Scheduled<Void>)?

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Number of scheduled targets (for tests).
    var count: Int { heap.count }

    func deadline(of target: TimerTarget) -> Int64? {
        target.timerSlot >= 0 ? heap[target.timerSlot].deadline : nil
    }

    /// Schedules `target` at `deadline` (NIO uptime nanoseconds), replacing its earlier deadline if it had one.
    func schedule(_ target: TimerTarget, at deadline: Int64) {
        let slot = target.timerSlot
        if slot >= 0 {
            let old = heap[slot].deadline
            heap[slot].deadline = deadline
            if deadline < old { siftUp(slot) } else { siftDown(slot) }
        } else {
            heap.append((deadline, target))
            target.timerSlot = heap.count - 1
            siftUp(heap.count - 1)
        }
        arm()
    }

    func cancel(_ target: TimerTarget) {
        let slot = target.timerSlot
        guard slot >= 0 else { return }
        remove(at: slot)
    }

    private func remove(at slot: Int) {
        heap[slot].target.timerSlot = -1
        let last = heap.count - 1
        if slot != last {
            heap.swapAt(slot, last)
            heap[slot].target.timerSlot = slot
        }
        heap.removeLast()
        if slot < heap.count {
            siftDown(slot)
            siftUp(slot)
        }
        if heap.isEmpty, heap.capacity > 64 { heap = [] }
    }

    /// Keeps one NIO task armed for the earliest deadline (re-armed only when an earlier one arrives).
    private func arm() {
        guard let first = heap.first?.deadline else { return }
        if let armed, armed.deadline <= first { return }
        armed?.task.cancel()
        let task = eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(first, 0)))) {
            [self] in fire()
        }
        armed = (first, task)
    }

    private func fire() {
        armed = nil
        let now = Int64(eventLoop.now.uptimeNanoseconds)
        // Take every due target out first: a target that schedules again for `now` or earlier runs in the next pass,
        // not in this loop.
        var due: [TimerTarget] = []
        while let first = heap.first, first.deadline <= now {
            due.append(first.target)
            remove(at: 0)
        }
        for target in due { target.timerFired() }
        arm()
    }

    private func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            swapSlots(child, parent)
            child = parent
        }
    }

    private func siftDown(_ start: Int) {
        var parent = start
        let count = heap.count
        while true {
            let left = 2 * parent + 1
            guard left < count else { return }
            let right = left + 1
            let smaller = right < count && heap[right].deadline < heap[left].deadline ? right : left
            guard heap[smaller].deadline < heap[parent].deadline else { return }
            swapSlots(parent, smaller)
            parent = smaller
        }
    }

    private func swapSlots(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        heap[a].target.timerSlot = a
        heap[b].target.timerSlot = b
    }
}
