//! The occupancy slot listings read, shared between listings for a moment.
//!
//! Every listing needs the seats taken over the days it shows, and on a busy day that is the
//! whole day's appointments: at the end of a 10,000-slot rush, 10,000 rows read, unpacked and
//! sorted per listing — most of the machine's time went there (profiled with the load tool).
//! Listings now share one snapshot per commune and span for [`OCCUPANCY_TTL`]. Within it,
//! this instance's own bookings are added on top as they commit and its releases make the next
//! listing read again, so a listing on one instance is never behind; with several instances, a
//! listing may show for a moment a slot another instance just took. Nothing is decided from
//! it: the booking transaction decides, and answers "slot taken".
//!
//! The seats this instance's bookings are taking — their transactions under way — count as
//! taken too ([`OccupancyCache::taking`]): in a rush, a booking aimed at a slot another one is
//! taking here hears "taken" at once rather than queueing for a database connection to hear
//! it there (the transaction would not wait for that seat either: see `booking`).

use crate::domain::CommuneId;
use crate::domain::slots::{Occupancy, Occupied};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// How long listings reuse the occupancy one of them read.
pub const OCCUPANCY_TTL: Duration = Duration::seconds(1);

/// A snapshot is served while another listing reads its replacement, up to this age.
const SERVED_WHILE_REFRESHED: Duration = Duration::seconds(5);

/// Snapshots not read again for this long are dropped.
const KEPT: Duration = Duration::seconds(60);

/// A commune and the UTC span a listing window reads.
pub type Span = (CommuneId, DateTime<Utc>, DateTime<Utc>);

#[derive(Default)]
pub struct OccupancyCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Span, Entry>,
    /// Numbers this instance's bookings, to tell those a read may have missed.
    seq: u64,
    /// The seats this instance's bookings are taking, by number ([`Taking`]), and the last
    /// number given.
    taking: HashMap<u64, (CommuneId, Occupied)>,
    taking_seq: u64,
}

/// A seat a booking of this instance is taking, counted taken by listings and bookings until
/// dropped (the booking recorded with [`OccupancyCache::taken`], or failed).
pub struct Taking {
    cache: Arc<OccupancyCache>,
    id: u64,
}

impl Drop for Taking {
    fn drop(&mut self) {
        self.cache.inner().taking.remove(&self.id);
    }
}

/// The seats of `commune` being taken, as `taking` lists them.
fn taken_in(
    taking: &HashMap<u64, (CommuneId, Occupied)>,
    commune: CommuneId,
) -> impl Iterator<Item = Occupied> + '_ {
    taking
        .values()
        .filter(move |(c, _)| *c == commune)
        .map(|(_, o)| *o)
}

struct Entry {
    /// None while the first read is under way.
    snapshot: Option<Occupancy>,
    /// When the snapshot's read began, and the last booking number it may have missed.
    read_at: DateTime<Utc>,
    read_seq: u64,
    /// This instance's bookings that the snapshot may lack.
    added: Vec<(u64, Occupied)>,
    refreshing: bool,
    /// The latest read under way (its number, as a ticket's), locked until it ends: listings
    /// that have nothing to use wait for it rather than all reading at once (a rush on a
    /// server just started, or right after a seat was freed).
    reading: Option<(u64, Arc<tokio::sync::Mutex<()>>)>,
    /// This instance freed a seat (numbered like bookings): until a read that began after it
    /// is kept, listings read again.
    released: Option<u64>,
}

impl Entry {
    /// Before its first read.
    fn empty(now: DateTime<Utc>) -> Self {
        Self {
            snapshot: None,
            read_at: now,
            read_seq: 0,
            added: Vec::new(),
            refreshing: false,
            reading: None,
            released: None,
        }
    }

    /// Ends `ticket`'s part in the reads under way.
    fn read_ended(&mut self, ticket: &Ticket) {
        self.refreshing = false;
        if let (Some((_, reading)), Some(lock)) = (&self.reading, &ticket.lock)
            && Arc::ptr_eq(reading, lock)
        {
            self.reading = None;
        }
    }

    /// The snapshot with this instance's bookings on top, and the seats it is `taking`.
    fn current(&self, taking: impl Iterator<Item = Occupied>) -> Option<Occupancy> {
        let snapshot = self.snapshot.as_ref()?;
        let mut taking = taking.peekable();
        Some(if self.added.is_empty() && taking.peek().is_none() {
            snapshot.clone()
        } else {
            snapshot.with(self.added.iter().map(|(_, o)| *o).chain(taking))
        })
    }
}

pub enum Lookup {
    Use(Occupancy),
    /// Read the span and give the result to [`OccupancyCache::store`] (or the ticket to
    /// [`OccupancyCache::abandon`]).
    Read(Ticket),
    /// Another listing is reading what this one needs: wait for its end (this lock), then look
    /// up again, `waited`.
    Wait(Arc<tokio::sync::Mutex<()>>),
}

pub struct Ticket {
    span: Span,
    seq: u64,
    at: DateTime<Utc>,
    /// Held while the read is under way (released however it ends: stored, abandoned, or
    /// dropped with a request given up).
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    _reading: Option<OwnedMutexGuard<()>>,
}

impl OccupancyCache {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a listing of `span` uses, or reads, or waits for. `waited`: it waited already (for
    /// a read that failed or was given up): it reads.
    pub fn lookup(&self, span: Span, now: DateTime<Utc>, waited: bool) -> Lookup {
        let mut inner = self.inner();
        let Inner {
            entries,
            seq,
            taking,
            ..
        } = &mut *inner;
        let seq = *seq;
        let entry = entries.entry(span).or_insert_with(|| Entry::empty(now));
        // A clock set back (tests) counts as expired.
        let age = now - entry.read_at;
        if entry.released.is_none()
            && age >= Duration::zero()
            && (age < OCCUPANCY_TTL || (entry.refreshing && age < SERVED_WHILE_REFRESHED))
            && let Some(occupancy) = entry.current(taken_in(taking, span.0))
        {
            return Lookup::Use(occupancy);
        }
        // Nothing to use (none read yet, or a seat freed since): a read under way that began
        // after the release will do — unless its reader is gone.
        if !waited
            && let Some((reading_seq, lock)) = &entry.reading
            && entry.released.is_none_or(|r| r <= *reading_seq)
            && lock.try_lock().is_err()
        {
            return Lookup::Wait(lock.clone());
        }
        entry.refreshing = true;
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let guard = lock.clone().try_lock_owned().expect("a new lock is free");
        entry.reading = Some((seq, lock.clone()));
        Lookup::Read(Ticket {
            span,
            seq,
            at: now,
            lock: Some(lock),
            _reading: Some(guard),
        })
    }

    /// Keeps what a listing read (as of the ticket), with this instance's bookings that it may
    /// lack on top, and returns that.
    pub fn store(&self, ticket: Ticket, snapshot: Occupancy) -> Occupancy {
        let mut inner = self.inner();
        let now = ticket.at;
        let Inner {
            entries, taking, ..
        } = &mut *inner;
        let taking = || taken_in(taking, ticket.span.0);
        let entry = entries
            .entry(ticket.span)
            .or_insert_with(|| Entry::empty(now));
        entry.read_ended(&ticket);
        if entry.snapshot.is_some() && ticket.seq < entry.read_seq {
            // A newer read was kept meanwhile; bookings this one may lack are no longer
            // listed apart: answer with the newer.
            return entry.current(taking()).unwrap_or(snapshot);
        }
        entry.added.retain(|(seq, _)| *seq > ticket.seq);
        entry.snapshot = Some(snapshot);
        entry.read_at = ticket.at;
        entry.read_seq = ticket.seq;
        if entry.released.is_some_and(|r| r <= ticket.seq) {
            entry.released = None;
        }
        let current = entry.current(taking()).unwrap_or_default();
        entries.retain(|_, e| e.refreshing || (now - e.read_at < KEPT && e.read_at <= now));
        current
    }

    /// A fresh snapshot of `commune` covering `[start, end)`, if a listing read one in the last
    /// moment (this instance's bookings on top, none of its releases since) — for a booking to
    /// skip the plannings that looked full, without a query of its own.
    pub fn covering(
        &self,
        commune: CommuneId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Occupancy> {
        let inner = self.inner();
        inner
            .entries
            .iter()
            .filter(|((c, from, to), _)| *c == commune && *from <= start && end <= *to)
            .filter(|(_, e)| {
                let age = now - e.read_at;
                e.released.is_none() && age >= Duration::zero() && age < OCCUPANCY_TTL
            })
            .find_map(|(_, e)| e.current(taken_in(&inner.taking, commune)))
    }

    /// Counts `occupied` taken, by listings and bookings of this instance, until the guard is
    /// dropped.
    pub fn taking(self: &Arc<Self>, commune: CommuneId, occupied: Occupied) -> Taking {
        let mut inner = self.inner();
        inner.taking_seq += 1;
        let id = inner.taking_seq;
        inner.taking.insert(id, (commune, occupied));
        Taking {
            cache: self.clone(),
            id,
        }
    }

    /// The read failed: another listing will try.
    pub fn abandon(&self, ticket: Ticket) {
        if let Some(entry) = self.inner().entries.get_mut(&ticket.span) {
            entry.read_ended(&ticket);
        }
    }

    /// This instance booked a seat in `commune`.
    pub fn taken(&self, commune: CommuneId, occupied: Occupied) {
        let mut inner = self.inner();
        inner.seq += 1;
        let seq = inner.seq;
        for ((c, start, end), entry) in inner.entries.iter_mut() {
            if *c == commune && occupied.starts_at < *end && occupied.ends_at > *start {
                entry.added.push((seq, occupied));
            }
        }
    }

    /// This instance freed a seat in `commune` (a cancellation, a move, a released hold): its
    /// listings read again.
    pub fn released(&self, commune: CommuneId) {
        let mut inner = self.inner();
        inner.seq += 1;
        let seq = inner.seq;
        for ((c, _, _), entry) in inner.entries.iter_mut() {
            if *c == commune {
                entry.released = Some(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn seat(n: i32, at: i64) -> Occupied {
        Occupied {
            planning_id: 1,
            seat: n,
            starts_at: t(at),
            ends_at: t(at + 600),
        }
    }

    const SPAN: Span = (
        7,
        DateTime::from_timestamp_nanos(0),
        DateTime::<Utc>::MAX_UTC,
    );

    fn read(cache: &OccupancyCache, now: DateTime<Utc>) -> Option<Ticket> {
        match cache.lookup(SPAN, now, false) {
            Lookup::Read(ticket) => Some(ticket),
            Lookup::Use(_) => None,
            Lookup::Wait(_) => panic!("no read under way to wait for"),
        }
    }

    fn seats(o: &Occupancy, at: i64) -> Vec<i32> {
        o.busy_seats(1, t(at), t(at + 600))
    }

    #[test]
    fn listings_share_a_snapshot_with_this_instances_bookings_on_top() {
        let cache = OccupancyCache::default();
        let ticket = read(&cache, t(0)).expect("nothing cached yet");
        // Booked while the first read is under way, after it began: not in what it read.
        cache.taken(7, seat(2, 3600));
        let stored = cache.store(ticket, Occupancy::new([seat(1, 3600)]));
        assert_eq!(seats(&stored, 3600), [1, 2]);
        // Within the TTL, listings use it, with later bookings on top; another commune's
        // bookings are not added.
        cache.taken(7, seat(3, 3600));
        cache.taken(8, seat(4, 3600));
        let Lookup::Use(used) = cache.lookup(SPAN, t(0) + OCCUPANCY_TTL / 2, false) else {
            panic!("fresh snapshot not used");
        };
        assert_eq!(seats(&used, 3600), [1, 2, 3]);
        // Past it, one listing reads again while the others keep using the snapshot.
        let later = t(0) + OCCUPANCY_TTL;
        let ticket = read(&cache, later).expect("expired");
        assert!(read(&cache, later).is_none(), "one refresh at a time");
        // Bookings made before that read began are in what it read; not added twice.
        let stored = cache.store(ticket, Occupancy::new([seat(1, 3600), seat(3, 3600)]));
        assert_eq!(seats(&stored, 3600), [1, 3]);
    }

    #[test]
    fn seats_being_taken_count_until_their_booking_ends() {
        let cache = Arc::new(OccupancyCache::default());
        let ticket = read(&cache, t(0)).unwrap();
        cache.store(ticket, Occupancy::new([seat(1, 3600)]));
        let taking = cache.taking(7, seat(2, 3600));
        let _other_commune = cache.taking(8, seat(3, 3600));
        let listed = |cache: &OccupancyCache| match cache.lookup(SPAN, t(0), false) {
            Lookup::Use(used) => seats(&used, 3600),
            _ => panic!("fresh snapshot not used"),
        };
        assert_eq!(listed(&cache), [1, 2]);
        let covering = cache.covering(7, t(3600), t(4200), t(0)).unwrap();
        assert_eq!(seats(&covering, 3600), [1, 2]);
        drop(taking);
        assert_eq!(listed(&cache), [1]);
    }

    #[test]
    fn a_release_makes_the_next_listing_read_again() {
        let cache = OccupancyCache::default();
        let ticket = read(&cache, t(0)).unwrap();
        cache.store(ticket, Occupancy::new([seat(1, 3600)]));
        cache.released(7);
        let ticket = read(&cache, t(0)).expect("released: read again");
        cache.store(ticket, Occupancy::default());
        assert!(read(&cache, t(0)).is_none());
        // A clock set back, as tests do, reads again too.
        assert!(read(&cache, t(-10)).is_some());
    }

    #[test]
    fn reads_that_overlap_changes_never_lose_this_instances_bookings() {
        let cache = OccupancyCache::default();
        let first = read(&cache, t(0)).unwrap();
        cache.store(first, Occupancy::default());
        // A read begins, then a seat is freed: what it read may still show the freed seat, so
        // the listing after it reads again.
        let before_release = read(&cache, t(0) + OCCUPANCY_TTL).unwrap();
        cache.released(7);
        cache.store(before_release, Occupancy::new([seat(1, 3600)]));
        let after_release = read(&cache, t(0) + OCCUPANCY_TTL).expect("read again");
        // Two reads under way at once, a booking between their starts: the older one, kept
        // last, does not replace the newer one, nor drop the booking.
        let older = after_release;
        cache.taken(7, seat(2, 3600));
        // (The second would wait for the first; having waited, say for a reader that gave
        // up, it reads.)
        let newer = match cache.lookup(SPAN, t(0) + OCCUPANCY_TTL, true) {
            Lookup::Read(ticket) => ticket,
            _ => panic!("released: nothing to use yet"),
        };
        cache.store(newer, Occupancy::new([seat(2, 3600)]));
        let kept = cache.store(older, Occupancy::default());
        assert_eq!(seats(&kept, 3600), [2]);
        let Lookup::Use(used) = cache.lookup(SPAN, t(0) + OCCUPANCY_TTL, false) else {
            panic!("the newer read is kept");
        };
        assert_eq!(seats(&used, 3600), [2]);
    }

    #[test]
    fn bookings_use_a_fresh_snapshot_that_covers_their_slot() {
        let cache = OccupancyCache::default();
        assert!(
            cache.covering(7, t(3600), t(4200), t(0)).is_none(),
            "nothing read yet"
        );
        let span = (7, t(0), t(86_400));
        let Lookup::Read(ticket) = cache.lookup(span, t(0), false) else {
            panic!("nothing cached yet");
        };
        cache.store(ticket, Occupancy::new([seat(1, 3600)]));
        cache.taken(7, seat(2, 3600));
        let soon = t(0) + OCCUPANCY_TTL / 2;
        let covering = cache
            .covering(7, t(3600), t(4200), soon)
            .expect("fresh, covering");
        assert_eq!(seats(&covering, 3600), [1, 2]);
        // Another commune, a slot outside the span, a stale snapshot, a release: none.
        assert!(cache.covering(8, t(3600), t(4200), soon).is_none());
        assert!(cache.covering(7, t(86_000), t(87_000), soon).is_none());
        assert!(
            cache
                .covering(7, t(3600), t(4200), t(0) + OCCUPANCY_TTL)
                .is_none()
        );
        cache.released(7);
        assert!(cache.covering(7, t(3600), t(4200), soon).is_none());
    }

    #[tokio::test]
    async fn listings_with_nothing_to_use_wait_for_one_read() {
        let cache = OccupancyCache::default();
        let ticket = read(&cache, t(0)).unwrap();
        let Lookup::Wait(reading) = cache.lookup(SPAN, t(0), false) else {
            panic!("the first read is under way: wait for it");
        };
        assert!(reading.try_lock().is_err(), "locked while it reads");
        cache.store(ticket, Occupancy::new([seat(1, 3600)]));
        drop(reading.lock().await);
        let Lookup::Use(used) = cache.lookup(SPAN, t(0), true) else {
            panic!("what it read is used");
        };
        assert_eq!(seats(&used, 3600), [1]);

        // After a release, a read that began before it will not do; one that began after will.
        let later = t(0) + OCCUPANCY_TTL;
        let before_release = read(&cache, later).unwrap();
        cache.released(7);
        let after_release = read(&cache, later).expect("not the read from before");
        assert!(matches!(cache.lookup(SPAN, later, false), Lookup::Wait(_)));
        cache.store(before_release, Occupancy::default());
        assert!(matches!(cache.lookup(SPAN, later, false), Lookup::Wait(_)));
        cache.store(after_release, Occupancy::default());
        assert!(matches!(cache.lookup(SPAN, later, false), Lookup::Use(_)));
    }

    #[tokio::test]
    async fn a_reader_that_gives_up_lets_the_waiting_listings_read() {
        let cache = OccupancyCache::default();
        let ticket = read(&cache, t(0)).unwrap();
        let Lookup::Wait(reading) = cache.lookup(SPAN, t(0), false) else {
            panic!("a read is under way");
        };
        // The request reading was given up (its client went away): its ticket is dropped.
        drop(ticket);
        drop(reading.lock().await);
        assert!(matches!(cache.lookup(SPAN, t(0), true), Lookup::Read(_)));
        // Nor does a listing arriving later wait for the reader that is gone.
        let cache = OccupancyCache::default();
        drop(read(&cache, t(0)).unwrap());
        assert!(read(&cache, t(0)).is_some());
    }

    #[test]
    fn a_failed_read_lets_the_next_listing_try() {
        let cache = OccupancyCache::default();
        let ticket = read(&cache, t(0)).unwrap();
        cache.store(ticket, Occupancy::default());
        let ticket = read(&cache, t(0) + OCCUPANCY_TTL).unwrap();
        cache.abandon(ticket);
        assert!(read(&cache, t(0) + OCCUPANCY_TTL).is_some());
    }
}
