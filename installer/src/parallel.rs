//! Order-preserving parallel map for the I/O- and hash-bound loops over a
//! bundle's files (status checks, the plan's comparisons with the host).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The most threads [`map`] uses.
pub const MAX_WORKERS: usize = 8;

/// `items.iter().map(f).collect()`, with the calls spread over up to
/// [`MAX_WORKERS`] threads (at most one per CPU, at most one per item),
/// results in the order of `items`. A panic in `f` is resumed here.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS)
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_items_whatever_finishes_first() {
        let items: Vec<u64> = (0..200).collect();
        let out = map(&items, |&i| {
            // Later items finish first.
            std::thread::sleep(std::time::Duration::from_micros((200 - i) * 20));
            i * 3
        });
        assert_eq!(out, items.iter().map(|i| i * 3).collect::<Vec<_>>());
        assert!(map(&[] as &[u8], |_| 1).is_empty());
    }
}
