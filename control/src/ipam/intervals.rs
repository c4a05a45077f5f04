//! Sets of addresses kept as sorted, disjoint, inclusive ranges of `u128`.
//!
//! Both families share one representation (an IPv4 address is its `u32` value widened), so a
//! /8 or a /64 costs one range, not 2^24 or 2^64 entries.

use std::collections::BTreeMap;

/// An inclusive range `(first, last)` with `first <= last`.
pub(crate) type Span = (u128, u128);

/// Number of addresses in a span; saturates for the whole 128-bit space.
pub(crate) fn span_len((first, last): Span) -> u128 {
    (last - first).saturating_add(1)
}

/// Sorts and merges overlapping or adjacent spans into a sorted, disjoint list.
pub(crate) fn normalize(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for (first, last) in spans {
        match out.last_mut() {
            Some(prev) if prev.1 == u128::MAX || first <= prev.1 + 1 => {
                prev.1 = prev.1.max(last);
            }
            _ => out.push((first, last)),
        }
    }
    out
}

/// Spans of an already sorted, duplicate-free list of points, adjacent points merged.
pub(crate) fn spans_of_sorted_points(points: &[u128]) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for &p in points {
        match out.last_mut() {
            Some(prev) if prev.1 != u128::MAX && prev.1 + 1 == p => prev.1 = p,
            _ => out.push((p, p)),
        }
    }
    out
}

/// `a \ b` for two sorted, disjoint span lists, in one linear sweep.
pub(crate) fn subtract(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &(first, last) in a {
        let mut cursor = first;
        let mut open = true;
        while j < b.len() && b[j].1 < cursor {
            j += 1;
        }
        let mut k = j;
        while open && k < b.len() && b[k].0 <= last {
            let (bf, bl) = b[k];
            if bf > cursor {
                out.push((cursor, bf - 1));
            }
            if bl >= last {
                open = false;
            } else {
                cursor = bl + 1;
                k += 1;
            }
        }
        if open {
            out.push((cursor, last));
        }
    }
    out
}

/// `a ∩ b` for two sorted, disjoint span lists.
pub(crate) fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let first = a[i].0.max(b[j].0);
        let last = a[i].1.min(b[j].1);
        if first <= last {
            out.push((first, last));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Whether `x` lies in a sorted, disjoint span list (binary search).
pub(crate) fn spans_contain(spans: &[Span], x: u128) -> bool {
    let idx = spans.partition_point(|&(first, _)| first <= x);
    idx > 0 && spans[idx - 1].1 >= x
}

/// A mutable set of addresses: `first → last` of each maximal range, plus a running count.
///
/// Taking the lowest address, removing one and adding one back are all O(log r) in the
/// number of ranges r, which stays small for the usual first-free allocation pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    ranges: BTreeMap<u128, u128>,
    len: u128,
}

impl IntervalSet {
    /// Bulk-builds from a sorted, disjoint, non-adjacent list (as produced by [`normalize`]
    /// and [`subtract`]); a sorted bulk build is linear.
    pub(crate) fn from_spans(spans: Vec<Span>) -> Self {
        let len = spans
            .iter()
            .fold(0u128, |acc, &s| acc.saturating_add(span_len(s)));
        Self {
            ranges: spans.into_iter().collect(),
            len,
        }
    }

    pub(crate) fn len(&self) -> u128 {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn first(&self) -> Option<u128> {
        self.ranges.first_key_value().map(|(&first, _)| first)
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, x: u128) -> bool {
        self.ranges
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &last)| last >= x)
    }

    /// Removes and returns the lowest address.
    pub(crate) fn pop_first(&mut self) -> Option<u128> {
        let (first, last) = self.ranges.pop_first()?;
        if first < last {
            self.ranges.insert(first + 1, last);
        }
        self.len -= 1;
        Some(first)
    }

    /// Removes `x`; false when it was not in the set.
    pub(crate) fn remove(&mut self, x: u128) -> bool {
        let Some((&first, &last)) = self.ranges.range(..=x).next_back() else {
            return false;
        };
        if last < x {
            return false;
        }
        self.ranges.remove(&first);
        if first < x {
            self.ranges.insert(first, x - 1);
        }
        if x < last {
            self.ranges.insert(x + 1, last);
        }
        self.len -= 1;
        true
    }

    /// Adds `x`, merging with neighbouring ranges; false when it was already present.
    pub(crate) fn insert(&mut self, x: u128) -> bool {
        let before = self.ranges.range(..=x).next_back().map(|(&f, &l)| (f, l));
        if let Some((_, last)) = before
            && last >= x
        {
            return false;
        }
        let mut first = x;
        let mut last = x;
        if let Some((bf, bl)) = before
            && bl.checked_add(1) == Some(x)
        {
            first = bf;
        }
        if let Some(next_start) = x.checked_add(1)
            && let Some(next_last) = self.ranges.remove(&next_start)
        {
            last = next_last;
        }
        self.ranges.insert(first, last);
        self.len += 1;
        true
    }

    #[cfg(test)]
    pub(crate) fn spans(&self) -> impl Iterator<Item = Span> + '_ {
        self.ranges.iter().map(|(&f, &l)| (f, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_splits_and_trims() {
        let a = vec![(0, 10), (20, 30)];
        let b = vec![(0, 0), (5, 6), (10, 21), (30, 40)];
        assert_eq!(subtract(&a, &b), vec![(1, 4), (7, 9), (22, 29)]);
        assert_eq!(subtract(&a, &[]), a);
        assert_eq!(subtract(&[], &b), vec![]);
        assert_eq!(subtract(&[(0, u128::MAX)], &[(0, u128::MAX)]), vec![]);
    }

    #[test]
    fn intersect_overlaps() {
        let a = vec![(0, 10), (20, 30)];
        let b = vec![(5, 25)];
        assert_eq!(intersect(&a, &b), vec![(5, 10), (20, 25)]);
    }

    #[test]
    fn normalize_merges_adjacent_and_overlapping() {
        assert_eq!(
            normalize(vec![(5, 6), (0, 2), (3, 4), (10, 12), (11, 11)]),
            vec![(0, 6), (10, 12)]
        );
        assert_eq!(
            normalize(vec![(u128::MAX, u128::MAX), (0, u128::MAX)]),
            vec![(0, u128::MAX)]
        );
    }

    #[test]
    fn set_insert_remove_merge() {
        let mut s = IntervalSet::from_spans(vec![(1, 3), (7, 9)]);
        assert_eq!(s.len(), 6);
        assert!(s.remove(2));
        assert!(!s.remove(2));
        assert_eq!(s.spans().collect::<Vec<_>>(), vec![(1, 1), (3, 3), (7, 9)]);
        assert!(s.insert(2));
        assert!(s.insert(4));
        assert!(s.insert(5));
        assert!(s.insert(6));
        assert_eq!(s.spans().collect::<Vec<_>>(), vec![(1, 9)]);
        assert_eq!(s.len(), 9);
        assert_eq!(s.pop_first(), Some(1));
        assert_eq!(s.first(), Some(2));
        assert!(s.contains(9) && !s.contains(10) && !s.contains(1));
    }

    #[test]
    fn set_edges_of_u128() {
        let mut s = IntervalSet::default();
        assert!(s.insert(u128::MAX));
        assert!(s.insert(u128::MAX - 1));
        assert!(s.insert(0));
        assert_eq!(
            s.spans().collect::<Vec<_>>(),
            vec![(0, 0), (u128::MAX - 1, u128::MAX)]
        );
        assert!(s.remove(u128::MAX));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn points_to_spans() {
        assert_eq!(
            spans_of_sorted_points(&[1, 2, 3, 5, 7, 8]),
            vec![(1, 3), (5, 5), (7, 8)]
        );
        assert!(spans_contain(&[(1, 3), (7, 8)], 8));
        assert!(!spans_contain(&[(1, 3), (7, 8)], 5));
    }
}
