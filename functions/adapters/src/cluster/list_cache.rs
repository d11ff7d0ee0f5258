//! A small cache with one time-to-live and two bounds (entries and bytes). Written for the
//! Flux lists, but knows nothing of them: the caller says what a value weighs.
//!
//! A list is reused for at most the TTL; past it, it is dead weight, so every write first
//! drops the lists whose TTL has passed. When a bound would still be exceeded, the oldest
//! lists go first. Values are meant to be cheap to clone (an `Arc`), so the lock is held
//! only to find a value and clone a pointer.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most this many lists (one per entry name, kind and namespace).
pub const DEFAULT_LIST_CACHE_ENTRIES: usize = 4096;
/// At most about this many bytes of parsed lists (see [`ListCacheUsage::bytes`]).
pub const DEFAULT_LIST_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Bounds of the list cache; when either would be exceeded, the oldest lists are evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCacheLimits {
    pub max_entries: usize,
    /// A single list heavier than this is used but not cached.
    pub max_bytes: usize,
}

impl Default for ListCacheLimits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_LIST_CACHE_ENTRIES,
            max_bytes: DEFAULT_LIST_CACHE_BYTES,
        }
    }
}

/// What the list cache holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListCacheUsage {
    pub entries: usize,
    /// An estimate of the memory the cached lists hold: each list's parsed objects and what
    /// they point to, its key, and the cache's own bookkeeping for it.
    pub bytes: usize,
}

struct Slot<V> {
    value: V,
    stored_at: Instant,
    bytes: usize,
    /// Position in [`State::order`].
    stamp: u64,
}

struct State<K, V> {
    slots: HashMap<K, Slot<V>>,
    /// Keys by time of writing, oldest first: the eviction order, and (with one TTL for
    /// every entry) the expiry order.
    order: BTreeMap<u64, K>,
    next_stamp: u64,
    bytes: usize,
}

impl<K: Eq + Hash + Clone, V> State<K, V> {
    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.order.remove(&slot.stamp);
            self.bytes = self.bytes.saturating_sub(slot.bytes);
        }
    }

    /// Evicts the oldest entry; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        match self.order.pop_first() {
            Some((_, key)) => {
                if let Some(slot) = self.slots.remove(&key) {
                    self.bytes = self.bytes.saturating_sub(slot.bytes);
                }
                true
            }
            None => false,
        }
    }

    fn evict_expired(&mut self, now: Instant, ttl: Duration) {
        while let Some((_, key)) = self.order.first_key_value() {
            let expired = self
                .slots
                .get(key)
                .is_none_or(|slot| now.saturating_duration_since(slot.stored_at) >= ttl);
            if !expired {
                break;
            }
            self.evict_oldest();
        }
    }
}

pub(super) struct ListCache<K, V> {
    ttl: Duration,
    limits: ListCacheLimits,
    state: Mutex<State<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> ListCache<K, V> {
    /// What one entry costs beyond the value's own weight: the slot, and the key twice
    /// (map and order), not counting what the key points to (the caller adds that).
    const ENTRY_OVERHEAD: usize = size_of::<Slot<V>>() + 2 * size_of::<K>() + size_of::<u64>();

    pub(super) fn new(ttl: Duration, limits: ListCacheLimits) -> Self {
        Self {
            ttl,
            limits,
            state: Mutex::new(State {
                slots: HashMap::new(),
                order: BTreeMap::new(),
                next_stamp: 0,
                bytes: 0,
            }),
        }
    }

    /// The value written for `key` less than the TTL before `now`.
    pub(super) fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .get(key)
            .filter(|slot| now.saturating_duration_since(slot.stored_at) < self.ttl)
            .map(|slot| slot.value.clone())
    }

    /// Stores `value`, which weighs `bytes`, replacing what `key` held; evicts expired
    /// entries, then the oldest ones while a bound would be exceeded.
    pub(super) fn insert(&self, key: K, value: V, bytes: usize, now: Instant) {
        let bytes = bytes.saturating_add(Self::ENTRY_OVERHEAD);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.remove(&key);
        state.evict_expired(now, self.ttl);
        if self.limits.max_entries == 0 || bytes > self.limits.max_bytes {
            return;
        }
        while state.slots.len() >= self.limits.max_entries
            || state.bytes.saturating_add(bytes) > self.limits.max_bytes
        {
            if !state.evict_oldest() {
                break;
            }
        }
        let stamp = state.next_stamp;
        state.next_stamp += 1;
        state.order.insert(stamp, key.clone());
        state.bytes = state.bytes.saturating_add(bytes);
        state.slots.insert(
            key,
            Slot {
                value,
                stored_at: now,
                bytes,
                stamp,
            },
        );
    }

    pub(super) fn usage(&self) -> ListCacheUsage {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        ListCacheUsage {
            entries: state.slots.len(),
            bytes: state.bytes,
        }
    }
}

#[cfg(test)]
#[path = "list_cache_test.rs"]
mod tests;
