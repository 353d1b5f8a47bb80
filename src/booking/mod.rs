//! The booking engine: every channel (web, telephone, agents) books, confirms, cancels and moves
//! through these functions, and nothing else writes appointments.
//!
//! Guarantees:
//! - each operation is one database transaction: it happens entirely or not at all;
//! - capacity is decided inside that transaction, under the planning's lock (see
//!   [`crate::store`]), and the schema refuses an overlapping seat whatever the code does — no
//!   overbooking, whatever mix of channels races for a slot (invariant 1);
//! - a citizen (mobile number, e-mail or ANTS application id) has at most one active appointment
//!   per category unless the commune allows more; a refusal says where and when the other one is
//!   (invariant 2);
//! - an expired hold stops counting at its expiry instant: reads ignore it, and the next
//!   transaction on its planning marks it `expired` — correctness never waits for a sweeper;
//! - a move takes the new slot in the same transaction that releases the old one, so the citizen
//!   always has exactly one of the two;
//! - transient conflicts (lock timeouts, PostgreSQL serialization failures or deadlocks) are
//!   retried a few times; nothing is half-written in between.

mod citizen;
mod commune;
mod error;
mod occupancy;

pub use commune::{CommuneCancellation, Told, as_new};

pub use error::BookingError;
pub use occupancy::OCCUPANCY_TTL;

use crate::domain::otp::{self, OtpCode};
use crate::domain::reminders::reminder_due;
use crate::domain::slots::{FreeSlot, Occupancy, Occupied, SlotFilter, SlotSearch, choose_seat};
use crate::domain::{
    Appointment, AppointmentId, AppointmentPlace, Category, Channel, Citizen, Clock, Closure,
    Commune, CommuneId, Location, LocationId, OpeningRule, Planning, PlanningId, Service,
    ServiceId, Status,
};
use crate::domain::{MessageChannel, NotificationKind, PhoneE164};
use crate::notify::templates::Subject;
use crate::notify::{CodeDestination, Notifier};
use crate::store::{
    Claim, ClaimHolder, ClaimKind, ConfirmAtOnce, HeldAtOnce, HoldAtOnce, OtpRecord, Seats, Store,
    StoreError, StoreTx,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

type Result<T, E = BookingError> = std::result::Result<T, E>;

/// What a channel asks the engine to book.
#[derive(Debug, Clone)]
pub struct BookingRequest {
    pub commune: CommuneId,
    pub service: ServiceId,
    pub start: DateTime<Utc>,
    /// `None`: the first location with a free seat at that time.
    pub location: Option<LocationId>,
    pub persons: u32,
    pub citizen: Citizen,
    pub channel: Channel,
}

/// Whether a booking waits for the citizen's code (`Hold`) or is confirmed at once (an agent at
/// the counter needs no code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingMode {
    Hold,
    /// Held on the web the moment the slot is chosen, before the citizen has typed who they
    /// are: no contact yet; [`Engine::provide_details`] adds it and sends the code.
    HoldForDetails,
    Confirmed,
}

/// Who cancels, which decides the status and what may be cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    ByCitizen,
    /// The citizen answered OUI to an SMS: the answer to that SMS is the notice.
    ByCitizenReplyingSms,
    ByCommune {
        reason: String,
    },
}

/// The outcome an agent records after the appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attendance {
    Honoured,
    NoShow,
}

/// Everything the slot computation reads for one commune and one service.
pub struct SlotContext {
    pub commune: Commune,
    pub service: Service,
    pub locations: Vec<Location>,
    pub plannings: Vec<Planning>,
    pub rules: Vec<OpeningRule>,
    pub closures: Vec<Closure>,
}

impl SlotContext {
    pub fn search(&self, now: DateTime<Utc>) -> SlotSearch<'_> {
        SlotSearch {
            commune: &self.commune,
            service: &self.service,
            locations: &self.locations,
            plannings: &self.plannings,
            rules: &self.rules,
            closures: &self.closures,
            now,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hold_duration: Duration,
    /// How long a replacement offered by the commune stays held for the citizen.
    proposal_hold: Duration,
    notifier: Notifier,
    /// Keys the hashes of one-time codes; shared by every instance (see `App::connect`).
    otp_key: Arc<[u8]>,
    /// Wakes the outbox worker when a change wrote messages due now.
    wake: Arc<Notify>,
    configs: Arc<Mutex<ConfigCache>>,
    /// What slot listings read, shared between them for a moment (see `occupancy`).
    listings: Arc<occupancy::OccupancyCache>,
    /// Slugs never change: each one's commune id, once found.
    slugs: Arc<Mutex<HashMap<String, CommuneId>>>,
    /// Taken by a request looking up a slug not known yet: the first requests of a server
    /// just started in a rush look it up once, not each.
    slug_lookup: Arc<tokio::sync::Mutex<()>>,
}

/// Each commune's configuration and when it was read.
#[derive(Default)]
struct ConfigCache {
    entries: HashMap<CommuneId, CachedConfig>,
    /// Counts each commune's [`Engine::forget_config`] calls: a read that began before one is
    /// not kept.
    forgotten: HashMap<CommuneId, u64>,
    /// Present while a request reads a commune's configuration for the first time; those
    /// arriving meanwhile wait for it (see [`Engine::config`]).
    loading: HashMap<CommuneId, Arc<tokio::sync::Mutex<()>>>,
    /// The closures listings read, by commune and UTC span, kept for [`OCCUPANCY_TTL`] and
    /// until this instance changes the commune's configuration.
    closures: HashMap<ClosuresKey, CachedClosures>,
    /// Present while a request reads closures the cache has not (or no longer) got; those
    /// arriving meanwhile wait for its read rather than each making their own.
    reading_closures: HashMap<ClosuresKey, Arc<tokio::sync::Mutex<()>>>,
}

type ClosuresKey = (CommuneId, DateTime<Utc>, DateTime<Utc>);

impl ConfigCache {
    fn forgotten(&self, commune: CommuneId) -> u64 {
        self.forgotten.get(&commune).copied().unwrap_or(0)
    }
}

struct CachedConfig {
    read_at: std::time::Instant,
    config: Arc<CommuneConfig>,
    /// A request is reading it again; the others go on with this one meanwhile.
    refreshing: bool,
}

struct CachedClosures {
    read_at: DateTime<Utc>,
    forgotten: u64,
    closures: Vec<Closure>,
}

/// A request's read of a commune's configuration, however it ends (kept, failed, dropped
/// midway): the entry it was refreshing is no longer marked so, and the requests waiting for
/// a first read go on.
struct ConfigRead {
    cache: Arc<Mutex<ConfigCache>>,
    commune: CommuneId,
    first: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for ConfigRead {
    fn drop(&mut self) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.entries.get_mut(&self.commune) {
            cached.refreshing = false;
        }
        if self.first.is_some() {
            cache.loading.remove(&self.commune);
        }
    }
}

/// How long an expired configuration is still served while one request reads it again.
const CONFIG_SERVED_WHILE_REFRESHED: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a commune's configuration is reused before being read again.
pub const CONFIG_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// A commune and what it offers, as the slot search reads them.
#[derive(Debug)]
pub struct CommuneConfig {
    pub commune: Commune,
    pub services: Vec<Service>,
    pub locations: Vec<Location>,
    pub plannings: Vec<Planning>,
    pub rules: Vec<OpeningRule>,
}

/// The commune, service and location of an appointment, read before its transaction.
pub struct Details {
    pub commune: Commune,
    pub service: Service,
    pub location: Location,
}

/// How many times a transaction that hit a transient conflict is run again.
const ATTEMPTS: u32 = 5;

/// UTC instants surely covering local dates `from..=to` in any time zone (zones span −12 h to
/// +14 h): reading a little more than needed is cheaper than being wrong at a boundary.
fn utc_span(from: NaiveDate, to: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() - Duration::hours(15);
    let end = to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() + Duration::hours(39);
    (start, end)
}

impl Engine {
    /// An engine with links to `http://127.0.0.1:8080` and a one-time-code key of its own; the
    /// application sets both with [`Engine::with_public_url`] and [`Engine::with_otp_key`].
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, hold_duration: Duration) -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            store,
            clock,
            hold_duration,
            proposal_hold: Duration::hours(48),
            notifier: Notifier::new("http://127.0.0.1:8080"),
            otp_key: Arc::from(key.as_slice()),
            wake: Arc::new(Notify::new()),
            configs: Arc::default(),
            listings: Arc::default(),
            slugs: Arc::default(),
            slug_lookup: Arc::default(),
        }
    }

    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.notifier = Notifier::new(public_url);
        self
    }

    pub fn with_proposal_hold(mut self, hold: Duration) -> Self {
        self.proposal_hold = hold;
        self
    }

    pub fn with_otp_key(mut self, key: &[u8]) -> Self {
        self.otp_key = Arc::from(key);
        self
    }

    /// The secret every instance shares (the one-time codes' key), for what else the
    /// application keys or seals with it.
    pub(crate) fn shared_secret(&self) -> &[u8] {
        &self.otp_key
    }

    /// The notification the outbox worker waits on.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// What the messages about an appointment need (from the cached configuration).
    pub async fn details(&self, appointment: &Appointment) -> Result<Details> {
        let config = self.config(appointment.commune_id).await?;
        Ok(Details {
            commune: config.commune.clone(),
            service: config
                .services
                .iter()
                .find(|s| s.id == appointment.service_id)
                .cloned()
                .ok_or(BookingError::ServiceNotFound)?,
            location: config
                .locations
                .iter()
                .find(|l| l.id == appointment.location_id)
                .cloned()
                .ok_or(BookingError::LocationNotFound)?,
        })
    }

    fn subject<'a>(
        &self,
        details: &'a Details,
        appointment: &'a Appointment,
        booking_url: &'a str,
    ) -> Subject<'a> {
        Subject {
            commune: &details.commune,
            service: &details.service,
            location: &details.location,
            appointment,
            booking_url,
        }
    }

    /// Whether the number of an appointment at `starts_at`, confirmed now, said STOP. That
    /// decides only how its reminder goes (the confirmation is sent anyway): for an appointment
    /// too close to get one, it is not read.
    async fn opted_out_of_reminder(
        &self,
        commune: &Commune,
        phone: Option<&PhoneE164>,
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        match phone {
            Some(phone) if reminder_due(commune, starts_at, now).is_some() => {
                Ok(self.store.is_sms_opted_out(phone.as_str()).await?)
            }
            _ => Ok(false),
        }
    }

    async fn sms_opted_out(&self, appointment: &Appointment) -> Result<bool> {
        Ok(match &appointment.citizen.phone {
            Some(phone) => self.store.is_sms_opted_out(phone.as_str()).await?,
            None => false,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs `op` again while it fails with a transient conflict, with a short growing pause.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(BookingError::Store(StoreError::Transient(e))) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "transient conflict, retrying");
                    let pause = 5 * u64::from(attempt) + u64::from(rand::random::<u8>() % 10);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Loads the commune's rules for `service` and the closures over local dates `from..=to`,
    /// to list free slots. The closures are those a listing read in the last moment, as the
    /// seats taken are ([`OCCUPANCY_TTL`]): a closure made on this instance shows at once, one
    /// made on another within that delay — a booking reads them afresh
    /// and refuses a closed slot.
    pub async fn slot_context(
        &self,
        commune: CommuneId,
        service: ServiceId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<SlotContext> {
        self.context(commune, service, from, to, Some(false)).await
    }

    /// `closures`: None to leave them out, `Some(fresh)` to read them now or not.
    async fn context(
        &self,
        commune: CommuneId,
        service: ServiceId,
        from: NaiveDate,
        to: NaiveDate,
        closures: Option<bool>,
    ) -> Result<SlotContext> {
        let (start, end) = utc_span(from, to);
        let (config, closures) = tokio::try_join!(self.config(commune), async {
            match closures {
                Some(fresh) => self.closures(commune, start, end, fresh).await,
                None => Ok(Vec::new()),
            }
        })?;
        let service = config
            .services
            .iter()
            .find(|s| s.id == service && s.active)
            .cloned()
            .ok_or(BookingError::ServiceNotFound)?;
        Ok(SlotContext {
            commune: config.commune.clone(),
            service,
            locations: config.locations.clone(),
            plannings: config.plannings.clone(),
            rules: config.rules.clone(),
            closures,
        })
    }

    /// A commune's closures over `[start, end)`: read now when `fresh`, otherwise possibly
    /// as a listing read them a moment ago (see [`Engine::slot_context`]).
    async fn closures(
        &self,
        commune: CommuneId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        fresh: bool,
    ) -> Result<Vec<Closure>> {
        let key = (commune, start, end);
        let cached = |cache: &ConfigCache, now: DateTime<Utc>| {
            let found = cache.closures.get(&key)?;
            let age = now - found.read_at;
            (found.forgotten == cache.forgotten(commune)
                && age >= Duration::zero()
                && age < occupancy::OCCUPANCY_TTL)
                .then(|| found.closures.clone())
        };
        let mut turn = None;
        let (now, forgotten) = loop {
            let now = self.clock.now();
            let gate = {
                let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
                if fresh {
                    break (now, cache.forgotten(commune));
                }
                if let Some(closures) = cached(&cache, now) {
                    return Ok(closures);
                }
                // A rush finds them expired all at once: one request reads, the others wait
                // for its read and use it.
                if turn.is_some() {
                    break (now, cache.forgotten(commune));
                }
                cache.reading_closures.entry(key).or_default().clone()
            };
            turn = Some(gate.lock_owned().await);
        };
        let read = self.store.closures(commune, start, end).await;
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if turn.is_some() {
            // Those waiting hold the lock's handle; later arrivals find the cache filled.
            cache.reading_closures.remove(&key);
        }
        let closures = read?;
        if cache.forgotten(commune) == forgotten {
            cache
                .closures
                .retain(|_, c| now - c.read_at < Duration::minutes(1) && c.read_at <= now);
            // Left by a reader whose request was dropped midway, once nobody waits on it.
            cache
                .reading_closures
                .retain(|_, gate| Arc::strong_count(gate) > 1);
            cache.closures.insert(
                key,
                CachedClosures {
                    read_at: now,
                    forgotten,
                    closures: closures.clone(),
                },
            );
        }
        Ok(closures)
    }

    /// A commune's configuration (services, locations, plannings, opening rules), read at
    /// most every [`CONFIG_TTL`] per instance. Changes made through another instance show
    /// within that delay; [`Engine::forget_config`] makes this instance's own changes show at
    /// once. Bookings never depend on it for capacity: the transaction decides that.
    pub async fn config(&self, commune: CommuneId) -> Result<Arc<CommuneConfig>> {
        let mut waited = false;
        let (now, forgotten, _read) = loop {
            let now = std::time::Instant::now();
            let first_read = {
                let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
                let forgotten = cache.forgotten(commune);
                if let Some(cached) = cache.entries.get_mut(&commune) {
                    let age = now.duration_since(cached.read_at);
                    // When it expires under load, one request reads it again while the others
                    // go on with it.
                    if age < CONFIG_TTL
                        || (cached.refreshing && age < CONFIG_SERVED_WHILE_REFRESHED)
                    {
                        return Ok(cached.config.clone());
                    }
                    cached.refreshing = true;
                    let read = ConfigRead {
                        cache: self.configs.clone(),
                        commune,
                        first: None,
                    };
                    break (now, forgotten, read);
                }
                match cache.loading.get(&commune) {
                    // The first requests for a commune (a rush on a server just started) wait
                    // for one read instead of all reading: five queries each. If that read
                    // failed, each reads for itself.
                    Some(first_read) if !waited => first_read.clone(),
                    _ => {
                        let first = (!waited).then(|| {
                            let lock = Arc::new(tokio::sync::Mutex::new(()));
                            cache.loading.insert(commune, lock.clone());
                            lock.try_lock_owned().expect("a new lock is free")
                        });
                        let read = ConfigRead {
                            cache: self.configs.clone(),
                            commune,
                            first,
                        };
                        break (now, forgotten, read);
                    }
                }
            };
            drop(first_read.lock().await);
            waited = true;
        };
        let store = &self.store;
        let (found, services, locations, plannings, rules) = tokio::try_join!(
            store.commune(commune),
            store.services(commune),
            store.locations(commune),
            store.plannings(commune),
            store.opening_rules(commune),
        )?;
        let config = Arc::new(CommuneConfig {
            commune: found.ok_or(BookingError::CommuneNotFound)?,
            services,
            locations,
            plannings,
            rules,
        });
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        // Read before a change this instance made and forgot: answer with it, keep nothing.
        if cache.forgotten(commune) == forgotten {
            cache.entries.insert(
                commune,
                CachedConfig {
                    read_at: now,
                    config: config.clone(),
                    refreshing: false,
                },
            );
        }
        Ok(config)
    }

    /// The commune of a slug, from the cached configuration (every request of a page or of the
    /// API names its commune: a query each time is a query for nothing).
    pub async fn commune_by_slug(&self, slug: &str) -> Result<Option<Commune>> {
        // What cannot be a slug names no commune, without asking the database (which may refuse
        // the text itself: PostgreSQL takes no NUL character).
        if !crate::domain::Slug::parse(slug).is_ok_and(|s| s.as_str() == slug) {
            return Ok(None);
        }
        let known = || {
            self.slugs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(slug)
                .copied()
        };
        let mut looking_up = None;
        if known().is_none() {
            looking_up = Some(self.slug_lookup.lock().await);
        }
        let id = match known() {
            Some(id) => id,
            None => match self.store.commune_by_slug(slug).await? {
                Some(commune) => {
                    self.slugs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(slug.to_owned(), commune.id);
                    commune.id
                }
                None => return Ok(None),
            },
        };
        drop(looking_up);
        match self.config(id).await {
            Ok(config) => Ok(Some(config.commune.clone())),
            Err(BookingError::CommuneNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Drops the cached configuration of a commune (after changing it).
    pub fn forget_config(&self, commune: CommuneId) {
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        *cache.forgotten.entry(commune).or_default() += 1;
        cache.entries.remove(&commune);
    }

    /// The slot context around one instant (the day before to the day after, so that the local
    /// date is covered in any time zone). `closures` as for [`Engine::context`]: read now
    /// (`Some(true)`), as listed a moment ago (`Some(false)`: the transaction that books
    /// reads them again, see [`StoreTx::seats_of`]), or left out.
    async fn context_at(
        &self,
        commune: CommuneId,
        service: ServiceId,
        at: DateTime<Utc>,
        closures: Option<bool>,
    ) -> Result<SlotContext> {
        let day = at.date_naive();
        let (before, after) = (day.pred_opt().unwrap_or(day), day.succ_opt().unwrap_or(day));
        self.context(commune, service, before, after, closures)
            .await
    }

    /// Free slots of a service, in time order. With a limit, the search reads a few days at a
    /// time and stops as soon as it has enough — the next 20 slots should not cost a 90-day scan.
    pub async fn free_slots(
        &self,
        commune: CommuneId,
        service: ServiceId,
        filter: SlotFilter,
    ) -> Result<Vec<FreeSlot>> {
        let ctx = self
            .slot_context(commune, service, filter.from, filter.to)
            .await?;
        self.free_slots_in(&ctx, filter).await
    }

    /// [`Engine::free_slots`] with the context already read (its closures must cover
    /// `filter.from..=filter.to`).
    pub async fn free_slots_in(
        &self,
        ctx: &SlotContext,
        filter: SlotFilter,
    ) -> Result<Vec<FreeSlot>> {
        let now = self.clock.now();
        if let Some(location) = filter.location
            && !ctx.locations.iter().any(|l| l.id == location && l.active)
        {
            return Err(BookingError::LocationNotFound);
        }
        let (first, last) = ctx.search(now).bookable_dates();
        let (from, to) = (filter.from.max(first), filter.to.min(last));
        let mut found: Vec<FreeSlot> = Vec::new();
        let mut window_start = from;
        let mut window_days: i64 = if filter.limit.is_some() { 3 } else { 100_000 };
        while window_start <= to {
            let window_end = window_start
                .checked_add_signed(Duration::days(window_days - 1))
                .map_or(to, |d| d.min(to));
            let (span_start, span_end) = utc_span(window_start, window_end);
            let taken = self
                .listing_occupancy((ctx.commune.id, span_start, span_end), now)
                .await?;
            let window_filter = SlotFilter {
                from: window_start,
                to: window_end,
                limit: filter.limit.map(|l| l.saturating_sub(found.len())),
                ..filter
            };
            // With a limit the search stops early (the next 100 slots: a tenth of a millisecond);
            // without one it may walk months of a busy diary.
            found.extend(cpu_bound(filter.limit.is_none(), || {
                ctx.search(now).free_slots(&window_filter, &taken)
            }));
            if filter.limit.is_some_and(|l| found.len() >= l) {
                break;
            }
            window_start = match window_end.succ_opt() {
                Some(d) => d,
                None => break,
            };
            window_days = (window_days * 2).min(100_000);
        }
        Ok(found)
    }

    /// The seats taken over a listing's span: shared with the listings of the last moment,
    /// this instance's own changes included (see `occupancy`).
    async fn listing_occupancy(
        &self,
        span: occupancy::Span,
        now: DateTime<Utc>,
    ) -> Result<Occupancy> {
        let mut waited = false;
        let ticket = loop {
            match self.listings.lookup(span, now, waited) {
                occupancy::Lookup::Use(taken) => return Ok(taken),
                occupancy::Lookup::Read(ticket) => break ticket,
                occupancy::Lookup::Wait(reading) => {
                    drop(reading.lock().await);
                    waited = true;
                }
            }
        };
        let (commune, start, end) = span;
        match self.store.occupancy(commune, start, end, now).await {
            Ok(rows) => {
                let snapshot = cpu_bound(rows.len() > HEAVY_OCCUPANCY, || Occupancy::new(rows));
                Ok(self.listings.store(ticket, snapshot))
            }
            Err(e) => {
                self.listings.abandon(ticket);
                Err(e.into())
            }
        }
    }

    /// Tells the listings this instance took a seat.
    fn seat_taken(&self, appointment: &Appointment) {
        if let Some(seat) = appointment.seat {
            self.listings.taken(
                appointment.commune_id,
                Occupied {
                    planning_id: appointment.planning_id,
                    seat,
                    starts_at: appointment.starts_at,
                    ends_at: appointment.ends_at,
                },
            );
        }
    }

    /// Tells the listings this instance freed a seat in `commune`.
    fn seat_released(&self, commune: CommuneId) {
        self.listings.released(commune);
    }

    /// Books a slot: held (for a confirmation the channel obtains itself), or confirmed at once
    /// (an agent at the counter needs no code; the citizen is told if a contact was given).
    pub async fn book(&self, req: &BookingRequest, mode: BookingMode) -> Result<Appointment> {
        let (appointment, _) = self.retry(|| self.book_once(req, mode, false)).await?;
        Ok(appointment)
    }

    /// Holds a slot and sends the citizen a one-time code, in the same transaction: by SMS to
    /// a mobile that can take it, otherwise by e-mail.
    pub async fn book_with_code(
        &self,
        req: &BookingRequest,
    ) -> Result<(Appointment, CodeDestination)> {
        let result = self
            .retry(|| self.book_once(req, BookingMode::Hold, true))
            .await;
        if let Err(BookingError::Duplicate(Some(place))) = &result {
            // The person asking may not own these contact details: the owner is told, not them.
            if let Err(e) = self.notify_duplicate(place.appointment_id, place).await {
                tracing::warn!(error = %e, "could not tell the owner of a duplicate");
            }
        }
        let (appointment, destination) = result?;
        let destination = destination.ok_or(BookingError::ContactRequired)?;
        Ok((appointment, destination))
    }

    async fn book_once(
        &self,
        req: &BookingRequest,
        mode: BookingMode,
        with_code: bool,
    ) -> Result<(Appointment, Option<CodeDestination>)> {
        let now = self.clock.now();
        // Under a rush most holds are refused, and on what the listings read a moment ago:
        // the closures as they are listed (the transaction reads them again), the seats
        // taken as they are listed.
        let ctx = self
            .context_at(req.commune, req.service, req.start, Some(false))
            .await?;
        validate_request(req, &ctx, mode)?;
        let destination = if with_code {
            Some(code_destination(&req.citizen, &ctx.commune)?)
        } else {
            None
        };
        let offered = offered(&ctx, now, req.start, req.persons, req.location)?;
        let end = req.start + ctx.service.duration_for(req.persons);
        let mut likely = self
            .likely_free(&ctx, &offered, req.start, end, now, None, true)
            .await?;
        let opted_out = match mode {
            BookingMode::Confirmed => {
                self.opted_out_of_reminder(&ctx.commune, req.citizen.phone.as_ref(), req.start, now)
                    .await?
            }
            _ => false,
        };
        if let (BookingMode::Hold, Some(to), true) =
            (mode, &destination, self.store.holds_at_once())
        {
            let at_once = self
                .hold_at_once(req, &ctx, &likely, offered.len(), to, end, now)
                .await?;
            if let Some(appointment) = at_once {
                return Ok((appointment, destination));
            }
        }

        let (mut tx, chosen) = loop {
            match open_and_take_seat(self.store.as_ref(), &likely.plannings, req.start, end, now)
                .await?
            {
                Some(taken) => break taken,
                // Read just now, or the transaction has just seen every offered planning
                // busy: taken.
                None if likely.fresh || likely.plannings.len() == offered.len() => {
                    return Err(BookingError::SlotTaken);
                }
                // A listing's snapshot pointed at seats taken since: before saying "taken",
                // look at what is free now.
                None => {
                    likely = self
                        .likely_free(&ctx, &offered, req.start, end, now, None, false)
                        .await?;
                }
            }
        };
        let mut appointment = self.new_appointment(
            req,
            &ctx,
            (chosen.planning, chosen.location),
            end,
            mode,
            now,
        );
        appointment.seat = Some(chosen.seat);
        let inserted = match chosen.free_as_opened {
            None => {
                tx.insert_appointment(&appointment)
                    .await
                    .map_err(seat_conflict)?;
                true
            }
            Some(seats) => {
                insert_on_a_seat_not_being_taken(tx.as_mut(), &mut appointment, seats).await?
            }
        };
        if !inserted {
            // Every seat of the first planning free as the transaction opened is being taken
            // by another: the other plannings, their seats taken as take_seat does.
            let Some((planning, location, seat)) =
                take_seat(tx.as_mut(), &likely.plannings[1..], req.start, end, now).await?
            else {
                return Err(if likely.fresh || likely.plannings.len() == offered.len() {
                    BookingError::SlotTaken
                } else {
                    // What the listings showed free was taken meanwhile: again from the start,
                    // which looks at what is free now.
                    BookingError::Store(StoreError::Transient(
                        "the seats listed free were taken meanwhile".into(),
                    ))
                });
            };
            (appointment.planning_id, appointment.location_id) = (planning, location);
            appointment.seat = Some(seat);
            tx.insert_appointment(&appointment)
                .await
                .map_err(seat_conflict)?;
        }
        let exclusive = !ctx.commune.allow_multiple_per_category;
        let mut freed = false;
        if let Some(holder) = claim_identities(
            tx.as_mut(),
            &appointment,
            destination.as_ref(),
            ctx.service.category,
            exclusive,
            now,
            &mut freed,
        )
        .await?
        {
            drop(tx);
            return Err(self.duplicate(holder).await);
        }
        let destination = match destination {
            Some(to) => {
                let locked = claims_lock(&appointment.citizen, ctx.service.category, &to);
                Some(
                    self.send_code(
                        tx.as_mut(),
                        &ctx.commune,
                        &ctx.service,
                        &appointment,
                        (to, locked),
                        now,
                    )
                    .await?,
                )
            }
            None => None,
        };
        if mode == BookingMode::Confirmed {
            let location = ctx
                .locations
                .iter()
                .find(|l| l.id == appointment.location_id)
                .cloned()
                .ok_or(BookingError::LocationNotFound)?;
            let details = Details {
                commune: ctx.commune.clone(),
                service: ctx.service.clone(),
                location,
            };
            let token = self
                .notifier
                .new_link(tx.as_mut(), appointment.id, now)
                .await?;
            let booking_url = self.notifier.booking_url(&details.commune);
            let subject = self.subject(&details, &appointment, &booking_url);
            self.notifier
                .confirmed(tx.as_mut(), &subject, &token, opted_out, now)
                .await?;
        }
        tx.commit().await?;
        if freed {
            self.seat_released(appointment.commune_id);
        }
        self.booked(&appointment, &ctx.commune, mode);
        Ok((appointment, destination))
    }

    /// A new appointment for `req` on `planning` at `location`, its seat not yet chosen.
    fn new_appointment(
        &self,
        req: &BookingRequest,
        ctx: &SlotContext,
        (planning, location): (PlanningId, LocationId),
        end: DateTime<Utc>,
        mode: BookingMode,
        now: DateTime<Utc>,
    ) -> Appointment {
        let (status, hold_expires_at, confirmed_at) = match mode {
            BookingMode::Hold | BookingMode::HoldForDetails => {
                (Status::Held, Some(now + self.hold_duration), None)
            }
            BookingMode::Confirmed => (Status::Confirmed, None, Some(now)),
        };
        Appointment {
            id: AppointmentId::new_v4(),
            commune_id: ctx.commune.id,
            planning_id: planning,
            location_id: location,
            service_id: ctx.service.id,
            starts_at: req.start,
            ends_at: end,
            seat: None,
            persons: req.persons as i32,
            citizen: req.citizen.clone(),
            channel: req.channel,
            status,
            hold_expires_at,
            replaces_id: None,
            cancel_reason: None,
            version: 1,
            created_at: now,
            updated_at: now,
            confirmed_at,
            cancelled_at: None,
        }
    }

    /// What follows a booking's commit: the seat counted taken, the outbox woken.
    fn booked(&self, appointment: &Appointment, commune: &Commune, mode: BookingMode) {
        self.seat_taken(appointment);
        self.wake.notify_one();
        let mode = match mode {
            BookingMode::Hold | BookingMode::HoldForDetails => "hold",
            BookingMode::Confirmed => "confirmed",
        };
        metrics::counter!("guichet_bookings_total", "channel" => appointment.channel.as_str(), "mode" => mode)
            .increment(1);
        tracing::info!(
            appointment = %appointment.id,
            commune = %commune.slug,
            channel = %appointment.channel,
            status = %appointment.status,
            phone = appointment.citizen.phone.as_ref().map(|p| p.masked()),
            "appointment booked"
        );
    }

    /// The usual hold with a code, written in one round trip where the store can
    /// ([`Store::hold_at_once`]): on the plannings likely free, in order, until one has a seat.
    /// None when it is left to the step-by-step booking, nothing written.
    #[allow(clippy::too_many_arguments)]
    async fn hold_at_once(
        &self,
        req: &BookingRequest,
        ctx: &SlotContext,
        likely: &LikelyFree,
        offered: usize,
        to: &CodeDestination,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Appointment>> {
        let commune = &ctx.commune;
        let claims = claims_of(&req.citizen, ctx.service.category);
        let sms = to.channel() == MessageChannel::Sms;
        for &planning in &likely.plannings {
            let mut appointment =
                self.new_appointment(req, ctx, planning, end, BookingMode::Hold, now);
            let (otp, message) = self.new_code(commune, &ctx.service, &appointment, to, now);
            let hold = HoldAtOnce {
                appointment: &appointment,
                claims: &claims,
                exclusive: !commune.allow_multiple_per_category,
                destination_claim: claims.iter().position(|c| is_destination_of(c, to)),
                otp: &otp,
                message: &message,
                recent: (now - otp::SEND_WINDOW, otp::MAX_SENDS),
                day_ago: (now - Duration::hours(24), otp::MAX_SENDS_PER_DAY),
                sms_day: (commune.id, commune.local_date(now)),
                budget: sms.then_some(commune.sms_daily_budget),
                now,
            };
            match self.store.hold_at_once(&hold).await? {
                HeldAtOnce::Held(seat) => {
                    appointment.seat = Some(seat);
                    self.booked(&appointment, commune, BookingMode::Hold);
                    return Ok(Some(appointment));
                }
                HeldAtOnce::Taken => continue,
                HeldAtOnce::StepByStep => return Ok(None),
            }
        }
        // Every seat taken or being taken: as the step-by-step booking decides on the seats it
        // reads (a listing's snapshot that missed plannings is looked at again there).
        if likely.fresh || likely.plannings.len() == offered {
            return Err(BookingError::SlotTaken);
        }
        Ok(None)
    }

    /// Writes a new one-time code for `appointment` and its message, within the limits: three
    /// sends per destination in ten minutes, and the commune's daily SMS budget (beyond it, the
    /// code goes by e-mail when there is an address).
    async fn send_code(
        &self,
        tx: &mut dyn StoreTx,
        commune: &Commune,
        service: &Service,
        appointment: &Appointment,
        // And whether its lock is held already (taken with its claim, see `claims_lock`).
        (mut destination, locked): (CodeDestination, bool),
        now: DateTime<Utc>,
    ) -> Result<CodeDestination> {
        // The budget is looked at now and taken last: on PostgreSQL taking it locks the
        // commune's counter until commit, and every code of the commune goes through it.
        let (day, budget) = (commune.local_date(now), commune.sms_daily_budget);
        let limits = async |tx: &mut dyn StoreTx, key: &str, locked: bool| {
            // Three in ten minutes, and a day's cap, so that nobody can have a stranger's
            // phone buzz all day (or guess at codes five tries at a time).
            if !locked {
                tx.lock_destination(key).await?;
            }
            tx.code_limits(
                key,
                now - otp::SEND_WINDOW,
                now - chrono::Duration::hours(24),
                commune.id,
                day,
            )
            .await
        };
        let mut key = destination.key();
        let mut counts = limits(tx, &key, locked).await?;
        if destination.channel() == MessageChannel::Sms && counts.sms_used >= i64::from(budget) {
            destination = match &appointment.citizen.email {
                Some(email) => CodeDestination::Email(email.clone()),
                None => return Err(BookingError::SmsBudgetExhausted),
            };
            key = destination.key();
            counts = limits(tx, &key, false).await?;
        }
        if counts.recent >= otp::MAX_SENDS || counts.today >= otp::MAX_SENDS_PER_DAY {
            return Err(BookingError::TooManyCodes);
        }
        let (record, message) = self.new_code(commune, service, appointment, &destination, now);
        let sms = destination.channel() == MessageChannel::Sms;
        if !tx
            .put_code(
                &record,
                &message,
                sms.then_some((commune.id, day, budget)),
                now,
            )
            .await?
        {
            // Spent meanwhile by another transaction: again from the start, which now sees it
            // spent and falls back to e-mail (or refuses).
            return Err(BookingError::Store(StoreError::Transient(
                "the commune's SMS budget was spent meanwhile".into(),
            )));
        }
        Ok(destination)
    }

    /// A new one-time code for `appointment`, as stored, and its message to `destination`.
    fn new_code(
        &self,
        commune: &Commune,
        service: &Service,
        appointment: &Appointment,
        destination: &CodeDestination,
        now: DateTime<Utc>,
    ) -> (OtpRecord, crate::store::NewNotification) {
        let code = OtpCode::generate();
        let record = OtpRecord {
            appointment_id: appointment.id,
            destination: destination.key(),
            code_hash: otp::hash(&self.otp_key, appointment.id, &code),
            expires_at: now + otp::VALIDITY,
            attempts_left: otp::MAX_ATTEMPTS,
            used_at: None,
            created_at: now,
        };
        let message = self.notifier.code(
            (commune, service),
            appointment,
            destination,
            code.as_str(),
            now,
        );
        (record, message)
    }

    /// Sends a new code for a held appointment (the previous one stops working).
    pub async fn resend_code(&self, id: AppointmentId) -> Result<CodeDestination> {
        self.retry(|| self.resend_code_once(id)).await
    }

    async fn resend_code_once(&self, id: AppointmentId) -> Result<CodeDestination> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        let details = self.details(&before).await?;
        let destination = code_destination(&before.citizen, &details.commune)?;
        let (mut tx, appointment) = self.open(&before).await?;
        match appointment.effective_status(now) {
            Status::Held | Status::Expired if appointment.starts_at > now => {}
            Status::Confirmed => return Err(BookingError::AlreadyConfirmed),
            Status::Held | Status::Expired => return Err(BookingError::HoldExpired),
            other => return Err(BookingError::NotModifiable(other)),
        }
        let destination = self
            .send_code(
                tx.as_mut(),
                &details.commune,
                &details.service,
                &appointment,
                (destination, false),
                now,
            )
            .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(destination)
    }

    /// Tells the owner of an existing appointment that someone tried to book again with their
    /// details — at most once in ten minutes per destination.
    async fn notify_duplicate(
        &self,
        existing_id: AppointmentId,
        place: &AppointmentPlace,
    ) -> Result<()> {
        let now = self.clock.now();
        let existing = self.appointment(existing_id).await?;
        let commune = self.config(existing.commune_id).await?.commune.clone();
        let Ok(destination) = code_destination(&existing.citizen, &commune) else {
            return Ok(());
        };
        let mut tx = self.store.begin().await?;
        tx.lock_destination(destination.as_str()).await?;
        let (recent, _) = tx
            .count_sent_to(
                destination.as_str(),
                NotificationKind::DuplicateNotice,
                now - otp::SEND_WINDOW,
                now - otp::SEND_WINDOW,
            )
            .await?;
        if recent == 0 {
            self.notifier
                .duplicate_notice(tx.as_mut(), &existing, place, &destination, now)
                .await?;
            tx.commit().await?;
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn duplicate(&self, holder: AppointmentId) -> BookingError {
        match self.store.appointment_place(holder).await {
            Ok(place) => BookingError::Duplicate(place.map(Box::new)),
            Err(e) => BookingError::Store(e),
        }
    }

    async fn appointment(&self, id: AppointmentId) -> Result<Appointment> {
        self.store
            .appointment(id)
            .await?
            .ok_or(BookingError::AppointmentNotFound)
    }

    /// The offered plannings that had a seat free a moment ago (and `own`, the planning an
    /// appointment being moved already sits on). Not a decision — the transaction decides —
    /// but a transaction that tries only these locks nothing for nothing: with seventy stations
    /// and most of them full, that is the difference between one try and seventy.
    /// With `from_listings`, a listing's recent snapshot may answer (see
    /// [`occupancy::OccupancyCache::covering`]), "none free" included.
    #[allow(clippy::too_many_arguments)]
    async fn likely_free(
        &self,
        ctx: &SlotContext,
        offered: &[(PlanningId, LocationId)],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
        own: Option<PlanningId>,
        from_listings: bool,
    ) -> Result<LikelyFree> {
        let free_in = |occupancy: &Occupancy| -> Vec<(PlanningId, LocationId)> {
            offered
                .iter()
                .copied()
                .filter(|(planning, _)| {
                    Some(*planning) == own
                        || ctx
                            .plannings
                            .iter()
                            .find(|p| p.id == *planning)
                            .is_some_and(|p| occupancy.has_free_seat(p, start, end))
                })
                .collect()
        };
        // What a listing read a moment ago is enough to say where to try, and to say "taken":
        // the slot is not in the listings either. Only a seat freed on another instance in
        // that moment is missed (one freed here makes the listings read again); the citizen
        // is told "taken" a moment longer, as the listings show it. Under a rush most holds
        // are refused, and this way without a query.
        if let Some(snapshot) = self
            .listings
            .covering(ctx.commune.id, start, end, now)
            .filter(|_| from_listings)
        {
            let free = free_in(&snapshot);
            if free.is_empty() {
                return Err(BookingError::SlotTaken);
            }
            return Ok(LikelyFree {
                _taking: self.taking(ctx, &snapshot, free[0].0, (start, end), own),
                plannings: free,
                fresh: false,
            });
        }
        if from_listings {
            // No listing has read that day lately: one read for the holds that arrive
            // together (as after each second of a rush), kept for the listings and the holds
            // that follow.
            let day = start.date_naive();
            let (span_start, span_end) = utc_span(day, day);
            let occupancy = self
                .listing_occupancy((ctx.commune.id, span_start, span_end), now)
                .await?;
            let free = free_in(&occupancy);
            if free.is_empty() {
                return Err(BookingError::SlotTaken);
            }
            return Ok(LikelyFree {
                _taking: self.taking(ctx, &occupancy, free[0].0, (start, end), own),
                plannings: free,
                fresh: false,
            });
        }
        let occupancy = Occupancy::new(
            self.store
                .occupancy(ctx.commune.id, start, end, now)
                .await?,
        );
        let free = free_in(&occupancy);
        if free.is_empty() {
            return Err(BookingError::SlotTaken);
        }
        Ok(LikelyFree {
            plannings: free,
            fresh: true,
            _taking: None,
        })
    }

    /// Counts the seat a new booking will try first (on `planning`, the first free one in
    /// `occupancy`) as taken while it is under way (see [`occupancy::OccupancyCache::taking`]).
    /// A move (`own`) is not counted: it rarely races.
    fn taking(
        &self,
        ctx: &SlotContext,
        occupancy: &Occupancy,
        planning: PlanningId,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        own: Option<PlanningId>,
    ) -> Option<occupancy::Taking> {
        if own.is_some() {
            return None;
        }
        let capacity = ctx.plannings.iter().find(|p| p.id == planning)?.capacity;
        let seat = choose_seat(capacity, &occupancy.busy_seats(planning, start, end))?;
        let occupied = Occupied {
            planning_id: planning,
            seat,
            starts_at: start,
            ends_at: end,
        };
        Some(self.listings.taking(ctx.commune.id, occupied))
    }

    /// Checks `code` against the appointment's one-time code inside `tx` and uses it up. A
    /// wrong code costs one of its tries even though the caller's change is undone: the try is
    /// committed at once and the error returned.
    async fn use_code(
        &self,
        mut tx: Box<dyn StoreTx>,
        id: AppointmentId,
        code: &OtpCode,
        now: DateTime<Utc>,
    ) -> Result<Box<dyn StoreTx>> {
        // The right code, still good: used up in one statement. The database compares keyed
        // hashes, which is as safe as comparing in constant time: how much of a guess's hash
        // matches says nothing of the code.
        if tx
            .use_otp(id, &otp::hash(&self.otp_key, id, code), now)
            .await?
        {
            return Ok(tx);
        }
        // Otherwise why: read it, and a wrong code costs a try.
        let mut record = tx.otp(id).await?.ok_or(BookingError::CodeExpired)?;
        if record.used_at.is_some() || record.expires_at <= now {
            return Err(BookingError::CodeExpired);
        }
        if record.attempts_left <= 0 {
            return Err(BookingError::CodeBurnt);
        }
        if !otp::verify(&self.otp_key, id, code, &record.code_hash) {
            record.attempts_left -= 1;
            tx.put_otp(&record).await?;
            tx.commit().await?;
            return Err(if record.attempts_left == 0 {
                BookingError::CodeBurnt
            } else {
                BookingError::WrongCode {
                    attempts_left: record.attempts_left,
                }
            });
        }
        record.used_at = Some(now);
        tx.put_otp(&record).await?;
        Ok(tx)
    }

    /// Before the transaction that takes a lapsed hold's seat again: it is a new booking of
    /// the same slot, so the slot must still be offered (no closure since, notice respected).
    async fn check_lapsed_hold(&self, before: &Appointment, now: DateTime<Utc>) -> Result<()> {
        if before.effective_status(now) != Status::Expired || before.starts_at <= now {
            return Ok(());
        }
        let ctx = self
            .context_at(
                before.commune_id,
                before.service_id,
                before.starts_at,
                Some(true),
            )
            .await?;
        let offered = offered(
            &ctx,
            now,
            before.starts_at,
            before.persons as u32,
            Some(before.location_id),
        )
        .map_err(|_| BookingError::HoldExpired)?;
        if !offered.iter().any(|(p, _)| *p == before.planning_id) {
            return Err(BookingError::HoldExpired);
        }
        Ok(())
    }

    /// Opens a transaction and reads `before` again in it, locked (PostgreSQL: its row, until
    /// the end; SQLite: `BEGIN IMMEDIATE` made this the only writer). Plannings are not locked:
    /// seats are decided by the database (see [`StoreTx::planning`]). Anything else the
    /// operation needs is read before: inside the transaction a second pool connection could be
    /// waiting behind this one.
    async fn open(&self, before: &Appointment) -> Result<(Box<dyn StoreTx>, Appointment)> {
        let mut tx = self.store.begin().await?;
        let appointment = tx
            .appointment(before.id)
            .await?
            .ok_or(BookingError::AppointmentNotFound)?;
        Ok((tx, appointment))
    }

    /// Confirms a held appointment without a code (the channel proved the citizen otherwise).
    /// Confirming twice is harmless. A hold that lapsed is confirmed anyway if its slot is still
    /// offered and its seat still free.
    pub async fn confirm(&self, id: AppointmentId) -> Result<Appointment> {
        let (appointment, _) = self.retry(|| self.confirm_once(id, None)).await?;
        Ok(appointment)
    }

    /// Confirms a held appointment with the code the citizen received, and returns the token of
    /// the personal link. A wrong code costs one of five tries, even though the rest is undone.
    pub async fn confirm_with_code(
        &self,
        id: AppointmentId,
        code: &OtpCode,
    ) -> Result<(Appointment, String)> {
        let (appointment, token) = self.retry(|| self.confirm_once(id, Some(code))).await?;
        let token = token.ok_or(BookingError::AlreadyConfirmed)?;
        Ok((appointment, token))
    }

    async fn confirm_once(
        &self,
        id: AppointmentId,
        code: Option<&OtpCode>,
    ) -> Result<(Appointment, Option<String>)> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        let details = self.details(&before).await?;
        self.check_lapsed_hold(&before, now).await?;
        let opted_out = self
            .opted_out_of_reminder(
                &details.commune,
                before.citizen.phone.as_ref(),
                before.starts_at,
                now,
            )
            .await?;
        if let Some(code) = code
            && let Some(done) = self
                .confirm_at_once(&before, &details, code, opted_out, now)
                .await?
        {
            return Ok(done);
        }
        let (mut tx, mut appointment) = self.open(&before).await?;
        match (appointment.effective_status(now), code) {
            (Status::Confirmed, None) => return Ok((appointment, None)),
            (Status::Confirmed, Some(_)) => return Err(BookingError::AlreadyConfirmed),
            (Status::Held | Status::Expired, _) => {}
            (other, _) => return Err(BookingError::NotModifiable(other)),
        }
        // A hold still good and its right code (as almost always): the code used up and the
        // appointment confirmed in one statement.
        let mut written = false;
        if let Some(code) = code {
            if appointment.effective_status(now) == Status::Held {
                let confirmed = confirmed_now(appointment.clone(), now);
                let hash = otp::hash(&self.otp_key, id, code);
                written = tx
                    .update_with_otp(&confirmed, &hash, now)
                    .await
                    .map_err(seat_conflict)?;
                if written {
                    appointment = confirmed;
                }
            }
            if !written {
                tx = self.use_code(tx, id, code, now).await?;
            }
        }
        let mut freed = false;
        if appointment.effective_status(now) == Status::Expired {
            if appointment.starts_at <= now {
                return Err(BookingError::HoldExpired);
            }
            appointment = retake_seat(tx.as_mut(), &appointment, now).await?;
            let exclusive = !details.commune.allow_multiple_per_category;
            if let Some(holder) = claim_identities(
                tx.as_mut(),
                &appointment,
                None,
                details.service.category,
                exclusive,
                now,
                &mut freed,
            )
            .await?
            {
                drop(tx);
                return Err(self.duplicate(holder).await);
            }
        }
        if !written {
            appointment = confirmed_now(appointment, now);
            tx.update_appointment(&appointment)
                .await
                .map_err(seat_conflict)?;
        }
        let token = self.notifier.new_link(tx.as_mut(), id, now).await?;
        let booking_url = self.notifier.booking_url(&details.commune);
        let subject = self.subject(&details, &appointment, &booking_url);
        self.notifier
            .confirmed(tx.as_mut(), &subject, &token, opted_out, now)
            .await?;
        tx.commit().await?;
        if freed {
            self.seat_released(appointment.commune_id);
        }
        self.confirmed(&appointment);
        Ok((appointment, Some(token)))
    }

    /// The usual confirmation — a hold still good, its right code — written in one round trip
    /// where the store can ([`Store::confirm_at_once`]). None when it is left to the
    /// step-by-step confirmation, nothing written.
    async fn confirm_at_once(
        &self,
        before: &Appointment,
        details: &Details,
        code: &OtpCode,
        opted_out: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<(Appointment, Option<String>)>> {
        if !self.store.confirms_at_once() || before.effective_status(now) != Status::Held {
            return Ok(None);
        }
        let confirmed = confirmed_now(before.clone(), now);
        let token = otp::new_token();
        let booking_url = self.notifier.booking_url(&details.commune);
        let subject = self.subject(details, &confirmed, &booking_url);
        let messages = self
            .notifier
            .confirmed_messages(&subject, &token, opted_out, now);
        let confirm = ConfirmAtOnce {
            before,
            confirmed: &confirmed,
            code_hash: &otp::hash(&self.otp_key, before.id, code),
            token_hash: &otp::token_hash(&token),
            messages: &messages,
            now,
        };
        if !self.store.confirm_at_once(&confirm).await? {
            return Ok(None);
        }
        self.confirmed(&confirmed);
        Ok(Some((confirmed, Some(token))))
    }

    /// What follows a confirmation's commit: its seat counted taken, the outbox woken.
    fn confirmed(&self, appointment: &Appointment) {
        // Its seat may be a new one (a lapsed hold takes any seat free).
        self.seat_taken(appointment);
        self.wake.notify_one();
        metrics::counter!("guichet_confirmations_total", "channel" => appointment.channel.as_str())
            .increment(1);
    }

    /// Cancels an appointment. A citizen may cancel until it starts; the commune at any time
    /// before it is marked, with a reason given to the citizen. Cancelling twice is harmless.
    pub async fn cancel(&self, id: AppointmentId, how: &Cancellation) -> Result<Appointment> {
        self.retry(|| self.cancel_once(id, how)).await
    }

    async fn cancel_once(&self, id: AppointmentId, how: &Cancellation) -> Result<Appointment> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        let details = self.details(&before).await?;
        let (mut tx, mut appointment) = self.open(&before).await?;
        let (target, reason) = match how {
            Cancellation::ByCitizen | Cancellation::ByCitizenReplyingSms => {
                (Status::CancelledByCitizen, None)
            }
            Cancellation::ByCommune { reason } => {
                (Status::CancelledByCommune, Some(reason.clone()))
            }
        };
        let was = appointment.effective_status(now);
        match was {
            s if s == target => return Ok(appointment),
            Status::Held | Status::Confirmed => {}
            other => return Err(BookingError::NotModifiable(other)),
        }
        if target == Status::CancelledByCitizen && appointment.starts_at <= now {
            return Err(BookingError::AlreadyStarted);
        }
        appointment.status = target;
        appointment.seat = None;
        appointment.hold_expires_at = None;
        appointment.cancelled_at = Some(now);
        appointment.cancel_reason = reason.clone();
        touch(&mut appointment, now);
        tx.update_appointment(&appointment).await?;
        tx.release_claims(id).await?;
        // A hold the citizen drops was never confirmed: nothing to tell.
        if was == Status::Confirmed {
            let booking_url = self.notifier.booking_url(&details.commune);
            let subject = self.subject(&details, &appointment, &booking_url);
            match how {
                Cancellation::ByCitizen | Cancellation::ByCitizenReplyingSms => {
                    let sms_notice = *how == Cancellation::ByCitizen;
                    self.notifier
                        .cancelled_by_citizen(tx.as_mut(), &subject, sms_notice, now)
                        .await?;
                }
                Cancellation::ByCommune { reason } => {
                    self.notifier
                        .cancelled_by_commune(tx.as_mut(), &subject, reason, None, now)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        self.seat_released(appointment.commune_id);
        self.wake.notify_one();
        tracing::info!(appointment = %id, status = %target, "appointment cancelled");
        Ok(appointment)
    }

    /// Moves an appointment to another slot of the same service, in one transaction: the old
    /// appointment becomes `moved` and a new one (linked to it) takes the new slot, or, if the
    /// new slot cannot be had, nothing changes. Returns the new appointment; personal links of
    /// the old one lead to it.
    pub async fn move_to(
        &self,
        id: AppointmentId,
        start: DateTime<Utc>,
        location: Option<LocationId>,
    ) -> Result<Appointment> {
        self.retry(|| self.move_once(id, start, location)).await
    }

    async fn move_once(
        &self,
        id: AppointmentId,
        start: DateTime<Utc>,
        location: Option<LocationId>,
    ) -> Result<Appointment> {
        let now = self.clock.now();
        let current = self.appointment(id).await?;
        check_movable(&current, now)?;
        if current.starts_at == start && location.is_none_or(|l| l == current.location_id) {
            return Ok(current);
        }
        let ctx = self
            .context_at(current.commune_id, current.service_id, start, Some(true))
            .await?;
        let persons = current.persons as u32;
        let offered = offered(&ctx, now, start, persons, location)?;
        let end = start + ctx.service.duration_for(persons);
        let offered = self
            .likely_free(
                &ctx,
                &offered,
                start,
                end,
                now,
                Some(current.planning_id),
                false,
            )
            .await?
            .plannings;
        let opted_out = self.sms_opted_out(&current).await?;
        let (mut tx, mut old) = self.open(&current).await?;
        check_movable(&old, now)?;

        // Release the old seat first, inside the transaction: a move to an overlapping time on
        // the same counter must not collide with itself. Until commit, nobody sees either state.
        let old_status = old.effective_status(now);
        let old_expiry = old.hold_expires_at;
        old.status = Status::Moved;
        old.seat = None;
        old.hold_expires_at = None;
        touch(&mut old, now);
        tx.update_appointment(&old).await?;

        let Some((planning_id, location_id, seat)) =
            take_seat(tx.as_mut(), &offered, start, end, now).await?
        else {
            return Err(BookingError::SlotTaken);
        };
        let (hold_expires_at, confirmed_at) = match old_status {
            // Moving a hold does not extend it: a hold is not a way to keep a seat for free.
            Status::Held => (old_expiry, None),
            _ => (None, Some(now)),
        };
        let new = Appointment {
            id: AppointmentId::new_v4(),
            planning_id,
            location_id,
            starts_at: start,
            ends_at: end,
            seat: Some(seat),
            status: old_status,
            hold_expires_at,
            replaces_id: Some(old.id),
            cancel_reason: None,
            version: 1,
            created_at: now,
            updated_at: now,
            confirmed_at,
            cancelled_at: None,
            ..old.clone()
        };
        tx.insert_appointment(&new).await.map_err(seat_conflict)?;
        tx.transfer_claims(old.id, new.id).await?;
        tx.move_manage_tokens(old.id, new.id).await?;
        if old_status == Status::Confirmed {
            let location = ctx
                .locations
                .iter()
                .find(|l| l.id == location_id)
                .cloned()
                .ok_or(BookingError::LocationNotFound)?;
            let details = Details {
                commune: ctx.commune.clone(),
                service: ctx.service.clone(),
                location,
            };
            let token = self.notifier.new_link(tx.as_mut(), new.id, now).await?;
            let booking_url = self.notifier.booking_url(&details.commune);
            let subject = self.subject(&details, &new, &booking_url);
            self.notifier
                .moved(tx.as_mut(), old.id, &subject, &token, opted_out, now)
                .await?;
        }
        tx.commit().await?;
        self.seat_released(old.commune_id);
        self.seat_taken(&new);
        self.wake.notify_one();
        tracing::info!(from = %old.id, to = %new.id, "appointment moved");
        Ok(new)
    }

    /// Records whether the citizen came, from the day of the appointment on.
    pub async fn mark(&self, id: AppointmentId, attendance: Attendance) -> Result<Appointment> {
        self.retry(|| self.mark_once(id, attendance)).await
    }

    async fn mark_once(&self, id: AppointmentId, attendance: Attendance) -> Result<Appointment> {
        let now = self.clock.now();
        let before = self.appointment(id).await?;
        let commune = self.config(before.commune_id).await?.commune.clone();
        let (mut tx, mut appointment) = self.open(&before).await?;
        let target = match attendance {
            Attendance::Honoured => Status::Honoured,
            Attendance::NoShow => Status::NoShow,
        };
        match appointment.effective_status(now) {
            s if s == target => return Ok(appointment),
            // An agent may correct a mistaken mark.
            Status::Confirmed | Status::Honoured | Status::NoShow => {}
            other => return Err(BookingError::NotModifiable(other)),
        }
        if commune.local_date(appointment.starts_at) > commune.local_date(now) {
            return Err(BookingError::TooEarlyToMark);
        }
        appointment.status = target;
        touch(&mut appointment, now);
        tx.update_appointment(&appointment).await?;
        tx.release_claims(id).await?;
        tx.commit().await?;
        Ok(appointment)
    }
}

/// `appointment` confirmed at `now`.
fn confirmed_now(mut appointment: Appointment, now: DateTime<Utc>) -> Appointment {
    appointment.status = Status::Confirmed;
    appointment.hold_expires_at = None;
    appointment.confirmed_at = Some(now);
    touch(&mut appointment, now);
    appointment
}

fn touch(appointment: &mut Appointment, now: DateTime<Utc>) {
    appointment.version += 1;
    appointment.updated_at = now;
}

fn check_movable(appointment: &Appointment, now: DateTime<Utc>) -> Result<()> {
    match appointment.effective_status(now) {
        Status::Held | Status::Confirmed if appointment.starts_at > now => Ok(()),
        Status::Held | Status::Confirmed => Err(BookingError::AlreadyStarted),
        other => Err(BookingError::NotModifiable(other)),
    }
}

/// The offered plannings that looked free, and whether that was read just now.
struct LikelyFree {
    plannings: Vec<(PlanningId, LocationId)>,
    fresh: bool,
    /// The seat this booking is taking, counted taken by this instance's listings and bookings
    /// while it is under way.
    _taking: Option<occupancy::Taking>,
}

/// The schema refused a seat: someone else got it between our read and our write, or the
/// planning lost seats meanwhile.
fn seat_conflict(e: StoreError) -> BookingError {
    if e.is_constraint("appointments_no_overlap") {
        // Another transaction took the seat chosen (PostgreSQL: seats are chosen without
        // locking the planning): try again, with what is free now.
        BookingError::Store(StoreError::Transient(
            "the seat chosen was taken meanwhile".into(),
        ))
    } else if e.is_constraint("appointments_seat_capacity") {
        BookingError::SlotTaken
    } else {
        BookingError::Store(e)
    }
}

/// The (planning, location) pairs whose rules offer `start`, lowest planning first; none means
/// `start` is not a bookable slot (off the grid, closed, a holiday, too soon or too far).
fn offered(
    ctx: &SlotContext,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
    persons: u32,
    location: Option<LocationId>,
) -> Result<Vec<(PlanningId, LocationId)>> {
    let offers = ctx.search(now).offers_at(start, persons, location);
    if offers.is_empty() {
        return Err(BookingError::SlotUnavailable);
    }
    Ok(offers
        .iter()
        .map(|o| (o.planning_id, o.location_id))
        .collect())
}

/// Tries each offered (planning, location) in order under its lock; returns the first with a
/// free seat for `[start, end)`.
/// Inside the transaction, for a lapsed hold whose slot is still offered: frees the lapsed
/// seats of its planning (its own included), then takes one again if any is left.
async fn retake_seat(
    tx: &mut dyn StoreTx,
    lapsed: &Appointment,
    now: DateTime<Utc>,
) -> Result<Appointment> {
    tx.release_expired_holds(lapsed.planning_id, now).await?;
    let mut appointment = tx
        .appointment(lapsed.id)
        .await?
        .ok_or(BookingError::AppointmentNotFound)?;
    let offered = [(appointment.planning_id, appointment.location_id)];
    let Some((_, _, seat)) = take_seat(
        tx,
        &offered,
        appointment.starts_at,
        appointment.ends_at,
        now,
    )
    .await
    .map_err(|e| match e {
        BookingError::SlotUnavailable => BookingError::HoldExpired,
        other => other,
    })?
    else {
        return Err(BookingError::HoldExpired);
    };
    appointment.seat = Some(seat);
    Ok(appointment)
}

/// A free seat on the first of `offered` that has one; `SlotUnavailable` when a closure (read
/// here, in the transaction) or a planning put out of service leaves none of them open. The
/// plannings are read, not locked (see [`StoreTx::planning`]): on SQLite the transaction is the
/// only writer anyway; on PostgreSQL bookings of different slots of one planning go side by side
/// rather than one after the other, those aiming at one seat at one time wait for each other
/// ([`StoreTx::lock_seat`]), and the database refuses a seat taken twice.
async fn take_seat(
    tx: &mut dyn StoreTx,
    offered: &[(PlanningId, LocationId)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<(PlanningId, LocationId, i32)>> {
    take_seat_known(tx, offered, start, end, now, None).await
}

/// [`take_seat`], the seats of the first of `offered` read already when `known` (see
/// [`Store::begin_after_seats`]).
async fn take_seat_known(
    tx: &mut dyn StoreTx,
    offered: &[(PlanningId, LocationId)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
    mut known: Option<Seats>,
) -> Result<Option<(PlanningId, LocationId, i32)>> {
    let mut open = false;
    for &(planning_id, location_id) in offered {
        let read = match known.take() {
            Some(seats) if seats.planning.id == planning_id => Some(seats),
            _ => {
                tx.seats_of(planning_id, location_id, start, end, now)
                    .await?
            }
        };
        let Some(Seats {
            planning,
            mut busy,
            closed,
        }) = read
        else {
            continue;
        };
        if !planning.active || closed {
            continue;
        }
        open = true;
        // Bounded: each turn finds the seat it chose taken.
        for _ in 0..=planning.capacity {
            let Some(seat) = choose_seat(planning.capacity, &busy) else {
                break;
            };
            // Another transaction may be putting an appointment on that seat at that time:
            // wait for it to end, then look again at what it left free.
            if !tx.lock_seat(planning_id, seat, start, end).await? {
                return Ok(Some((planning_id, location_id, seat)));
            }
            busy = tx.busy_seats(planning_id, start, end).await?;
            if !busy.contains(&seat) {
                return Ok(Some((planning_id, location_id, seat)));
            }
        }
    }
    if !open && !offered.is_empty() {
        return Err(BookingError::SlotUnavailable);
    }
    Ok(None)
}

/// A seat [`open_and_take_seat`] chose.
struct Chosen {
    planning: PlanningId,
    location: LocationId,
    seat: i32,
    /// None: under its lock already ([`take_seat`]). Otherwise free in these seats, read as
    /// the transaction opened; its lock is taken as the appointment is written
    /// ([`insert_on_a_seat_not_being_taken`]).
    free_as_opened: Option<Seats>,
}

/// Puts `appointment` on a seat free in `seats` (read as the transaction opened), the seat's
/// lock taken without waiting as the row is written ([`StoreTx::insert_appointment_on_free_seat`]).
/// A seat whose lock another transaction holds is being taken by it, and that transaction
/// almost always commits: the seat counts as taken and the next free one is tried. Waiting
/// would keep this transaction's connection idle while a rush queues for the pool, mostly to
/// hear "taken" in the end; in the rare case the other one rolls back, the seat is listed free
/// again. False, nothing written, when every free seat is being taken.
async fn insert_on_a_seat_not_being_taken(
    tx: &mut dyn StoreTx,
    appointment: &mut Appointment,
    mut seats: Seats,
) -> Result<bool> {
    while let Some(seat) = seats.free_seat() {
        appointment.seat = Some(seat);
        if tx
            .insert_appointment_on_free_seat(appointment)
            .await
            .map_err(seat_conflict)?
        {
            return Ok(true);
        }
        seats.busy.push(seat);
    }
    Ok(false)
}

/// Opens the transaction that books and chooses a seat in it. The first planning's seats are
/// read as it opens ([`Store::begin_after_seats`]): when no other planning offers the slot and
/// they show it taken or closed, it is not opened; when they show a free seat, that seat is
/// chosen, its lock left to the insert (one round trip less on PostgreSQL). Otherwise seats are
/// taken as [`take_seat`] does.
async fn open_and_take_seat(
    store: &dyn Store,
    offered: &[(PlanningId, LocationId)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<(Box<dyn StoreTx>, Chosen)>> {
    let Some(&(planning, location)) = offered.first() else {
        return Ok(None);
    };
    let single = offered.len() == 1;
    let (known, tx) = store
        .begin_after_seats(planning, location, (start, end), now, &|seats| {
            !single || seats.is_none_or(|s| s.free_seat().is_some())
        })
        .await?;
    let Some(mut tx) = tx else {
        return match known {
            Some(seats) if !seats.open() => Err(BookingError::SlotUnavailable),
            _ => Ok(None),
        };
    };
    let known = match known {
        Some(seats) if seats.planning.id == planning => match seats.free_seat() {
            Some(seat) => {
                let chosen = Chosen {
                    planning,
                    location,
                    seat,
                    free_as_opened: Some(seats),
                };
                return Ok(Some((tx, chosen)));
            }
            None => Some(seats),
        },
        other => other,
    };
    let taken = take_seat_known(tx.as_mut(), offered, start, end, now, known).await?;
    Ok(taken.map(|(planning, location, seat)| {
        let chosen = Chosen {
            planning,
            location,
            seat,
            free_as_opened: None,
        };
        (tx, chosen)
    }))
}

/// Whether `claim` is on the identity a code goes to.
fn is_destination_of(claim: &Claim, to: &CodeDestination) -> bool {
    let same_kind = matches!(
        (claim.kind, to),
        (ClaimKind::Phone, CodeDestination::Sms(_)) | (ClaimKind::Email, CodeDestination::Email(_))
    );
    same_kind && claim.key == to.key()
}

/// Whether [`claim_identities`] takes the lock of the code's destination `to` with a claim:
/// with the claim of that identity, when the citizen has it. A destination's lock is thus
/// taken right after its identity's claim, after all claims, or alone — never before a claim
/// of its identity, which a transaction holding that claim could be waiting for.
fn claims_lock(citizen: &Citizen, category: Category, to: &CodeDestination) -> bool {
    claims_of(citizen, category)
        .iter()
        .any(|claim| is_destination_of(claim, to))
}

fn claims_of(citizen: &Citizen, category: Category) -> Vec<Claim> {
    let claim = |kind, key: String| Claim {
        category,
        kind,
        key,
    };
    let mut claims = Vec::new();
    if let Some(phone) = &citizen.phone {
        claims.push(claim(ClaimKind::Phone, phone.as_str().to_owned()));
    }
    if let Some(email) = &citizen.email {
        claims.push(claim(ClaimKind::Email, email.dedup_key()));
    }
    for id in &citizen.ants_application_ids {
        claims.push(claim(ClaimKind::Ants, id.as_str().to_owned()));
    }
    claims
}

/// Claims every identity of the citizen (mobile, e-mail, ANTS ids) for `appointment`, and
/// returns the other appointment if one holds a conflicting claim. One exception: a live,
/// unconfirmed hold of the same identity in the same commune is the citizen changing their mind
/// (they went back and chose another slot) — that hold is released and the claim taken.
/// The lock of `destination`, where a code is about to go, is taken with the claim of that
/// identity (see [`claims_lock`]).
async fn claim_identities(
    tx: &mut dyn StoreTx,
    appointment: &Appointment,
    destination: Option<&CodeDestination>,
    category: Category,
    exclusive: bool,
    now: DateTime<Utc>,
    // Set when an earlier hold of the same citizen was let go (its seat is free).
    freed: &mut bool,
) -> Result<Option<AppointmentId>> {
    let holder = ClaimHolder {
        appointment: appointment.id,
        commune: appointment.commune_id,
        exclusive,
    };
    for claim in claims_of(&appointment.citizen, category) {
        let lock = destination
            .filter(|to| is_destination_of(&claim, to))
            .map(CodeDestination::key);
        // Each released hold removes one conflict; a handful covers any real case.
        for _ in 0..4 {
            let claimed = tx.claim(&claim, &holder, lock.as_deref(), now).await;
            let Some(other) = claimed.map_err(|e| {
                // The schema's backstop fired (only when a commune changed its setting while
                // citizens held appointments): a duplicate all the same.
                if e.is_constraint("citizen_claims_conflict")
                    || e.is_constraint("citizen_claims_one_commune")
                    || e.is_constraint("citizen_claims_exclusive")
                {
                    BookingError::Duplicate(None)
                } else {
                    BookingError::Store(e)
                }
            })?
            else {
                break;
            };
            let Some(mut held) = tx.appointment(other).await? else {
                return Ok(Some(other));
            };
            if held.effective_status(now) != Status::Held
                || held.commune_id != appointment.commune_id
            {
                return Ok(Some(other));
            }
            held.status = Status::Expired;
            held.seat = None;
            held.hold_expires_at = Some(now);
            touch(&mut held, now);
            tx.update_appointment(&held).await?;
            tx.release_claims(held.id).await?;
            *freed = true;
            tracing::info!(released = %held.id, by = %appointment.id, "earlier hold of the same citizen released");
        }
    }
    Ok(None)
}

/// Where a citizen's one-time code goes: by SMS to a mobile that can take it (French, or
/// foreign where the commune allows), otherwise by e-mail.
pub fn code_destination(citizen: &Citizen, commune: &Commune) -> Result<CodeDestination> {
    if let Some(phone) = citizen
        .phone
        .as_ref()
        .filter(|p| p.can_receive_sms(commune.allow_foreign_mobiles))
    {
        return Ok(CodeDestination::Sms(phone.clone()));
    }
    if let Some(email) = &citizen.email {
        return Ok(CodeDestination::Email(email.clone()));
    }
    if citizen.phone.is_some() {
        return Err(BookingError::CannotReceiveSms);
    }
    Err(BookingError::ContactRequired)
}

/// Checks what can be checked before any transaction: persons, channel, contact, ANTS numbers.
fn validate_request(req: &BookingRequest, ctx: &SlotContext, mode: BookingMode) -> Result<()> {
    let service = &ctx.service;
    if req.persons < 1 || i64::from(req.persons) > i64::from(service.max_persons) {
        return Err(BookingError::InvalidPersons {
            max: service.max_persons,
        });
    }
    if !service.channels.allows(req.channel) {
        return Err(BookingError::ChannelNotAllowed(req.channel));
    }
    if let Some(location) = req.location
        && !ctx.locations.iter().any(|l| l.id == location && l.active)
    {
        return Err(BookingError::LocationNotFound);
    }
    if mode == BookingMode::HoldForDetails {
        return Ok(());
    }
    validate_citizen(&req.citizen, req.channel, service, req.persons)
}

/// The citizen's details against the channel and the service: a contact where the channel
/// needs one, ANTS numbers only for CNI/passport, at most one per person, never twice.
fn validate_citizen(
    citizen: &Citizen,
    channel: Channel,
    service: &Service,
    persons: u32,
) -> Result<()> {
    match channel {
        Channel::Web if citizen.phone.is_none() && citizen.email.is_none() => {
            return Err(BookingError::ContactRequired);
        }
        Channel::Phone if citizen.phone.is_none() => return Err(BookingError::ContactRequired),
        _ => {}
    }
    let ids = &citizen.ants_application_ids;
    if !ids.is_empty() {
        if service.category != Category::Titres {
            return Err(BookingError::AntsNotExpected);
        }
        if ids.len() > persons as usize {
            return Err(BookingError::TooManyAntsIds { persons });
        }
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != ids.len() {
            return Err(BookingError::RepeatedAntsId);
        }
    }
    Ok(())
}

/// Runs a computation of a few milliseconds (a day of thousands of slots) without stalling the
/// other tasks of its runtime thread: tokio does not preempt, so a task that computes keeps
/// every task queued behind it waiting. On a multi-threaded runtime the thread hands its queue
/// to another before computing; elsewhere (single-threaded tests) it just computes.
/// Not `heavy`, it just computes: the hand-over costs more than a short listing's tenth of a
/// millisecond, and under a rush 200 listings at once made as many threads take turns on two
/// cores (load tool, 1,000 citizens on 100 slots: 0.58 → 0.51 s).
/// Seats taken beyond which unpacking and sorting them is [`cpu_bound`]'s heavy work (10,000
/// rows: about a millisecond).
const HEAVY_OCCUPANCY: usize = 2_000;

pub(crate) fn cpu_bound<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    if !heavy {
        return work();
    }
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
