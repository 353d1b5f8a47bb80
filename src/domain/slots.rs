//! Free slots ("créneaux libres"), computed from a commune's opening rules.
//!
//! A slot exists when an opening rule of a planning offers the service at a location on that
//! weekday and time, and it is bookable when, in addition: it starts after the minimum notice and
//! on or before the last day of the booking horizon, no closure (planning, location or commune)
//! overlaps it, it does not fall on a public holiday, and the planning has a seat free for the
//! whole slot. Rules are wall-clock times in the commune's zone: a local time that does not exist
//! (spring gap) gives no slot, a local time that exists twice (autumn overlap) gives one slot, at
//! its first occurrence.
//!
//! Capacity is counted in *seats*: a planning of capacity 2 is two counters, and an appointment
//! keeps one counter for its whole length. The store records the seat of every appointment and
//! the database refuses two overlapping appointments on one seat, so the free-slot list and the
//! booking transaction agree on what "free" means.

use super::holidays::HolidayCalendar;
use super::model::{
    Closure, Commune, Location, LocationId, MinuteOfDay, OpeningRule, Planning, PlanningId, Service,
};
use chrono::{DateTime, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// One appointment that takes a seat, as far as capacity goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupied {
    pub planning_id: PlanningId,
    pub seat: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// The seats taken on each planning, indexed for "which seats are busy between `a` and `b`?".
/// A second layer lets a shared snapshot be reused with a few appointments added on top
/// ([`Occupancy::with`]) rather than copied.
#[derive(Debug, Default, Clone)]
pub struct Occupancy {
    base: Arc<Layer>,
    top: Layer,
}

#[derive(Debug, Default, Clone)]
struct Layer {
    by_planning: HashMap<PlanningId, Busy>,
}

#[derive(Debug, Default, Clone)]
struct Busy {
    /// Sorted by start.
    entries: Vec<Occupied>,
    longest: Duration,
}

impl Layer {
    fn new(items: impl IntoIterator<Item = Occupied>) -> Self {
        let mut by_planning: HashMap<PlanningId, Busy> = HashMap::new();
        for item in items {
            let busy = by_planning.entry(item.planning_id).or_default();
            busy.longest = busy.longest.max(item.ends_at - item.starts_at);
            busy.entries.push(item);
        }
        for busy in by_planning.values_mut() {
            busy.entries.sort_by_key(|o| o.starts_at);
        }
        Self { by_planning }
    }

    /// Entries of `planning` running at some instant of `[start, end)`.
    fn overlapping(
        &self,
        planning: PlanningId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> impl Iterator<Item = &Occupied> {
        let entries = self
            .by_planning
            .get(&planning)
            .map(|busy| {
                // Everything starting before `end` may overlap; nothing starting before
                // `start - longest` can still be running at `start`.
                let upper = busy.entries.partition_point(|o| o.starts_at < end);
                let earliest = start - busy.longest;
                let lower = busy.entries[..upper].partition_point(|o| o.starts_at < earliest);
                &busy.entries[lower..upper]
            })
            .unwrap_or_default();
        entries.iter().filter(move |o| o.ends_at > start)
    }

    fn all(&self) -> impl Iterator<Item = &Occupied> {
        self.by_planning.values().flat_map(|busy| &busy.entries)
    }
}

impl Occupancy {
    pub fn new(items: impl IntoIterator<Item = Occupied>) -> Self {
        Self {
            base: Arc::new(Layer::new(items)),
            top: Layer::default(),
        }
    }

    /// This occupancy and `items` besides, sharing what it already holds. An appointment in
    /// both counts once: seats are counted, not entries.
    pub fn with(&self, items: impl IntoIterator<Item = Occupied>) -> Self {
        Self {
            base: self.base.clone(),
            top: Layer::new(self.top.all().copied().chain(items)),
        }
    }

    fn overlapping(
        &self,
        planning: PlanningId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> impl Iterator<Item = &Occupied> {
        self.base
            .overlapping(planning, start, end)
            .chain(self.top.overlapping(planning, start, end))
    }

    /// Seats of `planning` taken at some instant of `[start, end)`, each once.
    pub fn busy_seats(
        &self,
        planning: PlanningId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<i32> {
        let mut seats: Vec<i32> = self
            .overlapping(planning, start, end)
            .map(|o| o.seat)
            .collect();
        seats.sort_unstable();
        seats.dedup();
        seats
    }

    pub fn has_free_seat(
        &self,
        planning: &Planning,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> bool {
        free_seat_among(planning.capacity, self.overlapping(planning.id, start, end))
    }

    /// A reader of `planning`'s seats for slots asked in time order, as a day's grid walks
    /// them: each answer moves two indices forward instead of searching the entries again.
    pub fn cursor(&self, planning: &Planning) -> SeatCursor<'_> {
        SeatCursor {
            capacity: planning.capacity,
            layers: [
                LayerCursor::new(self.base.by_planning.get(&planning.id)),
                LayerCursor::new(self.top.by_planning.get(&planning.id)),
            ],
        }
    }
}

/// Whether `running` (the entries overlapping one slot) leaves a seat of `capacity` free.
fn free_seat_among<'a>(capacity: i32, running: impl Iterator<Item = &'a Occupied>) -> bool {
    // Asked for every candidate of every planning: seats are counted in a bit set rather than
    // collected (seats beyond 128 take the general path).
    if capacity > 128 {
        let mut seats: Vec<i32> = running.map(|o| o.seat).collect();
        seats.sort_unstable();
        seats.dedup();
        return choose_seat(capacity, &seats).is_some();
    }
    let mut taken: u128 = 0;
    for o in running {
        if (1..=capacity).contains(&o.seat) {
            taken |= 1 << (o.seat - 1);
        }
    }
    (taken.count_ones() as i32) < capacity
}

/// See [`Occupancy::cursor`].
#[derive(Debug, Clone)]
pub struct SeatCursor<'a> {
    capacity: i32,
    layers: [LayerCursor<'a>; 2],
}

impl SeatCursor<'_> {
    /// Whether a seat is free for all of `[start, end)`. Cheapest when successive calls do not
    /// go back in time; going back is answered right all the same.
    pub fn has_free_seat(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        let [base, top] = &mut self.layers;
        let (base, top) = (base.window(start, end), top.window(start, end));
        free_seat_among(
            self.capacity,
            base.iter().chain(top).filter(move |o| o.ends_at > start),
        )
    }
}

/// One layer's entries that may overlap the last slot asked: `entries[lo..hi]`, the entries
/// starting in `[start - longest, end)`.
#[derive(Debug, Clone)]
struct LayerCursor<'a> {
    entries: &'a [Occupied],
    longest: Duration,
    lo: usize,
    hi: usize,
    last: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl<'a> LayerCursor<'a> {
    fn new(busy: Option<&'a Busy>) -> Self {
        Self {
            entries: busy.map(|b| b.entries.as_slice()).unwrap_or_default(),
            longest: busy.map(|b| b.longest).unwrap_or_default(),
            lo: 0,
            hi: 0,
            last: None,
        }
    }

    fn window(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> &'a [Occupied] {
        let earliest = start - self.longest;
        let entries = self.entries;
        match self.last {
            Some((s, e)) if s <= start && e <= end => {
                while self.hi < entries.len() && entries[self.hi].starts_at < end {
                    self.hi += 1;
                }
                while self.lo < self.hi && entries[self.lo].starts_at < earliest {
                    self.lo += 1;
                }
            }
            _ => {
                self.hi = entries.partition_point(|o| o.starts_at < end);
                self.lo = entries[..self.hi].partition_point(|o| o.starts_at < earliest);
            }
        }
        self.last = Some((start, end));
        &entries[self.lo..self.hi]
    }
}

/// The lowest seat of a planning not in `busy`, if any. Lowest first keeps the higher seats free
/// for long appointments.
pub fn choose_seat(capacity: i32, busy: &[i32]) -> Option<i32> {
    (1..=capacity).find(|seat| !busy.contains(seat))
}

/// A bookable slot: a start at a location, and the plannings that have a seat free for it
/// (lowest id first — the booking transaction tries them in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSlot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub location_id: LocationId,
    pub planning_ids: Vec<PlanningId>,
}

/// What the citizen asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotFilter {
    pub persons: u32,
    pub location: Option<LocationId>,
    /// First and last local dates searched, both included.
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Stop after this many slots (the "next 20" of a voice menu or a first page).
    pub limit: Option<usize>,
}

/// Everything the computation reads, loaded by the caller for one commune and one service.
#[derive(Debug, Clone, Copy)]
pub struct SlotSearch<'a> {
    pub commune: &'a Commune,
    pub service: &'a Service,
    pub locations: &'a [Location],
    pub plannings: &'a [Planning],
    pub rules: &'a [OpeningRule],
    pub closures: &'a [Closure],
    pub now: DateTime<Utc>,
}

/// A slot offered by one planning, before capacity is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub location_id: LocationId,
    pub planning_id: PlanningId,
}

/// One local date of a search: what its candidates are checked against, and the UTC instant
/// of each local minute, resolved once for all the rules of the day.
struct Day {
    date: NaiveDate,
    length: Duration,
    earliest: DateTime<Utc>,
    instants: Vec<Option<Option<DateTime<Utc>>>>,
}

/// One opening rule's free candidates of a day, in time order.
struct RuleStream<'a> {
    rule: &'a OpeningRule,
    planning: &'a Planning,
    /// The next local minute of the rule's grid, and the last one a slot may start at.
    next: i64,
    last: i64,
    seats: SeatCursor<'a>,
}

impl<'a> RuleStream<'a> {
    fn next_free(&mut self, search: &SlotSearch<'_>, day: &mut Day) -> Option<Candidate> {
        while self.next <= self.last {
            let minute = self.next as usize;
            self.next += i64::from(self.rule.step_minutes);
            let Some(c) = search.candidate_at(day, self.rule, self.planning, minute) else {
                continue;
            };
            if self.seats.has_free_seat(c.start, c.end) {
                return Some(c);
            }
        }
        None
    }
}

impl<'a> SlotSearch<'a> {
    /// First and last local dates on which the service can be booked now.
    pub fn bookable_dates(&self) -> (NaiveDate, NaiveDate) {
        let earliest = self.now + Duration::minutes(i64::from(self.service.min_notice_minutes));
        let today = self.commune.local_date(self.now);
        (
            self.commune.local_date(earliest),
            today + Duration::days(i64::from(self.service.horizon_days.max(0))),
        )
    }

    /// The rules that can offer this service at all (active planning and location, service
    /// listed), so the day loop does not re-check them.
    fn usable_rules(&self, location: Option<LocationId>) -> Vec<(&'a OpeningRule, &'a Planning)> {
        if !self.service.active {
            return Vec::new();
        }
        self.rules
            .iter()
            .filter(|r| r.service_ids.contains(&self.service.id))
            .filter(|r| location.is_none_or(|l| l == r.location_id))
            .filter(|r| {
                self.locations
                    .iter()
                    .any(|l| l.id == r.location_id && l.active)
            })
            .filter_map(|r| {
                self.plannings
                    .iter()
                    .find(|p| p.id == r.planning_id && p.active)
                    .map(|p| (r, p))
            })
            .collect()
    }

    /// What every candidate of `date` is checked against, or None when the date offers
    /// nothing (outside the bookable dates, a public holiday).
    fn day(&self, date: NaiveDate, persons: u32, holidays: &mut HolidayCalendar) -> Option<Day> {
        let (first, last) = self.bookable_dates();
        if date < first || date > last || holidays.is_holiday(date) {
            return None;
        }
        Some(Day {
            date,
            length: self.service.duration_for(persons),
            earliest: self.now + Duration::minutes(i64::from(self.service.min_notice_minutes)),
            instants: vec![None; 1441],
        })
    }

    /// The candidate of `rule` at local `minute` of `day`, if it exists (not in a
    /// daylight-saving gap, not too soon, not closed).
    fn candidate_at(
        &self,
        day: &mut Day,
        rule: &OpeningRule,
        planning: &Planning,
        minute: usize,
    ) -> Option<Candidate> {
        let tz = self.commune.timezone;
        let date = day.date;
        let start = (*day.instants[minute].get_or_insert_with(|| {
            let local = MinuteOfDay(minute as u16)
                .to_time()
                .map(|t| date.and_time(t))?;
            match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
                // The repeated autumn hour: the first occurrence only, never two slots.
                LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
                // The spring gap: this wall-clock time does not exist that day.
                LocalResult::None => None,
            }
        }))?;
        let end = start + day.length;
        if start < day.earliest
            || self
                .closures
                .iter()
                .any(|c| c.closes(planning.id, rule.location_id, start, end))
        {
            return None;
        }
        Some(Candidate {
            start,
            end,
            location_id: rule.location_id,
            planning_id: planning.id,
        })
    }

    /// Free slots matching `filter`, in time order (then location), at most `filter.limit`.
    ///
    /// Each rule offers its slots of the day in time order; the rules' streams are merged, and
    /// each stream reads its planning's seats with a cursor that only moves forward. Under a
    /// rush a listing walks most of a day of 10,000 candidates for the few still free: this
    /// keeps that walk to a step per candidate, with nothing sorted and nothing looked up.
    pub fn free_slots(&self, filter: &SlotFilter, occupancy: &Occupancy) -> Vec<FreeSlot> {
        let persons_ok =
            filter.persons >= 1 && i64::from(filter.persons) <= i64::from(self.service.max_persons);
        if !persons_ok {
            return Vec::new();
        }
        let full = |slots: &Vec<FreeSlot>| filter.limit.is_some_and(|limit| slots.len() >= limit);
        let rules = self.usable_rules(filter.location);
        let (first, last) = self.bookable_dates();
        let mut holidays = HolidayCalendar::new(self.commune.holiday_region());
        let mut slots: Vec<FreeSlot> = Vec::new();
        let mut date = filter.from.max(first);
        let last = filter.to.min(last);
        while date <= last && !full(&slots) {
            if let Some(mut day) = self.day(date, filter.persons, &mut holidays) {
                self.free_slots_on(&mut day, &rules, occupancy, filter.limit, &mut slots);
            }
            date = match date.succ_opt() {
                Some(next) => next,
                None => break,
            };
        }
        slots
    }

    /// Appends the free slots of `day` to `slots`, stopping when `limit` is reached.
    fn free_slots_on(
        &self,
        day: &mut Day,
        rules: &[(&OpeningRule, &'a Planning)],
        occupancy: &Occupancy,
        limit: Option<usize>,
        slots: &mut Vec<FreeSlot>,
    ) {
        let length_minutes = day.length.num_minutes();
        let mut streams: Vec<RuleStream> = rules
            .iter()
            .filter(|(rule, _)| rule.applies_on(day.date) && rule.step_minutes > 0)
            .map(|&(rule, planning)| RuleStream {
                rule,
                planning,
                next: i64::from(rule.start.0),
                last: i64::from(rule.end.0) - length_minutes,
                seats: occupancy.cursor(planning),
            })
            .collect();
        // Smallest (start, location, planning) first: the order the list is read in.
        let mut heads = BinaryHeap::new();
        for (i, stream) in streams.iter_mut().enumerate() {
            if let Some(c) = stream.next_free(self, day) {
                heads.push(Reverse((c.start, c.location_id, c.planning_id, i, c.end)));
            }
        }
        while let Some(Reverse((start, location_id, planning_id, i, end))) = heads.pop() {
            match slots.last_mut() {
                Some(slot) if slot.start == start && slot.location_id == location_id => {
                    if !slot.planning_ids.contains(&planning_id) {
                        slot.planning_ids.push(planning_id);
                    }
                }
                _ => {
                    // A new start is later than every slot kept, and the last one has all its
                    // plannings: once the list is full, the day is done.
                    if limit.is_some_and(|limit| slots.len() >= limit) {
                        return;
                    }
                    slots.push(FreeSlot {
                        start,
                        end,
                        location_id,
                        planning_ids: vec![planning_id],
                    });
                }
            }
            if let Some(c) = streams[i].next_free(self, day) {
                heads.push(Reverse((c.start, c.location_id, c.planning_id, i, c.end)));
            }
        }
    }

    /// The (planning, location) pairs whose rules offer exactly this start for `persons`,
    /// ignoring capacity — what a booking transaction may try, lowest planning id first.
    pub fn offers_at(
        &self,
        start: DateTime<Utc>,
        persons: u32,
        location: Option<LocationId>,
    ) -> Vec<Candidate> {
        let persons_ok = persons >= 1 && i64::from(persons) <= i64::from(self.service.max_persons);
        if !persons_ok {
            return Vec::new();
        }
        let rules = self.usable_rules(location);
        let mut holidays = HolidayCalendar::new(self.commune.holiday_region());
        let local = start.with_timezone(&self.commune.timezone).naive_local();
        let minute = i64::from(MinuteOfDay::of_time(local.time()).0);
        let Some(mut day) = self.day(local.date(), persons, &mut holidays) else {
            return Vec::new();
        };
        let (date, length_minutes) = (day.date, day.length.num_minutes());
        let mut found: Vec<Candidate> = rules
            .iter()
            .filter(|(rule, _)| rule.applies_on(date) && rule.step_minutes > 0)
            .filter(|(rule, _)| {
                // On this rule's grid, and the whole appointment inside its hours.
                let (first, step) = (i64::from(rule.start.0), i64::from(rule.step_minutes));
                minute >= first
                    && (minute - first) % step == 0
                    && minute + length_minutes <= i64::from(rule.end.0)
            })
            .filter_map(|&(rule, planning)| {
                self.candidate_at(&mut day, rule, planning, minute as usize)
            })
            .collect();
        found.retain(|c| c.start == start);
        found.sort_by_key(|c| (c.planning_id, c.location_id));
        found.dedup();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Category, Channels, Weekdays, WeeklyHours};
    use chrono::{Datelike, Timelike, Weekday};
    use chrono_tz::Europe::Paris;
    use proptest::prelude::*;

    fn commune() -> Commune {
        Commune {
            id: 1,
            slug: "annecy".into(),
            name: "Annecy".into(),
            insee_code: "74010".into(),
            timezone: Paris,
            population: 130_000,
            phone_numbers: vec![],
            switchboard_number: None,
            switchboard_hours: WeeklyHours::default(),
            reminder_delay_hours: 48,
            quiet_start: MinuteOfDay::hm(20, 0),
            quiet_end: MinuteOfDay::hm(8, 0),
            sms_sender: "Annecy".into(),
            allow_multiple_per_category: false,
            sms_daily_budget: 300,
            allow_foreign_mobiles: false,
        }
    }

    fn service(duration: i32) -> Service {
        Service {
            id: 10,
            commune_id: 1,
            name: "Carte d'identité / passeport".into(),
            spoken_name: "carte d'identité ou passeport".into(),
            category: Category::Titres,
            duration_minutes: duration,
            max_persons: 4,
            min_notice_minutes: 0,
            horizon_days: 3650,
            channels: Channels::ALL,
            what_to_bring: String::new(),
            active: true,
        }
    }

    fn location(id: LocationId) -> Location {
        Location {
            id,
            commune_id: 1,
            name: format!("Lieu {id}"),
            address: String::new(),
            postcode: "74000".into(),
            city: "Annecy".into(),
            access_notes: String::new(),
            active: true,
        }
    }

    fn planning(id: PlanningId, capacity: i32) -> Planning {
        Planning {
            id,
            commune_id: 1,
            name: format!("Planning {id}"),
            capacity,
            active: true,
        }
    }

    fn rule(
        planning: PlanningId,
        location: LocationId,
        days: Weekdays,
        from: (u16, u16),
        to: (u16, u16),
        step: i32,
    ) -> OpeningRule {
        OpeningRule {
            id: planning * 100 + location,
            planning_id: planning,
            location_id: location,
            weekdays: days,
            start: MinuteOfDay::hm(from.0, from.1),
            end: MinuteOfDay::hm(to.0, to.1),
            step_minutes: step,
            valid_from: d("2020-01-01"),
            valid_until: None,
            service_ids: vec![10],
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    struct World {
        commune: Commune,
        service: Service,
        locations: Vec<Location>,
        plannings: Vec<Planning>,
        rules: Vec<OpeningRule>,
        closures: Vec<Closure>,
        now: DateTime<Utc>,
    }

    impl World {
        fn new(rules: Vec<OpeningRule>, plannings: Vec<Planning>) -> Self {
            Self {
                commune: commune(),
                service: service(30),
                locations: vec![location(1), location(2)],
                plannings,
                rules,
                closures: vec![],
                now: utc("2026-01-01T00:00:00Z"),
            }
        }

        fn search(&self) -> SlotSearch<'_> {
            SlotSearch {
                commune: &self.commune,
                service: &self.service,
                locations: &self.locations,
                plannings: &self.plannings,
                rules: &self.rules,
                closures: &self.closures,
                now: self.now,
            }
        }

        fn slots(&self, from: &str, to: &str, occupancy: &Occupancy) -> Vec<FreeSlot> {
            self.search().free_slots(
                &SlotFilter {
                    persons: 1,
                    location: None,
                    from: d(from),
                    to: d(to),
                    limit: None,
                },
                occupancy,
            )
        }
    }

    fn local_hm(t: DateTime<Utc>) -> (u32, u32) {
        let l = t.with_timezone(&Paris);
        (l.hour(), l.minute())
    }

    #[test]
    fn spring_forward_skips_the_missing_hour() {
        // Sunday 29 March 2026: 02:00 → 03:00 in Europe/Paris.
        let w = World::new(
            vec![rule(
                1,
                1,
                Weekdays::of(&[Weekday::Sun]),
                (0, 0),
                (4, 0),
                30,
            )],
            vec![planning(1, 1)],
        );
        let slots = w.slots("2026-03-29", "2026-03-29", &Occupancy::default());
        let local: Vec<_> = slots.iter().map(|s| local_hm(s.start)).collect();
        assert_eq!(local, [(0, 0), (0, 30), (1, 0), (1, 30), (3, 0), (3, 30)]);
        assert_eq!(slots[3].start, utc("2026-03-29T00:30:00Z"));
        assert_eq!(slots[4].start, utc("2026-03-29T01:00:00Z"));
        // Half an hour of real time, even when it straddles the change.
        assert!(
            slots
                .iter()
                .all(|s| s.end - s.start == Duration::minutes(30))
        );
    }

    #[test]
    fn fall_back_does_not_double_the_repeated_hour() {
        // Sunday 25 October 2026: 03:00 → 02:00 in Europe/Paris.
        let w = World::new(
            vec![rule(
                1,
                1,
                Weekdays::of(&[Weekday::Sun]),
                (0, 0),
                (4, 0),
                30,
            )],
            vec![planning(1, 1)],
        );
        let slots = w.slots("2026-10-25", "2026-10-25", &Occupancy::default());
        let starts: Vec<_> = slots.iter().map(|s| s.start).collect();
        let mut unique = starts.clone();
        unique.dedup();
        assert_eq!(starts, unique, "no instant twice");
        assert_eq!(slots.len(), 8, "00:00 … 03:30, each wall-clock time once");
        assert_eq!(slots[4].start, utc("2026-10-25T00:00:00Z"), "02:00 CEST");
        assert_eq!(slots[6].start, utc("2026-10-25T02:00:00Z"), "03:00 CET");
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn office_hours_keep_their_wall_clock_time_across_the_change() {
        let w = World::new(
            vec![rule(1, 1, Weekdays::MONDAY_TO_FRIDAY, (9, 0), (10, 0), 30)],
            vec![planning(1, 1)],
        );
        let slots = w.slots("2026-03-27", "2026-03-30", &Occupancy::default());
        let starts: Vec<_> = slots.iter().map(|s| s.start).collect();
        assert_eq!(
            starts,
            [
                utc("2026-03-27T08:00:00Z"),
                utc("2026-03-27T08:30:00Z"),
                utc("2026-03-30T07:00:00Z"),
                utc("2026-03-30T07:30:00Z"),
            ]
        );
        let slots = w.slots("2026-10-23", "2026-10-26", &Occupancy::default());
        assert_eq!(slots[0].start, utc("2026-10-23T07:00:00Z"));
        assert_eq!(slots[2].start, utc("2026-10-26T08:00:00Z"));
    }

    #[test]
    fn holidays_closures_notice_and_horizon() {
        let mut w = World::new(
            vec![rule(1, 1, Weekdays(0x7f), (9, 0), (12, 0), 60)],
            vec![planning(1, 1)],
        );
        // Whit Monday 2026 is closed.
        assert!(
            w.slots("2026-05-25", "2026-05-25", &Occupancy::default())
                .is_empty()
        );
        assert_eq!(
            w.slots("2026-05-26", "2026-05-26", &Occupancy::default())
                .len(),
            3
        );
        // A closure from 10:00 to 11:30 removes the 10:00 and 11:00 slots.
        w.closures.push(Closure {
            id: 1,
            commune_id: 1,
            planning_id: Some(1),
            location_id: None,
            starts_at: utc("2026-05-26T08:00:00Z"),
            ends_at: utc("2026-05-26T09:30:00Z"),
            reason: "formation".into(),
        });
        let slots = w.slots("2026-05-26", "2026-05-26", &Occupancy::default());
        assert_eq!(
            slots.iter().map(|s| local_hm(s.start)).collect::<Vec<_>>(),
            [(9, 0)]
        );
        // Notice: two hours from 08:30 local leaves 11:00 only.
        w.closures.clear();
        w.now = utc("2026-05-26T06:30:00Z");
        w.service.min_notice_minutes = 120;
        let slots = w.slots("2026-05-26", "2026-05-26", &Occupancy::default());
        assert_eq!(
            slots.iter().map(|s| local_hm(s.start)).collect::<Vec<_>>(),
            [(11, 0)]
        );
        // Horizon: 2 days ahead at most.
        w.service.horizon_days = 2;
        let slots = w.slots("2026-05-26", "2026-06-30", &Occupancy::default());
        assert_eq!(
            slots
                .last()
                .unwrap()
                .start
                .with_timezone(&Paris)
                .date_naive(),
            d("2026-05-28")
        );
    }

    #[test]
    fn capacity_counts_seats_for_the_whole_slot() {
        let mut w = World::new(
            vec![rule(1, 1, Weekdays(0x7f), (9, 0), (11, 0), 30)],
            vec![planning(1, 2)],
        );
        w.service.duration_minutes = 30;
        let taken = |seat, from: &str, to: &str| Occupied {
            planning_id: 1,
            seat,
            starts_at: utc(from),
            ends_at: utc(to),
        };
        // 9:00–9:30 on seat 1, 9:30–10:00 on seat 2 (CEST, UTC+2).
        let occ = Occupancy::new([
            taken(1, "2026-06-02T07:00:00Z", "2026-06-02T07:30:00Z"),
            taken(2, "2026-06-02T07:30:00Z", "2026-06-02T08:00:00Z"),
        ]);
        let slots = w.slots("2026-06-02", "2026-06-02", &occ);
        assert_eq!(slots.len(), 4, "each half hour still has one seat free");
        // A one-hour slot for two persons needs one seat for the whole hour: at 9:00 neither
        // seat is free from 9:00 to 10:00; at 9:30 seat 1 is.
        let two = w.search().free_slots(
            &SlotFilter {
                persons: 2,
                location: None,
                from: d("2026-06-02"),
                to: d("2026-06-02"),
                limit: None,
            },
            &occ,
        );
        assert_eq!(
            two.iter().map(|s| local_hm(s.start)).collect::<Vec<_>>(),
            [(9, 30), (10, 0)]
        );
        assert_eq!(
            choose_seat(
                2,
                &occ.busy_seats(1, utc("2026-06-02T07:00:00Z"), utc("2026-06-02T07:30:00Z"))
            ),
            Some(2)
        );

        // A snapshot with appointments added on top: the added seat counts, the snapshot
        // itself is unchanged, and an appointment in both layers takes its seat once.
        let at_nine = (utc("2026-06-02T07:00:00Z"), utc("2026-06-02T07:30:00Z"));
        let both = occ.with([
            taken(2, "2026-06-02T07:00:00Z", "2026-06-02T07:30:00Z"),
            taken(1, "2026-06-02T07:00:00Z", "2026-06-02T07:30:00Z"),
        ]);
        assert_eq!(both.busy_seats(1, at_nine.0, at_nine.1), [1, 2]);
        assert!(!both.has_free_seat(&planning(1, 2), at_nine.0, at_nine.1));
        assert!(occ.has_free_seat(&planning(1, 2), at_nine.0, at_nine.1));
        let again = both.with([taken(1, "2026-06-02T08:00:00Z", "2026-06-02T08:30:00Z")]);
        assert_eq!(again.busy_seats(1, at_nine.0, at_nine.1), [1, 2]);
        assert_eq!(
            again.busy_seats(1, utc("2026-06-02T08:00:00Z"), utc("2026-06-02T08:30:00Z")),
            [1]
        );
    }

    #[test]
    fn first_available_merges_plannings_and_respects_limit() {
        let w = World::new(
            vec![
                rule(1, 1, Weekdays(0x7f), (9, 0), (10, 0), 30),
                rule(2, 1, Weekdays(0x7f), (9, 0), (10, 0), 30),
                rule(3, 2, Weekdays(0x7f), (9, 0), (10, 0), 30),
            ],
            vec![planning(1, 1), planning(2, 1), planning(3, 1)],
        );
        let slots = w.slots("2026-06-02", "2026-06-02", &Occupancy::default());
        assert_eq!(slots.len(), 4);
        assert_eq!(slots[0].planning_ids, vec![1, 2]);
        assert_eq!(slots[1].location_id, 2);
        let limited = w.search().free_slots(
            &SlotFilter {
                persons: 1,
                location: Some(2),
                from: d("2026-06-02"),
                to: d("2026-06-30"),
                limit: Some(5),
            },
            &Occupancy::default(),
        );
        assert_eq!(limited.len(), 5);
        assert!(limited.iter().all(|s| s.location_id == 2));
        let offers = w
            .search()
            .offers_at(utc("2026-06-02T07:30:00Z"), 1, Some(1));
        assert_eq!(
            offers.iter().map(|c| c.planning_id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(
            w.search()
                .offers_at(utc("2026-06-02T07:10:00Z"), 1, None)
                .is_empty()
        );
        assert!(
            w.search()
                .offers_at(utc("2026-06-02T07:30:00Z"), 5, None)
                .is_empty(),
            "max persons"
        );
    }

    // Property tests: whatever the rules, closures and bookings, every slot returned lies inside
    // a rule, overlaps no closure and no holiday, and leaves a seat free on its planning.

    fn arb_rule() -> impl Strategy<Value = OpeningRule> {
        (
            1i64..=3,
            1i64..=2,
            1u8..=127,
            0u16..=22,
            0u16..4,
            1u16..=12,
            prop::sample::select(vec![10, 15, 20, 30, 45, 60]),
        )
            .prop_map(
                |(planning, location, days, hour, quarter, len_quarters, step)| {
                    let start = hour * 60 + quarter * 15;
                    let end = (start + len_quarters * 30).min(1440);
                    OpeningRule {
                        id: 0,
                        planning_id: planning,
                        location_id: location,
                        weekdays: Weekdays(days),
                        start: MinuteOfDay(start),
                        end: MinuteOfDay(end),
                        step_minutes: step,
                        valid_from: d("2026-03-20"),
                        valid_until: None,
                        service_ids: vec![10],
                    }
                },
            )
    }

    fn arb_instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2026-03-20 .. 2026-04-20 (covers the spring change and Easter Monday), 5-minute grid.
        (0i64..(31 * 24 * 12)).prop_map(|n| utc("2026-03-20T00:00:00Z") + Duration::minutes(5 * n))
    }

    fn arb_closure() -> impl Strategy<Value = Closure> {
        (
            prop::option::of(1i64..=3),
            prop::option::of(1i64..=2),
            arb_instant(),
            1i64..(48 * 12),
        )
            .prop_map(|(planning_id, location_id, starts_at, len)| Closure {
                id: 0,
                commune_id: 1,
                planning_id,
                location_id,
                starts_at,
                ends_at: starts_at + Duration::minutes(5 * len),
                reason: String::new(),
            })
    }

    fn arb_occupied() -> impl Strategy<Value = Occupied> {
        (1i64..=3, 1i32..=3, arb_instant(), 1i64..=24).prop_map(
            |(planning_id, seat, starts_at, len)| Occupied {
                planning_id,
                seat,
                starts_at,
                ends_at: starts_at + Duration::minutes(5 * len),
            },
        )
    }

    /// Every free slot by brute force: each rule, each day, each minute of its grid, every
    /// appointment looked at — what the merged streams and seat cursors must find, no more and
    /// no fewer.
    fn brute_force_slots(w: &World, filter: &SlotFilter, occupied: &[Occupied]) -> Vec<FreeSlot> {
        let length = w.service.duration_for(filter.persons);
        let earliest = w.now + Duration::minutes(i64::from(w.service.min_notice_minutes));
        let (first, last) = w.search().bookable_dates();
        let mut found: Vec<(DateTime<Utc>, LocationId, PlanningId)> = Vec::new();
        let mut date = filter.from.max(first);
        while date <= filter.to.min(last) && filter.persons <= w.service.max_persons as u32 {
            let holiday = crate::domain::holidays::holiday_on(date, w.commune.holiday_region());
            for r in w
                .rules
                .iter()
                .filter(|r| r.applies_on(date) && holiday.is_none())
            {
                let Some(planning) = w.plannings.iter().find(|p| p.id == r.planning_id) else {
                    continue;
                };
                if filter.location.is_some_and(|l| l != r.location_id)
                    || !r.service_ids.contains(&w.service.id)
                {
                    continue;
                }
                let mut minute = i64::from(r.start.0);
                while r.step_minutes > 0 && minute + length.num_minutes() <= i64::from(r.end.0) {
                    let local = date.and_hms_opt((minute / 60) as u32, (minute % 60) as u32, 0);
                    minute += i64::from(r.step_minutes);
                    let Some(start) = local.and_then(|l| Paris.from_local_datetime(&l).earliest())
                    else {
                        continue;
                    };
                    let (start, end) = (
                        start.with_timezone(&Utc),
                        start.with_timezone(&Utc) + length,
                    );
                    if start < earliest
                        || w.closures
                            .iter()
                            .any(|c| c.closes(planning.id, r.location_id, start, end))
                    {
                        continue;
                    }
                    let mut busy: Vec<i32> = occupied
                        .iter()
                        .filter(|o| {
                            o.planning_id == planning.id && o.starts_at < end && start < o.ends_at
                        })
                        .filter(|o| (1..=planning.capacity).contains(&o.seat))
                        .map(|o| o.seat)
                        .collect();
                    busy.sort();
                    busy.dedup();
                    if (busy.len() as i32) < planning.capacity {
                        found.push((start, r.location_id, planning.id));
                    }
                }
            }
            date = date.succ_opt().unwrap();
        }
        found.sort();
        found.dedup();
        let mut slots: Vec<FreeSlot> = Vec::new();
        for (start, location_id, planning_id) in found {
            match slots.last_mut() {
                Some(s) if s.start == start && s.location_id == location_id => {
                    s.planning_ids.push(planning_id)
                }
                _ => slots.push(FreeSlot {
                    start,
                    end: start + length,
                    location_id,
                    planning_ids: vec![planning_id],
                }),
            }
        }
        if let Some(limit) = filter.limit {
            slots.truncate(limit);
        }
        slots
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn slots_respect_rules_closures_holidays_and_capacity(
            rules in prop::collection::vec(arb_rule(), 1..6),
            capacities in prop::collection::vec(1i32..=3, 3),
            closures in prop::collection::vec(arb_closure(), 0..5),
            occupied in prop::collection::vec(arb_occupied(), 0..40),
            duration in prop::sample::select(vec![10, 15, 20, 30, 45]),
            persons in 1u32..=3,
            split in 0usize..40,
            limit in 1usize..30,
            location in 1i64..=2,
        ) {
            let plannings: Vec<_> = capacities.iter().enumerate().map(|(i, c)| planning(i as i64 + 1, *c)).collect();
            let mut w = World::new(rules, plannings);
            w.service.duration_minutes = duration;
            w.closures = closures;
            w.now = utc("2026-03-21T10:00:00Z");
            // Part of the appointments in a shared snapshot, the rest on top (as listings see them).
            let (base, top) = occupied.split_at(split.min(occupied.len()));
            let occupancy = Occupancy::new(base.iter().copied()).with(top.iter().copied());
            let filter = SlotFilter { persons, location: None, from: d("2026-03-20"), to: d("2026-04-12"), limit: None };
            let slots = w.search().free_slots(&filter, &occupancy);
            prop_assert_eq!(&slots, &brute_force_slots(&w, &filter, &occupied));
            let limited = SlotFilter { limit: Some(limit), location: Some(location), ..filter };
            prop_assert_eq!(
                w.search().free_slots(&limited, &occupancy),
                brute_force_slots(&w, &limited, &occupied)
            );
            let length = Duration::minutes(i64::from(duration) * i64::from(persons));
            for s in &slots {
                prop_assert_eq!(s.end - s.start, length);
                prop_assert!(s.start >= w.now);
                let local_start = s.start.with_timezone(&Paris).naive_local();
                let date = local_start.date();
                prop_assert!(crate::domain::holidays::holiday_on(date, w.commune.holiday_region()).is_none());
                prop_assert!(!s.planning_ids.is_empty());
                for p in &s.planning_ids {
                    // Inside an opening rule of that planning, at that location, on that weekday.
                    let minute = i64::from(local_start.hour() * 60 + local_start.minute());
                    let inside = w.rules.iter().any(|r| {
                        r.planning_id == *p && r.location_id == s.location_id
                            && r.weekdays.contains(date.weekday())
                            && i64::from(r.start.0) <= minute
                            && minute + length.num_minutes() <= i64::from(r.end.0)
                            && (minute - i64::from(r.start.0)) % i64::from(r.step_minutes) == 0
                    });
                    prop_assert!(inside, "slot {:?} outside every rule of planning {}", s, p);
                    for c in &w.closures {
                        prop_assert!(!c.closes(*p, s.location_id, s.start, s.end), "slot {:?} inside closure {:?}", s, c);
                    }
                    // Seats busy during the slot, counted by brute force.
                    let capacity = w.plannings.iter().find(|x| x.id == *p).unwrap().capacity;
                    let mut busy: Vec<i32> = occupied.iter()
                        .filter(|o| o.planning_id == *p && o.starts_at < s.end && s.start < o.ends_at && o.seat <= capacity)
                        .map(|o| o.seat).collect();
                    busy.sort();
                    busy.dedup();
                    prop_assert!((busy.len() as i32) < capacity, "slot {:?} would exceed capacity {}", s, capacity);
                }
            }
            let mut keys: Vec<_> = slots.iter().map(|s| (s.start, s.location_id)).collect();
            let n = keys.len();
            keys.dedup();
            prop_assert_eq!(n, keys.len(), "a slot listed twice");
        }
    }
}
