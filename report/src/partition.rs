//! `--partition K/N`: splits a list of trials into N parts for N CI jobs.
//! Trial i of the list (0-based, in list order) belongs to part (i % N) + 1,
//! so the parts are disjoint, cover the list, and differ in size by at most one.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based.
    pub k: usize,
    pub n: usize,
}

impl Partition {
    /// Whether the trial at `index` (0-based) is in this part.
    pub fn contains(self, index: usize) -> bool {
        index % self.n + 1 == self.k
    }

    /// The items of this part, in their order.
    pub fn select<T>(self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.contains(*i))
            .map(|(_, t)| t)
            .collect()
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// A `--partition` value that is not K/N with 1 <= K <= N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPartition(pub String);

impl fmt::Display for BadPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a partition: write K/N with 1 <= K <= N, e.g. 1/4",
            self.0
        )
    }
}

impl std::error::Error for BadPartition {}

impl FromStr for Partition {
    type Err = BadPartition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPartition(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        if n == 0 || k == 0 || k > n {
            return Err(bad());
        }
        Ok(Partition { k, n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_disjoint_and_cover_the_list() {
        let items: Vec<usize> = (0..11).collect();
        let mut all: Vec<usize> = (1..=3)
            .flat_map(|k| Partition { k, n: 3 }.select(items.clone()))
            .collect();
        all.sort();
        assert_eq!(all, items);
        assert_eq!(Partition { k: 2, n: 3 }.select(items), vec![1, 4, 7, 10]);
    }

    #[test]
    fn parses_k_of_n() {
        assert_eq!("2/4".parse::<Partition>(), Ok(Partition { k: 2, n: 4 }));
        for bad in ["0/4", "5/4", "1/0", "1", "a/b", "1/2/3", ""] {
            let e = bad.parse::<Partition>().unwrap_err().to_string();
            assert!(e.contains("is not a partition"), "{bad}: {e}");
        }
    }
}
