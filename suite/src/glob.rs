//! The `*` and `?` globs of `--case` filters.

/// Whether `name` matches `pattern` as a whole, where `*` matches any run of
/// characters (including none) and `?` exactly one; every other character
/// matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the name position it is currently made to end at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("*", "", true)]
    #[case("*", "anything", true)]
    #[case("", "", true)]
    #[case("", "a", false)]
    #[case("memory-running", "memory-running", true)]
    #[case("memory-running", "memory-running2", false)]
    #[case("memory-*", "memory-running", true)]
    #[case("memory-*", "vhost-user-running", false)]
    #[case("*running", "memory-running", true)]
    #[case("*-paused", "memory-running", false)]
    #[case("memory-?aused", "memory-paused", true)]
    #[case("memory-?", "memory-", false)]
    #[case("*::memory-running/*", "refvmm::memory-running/no-fault", true)]
    #[case("*kill-target@*", "refvmm::memory-paused/kill-target@cpr-save", true)]
    #[case("*kill-target@*", "refvmm::memory-paused/kill-source@cpr-save", false)]
    #[case("a*b*c", "aXbYbZc", true)]
    #[case("a*b*c", "aXbYbZ", false)]
    #[case("**a**", "bab", true)]
    #[case("é?", "éü", true)]
    fn globs(#[case] pattern: &str, #[case] name: &str, #[case] want: bool) {
        assert_eq!(glob_match(pattern, name), want, "{pattern} vs {name}");
    }
}
