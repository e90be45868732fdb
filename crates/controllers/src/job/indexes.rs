//! Sets of completion indexes in the compressed form Jobs carry them in status
//! (`completedIndexes: "1,3-5,7"`, `failedIndexes`).

use std::collections::BTreeSet;
use std::fmt;

/// A set of completion indexes, kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSet(BTreeSet<i32>);

impl IndexSet {
    /// Parse `"1,3-5"`, keeping only indexes below `completions` (a shrunk Job forgets the rest)
    /// and skipping malformed parts, as upstream does.
    pub fn parse(text: &str, completions: i32) -> IndexSet {
        let mut set = BTreeSet::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
                None => (part.parse::<i32>(), part.parse::<i32>()),
            };
            let (Ok(first), Ok(last)) = (first, last) else {
                continue;
            };
            if first < 0 || last < first {
                continue;
            }
            for i in first..=last.min(completions - 1) {
                set.insert(i);
            }
        }
        IndexSet(set)
    }

    pub fn insert(&mut self, index: i32) -> bool {
        self.0.insert(index)
    }

    pub fn contains(&self, index: i32) -> bool {
        self.0.contains(&index)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for IndexSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_compressed_ranges() {
        let set = IndexSet::parse("0,2-4,7", 10);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7]);
        assert_eq!(set.to_string(), "0,2-4,7");
        let mut set = IndexSet::default();
        for i in [5, 1, 2, 3, 9] {
            set.insert(i);
        }
        assert_eq!(set.to_string(), "1-3,5,9");
        assert_eq!(IndexSet::default().to_string(), "");
    }

    #[test]
    fn drops_out_of_range_and_garbage() {
        let set = IndexSet::parse("1,x,3-9,5-2", 5);
        assert_eq!(set.to_string(), "1,3-4");
    }
}
