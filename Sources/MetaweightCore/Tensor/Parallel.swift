import Dispatch

#if canImport(Glibc)
  import Glibc
#endif

/// Thread-count control shared by metaweight's own kernels and OpenBLAS.
public enum Parallel {
  nonisolated(unsafe) private static var _threads: Int = {
    let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    return max(1, Int(n))
  }()

  /// Number of worker threads metaweight's kernels use (default: online CPUs).
  public static var threads: Int {
    get { _threads }
    set { _threads = max(1, newValue) }
  }

  /// Runs `body(chunkStart, chunkEnd)` over `0..<n` split into at most `threads` contiguous
  /// chunks; runs inline when the work (`n * costPerItem`) is small.
  @inlinable
  public static func forRange(
    _ n: Int, costPerItem: Int = 1, _ body: (Int, Int) -> Void
  ) {
    if n <= 0 { return }
    let t = min(threads, n)
    if t <= 1 || n * costPerItem < 32_768 {
      body(0, n)
      return
    }
    withoutActuallyEscaping(body) { escapable in
      let box = UncheckedSendable(escapable)
      DispatchQueue.concurrentPerform(iterations: t) { k in
        let start = n * k / t
        let end = n * (k + 1) / t
        if start < end { box.value(start, end) }
      }
    }
  }
}

/// Wraps a value the caller guarantees is safe to share across the threads of one parallel loop.
public struct UncheckedSendable<T>: @unchecked Sendable {
  /// The wrapped value.
  public let value: T
  /// Wraps `value`.
  @inlinable public init(_ value: T) { self.value = value }
}
