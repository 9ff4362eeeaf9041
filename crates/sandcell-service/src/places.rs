//! The live-session quotas: how many Python processes the server runs at once, and how
//! many of them one user's. A [`Place`] is one process's share, held as long as the
//! process lives; dropping it gives the place back. Sessions kept warm for the next
//! client hold places too, so that what runs never exceeds what the operator allows.

use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Who holds a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    User(i64),
    /// A session started ahead of demand, not yet anyone's.
    Warm,
}

/// Which quota is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    User,
    Server,
}

pub(crate) struct Places {
    max: usize,
    pub(crate) max_per_user: usize,
    /// Places held by each holder; their sum is the server's.
    taken: Mutex<HashMap<Holder, usize>>,
    gauge: Gauge,
}

/// One live session's place; keeps the counts and the gauge true.
pub(crate) struct Place {
    places: Arc<Places>,
    holder: Holder,
}

impl Places {
    pub(crate) fn new(max: usize, max_per_user: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            max,
            max_per_user,
            taken: Mutex::default(),
            gauge,
        })
    }

    /// A new place for `holder`, if both quotas allow it (a warm session is held only to
    /// the server's). A user's quota counts `elsewhere`, the user's sessions that other
    /// nodes sharing the database run.
    pub(crate) fn take(
        places: &Arc<Self>,
        holder: Holder,
        elsewhere: usize,
    ) -> Result<Place, Full> {
        let mut taken = places.taken();
        if taken.values().sum::<usize>() >= places.max {
            return Err(Full::Server);
        }
        let held = taken.entry(holder).or_default();
        if matches!(holder, Holder::User(_)) && *held + elsewhere >= places.max_per_user {
            return Err(Full::User);
        }
        *held += 1;
        places.gauge.inc();
        Ok(Place {
            places: places.clone(),
            holder,
        })
    }

    /// Places held by `holder`.
    #[cfg(test)]
    fn held_by(&self, holder: Holder) -> usize {
        self.taken().get(&holder).copied().unwrap_or(0)
    }

    fn taken(&self) -> MutexGuard<'_, HashMap<Holder, usize>> {
        // Counts are changed in one step each: a panic cannot leave them torn.
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Place {
    /// Hands this place to `holder`, if the user's quota allows (counting `elsewhere`, as
    /// [`Places::take`] does); the server's count does not change. On refusal the place
    /// stays as it was.
    pub(crate) fn transfer(&mut self, holder: Holder, elsewhere: usize) -> Result<(), Full> {
        let mut taken = self.places.taken();
        let held = taken.get(&holder).copied().unwrap_or(0);
        if matches!(holder, Holder::User(_)) && held + elsewhere >= self.places.max_per_user {
            return Err(Full::User);
        }
        release(&mut taken, self.holder);
        *taken.entry(holder).or_default() += 1;
        self.holder = holder;
        Ok(())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        release(&mut self.places.taken(), self.holder);
        self.places.gauge.dec();
    }
}

fn release(taken: &mut HashMap<Holder, usize>, holder: Holder) {
    if let Some(count) = taken.get_mut(&holder) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            taken.remove(&holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_and_each_user_have_their_own_quota() {
        let gauge = Gauge::default();
        let places = Places::new(3, 2, gauge.clone());
        let alice = Holder::User(1);
        let a1 = Places::take(&places, alice, 0).unwrap();
        let _a2 = Places::take(&places, alice, 0).unwrap();
        assert_eq!(Places::take(&places, alice, 0).err(), Some(Full::User));
        let _b1 = Places::take(&places, Holder::User(2), 0).unwrap();
        assert_eq!(
            Places::take(&places, Holder::User(2), 0).err(),
            Some(Full::Server)
        );
        assert_eq!(gauge.get(), 3);
        drop(a1);
        assert_eq!(places.held_by(alice), 1);
        assert_eq!(gauge.get(), 2);
        assert!(Places::take(&places, Holder::User(3), 0).is_ok());
    }

    #[test]
    fn a_users_sessions_on_other_nodes_count_toward_their_quota() {
        let places = Places::new(10, 2, Gauge::default());
        let _a1 = Places::take(&places, Holder::User(1), 1).unwrap();
        assert_eq!(
            Places::take(&places, Holder::User(1), 1).err(),
            Some(Full::User)
        );
        let mut warm = Places::take(&places, Holder::Warm, 5).unwrap();
        assert_eq!(warm.transfer(Holder::User(1), 1), Err(Full::User));
        assert!(warm.transfer(Holder::User(2), 1).is_ok());
    }

    #[test]
    fn a_warm_place_goes_to_a_user_within_their_quota_only() {
        let places = Places::new(10, 1, Gauge::default());
        let mut warm = Places::take(&places, Holder::Warm, 0).unwrap();
        let mut second = Places::take(&places, Holder::Warm, 0).unwrap();
        assert_eq!(places.held_by(Holder::Warm), 2);
        warm.transfer(Holder::User(7), 0).unwrap();
        assert_eq!(places.held_by(Holder::User(7)), 1);
        assert_eq!(places.held_by(Holder::Warm), 1);
        assert_eq!(second.transfer(Holder::User(7), 0), Err(Full::User));
        assert_eq!(
            places.held_by(Holder::Warm),
            1,
            "a refused transfer changes nothing"
        );
        drop(warm);
        drop(second);
        assert_eq!(places.held_by(Holder::User(7)), 0);
        assert_eq!(places.held_by(Holder::Warm), 0);
    }
}
