use std::time::{Duration, Instant};

use super::*;

const TTL: Duration = Duration::from_secs(30);
type Cache = ListCache<String, u32>;
const OVERHEAD: usize = Cache::ENTRY_OVERHEAD;

fn cache(max_entries: usize, max_bytes: usize) -> Cache {
    ListCache::new(
        TTL,
        ListCacheLimits {
            max_entries,
            max_bytes,
        },
    )
}

fn key(n: usize) -> String {
    format!("cluster-{n}")
}

fn held(cache: &Cache, now: Instant, keys: std::ops::Range<usize>) -> Vec<usize> {
    keys.filter(|n| cache.get(&key(*n), now).is_some())
        .collect()
}

#[test]
fn serves_a_list_within_its_ttl_and_not_after() {
    let start = Instant::now();
    let cache = cache(10, 1 << 20);
    cache.insert(key(0), 7, 100, start);
    assert_eq!(cache.get(&key(0), start), Some(7));
    assert_eq!(
        cache.get(&key(0), start + TTL - Duration::from_millis(1)),
        Some(7)
    );
    assert_eq!(cache.get(&key(0), start + TTL), None);
    assert_eq!(cache.get(&key(1), start), None);
}

#[test]
fn a_write_evicts_every_list_past_its_ttl() {
    let start = Instant::now();
    let cache = cache(10, 1 << 20);
    for n in 0..5 {
        cache.insert(key(n), 0, 100, start + Duration::from_secs(n as u64));
    }
    assert_eq!(cache.usage().entries, 5);
    // 31 s on: the lists written at 0 s and 1 s have expired (30 s is the TTL), the others not yet.
    cache.insert(key(9), 0, 100, start + Duration::from_secs(31));
    assert_eq!(
        cache.usage(),
        ListCacheUsage {
            entries: 4,
            bytes: 4 * (100 + OVERHEAD)
        }
    );
    assert_eq!(
        held(&cache, start + Duration::from_secs(31), 0..10),
        [2, 3, 4, 9]
    );
}

#[test]
fn at_the_entry_bound_the_oldest_list_goes_first() {
    let now = Instant::now();
    let cache = cache(3, 1 << 20);
    for n in 0..3 {
        cache.insert(key(n), 0, 10, now);
    }
    // Rewriting a list makes it the newest.
    cache.insert(key(0), 1, 10, now);
    cache.insert(key(3), 0, 10, now);
    assert_eq!(held(&cache, now, 0..4), [0, 2, 3]);
    assert_eq!(cache.get(&key(0), now), Some(1));
}

#[test]
fn at_the_byte_bound_the_oldest_lists_go_until_the_new_one_fits() {
    let now = Instant::now();
    let entry = 100 + OVERHEAD;
    let cache = cache(100, 4 * entry);
    for n in 0..4 {
        cache.insert(key(n), 0, 100, now);
    }
    assert_eq!(cache.usage().bytes, 4 * entry);
    // Twice as heavy: the two oldest make room for it.
    cache.insert(key(4), 0, 200 + OVERHEAD, now);
    assert_eq!(held(&cache, now, 0..5), [2, 3, 4]);
    assert!(cache.usage().bytes <= 4 * entry);
}

#[test]
fn a_list_heavier_than_the_whole_cache_is_not_kept_nor_its_stale_copy() {
    let now = Instant::now();
    let cache = cache(100, 1000);
    cache.insert(key(0), 1, 10, now);
    cache.insert(key(1), 1, 10, now);
    cache.insert(key(0), 2, 1000, now);
    assert_eq!(cache.get(&key(0), now), None);
    assert_eq!(held(&cache, now, 0..2), [1], "the others stay");
}

#[test]
fn a_cache_bounded_at_zero_entries_keeps_nothing() {
    let now = Instant::now();
    let cache = cache(0, 1 << 20);
    cache.insert(key(0), 1, 10, now);
    assert_eq!(cache.get(&key(0), now), None);
    assert_eq!(cache.usage(), ListCacheUsage::default());
}

#[test]
fn many_clusters_within_the_ttl_never_grow_it_past_its_bounds() {
    let now = Instant::now();
    let (max_entries, max_bytes) = (100, 50 * (1000 + OVERHEAD));
    let cache = cache(max_entries, max_bytes);
    for n in 0..10_000 {
        cache.insert(key(n), 0, 500 + n % 1000, now);
        let usage = cache.usage();
        assert!(usage.entries <= max_entries, "{usage:?}");
        assert!(usage.bytes <= max_bytes, "{usage:?}");
    }
    // The newest are the ones kept.
    assert!(cache.get(&key(9_999), now).is_some());
    assert!(cache.get(&key(0), now).is_none());
}
