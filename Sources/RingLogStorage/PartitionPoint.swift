extension RandomAccessCollection {
    /// The first index whose element does not satisfy `belongsBefore`, in a collection where every
    /// element that does comes before every element that does not (a binary search: the sparse
    /// index, the tail cache's extents and a log's batch ends are all sorted this way).
    func partitionPoint(_ belongsBefore: (Element) -> Bool) -> Index {
        var low = startIndex
        var remaining = count
        while remaining > 0 {
            let half = remaining / 2
            let middle = index(low, offsetBy: half)
            if belongsBefore(self[middle]) {
                low = index(after: middle)
                remaining -= half + 1
            } else {
                remaining = half
            }
        }
        return low
    }
}
