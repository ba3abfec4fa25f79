//! Where each member of a group sits in its `members` list, found by the hash of its address:
//! an open-addressing table of 8-byte slots, each the upper half of the address's hash (the
//! tag) and the position. The addresses themselves stay in `members`.
//!
//! Why not `hashbrown`: the table thread applies announcements in batches of a few hundred
//! that land at random in a table of a megabyte or more, which the cache has lost by the time
//! the next batch comes (2 ms later, after other threads and the idle vCPU ran). One
//! cache miss per announcement then costs more than everything else the table does for it.
//! Here a slot's place follows from the hash alone, so [`PositionIndex::prefetch`] can ask
//! for every slot of a batch before the first is needed, and the misses overlap. A slot
//! holds its tag next to its position (one cache line per lookup, not hashbrown's two:
//! control bytes and buckets), and growing re-places slots from their tags without reading
//! a single member.
//!
//! Linear probing, deletion by backward shift (no tombstones), at most 7/8 full.

/// A slot: `tag << 32 | (position + 1)`; 0 is empty.
type Slot = u64;

const EMPTY: Slot = 0;

/// Slots of a table's first allocation.
const MIN_SLOTS: usize = 8;

/// The tag of `hash`: its upper 32 bits. A slot's place is derived from the tag, so that
/// growing needs nothing but the slots.
fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

fn slot(tag: u32, position: u32) -> Slot {
    debug_assert!(position < u32::MAX);
    (u64::from(tag) << 32) | (u64::from(position) + 1)
}

fn slot_tag(slot: Slot) -> u32 {
    (slot >> 32) as u32
}

fn slot_position(slot: Slot) -> u32 {
    (slot as u32).wrapping_sub(1)
}

/// Where a lookup for a hash not in the index stopped: the empty slot an insert fills.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vacant(usize);

#[derive(Debug, Default)]
pub(crate) struct PositionIndex {
    /// A power of two long (or empty).
    slots: Vec<Slot>,
    len: usize,
}

impl PositionIndex {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries it holds before it grows.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len() / 8 * 7
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// Asks the CPU to bring the slot a lookup of `hash` starts at into the cache, without
    /// waiting for it.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let slot = &self.slots[self.home(tag(hash))];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it reads nothing into the program and cannot fault;
        // the pointer is to a live slot anyway.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                (slot as *const Slot).cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// The position of the entry with `hash` for which `is_it(position)` holds, or where an
    /// insert of it would go.
    pub(crate) fn find(
        &self,
        hash: u64,
        mut is_it: impl FnMut(u32) -> bool,
    ) -> Result<u32, Vacant> {
        if self.slots.is_empty() {
            return Err(Vacant(usize::MAX));
        }
        let tag = tag(hash);
        let mask = self.mask();
        let mut index = self.home(tag);
        loop {
            let slot = self.slots[index];
            if slot == EMPTY {
                return Err(Vacant(index));
            }
            if slot_tag(slot) == tag && is_it(slot_position(slot)) {
                return Ok(slot_position(slot));
            }
            index = (index + 1) & mask;
        }
    }

    /// Adds `position` for `hash` where `find` said it was not (the index unchanged since).
    pub(crate) fn insert(&mut self, vacant: Vacant, hash: u64, position: u32) {
        if self.len >= self.capacity() {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
            self.place(slot(tag(hash), position));
        } else {
            self.slots[vacant.0] = slot(tag(hash), position);
        }
        self.len += 1;
    }

    /// Puts `slot` in the first free slot from its home (the slot is known to be new).
    fn place(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut index = self.home(slot_tag(slot));
        while self.slots[index] != EMPTY {
            index = (index + 1) & mask;
        }
        self.slots[index] = slot;
    }

    /// The index of the slot holding `position` under `hash`.
    fn slot_of(&self, hash: u64, position: u32) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let wanted = slot(tag(hash), position);
        let mask = self.mask();
        let mut index = self.home(tag(hash));
        loop {
            match self.slots[index] {
                EMPTY => return None,
                found if found == wanted => return Some(index),
                _ => index = (index + 1) & mask,
            }
        }
    }

    /// Removes the entry of `position` under `hash`; false if there is none.
    pub(crate) fn remove(&mut self, hash: u64, position: u32) -> bool {
        let Some(mut hole) = self.slot_of(hash, position) else {
            return false;
        };
        let mask = self.mask();
        // Backward shift: each following slot of the run moves into the hole if its home
        // is not after the hole, so that every lookup still meets no empty slot before its
        // entry.
        let mut next = (hole + 1) & mask;
        while self.slots[next] != EMPTY {
            let home = self.home(slot_tag(self.slots[next]));
            // Distances along the probe sequence, wrapping around the end.
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Points the entry of `old` under `hash` at `new` instead (a member moved in the list).
    pub(crate) fn move_position(&mut self, hash: u64, old: u32, new: u32) -> bool {
        match self.slot_of(hash, old) {
            Some(index) => {
                self.slots[index] = slot(tag(hash), new);
                true
            }
            None => false,
        }
    }

    /// Shrinks so that it holds `entries` (at least its own) before growing again.
    pub(crate) fn shrink_to(&mut self, entries: usize) {
        let wanted = Self::slots_for(entries.max(self.len));
        if wanted < self.slots.len() {
            self.resize(wanted);
        }
    }

    /// Slots (a power of two) holding `entries` within the load limit.
    fn slots_for(entries: usize) -> usize {
        if entries == 0 {
            return 0;
        }
        (entries * 8).div_ceil(7).next_power_of_two().max(MIN_SLOTS)
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        if slots == 0 {
            return;
        }
        for slot in old.into_iter().filter(|&slot| slot != EMPTY) {
            self.place(slot);
        }
    }

    #[cfg(test)]
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Hashes chosen to collide: a few distinct tags, so that probe runs are long, wrap
    /// around the end and are shifted by removals.
    fn colliding_hash(key: u16) -> u64 {
        let tag = u64::from(key % 7) * 0x1111 + u64::from(key % 3);
        (tag << 32) | u64::from(key)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        Lookup(u16),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..300).prop_map(Op::Insert),
            2 => (0u16..300).prop_map(Op::Remove),
            2 => (0u16..300).prop_map(Op::Lookup),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        /// The index used as the table uses it (keys kept in a list, removal by swapping the
        /// last into the hole) agrees with a `HashMap` after any sequence of changes.
        #[test]
        fn agrees_with_a_hash_map(ops in proptest::collection::vec(op(), 1..600)) {
            let mut index = PositionIndex::default();
            let mut keys: Vec<u16> = Vec::new();
            let mut model: HashMap<u16, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(key) => {
                        let found = index.find(colliding_hash(key), |p| keys[p as usize] == key);
                        match found {
                            Ok(position) => prop_assert_eq!(Some(&position), model.get(&key)),
                            Err(vacant) => {
                                prop_assert!(!model.contains_key(&key));
                                index.insert(vacant, colliding_hash(key), keys.len() as u32);
                                model.insert(key, keys.len() as u32);
                                keys.push(key);
                            }
                        }
                    }
                    Op::Remove(key) => {
                        let Some(position) = model.remove(&key) else {
                            continue;
                        };
                        prop_assert!(index.remove(colliding_hash(key), position));
                        let last = keys.len() as u32 - 1;
                        keys.swap_remove(position as usize);
                        if position != last {
                            let moved = keys[position as usize];
                            prop_assert!(index.move_position(colliding_hash(moved), last, position));
                            model.insert(moved, position);
                        }
                    }
                    Op::Lookup(key) => {
                        let found = index.find(colliding_hash(key), |p| keys[p as usize] == key);
                        prop_assert_eq!(found.ok(), model.get(&key).copied());
                    }
                    Op::Shrink => index.shrink_to(0),
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert!(index.len() <= index.capacity() || index.len() == 0);
            }
            for (key, position) in &model {
                let found = index.find(colliding_hash(*key), |p| keys[p as usize] == *key);
                prop_assert_eq!(found.ok(), Some(*position));
            }
        }
    }

    #[test]
    fn grows_by_doubling_and_shrinks_to_what_it_holds() {
        let mut index = PositionIndex::default();
        let hash = |n: u32| u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for n in 0..1000u32 {
            let vacant = index.find(hash(n), |p| p == n).unwrap_err();
            index.insert(vacant, hash(n), n);
        }
        assert_eq!(index.slot_count(), 2048, "1000 entries at most 7/8 full");
        for n in 100..1000u32 {
            assert!(index.remove(hash(n), n));
        }
        index.shrink_to(0);
        assert_eq!(index.slot_count(), 128);
        assert!((0..100).all(|n| index.find(hash(n), |p| p == n).ok() == Some(n)));
        // Entries it does not hold are neither removed nor moved (and the search for them
        // ends at the first empty slot).
        assert!(!index.remove(hash(5000), 5000));
        assert!(!index.move_position(hash(5000), 5000, 1));
        assert!(!index.remove(hash(1), 2), "an entry is matched by its position too");
        for n in 0..100u32 {
            assert!(index.remove(hash(n), n));
        }
        index.shrink_to(0);
        assert_eq!((index.slot_count(), index.len()), (0, 0));
        assert!(index.find(hash(1), |_| true).is_err());
    }
}
