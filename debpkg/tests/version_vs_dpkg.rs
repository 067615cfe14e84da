//! Randomised cross-check of `Version`'s ordering against
//! `dpkg --compare-versions` on this machine.

use std::cmp::Ordering;
use std::process::Command;

use debpkg::Version;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, chars: &str) -> char {
        let chars: Vec<char> = chars.chars().collect();
        chars[self.below(chars.len())]
    }

    /// A run of characters designed to hit the interesting cases: tildes,
    /// letters vs. symbols, leading zeros, multi-digit numbers.
    fn fragment(&mut self, alphabet: &str) -> String {
        let len = 1 + self.below(6);
        (0..len).map(|_| self.pick(alphabet)).collect()
    }

    fn version(&mut self) -> String {
        let mut s = String::new();
        if self.below(5) == 0 {
            s.push_str(&format!("{}:", self.below(3)));
        }
        s.push(self.pick("0123456789"));
        s.push_str(&self.fragment("0019aZz.+~~"));
        if self.below(2) == 0 {
            s.push('-');
            s.push_str(&self.fragment("0019bZ.+~"));
        }
        s
    }
}

fn hash(v: &Version) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn dpkg_holds(a: &str, op: &str, b: &str) -> Option<bool> {
    Command::new("dpkg")
        .args(["--compare-versions", a, op, b])
        .status()
        .ok()
        .map(|s| s.success())
}

fn dpkg_order(a: &str, b: &str) -> Option<Ordering> {
    Some(if dpkg_holds(a, "lt", b)? {
        Ordering::Less
    } else if dpkg_holds(a, "eq", b)? {
        Ordering::Equal
    } else {
        Ordering::Greater
    })
}

#[test]
fn random_versions_order_and_hash_exactly_like_dpkg_compare_versions() {
    if dpkg_order("1", "1").is_none() {
        eprintln!("skipping: dpkg is not available");
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut equal_pairs = 0;
    for _ in 0..600 {
        let a = rng.version();
        // Half the time derive b from a to get close (often equal) pairs.
        let b = if rng.below(2) == 0 {
            rng.version()
        } else {
            let mut b = a.clone();
            match rng.below(4) {
                0 => b.push('0'),
                1 => b.push('~'),
                2 => b = b.replacen('1', "01", 1),
                _ => b.push_str("-0"),
            }
            b
        };
        // Every generated string is a valid version (the epoch-less prefix
        // starts with a digit, only policy characters are used).
        let parse = |s: &str| -> Version { s.parse().unwrap_or_else(|e| panic!("{s}: {e}")) };
        let (va, vb) = (parse(&a), parse(&b));
        let expected = dpkg_order(&a, &b).unwrap();
        assert_eq!(va.cmp(&vb), expected, "{a} vs {b}");
        if expected == Ordering::Equal {
            equal_pairs += 1;
            assert_eq!(
                hash(&va),
                hash(&vb),
                "dpkg-equal {a} and {b} must hash equally"
            );
        }
    }
    assert!(
        equal_pairs > 10,
        "generator should produce some equal pairs"
    );
}
