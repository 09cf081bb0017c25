#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

/// Turns SIGTERM and SIGINT into values to await, instead of the default of dying on the spot.
/// Its state is touched only on its own serial queue.
final class SignalWaiter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "hub.signals")
    private var sources: [DispatchSourceSignal] = []
    private var received: [Int32] = []
    private var waiting: [CheckedContinuation<Int32, Never>] = []

    init(_ signals: [Int32]) {
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [unowned self, source] in  // the sources live as long as the process
                // Signals that arrive close together are merged into one event: `data` says how many.
                for _ in 0..<max(Int(source.data), 1) {
                    if waiting.isEmpty { received.append(number) } else { waiting.removeFirst().resume(returning: number) }
                }
            }
            source.resume()
            sources.append(source)
        }
    }

    /// The next signal (one received earlier and not yet taken, or the next to come).
    func next() async -> Int32 {
        await withCheckedContinuation { continuation in
            queue.async {
                if self.received.isEmpty {
                    self.waiting.append(continuation)
                } else {
                    continuation.resume(returning: self.received.removeFirst())
                }
            }
        }
    }
}
